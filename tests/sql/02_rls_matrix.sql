-- 02_rls_matrix.sql: the row-level security matrix of DESIGN.md "Security":
-- anon, the owner, another user, a workspace / flow member and service_role
-- against SELECT / INSERT / UPDATE / DELETE on every table with user data,
-- asserting exactly what the seed documents allow (denials included).
--
-- Table-driven: rls_spec holds one row per (table, fixture row) with the SQL
-- to run and a four-letter expectation per actor over S I U D:
--   a = allowed (SELECT sees the row, INSERT succeeds, UPDATE/DELETE touch it)
--   d = denied  (SELECT sees nothing, INSERT raises 42501, UPDATE/DELETE touch
--                nothing or raise 42501)
--   - = not asserted (the seed does not say; see the report)
-- pg_temp.rls_try runs each case as its actor (set local role +
-- request.jwt.claims) inside a subtransaction that is always rolled back, so
-- cases never see each other's writes.
begin;
set local client_min_messages = warning;
create extension if not exists pgtap;

-- ------------------------------------------------------------------ fixtures
-- u1 owner, u2 another user, u3 workspace and flow member, u4 a signed-up
-- user without a users row yet (to test who may create users rows).
insert into auth.users (id, email) values
  ('00000000-0000-4000-8000-0000000000a1', 'owner@example.test'),
  ('00000000-0000-4000-8000-0000000000a2', 'other@example.test'),
  ('00000000-0000-4000-8000-0000000000a3', 'member@example.test'),
  ('00000000-0000-4000-8000-0000000000a4', 'newcomer@example.test');
delete from public.users where id = '00000000-0000-4000-8000-0000000000a4';

-- Trove (seed 001)
insert into public.connected_accounts (id, user_id, platform, platform_user_id, username, access_token) values
  ('00000000-0000-4000-8000-00000000ca01', '00000000-0000-4000-8000-0000000000a1', 'bluesky', 'did:plc:owner', 'owner.bsky.social', 'ciphertext'),
  ('00000000-0000-4000-8000-00000000ca02', '00000000-0000-4000-8000-0000000000a2', 'bluesky', 'did:plc:other', 'other.bsky.social', 'ciphertext'),
  ('00000000-0000-4000-8000-00000000ca03', '00000000-0000-4000-8000-0000000000a1', 'x', 'x-owner', 'owner_on_x', 'ciphertext');
insert into public.posts (id, account_id, user_id, platform, platform_post_id, text_content, created_at_platform) values
  ('00000000-0000-4000-8000-00000000b001', '00000000-0000-4000-8000-00000000ca01', '00000000-0000-4000-8000-0000000000a1',
   'bluesky', 'at://did:plc:owner/app.bsky.feed.post/1', 'hello archive', now());
insert into public.ingested_items (id, source, platform, account_id, user_id, event_type, external_id, payload) values
  ('00000000-0000-4000-8000-00000000c001', 'webhook', 'bluesky', '00000000-0000-4000-8000-00000000ca01',
   '00000000-0000-4000-8000-0000000000a1', 'create', 'rls-fixture-1', '{}');
insert into public.ingested_posts (id, ingested_item_id, platform, account_id, user_id, platform_post_id, post_data) values
  ('00000000-0000-4000-8000-00000000c101', '00000000-0000-4000-8000-00000000c001', 'bluesky',
   '00000000-0000-4000-8000-00000000ca01', '00000000-0000-4000-8000-0000000000a1',
   'at://did:plc:owner/app.bsky.feed.post/1', '{}');
insert into public.media_downloads (id, ingested_post_id, user_id, original_url) values
  ('00000000-0000-4000-8000-00000000c201', '00000000-0000-4000-8000-00000000c101',
   '00000000-0000-4000-8000-0000000000a1', 'https://cdn.example.test/a.jpg');
insert into public.sync_logs (id, account_id, user_id, sync_type) values
  ('00000000-0000-4000-8000-00000000c301', '00000000-0000-4000-8000-00000000ca01', '00000000-0000-4000-8000-0000000000a1', 'manual');
insert into public.engagement_history (id, post_id, engagement_stats) values
  ('00000000-0000-4000-8000-00000000c401', '00000000-0000-4000-8000-00000000b001', '{"likes": 1}');

-- BA6 Bluesky Suite (seed 000)
insert into public.drafts (id, user_id, text) values
  ('00000000-0000-4000-8000-00000000d001', '00000000-0000-4000-8000-0000000000a1', 'a draft');
insert into public.scheduled_posts (id, user_id, draft_id, account_id, account_did, content, platform, run_at, status) values
  ('00000000-0000-4000-8000-00000000e001', '00000000-0000-4000-8000-0000000000a1', '00000000-0000-4000-8000-00000000d001',
   '00000000-0000-4000-8000-00000000ca01', 'did:plc:owner', 'queued post', 'bluesky', now() + interval '1 hour', 'queued'),
  ('00000000-0000-4000-8000-00000000e002', '00000000-0000-4000-8000-0000000000a1', '00000000-0000-4000-8000-00000000d001',
   '00000000-0000-4000-8000-00000000ca01', 'did:plc:owner', 'posted post', 'bluesky', now() - interval '1 hour', 'posted');
insert into public.post_events (id, scheduled_post_id, type, detail) values
  ('00000000-0000-4000-8000-00000000e101', '00000000-0000-4000-8000-00000000e002', 'success', '{}');
insert into public.feeds (id, user_id, slug) values
  ('00000000-0000-4000-8000-00000000f001', '00000000-0000-4000-8000-0000000000a1', 'rust');
insert into public.feed_sources (id, feed_id, actor_did) values
  ('00000000-0000-4000-8000-00000000f101', '00000000-0000-4000-8000-00000000f001', 'did:plc:author');
insert into public.feed_rules (id, feed_id, kind, value) values
  ('00000000-0000-4000-8000-00000000f201', '00000000-0000-4000-8000-00000000f001', 'include', 'rust');
insert into public.indexed_posts (id, feed_id, uri, cid, author_did, text, lang) values
  ('00000000-0000-4000-8000-00000000f301', '00000000-0000-4000-8000-00000000f001',
   'at://did:plc:author/app.bsky.feed.post/1', 'bafy', 'did:plc:author', 'rust is nice', 'en');
insert into public.worker_heartbeats (worker_id, detail) values ('rls-fixture-worker', '{}');
insert into public.ai_jobs (id, user_id, provider, model, prompt, params) values
  ('00000000-0000-4000-8000-0000000a0001', '00000000-0000-4000-8000-0000000000a1', 'venice', 'flux', 'a cat', '{}');
insert into public.ai_assets (id, job_id, user_id, bucket, path, mime) values
  ('00000000-0000-4000-8000-0000000a0101', '00000000-0000-4000-8000-0000000a0001', '00000000-0000-4000-8000-0000000000a1', 'generations',
   '00000000-0000-4000-8000-0000000000a1/cat.png', 'image/png');
insert into public.ai_text_runs (id, user_id, provider, model, prompt_hash) values
  ('00000000-0000-4000-8000-0000000a0201', '00000000-0000-4000-8000-0000000000a1', 'openai', 'gpt', 'h');

-- Nexus (seed 002)
insert into public.content_adaptations (id, user_id, original_idea, adaptations) values
  ('00000000-0000-4000-8000-0000000b0001', '00000000-0000-4000-8000-0000000000a1', 'an idea', '{"x": {"text": "idea"}}');
insert into public.voice_profiles (id, user_id, name, characteristics) values
  ('00000000-0000-4000-8000-0000000b0101', '00000000-0000-4000-8000-0000000000a1', 'Professional', '{}'),
  ('00000000-0000-4000-8000-0000000b0102', '00000000-0000-4000-8000-0000000000a1', 'Casual', '{}'),
  ('00000000-0000-4000-8000-0000000b0103', '00000000-0000-4000-8000-0000000000a2', 'Only one', '{}');
insert into public.published_posts (id, user_id, platform, status, content) values
  ('00000000-0000-4000-8000-0000000b0201', '00000000-0000-4000-8000-0000000000a1', 'x', 'pending', 'not yet out'),
  ('00000000-0000-4000-8000-0000000b0202', '00000000-0000-4000-8000-0000000000a1', 'x', 'published', 'out there');

-- pipeline job tracker (seed 003)
insert into public.jobs (run_id, project_spec, owner_id) values
  ('rls-run-1', '{}', '00000000-0000-4000-8000-0000000000a1');
insert into public.job_events (id, run_id, bot_name, event_type, owner_id) values
  ('00000000-0000-4000-8000-0000000c0001', 'rls-run-1', 'builder', 'started', '00000000-0000-4000-8000-0000000000a1');
insert into public.artifacts (id, run_id, kind, owner_id) values
  ('00000000-0000-4000-8000-0000000c0101', 'rls-run-1', 'zip', '00000000-0000-4000-8000-0000000000a1');
insert into public.prompts (id, category, context, prompt_text) values
  ('rls-prompt', 'copy', 'landing', 'Hello');

-- AI generation studio (seed 004)
insert into public.workspaces (id, name, slug, created_by) values
  ('00000000-0000-4000-8000-0000000d0001', 'Team', 'team-rls', '00000000-0000-4000-8000-0000000000a1');
insert into public.workspace_members (workspace_id, user_id, role) values
  ('00000000-0000-4000-8000-0000000d0001', '00000000-0000-4000-8000-0000000000a1', 'owner'),
  ('00000000-0000-4000-8000-0000000d0001', '00000000-0000-4000-8000-0000000000a3', 'member')
  on conflict do nothing;  -- a trigger may already have added the creator
insert into public.generations (id, user_id, workspace_id, action, model_id, status) values
  ('00000000-0000-4000-8000-0000000d0101', '00000000-0000-4000-8000-0000000000a1', null,
   'generate', 'flux', 'succeeded'),
  ('00000000-0000-4000-8000-0000000d0102', '00000000-0000-4000-8000-0000000000a1', '00000000-0000-4000-8000-0000000d0001',
   'generate', 'flux', 'succeeded');
insert into public.replicate_tokens (id, token, is_active) values
  ('00000000-0000-4000-8000-0000000d0201', 'r8_rls_fixture', true);
insert into public.flows (id, user_id, name) values
  ('00000000-0000-4000-8000-0000000d0301', '00000000-0000-4000-8000-0000000000a1', 'Pipeline');
insert into public.flow_members (flow_id, user_id, role) values
  ('00000000-0000-4000-8000-0000000d0301', '00000000-0000-4000-8000-0000000000a3', 'editor');
insert into public.flow_nodes (id, flow_id, type, data) values
  ('00000000-0000-4000-8000-0000000d0401', '00000000-0000-4000-8000-0000000d0301', 'prompt', '{}'),
  ('00000000-0000-4000-8000-0000000d0402', '00000000-0000-4000-8000-0000000d0301', 'image', '{}');
insert into public.flow_edges (id, flow_id, source, target) values
  ('00000000-0000-4000-8000-0000000d0501', '00000000-0000-4000-8000-0000000d0301',
   '00000000-0000-4000-8000-0000000d0401', '00000000-0000-4000-8000-0000000d0402');
insert into public.flow_invites (flow_id, token, created_by) values
  ('00000000-0000-4000-8000-0000000d0301', 'rls-invite-token', '00000000-0000-4000-8000-0000000000a1');
insert into public.flow_comments (id, flow_id, user_id, content) values
  ('00000000-0000-4000-8000-0000000d0601', '00000000-0000-4000-8000-0000000d0301', '00000000-0000-4000-8000-0000000000a1', 'nice');
insert into public.user_loras (id, user_id, name, status) values
  ('00000000-0000-4000-8000-0000000d0701', '00000000-0000-4000-8000-0000000000a1', 'my face', 'pending');
insert into public.lora_training_images (id, lora_id, user_id, storage_path) values
  ('00000000-0000-4000-8000-0000000d0801', '00000000-0000-4000-8000-0000000d0701', '00000000-0000-4000-8000-0000000000a1', '00000000-0000-4000-8000-0000000000a1/l/1.png');
insert into public.notifications (id, user_id, type, title) values
  ('00000000-0000-4000-8000-0000000d0901', '00000000-0000-4000-8000-0000000000a1', 'generation', 'done');
insert into public.ideas (id, title, author_id) values
  ('00000000-0000-4000-8000-0000000d1001', 'dark mode', '00000000-0000-4000-8000-0000000000a1');
insert into public.assistant_conversations (id, user_id, title) values
  ('00000000-0000-4000-8000-0000000d1101', '00000000-0000-4000-8000-0000000000a1', 'chat');
insert into public.assistant_messages (id, conversation_id, role, content) values
  ('00000000-0000-4000-8000-0000000d1201', '00000000-0000-4000-8000-0000000d1101', 'user', 'hi');
insert into public.api_logs (id, method, path, status_code, duration_ms, user_id, provider) values
  ('00000000-0000-4000-8000-0000000d1301', 'GET', '/api/x', 200, 5, '00000000-0000-4000-8000-0000000000a1', 'replicate');
insert into public.support_tickets (id, user_id, message) values
  ('00000000-0000-4000-8000-0000000d1401', '00000000-0000-4000-8000-0000000000a1', 'help');

-- queue events and the runner's migration table (CONTRACT.md)
insert into public.queue_events (queue, item_id, event, lease_token, worker_id) values
  ('generations', '00000000-0000-4000-8000-0000000d0101', 'claimed', 1, 'rls-worker');
insert into public.outpost_schema_migrations (version, name, checksum) values ('9999', 'rls_fixture', 'abc')
  on conflict do nothing;

-- Storage (seed 001 media policy, seed 004 buckets). The buckets themselves
-- are checked in 01_completeness; here they are only made sure of.
insert into storage.buckets (id, name) values ('media', 'media'), ('lora-training-images', 'lora-training-images'),
  ('generations', 'generations') on conflict do nothing;
insert into storage.objects (bucket_id, name, owner) values
  ('media', '00000000-0000-4000-8000-0000000000a1/bluesky/p1/a.jpg', '00000000-0000-4000-8000-0000000000a1'),
  ('generations', '00000000-0000-4000-8000-0000000000a1/g1.png', '00000000-0000-4000-8000-0000000000a1'),
  ('lora-training-images', '00000000-0000-4000-8000-0000000000a1/l/1.png', '00000000-0000-4000-8000-0000000000a1');

-- --------------------------------------------------------------------- spec
-- ins: the INSERT to try; ":actor" becomes the acting user's id (or u1 for
-- anon and service_role), so "another user" tries to add *their own* row to
-- something they do not own; elsewhere the row claims u1 (a spoof).
create temp table rls_spec (
  ord serial, label text, pred text, ins text, upd text,
  owner_uid uuid default '00000000-0000-4000-8000-0000000000a1',
  e_owner text, e_other text, e_member text default '----', e_anon text default 'dddd', e_service text default 'aaaa');

insert into rls_spec (label, pred, ins, upd, e_owner, e_other, e_member, e_anon, e_service) values
-- seed 001 users + seed 002 users: read/update own, insert service only, no delete
-- (0016: the profile columns; email comes from auth.users only, see 07_tenancy)
('users', $$public.users where id = '00000000-0000-4000-8000-0000000000a1'$$,
  $$insert into public.users (id, email) values ('00000000-0000-4000-8000-0000000000a4', 'newcomer@example.test')$$,
  'display_name = display_name', 'a-ad', 'dddd', '----', 'dddd', 'aaaa'),
-- a user may edit their profile (001: "update their own email") but not grant themselves a role or credits (004)
('users (self-promotion to admin)', $$public.users where id = '00000000-0000-4000-8000-0000000000a1'$$,
  null, $$role = 'admin'$$, '--d-', '----', '----', '----', '--a-'),
('users (self-granted credits)', $$public.users where id = '00000000-0000-4000-8000-0000000000a1'$$,
  null, 'credits = credits + 1000', '--d-', '----', '----', '----', '--a-'),
-- 0016: accounts are created by the service (identity from the platform); owners label and pause them
('connected_accounts', $$public.connected_accounts where id = '00000000-0000-4000-8000-00000000ca01'$$,
  $$insert into public.connected_accounts (user_id, platform, platform_user_id, username) values ('00000000-0000-4000-8000-0000000000a1', 'strava', '42', 'runner')$$,
  'label = label', 'adaa', 'dddd', '----', 'dddd', 'aaaa'),
-- seed 001: owner reads; sync jobs (service role) write
('posts', $$public.posts where id = '00000000-0000-4000-8000-00000000b001'$$,
  $$insert into public.posts (account_id, user_id, platform, platform_post_id, created_at_platform) values ('00000000-0000-4000-8000-00000000ca01', '00000000-0000-4000-8000-0000000000a1', 'bluesky', 'at://rls/new', now())$$,
  'text_content = text_content', 'addd', 'dddd', '----', 'dddd', 'aaaa'),
('media_downloads', $$public.media_downloads where id = '00000000-0000-4000-8000-00000000c201'$$,
  $$insert into public.media_downloads (ingested_post_id, user_id, original_url) values ('00000000-0000-4000-8000-00000000c101', '00000000-0000-4000-8000-0000000000a1', 'https://cdn.example.test/new.jpg')$$,
  'error = error', 'addd', 'dddd', '----', 'dddd', 'aaaa'),
('sync_logs', $$public.sync_logs where id = '00000000-0000-4000-8000-00000000c301'$$,
  $$insert into public.sync_logs (account_id, user_id, sync_type) values ('00000000-0000-4000-8000-00000000ca01', '00000000-0000-4000-8000-0000000000a1', 'manual')$$,
  'metadata = metadata', 'addd', 'dddd', '----', 'dddd', 'aaaa'),
('ingested_items', $$public.ingested_items where id = '00000000-0000-4000-8000-00000000c001'$$,
  $$insert into public.ingested_items (source, platform, account_id, user_id, event_type, external_id, payload) values ('webhook', 'bluesky', '00000000-0000-4000-8000-00000000ca01', '00000000-0000-4000-8000-0000000000a1', 'create', 'rls-new', '{}')$$,
  'event_type = event_type', '----', 'dddd', '----', 'dddd', 'aaaa'),
('ingested_posts', $$public.ingested_posts where id = '00000000-0000-4000-8000-00000000c101'$$,
  $$insert into public.ingested_posts (platform, account_id, user_id, platform_post_id, post_data) values ('bluesky', '00000000-0000-4000-8000-00000000ca01', '00000000-0000-4000-8000-0000000000a1', 'at://rls/new', '{}')$$,
  'post_data = post_data', '----', 'dddd', '----', 'dddd', 'aaaa'),
('engagement_history', $$public.engagement_history where id = '00000000-0000-4000-8000-00000000c401'$$,
  $$insert into public.engagement_history (post_id, engagement_stats, recorded_at) values ('00000000-0000-4000-8000-00000000b001', '{}', now() + interval '1 day')$$,
  'engagement_stats = engagement_stats', '----', 'dddd', '----', 'dddd', 'aaaa'),
-- seed 000
('drafts', $$public.drafts where id = '00000000-0000-4000-8000-00000000d001'$$,
  $$insert into public.drafts (user_id, text) values ('00000000-0000-4000-8000-0000000000a1', 'new')$$,
  'text = text', 'aaaa', 'dddd', '----', 'dddd', 'aaaa'),
('scheduled_posts (queued)', $$public.scheduled_posts where id = '00000000-0000-4000-8000-00000000e001'$$,
  $$insert into public.scheduled_posts (user_id, draft_id, account_id, account_did, content, platform, run_at, status) values ('00000000-0000-4000-8000-0000000000a1', '00000000-0000-4000-8000-00000000d001', '00000000-0000-4000-8000-00000000ca01', 'did:plc:owner', 'new', 'bluesky', now() + interval '2 hours', 'queued')$$,
  'run_at = run_at', 'aaaa', 'dddd', '----', 'dddd', 'aaaa'),
('scheduled_posts (already posted)', $$public.scheduled_posts where id = '00000000-0000-4000-8000-00000000e002'$$,
  null, 'run_at = run_at', 'a-dd', 'd-dd', '----', 'd-dd', 'a-aa'),
('post_events', $$public.post_events where id = '00000000-0000-4000-8000-00000000e101'$$,
  $$insert into public.post_events (scheduled_post_id, type, detail) values ('00000000-0000-4000-8000-00000000e001', 'claimed', '{}')$$,
  'detail = detail', '----', 'dddd', '----', 'dddd', 'aaaa'),
('feeds', $$public.feeds where id = '00000000-0000-4000-8000-00000000f001'$$,
  $$insert into public.feeds (user_id, slug) values ('00000000-0000-4000-8000-0000000000a1', 'new-feed')$$,
  'title = title', 'aaaa', 'dddd', '----', 'dddd', 'aaaa'),
('feed_sources', $$public.feed_sources where id = '00000000-0000-4000-8000-00000000f101'$$,
  $$insert into public.feed_sources (feed_id, actor_did) values ('00000000-0000-4000-8000-00000000f001', 'did:plc:new')$$,
  'actor_did = actor_did', 'aaaa', 'dddd', '----', 'dddd', 'aaaa'),
('feed_rules', $$public.feed_rules where id = '00000000-0000-4000-8000-00000000f201'$$,
  $$insert into public.feed_rules (feed_id, kind, value) values ('00000000-0000-4000-8000-00000000f001', 'exclude', 'go')$$,
  'value = value', 'aaaa', 'dddd', '----', 'dddd', 'aaaa'),
('indexed_posts', $$public.indexed_posts where id = '00000000-0000-4000-8000-00000000f301'$$,
  $$insert into public.indexed_posts (feed_id, uri, cid, author_did, text) values ('00000000-0000-4000-8000-00000000f001', 'at://rls/new', 'bafy', 'did:plc:author', 'x')$$,
  'text = text', '----', '-ddd', '----', '-ddd', 'aaaa'),
('worker_heartbeats', $$public.worker_heartbeats where worker_id = 'rls-fixture-worker'$$,
  $$insert into public.worker_heartbeats (worker_id, detail) values ('rls-new-worker', '{}')$$,
  'detail = detail', '----', '-ddd', '----', 'dddd', 'aaaa'),
('ai_jobs', $$public.ai_jobs where id = '00000000-0000-4000-8000-0000000a0001'$$,
  $$insert into public.ai_jobs (user_id, provider, model, prompt, params) values ('00000000-0000-4000-8000-0000000000a1', 'venice', 'flux', 'a dog', '{}')$$,
  'params = params', '----', 'dddd', '----', 'dddd', 'aaaa'),
('ai_assets', $$public.ai_assets where id = '00000000-0000-4000-8000-0000000a0101'$$,
  $$insert into public.ai_assets (job_id, user_id, bucket, path, mime) values ('00000000-0000-4000-8000-0000000a0001', '00000000-0000-4000-8000-0000000000a1', 'generations', 'x/new.png', 'image/png')$$,
  'mime = mime', '----', 'dddd', '----', 'dddd', 'aaaa'),
('ai_text_runs', $$public.ai_text_runs where id = '00000000-0000-4000-8000-0000000a0201'$$,
  $$insert into public.ai_text_runs (user_id, provider, model) values ('00000000-0000-4000-8000-0000000000a1', 'openai', 'gpt')$$,
  'model = model', '----', 'dddd', '----', 'dddd', 'aaaa'),
-- seed 002
('content_adaptations', $$public.content_adaptations where id = '00000000-0000-4000-8000-0000000b0001'$$,
  $$insert into public.content_adaptations (user_id, original_idea, adaptations) values ('00000000-0000-4000-8000-0000000000a1', 'another idea', '{}')$$,
  'tone = tone', 'aaaa', 'dddd', '----', 'dddd', 'aaaa'),
('voice_profiles (one of two)', $$public.voice_profiles where id = '00000000-0000-4000-8000-0000000b0102'$$,
  $$insert into public.voice_profiles (user_id, name, characteristics) values ('00000000-0000-4000-8000-0000000000a1', 'Third', '{}')$$,
  'name = name', 'aaaa', 'dddd', '----', 'dddd', 'aaaa'),
('published_posts (pending)', $$public.published_posts where id = '00000000-0000-4000-8000-0000000b0201'$$,
  $$insert into public.published_posts (user_id, platform, content) values ('00000000-0000-4000-8000-0000000000a1', 'x', 'new')$$,
  'content = content', 'aaaa', 'dddd', '----', 'dddd', 'aaaa'),
('published_posts (published)', $$public.published_posts where id = '00000000-0000-4000-8000-0000000b0202'$$,
  null, 'content = content', 'a-ad', 'd-dd', '----', 'd-dd', 'a-aa'),
-- seed 003: owner-based by owner_id; prompts readable by authenticated
('jobs', $$public.jobs where run_id = 'rls-run-1'$$,
  $$insert into public.jobs (run_id, project_spec, owner_id) values ('rls-run-new', '{}', '00000000-0000-4000-8000-0000000000a1')$$,
  'status = status', 'a---', 'dddd', '----', 'dddd', 'aaaa'),
('job_events', $$public.job_events where id = '00000000-0000-4000-8000-0000000c0001'$$,
  $$insert into public.job_events (run_id, bot_name, event_type, owner_id) values ('rls-run-1', 'bot', 'x', '00000000-0000-4000-8000-0000000000a1')$$,
  'payload = payload', 'a---', 'dddd', '----', 'dddd', 'aaaa'),
('artifacts', $$public.artifacts where id = '00000000-0000-4000-8000-0000000c0101'$$,
  $$insert into public.artifacts (run_id, kind, owner_id) values ('rls-run-1', 'file', '00000000-0000-4000-8000-0000000000a1')$$,
  'meta = meta', 'a---', 'dddd', '----', 'dddd', 'aaaa'),
('prompts', $$public.prompts where id = 'rls-prompt'$$,
  $$insert into public.prompts (id, category, context, prompt_text) values ('rls-new', 'copy', 'x', 'y')$$,
  'prompt_text = prompt_text', 'addd', 'addd', '----', 'dddd', 'aaaa'),
-- seed 004
-- 0016: cost_usd is the service's; the owner's own columns are e.g. is_favorite
('generations (personal)', $$public.generations where id = '00000000-0000-4000-8000-0000000d0101'$$,
  $$insert into public.generations (user_id, action, model_id, status) values ('00000000-0000-4000-8000-0000000000a1', 'generate', 'flux', 'pending')$$,
  'is_favorite = is_favorite', 'aaaa', 'dddd', 'dddd', 'dddd', 'aaaa'),
('generations (workspace)', $$public.generations where id = '00000000-0000-4000-8000-0000000d0102'$$,
  $$insert into public.generations (user_id, workspace_id, action, model_id, status) values ('00000000-0000-4000-8000-0000000000a1', '00000000-0000-4000-8000-0000000d0001', 'generate', 'flux', 'pending')$$,
  'is_favorite = is_favorite', 'aaaa', 'dddd', 'a---', 'dddd', 'aaaa'),
('replicate_tokens', $$public.replicate_tokens where id = '00000000-0000-4000-8000-0000000d0201'$$,
  $$insert into public.replicate_tokens (token, is_active) values ('r8_new', true)$$,
  'is_active = is_active', 'dddd', 'dddd', 'dddd', 'dddd', 'aaaa'),
('workspaces', $$public.workspaces where id = '00000000-0000-4000-8000-0000000d0001'$$,
  $$insert into public.workspaces (name, slug, created_by) values ('Spoof', 'spoof-rls', '00000000-0000-4000-8000-0000000000a1')$$,
  'name = name', 'a---', 'dddd', 'a---', 'dddd', 'aaaa'),
('workspace_members', $$public.workspace_members where workspace_id = '00000000-0000-4000-8000-0000000d0001' and user_id = '00000000-0000-4000-8000-0000000000a3'$$,
  $$insert into public.workspace_members (workspace_id, user_id, role) values ('00000000-0000-4000-8000-0000000d0001', '00000000-0000-4000-8000-0000000000a2', 'member')$$,
  'role = role', 'a---', 'dddd', 'a---', 'dddd', 'aaaa'),
('workspace_members (member makes self owner)', $$public.workspace_members where workspace_id = '00000000-0000-4000-8000-0000000d0001' and user_id = '00000000-0000-4000-8000-0000000000a3'$$,
  null, $$role = 'owner'$$, '----', '----', '--d-', '----', '----'),
('flows', $$public.flows where id = '00000000-0000-4000-8000-0000000d0301'$$,
  $$insert into public.flows (user_id, name) values (':actor', 'new flow')$$,
  'name = name', 'aaaa', 'd-dd', 'a--d', 'dddd', 'aaaa'),
('flow_nodes', $$public.flow_nodes where id = '00000000-0000-4000-8000-0000000d0401'$$,
  $$insert into public.flow_nodes (flow_id, type, data) values ('00000000-0000-4000-8000-0000000d0301', 'image', '{}')$$,
  'data = data', 'aaaa', 'dddd', 'a---', 'dddd', 'aaaa'),
('flow_edges', $$public.flow_edges where id = '00000000-0000-4000-8000-0000000d0501'$$,
  $$insert into public.flow_edges (flow_id, source, target) values ('00000000-0000-4000-8000-0000000d0301', '00000000-0000-4000-8000-0000000d0402', '00000000-0000-4000-8000-0000000d0401')$$,
  'source = source', 'aaaa', 'dddd', 'a---', 'dddd', 'aaaa'),
('flow_invites', $$public.flow_invites where token = 'rls-invite-token'$$,
  $$insert into public.flow_invites (flow_id, token, created_by) values ('00000000-0000-4000-8000-0000000d0301', 'rls-new-token', ':actor')$$,
  'token = token', 'aa--', 'dddd', '----', 'dddd', 'aaaa'),
('flow_members', $$public.flow_members where flow_id = '00000000-0000-4000-8000-0000000d0301' and user_id = '00000000-0000-4000-8000-0000000000a3'$$,
  $$insert into public.flow_members (flow_id, user_id, role) values ('00000000-0000-4000-8000-0000000d0301', '00000000-0000-4000-8000-0000000000a2', 'editor')$$,
  'role = role', 'a---', 'dddd', 'a---', 'dddd', 'aaaa'),
('flow_comments', $$public.flow_comments where id = '00000000-0000-4000-8000-0000000d0601'$$,
  $$insert into public.flow_comments (flow_id, user_id, content) values ('00000000-0000-4000-8000-0000000d0301', ':actor', 'hello')$$,
  'content = content', 'aaaa', 'dddd', 'aa--', 'dddd', 'aaaa'),
('user_loras', $$public.user_loras where id = '00000000-0000-4000-8000-0000000d0701'$$,
  $$insert into public.user_loras (user_id, name, status) values ('00000000-0000-4000-8000-0000000000a1', 'other face', 'pending')$$,
  'name = name', 'aaaa', 'dddd', '----', 'dddd', 'aaaa'),
('lora_training_images', $$public.lora_training_images where id = '00000000-0000-4000-8000-0000000d0801'$$,
  $$insert into public.lora_training_images (lora_id, user_id, storage_path) values ('00000000-0000-4000-8000-0000000d0701', '00000000-0000-4000-8000-0000000000a1', '00000000-0000-4000-8000-0000000000a1/l/2.png')$$,
  'storage_path = storage_path', 'aa-a', 'dddd', '----', 'dddd', 'aaaa'),
('notifications', $$public.notifications where id = '00000000-0000-4000-8000-0000000d0901'$$,
  $$insert into public.notifications (user_id, type, title) values ('00000000-0000-4000-8000-0000000000a1', 'x', 'spoofed')$$,
  'read = true', 'a-a-', 'dddd', '----', 'dddd', 'aaaa'),
('ideas', $$public.ideas where id = '00000000-0000-4000-8000-0000000d1001'$$,
  $$insert into public.ideas (title, author_id) values ('spoofed idea', '00000000-0000-4000-8000-0000000000a1')$$,
  'title = title', '----', '-ddd', '----', '-ddd', 'aaaa'),
('assistant_conversations', $$public.assistant_conversations where id = '00000000-0000-4000-8000-0000000d1101'$$,
  $$insert into public.assistant_conversations (user_id, title) values ('00000000-0000-4000-8000-0000000000a1', 'new chat')$$,
  'title = title', 'aaaa', 'dddd', '----', 'dddd', 'aaaa'),
('assistant_messages', $$public.assistant_messages where id = '00000000-0000-4000-8000-0000000d1201'$$,
  $$insert into public.assistant_messages (conversation_id, role, content) values ('00000000-0000-4000-8000-0000000d1101', 'user', 'again')$$,
  'content = content', 'aa-a', 'dddd', '----', 'dddd', 'aaaa'),
('api_logs', $$public.api_logs where id = '00000000-0000-4000-8000-0000000d1301'$$,
  $$insert into public.api_logs (method, path, status_code, duration_ms, user_id, provider) values ('GET', '/x', 200, 1, '00000000-0000-4000-8000-0000000000a1', 'replicate')$$,
  'path = path', '----', 'dddd', '----', 'dddd', 'aaaa'),
('support_tickets', $$public.support_tickets where id = '00000000-0000-4000-8000-0000000d1401'$$,
  $$insert into public.support_tickets (user_id, message) values ('00000000-0000-4000-8000-0000000000a1', 'more help')$$,
  'message = message', 'aa--', 'dddd', '----', 'dddd', 'aaaa'),
-- seed 001 storage policy: own folder of bucket media only
('storage.objects (media)', $$storage.objects where bucket_id = 'media' and name = '00000000-0000-4000-8000-0000000000a1/bluesky/p1/a.jpg'$$,
  $$insert into storage.objects (bucket_id, name) values ('media', '00000000-0000-4000-8000-0000000000a1/bluesky/p2/b.jpg')$$,
  'metadata = metadata', 'aaaa', 'dddd', '----', 'dddd', 'aaaa'),
('storage.objects (lora-training-images)', $$storage.objects where bucket_id = 'lora-training-images' and name = '00000000-0000-4000-8000-0000000000a1/l/1.png'$$,
  $$insert into storage.objects (bucket_id, name) values ('lora-training-images', '00000000-0000-4000-8000-0000000000a1/l/2.png')$$,
  'metadata = metadata', 'aa--', 'dddd', '----', 'dddd', 'aaaa'),
-- CONTRACT.md: queue events are written by the queue functions only; the runner's table is private
('queue_events', $$public.queue_events where worker_id = 'rls-worker'$$,
  $$insert into public.queue_events (queue, item_id, event) values ('generations', '00000000-0000-4000-8000-0000000d0101', 'success')$$,
  'detail = detail', '-ddd', 'dddd', '----', 'dddd', 'aaaa'),
('outpost_schema_migrations', $$public.outpost_schema_migrations where version = '9999'$$,
  $$insert into public.outpost_schema_migrations (version, name, checksum) values ('9998', 'x', 'y')$$,
  'name = name', 'dddd', 'dddd', '----', 'dddd', '----'),
-- seed 004: bucket generations is public read, authenticated upload (own folder)
('storage.objects (generations)', $$storage.objects where bucket_id = 'generations' and name = '00000000-0000-4000-8000-0000000000a1/g1.png'$$,
  $$insert into storage.objects (bucket_id, name) values ('generations', '00000000-0000-4000-8000-0000000000a1/g2.png')$$,
  'metadata = metadata', 'aa--', 'addd', '----', 'addd', 'aaaa'),
-- materialized views carry no RLS: all users' rows, so no API user may read them directly
('admin_stats (materialized view)', $$public.admin_stats where true$$,
  null, null, 'd---', 'd---', '----', 'd---', 'a---'),
('public_posts (materialized view)', $$public.public_posts where true$$,
  null, null, '----', 'd---', '----', 'd---', '----'),
-- compatibility views must be security_invoker: RLS of connected_accounts / users / scheduled_posts applies
('profiles (view)', $$public.profiles where id = '00000000-0000-4000-8000-0000000000a1'$$,
  null, null, 'a---', 'd---', '----', 'd---', 'a---'),
('accounts (view)', $$public.accounts where id = '00000000-0000-4000-8000-00000000ca01'$$,
  $$insert into public.accounts (user_id, account_did, handle, label) values ('00000000-0000-4000-8000-0000000000a1', 'did:plc:second', 'second.bsky.social', 'second')$$,
  'label = label', 'adaa', 'dddd', '----', 'dddd', 'aaaa'),
('bsky_accounts (view)', $$public.bsky_accounts where id = '00000000-0000-4000-8000-00000000ca01'$$,
  null, null, 'a---', 'd---', '----', 'd---', 'a---'),
('platform_connections (view)', $$public.platform_connections where id = '00000000-0000-4000-8000-00000000ca03'$$,
  null, 'is_active = is_active', 'a-a-', 'd-d-', '----', 'd-d-', 'a-a-'),
('nexus_scheduled_posts (view)', $$public.nexus_scheduled_posts where id = '00000000-0000-4000-8000-00000000e001'$$,
  null, null, 'a---', 'd---', '----', 'd---', 'a---');

-- the seed-002 owner whose only voice profile must stay (u2 owns exactly one)
insert into rls_spec (label, pred, ins, upd, owner_uid, e_owner, e_other, e_member, e_anon, e_service) values
('voice_profiles (owner''s only profile)', $$public.voice_profiles where id = '00000000-0000-4000-8000-0000000b0103'$$,
  null, null, '00000000-0000-4000-8000-0000000000a2', 'a--d', '----', '----', '----', '----'),
-- a user signing up may not create their own users row (service role only, seed 002)
('users (own row at signup)', $$public.users where id = '00000000-0000-4000-8000-0000000000a4'$$,
  $$insert into public.users (id, email) values ('00000000-0000-4000-8000-0000000000a4', 'newcomer@example.test')$$,
  null, '00000000-0000-4000-8000-0000000000a4', '-d--', '----', '----', '----', '----');

-- ---------------------------------------------------------------- the cases
create temp table rls_cases as
with actors(actor, role, uid, col) as (values
  ('owner', 'authenticated', null::uuid, 'e_owner'),
  ('another user', 'authenticated', '00000000-0000-4000-8000-0000000000a2'::uuid, 'e_other'),
  ('member', 'authenticated', '00000000-0000-4000-8000-0000000000a3'::uuid, 'e_member'),
  ('anon', 'anon', null::uuid, 'e_anon'),
  ('service_role', 'service_role', null::uuid, 'e_service')),
ops(i, op) as (values (1, 'SELECT'), (2, 'INSERT'), (3, 'UPDATE'), (4, 'DELETE'))
select row_number() over (order by s.ord, a.col = 'e_service', a.actor, o.i) as n,
       s.label, a.actor, a.role,
       case when a.actor = 'owner' then s.owner_uid else a.uid end as uid,
       o.op,
       case substr(case a.col when 'e_owner' then s.e_owner when 'e_other' then s.e_other
                              when 'e_member' then s.e_member when 'e_anon' then s.e_anon
                              else s.e_service end, o.i, 1)
            when 'a' then 'allow' when 'd' then 'deny' end as expect,
       case o.op
         when 'SELECT' then 'select count(*) from ' || s.pred
         when 'INSERT' then replace(s.ins, ':actor',
                coalesce(case when a.actor = 'owner' then s.owner_uid else a.uid end,
                         '00000000-0000-4000-8000-0000000000a1')::text)
         when 'UPDATE' then regexp_replace(s.pred, '^(\S+) where ', 'update \1 set ' || coalesce(s.upd, '') || ' where ')
         when 'DELETE' then 'delete from ' || s.pred
       end as sql
  from rls_spec s cross join actors a cross join ops o
 where substr(case a.col when 'e_owner' then s.e_owner when 'e_other' then s.e_other
                         when 'e_member' then s.e_member when 'e_anon' then s.e_anon
                         else s.e_service end, o.i, 1) in ('a', 'd');

-- Run one case as its actor in a subtransaction that is always undone.
-- Returns the row count, or ERR:<sqlstate> <message>.
create function pg_temp.rls_try(p_role text, p_uid uuid, p_op text, p_sql text) returns text
language plpgsql as $$
declare
  v_n bigint;
  v_res text;
begin
  begin
    execute format('set local role %I', p_role);
    perform set_config('request.jwt.claims',
      case when p_uid is null then json_build_object('role', p_role)
           else json_build_object('sub', p_uid, 'role', p_role) end::text, true);
    begin
      if p_op = 'SELECT' then
        execute p_sql into v_n;
      else
        execute p_sql;
        get diagnostics v_n = row_count;
      end if;
      v_res := v_n::text;
    exception when others then
      v_res := 'ERR:' || sqlstate || ' ' || sqlerrm;
    end;
    raise exception using errcode = 'TSTRB', message = coalesce(v_res, 'null');
  exception when sqlstate 'TSTRB' then
    return sqlerrm;
  end;
end
$$;

create function pg_temp.rls_verdict(p_op text, p_expect text, p_res text) returns boolean
language sql immutable as $$
  select case
    when p_expect = 'allow' then p_res ~ '^[1-9][0-9]*$'
    when p_op = 'INSERT' then p_res like 'ERR:42501%'
    else p_res = '0' or p_res like 'ERR:42501%'
  end
$$;

create temp table rls_results as
select c.*, pg_temp.rls_try(c.role, c.uid, c.op, c.sql) as result
  from (select * from rls_cases order by n) c;

select plan((select count(*)::int from rls_results) + 1);

select ok(pg_temp.rls_verdict(op, expect, result),
          format('RLS %s: %s %s -> %s', label, actor, op, expect)
          || case when pg_temp.rls_verdict(op, expect, result) then ''
                  else format(' (got %s; sql: %s)', result, sql) end)
  from (select * from rls_results order by n) r;

select ok((select count(*) from rls_results) >= 200, 'the RLS matrix has at least 200 cases');
select diag(format('RLS cases: %s (%s allow, %s deny) over %s table specs',
                   count(*), count(*) filter (where expect = 'allow'),
                   count(*) filter (where expect = 'deny'), (select count(*) from rls_spec)))
  from rls_results;

select * from finish();
rollback;
