-- 04_queues.sql: the work-queue contract of migrations/CONTRACT.md, deeply on
-- scheduled_posts and at least once on each other queue, with the injectable
-- clock p_now (all times below are in 2030 so that real now() never makes
-- them due), plus the seed-named wrappers claim_next_scheduled_post and
-- claim_next_ai_image_job, and queue_depths.
begin;
set local client_min_messages = warning;
create extension if not exists pgtap;

-- remember a value across statements (a transaction-local setting)
create function pg_temp.put(p_key text, p_val jsonb) returns jsonb
language sql as $$ select set_config('q.' || p_key, p_val::text, true)::jsonb $$;
create function pg_temp.g(p_key text) returns jsonb
language sql stable as $$ select current_setting('q.' || p_key)::jsonb $$;
create function pg_temp.t(p_min text) returns timestamptz
language sql immutable as $$ select '2030-01-01 00:00:00+00'::timestamptz + p_min::interval $$;
-- the lease token of item p_id in a claim answer
create function pg_temp.tok(p_claim jsonb, p_id uuid) returns bigint
language sql immutable as $$
  select (e->>'lease_token')::bigint from jsonb_array_elements(p_claim) e where (e->>'id')::uuid = p_id
$$;
create function pg_temp.ids(p_claim jsonb) returns uuid[]
language sql immutable as $$
  select coalesce(array_agg((e->>'id')::uuid), '{}') from jsonb_array_elements(p_claim) e
$$;

select plan(77);

-- baseline depths (the database may hold other committed rows)
select pg_temp.put('depth_base_t0', public.queue_depths(pg_temp.t('0')) -> 'scheduled_posts');
select pg_temp.put('depth_base_t61', public.queue_depths(pg_temp.t('61 seconds')) -> 'scheduled_posts');

insert into auth.users (id, email) values ('00000000-0000-4000-8000-0000000004a1', 'queue@example.test');
insert into public.connected_accounts (id, user_id, platform, platform_user_id, username) values
  ('00000000-0000-4000-8000-00000004ca01', '00000000-0000-4000-8000-0000000004a1', 'bluesky', 'did:plc:queue', 'queue.bsky.social');
-- a real account (verified by the service) and a user who can pay for generations and AI jobs (0017)
update public.connected_accounts set verified_at = now() where id = '00000000-0000-4000-8000-00000004ca01';
update public.users set credits = 100 where id = '00000000-0000-4000-8000-0000000004a1';
insert into public.drafts (id, user_id, text) values
  ('00000000-0000-4000-8000-00000004d001', '00000000-0000-4000-8000-0000000004a1', 'draft');

-- sp1 due first, sp4 due later, sp2 an hour later, sp3 cancelled (due, never claimed),
-- sp5 for a permanent failure, sp6 with one attempt only
insert into public.scheduled_posts (id, user_id, draft_id, account_id, account_did, content, run_at, status, max_attempts) values
  ('00000000-0000-4000-8000-00000004e001', '00000000-0000-4000-8000-0000000004a1', '00000000-0000-4000-8000-00000004d001',
   '00000000-0000-4000-8000-00000004ca01', 'did:plc:queue', 'one', pg_temp.t('-1 minute'), 'queued', 5),
  ('00000000-0000-4000-8000-00000004e002', '00000000-0000-4000-8000-0000000004a1', '00000000-0000-4000-8000-00000004d001',
   '00000000-0000-4000-8000-00000004ca01', 'did:plc:queue', 'two', pg_temp.t('1 hour'), 'queued', 5),
  ('00000000-0000-4000-8000-00000004e003', '00000000-0000-4000-8000-0000000004a1', '00000000-0000-4000-8000-00000004d001',
   '00000000-0000-4000-8000-00000004ca01', 'did:plc:queue', 'three', pg_temp.t('-2 minutes'), 'cancelled', 5),
  ('00000000-0000-4000-8000-00000004e004', '00000000-0000-4000-8000-0000000004a1', '00000000-0000-4000-8000-00000004d001',
   '00000000-0000-4000-8000-00000004ca01', 'did:plc:queue', 'four', pg_temp.t('10 minutes'), 'queued', 5),
  ('00000000-0000-4000-8000-00000004e005', '00000000-0000-4000-8000-0000000004a1', '00000000-0000-4000-8000-00000004d001',
   '00000000-0000-4000-8000-00000004ca01', 'did:plc:queue', 'five', pg_temp.t('3 hours'), 'queued', 5),
  ('00000000-0000-4000-8000-00000004e006', '00000000-0000-4000-8000-0000000004a1', '00000000-0000-4000-8000-00000004d001',
   '00000000-0000-4000-8000-00000004ca01', 'did:plc:queue', 'six', pg_temp.t('5 hours'), 'queued', 1);

-- ------------------------------------------------------------ claim
select pg_temp.put('c1', public.claim_next_scheduled_posts('w1', 60, 1, pg_temp.t('0')));
select is(jsonb_array_length(pg_temp.g('c1')), 1, 'claim takes one due item (p_max_items 1)');
select is((pg_temp.g('c1')->0->>'id')::uuid, '00000000-0000-4000-8000-00000004e001'::uuid,
          'claim takes the oldest due item, not the cancelled or future ones');
select ok((pg_temp.g('c1')->0->>'lease_token') ~ '^[0-9]+$', 'the claimed item carries a lease_token');
select pg_temp.put('tok1', pg_temp.g('c1')->0->'lease_token');
select results_eq($$select status, attempt_count, locked_by, lease_expires_at, lease_token from public.scheduled_posts
                     where id = '00000000-0000-4000-8000-00000004e001'$$,
                  $$values ('posting'::text, 1, 'w1'::text, pg_temp.t('60 seconds'), (pg_temp.g('tok1'))::text::bigint)$$,
                  'the claimed row is posting, attempt 1, locked by w1, leased for 60 s with that token');
select is(jsonb_array_length(public.claim_next_scheduled_posts('w2', 60, 10, pg_temp.t('0'))), 0,
          'a second claim at the same moment takes nothing');
select ok((public.queue_depths(pg_temp.t('0'))->'scheduled_posts'->>'leased')::int
            - (pg_temp.g('depth_base_t0')->>'leased')::int = 1
          and (public.queue_depths(pg_temp.t('0'))->'scheduled_posts'->>'queued')::int
            - (pg_temp.g('depth_base_t0')->>'queued')::int = 4,
          'queue_depths counts the leased item as leased and the four waiting ones as queued (not the cancelled)');
select ok((public.queue_depths(pg_temp.t('61 seconds'))->'scheduled_posts'->>'leased')::int
            - (pg_temp.g('depth_base_t61')->>'leased')::int = 0
          and (public.queue_depths(pg_temp.t('61 seconds'))->'scheduled_posts'->>'queued')::int
            - (pg_temp.g('depth_base_t61')->>'queued')::int = 5,
          'queue_depths counts an expired lease as queued');
select ok(public.queue_depths(pg_temp.t('0')) ?& array['scheduled_posts', 'ai_jobs', 'generations',
                                                       'media_downloads', 'ingested_items', 'ingested_posts'],
          'queue_depths reports all six queues');

-- --------------------------------------------------- stale token refused
select pg_temp.put('r', public.complete_scheduled_post('00000000-0000-4000-8000-00000004e001',
                                                      (pg_temp.g('tok1'))::text::bigint + 1000, '{}', pg_temp.t('5 seconds')));
select is(pg_temp.g('r')->>'accepted', 'false', 'complete with the wrong token is refused');
select is(pg_temp.g('r')->>'reason', 'stale_lease', 'the refusal says stale_lease');
select results_eq($$select status, lease_token, posted_at from public.scheduled_posts
                     where id = '00000000-0000-4000-8000-00000004e001'$$,
                  $$values ('posting'::text, (pg_temp.g('tok1'))::text::bigint, null::timestamptz)$$,
                  'a refused complete changes nothing');

-- ------------------------------------------- transient failure: back off
select pg_temp.put('r', public.fail_scheduled_post('00000000-0000-4000-8000-00000004e001',
                                                  (pg_temp.g('tok1'))::text::bigint, 'boom-1', false, null, pg_temp.t('10 seconds')));
select is(pg_temp.g('r')->>'accepted', 'true', 'fail with the right token is accepted');
select is(pg_temp.g('r')->>'status', 'queued', 'a transient failure with attempts left answers queued');
select is((select status from public.scheduled_posts where id = '00000000-0000-4000-8000-00000004e001'), 'queued',
          'the failed post is back in the queue');
select ok((select run_at > pg_temp.t('10 seconds') from public.scheduled_posts where id = '00000000-0000-4000-8000-00000004e001'),
          'its due time moved later than the failure');
select is((select run_at from public.scheduled_posts where id = '00000000-0000-4000-8000-00000004e001'),
          (pg_temp.g('r')->>'next_attempt_at')::timestamptz, 'the answer gives the new due time');
select results_eq($$select last_error, locked_by, lease_expires_at from public.scheduled_posts
                     where id = '00000000-0000-4000-8000-00000004e001'$$,
                  $$values ('boom-1'::text, null::text, null::timestamptz)$$,
                  'the failure keeps its error and releases the lease');
select is(jsonb_array_length(public.claim_next_scheduled_posts('w2', 60, 10, pg_temp.t('11 seconds'))), 0,
          'the backed-off post is not claimed before its new due time');

-- ----------------------------------------------- retake, then lease expiry
select pg_temp.put('c2', public.claim_next_scheduled_posts('w3', 60, 10, pg_temp.t('5 minutes')));
select is(pg_temp.ids(pg_temp.g('c2')), array['00000000-0000-4000-8000-00000004e001'::uuid],
          'after the backoff the post is claimed again');
select pg_temp.put('tok2', to_jsonb(pg_temp.tok(pg_temp.g('c2'), '00000000-0000-4000-8000-00000004e001')));
select ok((pg_temp.g('tok2'))::text::bigint > (pg_temp.g('tok1'))::text::bigint, 'the new lease token is larger');
select pg_temp.put('c3', public.claim_next_scheduled_posts('w4', 60, 10, pg_temp.t('6 minutes 1 second')));
select is(pg_temp.ids(pg_temp.g('c3')), array['00000000-0000-4000-8000-00000004e001'::uuid],
          'an expired lease is taken again by the next claim');
select pg_temp.put('tok3', to_jsonb(pg_temp.tok(pg_temp.g('c3'), '00000000-0000-4000-8000-00000004e001')));
select ok((pg_temp.g('tok3'))::text::bigint > (pg_temp.g('tok2'))::text::bigint,
          'the retaken lease has a new, larger token');
select results_eq($$select attempt_count, locked_by from public.scheduled_posts where id = '00000000-0000-4000-8000-00000004e001'$$,
                  $$values (3, 'w4'::text)$$, 'the retake counts an attempt and belongs to the new worker');
select is(public.complete_scheduled_post('00000000-0000-4000-8000-00000004e001', (pg_temp.g('tok2'))::text::bigint,
                                         '{}', pg_temp.t('6 minutes 2 seconds'))->>'accepted', 'false',
          'the worker whose lease expired cannot complete any more');
select is(public.fail_scheduled_post('00000000-0000-4000-8000-00000004e001', (pg_temp.g('tok2'))::text::bigint,
                                     'late', false, null, pg_temp.t('6 minutes 2 seconds'))->>'accepted', 'false',
          'nor fail');
select is((select status from public.scheduled_posts where id = '00000000-0000-4000-8000-00000004e001'), 'posting',
          'the stale calls left the new lease alone');

-- ----------------------------------------------- last attempt: dead letter
update public.scheduled_posts set max_attempts = 3 where id = '00000000-0000-4000-8000-00000004e001';
select pg_temp.put('r', public.fail_scheduled_post('00000000-0000-4000-8000-00000004e001',
                                                  (pg_temp.g('tok3'))::text::bigint, 'boom-final', false, null, pg_temp.t('7 minutes')));
select is(pg_temp.g('r')->>'accepted', 'true', 'the last failure is accepted');
select is(pg_temp.g('r')->>'status', 'dead', 'the last failure answers dead');
select results_eq($$select status, last_error, dead_lettered_at from public.scheduled_posts
                     where id = '00000000-0000-4000-8000-00000004e001'$$,
                  $$values ('failed'::text, 'boom-final'::text, pg_temp.t('7 minutes'))$$,
                  'the last failure dead-letters the post with its error (failed, dead_lettered_at)');
select is((select array_agg(type order by type) from public.post_events
            where scheduled_post_id = '00000000-0000-4000-8000-00000004e001'),
          array['claimed', 'claimed', 'claimed', 'failure', 'lease_expired', 'retry'],
          'every transition wrote a post_events row (3 claimed, retry, lease_expired, failure)');
select ok((select bool_and(detail ? 'lease_token' or detail::text like '%lease%') from public.post_events
            where scheduled_post_id = '00000000-0000-4000-8000-00000004e001' and type = 'claimed'),
          'claimed events record the lease');

-- ------------------------------------------------------------ success
select pg_temp.put('c4', public.claim_next_scheduled_posts('w5', 60, 10, pg_temp.t('10 minutes')));
select is(pg_temp.ids(pg_temp.g('c4')), array['00000000-0000-4000-8000-00000004e004'::uuid],
          'a failed (dead) post is never claimed again; the next due one is');
select pg_temp.put('tok4', to_jsonb(pg_temp.tok(pg_temp.g('c4'), '00000000-0000-4000-8000-00000004e004')));
select pg_temp.put('r', public.complete_scheduled_post('00000000-0000-4000-8000-00000004e004',
                                                      (pg_temp.g('tok4'))::text::bigint, '{}', pg_temp.t('10 minutes 5 seconds')));
select is(pg_temp.g('r')->>'accepted', 'true', 'complete with the current token is accepted');
select is(pg_temp.g('r')->>'status', 'posted', 'complete answers the new status posted');
select results_eq($$select status, locked_by, lease_expires_at from public.scheduled_posts
                     where id = '00000000-0000-4000-8000-00000004e004'$$,
                  $$values ('posted'::text, null::text, null::timestamptz)$$,
                  'the completed post is posted and no longer leased');
select is(public.complete_scheduled_post('00000000-0000-4000-8000-00000004e004', (pg_temp.g('tok4'))::text::bigint,
                                         '{}', pg_temp.t('10 minutes 6 seconds'))->>'accepted', 'false',
          'completing twice is refused (the item is not leased any more)');
select is((select count(*) from public.post_events where scheduled_post_id = '00000000-0000-4000-8000-00000004e004'
             and type = 'success'), 1::bigint, 'the success wrote one success event');

-- ------------------------------------------------------------ defer
select pg_temp.put('c5', public.claim_next_scheduled_posts('w6', 60, 10, pg_temp.t('1 hour')));
select is(pg_temp.ids(pg_temp.g('c5')), array['00000000-0000-4000-8000-00000004e002'::uuid], 'sp2 claimed when due');
select pg_temp.put('r', public.defer_scheduled_post('00000000-0000-4000-8000-00000004e002',
         pg_temp.tok(pg_temp.g('c5'), '00000000-0000-4000-8000-00000004e002'), pg_temp.t('2 hours'), 'rate limited',
         pg_temp.t('1 hour 1 second')));
select is(pg_temp.g('r')->>'accepted', 'true', 'defer with the current token is accepted');
select results_eq($$select status, run_at, attempt_count, locked_by from public.scheduled_posts
                     where id = '00000000-0000-4000-8000-00000004e002'$$,
                  $$values ('queued'::text, pg_temp.t('2 hours'), 0, null::text)$$,
                  'a deferred post waits until p_not_before without using up an attempt');
select is((select count(*) from public.post_events where scheduled_post_id = '00000000-0000-4000-8000-00000004e002'
             and type = 'deferred'), 1::bigint, 'defer wrote a deferred event');

-- ------------------------------------ permanent failure and Retry-After
select pg_temp.put('c6', public.claim_next_scheduled_posts('w7', 60, 10, pg_temp.t('3 hours')));
select ok(pg_temp.ids(pg_temp.g('c6')) @> array['00000000-0000-4000-8000-00000004e002'::uuid, '00000000-0000-4000-8000-00000004e005'::uuid],
          'both due posts are claimed in one batch');
select is(public.fail_scheduled_post('00000000-0000-4000-8000-00000004e005',
            pg_temp.tok(pg_temp.g('c6'), '00000000-0000-4000-8000-00000004e005'), 'invalid post', true, null,
            pg_temp.t('3 hours 1 second'))->>'status', 'dead', 'a permanent failure dead-letters at once');
select results_eq($$select status, attempt_count, dead_lettered_at is not null, last_error from public.scheduled_posts
                     where id = '00000000-0000-4000-8000-00000004e005'$$,
                  $$values ('failed'::text, 1, true, 'invalid post'::text)$$,
                  'permanently failed on the first of five attempts, with its error');
select is(public.fail_scheduled_post('00000000-0000-4000-8000-00000004e002',
            pg_temp.tok(pg_temp.g('c6'), '00000000-0000-4000-8000-00000004e002'), '429', false, 3600,
            pg_temp.t('3 hours 1 second'))->>'status', 'queued', 'a rate-limited failure is retried');
select ok((select run_at >= pg_temp.t('4 hours 1 second') from public.scheduled_posts
            where id = '00000000-0000-4000-8000-00000004e002'),
          'the retry is never earlier than p_retry_after_seconds');

-- ------------------------------------ lease expired on the last attempt
select pg_temp.put('c7', public.claim_next_scheduled_posts('w8', 60, 10, pg_temp.t('5 hours')));
select ok(pg_temp.ids(pg_temp.g('c7')) @> array['00000000-0000-4000-8000-00000004e006'::uuid], 'sp6 claimed (its only attempt)');
select ok(not (pg_temp.ids(public.claim_next_scheduled_posts('w9', 60, 10, pg_temp.t('5 hours 2 minutes')))
               @> array['00000000-0000-4000-8000-00000004e006'::uuid]),
          'an item whose lease expired on its last attempt is not claimed again');
select results_eq($$select status, dead_lettered_at is not null from public.scheduled_posts
                     where id = '00000000-0000-4000-8000-00000004e006'$$,
                  $$values ('failed'::text, true)$$, '... it is dead-lettered instead');
select is((select count(*) from public.post_events where scheduled_post_id = '00000000-0000-4000-8000-00000004e006'
             and type in ('lease_expired', 'failure')), 2::bigint,
          'the expiry wrote lease_expired and failure events');

-- ------------------------------------------------ cancelled is never claimed
select ok(not (pg_temp.ids(public.claim_next_scheduled_posts('w10', 60, 1000, pg_temp.t('100 days')))
               @> array['00000000-0000-4000-8000-00000004e003'::uuid])
          and (select status from public.scheduled_posts where id = '00000000-0000-4000-8000-00000004e003') = 'cancelled',
          'a cancelled post is never claimed');

-- ------------------------------------------------ the seed-000 wrappers (real now())
insert into public.scheduled_posts (id, user_id, draft_id, account_id, account_did, content, run_at) values
  ('00000000-0000-4000-8000-00000004e0ff', '00000000-0000-4000-8000-0000000004a1', '00000000-0000-4000-8000-00000004d001',
   '00000000-0000-4000-8000-00000004ca01', 'did:plc:queue', 'legacy', now() - interval '1 minute');
select is((select array_agg(id) from public.claim_next_scheduled_post(60, 'legacy-worker')),
          array['00000000-0000-4000-8000-00000004e0ff'::uuid],
          'claim_next_scheduled_post(lock_seconds, worker_id) returns the due post');
select results_eq($$select status, locked_by from public.scheduled_posts where id = '00000000-0000-4000-8000-00000004e0ff'$$,
                  $$values ('posting'::text, 'legacy-worker'::text)$$,
                  'claim_next_scheduled_post sets it to posting, locked by the worker');
insert into public.ai_jobs (id, user_id, provider, model, prompt, next_attempt_at) values
  ('00000000-0000-4000-8000-00000004a0ff', '00000000-0000-4000-8000-0000000004a1', 'venice', 'flux', 'legacy cat', now() - interval '1 minute');
select is((select array_agg(id) from public.claim_next_ai_image_job(60, 'legacy-ai')),
          array['00000000-0000-4000-8000-00000004a0ff'::uuid],
          'claim_next_ai_image_job returns the due job');
select is((select status from public.ai_jobs where id = '00000000-0000-4000-8000-00000004a0ff'), 'running',
          'claim_next_ai_image_job sets it to running');

-- ------------------------------------------------ every other queue at least once
insert into public.ai_jobs (id, user_id, provider, model, prompt, next_attempt_at) values
  ('00000000-0000-4000-8000-00000004a001', '00000000-0000-4000-8000-0000000004a1', 'venice', 'flux', 'a cat', pg_temp.t('-1 minute'));
insert into public.generations (id, user_id, model_id, status, next_attempt_at) values
  ('00000000-0000-4000-8000-00000004a101', '00000000-0000-4000-8000-0000000004a1', 'flux', 'pending', pg_temp.t('-1 minute'));
insert into public.ingested_items (id, source, platform, user_id, event_type, external_id, payload, next_attempt_at) values
  ('00000000-0000-4000-8000-00000004a201', 'webhook', 'strava', '00000000-0000-4000-8000-0000000004a1', 'create', 'q-1', '{}', pg_temp.t('-1 minute')),
  ('00000000-0000-4000-8000-00000004a202', 'webhook', 'strava', '00000000-0000-4000-8000-0000000004a1', 'create', 'q-2', '{}', pg_temp.t('-1 minute'));
update public.ingested_items set max_attempts = 1 where id = '00000000-0000-4000-8000-00000004a202';
insert into public.ingested_posts (id, ingested_item_id, platform, user_id, platform_post_id, post_data, next_attempt_at) values
  ('00000000-0000-4000-8000-00000004a301', '00000000-0000-4000-8000-00000004a201', 'strava',
   '00000000-0000-4000-8000-0000000004a1', 'q-activity', '{}', pg_temp.t('-1 minute'));
insert into public.media_downloads (id, ingested_post_id, user_id, original_url, next_attempt_at) values
  ('00000000-0000-4000-8000-00000004a401', '00000000-0000-4000-8000-00000004a301',
   '00000000-0000-4000-8000-0000000004a1', 'https://cdn.example.test/q1.jpg', pg_temp.t('-1 minute')),
  ('00000000-0000-4000-8000-00000004a402', '00000000-0000-4000-8000-00000004a301',
   '00000000-0000-4000-8000-0000000004a1', 'https://cdn.example.test/q2.jpg', pg_temp.t('-1 minute'));

select pg_temp.put('aj', public.claim_next_ai_jobs('wa', 60, 10, pg_temp.t('0')));
select pg_temp.put('ge', public.claim_next_generations('wg', 60, 10, pg_temp.t('0')));
select pg_temp.put('ii', public.claim_next_ingested_items('wi', 60, 10, pg_temp.t('0')));
select pg_temp.put('ip', public.claim_next_ingested_posts('wp', 60, 10, pg_temp.t('0')));
select pg_temp.put('md', public.claim_next_media_downloads('wm', 60, 10, pg_temp.t('0')));

select ok(pg_temp.tok(pg_temp.g('aj'), '00000000-0000-4000-8000-00000004a001') is not null, 'claim_next_ai_jobs claims with a lease token');
select ok(pg_temp.tok(pg_temp.g('ge'), '00000000-0000-4000-8000-00000004a101') is not null, 'claim_next_generations claims with a lease token');
select ok(pg_temp.tok(pg_temp.g('ii'), '00000000-0000-4000-8000-00000004a201') is not null, 'claim_next_ingested_items claims with a lease token');
select ok(pg_temp.tok(pg_temp.g('ip'), '00000000-0000-4000-8000-00000004a301') is not null, 'claim_next_ingested_posts claims with a lease token');
select ok(pg_temp.tok(pg_temp.g('md'), '00000000-0000-4000-8000-00000004a401') is not null, 'claim_next_media_downloads claims with a lease token');

select ok(pg_temp.tok(pg_temp.g('aj'), '00000000-0000-4000-8000-00000004a001')
           < pg_temp.tok(pg_temp.g('ge'), '00000000-0000-4000-8000-00000004a101')
          and pg_temp.tok(pg_temp.g('ge'), '00000000-0000-4000-8000-00000004a101')
           < pg_temp.tok(pg_temp.g('ii'), '00000000-0000-4000-8000-00000004a201')
          and pg_temp.tok(pg_temp.g('ii'), '00000000-0000-4000-8000-00000004a201')
           < pg_temp.tok(pg_temp.g('ip'), '00000000-0000-4000-8000-00000004a301')
          and pg_temp.tok(pg_temp.g('ip'), '00000000-0000-4000-8000-00000004a301')
           < pg_temp.tok(pg_temp.g('md'), '00000000-0000-4000-8000-00000004a401')
          and pg_temp.tok(pg_temp.g('aj'), '00000000-0000-4000-8000-00000004a001') > (pg_temp.g('tok3'))::text::bigint,
          'lease tokens come from one global, strictly increasing sequence across queues');
select is(public.complete_ai_job('00000000-0000-4000-8000-00000004a001', 1, '{}', pg_temp.t('1 second'))->>'accepted', 'false', 'complete_ai_job refuses a wrong token');
select is(public.complete_generation('00000000-0000-4000-8000-00000004a101', 1, '{}', pg_temp.t('1 second'))->>'accepted', 'false', 'complete_generation refuses a wrong token');
select is(public.complete_ingested_item('00000000-0000-4000-8000-00000004a201', 1, '{}', pg_temp.t('1 second'))->>'accepted', 'false', 'complete_ingested_item refuses a wrong token');
select is(public.complete_ingested_post('00000000-0000-4000-8000-00000004a301', 1, '{}', pg_temp.t('1 second'))->>'accepted', 'false', 'complete_ingested_post refuses a wrong token');
select is(public.complete_media_download('00000000-0000-4000-8000-00000004a401', 1, '{}', pg_temp.t('1 second'))->>'accepted', 'false', 'complete_media_download refuses a wrong token');

select is(public.complete_ai_job('00000000-0000-4000-8000-00000004a001', pg_temp.tok(pg_temp.g('aj'), '00000000-0000-4000-8000-00000004a001'), '{}', pg_temp.t('2 seconds'))->>'accepted', 'true', 'complete_ai_job accepts the current token');
select is(public.complete_generation('00000000-0000-4000-8000-00000004a101', pg_temp.tok(pg_temp.g('ge'), '00000000-0000-4000-8000-00000004a101'), '{}', pg_temp.t('2 seconds'))->>'accepted', 'true', 'complete_generation accepts the current token');
select is(public.complete_ingested_item('00000000-0000-4000-8000-00000004a201', pg_temp.tok(pg_temp.g('ii'), '00000000-0000-4000-8000-00000004a201'), '{}', pg_temp.t('2 seconds'))->>'accepted', 'true', 'complete_ingested_item accepts the current token');
select is(public.complete_ingested_post('00000000-0000-4000-8000-00000004a301', pg_temp.tok(pg_temp.g('ip'), '00000000-0000-4000-8000-00000004a301'), '{}', pg_temp.t('2 seconds'))->>'accepted', 'true', 'complete_ingested_post accepts the current token');
select is(public.complete_media_download('00000000-0000-4000-8000-00000004a401', pg_temp.tok(pg_temp.g('md'), '00000000-0000-4000-8000-00000004a401'), '{}', pg_temp.t('2 seconds'))->>'accepted', 'true', 'complete_media_download accepts the current token');

select is((select array_agg(type order by type) from public.ai_job_events where job_id = '00000000-0000-4000-8000-00000004a001'),
          array['claimed', 'success'], 'ai_jobs transitions wrote ai_job_events');
select is((select array_agg(queue || ':' || event order by queue, event) from public.queue_events
            where item_id in ('00000000-0000-4000-8000-00000004a101', '00000000-0000-4000-8000-00000004a201',
                              '00000000-0000-4000-8000-00000004a301', '00000000-0000-4000-8000-00000004a401')),
          array['generations:claimed', 'generations:success', 'ingested_items:claimed', 'ingested_items:success',
                'ingested_posts:claimed', 'ingested_posts:success', 'media_downloads:claimed', 'media_downloads:success'],
          'the other queues'' transitions wrote queue_events');

-- a failure elsewhere: media_downloads retries, ingested_items dead-letters after its last attempt
select is(public.fail_media_download('00000000-0000-4000-8000-00000004a402', pg_temp.tok(pg_temp.g('md'), '00000000-0000-4000-8000-00000004a402'),
                                     'timeout', false, null, pg_temp.t('3 seconds'))->>'status', 'queued',
          'fail_media_download with attempts left re-queues');
select ok((select status = 'pending' and next_attempt_at > pg_temp.t('3 seconds') from public.media_downloads
            where id = '00000000-0000-4000-8000-00000004a402'), 'the media download waits (pending) until later');
select is(public.fail_ingested_item('00000000-0000-4000-8000-00000004a202', pg_temp.tok(pg_temp.g('ii'), '00000000-0000-4000-8000-00000004a202'),
                                    'cannot parse', false, null, pg_temp.t('3 seconds'))->>'status', 'dead',
          'fail_ingested_item on the last attempt dead-letters');
select results_eq($$select status::text, last_error, dead_lettered_at from public.ingested_items
                     where id = '00000000-0000-4000-8000-00000004a202'$$,
                  $$values ('dead_letter'::text, 'cannot parse'::text, pg_temp.t('3 seconds'))$$,
                  'the dead ingested item is dead_letter with its error, never dropped');

select * from finish();
rollback;
