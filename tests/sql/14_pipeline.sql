-- 14_pipeline.sql: the pipeline tracker's SQL (issue 17, migration 0026):
-- bot tokens, the run state machine, idempotent events, the per-run event
-- sequence, artifacts and link checks, and that no API role can call the
-- functions that take an owner or a token hash.
begin;
set local client_min_messages = warning;
create extension if not exists pgtap;

select plan(52);

create function pg_temp.put(p_key text, p_val text) returns text
language sql as $$ select set_config('pl.' || p_key, p_val, true) $$;
create function pg_temp.g(p_key text) returns text
language sql stable as $$ select current_setting('pl.' || p_key) $$;
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

insert into auth.users (id, email) values
  ('00000000-0000-4000-8000-0000000014a1', 'pl-alice@example.test'),
  ('00000000-0000-4000-8000-0000000014b2', 'pl-bob@example.test');

-- tokens: a (alice, any bot), t (alice, bot "tester"), m (bob, any bot)
select pg_temp.put('a', repeat('a', 64)), pg_temp.put('t', repeat('b', 64)), pg_temp.put('m', repeat('c', 64));
select is(public.pipeline_mint_bot_token('00000000-0000-4000-8000-0000000014a1', null, pg_temp.g('a')) ->> 'created',
          'true', 'an owner-wide token is minted');
select is(public.pipeline_mint_bot_token('00000000-0000-4000-8000-0000000014a1', 'tester', pg_temp.g('t')) -> 'token' ->> 'bot_name',
          'tester', 'a per-bot token names its bot');
select is(public.pipeline_mint_bot_token('00000000-0000-4000-8000-0000000014b2', null, pg_temp.g('m')) ->> 'created',
          'true', 'bob mints his own');
select throws_ok($$ select public.pipeline_mint_bot_token('00000000-0000-4000-8000-0000000014a1', null, 'not-a-hash') $$,
                 '23514', null, 'only SHA-256 hex is stored');
select is(public.pipeline_mint_bot_token(gen_random_uuid(), null, repeat('d', 64)) ->> 'reason',
          'unknown_user', 'no token for someone who is not a user');
select ok(not (public.pipeline_list_bot_tokens('00000000-0000-4000-8000-0000000014a1')::text like '%aaaa%'),
          'the list never shows a hash');

-- runs
select pg_temp.put('r1', public.pipeline_create_run('00000000-0000-4000-8000-0000000014a1', '{"app": "x"}') -> 'run' ->> 'run_id');
select pg_temp.put('r2', public.pipeline_create_run('00000000-0000-4000-8000-0000000014a1', '{}') -> 'run' ->> 'run_id');
select pg_temp.put('r3', public.pipeline_create_run('00000000-0000-4000-8000-0000000014a1', '{}') -> 'run' ->> 'run_id');
select matches(pg_temp.g('r1'), '^run_[A-Za-z0-9_-]{16}$', 'run ids are generated (90 random bits)');
select is((select status from public.jobs where run_id = pg_temp.g('r1')), 'pending', 'a new run is pending');

-- token checks
select is(public.pipeline_record_event(repeat('e', 64), pg_temp.g('r1'), 'b', 'x', '{}', null) ->> 'reason',
          'unknown_token', 'an unknown token is refused');
select is(public.pipeline_record_event(pg_temp.g('a'), pg_temp.g('r1'), null, 'x', '{}', null) ->> 'reason',
          'bot_name_required', 'an owner-wide token needs a bot name');
select is(public.pipeline_record_event(pg_temp.g('t'), pg_temp.g('r1'), 'builder', 'x', '{}', null) ->> 'reason',
          'bot_name_mismatch', 'a per-bot token speaks for its bot only');
select is(public.pipeline_record_event(pg_temp.g('m'), pg_temp.g('r1'), 'b', 'x', '{}', null) ->> 'outcome',
          'not_found', 'another owner''s token does not reach the run');
select is((select count(*)::int from public.job_events where run_id = pg_temp.g('r1')), 0, 'refusals add nothing');

-- state machine: pending -> running -> completed, then closed
select is(public.pipeline_record_event(pg_temp.g('t'), pg_temp.g('r1'), null, 'started', '{}', 'e1') ->> 'status',
          'running', 'pending -> running on the first event');
select is((select seq from public.job_events where run_id = pg_temp.g('r1') and event_id = 'e1'), 1::bigint, 'the first event is seq 1');
select is(public.pipeline_record_event(pg_temp.g('t'), pg_temp.g('r1'), null, 'started', '{}', 'e1') ->> 'outcome',
          'duplicate', 'the same event id answers the stored event');
select is(public.pipeline_record_event(pg_temp.g('t'), pg_temp.g('r1'), null, 'started', '{"x": 1}', 'e1') ->> 'reason',
          'event_id_reused', 'another event under a used id is refused');
select is(public.pipeline_record_event(pg_temp.g('t'), pg_temp.g('r1'), null, 'progress', '{}', null) ->> 'status',
          'running', 'running stays running');
select is(public.pipeline_record_event(pg_temp.g('a'), pg_temp.g('r1'), 'deployer', 'completed', '{}', 'done') ->> 'status',
          'completed', 'running -> completed');
select is(public.pipeline_record_event(pg_temp.g('t'), pg_temp.g('r1'), null, 'progress', '{}', null) ->> 'reason',
          'run_completed', 'no event after completed');
select is(public.pipeline_record_event(pg_temp.g('a'), pg_temp.g('r1'), 'deployer', 'completed', '{}', 'done') ->> 'outcome',
          'duplicate', 'a retried completing event still answers as before');
select is(public.pipeline_cancel_run('00000000-0000-4000-8000-0000000014a1', pg_temp.g('r1')) ->> 'reason',
          'run_completed', 'a completed run cannot be cancelled');
select is((select array_agg(seq order by seq) from public.job_events where run_id = pg_temp.g('r1')),
          array[1, 2, 3]::bigint[], 'three events, seq 1..3');
select is((select event_seq from public.jobs where run_id = pg_temp.g('r1')), 3::bigint, 'the run counts its events');
select is((select (started_at is not null and completed_at is not null) from public.jobs where run_id = pg_temp.g('r1')),
          true, 'started_at and completed_at are set');

-- failed and cancelled
select is(public.pipeline_record_event(pg_temp.g('t'), pg_temp.g('r2'), null, 'failed', '{"error": "boom"}', null) ->> 'status',
          'failed', 'pending -> failed');
select is((select error_message from public.jobs where run_id = pg_temp.g('r2')), 'boom', 'the failure keeps its error');
select is(public.pipeline_record_event(pg_temp.g('t'), pg_temp.g('r2'), null, 'started', '{}', null) ->> 'reason',
          'run_failed', 'no event after failed');
select is(public.pipeline_cancel_run('00000000-0000-4000-8000-0000000014b2', pg_temp.g('r3')) ->> 'outcome',
          'not_found', 'bob cannot cancel alice''s run');
select is(public.pipeline_cancel_run('00000000-0000-4000-8000-0000000014a1', pg_temp.g('r3')) ->> 'outcome',
          'cancelled', 'pending -> cancelled');
select is(public.pipeline_cancel_run('00000000-0000-4000-8000-0000000014a1', pg_temp.g('r3')) ->> 'outcome',
          'unchanged', 'cancelling twice changes nothing');
select is(public.pipeline_record_event(pg_temp.g('t'), pg_temp.g('r3'), null, 'started', '{}', null) ->> 'reason',
          'run_cancelled', 'no event after cancelled');
select throws_ok(format($$ update public.jobs set status = 'running' where run_id = %L $$, pg_temp.g('r1')),
                 '23514', null, 'the table refuses completed -> running, whoever writes it');
select pg_temp.put('r5', public.pipeline_create_run('00000000-0000-4000-8000-0000000014a1', '{}') -> 'run' ->> 'run_id');
select pg_temp.put('e5', public.pipeline_record_event(pg_temp.g('t'), pg_temp.g('r5'), null, 'started', '{}', null)::text);
select throws_ok(format($$ update public.jobs set status = 'pending' where run_id = %L $$, pg_temp.g('r5')),
                 '23514', null, 'running never goes back to pending');

-- direct (RLS) inserts of the owner get the next seq too
select is(pg_temp.as_user('00000000-0000-4000-8000-0000000014a1',
          format($$ insert into public.job_events (run_id, bot_name, event_type) values (%L, 'ui', 'note') $$, pg_temp.g('r1'))),
          'ok', 'the owner may insert an event directly');
select is((select max(seq) from public.job_events where run_id = pg_temp.g('r1')), 4::bigint, 'and it takes seq 4');
select is(pg_temp.as_user('00000000-0000-4000-8000-0000000014b2',
          format($$ insert into public.job_events (run_id, bot_name, event_type) values (%L, 'x', 'note') $$, pg_temp.g('r1'))),
          '42501', 'bob cannot insert into alice''s run');

-- paging
select is(jsonb_array_length(public.pipeline_run_events('00000000-0000-4000-8000-0000000014a1', pg_temp.g('r1'), 1, 2) -> 'events'),
          2, 'a page holds at most its limit');
select is(public.pipeline_run_events('00000000-0000-4000-8000-0000000014a1', pg_temp.g('r1'), 1, 2) -> 'next_after',
          '3'::jsonb, 'the cursor is the last seq of the page');
select is(public.pipeline_run_events('00000000-0000-4000-8000-0000000014a1', pg_temp.g('r1'), 3, 2) -> 'has_more',
          'false'::jsonb, 'the last page says so');
select is(public.pipeline_run_events('00000000-0000-4000-8000-0000000014b2', pg_temp.g('r1'), 0, 10) ->> 'found',
          'false', 'bob cannot page alice''s events');

-- artifacts
select pg_temp.put('r4', public.pipeline_create_run('00000000-0000-4000-8000-0000000014a1', '{}') -> 'run' ->> 'run_id');
select is(public.pipeline_begin_artifact(pg_temp.g('t'), pg_temp.g('r4'), null, repeat('f', 64)) ->> 'owner_id',
          '00000000-0000-4000-8000-0000000014a1', 'an upload may begin');
select is(public.pipeline_record_artifact(pg_temp.g('t'), pg_temp.g('r4'), null, jsonb_build_object(
            'kind', 'zip', 'url', 'http://s3/artifacts/k', 'file_size', 10, 'content_type', 'application/zip',
            'checksum', repeat('f', 64), 'object_key', 'someone/else/' || repeat('f', 64))) ->> 'reason',
          'object_key', 'the key must be {owner}/{run}/{sha256}');
select is(public.pipeline_record_artifact(pg_temp.g('t'), pg_temp.g('r4'), null, jsonb_build_object(
            'kind', 'zip', 'url', 'http://s3/artifacts/k', 'file_size', 10, 'content_type', 'application/zip',
            'checksum', repeat('f', 64),
            'object_key', '00000000-0000-4000-8000-0000000014a1/' || pg_temp.g('r4') || '/' || repeat('f', 64))) -> 'artifact' ->> 'verification',
          'verified', 'an uploaded artifact is recorded verified');
select is(public.pipeline_begin_artifact(pg_temp.g('t'), pg_temp.g('r4'), null, repeat('f', 64)) ->> 'outcome',
          'duplicate', 'the same bytes again answer the stored artifact');
select is(public.pipeline_begin_artifact(pg_temp.g('m'), pg_temp.g('r4'), 'x', repeat('f', 64)) ->> 'outcome',
          'not_found', 'bob''s bot cannot upload to alice''s run');
select is(pg_temp.as_user('00000000-0000-4000-8000-0000000014a1',
          format($$ update public.artifacts set checksum = 'forged' where run_id = %L $$, pg_temp.g('r4'))),
          '42501', 'the owner cannot rewrite a checked artifact''s checksum');

-- link checks: claim, retry with backoff, stale tokens, verified
select pg_temp.put('l', public.pipeline_register_artifact_link(pg_temp.g('t'), pg_temp.g('r4'), null,
          jsonb_build_object('url', 'https://files.example/a.zip', 'checksum', repeat('1', 64))) -> 'artifact' ->> 'id');
select pg_temp.put('c1', (public.pipeline_claim_link_checks('w', 60, 5, pg_temp.g('r4')) -> 0 ->> 'lease_token'));
select is(public.pipeline_finish_link_check(pg_temp.g('l')::uuid, pg_temp.g('c1')::bigint, 'retry', '{"error": "HTTP 503"}') ->> 'verification',
          'pending', 'a transient failure waits');
select is(public.pipeline_claim_link_checks('w', 60, 5, pg_temp.g('r4')), '[]'::jsonb, 'not due during its backoff');
select pg_temp.put('c2', (public.pipeline_claim_link_checks('w', 60, 5, pg_temp.g('r4'), now() + interval '1 hour') -> 0 ->> 'lease_token'));
select is(public.pipeline_finish_link_check(pg_temp.g('l')::uuid, pg_temp.g('c1')::bigint, 'verified', '{"file_size": 5}') ->> 'reason',
          'stale_lease', 'an old lease token changes nothing');
select is(public.pipeline_finish_link_check(pg_temp.g('l')::uuid, pg_temp.g('c2')::bigint, 'verified',
          '{"file_size": 5, "content_type": "application/zip"}') ->> 'verification',
          'verified', 'the current lease settles it');

-- no API role may call the functions that trust their owner argument
select is_empty($$
  select p.proname from pg_proc p join pg_namespace n on n.oid = p.pronamespace
   where n.nspname = 'public' and p.proname like 'pipeline\_%'
     and (has_function_privilege('anon', p.oid, 'execute') or has_function_privilege('authenticated', p.oid, 'execute'))
$$, 'anon and authenticated cannot execute the pipeline functions');

select * from finish();
rollback;
