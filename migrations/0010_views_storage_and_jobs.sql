-- 0010: materialized views, maintenance RPCs, storage buckets, pg_cron jobs.
--
-- * public_posts (seed 001): a correct version of the seed's sketch (which
--   referenced columns that do not exist): published, not deleted posts with
--   engagement from ingested_posts.post_data and downloaded media from
--   media_downloads joined through ingested_posts; refresh_public_posts().
-- * admin_stats (seed 004's admin stats materialized view), refreshed by
--   refresh_admin_stats(); get_admin_stats() for admins.
-- * cleanup_old_generations(days): delete failed generations older than N days.
-- * run_maintenance(worker_id): one maintenance pass (refresh both views, clean
--   old failed generations and sync logs older than 90 days, release expired
--   queue leases) for Postgres without pg_cron.
-- * Storage buckets media, generations, lora-training-images, lora-models and
--   their storage.objects policies (seed 001's "Users can access own media").
-- * pg_cron jobs refresh-admin-stats and cleanup-old-generations, created only
--   when the pg_cron extension exists (the maintenance component does the
--   same work elsewhere).
-- * public.outpost_schema_migrations (the runner's table, CONTRACT.md) with RLS,
--   created here only if the runner has not created it.
-- Materialized views cannot carry RLS, so they are readable by service_role only.

-- public_posts -----------------------------------------------------------------

create materialized view public.public_posts as
select
  p.id,
  p.user_id,
  p.platform,
  p.content_type,
  p.text_content,
  p.created_at_platform,
  coalesce(ip.post_data -> 'engagement_stats', ip.post_data -> 'engagement', ip.post_data -> 'metrics')
    as engagement_stats,
  coalesce(m.media, '[]'::jsonb) as media
from public.posts p
left join lateral (
  select ip.id, ip.post_data
    from public.ingested_posts ip
   where ip.platform = p.platform
     and ip.platform_post_id = p.platform_post_id
   order by ip.created_at desc
   limit 1
) ip on true
left join lateral (
  select jsonb_agg(jsonb_build_object(
           'id', md.id,
           'original_url', md.original_url,
           'url_sha256', encode(sha256(convert_to(md.original_url, 'UTF8')), 'hex'),
           'storage_prefix', md.user_id::text || '/' || p.platform::text || '/'
                             || encode(sha256(convert_to(md.original_url, 'UTF8')), 'hex'))
         order by md.created_at, md.id) as media
    from public.media_downloads md
   where md.ingested_post_id = ip.id
     and md.status = 'downloaded'
) m on true
where p.published = true
  and p.deleted_on_platform = false;

create unique index public_posts_id_key on public.public_posts (id);
create index public_posts_created_at_platform_idx on public.public_posts (created_at_platform desc);
create index public_posts_user_id_idx on public.public_posts (user_id, created_at_platform desc);

revoke all on public.public_posts from public, anon, authenticated;
grant select on public.public_posts to service_role;

create function public.refresh_public_posts() returns void
language plpgsql
security definer
set search_path = ''
as $$
begin
  refresh materialized view concurrently public.public_posts;
end
$$;
revoke all on function public.refresh_public_posts() from public, anon, authenticated;
grant execute on function public.refresh_public_posts() to service_role;

-- admin_stats ------------------------------------------------------------------

create materialized view public.admin_stats as
select
  1 as id,
  (select count(*) from public.users) as total_users,
  (select count(*) from public.users u where u.is_active) as active_users,
  (select count(*) from public.users u where u.created_at >= now() - interval '7 days') as new_users_7d,
  (select coalesce(sum(u.credits), 0) from public.users u) as total_credits,
  (select count(*) from public.generations) as total_generations,
  (select count(*) from public.generations g where g.created_at >= now() - interval '24 hours') as generations_24h,
  (select count(*) from public.generations g where g.created_at >= now() - interval '7 days') as generations_7d,
  (select count(*) from public.generations g where g.status in ('pending', 'starting', 'processing')) as processing_generations,
  (select count(*) from public.generations g where g.status = 'failed') as failed_generations,
  (select coalesce(sum(g.cost_usd), 0) from public.generations g) as total_cost_usd,
  (select coalesce(sum(g.cost_usd), 0) from public.generations g where g.created_at >= now() - interval '30 days') as cost_30d_usd,
  (select count(*) from public.workspaces) as total_workspaces,
  (select count(*) from public.user_loras) as total_loras,
  (select count(*) from public.support_tickets t where t.status in ('open', 'in_progress')) as open_support_tickets,
  now() as refreshed_at;

create unique index admin_stats_id_key on public.admin_stats (id);

revoke all on public.admin_stats from public, anon, authenticated;
grant select on public.admin_stats to service_role;

create function public.refresh_admin_stats() returns void
language plpgsql
security definer
set search_path = ''
as $$
begin
  refresh materialized view concurrently public.admin_stats;
end
$$;
revoke all on function public.refresh_admin_stats() from public, anon, authenticated;
grant execute on function public.refresh_admin_stats() to service_role;

-- The admin dashboard reads the stats through this (admins and the service only).
create function public.get_admin_stats() returns jsonb
language plpgsql stable
security definer
set search_path = ''
as $$
begin
  if not (public.request_is_service() or public.is_admin()) then
    raise exception 'get_admin_stats: admins only' using errcode = '42501';
  end if;
  return (select to_jsonb(s.*) from public.admin_stats s limit 1);
end
$$;
revoke all on function public.get_admin_stats() from public, anon;
grant execute on function public.get_admin_stats() to authenticated, service_role;

-- cleanup_old_generations --------------------------------------------------------

create function public.cleanup_old_generations(days integer default 90) returns integer
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_deleted integer;
begin
  if days is null or days < 1 then
    raise exception 'cleanup_old_generations: days must be at least 1' using errcode = '22023';
  end if;
  delete from public.generations g
   where g.status = 'failed'
     and g.created_at < now() - make_interval(days => cleanup_old_generations.days);
  get diagnostics v_deleted = row_count;
  return v_deleted;
end
$$;
revoke all on function public.cleanup_old_generations(integer) from public, anon, authenticated;
grant execute on function public.cleanup_old_generations(integer) to service_role;

-- run_maintenance: one pass of what pg_cron does on Supabase, for the
-- maintenance component (shared/src/sql.rs RUN_MAINTENANCE).
create function public.run_maintenance(
  p_worker_id text default 'maintenance',
  p_now timestamptz default now(),
  p_generation_days integer default 90,
  p_sync_log_days integer default 90
) returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_generations integer;
  v_sync_logs integer;
  v_released jsonb := '{}'::jsonb;
  v_queue text;
begin
  refresh materialized view concurrently public.admin_stats;
  refresh materialized view concurrently public.public_posts;

  delete from public.generations g
   where g.status = 'failed'
     and g.created_at < p_now - make_interval(days => p_generation_days);
  get diagnostics v_generations = row_count;

  delete from public.sync_logs l
   where l.started_at < p_now - make_interval(days => p_sync_log_days)
     and l.status is distinct from 'running';
  get diagnostics v_sync_logs = row_count;

  for v_queue in select d.queue from public.queue_definitions d order by d.queue loop
    v_released := v_released || jsonb_build_object(v_queue, public.queue_release_expired(v_queue, p_now));
  end loop;

  return jsonb_build_object(
    'worker_id', p_worker_id,
    'admin_stats_refreshed', true,
    'public_posts_refreshed', true,
    'generations_deleted', v_generations,
    'sync_logs_deleted', v_sync_logs,
    'leases_released', v_released,
    'ran_at', p_now);
end
$$;
revoke all on function public.run_maintenance(text, timestamptz, integer, integer) from public, anon, authenticated;
grant execute on function public.run_maintenance(text, timestamptz, integer, integer) to service_role;

-- Storage buckets and policies ---------------------------------------------------

insert into storage.buckets (id, name, public, file_size_limit, allowed_mime_types) values
  ('media', 'media', false, 52428800, array['image/*', 'video/*', 'audio/*']),
  ('generations', 'generations', true, null, null),
  ('lora-training-images', 'lora-training-images', false, null, array['image/*']),
  ('lora-models', 'lora-models', false, null, null)
on conflict (id) do nothing;

drop policy if exists "Users can access own media" on storage.objects;
create policy "Users can access own media"
  on storage.objects for all to authenticated
  using (bucket_id = 'media' and (storage.foldername(name))[1] = auth.uid()::text)
  with check (bucket_id = 'media' and (storage.foldername(name))[1] = auth.uid()::text);

drop policy if exists "Anyone can view generations" on storage.objects;
create policy "Anyone can view generations"
  on storage.objects for select to anon, authenticated
  using (bucket_id = 'generations');

drop policy if exists "Users can upload generations to their own folder" on storage.objects;
create policy "Users can upload generations to their own folder"
  on storage.objects for insert to authenticated
  with check (bucket_id = 'generations' and (storage.foldername(name))[1] = auth.uid()::text);

drop policy if exists "Users can update their own generation files" on storage.objects;
create policy "Users can update their own generation files"
  on storage.objects for update to authenticated
  using (bucket_id = 'generations' and (storage.foldername(name))[1] = auth.uid()::text)
  with check (bucket_id = 'generations' and (storage.foldername(name))[1] = auth.uid()::text);

drop policy if exists "Users can delete their own generation files" on storage.objects;
create policy "Users can delete their own generation files"
  on storage.objects for delete to authenticated
  using (bucket_id = 'generations' and (storage.foldername(name))[1] = auth.uid()::text);

drop policy if exists "Users can manage their own LoRA training images" on storage.objects;
create policy "Users can manage their own LoRA training images"
  on storage.objects for all to authenticated
  using (bucket_id = 'lora-training-images' and (storage.foldername(name))[1] = auth.uid()::text)
  with check (bucket_id = 'lora-training-images' and (storage.foldername(name))[1] = auth.uid()::text);

drop policy if exists "Users can read their own LoRA models" on storage.objects;
create policy "Users can read their own LoRA models"
  on storage.objects for select to authenticated
  using (bucket_id = 'lora-models' and (storage.foldername(name))[1] = auth.uid()::text);

-- pg_cron (seed 004), only where the extension exists ----------------------------

do $$
begin
  if exists (select 1 from pg_catalog.pg_extension where extname = 'pg_cron') then
    execute $c$select cron.schedule('refresh-admin-stats', '*/5 * * * *', 'SELECT public.refresh_admin_stats()')$c$;
    execute $c$select cron.schedule('cleanup-old-generations', '0 3 * * 0', 'SELECT public.cleanup_old_generations(90)')$c$;
  else
    raise notice 'pg_cron is not installed: cron jobs skipped (the maintenance component runs them)';
  end if;
end
$$;

-- The migration runner's table (CONTRACT.md), locked down ------------------------

create table if not exists public.outpost_schema_migrations (
  version text primary key,
  name text,
  checksum text,
  applied_at timestamptz not null default now()
);
alter table public.outpost_schema_migrations enable row level security;
revoke all on public.outpost_schema_migrations from anon, authenticated;
