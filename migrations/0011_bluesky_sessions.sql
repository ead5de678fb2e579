-- 0011: cached Bluesky PDS sessions, one per Bluesky account.
--
-- createSession is limited to 30 per 5 minutes and 300 per day per account
-- (PLATFORMS.md), and every publish, feed publication and metrics refresh
-- needs a session, so sessions are created once, stored here, reused by
-- every component instance and refreshed when the PDS says ExpiredToken.
--   bluesky_session_for(account, worker, now)   -> ready | create | wait | unusable
--   save_bluesky_session(account, session, how, now)
--   forget_bluesky_session(account, access_jwt, now)
--   record_bluesky_login_failure(account, error, permanent, retry_after, now)
-- Tokens are secrets: the table has RLS on and no policy, so only the
-- service role (BYPASSRLS) sees it; API roles get nothing.

create table public.bluesky_sessions (
  account_id uuid primary key references public.connected_accounts (id) on delete cascade,
  did text,
  handle text,
  access_jwt text,
  refresh_jwt text,
  -- A worker creating the session holds this short lease, so concurrent
  -- instances wait for its session instead of each calling createSession.
  creating_by text,
  creating_until timestamptz,
  -- createSession calls made by Outpost, newest last, for the budget.
  creations timestamptz[] not null default '{}',
  created_at timestamptz not null default now(),
  refreshed_at timestamptz,
  updated_at timestamptz not null default now()
);
comment on table public.bluesky_sessions is
  'Cached PDS sessions per Bluesky account (service role only). createSession budget: 25 per 5 min, 250 per day (the PDS allows 30 and 300).';
create trigger update_bluesky_sessions_updated_at
  before update on public.bluesky_sessions
  for each row execute function public.update_updated_at();
alter table public.bluesky_sessions enable row level security;
revoke all on public.bluesky_sessions from anon, authenticated;
grant select, insert, update, delete on public.bluesky_sessions to service_role;

-- Outpost's own createSession budget, below the PDS's limits so the
-- account's other clients keep some room.
create function public.bluesky_session_budget() returns jsonb
language sql immutable
set search_path = ''
as $$ select '{"per_5_minutes": 25, "per_day": 250, "creating_lease_seconds": 30}'::jsonb $$;

-- What a worker should do to get a session for p_account_id:
--   {"state":"ready", "session":{did, handle, accessJwt, refreshJwt}}
--   {"state":"create", "identifier", "password"}  (this worker now holds the creating lease and a budget slot)
--   {"state":"wait", "retry_after_seconds", "reason"}
--   {"state":"unusable", "reason"}  (no such Bluesky account, inactive, no app password)
create function public.bluesky_session_for(p_account_id uuid, p_worker_id text, p_now timestamptz default now())
returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_account public.connected_accounts%rowtype;
  v_row public.bluesky_sessions%rowtype;
  v_budget jsonb := public.bluesky_session_budget();
  v_recent timestamptz[];
  v_in_5 int;
  v_in_day int;
  v_password text;
  v_wait int;
begin
  select * into v_account from public.connected_accounts where id = p_account_id;
  if not found or v_account.platform <> 'bluesky' then
    return jsonb_build_object('state', 'unusable', 'reason', 'no Bluesky account with this id');
  end if;
  if not v_account.is_active or v_account.status in ('disconnected', 'token_expired') then
    return jsonb_build_object('state', 'unusable',
      'reason', format('account is %s', case when not v_account.is_active then 'inactive' else v_account.status::text end));
  end if;

  insert into public.bluesky_sessions (account_id) values (p_account_id)
    on conflict (account_id) do nothing;
  select * into v_row from public.bluesky_sessions where account_id = p_account_id for update;

  if v_row.access_jwt is not null and v_row.refresh_jwt is not null then
    return jsonb_build_object('state', 'ready', 'session', jsonb_build_object(
      'did', v_row.did, 'handle', v_row.handle,
      'accessJwt', v_row.access_jwt, 'refreshJwt', v_row.refresh_jwt));
  end if;

  if v_row.creating_until is not null and v_row.creating_until > p_now
     and v_row.creating_by is distinct from p_worker_id then
    return jsonb_build_object('state', 'wait', 'reason', 'another worker is creating the session',
      'retry_after_seconds', greatest(1, ceil(extract(epoch from v_row.creating_until - p_now))::int));
  end if;

  -- Keep one day of history; count the windows.
  select coalesce(array_agg(t order by t), '{}') into v_recent
    from unnest(v_row.creations) t where t > p_now - interval '1 day';
  select count(*) into v_in_5 from unnest(v_recent) t where t > p_now - interval '5 minutes';
  v_in_day := coalesce(array_length(v_recent, 1), 0);
  if v_in_5 >= (v_budget->>'per_5_minutes')::int then
    select ceil(extract(epoch from (min(t) + interval '5 minutes') - p_now))::int into v_wait
      from unnest(v_recent) t where t > p_now - interval '5 minutes';
    return jsonb_build_object('state', 'wait', 'reason', 'createSession budget (5 minutes) used up',
      'retry_after_seconds', greatest(1, v_wait));
  end if;
  if v_in_day >= (v_budget->>'per_day')::int then
    select ceil(extract(epoch from (min(t) + interval '1 day') - p_now))::int into v_wait from unnest(v_recent) t;
    return jsonb_build_object('state', 'wait', 'reason', 'createSession budget (day) used up',
      'retry_after_seconds', greatest(1, v_wait));
  end if;

  v_password := public.get_account_secret(p_account_id);
  if v_password is null or v_password = '' then
    return jsonb_build_object('state', 'unusable', 'reason', 'the account has no app password in Vault');
  end if;

  update public.bluesky_sessions
     set creating_by = p_worker_id,
         creating_until = p_now + make_interval(secs => (v_budget->>'creating_lease_seconds')::int),
         creations = v_recent || p_now,
         updated_at = p_now
   where account_id = p_account_id;

  return jsonb_build_object('state', 'create',
    'identifier', coalesce(nullif(v_account.handle, ''), v_account.account_did, v_account.platform_user_id),
    'password', v_password);
end;
$$;

-- Stores a session from createSession (p_how 'created') or refreshSession
-- ('refreshed'), releases the creating lease, and marks the account healthy.
create function public.save_bluesky_session(p_account_id uuid, p_session jsonb, p_how text, p_now timestamptz default now())
returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
begin
  if p_how not in ('created', 'refreshed') then
    raise exception 'save_bluesky_session: p_how must be created or refreshed, not %', p_how using errcode = '22023';
  end if;
  if coalesce(p_session->>'accessJwt', '') = '' or coalesce(p_session->>'refreshJwt', '') = '' then
    raise exception 'save_bluesky_session: the session lacks its tokens' using errcode = '22023';
  end if;
  insert into public.bluesky_sessions as s (account_id, did, handle, access_jwt, refresh_jwt, refreshed_at, updated_at)
  values (p_account_id, p_session->>'did', p_session->>'handle', p_session->>'accessJwt', p_session->>'refreshJwt',
          case when p_how = 'refreshed' then p_now end, p_now)
  on conflict (account_id) do update
     set did = excluded.did, handle = excluded.handle,
         access_jwt = excluded.access_jwt, refresh_jwt = excluded.refresh_jwt,
         refreshed_at = coalesce(excluded.refreshed_at, s.refreshed_at),
         creating_by = null, creating_until = null, updated_at = p_now;
  update public.connected_accounts
     set error_message = null, error_count = 0,
         status = case when status = 'error' then 'active'::public.account_status_enum else status end
   where id = p_account_id and (error_message is not null or error_count <> 0 or status = 'error');
  return jsonb_build_object('saved', true, 'how', p_how);
end;
$$;

-- Drops the stored session when it still holds p_access_jwt (a refresh
-- that failed for good); a session another worker already replaced stays.
create function public.forget_bluesky_session(p_account_id uuid, p_access_jwt text, p_now timestamptz default now())
returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_count int;
begin
  update public.bluesky_sessions
     set access_jwt = null, refresh_jwt = null, updated_at = p_now
   where account_id = p_account_id and access_jwt = p_access_jwt;
  get diagnostics v_count = row_count;
  return jsonb_build_object('forgotten', v_count > 0);
end;
$$;

-- createSession failed. Permanent (wrong or revoked app password): the
-- account moves to token_expired with the platform's message, so the user
-- sees it and no worker keeps spending the budget. Transient: the creating
-- lease is held until p_retry_after_seconds so others wait too.
create function public.record_bluesky_login_failure(
  p_account_id uuid, p_error text, p_permanent boolean,
  p_retry_after_seconds int default null, p_now timestamptz default now())
returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
begin
  update public.bluesky_sessions
     set creating_by = null,
         creating_until = case when p_permanent then null
                               else p_now + make_interval(secs => greatest(coalesce(p_retry_after_seconds, 5), 1)) end,
         access_jwt = null, refresh_jwt = null, updated_at = p_now
   where account_id = p_account_id;
  update public.connected_accounts
     set status = case when p_permanent then 'token_expired'::public.account_status_enum else status end,
         error_message = left(p_error, 500),
         error_count = coalesce(error_count, 0) + 1
   where id = p_account_id;
  return jsonb_build_object('recorded', true, 'permanent', p_permanent);
end;
$$;

revoke all on function public.bluesky_session_budget() from public, anon, authenticated;
revoke all on function public.bluesky_session_for(uuid, text, timestamptz) from public, anon, authenticated;
revoke all on function public.save_bluesky_session(uuid, jsonb, text, timestamptz) from public, anon, authenticated;
revoke all on function public.forget_bluesky_session(uuid, text, timestamptz) from public, anon, authenticated;
revoke all on function public.record_bluesky_login_failure(uuid, text, boolean, integer, timestamptz) from public, anon, authenticated;
grant execute on function public.bluesky_session_budget() to service_role;
grant execute on function public.bluesky_session_for(uuid, text, timestamptz) to service_role;
grant execute on function public.save_bluesky_session(uuid, jsonb, text, timestamptz) to service_role;
grant execute on function public.forget_bluesky_session(uuid, text, timestamptz) to service_role;
grant execute on function public.record_bluesky_login_failure(uuid, text, boolean, integer, timestamptz) to service_role;
