-- 0006: the publishing queue and the AI image queue (seeds 000 and 002).
--
-- * scheduled_posts: ONE queue for seed 000 (draft + account, run_at,
--   queued/posting/posted/failed/cancelled, attempt_count, locked_at/by)
--   and seed 002 (adaptation snapshot + platform connection, scheduled_for,
--   timezone, retry_count, last_error, published_post_id). Canonical names
--   are seed 000's; a dead post is 'failed' with dead_lettered_at;
--   'cancelled' is never claimed.
-- * nexus_scheduled_posts: seed 002's scheduled_posts as a security_invoker
--   view, insertable and updatable through INSTEAD OF triggers
--   (scheduled_for <-> run_at, retry_count <-> attempt_count,
--   platform_connection_id <-> account_id, status scheduled <-> queued,
--   processing <-> posting, completed <-> posted, failed, cancelled).
-- * post_events: the audit trail of scheduled posts.
-- * ai_jobs (queued/running/succeeded/failed), ai_assets, ai_job_events.
-- Queue functions are in 0009.

-- scheduled_posts ----------------------------------------------------------------

create table public.scheduled_posts (
  id uuid primary key default gen_random_uuid(),
  user_id uuid not null references public.users (id) on delete cascade,

  -- seed 000
  draft_id uuid references public.drafts (id) on delete set null,
  account_id uuid references public.connected_accounts (id) on delete set null,
  account_did text,
  run_at timestamptz not null default now(),
  status text not null default 'queued',
  attempt_count integer not null default 0,
  locked_at timestamptz,
  locked_by text,

  -- seed 002
  adaptation_id uuid references public.content_adaptations (id) on delete set null,
  content text,
  platform public.platform_enum not null default 'bluesky',
  timezone text not null default 'UTC',
  last_error text,
  published_post_id uuid references public.published_posts (id) on delete set null,

  -- publishing
  media jsonb not null default '[]'::jsonb,
  langs text[],
  embed jsonb,
  posted_at timestamptz,

  -- work queue (CONTRACT.md)
  max_attempts integer not null default 5,
  lease_expires_at timestamptz,
  lease_token bigint,
  dead_lettered_at timestamptz,

  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),

  constraint status_is_known check (status in ('queued', 'posting', 'posted', 'failed', 'cancelled')),
  constraint attempts_not_negative check (attempt_count >= 0),
  constraint max_attempts_positive check (max_attempts >= 1),
  constraint media_is_array check (jsonb_typeof(media) = 'array'),
  constraint at_most_three_langs check (langs is null or cardinality(langs) <= 3)
);
comment on table public.scheduled_posts is
  'One publishing queue for seeds 000 and 002 (seed 002 view: nexus_scheduled_posts). queued -> posting -> posted | failed (dead) ; cancelled.';
comment on column public.scheduled_posts.account_id is 'A connected_accounts id (seed 002: platform_connection_id).';

create index idx_scheduled_posts_user_id on public.scheduled_posts (user_id);
create index idx_scheduled_posts_status on public.scheduled_posts (status);
create index idx_scheduled_posts_scheduled_for on public.scheduled_posts (run_at);
create index idx_scheduled_posts_ready on public.scheduled_posts (run_at, id) where status = 'queued';
create index scheduled_posts_lease_idx on public.scheduled_posts (lease_expires_at) where status = 'posting';
create index scheduled_posts_account_id_idx on public.scheduled_posts (account_id);

create trigger update_scheduled_posts_updated_at
  before update on public.scheduled_posts
  for each row execute function public.update_updated_at_column();

alter table public.scheduled_posts enable row level security;
create policy "Users can read their own scheduled posts"
  on public.scheduled_posts for select to authenticated using (auth.uid() = user_id);
create policy "Users can schedule their own posts"
  on public.scheduled_posts for insert to authenticated
  with check (auth.uid() = user_id and status = 'queued');
create policy "Users can modify their own unprocessed posts"
  on public.scheduled_posts for update to authenticated
  using (auth.uid() = user_id and status = 'queued')
  with check (auth.uid() = user_id and status in ('queued', 'cancelled'));
create policy "Users can cancel their own unprocessed posts"
  on public.scheduled_posts for delete to authenticated
  using (auth.uid() = user_id and status = 'queued');

-- post_events ----------------------------------------------------------------------

create table public.post_events (
  id uuid primary key default gen_random_uuid(),
  scheduled_post_id uuid not null references public.scheduled_posts (id) on delete cascade,
  type text not null,
  detail jsonb not null default '{}'::jsonb,
  created_at timestamptz not null default now()
);
comment on table public.post_events is
  'Audit trail of scheduled posts: claimed, lease_expired, success, retry, failure, deferred.';
create index post_events_scheduled_post_id_idx on public.post_events (scheduled_post_id, created_at);

alter table public.post_events enable row level security;
create policy "Users can read events of their own scheduled posts"
  on public.post_events for select to authenticated
  using (exists (select 1 from public.scheduled_posts sp
                  where sp.id = scheduled_post_id and sp.user_id = auth.uid()));

-- nexus_scheduled_posts (seed 002's scheduled_posts) -------------------------------

create function public.nexus_status_from_canonical(p_status text) returns text
language sql immutable
set search_path = ''
as $$
  select case p_status
           when 'queued' then 'scheduled'
           when 'posting' then 'processing'
           when 'posted' then 'completed'
           else p_status end
$$;

create function public.nexus_status_to_canonical(p_status text) returns text
language sql immutable
set search_path = ''
as $$
  select case p_status
           when 'scheduled' then 'queued'
           when 'processing' then 'posting'
           when 'completed' then 'posted'
           else p_status end
$$;

create view public.nexus_scheduled_posts with (security_invoker = true) as
  select sp.id,
         sp.user_id,
         sp.adaptation_id,
         sp.content,
         sp.account_id as platform_connection_id,
         sp.platform::text as platform,
         public.nexus_status_from_canonical(sp.status) as status,
         sp.run_at as scheduled_for,
         sp.timezone,
         sp.attempt_count as retry_count,
         sp.last_error,
         sp.published_post_id,
         sp.created_at,
         sp.updated_at
    from public.scheduled_posts sp;
comment on view public.nexus_scheduled_posts is
  'Seed 002 scheduled_posts over public.scheduled_posts (scheduled/processing/completed = queued/posting/posted).';

create function public.nexus_scheduled_posts_write() returns trigger
language plpgsql
set search_path = ''
as $$
declare
  v_row public.scheduled_posts;
begin
  if tg_op = 'INSERT' then
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
  elsif tg_op = 'UPDATE' then
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
  else
    delete from public.scheduled_posts sp where sp.id = old.id returning * into v_row;
    if not found then
      return null;
    end if;
    return old;
  end if;

  new.id := v_row.id;
  new.user_id := v_row.user_id;
  new.platform := v_row.platform::text;
  new.status := public.nexus_status_from_canonical(v_row.status);
  new.scheduled_for := v_row.run_at;
  new.timezone := v_row.timezone;
  new.retry_count := v_row.attempt_count;
  new.created_at := v_row.created_at;
  new.updated_at := v_row.updated_at;
  return new;
end
$$;

create trigger nexus_scheduled_posts_insert
  instead of insert on public.nexus_scheduled_posts
  for each row execute function public.nexus_scheduled_posts_write();
create trigger nexus_scheduled_posts_update
  instead of update on public.nexus_scheduled_posts
  for each row execute function public.nexus_scheduled_posts_write();
create trigger nexus_scheduled_posts_delete
  instead of delete on public.nexus_scheduled_posts
  for each row execute function public.nexus_scheduled_posts_write();

-- ai_jobs --------------------------------------------------------------------------

create table public.ai_jobs (
  id uuid primary key default gen_random_uuid(),
  user_id uuid not null references public.users (id) on delete cascade,
  kind text not null default 'image',
  provider text not null default 'venice',
  model text,
  prompt text not null,
  params jsonb not null default '{}'::jsonb,
  status text not null default 'queued',
  attempt_count integer not null default 0,
  locked_at timestamptz,
  locked_by text,
  result jsonb,
  completed_at timestamptz,

  -- work queue (CONTRACT.md)
  max_attempts integer not null default 5,
  next_attempt_at timestamptz not null default now(),
  lease_expires_at timestamptz,
  lease_token bigint,
  last_error text,
  dead_lettered_at timestamptz,

  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),

  constraint status_is_known check (status in ('queued', 'running', 'succeeded', 'failed')),
  constraint attempts_not_negative check (attempt_count >= 0),
  constraint max_attempts_positive check (max_attempts >= 1)
);
comment on table public.ai_jobs is
  'Seed 000: AI image jobs (Venice); a work queue (queued -> running -> succeeded | failed).';

create index ai_jobs_user_id_created_at_idx on public.ai_jobs (user_id, created_at desc);
create index ai_jobs_claim_idx on public.ai_jobs (next_attempt_at, id) where status = 'queued';
create index ai_jobs_lease_idx on public.ai_jobs (lease_expires_at) where status = 'running';

create trigger update_ai_jobs_updated_at
  before update on public.ai_jobs
  for each row execute function public.update_updated_at();

alter table public.ai_jobs enable row level security;
create policy "Users can read their own AI jobs"
  on public.ai_jobs for select to authenticated using (auth.uid() = user_id);
create policy "Users can create their own AI jobs"
  on public.ai_jobs for insert to authenticated
  with check (auth.uid() = user_id and status = 'queued');
create policy "Users can delete their own queued AI jobs"
  on public.ai_jobs for delete to authenticated
  using (auth.uid() = user_id and status = 'queued');

create table public.ai_assets (
  id uuid primary key default gen_random_uuid(),
  job_id uuid not null references public.ai_jobs (id) on delete cascade,
  user_id uuid not null references public.users (id) on delete cascade,
  bucket text not null,
  path text not null,
  mime text,
  width integer,
  height integer,
  bytes bigint,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  constraint ai_assets_bucket_path_key unique (bucket, path),
  constraint dimensions_positive check ((width is null or width > 0) and (height is null or height > 0))
);
create index ai_assets_job_id_idx on public.ai_assets (job_id);
create index ai_assets_user_id_idx on public.ai_assets (user_id, created_at desc);

create trigger update_ai_assets_updated_at
  before update on public.ai_assets
  for each row execute function public.update_updated_at();

alter table public.ai_assets enable row level security;
create policy "Users can read their own AI assets"
  on public.ai_assets for select to authenticated using (auth.uid() = user_id);
create policy "Users can delete their own AI assets"
  on public.ai_assets for delete to authenticated using (auth.uid() = user_id);

create table public.ai_job_events (
  id uuid primary key default gen_random_uuid(),
  job_id uuid not null references public.ai_jobs (id) on delete cascade,
  type text not null,
  detail jsonb not null default '{}'::jsonb,
  created_at timestamptz not null default now()
);
comment on table public.ai_job_events is
  'Audit trail of ai_jobs: claimed, lease_expired, success, retry, failure, deferred.';
create index ai_job_events_job_id_idx on public.ai_job_events (job_id, created_at);

alter table public.ai_job_events enable row level security;
create policy "Users can read events of their own AI jobs"
  on public.ai_job_events for select to authenticated
  using (exists (select 1 from public.ai_jobs j where j.id = job_id and j.user_id = auth.uid()));
