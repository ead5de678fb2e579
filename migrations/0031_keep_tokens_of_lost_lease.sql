-- A token-rotation worker that stalls past its lease after the platform
-- already rotated the tokens held the only valid refresh token (X, and
-- Strava once the new pair is used, spend the old one on refresh), yet
-- finish_token_rotation refused it as `lease_lost` (0022), so the account
-- needed reconnecting. The worker now offers such tokens here: they are kept
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
