-- 21_adapt_in_flight.sql: an idea being adapted is marked so an identical
-- request waits for its answer instead of paying for a second model call
-- (issue 16, migration 0025); the mark goes when the adaptation is stored,
-- when the writer gives up, or when it expires. Times are injected (2030).
begin;
set local client_min_messages = warning;
create extension if not exists pgtap;

create function pg_temp.t(p_sec text) returns timestamptz
language sql immutable as $$ select '2030-07-01 10:00:00+00'::timestamptz + p_sec::interval $$;
create function pg_temp.reserve(p_user int, p_hash text, p_at text, p_limit int default 100) returns jsonb
language sql as $$
  select public.adapt_reserve_run(('00000000-0000-4000-8000-00000000210' || p_user)::uuid, 'venice', 'm', 'prompt', p_limit,
                                  repeat(p_hash, 64), pg_temp.t(p_at), 120)
$$;

select plan(14);

insert into auth.users (id, email) values
  ('00000000-0000-4000-8000-000000002101', 'inflight-one@example.test'),
  ('00000000-0000-4000-8000-000000002102', 'inflight-two@example.test');

select is(pg_temp.reserve(1, 'a', '0')->>'allowed', 'true', 'the first request reserves its call');
select is(pg_temp.reserve(1, 'a', '1 second') - 'x', '{"in_flight": true, "retry_after_seconds": 119}'::jsonb,
  'an identical request meanwhile is told it is being written, and for how long at most');
select is((select count(*)::int from public.ai_text_runs where user_id = '00000000-0000-4000-8000-000000002101'), 1,
  'and reserves no run of its own');
select is(pg_temp.reserve(1, 'b', '2 seconds')->>'allowed', 'true', 'another idea of the same user goes ahead');
select is(pg_temp.reserve(2, 'a', '2 seconds')->>'allowed', 'true', 'the same idea of another user goes ahead');

-- Stored: the mark goes and the twin answers.
select is(public.adapt_save('00000000-0000-4000-8000-000000002101', 'idea', repeat('a', 64), null, null, null,
  '{"x": {"text": "written once", "thread": []}}', false, pg_temp.t('5 seconds'))->>'ok', 'true', 'the first request stores its answer');
select is((select count(*)::int from public.adapt_ideas_in_flight where user_id = '00000000-0000-4000-8000-000000002101' and idea_hash = repeat('a', 64)), 0,
  'which clears the mark');
select is(pg_temp.reserve(1, 'a', '6 seconds')->'existing'->'adaptations'->'x'->>'text', 'written once',
  'the waiting request gets the stored answer');

-- Given up: the next request makes its own call.
select is(public.adapt_release_idea('00000000-0000-4000-8000-000000002101', repeat('b', 64))->>'released', 'true',
  'a writer that gives up releases its mark');
select is(pg_temp.reserve(1, 'b', '7 seconds')->>'allowed', 'true', 'and the next identical request calls the model itself');

-- Expired: a writer that died holds nothing past its bound.
select is(pg_temp.reserve(2, 'a', '122 seconds')->>'in_flight', null, 'a mark past its bound no longer holds');

-- The daily limit refuses without marking.
select is(pg_temp.reserve(2, 'c', '123 seconds', 1)->>'allowed', 'false', 'over the limit: refused');
select is((select count(*)::int from public.adapt_ideas_in_flight where idea_hash = repeat('c', 64)), 0, 'and nothing is marked');

-- Clients never see the marks.
select ok(not has_table_privilege('authenticated', 'public.adapt_ideas_in_flight', 'select')
          and not has_function_privilege('authenticated', 'public.adapt_release_idea(uuid, text)', 'execute'),
  'the marks and their release are service-only');

select * from finish();
rollback;
