-- 08_tenancy_workers.sql: the workers' SQL never acts for one user with
-- another user's rows (issue 12, items 3 to 5; migration 0017). Rows are
-- planted as the superuser, past every policy, as a policy bug would let
-- them in; times are in 2030 (injected p_now) so nothing else is due.
begin;
set local client_min_messages = warning;
create extension if not exists pgtap;

create function pg_temp.put(p_key text, p_val jsonb) returns jsonb
language sql as $$ select set_config('tw.' || p_key, p_val::text, true)::jsonb $$;
create function pg_temp.g(p_key text) returns jsonb
language sql stable as $$ select current_setting('tw.' || p_key)::jsonb $$;
create function pg_temp.t(p_min text) returns timestamptz
language sql immutable as $$ select '2030-06-01 00:00:00+00'::timestamptz + p_min::interval $$;
create function pg_temp.ids(p_claim jsonb) returns uuid[]
language sql immutable as $$
  select coalesce(array_agg((e->>'id')::uuid order by e->>'id'), '{}') from jsonb_array_elements(p_claim) e
$$;
create function pg_temp.tok(p_claim jsonb, p_id uuid) returns bigint
language sql immutable as $$
  select (e->>'lease_token')::bigint from jsonb_array_elements(p_claim) e where (e->>'id')::uuid = p_id
$$;
-- one SQL text as an authenticated user; its sqlstate, or 'ok'
create function pg_temp.as_user(p_uid uuid, p_sql text) returns text
language plpgsql as $$
begin
  perform set_config('request.jwt.claims', json_build_object('sub', p_uid, 'role', 'authenticated')::text, true);
  set local role authenticated;
  begin
    execute p_sql;
  exception when others then
    reset role;
    perform set_config('request.jwt.claims', '', true);
    return sqlstate;
  end;
  reset role;
  perform set_config('request.jwt.claims', '', true);
  return 'ok';
end
$$;

select plan(52);

-- Owner (a1), another user (a2) -----------------------------------------------------------
insert into auth.users (id, email) values
  ('00000000-0000-4000-8000-0000000008a1', 'tenant-owner@example.test'),
  ('00000000-0000-4000-8000-0000000008a2', 'tenant-other@example.test');
insert into public.connected_accounts (id, user_id, platform, platform_user_id, username, access_token) values
  ('00000000-0000-4000-8000-00000008ca01', '00000000-0000-4000-8000-0000000008a1', 'x', 'x-owner', 'owner_x', 'sealed'),
  ('00000000-0000-4000-8000-00000008ca02', '00000000-0000-4000-8000-0000000008a2', 'x', 'x-other', 'other_x', 'sealed'),
  ('00000000-0000-4000-8000-00000008ca03', '00000000-0000-4000-8000-0000000008a2', 'x', 'x-unproven', 'unproven_x', 'sealed'),
  ('00000000-0000-4000-8000-00000008ca04', '00000000-0000-4000-8000-0000000008a1', 'strava', 'athlete-808', 'owner_run', 'sealed'),
  ('00000000-0000-4000-8000-00000008ca05', '00000000-0000-4000-8000-0000000008a2', 'strava', 'athlete-808', 'copycat_run', 'sealed');
update public.connected_accounts set verified_at = pg_temp.t('-1 day')
 where id in ('00000000-0000-4000-8000-00000008ca01', '00000000-0000-4000-8000-00000008ca02',
              '00000000-0000-4000-8000-00000008ca04');
-- the copycat touched its row last ("updated last" used to win the webhooks)
update public.connected_accounts set username = 'copycat_run2', next_sync_at = pg_temp.t('-1 minute')
 where id = '00000000-0000-4000-8000-00000008ca05';
insert into public.drafts (id, user_id, text) values
  ('00000000-0000-4000-8000-00000008d001', '00000000-0000-4000-8000-0000000008a1', 'the owner''s private draft');
insert into public.content_adaptations (id, user_id, original_idea) values
  ('00000000-0000-4000-8000-00000008c001', '00000000-0000-4000-8000-0000000008a1', 'the owner''s idea');
insert into public.user_loras (id, user_id, name) values
  ('00000000-0000-4000-8000-00000008e001', '00000000-0000-4000-8000-0000000008a1', 'owner lora');

-- Item 3: verified_at belongs to the service -----------------------------------------------
select has_column('public', 'connected_accounts', 'verified_at', 'connected_accounts.verified_at exists');
select is(pg_temp.as_user('00000000-0000-4000-8000-0000000008a2',
  $$insert into public.connected_accounts (user_id, platform, platform_user_id, username, verified_at)
    values ('00000000-0000-4000-8000-0000000008a2', 'instagram', 'ig-1', 'me', now())$$),
  '42501', 'a user cannot insert an account already verified');
select is(pg_temp.as_user('00000000-0000-4000-8000-0000000008a2',
  $$update public.connected_accounts set verified_at = now() where id = '00000000-0000-4000-8000-00000008ca03'$$),
  '42501', 'a user cannot mark their own account verified');
update public.connected_accounts set platform_user_id = 'x-renamed' where id = '00000000-0000-4000-8000-00000008ca02';
select is((select verified_at from public.connected_accounts where id = '00000000-0000-4000-8000-00000008ca02'), null,
  'a new identity is unverified');
select is(public.mark_account_verified('00000000-0000-4000-8000-00000008ca02', 'x-other', pg_temp.t('0')) ->> 'reason',
  'identity_mismatch', 'mark_account_verified refuses when the platform vouched for someone else');
select is(public.mark_account_verified('00000000-0000-4000-8000-00000008ca02', 'x-renamed', pg_temp.t('0')) ->> 'verified',
  'true', 'mark_account_verified verifies the identity the platform vouched for');
select is(public.mark_account_verified('00000000-0000-4000-8000-00000008ca05', 'athlete-808', pg_temp.t('0')) ->> 'reason',
  'verified_by_another_user', 'a second user cannot verify an identity another user verified');
select throws_ok($$update public.connected_accounts set verified_at = now() where id = '00000000-0000-4000-8000-00000008ca05'$$,
  '23505', null, 'one verified owner per (platform, platform_user_id), even for the service');

-- Webhooks and ingest: the verified owner only ------------------------------------------------
select pg_temp.put('wh', public.store_webhook_event('strava', 'strava.activity.create', 'activity:808:create:1',
  '{"owner_id": 808}', 'athlete-808', null, pg_temp.t('0')));
select is(pg_temp.g('wh') ->> 'account_id', '00000000-0000-4000-8000-00000008ca04',
  'a webhook for an identity two users claim goes to the verified owner, not the one updated last');
select is((select user_id from public.ingested_items where id = (pg_temp.g('wh') ->> 'id')::uuid),
  '00000000-0000-4000-8000-0000000008a1'::uuid, 'the stored payload belongs to the verified owner');
select is(public.store_webhook_event('x', 'x.event', 'x-unproven-1', '{}', 'x-unproven', null, pg_temp.t('0')) ->> 'account_id',
  null, 'an identity nobody verified gets no account');
-- an item planted on the copycat's account: ingest resolves the verified owner instead
insert into public.ingested_items (id, source, platform, account_id, user_id, event_type, external_id, payload, next_attempt_at) values
  ('00000000-0000-4000-8000-00000008f001', 'webhook', 'strava', '00000000-0000-4000-8000-00000008ca05',
   '00000000-0000-4000-8000-0000000008a2', 'strava.activity.create', 'tw-planted-1', '{}', pg_temp.t('1 year'));
select is(public.ingest_account_for_item('00000000-0000-4000-8000-00000008f001', 'athlete-808') ->> 'id',
  '00000000-0000-4000-8000-00000008ca04', 'ingest_account_for_item passes over an unverified account to the verified owner');
select is((select user_id from public.ingested_items where id = '00000000-0000-4000-8000-00000008f001'),
  '00000000-0000-4000-8000-0000000008a1'::uuid, 'and the item moves to that owner');
select is(public.ingest_account_for_item(
  (public.store_webhook_event('x', 'x.event', 'x-unproven-2', '{}', 'x-unproven', null, pg_temp.t('0')) ->> 'id')::uuid,
  'x-unproven'), 'null'::jsonb, 'an unverified identity has no account for ingest');
select is(public.claim_next_sync_account('tw-sync', 60, pg_temp.t('0')), 'null'::jsonb,
  'claim_next_sync_account skips a due but unverified account');
update public.connected_accounts set next_sync_at = pg_temp.t('-1 minute') where id = '00000000-0000-4000-8000-00000008ca04';
select is(public.claim_next_sync_account('tw-sync', 60, pg_temp.t('0')) ->> 'id', '00000000-0000-4000-8000-00000008ca04',
  'claim_next_sync_account takes the verified one');
select throws_ok($$select public.archive_platform_posts('00000000-0000-4000-8000-00000008ca05', null, '[]'::jsonb)$$,
  '42501', null, 'archive_platform_posts refuses an unverified account');

-- Item 4: scheduled posts naming someone else's rows -----------------------------------------
insert into public.scheduled_posts (id, user_id, account_id, draft_id, adaptation_id, platform, content, run_at) values
  -- on the owner's account
  ('00000000-0000-4000-8000-000000085001', '00000000-0000-4000-8000-0000000008a2', '00000000-0000-4000-8000-00000008ca01',
   null, null, 'x', 'posted as the owner', pg_temp.t('-10 minutes')),
  -- the owner's draft, on the other user's own account
  ('00000000-0000-4000-8000-000000085002', '00000000-0000-4000-8000-0000000008a2', '00000000-0000-4000-8000-00000008ca02',
   '00000000-0000-4000-8000-00000008d001', null, 'x', null, pg_temp.t('-9 minutes')),
  -- the owner's adaptation
  ('00000000-0000-4000-8000-000000085003', '00000000-0000-4000-8000-0000000008a2', '00000000-0000-4000-8000-00000008ca02',
   null, '00000000-0000-4000-8000-00000008c001', 'x', 'text', pg_temp.t('-8 minutes')),
  -- an unverified account
  ('00000000-0000-4000-8000-000000085004', '00000000-0000-4000-8000-0000000008a2', '00000000-0000-4000-8000-00000008ca03',
   null, null, 'x', 'unproven', pg_temp.t('-7 minutes')),
  -- a good post, behind the bad ones of its account
  ('00000000-0000-4000-8000-000000085005', '00000000-0000-4000-8000-0000000008a2', '00000000-0000-4000-8000-00000008ca02',
   null, null, 'x', 'fine', pg_temp.t('-6 minutes'));
select pg_temp.put('due', public.claim_due_scheduled_posts('tw-claim', 60, 5, pg_temp.t('0')));
select is(pg_temp.ids(pg_temp.g('due')), array['00000000-0000-4000-8000-000000085005'::uuid],
  'claim_due_scheduled_posts hands out only the good post, even behind refused ones of its account');
select is((select status || ' / ' || last_error from public.scheduled_posts where id = '00000000-0000-4000-8000-000000085001'),
  'failed / refused: the account belongs to another user', 'a post on another user''s account is failed with the reason');
select is((select status || ' / ' || last_error from public.scheduled_posts where id = '00000000-0000-4000-8000-000000085002'),
  'failed / refused: the draft belongs to another user', 'a post of another user''s draft is failed with the reason');
select is((select status || ' / ' || last_error from public.scheduled_posts where id = '00000000-0000-4000-8000-000000085003'),
  'failed / refused: the adaptation belongs to another user', 'a post of another user''s adaptation is failed with the reason');
select is((select status || ' / ' || last_error from public.scheduled_posts where id = '00000000-0000-4000-8000-000000085004'),
  'failed / refused: the x account unproven_x is not verified (connect it again through Outpost)',
  'a post on an unverified account is failed with the reason');
select ok((select dead_lettered_at is not null from public.scheduled_posts where id = '00000000-0000-4000-8000-000000085001'),
  'the refused post is dead-lettered');
select is((select array_agg(type order by created_at, type) from public.post_events
            where scheduled_post_id = '00000000-0000-4000-8000-000000085001'),
  array['claimed', 'failure'], 'the refusal is a failure event');
select is((select detail ->> 'error' from public.post_events
            where scheduled_post_id = '00000000-0000-4000-8000-000000085001' and type = 'failure'),
  'refused: the account belongs to another user', 'the failure event carries the reason');

-- the contract claim (and the seed wrapper over it) refuse too
insert into public.scheduled_posts (id, user_id, account_id, platform, content, run_at) values
  ('00000000-0000-4000-8000-000000085006', '00000000-0000-4000-8000-0000000008a2', '00000000-0000-4000-8000-00000008ca01',
   'x', 'posted as the owner', pg_temp.t('-5 minutes'));
select is(public.claim_next_scheduled_posts('tw-contract', 60, 5, pg_temp.t('0')), '[]'::jsonb,
  'claim_next_scheduled_posts hands out nothing planted');
select is((select status from public.scheduled_posts where id = '00000000-0000-4000-8000-000000085006'), 'failed',
  'claim_next_scheduled_posts fails the planted post');

-- begin: a post that turned bad after its claim
select is(public.begin_scheduled_post_publish('00000000-0000-4000-8000-000000085005',
  pg_temp.tok(pg_temp.g('due'), '00000000-0000-4000-8000-000000085005'), 60, pg_temp.t('1 second')) ->> 'accepted',
  'true', 'begin accepts the good post');
update public.scheduled_posts set account_id = '00000000-0000-4000-8000-00000008ca01'
 where id = '00000000-0000-4000-8000-000000085005';
select pg_temp.put('begun', public.begin_scheduled_post_publish('00000000-0000-4000-8000-000000085005',
  pg_temp.tok(pg_temp.g('due'), '00000000-0000-4000-8000-000000085005'), 60, pg_temp.t('2 seconds')));
select is(pg_temp.g('begun') ->> 'accepted', 'false', 'begin refuses a post now on another user''s account');
select is(pg_temp.g('begun') ->> 'refusal', 'refused: the account belongs to another user', 'begin says why');
select ok(pg_temp.g('begun') -> 'account' is null and pg_temp.g('begun') -> 'post' is null,
  'begin hands over neither the post nor the account');
select is((select status || ' / ' || last_error from public.scheduled_posts where id = '00000000-0000-4000-8000-000000085005'),
  'failed / refused: the account belongs to another user', 'begin fails the post with the reason');
select is((select detail ->> 'stage' from public.post_events
            where scheduled_post_id = '00000000-0000-4000-8000-000000085005' and type = 'failure'),
  'begin', 'with a failure event from begin');

-- generations with another user's LoRA, archive items and media of another user
update public.users set credits = 10 where id = '00000000-0000-4000-8000-0000000008a2';
insert into public.generations (id, user_id, lora_id, model_id, status, next_attempt_at) values
  ('00000000-0000-4000-8000-000000086001', '00000000-0000-4000-8000-0000000008a2', '00000000-0000-4000-8000-00000008e001',
   'flux', 'pending', pg_temp.t('-1 minute'));
select is(public.claim_next_generations('tw-gen', 60, 5, pg_temp.t('0')), '[]'::jsonb,
  'claim_next_generations hands out no generation with another user''s LoRA');
select is((select status || ' / ' || last_error from public.generations where id = '00000000-0000-4000-8000-000000086001'),
  'failed / refused: the LoRA belongs to another user', 'the generation is dead-lettered with the reason');
select is((select credits from public.users where id = '00000000-0000-4000-8000-0000000008a2'), 10,
  'a refused generation costs nothing');
insert into public.ingested_items (id, source, platform, account_id, user_id, event_type, external_id, payload, next_attempt_at) values
  ('00000000-0000-4000-8000-00000008f002', 'webhook', 'strava', '00000000-0000-4000-8000-00000008ca04',
   '00000000-0000-4000-8000-0000000008a2', 'strava.activity.create', 'tw-planted-2', '{}', pg_temp.t('-1 minute'));
select ok(not '00000000-0000-4000-8000-00000008f002'::uuid = any (pg_temp.ids(public.claim_next_archive_items('tw-ingest', 60, 5, pg_temp.t('0')))),
  'claim_next_archive_items hands out no item whose account belongs to another user');
select is((select status::text || ' / ' || last_error from public.ingested_items where id = '00000000-0000-4000-8000-00000008f002'),
  'failed / refused: the account belongs to another user', 'the item is dead-lettered with the reason');
insert into public.ingested_posts (id, platform, account_id, user_id, platform_post_id, post_data, status) values
  ('00000000-0000-4000-8000-00000008f101', 'strava', '00000000-0000-4000-8000-00000008ca04',
   '00000000-0000-4000-8000-0000000008a1', 'tw-activity', '{}', 'completed');
insert into public.media_downloads (id, ingested_post_id, user_id, original_url, next_attempt_at) values
  ('00000000-0000-4000-8000-00000008f201', '00000000-0000-4000-8000-00000008f101',
   '00000000-0000-4000-8000-0000000008a2', 'https://cdn.example.test/tw.jpg', pg_temp.t('-1 minute'));
select is(public.claim_next_media_downloads('tw-media', 60, 5, pg_temp.t('0')), '[]'::jsonb,
  'claim_next_media_downloads hands out no download into another user''s folder');
select is((select last_error from public.media_downloads where id = '00000000-0000-4000-8000-00000008f201'),
  'refused: the archived post belongs to another user', 'the download is dead-lettered with the reason');

-- Item 5: credits ----------------------------------------------------------------------------
update public.users set credits = 1 where id = '00000000-0000-4000-8000-0000000008a2';
insert into public.ai_jobs (id, user_id, provider, model, prompt, next_attempt_at) values
  ('00000000-0000-4000-8000-000000087001', '00000000-0000-4000-8000-0000000008a2', 'venice', 'flux', 'one', pg_temp.t('-2 minutes')),
  ('00000000-0000-4000-8000-000000087002', '00000000-0000-4000-8000-0000000008a2', 'venice', 'flux', 'two', pg_temp.t('-1 minute'));
select pg_temp.put('aj1', public.claim_next_ai_jobs('tw-ai', 60, 1, pg_temp.t('0')));
select is(pg_temp.ids(pg_temp.g('aj1')), array['00000000-0000-4000-8000-000000087001'::uuid], 'the first job is dispatched');
select is((select credits from public.users where id = '00000000-0000-4000-8000-0000000008a2'), 0,
  'dispatching it took its credit');
select is(public.claim_next_ai_jobs('tw-ai', 60, 1, pg_temp.t('1 second')), '[]'::jsonb,
  'with no credits left the next job is not dispatched');
select is((select status || ' / ' || last_error from public.ai_jobs where id = '00000000-0000-4000-8000-000000087002'),
  'failed / insufficient credits: 1 needed, 0 left', 'it is dead-lettered "insufficient credits", not retried');
select ok((select dead_lettered_at is not null from public.ai_jobs where id = '00000000-0000-4000-8000-000000087002'),
  'and its dead_lettered_at is set');
select is(public.fail_ai_job('00000000-0000-4000-8000-000000087001',
  pg_temp.tok(pg_temp.g('aj1'), '00000000-0000-4000-8000-000000087001'), 'provider hiccup', false, null, pg_temp.t('2 seconds')) ->> 'status',
  'queued', 'the first job fails transiently and waits for a retry');
select is(pg_temp.ids(public.claim_next_ai_jobs('tw-ai', 60, 1, pg_temp.t('2 hours'))),
  array['00000000-0000-4000-8000-000000087001'::uuid], 'its retry is dispatched again with no credits left');
select results_eq($$select count(*)::int, sum(credits)::int from public.credit_charges
                     where item_id = '00000000-0000-4000-8000-000000087001'$$,
  $$values (1, 1)$$, 'it was charged once across the retry');
select is((select credits from public.users where id = '00000000-0000-4000-8000-0000000008a2'), 0,
  'credits are never charged twice');

-- record_generation_result: one prediction id, one generation ---------------------------------
insert into public.generations (id, user_id, model_id, status, replicate_prediction_id) values
  ('00000000-0000-4000-8000-000000086101', '00000000-0000-4000-8000-0000000008a1', 'flux', 'processing', 'tw-pred-1');
select throws_ok($$insert into public.generations (user_id, model_id, status, replicate_prediction_id)
                   values ('00000000-0000-4000-8000-0000000008a2', 'flux', 'processing', 'tw-pred-1')$$,
  '23505', null, 'two live generations cannot share a prediction id');
insert into public.generations (id, user_id, model_id, status, replicate_prediction_id) values
  ('00000000-0000-4000-8000-000000086102', '00000000-0000-4000-8000-0000000008a2', 'flux', 'succeeded', 'tw-pred-1');
select is(public.record_generation_result('tw-pred-1', '{"status": "succeeded", "output_urls": ["https://x/tw.png"]}',
  null, pg_temp.t('0')) ->> 'reason', 'ambiguous_prediction_id', 'a prediction id two generations carry is refused');
select is((select status from public.generations where id = '00000000-0000-4000-8000-000000086101'), 'processing',
  'and neither generation takes the result');

select * from finish();
rollback;
