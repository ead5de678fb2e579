-- 0002: users and connected accounts, shared by all five systems.
--
-- * public.users: one row per auth.users row (created by the trigger
--   handle_new_auth_user), the union of the seeds' profile columns.
--   Seed 000's public.profiles is a view over it.
-- * public.connected_accounts: the one accounts table (seed 001's shape, the
--   platform enum widened for seeds 000, 002 and the Replicate webhooks),
--   plus seed 000's columns (account_did, handle, label, is_active,
--   vault_secret_id), seed 002's (profile_data) and token_key_id for
--   AES-256-GCM key rotation. Views over it keep the other seeds' names:
--   accounts (seed 000), bsky_accounts (seed 000's first migration) and
--   platform_connections (seed 002).
-- * The updated_at trigger functions under both seed names
--   (update_updated_at from seed 001, update_updated_at_column from seed 002).
-- * is_admin(), the admin check seed 004's "admin RLS bypass" uses.

-- Enums (seed 001, platform_enum widened) -------------------------------------

create type public.platform_enum as enum
  ('bluesky', 'strava', 'instagram', 'linkedin', 'x', 'substack', 'replicate');
create type public.account_status_enum as enum
  ('active', 'error', 'disconnected', 'token_expired');

-- updated_at triggers ----------------------------------------------------------

create function public.update_updated_at() returns trigger
language plpgsql
set search_path = ''
as $$
begin
  new.updated_at = now();
  return new;
end
$$;

create function public.update_updated_at_column() returns trigger
language plpgsql
set search_path = ''
as $$
begin
  new.updated_at = now();
  return new;
end
$$;

-- users --------------------------------------------------------------------------

create table public.users (
  id uuid primary key references auth.users (id) on delete cascade,
  email text unique,
  display_name text,
  full_name text,
  avatar_url text,
  timezone text not null default 'UTC',
  role text not null default 'user',
  credits integer not null default 0,
  telegram_username text,
  is_active boolean not null default true,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  constraint role_is_known check (role in ('user', 'admin', 'super_admin')),
  constraint credits_not_negative check (credits >= 0)
);
comment on table public.users is
  'One row per auth.users row (trigger handle_new_auth_user); seeds 000, 001, 002 and 004 profile columns.';
comment on column public.users.email is
  'Nullable: Supabase Auth allows phone-only and anonymous users.';

create trigger update_users_updated_at
  before update on public.users
  for each row execute function public.update_updated_at();

-- Users may edit their profile, never their role, credits, activity or id.
create function public.users_protect_privileged_columns() returns trigger
language plpgsql
set search_path = ''
as $$
begin
  if current_user in ('anon', 'authenticated')
     and (new.id, new.role, new.credits, new.is_active)
         is distinct from (old.id, old.role, old.credits, old.is_active) then
    raise exception 'users: id, role, credits and is_active can only be changed by the service'
      using errcode = '42501';
  end if;
  return new;
end
$$;

create trigger users_protect_privileged_columns
  before update on public.users
  for each row execute function public.users_protect_privileged_columns();

-- A new auth user gets a users row (seed 000's 0004 migration).
create function public.handle_new_auth_user() returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  insert into public.users (id, email, display_name, full_name, avatar_url)
  values (
    new.id,
    new.email,
    coalesce(new.raw_user_meta_data ->> 'display_name', new.raw_user_meta_data ->> 'name',
             new.raw_user_meta_data ->> 'full_name'),
    coalesce(new.raw_user_meta_data ->> 'full_name', new.raw_user_meta_data ->> 'name'),
    new.raw_user_meta_data ->> 'avatar_url'
  )
  on conflict (id) do nothing;
  return new;
end
$$;
revoke all on function public.handle_new_auth_user() from public, anon, authenticated;

create trigger on_auth_user_created
  after insert on auth.users
  for each row execute function public.handle_new_auth_user();

-- Keep users.email in step with auth.users.email.
create function public.handle_auth_user_email_change() returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  update public.users set email = new.email where id = new.id;
  return new;
end
$$;
revoke all on function public.handle_auth_user_email_change() from public, anon, authenticated;

create trigger on_auth_user_email_changed
  after update of email on auth.users
  for each row
  when (old.email is distinct from new.email)
  execute function public.handle_auth_user_email_change();

-- Admin check (seed 004: admin and super_admin roles).
create function public.is_admin() returns boolean
language sql stable
security definer
set search_path = ''
as $$
  select exists (
    select 1 from public.users u
     where u.id = auth.uid() and u.role in ('admin', 'super_admin') and u.is_active
  )
$$;
revoke all on function public.is_admin() from public;
grant execute on function public.is_admin() to anon, authenticated, service_role;

alter table public.users enable row level security;

create policy "Users can read their own record"
  on public.users for select to authenticated
  using (auth.uid() = id);
create policy "Admins can read all users"
  on public.users for select to authenticated
  using (public.is_admin());
create policy "Users can update their own record"
  on public.users for update to authenticated
  using (auth.uid() = id)
  with check (auth.uid() = id);
-- INSERT: service role only (the auth trigger), as seed 002 says.

-- profiles (seed 000's first name for users) ---------------------------------

create view public.profiles with (security_invoker = true) as
  select id, email, display_name, full_name, avatar_url, timezone, created_at, updated_at
    from public.users;
comment on view public.profiles is 'Seed 000 compatibility view over public.users.';

-- connected_accounts ---------------------------------------------------------

create table public.connected_accounts (
  id uuid primary key default gen_random_uuid(),
  user_id uuid not null references public.users (id) on delete cascade,
  platform public.platform_enum not null,
  platform_user_id text not null,
  username text not null,
  display_name text,
  avatar_url text,

  -- OAuth credentials: AES-256-GCM ciphertext made by the functions; NULL for
  -- Bluesky accounts whose app password lives in Vault (vault_secret_id).
  access_token text,
  refresh_token text,
  token_key_id text,
  token_expires_at timestamptz,
  scope text,

  webhook_subscribed boolean default false,
  webhook_subscription_id text,

  last_sync_at timestamptz,
  last_sync_status text,
  next_sync_at timestamptz,
  sync_enabled boolean default true,

  status public.account_status_enum default 'active',
  error_message text,
  error_count integer default 0,

  -- seed 000 (Bluesky suite)
  account_did text,
  handle text,
  label text,
  is_active boolean not null default true,
  vault_secret_id uuid,

  -- seed 002 (Nexus)
  profile_data jsonb default '{}'::jsonb,

  metadata jsonb default '{}'::jsonb,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),

  -- Trove's key. Seed 002 asks for unique (user_id, platform), which would
  -- forbid two accounts on one platform; Trove's multi-account key wins and
  -- still makes each (user, platform, external account) unique.
  constraint unique_platform_account unique (user_id, platform, platform_user_id),
  constraint error_count_not_negative check (error_count >= 0),
  constraint bluesky_did_is_platform_user_id
    check (platform <> 'bluesky' or account_did is null or account_did = platform_user_id),
  constraint sync_status_is_known
    check (last_sync_status is null or last_sync_status in ('success', 'failed', 'partial', 'cancelled'))
);
comment on table public.connected_accounts is
  'The one accounts table (seed 001 shape). Views: accounts, bsky_accounts (seed 000), platform_connections (seed 002).';
comment on column public.connected_accounts.token_key_id is
  'Id of the AES-256-GCM key that encrypted access_token/refresh_token, for key rotation.';

-- Seed 000: unique (user_id, account_did).
create unique index accounts_user_account_did_key
  on public.connected_accounts (user_id, account_did) where account_did is not null;
create index connected_accounts_user_id_idx on public.connected_accounts (user_id);
create index connected_accounts_platform_idx on public.connected_accounts (platform);
create index connected_accounts_status_idx on public.connected_accounts (status);
create index connected_accounts_sync_due_idx on public.connected_accounts (sync_enabled, next_sync_at);
create index connected_accounts_token_expires_at_idx on public.connected_accounts (token_expires_at);
create index idx_platform_connections_user_id on public.connected_accounts (user_id);
create index idx_platform_connections_platform on public.connected_accounts (platform);

-- Fill what each seed's view leaves out: an insert through accounts /
-- bsky_accounts names only account_did (platform bluesky), one through
-- platform_connections has no username.
create function public.connected_accounts_fill_defaults() returns trigger
language plpgsql
set search_path = ''
as $$
begin
  if new.platform is null and new.account_did is not null then
    new.platform := 'bluesky';
  end if;
  if new.platform = 'bluesky' then
    if tg_op = 'UPDATE' and new.account_did is distinct from old.account_did then
      new.platform_user_id := coalesce(new.account_did, new.platform_user_id);
    elsif tg_op = 'UPDATE' and new.platform_user_id is distinct from old.platform_user_id then
      new.account_did := new.platform_user_id;
    end if;
    new.platform_user_id := coalesce(new.platform_user_id, new.account_did);
    new.account_did := coalesce(new.account_did, new.platform_user_id);
  end if;
  new.username := coalesce(new.username, new.handle, new.profile_data ->> 'username',
                           new.account_did, new.platform_user_id);
  if new.platform = 'bluesky' and new.handle is null and new.username <> new.account_did then
    new.handle := new.username;
  end if;
  return new;
end
$$;

create trigger connected_accounts_fill_defaults
  before insert or update on public.connected_accounts
  for each row execute function public.connected_accounts_fill_defaults();

create trigger update_connected_accounts_updated_at
  before update on public.connected_accounts
  for each row execute function public.update_updated_at();

alter table public.connected_accounts enable row level security;

create policy "Users can read their own connected accounts"
  on public.connected_accounts for select to authenticated
  using (auth.uid() = user_id);
create policy "Users can insert their own connected accounts"
  on public.connected_accounts for insert to authenticated
  with check (auth.uid() = user_id);
create policy "Users can update their own connected accounts"
  on public.connected_accounts for update to authenticated
  using (auth.uid() = user_id)
  with check (auth.uid() = user_id);
create policy "Users can delete their own connected accounts"
  on public.connected_accounts for delete to authenticated
  using (auth.uid() = user_id);

-- Views over connected_accounts (simple, hence insertable and updatable) ------

create view public.accounts with (security_invoker = true) as
  select id, user_id, account_did, handle, label, is_active, vault_secret_id, created_at, updated_at
    from public.connected_accounts
   where platform = 'bluesky';
comment on view public.accounts is
  'Seed 000: Bluesky accounts (insert sets platform bluesky and platform_user_id = account_did).';

create view public.bsky_accounts with (security_invoker = true) as
  select id, user_id, account_did as did, handle, label, is_active, vault_secret_id, created_at, updated_at
    from public.connected_accounts
   where platform = 'bluesky';
comment on view public.bsky_accounts is 'Seed 000 (0001_init) name for Bluesky accounts.';

create view public.platform_connections with (security_invoker = true) as
  select id, user_id, platform, platform_user_id, access_token, refresh_token, token_expires_at,
         scope, profile_data, is_active, created_at, updated_at, last_sync_at, token_key_id
    from public.connected_accounts;
comment on view public.platform_connections is
  'Seed 002 name for connected_accounts. Unique key is (user_id, platform, platform_user_id), not (user_id, platform).';
