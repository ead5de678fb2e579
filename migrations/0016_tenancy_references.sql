-- 0016: what a Supabase client may write (issue 12, the client side).
--
-- Row-level security checked the owner column of each row, but not what the
-- row points at, and let users write columns the workers trust. This file:
--
-- * Privileges. INSERT, UPDATE, TRUNCATE, REFERENCES and TRIGGER are revoked
--   from anon and authenticated on every table and view in public (TRUNCATE
--   bypasses row-level security: any signed-in user could empty any table),
--   and INSERT / UPDATE are granted back to authenticated column by column,
--   only where a policy lets users write, and only the columns a user owns.
--   A column added later is therefore not writable until a migration says
--   so. migrations/CONTRACT.md "What a client may write" lists them. Queue
--   and result state, platform identity and tokens, feed publication,
--   ideas.votes, users.email / role / credits / is_active are left to the
--   service. OAuth token ciphertext is not even readable (DESIGN: tokens are
--   never readable by API roles); platform_connections shows it as null.
-- * References. Restrictive policies check, on insert and on update, that
--   every reference a user writes points at a row of their own
--   (is_own_row()), at a node of the same flow, at a job they own, or
--   (scheduled_posts.media, LoRA storage paths) at their own storage folder
--   or AI asset; a trigger lets a flow move only into a workspace its
--   writer belongs to.
-- * Value rules (guard triggers): a generation may only be cancelled, never
--   re-queued; LoRA and published-post statuses that the service sets;
--   ideas.status is for admins; a workspace admin cannot demote or remove an
--   owner and a workspace keeps an owner; max_attempts is 1..10 on every
--   queue.
-- * nexus_scheduled_posts writes only the client's columns for a client.
-- * queue_events are deleted with their item (they outlived it and became
--   readable again to whoever re-used its id).
-- * create_account_secret: at most 64 KiB per secret, 50 secrets per user,
--   names namespaced per user ("<user id>/<name>"), so no user can squat or
--   probe another user's secret name.
-- * statement_timeout for anon (3 s) and authenticated (8 s), as Supabase
--   sets them, on the plain-Postgres stand-in roles only.

-- Privileges: nothing is writable by default ------------------------------------

do $$
declare
  r record;
begin
  for r in
    select c.oid::regclass as rel
      from pg_catalog.pg_class c
      join pg_catalog.pg_namespace n on n.oid = c.relnamespace
     where n.nspname = 'public' and c.relkind in ('r', 'v', 'p', 'f')
  loop
    execute format('revoke insert, update, truncate, references, trigger on %s from anon, authenticated', r.rel);
  end loop;
end
$$;

-- Future tables keep Supabase's grants (row-level security decides), but
-- never TRUNCATE, which row-level security cannot stop.
alter default privileges in schema public revoke truncate, references, trigger on tables from anon, authenticated;

-- The stand-in storage tables had every privilege (0001); on Supabase the
-- storage schema is not ours and this is skipped.
do $$
begin
  revoke truncate, references, trigger on storage.objects, storage.buckets from anon, authenticated;
exception when others then
  raise notice 'storage privileges left as they are: %', sqlerrm;
end
$$;

-- Column grants: exactly what a client may write ---------------------------------
-- (kept in step with migrations/CONTRACT.md "What a client may write")

-- users / profiles: the profile, never email (from auth.users), role, credits, is_active
grant update (display_name, full_name, avatar_url, timezone, telegram_username) on public.users to authenticated;
grant update (display_name, full_name, avatar_url, timezone) on public.profiles to authenticated;

-- connected_accounts and its views: identity and tokens come from the service
-- (the connect flow); a user labels, pauses or re-links their app password.
revoke select on public.connected_accounts from anon, authenticated;
grant select (id, user_id, platform, platform_user_id, username, display_name, avatar_url,
              token_key_id, token_expires_at, scope, webhook_subscribed, webhook_subscription_id,
              last_sync_at, last_sync_status, next_sync_at, sync_enabled, status, error_message,
              error_count, account_did, handle, label, is_active, vault_secret_id, profile_data,
              metadata, created_at, updated_at)
  on public.connected_accounts to authenticated;
grant update (label, is_active, sync_enabled, vault_secret_id) on public.connected_accounts to authenticated;
grant update (label, is_active, vault_secret_id) on public.accounts to authenticated;
grant update (label, is_active, vault_secret_id) on public.bsky_accounts to authenticated;

-- Seed 002's view showed the token ciphertext; it now shows null (the
-- service reads connected_accounts).
create or replace view public.platform_connections with (security_invoker = true) as
  select id, user_id, platform, platform_user_id, null::text as access_token, null::text as refresh_token,
         token_expires_at, scope, profile_data, is_active, created_at, updated_at, last_sync_at, token_key_id
    from public.connected_accounts;
comment on view public.platform_connections is
  'Seed 002 name for connected_accounts (tokens are never readable by API roles: access_token and refresh_token are null). Unique key is (user_id, platform, platform_user_id), not (user_id, platform).';
revoke insert, update, truncate, references, trigger on public.platform_connections from anon, authenticated;
grant update (is_active) on public.platform_connections to authenticated;

-- seed 000
grant insert (user_id, text) on public.drafts to authenticated;
grant update (text) on public.drafts to authenticated;

grant insert (user_id, draft_id, account_id, account_did, run_at, status, adaptation_id, content,
              platform, timezone, media, langs, embed)
  on public.scheduled_posts to authenticated;
grant update (draft_id, account_id, account_did, run_at, status, adaptation_id, content,
              platform, timezone, media, langs, embed)
  on public.scheduled_posts to authenticated;
grant insert (user_id, adaptation_id, content, platform_connection_id, platform, status, scheduled_for, timezone)
  on public.nexus_scheduled_posts to authenticated;
grant update (adaptation_id, content, platform_connection_id, platform, status, scheduled_for, timezone)
  on public.nexus_scheduled_posts to authenticated;

grant insert (user_id, slug, title, display_name, description, is_enabled, publish_account_id)
  on public.feeds to authenticated;
grant update (slug, title, display_name, description, is_enabled, publish_account_id)
  on public.feeds to authenticated;
grant insert (feed_id, actor_did) on public.feed_sources to authenticated;
grant update (actor_did) on public.feed_sources to authenticated;
grant insert (feed_id, kind, value, lang) on public.feed_rules to authenticated;
grant update (kind, value, lang) on public.feed_rules to authenticated;

grant insert (user_id, kind, provider, model, prompt, params, status) on public.ai_jobs to authenticated;

-- seed 002
grant insert (user_id, original_idea, idea_hash, adaptations, tone, target_audience, voice_profile_id, last_used_at)
  on public.content_adaptations to authenticated;
grant update (original_idea, idea_hash, adaptations, tone, target_audience, voice_profile_id, last_used_at)
  on public.content_adaptations to authenticated;
grant insert (user_id, name, is_default, characteristics, sample_posts, last_used_at)
  on public.voice_profiles to authenticated;
grant update (name, is_default, characteristics, sample_posts, last_used_at)
  on public.voice_profiles to authenticated;
grant insert (user_id, adaptation_id, platform_connection_id, platform, content, status, scheduled_for)
  on public.published_posts to authenticated;
grant update (adaptation_id, platform_connection_id, content, status, scheduled_for)
  on public.published_posts to authenticated;

-- seed 003
grant insert (run_id, project_spec, owner_id, status, started_at, completed_at, error_message)
  on public.jobs to authenticated;
grant update (project_spec, status, started_at, completed_at, error_message) on public.jobs to authenticated;
grant insert (run_id, bot_name, event_type, payload, owner_id) on public.job_events to authenticated;
grant insert (run_id, kind, url, meta, owner_id, file_size, content_type, checksum)
  on public.artifacts to authenticated;
grant update (kind, url, meta, file_size, content_type, checksum) on public.artifacts to authenticated;

-- seed 004
grant insert (name, slug, created_by) on public.workspaces to authenticated;
grant update (name, slug) on public.workspaces to authenticated;
grant insert (workspace_id, user_id, role) on public.workspace_members to authenticated;
grant update (role) on public.workspace_members to authenticated;
grant insert (user_id, name, trigger_word, storage_path, training_params, status) on public.user_loras to authenticated;
grant update (name, trigger_word, storage_path, training_params, status) on public.user_loras to authenticated;
grant insert (lora_id, user_id, storage_path, caption) on public.lora_training_images to authenticated;
grant insert (user_id, workspace_id, lora_id, action, model_id, prompt, input, input_video_url,
              is_favorite, is_keyframe_segment, status)
  on public.generations to authenticated;
grant update (workspace_id, is_favorite, status) on public.generations to authenticated;
grant insert (user_id, workspace_id, name, description, nodes, edges, viewport_x, viewport_y, viewport_zoom, thumbnail_url)
  on public.flows to authenticated;
grant update (workspace_id, name, description, nodes, edges, viewport_x, viewport_y, viewport_zoom, thumbnail_url)
  on public.flows to authenticated;
grant insert (flow_id, user_id, role) on public.flow_members to authenticated;
grant update (role) on public.flow_members to authenticated;
grant insert (flow_id, client_id, type, data, position_x, position_y, width, height) on public.flow_nodes to authenticated;
grant update (client_id, type, data, position_x, position_y, width, height) on public.flow_nodes to authenticated;
grant insert (flow_id, source, target, source_handle, target_handle, type, data) on public.flow_edges to authenticated;
grant update (source, target, source_handle, target_handle, type, data) on public.flow_edges to authenticated;
grant insert (flow_id, token, role, created_by, expires_at, max_uses) on public.flow_invites to authenticated;
grant insert (flow_id, user_id, node_id, content, position_x, position_y, resolved) on public.flow_comments to authenticated;
grant update (node_id, content, position_x, position_y, resolved) on public.flow_comments to authenticated;
grant update (read) on public.notifications to authenticated;
grant insert (title, description, author_id) on public.ideas to authenticated;
grant update (title, description, status) on public.ideas to authenticated;
grant insert (idea_id, user_id) on public.idea_votes to authenticated;
grant insert (user_id, title, preview_text) on public.assistant_conversations to authenticated;
grant update (title, preview_text) on public.assistant_conversations to authenticated;
grant insert (conversation_id, role, content, images) on public.assistant_messages to authenticated;
grant insert (user_id, email, subject, message) on public.support_tickets to authenticated;
grant update (status, admin_notes) on public.support_tickets to authenticated;  -- admins only (policy)

-- References: a row may only point at what its writer owns -----------------------

-- True when p_id is null or names a row of p_table that the caller owns.
create function public.is_own_row(p_table text, p_id uuid)
returns boolean
language sql stable
security definer
set search_path = ''
as $$
  select p_id is null or coalesce(case p_table
    when 'connected_accounts' then
      exists (select 1 from public.connected_accounts r where r.id = p_id and r.user_id = auth.uid())
    when 'drafts' then
      exists (select 1 from public.drafts r where r.id = p_id and r.user_id = auth.uid())
    when 'content_adaptations' then
      exists (select 1 from public.content_adaptations r where r.id = p_id and r.user_id = auth.uid())
    when 'voice_profiles' then
      exists (select 1 from public.voice_profiles r where r.id = p_id and r.user_id = auth.uid())
    when 'published_posts' then
      exists (select 1 from public.published_posts r where r.id = p_id and r.user_id = auth.uid())
    when 'user_loras' then
      exists (select 1 from public.user_loras r where r.id = p_id and r.user_id = auth.uid())
    when 'ai_assets' then
      exists (select 1 from public.ai_assets r where r.id = p_id and r.user_id = auth.uid())
  end, false)
$$;
comment on function public.is_own_row(text, uuid) is
  'Policy helper: p_id is null or a row of p_table owned by auth.uid() (connected_accounts, drafts, content_adaptations, voice_profiles, published_posts, user_loras, ai_assets).';

-- A storage path in the caller's own folder ("<user id>/..."), without "..".
create function public.is_own_storage_path(p_path text)
returns boolean
language sql stable
set search_path = ''
as $$
  select p_path is null
      or (split_part(p_path, '/', 1) = auth.uid()::text
          and p_path !~ '(^|/)\.\.?(/|$)')
$$;

-- scheduled_posts.media items name an AI asset of the caller and/or a path
-- in the caller's own folder (publish reads the path when the asset is not
-- found, so both are checked).
create function public.media_items_are_own(p_media jsonb)
returns boolean
language sql stable
security definer
set search_path = ''
as $$
  select coalesce(bool_and(
           (not (m.item ? 'ai_asset_id')
            or ((m.item ->> 'ai_asset_id') ~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'
                and public.is_own_row('ai_assets', (m.item ->> 'ai_asset_id')::uuid)))
           and (not (m.item ? 'path') or public.is_own_storage_path(m.item ->> 'path'))),
         true)
    from jsonb_array_elements(case when jsonb_typeof(p_media) = 'array' then p_media else '[]'::jsonb end)
         as m(item)
   where jsonb_typeof(m.item) = 'object'
$$;

revoke all on function public.is_own_row(text, uuid) from public;
revoke all on function public.is_own_storage_path(text) from public;
revoke all on function public.media_items_are_own(jsonb) from public;
grant execute on function public.is_own_row(text, uuid) to authenticated, service_role;
grant execute on function public.is_own_storage_path(text) to authenticated, service_role;
grant execute on function public.media_items_are_own(jsonb) to authenticated, service_role;

-- scheduled_posts (and nexus_scheduled_posts, which writes through it)
create policy "Scheduled posts reference only the user's own rows"
  on public.scheduled_posts as restrictive for insert to authenticated
  with check (public.is_own_row('connected_accounts', account_id)
              and public.is_own_row('drafts', draft_id)
              and public.is_own_row('content_adaptations', adaptation_id)
              and public.is_own_row('published_posts', published_post_id)
              and public.media_items_are_own(media));
create policy "Scheduled posts keep referencing only the user's own rows"
  on public.scheduled_posts as restrictive for update to authenticated
  using (true)
  with check (public.is_own_row('connected_accounts', account_id)
              and public.is_own_row('drafts', draft_id)
              and public.is_own_row('content_adaptations', adaptation_id)
              and public.is_own_row('published_posts', published_post_id)
              and public.media_items_are_own(media));

-- published_posts
create policy "Published posts reference only the user's own rows"
  on public.published_posts as restrictive for insert to authenticated
  with check (public.is_own_row('connected_accounts', platform_connection_id)
              and public.is_own_row('content_adaptations', adaptation_id));
create policy "Published posts keep referencing only the user's own rows"
  on public.published_posts as restrictive for update to authenticated
  using (true)
  with check (public.is_own_row('connected_accounts', platform_connection_id)
              and public.is_own_row('content_adaptations', adaptation_id));

-- content_adaptations.voice_profile_id
create policy "Adaptations use only the user's own voice profiles"
  on public.content_adaptations as restrictive for insert to authenticated
  with check (public.is_own_row('voice_profiles', voice_profile_id));
create policy "Adaptations keep using only the user's own voice profiles"
  on public.content_adaptations as restrictive for update to authenticated
  using (true)
  with check (public.is_own_row('voice_profiles', voice_profile_id));

-- feeds.publish_account_id
create policy "Feeds publish only through the user's own accounts"
  on public.feeds as restrictive for insert to authenticated
  with check (public.is_own_row('connected_accounts', publish_account_id));
create policy "Feeds keep publishing only through the user's own accounts"
  on public.feeds as restrictive for update to authenticated
  using (true)
  with check (public.is_own_row('connected_accounts', publish_account_id));

-- generations.lora_id (workspace_id: membership, 0008's policies)
create policy "Generations use only the user's own LoRAs"
  on public.generations as restrictive for insert to authenticated
  with check (public.is_own_row('user_loras', lora_id));
create policy "Generations keep using only the user's own LoRAs"
  on public.generations as restrictive for update to authenticated
  using (true)
  with check (public.is_own_row('user_loras', lora_id));

-- LoRA images and archives live in the user's own storage folder
create policy "LoRAs point only at the user's own storage folder"
  on public.user_loras as restrictive for insert to authenticated
  with check (public.is_own_storage_path(storage_path));
create policy "LoRAs keep pointing only at the user's own storage folder"
  on public.user_loras as restrictive for update to authenticated
  using (true)
  with check (public.is_own_storage_path(storage_path));
create policy "LoRA training images come only from the user's own folder"
  on public.lora_training_images as restrictive for insert to authenticated
  with check (public.is_own_storage_path(storage_path));

-- flows.workspace_id: a workspace the writer belongs to. A trigger, not a
-- policy: an editor who is not in the flow's workspace may still edit the
-- flow, only not move it into a workspace of their choosing.
create function public.flows_workspace_is_the_writers() returns trigger
language plpgsql
set search_path = ''
as $$
begin
  if new.workspace_id is not null
     and (tg_op = 'INSERT' or new.workspace_id is distinct from old.workspace_id)
     and not public.request_is_service()
     and not public.is_workspace_member(new.workspace_id) then
    raise exception 'flows: workspace % is not one of yours', new.workspace_id using errcode = '42501';
  end if;
  return new;
end
$$;
revoke all on function public.flows_workspace_is_the_writers() from public, anon, authenticated;
create trigger flows_workspace_is_the_writers
  before insert or update of workspace_id on public.flows
  for each row execute function public.flows_workspace_is_the_writers();

-- flow_edges.source / target and flow_comments.node_id: nodes of the same flow
create function public.is_node_of_flow(p_node_id uuid, p_flow_id uuid)
returns boolean
language sql stable
security definer
set search_path = ''
as $$
  select p_node_id is null
      or exists (select 1 from public.flow_nodes n where n.id = p_node_id and n.flow_id = p_flow_id)
$$;
revoke all on function public.is_node_of_flow(uuid, uuid) from public;
grant execute on function public.is_node_of_flow(uuid, uuid) to authenticated, service_role;

create policy "Flow edges join nodes of their own flow"
  on public.flow_edges as restrictive for insert to authenticated
  with check (public.is_node_of_flow(source, flow_id) and public.is_node_of_flow(target, flow_id));
create policy "Flow edges keep joining nodes of their own flow"
  on public.flow_edges as restrictive for update to authenticated
  using (true)
  with check (public.is_node_of_flow(source, flow_id) and public.is_node_of_flow(target, flow_id));
create policy "Flow comments pin nodes of their own flow"
  on public.flow_comments as restrictive for insert to authenticated
  with check (public.is_node_of_flow(node_id, flow_id));
create policy "Flow comments keep pinning nodes of their own flow"
  on public.flow_comments as restrictive for update to authenticated
  using (true)
  with check (public.is_node_of_flow(node_id, flow_id));

-- artifacts stay in a job of their owner (the insert policy already checks it)
create policy "Artifacts stay in the user's own jobs"
  on public.artifacts as restrictive for update to authenticated
  using (true)
  with check (exists (select 1 from public.jobs j where j.run_id = artifacts.run_id and j.owner_id = auth.uid()));

-- workspace owners: an admin can neither demote nor remove one
create policy "Only owners change or remove workspace owners"
  on public.workspace_members as restrictive for update to authenticated
  using (role <> 'owner' or public.is_workspace_member(workspace_id, array['owner']))
  with check (true);
create policy "Only owners remove workspace owners"
  on public.workspace_members as restrictive for delete to authenticated
  using (role <> 'owner' or public.is_workspace_member(workspace_id, array['owner']));

-- ...and a workspace keeps at least one owner (the service may do anything).
create function public.workspace_keeps_an_owner() returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  if public.request_is_service() then
    return null;
  end if;
  if exists (select 1 from public.workspaces w where w.id = old.workspace_id)
     and not exists (select 1 from public.workspace_members m
                      where m.workspace_id = old.workspace_id and m.role = 'owner') then
    raise exception 'workspace_members: a workspace keeps at least one owner' using errcode = '42501';
  end if;
  return null;
end
$$;
revoke all on function public.workspace_keeps_an_owner() from public, anon, authenticated;
create trigger workspace_keeps_an_owner
  after update of role or delete on public.workspace_members
  for each row execute function public.workspace_keeps_an_owner();

-- Value rules the column grants cannot express --------------------------------------

-- generations: a user may cancel an unfinished generation, nothing else.
create function public.generations_client_status() returns trigger
language plpgsql
set search_path = ''
as $$
begin
  if public.request_is_service() or new.status is not distinct from old.status then
    return new;
  end if;
  if new.status = 'canceled' and old.status in ('pending', 'starting', 'processing') then
    return new;
  end if;
  raise exception 'generations: a user may only cancel an unfinished generation (% -> %)', old.status, new.status
    using errcode = '42501';
end
$$;
revoke all on function public.generations_client_status() from public, anon, authenticated;
create trigger generations_client_status
  before update of status on public.generations
  for each row execute function public.generations_client_status();

-- user_loras: the service trains; a user creates (pending), uploads, cancels.
create function public.user_loras_client_status() returns trigger
language plpgsql
set search_path = ''
as $$
begin
  if public.request_is_service() then
    return new;
  end if;
  if tg_op = 'INSERT' then
    if new.status <> 'pending' then
      raise exception 'user_loras: a new LoRA is pending' using errcode = '42501';
    end if;
  elsif new.status is distinct from old.status
        and not ((new.status in ('pending', 'uploading', 'canceled') and old.status in ('pending', 'uploading'))
                 or (new.status = 'canceled' and old.status = 'training')) then
    raise exception 'user_loras: status % is set by the service', new.status using errcode = '42501';
  end if;
  return new;
end
$$;
revoke all on function public.user_loras_client_status() from public, anon, authenticated;
create trigger user_loras_client_status
  before insert or update of status on public.user_loras
  for each row execute function public.user_loras_client_status();

-- published_posts: 'published' and 'failed' are the publisher's word.
create function public.published_posts_client_status() returns trigger
language plpgsql
set search_path = ''
as $$
begin
  if public.request_is_service() then
    return new;
  end if;
  if tg_op = 'INSERT' then
    if new.status not in ('pending', 'scheduled') then
      raise exception 'published_posts: a user records pending or scheduled posts only' using errcode = '42501';
    end if;
  elsif new.status is distinct from old.status
        and (new.status not in ('pending', 'scheduled', 'deleted')
             or (old.status in ('published', 'failed') and new.status <> 'deleted')) then
    raise exception 'published_posts: status % is set by the publisher', new.status using errcode = '42501';
  end if;
  return new;
end
$$;
revoke all on function public.published_posts_client_status() from public, anon, authenticated;
create trigger published_posts_client_status
  before insert or update of status on public.published_posts
  for each row execute function public.published_posts_client_status();

-- ideas: votes follow idea_votes; status is for admins.
create function public.ideas_status_is_for_admins() returns trigger
language plpgsql
set search_path = ''
as $$
begin
  if new.status is distinct from old.status and not public.request_is_service() and not public.is_admin() then
    raise exception 'ideas: status is set by admins' using errcode = '42501';
  end if;
  return new;
end
$$;
revoke all on function public.ideas_status_is_for_admins() from public, anon, authenticated;
create trigger ideas_status_is_for_admins
  before update of status on public.ideas
  for each row execute function public.ideas_status_is_for_admins();

-- max_attempts: a sane bound on every queue (existing rows are clamped).
update public.scheduled_posts set max_attempts = 10 where max_attempts > 10;
update public.ai_jobs set max_attempts = 10 where max_attempts > 10;
update public.generations set max_attempts = 10 where max_attempts > 10;
update public.media_downloads set max_attempts = 10 where max_attempts > 10;
update public.ingested_items set max_attempts = 10 where max_attempts > 10;
update public.ingested_posts set max_attempts = 10 where max_attempts > 10;
alter table public.scheduled_posts add constraint max_attempts_at_most_ten check (max_attempts <= 10);
alter table public.ai_jobs add constraint max_attempts_at_most_ten check (max_attempts <= 10);
alter table public.generations add constraint max_attempts_at_most_ten check (max_attempts <= 10);
alter table public.media_downloads add constraint max_attempts_at_most_ten check (max_attempts <= 10);
alter table public.ingested_items add constraint max_attempts_at_most_ten check (max_attempts <= 10);
alter table public.ingested_posts add constraint max_attempts_at_most_ten check (max_attempts <= 10);

-- nexus_scheduled_posts: a client writes its own columns only ----------------------

create or replace function public.nexus_scheduled_posts_write() returns trigger
language plpgsql
set search_path = ''
as $$
declare
  v_row public.scheduled_posts;
  v_service boolean := public.request_is_service();
begin
  if tg_op = 'INSERT' and v_service then
    insert into public.scheduled_posts
      (id, user_id, adaptation_id, content, account_id, platform, status, run_at, timezone,
       attempt_count, last_error, published_post_id)
    values
      (coalesce(new.id, gen_random_uuid()), coalesce(new.user_id, auth.uid()), new.adaptation_id, new.content,
       new.platform_connection_id,
       coalesce(new.platform::public.platform_enum,
                (select ca.platform from public.connected_accounts ca where ca.id = new.platform_connection_id)),
       coalesce(public.nexus_status_to_canonical(new.status), 'queued'),
       coalesce(new.scheduled_for, now()), coalesce(new.timezone, 'UTC'),
       coalesce(new.retry_count, 0), new.last_error, new.published_post_id)
    returning * into v_row;
  elsif tg_op = 'INSERT' then
    insert into public.scheduled_posts
      (user_id, adaptation_id, content, account_id, platform, status, run_at, timezone)
    values
      (coalesce(new.user_id, auth.uid()), new.adaptation_id, new.content, new.platform_connection_id,
       coalesce(new.platform::public.platform_enum,
                (select ca.platform from public.connected_accounts ca where ca.id = new.platform_connection_id)),
       coalesce(public.nexus_status_to_canonical(new.status), 'queued'),
       coalesce(new.scheduled_for, now()), coalesce(new.timezone, 'UTC'))
    returning * into v_row;
  elsif tg_op = 'UPDATE' and v_service then
    update public.scheduled_posts sp
       set user_id = new.user_id,
           adaptation_id = new.adaptation_id,
           content = new.content,
           account_id = new.platform_connection_id,
           platform = new.platform::public.platform_enum,
           status = public.nexus_status_to_canonical(new.status),
           run_at = new.scheduled_for,
           timezone = new.timezone,
           attempt_count = new.retry_count,
           last_error = new.last_error,
           published_post_id = new.published_post_id
     where sp.id = old.id
    returning * into v_row;
    if not found then
      return null;
    end if;
  elsif tg_op = 'UPDATE' then
    update public.scheduled_posts sp
       set adaptation_id = new.adaptation_id,
           content = new.content,
           account_id = new.platform_connection_id,
           platform = new.platform::public.platform_enum,
           status = public.nexus_status_to_canonical(new.status),
           run_at = new.scheduled_for,
           timezone = new.timezone
     where sp.id = old.id
    returning * into v_row;
    if not found then
      return null;
    end if;
  else
    delete from public.scheduled_posts sp where sp.id = old.id returning * into v_row;
    if not found then
      return null;
    end if;
    return old;
  end if;

  new.id := v_row.id;
  new.user_id := v_row.user_id;
  new.adaptation_id := v_row.adaptation_id;
  new.content := v_row.content;
  new.platform_connection_id := v_row.account_id;
  new.platform := v_row.platform::text;
  new.status := public.nexus_status_from_canonical(v_row.status);
  new.scheduled_for := v_row.run_at;
  new.timezone := v_row.timezone;
  new.retry_count := v_row.attempt_count;
  new.last_error := v_row.last_error;
  new.published_post_id := v_row.published_post_id;
  new.created_at := v_row.created_at;
  new.updated_at := v_row.updated_at;
  return new;
end
$$;

-- queue_events go with their item ------------------------------------------------------

create function public.delete_queue_events_of_deleted_items() returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  delete from public.queue_events e
   using deleted_items d
   where e.queue = tg_table_name and e.item_id = d.id;
  return null;
end
$$;
revoke all on function public.delete_queue_events_of_deleted_items() from public, anon, authenticated;

create trigger generations_delete_queue_events
  after delete on public.generations referencing old table as deleted_items
  for each statement execute function public.delete_queue_events_of_deleted_items();
create trigger media_downloads_delete_queue_events
  after delete on public.media_downloads referencing old table as deleted_items
  for each statement execute function public.delete_queue_events_of_deleted_items();
create trigger ingested_items_delete_queue_events
  after delete on public.ingested_items referencing old table as deleted_items
  for each statement execute function public.delete_queue_events_of_deleted_items();
create trigger ingested_posts_delete_queue_events
  after delete on public.ingested_posts referencing old table as deleted_items
  for each statement execute function public.delete_queue_events_of_deleted_items();

-- Events already orphaned by earlier deletes.
delete from public.queue_events e
 where (e.queue = 'generations' and not exists (select 1 from public.generations g where g.id = e.item_id))
    or (e.queue = 'media_downloads' and not exists (select 1 from public.media_downloads m where m.id = e.item_id))
    or (e.queue = 'ingested_items' and not exists (select 1 from public.ingested_items i where i.id = e.item_id))
    or (e.queue = 'ingested_posts' and not exists (select 1 from public.ingested_posts p where p.id = e.item_id));

-- create_account_secret: bounded, and names namespaced per user -----------------------

create or replace function public.create_account_secret(secret text, name text default null, description text default '')
returns uuid
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_user uuid := auth.uid();
  v_service boolean := public.request_is_service();
  v_name text := create_account_secret.name;
  v_id uuid;
begin
  if v_user is null and not v_service then
    raise exception 'create_account_secret: sign in first' using errcode = '42501';
  end if;
  if secret is null then
    raise exception 'create_account_secret: secret must not be null' using errcode = '22004';
  end if;
  if octet_length(secret) > 65536 then
    raise exception 'create_account_secret: a secret holds at most 64 KiB' using errcode = '22001';
  end if;
  if length(v_name) > 200 or length(description) > 1000 then
    raise exception 'create_account_secret: name is at most 200 and description 1000 characters' using errcode = '22001';
  end if;
  if not v_service then
    -- One user at a time, so the count cannot be raced past.
    perform pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtextextended('account_secrets:' || v_user::text, 0));
    if (select count(*) from public.account_secret_owners o where o.user_id = v_user) >= 50 then
      raise exception 'create_account_secret: at most 50 secrets per user' using errcode = '54000';
    end if;
    -- A user's names live under their own id: nobody squats or probes another's.
    if v_name is not null then
      v_name := v_user::text || '/' || v_name;
    end if;
  end if;
  v_id := vault.create_secret(secret, v_name, coalesce(description, ''));
  if v_user is not null and not v_service then
    insert into public.account_secret_owners (secret_id, user_id) values (v_id, v_user);
  end if;
  return v_id;
end
$$;
revoke all on function public.create_account_secret(text, text, text) from public, anon;
grant execute on function public.create_account_secret(text, text, text) to authenticated, service_role;

-- statement_timeout, as Supabase sets it (stand-in roles only) ---------------------------
-- On Supabase the roles already carry their timeouts (and are not ours to
-- alter); here each is set only where no statement_timeout is set yet.

do $$
declare
  r record;
begin
  if exists (select 1 from pg_catalog.pg_roles where rolname = 'supabase_admin') then
    return;
  end if;
  for r in select * from (values ('anon', '3s'), ('authenticated', '8s')) v(role_name, timeout) loop
    if not exists (select 1
                     from pg_catalog.pg_db_role_setting s
                     join pg_catalog.pg_roles ro on ro.oid = s.setrole
                    where ro.rolname = r.role_name and s.setdatabase = 0
                      and exists (select 1 from unnest(s.setconfig) c where c like 'statement_timeout=%')) then
      begin
        execute format('alter role %I set statement_timeout = %L', r.role_name, r.timeout);
      exception when others then
        raise notice 'statement_timeout of % left as it is: %', r.role_name, sqlerrm;
      end;
    end if;
  end loop;
end
$$;
