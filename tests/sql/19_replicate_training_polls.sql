-- 19_replicate_training_polls.sql: LoRA trainings whose webhook never came
-- are handed out for polling once per interval, with the token that made
-- them (none once it is retired), and a training Replicate
-- does not know fails and tells its owner (migration 0023).
begin;
set local client_min_messages = warning;
create extension if not exists pgtap;

create function pg_temp.t(p_sec text) returns timestamptz
language sql immutable as $$ select '2031-05-01 00:00:00+00'::timestamptz + p_sec::interval $$;

select plan(13);

insert into auth.users (id, email) values
  ('00000000-0000-4000-8000-0000000019a1', 'trainer@example.test');
delete from public.replicate_tokens;
insert into public.replicate_tokens (id, label, token) values
  ('00000000-0000-4000-8000-00000019f001', 'pool-1', 'r8_secret_one'),
  ('00000000-0000-4000-8000-00000019f002', 'pool-2', 'r8_secret_two');
insert into public.user_loras (id, user_id, name, status, updated_at) values
  ('00000000-0000-4000-8000-00000019e001', '00000000-0000-4000-8000-0000000019a1', 'face', 'uploading', pg_temp.t('0')),
  ('00000000-0000-4000-8000-00000019e002', '00000000-0000-4000-8000-0000000019a1', 'style', 'uploading', pg_temp.t('0'));

select is(public.start_lora_training('00000000-0000-4000-8000-00000019e001', 'train-19a', null,
          '00000000-0000-4000-8000-00000019f001', pg_temp.t('0')) ->> 'started', 'true',
  'a started training keeps its id');
select is((select replicate_token_id from public.user_loras where id = '00000000-0000-4000-8000-00000019e001'),
  '00000000-0000-4000-8000-00000019f001'::uuid, 'and the token that created it');
select is(public.start_lora_training('00000000-0000-4000-8000-00000019e002', 'train-19b', null,
          '00000000-0000-4000-8000-00000019f002', pg_temp.t('0')) ->> 'started', 'true', 'a second one starts');

select is(public.claim_replicate_training_polls('w19', 300, 10, pg_temp.t('299 seconds')), '[]'::jsonb,
  'nothing is polled before the interval');
create temp table polls as select public.claim_replicate_training_polls('w19', 300, 10, pg_temp.t('300 seconds')) as p;
select is((select jsonb_array_length(p) from polls), 2, 'both are due after it');
select is((select e->>'token' from polls, jsonb_array_elements(p) e where e->>'training_id' = 'train-19a'),
  'r8_secret_one', 'each with the token that created it');
select is((select count(*)::int from polls, jsonb_array_elements(p) e where e->>'token' is null), 0,
  'every one has its own');
select is(public.claim_replicate_training_polls('w19b', 300, 10, pg_temp.t('301 seconds')), '[]'::jsonb,
  'a polled training is not handed out again within the interval');

-- Its own token retired: no token is handed out (the worker asks with the pool's next).
update public.replicate_tokens set is_active = false where id = '00000000-0000-4000-8000-00000019f001';
create temp table polls2 as select public.claim_replicate_training_polls('w19', 300, 10, pg_temp.t('600 seconds')) as p;
select is((select coalesce(e->>'token', 'none') from polls2, jsonb_array_elements(p) e
            where e->>'training_id' = 'train-19a'),
  'none', 'a training whose token was retired gets none of another account');

-- Finished trainings are never polled.
update public.user_loras set status = 'succeeded' where id = '00000000-0000-4000-8000-00000019e002';
select is(public.claim_replicate_training_polls('w19', 0, 10, pg_temp.t('2 hours')) #>> '{0,training_id}',
  'train-19a', 'only the running training is polled');

-- Lost at Replicate: failed, the owner told once.
select is(public.lose_replicate_training('train-19a', pg_temp.t('2 hours')) ->> 'status', 'failed',
  'a training Replicate does not know fails');
select is((select error from public.user_loras where id = '00000000-0000-4000-8000-00000019e001'),
  'Replicate has no such training (HTTP 404 when polled)', 'with the reason');
select is((select count(*)::int from public.notifications
            where user_id = '00000000-0000-4000-8000-0000000019a1' and type = 'lora_failed'), 1,
  'and its owner is told');

select * from finish();
rollback;
