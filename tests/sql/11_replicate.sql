-- 11_replicate.sql: Replicate dispatch's SQL (issue 15, migration 0023):
-- credits refunded once and settled once, the shared 600-per-minute
-- creation budget, a LoRA only for its owner, predictions applied
-- monotonically whatever the order and repeats, polls handed out once.
-- Times are in 2031 (injected p_now) so nothing else is due.
begin;
set local client_min_messages = warning;
create extension if not exists pgtap;

create function pg_temp.t(p_sec text) returns timestamptz
language sql immutable as $$ select '2031-03-01 00:00:00+00'::timestamptz + p_sec::interval $$;

select plan(36);

insert into auth.users (id, email) values
  ('00000000-0000-4000-8000-0000000011a1', 'studio-owner@example.test'),
  ('00000000-0000-4000-8000-0000000011a2', 'studio-other@example.test'),
  ('00000000-0000-4000-8000-0000000011ad', 'studio-admin@example.test');
update public.users set credits = 3 where id = '00000000-0000-4000-8000-0000000011a1';
update public.users set role = 'admin' where id = '00000000-0000-4000-8000-0000000011ad';
delete from public.replicate_tokens;
insert into public.replicate_tokens (id, label, token) values
  ('00000000-0000-4000-8000-00000011f001', 'pool-1', 'r8_secret_one'),
  ('00000000-0000-4000-8000-00000011f002', 'pool-2', 'r8_secret_two');
insert into public.user_loras (id, user_id, name, status, replicate_version) values
  ('00000000-0000-4000-8000-00000011e001', '00000000-0000-4000-8000-0000000011a2', 'other lora', 'succeeded', 'o/l:v1');

-- Credits: charged at claim, refunded once --------------------------------------------------
insert into public.generations (id, user_id, model_id, next_attempt_at) values
  ('00000000-0000-4000-8000-000000116001', '00000000-0000-4000-8000-0000000011a1', 'owner/model', pg_temp.t('-1 minute'));
create temp table claimed as
  select public.claim_next_generations('t11', 60, 5, pg_temp.t('0')) as c;
select is((select credits from public.users where id = '00000000-0000-4000-8000-0000000011a1'), 2,
  'the claim charged one credit');
select is(public.refund_credit_charge('generations', '00000000-0000-4000-8000-000000116001', 'failed') ->> 'refunded',
  'true', 'a failed generation is refunded');
select is(public.refund_credit_charge('generations', '00000000-0000-4000-8000-000000116001', 'failed again') ->> 'reason',
  'already_refunded', 'a second refund gives nothing back');
select is((select credits from public.users where id = '00000000-0000-4000-8000-0000000011a1'), 3,
  'the credit came back exactly once');
select is(public.refund_credit_charge('ai_jobs', gen_random_uuid(), 'x') ->> 'reason', 'not_charged',
  'an uncharged item has nothing to refund');
select throws_ok($$select public.refund_credit_charge('scheduled_posts', gen_random_uuid(), 'x')$$, '22023', null,
  'only generations and ai_jobs carry charges');

-- Dispatch: token, budget, owner's LoRA only ------------------------------------------------
select is((public.begin_replicate_creation('00000000-0000-4000-8000-000000116001',
  ((select c from claimed) -> 0 ->> 'lease_token')::bigint, pg_temp.t('1 second')) ->> 'ok'), 'true',
  'a leased generation gets a token');
select is((select replicate_token_id from public.generations where id = '00000000-0000-4000-8000-000000116001') is not null,
  true, 'the generation remembers which token creates it');
select is(public.begin_replicate_creation('00000000-0000-4000-8000-000000116001', -1, pg_temp.t('1 second')) ->> 'reason',
  'stale_lease', 'a stale lease gets nothing');
select is(public.finish_replicate_creation('00000000-0000-4000-8000-000000116001',
  ((select c from claimed) -> 0 ->> 'lease_token')::bigint, 'pred-11-a',
  '{"provider":"replicate","method":"POST","path":"/v1/predictions","status_code":201,"duration_ms":5}'::jsonb,
  pg_temp.t('2 seconds')) ->> 'accepted', 'true', 'the prediction id is stored');
select results_eq($$select status, replicate_prediction_id from public.generations where id = '00000000-0000-4000-8000-000000116001'$$,
  $$values ('processing'::text, 'pred-11-a'::text)$$, 'the generation is processing at Replicate');
select is((select count(*)::int from public.api_logs where path = '/v1/predictions' and provider = 'replicate'), 1,
  'the creation call is in api_logs');

-- another user's LoRA (planted past the claim screen) is refused at begin
insert into public.generations (id, user_id, model_id, lora_id, status, attempts, lease_token, locked_by, locked_at, lease_expires_at)
values ('00000000-0000-4000-8000-000000116002', '00000000-0000-4000-8000-0000000011a1', 'owner/model',
        '00000000-0000-4000-8000-00000011e001', 'starting', 1, 777001, 't11', pg_temp.t('0'), pg_temp.t('1 hour'));
select is(public.begin_replicate_creation('00000000-0000-4000-8000-000000116002', 777001, pg_temp.t('3 seconds')) ->> 'error',
  'refused: the LoRA belongs to another user', 'a generation never uses another user''s LoRA');

-- budget: at most per_minute grants in any 61 one-second buckets
update public.replicate_creation_budget set per_minute = 3;
delete from public.replicate_creation_seconds;
select is(public.take_replicate_creation_slot(pg_temp.t('10 seconds')) ->> 'granted', 'true', 'slot 1');
select is(public.take_replicate_creation_slot(pg_temp.t('20 seconds')) ->> 'granted', 'true', 'slot 2');
select is(public.take_replicate_creation_slot(pg_temp.t('30 seconds')) ->> 'granted', 'true', 'slot 3');
select is(public.take_replicate_creation_slot(pg_temp.t('40 seconds')) ->> 'granted', 'false', 'a fourth within the minute waits');
select is(public.take_replicate_creation_slot(pg_temp.t('40 seconds')) ->> 'retry_after_seconds', '31',
  'it is told when the oldest creation leaves the window');
select is(public.take_replicate_creation_slot(pg_temp.t('70 seconds')) ->> 'granted', 'false',
  'exactly 60 s after the first is still inside the window');
select is(public.take_replicate_creation_slot(pg_temp.t('71 seconds')) ->> 'granted', 'true',
  'once the first creation is older than a minute, one more is granted');
update public.replicate_creation_budget set per_minute = 600;

-- 401: the token retires once and the admins hear of it once
select is(public.retire_replicate_token('00000000-0000-4000-8000-00000011f002', 'HTTP 401 Unauthenticated') ->> 'admins_told',
  '1', 'a refused token tells the admins');
select is(public.retire_replicate_token('00000000-0000-4000-8000-00000011f002', 'HTTP 401 again') ->> 'reason',
  'already_inactive', 'a second refusal tells no one');
select is((select count(*)::int from public.notifications where type = 'replicate_token_refused'
            and message like '%r8_secret%'), 0, 'the notification never holds the token');

-- Applying predictions: out of order, repeated -----------------------------------------------
select is(public.apply_replicate_prediction('{"id":"pred-11-a","status":"processing"}', null, pg_temp.t('5 seconds')) ->> 'changed',
  'false', 'processing changes nothing');
select is(public.apply_replicate_prediction('{"id":"pred-11-a","status":"succeeded","metrics":{"predict_time":10}}',
  '{"output_urls":["http://store/generations/a/0.png"]}', pg_temp.t('6 seconds')) ->> 'cost_usd', '0.009750',
  'succeeded: cost is predict_time times the model''s price');
select results_eq($$select status, output_urls, cost_usd from public.generations where id = '00000000-0000-4000-8000-000000116001'$$,
  $$values ('succeeded'::text, array['http://store/generations/a/0.png'], 0.00975::numeric(12,6))$$,
  'our copies are the outputs');
select is(public.apply_replicate_prediction('{"id":"pred-11-a","status":"processing"}', null, pg_temp.t('7 seconds')) ->> 'reason',
  'already_finished', 'a late processing never overwrites succeeded');
select is(public.apply_replicate_prediction('{"id":"pred-11-a","status":"failed","error":"late"}', null, pg_temp.t('8 seconds')) ->> 'reason',
  'already_finished', 'nor does a late failure');
select is((select settled_at is not null and refunded_at is not null from public.credit_charges
            where item_id = '00000000-0000-4000-8000-000000116001'), false,
  'a charge is never both settled and refunded');
select is((select count(*)::int from public.notifications
            where user_id = '00000000-0000-4000-8000-0000000011a1' and type = 'generation_succeeded'), 1,
  'the user is told once');

-- LoRA trainings: the owner's own images only, applied once ------------------------------
insert into public.user_loras (id, user_id, name, status) values
  ('00000000-0000-4000-8000-00000011e002', '00000000-0000-4000-8000-0000000011a1', 'mine', 'pending');
insert into public.lora_training_images (lora_id, user_id, storage_path) values
  ('00000000-0000-4000-8000-00000011e002', '00000000-0000-4000-8000-0000000011a1', '00000000-0000-4000-8000-0000000011a1/a.png'),
  ('00000000-0000-4000-8000-00000011e002', '00000000-0000-4000-8000-0000000011a1', '00000000-0000-4000-8000-0000000011a2/theirs.png');
create temp table trainings as select public.claim_lora_trainings('t11', 600, 5, pg_temp.t('0')) as c;
select is((select jsonb_array_length(c -> 0 -> 'images') from trainings), 1,
  'only images in the owner''s folder are handed out');
select is(public.claim_lora_trainings('t11b', 600, 5, pg_temp.t('1 second')), '[]'::jsonb,
  'a leased training is not handed out twice');
select is(public.start_lora_training('00000000-0000-4000-8000-00000011e002', 'train-11', null) ->> 'started', 'true',
  'the training id is kept');
select is(public.apply_replicate_training('{"id":"train-11","status":"succeeded","output":{"version":"studio/lora-x:v9"}}',
  '{"storage_path":"lora-models/a/b/weights.tar","weights_url":"http://store/lora-models/a/b/weights.tar"}') ->> 'status',
  'succeeded', 'a succeeded training keeps its version');
select is(public.apply_replicate_training('{"id":"train-11","status":"failed","error":"late"}') ->> 'reason',
  'already_finished', 'a late failure never undoes it');
select is(public.replicate_status()::text like '%r8_secret%', false, 'replicate_status shows counts, never a token');

select * from finish();
rollback;
