-- 0012: the webhook receiver's one call per accepted webhook.
--
-- store_webhook_event() resolves the connected account a webhook is about
-- (Strava owner_id, Instagram entry id, as connected_accounts.platform_user_id)
-- and archives the raw payload through store_ingested_item() (source
-- 'webhook'), deduplicated on (platform, external_id): one statement, one
-- round trip, committed before the receiver answers 200. The index makes the
-- account lookup by (platform, platform_user_id) cheap.

create index connected_accounts_platform_user_idx
  on public.connected_accounts (platform, platform_user_id);

-- p_platform_user_id null (or no such account): stored without an account;
-- ingest resolves it later. Several users may have connected the same
-- platform account: the active one updated last wins, the rest is ingest's.
create function public.store_webhook_event(
  p_platform text,
  p_event_type text,
  p_external_id text,
  p_payload jsonb,
  p_platform_user_id text default null,
  p_error text default null,
  p_now timestamptz default now()
) returns jsonb
language plpgsql
set search_path = ''
as $$
declare
  v_account_id uuid;
  v_user_id uuid;
  v_result jsonb;
begin
  if p_platform_user_id is not null then
    select a.id, a.user_id into v_account_id, v_user_id
      from public.connected_accounts a
     where a.platform = p_platform::public.platform_enum
       and a.platform_user_id = p_platform_user_id
     order by (a.status = 'active') desc nulls last, a.updated_at desc, a.id
     limit 1;
  end if;

  v_result := public.store_ingested_item(
    'webhook', p_platform, p_event_type, p_external_id, p_payload,
    v_account_id, v_user_id, p_error, p_now);
  return v_result || jsonb_build_object('account_id', v_account_id, 'user_id', v_user_id);
end
$$;
comment on function public.store_webhook_event(text, text, text, jsonb, text, text, timestamptz) is
  'Webhook receiver: resolve the account by (platform, platform_user_id) and archive the raw payload once.';
revoke all on function public.store_webhook_event(text, text, text, jsonb, text, text, timestamptz)
  from public, anon, authenticated;
grant execute on function public.store_webhook_event(text, text, text, jsonb, text, text, timestamptz)
  to service_role;
