-- 0008: seed 004 (AI generation studio).
--
-- replicate_tokens (service role only) with get_next_replicate_token()
-- (round robin, FOR UPDATE SKIP LOCKED) and record_replicate_token_error();
-- workspaces and workspace_members (owner/admin/member); generations (a work
-- queue: pending -> starting -> processing -> succeeded | failed | canceled)
-- with the update_generation_status trigger, the seed's indexes and
-- autovacuum settings, get_generation_counts() and
-- get_workspace_generation_counts(); flows, flow_nodes, flow_edges,
-- flow_invites (accept_flow_invite()), flow_members, flow_comments;
-- user_loras, lora_training_images; notifications; ideas (+ idea_votes);
-- assistant_conversations, assistant_messages; api_logs; support_tickets.
-- Membership checks are security definer helpers so that policies on the
-- membership tables do not recurse.

-- replicate_tokens ---------------------------------------------------------------

create table public.replicate_tokens (
  id uuid primary key default gen_random_uuid(),
  label text,
  token text not null unique,
  is_active boolean not null default true,
  request_count bigint not null default 0,
  error_count integer not null default 0,
  last_error text,
  last_error_at timestamptz,
  last_used_at timestamptz,
  cooldown_until timestamptz,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  constraint counts_not_negative check (request_count >= 0 and error_count >= 0)
);
comment on table public.replicate_tokens is 'Seed 004: the Replicate API token pool. Service role only.';
create index replicate_tokens_rotation_idx on public.replicate_tokens (last_used_at nulls first, id) where is_active;

create trigger update_replicate_tokens_updated_at
  before update on public.replicate_tokens
  for each row execute function public.update_updated_at();

alter table public.replicate_tokens enable row level security;
create policy "Service role can manage replicate tokens"
  on public.replicate_tokens for all to service_role using (true) with check (true);

-- Round robin: the least recently used active token that is not cooling
-- down. SKIP LOCKED hands concurrent callers different tokens.
create function public.get_next_replicate_token()
returns table (id uuid, token text)
language sql
volatile
set search_path = ''
as $$
  with next_token as (
    select t.id
      from public.replicate_tokens t
     where t.is_active
       and (t.cooldown_until is null or t.cooldown_until <= now())
     order by t.last_used_at nulls first, t.request_count, t.id
     limit 1
     for update skip locked
  )
  update public.replicate_tokens t
     set request_count = t.request_count + 1,
         last_used_at = clock_timestamp()
    from next_token
   where t.id = next_token.id
     and t.is_active
  returning t.id, t.token
$$;
revoke all on function public.get_next_replicate_token() from public, anon, authenticated;
grant execute on function public.get_next_replicate_token() to service_role;

-- A provider error on a token: count it, cool it down (429), or retire it (401).
create function public.record_replicate_token_error(
  p_token_id uuid,
  p_error text,
  p_cooldown_seconds integer default 60,
  p_deactivate boolean default false,
  p_now timestamptz default now()
) returns jsonb
language sql
volatile
set search_path = ''
as $$
  update public.replicate_tokens t
     set error_count = t.error_count + 1,
         last_error = left(p_error, 1000),
         last_error_at = p_now,
         cooldown_until = case when coalesce(p_cooldown_seconds, 0) > 0
                               then p_now + make_interval(secs => p_cooldown_seconds)
                               else t.cooldown_until end,
         is_active = t.is_active and not coalesce(p_deactivate, false)
   where t.id = p_token_id
  returning jsonb_build_object('id', t.id, 'is_active', t.is_active, 'error_count', t.error_count,
                               'cooldown_until', t.cooldown_until)
$$;
revoke all on function public.record_replicate_token_error(uuid, text, integer, boolean, timestamptz)
  from public, anon, authenticated;
grant execute on function public.record_replicate_token_error(uuid, text, integer, boolean, timestamptz)
  to service_role;

-- workspaces -------------------------------------------------------------------------

create table public.workspaces (
  id uuid primary key default gen_random_uuid(),
  name text not null,
  slug text not null unique,
  created_by uuid references public.users (id) on delete set null,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  constraint slug_is_url_safe check (slug ~ '^[a-z0-9][a-z0-9_-]*$')
);

create trigger update_workspaces_updated_at
  before update on public.workspaces
  for each row execute function public.update_updated_at();

create table public.workspace_members (
  id uuid primary key default gen_random_uuid(),
  workspace_id uuid not null references public.workspaces (id) on delete cascade,
  user_id uuid not null references public.users (id) on delete cascade,
  role text not null default 'member',
  created_at timestamptz not null default now(),
  constraint workspace_members_workspace_user_key unique (workspace_id, user_id),
  constraint role_is_known check (role in ('owner', 'admin', 'member'))
);
create index workspace_members_user_id_idx on public.workspace_members (user_id);

create function public.is_workspace_member(p_workspace_id uuid, p_roles text[] default null)
returns boolean
language sql stable
security definer
set search_path = ''
as $$
  select exists (
    select 1 from public.workspace_members m
     where m.workspace_id = p_workspace_id
       and m.user_id = auth.uid()
       and (p_roles is null or m.role = any (p_roles))
  )
$$;
revoke all on function public.is_workspace_member(uuid, text[]) from public;
grant execute on function public.is_workspace_member(uuid, text[]) to anon, authenticated, service_role;

-- The creator of a workspace is its owner.
create function public.add_workspace_owner() returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  if new.created_by is not null then
    insert into public.workspace_members (workspace_id, user_id, role)
    values (new.id, new.created_by, 'owner')
    on conflict (workspace_id, user_id) do update set role = 'owner';
  end if;
  return null;
end
$$;
revoke all on function public.add_workspace_owner() from public, anon, authenticated;

create trigger add_workspace_owner
  after insert on public.workspaces
  for each row execute function public.add_workspace_owner();

alter table public.workspaces enable row level security;
create policy "Members can read their workspaces"
  on public.workspaces for select to authenticated
  using (created_by = auth.uid() or public.is_workspace_member(id));
create policy "Users can create workspaces they own"
  on public.workspaces for insert to authenticated with check (created_by = auth.uid());
create policy "Owners and admins can update their workspaces"
  on public.workspaces for update to authenticated
  using (public.is_workspace_member(id, array['owner', 'admin']))
  with check (public.is_workspace_member(id, array['owner', 'admin']));
create policy "Owners can delete their workspaces"
  on public.workspaces for delete to authenticated
  using (public.is_workspace_member(id, array['owner']));

alter table public.workspace_members enable row level security;
create policy "Members can read the members of their workspaces"
  on public.workspace_members for select to authenticated
  using (public.is_workspace_member(workspace_id));
create policy "Owners and admins can add workspace members"
  on public.workspace_members for insert to authenticated
  with check (public.is_workspace_member(workspace_id, array['owner', 'admin'])
              and (role <> 'owner' or public.is_workspace_member(workspace_id, array['owner'])));
create policy "Owners and admins can change workspace members"
  on public.workspace_members for update to authenticated
  using (public.is_workspace_member(workspace_id, array['owner', 'admin']))
  with check (public.is_workspace_member(workspace_id, array['owner', 'admin'])
              and (role <> 'owner' or public.is_workspace_member(workspace_id, array['owner'])));
create policy "Owners and admins can remove members and members can leave"
  on public.workspace_members for delete to authenticated
  using (user_id = auth.uid() or public.is_workspace_member(workspace_id, array['owner', 'admin']));

-- user_loras (before generations, which may train one) ----------------------------

create table public.user_loras (
  id uuid primary key default gen_random_uuid(),
  user_id uuid not null references public.users (id) on delete cascade,
  name text not null,
  trigger_word text,
  status text not null default 'pending',
  replicate_training_id text,
  replicate_model text,
  replicate_version text,
  weights_url text,
  storage_path text,
  training_params jsonb not null default '{}'::jsonb,
  error text,
  cost_usd numeric(12, 6),
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  completed_at timestamptz,
  constraint status_is_known check (status in ('pending', 'uploading', 'training', 'succeeded', 'failed', 'canceled'))
);
create index user_loras_user_id_idx on public.user_loras (user_id, created_at desc);
create index user_loras_replicate_training_id_idx on public.user_loras (replicate_training_id);

create trigger update_user_loras_updated_at
  before update on public.user_loras
  for each row execute function public.update_updated_at();

alter table public.user_loras enable row level security;
create policy "Users can read their own LoRAs"
  on public.user_loras for select to authenticated using (auth.uid() = user_id);
create policy "Users can create their own LoRAs"
  on public.user_loras for insert to authenticated with check (auth.uid() = user_id);
create policy "Users can update their own LoRAs"
  on public.user_loras for update to authenticated
  using (auth.uid() = user_id) with check (auth.uid() = user_id);
create policy "Users can delete their own LoRAs"
  on public.user_loras for delete to authenticated using (auth.uid() = user_id);

create table public.lora_training_images (
  id uuid primary key default gen_random_uuid(),
  lora_id uuid not null references public.user_loras (id) on delete cascade,
  user_id uuid not null references public.users (id) on delete cascade,
  storage_path text not null,
  caption text,
  created_at timestamptz not null default now()
);
create index lora_training_images_lora_id_idx on public.lora_training_images (lora_id);

alter table public.lora_training_images enable row level security;
create policy "Users can read their own LoRA training images"
  on public.lora_training_images for select to authenticated using (auth.uid() = user_id);
create policy "Users can add training images to their own LoRAs"
  on public.lora_training_images for insert to authenticated
  with check (auth.uid() = user_id
              and exists (select 1 from public.user_loras l where l.id = lora_id and l.user_id = auth.uid()));
create policy "Users can delete their own LoRA training images"
  on public.lora_training_images for delete to authenticated using (auth.uid() = user_id);

-- generations --------------------------------------------------------------------

create table public.generations (
  id uuid primary key default gen_random_uuid(),
  user_id uuid not null references public.users (id) on delete cascade,
  workspace_id uuid references public.workspaces (id) on delete set null,
  lora_id uuid references public.user_loras (id) on delete set null,
  action text not null default 'generate',
  model_id text not null,
  prompt text,
  input jsonb not null default '{}'::jsonb,
  status text not null default 'pending',
  replicate_prediction_id text,
  output_urls text[] not null default '{}',
  output_thumbs text[] not null default '{}',
  input_video_url text,
  is_favorite boolean not null default false,
  is_keyframe_segment boolean default false,
  cost_usd numeric(12, 6),
  error text,
  started_at timestamptz,
  completed_at timestamptz,
  processing_time_ms bigint,

  -- work queue (CONTRACT.md): 'pending' is waiting, 'starting' is leased
  -- (being submitted), 'processing' means Replicate has it.
  attempts integer not null default 0,
  max_attempts integer not null default 5,
  next_attempt_at timestamptz not null default now(),
  locked_at timestamptz,
  locked_by text,
  lease_expires_at timestamptz,
  lease_token bigint,
  last_error text,
  dead_lettered_at timestamptz,

  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),

  constraint status_is_known
    check (status in ('pending', 'starting', 'processing', 'succeeded', 'failed', 'canceled')),
  constraint attempts_not_negative check (attempts >= 0),
  constraint max_attempts_positive check (max_attempts >= 1),
  constraint cost_not_negative check (cost_usd is null or cost_usd >= 0)
);
comment on table public.generations is
  'Seed 004: Replicate generations; a work queue (pending -> starting [leased] -> processing [submitted] -> succeeded | failed | canceled).';

create index generations_user_id_created_at_idx on public.generations (user_id, created_at desc);
create index generations_user_workspace_created_at_idx on public.generations (user_id, workspace_id, created_at desc);
create index generations_user_id_status_idx on public.generations (user_id, status);
create index generations_replicate_prediction_id_idx on public.generations (replicate_prediction_id);
create index generations_list_idx on public.generations (user_id, created_at desc) where is_keyframe_segment is not true;
create index generations_workspace_id_idx on public.generations (workspace_id, created_at desc);
create index generations_claim_idx on public.generations (next_attempt_at, id) where status = 'pending';
create index generations_lease_idx on public.generations (lease_expires_at) where status = 'starting';
create index generations_failed_created_at_idx on public.generations (created_at) where status = 'failed';

alter table public.generations set (
  autovacuum_vacuum_scale_factor = 0.05,
  autovacuum_analyze_scale_factor = 0.02
);

create trigger update_generations_updated_at
  before update on public.generations
  for each row execute function public.update_updated_at();

-- started_at when work starts, completed_at and processing_time_ms at the end.
create function public.update_generation_status() returns trigger
language plpgsql
set search_path = ''
as $$
begin
  if new.status in ('starting', 'processing') and new.started_at is null then
    new.started_at := now();
  end if;
  if new.status in ('succeeded', 'failed', 'canceled')
     and (tg_op = 'INSERT' or old.status is distinct from new.status) then
    new.completed_at := coalesce(new.completed_at, now());
    new.processing_time_ms := greatest(0, round(extract(epoch from
      (new.completed_at - coalesce(new.started_at, new.created_at))) * 1000))::bigint;
  end if;
  return new;
end
$$;

create trigger update_generation_status
  before insert or update of status on public.generations
  for each row execute function public.update_generation_status();

alter table public.generations enable row level security;
create policy "Users can read their own and their workspaces' generations"
  on public.generations for select to authenticated
  using (auth.uid() = user_id
         or (workspace_id is not null and public.is_workspace_member(workspace_id)));
create policy "Admins can read all generations"
  on public.generations for select to authenticated using (public.is_admin());
create policy "Users can create their own generations"
  on public.generations for insert to authenticated
  with check (auth.uid() = user_id
              and status = 'pending'
              and (workspace_id is null or public.is_workspace_member(workspace_id)));
create policy "Users can update their own generations"
  on public.generations for update to authenticated
  using (auth.uid() = user_id)
  with check (auth.uid() = user_id
              and (workspace_id is null or public.is_workspace_member(workspace_id)));
create policy "Users can delete their own generations"
  on public.generations for delete to authenticated using (auth.uid() = user_id);

-- Counts for the list tabs (all / processing / favorites / failed), keyframe
-- segments excluded as in the list. Security invoker: RLS applies.
create function public.get_generation_counts(user_id uuid)
returns jsonb
language sql stable
set search_path = ''
as $$
  select jsonb_build_object(
    'all', count(*),
    'processing', count(*) filter (where g.status in ('pending', 'starting', 'processing')),
    'favorites', count(*) filter (where g.is_favorite),
    'failed', count(*) filter (where g.status = 'failed'))
    from public.generations g
   where g.user_id = get_generation_counts.user_id
     and g.is_keyframe_segment is not true
$$;

create function public.get_workspace_generation_counts(ws_id uuid)
returns jsonb
language sql stable
set search_path = ''
as $$
  select jsonb_build_object(
    'all', count(*),
    'processing', count(*) filter (where g.status in ('pending', 'starting', 'processing')),
    'favorites', count(*) filter (where g.is_favorite),
    'failed', count(*) filter (where g.status = 'failed'))
    from public.generations g
   where g.workspace_id = get_workspace_generation_counts.ws_id
     and g.is_keyframe_segment is not true
$$;

-- flows --------------------------------------------------------------------------

create table public.flows (
  id uuid primary key default gen_random_uuid(),
  user_id uuid not null references public.users (id) on delete cascade,
  workspace_id uuid references public.workspaces (id) on delete set null,
  name text not null default 'Untitled flow',
  description text,
  nodes jsonb not null default '[]'::jsonb,
  edges jsonb not null default '[]'::jsonb,
  viewport_x double precision not null default 0,
  viewport_y double precision not null default 0,
  viewport_zoom double precision not null default 1,
  thumbnail_url text,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);
create index flows_user_id_updated_at_idx on public.flows (user_id, updated_at desc);

create trigger update_flows_updated_at
  before update on public.flows
  for each row execute function public.update_updated_at();

create table public.flow_members (
  id uuid primary key default gen_random_uuid(),
  flow_id uuid not null references public.flows (id) on delete cascade,
  user_id uuid not null references public.users (id) on delete cascade,
  role text not null default 'editor',
  created_at timestamptz not null default now(),
  constraint flow_members_flow_user_key unique (flow_id, user_id),
  constraint role_is_known check (role in ('owner', 'editor', 'viewer'))
);
create index flow_members_user_id_idx on public.flow_members (user_id);

create function public.can_access_flow(p_flow_id uuid, p_roles text[] default null)
returns boolean
language sql stable
security definer
set search_path = ''
as $$
  select exists (select 1 from public.flows f where f.id = p_flow_id and f.user_id = auth.uid())
      or exists (select 1 from public.flow_members m
                  where m.flow_id = p_flow_id and m.user_id = auth.uid()
                    and (p_roles is null or m.role = any (p_roles)))
$$;
revoke all on function public.can_access_flow(uuid, text[]) from public;
grant execute on function public.can_access_flow(uuid, text[]) to anon, authenticated, service_role;

create function public.is_flow_owner(p_flow_id uuid)
returns boolean
language sql stable
security definer
set search_path = ''
as $$
  select exists (select 1 from public.flows f where f.id = p_flow_id and f.user_id = auth.uid())
$$;
revoke all on function public.is_flow_owner(uuid) from public;
grant execute on function public.is_flow_owner(uuid) to anon, authenticated, service_role;

alter table public.flows enable row level security;
create policy "Owners and members can read flows"
  on public.flows for select to authenticated
  using (auth.uid() = user_id or public.can_access_flow(id));
create policy "Users can create their own flows"
  on public.flows for insert to authenticated with check (auth.uid() = user_id);
create policy "Owners and editors can update flows"
  on public.flows for update to authenticated
  using (public.can_access_flow(id, array['owner', 'editor']))
  with check (public.can_access_flow(id, array['owner', 'editor']));
create policy "Owners can delete their flows"
  on public.flows for delete to authenticated using (auth.uid() = user_id);

alter table public.flow_members enable row level security;
create policy "Flow members can read the members of their flows"
  on public.flow_members for select to authenticated using (public.can_access_flow(flow_id));
create policy "Flow owners can add members"
  on public.flow_members for insert to authenticated with check (public.is_flow_owner(flow_id));
create policy "Flow owners can change members"
  on public.flow_members for update to authenticated
  using (public.is_flow_owner(flow_id)) with check (public.is_flow_owner(flow_id));
create policy "Flow owners can remove members and members can leave"
  on public.flow_members for delete to authenticated
  using (user_id = auth.uid() or public.is_flow_owner(flow_id));

create table public.flow_nodes (
  id uuid primary key default gen_random_uuid(),
  flow_id uuid not null references public.flows (id) on delete cascade,
  client_id text,
  type text not null,
  data jsonb not null default '{}'::jsonb,
  position_x double precision not null default 0,
  position_y double precision not null default 0,
  width double precision,
  height double precision,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  constraint flow_nodes_flow_client_id_key unique (flow_id, client_id)
);
create index flow_nodes_flow_id_idx on public.flow_nodes (flow_id);

create trigger update_flow_nodes_updated_at
  before update on public.flow_nodes
  for each row execute function public.update_updated_at();

alter table public.flow_nodes enable row level security;
create policy "Owners and members can read flow nodes"
  on public.flow_nodes for select to authenticated using (public.can_access_flow(flow_id));
create policy "Owners and editors can add flow nodes"
  on public.flow_nodes for insert to authenticated
  with check (public.can_access_flow(flow_id, array['owner', 'editor']));
create policy "Owners and editors can update flow nodes"
  on public.flow_nodes for update to authenticated
  using (public.can_access_flow(flow_id, array['owner', 'editor']))
  with check (public.can_access_flow(flow_id, array['owner', 'editor']));
create policy "Owners and editors can delete flow nodes"
  on public.flow_nodes for delete to authenticated
  using (public.can_access_flow(flow_id, array['owner', 'editor']));

create table public.flow_edges (
  id uuid primary key default gen_random_uuid(),
  flow_id uuid not null references public.flows (id) on delete cascade,
  source uuid not null references public.flow_nodes (id) on delete cascade,
  target uuid not null references public.flow_nodes (id) on delete cascade,
  source_handle text,
  target_handle text,
  type text,
  data jsonb not null default '{}'::jsonb,
  created_at timestamptz not null default now()
);
create index flow_edges_flow_id_idx on public.flow_edges (flow_id);

alter table public.flow_edges enable row level security;
create policy "Owners and members can read flow edges"
  on public.flow_edges for select to authenticated using (public.can_access_flow(flow_id));
create policy "Owners and editors can add flow edges"
  on public.flow_edges for insert to authenticated
  with check (public.can_access_flow(flow_id, array['owner', 'editor']));
create policy "Owners and editors can update flow edges"
  on public.flow_edges for update to authenticated
  using (public.can_access_flow(flow_id, array['owner', 'editor']))
  with check (public.can_access_flow(flow_id, array['owner', 'editor']));
create policy "Owners and editors can delete flow edges"
  on public.flow_edges for delete to authenticated
  using (public.can_access_flow(flow_id, array['owner', 'editor']));

create table public.flow_invites (
  id uuid primary key default gen_random_uuid(),
  flow_id uuid not null references public.flows (id) on delete cascade,
  token text not null unique
    default replace(gen_random_uuid()::text, '-', '') || replace(gen_random_uuid()::text, '-', ''),
  role text not null default 'editor',
  created_by uuid not null references public.users (id) on delete cascade,
  expires_at timestamptz,
  max_uses integer,
  use_count integer not null default 0,
  created_at timestamptz not null default now(),
  constraint role_is_known check (role in ('editor', 'viewer')),
  constraint use_count_within_max check (use_count >= 0 and (max_uses is null or use_count <= max_uses))
);
create index flow_invites_flow_id_idx on public.flow_invites (flow_id);

alter table public.flow_invites enable row level security;
create policy "Flow owners can read invites"
  on public.flow_invites for select to authenticated using (public.is_flow_owner(flow_id));
create policy "Flow owners can create invites"
  on public.flow_invites for insert to authenticated
  with check (created_by = auth.uid() and public.is_flow_owner(flow_id));
create policy "Flow owners can delete invites"
  on public.flow_invites for delete to authenticated using (public.is_flow_owner(flow_id));

-- Join a flow with an invite token.
create function public.accept_flow_invite(p_token text)
returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_invite public.flow_invites;
begin
  if auth.uid() is null then
    raise exception 'accept_flow_invite: sign in first' using errcode = '42501';
  end if;
  select * into v_invite from public.flow_invites i where i.token = p_token for update;
  if not found
     or (v_invite.expires_at is not null and v_invite.expires_at <= now())
     or (v_invite.max_uses is not null and v_invite.use_count >= v_invite.max_uses) then
    return jsonb_build_object('accepted', false, 'reason', 'invalid_invite');
  end if;
  insert into public.flow_members (flow_id, user_id, role)
  values (v_invite.flow_id, auth.uid(), v_invite.role)
  on conflict (flow_id, user_id) do nothing;
  update public.flow_invites i set use_count = i.use_count + 1 where i.id = v_invite.id;
  return jsonb_build_object('accepted', true, 'flow_id', v_invite.flow_id, 'role', v_invite.role);
end
$$;
revoke all on function public.accept_flow_invite(text) from public, anon;
grant execute on function public.accept_flow_invite(text) to authenticated, service_role;

create table public.flow_comments (
  id uuid primary key default gen_random_uuid(),
  flow_id uuid not null references public.flows (id) on delete cascade,
  user_id uuid not null references public.users (id) on delete cascade,
  node_id uuid references public.flow_nodes (id) on delete set null,
  content text not null,
  position_x double precision,
  position_y double precision,
  resolved boolean not null default false,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);
create index flow_comments_flow_id_idx on public.flow_comments (flow_id, created_at);

create trigger update_flow_comments_updated_at
  before update on public.flow_comments
  for each row execute function public.update_updated_at();

alter table public.flow_comments enable row level security;
create policy "Owners and members can read flow comments"
  on public.flow_comments for select to authenticated using (public.can_access_flow(flow_id));
create policy "Owners and members can comment on flows"
  on public.flow_comments for insert to authenticated
  with check (auth.uid() = user_id and public.can_access_flow(flow_id));
create policy "Users can update their own flow comments"
  on public.flow_comments for update to authenticated
  using (auth.uid() = user_id) with check (auth.uid() = user_id and public.can_access_flow(flow_id));
create policy "Users can delete their own comments and flow owners any"
  on public.flow_comments for delete to authenticated
  using (auth.uid() = user_id or public.is_flow_owner(flow_id));

-- notifications ------------------------------------------------------------------

create table public.notifications (
  id uuid primary key default gen_random_uuid(),
  user_id uuid not null references public.users (id) on delete cascade,
  type text not null,
  title text not null,
  message text,
  data jsonb not null default '{}'::jsonb,
  link text,
  read boolean not null default false,
  created_at timestamptz not null default now()
);
create index notifications_user_unread_idx on public.notifications (user_id, created_at desc) where not read;
create index notifications_user_id_created_at_idx on public.notifications (user_id, created_at desc);

alter table public.notifications enable row level security;
create policy "Users can read their own notifications"
  on public.notifications for select to authenticated using (auth.uid() = user_id);
create policy "Users can mark their own notifications read"
  on public.notifications for update to authenticated
  using (auth.uid() = user_id) with check (auth.uid() = user_id);
create policy "Users can delete their own notifications"
  on public.notifications for delete to authenticated using (auth.uid() = user_id);

-- ideas (feature voting) ------------------------------------------------------------

create table public.ideas (
  id uuid primary key default gen_random_uuid(),
  title text not null,
  description text,
  status text not null default 'open',
  votes integer not null default 0,
  author_id uuid references public.users (id) on delete set null,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  constraint votes_not_negative check (votes >= 0),
  constraint status_is_known check (status in ('open', 'planned', 'in_progress', 'done', 'declined'))
);
create index ideas_votes_idx on public.ideas (votes desc, created_at desc);

create trigger update_ideas_updated_at
  before update on public.ideas
  for each row execute function public.update_updated_at();

alter table public.ideas enable row level security;
create policy "Signed-in users can read ideas"
  on public.ideas for select to authenticated using (true);
create policy "Users can post their own ideas"
  on public.ideas for insert to authenticated
  with check (auth.uid() = author_id and votes = 0 and status = 'open');
create policy "Authors can update their own ideas"
  on public.ideas for update to authenticated
  using (auth.uid() = author_id) with check (auth.uid() = author_id);
create policy "Authors can delete their own ideas"
  on public.ideas for delete to authenticated using (auth.uid() = author_id);
create policy "Admins can manage ideas"
  on public.ideas for all to authenticated using (public.is_admin()) with check (public.is_admin());

-- One vote per user per idea; ideas.votes follows.
create table public.idea_votes (
  idea_id uuid not null references public.ideas (id) on delete cascade,
  user_id uuid not null references public.users (id) on delete cascade,
  created_at timestamptz not null default now(),
  primary key (idea_id, user_id)
);
create index idea_votes_user_id_idx on public.idea_votes (user_id);

create function public.count_idea_votes() returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  update public.ideas i
     set votes = (select count(*) from public.idea_votes v where v.idea_id = i.id)
   where i.id = coalesce(new.idea_id, old.idea_id);
  return null;
end
$$;
revoke all on function public.count_idea_votes() from public, anon, authenticated;

create trigger count_idea_votes
  after insert or delete on public.idea_votes
  for each row execute function public.count_idea_votes();

alter table public.idea_votes enable row level security;
create policy "Users can read their own votes"
  on public.idea_votes for select to authenticated using (auth.uid() = user_id);
create policy "Users can vote as themselves"
  on public.idea_votes for insert to authenticated with check (auth.uid() = user_id);
create policy "Users can withdraw their own votes"
  on public.idea_votes for delete to authenticated using (auth.uid() = user_id);

-- assistant chat ---------------------------------------------------------------------

create table public.assistant_conversations (
  id uuid primary key default gen_random_uuid(),
  user_id uuid not null references public.users (id) on delete cascade,
  title text,
  preview_text text,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);
create index assistant_conversations_user_id_idx on public.assistant_conversations (user_id, updated_at desc);

create trigger update_assistant_conversations_updated_at
  before update on public.assistant_conversations
  for each row execute function public.update_updated_at();

alter table public.assistant_conversations enable row level security;
create policy "Users can read their own conversations"
  on public.assistant_conversations for select to authenticated using (auth.uid() = user_id);
create policy "Users can start their own conversations"
  on public.assistant_conversations for insert to authenticated with check (auth.uid() = user_id);
create policy "Users can update their own conversations"
  on public.assistant_conversations for update to authenticated
  using (auth.uid() = user_id) with check (auth.uid() = user_id);
create policy "Users can delete their own conversations"
  on public.assistant_conversations for delete to authenticated using (auth.uid() = user_id);

create table public.assistant_messages (
  id uuid primary key default gen_random_uuid(),
  conversation_id uuid not null references public.assistant_conversations (id) on delete cascade,
  role text not null,
  content text not null default '',
  images jsonb not null default '[]'::jsonb,
  created_at timestamptz not null default now(),
  constraint role_is_known check (role in ('user', 'assistant', 'system', 'tool'))
);
create index assistant_messages_conversation_id_idx on public.assistant_messages (conversation_id, created_at);

alter table public.assistant_messages enable row level security;
create policy "Users can read messages of their own conversations"
  on public.assistant_messages for select to authenticated
  using (exists (select 1 from public.assistant_conversations c
                  where c.id = conversation_id and c.user_id = auth.uid()));
create policy "Users can add messages to their own conversations"
  on public.assistant_messages for insert to authenticated
  with check (exists (select 1 from public.assistant_conversations c
                       where c.id = conversation_id and c.user_id = auth.uid()));
create policy "Users can delete messages of their own conversations"
  on public.assistant_messages for delete to authenticated
  using (exists (select 1 from public.assistant_conversations c
                  where c.id = conversation_id and c.user_id = auth.uid()));

-- api_logs --------------------------------------------------------------------------

create table public.api_logs (
  id uuid primary key default gen_random_uuid(),
  method text not null,
  path text not null,
  status_code integer,
  duration_ms integer,
  user_id uuid references public.users (id) on delete set null,
  provider text,
  model text,
  error text,
  metadata jsonb not null default '{}'::jsonb,
  created_at timestamptz not null default now(),
  constraint duration_not_negative check (duration_ms is null or duration_ms >= 0)
);
create index api_logs_created_at_idx on public.api_logs (created_at desc);
create index api_logs_user_id_created_at_idx on public.api_logs (user_id, created_at desc);

alter table public.api_logs enable row level security;
create policy "Users can read their own API logs"
  on public.api_logs for select to authenticated using (auth.uid() = user_id);
create policy "Admins can read all API logs"
  on public.api_logs for select to authenticated using (public.is_admin());

-- support_tickets -----------------------------------------------------------------

create table public.support_tickets (
  id uuid primary key default gen_random_uuid(),
  user_id uuid references public.users (id) on delete set null,
  email text,
  subject text,
  message text not null,
  status text not null default 'open',
  admin_notes text,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  constraint status_is_known check (status in ('open', 'in_progress', 'resolved', 'closed'))
);
create index support_tickets_user_id_idx on public.support_tickets (user_id, created_at desc);
create index support_tickets_status_idx on public.support_tickets (status, created_at desc);

create trigger update_support_tickets_updated_at
  before update on public.support_tickets
  for each row execute function public.update_updated_at();

alter table public.support_tickets enable row level security;
create policy "Users can read their own support tickets"
  on public.support_tickets for select to authenticated using (auth.uid() = user_id);
create policy "Users can open their own support tickets"
  on public.support_tickets for insert to authenticated
  with check (auth.uid() = user_id and status = 'open' and admin_notes is null);
create policy "Admins can read all support tickets"
  on public.support_tickets for select to authenticated using (public.is_admin());
create policy "Admins can update support tickets"
  on public.support_tickets for update to authenticated
  using (public.is_admin()) with check (public.is_admin());
