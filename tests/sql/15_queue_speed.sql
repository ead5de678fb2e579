-- 15_queue_speed.sql: migration 0027 keeps every guarantee of the queue
-- contract while claiming and completing in single statements: leases,
-- fencing tokens, an event per transition, dead letters, credits charged
-- once at the first claim (0017), the batched complete_ai_jobs, and the
-- scheduled post completion that locks its post once. Times are in 2031
-- (injected p_now) so nothing else is due.
begin;
set local client_min_messages = warning;
create extension if not exists pgtap;

create function pg_temp.put(p_key text, p_val jsonb) returns jsonb
language sql as $$ select set_config('qs.' || p_key, p_val::text, true)::jsonb $$;
create function pg_temp.g(p_key text) returns jsonb
language sql stable as $$ select current_setting('qs.' || p_key)::jsonb $$;
create function pg_temp.t(p_min text) returns timestamptz
language sql immutable as $$ select '2031-03-01 00:00:00+00'::timestamptz + p_min::interval $$;
create function pg_temp.ids(p_claim jsonb) returns uuid[]
language sql immutable as $$
  select coalesce(array_agg((e->>'id')::uuid order by e->>'id'), '{}') from jsonb_array_elements(p_claim) e
$$;
create function pg_temp.tok(p_claim jsonb, p_id uuid) returns bigint
language sql immutable as $$
  select (e->>'lease_token')::bigint from jsonb_array_elements(p_claim) e where (e->>'id')::uuid = p_id
$$;
-- the claim's items as complete_ai_jobs input
create function pg_temp.settle(p_claim jsonb) returns jsonb
language sql immutable as $$
  select coalesce(jsonb_agg(jsonb_build_object('id', e->'id', 'lease_token', e->'lease_token')), '[]')
    from jsonb_array_elements(p_claim) e
$$;

select plan(51);

-- Users: A has 2 credits, B has 10.
insert into auth.users (id, email) values
  ('00000000-0000-4000-8000-0000000015a1', 'qs-a@example.test'),
  ('00000000-0000-4000-8000-0000000015a2', 'qs-b@example.test');
update public.users set credits = 2 where id = '00000000-0000-4000-8000-0000000015a1';
update public.users set credits = 10 where id = '00000000-0000-4000-8000-0000000015a2';

-- Jobs due in this order: A1 B1 A2 B2 A3 (A3 cannot be paid).
insert into public.ai_jobs (id, user_id, kind, provider, model, prompt, next_attempt_at) values
  ('00000000-0000-4000-8000-000000015001', '00000000-0000-4000-8000-0000000015a1', 'image', 'venice', 'm', 'a1', pg_temp.t('-5 minutes')),
  ('00000000-0000-4000-8000-000000015002', '00000000-0000-4000-8000-0000000015a2', 'image', 'venice', 'm', 'b1', pg_temp.t('-4 minutes')),
  ('00000000-0000-4000-8000-000000015003', '00000000-0000-4000-8000-0000000015a1', 'image', 'venice', 'm', 'a2', pg_temp.t('-3 minutes')),
  ('00000000-0000-4000-8000-000000015004', '00000000-0000-4000-8000-0000000015a2', 'image', 'venice', 'm', 'b2', pg_temp.t('-2 minutes')),
  ('00000000-0000-4000-8000-000000015005', '00000000-0000-4000-8000-0000000015a1', 'image', 'venice', 'm', 'a3', pg_temp.t('-1 minute'));

-- A batched claim: leases, tokens, events, charges, the dead letter -------------------------
select pg_temp.put('c1', public.claim_next_ai_jobs('qs-w1', 60, 10, pg_temp.t('0')));
select is(pg_temp.ids(pg_temp.g('c1')),
  array['00000000-0000-4000-8000-000000015001', '00000000-0000-4000-8000-000000015002',
        '00000000-0000-4000-8000-000000015003', '00000000-0000-4000-8000-000000015004']::uuid[],
  'the claim answers the four affordable jobs');
select is((select array_agg(e->>'prompt' order by n) from jsonb_array_elements(pg_temp.g('c1')) with ordinality x(e, n)),
  array['a1', 'b1', 'a2', 'b2'], 'oldest due first, each the row as jsonb');
select results_eq($$select status, attempt_count, locked_by, lease_expires_at from public.ai_jobs
                     where id in ('00000000-0000-4000-8000-000000015001', '00000000-0000-4000-8000-000000015004')
                     order by id$$,
  $$values ('running'::text, 1, 'qs-w1'::text, '2031-03-01 00:01:00+00'::timestamptz),
           ('running'::text, 1, 'qs-w1'::text, '2031-03-01 00:01:00+00'::timestamptz)$$,
  'claimed jobs are leased to the worker for p_lease_seconds, attempt 1');
select is((select count(distinct (e->>'lease_token')::bigint)::int from jsonb_array_elements(pg_temp.g('c1')) e), 4,
  'each claimed job has its own fencing token');
select ok((select bool_and((e->>'lease_token')::bigint = j.lease_token)
             from jsonb_array_elements(pg_temp.g('c1')) e join public.ai_jobs j on j.id = (e->>'id')::uuid),
  'the answer carries the row''s current token');
select is((select status || ' / ' || last_error from public.ai_jobs where id = '00000000-0000-4000-8000-000000015005'),
  'failed / insufficient credits: 1 needed, 0 left', 'the job its user cannot pay is dead-lettered with the reason');
select ok((select dead_lettered_at = pg_temp.t('0') and lease_expires_at is null and locked_by is null
             from public.ai_jobs where id = '00000000-0000-4000-8000-000000015005'),
  'with its dead_lettered_at and no lease');
select results_eq($$select type, count(*)::int from public.ai_job_events
                     where job_id::text like '00000000-0000-4000-8000-00000001500%' group by type order by type$$,
  $$values ('claimed'::text, 4), ('failure'::text, 1)$$, 'one event per transition: four claimed, one failure');
select is((select detail - 'lease_expires_at' from public.ai_job_events
            where job_id = '00000000-0000-4000-8000-000000015001' and type = 'claimed'),
  jsonb_build_object('attempt', 1, 'lease_token', pg_temp.tok(pg_temp.g('c1'), '00000000-0000-4000-8000-000000015001'),
                     'worker_id', 'qs-w1'),
  'the claimed event names attempt, token and worker');
select is((select detail ->> 'error' from public.ai_job_events
            where job_id = '00000000-0000-4000-8000-000000015005' and type = 'failure'),
  'insufficient credits: 1 needed, 0 left', 'the failure event carries the error');
select ok((select (detail ->> 'dead_lettered')::boolean and (detail ->> 'permanent')::boolean from public.ai_job_events
            where job_id = '00000000-0000-4000-8000-000000015005' and type = 'failure'),
  'and says it was dead-lettered, permanently');
select results_eq($$select u.id::text, u.credits from public.users u
                     where u.id in ('00000000-0000-4000-8000-0000000015a1', '00000000-0000-4000-8000-0000000015a2')
                     order by u.id$$,
  $$values ('00000000-0000-4000-8000-0000000015a1', 0), ('00000000-0000-4000-8000-0000000015a2', 8)$$,
  'each user paid one credit per dispatched job');
select results_eq($$select item_id::text, credits, balance_after from public.credit_charges
                     where item_id::text like '00000000-0000-4000-8000-00000001500%' order by item_id$$,
  $$values ('00000000-0000-4000-8000-000000015001', 1, 1), ('00000000-0000-4000-8000-000000015002', 1, 9),
           ('00000000-0000-4000-8000-000000015003', 1, 0), ('00000000-0000-4000-8000-000000015004', 1, 8)$$,
  'one charge row per dispatched job, with the balance after it, in due order');
select is(public.claim_next_ai_jobs('qs-w2', 60, 10, pg_temp.t('10 seconds')), '[]'::jsonb,
  'nothing else is due: leased jobs are not claimed twice');

-- Batched completion ------------------------------------------------------------------------
select pg_temp.put('done', public.complete_ai_jobs(
  jsonb_build_array(
    jsonb_build_object('id', '00000000-0000-4000-8000-000000015001',
                       'lease_token', pg_temp.tok(pg_temp.g('c1'), '00000000-0000-4000-8000-000000015001'),
                       'result', jsonb_build_object('image', 'a1.png')),
    jsonb_build_object('id', '00000000-0000-4000-8000-000000015002',
                       'lease_token', pg_temp.tok(pg_temp.g('c1'), '00000000-0000-4000-8000-000000015002') + 1000),
    jsonb_build_object('id', '00000000-0000-4000-8000-000000015005', 'lease_token',
                       (select lease_token from public.ai_jobs where id = '00000000-0000-4000-8000-000000015005')),
    jsonb_build_object('id', '00000000-0000-4000-8000-000000015003',
                       'lease_token', pg_temp.tok(pg_temp.g('c1'), '00000000-0000-4000-8000-000000015003'))),
  pg_temp.t('20 seconds')));
select is(pg_temp.g('done'), '[
  {"id": "00000000-0000-4000-8000-000000015001", "accepted": true, "status": "succeeded"},
  {"id": "00000000-0000-4000-8000-000000015002", "accepted": false, "reason": "stale_lease"},
  {"id": "00000000-0000-4000-8000-000000015005", "accepted": false, "reason": "stale_lease"},
  {"id": "00000000-0000-4000-8000-000000015003", "accepted": true, "status": "succeeded"}]'::jsonb,
  'complete_ai_jobs answers per item in the order given: a wrong token and a dead job are stale');
select results_eq($$select status, completed_at, locked_by, lease_expires_at, result from public.ai_jobs
                     where id = '00000000-0000-4000-8000-000000015001'$$,
  $$values ('succeeded'::text, '2031-03-01 00:00:20+00'::timestamptz, null::text, null::timestamptz, '{"image": "a1.png"}'::jsonb)$$,
  'a completed job is succeeded, its lease cleared, its result stored');
select is((select result from public.ai_jobs where id = '00000000-0000-4000-8000-000000015003'), '{}'::jsonb,
  'without a result the job''s result is {} (as complete_ai_job)');
select results_eq($$select status, locked_by from public.ai_jobs where id = '00000000-0000-4000-8000-000000015002'$$,
  $$values ('running'::text, 'qs-w1'::text)$$, 'the stale item is left unchanged');
select is((select status from public.ai_jobs where id = '00000000-0000-4000-8000-000000015005'), 'failed',
  'the dead letter stays dead');
select is((select count(*)::int from public.ai_job_events where type = 'success'
            and job_id::text like '00000000-0000-4000-8000-00000001500%'), 2,
  'one success event per completed job, none for the stale ones');
select is((select detail from public.ai_job_events where job_id = '00000000-0000-4000-8000-000000015001' and type = 'success'),
  jsonb_build_object('status', 'succeeded', 'result', jsonb_build_object('image', 'a1.png'),
                     'lease_token', pg_temp.tok(pg_temp.g('c1'), '00000000-0000-4000-8000-000000015001'),
                     'worker_id', 'qs-w1'),
  'the success event names status, result, token and the worker that held the lease');
select is(public.complete_ai_jobs(
  jsonb_build_array(jsonb_build_object('id', '00000000-0000-4000-8000-000000015001',
    'lease_token', pg_temp.tok(pg_temp.g('c1'), '00000000-0000-4000-8000-000000015001'))), pg_temp.t('21 seconds')),
  '[{"id": "00000000-0000-4000-8000-000000015001", "accepted": false, "reason": "stale_lease"}]'::jsonb,
  'completing twice is stale the second time');
select is((select count(*)::int from public.ai_job_events where type = 'success'
            and job_id = '00000000-0000-4000-8000-000000015001'), 1, 'and writes no second event');
select throws_ok($$select public.complete_ai_jobs('{"id": 1}'::jsonb)$$, '22023', null,
  'complete_ai_jobs takes an array only');
select throws_ok($$select public.complete_ai_jobs('[{"id": "00000000-0000-4000-8000-000000015004", "lease_token": 1, "result": {"status": "failed"}}]'::jsonb)$$,
  '22023', null, 'a result status other than succeeded is refused (fail_ai_job fails jobs)');
select is(public.complete_ai_jobs('[]'::jsonb), '[]'::jsonb, 'an empty batch answers []');

-- Single completion, fencing ----------------------------------------------------------------
select is(public.complete_ai_job('00000000-0000-4000-8000-000000015004',
  pg_temp.tok(pg_temp.g('c1'), '00000000-0000-4000-8000-000000015004') - 1, null, pg_temp.t('30 seconds')),
  '{"accepted": false, "reason": "stale_lease"}'::jsonb, 'complete_ai_job with an old token is stale');
select is(public.complete_ai_job('00000000-0000-4000-8000-000000015004',
  pg_temp.tok(pg_temp.g('c1'), '00000000-0000-4000-8000-000000015004'), '{"n": 4}', pg_temp.t('31 seconds')),
  '{"accepted": true, "status": "succeeded"}'::jsonb, 'and accepted with the current one');
select is((select updated_at from public.ai_jobs where id = '00000000-0000-4000-8000-000000015004'), now(),
  'updated_at still follows every write');

-- Retries are not charged again; expired leases -------------------------------------------------
select is(public.fail_ai_job('00000000-0000-4000-8000-000000015002',
  pg_temp.tok(pg_temp.g('c1'), '00000000-0000-4000-8000-000000015002'), 'provider hiccup', false, null, pg_temp.t('40 seconds')) ->> 'status',
  'queued', 'a transient failure puts the job back');
select is(pg_temp.ids(public.claim_next_ai_jobs('qs-w3', 60, 10, pg_temp.t('3 hours'))),
  array['00000000-0000-4000-8000-000000015002']::uuid[], 'its retry is claimed again');
select is((select count(*)::int from public.credit_charges where item_id = '00000000-0000-4000-8000-000000015002'), 1,
  'a retry is never charged twice');
select is((select credits from public.users where id = '00000000-0000-4000-8000-0000000015a2'), 8,
  'and the balance is unchanged');
update public.ai_jobs set max_attempts = 2 where id = '00000000-0000-4000-8000-000000015002';
select is(public.claim_next_ai_jobs('qs-w4', 60, 10, pg_temp.t('4 hours')), '[]'::jsonb,
  'a lease that expired on the last attempt is not claimed again');
select results_eq($$select status, last_error from public.ai_jobs where id = '00000000-0000-4000-8000-000000015002'$$,
  $$values ('failed'::text, 'lease expired on the last attempt (2 of 2)'::text)$$, 'it is dead-lettered');
select results_eq($$select type from public.ai_job_events where job_id = '00000000-0000-4000-8000-000000015002'
                     and created_at = '2031-03-01 04:00:00+00' order by type$$,
  $$values ('failure'::text), ('lease_expired'::text)$$, 'with its lease_expired and failure events');

-- One per claim, and the users guard --------------------------------------------------------------
insert into public.ai_jobs (id, user_id, kind, provider, model, prompt, next_attempt_at) values
  ('00000000-0000-4000-8000-000000015006', '00000000-0000-4000-8000-0000000015a2', 'image', 'venice', 'm', 'b3', pg_temp.t('5 hours'));
select pg_temp.put('c2', public.claim_next_ai_jobs('qs-w5', 30, 1, pg_temp.t('5 hours')));
select is(pg_temp.ids(pg_temp.g('c2')), array['00000000-0000-4000-8000-000000015006']::uuid[], 'claim of one job');
select is((select credits from public.users where id = '00000000-0000-4000-8000-0000000015a2'), 7, 'charged one credit');
select set_config('request.jwt.claims', '{"sub": "00000000-0000-4000-8000-0000000015a2", "role": "authenticated"}', true);
set local role authenticated;
select throws_ok($$update public.users set credits = 1000 where id = '00000000-0000-4000-8000-0000000015a2'$$, '42501', null,
  'a user still cannot give themselves credits (the guard fires for API roles)');
reset role;
select set_config('request.jwt.claims', '', true);

-- claim_next_scheduled_posts: the tenancy screen as part of the claim -----------------------------
insert into public.connected_accounts (id, user_id, platform, platform_user_id, username, access_token, account_did) values
  ('00000000-0000-4000-8000-0000000015c1', '00000000-0000-4000-8000-0000000015a1', 'x', 'qs-x-a', 'qs_a', 'sealed', null),
  ('00000000-0000-4000-8000-0000000015c2', '00000000-0000-4000-8000-0000000015a2', 'x', 'qs-x-b', 'qs_b', 'sealed', null),
  ('00000000-0000-4000-8000-0000000015c3', '00000000-0000-4000-8000-0000000015a2', 'x', 'qs-x-b2', 'qs_unproven', 'sealed', null),
  ('00000000-0000-4000-8000-0000000015c4', '00000000-0000-4000-8000-0000000015a2', 'bluesky', 'did:plc:qsb', 'qs_sky', null, 'did:plc:qsb');
update public.connected_accounts set verified_at = pg_temp.t('-1 day')
 where id in ('00000000-0000-4000-8000-0000000015c1', '00000000-0000-4000-8000-0000000015c2');
insert into public.drafts (id, user_id, text) values
  ('00000000-0000-4000-8000-0000000015d1', '00000000-0000-4000-8000-0000000015a1', 'a''s draft');
insert into public.content_adaptations (id, user_id, original_idea) values
  ('00000000-0000-4000-8000-0000000015e1', '00000000-0000-4000-8000-0000000015a1', 'a''s idea');
insert into public.ai_jobs (id, user_id, prompt, status) values
  ('00000000-0000-4000-8000-0000000150f1', '00000000-0000-4000-8000-0000000015a1', 'a''s picture', 'succeeded');
insert into public.ai_assets (id, job_id, user_id, bucket, path, mime) values
  ('00000000-0000-4000-8000-0000000015f1', '00000000-0000-4000-8000-0000000150f1', '00000000-0000-4000-8000-0000000015a1',
   'generations', '00000000-0000-4000-8000-0000000015a1/a.png', 'image/png');
-- all of user B, each naming something the service must not use, but the last two
insert into public.scheduled_posts (id, user_id, account_id, account_did, draft_id, adaptation_id, media, platform, content, run_at) values
  ('00000000-0000-4000-8000-000000015201', '00000000-0000-4000-8000-0000000015a2', '00000000-0000-4000-8000-0000000015c1',
   null, null, null, '[]', 'x', 'on a''s account', pg_temp.t('5 hours 10 minutes')),
  ('00000000-0000-4000-8000-000000015202', '00000000-0000-4000-8000-0000000015a2', '00000000-0000-4000-8000-0000000015c3',
   null, null, null, '[]', 'x', 'unverified', pg_temp.t('5 hours 11 minutes')),
  ('00000000-0000-4000-8000-000000015203', '00000000-0000-4000-8000-0000000015a2', '00000000-0000-4000-8000-0000000015c2',
   null, '00000000-0000-4000-8000-0000000015d1', null, '[]', 'x', 'a''s draft', pg_temp.t('5 hours 12 minutes')),
  ('00000000-0000-4000-8000-000000015204', '00000000-0000-4000-8000-0000000015a2', '00000000-0000-4000-8000-0000000015c2',
   null, null, '00000000-0000-4000-8000-0000000015e1', '[]', 'x', 'a''s idea', pg_temp.t('5 hours 13 minutes')),
  ('00000000-0000-4000-8000-000000015205', '00000000-0000-4000-8000-0000000015a2', '00000000-0000-4000-8000-0000000015c2',
   null, null, null, '[{"ai_asset_id": "00000000-0000-4000-8000-0000000015f1"}]', 'x', 'a''s image', pg_temp.t('5 hours 14 minutes')),
  ('00000000-0000-4000-8000-000000015206', '00000000-0000-4000-8000-0000000015a2', null,
   'did:plc:qsb', null, null, '[]', 'bluesky', 'by DID, unverified Bluesky is fine', pg_temp.t('5 hours 15 minutes')),
  ('00000000-0000-4000-8000-000000015207', '00000000-0000-4000-8000-0000000015a2', '00000000-0000-4000-8000-0000000015c2',
   null, null, null, '[]', 'x', 'fine', pg_temp.t('5 hours 16 minutes'));
select pg_temp.put('s1', public.claim_next_scheduled_posts('qs-screen', 86400, 10, pg_temp.t('5 hours 30 minutes')));
select is(pg_temp.ids(pg_temp.g('s1')),
  array['00000000-0000-4000-8000-000000015206', '00000000-0000-4000-8000-000000015207']::uuid[],
  'claim_next_scheduled_posts answers only the posts the service may publish');
select results_eq($$select status || ' / ' || last_error from public.scheduled_posts
                     where id::text like '00000000-0000-4000-8000-00000001520%' and status = 'failed' order by id$$,
  $$values ('failed / refused: the account belongs to another user'),
           ('failed / refused: the x account qs_unproven is not verified (connect it again through Outpost)'),
           ('failed / refused: the draft belongs to another user'),
           ('failed / refused: the adaptation belongs to another user'),
           ('failed / refused: an image belongs to another user')$$,
  'each refused post is dead-lettered with 0017''s reason');
select ok((select bool_and(dead_lettered_at = pg_temp.t('5 hours 30 minutes') and locked_by is null and lease_expires_at is null)
             from public.scheduled_posts where id::text like '00000000-0000-4000-8000-00000001520%' and status = 'failed'),
  'refused posts carry dead_lettered_at and no lease');
select results_eq($$select e.type, count(*)::int from public.post_events e
                     where e.scheduled_post_id::text like '00000000-0000-4000-8000-00000001520%' group by e.type order by e.type$$,
  $$values ('claimed'::text, 2), ('failure'::text, 5)$$, 'one event per transition: claimed or failure');
select is((select detail ->> 'error' from public.post_events
            where scheduled_post_id = '00000000-0000-4000-8000-000000015205' and type = 'failure'),
  'refused: an image belongs to another user', 'the failure event carries the reason');
select results_eq($$select status, locked_by from public.scheduled_posts
                     where id in ('00000000-0000-4000-8000-000000015206', '00000000-0000-4000-8000-000000015207') order by id$$,
  $$values ('posting'::text, 'qs-screen'::text), ('posting'::text, 'qs-screen'::text)$$, 'the good posts are leased');

-- Scheduled posts: complete and complete_scheduled_post_publish --------------------------------------
insert into public.scheduled_posts (id, user_id, content, run_at) values
  ('00000000-0000-4000-8000-000000015101', '00000000-0000-4000-8000-0000000015a1', 'hello', pg_temp.t('6 hours')),
  ('00000000-0000-4000-8000-000000015102', '00000000-0000-4000-8000-0000000015a1', 'again', pg_temp.t('6 hours 1 second'));
select pg_temp.put('p1', public.claim_next_scheduled_posts('qs-pub', 60, 2, pg_temp.t('7 hours')));
select is(public.complete_scheduled_post('00000000-0000-4000-8000-000000015101',
  pg_temp.tok(pg_temp.g('p1'), '00000000-0000-4000-8000-000000015101') + 99, null, pg_temp.t('7 hours 1 second')),
  '{"accepted": false, "reason": "stale_lease"}'::jsonb, 'complete_scheduled_post is fenced');
select is(public.complete_scheduled_post('00000000-0000-4000-8000-000000015101',
  pg_temp.tok(pg_temp.g('p1'), '00000000-0000-4000-8000-000000015101'), null, pg_temp.t('7 hours 2 seconds')),
  '{"accepted": true, "status": "posted"}'::jsonb, 'and accepts the current token');
select is(public.complete_scheduled_post_publish('00000000-0000-4000-8000-000000015102',
  pg_temp.tok(pg_temp.g('p1'), '00000000-0000-4000-8000-000000015102') - 1,
  '{"platform": "bluesky", "platform_post_id": "at://qs/1"}', pg_temp.t('7 hours 3 seconds')) - 'status',
  '{"accepted": false, "reason": "stale_lease"}'::jsonb, 'complete_scheduled_post_publish with an old token is stale');
select is((select count(*)::int from public.post_events where scheduled_post_id = '00000000-0000-4000-8000-000000015102'
            and type = 'stale_result'), 1, 'and leaves a stale_result event');
select pg_temp.put('pub', public.complete_scheduled_post_publish('00000000-0000-4000-8000-000000015102',
  pg_temp.tok(pg_temp.g('p1'), '00000000-0000-4000-8000-000000015102'),
  '{"platform": "bluesky", "platform_post_id": "at://qs/2", "url": "https://bsky.app/qs/2"}', pg_temp.t('7 hours 4 seconds')));
select results_eq($$select sp.status, sp.posted_at, pp.platform_post_id, pp.status
                      from public.scheduled_posts sp join public.published_posts pp on pp.id = sp.published_post_id
                     where sp.id = '00000000-0000-4000-8000-000000015102'$$,
  $$values ('posted'::text, '2031-03-01 07:00:04+00'::timestamptz, 'at://qs/2'::text, 'published'::text)$$,
  'the publish completion posts the post and links its published_posts row');
select is((select count(*)::int from public.post_events where scheduled_post_id = '00000000-0000-4000-8000-000000015102'
            and type = 'success'), 1, 'with one success event');

select * from finish();
rollback;
