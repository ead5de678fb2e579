-- 0014: publishing scheduled posts exactly once (schedule-claim and publish).
--
-- * claim_next_scheduled_posts() again, same contract, without dynamic SQL
--   (about ten times faster; the generic 0009 body stays for other queues).
-- * claim_due_scheduled_posts(): the queue contract's claim (0009: release
--   expired leases first, FOR UPDATE SKIP LOCKED, attempt + 1, a fencing
--   token from queue_lease_token_seq, a `claimed` event) with two publishing
--   rules on top: one post in flight per account, always the account's
--   oldest due post (so an account's posts go out in run_at order however
--   many workers claim at once), and nothing for an account on hold.
-- * scheduled_post_parts: what was sent for each part of a post (one part
--   for Bluesky and LinkedIn, one per post of an X thread): the intent
--   (`sending`, written before the call) and the result (`posted`, with the
--   platform's id), so a thread resumes where it stopped and a lost answer
--   is settled instead of posted twice.
-- * publish_account_holds: an account-wide "not before" (429 with
--   Retry-After, an exhausted write budget). The post goes back to queued
--   without losing an attempt or its place (run_at is unchanged).
-- * publish_write_budgets and reserve_publish_write_points(): per-account
--   write points in fixed windows (Bluesky: 5,000 per hour and 35,000 per
--   day, createRecord costs 3), taken before the write.
-- * begin_/complete_/fail_/hold_scheduled_post_publish() and
--   record_scheduled_post_part(): every step fenced by the lease token; a
--   stale token changes nothing and leaves a `stale_result` event. complete
--   writes published_posts, the posts archive rows and the `success` event
--   in one transaction.
-- * claim_bluesky_metrics_batch() / record_bluesky_post_metrics(): likes,
--   reposts, replies and quotes of recent Bluesky posts into
--   published_posts.metrics and engagement_history.

-- One post in flight per account, oldest first: the lane index ----------------

-- "Is an older post of this account waiting?" and "is one in flight?"
-- are index probes, however long the account's queue.
create index scheduled_posts_account_queue_idx
  on public.scheduled_posts (account_id, run_at, id)
  where status = 'queued';
create index scheduled_posts_account_posting_idx
  on public.scheduled_posts (account_id)
  where status = 'posting';
-- Seed 000 rows may name the account by DID only.
create index scheduled_posts_account_did_queue_idx
  on public.scheduled_posts (account_did, user_id, run_at, id)
  where status = 'queued' and account_did is not null;
create index scheduled_posts_account_did_posting_idx
  on public.scheduled_posts (account_did, user_id)
  where status = 'posting' and account_did is not null;

-- scheduled_post_parts ------------------------------------------------------------

create table public.scheduled_post_parts (
  scheduled_post_id uuid not null references public.scheduled_posts (id) on delete cascade,
  part_index integer not null,
  platform public.platform_enum not null,
  status text not null default 'sending',
  text_sha256 text not null,
  record_key text,
  platform_post_id text,
  url text,
  detail jsonb not null default '{}'::jsonb,
  lease_token bigint,
  sends integer not null default 1,
  first_sent_at timestamptz not null default now(),
  last_sent_at timestamptz not null default now(),
  posted_at timestamptz,
  primary key (scheduled_post_id, part_index),
  constraint part_status_is_known check (status in ('sending', 'posted')),
  constraint part_index_not_negative check (part_index >= 0),
  constraint posted_part_has_platform_id check (status <> 'posted' or platform_post_id is not null),
  constraint text_sha256_is_hex check (text_sha256 ~ '^[0-9a-f]{64}$')
);
comment on table public.scheduled_post_parts is
  'Per part of a scheduled post (X thread posts; part 0 elsewhere): sending = intent recorded before the call, posted = the platform''s id. Resume and dedupe state of publish.';

alter table public.scheduled_post_parts enable row level security;
create policy "Users can read the parts of their own scheduled posts"
  on public.scheduled_post_parts for select to authenticated
  using (exists (select 1 from public.scheduled_posts sp
                  where sp.id = scheduled_post_id and sp.user_id = auth.uid()));

-- publish_account_holds -----------------------------------------------------------

create table public.publish_account_holds (
  account_id uuid primary key references public.connected_accounts (id) on delete cascade,
  not_before timestamptz not null,
  reason text not null,
  scheduled_post_id uuid references public.scheduled_posts (id) on delete set null,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);
comment on table public.publish_account_holds is
  'Accounts publish must leave alone until not_before (platform rate limits, write budget).';

create trigger update_publish_account_holds_updated_at
  before update on public.publish_account_holds
  for each row execute function public.update_updated_at();

alter table public.publish_account_holds enable row level security;
create policy "Users can read the publishing holds of their own accounts"
  on public.publish_account_holds for select to authenticated
  using (exists (select 1 from public.connected_accounts ca
                  where ca.id = account_id and ca.user_id = auth.uid()));

-- publish_write_budgets -------------------------------------------------------------

create table public.publish_write_budgets (
  account_id uuid not null references public.connected_accounts (id) on delete cascade,
  window_seconds integer not null,
  window_start timestamptz not null,
  points integer not null default 0,
  primary key (account_id, window_seconds, window_start),
  constraint points_not_negative check (points >= 0),
  constraint window_seconds_positive check (window_seconds > 0)
);
comment on table public.publish_write_budgets is
  'Write points used per account and fixed window (service role only).';
create index publish_write_budgets_window_start_idx on public.publish_write_budgets (window_start);

alter table public.publish_write_budgets enable row level security;
revoke all on public.publish_write_budgets from anon, authenticated;

-- Limits ---------------------------------------------------------------------------

-- Write limits per platform: [{"window_seconds", "limit"}]. Bluesky's PDS
-- counts 5,000 points per hour and 35,000 per day (create 3, update 2,
-- delete 1). X and LinkedIn answer 429 instead of publishing a budget.
create function public.publish_write_limits(p_platform text) returns jsonb
language sql immutable
set search_path = ''
as $$
  select case p_platform
    when 'bluesky' then '[{"window_seconds": 3600, "limit": 5000}, {"window_seconds": 86400, "limit": 35000}]'::jsonb
    else '[]'::jsonb end
$$;

-- The account a scheduled post publishes with: account_id, or (seed 000
-- rows that name only the DID) the owner's Bluesky account with that DID.
create function public.scheduled_post_account_id(p_post public.scheduled_posts) returns uuid
language sql stable
set search_path = ''
as $$
  select coalesce(p_post.account_id, (
    select ca.id from public.connected_accounts ca
     where ca.user_id = p_post.user_id
       and ca.account_did = p_post.account_did
       and ca.platform = 'bluesky'
     order by ca.is_active desc, ca.updated_at desc, ca.id
     limit 1))
$$;

-- A `stale_result` event: a worker whose lease is gone tried to act.
create function public.record_stale_publish_result(
  p_id uuid, p_lease_token bigint, p_stage text, p_detail jsonb, p_now timestamptz
) returns jsonb
language plpgsql
set search_path = ''
as $$
declare
  v_row public.scheduled_posts;
begin
  select * into v_row from public.scheduled_posts sp where sp.id = p_id;
  if not found then
    return jsonb_build_object('accepted', false, 'reason', 'not_found');
  end if;
  insert into public.post_events (scheduled_post_id, type, detail, created_at)
  values (p_id, 'stale_result',
          coalesce(p_detail, '{}'::jsonb) || jsonb_build_object(
            'stage', p_stage, 'lease_token', p_lease_token,
            'current_lease_token', v_row.lease_token, 'status', v_row.status),
          p_now);
  return jsonb_build_object('accepted', false, 'reason', 'stale_lease', 'status', v_row.status);
end
$$;

-- Claim ----------------------------------------------------------------------------

-- Up to p_max_items due posts, each the oldest unfinished post of its
-- account with none of that account's posts in flight and no hold on it.
-- Same answer and events as claim_next_scheduled_posts (0009).
create function public.claim_due_scheduled_posts(
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

  -- The generic release (0009) only when there is something to release.
  if exists (select 1 from public.scheduled_posts e
              where e.status = 'posting' and e.lease_expires_at <= p_now) then
    perform public.queue_release_expired('scheduled_posts', p_now);
  end if;

  -- One statement: lock, lease, `claimed` events, answer. Written twice so
  -- a worker's usual call (LIMIT 1, a constant) keeps a cached generic plan
  -- on the ready index; a LIMIT parameter makes PostgreSQL plan each call.
  if p_max_items = 1 then
    with locked as (
      select q.id
        from public.scheduled_posts q
       where q.status = 'queued'
         and q.run_at <= p_now
         and (q.account_id is null or (
               not exists (select 1 from public.scheduled_posts o
                            where o.account_id = q.account_id and o.status = 'posting')
           and not exists (select 1 from public.scheduled_posts o
                            where o.account_id = q.account_id and o.status = 'queued'
                              and (o.run_at, o.id) < (q.run_at, q.id))
           and not exists (select 1 from public.publish_account_holds h
                            where h.account_id = q.account_id and h.not_before > p_now)))
         and (q.account_did is null or (
               not exists (select 1 from public.scheduled_posts o
                            where o.account_did = q.account_did and o.user_id = q.user_id
                              and o.status = 'posting')
           and not exists (select 1 from public.scheduled_posts o
                            where o.account_did = q.account_did and o.user_id = q.user_id
                              and o.status = 'queued' and (o.run_at, o.id) < (q.run_at, q.id))))
       order by q.run_at, q.id
       limit 1
       for update of q skip locked
    ), claimed as (
      update public.scheduled_posts t
         set status = 'posting',
             attempt_count = t.attempt_count + 1,
             locked_at = p_now,
             locked_by = p_worker_id,
             lease_expires_at = p_now + make_interval(secs => p_lease_seconds),
             lease_token = nextval('public.queue_lease_token_seq')
        from locked
       where t.id = locked.id
      returning t.*
    ), events as (
      insert into public.post_events (scheduled_post_id, type, detail, created_at)
      select c.id, 'claimed',
             jsonb_build_object('attempt', c.attempt_count, 'lease_expires_at', c.lease_expires_at,
                                'lease_token', c.lease_token, 'worker_id', p_worker_id),
             p_now
        from claimed c
    )
    select coalesce(jsonb_agg(to_jsonb(c.*) order by c.run_at, c.id), '[]'::jsonb) into v_items from claimed c;
  else
    with locked as (
      select q.id
        from public.scheduled_posts q
       where q.status = 'queued'
         and q.run_at <= p_now
         and (q.account_id is null or (
               not exists (select 1 from public.scheduled_posts o
                            where o.account_id = q.account_id and o.status = 'posting')
           and not exists (select 1 from public.scheduled_posts o
                            where o.account_id = q.account_id and o.status = 'queued'
                              and (o.run_at, o.id) < (q.run_at, q.id))
           and not exists (select 1 from public.publish_account_holds h
                            where h.account_id = q.account_id and h.not_before > p_now)))
         and (q.account_did is null or (
               not exists (select 1 from public.scheduled_posts o
                            where o.account_did = q.account_did and o.user_id = q.user_id
                              and o.status = 'posting')
           and not exists (select 1 from public.scheduled_posts o
                            where o.account_did = q.account_did and o.user_id = q.user_id
                              and o.status = 'queued' and (o.run_at, o.id) < (q.run_at, q.id))))
       order by q.run_at, q.id
       limit p_max_items
       for update of q skip locked
    ), claimed as (
      update public.scheduled_posts t
         set status = 'posting',
             attempt_count = t.attempt_count + 1,
             locked_at = p_now,
             locked_by = p_worker_id,
             lease_expires_at = p_now + make_interval(secs => p_lease_seconds),
             lease_token = nextval('public.queue_lease_token_seq')
        from locked
       where t.id = locked.id
      returning t.*
    ), events as (
      insert into public.post_events (scheduled_post_id, type, detail, created_at)
      select c.id, 'claimed',
             jsonb_build_object('attempt', c.attempt_count, 'lease_expires_at', c.lease_expires_at,
                                'lease_token', c.lease_token, 'worker_id', p_worker_id),
             p_now
        from claimed c
    )
    select coalesce(jsonb_agg(to_jsonb(c.*) order by c.run_at, c.id), '[]'::jsonb) into v_items from claimed c;
  end if;
  return v_items;
end
$$;
comment on function public.claim_due_scheduled_posts(text, integer, integer, timestamptz) is
  'claim_next_scheduled_posts with publishing rules: one post per account in flight, oldest run_at first, accounts on hold skipped.';

-- The contract's claim for this queue, without dynamic SQL --------------------------

-- Same contract, answer and events as 0009's generic queue_claim for
-- scheduled_posts, with one static statement (plan cached) and the release
-- of expired leases only when there is one: the generic version plans two
-- dynamic statements per call and ran at about a tenth of a bare
-- UPDATE ... SKIP LOCKED claim (tests/e2e/benches/publish.rs).
create or replace function public.claim_next_scheduled_posts(
  p_worker_id text, p_lease_seconds integer, p_max_items integer, p_now timestamptz default now())
returns jsonb
language plpgsql volatile
set search_path = ''
as $$
declare
  v_items jsonb;
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

  -- The generic release (0009) only when there is something to release.
  if exists (select 1 from public.scheduled_posts e
              where e.status = 'posting' and e.lease_expires_at <= p_now) then
    perform public.queue_release_expired('scheduled_posts', p_now);
  end if;

  -- One statement: lock, lease, `claimed` events, answer. Written twice so
  -- a worker's usual call (LIMIT 1, a constant) keeps a cached generic plan
  -- on the ready index; a LIMIT parameter makes PostgreSQL plan each call.
  if p_max_items = 1 then
    with locked as (
      select q.id
        from public.scheduled_posts q
       where q.status = 'queued'
         and q.run_at <= p_now
       order by q.run_at, q.id
       limit 1
       for update of q skip locked
    ), claimed as (
      update public.scheduled_posts t
         set status = 'posting',
             attempt_count = t.attempt_count + 1,
             locked_at = p_now,
             locked_by = p_worker_id,
             lease_expires_at = p_now + make_interval(secs => p_lease_seconds),
             lease_token = nextval('public.queue_lease_token_seq')
        from locked
       where t.id = locked.id
      returning t.*
    ), events as (
      insert into public.post_events (scheduled_post_id, type, detail, created_at)
      select c.id, 'claimed',
             jsonb_build_object('attempt', c.attempt_count, 'lease_expires_at', c.lease_expires_at,
                                'lease_token', c.lease_token, 'worker_id', p_worker_id),
             p_now
        from claimed c
    )
    select coalesce(jsonb_agg(to_jsonb(c.*) order by c.run_at, c.id), '[]'::jsonb) into v_items from claimed c;
  else
    with locked as (
      select q.id
        from public.scheduled_posts q
       where q.status = 'queued'
         and q.run_at <= p_now
       order by q.run_at, q.id
       limit p_max_items
       for update of q skip locked
    ), claimed as (
      update public.scheduled_posts t
         set status = 'posting',
             attempt_count = t.attempt_count + 1,
             locked_at = p_now,
             locked_by = p_worker_id,
             lease_expires_at = p_now + make_interval(secs => p_lease_seconds),
             lease_token = nextval('public.queue_lease_token_seq')
        from locked
       where t.id = locked.id
      returning t.*
    ), events as (
      insert into public.post_events (scheduled_post_id, type, detail, created_at)
      select c.id, 'claimed',
             jsonb_build_object('attempt', c.attempt_count, 'lease_expires_at', c.lease_expires_at,
                                'lease_token', c.lease_token, 'worker_id', p_worker_id),
             p_now
        from claimed c
    )
    select coalesce(jsonb_agg(to_jsonb(c.*) order by c.run_at, c.id), '[]'::jsonb) into v_items from claimed c;
  end if;
  return v_items;
end
$$;

-- Begin ----------------------------------------------------------------------------

-- Everything publish needs for one attempt, with the lease extended to at
-- least p_lease_seconds from now: {"accepted": true, "post", "account",
-- "parts", "account_hold", "lease_expires_at", "lease_remaining_ms"}; or
-- the stale answer.
create function public.begin_scheduled_post_publish(
  p_id uuid,
  p_lease_token bigint,
  p_lease_seconds integer,
  p_now timestamptz default now()
) returns jsonb
language plpgsql
set search_path = ''
as $$
declare
  v_locked jsonb := public.queue_lock_leased('scheduled_posts', p_id, p_lease_token);
  v_post public.scheduled_posts;
  v_account public.connected_accounts;
  v_account_id uuid;
  v_text text;
  v_media jsonb;
begin
  if v_locked is null then
    return public.record_stale_publish_result(p_id, p_lease_token, 'begin', '{}'::jsonb, p_now);
  end if;
  select * into v_post from public.scheduled_posts sp where sp.id = p_id;
  v_account_id := public.scheduled_post_account_id(v_post);
  -- A row that named its account by DID only gets the account's id, so
  -- holds and published_posts find it.
  update public.scheduled_posts sp
     set lease_expires_at = greatest(sp.lease_expires_at, p_now + make_interval(secs => greatest(p_lease_seconds, 1))),
         account_id = coalesce(sp.account_id, v_account_id)
   where sp.id = p_id
  returning * into v_post;
  select * into v_account from public.connected_accounts ca where ca.id = v_account_id;
  select coalesce(v_post.content, d.text) into v_text
    from (select 1) one left join public.drafts d on d.id = v_post.draft_id;

  -- Images named by AI asset get their storage location.
  select coalesce(jsonb_agg(
           case when m.item ? 'ai_asset_id' then
             m.item || jsonb_strip_nulls(jsonb_build_object(
               'bucket', a.bucket, 'path', a.path, 'mime', coalesce(m.item ->> 'mime', a.mime)))
           else m.item end
           order by m.ord), '[]'::jsonb)
    into v_media
    from jsonb_array_elements(v_post.media) with ordinality as m(item, ord)
    left join public.ai_assets a
      on m.item ? 'ai_asset_id'
     and a.id = case when (m.item ->> 'ai_asset_id') ~* '^[0-9a-f-]{36}$' then (m.item ->> 'ai_asset_id')::uuid end
     and a.user_id = v_post.user_id;

  return jsonb_build_object(
    'accepted', true,
    'post', jsonb_build_object(
      'id', v_post.id,
      'user_id', v_post.user_id,
      'platform', v_post.platform,
      'account_id', v_account_id,
      'adaptation_id', v_post.adaptation_id,
      'draft_id', v_post.draft_id,
      'text', v_text,
      'langs', to_jsonb(v_post.langs),
      'media', v_media,
      'embed', v_post.embed,
      'run_at', v_post.run_at,
      'created_at_us', floor(extract(epoch from v_post.created_at) * 1000000)::bigint,
      'attempt', v_post.attempt_count,
      'max_attempts', v_post.max_attempts,
      'worker_id', v_post.locked_by),
    'account', case when v_account.id is null then null else jsonb_build_object(
      'id', v_account.id,
      'platform', v_account.platform,
      'platform_user_id', v_account.platform_user_id,
      'username', v_account.username,
      'handle', v_account.handle,
      'account_did', v_account.account_did,
      'is_active', v_account.is_active,
      'status', v_account.status,
      'access_token', v_account.access_token,
      'token_key_id', v_account.token_key_id,
      'token_expired', v_account.token_expires_at is not null and v_account.token_expires_at <= p_now,
      'has_refresh_token', v_account.refresh_token is not null) end,
    'parts', coalesce((
      select jsonb_agg(jsonb_build_object(
               'part_index', p.part_index, 'status', p.status, 'text_sha256', p.text_sha256,
               'record_key', p.record_key, 'platform_post_id', p.platform_post_id, 'url', p.url,
               'sends', p.sends, 'first_sent_at', p.first_sent_at, 'detail', p.detail)
             order by p.part_index)
        from public.scheduled_post_parts p where p.scheduled_post_id = p_id), '[]'::jsonb),
    'account_hold', (select jsonb_build_object('not_before', h.not_before, 'reason', h.reason)
                       from public.publish_account_holds h
                      where h.account_id = v_account_id and h.not_before > p_now),
    'lease_expires_at', v_post.lease_expires_at,
    'lease_remaining_ms', floor(extract(epoch from (v_post.lease_expires_at - p_now)) * 1000)::bigint);
end
$$;

-- Parts ----------------------------------------------------------------------------

-- Records a part: 'sending' (the intent, before the call; needs the current
-- lease) or 'posted' (a fact: kept even from a stale worker, so nobody posts
-- it again, with a stale_result event). A posted part stays posted.
create function public.record_scheduled_post_part(
  p_id uuid,
  p_lease_token bigint,
  p_part_index integer,
  p_platform text,
  p_status text,
  p_text_sha256 text,
  p_record_key text default null,
  p_platform_post_id text default null,
  p_url text default null,
  p_detail jsonb default '{}'::jsonb,
  p_now timestamptz default now()
) returns jsonb
language plpgsql
set search_path = ''
as $$
declare
  v_locked jsonb := public.queue_lock_leased('scheduled_posts', p_id, p_lease_token);
  v_part public.scheduled_post_parts;
begin
  if p_status not in ('sending', 'posted') then
    raise exception 'record_scheduled_post_part: status must be sending or posted, not %', p_status
      using errcode = '22023';
  end if;
  if v_locked is null then
    if p_status = 'sending' then
      return public.record_stale_publish_result(p_id, p_lease_token, 'send',
        jsonb_build_object('part_index', p_part_index), p_now);
    end if;
    perform public.record_stale_publish_result(p_id, p_lease_token, 'part_posted',
      jsonb_build_object('part_index', p_part_index, 'platform_post_id', p_platform_post_id), p_now);
  end if;

  insert into public.scheduled_post_parts as part
    (scheduled_post_id, part_index, platform, status, text_sha256, record_key, platform_post_id, url,
     detail, lease_token, sends, first_sent_at, last_sent_at, posted_at)
  values
    (p_id, p_part_index, p_platform::public.platform_enum, p_status, p_text_sha256, p_record_key,
     p_platform_post_id, p_url, coalesce(p_detail, '{}'::jsonb), p_lease_token,
     case when p_status = 'sending' then 1 else 0 end, p_now, p_now,
     case when p_status = 'posted' then p_now end)
  on conflict (scheduled_post_id, part_index) do update
    set status = case when part.status = 'posted' then 'posted' else excluded.status end,
        text_sha256 = case when part.status = 'posted' then part.text_sha256 else excluded.text_sha256 end,
        record_key = coalesce(part.record_key, excluded.record_key),
        platform_post_id = case when part.status = 'posted' then part.platform_post_id
                                else coalesce(excluded.platform_post_id, part.platform_post_id) end,
        url = case when part.status = 'posted' then part.url else coalesce(excluded.url, part.url) end,
        detail = part.detail || excluded.detail,
        lease_token = excluded.lease_token,
        sends = part.sends + case when excluded.status = 'sending' then 1 else 0 end,
        last_sent_at = case when excluded.status = 'sending' then p_now else part.last_sent_at end,
        posted_at = coalesce(part.posted_at, excluded.posted_at)
  returning * into v_part;

  return jsonb_build_object('accepted', v_locked is not null, 'part', to_jsonb(v_part));
end
$$;

-- Complete -------------------------------------------------------------------------

-- Success, with the current lease only: published_posts row (upserted on
-- the platform id), posts archive rows (p_result->'archive': [{
-- "platform_post_id", "text", "content_type", "created_at"}]), then
-- complete_scheduled_post (posted, published_post_id, `success` event).
-- p_result: {"platform", "platform_post_id", "url", "content", "metadata",
-- "published_at", "archive", "settled_by"}.
create function public.complete_scheduled_post_publish(
  p_id uuid,
  p_lease_token bigint,
  p_result jsonb,
  p_now timestamptz default now()
) returns jsonb
language plpgsql
set search_path = ''
as $$
declare
  v_locked jsonb := public.queue_lock_leased('scheduled_posts', p_id, p_lease_token);
  v_post public.scheduled_posts;
  v_account_id uuid;
  v_platform public.platform_enum;
  v_published_id uuid;
  v_published_at timestamptz;
  v_item jsonb;
  v_complete jsonb;
begin
  if v_locked is null then
    return public.record_stale_publish_result(p_id, p_lease_token, 'complete',
      jsonb_build_object('platform_post_id', p_result ->> 'platform_post_id'), p_now);
  end if;
  if coalesce(p_result ->> 'platform_post_id', '') = '' then
    raise exception 'complete_scheduled_post_publish: platform_post_id is required' using errcode = '22023';
  end if;
  select * into v_post from public.scheduled_posts sp where sp.id = p_id;
  v_account_id := public.scheduled_post_account_id(v_post);
  v_platform := coalesce(p_result ->> 'platform', v_post.platform::text)::public.platform_enum;
  v_published_at := coalesce((p_result ->> 'published_at')::timestamptz, p_now);

  insert into public.published_posts as pp
    (user_id, adaptation_id, platform_connection_id, platform, platform_post_id, status, content,
     metadata, scheduled_for, published_at)
  values
    (v_post.user_id, v_post.adaptation_id, v_account_id, v_platform, p_result ->> 'platform_post_id',
     'published', coalesce(p_result ->> 'content', ''),
     coalesce(p_result -> 'metadata', '{}'::jsonb)
       || jsonb_strip_nulls(jsonb_build_object('url', p_result ->> 'url', 'scheduled_post_id', p_id)),
     v_post.run_at, v_published_at)
  on conflict (platform, platform_post_id) where platform_post_id is not null do update
    set status = 'published',
        metadata = coalesce(pp.metadata, '{}'::jsonb) || excluded.metadata,
        published_at = coalesce(pp.published_at, excluded.published_at)
  returning pp.id into v_published_id;

  if v_account_id is not null then
    for v_item in select * from jsonb_array_elements(coalesce(p_result -> 'archive', '[]'::jsonb)) loop
      insert into public.posts as p
        (account_id, user_id, platform, platform_post_id, content_type, text_content,
         created_at_platform, published)
      values
        (v_account_id, v_post.user_id, v_platform, v_item ->> 'platform_post_id',
         coalesce(v_item ->> 'content_type', 'post')::public.content_type_enum, v_item ->> 'text',
         coalesce((v_item ->> 'created_at')::timestamptz, v_published_at), true)
      on conflict (platform, platform_post_id) do update
        set text_content = excluded.text_content, published = true, deleted_on_platform = false;
    end loop;
  end if;

  v_complete := public.queue_complete('scheduled_posts', p_id, p_lease_token,
    jsonb_strip_nulls(jsonb_build_object(
      'published_post_id', v_published_id,
      'platform_post_id', p_result ->> 'platform_post_id',
      'url', p_result ->> 'url',
      'settled_by', p_result ->> 'settled_by',
      'parts', p_result -> 'parts')),
    p_now);
  return v_complete || jsonb_build_object('published_post_id', v_published_id);
end
$$;

-- Fail -----------------------------------------------------------------------------

-- fail_scheduled_post (backoff, dead letter after the last attempt,
-- permanent at once) plus: p_detail goes into the retry/failure event, and
-- p_detail->>'account_status' (e.g. token_expired for revoked credentials)
-- marks the account with the platform's message.
create function public.fail_scheduled_post_publish(
  p_id uuid,
  p_lease_token bigint,
  p_error text,
  p_permanent boolean,
  p_retry_after_seconds integer default null,
  p_detail jsonb default '{}'::jsonb,
  p_now timestamptz default now()
) returns jsonb
language plpgsql
set search_path = ''
as $$
declare
  v_result jsonb;
  v_post public.scheduled_posts;
begin
  v_result := public.queue_fail('scheduled_posts', p_id, p_lease_token, p_error, p_permanent,
                                p_retry_after_seconds, p_now);
  if not (v_result ->> 'accepted')::boolean then
    return public.record_stale_publish_result(p_id, p_lease_token, 'fail',
      jsonb_build_object('error', p_error, 'permanent', p_permanent), p_now);
  end if;
  if coalesce(p_detail, '{}'::jsonb) <> '{}'::jsonb then
    update public.post_events e
       set detail = e.detail || (p_detail - 'account_status')
     where e.id = (select e2.id from public.post_events e2
                    where e2.scheduled_post_id = p_id and e2.type in ('retry', 'failure')
                    order by e2.created_at desc, e2.id desc limit 1);
  end if;
  if p_detail ? 'account_status' then
    select * into v_post from public.scheduled_posts sp where sp.id = p_id;
    update public.connected_accounts ca
       set status = (p_detail ->> 'account_status')::public.account_status_enum,
           error_message = left(p_error, 500),
           error_count = coalesce(ca.error_count, 0) + 1
     where ca.id = public.scheduled_post_account_id(v_post);
  end if;
  return v_result;
end
$$;

-- Hold -----------------------------------------------------------------------------

-- The account must wait until p_not_before (rate limit, write budget): the
-- post goes back to queued with its run_at and its attempt count as they
-- were before this claim, the account is held (claims skip it), and a
-- `deferred` event says why. A post without an account is deferred itself.
create function public.hold_scheduled_post_publish(
  p_id uuid,
  p_lease_token bigint,
  p_not_before timestamptz,
  p_reason text,
  p_now timestamptz default now()
) returns jsonb
language plpgsql
set search_path = ''
as $$
declare
  v_locked jsonb := public.queue_lock_leased('scheduled_posts', p_id, p_lease_token);
  v_post public.scheduled_posts;
  v_account_id uuid;
  v_not_before timestamptz := greatest(coalesce(p_not_before, p_now), p_now);
begin
  if v_locked is null then
    return public.record_stale_publish_result(p_id, p_lease_token, 'hold',
      jsonb_build_object('reason', p_reason), p_now);
  end if;
  select * into v_post from public.scheduled_posts sp where sp.id = p_id;
  v_account_id := public.scheduled_post_account_id(v_post);
  if v_account_id is null then
    return public.queue_defer('scheduled_posts', p_id, p_lease_token, v_not_before, p_reason, p_now);
  end if;

  insert into public.publish_account_holds as h (account_id, not_before, reason, scheduled_post_id)
  values (v_account_id, v_not_before, coalesce(p_reason, 'rate limited'), p_id)
  on conflict (account_id) do update
    set not_before = case when h.not_before > p_now then greatest(h.not_before, excluded.not_before)
                          else excluded.not_before end,
        reason = excluded.reason,
        scheduled_post_id = excluded.scheduled_post_id;

  update public.scheduled_posts sp
     set status = 'queued',
         attempt_count = greatest(sp.attempt_count - 1, 0),
         locked_at = null,
         locked_by = null,
         lease_expires_at = null
   where sp.id = p_id;
  perform public.queue_event('scheduled_posts', p_id, 'deferred', p_lease_token, v_post.locked_by,
    jsonb_build_object('reason', p_reason, 'not_before', v_not_before, 'account_hold', true,
                       'account_id', v_account_id),
    p_now);
  return jsonb_build_object('accepted', true, 'status', 'queued', 'item_status', 'queued',
                            'next_attempt_at', v_not_before, 'account_id', v_account_id);
end
$$;

-- Write budget ---------------------------------------------------------------------

-- Takes p_points from every window of the platform's limits, all or none:
-- {"allowed": true, "used": {"3600": n, "86400": n}} or
-- {"allowed": false, "not_before", "window_seconds", "limit", "used"}.
create function public.reserve_publish_write_points(
  p_account_id uuid,
  p_platform text,
  p_points integer,
  p_now timestamptz default now()
) returns jsonb
language plpgsql
set search_path = ''
as $$
declare
  v_limit jsonb;
  v_seconds integer;
  v_start timestamptz;
  v_points integer;
  v_used jsonb := '{}'::jsonb;
begin
  if p_points is null or p_points < 0 then
    raise exception 'reserve_publish_write_points: p_points must be >= 0' using errcode = '22023';
  end if;
  -- Check every window first (rows locked in one order: no deadlocks).
  for v_limit in
    select l from jsonb_array_elements(public.publish_write_limits(p_platform)) l
     order by (l ->> 'window_seconds')::int
  loop
    v_seconds := (v_limit ->> 'window_seconds')::int;
    v_start := to_timestamp(floor(extract(epoch from p_now) / v_seconds) * v_seconds);
    insert into public.publish_write_budgets (account_id, window_seconds, window_start, points)
    values (p_account_id, v_seconds, v_start, 0)
    on conflict do nothing;
    select b.points into v_points from public.publish_write_budgets b
     where b.account_id = p_account_id and b.window_seconds = v_seconds and b.window_start = v_start
       for update;
    if v_points + p_points > (v_limit ->> 'limit')::int then
      return jsonb_build_object('allowed', false,
        'not_before', v_start + make_interval(secs => v_seconds),
        'window_seconds', v_seconds, 'limit', (v_limit ->> 'limit')::int, 'used', v_points);
    end if;
    v_used := v_used || jsonb_build_object(v_seconds::text, v_points + p_points);
  end loop;

  update public.publish_write_budgets b
     set points = b.points + p_points
   where b.account_id = p_account_id
     and (b.window_seconds, b.window_start) in (
       select (l ->> 'window_seconds')::int,
              to_timestamp(floor(extract(epoch from p_now) / (l ->> 'window_seconds')::int)
                           * (l ->> 'window_seconds')::int)
         from jsonb_array_elements(public.publish_write_limits(p_platform)) l);
  -- Windows older than a day are history.
  delete from public.publish_write_budgets b
   where b.account_id = p_account_id and b.window_start < p_now - interval '2 days';
  return jsonb_build_object('allowed', true, 'used', v_used);
end
$$;

-- Metrics --------------------------------------------------------------------------

-- Up to p_limit Bluesky posts published in the last p_window_days whose
-- metrics are older than p_min_interval_seconds, least recently synced
-- first, marked as being refreshed (so concurrent runs take others):
-- [{"published_post_id", "uri"}].
create function public.claim_bluesky_metrics_batch(
  p_limit integer default 25,
  p_min_interval_seconds integer default 900,
  p_window_days integer default 7,
  p_now timestamptz default now()
) returns jsonb
language plpgsql
set search_path = ''
as $$
declare
  v_items jsonb;
begin
  with due as (
    select pp.id
      from public.published_posts pp
     where pp.platform = 'bluesky'
       and pp.status = 'published'
       and pp.platform_post_id like 'at://%'
       and pp.published_at >= p_now - make_interval(days => p_window_days)
       and coalesce((pp.metrics ->> 'last_synced')::timestamptz, '-infinity'::timestamptz)
           <= p_now - make_interval(secs => p_min_interval_seconds)
       and coalesce((pp.metrics ->> 'refresh_started_at')::timestamptz, '-infinity'::timestamptz)
           <= p_now - interval '1 minute'
     order by coalesce((pp.metrics ->> 'last_synced')::timestamptz, '-infinity'::timestamptz), pp.published_at, pp.id
     limit greatest(least(p_limit, 25), 1)
     for update skip locked
  ), marked as (
    update public.published_posts pp
       set metrics = coalesce(pp.metrics, '{}'::jsonb) || jsonb_build_object('refresh_started_at', p_now)
      from due
     where pp.id = due.id
    returning pp.id, pp.platform_post_id
  )
  select coalesce(jsonb_agg(jsonb_build_object('published_post_id', m.id, 'uri', m.platform_post_id)
                            order by m.platform_post_id), '[]'::jsonb)
    into v_items from marked m;
  return v_items;
end
$$;

-- p_items: [{"uri", "likes", "reposts", "replies", "quotes"}] from getPosts.
-- Updates published_posts.metrics and adds an engagement_history row for
-- the post's archive row: {"updated", "history"}.
create function public.record_bluesky_post_metrics(p_items jsonb, p_now timestamptz default now())
returns jsonb
language plpgsql
set search_path = ''
as $$
declare
  v_item jsonb;
  v_stats jsonb;
  v_updated integer := 0;
  v_history integer := 0;
  v_count integer;
begin
  for v_item in select * from jsonb_array_elements(coalesce(p_items, '[]'::jsonb)) loop
    v_stats := jsonb_build_object(
      'likes', coalesce((v_item ->> 'likes')::int, 0),
      'reposts', coalesce((v_item ->> 'reposts')::int, 0),
      'replies', coalesce((v_item ->> 'replies')::int, 0),
      'quotes', coalesce((v_item ->> 'quotes')::int, 0));
    update public.published_posts pp
       set metrics = (coalesce(pp.metrics, '{}'::jsonb) - 'refresh_started_at')
                     || v_stats || jsonb_build_object('last_synced', p_now)
     where pp.platform = 'bluesky' and pp.platform_post_id = v_item ->> 'uri';
    get diagnostics v_count = row_count;
    v_updated := v_updated + v_count;
    insert into public.engagement_history (post_id, engagement_stats, recorded_at)
    select p.id, v_stats, p_now
      from public.posts p
     where p.platform = 'bluesky' and p.platform_post_id = v_item ->> 'uri'
    on conflict (post_id, recorded_at) do nothing;
    get diagnostics v_count = row_count;
    v_history := v_history + v_count;
  end loop;
  return jsonb_build_object('updated', v_updated, 'history', v_history);
end
$$;

-- Grants: the service role only. ----------------------------------------------------

revoke all on function public.publish_write_limits(text) from public, anon, authenticated;
revoke all on function public.scheduled_post_account_id(public.scheduled_posts) from public, anon, authenticated;
revoke all on function public.record_stale_publish_result(uuid, bigint, text, jsonb, timestamptz) from public, anon, authenticated;
revoke all on function public.claim_due_scheduled_posts(text, integer, integer, timestamptz) from public, anon, authenticated;
revoke all on function public.begin_scheduled_post_publish(uuid, bigint, integer, timestamptz) from public, anon, authenticated;
revoke all on function public.record_scheduled_post_part(uuid, bigint, integer, text, text, text, text, text, text, jsonb, timestamptz) from public, anon, authenticated;
revoke all on function public.complete_scheduled_post_publish(uuid, bigint, jsonb, timestamptz) from public, anon, authenticated;
revoke all on function public.fail_scheduled_post_publish(uuid, bigint, text, boolean, integer, jsonb, timestamptz) from public, anon, authenticated;
revoke all on function public.hold_scheduled_post_publish(uuid, bigint, timestamptz, text, timestamptz) from public, anon, authenticated;
revoke all on function public.reserve_publish_write_points(uuid, text, integer, timestamptz) from public, anon, authenticated;
revoke all on function public.claim_bluesky_metrics_batch(integer, integer, integer, timestamptz) from public, anon, authenticated;
revoke all on function public.record_bluesky_post_metrics(jsonb, timestamptz) from public, anon, authenticated;

grant execute on function public.publish_write_limits(text) to service_role;
grant execute on function public.scheduled_post_account_id(public.scheduled_posts) to service_role;
grant execute on function public.record_stale_publish_result(uuid, bigint, text, jsonb, timestamptz) to service_role;
grant execute on function public.claim_due_scheduled_posts(text, integer, integer, timestamptz) to service_role;
grant execute on function public.begin_scheduled_post_publish(uuid, bigint, integer, timestamptz) to service_role;
grant execute on function public.record_scheduled_post_part(uuid, bigint, integer, text, text, text, text, text, text, jsonb, timestamptz) to service_role;
grant execute on function public.complete_scheduled_post_publish(uuid, bigint, jsonb, timestamptz) to service_role;
grant execute on function public.fail_scheduled_post_publish(uuid, bigint, text, boolean, integer, jsonb, timestamptz) to service_role;
grant execute on function public.hold_scheduled_post_publish(uuid, bigint, timestamptz, text, timestamptz) to service_role;
grant execute on function public.reserve_publish_write_points(uuid, text, integer, timestamptz) to service_role;
grant execute on function public.claim_bluesky_metrics_batch(integer, integer, integer, timestamptz) to service_role;
grant execute on function public.record_bluesky_post_metrics(jsonb, timestamptz) to service_role;
grant select, insert, update, delete on public.scheduled_post_parts, public.publish_account_holds,
  public.publish_write_budgets to service_role;
