-- 07_tenancy.sql: what a Supabase client may write (issue 12, migration 0016).
--
-- u1 is the attacker (acting as `authenticated` with their own JWT), u2 the
-- victim, u3 a member of u1's workspace and flow, u4 an admin. Every case
-- runs in a subtransaction that is always rolled back.
--
-- 1. References: every foreign key of every client-writable relation (read
--    from pg_constraint, so a new foreign key without a case fails the
--    suite), and the references of the writable views, are inserted and
--    updated to point at u2's row and must be refused (42501). Where the
--    seeds share on purpose (adding a member, voting on an idea) the insert
--    is allowed and the update still refused.
-- 2. Service-owned columns: the INSERT and UPDATE column privileges of each
--    client-writable relation are exactly those of migrations/CONTRACT.md
--    "What a client may write", and every other column is updated by its
--    owner and must be refused.
-- 3. Value rules and the findings one by one (status only to cancelled, no
--    re-queue, max_attempts, users.email without an oracle, tokens not
--    readable, workspace owners, flow takeover, queue_events of deleted
--    items, Vault secret names, sizes and counts, statement_timeout,
--    TRUNCATE).
begin;
set local client_min_messages = warning;
create extension if not exists pgtap;
select * from no_plan();

-- ------------------------------------------------------------------ helpers
-- Fixture ids: 00000000-0000-4000-8000-0007<kind>0000<user><n>.
create temp table kinds(name text primary key, code text);
insert into kinds values
  ('acc', '01'), ('draft', '02'), ('adapt', '03'), ('voice', '04'), ('pub', '05'), ('sp', '06'),
  ('feed', '07'), ('fsrc', '08'), ('frule', '09'), ('lora', '0a'), ('limg', '0b'), ('aijob', '0c'),
  ('asset', '0d'), ('gen', '0e'), ('ws', '0f'), ('flow', '10'), ('node', '11'), ('edge', '12'),
  ('fcom', '13'), ('conv', '14'), ('msg', '15'), ('idea', '16'), ('notif', '17'), ('ticket', '18'),
  ('jev', '19'), ('art', '1a'), ('sec', '1b');

create function pg_temp.id(p_kind text, p_user int, p_n int default 1) returns uuid
language sql stable as $$
  select ('00000000-0000-4000-8000-0007' || (select code from kinds where name = p_kind) || '0000' || p_user || p_n)::uuid
$$;

create function pg_temp.u(p_user int) returns uuid
language sql immutable as $$ select ('00000000-0000-4000-8000-0000000007a' || p_user)::uuid $$;

-- {u2} -> u2's id, {acc:2} -> pg_temp.id('acc', 2), {node:1:2} -> pg_temp.id('node', 1, 2).
create function pg_temp.sub(p_sql text) returns text
language plpgsql stable as $$
declare
  v text := p_sql;
  m text[];
begin
  for i in 1..4 loop
    v := replace(v, '{u' || i || '}', quote_literal(pg_temp.u(i)));
  end loop;
  loop
    m := regexp_match(v, '\{([a-z]+):([0-9])(?::([0-9]))?\}');
    exit when m is null;
    v := replace(v, '{' || m[1] || ':' || m[2] || coalesce(':' || m[3], '') || '}',
                 quote_literal(pg_temp.id(m[1], m[2]::int, coalesce(m[3], '1')::int)));
  end loop;
  return v;
end
$$;

-- Run one statement as an actor in a subtransaction that is always undone.
-- Returns the single value (p_value) or the row count, else ERR:<sqlstate> <message>.
create function pg_temp.try(p_role text, p_uid uuid, p_sql text, p_value boolean default false) returns text
language plpgsql as $$
declare
  v_sql text := pg_temp.sub(p_sql);
  v_n bigint;
  v_val text;
  v_res text;
begin
  begin
    execute format('set local role %I', p_role);
    perform set_config('request.jwt.claims',
      case when p_uid is null then json_build_object('role', p_role)
           else json_build_object('sub', p_uid, 'role', p_role) end::text, true);
    begin
      if p_value then
        execute v_sql into v_val;
        v_res := coalesce(v_val, '<null>');
      else
        execute v_sql;
        get diagnostics v_n = row_count;
        v_res := v_n::text;
      end if;
    exception when others then
      v_res := 'ERR:' || sqlstate || ' ' || sqlerrm;
    end;
    raise exception using errcode = 'TSTRB', message = coalesce(v_res, 'null');
  exception when sqlstate 'TSTRB' then
    return sqlerrm;
  end;
end
$$;

create function pg_temp.as_u(p_user int, p_sql text) returns text
language sql as $$ select pg_temp.try('authenticated', pg_temp.u(p_user), p_sql) $$;
create function pg_temp.val_u(p_user int, p_sql text) returns text
language sql as $$ select pg_temp.try('authenticated', pg_temp.u(p_user), p_sql, true) $$;
create function pg_temp.refused(p_res text) returns boolean
language sql immutable as $$ select p_res like 'ERR:42501%' $$;

-- ------------------------------------------------------------------ fixtures
insert into auth.users (id, email) values
  (pg_temp.u(1), 'attacker@tenancy.test'), (pg_temp.u(2), 'victim@tenancy.test'),
  (pg_temp.u(3), 'member@tenancy.test'), (pg_temp.u(4), 'admin@tenancy.test');
update public.users set role = 'admin' where id = pg_temp.u(4);

do $$
declare
  u int;
begin
  for u in 1..2 loop
    insert into public.connected_accounts (id, user_id, platform, platform_user_id, username, access_token, refresh_token, token_key_id)
    values (pg_temp.id('acc', u), pg_temp.u(u), 'bluesky', 'did:plc:tenancy' || u, 'tenancy' || u || '.bsky.social',
            'sealed-access-' || u, 'sealed-refresh-' || u, 'k1');
    insert into public.account_secret_owners (secret_id, user_id) values (pg_temp.id('sec', u), pg_temp.u(u));
    insert into public.drafts (id, user_id, text) values (pg_temp.id('draft', u), pg_temp.u(u), 'draft ' || u);
    insert into public.voice_profiles (id, user_id, name) values (pg_temp.id('voice', u), pg_temp.u(u), 'voice ' || u);
    insert into public.content_adaptations (id, user_id, original_idea, voice_profile_id)
    values (pg_temp.id('adapt', u), pg_temp.u(u), 'idea ' || u, pg_temp.id('voice', u));
    insert into public.published_posts (id, user_id, platform, status, content)
    values (pg_temp.id('pub', u), pg_temp.u(u), 'x', 'pending', 'pending ' || u);
    insert into public.ai_jobs (id, user_id, prompt) values (pg_temp.id('aijob', u), pg_temp.u(u), 'a cat');
    insert into public.ai_assets (id, job_id, user_id, bucket, path, mime)
    values (pg_temp.id('asset', u), pg_temp.id('aijob', u), pg_temp.u(u), 'generations', pg_temp.u(u) || '/cat.png', 'image/png');
    insert into public.scheduled_posts (id, user_id, draft_id, account_id, account_did, content, run_at)
    values (pg_temp.id('sp', u), pg_temp.u(u), pg_temp.id('draft', u), pg_temp.id('acc', u), 'did:plc:tenancy' || u,
            'queued ' || u, now() + interval '1 hour');
    insert into public.feeds (id, user_id, slug) values (pg_temp.id('feed', u), pg_temp.u(u), 'tenancy');
    insert into public.feed_sources (id, feed_id, actor_did) values (pg_temp.id('fsrc', u), pg_temp.id('feed', u), 'did:plc:author');
    insert into public.feed_rules (id, feed_id, kind, value) values (pg_temp.id('frule', u), pg_temp.id('feed', u), 'include', 'rust');
    insert into public.user_loras (id, user_id, name) values (pg_temp.id('lora', u), pg_temp.u(u), 'face ' || u);
    insert into public.lora_training_images (id, lora_id, user_id, storage_path)
    values (pg_temp.id('limg', u), pg_temp.id('lora', u), pg_temp.u(u), pg_temp.u(u) || '/l/1.png');
    insert into public.workspaces (id, name, slug, created_by)
    values (pg_temp.id('ws', u), 'ws ' || u, 'tenancy-ws-' || u, pg_temp.u(u));
    insert into public.generations (id, user_id, model_id, status)
    values (pg_temp.id('gen', u), pg_temp.u(u), 'flux', 'pending'),
           (pg_temp.id('gen', u, 2), pg_temp.u(u), 'flux', 'succeeded');
    insert into public.flows (id, user_id, name) values (pg_temp.id('flow', u), pg_temp.u(u), 'flow ' || u);
    insert into public.flow_nodes (id, flow_id, type) values
      (pg_temp.id('node', u), pg_temp.id('flow', u), 'prompt'), (pg_temp.id('node', u, 2), pg_temp.id('flow', u), 'image');
    insert into public.flow_edges (id, flow_id, source, target)
    values (pg_temp.id('edge', u), pg_temp.id('flow', u), pg_temp.id('node', u), pg_temp.id('node', u, 2));
    insert into public.flow_comments (id, flow_id, user_id, content, node_id)
    values (pg_temp.id('fcom', u), pg_temp.id('flow', u), pg_temp.u(u), 'comment', pg_temp.id('node', u));
    insert into public.flow_invites (flow_id, token, created_by) values (pg_temp.id('flow', u), 'tenancy-invite-' || u, pg_temp.u(u));
    insert into public.jobs (run_id, project_spec, owner_id) values ('tn-run-' || u, '{}', pg_temp.u(u));
    insert into public.job_events (id, run_id, bot_name, event_type) values (pg_temp.id('jev', u), 'tn-run-' || u, 'bot', 'started');
    insert into public.artifacts (id, run_id, kind) values (pg_temp.id('art', u), 'tn-run-' || u, 'zip');
    insert into public.assistant_conversations (id, user_id, title) values (pg_temp.id('conv', u), pg_temp.u(u), 'chat');
    insert into public.assistant_messages (id, conversation_id, role, content) values (pg_temp.id('msg', u), pg_temp.id('conv', u), 'user', 'hi');
    insert into public.ideas (id, title, author_id) values (pg_temp.id('idea', u), 'idea ' || u, pg_temp.u(u));
    insert into public.notifications (id, user_id, type, title) values (pg_temp.id('notif', u), pg_temp.u(u), 'x', 'done');
    insert into public.support_tickets (id, user_id, message) values (pg_temp.id('ticket', u), pg_temp.u(u), 'help');
  end loop;
end
$$;
-- u3 is a member of u1's workspace and a viewer of u1's flow; u1 has voted on their own idea
insert into public.workspace_members (workspace_id, user_id, role) values (pg_temp.id('ws', 1), pg_temp.u(3), 'member');
insert into public.flow_members (flow_id, user_id, role) values (pg_temp.id('flow', 1), pg_temp.u(3), 'viewer');
insert into public.idea_votes (idea_id, user_id) values (pg_temp.id('idea', 1), pg_temp.u(1));
-- u2's second workspace has u1 as admin; u2's second flow has u1 as editor
insert into public.workspaces (id, name, slug, created_by) values (pg_temp.id('ws', 2, 2), 'shared', 'tenancy-shared', pg_temp.u(2));
insert into public.workspace_members (workspace_id, user_id, role) values (pg_temp.id('ws', 2, 2), pg_temp.u(1), 'admin');
insert into public.flows (id, user_id, name, workspace_id) values (pg_temp.id('flow', 2, 2), pg_temp.u(2), 'shared flow', pg_temp.id('ws', 2));
insert into public.flow_members (flow_id, user_id, role) values (pg_temp.id('flow', 2, 2), pg_temp.u(1), 'editor');
insert into public.published_posts (id, user_id, platform, platform_post_id, status, content)
values (pg_temp.id('pub', 2, 2), pg_temp.u(2), 'bluesky', 'at://did:plc:tenancy2/app.bsky.feed.post/1', 'published', 'out');

-- ================================================================ 1. references
-- One case per (relation, column): the INSERT names u2's row (or, for a
-- parent, puts the row under u2's parent), the UPDATE moves u1's row there.
create temp table fk_spec (rel text, col text, ins text, ins_allowed boolean default false, upd text, why text);
insert into fk_spec (rel, col, ins, upd) values
('users', 'id', $$insert into public.users (id) values ({u3})$$, $$update public.users set id = {u3} where id = {u1}$$),
('connected_accounts', 'user_id',
  $$insert into public.connected_accounts (user_id, platform, platform_user_id, username) values ({u2}, 'strava', 'tn-42', 'x')$$,
  $$update public.connected_accounts set user_id = {u2} where id = {acc:1}$$),
('drafts', 'user_id', $$insert into public.drafts (user_id, text) values ({u2}, 'x')$$,
  $$update public.drafts set user_id = {u2} where id = {draft:1}$$),
('feeds', 'user_id', $$insert into public.feeds (user_id, slug) values ({u2}, 'tn-new')$$,
  $$update public.feeds set user_id = {u2} where id = {feed:1}$$),
('feeds', 'publish_account_id',
  $$insert into public.feeds (user_id, slug, publish_account_id) values ({u1}, 'tn-new', {acc:2})$$,
  $$update public.feeds set publish_account_id = {acc:2} where id = {feed:1}$$),
('feed_sources', 'feed_id', $$insert into public.feed_sources (feed_id, actor_did) values ({feed:2}, 'did:plc:x')$$,
  $$update public.feed_sources set feed_id = {feed:2} where id = {fsrc:1}$$),
('feed_rules', 'feed_id', $$insert into public.feed_rules (feed_id, kind, value) values ({feed:2}, 'include', 'x')$$,
  $$update public.feed_rules set feed_id = {feed:2} where id = {frule:1}$$),
('content_adaptations', 'user_id', $$insert into public.content_adaptations (user_id, original_idea) values ({u2}, 'x')$$,
  $$update public.content_adaptations set user_id = {u2} where id = {adapt:1}$$),
('content_adaptations', 'voice_profile_id',
  $$insert into public.content_adaptations (user_id, original_idea, voice_profile_id) values ({u1}, 'x', {voice:2})$$,
  $$update public.content_adaptations set voice_profile_id = {voice:2} where id = {adapt:1}$$),
('voice_profiles', 'user_id', $$insert into public.voice_profiles (user_id, name) values ({u2}, 'x')$$,
  $$update public.voice_profiles set user_id = {u2} where id = {voice:1}$$),
('published_posts', 'user_id', $$insert into public.published_posts (user_id, platform, content) values ({u2}, 'x', 'x')$$,
  $$update public.published_posts set user_id = {u2} where id = {pub:1}$$),
('published_posts', 'adaptation_id',
  $$insert into public.published_posts (user_id, platform, content, adaptation_id) values ({u1}, 'x', 'x', {adapt:2})$$,
  $$update public.published_posts set adaptation_id = {adapt:2} where id = {pub:1}$$),
('published_posts', 'platform_connection_id',
  $$insert into public.published_posts (user_id, platform, content, platform_connection_id) values ({u1}, 'x', 'x', {acc:2})$$,
  $$update public.published_posts set platform_connection_id = {acc:2} where id = {pub:1}$$),
('scheduled_posts', 'user_id', $$insert into public.scheduled_posts (user_id, content) values ({u2}, 'x')$$,
  $$update public.scheduled_posts set user_id = {u2} where id = {sp:1}$$),
('scheduled_posts', 'account_id',
  $$insert into public.scheduled_posts (user_id, account_id, content) values ({u1}, {acc:2}, 'posted as the victim')$$,
  $$update public.scheduled_posts set account_id = {acc:2} where id = {sp:1}$$),
('scheduled_posts', 'draft_id', $$insert into public.scheduled_posts (user_id, draft_id) values ({u1}, {draft:2})$$,
  $$update public.scheduled_posts set draft_id = {draft:2} where id = {sp:1}$$),
('scheduled_posts', 'adaptation_id',
  $$insert into public.scheduled_posts (user_id, adaptation_id, content) values ({u1}, {adapt:2}, 'x')$$,
  $$update public.scheduled_posts set adaptation_id = {adapt:2} where id = {sp:1}$$),
('scheduled_posts', 'published_post_id',
  $$insert into public.scheduled_posts (user_id, content, published_post_id) values ({u1}, 'x', {pub:2})$$,
  $$update public.scheduled_posts set published_post_id = {pub:2} where id = {sp:1}$$),
('ai_jobs', 'user_id', $$insert into public.ai_jobs (user_id, prompt) values ({u2}, 'x')$$,
  $$update public.ai_jobs set user_id = {u2} where id = {aijob:1}$$),
('jobs', 'owner_id', $$insert into public.jobs (run_id, project_spec, owner_id) values ('tn-run-new', '{}', {u2})$$,
  $$update public.jobs set owner_id = {u2} where run_id = 'tn-run-1'$$),
('job_events', 'owner_id', $$insert into public.job_events (run_id, bot_name, event_type, owner_id) values ('tn-run-1', 'b', 'e', {u2})$$,
  $$update public.job_events set owner_id = {u2} where id = {jev:1}$$),
('job_events', 'run_id', $$insert into public.job_events (run_id, bot_name, event_type, owner_id) values ('tn-run-2', 'b', 'e', {u1})$$,
  $$update public.job_events set run_id = 'tn-run-2' where id = {jev:1}$$),
('artifacts', 'owner_id', $$insert into public.artifacts (run_id, kind, owner_id) values ('tn-run-1', 'f', {u2})$$,
  $$update public.artifacts set owner_id = {u2} where id = {art:1}$$),
('artifacts', 'run_id', $$insert into public.artifacts (run_id, kind, owner_id) values ('tn-run-2', 'f', {u1})$$,
  $$update public.artifacts set run_id = 'tn-run-2' where id = {art:1}$$),
('workspaces', 'created_by', $$insert into public.workspaces (name, slug, created_by) values ('x', 'tenancy-spoof', {u2})$$,
  $$update public.workspaces set created_by = {u2} where id = {ws:1}$$),
('workspace_members', 'workspace_id',
  $$insert into public.workspace_members (workspace_id, user_id, role) values ({ws:2}, {u1}, 'owner')$$,
  $$update public.workspace_members set workspace_id = {ws:2} where workspace_id = {ws:1} and user_id = {u3}$$),
('user_loras', 'user_id', $$insert into public.user_loras (user_id, name) values ({u2}, 'x')$$,
  $$update public.user_loras set user_id = {u2} where id = {lora:1}$$),
('lora_training_images', 'lora_id',
  $$insert into public.lora_training_images (lora_id, user_id, storage_path) values ({lora:2}, {u1}, '00000000-0000-4000-8000-0000000007a1/l/x.png')$$,
  $$update public.lora_training_images set lora_id = {lora:2} where id = {limg:1}$$),
('lora_training_images', 'user_id',
  $$insert into public.lora_training_images (lora_id, user_id, storage_path) values ({lora:1}, {u2}, '00000000-0000-4000-8000-0000000007a1/l/x.png')$$,
  $$update public.lora_training_images set user_id = {u2} where id = {limg:1}$$),
('generations', 'user_id', $$insert into public.generations (user_id, model_id) values ({u2}, 'flux')$$,
  $$update public.generations set user_id = {u2} where id = {gen:1}$$),
('generations', 'workspace_id', $$insert into public.generations (user_id, model_id, workspace_id) values ({u1}, 'flux', {ws:2})$$,
  $$update public.generations set workspace_id = {ws:2} where id = {gen:1}$$),
('generations', 'lora_id', $$insert into public.generations (user_id, model_id, lora_id) values ({u1}, 'flux', {lora:2})$$,
  $$update public.generations set lora_id = {lora:2} where id = {gen:1}$$),
('flows', 'user_id', $$insert into public.flows (user_id, name) values ({u2}, 'x')$$,
  $$update public.flows set user_id = {u2} where id = {flow:1}$$),
('flows', 'workspace_id', $$insert into public.flows (user_id, name, workspace_id) values ({u1}, 'x', {ws:2})$$,
  $$update public.flows set workspace_id = {ws:2} where id = {flow:1}$$),
('flow_members', 'flow_id', $$insert into public.flow_members (flow_id, user_id, role) values ({flow:2}, {u1}, 'editor')$$,
  $$update public.flow_members set flow_id = {flow:2} where flow_id = {flow:1} and user_id = {u3}$$),
('flow_nodes', 'flow_id', $$insert into public.flow_nodes (flow_id, type) values ({flow:2}, 'x')$$,
  $$update public.flow_nodes set flow_id = {flow:2} where id = {node:1}$$),
('flow_edges', 'flow_id', $$insert into public.flow_edges (flow_id, source, target) values ({flow:2}, {node:2}, {node:2:2})$$,
  $$update public.flow_edges set flow_id = {flow:2} where id = {edge:1}$$),
('flow_edges', 'source', $$insert into public.flow_edges (flow_id, source, target) values ({flow:1}, {node:2}, {node:1:2})$$,
  $$update public.flow_edges set source = {node:2} where id = {edge:1}$$),
('flow_edges', 'target', $$insert into public.flow_edges (flow_id, source, target) values ({flow:1}, {node:1}, {node:2})$$,
  $$update public.flow_edges set target = {node:2} where id = {edge:1}$$),
('flow_invites', 'flow_id', $$insert into public.flow_invites (flow_id, created_by) values ({flow:2}, {u1})$$,
  $$update public.flow_invites set flow_id = {flow:2} where flow_id = {flow:1}$$),
('flow_invites', 'created_by', $$insert into public.flow_invites (flow_id, created_by) values ({flow:1}, {u2})$$,
  $$update public.flow_invites set created_by = {u2} where flow_id = {flow:1}$$),
('flow_comments', 'flow_id', $$insert into public.flow_comments (flow_id, user_id, content) values ({flow:2}, {u1}, 'x')$$,
  $$update public.flow_comments set flow_id = {flow:2} where id = {fcom:1}$$),
('flow_comments', 'node_id', $$insert into public.flow_comments (flow_id, user_id, content, node_id) values ({flow:1}, {u1}, 'x', {node:2})$$,
  $$update public.flow_comments set node_id = {node:2} where id = {fcom:1}$$),
('flow_comments', 'user_id', $$insert into public.flow_comments (flow_id, user_id, content) values ({flow:1}, {u2}, 'x')$$,
  $$update public.flow_comments set user_id = {u2} where id = {fcom:1}$$),
('notifications', 'user_id', $$insert into public.notifications (user_id, type, title) values ({u2}, 'x', 'x')$$,
  $$update public.notifications set user_id = {u2} where id = {notif:1}$$),
('ideas', 'author_id', $$insert into public.ideas (title, author_id) values ('x', {u2})$$,
  $$update public.ideas set author_id = {u2} where id = {idea:1}$$),
('idea_votes', 'user_id', $$insert into public.idea_votes (idea_id, user_id) values ({idea:2}, {u2})$$,
  $$update public.idea_votes set user_id = {u2} where idea_id = {idea:1} and user_id = {u1}$$),
('assistant_conversations', 'user_id', $$insert into public.assistant_conversations (user_id, title) values ({u2}, 'x')$$,
  $$update public.assistant_conversations set user_id = {u2} where id = {conv:1}$$),
('assistant_messages', 'conversation_id',
  $$insert into public.assistant_messages (conversation_id, role, content) values ({conv:2}, 'user', 'x')$$,
  $$update public.assistant_messages set conversation_id = {conv:2} where id = {msg:1}$$),
('support_tickets', 'user_id', $$insert into public.support_tickets (user_id, message) values ({u2}, 'x')$$,
  $$update public.support_tickets set user_id = {u2} where id = {ticket:1}$$),
-- the writable views (not in pg_constraint)
('nexus_scheduled_posts', 'user_id', $$insert into public.nexus_scheduled_posts (user_id, content) values ({u2}, 'x')$$,
  $$update public.nexus_scheduled_posts set user_id = {u2} where id = {sp:1}$$),
('nexus_scheduled_posts', 'platform_connection_id',
  $$insert into public.nexus_scheduled_posts (user_id, content, platform_connection_id) values ({u1}, 'x', {acc:2})$$,
  $$update public.nexus_scheduled_posts set platform_connection_id = {acc:2} where id = {sp:1}$$),
('nexus_scheduled_posts', 'adaptation_id',
  $$insert into public.nexus_scheduled_posts (user_id, content, adaptation_id) values ({u1}, 'x', {adapt:2})$$,
  $$update public.nexus_scheduled_posts set adaptation_id = {adapt:2} where id = {sp:1}$$),
('nexus_scheduled_posts', 'published_post_id',
  $$insert into public.nexus_scheduled_posts (user_id, content, published_post_id) values ({u1}, 'x', {pub:2})$$,
  $$update public.nexus_scheduled_posts set published_post_id = {pub:2} where id = {sp:1}$$),
('accounts', 'user_id', $$insert into public.accounts (user_id, account_did) values ({u2}, 'did:plc:x')$$,
  $$update public.accounts set user_id = {u2} where id = {acc:1}$$),
('accounts', 'vault_secret_id', $$insert into public.accounts (user_id, account_did, vault_secret_id) values ({u1}, 'did:plc:x', {sec:2})$$,
  $$update public.accounts set vault_secret_id = {sec:2} where id = {acc:1}$$),
('connected_accounts', 'vault_secret_id', null,
  $$update public.connected_accounts set vault_secret_id = {sec:2} where id = {acc:1}$$),
('bsky_accounts', 'vault_secret_id', null, $$update public.bsky_accounts set vault_secret_id = {sec:2} where id = {acc:1}$$),
('platform_connections', 'user_id', null, $$update public.platform_connections set user_id = {u2} where id = {acc:1}$$),
('profiles', 'id', null, $$update public.profiles set id = {u3} where id = {u1}$$);

-- Shared on purpose by the seeds: the insert is allowed, moving the row is not.
insert into fk_spec (rel, col, ins, ins_allowed, upd, why) values
('workspace_members', 'user_id', $$insert into public.workspace_members (workspace_id, user_id, role) values ({ws:1}, {u2}, 'member')$$, true,
  $$update public.workspace_members set user_id = {u2} where workspace_id = {ws:1} and user_id = {u3}$$,
  'an owner adds any user to their own workspace (seed 004)'),
('flow_members', 'user_id', $$insert into public.flow_members (flow_id, user_id, role) values ({flow:1}, {u2}, 'viewer')$$, true,
  $$update public.flow_members set user_id = {u2} where flow_id = {flow:1} and user_id = {u3}$$,
  'a flow owner adds any user to their own flow (seed 004)'),
('idea_votes', 'idea_id', $$insert into public.idea_votes (idea_id, user_id) values ({idea:2}, {u1})$$, true,
  $$update public.idea_votes set idea_id = {idea:2} where idea_id = {idea:1} and user_id = {u1}$$,
  'a user votes on anyone''s idea, as themselves (seed 004)');

-- Client-writable relations: a policy lets authenticated write and some column is granted.
create temp table writable_rels as
select c.oid::regclass::text as rel, c.oid
  from pg_class c join pg_namespace n on n.oid = c.relnamespace
 where n.nspname = 'public' and c.relkind in ('r', 'p')
   and exists (select 1 from pg_policy p where p.polrelid = c.oid and p.polcmd in ('a', 'w', '*')
                  and p.polpermissive
                  and (p.polroles @> array[(select oid from pg_roles where rolname = 'authenticated')] or p.polroles = '{0}'))
   and (has_any_column_privilege('authenticated', c.oid, 'INSERT') or has_any_column_privilege('authenticated', c.oid, 'UPDATE'));

select is_empty($$
  select format('%s.%s', replace(con.conrelid::regclass::text, 'public.', ''), a.attname)
    from pg_constraint con
    join writable_rels w on w.oid = con.conrelid
    join pg_attribute a on a.attrelid = con.conrelid and a.attnum = any (con.conkey)
   where con.contype = 'f'
     and not exists (select 1 from fk_spec s where s.rel = replace(con.conrelid::regclass::text, 'public.', '') and s.col = a.attname)
   order by 1 $$,
  'every foreign key of every client-writable table has a tenancy case in fk_spec');

select ok(case when s.ins_allowed then r.res = '1' else pg_temp.refused(r.res) end,
          format('reference %s.%s: inserting it pointed at another user''s row is %s',
                 s.rel, s.col, case when s.ins_allowed then 'allowed (' || s.why || ')' else 'refused' end)
          || case when case when s.ins_allowed then r.res = '1' else pg_temp.refused(r.res) end then ''
                  else format(' (got %s)', r.res) end)
  from fk_spec s cross join lateral (select pg_temp.as_u(1, s.ins) as res) r
 where s.ins is not null
 order by s.rel, s.col;

select ok(pg_temp.refused(r.res),
          format('reference %s.%s: updating it to another user''s row is refused', s.rel, s.col)
          || case when pg_temp.refused(r.res) then '' else format(' (got %s)', r.res) end)
  from fk_spec s cross join lateral (select pg_temp.as_u(1, s.upd) as res) r
 order by s.rel, s.col;

-- The same updates on u1's own rows stay possible where the column is the client's
-- (the refusals above are about the target, not the column).
select is(pg_temp.as_u(1, $$update public.scheduled_posts set account_id = {acc:1}, draft_id = {draft:1}, adaptation_id = {adapt:1} where id = {sp:1}$$),
          '1', 'a scheduled post may point at the user''s own account, draft and adaptation');
select is(pg_temp.as_u(1, $$update public.flow_edges set source = {node:1:2}, target = {node:1} where id = {edge:1}$$),
          '1', 'an edge may join two nodes of its own flow');
select is(pg_temp.as_u(1, $$update public.generations set workspace_id = {ws:1} where id = {gen:1}$$),
          '1', 'a generation may move into a workspace its user belongs to');
select is(pg_temp.as_u(1, $$update public.content_adaptations set voice_profile_id = {voice:1} where id = {adapt:1}$$),
          '1', 'an adaptation may use the user''s own voice profile');

-- ================================================================ 2. columns
-- What a client may write (migrations/CONTRACT.md "What a client may write").
create temp table client_cols (rel text primary key, pred text, ins text[], upd text[]);
insert into client_cols values
('users', 'id = {u1}', '{}', '{display_name,full_name,avatar_url,timezone,telegram_username}'),
('profiles', 'id = {u1}', '{}', '{display_name,full_name,avatar_url,timezone}'),
('connected_accounts', 'id = {acc:1}', '{}', '{label,is_active,sync_enabled,vault_secret_id}'),
('accounts', 'id = {acc:1}', '{}', '{label,is_active,vault_secret_id}'),
('bsky_accounts', 'id = {acc:1}', '{}', '{label,is_active,vault_secret_id}'),
('platform_connections', 'id = {acc:1}', '{}', '{is_active}'),
('drafts', 'id = {draft:1}', '{user_id,text}', '{text}'),
('scheduled_posts', 'id = {sp:1}',
  '{user_id,draft_id,account_id,account_did,run_at,status,adaptation_id,content,platform,timezone,media,langs,embed}',
  '{draft_id,account_id,account_did,run_at,status,adaptation_id,content,platform,timezone,media,langs,embed}'),
('nexus_scheduled_posts', 'id = {sp:1}',
  '{user_id,adaptation_id,content,platform_connection_id,platform,status,scheduled_for,timezone}',
  '{adaptation_id,content,platform_connection_id,platform,status,scheduled_for,timezone}'),
('feeds', 'id = {feed:1}', '{user_id,slug,title,display_name,description,is_enabled,publish_account_id}',
  '{slug,title,display_name,description,is_enabled,publish_account_id}'),
('feed_sources', 'id = {fsrc:1}', '{feed_id,actor_did}', '{actor_did}'),
('feed_rules', 'id = {frule:1}', '{feed_id,kind,value,lang}', '{kind,value,lang}'),
('ai_jobs', 'id = {aijob:1}', '{user_id,kind,provider,model,prompt,params,status}', '{}'),
('content_adaptations', 'id = {adapt:1}',
  '{user_id,original_idea,idea_hash,adaptations,tone,target_audience,voice_profile_id,last_used_at}',
  '{original_idea,idea_hash,adaptations,tone,target_audience,voice_profile_id,last_used_at}'),
('voice_profiles', 'id = {voice:1}', '{user_id,name,is_default,characteristics,sample_posts,last_used_at}',
  '{name,is_default,characteristics,sample_posts,last_used_at}'),
('published_posts', 'id = {pub:1}', '{user_id,adaptation_id,platform_connection_id,platform,content,status,scheduled_for}',
  '{adaptation_id,platform_connection_id,content,status,scheduled_for}'),
('jobs', $$run_id = 'tn-run-1'$$, '{run_id,project_spec,owner_id,status,started_at,completed_at,error_message}',
  '{project_spec,status,started_at,completed_at,error_message}'),
('job_events', 'id = {jev:1}', '{run_id,bot_name,event_type,payload,owner_id}', '{}'),
('artifacts', 'id = {art:1}', '{run_id,kind,url,meta,owner_id,file_size,content_type,checksum}',
  '{kind,url,meta,file_size,content_type,checksum}'),
('workspaces', 'id = {ws:1}', '{name,slug,created_by}', '{name,slug}'),
('workspace_members', 'workspace_id = {ws:1} and user_id = {u3}', '{workspace_id,user_id,role}', '{role}'),
('user_loras', 'id = {lora:1}', '{user_id,name,trigger_word,storage_path,training_params,status}',
  '{name,trigger_word,storage_path,training_params,status}'),
('lora_training_images', 'id = {limg:1}', '{lora_id,user_id,storage_path,caption}', '{}'),
('generations', 'id = {gen:1}',
  '{user_id,workspace_id,lora_id,action,model_id,prompt,input,input_video_url,is_favorite,is_keyframe_segment,status}',
  '{workspace_id,is_favorite,status}'),
('flows', 'id = {flow:1}', '{user_id,workspace_id,name,description,nodes,edges,viewport_x,viewport_y,viewport_zoom,thumbnail_url}',
  '{workspace_id,name,description,nodes,edges,viewport_x,viewport_y,viewport_zoom,thumbnail_url}'),
('flow_members', 'flow_id = {flow:1} and user_id = {u3}', '{flow_id,user_id,role}', '{role}'),
('flow_nodes', 'id = {node:1}', '{flow_id,client_id,type,data,position_x,position_y,width,height}',
  '{client_id,type,data,position_x,position_y,width,height}'),
('flow_edges', 'id = {edge:1}', '{flow_id,source,target,source_handle,target_handle,type,data}',
  '{source,target,source_handle,target_handle,type,data}'),
('flow_invites', 'flow_id = {flow:1}', '{flow_id,token,role,created_by,expires_at,max_uses}', '{}'),
('flow_comments', 'id = {fcom:1}', '{flow_id,user_id,node_id,content,position_x,position_y,resolved}',
  '{node_id,content,position_x,position_y,resolved}'),
('notifications', 'id = {notif:1}', '{}', '{read}'),
('ideas', 'id = {idea:1}', '{title,description,author_id}', '{title,description,status}'),
('idea_votes', 'idea_id = {idea:1} and user_id = {u1}', '{idea_id,user_id}', '{}'),
('assistant_conversations', 'id = {conv:1}', '{user_id,title,preview_text}', '{title,preview_text}'),
('assistant_messages', 'id = {msg:1}', '{conversation_id,role,content,images}', '{}'),
('support_tickets', 'id = {ticket:1}', '{user_id,email,subject,message}', '{status,admin_notes}');

create temp table rel_cols as
select cc.rel, a.attname::text as col, a.attnum, cc.pred, cc.ins, cc.upd
  from client_cols cc
  join pg_attribute a on a.attrelid = ('public.' || cc.rel)::regclass and a.attnum > 0 and not a.attisdropped;

select is_empty($$ select w.rel from writable_rels w
                    where not exists (select 1 from client_cols c where c.rel = replace(w.rel, 'public.', '')) $$,
                'every table a client may write is listed in "What a client may write"');

select is(coalesce((select array_agg(col order by col) from rel_cols r
                     where r.rel = c.rel and has_column_privilege('authenticated', 'public.' || r.rel, r.col, 'INSERT')), '{}'),
          coalesce((select array_agg(x order by x) from unnest(c.ins) x), '{}'),
          format('%s: the columns a client may insert', c.rel))
  from client_cols c order by c.rel;
select is(coalesce((select array_agg(col order by col) from rel_cols r
                     where r.rel = c.rel and has_column_privilege('authenticated', 'public.' || r.rel, r.col, 'UPDATE')), '{}'),
          coalesce((select array_agg(x order by x) from unnest(c.upd) x), '{}'),
          format('%s: the columns a client may update', c.rel))
  from client_cols c order by c.rel;
select is_empty($$ select c.rel from client_cols c
                    where has_any_column_privilege('anon', 'public.' || c.rel, 'INSERT')
                       or has_any_column_privilege('anon', 'public.' || c.rel, 'UPDATE') $$,
                'anon may insert or update nothing');

-- Every column outside the update list, updated by its owner to itself: refused.
select ok(r.res like 'ERR:42501%' or r.res like 'ERR:0A000%',
          format('%s.%s is not writable by its owner', c.rel, c.col)
          || case when r.res like 'ERR:42501%' or r.res like 'ERR:0A000%' then '' else format(' (got %s)', r.res) end)
  from rel_cols c
  cross join lateral (select pg_temp.as_u(1, format('update public.%I set %I = %I where %s', c.rel, c.col, c.col, c.pred)) as res) r
 where not (c.col = any (c.upd))
 order by c.rel, c.attnum;

-- ================================================================ 3. the findings and value rules
-- queue and result state
select ok(pg_temp.refused(pg_temp.as_u(1, $$update public.generations set status = 'pending' where id = {gen:1:2}$$)),
          'a finished generation cannot be re-queued by its owner');
select ok(pg_temp.refused(pg_temp.as_u(1, $$update public.generations set status = 'succeeded' where id = {gen:1}$$)),
          'an owner cannot mark their generation succeeded');
select is(pg_temp.as_u(1, $$update public.generations set status = 'canceled' where id = {gen:1}$$), '1',
          'an owner may cancel an unfinished generation');
select ok(pg_temp.refused(pg_temp.as_u(1, $$insert into public.generations (user_id, model_id, status) values ({u1}, 'flux', 'processing')$$)),
          'a generation cannot be inserted already processing');
select ok(pg_temp.refused(pg_temp.as_u(1, $$insert into public.generations (user_id, model_id, max_attempts) values ({u1}, 'flux', 1000000)$$)),
          'a generation cannot be inserted with its own max_attempts');
select ok(pg_temp.refused(pg_temp.as_u(1, $$insert into public.generations (user_id, model_id, replicate_prediction_id) values ({u1}, 'flux', 'victim-prediction')$$)),
          'a generation cannot be inserted with a replicate_prediction_id');
select ok(pg_temp.refused(pg_temp.as_u(1, $$update public.generations set replicate_prediction_id = 'victim-prediction' where id = {gen:1}$$)),
          'an owner cannot copy another prediction id onto their generation');
select is(pg_temp.as_u(1, $$insert into public.generations (user_id, model_id, prompt) values ({u1}, 'flux', 'a dog')$$), '1',
          'an owner may still queue a generation with the client''s columns');
select ok(pg_temp.refused(pg_temp.as_u(1, $$insert into public.ai_jobs (user_id, prompt, max_attempts) values ({u1}, 'x', 1000000)$$)),
          'an AI job cannot be inserted with its own max_attempts');
select ok(pg_temp.refused(pg_temp.as_u(1, $$insert into public.ai_jobs (user_id, prompt, status) values ({u1}, 'x', 'running')$$)),
          'an AI job cannot be inserted running');
select ok(pg_temp.refused(pg_temp.as_u(1, $$insert into public.scheduled_posts (user_id, content, status) values ({u1}, 'x', 'posting')$$)),
          'a scheduled post cannot be inserted posting');
select ok(pg_temp.refused(pg_temp.as_u(1, $$insert into public.scheduled_posts (user_id, content, attempt_count, max_attempts) values ({u1}, 'x', 0, 1000000)$$)),
          'a scheduled post cannot be inserted with attempt counters');
select ok(pg_temp.as_u(1, $$update public.scheduled_posts set status = 'posted' where id = {sp:1}$$) in ('0')
          or pg_temp.refused(pg_temp.as_u(1, $$update public.scheduled_posts set status = 'posted' where id = {sp:1}$$)),
          'an owner cannot mark their scheduled post posted');
select is(pg_temp.as_u(1, $$update public.scheduled_posts set status = 'cancelled' where id = {sp:1}$$), '1',
          'an owner may cancel a queued post');
select is(pg_temp.as_u(1, $$update public.nexus_scheduled_posts set status = 'cancelled' where id = {sp:1}$$), '1',
          'an owner may cancel a queued post through nexus_scheduled_posts');
select is(pg_temp.as_u(1, $$insert into public.nexus_scheduled_posts (user_id, content, platform_connection_id, scheduled_for) values ({u1}, 'hi', {acc:1}, now() + interval '1 day')$$), '1',
          'an owner may schedule a seed-002 post on their own connection');
select ok(pg_temp.refused(pg_temp.as_u(1, $$insert into public.nexus_scheduled_posts (user_id, content, retry_count) values ({u1}, 'x', 99)$$)),
          'nexus_scheduled_posts.retry_count is not the client''s');
select ok(pg_temp.refused(pg_temp.as_u(1, $$insert into public.user_loras (user_id, name, status) values ({u1}, 'x', 'succeeded')$$)),
          'a LoRA cannot be inserted trained');
select ok(pg_temp.refused(pg_temp.as_u(1, $$update public.user_loras set status = 'training' where id = {lora:1}$$)),
          'an owner cannot start training by status');
select is(pg_temp.as_u(1, $$update public.user_loras set status = 'canceled' where id = {lora:1}$$), '1',
          'an owner may cancel their LoRA');

-- media a scheduled post names
select ok(pg_temp.refused(pg_temp.as_u(1, $$insert into public.scheduled_posts (user_id, content, media) values ({u1}, 'x', '[{"bucket": "media", "path": "00000000-0000-4000-8000-0000000007a2/bluesky/p/a.jpg"}]')$$)),
          'a scheduled post cannot attach a file from another user''s folder');
select ok(pg_temp.refused(pg_temp.as_u(1, $$insert into public.scheduled_posts (user_id, content, media) values ({u1}, 'x', '[{"bucket": "media", "path": "00000000-0000-4000-8000-0000000007a1/../00000000-0000-4000-8000-0000000007a2/a.jpg"}]')$$)),
          'a scheduled post cannot climb out of the user''s folder');
select ok(pg_temp.refused(pg_temp.as_u(1, format($$insert into public.scheduled_posts (user_id, content, media) values ({u1}, 'x', %L)$$,
            jsonb_build_array(jsonb_build_object('ai_asset_id', pg_temp.id('asset', 2)))::text))),
          'a scheduled post cannot attach another user''s AI asset');
select is(pg_temp.as_u(1, format($$insert into public.scheduled_posts (user_id, content, media) values ({u1}, 'x', %L)$$,
            jsonb_build_array(jsonb_build_object('ai_asset_id', pg_temp.id('asset', 1)),
                              jsonb_build_object('bucket', 'media', 'path', pg_temp.u(1) || '/bluesky/p/a.jpg'))::text)),
          '1', 'a scheduled post may attach the user''s own AI asset and files');

-- ideas: votes follow idea_votes, status is for admins
select ok(pg_temp.refused(pg_temp.as_u(1, $$update public.ideas set votes = 1000 where id = {idea:1}$$)),
          'an author cannot set their idea''s votes');
select ok(pg_temp.refused(pg_temp.as_u(1, $$update public.ideas set status = 'done' where id = {idea:1}$$)),
          'an author cannot set their idea''s status');
select is(pg_temp.as_u(1, $$update public.ideas set title = 'better title' where id = {idea:1}$$), '1',
          'an author may edit their idea');
select is(pg_temp.as_u(4, $$update public.ideas set status = 'planned' where id = {idea:1}$$), '1',
          'an admin may set an idea''s status');
select is(pg_temp.as_u(1, $$insert into public.idea_votes (idea_id, user_id) values ({idea:2}, {u1})$$), '1',
          'a user may vote on another user''s idea');

-- users.email comes from auth.users only, and refusing it reveals nothing
select ok(pg_temp.refused(pg_temp.as_u(1, $$update public.users set email = 'victim@tenancy.test' where id = {u1}$$)),
          'a user cannot take another user''s email');
select is(pg_temp.as_u(1, $$update public.users set email = 'victim@tenancy.test' where id = {u1}$$),
          pg_temp.as_u(1, $$update public.users set email = 'nobody-has-this@tenancy.test' where id = {u1}$$),
          'the refusal is the same for a taken and a free address (no oracle)');
select is(pg_temp.as_u(1, $$update public.users set display_name = 'Attacker' where id = {u1}$$), '1',
          'a user may still edit their profile');
select ok(pg_temp.refused(pg_temp.as_u(1, $$update public.profiles set email = 'victim@tenancy.test' where id = {u1}$$)),
          'nor through profiles');

-- platform identity and tokens
select ok(pg_temp.refused(pg_temp.val_u(1, $$select access_token from public.connected_accounts where id = {acc:1}$$)),
          'an owner cannot read their access token ciphertext');
select ok(pg_temp.refused(pg_temp.val_u(1, $$select refresh_token from public.connected_accounts where id = {acc:1}$$)),
          'an owner cannot read their refresh token ciphertext');
select ok(pg_temp.refused(pg_temp.val_u(1, $$select count(*) from public.connected_accounts where access_token is not null$$)),
          'nor probe it in a filter');
select is(pg_temp.val_u(1, $$select count(*) from public.platform_connections where id = {acc:1} and access_token is null and refresh_token is null$$),
          '1', 'platform_connections shows no tokens');
select is(pg_temp.val_u(1, $$select label is null and handle is not null and platform_user_id = 'did:plc:tenancy1' from public.connected_accounts where id = {acc:1}$$),
          'true', 'an owner still reads the rest of their account');
select ok(pg_temp.refused(pg_temp.as_u(1, $$update public.connected_accounts set access_token = 'planted' where id = {acc:1}$$)),
          'an owner cannot overwrite their token ciphertext');
select ok(pg_temp.refused(pg_temp.as_u(1, $$insert into public.connected_accounts (user_id, platform, platform_user_id, username) values ({u1}, 'strava', 'victims-athlete-id', 'x')$$)),
          'a user cannot claim a platform identity (the service connects accounts)');
select ok(pg_temp.refused(pg_temp.as_u(1, $$insert into public.accounts (user_id, account_did, handle) values ({u1}, 'did:plc:tenancy2', 'victim')$$)),
          'nor a Bluesky DID through accounts');
select ok(pg_temp.refused(pg_temp.as_u(1, $$update public.accounts set account_did = 'did:plc:tenancy2' where id = {acc:1}$$)),
          'nor re-point an account at another DID');
select ok(pg_temp.refused(pg_temp.as_u(1, $$update public.connected_accounts set next_sync_at = now() where id = {acc:1}$$)),
          'nor schedule its sync');
select is(pg_temp.as_u(1, $$update public.connected_accounts set label = 'main', is_active = false where id = {acc:1}$$), '1',
          'an owner may label and pause their account');

-- published posts and feeds: the publisher's columns
select ok(pg_temp.refused(pg_temp.as_u(1, $$insert into public.published_posts (user_id, platform, platform_post_id, content) values ({u1}, 'bluesky', 'at://did:plc:tenancy2/app.bsky.feed.post/next', 'squat')$$)),
          'a user cannot pre-insert the published_posts row another user''s publish will upsert into');
select ok(pg_temp.refused(pg_temp.as_u(1, $$insert into public.published_posts (user_id, platform, content, status) values ({u1}, 'x', 'x', 'published')$$)),
          'a user cannot record a post as published');
select ok(pg_temp.refused(pg_temp.as_u(1, $$update public.published_posts set status = 'published' where id = {pub:1}$$)),
          'nor mark one published');
select is(pg_temp.as_u(1, $$update public.published_posts set content = 'edited' where id = {pub:1}$$), '1',
          'a user may edit a pending post');
select ok(pg_temp.refused(pg_temp.as_u(1, $$insert into public.feeds (user_id, slug, published_uri, publisher_did, published_rkey) values ({u1}, 'squat', 'at://did:plc:tenancy2/app.bsky.feed.generator/next', 'did:plc:tenancy2', 'next')$$)),
          'a user cannot squat another user''s feed URI');

-- workspaces and flows
select ok(pg_temp.as_u(1, $$update public.workspace_members set role = 'member' where workspace_id = {ws:2:2} and user_id = {u2}$$) = '0'
          or pg_temp.refused(pg_temp.as_u(1, $$update public.workspace_members set role = 'member' where workspace_id = {ws:2:2} and user_id = {u2}$$)),
          'a workspace admin cannot demote the owner');
select ok(pg_temp.as_u(1, $$delete from public.workspace_members where workspace_id = {ws:2:2} and user_id = {u2}$$) = '0'
          or pg_temp.refused(pg_temp.as_u(1, $$delete from public.workspace_members where workspace_id = {ws:2:2} and user_id = {u2}$$)),
          'a workspace admin cannot remove the owner');
select ok(pg_temp.refused(pg_temp.as_u(1, $$update public.workspace_members set role = 'owner' where workspace_id = {ws:2:2} and user_id = {u1}$$)),
          'a workspace admin cannot make themselves owner');
select is(pg_temp.as_u(2, $$update public.workspace_members set role = 'member' where workspace_id = {ws:2:2} and user_id = {u1}$$), '1',
          'the owner may demote an admin');
select ok(pg_temp.refused(pg_temp.as_u(2, $$update public.workspace_members set role = 'member' where workspace_id = {ws:2:2} and user_id = {u2}$$)),
          'the last owner cannot step down (a workspace keeps an owner)');
select is(pg_temp.as_u(2, $$delete from public.workspaces where id = {ws:2:2}$$), '1',
          'the owner may still delete the whole workspace');
select ok(pg_temp.refused(pg_temp.as_u(1, $$update public.flows set user_id = {u1} where id = {flow:2:2}$$)),
          'a flow editor cannot take the flow');
select is(pg_temp.as_u(1, $$update public.flows set name = 'renamed' where id = {flow:2:2}$$), '1',
          'a flow editor may still edit it (in a workspace the editor is not a member of)');

-- queue_events go with their item
insert into public.queue_events (queue, item_id, event, worker_id, detail)
values ('generations', pg_temp.id('gen', 2), 'failure', 'tn-worker', '{"error": "victim prompt leaked"}');
select is(pg_temp.as_u(2, $$delete from public.generations where id = {gen:2}$$), '1', 'the victim deletes a generation');
delete from public.generations where id = pg_temp.id('gen', 2);
select is((select count(*) from public.queue_events where item_id = pg_temp.id('gen', 2)), 0::bigint,
          'its queue events are deleted with it');
insert into public.generations (id, user_id, model_id) values (pg_temp.id('gen', 2), pg_temp.u(1), 'flux');
select is(pg_temp.val_u(1, $$select count(*) from public.queue_events where item_id = {gen:2}$$), '0',
          'a row that re-uses the id sees none of them');

-- Vault secrets: size, count, names
select ok(pg_temp.val_u(1, $$select public.create_account_secret(repeat('x', 65537), 'too-big')$$) like 'ERR:22001%',
          'a secret over 64 KiB is refused');
select ok(pg_temp.val_u(1, $$select public.create_account_secret(repeat('x', 65536), 'just-fits')$$) ~ '^[0-9a-f-]{36}$',
          'a 64 KiB secret is accepted');
set local role authenticated;
set local request.jwt.claims = '{"sub":"00000000-0000-4000-8000-0000000007a2","role":"authenticated"}';
select public.create_account_secret('victim-pw', 'bsky-main') is not null as victim_named_a_secret;
reset role;
select set_config('request.jwt.claims', '', true);
select ok(pg_temp.val_u(1, $$select public.create_account_secret('attacker-pw', 'bsky-main')$$) ~ '^[0-9a-f-]{36}$',
          'another user may use the same secret name (names are per user: no squatting, no probing)');
select ok(pg_temp.val_u(1, $$select public.create_account_secret('x', 'same')::text || public.create_account_secret('y', 'same')::text$$) like 'ERR:23505%',
          'a user''s own names stay unique');
insert into public.account_secret_owners (secret_id, user_id)
select gen_random_uuid(), pg_temp.u(3) from generate_series(1, 50);
select ok(pg_temp.val_u(3, $$select public.create_account_secret('one too many', null)$$) like 'ERR:54000%',
          'a user holds at most 50 secrets');
select ok(pg_temp.refused(pg_temp.val_u(1, $$select count(*) from vault.secrets$$)), 'users cannot list secret names');

-- statement_timeout (plain-Postgres stand-ins), TRUNCATE, max_attempts
select ok(exists (select 1 from pg_db_role_setting s join pg_roles r on r.oid = s.setrole
                   where r.rolname = 'anon' and 'statement_timeout=3s' = any (s.setconfig)),
          'anon has a 3 s statement_timeout');
select ok(exists (select 1 from pg_db_role_setting s join pg_roles r on r.oid = s.setrole
                   where r.rolname = 'authenticated' and 'statement_timeout=8s' = any (s.setconfig)),
          'authenticated has an 8 s statement_timeout');
select ok(pg_temp.refused(pg_temp.as_u(1, 'truncate public.notifications')), 'authenticated cannot TRUNCATE (it bypasses RLS)');
select ok(pg_temp.refused(pg_temp.try('anon', null, 'truncate public.users')), 'anon cannot TRUNCATE');
select is_empty($$ select c.oid::regclass::text from pg_class c join pg_namespace n on n.oid = c.relnamespace
                    where n.nspname in ('public', 'storage') and c.relkind in ('r', 'p')
                      and (has_table_privilege('anon', c.oid, 'TRUNCATE') or has_table_privilege('authenticated', c.oid, 'TRUNCATE')) $$,
                'no API role may TRUNCATE any table');
select ok(pg_temp.try('service_role', null, $$insert into public.generations (user_id, model_id, max_attempts) values ({u1}, 'flux', 11)$$) like 'ERR:23514%',
          'max_attempts is at most 10, even for the service');
select is(pg_temp.try('service_role', null, $$insert into public.scheduled_posts (user_id, content, max_attempts) values ({u1}, 'x', 10)$$), '1',
          'max_attempts 10 is fine');

select * from finish();
rollback;
