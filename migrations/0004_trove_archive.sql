-- 0004: seed 001 (Trove), the archive of users' own posts.
--
-- Enums, ingested_items (raw webhook/fetch payloads, unique (platform,
-- external_id) for the webhook receiver's dedupe), ingested_posts, posts
-- (normalized, full-text search), media_downloads, sync_logs,
-- engagement_history; the seed's triggers update_search_vector,
-- denormalize_post_user_id, update_updated_at, sync-log duration_ms and
-- connected_accounts.last_sync_at on completion; store_ingested_item(), the
-- receiver's archive-and-dedupe call. ingested_items, ingested_posts and
-- media_downloads are work queues: they carry the queue columns of
-- migrations/CONTRACT.md (functions in 0009). public_posts is in 0010.

create type public.content_type_enum as enum
  ('post', 'activity', 'story', 'reel', 'reply', 'repost', 'article');
create type public.download_status_enum as enum
  ('pending', 'downloading', 'downloaded', 'failed', 'unavailable');
create type public.sync_type_enum as enum
  ('webhook', 'manual', 'scheduled', 'backfill');
create type public.sync_status_enum as enum
  ('running', 'success', 'partial', 'failed', 'cancelled');
create type public.ingestion_source_enum as enum
  ('webhook', 'fetch', 'backfill', 'retry');
create type public.processing_status_enum as enum
  ('pending', 'processing', 'completed', 'failed', 'dead_letter');

-- ingested_items -------------------------------------------------------------

create table public.ingested_items (
  id uuid primary key default gen_random_uuid(),
  source public.ingestion_source_enum not null,
  platform public.platform_enum not null,
  account_id uuid references public.connected_accounts (id) on delete set null,
  user_id uuid references public.users (id) on delete set null,

  event_type text not null,
  external_id text,

  payload jsonb not null,

  status public.processing_status_enum not null default 'pending',
  attempts integer not null default 0,

  received_at timestamptz not null default now(),
  started_at timestamptz,
  completed_at timestamptz,

  error_message text,
  error_details jsonb,
  last_error_at timestamptz,

  -- work queue (CONTRACT.md)
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

  constraint ingested_items_platform_external_id_key unique (platform, external_id),
  constraint attempts_not_negative check (attempts >= 0),
  constraint max_attempts_positive check (max_attempts >= 1)
);
comment on table public.ingested_items is
  'Seed 001: permanent archive of raw webhook/fetch payloads; a work queue (pending -> processing -> completed | failed/dead_letter).';

create index ingested_items_status_idx on public.ingested_items (status);
create index ingested_items_platform_idx on public.ingested_items (platform);
create index ingested_items_account_id_idx on public.ingested_items (account_id);
create index ingested_items_user_id_idx on public.ingested_items (user_id);
create index ingested_items_received_at_idx on public.ingested_items (received_at desc);
create index ingested_items_payload_idx on public.ingested_items using gin (payload);
create index ingested_items_claim_idx on public.ingested_items (next_attempt_at, id) where status = 'pending';
create index ingested_items_lease_idx on public.ingested_items (lease_expires_at) where status = 'processing';

create trigger update_ingested_items_updated_at
  before update on public.ingested_items
  for each row execute function public.update_updated_at();

alter table public.ingested_items enable row level security;
create policy "Users can read their own ingested items"
  on public.ingested_items for select to authenticated using (auth.uid() = user_id);

-- The webhook receiver's one call: archive the raw payload, deduplicated on
-- (platform, external_id). A redelivery changes nothing.
create function public.store_ingested_item(
  p_source text,
  p_platform text,
  p_event_type text,
  p_external_id text,
  p_payload jsonb,
  p_account_id uuid default null,
  p_user_id uuid default null,
  p_error text default null,
  p_now timestamptz default now()
) returns jsonb
language plpgsql
set search_path = ''
as $$
declare
  v_id uuid;
begin
  insert into public.ingested_items
    (source, platform, account_id, user_id, event_type, external_id, payload, received_at,
     status, error_message, last_error, last_error_at, dead_lettered_at, next_attempt_at)
  values
    (p_source::public.ingestion_source_enum, p_platform::public.platform_enum, p_account_id, p_user_id,
     p_event_type, p_external_id, p_payload, p_now,
     case when p_error is null then 'pending' else 'failed' end::public.processing_status_enum,
     p_error, p_error, case when p_error is null then null else p_now end,
     case when p_error is null then null else p_now end, p_now)
  on conflict (platform, external_id) do nothing
  returning id into v_id;

  if v_id is null then
    select i.id into v_id from public.ingested_items i
     where i.platform = p_platform::public.platform_enum and i.external_id = p_external_id;
    return jsonb_build_object('stored', false, 'duplicate', true, 'id', v_id);
  end if;
  return jsonb_build_object('stored', true, 'duplicate', false, 'id', v_id);
end
$$;
revoke all on function public.store_ingested_item(text, text, text, text, jsonb, uuid, uuid, text, timestamptz)
  from public, anon, authenticated;
grant execute on function public.store_ingested_item(text, text, text, text, jsonb, uuid, uuid, text, timestamptz)
  to service_role;

-- ingested_posts ---------------------------------------------------------------

create table public.ingested_posts (
  id uuid primary key default gen_random_uuid(),
  ingested_item_id uuid references public.ingested_items (id) on delete set null,

  platform public.platform_enum not null,
  account_id uuid references public.connected_accounts (id) on delete set null,
  user_id uuid references public.users (id) on delete set null,

  platform_post_id text not null,

  post_data jsonb not null,

  status public.processing_status_enum not null default 'pending',
  attempts integer not null default 0,

  received_at timestamptz not null default now(),
  started_at timestamptz,
  completed_at timestamptz,

  error_message text,
  error_details jsonb,
  last_error_at timestamptz,

  -- work queue (CONTRACT.md)
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

  constraint attempts_not_negative check (attempts >= 0),
  constraint max_attempts_positive check (max_attempts >= 1)
);
comment on table public.ingested_posts is
  'Seed 001: permanent archive of individual posts in platform format; a work queue.';

create index ingested_posts_status_idx on public.ingested_posts (status);
create index ingested_posts_platform_post_idx on public.ingested_posts (platform, platform_post_id);
create index ingested_posts_account_id_idx on public.ingested_posts (account_id);
create index ingested_posts_user_id_idx on public.ingested_posts (user_id);
create index ingested_posts_received_at_idx on public.ingested_posts (received_at desc);
create index ingested_posts_post_data_idx on public.ingested_posts using gin (post_data);
create index ingested_posts_ingested_item_id_idx on public.ingested_posts (ingested_item_id);
create index ingested_posts_claim_idx on public.ingested_posts (next_attempt_at, id) where status = 'pending';
create index ingested_posts_lease_idx on public.ingested_posts (lease_expires_at) where status = 'processing';

create trigger update_ingested_posts_updated_at
  before update on public.ingested_posts
  for each row execute function public.update_updated_at();

alter table public.ingested_posts enable row level security;
create policy "Users can read their own ingested posts"
  on public.ingested_posts for select to authenticated using (auth.uid() = user_id);

-- posts --------------------------------------------------------------------------

create table public.posts (
  id uuid primary key default gen_random_uuid(),
  account_id uuid not null references public.connected_accounts (id) on delete cascade,
  user_id uuid not null references public.users (id) on delete cascade,

  platform public.platform_enum not null,
  platform_post_id text not null,
  content_type public.content_type_enum default 'post',

  text_content text,
  html_content text,

  created_at_platform timestamptz not null,
  updated_at_platform timestamptz,

  published boolean default true,
  deleted_on_platform boolean default false,

  search_vector tsvector,

  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),

  constraint unique_platform_post unique (platform, platform_post_id)
);
comment on table public.posts is
  'Seed 001: normalized archive of what users posted anywhere (publishing through Outpost lands here too).';

create index posts_account_id_idx on public.posts (account_id);
create index posts_user_id_idx on public.posts (user_id);
create index posts_user_created_at_platform_idx on public.posts (user_id, created_at_platform desc);
create index posts_user_platform_created_at_platform_idx on public.posts (user_id, platform, created_at_platform desc);
create index posts_deleted_on_platform_idx on public.posts (deleted_on_platform);
create index posts_search_vector_idx on public.posts using gin (search_vector);

-- Seed 001, verbatim apart from qualified names.
create function public.update_search_vector() returns trigger
language plpgsql
set search_path = ''
as $$
declare
  post_data jsonb;
begin
  select ip.post_data into post_data
    from public.ingested_posts ip
   where ip.platform = new.platform
     and ip.platform_post_id = new.platform_post_id
   order by ip.created_at desc
   limit 1;

  new.search_vector = to_tsvector('english'::regconfig,
    coalesce(new.text_content, '') || ' ' ||
    coalesce(post_data ->> 'author_handle', '') || ' ' ||
    coalesce(post_data ->> 'activity_type', '')
  );
  return new;
end
$$;

create trigger update_posts_search_vector
  before insert or update of text_content on public.posts
  for each row execute function public.update_search_vector();

create function public.denormalize_post_user_id() returns trigger
language plpgsql
set search_path = ''
as $$
begin
  select ca.user_id into new.user_id
    from public.connected_accounts ca
   where ca.id = new.account_id;
  return new;
end
$$;

create trigger denormalize_posts_user_id
  before insert on public.posts
  for each row execute function public.denormalize_post_user_id();

create trigger update_posts_updated_at
  before update on public.posts
  for each row execute function public.update_updated_at();

alter table public.posts enable row level security;
create policy "Users can read their own posts"
  on public.posts for select to authenticated using (auth.uid() = user_id);
-- Inserts and updates come from sync jobs (service role) only.

-- media_downloads ----------------------------------------------------------------

create table public.media_downloads (
  id uuid primary key default gen_random_uuid(),
  ingested_post_id uuid not null references public.ingested_posts (id) on delete cascade,
  user_id uuid not null references public.users (id) on delete cascade,

  original_url text not null,

  status public.download_status_enum not null default 'pending',
  attempts integer not null default 0,
  error text,
  last_attempt_at timestamptz,

  -- work queue (CONTRACT.md)
  max_attempts integer not null default 5,
  next_attempt_at timestamptz not null default now(),
  locked_at timestamptz,
  locked_by text,
  lease_expires_at timestamptz,
  lease_token bigint,
  last_error text,
  dead_lettered_at timestamptz,
  completed_at timestamptz,
  updated_at timestamptz not null default now(),

  created_at timestamptz not null default now(),

  constraint unique_user_url unique (user_id, original_url),
  constraint valid_attempts check (attempts >= 0),
  constraint max_attempts_positive check (max_attempts >= 1)
);
comment on table public.media_downloads is
  'Seed 001: media to fetch; stored at {user_id}/{platform}/{sha256(original_url)}.{ext}. A work queue (pending -> downloading -> downloaded | unavailable | failed).';

create index media_downloads_ingested_post_id_idx on public.media_downloads (ingested_post_id);
create index media_downloads_user_id_idx on public.media_downloads (user_id);
create index media_downloads_status_idx on public.media_downloads (status);
create index media_downloads_status_attempts_idx on public.media_downloads (status, attempts);
create index media_downloads_claim_idx on public.media_downloads (next_attempt_at, id) where status = 'pending';
create index media_downloads_lease_idx on public.media_downloads (lease_expires_at) where status = 'downloading';

create trigger update_media_downloads_updated_at
  before update on public.media_downloads
  for each row execute function public.update_updated_at();

alter table public.media_downloads enable row level security;
create policy "Users can read their own media downloads"
  on public.media_downloads for select to authenticated using (auth.uid() = user_id);

-- sync_logs --------------------------------------------------------------------

create table public.sync_logs (
  id uuid primary key default gen_random_uuid(),
  account_id uuid references public.connected_accounts (id) on delete set null,
  user_id uuid references public.users (id) on delete set null,

  sync_type public.sync_type_enum not null,
  status public.sync_status_enum default 'running',

  posts_fetched integer default 0,
  posts_created integer default 0,
  posts_updated integer default 0,
  posts_deleted integer default 0,
  media_downloaded integer default 0,
  media_failed integer default 0,

  error_message text,
  error_details jsonb,

  started_at timestamptz not null default now(),
  completed_at timestamptz,
  duration_ms integer,

  metadata jsonb default '{}'::jsonb,

  created_at timestamptz not null default now()
);

create index sync_logs_account_id_idx on public.sync_logs (account_id);
create index sync_logs_user_id_idx on public.sync_logs (user_id);
create index sync_logs_started_at_idx on public.sync_logs (started_at desc);
create index sync_logs_account_started_at_idx on public.sync_logs (account_id, started_at desc);
create index sync_logs_status_idx on public.sync_logs (status);
create index sync_logs_sync_type_idx on public.sync_logs (sync_type);

-- "Calculate duration_ms on completion": a log that leaves 'running' gets its
-- completed_at (if not given) and duration_ms.
create function public.calculate_sync_duration() returns trigger
language plpgsql
set search_path = ''
as $$
begin
  if new.status is distinct from 'running' and new.completed_at is null then
    new.completed_at := now();
  end if;
  if new.completed_at is not null
     and (tg_op = 'INSERT' or new.completed_at is distinct from old.completed_at or new.duration_ms is null) then
    new.duration_ms := least(2147483647, greatest(0, round(extract(epoch from (new.completed_at - new.started_at)) * 1000)))::integer;
  end if;
  return new;
end
$$;

create trigger calculate_sync_logs_duration
  before insert or update on public.sync_logs
  for each row execute function public.calculate_sync_duration();

-- "Update connected_accounts.last_sync_at on completion" (with
-- last_sync_status; error_count increments on failure and resets on success).
create function public.update_account_last_sync() returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  if new.account_id is null or new.status is null or new.status = 'running' then
    return new;
  end if;
  if tg_op = 'UPDATE' and old.status is not distinct from new.status
     and old.completed_at is not distinct from new.completed_at then
    return new;
  end if;
  update public.connected_accounts ca
     set last_sync_at = coalesce(new.completed_at, now()),
         last_sync_status = case new.status
                              when 'success' then 'success'
                              when 'partial' then 'partial'
                              when 'cancelled' then 'cancelled'
                              else 'failed' end,
         error_count = case new.status
                         when 'success' then 0
                         when 'failed' then coalesce(ca.error_count, 0) + 1
                         else ca.error_count end
   where ca.id = new.account_id;
  return new;
end
$$;
revoke all on function public.update_account_last_sync() from public, anon, authenticated;

create trigger update_connected_account_last_sync
  after insert or update on public.sync_logs
  for each row execute function public.update_account_last_sync();

alter table public.sync_logs enable row level security;
create policy "Users can read their own sync logs"
  on public.sync_logs for select to authenticated using (auth.uid() = user_id);

-- engagement_history -------------------------------------------------------------

create table public.engagement_history (
  id uuid primary key default gen_random_uuid(),
  post_id uuid not null references public.posts (id) on delete cascade,
  engagement_stats jsonb not null,
  recorded_at timestamptz not null default now(),
  constraint unique_post_recording unique (post_id, recorded_at)
);

alter table public.engagement_history enable row level security;
create policy "Users can read the engagement history of their own posts"
  on public.engagement_history for select to authenticated
  using (exists (select 1 from public.posts p where p.id = post_id and p.user_id = auth.uid()));
