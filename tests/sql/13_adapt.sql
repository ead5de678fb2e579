-- 13_adapt.sql: adapt's SQL (issue 16, migration 0025): the templates are
-- rows of prompts, every call re-checks that the acting user owns the voice
-- profile or adaptation, and the daily limit is reserved atomically with
-- the reset time. Times are injected (2030) where the functions take them.
begin;
set local client_min_messages = warning;
create extension if not exists pgtap;

select plan(40);

insert into auth.users (id, email) values
  ('00000000-0000-4000-8000-0000000013a1', 'adapt-owner@example.test'),
  ('00000000-0000-4000-8000-0000000013a2', 'adapt-other@example.test'),
  ('00000000-0000-4000-8000-0000000013a3', 'adapt-loner@example.test');
insert into public.voice_profiles (id, user_id, name, characteristics, sample_posts) values
  ('00000000-0000-4000-8000-00000013f001', '00000000-0000-4000-8000-0000000013a1', 'Owner default', '{"tone": ["warm"], "avoid_words": ["synergy"]}', array['first sample']),
  ('00000000-0000-4000-8000-00000013f002', '00000000-0000-4000-8000-0000000013a1', 'Owner second', '{"tone": ["dry"]}', null),
  ('00000000-0000-4000-8000-00000013f003', '00000000-0000-4000-8000-0000000013a2', 'Other default', '{"tone": ["loud"]}', null);

-- Templates -------------------------------------------------------------------------------
select is((select count(*)::int from public.prompts where category = 'adapt' and id like 'adapt.%'), 8,
  'the eight adapt templates are rows of prompts');
select ok((select prompt_text like '%{{idea}}%{{platform_rules}}%' from public.prompts where id = 'adapt.user'),
  'adapt.user names its inputs as placeholders');
update public.prompts set prompt_text = 'edited system prompt' where id = 'adapt.system';
select is(public.adapt_prepare('00000000-0000-4000-8000-0000000013a1', null)->'prompts'->>'adapt.system',
  'edited system prompt', 'an edited template is what adapt gets, no deploy');

-- adapt_prepare ---------------------------------------------------------------------------
select is(public.adapt_prepare('00000000-0000-4000-8000-0000000013a1', null)->'profile'->>'id',
  '00000000-0000-4000-8000-00000013f001', 'no profile named: the user''s default');
select is(public.adapt_prepare('00000000-0000-4000-8000-0000000013a1', null)->'profile'->'sample_posts',
  '["first sample"]'::jsonb, 'with its sample posts');
select is(public.adapt_prepare('00000000-0000-4000-8000-0000000013a1', '00000000-0000-4000-8000-00000013f002')->'profile'->>'name',
  'Owner second', 'a named profile of the user''s own');
select is(public.adapt_prepare('00000000-0000-4000-8000-0000000013a1', '00000000-0000-4000-8000-00000013f003'),
  '{"ok": false, "reason": "voice_profile_not_found"}'::jsonb, 'another user''s profile is refused');
select is(public.adapt_prepare('00000000-0000-4000-8000-0000000013a1', '00000000-0000-4000-8000-00000013ffff'),
  '{"ok": false, "reason": "voice_profile_not_found"}'::jsonb, 'exactly as an unknown id');
select is(public.adapt_prepare('00000000-0000-4000-8000-0000000013a3', null)->'profile', 'null'::jsonb,
  'a user without profiles gets none');
select throws_ok($$select public.adapt_prepare(null, null)$$, '22004', null, 'the user is required');

-- adapt_reserve_run: the daily limit --------------------------------------------------------
select is(public.adapt_reserve_run('00000000-0000-4000-8000-0000000013a1', 'venice', 'm', 'h1', 2, null, '2030-06-01 10:00+00')->>'allowed',
  'true', 'first run of the day reserved');
select is(public.adapt_reserve_run('00000000-0000-4000-8000-0000000013a1', 'venice', 'm', 'h2', 2, null, '2030-06-01 23:59+00')->>'used',
  '2', 'second run reserved, two used');
select is(public.adapt_reserve_run('00000000-0000-4000-8000-0000000013a1', 'venice', 'm', 'h3', 2, null, '2030-06-01 23:59:30+00')
            - 'run_id',
  '{"allowed": false, "used": 2, "limit": 2, "resets_at": "2030-06-02T00:00:00Z", "resets_in_seconds": 30}'::jsonb,
  'over the limit: refused with when it resets (next UTC midnight)');
select is((select count(*)::int from public.ai_text_runs where user_id = '00000000-0000-4000-8000-0000000013a1'), 2,
  'the refused call reserved nothing');
select is(public.adapt_reserve_run('00000000-0000-4000-8000-0000000013a2', 'venice', 'm', 'h', 2, null, '2030-06-01 23:59:30+00')->>'allowed',
  'true', 'another user has their own limit');
select is(public.adapt_reserve_run('00000000-0000-4000-8000-0000000013a1', 'venice', 'm', 'h4', 2, null, '2030-06-02 00:00+00')->>'allowed',
  'true', 'a new UTC day starts afresh');
select is((select prompt_hash from public.ai_text_runs where user_id = '00000000-0000-4000-8000-0000000013a1' order by created_at desc limit 1),
  'h4', 'the run keeps its prompt hash');

-- adapt_settle_run ------------------------------------------------------------------------
create temp table runs as
  select id, user_id from public.ai_text_runs where prompt_hash in ('h1', 'h2', 'h');
select is(public.adapt_settle_run((select id from runs where user_id = '00000000-0000-4000-8000-0000000013a1' limit 1 offset 0),
  '00000000-0000-4000-8000-0000000013a1', 120, 45, true)->>'kept', 'true', 'an answered call keeps its run');
select ok(exists (select 1 from public.ai_text_runs where input_tokens = 120 and output_tokens = 45),
  'with the usage tokens of the answer');
select is(public.adapt_settle_run((select id from runs where user_id = '00000000-0000-4000-8000-0000000013a2'),
  '00000000-0000-4000-8000-0000000013a1', 1, 1, false)->>'settled', 'false', 'another user''s run cannot be settled');
select is((select count(*)::int from public.ai_text_runs where user_id = '00000000-0000-4000-8000-0000000013a2'), 1,
  'and is untouched');
select is(public.adapt_settle_run((select id from runs where user_id = '00000000-0000-4000-8000-0000000013a1' order by id desc limit 1),
  '00000000-0000-4000-8000-0000000013a1', 0, 0, false)->>'settled', 'true', 'an unanswered call is released');
select is((select count(*)::int from public.ai_text_runs where user_id = '00000000-0000-4000-8000-0000000013a1'), 2,
  'its reservation is gone');
select is(public.adapt_settle_run((select id from runs where user_id = '00000000-0000-4000-8000-0000000013a2'),
  '00000000-0000-4000-8000-0000000013a2', 7, 8, true,
  '{"provider": "venice", "method": "POST", "path": "/api/v1/chat/completions", "status_code": 200, "duration_ms": 12,
    "user_id": "00000000-0000-4000-8000-0000000013a2", "model": "m", "error": null}')->>'kept', 'true',
  'settling with the provider call also writes its api_logs row');

-- adapt_save and the idea_hash dedupe --------------------------------------------------------
select is(public.adapt_save('00000000-0000-4000-8000-0000000013a1', 'idea', repeat('a', 64), '00000000-0000-4000-8000-00000013f003',
  null, null, '{}', false)->>'reason', 'voice_profile_not_found', 'saving with another user''s profile is refused');
select is(public.adapt_save('00000000-0000-4000-8000-0000000013a1', 'idea', repeat('a', 64), '00000000-0000-4000-8000-00000013f001',
  'casual', 'founders', '{"x": {"text": "one", "thread": []}}', false)->>'deduplicated', 'false', 'a new adaptation is stored');
select is(public.adapt_save('00000000-0000-4000-8000-0000000013a1', 'idea', repeat('a', 64), '00000000-0000-4000-8000-00000013f001',
  'casual', 'founders', '{"x": {"text": "two", "thread": []}}', false)->'adaptation'->'adaptations'->'x'->>'text',
  'one', 'a twin stored meanwhile wins (not paid for twice)');
select is(public.adapt_save('00000000-0000-4000-8000-0000000013a1', 'idea', repeat('a', 64), null,
  null, null, '{"x": {"text": "three", "thread": []}}', true, now() + interval '1 minute')->>'deduplicated', 'false', 'force stores another');
select ok((select last_used_at is not null from public.voice_profiles where id = '00000000-0000-4000-8000-00000013f001'),
  'the profile used is marked used');
select is(public.adapt_reserve_run('00000000-0000-4000-8000-0000000013a1', 'venice', 'm', 'h', 100, repeat('a', 64))->'existing'->'adaptations'->'x'->>'text',
  'three', 'the reservation answers the newest stored twin instead of a run');
select is(public.adapt_reserve_run('00000000-0000-4000-8000-0000000013a2', 'venice', 'm', 'h', 100, repeat('a', 64))->'existing',
  null, 'another user''s identical idea is not theirs to reuse');

-- adapt_context, adapt_save_platform, adapt_get ----------------------------------------------
create temp table mine as
  select id from public.content_adaptations where user_id = '00000000-0000-4000-8000-0000000013a1' and adaptations->'x'->>'text' = 'one';
select is(public.adapt_context((select id from mine), '00000000-0000-4000-8000-0000000013a1')->'profile'->>'id',
  '00000000-0000-4000-8000-00000013f001', 'regenerating uses the profile it was written in');
select is(public.adapt_context((select id from mine), '00000000-0000-4000-8000-0000000013a2'),
  '{"found": false}'::jsonb, 'another user cannot regenerate it');
select is(public.adapt_get((select id from mine), '00000000-0000-4000-8000-0000000013a2'),
  '{"found": false}'::jsonb, 'nor read it');
select is(public.adapt_save_platform((select id from mine), '00000000-0000-4000-8000-0000000013a2', 'x', '{"text": "hijack"}'),
  '{"found": false}'::jsonb, 'nor overwrite a variant');
select is(public.adapt_save_platform((select id from mine), '00000000-0000-4000-8000-0000000013a1', 'bluesky', '{"text": "sky"}')
            ->'adaptation'->'adaptations',
  '{"x": {"text": "one", "thread": []}, "bluesky": {"text": "sky"}}'::jsonb, 'the owner replaces one platform, keeping the others');
select throws_ok(format($$select public.adapt_save_platform(%L, '00000000-0000-4000-8000-0000000013a1', 'myspace', '{}')$$, (select id from mine)),
  '22023', null, 'an unknown platform is refused');

-- Who may call ----------------------------------------------------------------------------
select is((select count(*)::int from public.api_logs where user_id = '00000000-0000-4000-8000-0000000013a2' and path = '/api/v1/chat/completions' and status_code = 200), 1,
  'one api_logs row for the call');
select ok(not has_function_privilege('authenticated', 'public.adapt_reserve_run(uuid, text, text, text, integer, text, timestamptz, integer)', 'execute')
          and not has_function_privilege('anon', 'public.adapt_save(uuid, text, text, uuid, text, text, jsonb, boolean, timestamptz)', 'execute'),
  'clients cannot call adapt''s functions with someone else''s user id');
select ok(has_function_privilege('service_role', 'public.adapt_reserve_run(uuid, text, text, text, integer, text, timestamptz, integer)', 'execute'),
  'the component''s role can');

select * from finish();
rollback;
