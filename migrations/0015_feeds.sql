-- 0015: the Bluesky feed generator's data rules (feed-skeleton, feed-indexer).
--
-- Serving (one statement per getFeedSkeleton request):
--   feed_skeleton(feed_uri, publisher_did, rkey, limit, cursor_created_at,
--                 cursor_uri, signing_key_did, now)
--     resolves a published, enabled feed by its at-uri (published_uri, or
--     publisher_did + published_rkey) AND returns one page of it, newest
--     first by (created_at desc, uri desc) after an exclusive cursor, with
--     the cursor of the next page only when one more row exists; it also
--     returns the cached signing key of the requesting DID when asked, so a
--     verified request still costs one round trip.
--   describe_feed_generator()            -> the published, enabled feeds
--   store_did_signing_key(did, key, ttl) -> caches an issuer's #atproto key
--     (did_signing_keys; each request is a fresh wasm instance, so the cache
--     lives here).
-- Publishing:
--   feed_publish_target(feed_id, user_id)  -> the owner's feed and the
--     Bluesky account to publish it with (feeds.publish_account_id when set,
--     else the account that published it before, else the owner's oldest
--     active Bluesky account)
--   record_feed_published(feed_id, user_id, uri, rkey, did, created_at, now)
-- Indexing:
--   feed_indexer_plan(now)  -> enabled feeds with their rules and sources,
--     each source with its high-water mark (feed_source_progress)
--   store_feed_source_posts(source_id, posts, newest, retention_days, now)
--     -> upserts matching posts once per (feed, uri), moves the mark
--   record_feed_index_run(feed_id, report, retention_days, now)
--     -> prunes the feed's posts past retention and logs the run's counts
--     (feed_index_runs).

-- feeds: which account publishes, and the lookup by (publisher, rkey) -------------

alter table public.feeds
  add column publish_account_id uuid references public.connected_accounts (id) on delete set null;
comment on column public.feeds.publish_account_id is
  'The Bluesky account (connected_accounts.id, the owner''s) whose repo holds the feed generator record; null: the account that published it before, else the owner''s oldest active Bluesky account.';

create index feeds_publisher_rkey_idx
  on public.feeds (publisher_did, published_rkey) where publisher_did is not null;

-- did_signing_keys: the service-JWT key cache (service role only) -----------------

create table public.did_signing_keys (
  did text primary key,
  key_multibase text not null,
  fetched_at timestamptz not null default now(),
  expires_at timestamptz not null,
  constraint expires_after_fetch check (expires_at > fetched_at)
);
comment on table public.did_signing_keys is
  'Cached #atproto signing keys (publicKeyMultibase) of service-JWT issuers, resolved from the PLC directory.';
alter table public.did_signing_keys enable row level security;
revoke all on public.did_signing_keys from anon, authenticated;
grant select, insert, update, delete on public.did_signing_keys to service_role;

-- feed_source_progress: each source's high-water mark ---------------------------

create table public.feed_source_progress (
  feed_source_id uuid primary key references public.feed_sources (id) on delete cascade,
  newest_seen_at timestamptz,
  newest_uri text,
  last_indexed_at timestamptz,
  updated_at timestamptz not null default now()
);
comment on table public.feed_source_progress is
  'The newest item feed-indexer has seen in each source author''s feed, so the next run reads only what is newer.';
create trigger update_feed_source_progress_updated_at
  before update on public.feed_source_progress
  for each row execute function public.update_updated_at();
alter table public.feed_source_progress enable row level security;
create policy "Users can read indexing progress of their own feeds"
  on public.feed_source_progress for select to authenticated
  using (exists (select 1 from public.feed_sources s join public.feeds f on f.id = s.feed_id
                  where s.id = feed_source_id and f.user_id = auth.uid()));
revoke insert, update, delete on public.feed_source_progress from anon, authenticated;

-- feed_index_runs: the per-feed log of each indexer run -------------------------

create table public.feed_index_runs (
  id uuid primary key default gen_random_uuid(),
  feed_id uuid not null references public.feeds (id) on delete cascade,
  sources integer not null default 0,
  appview_calls integer not null default 0,
  posts_seen integer not null default 0,
  posts_matched integer not null default 0,
  posts_inserted integer not null default 0,
  posts_pruned integer not null default 0,
  errors jsonb not null default '[]'::jsonb,
  started_at timestamptz not null,
  finished_at timestamptz not null default now(),
  constraint counts_not_negative check (
    sources >= 0 and appview_calls >= 0 and posts_seen >= 0 and posts_matched >= 0
    and posts_inserted >= 0 and posts_pruned >= 0)
);
comment on table public.feed_index_runs is
  'One row per feed per feed-indexer run: sources read, AppView calls, posts seen / matched / inserted / pruned, errors. Kept 30 days.';
create index feed_index_runs_feed_finished_idx on public.feed_index_runs (feed_id, finished_at desc);
alter table public.feed_index_runs enable row level security;
create policy "Users can read indexer runs of their own feeds"
  on public.feed_index_runs for select to authenticated
  using (exists (select 1 from public.feeds f where f.id = feed_id and f.user_id = auth.uid()));
revoke insert, update, delete on public.feed_index_runs from anon, authenticated;

-- Serving ----------------------------------------------------------------------

-- One getFeedSkeleton request. p_cursor_created_at is RFC 3339 text with
-- microseconds; both cursor parts are null on the first page. The page has
-- at most p_limit posts (clamped to 1..100); "cursor" names its last post
-- and is present only when at least one more post exists. The two page
-- queries are separate statements so that each keeps its index condition
-- in plpgsql's cached generic plan (an "or cursor is null" would turn the
-- row comparison into a filter and make deep pages scan from the top).
create function public.feed_skeleton(
  p_feed_uri text,
  p_publisher_did text,
  p_rkey text,
  p_limit integer,
  p_cursor_created_at text default null,
  p_cursor_uri text default null,
  p_signing_key_did text default null,
  p_now timestamptz default now()
) returns jsonb
language plpgsql stable
set search_path = ''
as $$
declare
  v_feed_id uuid;
  v_limit integer := greatest(1, least(coalesce(p_limit, 50), 100));
  v_cursor timestamptz;
  v_uris text[];
  v_times timestamptz[];
  v_key jsonb;
  v_count integer;
begin
  if p_signing_key_did is not null then
    select jsonb_build_object('key_multibase', k.key_multibase,
                              'age_seconds', floor(extract(epoch from p_now - k.fetched_at))::bigint)
      into v_key
      from public.did_signing_keys k
     where k.did = p_signing_key_did and k.expires_at > p_now;
  end if;

  select f.id into v_feed_id
    from public.feeds f
   where f.published_uri = p_feed_uri and f.is_enabled;
  if v_feed_id is null and p_publisher_did is not null and p_rkey is not null then
    select f.id into v_feed_id
      from public.feeds f
     where f.publisher_did = p_publisher_did and f.published_rkey = p_rkey and f.is_enabled
     order by f.published_at desc nulls last, f.id
     limit 1;
  end if;
  if v_feed_id is null then
    return jsonb_build_object('found', false, 'signing_key', v_key);
  end if;

  if p_cursor_created_at is null then
    select array_agg(t.uri order by t.created_at desc, t.uri desc),
           array_agg(t.created_at order by t.created_at desc, t.uri desc)
      into v_uris, v_times
      from (select ip.uri, ip.created_at
              from public.indexed_posts ip
             where ip.feed_id = v_feed_id
             order by ip.created_at desc, ip.uri desc
             limit v_limit + 1) t;
  else
    v_cursor := p_cursor_created_at::timestamptz;
    select array_agg(t.uri order by t.created_at desc, t.uri desc),
           array_agg(t.created_at order by t.created_at desc, t.uri desc)
      into v_uris, v_times
      from (select ip.uri, ip.created_at
              from public.indexed_posts ip
             where ip.feed_id = v_feed_id
               and (ip.created_at, ip.uri) < (v_cursor, p_cursor_uri)
             order by ip.created_at desc, ip.uri desc
             limit v_limit + 1) t;
  end if;

  v_count := coalesce(cardinality(v_uris), 0);
  return jsonb_build_object(
    'found', true,
    'posts', coalesce(to_jsonb(v_uris[1:v_limit]), '[]'::jsonb),
    'cursor', case when v_count > v_limit then jsonb_build_object(
                'created_at_micros', (extract(epoch from v_times[v_limit]) * 1000000)::bigint,
                'uri', v_uris[v_limit]) end,
    'signing_key', v_key);
end
$$;
revoke all on function public.feed_skeleton(text, text, text, integer, text, text, text, timestamptz)
  from public, anon, authenticated;
grant execute on function public.feed_skeleton(text, text, text, integer, text, text, text, timestamptz)
  to service_role;

-- describeFeedGenerator: every published, enabled feed, oldest first.
create function public.describe_feed_generator() returns jsonb
language sql stable
set search_path = ''
as $$
  select jsonb_build_object('feeds', coalesce(jsonb_agg(jsonb_build_object('uri', f.published_uri)
                                                        order by f.published_at, f.id), '[]'::jsonb))
    from public.feeds f
   where f.is_enabled and f.published_uri is not null
$$;
revoke all on function public.describe_feed_generator() from public, anon, authenticated;
grant execute on function public.describe_feed_generator() to service_role;

-- Caches an issuer's signing key for p_ttl_seconds (at least one second).
create function public.store_did_signing_key(
  p_did text,
  p_key_multibase text,
  p_ttl_seconds integer default 3600,
  p_now timestamptz default now()
) returns jsonb
language sql volatile
set search_path = ''
as $$
  insert into public.did_signing_keys as k (did, key_multibase, fetched_at, expires_at)
  values (p_did, p_key_multibase, p_now, p_now + make_interval(secs => greatest(1, p_ttl_seconds)))
  on conflict (did) do update
    set key_multibase = excluded.key_multibase,
        fetched_at = excluded.fetched_at,
        expires_at = excluded.expires_at
  returning jsonb_build_object('did', k.did, 'key_multibase', k.key_multibase)
$$;
revoke all on function public.store_did_signing_key(text, text, integer, timestamptz) from public, anon, authenticated;
grant execute on function public.store_did_signing_key(text, text, integer, timestamptz) to service_role;

-- Publishing -------------------------------------------------------------------

-- The feed p_feed_id if p_user_id owns it ({"found": false} otherwise, so a
-- stranger cannot tell a foreign feed from a missing one) and the account to
-- publish it with (null when the owner has no usable Bluesky account).
create function public.feed_publish_target(p_feed_id uuid, p_user_id uuid) returns jsonb
language sql stable
set search_path = ''
as $$
  select coalesce(
    (select jsonb_build_object(
              'found', true,
              'feed', jsonb_build_object(
                'id', f.id,
                'slug', f.slug,
                'title', f.title,
                'display_name', f.display_name,
                'description', f.description,
                'is_enabled', f.is_enabled,
                'published_uri', f.published_uri,
                'published_rkey', f.published_rkey,
                'publisher_did', f.publisher_did,
                -- Milliseconds, as the record's createdAt was written, so a
                -- republish writes the same createdAt text.
                'published_at', to_char(f.published_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')),
              'account', (select jsonb_build_object('id', a.id, 'did', a.account_did, 'handle', a.handle)
                            from public.connected_accounts a
                           where a.user_id = f.user_id
                             and a.platform = 'bluesky'
                             and a.account_did is not null
                             and (a.id = f.publish_account_id
                                  or (a.is_active and coalesce(a.status::text, 'active') not in ('disconnected', 'token_expired')))
                           order by (a.id = f.publish_account_id) desc nulls last,
                                    (a.account_did = f.publisher_did) desc nulls last,
                                    a.created_at, a.id
                           limit 1))
       from public.feeds f
      where f.id = p_feed_id and f.user_id = p_user_id),
    jsonb_build_object('found', false))
$$;
revoke all on function public.feed_publish_target(uuid, uuid) from public, anon, authenticated;
grant execute on function public.feed_publish_target(uuid, uuid) to service_role;

-- Stores where the feed's generator record now lives. p_created_at is the
-- record's createdAt, kept as published_at. Refuses (conflict) when another
-- feed already holds that at-uri (two users who connected the same account
-- and publish the same slug).
create function public.record_feed_published(
  p_feed_id uuid,
  p_user_id uuid,
  p_uri text,
  p_rkey text,
  p_did text,
  p_created_at text,
  p_now timestamptz default now()
) returns jsonb
language plpgsql volatile
set search_path = ''
as $$
declare
  v_feed public.feeds%rowtype;
begin
  if exists (select 1 from public.feeds f where f.published_uri = p_uri and f.id <> p_feed_id) then
    return jsonb_build_object('stored', false, 'reason', 'conflict');
  end if;
  update public.feeds f
     set published_uri = p_uri,
         published_rkey = p_rkey,
         publisher_did = p_did,
         published_at = coalesce(p_created_at::timestamptz, p_now)
   where f.id = p_feed_id and f.user_id = p_user_id
  returning f.* into v_feed;
  if not found then
    return jsonb_build_object('stored', false, 'reason', 'not_found');
  end if;
  return jsonb_build_object(
    'stored', true,
    'feed_id', v_feed.id,
    'published_uri', v_feed.published_uri,
    'published_rkey', v_feed.published_rkey,
    'publisher_did', v_feed.publisher_did,
    'published_at', to_char(v_feed.published_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'));
end
$$;
revoke all on function public.record_feed_published(uuid, uuid, text, text, text, text, timestamptz)
  from public, anon, authenticated;
grant execute on function public.record_feed_published(uuid, uuid, text, text, text, text, timestamptz)
  to service_role;

-- Indexing ---------------------------------------------------------------------

-- Every enabled feed with its rules and sources; each source carries its
-- high-water mark (newest_seen_at with microseconds, newest_uri) or nulls.
create function public.feed_indexer_plan(p_now timestamptz default now()) returns jsonb
language sql stable
set search_path = ''
as $$
  select coalesce(jsonb_agg(jsonb_build_object(
           'feed_id', f.id,
           'rules', (select coalesce(jsonb_agg(jsonb_build_object('kind', r.kind, 'value', r.value, 'lang', r.lang)
                                               order by r.created_at, r.id), '[]'::jsonb)
                       from public.feed_rules r where r.feed_id = f.id),
           'sources', (select coalesce(jsonb_agg(jsonb_build_object(
                                 'id', s.id,
                                 'actor_did', s.actor_did,
                                 'newest_seen_at', to_char(p.newest_seen_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
                                 'newest_uri', p.newest_uri)
                               order by s.created_at, s.id), '[]'::jsonb)
                         from public.feed_sources s
                         left join public.feed_source_progress p on p.feed_source_id = s.id
                        where s.feed_id = f.id))
         order by f.created_at, f.id), '[]'::jsonb)
    from public.feeds f
   where f.is_enabled
$$;
revoke all on function public.feed_indexer_plan(timestamptz) from public, anon, authenticated;
grant execute on function public.feed_indexer_plan(timestamptz) to service_role;

-- Upserts one source's matching posts into its feed, once per (feed, uri),
-- and moves the source's mark to p_newest ({"seen_at", "uri"}; null leaves
-- it, e.g. after a failed read). p_posts: [{uri, cid, author_did, text,
-- lang, created_at}] with created_at RFC 3339 (microseconds kept). Posts
-- already past retention are skipped, since the next prune would drop them.
create function public.store_feed_source_posts(
  p_source_id uuid,
  p_posts jsonb,
  p_newest jsonb default null,
  p_retention_days integer default 7,
  p_now timestamptz default now()
) returns jsonb
language plpgsql volatile
set search_path = ''
as $$
declare
  v_feed_id uuid;
  v_cutoff timestamptz := p_now - make_interval(days => greatest(1, p_retention_days));
  v_given integer := coalesce(jsonb_array_length(p_posts), 0);
  v_recent integer;
  v_inserted integer;
begin
  select s.feed_id into v_feed_id from public.feed_sources s where s.id = p_source_id;
  if v_feed_id is null then
    return jsonb_build_object('stored', false, 'reason', 'source_not_found');
  end if;

  with given as (
    select distinct on (p.value ->> 'uri')
           p.value ->> 'uri' as uri,
           p.value ->> 'cid' as cid,
           p.value ->> 'author_did' as author_did,
           p.value ->> 'text' as text,
           p.value ->> 'lang' as lang,
           (p.value ->> 'created_at')::timestamptz as created_at
      from jsonb_array_elements(coalesce(p_posts, '[]'::jsonb)) p
     where p.value ->> 'uri' is not null
  ), recent as (
    select * from given g where g.created_at >= v_cutoff
  ), inserted as (
    insert into public.indexed_posts (feed_id, uri, cid, author_did, text, lang, created_at, indexed_at)
    select v_feed_id, r.uri, r.cid, r.author_did, r.text, r.lang, r.created_at, p_now
      from recent r
    on conflict (feed_id, uri) do nothing
    returning 1
  )
  select (select count(*) from recent), (select count(*) from inserted)
    into v_recent, v_inserted;

  if p_newest is not null and p_newest ->> 'seen_at' is not null then
    insert into public.feed_source_progress as fp (feed_source_id, newest_seen_at, newest_uri, last_indexed_at, updated_at)
    values (p_source_id, (p_newest ->> 'seen_at')::timestamptz, p_newest ->> 'uri', p_now, p_now)
    on conflict (feed_source_id) do update
      set newest_seen_at = greatest(fp.newest_seen_at, excluded.newest_seen_at),
          newest_uri = case when fp.newest_seen_at is null or excluded.newest_seen_at >= fp.newest_seen_at
                            then excluded.newest_uri else fp.newest_uri end,
          last_indexed_at = excluded.last_indexed_at,
          updated_at = excluded.updated_at;
  end if;

  return jsonb_build_object(
    'stored', true,
    'feed_id', v_feed_id,
    'given', v_given,
    'inserted', v_inserted,
    'duplicates', v_recent - v_inserted,
    'too_old', v_given - v_recent);
end
$$;
revoke all on function public.store_feed_source_posts(uuid, jsonb, jsonb, integer, timestamptz)
  from public, anon, authenticated;
grant execute on function public.store_feed_source_posts(uuid, jsonb, jsonb, integer, timestamptz)
  to service_role;

-- Closes one feed's part of an indexer run: prunes its posts created before
-- the retention window, logs the counts of p_report ({sources,
-- appview_calls, posts_seen, posts_matched, posts_inserted, errors,
-- started_at}) and drops log rows older than 30 days.
create function public.record_feed_index_run(
  p_feed_id uuid,
  p_report jsonb,
  p_retention_days integer default 7,
  p_now timestamptz default now()
) returns jsonb
language plpgsql volatile
set search_path = ''
as $$
declare
  v_pruned integer;
  v_run public.feed_index_runs%rowtype;
begin
  delete from public.indexed_posts ip
   where ip.feed_id = p_feed_id
     and ip.created_at < p_now - make_interval(days => greatest(1, p_retention_days));
  get diagnostics v_pruned = row_count;

  if not exists (select 1 from public.feeds f where f.id = p_feed_id) then
    return jsonb_build_object('logged', false, 'reason', 'feed_not_found', 'posts_pruned', v_pruned);
  end if;

  insert into public.feed_index_runs (feed_id, sources, appview_calls, posts_seen, posts_matched,
                                      posts_inserted, posts_pruned, errors, started_at, finished_at)
  values (p_feed_id,
          coalesce((p_report ->> 'sources')::integer, 0),
          coalesce((p_report ->> 'appview_calls')::integer, 0),
          coalesce((p_report ->> 'posts_seen')::integer, 0),
          coalesce((p_report ->> 'posts_matched')::integer, 0),
          coalesce((p_report ->> 'posts_inserted')::integer, 0),
          v_pruned,
          coalesce(p_report -> 'errors', '[]'::jsonb),
          coalesce((p_report ->> 'started_at')::timestamptz, p_now),
          p_now)
  returning * into v_run;

  delete from public.feed_index_runs r
   where r.feed_id = p_feed_id and r.finished_at < p_now - interval '30 days';

  return jsonb_build_object('logged', true, 'run_id', v_run.id, 'posts_pruned', v_pruned);
end
$$;
revoke all on function public.record_feed_index_run(uuid, jsonb, integer, timestamptz)
  from public, anon, authenticated;
grant execute on function public.record_feed_index_run(uuid, jsonb, integer, timestamptz)
  to service_role;
