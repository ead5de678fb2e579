-- 0005: seed 002 (Nexus), content adaptation.
--
-- content_adaptations, voice_profiles (exactly one default per user: the
-- first profile becomes the default, a new default unsets the others,
-- unsetting or deleting the default promotes another; the seed's unique
-- partial index), published_posts (the result of every publish, from any
-- seed), with the seed's index names and policies. Seed 002's
-- scheduled_posts is the view nexus_scheduled_posts in 0006.

-- content_adaptations ------------------------------------------------------------

create table public.content_adaptations (
  id uuid primary key default gen_random_uuid(),
  user_id uuid not null references public.users (id) on delete cascade,
  original_idea text not null,
  idea_hash text,
  adaptations jsonb not null default '{}'::jsonb,
  tone text,
  target_audience text,
  voice_profile_id uuid,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  last_used_at timestamptz,
  constraint idea_hash_is_sha256_hex check (idea_hash is null or idea_hash ~ '^[0-9a-f]{64}$')
);
create index idx_content_adaptations_user_id on public.content_adaptations (user_id);
create index idx_content_adaptations_created_at on public.content_adaptations (created_at desc);
create index idx_content_adaptations_idea_hash on public.content_adaptations (idea_hash);

create trigger update_content_adaptations_updated_at
  before update on public.content_adaptations
  for each row execute function public.update_updated_at_column();

alter table public.content_adaptations enable row level security;
create policy "Users can read their own adaptations"
  on public.content_adaptations for select to authenticated using (auth.uid() = user_id);
create policy "Users can create their own adaptations"
  on public.content_adaptations for insert to authenticated with check (auth.uid() = user_id);
create policy "Users can update their own adaptations"
  on public.content_adaptations for update to authenticated
  using (auth.uid() = user_id) with check (auth.uid() = user_id);
create policy "Users can delete their own adaptations"
  on public.content_adaptations for delete to authenticated using (auth.uid() = user_id);

-- voice_profiles -----------------------------------------------------------------

create table public.voice_profiles (
  id uuid primary key default gen_random_uuid(),
  user_id uuid not null references public.users (id) on delete cascade,
  name text not null,
  is_default boolean not null default false,
  characteristics jsonb not null default '{}'::jsonb,
  sample_posts text[],
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  last_used_at timestamptz
);
create index idx_voice_profiles_user_id on public.voice_profiles (user_id);
create unique index idx_voice_profiles_user_default on public.voice_profiles (user_id) where is_default = true;

alter table public.content_adaptations
  add constraint content_adaptations_voice_profile_id_fkey
  foreign key (voice_profile_id) references public.voice_profiles (id) on delete set null;

create trigger update_voice_profiles_updated_at
  before update on public.voice_profiles
  for each row execute function public.update_updated_at_column();

-- "Set Default Voice Profile": every user with profiles has exactly one default.
create function public.set_default_voice_profile() returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  if pg_catalog.pg_trigger_depth() > 1 then
    return new;  -- our own adjustments of the other rows
  end if;
  if new.is_default then
    update public.voice_profiles v
       set is_default = false
     where v.user_id = new.user_id and v.id <> new.id and v.is_default;
  elsif tg_op = 'INSERT' then
    if not exists (select 1 from public.voice_profiles v where v.user_id = new.user_id) then
      new.is_default := true;  -- the first profile is the default
    end if;
  elsif old.is_default then
    if not exists (select 1 from public.voice_profiles v where v.user_id = new.user_id and v.id <> new.id) then
      new.is_default := true;  -- the only profile stays the default
    end if;
  end if;
  return new;
end
$$;
revoke all on function public.set_default_voice_profile() from public, anon, authenticated;

create trigger set_default_voice_profile
  before insert or update of is_default on public.voice_profiles
  for each row execute function public.set_default_voice_profile();

-- After the default is unset or deleted, the oldest remaining profile takes over.
create function public.promote_default_voice_profile() returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  if pg_catalog.pg_trigger_depth() > 1 then
    return null;
  end if;
  if old.is_default and (tg_op = 'DELETE' or not new.is_default) then
    if not exists (select 1 from public.voice_profiles v where v.user_id = old.user_id and v.is_default) then
      update public.voice_profiles v
         set is_default = true
       where v.id = (select v2.id from public.voice_profiles v2
                      where v2.user_id = old.user_id and v2.id <> old.id
                      order by v2.created_at, v2.id limit 1);
    end if;
  end if;
  return null;
end
$$;
revoke all on function public.promote_default_voice_profile() from public, anon, authenticated;

create trigger promote_default_voice_profile
  after update of is_default or delete on public.voice_profiles
  for each row execute function public.promote_default_voice_profile();

alter table public.voice_profiles enable row level security;
create policy "Users can read their own voice profiles"
  on public.voice_profiles for select to authenticated using (auth.uid() = user_id);
create policy "Users can create their own voice profiles"
  on public.voice_profiles for insert to authenticated with check (auth.uid() = user_id);
create policy "Users can update their own voice profiles"
  on public.voice_profiles for update to authenticated
  using (auth.uid() = user_id) with check (auth.uid() = user_id);
create policy "Users can delete all but their last voice profile"
  on public.voice_profiles for delete to authenticated
  using (
    auth.uid() = user_id
    and exists (select 1 from public.voice_profiles other
                 where other.user_id = voice_profiles.user_id and other.id <> voice_profiles.id)
  );

-- published_posts ----------------------------------------------------------------

create table public.published_posts (
  id uuid primary key default gen_random_uuid(),
  user_id uuid not null references public.users (id) on delete cascade,
  adaptation_id uuid references public.content_adaptations (id) on delete set null,
  platform_connection_id uuid references public.connected_accounts (id) on delete set null,
  platform public.platform_enum not null,
  platform_post_id text,
  status text not null default 'pending',
  content text not null,
  metadata jsonb default '{}'::jsonb,
  metrics jsonb default '{}'::jsonb,
  scheduled_for timestamptz,
  published_at timestamptz,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  constraint status_is_known check (status in ('pending', 'scheduled', 'published', 'failed', 'deleted'))
);
comment on table public.published_posts is
  'Seed 002: the result of every publish (platform_post_id = at-uri or platform id; metadata holds cid and rkey).';
comment on column public.published_posts.platform_connection_id is 'A connected_accounts id (seed 002 name).';

create index idx_published_posts_user_id on public.published_posts (user_id);
create index idx_published_posts_status on public.published_posts (status);
create index idx_published_posts_platform on public.published_posts (platform);
create index idx_published_posts_scheduled on public.published_posts (scheduled_for) where status = 'scheduled';
create index idx_published_posts_adaptation_id on public.published_posts (adaptation_id);
create unique index published_posts_platform_post_key
  on public.published_posts (platform, platform_post_id) where platform_post_id is not null;

create trigger update_published_posts_updated_at
  before update on public.published_posts
  for each row execute function public.update_updated_at_column();

alter table public.published_posts enable row level security;
create policy "Users can read their own published posts"
  on public.published_posts for select to authenticated using (auth.uid() = user_id);
create policy "Users can create their own published posts"
  on public.published_posts for insert to authenticated with check (auth.uid() = user_id);
create policy "Users can update their own published posts"
  on public.published_posts for update to authenticated
  using (auth.uid() = user_id) with check (auth.uid() = user_id);
create policy "Users can delete their own unpublished posts"
  on public.published_posts for delete to authenticated
  using (auth.uid() = user_id and status <> 'published');
