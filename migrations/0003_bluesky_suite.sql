-- 0003: seed 000 (BA6 Bluesky Suite), everything but the two queues.
--
-- drafts; the feed generator's feeds, feed_sources, feed_rules and
-- indexed_posts (unique (feed_id, uri), cursor index (feed_id, created_at
-- desc, uri desc)); worker_heartbeats; ai_text_runs with the atomic daily
-- limit RPC record_ai_text_run; the Vault RPCs create_account_secret and
-- get_account_secret; request_is_service(), the caller check the security
-- definer functions share. scheduled_posts, post_events and the AI image
-- queue follow in 0006.

-- Who is calling ---------------------------------------------------------------
-- True for service_role (by JWT claim or by role) and for direct connections
-- of trusted database users; false for anon and authenticated callers.
create function public.request_is_service() returns boolean
language sql stable
set search_path = ''
as $$
  select coalesce(auth.role(), '') = 'service_role'
      or coalesce(nullif(current_setting('role', true), 'none'), '') = 'service_role'
      or (coalesce(nullif(current_setting('role', true), 'none'), '') not in ('anon', 'authenticated')
          and coalesce(auth.role(), '') not in ('anon', 'authenticated')
          and current_user not in ('anon', 'authenticated'))
$$;
comment on function public.request_is_service() is
  'True when the caller is service_role or a trusted database user, false for anon/authenticated.';

-- drafts -----------------------------------------------------------------------

create table public.drafts (
  id uuid primary key default gen_random_uuid(),
  user_id uuid not null references public.users (id) on delete cascade,
  text text not null default '',
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);
create index drafts_user_id_created_at_idx on public.drafts (user_id, created_at desc);

create trigger update_drafts_updated_at
  before update on public.drafts
  for each row execute function public.update_updated_at();

alter table public.drafts enable row level security;
create policy "Users can read their own drafts"
  on public.drafts for select to authenticated using (auth.uid() = user_id);
create policy "Users can create their own drafts"
  on public.drafts for insert to authenticated with check (auth.uid() = user_id);
create policy "Users can update their own drafts"
  on public.drafts for update to authenticated
  using (auth.uid() = user_id) with check (auth.uid() = user_id);
create policy "Users can delete their own drafts"
  on public.drafts for delete to authenticated using (auth.uid() = user_id);

-- feeds ---------------------------------------------------------------------------

create table public.feeds (
  id uuid primary key default gen_random_uuid(),
  user_id uuid not null references public.users (id) on delete cascade,
  slug text not null,
  title text,
  display_name text,
  description text,
  is_enabled boolean not null default true,
  published_uri text,
  published_rkey text,
  publisher_did text,
  published_at timestamptz,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  constraint feeds_user_slug_key unique (user_id, slug),
  constraint slug_not_empty check (length(slug) > 0)
);
create index feeds_enabled_idx on public.feeds (is_enabled) where is_enabled;
create unique index feeds_published_uri_key on public.feeds (published_uri) where published_uri is not null;

create trigger update_feeds_updated_at
  before update on public.feeds
  for each row execute function public.update_updated_at();

alter table public.feeds enable row level security;
create policy "Users can read their own feeds"
  on public.feeds for select to authenticated using (auth.uid() = user_id);
create policy "Users can create their own feeds"
  on public.feeds for insert to authenticated with check (auth.uid() = user_id);
create policy "Users can update their own feeds"
  on public.feeds for update to authenticated
  using (auth.uid() = user_id) with check (auth.uid() = user_id);
create policy "Users can delete their own feeds"
  on public.feeds for delete to authenticated using (auth.uid() = user_id);

create table public.feed_sources (
  id uuid primary key default gen_random_uuid(),
  feed_id uuid not null references public.feeds (id) on delete cascade,
  actor_did text not null,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  constraint feed_sources_feed_actor_key unique (feed_id, actor_did)
);
create index feed_sources_actor_did_idx on public.feed_sources (actor_did);

create trigger update_feed_sources_updated_at
  before update on public.feed_sources
  for each row execute function public.update_updated_at();

alter table public.feed_sources enable row level security;
create policy "Users can read sources of their own feeds"
  on public.feed_sources for select to authenticated
  using (exists (select 1 from public.feeds f where f.id = feed_id and f.user_id = auth.uid()));
create policy "Users can add sources to their own feeds"
  on public.feed_sources for insert to authenticated
  with check (exists (select 1 from public.feeds f where f.id = feed_id and f.user_id = auth.uid()));
create policy "Users can update sources of their own feeds"
  on public.feed_sources for update to authenticated
  using (exists (select 1 from public.feeds f where f.id = feed_id and f.user_id = auth.uid()))
  with check (exists (select 1 from public.feeds f where f.id = feed_id and f.user_id = auth.uid()));
create policy "Users can delete sources of their own feeds"
  on public.feed_sources for delete to authenticated
  using (exists (select 1 from public.feeds f where f.id = feed_id and f.user_id = auth.uid()));

create table public.feed_rules (
  id uuid primary key default gen_random_uuid(),
  feed_id uuid not null references public.feeds (id) on delete cascade,
  kind text not null,
  value text not null,
  lang text,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  constraint kind_is_include_or_exclude check (kind in ('include', 'exclude'))
);
create index feed_rules_feed_id_idx on public.feed_rules (feed_id);

create trigger update_feed_rules_updated_at
  before update on public.feed_rules
  for each row execute function public.update_updated_at();

alter table public.feed_rules enable row level security;
create policy "Users can read rules of their own feeds"
  on public.feed_rules for select to authenticated
  using (exists (select 1 from public.feeds f where f.id = feed_id and f.user_id = auth.uid()));
create policy "Users can add rules to their own feeds"
  on public.feed_rules for insert to authenticated
  with check (exists (select 1 from public.feeds f where f.id = feed_id and f.user_id = auth.uid()));
create policy "Users can update rules of their own feeds"
  on public.feed_rules for update to authenticated
  using (exists (select 1 from public.feeds f where f.id = feed_id and f.user_id = auth.uid()))
  with check (exists (select 1 from public.feeds f where f.id = feed_id and f.user_id = auth.uid()));
create policy "Users can delete rules of their own feeds"
  on public.feed_rules for delete to authenticated
  using (exists (select 1 from public.feeds f where f.id = feed_id and f.user_id = auth.uid()));

-- indexed_posts: the feed generator's ready-made skeletons. Written by the
-- indexer (service role); paged by (created_at desc, uri desc).
create table public.indexed_posts (
  id uuid primary key default gen_random_uuid(),
  feed_id uuid references public.feeds (id) on delete cascade,
  uri text not null,
  cid text,
  author_did text,
  text text,
  lang text,
  created_at timestamptz not null default now(),
  indexed_at timestamptz not null default now(),
  constraint indexed_posts_feed_uri_key unique nulls not distinct (feed_id, uri)
);
create index indexed_posts_feed_cursor_idx on public.indexed_posts (feed_id, created_at desc, uri desc);
create index indexed_posts_author_did_idx on public.indexed_posts (author_did);

alter table public.indexed_posts enable row level security;
create policy "Users can read posts indexed for their own feeds"
  on public.indexed_posts for select to authenticated
  using (exists (select 1 from public.feeds f where f.id = feed_id and f.user_id = auth.uid()));

-- One page of a feed skeleton, newest first, after an exclusive cursor.
create function public.feed_skeleton_page(
  p_feed_id uuid,
  p_limit integer default 50,
  p_cursor_created_at timestamptz default null,
  p_cursor_uri text default null
) returns jsonb
language sql stable
set search_path = ''
as $$
  with page as (
    select ip.uri, ip.created_at
      from public.indexed_posts ip
     where ip.feed_id = p_feed_id
       and (p_cursor_created_at is null
            or (ip.created_at, ip.uri) < (p_cursor_created_at, coalesce(p_cursor_uri, '')))
     order by ip.created_at desc, ip.uri desc
     limit greatest(1, least(coalesce(p_limit, 50), 100))
  )
  select jsonb_build_object(
    'items', coalesce((select jsonb_agg(jsonb_build_object(
                         'uri', p.uri,
                         'created_at', to_char(p.created_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'))
                       order by p.created_at desc, p.uri desc) from page p), '[]'::jsonb),
    'count', (select count(*) from page))
$$;
revoke all on function public.feed_skeleton_page(uuid, integer, timestamptz, text) from public, anon, authenticated;
grant execute on function public.feed_skeleton_page(uuid, integer, timestamptz, text) to service_role;

-- worker_heartbeats ------------------------------------------------------------

create table public.worker_heartbeats (
  worker_id text primary key,
  last_seen_at timestamptz not null default now(),
  detail jsonb not null default '{}'::jsonb
);
alter table public.worker_heartbeats enable row level security;
create policy "Signed-in users can read worker heartbeats"
  on public.worker_heartbeats for select to authenticated using (true);

-- ai_text_runs -----------------------------------------------------------------

create table public.ai_text_runs (
  id uuid primary key default gen_random_uuid(),
  user_id uuid not null references public.users (id) on delete cascade,
  provider text not null,
  model text not null,
  prompt_hash text,
  input_tokens integer not null default 0,
  output_tokens integer not null default 0,
  created_at timestamptz not null default now(),
  constraint tokens_not_negative check (input_tokens >= 0 and output_tokens >= 0)
);
create index ai_text_runs_user_id_created_at_idx on public.ai_text_runs (user_id, created_at);

alter table public.ai_text_runs enable row level security;
create policy "Users can read their own AI text runs"
  on public.ai_text_runs for select to authenticated using (auth.uid() = user_id);

-- Records one run if the user's runs today (UTC day of p_now) are under the
-- limit. Atomic: a transaction-scoped advisory lock per user serialises
-- concurrent callers, so the limit is never exceeded (READ COMMITTED).
create function public.record_ai_text_run(
  p_user_id uuid,
  p_provider text,
  p_model text,
  p_prompt_hash text,
  p_input_tokens integer,
  p_output_tokens integer,
  p_daily_limit integer,
  p_now timestamptz default now()
) returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_day_start timestamptz := date_trunc('day', p_now at time zone 'UTC') at time zone 'UTC';
  v_used integer;
  v_id uuid;
begin
  if p_user_id is null then
    raise exception 'record_ai_text_run: p_user_id is required' using errcode = '22004';
  end if;
  perform pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtextextended('ai_text_runs:' || p_user_id::text, 0));

  select count(*) into v_used
    from public.ai_text_runs r
   where r.user_id = p_user_id
     and r.created_at >= v_day_start
     and r.created_at < v_day_start + interval '1 day';

  if p_daily_limit is not null and v_used >= p_daily_limit then
    return jsonb_build_object('allowed', false, 'used', v_used, 'limit', p_daily_limit);
  end if;

  insert into public.ai_text_runs (user_id, provider, model, prompt_hash, input_tokens, output_tokens, created_at)
  values (p_user_id, p_provider, p_model, p_prompt_hash,
          coalesce(p_input_tokens, 0), coalesce(p_output_tokens, 0), p_now)
  returning id into v_id;

  return jsonb_build_object('allowed', true, 'used', v_used + 1, 'limit', p_daily_limit, 'run_id', v_id);
end
$$;
revoke all on function public.record_ai_text_run(uuid, text, text, text, integer, integer, integer, timestamptz)
  from public, anon, authenticated;
grant execute on function public.record_ai_text_run(uuid, text, text, text, integer, integer, integer, timestamptz)
  to service_role;

-- Vault RPCs (seed 000's 0005_vault_secrets) -----------------------------------

-- Who a Vault secret made through these RPCs belongs to, so that a user can
-- neither read nor link another user's secret by its id.
create table public.account_secret_owners (
  secret_id uuid primary key,
  user_id uuid not null references public.users (id) on delete cascade,
  created_at timestamptz not null default now()
);
comment on table public.account_secret_owners is
  'Owner of each Vault secret used as connected_accounts.vault_secret_id (set by create_account_secret or on first link by the service).';
create index account_secret_owners_user_id_idx on public.account_secret_owners (user_id);
alter table public.account_secret_owners enable row level security;
create policy "Users can read which secrets they own"
  on public.account_secret_owners for select to authenticated using (auth.uid() = user_id);

create function public.create_account_secret(secret text, name text default null, description text default '')
returns uuid
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_id uuid;
begin
  if auth.uid() is null and not public.request_is_service() then
    raise exception 'create_account_secret: sign in first' using errcode = '42501';
  end if;
  v_id := vault.create_secret(secret, name, coalesce(description, ''));
  if auth.uid() is not null and not public.request_is_service() then
    insert into public.account_secret_owners (secret_id, user_id) values (v_id, auth.uid());
  end if;
  return v_id;
end
$$;

-- A user may link only a secret they own; the service may link any secret,
-- which then belongs to the account's user (a secret has one owner).
create function public.check_account_vault_secret() returns trigger
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_owner uuid;
begin
  if new.vault_secret_id is null
     or (tg_op = 'UPDATE' and new.vault_secret_id is not distinct from old.vault_secret_id
         and new.user_id is not distinct from old.user_id) then
    return new;
  end if;
  select o.user_id into v_owner from public.account_secret_owners o where o.secret_id = new.vault_secret_id;
  if public.request_is_service() then
    if v_owner is null then
      insert into public.account_secret_owners (secret_id, user_id) values (new.vault_secret_id, new.user_id);
    elsif v_owner <> new.user_id then
      raise exception 'vault secret % belongs to another user', new.vault_secret_id using errcode = '42501';
    end if;
  elsif v_owner is distinct from auth.uid() or new.user_id is distinct from auth.uid() then
    raise exception 'vault secret % is not yours', new.vault_secret_id using errcode = '42501';
  end if;
  return new;
end
$$;
revoke all on function public.check_account_vault_secret() from public, anon, authenticated;

create trigger check_account_vault_secret
  before insert or update of vault_secret_id, user_id on public.connected_accounts
  for each row execute function public.check_account_vault_secret();
revoke all on function public.create_account_secret(text, text, text) from public, anon;
grant execute on function public.create_account_secret(text, text, text) to authenticated, service_role;

-- The clear secret of an account: its owner, or the service.
create function public.get_account_secret(account_id uuid)
returns text
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_secret_id uuid;
  v_owner uuid;
  v_clear text;
begin
  select a.vault_secret_id, a.user_id into v_secret_id, v_owner
    from public.connected_accounts a
   where a.id = get_account_secret.account_id;

  if not public.request_is_service() then
    if v_owner is null or v_owner is distinct from auth.uid()
       or (v_secret_id is not null
           and not exists (select 1 from public.account_secret_owners o
                            where o.secret_id = v_secret_id and o.user_id = auth.uid())) then
      raise exception 'get_account_secret: account not found' using errcode = '42501';
    end if;
  end if;
  if v_secret_id is null then
    return null;
  end if;
  select s.decrypted_secret into v_clear from vault.decrypted_secrets s where s.id = v_secret_id;
  return v_clear;
end
$$;
revoke all on function public.get_account_secret(uuid) from public, anon;
grant execute on function public.get_account_secret(uuid) to authenticated, service_role;
