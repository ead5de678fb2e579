-- 12_venice.sql: finish_venice_image_job (migration 0024, issue 15): one call
-- settles a claimed Venice image job under its lease, records only assets
-- in the owner's folder, never takes over another job's or user's asset,
-- refunds dead-lettered jobs' credits, settles succeeded ones, notifies.
-- Times are injected (2031) so nothing else is due.
begin;
set local client_min_messages = warning;
create extension if not exists pgtap;

create function pg_temp.t(p_sec integer) returns timestamptz
language sql immutable as $$ select '2031-03-01 12:00:00+00'::timestamptz + make_interval(secs => p_sec) $$;
-- claims the one due job at p_sec; its lease token
create function pg_temp.claim(p_sec integer) returns bigint
language sql as $$
  select (public.claim_next_ai_jobs('venice-test', 600, 1, pg_temp.t(p_sec)) -> 0 ->> 'lease_token')::bigint
$$;
create function pg_temp.credits(p_user uuid) returns integer
language sql stable as $$ select credits from public.users where id = p_user $$;
create function pg_temp.asset(p_user uuid, p_job uuid, p_n integer) returns jsonb
language sql immutable as $$
  select jsonb_build_object('bucket', 'generations', 'path', format('%s/ai-images/%s/%s.png', p_user, p_job, p_n),
                            'mime', 'image/png', 'width', 640, 'height', 480, 'bytes', 1234)
$$;

select plan(38);

insert into auth.users (id, email) values
  ('00000000-0000-4000-8000-0000000012a1', 'venice-owner@example.test'),
  ('00000000-0000-4000-8000-0000000012a2', 'venice-other@example.test');
update public.users set credits = 10
 where id in ('00000000-0000-4000-8000-0000000012a1', '00000000-0000-4000-8000-0000000012a2');

-- Success ------------------------------------------------------------------------------------
insert into public.ai_jobs (id, user_id, model, prompt, next_attempt_at) values
  ('00000000-0000-4000-8000-0000000012b1', '00000000-0000-4000-8000-0000000012a1', 'venice-sd35', 'a kite', pg_temp.t(0));
select set_config('v.tok', pg_temp.claim(1)::text, true);
select is(pg_temp.credits('00000000-0000-4000-8000-0000000012a1'), 9, 'the claim charged one credit');

select is(
  public.finish_venice_image_job('00000000-0000-4000-8000-0000000012b1', current_setting('v.tok')::bigint, 'succeeded',
    jsonb_build_object('venice_id', 'generate-image-1', 'model', 'venice-sd35', 'timing', '{"total": 5}'::jsonb,
      'assets', jsonb_build_array(
        pg_temp.asset('00000000-0000-4000-8000-0000000012a1', '00000000-0000-4000-8000-0000000012b1', 0),
        pg_temp.asset('00000000-0000-4000-8000-0000000012a1', '00000000-0000-4000-8000-0000000012b1', 1))),
    pg_temp.t(2)) ->> 'status',
  'succeeded', 'a finished job is completed');
select is((select status from public.ai_jobs where id = '00000000-0000-4000-8000-0000000012b1'), 'succeeded', 'job succeeded');
select is((select count(*)::int from public.ai_assets where job_id = '00000000-0000-4000-8000-0000000012b1'
            and user_id = '00000000-0000-4000-8000-0000000012a1' and width = 640 and height = 480
            and mime = 'image/png' and bucket = 'generations'), 2, 'one ai_assets row per image, owned by the job''s user');
select is((select result ->> 'venice_id' from public.ai_jobs where id = '00000000-0000-4000-8000-0000000012b1'),
          'generate-image-1', 'the result keeps Venice''s id');
select is((select jsonb_array_length(result -> 'assets') from public.ai_jobs where id = '00000000-0000-4000-8000-0000000012b1'),
          2, 'the result names the asset rows');
select is((select array_agg(type order by created_at, type) from public.ai_job_events where job_id = '00000000-0000-4000-8000-0000000012b1'),
          array['claimed', 'success'], 'events: claimed, success');
select is((select count(*)::int from public.notifications where user_id = '00000000-0000-4000-8000-0000000012a1'
            and type = 'ai_image_ready' and data ->> 'job_id' = '00000000-0000-4000-8000-0000000012b1'), 1, 'the owner is notified');
select isnt((select settled_at from public.credit_charges where queue = 'ai_jobs' and item_id = '00000000-0000-4000-8000-0000000012b1'),
            null, 'the charge is settled');
select is(pg_temp.credits('00000000-0000-4000-8000-0000000012a1'), 9, 'a success keeps the credit');

-- The same lease again: stale, nothing written twice
select is(
  public.finish_venice_image_job('00000000-0000-4000-8000-0000000012b1', current_setting('v.tok')::bigint, 'failed',
    '{"error": "late"}', pg_temp.t(3)) ->> 'reason',
  'stale_lease', 'a second finish with the old lease is refused');
select is((select status from public.ai_jobs where id = '00000000-0000-4000-8000-0000000012b1'), 'succeeded', 'still succeeded');

-- Assets outside the owner's folder ---------------------------------------------------------
insert into public.ai_jobs (id, user_id, prompt, next_attempt_at) values
  ('00000000-0000-4000-8000-0000000012b2', '00000000-0000-4000-8000-0000000012a1', 'a boat', pg_temp.t(10));
select set_config('v.tok', pg_temp.claim(11)::text, true);
select is(pg_temp.credits('00000000-0000-4000-8000-0000000012a1'), 8, 'second job charged');
select is(
  public.finish_venice_image_job('00000000-0000-4000-8000-0000000012b2', current_setting('v.tok')::bigint, 'succeeded',
    jsonb_build_object('assets', jsonb_build_array(
      pg_temp.asset('00000000-0000-4000-8000-0000000012a2', '00000000-0000-4000-8000-0000000012b2', 0))),
    pg_temp.t(12)) ->> 'status',
  'dead', 'assets in another user''s folder fail the job for good');
select matches((select last_error from public.ai_jobs where id = '00000000-0000-4000-8000-0000000012b2'),
               '^refused: an asset path is outside', 'with the reason');
select is((select count(*)::int from public.ai_assets where job_id = '00000000-0000-4000-8000-0000000012b2'), 0, 'nothing recorded');
select is(pg_temp.credits('00000000-0000-4000-8000-0000000012a1'), 9, 'the refused job''s credit is returned');
select is((select count(*)::int from public.notifications where type = 'ai_image_failed'
            and data ->> 'job_id' = '00000000-0000-4000-8000-0000000012b2'), 1, 'and the owner told');

-- Another job's asset at the same path is never taken over -----------------------------------
insert into public.ai_jobs (id, user_id, prompt, next_attempt_at) values
  ('00000000-0000-4000-8000-0000000012b3', '00000000-0000-4000-8000-0000000012a2', 'a tree', pg_temp.t(20));
-- planted past every policy, as a bug elsewhere could: user a1's asset in a2's folder
insert into public.ai_assets (id, job_id, user_id, bucket, path, mime, width, height) values
  ('00000000-0000-4000-8000-0000000012c1', '00000000-0000-4000-8000-0000000012b1', '00000000-0000-4000-8000-0000000012a1',
   'generations', '00000000-0000-4000-8000-0000000012a2/ai-images/00000000-0000-4000-8000-0000000012b3/0.png', 'image/png', 8, 8);
select set_config('v.tok', pg_temp.claim(21)::text, true);
select is(
  public.finish_venice_image_job('00000000-0000-4000-8000-0000000012b3', current_setting('v.tok')::bigint, 'succeeded',
    jsonb_build_object('assets', jsonb_build_array(
      pg_temp.asset('00000000-0000-4000-8000-0000000012a2', '00000000-0000-4000-8000-0000000012b3', 0))),
    pg_temp.t(22)) ->> 'status',
  'dead', 'a path held by another job or user refuses the job');
select matches((select last_error from public.ai_jobs where id = '00000000-0000-4000-8000-0000000012b3'),
               'belongs to another job or user', 'with the reason');
select is((select (job_id, user_id, width)::text from public.ai_assets where id = '00000000-0000-4000-8000-0000000012c1'),
          '(00000000-0000-4000-8000-0000000012b1,00000000-0000-4000-8000-0000000012a1,8)', 'the other asset is untouched');
select is(pg_temp.credits('00000000-0000-4000-8000-0000000012a2'), 10, 'the refused user''s credit is back');

-- A content-policy refusal fails at once, refunded ---------------------------------------------
insert into public.ai_jobs (id, user_id, prompt, next_attempt_at) values
  ('00000000-0000-4000-8000-0000000012b4', '00000000-0000-4000-8000-0000000012a2', 'something refused', pg_temp.t(30));
select set_config('v.tok', pg_temp.claim(31)::text, true);
select is(pg_temp.credits('00000000-0000-4000-8000-0000000012a2'), 9, 'charged at the claim');
select is(
  public.finish_venice_image_job('00000000-0000-4000-8000-0000000012b4', current_setting('v.tok')::bigint, 'failed',
    '{"error": "Venice refused the image (HTTP 422): Content policy violation"}', pg_temp.t(32)) -> 'refund' ->> 'refunded',
  'true', 'a refusal is refunded');
select is((select (status, last_error)::text from public.ai_jobs where id = '00000000-0000-4000-8000-0000000012b4'),
          '(failed,"Venice refused the image (HTTP 422): Content policy violation")', 'failed with the provider''s message');
select is((select attempt_count from public.ai_jobs where id = '00000000-0000-4000-8000-0000000012b4'), 1, 'after one attempt');
select is(pg_temp.credits('00000000-0000-4000-8000-0000000012a2'), 10, 'credit back');

-- Retry: back to queued with backoff, the charge kept; the last attempt dead-letters ---------
insert into public.ai_jobs (id, user_id, prompt, next_attempt_at, max_attempts) values
  ('00000000-0000-4000-8000-0000000012b5', '00000000-0000-4000-8000-0000000012a2', 'a storm', pg_temp.t(40), 2);
select set_config('v.tok', pg_temp.claim(41)::text, true);
select is(
  public.finish_venice_image_job('00000000-0000-4000-8000-0000000012b5', current_setting('v.tok')::bigint, 'retry',
    '{"error": "Venice failed (HTTP 503): busy", "retry_after_seconds": 120}', pg_temp.t(42)) ->> 'status',
  'queued', 'a 5xx goes back to the queue');
select ok((select next_attempt_at >= pg_temp.t(42 + 120) from public.ai_jobs where id = '00000000-0000-4000-8000-0000000012b5'),
          'not before Retry-After');
select is(pg_temp.credits('00000000-0000-4000-8000-0000000012a2'), 9, 'the charge is kept while it retries');
select set_config('v.tok', pg_temp.claim(400)::text, true);
select is(pg_temp.credits('00000000-0000-4000-8000-0000000012a2'), 9, 'a second claim does not charge again');
select is(
  public.finish_venice_image_job('00000000-0000-4000-8000-0000000012b5', current_setting('v.tok')::bigint, 'retry',
    '{"error": "Venice failed (HTTP 500): boom"}', pg_temp.t(401)) ->> 'status',
  'dead', 'the last attempt dead-letters');
select is(pg_temp.credits('00000000-0000-4000-8000-0000000012a2'), 10, 'and refunds');

-- Deferred (429): the attempt is not counted, not before the wait -----------------------------
insert into public.ai_jobs (id, user_id, prompt, next_attempt_at) values
  ('00000000-0000-4000-8000-0000000012b6', '00000000-0000-4000-8000-0000000012a1', 'a bird', pg_temp.t(500));
select set_config('v.tok', pg_temp.claim(501)::text, true);
select is(
  public.finish_venice_image_job('00000000-0000-4000-8000-0000000012b6', current_setting('v.tok')::bigint, 'deferred',
    '{"reason": "Venice rate limit (HTTP 429): slow down", "retry_after_seconds": 30}', pg_temp.t(502)) ->> 'status',
  'queued', 'a 429 defers');
select is((select (attempt_count, next_attempt_at = pg_temp.t(532))::text from public.ai_jobs
            where id = '00000000-0000-4000-8000-0000000012b6'), '(0,t)', 'no attempt used, due after Retry-After');
select is((select type from public.ai_job_events where job_id = '00000000-0000-4000-8000-0000000012b6'
            order by created_at desc, type limit 1), 'deferred', 'a deferred event');

-- Bad calls --------------------------------------------------------------------------------------
select throws_ok(
  $$ select public.finish_venice_image_job('00000000-0000-4000-8000-0000000012b6', 1, 'done', '{}') $$,
  '22023', null, 'an unknown outcome is refused');
select ok(not has_function_privilege('authenticated', 'public.finish_venice_image_job(uuid, bigint, text, jsonb, timestamptz)', 'execute'),
          'users cannot call it');

select * from finish();
rollback;
