-- 0013: the data rules of the `ingest` component (seed 001, Trove).
--
-- * claim_next_archive_items(): the ingested_items claim of the queue
--   contract (0009), restricted to the archive platforms (bluesky, strava,
--   instagram) and to platforms that are not paused. Replicate items stay
--   pending for the AI dispatcher; ingest never claims them.
-- * ingest_platform_pauses: "this platform's rate limit is used up until T"
--   (Strava's 15-minute and daily windows, 429 Retry-After). Claims of items
--   and accounts skip a paused platform, so the work waits, not fails.
-- * account_sync_state: the polling lease of each connected account (so two
--   runs never sync one account at once) and where an unfinished sync
--   resumes (a backfill, or a catch-up cut short by the run's time budget).
--   claim_next_sync_account() takes one due account and opens its running
--   sync_logs row; finish_account_sync() closes the log (counts, status,
--   duration_ms by 0004's trigger, which also moves last_sync_at,
--   last_sync_status and error_count) and moves next_sync_at on.
-- * archive_platform_posts(): the one write of fetched posts: per post an
--   ingested_posts row (raw platform data) and a normalized posts row,
--   upserted on (account, platform post id), and a media_downloads row per
--   new media URL. Re-processing never duplicates anything.
-- * ingest_account_for_item(), mark_platform_post_deleted(),
--   disconnect_platform_account(), mark_account_token_expired(),
--   save_refreshed_account_tokens(), pause_platform().
-- Everything returns one jsonb value and is for the service role only.

-- Platform pauses ------------------------------------------------------------------

create table public.ingest_platform_pauses (
  platform public.platform_enum primary key,
  not_before timestamptz not null,
  reason text,
  updated_at timestamptz not null default now()
);
comment on table public.ingest_platform_pauses is
  'Rate-limit pauses: no ingest work for platform before not_before (Strava windows, Retry-After). Service role only.';

create trigger update_ingest_platform_pauses_updated_at
  before update on public.ingest_platform_pauses
  for each row execute function public.update_updated_at();

alter table public.ingest_platform_pauses enable row level security;
revoke all on public.ingest_platform_pauses from anon, authenticated;

-- Whether p_platform is paused at p_now.
create function public.ingest_platform_paused(p_platform public.platform_enum, p_now timestamptz)
returns boolean
language sql stable
set search_path = ''
as $$
  select exists (
    select 1 from public.ingest_platform_pauses pp
     where pp.platform = p_platform and pp.not_before > p_now)
$$;

-- Pause p_platform until p_not_before (a later pause wins over an earlier one).
create function public.pause_platform(
  p_platform text,
  p_not_before timestamptz,
  p_reason text default null,
  p_now timestamptz default now()
) returns jsonb
language plpgsql
set search_path = ''
as $$
declare
  v_row public.ingest_platform_pauses;
begin
  insert into public.ingest_platform_pauses as pp (platform, not_before, reason, updated_at)
  values (p_platform::public.platform_enum, p_not_before, p_reason, p_now)
  on conflict (platform) do update
    set not_before = case when excluded.not_before > pp.not_before or pp.not_before <= p_now
                          then excluded.not_before else pp.not_before end,
        reason = case when excluded.not_before > pp.not_before or pp.not_before <= p_now
                      then excluded.reason else pp.reason end,
        updated_at = p_now
  returning * into v_row;
  return jsonb_build_object('platform', v_row.platform, 'not_before', v_row.not_before, 'reason', v_row.reason);
end
$$;

-- Items ------------------------------------------------------------------------------

-- The queue contract's claim for ingested_items (same leases, fencing tokens,
-- attempt counting and events as claim_next_ingested_items), limited to the
-- archive platforms that are not paused.
create function public.claim_next_archive_items(
  p_worker_id text,
  p_lease_seconds integer,
  p_max_items integer,
  p_now timestamptz default now()
) returns jsonb
language plpgsql
set search_path = ''
as $$
declare
  v_items jsonb;
  v_item jsonb;
begin
  if p_worker_id is null or length(p_worker_id) = 0 then
    raise exception 'claim: p_worker_id is required' using errcode = '22023';
  end if;
  if p_lease_seconds is null or p_lease_seconds < 1 then
    raise exception 'claim: p_lease_seconds must be at least 1' using errcode = '22023';
  end if;
  if p_max_items is null or p_max_items < 1 or p_max_items > 1000 then
    raise exception 'claim: p_max_items must be between 1 and 1000' using errcode = '22023';
  end if;

  perform public.queue_release_expired('ingested_items', p_now);

  with locked as (
    select q.id
      from public.ingested_items q
     where q.status = 'pending'
       and q.next_attempt_at <= p_now
       and q.platform in ('bluesky', 'strava', 'instagram')
       and not public.ingest_platform_paused(q.platform, p_now)
     order by q.next_attempt_at, q.id
     limit p_max_items
     for update skip locked
  ), claimed as (
    update public.ingested_items t
       set status = 'processing',
           attempts = t.attempts + 1,
           locked_at = p_now,
           locked_by = p_worker_id,
           lease_expires_at = p_now + make_interval(secs => p_lease_seconds),
           lease_token = nextval('public.queue_lease_token_seq'),
           started_at = p_now
      from locked
     where t.id = locked.id
    returning t.*
  )
  select coalesce(jsonb_agg(to_jsonb(c.*) order by c.next_attempt_at, c.id), '[]'::jsonb)
    into v_items
    from claimed c;

  for v_item in select * from jsonb_array_elements(v_items) loop
    perform public.queue_event('ingested_items', (v_item ->> 'id')::uuid, 'claimed',
      (v_item ->> 'lease_token')::bigint, p_worker_id,
      jsonb_build_object('attempt', (v_item ->> 'attempts')::int,
                         'lease_expires_at', v_item -> 'lease_expires_at'),
      p_now);
  end loop;
  return v_items;
end
$$;

-- An account as ingest sees it (tokens stay ciphertext; only the component
-- holds the key).
create function public.ingest_account_json(p_account public.connected_accounts)
returns jsonb
language sql stable
set search_path = ''
as $$
  select case when p_account.id is null then 'null'::jsonb else jsonb_build_object(
    'id', p_account.id,
    'user_id', p_account.user_id,
    'platform', p_account.platform,
    'platform_user_id', p_account.platform_user_id,
    'username', p_account.username,
    'handle', p_account.handle,
    'access_token', p_account.access_token,
    'refresh_token', p_account.refresh_token,
    'token_key_id', p_account.token_key_id,
    'token_expires_at', p_account.token_expires_at,
    'status', p_account.status,
    'sync_enabled', p_account.sync_enabled,
    'metadata', coalesce(p_account.metadata, '{}'::jsonb)) end
$$;

-- The account an item belongs to: the item's own account_id (when it is the
-- account of p_platform_user_id, if given), or else the account with the
-- item's platform and p_platform_user_id (Strava owner_id,
-- Instagram entry id); an active one first, then the oldest. The item is
-- linked to it (account_id, user_id) so its owner can read it. null when
-- there is none.
create function public.ingest_account_for_item(
  p_item_id uuid,
  p_platform_user_id text default null
) returns jsonb
language plpgsql
set search_path = ''
as $$
declare
  v_item public.ingested_items;
  v_account public.connected_accounts;
begin
  select * into v_item from public.ingested_items i where i.id = p_item_id;
  if not found then
    return 'null'::jsonb;
  end if;
  if v_item.account_id is not null then
    select * into v_account from public.connected_accounts ca
     where ca.id = v_item.account_id
       and (p_platform_user_id is null or ca.platform_user_id = p_platform_user_id);
  end if;
  if v_account.id is null and p_platform_user_id is not null then
    select * into v_account
      from public.connected_accounts ca
     where ca.platform = v_item.platform
       and ca.platform_user_id = p_platform_user_id
     order by (coalesce(ca.status, 'active') = 'active') desc, ca.created_at, ca.id
     limit 1;
  end if;
  if v_account.id is null then
    return 'null'::jsonb;
  end if;
  if v_item.account_id is null then
    update public.ingested_items i
       set account_id = v_account.id, user_id = coalesce(i.user_id, v_account.user_id)
     where i.id = p_item_id;
  end if;
  return public.ingest_account_json(v_account);
end
$$;

-- Archiving posts ----------------------------------------------------------------------

-- Archives p_posts (a jsonb array, newest first for polls) for p_account_id.
-- Each element: {platform_post_id, content_type, text_content, html_content?,
-- created_at_platform, updated_at_platform?, published?, post_data,
-- media_urls: [text]}. Per post, under a transaction-level advisory lock on
-- (platform, platform_post_id): the account's ingested_posts row (raw data,
-- status completed) is inserted or updated, then the posts row (its search
-- trigger reads that post_data), then one media_downloads row per URL the
-- post has not queued yet (a URL counts as queued when one with the same
-- part before '?' is, so re-signed CDN URLs are not fetched twice).
-- p_mode 'replace' writes what changed; 'keep_existing' leaves archived
-- posts alone (summaries from a list must not overwrite full records).
-- p_stop_at_known stops after the first post that was already archived.
-- A post archived under another account is skipped, never taken over.
create function public.archive_platform_posts(
  p_account_id uuid,
  p_ingested_item_id uuid,
  p_posts jsonb,
  p_mode text default 'replace',
  p_stop_at_known boolean default false,
  p_now timestamptz default now()
) returns jsonb
language plpgsql
set search_path = ''
as $$
declare
  v_account public.connected_accounts;
  v_post jsonb;
  v_post_id text;
  v_ip public.ingested_posts;
  v_existing public.posts;
  v_posts_id uuid;
  v_result text;
  v_url text;
  v_media integer;
  v_media_total integer := 0;
  v_created integer := 0;
  v_updated integer := 0;
  v_unchanged integer := 0;
  v_skipped integer := 0;
  v_seen integer := 0;
  v_stopped boolean := false;
  v_results jsonb := '[]'::jsonb;
  v_content_type public.content_type_enum;
  v_created_at timestamptz;
  v_updated_at timestamptz;
  v_published boolean;
begin
  if p_mode not in ('replace', 'keep_existing') then
    raise exception 'archive_platform_posts: p_mode must be replace or keep_existing' using errcode = '22023';
  end if;
  if jsonb_typeof(p_posts) is distinct from 'array' then
    raise exception 'archive_platform_posts: p_posts must be a jsonb array' using errcode = '22023';
  end if;
  select * into v_account from public.connected_accounts ca where ca.id = p_account_id;
  if not found then
    raise exception 'archive_platform_posts: no connected account %', p_account_id using errcode = 'P0002';
  end if;

  for v_post in select value from jsonb_array_elements(p_posts) loop
    v_seen := v_seen + 1;
    v_post_id := v_post ->> 'platform_post_id';
    if v_post_id is null or length(v_post_id) = 0 then
      raise exception 'archive_platform_posts: post % has no platform_post_id', v_seen using errcode = '22023';
    end if;
    v_content_type := coalesce(v_post ->> 'content_type', 'post')::public.content_type_enum;
    v_created_at := (v_post ->> 'created_at_platform')::timestamptz;
    v_updated_at := (v_post ->> 'updated_at_platform')::timestamptz;
    v_published := coalesce((v_post ->> 'published')::boolean, true);
    v_media := 0;

    perform pg_catalog.pg_advisory_xact_lock(
      pg_catalog.hashtextextended('archive:' || v_account.platform::text || ':' || v_post_id, 0));

    select * into v_existing
      from public.posts p
     where p.platform = v_account.platform and p.platform_post_id = v_post_id
     for update;
    if v_existing.id is not null and v_existing.account_id <> p_account_id then
      v_skipped := v_skipped + 1;
      v_results := v_results || jsonb_build_object('platform_post_id', v_post_id, 'result', 'skipped',
                                                   'reason', 'archived under another account');
      continue;
    end if;

    select * into v_ip
      from public.ingested_posts ip
     where ip.account_id = p_account_id
       and ip.platform = v_account.platform
       and ip.platform_post_id = v_post_id
     order by ip.created_at desc, ip.id desc
     limit 1
     for update;

    if (v_existing.id is not null or v_ip.id is not null) and p_mode = 'keep_existing' then
      v_result := 'unchanged';
    elsif v_existing.id is not null and v_ip.id is not null
          and v_ip.post_data = v_post -> 'post_data'
          and v_existing.content_type is not distinct from v_content_type
          and v_existing.text_content is not distinct from v_post ->> 'text_content'
          and v_existing.html_content is not distinct from v_post ->> 'html_content'
          and v_existing.created_at_platform = v_created_at
          and (v_updated_at is null or v_existing.updated_at_platform = v_updated_at)
          and v_existing.published is not distinct from v_published
          and v_existing.deleted_on_platform is not true then
      v_result := 'unchanged';
    else
      v_result := case when v_existing.id is null then 'created' else 'updated' end;
      if v_ip.id is null then
        insert into public.ingested_posts
          (ingested_item_id, platform, account_id, user_id, platform_post_id, post_data,
           status, received_at, started_at, completed_at)
        values
          (p_ingested_item_id, v_account.platform, p_account_id, v_account.user_id, v_post_id,
           v_post -> 'post_data', 'completed', p_now, p_now, p_now)
        returning * into v_ip;
      else
        update public.ingested_posts ip
           set post_data = v_post -> 'post_data',
               ingested_item_id = coalesce(p_ingested_item_id, ip.ingested_item_id),
               status = 'completed',
               completed_at = p_now,
               error_message = null
         where ip.id = v_ip.id
        returning * into v_ip;
      end if;

      if v_existing.id is null then
        insert into public.posts
          (account_id, user_id, platform, platform_post_id, content_type, text_content, html_content,
           created_at_platform, updated_at_platform, published, deleted_on_platform)
        values
          (p_account_id, v_account.user_id, v_account.platform, v_post_id, v_content_type,
           v_post ->> 'text_content', v_post ->> 'html_content', v_created_at, v_updated_at,
           v_published, false)
        returning id into v_posts_id;
      else
        -- text_content is always SET so the search trigger re-reads post_data.
        update public.posts p
           set content_type = v_content_type,
               text_content = v_post ->> 'text_content',
               html_content = v_post ->> 'html_content',
               created_at_platform = v_created_at,
               updated_at_platform = coalesce(v_updated_at, p.updated_at_platform),
               published = v_published,
               deleted_on_platform = false
         where p.id = v_existing.id;
        v_posts_id := v_existing.id;
      end if;
    end if;

    -- Media: whenever the post was written, and on every replace (a post
    -- archived before its media was known gets it now).
    if v_ip.id is not null and (v_result <> 'unchanged' or p_mode = 'replace') then
      for v_url in
        select distinct u.value
          from jsonb_array_elements_text(coalesce(v_post -> 'media_urls', '[]'::jsonb)) u
         where length(u.value) > 0
      loop
        if not exists (
          select 1 from public.media_downloads md
           where md.ingested_post_id = v_ip.id
             and split_part(md.original_url, '?', 1) = split_part(v_url, '?', 1)) then
          insert into public.media_downloads (ingested_post_id, user_id, original_url)
          values (v_ip.id, v_account.user_id, v_url)
          on conflict (user_id, original_url) do nothing;
          if found then
            v_media := v_media + 1;
          end if;
        end if;
      end loop;
    end if;
    v_media_total := v_media_total + v_media;

    if v_result = 'created' then
      v_created := v_created + 1;
    elsif v_result = 'updated' then
      v_updated := v_updated + 1;
    else
      v_unchanged := v_unchanged + 1;
    end if;
    v_results := v_results || jsonb_build_object(
      'platform_post_id', v_post_id, 'result', v_result,
      'post_id', coalesce(v_posts_id, v_existing.id), 'ingested_post_id', v_ip.id,
      'media_queued', v_media);
    v_posts_id := null;
    v_existing := null;
    v_ip := null;

    if p_stop_at_known and v_result <> 'created' then
      v_stopped := true;
      exit;
    end if;
  end loop;

  return jsonb_build_object(
    'seen', v_seen,
    'created', v_created,
    'updated', v_updated,
    'unchanged', v_unchanged,
    'skipped', v_skipped,
    'media_queued', v_media_total,
    'stopped_at_known', v_stopped,
    'results', v_results);
end
$$;

-- A post the platform deleted: deleted_on_platform = true (the archive keeps
-- it). {"found": false} when it was never archived for this account.
create function public.mark_platform_post_deleted(
  p_account_id uuid,
  p_platform text,
  p_platform_post_id text,
  p_now timestamptz default now()
) returns jsonb
language plpgsql
set search_path = ''
as $$
declare
  v_id uuid;
begin
  update public.posts p
     set deleted_on_platform = true
   where p.platform = p_platform::public.platform_enum
     and p.platform_post_id = p_platform_post_id
     and p.account_id = p_account_id
  returning p.id into v_id;
  return jsonb_build_object('found', v_id is not null, 'post_id', v_id);
end
$$;

-- Accounts ------------------------------------------------------------------------------

-- The user revoked our access on the platform: disconnected, no syncing, the
-- (now useless) tokens dropped.
create function public.disconnect_platform_account(
  p_account_id uuid,
  p_reason text,
  p_now timestamptz default now()
) returns jsonb
language plpgsql
set search_path = ''
as $$
declare
  v_status public.account_status_enum;
begin
  update public.connected_accounts ca
     set status = 'disconnected',
         sync_enabled = false,
         next_sync_at = null,
         error_message = p_reason,
         access_token = null,
         refresh_token = null,
         token_expires_at = null,
         webhook_subscribed = false
   where ca.id = p_account_id
  returning ca.status into v_status;
  return jsonb_build_object('found', v_status is not null, 'status', v_status);
end
$$;

-- The platform rejected the account's token: token_expired with the reason
-- (platform error text only, never a token).
create function public.mark_account_token_expired(
  p_account_id uuid,
  p_error text,
  p_now timestamptz default now()
) returns jsonb
language plpgsql
set search_path = ''
as $$
declare
  v_status public.account_status_enum;
begin
  update public.connected_accounts ca
     set status = 'token_expired',
         error_message = p_error
   where ca.id = p_account_id
     and ca.status is distinct from 'disconnected'
  returning ca.status into v_status;
  return jsonb_build_object('found', v_status is not null, 'status', v_status);
end
$$;

-- Saves a refreshed token pair (ciphertext) only if the stored refresh token
-- is still p_previous_refresh_token, so of two concurrent refreshes one wins
-- and the other reuses its tokens: {"saved": bool, "account": {...}}.
create function public.save_refreshed_account_tokens(
  p_account_id uuid,
  p_previous_refresh_token text,
  p_access_token text,
  p_refresh_token text,
  p_token_key_id text,
  p_expires_at timestamptz,
  p_now timestamptz default now()
) returns jsonb
language plpgsql
set search_path = ''
as $$
declare
  v_account public.connected_accounts;
  v_saved boolean := false;
begin
  update public.connected_accounts ca
     set access_token = p_access_token,
         refresh_token = coalesce(p_refresh_token, ca.refresh_token),
         token_key_id = coalesce(p_token_key_id, ca.token_key_id),
         token_expires_at = p_expires_at
   where ca.id = p_account_id
     and ca.refresh_token is not distinct from p_previous_refresh_token
  returning * into v_account;
  v_saved := found;
  if not v_saved then
    select * into v_account from public.connected_accounts ca where ca.id = p_account_id;
  end if;
  return jsonb_build_object('saved', v_saved, 'account', public.ingest_account_json(v_account));
end
$$;

-- Polling: leases and sync logs ------------------------------------------------------------

create table public.account_sync_state (
  account_id uuid primary key references public.connected_accounts (id) on delete cascade,
  lease_token bigint,
  locked_by text,
  locked_at timestamptz,
  lease_expires_at timestamptz,
  sync_log_id uuid references public.sync_logs (id) on delete set null,
  resume_cursor text,
  backfill_completed_at timestamptz,
  updated_at timestamptz not null default now()
);
comment on table public.account_sync_state is
  'Per connected account: the polling lease (fencing token from queue_lease_token_seq), where an unfinished sync resumes, and when the first full pass (backfill) ended. Service role only.';
create index account_sync_state_lease_idx on public.account_sync_state (lease_expires_at);

create trigger update_account_sync_state_updated_at
  before update on public.account_sync_state
  for each row execute function public.update_updated_at();

alter table public.account_sync_state enable row level security;
revoke all on public.account_sync_state from anon, authenticated;

-- Claims the next account whose next_sync_at is due (sync enabled, status
-- active or error, platform bluesky/strava/instagram and not paused, no live
-- lease), leases it and opens its running sync_logs row ('backfill' until the
-- first full pass is done, then 'scheduled'). An account whose lease ran out
-- mid-sync is taken again and its abandoned log closed as cancelled.
-- Answers the account with "lease_token", "sync_log_id", "sync_type",
-- "resume_cursor", "last_post_at", "last_sync_at", "error_count", or null.
create function public.claim_next_sync_account(
  p_worker_id text,
  p_lease_seconds integer,
  p_now timestamptz default now()
) returns jsonb
language plpgsql
set search_path = ''
as $$
declare
  v_state public.account_sync_state;
  v_account public.connected_accounts;
  v_old_log uuid;
  v_sync_type public.sync_type_enum;
  v_log uuid;
  v_last_post timestamptz;
begin
  if p_worker_id is null or length(p_worker_id) = 0 then
    raise exception 'claim: p_worker_id is required' using errcode = '22023';
  end if;
  if p_lease_seconds is null or p_lease_seconds < 1 then
    raise exception 'claim: p_lease_seconds must be at least 1' using errcode = '22023';
  end if;

  -- Every due account gets its state row, so the claim below locks state
  -- rows (the lease lives there) and a concurrent claim re-checks the lease.
  insert into public.account_sync_state (account_id)
  select ca.id
    from public.connected_accounts ca
   where ca.next_sync_at <= p_now
     and ca.sync_enabled is not false
     and coalesce(ca.status, 'active') in ('active', 'error')
     and ca.platform in ('bluesky', 'strava', 'instagram')
     and not exists (select 1 from public.account_sync_state s where s.account_id = ca.id)
  on conflict (account_id) do nothing;

  select s.* into v_state
    from public.account_sync_state s
    join public.connected_accounts ca on ca.id = s.account_id
   where ca.next_sync_at <= p_now
     and ca.sync_enabled is not false
     and coalesce(ca.status, 'active') in ('active', 'error')
     and ca.platform in ('bluesky', 'strava', 'instagram')
     and (ca.platform = 'bluesky' or ca.access_token is not null)
     and not public.ingest_platform_paused(ca.platform, p_now)
     and (s.lease_expires_at is null or s.lease_expires_at <= p_now)
   order by ca.next_sync_at, ca.id
   limit 1
   for update of s skip locked;
  if not found then
    return 'null'::jsonb;
  end if;

  select * into v_account from public.connected_accounts ca where ca.id = v_state.account_id;

  -- A sync whose lease ran out left its log running: close it.
  v_old_log := v_state.sync_log_id;
  if v_old_log is not null then
    update public.sync_logs l
       set status = 'cancelled',
           error_message = coalesce(l.error_message, 'lease expired before the sync finished'),
           completed_at = p_now
     where l.id = v_old_log and l.status = 'running';
  end if;

  v_sync_type := case when v_state.backfill_completed_at is null then 'backfill' else 'scheduled' end;
  insert into public.sync_logs (account_id, user_id, sync_type, status, started_at, metadata)
  values (v_account.id, v_account.user_id, v_sync_type, 'running', p_now,
          jsonb_build_object('worker_id', p_worker_id, 'platform', v_account.platform))
  returning id into v_log;

  update public.account_sync_state s
     set lease_token = nextval('public.queue_lease_token_seq'),
         locked_by = p_worker_id,
         locked_at = p_now,
         lease_expires_at = p_now + make_interval(secs => p_lease_seconds),
         sync_log_id = v_log
   where s.account_id = v_account.id
  returning * into v_state;

  select max(p.created_at_platform) into v_last_post
    from public.posts p
   where p.account_id = v_account.id;

  return public.ingest_account_json(v_account) || jsonb_build_object(
    'lease_token', v_state.lease_token,
    'lease_expires_at', v_state.lease_expires_at,
    'sync_log_id', v_log,
    'sync_type', v_sync_type,
    'resume_cursor', v_state.resume_cursor,
    'last_post_at', v_last_post,
    'last_sync_at', v_account.last_sync_at,
    'error_count', coalesce(v_account.error_count, 0));
end
$$;

-- Closes a sync. p_outcome: {"status": success|partial|failed|cancelled,
-- "posts_fetched", "posts_created", "posts_updated", "posts_deleted",
-- "media_failed", "error_message"?, "error_details"?, "metadata"?,
-- "interval_seconds" (next poll on success, default 3600),
-- "next_sync_at"? (explicit, e.g. the end of a rate-limit window),
-- "resume_cursor"? (where the next run goes on, and it comes at once;
-- null clears it),
-- "backfill_done"?, "token_expired"? (account -> token_expired)}.
-- The sync_logs row is always closed (0004's triggers set duration_ms,
-- last_sync_at, last_sync_status and error_count); the account and the lease
-- only with the current lease token ({"accepted": false, "reason":
-- "stale_lease"} otherwise). A failure backs off 60 s * 2^error_count, at
-- most a day.
create function public.finish_account_sync(
  p_account_id uuid,
  p_lease_token bigint,
  p_sync_log_id uuid,
  p_outcome jsonb,
  p_now timestamptz default now()
) returns jsonb
language plpgsql
set search_path = ''
as $$
declare
  v_state public.account_sync_state;
  v_status public.sync_status_enum := coalesce(p_outcome ->> 'status', 'success')::public.sync_status_enum;
  v_error_count integer;
  v_next timestamptz;
  v_interval integer := coalesce((p_outcome ->> 'interval_seconds')::integer, 3600);
  v_log public.sync_logs;
begin
  if v_status = 'running' then
    raise exception 'finish_account_sync: status must be final' using errcode = '22023';
  end if;

  update public.sync_logs l
     set status = v_status,
         posts_fetched = coalesce((p_outcome ->> 'posts_fetched')::integer, l.posts_fetched),
         posts_created = coalesce((p_outcome ->> 'posts_created')::integer, l.posts_created),
         posts_updated = coalesce((p_outcome ->> 'posts_updated')::integer, l.posts_updated),
         posts_deleted = coalesce((p_outcome ->> 'posts_deleted')::integer, l.posts_deleted),
         media_failed = coalesce((p_outcome ->> 'media_failed')::integer, l.media_failed),
         error_message = p_outcome ->> 'error_message',
         error_details = p_outcome -> 'error_details',
         metadata = coalesce(l.metadata, '{}'::jsonb) || coalesce(p_outcome -> 'metadata', '{}'::jsonb),
         completed_at = p_now
   where l.id = p_sync_log_id
     and l.account_id = p_account_id
     and l.status = 'running'
  returning * into v_log;

  select * into v_state from public.account_sync_state s where s.account_id = p_account_id for update;
  if v_state.account_id is null or v_state.lease_token is distinct from p_lease_token
     or v_state.lease_expires_at is null then
    return jsonb_build_object('accepted', false, 'reason', 'stale_lease', 'sync_log_id', v_log.id,
                              'duration_ms', v_log.duration_ms);
  end if;

  select coalesce(ca.error_count, 0) into v_error_count
    from public.connected_accounts ca where ca.id = p_account_id;

  v_next := case
    when p_outcome ? 'next_sync_at' and p_outcome ->> 'next_sync_at' is not null
      then (p_outcome ->> 'next_sync_at')::timestamptz
    when v_status = 'failed'
      then p_now + make_interval(secs => least(86400, 60 * power(2, least(v_error_count, 20))))
    when p_outcome ->> 'resume_cursor' is not null
      then p_now
    else p_now + make_interval(secs => greatest(v_interval, 1))
  end;

  update public.connected_accounts ca
     set next_sync_at = v_next,
         status = case
                    when coalesce((p_outcome ->> 'token_expired')::boolean, false) then 'token_expired'
                    when v_status = 'failed' then 'error'
                    when v_status in ('success', 'partial') then 'active'
                    else ca.status end,
         error_message = case
                           when v_status in ('success', 'partial') then null
                           when v_status = 'failed' or coalesce((p_outcome ->> 'token_expired')::boolean, false)
                             then p_outcome ->> 'error_message'
                           else ca.error_message end
   where ca.id = p_account_id
     and ca.status is distinct from 'disconnected';

  update public.account_sync_state s
     set lease_token = null,
         locked_by = null,
         locked_at = null,
         lease_expires_at = null,
         sync_log_id = null,
         resume_cursor = case
                             when coalesce((p_outcome ->> 'backfill_done')::boolean, false) then null
                             when p_outcome ? 'resume_cursor' then p_outcome ->> 'resume_cursor'
                             else s.resume_cursor end,
         backfill_completed_at = case
                                   when coalesce((p_outcome ->> 'backfill_done')::boolean, false)
                                     then coalesce(s.backfill_completed_at, p_now)
                                   else s.backfill_completed_at end
   where s.account_id = p_account_id;

  return jsonb_build_object('accepted', true, 'sync_log_id', v_log.id, 'status', v_status,
                            'duration_ms', v_log.duration_ms, 'next_sync_at', v_next);
end
$$;

-- Grants: service role only -------------------------------------------------------------------

revoke all on function public.ingest_platform_paused(public.platform_enum, timestamptz) from public, anon, authenticated;
revoke all on function public.pause_platform(text, timestamptz, text, timestamptz) from public, anon, authenticated;
revoke all on function public.claim_next_archive_items(text, integer, integer, timestamptz) from public, anon, authenticated;
revoke all on function public.ingest_account_json(public.connected_accounts) from public, anon, authenticated;
revoke all on function public.ingest_account_for_item(uuid, text) from public, anon, authenticated;
revoke all on function public.archive_platform_posts(uuid, uuid, jsonb, text, boolean, timestamptz) from public, anon, authenticated;
revoke all on function public.mark_platform_post_deleted(uuid, text, text, timestamptz) from public, anon, authenticated;
revoke all on function public.disconnect_platform_account(uuid, text, timestamptz) from public, anon, authenticated;
revoke all on function public.mark_account_token_expired(uuid, text, timestamptz) from public, anon, authenticated;
revoke all on function public.save_refreshed_account_tokens(uuid, text, text, text, text, timestamptz, timestamptz) from public, anon, authenticated;
revoke all on function public.claim_next_sync_account(text, integer, timestamptz) from public, anon, authenticated;
revoke all on function public.finish_account_sync(uuid, bigint, uuid, jsonb, timestamptz) from public, anon, authenticated;

grant execute on function public.ingest_platform_paused(public.platform_enum, timestamptz) to service_role;
grant execute on function public.pause_platform(text, timestamptz, text, timestamptz) to service_role;
grant execute on function public.claim_next_archive_items(text, integer, integer, timestamptz) to service_role;
grant execute on function public.ingest_account_json(public.connected_accounts) to service_role;
grant execute on function public.ingest_account_for_item(uuid, text) to service_role;
grant execute on function public.archive_platform_posts(uuid, uuid, jsonb, text, boolean, timestamptz) to service_role;
grant execute on function public.mark_platform_post_deleted(uuid, text, text, timestamptz) to service_role;
grant execute on function public.disconnect_platform_account(uuid, text, timestamptz) to service_role;
grant execute on function public.mark_account_token_expired(uuid, text, timestamptz) to service_role;
grant execute on function public.save_refreshed_account_tokens(uuid, text, text, text, text, timestamptz, timestamptz) to service_role;
grant execute on function public.claim_next_sync_account(text, integer, timestamptz) to service_role;
grant execute on function public.finish_account_sync(uuid, bigint, uuid, jsonb, timestamptz) to service_role;
