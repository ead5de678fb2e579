-- 03_triggers_rpcs.sql: behaviour of the seeds' triggers and RPCs in one
-- session (concurrency is proven in the Rust tests): user bootstrap,
-- updated_at, posts denormalization and search, sync log completion, the one
-- default voice profile, generation status times, the Replicate token round
-- robin, the ai_text_runs daily limit, generation counts and cleanup, the
-- materialized views, heartbeats and outpost_status().
begin;
set local client_min_messages = warning;
create extension if not exists pgtap;

-- Run one SQL text as an actor; returns its single value as text, or ERR:<sqlstate>.
create function pg_temp.as_actor(p_role text, p_uid uuid, p_sql text) returns text
language plpgsql as $$
declare
  v text;
begin
  begin
    execute format('set local role %I', p_role);
    perform set_config('request.jwt.claims',
      case when p_uid is null then json_build_object('role', p_role)
           else json_build_object('sub', p_uid, 'role', p_role) end::text, true);
    begin
      execute p_sql into v;
      v := coalesce(v, '<null>');
    exception when others then
      v := 'ERR:' || sqlstate;
    end;
    raise exception using errcode = 'TSTRB', message = v;
  exception when sqlstate 'TSTRB' then
    return sqlerrm;
  end;
end
$$;

-- Does an ordinary UPDATE move updated_at forward? (updated_at is first set
-- to 2000-01-01 with triggers off.)
create function pg_temp.bumps(p_tbl text, p_pred text, p_set text) returns boolean
language plpgsql as $$
declare
  v boolean;
begin
  set local session_replication_role = replica;
  execute format('update %s set updated_at = %L where %s', p_tbl, '2000-01-01 00:00:00+00', p_pred);
  set local session_replication_role = origin;
  execute format('update %s set %s where %s', p_tbl, p_set, p_pred);
  execute format('select bool_and(updated_at > %L) from %s where %s', '2000-01-02 00:00:00+00', p_tbl, p_pred) into v;
  return coalesce(v, false);
end
$$;

select plan(74);

-- ------------------------------------------------- handle_new_auth_user (000)
insert into auth.users (id, email, raw_user_meta_data) values
  ('00000000-0000-4000-8000-0000000003a1', 'tess@example.test', '{"display_name": "Tess"}'),
  ('00000000-0000-4000-8000-0000000003a2', 'uma@example.test', '{}');
select is((select count(*) from public.users where id = '00000000-0000-4000-8000-0000000003a1'), 1::bigint,
          'inserting into auth.users creates the public.users row (handle_new_auth_user)');
select is((select email from public.users where id = '00000000-0000-4000-8000-0000000003a1'), 'tess@example.test',
          'the users row carries the auth email (001: email comes from Supabase Auth)');
select is((select count(*) from public.profiles where id = '00000000-0000-4000-8000-0000000003a1'), 1::bigint,
          'the profiles view shows the new user');

-- fixtures for the rest
insert into public.connected_accounts (id, user_id, platform, platform_user_id, username, access_token) values
  ('00000000-0000-4000-8000-00000003ca01', '00000000-0000-4000-8000-0000000003a1', 'strava', 'athlete-1', 'tess', 'ciphertext');
insert into public.drafts (id, user_id, text) values
  ('00000000-0000-4000-8000-00000003d001', '00000000-0000-4000-8000-0000000003a1', 'draft');
insert into public.feeds (id, user_id, slug) values
  ('00000000-0000-4000-8000-00000003f001', '00000000-0000-4000-8000-0000000003a1', 'trig');
insert into public.scheduled_posts (id, user_id, draft_id, content, run_at) values
  ('00000000-0000-4000-8000-00000003e001', '00000000-0000-4000-8000-0000000003a1',
   '00000000-0000-4000-8000-00000003d001', 'hi', now() + interval '1 day');
insert into public.content_adaptations (id, user_id, original_idea, adaptations) values
  ('00000000-0000-4000-8000-00000003b001', '00000000-0000-4000-8000-0000000003a1', 'idea', '{}');
insert into public.published_posts (id, user_id, platform, content) values
  ('00000000-0000-4000-8000-00000003b201', '00000000-0000-4000-8000-0000000003a1', 'x', 'c');
insert into public.jobs (run_id, project_spec, owner_id) values ('trig-run', '{}', '00000000-0000-4000-8000-0000000003a1');
insert into public.prompts (id, category, context, prompt_text) values ('trig-prompt', 'c', 'x', 't');
insert into public.ingested_items (id, source, platform, event_type, external_id, payload) values
  ('00000000-0000-4000-8000-00000003c001', 'webhook', 'strava', 'create', 'trig-1', '{}');
insert into public.ingested_posts (id, ingested_item_id, platform, account_id, user_id, platform_post_id, post_data) values
  ('00000000-0000-4000-8000-00000003c101', '00000000-0000-4000-8000-00000003c001', 'strava',
   '00000000-0000-4000-8000-00000003ca01', '00000000-0000-4000-8000-0000000003a1', 'activity-1',
   '{"author_handle": "tess", "activity_type": "Marathon"}');
insert into public.media_downloads (id, ingested_post_id, user_id, original_url) values
  ('00000000-0000-4000-8000-00000003c201', '00000000-0000-4000-8000-00000003c101',
   '00000000-0000-4000-8000-0000000003a1', 'https://cdn.example.test/run.jpg');

-- ------------------------------------------------------ posts (001 triggers)
-- user_id is denormalized from account_id, whatever the caller says
insert into public.posts (id, account_id, user_id, platform, platform_post_id, text_content, created_at_platform) values
  ('00000000-0000-4000-8000-00000003b101', '00000000-0000-4000-8000-00000003ca01', '00000000-0000-4000-8000-0000000003a2',
   'strava', 'activity-1', 'Morning archiving run along the river', now());
select lives_ok($$insert into public.posts (id, account_id, platform, platform_post_id, text_content, created_at_platform) values
  ('00000000-0000-4000-8000-00000003b102', '00000000-0000-4000-8000-00000003ca01',
   'strava', 'activity-2', 'Second post', now())$$, 'a post can be inserted without user_id (001: denormalized on insert)');
select is((select user_id from public.posts where id = '00000000-0000-4000-8000-00000003b101'),
          '00000000-0000-4000-8000-0000000003a1'::uuid,
          'posts.user_id is taken from the account, not from the insert (denormalize_post_user_id)');
select is((select user_id from public.posts where id = '00000000-0000-4000-8000-00000003b102'),
          '00000000-0000-4000-8000-0000000003a1'::uuid,
          'posts.user_id is filled in when the insert omits it');
select ok((select search_vector @@ to_tsquery('english', 'archiving') from public.posts
            where id = '00000000-0000-4000-8000-00000003b101'),
          'posts.search_vector finds a word of text_content (update_search_vector)');
select ok((select search_vector @@ to_tsquery('english', 'marathon') from public.posts
            where id = '00000000-0000-4000-8000-00000003b101'),
          'posts.search_vector includes ingested_posts.post_data activity_type');
update public.posts set text_content = 'Evening swim' where id = '00000000-0000-4000-8000-00000003b101';
select ok((select search_vector @@ to_tsquery('english', 'swim') and not search_vector @@ to_tsquery('english', 'archiving')
             from public.posts where id = '00000000-0000-4000-8000-00000003b101'),
          'updating text_content recomputes search_vector');

-- --------------------------------------------------------- updated_at triggers
select ok(pg_temp.bumps('public.users', $$id = '00000000-0000-4000-8000-0000000003a1'$$, 'display_name = display_name'), 'updated_at bumps on users');
select ok(pg_temp.bumps('public.connected_accounts', $$id = '00000000-0000-4000-8000-00000003ca01'$$, 'scope = scope'), 'updated_at bumps on connected_accounts');
select ok(pg_temp.bumps('public.posts', $$id = '00000000-0000-4000-8000-00000003b102'$$, 'published = published'), 'updated_at bumps on posts');
select ok(pg_temp.bumps('public.ingested_items', $$id = '00000000-0000-4000-8000-00000003c001'$$, 'event_type = event_type'), 'updated_at bumps on ingested_items');
select ok(pg_temp.bumps('public.ingested_posts', $$id = '00000000-0000-4000-8000-00000003c101'$$, 'post_data = post_data'), 'updated_at bumps on ingested_posts');
select ok(pg_temp.bumps('public.media_downloads', $$id = '00000000-0000-4000-8000-00000003c201'$$, 'error = error'), 'updated_at bumps on media_downloads');
select ok(pg_temp.bumps('public.drafts', $$id = '00000000-0000-4000-8000-00000003d001'$$, 'text = text'), 'updated_at bumps on drafts');
select ok(pg_temp.bumps('public.feeds', $$id = '00000000-0000-4000-8000-00000003f001'$$, 'title = title'), 'updated_at bumps on feeds');
select ok(pg_temp.bumps('public.scheduled_posts', $$id = '00000000-0000-4000-8000-00000003e001'$$, 'content = content'), 'updated_at bumps on scheduled_posts');
select ok(pg_temp.bumps('public.content_adaptations', $$id = '00000000-0000-4000-8000-00000003b001'$$, 'tone = tone'), 'updated_at bumps on content_adaptations');
select ok(pg_temp.bumps('public.published_posts', $$id = '00000000-0000-4000-8000-00000003b201'$$, 'metrics = metrics'), 'updated_at bumps on published_posts');
select ok(pg_temp.bumps('public.jobs', $$run_id = 'trig-run'$$, 'project_spec = project_spec'), 'updated_at bumps on jobs');
select ok(pg_temp.bumps('public.prompts', $$id = 'trig-prompt'$$, 'prompt_text = prompt_text'), 'updated_at bumps on prompts');

-- ---------------------------------------------------------- one default voice profile (002)
insert into public.voice_profiles (id, user_id, name, characteristics) values
  ('00000000-0000-4000-8000-00000003b301', '00000000-0000-4000-8000-0000000003a1', 'Professional', '{}');
insert into public.voice_profiles (id, user_id, name, characteristics) values
  ('00000000-0000-4000-8000-00000003b302', '00000000-0000-4000-8000-0000000003a1', 'Casual', '{}');
select ok(pg_temp.bumps('public.voice_profiles', $$id = '00000000-0000-4000-8000-00000003b302'$$, 'name = name'), 'updated_at bumps on voice_profiles');
select is((select is_default from public.voice_profiles where id = '00000000-0000-4000-8000-00000003b301'), true,
          'a user''s first voice profile becomes the default');
select is((select is_default from public.voice_profiles where id = '00000000-0000-4000-8000-00000003b302'), false,
          'a second voice profile is not the default');
update public.voice_profiles set is_default = true where id = '00000000-0000-4000-8000-00000003b302';
select results_eq($$select id from public.voice_profiles
                     where user_id = '00000000-0000-4000-8000-0000000003a1' and is_default$$,
                  $$values ('00000000-0000-4000-8000-00000003b302'::uuid)$$,
                  'switching the default keeps exactly one default (the new one)');
insert into public.voice_profiles (id, user_id, name, characteristics, is_default) values
  ('00000000-0000-4000-8000-00000003b303', '00000000-0000-4000-8000-0000000003a1', 'Bold', '{}', true);
select results_eq($$select id from public.voice_profiles
                     where user_id = '00000000-0000-4000-8000-0000000003a1' and is_default$$,
                  $$values ('00000000-0000-4000-8000-00000003b303'::uuid)$$,
                  'inserting a new default keeps exactly one default');
delete from public.voice_profiles where id = '00000000-0000-4000-8000-00000003b303';
select is((select count(*) from public.voice_profiles
            where user_id = '00000000-0000-4000-8000-0000000003a1' and is_default), 1::bigint,
          'deleting the default leaves exactly one default ("every user has exactly one default")');

-- ------------------------------------------------------------- sync_logs (001)
insert into public.sync_logs (id, account_id, user_id, sync_type, started_at) values
  ('00000000-0000-4000-8000-00000003c301', '00000000-0000-4000-8000-00000003ca01',
   '00000000-0000-4000-8000-0000000003a1', 'manual', now() - interval '5 seconds');
select is((select duration_ms from public.sync_logs where id = '00000000-0000-4000-8000-00000003c301'), null,
          'a running sync log has no duration_ms');
update public.sync_logs set status = 'success', completed_at = now()
 where id = '00000000-0000-4000-8000-00000003c301';
select is((select duration_ms from public.sync_logs where id = '00000000-0000-4000-8000-00000003c301'), 5000,
          'completing a sync log sets duration_ms = completed_at - started_at');
select is((select last_sync_at from public.connected_accounts where id = '00000000-0000-4000-8000-00000003ca01'), now(),
          'completing a sync log sets connected_accounts.last_sync_at');

-- ------------------------------------------------- update_generation_status (004)
insert into public.generations (id, user_id, model_id, status) values
  ('00000000-0000-4000-8000-00000003d101', '00000000-0000-4000-8000-0000000003a1', 'flux', 'pending');
select is((select started_at from public.generations where id = '00000000-0000-4000-8000-00000003d101'), null,
          'a pending generation has no started_at');
update public.generations set status = 'processing' where id = '00000000-0000-4000-8000-00000003d101';
select isnt((select started_at from public.generations where id = '00000000-0000-4000-8000-00000003d101'), null,
            'update_generation_status sets started_at when processing starts');
update public.generations set started_at = now() - interval '3 seconds' where id = '00000000-0000-4000-8000-00000003d101';
update public.generations set status = 'succeeded' where id = '00000000-0000-4000-8000-00000003d101';
select isnt((select completed_at from public.generations where id = '00000000-0000-4000-8000-00000003d101'), null,
            'update_generation_status sets completed_at on success');
select ok((select processing_time_ms between 3000 and 60000 from public.generations
            where id = '00000000-0000-4000-8000-00000003d101'),
          'update_generation_status sets processing_time_ms from started_at to completed_at');

-- a generation that waited a month in the queue can still be cancelled
insert into public.generations (id, user_id, model_id, status, created_at) values
  ('00000000-0000-4000-8000-00000003d106', '00000000-0000-4000-8000-0000000003a1', 'flux', 'pending', now() - interval '30 days');
select lives_ok($$update public.generations set status = 'canceled' where id = '00000000-0000-4000-8000-00000003d106'$$,
                'a generation pending for 30 days can be cancelled (processing_time_ms does not overflow)');
delete from public.generations where id = '00000000-0000-4000-8000-00000003d106';

-- ------------------------------------------- generation counts and cleanup (004)
insert into public.workspaces (id, name, slug, created_by) values
  ('00000000-0000-4000-8000-00000003d001', 'Trig', 'trig-ws', '00000000-0000-4000-8000-0000000003a1');
insert into public.generations (id, user_id, workspace_id, model_id, status, created_at, started_at, completed_at) values
  ('00000000-0000-4000-8000-00000003d102', '00000000-0000-4000-8000-0000000003a1', null, 'flux', 'failed',
   now() - interval '100 days', now() - interval '100 days', now() - interval '100 days' + interval '2 seconds'),
  ('00000000-0000-4000-8000-00000003d103', '00000000-0000-4000-8000-0000000003a1', null, 'flux', 'failed',
   now() - interval '1 day', now() - interval '1 day', now() - interval '1 day' + interval '2 seconds'),
  ('00000000-0000-4000-8000-00000003d104', '00000000-0000-4000-8000-0000000003a1', null, 'flux', 'succeeded',
   now() - interval '100 days', now() - interval '100 days', now() - interval '100 days' + interval '2 seconds'),
  ('00000000-0000-4000-8000-00000003d105', '00000000-0000-4000-8000-0000000003a1',
   '00000000-0000-4000-8000-00000003d001', 'flux', 'pending', now(), null, null);
select is((public.get_generation_counts('00000000-0000-4000-8000-0000000003a1')->>'failed')::int, 2,
          'get_generation_counts(uuid) counts the user''s failed generations');
select is((public.get_workspace_generation_counts('00000000-0000-4000-8000-00000003d001')->>'all')::int, 1,
          'get_workspace_generation_counts(uuid) counts the workspace''s generations');
select lives_ok($$select public.cleanup_old_generations(90)$$, 'cleanup_old_generations(90) runs');
select is((select count(*) from public.generations where id = '00000000-0000-4000-8000-00000003d102'), 0::bigint,
          'cleanup_old_generations deletes failed generations older than N days');
select is((select count(*) from public.generations
            where id in ('00000000-0000-4000-8000-00000003d103', '00000000-0000-4000-8000-00000003d104')), 2::bigint,
          'cleanup_old_generations keeps recent failed and old successful generations');

-- ----------------------------------------------- get_next_replicate_token (004)
update public.replicate_tokens set is_active = false;
insert into public.replicate_tokens (id, token, is_active) values
  ('00000000-0000-4000-8000-00000003e101', 'r8_token_a', true),
  ('00000000-0000-4000-8000-00000003e102', 'r8_token_b_inactive', false),
  ('00000000-0000-4000-8000-00000003e103', 'r8_token_c', true);
select set_config('test.tok1', (select token from public.get_next_replicate_token()), true);
select set_config('test.tok2', (select token from public.get_next_replicate_token()), true);
select set_config('test.tok3', (select token from public.get_next_replicate_token()), true);
select set_config('test.tok4', (select token from public.get_next_replicate_token()), true);
select is(array[current_setting('test.tok1'), current_setting('test.tok2')]::text[] @> array['r8_token_a', 'r8_token_c']
          and current_setting('test.tok1') <> current_setting('test.tok2'), true,
          'get_next_replicate_token hands out each active token once before repeating');
select ok('r8_token_b_inactive' <> all (array[current_setting('test.tok1'), current_setting('test.tok2'),
                                              current_setting('test.tok3'), current_setting('test.tok4')]),
          'get_next_replicate_token never returns an inactive token');
select is(array[current_setting('test.tok3'), current_setting('test.tok4')],
          array[current_setting('test.tok1'), current_setting('test.tok2')],
          'get_next_replicate_token rotates round robin over the active tokens');
update public.replicate_tokens set is_active = false;
select is((select count(*) from public.get_next_replicate_token()), 0::bigint,
          'get_next_replicate_token returns nothing when no token is active');
select ok(pg_temp.as_actor('authenticated', '00000000-0000-4000-8000-0000000003a1',
            $$select token from public.get_next_replicate_token()$$) in ('<null>', 'ERR:42501'),
          'an authenticated user cannot draw a Replicate token');

-- --------------------------------------------------- ai_text_runs daily limit (000)
select is(public.record_ai_text_run('00000000-0000-4000-8000-0000000003a1', 'openai', 'gpt', 'h1', 10, 20, 2,
                                    '2031-05-05 10:00:00+00')->>'allowed', 'true', 'first run of the day is allowed');
select is(public.record_ai_text_run('00000000-0000-4000-8000-0000000003a1', 'openai', 'gpt', 'h2', 10, 20, 2,
                                    '2031-05-05 11:00:00+00')->>'allowed', 'true', 'second run (limit 2) is allowed');
select is(public.record_ai_text_run('00000000-0000-4000-8000-0000000003a1', 'openai', 'gpt', 'h3', 10, 20, 2,
                                    '2031-05-05 12:00:00+00')->>'allowed', 'false', 'a run over the daily limit is refused');
select is((select count(*) from public.ai_text_runs where user_id = '00000000-0000-4000-8000-0000000003a1'
             and created_at::date = '2031-05-05'), 2::bigint, 'the refused run left no row');
select is(public.record_ai_text_run('00000000-0000-4000-8000-0000000003a1', 'openai', 'gpt', 'h4', 10, 20, 2,
                                    '2031-05-06 00:30:00+00')->>'allowed', 'true', 'the next day starts a new allowance');

-- --------------------------------------------- webhook archive (DESIGN, CONTRACT)
select set_config('test.si1', public.store_ingested_item('webhook', 'strava', 'create', 'trig-dedupe-1', '{"a": 1}',
                                                         null, null, null, '2031-02-02 00:00:00+00')::text, true);
select set_config('test.si2', public.store_ingested_item('webhook', 'strava', 'create', 'trig-dedupe-1', '{"a": 2}',
                                                         null, null, null, '2031-02-02 00:00:05+00')::text, true);
select is(current_setting('test.si1')::jsonb->>'stored', 'true', 'store_ingested_item stores a new delivery');
select ok((current_setting('test.si2')::jsonb->>'duplicate')::boolean
          and current_setting('test.si2')::jsonb->>'id' = current_setting('test.si1')::jsonb->>'id',
          'a redelivery with the same (platform, external_id) is a duplicate of the first');
select results_eq($$select count(*), min(payload->>'a') from public.ingested_items
                     where platform = 'strava' and external_id = 'trig-dedupe-1'$$,
                  $$values (1::bigint, '1'::text)$$, 'a redelivery changes nothing');
select set_config('test.si3', public.store_ingested_item('webhook', 'instagram', 'raw', 'trig-bad-json', '"not json"',
                                                         null, null, 'invalid JSON', '2031-02-02 00:00:00+00')::text, true);
select is((select status::text from public.ingested_items where id = (current_setting('test.si3')::jsonb->>'id')::uuid),
          'failed', 'a body that cannot be parsed is stored failed (never lost)');

-- ------------------------------------------------ feed skeleton cursor (CONTRACT)
insert into public.indexed_posts (feed_id, uri, created_at) values
  ('00000000-0000-4000-8000-00000003f001', 'at://a/1', '2031-03-03 10:00:00+00'),
  ('00000000-0000-4000-8000-00000003f001', 'at://a/2', '2031-03-03 10:00:00+00'),
  ('00000000-0000-4000-8000-00000003f001', 'at://a/3', '2031-03-03 09:00:00+00');
select is((select array_agg(e->>'uri') from jsonb_array_elements(
             public.feed_skeleton_page('00000000-0000-4000-8000-00000003f001', 2, null, null)->'items') e),
          array['at://a/2', 'at://a/1'], 'feed_skeleton_page pages newest first, uri desc on ties');
select is((select array_agg(e->>'uri') from jsonb_array_elements(
             public.feed_skeleton_page('00000000-0000-4000-8000-00000003f001', 2, '2031-03-03 10:00:00+00', 'at://a/1')->'items') e),
          array['at://a/3'], 'feed_skeleton_page continues after an exclusive cursor');

-- ------------------------------------------- Replicate results (CONTRACT)
insert into public.generations (id, user_id, model_id, status, replicate_prediction_id) values
  ('00000000-0000-4000-8000-00000003d107', '00000000-0000-4000-8000-0000000003a1', 'flux', 'processing', 'pred-trig-1');
select is(public.record_generation_result('pred-trig-1', '{"status": "succeeded", "output_urls": ["https://x/1.png"]}')->>'applied',
          'true', 'record_generation_result applies a terminal result');
select results_eq($$select status, output_urls from public.generations where id = '00000000-0000-4000-8000-00000003d107'$$,
                  $$values ('succeeded'::text, array['https://x/1.png'])$$, 'the generation is succeeded with its outputs');
select is(public.record_generation_result('pred-trig-1', '{"status": "failed"}')->>'reason', 'already_finished',
          'a late result for a finished generation changes nothing');

-- ------------------------------------------------------- materialized views
insert into public.posts (id, account_id, platform, platform_post_id, text_content, created_at_platform, published, deleted_on_platform) values
  ('00000000-0000-4000-8000-00000003b103', '00000000-0000-4000-8000-00000003ca01', 'strava', 'activity-3', 'public one', now(), true, false),
  ('00000000-0000-4000-8000-00000003b104', '00000000-0000-4000-8000-00000003ca01', 'strava', 'activity-4', 'deleted one', now(), true, true);
select lives_ok($$refresh materialized view public.public_posts$$, 'public_posts can be refreshed');
select is((select count(*) from public.public_posts where id = '00000000-0000-4000-8000-00000003b103'), 1::bigint,
          'public_posts shows a published post after refresh');
select is((select count(*) from public.public_posts where id = '00000000-0000-4000-8000-00000003b104'), 0::bigint,
          'public_posts leaves out posts deleted on the platform');
select lives_ok($$select public.refresh_admin_stats()$$, 'refresh_admin_stats() refreshes the admin stats view');
select ok(pg_temp.as_actor('postgres', null,
            (select format('select (count(*) > 0)::text from %s', c.oid::regclass)
               from pg_class c join pg_namespace n on n.oid = c.relnamespace
              where n.nspname = 'public' and c.relkind = 'm' and c.relname like '%admin%stat%' limit 1)) = 'true',
          'the admin stats view has rows after refresh');

select set_config('test.maint', public.run_maintenance('trig-maint', now(), 90, 90)::text, true);
select ok(current_setting('test.maint')::jsonb ?& array['admin_stats_refreshed', 'public_posts_refreshed',
                                                        'generations_deleted', 'sync_logs_deleted', 'leases_released'],
          'run_maintenance() answers the documented keys (CONTRACT.md)');
select ok(current_setting('test.maint')::jsonb->'leases_released' ?& array['scheduled_posts', 'ai_jobs', 'generations',
                                                                          'media_downloads', 'ingested_items', 'ingested_posts'],
          'run_maintenance() releases expired leases of all six queues');

-- ------------------------------------------------- heartbeats and outpost_status
select is(public.record_worker_heartbeat('trig-worker', '{"version": "1"}', '2031-01-01 00:00:00+00')->>'worker_id',
          'trig-worker', 'record_worker_heartbeat returns the row');
select is((select last_seen_at from public.worker_heartbeats where worker_id = 'trig-worker'),
          '2031-01-01 00:00:00+00'::timestamptz, 'record_worker_heartbeat stores last_seen_at = p_now');
select ok(public.outpost_status('2031-01-01 00:00:30+00') ?& array['database', 'latest_migration', 'queues', 'heartbeats'],
          'outpost_status() returns database, latest_migration, queues, heartbeats');
select is(public.outpost_status('2031-01-01 00:00:30+00')->>'database', 'ok', 'outpost_status() database is ok');
select ok((select bool_and(public.outpost_status('2031-01-01 00:00:30+00')->'queues'->q ?& array['queued', 'leased', 'dead'])
             from unnest(array['scheduled_posts', 'ai_jobs', 'generations', 'media_downloads',
                               'ingested_items', 'ingested_posts']) q),
          'outpost_status() queues has queued/leased/dead for all six queues');
select ok(exists(select 1 from jsonb_array_elements(public.outpost_status('2031-01-01 00:00:30+00')->'heartbeats') h
                  where h->>'worker_id' = 'trig-worker' and (h->>'age_seconds')::numeric = 30
                    and h ?& array['last_seen_at', 'detail']),
          'outpost_status() lists the heartbeat with its age in seconds');
select ok(jsonb_typeof(public.outpost_status()->'latest_migration') = 'null'
          or public.outpost_status()->'latest_migration' ?& array['version', 'name', 'applied_at'],
          'outpost_status() latest_migration is null or {version, name, applied_at}');

select * from finish();
rollback;
