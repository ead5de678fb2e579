-- 0027: the queue contract at the speed of a bare SKIP LOCKED loop (issue 18).
--
-- Same contract (migrations/CONTRACT.md "Work queues" and 0017's screen and
-- credits), fewer statements and no per-row function calls on the hot
-- paths:
--
-- * claim_next_ai_jobs(): one static statement (plan cached per session)
--   that locks the due jobs, prices them, charges their users' credits as a
--   set (one locked read and one UPDATE per user, one credit_charges row per
--   job paid now), leases the affordable ones and dead-letters the others
--   in the same UPDATE (a row is written once), and writes every event with
--   one INSERT ... SELECT. Expired leases are released first, and only when
--   there is one (an index probe). 0017 ran the generic dynamic claim, then
--   a plpgsql loop calling charge_queue_item() and queue_fail() per row.
-- * claim_next_scheduled_posts(): 0017's screen (queue_item_refusal per
--   row, then queue_fail per refused post) folded into 0014's one-statement
--   claim as a column of the set; one UPDATE leases or dead-letters.
-- * complete_ai_job(): one static statement (fenced update + `success`
--   event), instead of queue_lock_leased() (dynamic SELECT ... FOR UPDATE
--   to jsonb) followed by a dynamic UPDATE and a queue_event() call.
-- * complete_ai_jobs(p_items): the batched completion: many jobs settled in
--   one statement, each under its own lease token, events as one set.
-- * complete_scheduled_post() likewise static, and
--   complete_scheduled_post_publish() locks and writes its post once (0014
--   locked it twice through queue_lock_leased() and completed it through
--   the generic dynamic queue_complete()), archive rows as one INSERT.
--
-- Credits as a set: a user's jobs in one claim are charged in claim order
-- (oldest due first) while their running total fits the balance; the first
-- job that does not fit and every later one of that user in the same claim
-- are dead-lettered "insufficient credits: <price> needed, <left> left".
-- (0017's loop charged item by item, so with mixed prices a cheaper later
-- job could still pass; with one price per kind and the default of one
-- credit the outcome is the same.) Users are locked in id order, so two
-- claims never deadlock on them.

-- Row triggers only where they do something -------------------------------------------------

-- Each plpgsql trigger call (with its search_path setting) cost about as
-- much as the row's own update on the queue paths. The updated_at triggers
-- now fire only when the statement leaves updated_at alone (this
-- migration's statements set it to now() themselves, as the trigger
-- would), and the users guard only for the API roles it guards against.
drop trigger update_ai_jobs_updated_at on public.ai_jobs;
create trigger update_ai_jobs_updated_at
  before update on public.ai_jobs
  for each row when (new.updated_at is not distinct from old.updated_at)
  execute function public.update_updated_at();
drop trigger update_scheduled_posts_updated_at on public.scheduled_posts;
create trigger update_scheduled_posts_updated_at
  before update on public.scheduled_posts
  for each row when (new.updated_at is not distinct from old.updated_at)
  execute function public.update_updated_at_column();
drop trigger update_users_updated_at on public.users;
create trigger update_users_updated_at
  before update on public.users
  for each row when (new.updated_at is not distinct from old.updated_at)
  execute function public.update_updated_at();
drop trigger users_protect_privileged_columns on public.users;
create trigger users_protect_privileged_columns
  before update on public.users
  for each row when (current_user in ('anon', 'authenticated'))
  execute function public.users_protect_privileged_columns();

-- claim_next_ai_jobs ------------------------------------------------------------------

-- The statement is written once here and instantiated twice in the function
-- below: with LIMIT 1 (a constant, so a worker's usual call keeps one cached
-- generic plan on the ready index) and with LIMIT p_max_items.
do $claim$
declare
  v_statement constant text := $stmt$
    with locked as (
      select q.id, q.user_id, q.kind, q.next_attempt_at
        from public.ai_jobs q
       where q.status = 'queued'
         and q.next_attempt_at <= p_now
       order by q.next_attempt_at, q.id
       limit @LIMIT@
       for update of q skip locked
    ), charged_before as (
      -- Probed by key (= ANY on the primary key), whatever the planner
      -- thinks of the table's size.
      select c.item_id
        from public.credit_charges c
       where c.queue = 'ai_jobs'
         and c.item_id = any (array(select l.id from locked l))
    ), due as (
      -- Not charged yet (a retry or a deferred job was charged at its first dispatch).
      select l.id, l.user_id, l.next_attempt_at,
             coalesce((select p.credits from public.credit_prices p
                        where p.queue = 'ai_jobs' and p.kind in (l.kind, '*')
                        order by (p.kind = '*')
                        limit 1), 0) as price
        from locked l
       where l.id not in (select b.item_id from charged_before b)
    ), payers as (
      -- The current balance (FOR UPDATE reads the latest version), locked in id order.
      select u.id, u.credits
        from public.users u
       where u.id = any (array(select distinct d.user_id from due d))
       order by u.id
       for update of u
    ), running as (
      select d.id, d.user_id, d.price, py.credits as balance_before,
             sum(d.price) over (partition by d.user_id order by d.next_attempt_at, d.id) as total
        from due d
        join payers py on py.id = d.user_id
    ), priced as (
      select r.*, r.total <= r.balance_before as paid,
             r.balance_before - coalesce(max(r.total) filter (where r.total <= r.balance_before)
                                           over (partition by r.user_id), 0) as balance_left
        from running r
    ), debited as (
      update public.users u
         set credits = u.credits - t.total,
             updated_at = now()
        from (select p.user_id, max(p.total) as total
                from priced p where p.paid group by p.user_id) t
       where u.id = t.user_id
         and t.total > 0
      returning u.id
    ), charged as (
      insert into public.credit_charges (queue, item_id, user_id, credits, balance_after, charged_at)
      select 'ai_jobs', p.id, p.user_id, p.price, p.balance_before - p.total, p_now
        from priced p
       where p.paid
      returning item_id
    ), claimed as (
      update public.ai_jobs t
         set status = case when p.paid is false then 'failed' else 'running' end,
             attempt_count = t.attempt_count + 1,
             locked_at = case when p.paid is false then null else p_now end,
             locked_by = case when p.paid is false then null else p_worker_id end,
             lease_expires_at = case when p.paid is false then null
                                     else p_now + make_interval(secs => p_lease_seconds) end,
             lease_token = nextval('public.queue_lease_token_seq'),
             updated_at = now(),
             dead_lettered_at = case when p.paid is false then p_now else t.dead_lettered_at end,
             last_error = case when p.paid is false
                               then format('insufficient credits: %s needed, %s left', p.price, p.balance_left)
                               else t.last_error end
        from locked l
        left join priced p on p.id = l.id
       where t.id = l.id
      returning t as job, p.paid is false as refused
    ), events as (
      insert into public.ai_job_events (job_id, type, detail, created_at)
      select (c.job).id,
             case when c.refused then 'failure' else 'claimed' end,
             case when c.refused
                  then jsonb_build_object('error', (c.job).last_error, 'attempt', (c.job).attempt_count,
                                          'max_attempts', (c.job).max_attempts, 'permanent', true,
                                          'dead_lettered', true, 'lease_token', (c.job).lease_token,
                                          'worker_id', p_worker_id)
                  else jsonb_build_object('attempt', (c.job).attempt_count,
                                          'lease_expires_at', (c.job).lease_expires_at,
                                          'lease_token', (c.job).lease_token, 'worker_id', p_worker_id)
             end,
             p_now
        from claimed c
    )
    select coalesce(jsonb_agg(to_jsonb(c.job) order by (c.job).next_attempt_at, (c.job).id)
                      filter (where not c.refused), '[]'::jsonb)
      into v_items
      from claimed c
  $stmt$;
begin
  execute format($fn$
    create or replace function public.claim_next_ai_jobs(
      p_worker_id text, p_lease_seconds integer, p_max_items integer, p_now timestamptz default now())
    returns jsonb
    language plpgsql volatile
    set search_path = ''
    as $body$
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
      if exists (select 1 from public.ai_jobs e
                  where e.status = 'running' and e.lease_expires_at <= p_now) then
        perform public.queue_release_expired('ai_jobs', p_now);
      end if;
      if p_max_items = 1 then
        %1$s;
      else
        %2$s;
      end if;
      return v_items;
    end
    $body$
  $fn$, replace(v_statement, '@LIMIT@', '1'), replace(v_statement, '@LIMIT@', 'p_max_items'));
end
$claim$;

comment on function public.claim_next_ai_jobs(text, integer, integer, timestamptz) is
  'Claim up to p_max_items due AI jobs with a lease (jsonb array of rows with lease_token); charges each job''s credits at its first dispatch and dead-letters the unaffordable ones, in one statement.';

-- claim_next_scheduled_posts: 0017's screen folded into the claim -----------------------

-- Same answer as 0017's (0014's claim, then queue_screen_claimed), in one
-- statement: each locked post's refusal (0017's queue_item_refusal rules
-- for scheduled posts, in the same order: another user's account, an
-- unverified non-Bluesky account, another user's draft, adaptation or AI
-- image) is computed as a column of the set, and the one UPDATE leases the
-- good posts and dead-letters the refused ones (`failure` event with the
-- reason; 0017 wrote `claimed` then `failure`).
do $claim_posts$
declare
  v_statement constant text := $stmt$
    with locked as (
      select q.id, q.user_id, q.account_id, q.account_did, q.draft_id, q.adaptation_id, q.media
        from public.scheduled_posts q
       where q.status = 'queued'
         and q.run_at <= p_now
       order by q.run_at, q.id
       limit @LIMIT@
       for update of q skip locked
    ), screened as (
      select l.id,
             case
               when a.id is not null and a.user_id is distinct from l.user_id
                 then 'refused: the account belongs to another user'
               when a.id is not null and a.verified_at is null and a.platform <> 'bluesky'
                 then format('refused: the %s account %s is not verified (connect it again through Outpost)',
                             a.platform, a.username)
               when exists (select 1 from public.drafts d
                             where d.id = l.draft_id and d.user_id is distinct from l.user_id)
                 then 'refused: the draft belongs to another user'
               when exists (select 1 from public.content_adaptations c
                             where c.id = l.adaptation_id and c.user_id is distinct from l.user_id)
                 then 'refused: the adaptation belongs to another user'
               when exists (select 1
                              from jsonb_array_elements(case when jsonb_typeof(l.media) = 'array'
                                                             then l.media else '[]'::jsonb end) m(item)
                              join public.ai_assets x
                                on x.id = case when (m.item ->> 'ai_asset_id') ~* '^[0-9a-f-]{36}$'
                                               then (m.item ->> 'ai_asset_id')::uuid end
                             where x.user_id is distinct from l.user_id)
                 then 'refused: an image belongs to another user'
             end as refusal
        from locked l
        left join public.connected_accounts a
          on a.id = coalesce(l.account_id, (
               select ca.id from public.connected_accounts ca
                where ca.user_id = l.user_id
                  and ca.account_did = l.account_did
                  and ca.platform = 'bluesky'
                order by ca.is_active desc, ca.updated_at desc, ca.id
                limit 1))
    ), claimed as (
      update public.scheduled_posts t
         set status = case when s.refusal is null then 'posting' else 'failed' end,
             attempt_count = t.attempt_count + 1,
             locked_at = case when s.refusal is null then p_now end,
             locked_by = case when s.refusal is null then p_worker_id end,
             lease_expires_at = case when s.refusal is null
                                     then p_now + make_interval(secs => p_lease_seconds) end,
             lease_token = nextval('public.queue_lease_token_seq'),
             updated_at = now(),
             dead_lettered_at = case when s.refusal is null then t.dead_lettered_at else p_now end,
             last_error = coalesce(s.refusal, t.last_error)
        from screened s
       where t.id = s.id
      returning t as post, s.refusal
    ), events as (
      insert into public.post_events (scheduled_post_id, type, detail, created_at)
      select (c.post).id,
             case when c.refusal is null then 'claimed' else 'failure' end,
             case when c.refusal is null
                  then jsonb_build_object('attempt', (c.post).attempt_count,
                                          'lease_expires_at', (c.post).lease_expires_at,
                                          'lease_token', (c.post).lease_token, 'worker_id', p_worker_id)
                  else jsonb_build_object('error', c.refusal, 'attempt', (c.post).attempt_count,
                                          'max_attempts', (c.post).max_attempts, 'permanent', true,
                                          'dead_lettered', true, 'lease_token', (c.post).lease_token,
                                          'worker_id', p_worker_id)
             end,
             p_now
        from claimed c
    )
    select coalesce(jsonb_agg(to_jsonb(c.post) order by (c.post).run_at, (c.post).id)
                      filter (where c.refusal is null), '[]'::jsonb)
      into v_items
      from claimed c
  $stmt$;
begin
  execute format($fn$
    create or replace function public.claim_next_scheduled_posts(
      p_worker_id text, p_lease_seconds integer, p_max_items integer, p_now timestamptz default now())
    returns jsonb
    language plpgsql volatile
    set search_path = ''
    as $body$
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
      if exists (select 1 from public.scheduled_posts e
                  where e.status = 'posting' and e.lease_expires_at <= p_now) then
        perform public.queue_release_expired('scheduled_posts', p_now);
      end if;
      if p_max_items = 1 then
        %1$s;
      else
        %2$s;
      end if;
      return v_items;
    end
    $body$
  $fn$, replace(v_statement, '@LIMIT@', '1'), replace(v_statement, '@LIMIT@', 'p_max_items'));
end
$claim_posts$;

comment on function public.claim_next_scheduled_posts(text, integer, integer, timestamptz) is
  'Claim up to p_max_items due scheduled posts with a lease; posts the service must not publish (0017''s rules) are dead-lettered with the reason, in the same statement.';

-- complete_ai_job / complete_ai_jobs --------------------------------------------------------

-- One job: {"accepted": true, "status": "succeeded"} or the stale answer.
create or replace function public.complete_ai_job(
  p_id uuid, p_lease_token bigint, p_result jsonb default null, p_now timestamptz default now())
returns jsonb
language plpgsql volatile
set search_path = ''
as $$
declare
  v_done boolean;
begin
  if coalesce(p_result ->> 'status', 'succeeded') <> 'succeeded' then
    raise exception 'complete_ai_job: status % is not one of {succeeded}', p_result ->> 'status'
      using errcode = '22023';
  end if;
  -- The old row (o) gives the worker for the event: it is the same row
  -- version whenever the fenced update succeeds (a new lease changes the token).
  with done as (
    update public.ai_jobs t
       set status = 'succeeded',
           locked_at = null,
           locked_by = null,
           lease_expires_at = null,
           completed_at = p_now,
           updated_at = now(),
           result = coalesce(p_result, '{}'::jsonb)
      from public.ai_jobs o
     where t.id = p_id
       and o.id = p_id
       and t.status = 'running'
       and t.lease_token = p_lease_token
    returning t.id, o.locked_by
  ), events as (
    insert into public.ai_job_events (job_id, type, detail, created_at)
    select d.id, 'success',
           jsonb_strip_nulls(jsonb_build_object('status', 'succeeded', 'result', p_result,
                                                'lease_token', p_lease_token, 'worker_id', d.locked_by)),
           p_now
      from done d
  )
  select exists (select 1 from done) into v_done;
  if v_done then
    return '{"accepted": true, "status": "succeeded"}'::jsonb;
  end if;
  return '{"accepted": false, "reason": "stale_lease"}'::jsonb;
end
$$;

-- Many jobs in one statement: p_items [{"id", "lease_token", "result"?}] ->
-- [{"id", "accepted": true, "status": "succeeded"} | {"id", "accepted":
-- false, "reason": "stale_lease"}] in the order given. Each job is fenced
-- by its own token; a `success` event per completed job (one INSERT).
create function public.complete_ai_jobs(p_items jsonb, p_now timestamptz default now())
returns jsonb
language plpgsql volatile
set search_path = ''
as $$
declare
  v_answer jsonb;
begin
  if p_items is null or jsonb_typeof(p_items) <> 'array' then
    raise exception 'complete_ai_jobs: p_items must be an array of {"id", "lease_token", "result"}'
      using errcode = '22023';
  end if;
  if jsonb_array_length(p_items) > 1000 then
    raise exception 'complete_ai_jobs: at most 1000 items per call' using errcode = '22023';
  end if;
  if exists (select 1 from jsonb_array_elements(p_items) e
              where coalesce(e -> 'result' ->> 'status', 'succeeded') <> 'succeeded') then
    raise exception 'complete_ai_jobs: a result status is not one of {succeeded}' using errcode = '22023';
  end if;
  with input as (
    select (e.item ->> 'id')::uuid as id, (e.item ->> 'lease_token')::bigint as lease_token,
           e.item -> 'result' as result, e.n
      from jsonb_array_elements(p_items) with ordinality as e(item, n)
  ), done as (
    update public.ai_jobs t
       set status = 'succeeded',
           locked_at = null,
           locked_by = null,
           lease_expires_at = null,
           completed_at = p_now,
           updated_at = now(),
           result = coalesce(i.result, '{}'::jsonb)
      from input i
      join public.ai_jobs o on o.id = i.id
     where t.id = i.id
       -- Written so that it cannot match ai_jobs_lease_idx's predicate: that
       -- partial index keeps an entry for every version ever leased until
       -- vacuum, and a plan walking it grew with the queue's history; the
       -- jobs are found by primary key instead (status is not null).
       and (t.status = 'running') is not false
       and t.lease_token = i.lease_token
    returning t.id, t.lease_token, o.locked_by, i.result
  ), events as (
    insert into public.ai_job_events (job_id, type, detail, created_at)
    select d.id, 'success',
           jsonb_strip_nulls(jsonb_build_object('status', 'succeeded', 'result', d.result,
                                                'lease_token', d.lease_token, 'worker_id', d.locked_by)),
           p_now
      from done d
  )
  select coalesce(jsonb_agg(
           case when d.id is not null
                then jsonb_build_object('id', i.id, 'accepted', true, 'status', 'succeeded')
                else jsonb_build_object('id', i.id, 'accepted', false, 'reason', 'stale_lease') end
           order by i.n), '[]'::jsonb)
    into v_answer
    from input i
    left join done d on d.id = i.id and d.lease_token = i.lease_token;
  return v_answer;
end
$$;
comment on function public.complete_ai_jobs(jsonb, timestamptz) is
  'Batched complete_ai_job: [{"id", "lease_token", "result"}] -> [{"id", "accepted", "status" | "reason"}], one statement, one success event per completed job.';

-- complete_scheduled_post -------------------------------------------------------------------

-- 0009's answer and event, one static statement. p_result->>'status' may
-- only be 'posted'; published_post_id comes from p_result.
create or replace function public.complete_scheduled_post(
  p_id uuid, p_lease_token bigint, p_result jsonb default null, p_now timestamptz default now())
returns jsonb
language plpgsql volatile
set search_path = ''
as $$
declare
  v_done boolean;
begin
  if coalesce(p_result ->> 'status', 'posted') <> 'posted' then
    raise exception 'complete_scheduled_post: status % is not one of {posted}', p_result ->> 'status'
      using errcode = '22023';
  end if;
  with done as (
    update public.scheduled_posts t
       set status = 'posted',
           locked_at = null,
           locked_by = null,
           lease_expires_at = null,
           posted_at = p_now,
           updated_at = now(),
           published_post_id = coalesce((p_result ->> 'published_post_id')::uuid, t.published_post_id)
      from public.scheduled_posts o
     where t.id = p_id
       and o.id = p_id
       and t.status = 'posting'
       and t.lease_token = p_lease_token
    returning t.id, o.locked_by
  ), events as (
    insert into public.post_events (scheduled_post_id, type, detail, created_at)
    select d.id, 'success',
           jsonb_strip_nulls(jsonb_build_object('status', 'posted', 'result', p_result,
                                                'lease_token', p_lease_token, 'worker_id', d.locked_by)),
           p_now
      from done d
  )
  select exists (select 1 from done) into v_done;
  if v_done then
    return '{"accepted": true, "status": "posted"}'::jsonb;
  end if;
  return '{"accepted": false, "reason": "stale_lease"}'::jsonb;
end
$$;

-- complete_scheduled_post_publish -------------------------------------------------------------

-- 0014's contract and answer; the post is locked once (plain SELECT ... FOR
-- UPDATE of the row type, no jsonb round trip), archive rows go in with one
-- INSERT, and the post is completed by the static complete_scheduled_post.
create or replace function public.complete_scheduled_post_publish(
  p_id uuid,
  p_lease_token bigint,
  p_result jsonb,
  p_now timestamptz default now()
) returns jsonb
language plpgsql
set search_path = ''
as $$
declare
  v_post public.scheduled_posts;
  v_account_id uuid;
  v_platform public.platform_enum;
  v_published_id uuid;
  v_published_at timestamptz;
  v_complete jsonb;
begin
  select * into v_post from public.scheduled_posts sp where sp.id = p_id for update;
  if not found or p_lease_token is null or v_post.status <> 'posting'
     or v_post.lease_token is distinct from p_lease_token then
    return public.record_stale_publish_result(p_id, p_lease_token, 'complete',
      jsonb_build_object('platform_post_id', p_result ->> 'platform_post_id'), p_now);
  end if;
  if coalesce(p_result ->> 'platform_post_id', '') = '' then
    raise exception 'complete_scheduled_post_publish: platform_post_id is required' using errcode = '22023';
  end if;
  v_account_id := coalesce(v_post.account_id, public.scheduled_post_account_id(v_post));
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

  if v_account_id is not null and jsonb_typeof(p_result -> 'archive') = 'array' then
    -- One row per platform id (the last wins, as 0014's loop left it).
    insert into public.posts as p
      (account_id, user_id, platform, platform_post_id, content_type, text_content,
       created_at_platform, published)
    select distinct on (a.item ->> 'platform_post_id')
           v_account_id, v_post.user_id, v_platform, a.item ->> 'platform_post_id',
           coalesce(a.item ->> 'content_type', 'post')::public.content_type_enum, a.item ->> 'text',
           coalesce((a.item ->> 'created_at')::timestamptz, v_published_at), true
      from jsonb_array_elements(p_result -> 'archive') with ordinality as a(item, n)
     order by a.item ->> 'platform_post_id', a.n desc
    on conflict (platform, platform_post_id) do update
      set text_content = excluded.text_content, published = true, deleted_on_platform = false;
  end if;

  v_complete := public.complete_scheduled_post(p_id, p_lease_token,
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

-- Grants: the service role only ---------------------------------------------------------------

revoke all on function public.claim_next_ai_jobs(text, integer, integer, timestamptz) from public, anon, authenticated;
revoke all on function public.claim_next_scheduled_posts(text, integer, integer, timestamptz) from public, anon, authenticated;
revoke all on function public.complete_ai_job(uuid, bigint, jsonb, timestamptz) from public, anon, authenticated;
revoke all on function public.complete_ai_jobs(jsonb, timestamptz) from public, anon, authenticated;
revoke all on function public.complete_scheduled_post(uuid, bigint, jsonb, timestamptz) from public, anon, authenticated;
revoke all on function public.complete_scheduled_post_publish(uuid, bigint, jsonb, timestamptz) from public, anon, authenticated;
grant execute on function public.claim_next_ai_jobs(text, integer, integer, timestamptz) to service_role;
grant execute on function public.claim_next_scheduled_posts(text, integer, integer, timestamptz) to service_role;
grant execute on function public.complete_ai_job(uuid, bigint, jsonb, timestamptz) to service_role;
grant execute on function public.complete_ai_jobs(jsonb, timestamptz) to service_role;
grant execute on function public.complete_scheduled_post(uuid, bigint, jsonb, timestamptz) to service_role;
grant execute on function public.complete_scheduled_post_publish(uuid, bigint, jsonb, timestamptz) to service_role;
