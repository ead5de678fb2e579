-- 0009: the work-queue contract (migrations/CONTRACT.md) for all six queues.
--
-- One generic implementation over a small per-queue definition table
-- (queue_definitions) and thin per-queue wrappers with the contract's names:
--   claim_next_<queue>(p_worker_id, p_lease_seconds, p_max_items, p_now)
--   complete_<singular>(p_id, p_lease_token, p_result, p_now)
--   fail_<singular>(p_id, p_lease_token, p_error, p_permanent, p_retry_after_seconds, p_now)
--   defer_<singular>(p_id, p_lease_token, p_not_before, p_reason, p_now)
-- for scheduled_posts, ai_jobs, generations, media_downloads, ingested_items,
-- ingested_posts. A claim first releases expired leases (a lease_expired
-- event each; an item whose lease expired on its last attempt is
-- dead-lettered), then takes due waiting items, oldest due first, in one
-- WITH locked AS (SELECT ... FOR UPDATE SKIP LOCKED) UPDATE ... RETURNING,
-- increments the attempt counter and hands out a fencing token from the one
-- global sequence queue_lease_token_seq. complete/fail/defer are accepted
-- only with the current token of a leased item. Failures back off
-- exponentially (30 s * 2^(attempt-1), capped at 1 h, +-20 % jitter, never
-- sooner than p_retry_after_seconds); permanent failures and the last
-- attempt dead-letter the item with its error. Every transition writes an
-- event (post_events, ai_job_events, or queue_events).
-- Also: the seed-named wrappers claim_next_scheduled_post(lock_seconds,
-- worker_id) and claim_next_ai_image_job(lock_seconds, worker_id);
-- record_generation_result() for Replicate outcomes; queue_depths(),
-- record_worker_heartbeat(), outpost_status().
--
-- Status vocabularies (waiting / leased / done / dead):
--   scheduled_posts  queued  / posting     / posted                 / failed (+ dead_lettered_at); cancelled never claimed
--   ai_jobs          queued  / running     / succeeded              / failed
--   generations      pending / starting    / processing (submitted to Replicate), succeeded, canceled / failed
--   media_downloads  pending / downloading / downloaded, unavailable / failed
--   ingested_items   pending / processing  / completed              / dead_letter (attempts used up), failed (permanent)
--   ingested_posts   same as ingested_items

create sequence public.queue_lease_token_seq as bigint;
comment on sequence public.queue_lease_token_seq is 'Fencing tokens for every queue lease: one global, strictly increasing sequence.';

-- Queue definitions ----------------------------------------------------------------

create table public.queue_definitions (
  queue text primary key,
  singular text not null unique,
  attempts_column text not null,
  due_column text not null,
  waiting_status text not null,
  leased_status text not null,
  done_statuses text[] not null,
  dead_status text not null,
  permanent_status text not null,
  constraint done_statuses_not_empty check (cardinality(done_statuses) >= 1)
);
comment on table public.queue_definitions is
  'One row per work queue: its table (= queue), columns and status names. done_statuses[1] is the default of complete_*.';

insert into public.queue_definitions values
  ('scheduled_posts', 'scheduled_post', 'attempt_count', 'run_at', 'queued', 'posting',
   array['posted'], 'failed', 'failed'),
  ('ai_jobs', 'ai_job', 'attempt_count', 'next_attempt_at', 'queued', 'running',
   array['succeeded'], 'failed', 'failed'),
  ('generations', 'generation', 'attempts', 'next_attempt_at', 'pending', 'starting',
   array['processing', 'succeeded', 'canceled'], 'failed', 'failed'),
  ('media_downloads', 'media_download', 'attempts', 'next_attempt_at', 'pending', 'downloading',
   array['downloaded', 'unavailable'], 'failed', 'failed'),
  ('ingested_items', 'ingested_item', 'attempts', 'next_attempt_at', 'pending', 'processing',
   array['completed'], 'dead_letter', 'failed'),
  ('ingested_posts', 'ingested_post', 'attempts', 'next_attempt_at', 'pending', 'processing',
   array['completed'], 'dead_letter', 'failed');

alter table public.queue_definitions enable row level security;
revoke insert, update, delete, truncate on public.queue_definitions from anon, authenticated, service_role;
create policy "Signed-in users can read queue definitions"
  on public.queue_definitions for select to authenticated using (true);

-- queue_events: the event log of the queues without their own -----------------

create table public.queue_events (
  id bigint generated always as identity primary key,
  queue text not null references public.queue_definitions (queue),
  item_id uuid not null,
  event text not null,
  lease_token bigint,
  worker_id text,
  detail jsonb not null default '{}'::jsonb,
  created_at timestamptz not null default now(),
  constraint event_is_known check (event in ('claimed', 'lease_expired', 'success', 'retry', 'failure', 'deferred'))
);
create index queue_events_item_idx on public.queue_events (queue, item_id, created_at);
create index queue_events_created_at_idx on public.queue_events (created_at);

alter table public.queue_events enable row level security;
create policy "Users can read events of their own queue items"
  on public.queue_events for select to authenticated
  using (
    (queue = 'generations'
      and exists (select 1 from public.generations g where g.id = item_id and g.user_id = auth.uid()))
    or (queue = 'media_downloads'
      and exists (select 1 from public.media_downloads m where m.id = item_id and m.user_id = auth.uid()))
    or (queue = 'ingested_items'
      and exists (select 1 from public.ingested_items i where i.id = item_id and i.user_id = auth.uid()))
    or (queue = 'ingested_posts'
      and exists (select 1 from public.ingested_posts p where p.id = item_id and p.user_id = auth.uid()))
  );

-- Internals ----------------------------------------------------------------------

create function public.queue_definition(p_queue text) returns public.queue_definitions
language plpgsql stable
set search_path = ''
as $$
declare
  v_def public.queue_definitions;
begin
  select * into v_def from public.queue_definitions d where d.queue = p_queue;
  if not found then
    raise exception 'unknown queue: %', p_queue using errcode = '22023';
  end if;
  return v_def;
end
$$;

-- Seconds to wait before the next attempt after attempt number p_attempt:
-- 30 s * 2^(attempt-1), capped at 1 h, +-20 % jitter, at least p_retry_after_seconds.
create function public.queue_backoff_seconds(
  p_attempt integer,
  p_retry_after_seconds integer default null,
  p_base_seconds integer default 30,
  p_cap_seconds integer default 3600
) returns double precision
language sql volatile
set search_path = ''
as $$
  select greatest(
    least(p_cap_seconds::double precision,
          p_base_seconds * power(2::double precision, least(greatest(coalesce(p_attempt, 1), 1) - 1, 30)))
      * (0.8 + random() * 0.4),
    coalesce(p_retry_after_seconds, 0)::double precision)
$$;

create function public.queue_event(
  p_queue text,
  p_item_id uuid,
  p_event text,
  p_lease_token bigint,
  p_worker_id text,
  p_detail jsonb,
  p_now timestamptz
) returns void
language plpgsql
set search_path = ''
as $$
declare
  v_detail jsonb := coalesce(p_detail, '{}'::jsonb)
    || jsonb_strip_nulls(jsonb_build_object('lease_token', p_lease_token, 'worker_id', p_worker_id));
begin
  if p_queue = 'scheduled_posts' then
    insert into public.post_events (scheduled_post_id, type, detail, created_at)
    values (p_item_id, p_event, v_detail, p_now);
  elsif p_queue = 'ai_jobs' then
    insert into public.ai_job_events (job_id, type, detail, created_at)
    values (p_item_id, p_event, v_detail, p_now);
  else
    insert into public.queue_events (queue, item_id, event, lease_token, worker_id, detail, created_at)
    values (p_queue, p_item_id, p_event, p_lease_token, p_worker_id, coalesce(p_detail, '{}'::jsonb), p_now);
  end if;
end
$$;

-- Extra SET clauses per queue, kept in step with each seed's own columns.
-- $1 is p_now in every statement that uses them.
create function public.queue_extra_set(p_queue text, p_step text) returns text
language sql immutable
set search_path = ''
as $$
  select case p_step
    when 'claim' then case p_queue
      when 'media_downloads' then ', last_attempt_at = $1'
      when 'ingested_items' then ', started_at = $1'
      when 'ingested_posts' then ', started_at = $1'
      else '' end
    when 'dead' then case p_queue
      when 'media_downloads' then ', error = $3'
      when 'generations' then ', error = $3'
      when 'ingested_items' then ', error_message = $3, last_error_at = $1'
      when 'ingested_posts' then ', error_message = $3, last_error_at = $1'
      else '' end
    when 'retry' then case p_queue
      when 'media_downloads' then ', error = $3'
      when 'ingested_items' then ', error_message = $3, last_error_at = $1'
      when 'ingested_posts' then ', error_message = $3, last_error_at = $1'
      else '' end
    else '' end
$$;

-- Release expired leases: back to waiting, or dead letter after the last attempt.
create function public.queue_release_expired(p_queue text, p_now timestamptz default now())
returns integer
language plpgsql
set search_path = ''
as $$
declare
  d public.queue_definitions := public.queue_definition(p_queue);
  v_released jsonb;
  v_item jsonb;
begin
  execute format($q$
    with expired as (
      select q.id, q.lease_token as old_token, q.locked_by as old_worker
        from public.%1$I q
       where q.status = %2$L
         and q.lease_expires_at <= $1
       order by q.lease_expires_at, q.id
       for update skip locked
    ), released as (
      update public.%1$I t
         set status = case when t.%3$I >= t.max_attempts then %4$L else %5$L end::%6$s,
             dead_lettered_at = case when t.%3$I >= t.max_attempts then $1 end,
             last_error = case when t.%3$I >= t.max_attempts
                               then format('lease expired on the last attempt (%%s of %%s)', t.%3$I, t.max_attempts)
                               else t.last_error end,
             locked_at = null,
             locked_by = null,
             lease_expires_at = null
        from expired
       where t.id = expired.id
      returning t.id, expired.old_token, expired.old_worker, t.%3$I as attempts,
                t.max_attempts, t.status::text = %4$L as dead, t.last_error
    )
    select coalesce(jsonb_agg(to_jsonb(r.*)), '[]'::jsonb) from released r
  $q$, p_queue, d.leased_status, d.attempts_column, d.dead_status, d.waiting_status,
       (select pg_catalog.format_type(a.atttypid, a.atttypmod)
          from pg_catalog.pg_attribute a
         where a.attrelid = pg_catalog.to_regclass('public.' || quote_ident(p_queue))
           and a.attname = 'status'))
  into v_released
  using p_now;

  for v_item in select * from jsonb_array_elements(v_released) loop
    perform public.queue_event(p_queue, (v_item ->> 'id')::uuid, 'lease_expired',
      (v_item ->> 'old_token')::bigint, v_item ->> 'old_worker',
      jsonb_build_object('attempt', (v_item ->> 'attempts')::int, 'max_attempts', (v_item ->> 'max_attempts')::int),
      p_now);
    if (v_item ->> 'dead')::boolean then
      perform public.queue_event(p_queue, (v_item ->> 'id')::uuid, 'failure',
        (v_item ->> 'old_token')::bigint, v_item ->> 'old_worker',
        jsonb_build_object('error', v_item ->> 'last_error', 'attempt', (v_item ->> 'attempts')::int,
                           'dead_lettered', true),
        p_now);
    end if;
  end loop;
  return jsonb_array_length(v_released);
end
$$;

create function public.queue_claim(
  p_queue text,
  p_worker_id text,
  p_lease_seconds integer,
  p_max_items integer,
  p_now timestamptz default now()
) returns jsonb
language plpgsql
set search_path = ''
as $$
declare
  d public.queue_definitions := public.queue_definition(p_queue);
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

  perform public.queue_release_expired(p_queue, p_now);

  execute format($q$
    with locked as (
      select q.id
        from public.%1$I q
       where q.status = %2$L
         and q.%3$I <= $1
       order by q.%3$I, q.id
       limit $2
       for update skip locked
    ), claimed as (
      update public.%1$I t
         set status = %4$L,
             %5$I = t.%5$I + 1,
             locked_at = $1,
             locked_by = $3,
             lease_expires_at = $1 + make_interval(secs => $4),
             lease_token = nextval('public.queue_lease_token_seq')
             %6$s
        from locked
       where t.id = locked.id
      returning t.*
    )
    select coalesce(jsonb_agg(to_jsonb(c.*) order by c.%3$I, c.id), '[]'::jsonb) from claimed c
  $q$, p_queue, d.waiting_status, d.due_column, d.leased_status, d.attempts_column,
       public.queue_extra_set(p_queue, 'claim'))
  into v_items
  using p_now, p_max_items, p_worker_id, p_lease_seconds;

  for v_item in select * from jsonb_array_elements(v_items) loop
    perform public.queue_event(p_queue, (v_item ->> 'id')::uuid, 'claimed',
      (v_item ->> 'lease_token')::bigint, p_worker_id,
      jsonb_build_object('attempt', (v_item ->> d.attempts_column)::int,
                         'lease_expires_at', v_item -> 'lease_expires_at'),
      p_now);
  end loop;
  return v_items;
end
$$;

-- The item as jsonb, locked, if p_lease_token is its current lease; else null.
create function public.queue_lock_leased(p_queue text, p_id uuid, p_lease_token bigint)
returns jsonb
language plpgsql
set search_path = ''
as $$
declare
  d public.queue_definitions := public.queue_definition(p_queue);
  v_row jsonb;
begin
  execute format('select to_jsonb(t.*) from public.%I t where t.id = $1 for update', p_queue)
    into v_row using p_id;
  if v_row is null
     or p_lease_token is null
     or (v_row ->> 'lease_token')::bigint is distinct from p_lease_token
     or v_row ->> 'status' is distinct from d.leased_status then
    return null;
  end if;
  return v_row;
end
$$;

create function public.queue_complete(
  p_queue text,
  p_id uuid,
  p_lease_token bigint,
  p_result jsonb,
  p_now timestamptz default now()
) returns jsonb
language plpgsql
set search_path = ''
as $$
declare
  d public.queue_definitions := public.queue_definition(p_queue);
  v_row jsonb := public.queue_lock_leased(p_queue, p_id, p_lease_token);
  v_status text := coalesce(p_result ->> 'status', d.done_statuses[1]);
  v_extra text;
begin
  if v_row is null then
    return jsonb_build_object('accepted', false, 'reason', 'stale_lease');
  end if;
  if not v_status = any (d.done_statuses) then
    raise exception 'complete_%: status % is not one of %', d.singular, v_status, d.done_statuses
      using errcode = '22023';
  end if;

  v_extra := case p_queue
    when 'scheduled_posts' then
      ', posted_at = $1, published_post_id = coalesce(($2 ->> ''published_post_id'')::uuid, t.published_post_id)'
    when 'ai_jobs' then
      ', completed_at = $1, result = coalesce($2, t.result)'
    when 'generations' then
      ', replicate_prediction_id = coalesce($2 ->> ''replicate_prediction_id'', $2 ->> ''prediction_id'', t.replicate_prediction_id)'
      ' , output_urls = case when $2 ? ''output_urls'' then array(select jsonb_array_elements_text($2 -> ''output_urls'')) else t.output_urls end'
      ' , output_thumbs = case when $2 ? ''output_thumbs'' then array(select jsonb_array_elements_text($2 -> ''output_thumbs'')) else t.output_thumbs end'
      ' , cost_usd = coalesce(($2 ->> ''cost_usd'')::numeric, t.cost_usd)'
      ' , completed_at = case when %1$L in (''succeeded'', ''canceled'') then $1 else t.completed_at end'
    when 'media_downloads' then
      ', completed_at = $1, error = null'
    else
      ', completed_at = $1'
    end;

  execute format(
    'update public.%I t set status = %L, locked_at = null, locked_by = null, lease_expires_at = null '
    || format(v_extra, v_status) || ' where t.id = $3',
    p_queue, v_status)
  using p_now, coalesce(p_result, '{}'::jsonb), p_id;

  perform public.queue_event(p_queue, p_id, 'success', p_lease_token, v_row ->> 'locked_by',
    jsonb_strip_nulls(jsonb_build_object('status', v_status, 'result', p_result)), p_now);
  return jsonb_build_object('accepted', true, 'status', v_status);
end
$$;

create function public.queue_fail(
  p_queue text,
  p_id uuid,
  p_lease_token bigint,
  p_error text,
  p_permanent boolean,
  p_retry_after_seconds integer,
  p_now timestamptz default now()
) returns jsonb
language plpgsql
set search_path = ''
as $$
declare
  d public.queue_definitions := public.queue_definition(p_queue);
  v_row jsonb := public.queue_lock_leased(p_queue, p_id, p_lease_token);
  v_attempts integer;
  v_max integer;
  v_dead boolean;
  v_status text;
  v_next timestamptz;
begin
  if v_row is null then
    return jsonb_build_object('accepted', false, 'reason', 'stale_lease');
  end if;
  v_attempts := (v_row ->> d.attempts_column)::integer;
  v_max := (v_row ->> 'max_attempts')::integer;
  v_dead := coalesce(p_permanent, false) or v_attempts >= v_max;

  if v_dead then
    v_status := case when coalesce(p_permanent, false) then d.permanent_status else d.dead_status end;
    execute format(
      'update public.%I t set status = %L, dead_lettered_at = $1, last_error = $3, '
      'locked_at = null, locked_by = null, lease_expires_at = null %s where t.id = $2',
      p_queue, v_status, public.queue_extra_set(p_queue, 'dead'))
    using p_now, p_id, p_error;
    perform public.queue_event(p_queue, p_id, 'failure', p_lease_token, v_row ->> 'locked_by',
      jsonb_build_object('error', p_error, 'attempt', v_attempts, 'max_attempts', v_max,
                         'permanent', coalesce(p_permanent, false), 'dead_lettered', true),
      p_now);
  else
    v_status := d.waiting_status;
    v_next := p_now + make_interval(secs => public.queue_backoff_seconds(v_attempts, p_retry_after_seconds));
    execute format(
      'update public.%I t set status = %L, %I = $4, last_error = $3, '
      'locked_at = null, locked_by = null, lease_expires_at = null %s where t.id = $2',
      p_queue, v_status, d.due_column, public.queue_extra_set(p_queue, 'retry'))
    using p_now, p_id, p_error, v_next;
    perform public.queue_event(p_queue, p_id, 'retry', p_lease_token, v_row ->> 'locked_by',
      jsonb_build_object('error', p_error, 'attempt', v_attempts, 'max_attempts', v_max,
                         'next_attempt_at', v_next, 'retry_after_seconds', p_retry_after_seconds),
      p_now);
  end if;

  return jsonb_build_object(
    'accepted', true,
    'status', case when v_dead then 'dead' else 'queued' end,
    'item_status', v_status,
    'attempts', v_attempts,
    'max_attempts', v_max,
    'next_attempt_at', v_next);
end
$$;

create function public.queue_defer(
  p_queue text,
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
  d public.queue_definitions := public.queue_definition(p_queue);
  v_row jsonb := public.queue_lock_leased(p_queue, p_id, p_lease_token);
  v_next timestamptz := coalesce(p_not_before, p_now);
begin
  if v_row is null then
    return jsonb_build_object('accepted', false, 'reason', 'stale_lease');
  end if;
  execute format(
    'update public.%1$I t set status = %2$L, %3$I = $1, %4$I = greatest(t.%4$I - 1, 0), '
    'locked_at = null, locked_by = null, lease_expires_at = null where t.id = $2',
    p_queue, d.waiting_status, d.due_column, d.attempts_column)
  using v_next, p_id;
  perform public.queue_event(p_queue, p_id, 'deferred', p_lease_token, v_row ->> 'locked_by',
    jsonb_build_object('reason', p_reason, 'not_before', v_next), p_now);
  return jsonb_build_object('accepted', true, 'status', 'queued', 'item_status', d.waiting_status,
                            'next_attempt_at', v_next);
end
$$;

-- queue_depths: {"<queue>": {"queued", "leased", "dead"}} (an expired lease counts as queued).
create function public.queue_depths(p_now timestamptz default now())
returns jsonb
language plpgsql stable
set search_path = ''
as $$
declare
  d public.queue_definitions;
  v_depth jsonb;
  v_out jsonb := '{}'::jsonb;
begin
  for d in select * from public.queue_definitions order by queue loop
    execute format($q$
      select jsonb_build_object(
        'queued', count(*) filter (where t.status = %2$L or (t.status = %3$L and t.lease_expires_at <= $1)),
        'leased', count(*) filter (where t.status = %3$L and t.lease_expires_at > $1),
        'dead', count(*) filter (where t.status in (%4$L, %5$L) and t.dead_lettered_at is not null))
        from public.%1$I t
       where t.status in (%2$L, %3$L, %4$L, %5$L)
    $q$, d.queue, d.waiting_status, d.leased_status, d.dead_status, d.permanent_status)
    into v_depth using p_now;
    v_out := v_out || jsonb_build_object(d.queue, v_depth);
  end loop;
  return v_out;
end
$$;

-- Per-queue wrappers with the contract's names ---------------------------------------

do $wrappers$
declare
  d public.queue_definitions;
begin
  for d in select * from public.queue_definitions loop
    execute format($f$
      create function public.claim_next_%1$s(
        p_worker_id text, p_lease_seconds integer, p_max_items integer, p_now timestamptz default now())
      returns jsonb language sql volatile set search_path = ''
      as $b$ select public.queue_claim(%3$L, p_worker_id, p_lease_seconds, p_max_items, p_now) $b$;
      comment on function public.claim_next_%1$s(text, integer, integer, timestamptz) is
        'Claim up to p_max_items due %3$s with a lease; jsonb array of rows, each with its lease_token.';

      create function public.complete_%2$s(
        p_id uuid, p_lease_token bigint, p_result jsonb default null, p_now timestamptz default now())
      returns jsonb language sql volatile set search_path = ''
      as $b$ select public.queue_complete(%3$L, p_id, p_lease_token, p_result, p_now) $b$;

      create function public.fail_%2$s(
        p_id uuid, p_lease_token bigint, p_error text, p_permanent boolean default false,
        p_retry_after_seconds integer default null, p_now timestamptz default now())
      returns jsonb language sql volatile set search_path = ''
      as $b$ select public.queue_fail(%3$L, p_id, p_lease_token, p_error, p_permanent, p_retry_after_seconds, p_now) $b$;

      create function public.defer_%2$s(
        p_id uuid, p_lease_token bigint, p_not_before timestamptz, p_reason text default null,
        p_now timestamptz default now())
      returns jsonb language sql volatile set search_path = ''
      as $b$ select public.queue_defer(%3$L, p_id, p_lease_token, p_not_before, p_reason, p_now) $b$;

      revoke all on function public.claim_next_%1$s(text, integer, integer, timestamptz) from public, anon, authenticated;
      revoke all on function public.complete_%2$s(uuid, bigint, jsonb, timestamptz) from public, anon, authenticated;
      revoke all on function public.fail_%2$s(uuid, bigint, text, boolean, integer, timestamptz) from public, anon, authenticated;
      revoke all on function public.defer_%2$s(uuid, bigint, timestamptz, text, timestamptz) from public, anon, authenticated;
      grant execute on function public.claim_next_%1$s(text, integer, integer, timestamptz) to service_role;
      grant execute on function public.complete_%2$s(uuid, bigint, jsonb, timestamptz) to service_role;
      grant execute on function public.fail_%2$s(uuid, bigint, text, boolean, integer, timestamptz) to service_role;
      grant execute on function public.defer_%2$s(uuid, bigint, timestamptz, text, timestamptz) to service_role;
    $f$, d.queue, d.singular, d.queue);
  end loop;
end
$wrappers$;

-- Seed-named claim RPCs (seed 000), one row over the batch claim ---------------------

create function public.claim_next_scheduled_post(lock_seconds integer default 300, worker_id text default 'worker')
returns setof public.scheduled_posts
language sql volatile
set search_path = ''
as $$
  select * from jsonb_populate_recordset(null::public.scheduled_posts,
    public.claim_next_scheduled_posts(worker_id, lock_seconds, 1, now()))
$$;

create function public.claim_next_ai_image_job(lock_seconds integer default 300, worker_id text default 'worker')
returns setof public.ai_jobs
language sql volatile
set search_path = ''
as $$
  select * from jsonb_populate_recordset(null::public.ai_jobs,
    public.claim_next_ai_jobs(worker_id, lock_seconds, 1, now()))
$$;

-- Replicate's verdict on a prediction (webhook or poll). Terminal statuses
-- end the generation whatever its lease; 'starting'/'processing' only record
-- the prediction id. Idempotent: a finished generation is left alone.
create function public.record_generation_result(
  p_prediction_id text,
  p_result jsonb,
  p_generation_id uuid default null,
  p_now timestamptz default now()
) returns jsonb
language plpgsql
set search_path = ''
as $$
declare
  v_status text := p_result ->> 'status';
  v_gen public.generations;
begin
  select * into v_gen from public.generations g
   where (p_generation_id is not null and g.id = p_generation_id)
      or (p_generation_id is null and g.replicate_prediction_id = p_prediction_id)
   order by g.created_at desc
   limit 1
   for update;
  if not found then
    return jsonb_build_object('applied', false, 'reason', 'not_found');
  end if;
  if v_gen.status in ('succeeded', 'failed', 'canceled') then
    return jsonb_build_object('applied', false, 'reason', 'already_finished', 'status', v_gen.status, 'id', v_gen.id);
  end if;

  if v_status in ('succeeded', 'failed', 'canceled') then
    update public.generations g
       set status = v_status,
           replicate_prediction_id = coalesce(p_prediction_id, g.replicate_prediction_id),
           output_urls = case when p_result ? 'output_urls'
                              then array(select jsonb_array_elements_text(p_result -> 'output_urls'))
                              else g.output_urls end,
           output_thumbs = case when p_result ? 'output_thumbs'
                                then array(select jsonb_array_elements_text(p_result -> 'output_thumbs'))
                                else g.output_thumbs end,
           cost_usd = coalesce((p_result ->> 'cost_usd')::numeric, g.cost_usd),
           error = case when v_status = 'failed' then coalesce(p_result ->> 'error', g.error) else g.error end,
           completed_at = p_now,
           locked_at = null,
           locked_by = null,
           lease_expires_at = null
     where g.id = v_gen.id;
  elsif v_status in ('starting', 'processing') then
    update public.generations g
       set replicate_prediction_id = coalesce(g.replicate_prediction_id, p_prediction_id)
     where g.id = v_gen.id;
  else
    raise exception 'record_generation_result: unknown status %', v_status using errcode = '22023';
  end if;
  return jsonb_build_object('applied', true, 'id', v_gen.id, 'status',
                            case when v_status in ('succeeded', 'failed', 'canceled') then v_status else v_gen.status end);
end
$$;

-- Heartbeats and status --------------------------------------------------------------

create function public.record_worker_heartbeat(
  p_worker_id text,
  p_detail jsonb default '{}'::jsonb,
  p_now timestamptz default now()
) returns jsonb
language sql volatile
set search_path = ''
as $$
  insert into public.worker_heartbeats as h (worker_id, last_seen_at, detail)
  values (p_worker_id, p_now, coalesce(p_detail, '{}'::jsonb))
  on conflict (worker_id) do update
    set last_seen_at = excluded.last_seen_at, detail = excluded.detail
  returning to_jsonb(h.*)
$$;

create function public.outpost_status(p_now timestamptz default now())
returns jsonb
language plpgsql stable
set search_path = ''
as $$
declare
  v_latest jsonb;
begin
  if pg_catalog.to_regclass('public.outpost_schema_migrations') is not null then
    execute $q$
      select jsonb_build_object('version', m.version, 'name', m.name, 'applied_at', m.applied_at)
        from public.outpost_schema_migrations m
       order by m.version desc
       limit 1
    $q$ into v_latest;
  end if;
  return jsonb_build_object(
    'database', 'ok',
    'latest_migration', v_latest,
    'queues', public.queue_depths(p_now),
    'heartbeats', coalesce((
      select jsonb_agg(jsonb_build_object(
               'worker_id', h.worker_id,
               'last_seen_at', h.last_seen_at,
               'age_seconds', round(extract(epoch from (p_now - h.last_seen_at))::numeric, 3),
               'detail', h.detail)
             order by h.worker_id)
        from public.worker_heartbeats h), '[]'::jsonb));
end
$$;

-- Grants: the queue machinery is for the service role only. ---------------------------

revoke all on function public.queue_definition(text) from public, anon, authenticated;
revoke all on function public.queue_event(text, uuid, text, bigint, text, jsonb, timestamptz) from public, anon, authenticated;
revoke all on function public.queue_extra_set(text, text) from public, anon, authenticated;
revoke all on function public.queue_release_expired(text, timestamptz) from public, anon, authenticated;
revoke all on function public.queue_claim(text, text, integer, integer, timestamptz) from public, anon, authenticated;
revoke all on function public.queue_lock_leased(text, uuid, bigint) from public, anon, authenticated;
revoke all on function public.queue_complete(text, uuid, bigint, jsonb, timestamptz) from public, anon, authenticated;
revoke all on function public.queue_fail(text, uuid, bigint, text, boolean, integer, timestamptz) from public, anon, authenticated;
revoke all on function public.queue_defer(text, uuid, bigint, timestamptz, text, timestamptz) from public, anon, authenticated;
revoke all on function public.queue_depths(timestamptz) from public, anon, authenticated;
revoke all on function public.claim_next_scheduled_post(integer, text) from public, anon, authenticated;
revoke all on function public.claim_next_ai_image_job(integer, text) from public, anon, authenticated;
revoke all on function public.record_generation_result(text, jsonb, uuid, timestamptz) from public, anon, authenticated;
revoke all on function public.record_worker_heartbeat(text, jsonb, timestamptz) from public, anon, authenticated;
revoke all on function public.outpost_status(timestamptz) from public, anon, authenticated;

grant execute on function public.queue_definition(text) to service_role;
grant execute on function public.queue_backoff_seconds(integer, integer, integer, integer) to service_role;
grant execute on function public.queue_event(text, uuid, text, bigint, text, jsonb, timestamptz) to service_role;
grant execute on function public.queue_extra_set(text, text) to service_role;
grant execute on function public.queue_release_expired(text, timestamptz) to service_role;
grant execute on function public.queue_claim(text, text, integer, integer, timestamptz) to service_role;
grant execute on function public.queue_lock_leased(text, uuid, bigint) to service_role;
grant execute on function public.queue_complete(text, uuid, bigint, jsonb, timestamptz) to service_role;
grant execute on function public.queue_fail(text, uuid, bigint, text, boolean, integer, timestamptz) to service_role;
grant execute on function public.queue_defer(text, uuid, bigint, timestamptz, text, timestamptz) to service_role;
grant execute on function public.queue_depths(timestamptz) to service_role;
grant execute on function public.claim_next_scheduled_post(integer, text) to service_role;
grant execute on function public.claim_next_ai_image_job(integer, text) to service_role;
grant execute on function public.record_generation_result(text, jsonb, uuid, timestamptz) to service_role;
grant execute on function public.record_worker_heartbeat(text, jsonb, timestamptz) to service_role;
grant execute on function public.outpost_status(timestamptz) to service_role;
