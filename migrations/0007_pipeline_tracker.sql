-- 0007: seed 003 (pipeline job tracker).
--
-- jobs (run_id text primary key, status pending/running/completed/failed/
-- cancelled), job_events from bots, artifacts with size/type/checksum,
-- prompts. Owner-based RLS on owner_id; prompts are readable by signed-in
-- users and written by the service role. job_events and artifacts inherit
-- their job's owner when none is given.

create table public.jobs (
  run_id text primary key,
  project_spec jsonb not null,
  owner_id uuid references public.users (id) on delete cascade,
  status text not null default 'pending',
  started_at timestamptz,
  completed_at timestamptz,
  error_message text,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  constraint status_is_known check (status in ('pending', 'running', 'completed', 'failed', 'cancelled')),
  constraint run_id_not_empty check (length(run_id) > 0)
);
create index jobs_owner_id_created_at_idx on public.jobs (owner_id, created_at desc);
create index jobs_status_idx on public.jobs (status);

create trigger update_jobs_updated_at
  before update on public.jobs
  for each row execute function public.update_updated_at();

-- started_at when a job starts running, completed_at when it ends.
create function public.update_job_status_times() returns trigger
language plpgsql
set search_path = ''
as $$
begin
  if new.status = 'running' and new.started_at is null then
    new.started_at := now();
  end if;
  if new.status in ('completed', 'failed', 'cancelled') and new.completed_at is null then
    new.completed_at := now();
  end if;
  return new;
end
$$;

create trigger update_jobs_status_times
  before insert or update of status on public.jobs
  for each row execute function public.update_job_status_times();

alter table public.jobs enable row level security;
create policy "Users can read their own jobs"
  on public.jobs for select to authenticated using (auth.uid() = owner_id);
create policy "Users can create their own jobs"
  on public.jobs for insert to authenticated with check (auth.uid() = owner_id);
create policy "Users can update their own jobs"
  on public.jobs for update to authenticated
  using (auth.uid() = owner_id) with check (auth.uid() = owner_id);
create policy "Users can delete their own jobs"
  on public.jobs for delete to authenticated using (auth.uid() = owner_id);

-- A job's children take the job's owner unless one is given.
create function public.inherit_job_owner() returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  if new.owner_id is null then
    select j.owner_id into new.owner_id from public.jobs j where j.run_id = new.run_id;
  end if;
  return new;
end
$$;
revoke all on function public.inherit_job_owner() from public, anon, authenticated;

create table public.job_events (
  id uuid primary key default gen_random_uuid(),
  run_id text not null references public.jobs (run_id) on delete cascade,
  bot_name text not null,
  event_type text not null,
  payload jsonb,
  owner_id uuid references public.users (id) on delete cascade,
  created_at timestamptz not null default now()
);
create index job_events_run_id_created_at_idx on public.job_events (run_id, created_at);
create index job_events_owner_id_idx on public.job_events (owner_id);

create trigger job_events_inherit_owner
  before insert on public.job_events
  for each row execute function public.inherit_job_owner();

alter table public.job_events enable row level security;
create policy "Users can read their own job events"
  on public.job_events for select to authenticated using (auth.uid() = owner_id);
create policy "Users can add events to their own jobs"
  on public.job_events for insert to authenticated
  with check (auth.uid() = owner_id
              and exists (select 1 from public.jobs j where j.run_id = job_events.run_id and j.owner_id = auth.uid()));
create policy "Users can delete their own job events"
  on public.job_events for delete to authenticated using (auth.uid() = owner_id);

create table public.artifacts (
  id uuid primary key default gen_random_uuid(),
  run_id text not null references public.jobs (run_id) on delete cascade,
  kind text not null,
  url text,
  meta jsonb,
  owner_id uuid references public.users (id) on delete cascade,
  file_size bigint,
  content_type text,
  checksum text,
  created_at timestamptz not null default now(),
  constraint file_size_not_negative check (file_size is null or file_size >= 0)
);
create index artifacts_run_id_idx on public.artifacts (run_id);
create index artifacts_owner_id_idx on public.artifacts (owner_id);

create trigger artifacts_inherit_owner
  before insert on public.artifacts
  for each row execute function public.inherit_job_owner();

alter table public.artifacts enable row level security;
create policy "Users can read their own artifacts"
  on public.artifacts for select to authenticated using (auth.uid() = owner_id);
create policy "Users can add artifacts to their own jobs"
  on public.artifacts for insert to authenticated
  with check (auth.uid() = owner_id
              and exists (select 1 from public.jobs j where j.run_id = artifacts.run_id and j.owner_id = auth.uid()));
create policy "Users can update their own artifacts"
  on public.artifacts for update to authenticated
  using (auth.uid() = owner_id) with check (auth.uid() = owner_id);
create policy "Users can delete their own artifacts"
  on public.artifacts for delete to authenticated using (auth.uid() = owner_id);

create table public.prompts (
  id text primary key,
  category text not null,
  context text not null,
  prompt_text text not null,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);
create index prompts_category_idx on public.prompts (category);

create trigger update_prompts_updated_at
  before update on public.prompts
  for each row execute function public.update_updated_at();

alter table public.prompts enable row level security;
create policy "Signed-in users can read prompts"
  on public.prompts for select to authenticated using (true);
create policy "Service role can manage prompts"
  on public.prompts for all to service_role using (true) with check (true);
