-- 0022: token-rotation (issue 14): keeping OAuth accounts connected.
--
-- * account_token_rotation: per connected account, the rotation lease
--   (fencing token from queue_lease_token_seq, one refresher per account),
--   the retry state of transient failures (attempts, next_attempt_at,
--   last_error), and which expiry a reconnect notice was sent for.
-- * claim_token_rotations(worker, max, lease_seconds, current_key_id, now):
--   leases up to `max` accounts that need something and answers them with
--   their sealed tokens and the `action`:
--     'refresh'  the access token expires within its platform's margin:
--                Strava 1 hour (6-hour tokens), X 30 minutes (2-hour
--                tokens, refreshed ahead of any publish), Instagram once the
--                60-day token has less than 53 days left (at least 7 days
--                old, so past Instagram's 24-hour minimum, and weeks before
--                expiry so an outage has slack), LinkedIn 7 days before its
--                60-day token ends when the app has a refresh token;
--     'notify'   LinkedIn without a refresh token, 7 days before expiry:
--                the user is told to reconnect (once per token);
--     'expire'   the token has expired and cannot be refreshed (Instagram,
--                or no refresh token): the account becomes token_expired;
--     'reseal'   the tokens are sealed under an older key than
--                `current_key_id` (key rotation).
--   Only verified, active accounts are refreshed, notified or expired;
--   resealing covers every account holding tokens. Accounts in backoff
--   (next_attempt_at in the future) wait.
-- * claim_token_refresh(account, worker, lease_seconds, now): the same lease
--   on one account, now, whatever its margin: for ingest or publish meeting
--   an expired token.
-- * finish_token_rotation(account, lease_token, result, now): ONE call that
--   settles the claim and releases the lease, fenced by the lease token (a
--   worker whose lease was taken over saves nothing) and by the sealed
--   access token read at claim time (tokens a reconnect stored meanwhile are
--   kept). Outcomes: 'refreshed' / 'resealed' save the new sealed tokens;
--   'transient' (and 'application', our configuration) keep the tokens and
--   retry with backoff (60 s doubling up to 6 h, or the platform's
--   Retry-After); 'refused' moves the account to token_expired and writes a
--   notification "Reconnect your X account"; 'notified' writes the
--   reconnect-soon notification.

create table public.account_token_rotation (
  account_id uuid primary key references public.connected_accounts (id) on delete cascade,
  lease_token bigint,
  locked_by text,
  lease_expires_at timestamptz,
  action text,
  attempts integer not null default 0,
  next_attempt_at timestamptz,
  last_outcome text,
  last_error text,
  last_refreshed_at timestamptz,
  reconnect_notified_for timestamptz,
  updated_at timestamptz not null default now()
);
comment on table public.account_token_rotation is
  'Per connected account: the token-rotation lease (fencing token from queue_lease_token_seq), retry state of transient failures, and the expiry a reconnect notice was sent for. Service role only.';
create index account_token_rotation_next_attempt_idx on public.account_token_rotation (next_attempt_at);

create trigger update_account_token_rotation_updated_at
  before update on public.account_token_rotation
  for each row execute function public.update_updated_at();

alter table public.account_token_rotation enable row level security;
revoke all on public.account_token_rotation from anon, authenticated;

-- What an account needs now (see the header), or null. Stable (timestamptz
-- arithmetic is) and without a SET clause, so the planner inlines it into
-- the claim's scan instead of calling it row by row.
create function public.token_rotation_action(
  p_account public.connected_accounts,
  p_notified_for timestamptz,
  p_current_key_id text,
  p_now timestamptz
) returns text
language sql stable
as $$
  select coalesce(
    case when p_account.status = 'active'
              and p_account.verified_at is not null
              and p_account.access_token is not null then
      case
        when p_account.platform = 'instagram' then
          case when p_account.token_expires_at <= p_now then 'expire'
               when p_account.token_expires_at <= p_now + interval '53 days' then 'refresh' end
        when p_account.platform in ('strava', 'x', 'linkedin') and p_account.refresh_token is not null then
          case when p_account.token_expires_at is null
                 or p_account.token_expires_at <= p_now + case p_account.platform
                      when 'strava' then interval '1 hour'
                      when 'x' then interval '30 minutes'
                      else interval '7 days' end
               then 'refresh' end
        when p_account.platform in ('strava', 'x', 'linkedin') then
          case when p_account.token_expires_at <= p_now then 'expire'
               when p_account.platform = 'linkedin'
                    and p_account.token_expires_at <= p_now + interval '7 days'
                    and p_notified_for is distinct from p_account.token_expires_at then 'notify' end
      end
    end,
    case when p_current_key_id is not null
              and p_account.status is distinct from 'disconnected'
              and (p_account.access_token is not null or p_account.refresh_token is not null)
              and p_account.token_key_id is distinct from p_current_key_id
              and p_account.platform in ('strava', 'instagram', 'x', 'linkedin')
         then 'reseal' end)
$$;

-- The claim answer for one leased account.
create function public.token_rotation_claim_json(
  p_account public.connected_accounts,
  p_state public.account_token_rotation
) returns jsonb
language sql stable
set search_path = ''
as $$
  select jsonb_build_object(
    'account_id', p_account.id,
    'user_id', p_account.user_id,
    'platform', p_account.platform,
    'username', p_account.username,
    'access_token', p_account.access_token,
    'refresh_token', p_account.refresh_token,
    'token_key_id', p_account.token_key_id,
    'token_expires_at', p_account.token_expires_at,
    'scope', p_account.scope,
    'lease_token', p_state.lease_token,
    'action', p_state.action,
    'attempts', p_state.attempts)
$$;

create function public.claim_token_rotations(
  p_worker_id text,
  p_max integer,
  p_lease_seconds integer,
  p_current_key_id text,
  p_now timestamptz default now()
) returns jsonb
language plpgsql
set search_path = ''
as $$
declare
  v_claimed jsonb;
begin
  if p_worker_id is null or length(p_worker_id) = 0 then
    raise exception 'claim_token_rotations: p_worker_id is required' using errcode = '22023';
  end if;
  if p_max is null or p_max < 1 or p_max > 1000 then
    raise exception 'claim_token_rotations: p_max must be between 1 and 1000' using errcode = '22023';
  end if;
  if p_lease_seconds is null or p_lease_seconds < 1 then
    raise exception 'claim_token_rotations: p_lease_seconds must be at least 1' using errcode = '22023';
  end if;

  -- Candidates are locked (skip locked: concurrent claimers split them);
  -- the upsert's WHERE then re-reads the latest lease under its row lock,
  -- so an account leased by a claim that committed meanwhile is not taken
  -- twice.
  with picked as (
    select ca.id, a.action
      from public.connected_accounts ca
      left join public.account_token_rotation s on s.account_id = ca.id
     cross join lateral (
       select public.token_rotation_action(ca, s.reconnect_notified_for, p_current_key_id, p_now) as action
     ) a
     where a.action is not null
       and (s.lease_expires_at is null or s.lease_expires_at <= p_now)
       and (s.next_attempt_at is null or s.next_attempt_at <= p_now)
     order by ca.token_expires_at, ca.id
     limit p_max
     for update of ca skip locked
  ), leased as (
    insert into public.account_token_rotation as s
           (account_id, lease_token, locked_by, lease_expires_at, action)
    select p.id, nextval('public.queue_lease_token_seq'), p_worker_id,
           p_now + make_interval(secs => p_lease_seconds), p.action
      from picked p
    on conflict (account_id) do update
       set lease_token = excluded.lease_token,
           locked_by = excluded.locked_by,
           lease_expires_at = excluded.lease_expires_at,
           action = excluded.action
     where s.lease_expires_at is null or s.lease_expires_at <= p_now
    returning s.*
  )
  select coalesce(jsonb_agg(public.token_rotation_claim_json(ca, l) order by ca.token_expires_at, ca.id), '[]'::jsonb)
    into v_claimed
    from leased l
    join public.connected_accounts ca on ca.id = l.account_id;
  return v_claimed;
end
$$;

create function public.claim_token_refresh(
  p_account_id uuid,
  p_worker_id text,
  p_lease_seconds integer,
  p_now timestamptz default now()
) returns jsonb
language plpgsql
set search_path = ''
as $$
declare
  v_account public.connected_accounts;
  v_state public.account_token_rotation;
begin
  if p_worker_id is null or length(p_worker_id) = 0 then
    raise exception 'claim_token_refresh: p_worker_id is required' using errcode = '22023';
  end if;
  if p_lease_seconds is null or p_lease_seconds < 1 then
    raise exception 'claim_token_refresh: p_lease_seconds must be at least 1' using errcode = '22023';
  end if;
  select * into v_account from public.connected_accounts ca where ca.id = p_account_id for update;
  if not found then
    return jsonb_build_object('claimed', false, 'reason', 'not_found');
  end if;
  if v_account.status is distinct from 'active' or v_account.verified_at is null
     or v_account.access_token is null then
    return jsonb_build_object('claimed', false, 'reason', 'not_active', 'status', v_account.status);
  end if;
  if v_account.platform not in ('strava', 'instagram', 'x', 'linkedin')
     or (v_account.platform <> 'instagram' and v_account.refresh_token is null) then
    return jsonb_build_object('claimed', false, 'reason', 'not_refreshable');
  end if;
  insert into public.account_token_rotation as s
         (account_id, lease_token, locked_by, lease_expires_at, action)
  values (p_account_id, nextval('public.queue_lease_token_seq'), p_worker_id,
          p_now + make_interval(secs => p_lease_seconds), 'refresh')
  on conflict (account_id) do update
     set lease_token = excluded.lease_token,
         locked_by = excluded.locked_by,
         lease_expires_at = excluded.lease_expires_at,
         action = excluded.action
   where s.lease_expires_at is null or s.lease_expires_at <= p_now
  returning s.* into v_state;
  if not found then
    return jsonb_build_object('claimed', false, 'reason', 'leased');
  end if;
  return public.token_rotation_claim_json(v_account, v_state) || jsonb_build_object('claimed', true);
end
$$;

create function public.finish_token_rotation(
  p_account_id uuid,
  p_lease_token bigint,
  p_result jsonb,
  p_now timestamptz default now()
) returns jsonb
language plpgsql
set search_path = ''
as $$
declare
  v_state public.account_token_rotation;
  v_account public.connected_accounts;
  v_outcome text := p_result->>'outcome';
  v_error text := left(p_result->>'error', 500);
  v_label text;
  v_backoff integer;
  v_retry_after integer;
begin
  if v_outcome is null or v_outcome not in
     ('refreshed', 'resealed', 'transient', 'application', 'refused', 'notified') then
    raise exception 'finish_token_rotation: unknown outcome %', coalesce(v_outcome, '(none)')
      using errcode = '22023';
  end if;
  -- The account row first, then its rotation state: the order the claims
  -- lock them in, so a claim and a finish never wait on each other.
  select * into v_account from public.connected_accounts ca where ca.id = p_account_id for update;
  select * into v_state from public.account_token_rotation s
   where s.account_id = p_account_id and s.lease_token = p_lease_token
   for update;
  if not found then
    return jsonb_build_object('saved', false, 'reason', 'lease_lost');
  end if;
  v_label := case v_account.platform
    when 'x' then 'X' when 'linkedin' then 'LinkedIn' when 'instagram' then 'Instagram'
    when 'strava' then 'Strava' else initcap(v_account.platform::text) end;

  -- Tokens changed since the claim (the user reconnected): keep them.
  if v_outcome in ('refreshed', 'resealed', 'refused')
     and v_account.access_token is distinct from p_result->>'previous_access_token' then
    update public.account_token_rotation s
       set lease_token = null, locked_by = null, lease_expires_at = null,
           last_outcome = 'superseded'
     where s.account_id = p_account_id;
    return jsonb_build_object('saved', false, 'reason', 'tokens_changed');
  end if;

  if v_outcome in ('refreshed', 'resealed') then
    if p_result->>'access_token' is null or p_result->>'token_key_id' is null then
      raise exception 'finish_token_rotation: % needs access_token and token_key_id', v_outcome
        using errcode = '22023';
    end if;
    update public.connected_accounts ca
       set access_token = p_result->>'access_token',
           refresh_token = coalesce(p_result->>'refresh_token', ca.refresh_token),
           token_key_id = p_result->>'token_key_id',
           token_expires_at = case when v_outcome = 'refreshed'
                                   then coalesce((p_result->>'token_expires_at')::timestamptz, ca.token_expires_at)
                                   else ca.token_expires_at end,
           scope = coalesce(p_result->>'scope', ca.scope),
           error_message = case when v_outcome = 'refreshed' then null else ca.error_message end
     where ca.id = p_account_id;
    update public.account_token_rotation s
       set lease_token = null, locked_by = null, lease_expires_at = null,
           attempts = 0, next_attempt_at = null, last_error = null,
           last_outcome = v_outcome,
           last_refreshed_at = case when v_outcome = 'refreshed' then p_now else s.last_refreshed_at end
     where s.account_id = p_account_id;
  elsif v_outcome in ('transient', 'application') then
    v_retry_after := nullif(p_result->>'retry_after_seconds', '')::integer;
    v_backoff := least(21600, 60 * power(2, least(v_state.attempts, 9))::integer);
    v_backoff := greatest(v_backoff, least(coalesce(v_retry_after, 0), 86400));
    update public.account_token_rotation s
       set lease_token = null, locked_by = null, lease_expires_at = null,
           attempts = s.attempts + 1,
           next_attempt_at = p_now + make_interval(secs => v_backoff),
           last_outcome = v_outcome,
           last_error = v_error
     where s.account_id = p_account_id;
  elsif v_outcome = 'refused' then
    if v_account.status = 'active' then
      update public.connected_accounts ca
         set status = 'token_expired',
             error_message = coalesce(v_error, v_label || ' refused the account''s token')
       where ca.id = p_account_id;
      insert into public.notifications (user_id, type, title, message, data, link)
      values (v_account.user_id, 'account_reconnect',
              'Reconnect your ' || v_label || ' account',
              v_label || ' no longer accepts Outpost''s access to '
                || coalesce(nullif(v_account.username, ''), 'your account')
                || '. Connect it again to keep syncing and publishing.',
              jsonb_build_object('account_id', v_account.id, 'platform', v_account.platform),
              '/settings/accounts');
    end if;
    update public.account_token_rotation s
       set lease_token = null, locked_by = null, lease_expires_at = null,
           attempts = 0, next_attempt_at = null,
           last_outcome = 'refused', last_error = v_error
     where s.account_id = p_account_id;
  else -- notified
    insert into public.notifications (user_id, type, title, message, data, link)
    values (v_account.user_id, 'account_reconnect_soon',
            'Reconnect your ' || v_label || ' account soon',
            v_label || ' access to ' || coalesce(nullif(v_account.username, ''), 'your account')
              || ' ends on ' || to_char(v_account.token_expires_at at time zone 'UTC', 'YYYY-MM-DD')
              || ' and ' || v_label || ' gives Outpost no way to renew it. Connect it again before then.',
            jsonb_build_object('account_id', v_account.id, 'platform', v_account.platform,
                               'expires_at', v_account.token_expires_at),
            '/settings/accounts');
    update public.account_token_rotation s
       set lease_token = null, locked_by = null, lease_expires_at = null,
           last_outcome = 'notified',
           reconnect_notified_for = v_account.token_expires_at
     where s.account_id = p_account_id;
  end if;
  return jsonb_build_object('saved', true, 'outcome', v_outcome);
end
$$;

revoke all on function public.token_rotation_action(public.connected_accounts, timestamptz, text, timestamptz) from public, anon, authenticated;
revoke all on function public.token_rotation_claim_json(public.connected_accounts, public.account_token_rotation) from public, anon, authenticated;
revoke all on function public.claim_token_rotations(text, integer, integer, text, timestamptz) from public, anon, authenticated;
revoke all on function public.claim_token_refresh(uuid, text, integer, timestamptz) from public, anon, authenticated;
revoke all on function public.finish_token_rotation(uuid, bigint, jsonb, timestamptz) from public, anon, authenticated;

grant execute on function public.token_rotation_action(public.connected_accounts, timestamptz, text, timestamptz) to service_role;
grant execute on function public.token_rotation_claim_json(public.connected_accounts, public.account_token_rotation) to service_role;
grant execute on function public.claim_token_rotations(text, integer, integer, text, timestamptz) to service_role;
grant execute on function public.claim_token_refresh(uuid, text, integer, timestamptz) to service_role;
grant execute on function public.finish_token_rotation(uuid, bigint, jsonb, timestamptz) to service_role;

-- A stalled worker's rotated tokens ---------------------------------------------

-- A token-rotation worker that stalls past its lease after the platform
-- already rotated the tokens holds the only valid refresh token (X, and
-- Strava once the new pair is used, spend the old one on refresh), yet
-- finish_token_rotation refuses it as `lease_lost`, and the account would
-- need reconnecting. The worker offers such tokens here: they are kept
-- when nobody saved other tokens since its claim (the access token it read
-- is still the stored one). The lease stays with whoever holds it; that
-- worker's own finish then sees the tokens changed and stands down.
create function public.keep_tokens_of_lost_lease(
  p_account_id uuid,
  p_result jsonb,
  p_now timestamptz default now()
) returns jsonb
language plpgsql
set search_path = ''
as $$
declare
  v_account public.connected_accounts;
begin
  if p_result->>'outcome' is distinct from 'refreshed'
     or p_result->>'access_token' is null or p_result->>'token_key_id' is null then
    raise exception 'keep_tokens_of_lost_lease: only refreshed tokens (access_token, token_key_id) are kept'
      using errcode = '22023';
  end if;
  select * into v_account from public.connected_accounts ca where ca.id = p_account_id for update;
  if not found then
    return jsonb_build_object('saved', false, 'reason', 'not_found');
  end if;
  -- Reconnected, disconnected or refreshed by another worker since the claim.
  if v_account.access_token is distinct from p_result->>'previous_access_token'
     or v_account.status = 'disconnected' then
    return jsonb_build_object('saved', false, 'reason', 'tokens_changed');
  end if;
  update public.connected_accounts ca
     set access_token = p_result->>'access_token',
         refresh_token = coalesce(p_result->>'refresh_token', ca.refresh_token),
         token_key_id = p_result->>'token_key_id',
         token_expires_at = coalesce((p_result->>'token_expires_at')::timestamptz, ca.token_expires_at),
         scope = coalesce(p_result->>'scope', ca.scope),
         -- The worker that took over may have been refused the spent refresh
         -- token meanwhile: these tokens are good, so the account is too.
         status = case when ca.status = 'token_expired' then 'active'::public.account_status_enum else ca.status end,
         error_message = null
   where ca.id = p_account_id;
  update public.account_token_rotation s
     set attempts = 0, next_attempt_at = null, last_error = null,
         last_outcome = 'refreshed', last_refreshed_at = p_now
   where s.account_id = p_account_id and s.lease_token is null;
  return jsonb_build_object('saved', true, 'outcome', 'refreshed', 'lease', 'lost');
end
$$;

revoke all on function public.keep_tokens_of_lost_lease(uuid, jsonb, timestamptz) from public, anon, authenticated;
grant execute on function public.keep_tokens_of_lost_lease(uuid, jsonb, timestamptz) to service_role;
