-- 0021: connecting accounts through the platform (issue 14, component `connect`).
--
-- * connect_states: one row per started OAuth connect (PKCE verifier, sealed
--   by the component; where to return; until when). The signed `state`
--   parameter names the row; consume_connect_state() spends it atomically,
--   so a state works once. Service role only (RLS on, no policy).
-- * store_connected_account(): the callback's one write: the account as the
--   platform described it (identity from the platform's answer only,
--   sealed tokens, expiry, scope), active and verified, in one transaction;
--   an identity another user has verified is refused and nothing is written.
--   Bluesky: the app password goes to Vault and the session to
--   bluesky_sessions in the same transaction.
-- * connect_account_for_disconnect() / disconnect_account(): the owner's
--   account and its sealed tokens (to revoke them at the platform), then the
--   tokens dropped, status `disconnected`, verified mark cleared; data stays.

create table public.connect_states (
  id uuid primary key default gen_random_uuid(),
  user_id uuid not null references public.users (id) on delete cascade,
  platform public.platform_enum not null,
  -- PKCE code_verifier, sealed with shared::token_cipher (never plain).
  code_verifier text not null,
  return_url text not null,
  redirect_uri text not null,
  expires_at timestamptz not null,
  consumed_at timestamptz,
  created_at timestamptz not null default now(),
  constraint connect_states_platform_is_oauth check (platform in ('strava', 'instagram', 'x', 'linkedin'))
);
comment on table public.connect_states is
  'Started OAuth connects (connect component): sealed PKCE verifier, return URL, expiry; spent once by consume_connect_state. Service role only.';
create index connect_states_expires_at_idx on public.connect_states (expires_at);
alter table public.connect_states enable row level security;
revoke all on public.connect_states from anon, authenticated;
grant select, insert, update, delete on public.connect_states to service_role;

-- A new connect: {"id", "expires_at"}. Old rows (expired over a day ago)
-- are swept on the way, so the table stays small without a cron.
create function public.begin_connect_state(
  p_user_id uuid,
  p_platform text,
  p_code_verifier text,
  p_return_url text,
  p_redirect_uri text,
  p_ttl_seconds int,
  p_now timestamptz default now()
) returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_row public.connect_states;
begin
  if not exists (select 1 from public.users u where u.id = p_user_id) then
    raise exception 'begin_connect_state: no user %', p_user_id using errcode = '23503';
  end if;
  if p_ttl_seconds is null or p_ttl_seconds < 1 or p_ttl_seconds > 3600 then
    raise exception 'begin_connect_state: ttl must be 1..3600 seconds' using errcode = '22023';
  end if;
  delete from public.connect_states s where s.expires_at < p_now - interval '1 day';
  insert into public.connect_states (user_id, platform, code_verifier, return_url, redirect_uri, expires_at)
  values (p_user_id, p_platform::public.platform_enum, p_code_verifier, p_return_url, p_redirect_uri,
          p_now + make_interval(secs => p_ttl_seconds))
  returning * into v_row;
  return jsonb_build_object('id', v_row.id, 'expires_at', v_row.expires_at);
end
$$;

-- Spends the state once: {"ok": true, "code_verifier", "return_url",
-- "redirect_uri"} or {"ok": false, "reason": "unknown" | "mismatch" |
-- "replayed" | "expired", "return_url"?}. The row lock makes two callbacks
-- with one state race safely: exactly one sees ok.
create function public.consume_connect_state(
  p_state_id uuid,
  p_user_id uuid,
  p_platform text,
  p_now timestamptz default now()
) returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_row public.connect_states;
begin
  select * into v_row from public.connect_states s where s.id = p_state_id for update;
  if not found then
    return jsonb_build_object('ok', false, 'reason', 'unknown');
  end if;
  if v_row.user_id <> p_user_id or v_row.platform::text <> p_platform then
    return jsonb_build_object('ok', false, 'reason', 'mismatch');
  end if;
  if v_row.consumed_at is not null then
    return jsonb_build_object('ok', false, 'reason', 'replayed', 'return_url', v_row.return_url);
  end if;
  update public.connect_states s set consumed_at = p_now where s.id = p_state_id;
  if v_row.expires_at <= p_now then
    return jsonb_build_object('ok', false, 'reason', 'expired', 'return_url', v_row.return_url);
  end if;
  return jsonb_build_object('ok', true, 'code_verifier', v_row.code_verifier,
                            'return_url', v_row.return_url, 'redirect_uri', v_row.redirect_uri);
end
$$;

-- The callback's one write. p_account: platform_user_id (required, from the
-- platform's answer), username, display_name, avatar_url, access_token and
-- refresh_token (sealed), token_key_id, token_expires_at (RFC 3339), scope,
-- profile_data; Bluesky also app_password (to Vault) and session {did,
-- handle, accessJwt, refreshJwt} (to bluesky_sessions).
-- Answers {"ok": true, "account_id", "created"} or {"ok": false, "reason":
-- "verified_by_another_user", "message"}: then nothing was written.
create function public.store_connected_account(
  p_user_id uuid,
  p_platform text,
  p_account jsonb,
  p_now timestamptz default now()
) returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_platform public.platform_enum := p_platform::public.platform_enum;
  v_identity text := nullif(p_account->>'platform_user_id', '');
  v_username text := coalesce(nullif(p_account->>'username', ''), p_account->>'platform_user_id');
  v_id uuid;
  v_created boolean := false;
  v_secret uuid;
  v_taken text := format('the %s identity %s is already connected and verified by another user',
                         p_platform, v_identity);
begin
  if v_identity is null then
    raise exception 'store_connected_account: the platform named no identity' using errcode = '22023';
  end if;
  if not exists (select 1 from public.users u where u.id = p_user_id) then
    raise exception 'store_connected_account: no user %', p_user_id using errcode = '23503';
  end if;
  -- One identity at a time, so two users connecting it race safely.
  perform pg_catalog.pg_advisory_xact_lock(
    pg_catalog.hashtextextended('connect:' || p_platform || ':' || v_identity, 0));
  if exists (select 1 from public.connected_accounts o
              where o.platform = v_platform and o.platform_user_id = v_identity
                and o.verified_at is not null and o.user_id <> p_user_id) then
    return jsonb_build_object('ok', false, 'reason', 'verified_by_another_user', 'message', v_taken);
  end if;
  begin
    if v_platform = 'bluesky' and coalesce(p_account->>'app_password', '') <> '' then
      v_secret := public.create_account_secret(p_account->>'app_password',
                                               'bluesky:' || v_identity || ':' || gen_random_uuid()::text,
                                               'Bluesky app password (connect)');
    end if;
    select ca.id into v_id from public.connected_accounts ca
     where ca.user_id = p_user_id and ca.platform = v_platform and ca.platform_user_id = v_identity
     for update;
    if v_id is null then
      insert into public.connected_accounts (user_id, platform, platform_user_id, username)
      values (p_user_id, v_platform, v_identity, v_username)
      returning id into v_id;
      v_created := true;
    end if;
    update public.connected_accounts ca
       set username = v_username,
           display_name = coalesce(nullif(p_account->>'display_name', ''), ca.display_name),
           avatar_url = coalesce(nullif(p_account->>'avatar_url', ''), ca.avatar_url),
           access_token = p_account->>'access_token',
           refresh_token = p_account->>'refresh_token',
           token_key_id = p_account->>'token_key_id',
           token_expires_at = (p_account->>'token_expires_at')::timestamptz,
           scope = p_account->>'scope',
           account_did = case when v_platform = 'bluesky' then v_identity else ca.account_did end,
           handle = case when v_platform = 'bluesky' then v_username else ca.handle end,
           vault_secret_id = coalesce(v_secret, ca.vault_secret_id),
           profile_data = coalesce(ca.profile_data, '{}'::jsonb) || coalesce(p_account->'profile_data', '{}'::jsonb),
           status = 'active',
           is_active = true,
           error_message = null,
           error_count = 0
     where ca.id = v_id;
    if v_platform = 'bluesky' and p_account ? 'session' then
      perform public.save_bluesky_session(v_id, p_account->'session', 'created', p_now);
      -- The createSession connect made counts against the account's budget.
      update public.bluesky_sessions s set creations = s.creations || p_now where s.account_id = v_id;
    end if;
    update public.connected_accounts ca
       set verified_at = coalesce(ca.verified_at, p_now)
     where ca.id = v_id;
  exception when unique_violation then
    -- Another user's verification won the race: this block's writes are undone.
    return jsonb_build_object('ok', false, 'reason', 'verified_by_another_user', 'message', v_taken);
  end;
  return jsonb_build_object('ok', true, 'account_id', v_id, 'created', v_created);
end
$$;

-- The owner's account and its sealed credentials, for revocation:
-- {"found": true, "platform", "status", "platform_user_id", "access_token", "refresh_token",
-- "bluesky_refresh_jwt"} or {"found": false}. Another user's account is
-- "not found" alike.
create function public.connect_account_for_disconnect(p_user_id uuid, p_account_id uuid)
returns jsonb
language sql
stable
security definer
set search_path = ''
as $$
  select coalesce(
    (select jsonb_build_object('found', true, 'platform', ca.platform, 'status', ca.status,
                               'platform_user_id', ca.platform_user_id,
                               'access_token', ca.access_token, 'refresh_token', ca.refresh_token,
                               'bluesky_refresh_jwt', s.refresh_jwt)
       from public.connected_accounts ca
       left join public.bluesky_sessions s on s.account_id = ca.id
      where ca.id = p_account_id and ca.user_id = p_user_id),
    jsonb_build_object('found', false))
$$;

-- Drops the credentials (tokens, Bluesky session and Vault password),
-- marks the account disconnected and unverified; posts and history stay.
create function public.disconnect_account(p_user_id uuid, p_account_id uuid, p_now timestamptz default now())
returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_account public.connected_accounts;
begin
  select * into v_account from public.connected_accounts ca
   where ca.id = p_account_id and ca.user_id = p_user_id for update;
  if not found then
    return jsonb_build_object('disconnected', false, 'reason', 'not_found');
  end if;
  delete from public.bluesky_sessions s where s.account_id = p_account_id;
  update public.connected_accounts ca
     set access_token = null, refresh_token = null, token_key_id = null, token_expires_at = null,
         vault_secret_id = null, status = 'disconnected', verified_at = null, is_active = false,
         sync_enabled = false, updated_at = p_now
   where ca.id = p_account_id;
  if v_account.vault_secret_id is not null then
    delete from vault.secrets v where v.id = v_account.vault_secret_id;
    delete from public.account_secret_owners o where o.secret_id = v_account.vault_secret_id;
  end if;
  return jsonb_build_object('disconnected', true, 'account_id', p_account_id, 'platform', v_account.platform);
end
$$;

revoke all on function public.begin_connect_state(uuid, text, text, text, text, int, timestamptz) from public, anon, authenticated;
revoke all on function public.consume_connect_state(uuid, uuid, text, timestamptz) from public, anon, authenticated;
revoke all on function public.store_connected_account(uuid, text, jsonb, timestamptz) from public, anon, authenticated;
revoke all on function public.connect_account_for_disconnect(uuid, uuid) from public, anon, authenticated;
revoke all on function public.disconnect_account(uuid, uuid, timestamptz) from public, anon, authenticated;
grant execute on function public.begin_connect_state(uuid, text, text, text, text, int, timestamptz) to service_role;
grant execute on function public.consume_connect_state(uuid, uuid, text, timestamptz) to service_role;
grant execute on function public.store_connected_account(uuid, text, jsonb, timestamptz) to service_role;
grant execute on function public.connect_account_for_disconnect(uuid, uuid) to service_role;
grant execute on function public.disconnect_account(uuid, uuid, timestamptz) to service_role;

-- Replaced Bluesky app passwords -------------------------------------------

-- Reconnecting a Bluesky account stores its new app password in a new Vault
-- secret (store_connected_account); the one it replaces would stay behind,
-- readable by the service and by nobody's account. Drop it when it was made by
-- connect and no account links it any more. Secrets a user made and linked
-- themselves are theirs to keep, so only connect's are touched. Also on an
-- account deleted outright.
create function public.drop_replaced_connect_secret() returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  if exists (select 1 from vault.secrets v
              where v.id = old.vault_secret_id
                and v.description = 'Bluesky app password (connect)')
     and not exists (select 1 from public.connected_accounts ca
                      where ca.vault_secret_id = old.vault_secret_id) then
    delete from vault.secrets v where v.id = old.vault_secret_id;
    delete from public.account_secret_owners o where o.secret_id = old.vault_secret_id;
  end if;
  return null;
end
$$;
revoke all on function public.drop_replaced_connect_secret() from public, anon, authenticated;

create trigger connected_accounts_drop_replaced_connect_secret
  after update of vault_secret_id on public.connected_accounts
  for each row
  when (old.vault_secret_id is not null and old.vault_secret_id is distinct from new.vault_secret_id)
  execute function public.drop_replaced_connect_secret();

-- An account deleted outright takes connect's secret with it as well.
create trigger connected_accounts_drop_deleted_connect_secret
  after delete on public.connected_accounts
  for each row
  when (old.vault_secret_id is not null)
  execute function public.drop_replaced_connect_secret();
