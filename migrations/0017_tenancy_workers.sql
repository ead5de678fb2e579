-- 0017: the workers' half of "every reference a user writes is theirs"
-- (issue 12, items 3 to 5): what the service does must never act for one
-- user with another user's rows, whatever the row-level policies let slip.
--
-- * connected_accounts.verified_at: the moment the platform itself vouched
--   that the account's identity (platform_user_id / account_did) belongs to
--   whoever connected it: an OAuth token exchange followed by the
--   platform's "who am I", or a Bluesky createSession with the account's
--   own app password answering that DID. Only the service sets it, through
--   mark_account_verified(); API roles can neither set nor change it, and a
--   change of identity or owner clears it. One verified owner per
--   (platform, platform_user_id) (unique partial index).
-- * Webhook routing (store_webhook_event), the account of an archived item
--   (ingest_account_for_item), account polls (claim_next_sync_account) and
--   archiving (archive_platform_posts) consider verified accounts only.
-- * Bluesky sessions: a session saved from createSession must be for the
--   account's DID (else refused, the account stops with the reason); the
--   first such session verifies the account. A cached session of an
--   unverified account is not used: a fresh createSession proves it first.
-- * Claims (claim_due_scheduled_posts, claim_next_scheduled_posts,
--   claim_next_archive_items and every claim_next_<queue> through
--   queue_claim) and begin_scheduled_post_publish dead-letter, with the
--   reason, any item whose account, draft, adaptation, image, LoRA,
--   workspace, archived post or item belongs to another user, and any
--   post whose account (other than Bluesky, which proves itself at
--   createSession before anything is written) is not verified.
-- * Paid work: a generation or AI job is charged against users.credits
--   once, when first claimed (credit_charges, one row per item); without
--   enough credits it is dead-lettered "insufficient credits" instead.
-- * record_generation_result: a prediction id names one generation or
--   none; ambiguity is refused, and live generations cannot share one
--   (unique partial index).
--
-- The old bodies of the wrapped functions are kept, renamed *_unchecked
-- (service role only), so the checks sit in one place in front of them.

-- Verified identities ----------------------------------------------------------------

alter table public.connected_accounts add column verified_at timestamptz;
comment on column public.connected_accounts.verified_at is
  'When the platform vouched that platform_user_id/account_did belongs to this account''s user (set by the service only, mark_account_verified). Null: unverified, nothing acts for it.';

-- Bluesky sessions the service created with the account's own app password
-- and whose DID is the account's are proof already (oldest account first,
-- should two users hold the same password).
update public.connected_accounts ca
   set verified_at = now()
  from (select distinct on (a.platform_user_id) a.id
          from public.connected_accounts a
          join public.bluesky_sessions s on s.account_id = a.id
         where a.platform = 'bluesky'
           and s.did is not null
           and s.did = a.account_did
           and s.access_jwt is not null
         order by a.platform_user_id, a.created_at, a.id) proven
 where ca.id = proven.id;

create unique index connected_accounts_one_verified_owner
  on public.connected_accounts (platform, platform_user_id)
  where verified_at is not null;

-- API roles never write verified_at; a new identity or owner is unverified.
create function public.connected_accounts_guard_verified() returns trigger
language plpgsql
set search_path = ''
as $$
begin
  if tg_op = 'INSERT' then
    if new.verified_at is not null and current_user in ('anon', 'authenticated') then
      raise exception 'connected_accounts.verified_at is set by the service only, after the platform vouched for the account'
        using errcode = '42501';
    end if;
    return new;
  end if;
  if new.verified_at is distinct from old.verified_at and current_user in ('anon', 'authenticated') then
    raise exception 'connected_accounts.verified_at is set by the service only, after the platform vouched for the account'
      using errcode = '42501';
  end if;
  if (new.user_id, new.platform, new.platform_user_id, new.account_did)
       is distinct from (old.user_id, old.platform, old.platform_user_id, old.account_did)
     and new.verified_at is not distinct from old.verified_at then
    new.verified_at := null;
  end if;
  return new;
end
$$;
revoke all on function public.connected_accounts_guard_verified() from public, anon, authenticated;

create trigger connected_accounts_guard_verified
  before insert or update on public.connected_accounts
  for each row execute function public.connected_accounts_guard_verified();

-- The service marks an account verified after the platform vouched for
-- p_platform_user_id (the DID for Bluesky):
--   {"verified": true, "account_id", "user_id", "verified_at"}
--   {"verified": false, "reason": "not_found" | "identity_mismatch" | "verified_by_another_user", "message"}
-- identity_mismatch also clears a previous verification: the platform
-- answered someone else.
create function public.mark_account_verified(
  p_account_id uuid,
  p_platform_user_id text,
  p_now timestamptz default now()
) returns jsonb
language plpgsql
set search_path = ''
as $$
declare
  v_account public.connected_accounts;
begin
  select * into v_account from public.connected_accounts ca where ca.id = p_account_id for update;
  if not found then
    return jsonb_build_object('verified', false, 'reason', 'not_found',
                              'message', 'no connected account with this id');
  end if;
  if p_platform_user_id is null or p_platform_user_id is distinct from v_account.platform_user_id then
    update public.connected_accounts ca set verified_at = null
     where ca.id = p_account_id and ca.verified_at is not null;
    return jsonb_build_object('verified', false, 'reason', 'identity_mismatch',
      'message', format('the %s account is %s but the platform vouched for %s',
                        v_account.platform, v_account.platform_user_id, coalesce(p_platform_user_id, 'nobody')));
  end if;
  if exists (select 1 from public.connected_accounts o
              where o.platform = v_account.platform
                and o.platform_user_id = v_account.platform_user_id
                and o.verified_at is not null
                and o.id <> v_account.id) then
    return jsonb_build_object('verified', false, 'reason', 'verified_by_another_user',
      'message', format('the %s identity %s is already connected and verified by another user',
                        v_account.platform, v_account.platform_user_id));
  end if;
  begin
    update public.connected_accounts ca
       set verified_at = coalesce(ca.verified_at, p_now)
     where ca.id = p_account_id
    returning * into v_account;
  exception when unique_violation then
    return jsonb_build_object('verified', false, 'reason', 'verified_by_another_user',
      'message', format('the %s identity %s is already connected and verified by another user',
                        v_account.platform, v_account.platform_user_id));
  end;
  return jsonb_build_object('verified', true, 'account_id', v_account.id, 'user_id', v_account.user_id,
                            'verified_at', v_account.verified_at);
end
$$;
comment on function public.mark_account_verified(uuid, text, timestamptz) is
  'Service only: the platform vouched that p_platform_user_id is this account''s identity (OAuth exchange + who-am-I, Bluesky createSession).';

-- Webhooks reach the verified owner only ------------------------------------------------

create or replace function public.store_webhook_event(
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
  -- One verified owner per identity (unique index); unverified claimants
  -- never see the payload. No verified owner: stored without an account.
  if p_platform_user_id is not null then
    select a.id, a.user_id into v_account_id, v_user_id
      from public.connected_accounts a
     where a.platform = p_platform::public.platform_enum
       and a.platform_user_id = p_platform_user_id
       and a.verified_at is not null;
  end if;

  v_result := public.store_ingested_item(
    'webhook', p_platform, p_event_type, p_external_id, p_payload,
    v_account_id, v_user_id, p_error, p_now);
  return v_result || jsonb_build_object('account_id', v_account_id, 'user_id', v_user_id);
end
$$;

-- Ingest: verified accounts only ------------------------------------------------------

-- The item's own account when it is verified (and is p_platform_user_id,
-- if given), else the verified owner of p_platform_user_id; the item is
-- linked to it. null when there is none (ingest fails the item, naming it).
create or replace function public.ingest_account_for_item(
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
       and ca.verified_at is not null
       and (v_item.user_id is null or ca.user_id = v_item.user_id)
       and (p_platform_user_id is null or ca.platform_user_id = p_platform_user_id);
  end if;
  if v_account.id is null and p_platform_user_id is not null then
    select * into v_account
      from public.connected_accounts ca
     where ca.platform = v_item.platform
       and ca.platform_user_id = p_platform_user_id
       and ca.verified_at is not null;
  end if;
  if v_account.id is null then
    return 'null'::jsonb;
  end if;
  if v_item.account_id is distinct from v_account.id or v_item.user_id is distinct from v_account.user_id then
    update public.ingested_items i
       set account_id = v_account.id, user_id = v_account.user_id
     where i.id = p_item_id;
  end if;
  return public.ingest_account_json(v_account);
end
$$;

alter function public.archive_platform_posts(uuid, uuid, jsonb, text, boolean, timestamptz)
  rename to archive_platform_posts_unchecked;

-- Archives for a verified account only, and only an item of that account's user.
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
  v_item public.ingested_items;
begin
  select * into v_account from public.connected_accounts ca where ca.id = p_account_id;
  if not found then
    raise exception 'archive_platform_posts: no connected account %', p_account_id using errcode = 'P0002';
  end if;
  if v_account.verified_at is null then
    raise exception 'archive_platform_posts: refused: the % account % is not verified', v_account.platform, p_account_id
      using errcode = '42501';
  end if;
  if p_ingested_item_id is not null then
    select * into v_item from public.ingested_items i where i.id = p_ingested_item_id;
    if found and (v_item.account_id is distinct from p_account_id and v_item.account_id is not null
                  or v_item.user_id is distinct from v_account.user_id and v_item.user_id is not null) then
      raise exception 'archive_platform_posts: refused: item % belongs to another account or user', p_ingested_item_id
        using errcode = '42501';
    end if;
  end if;
  return public.archive_platform_posts_unchecked(p_account_id, p_ingested_item_id, p_posts, p_mode,
                                                 p_stop_at_known, p_now);
end
$$;

-- claim_next_sync_account (0013) with one more rule: verified accounts only.
create or replace function public.claim_next_sync_account(
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

  insert into public.account_sync_state (account_id)
  select ca.id
    from public.connected_accounts ca
   where ca.next_sync_at <= p_now
     and ca.sync_enabled is not false
     and coalesce(ca.status, 'active') in ('active', 'error')
     and ca.platform in ('bluesky', 'strava', 'instagram')
     and ca.verified_at is not null
     and not exists (select 1 from public.account_sync_state s where s.account_id = ca.id)
  on conflict (account_id) do nothing;

  select s.* into v_state
    from public.account_sync_state s
    join public.connected_accounts ca on ca.id = s.account_id
   where ca.next_sync_at <= p_now
     and ca.sync_enabled is not false
     and coalesce(ca.status, 'active') in ('active', 'error')
     and ca.platform in ('bluesky', 'strava', 'instagram')
     and ca.verified_at is not null
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

-- Bluesky sessions prove (or disprove) the account's DID ------------------------------------

alter function public.bluesky_session_for(uuid, text, timestamptz) rename to bluesky_session_for_unchecked;
alter function public.save_bluesky_session(uuid, jsonb, text, timestamptz) rename to save_bluesky_session_unchecked;

-- A cached session of an unverified account (its identity changed, or it
-- predates verification) is dropped, so the worker creates one with the
-- app password and that createSession proves the DID.
create function public.bluesky_session_for(p_account_id uuid, p_worker_id text, p_now timestamptz default now())
returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
begin
  if exists (select 1 from public.connected_accounts ca
              where ca.id = p_account_id and ca.platform = 'bluesky' and ca.verified_at is null) then
    update public.bluesky_sessions s
       set access_jwt = null, refresh_jwt = null, updated_at = p_now
     where s.account_id = p_account_id and s.access_jwt is not null;
  end if;
  return public.bluesky_session_for_unchecked(p_account_id, p_worker_id, p_now);
end;
$$;

-- A session must be the account's own DID: else nothing is stored, the
-- account stops (token_expired, with the reason) and the answer is
-- {"saved": false, "reason": "did_mismatch" | "verified_by_another_user" | "not_found", "message"}.
-- The first session created for an unverified account verifies it.
create function public.save_bluesky_session(p_account_id uuid, p_session jsonb, p_how text, p_now timestamptz default now())
returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_account public.connected_accounts;
  v_did text := nullif(p_session ->> 'did', '');
  v_verified jsonb;
  v_message text;
begin
  select * into v_account from public.connected_accounts ca where ca.id = p_account_id;
  if not found or v_account.platform <> 'bluesky' then
    return jsonb_build_object('saved', false, 'reason', 'not_found', 'message', 'no Bluesky account with this id');
  end if;
  if v_did is null or v_did is distinct from coalesce(v_account.account_did, v_account.platform_user_id) then
    v_message := format('the app password logs in as %s, not as this account (%s)',
                        coalesce(v_did, 'no DID'), coalesce(v_account.account_did, v_account.platform_user_id));
    update public.connected_accounts ca set verified_at = null where ca.id = p_account_id and ca.verified_at is not null;
    perform public.record_bluesky_login_failure(p_account_id, v_message, true, null, p_now);
    return jsonb_build_object('saved', false, 'reason', 'did_mismatch', 'message', v_message);
  end if;
  if v_account.verified_at is null then
    if p_how <> 'created' then
      -- Only createSession with the app password proves the identity.
      v_message := 'the session was not created with this account''s app password';
      update public.bluesky_sessions s
         set access_jwt = null, refresh_jwt = null, creating_by = null, creating_until = null, updated_at = p_now
       where s.account_id = p_account_id;
      return jsonb_build_object('saved', false, 'reason', 'unverified', 'message', v_message);
    end if;
    v_verified := public.mark_account_verified(p_account_id, v_did, p_now);
    if not (v_verified ->> 'verified')::boolean then
      perform public.record_bluesky_login_failure(p_account_id, v_verified ->> 'message', true, null, p_now);
      return jsonb_build_object('saved', false, 'reason', v_verified ->> 'reason', 'message', v_verified ->> 'message');
    end if;
  end if;
  return public.save_bluesky_session_unchecked(p_account_id, p_session, p_how, p_now)
         || jsonb_build_object('verified', true);
end;
$$;

-- What a worker item must not touch -----------------------------------------------------

-- Why the service must not act on this queue item (p_item: the row as
-- jsonb), or null. Owners are compared with the item's user_id.
create function public.queue_item_refusal(p_queue text, p_item jsonb) returns text
language plpgsql stable
set search_path = ''
as $$
declare
  v_user uuid := (p_item ->> 'user_id')::uuid;
  v_owner uuid;
  v_account public.connected_accounts;
  v_account_id uuid;
  v_ref uuid;
  v_ok boolean;
begin
  if p_queue = 'scheduled_posts' then
    v_account_id := public.scheduled_post_account_id(jsonb_populate_record(null::public.scheduled_posts, p_item));
    if v_account_id is not null then
      select * into v_account from public.connected_accounts ca where ca.id = v_account_id;
      if v_account.id is not null and v_account.user_id is distinct from v_user then
        return 'refused: the account belongs to another user';
      end if;
      if v_account.id is not null and v_account.verified_at is null and v_account.platform <> 'bluesky' then
        return format('refused: the %s account %s is not verified (connect it again through Outpost)',
                      v_account.platform, v_account.username);
      end if;
    end if;
    v_ref := (p_item ->> 'draft_id')::uuid;
    if v_ref is not null then
      select d.user_id into v_owner from public.drafts d where d.id = v_ref;
      if found and v_owner is distinct from v_user then
        return 'refused: the draft belongs to another user';
      end if;
    end if;
    v_ref := (p_item ->> 'adaptation_id')::uuid;
    if v_ref is not null then
      select c.user_id into v_owner from public.content_adaptations c where c.id = v_ref;
      if found and v_owner is distinct from v_user then
        return 'refused: the adaptation belongs to another user';
      end if;
    end if;
    if exists (select 1
                 from jsonb_array_elements(case when jsonb_typeof(p_item -> 'media') = 'array'
                                                then p_item -> 'media' else '[]'::jsonb end) m(item)
                 join public.ai_assets a
                   on a.id = case when (m.item ->> 'ai_asset_id') ~* '^[0-9a-f-]{36}$'
                                  then (m.item ->> 'ai_asset_id')::uuid end
                where a.user_id is distinct from v_user) then
      return 'refused: an image belongs to another user';
    end if;
  elsif p_queue = 'generations' then
    v_ref := (p_item ->> 'lora_id')::uuid;
    if v_ref is not null then
      select l.user_id into v_owner from public.user_loras l where l.id = v_ref;
      if found and v_owner is distinct from v_user then
        return 'refused: the LoRA belongs to another user';
      end if;
    end if;
    v_ref := (p_item ->> 'workspace_id')::uuid;
    if v_ref is not null then
      select exists (select 1 from public.workspace_members m where m.workspace_id = v_ref and m.user_id = v_user)
             or exists (select 1 from public.workspaces w where w.id = v_ref and w.created_by = v_user)
        into v_ok;
      if not v_ok then
        return 'refused: the user is not a member of the generation''s workspace';
      end if;
    end if;
  elsif p_queue in ('ingested_items', 'ingested_posts') then
    v_account_id := (p_item ->> 'account_id')::uuid;
    if v_account_id is not null and v_user is not null then
      select ca.user_id into v_owner from public.connected_accounts ca where ca.id = v_account_id;
      if found and v_owner is distinct from v_user then
        return 'refused: the account belongs to another user';
      end if;
    end if;
    if p_queue = 'ingested_posts' then
      v_ref := (p_item ->> 'ingested_item_id')::uuid;
      if v_ref is not null and v_user is not null then
        select i.user_id into v_owner from public.ingested_items i where i.id = v_ref;
        if found and v_owner is not null and v_owner is distinct from v_user then
          return 'refused: the ingested item belongs to another user';
        end if;
      end if;
    end if;
  elsif p_queue = 'media_downloads' then
    v_ref := (p_item ->> 'ingested_post_id')::uuid;
    if v_ref is not null then
      select p.user_id into v_owner from public.ingested_posts p where p.id = v_ref;
      if found and v_owner is not null and v_owner is distinct from v_user then
        return 'refused: the archived post belongs to another user';
      end if;
    end if;
  end if;
  return null;
end
$$;

-- Paid work ---------------------------------------------------------------------------------

-- Credits per item, by queue and kind (generations.action, ai_jobs.kind);
-- kind '*' is the queue's default. Operators change prices here.
create table public.credit_prices (
  queue text not null,
  kind text not null,
  credits integer not null,
  primary key (queue, kind),
  constraint credit_price_queue_is_paid check (queue in ('generations', 'ai_jobs')),
  constraint credit_price_not_negative check (credits >= 0)
);
comment on table public.credit_prices is
  'Credits charged per generation (by action) or AI job (by kind) when first dispatched; kind * is the default.';
insert into public.credit_prices (queue, kind, credits) values
  ('generations', '*', 1),
  ('ai_jobs', '*', 1);
alter table public.credit_prices enable row level security;
create policy "Signed-in users can read credit prices"
  on public.credit_prices for select to authenticated using (true);
revoke insert, update, delete, truncate on public.credit_prices from anon, authenticated;
grant select, insert, update, delete on public.credit_prices to service_role;

-- One row per charged item: the primary key makes a second charge of the
-- same item impossible, whatever retries and re-claims happen.
create table public.credit_charges (
  queue text not null,
  item_id uuid not null,
  user_id uuid not null references public.users (id) on delete cascade,
  credits integer not null,
  balance_after integer not null,
  charged_at timestamptz not null default now(),
  primary key (queue, item_id),
  constraint credit_charge_queue_is_paid check (queue in ('generations', 'ai_jobs')),
  constraint credit_charge_not_negative check (credits >= 0)
);
comment on table public.credit_charges is
  'Credits taken from users.credits for one generation or AI job, once, when it was first dispatched.';
create index credit_charges_user_idx on public.credit_charges (user_id, charged_at desc);
alter table public.credit_charges enable row level security;
create policy "Users can read their own credit charges"
  on public.credit_charges for select to authenticated using (auth.uid() = user_id);
revoke insert, update, delete, truncate on public.credit_charges from anon, authenticated;
grant select, insert, update, delete on public.credit_charges to service_role;

-- Charges a claimed generation or AI job once (its first dispatch), in the
-- claim's transaction: null when charged now or before (or free), else the
-- refusal ("insufficient credits: ...").
create function public.charge_queue_item(p_queue text, p_item jsonb, p_now timestamptz default now())
returns text
language plpgsql
set search_path = ''
as $$
declare
  v_user uuid := (p_item ->> 'user_id')::uuid;
  v_id uuid := (p_item ->> 'id')::uuid;
  v_kind text := case p_queue when 'generations' then p_item ->> 'action' else p_item ->> 'kind' end;
  v_price integer;
  v_balance integer;
begin
  if p_queue not in ('generations', 'ai_jobs') then
    return null;
  end if;
  if exists (select 1 from public.credit_charges c where c.queue = p_queue and c.item_id = v_id) then
    return null;
  end if;
  select p.credits into v_price
    from public.credit_prices p
   where p.queue = p_queue and p.kind in (coalesce(v_kind, '*'), '*')
   order by (p.kind = '*')
   limit 1;
  v_price := coalesce(v_price, 0);
  update public.users u
     set credits = u.credits - v_price
   where u.id = v_user and u.credits >= v_price
  returning u.credits into v_balance;
  if not found then
    select u.credits into v_balance from public.users u where u.id = v_user;
    return format('insufficient credits: %s needed, %s left', v_price, coalesce(v_balance, 0));
  end if;
  insert into public.credit_charges (queue, item_id, user_id, credits, balance_after, charged_at)
  values (p_queue, v_id, v_user, v_price, v_balance, p_now);
  return null;
end
$$;

-- Dead-letters every claimed item the service must not act on (another
-- user's reference, or no credits left), with the reason as its error and
-- `failure` event, charges the paid ones, and answers the rest.
create function public.queue_screen_claimed(p_queue text, p_items jsonb, p_now timestamptz default now())
returns jsonb
language plpgsql
set search_path = ''
as $$
declare
  v_item jsonb;
  v_reason text;
  v_kept jsonb := '[]'::jsonb;
begin
  for v_item in select e from jsonb_array_elements(coalesce(p_items, '[]'::jsonb)) e loop
    v_reason := public.queue_item_refusal(p_queue, v_item);
    if v_reason is null then
      v_reason := public.charge_queue_item(p_queue, v_item, p_now);
    end if;
    if v_reason is null then
      v_kept := v_kept || jsonb_build_array(v_item);
    else
      perform public.queue_fail(p_queue, (v_item ->> 'id')::uuid, (v_item ->> 'lease_token')::bigint,
                                v_reason, true, null, p_now);
    end if;
  end loop;
  return v_kept;
end
$$;

-- Claims with the screen ----------------------------------------------------------------

alter function public.queue_claim(text, text, integer, integer, timestamptz) rename to queue_claim_unchecked;
alter function public.claim_next_scheduled_posts(text, integer, integer, timestamptz)
  rename to claim_next_scheduled_posts_unchecked;
alter function public.claim_due_scheduled_posts(text, integer, integer, timestamptz)
  rename to claim_due_scheduled_posts_unchecked;
alter function public.claim_next_archive_items(text, integer, integer, timestamptz)
  rename to claim_next_archive_items_unchecked;

-- Every claim_next_<queue> (0009's wrappers call public.queue_claim by name).
create function public.queue_claim(
  p_queue text,
  p_worker_id text,
  p_lease_seconds integer,
  p_max_items integer,
  p_now timestamptz default now()
) returns jsonb
language sql volatile
set search_path = ''
as $$
  select public.queue_screen_claimed(p_queue,
    public.queue_claim_unchecked(p_queue, p_worker_id, p_lease_seconds, p_max_items, p_now), p_now)
$$;

create function public.claim_next_scheduled_posts(
  p_worker_id text, p_lease_seconds integer, p_max_items integer, p_now timestamptz default now())
returns jsonb
language sql volatile
set search_path = ''
as $$
  select public.queue_screen_claimed('scheduled_posts',
    public.claim_next_scheduled_posts_unchecked(p_worker_id, p_lease_seconds, p_max_items, p_now), p_now)
$$;

create function public.claim_next_archive_items(
  p_worker_id text, p_lease_seconds integer, p_max_items integer, p_now timestamptz default now())
returns jsonb
language sql volatile
set search_path = ''
as $$
  select public.queue_screen_claimed('ingested_items',
    public.claim_next_archive_items_unchecked(p_worker_id, p_lease_seconds, p_max_items, p_now), p_now)
$$;

-- A refused post frees its account's lane, so the claim goes on (a few
-- rounds at most) until it has p_max_items good posts or nothing is due.
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
  v_claimed jsonb;
  v_kept jsonb;
  v_items jsonb := '[]'::jsonb;
  v_round integer := 0;
begin
  loop
    v_claimed := public.claim_due_scheduled_posts_unchecked(
      p_worker_id, p_lease_seconds, p_max_items - jsonb_array_length(v_items), p_now);
    v_kept := public.queue_screen_claimed('scheduled_posts', v_claimed, p_now);
    v_items := v_items || v_kept;
    v_round := v_round + 1;
    exit when jsonb_array_length(v_kept) = jsonb_array_length(v_claimed)
           or jsonb_array_length(v_items) >= p_max_items
           or v_round >= 10;
  end loop;
  return v_items;
end
$$;
comment on function public.claim_due_scheduled_posts(text, integer, integer, timestamptz) is
  'claim_next_scheduled_posts with publishing rules (one post per account in flight, oldest first, holds); posts naming another user''s account/draft/adaptation/image or an unverified account are dead-lettered with the reason.';

-- Begin refuses too (the row may have changed since the claim) ----------------------------

alter function public.begin_scheduled_post_publish(uuid, bigint, integer, timestamptz)
  rename to begin_scheduled_post_publish_unchecked;

-- As 0014's begin, but a post the service must not publish (another user's
-- account, draft, adaptation or image; an unverified account) is failed at
-- once with the reason (a `failure` event) and the answer is
-- {"accepted": false, "reason": "refused", "refusal", "status": "failed"}:
-- nothing is handed to a platform.
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
  v_reason text;
  v_failed jsonb;
begin
  if v_locked is not null then
    v_reason := public.queue_item_refusal('scheduled_posts', v_locked);
    if v_reason is not null then
      v_failed := public.queue_fail('scheduled_posts', p_id, p_lease_token, v_reason, true, null, p_now);
      update public.post_events e
         set detail = e.detail || jsonb_build_object('stage', 'begin', 'refused', true)
       where e.id = (select e2.id from public.post_events e2
                      where e2.scheduled_post_id = p_id and e2.type = 'failure'
                      order by e2.created_at desc, e2.id desc limit 1);
      return jsonb_build_object('accepted', false, 'reason', 'refused', 'refusal', v_reason,
                                'status', v_failed ->> 'item_status');
    end if;
  end if;
  return public.begin_scheduled_post_publish_unchecked(p_id, p_lease_token, p_lease_seconds, p_now);
end
$$;

-- Replicate results go to exactly one generation -----------------------------------------

-- Live generations never share a prediction id; earlier shared ones are failed.
update public.generations g
   set status = 'failed',
       error = 'refused: replicate_prediction_id shared by several generations',
       last_error = 'refused: replicate_prediction_id shared by several generations',
       dead_lettered_at = now(),
       locked_at = null, locked_by = null, lease_expires_at = null
 where g.status in ('pending', 'starting', 'processing')
   and g.replicate_prediction_id is not null
   and exists (select 1 from public.generations o
                where o.replicate_prediction_id = g.replicate_prediction_id
                  and o.status in ('pending', 'starting', 'processing')
                  and o.id <> g.id);
create unique index generations_live_prediction_id_key
  on public.generations (replicate_prediction_id)
  where replicate_prediction_id is not null and status in ('pending', 'starting', 'processing');

alter function public.record_generation_result(text, jsonb, uuid, timestamptz)
  rename to record_generation_result_unchecked;

-- 0009's record_generation_result, except that the prediction id must name
-- exactly one generation (any status): {"applied": false, "reason":
-- "ambiguous_prediction_id", "count"} when several carry it, and
-- "prediction_mismatch" when p_generation_id carries another one.
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
  v_ids uuid[];
  v_gen public.generations;
begin
  if p_prediction_id is not null then
    select coalesce(array_agg(g.id order by g.id), '{}') into v_ids
      from public.generations g where g.replicate_prediction_id = p_prediction_id;
    if cardinality(v_ids) > 1 then
      return jsonb_build_object('applied', false, 'reason', 'ambiguous_prediction_id',
                                'count', cardinality(v_ids));
    end if;
  end if;
  if p_generation_id is not null then
    select * into v_gen from public.generations g where g.id = p_generation_id;
    if found and v_gen.replicate_prediction_id is not null and p_prediction_id is not null
       and v_gen.replicate_prediction_id <> p_prediction_id then
      return jsonb_build_object('applied', false, 'reason', 'prediction_mismatch', 'id', v_gen.id);
    end if;
    if found and p_prediction_id is not null and cardinality(v_ids) = 1 and v_ids[1] <> p_generation_id then
      return jsonb_build_object('applied', false, 'reason', 'prediction_mismatch', 'id', v_gen.id);
    end if;
    return public.record_generation_result_unchecked(p_prediction_id, p_result, p_generation_id, p_now);
  end if;
  if cardinality(v_ids) = 0 then
    return jsonb_build_object('applied', false, 'reason', 'not_found');
  end if;
  return public.record_generation_result_unchecked(p_prediction_id, p_result, v_ids[1], p_now);
end
$$;

-- Grants: the service role only --------------------------------------------------------------

revoke all on function public.mark_account_verified(uuid, text, timestamptz) from public, anon, authenticated;
revoke all on function public.archive_platform_posts_unchecked(uuid, uuid, jsonb, text, boolean, timestamptz) from public, anon, authenticated;
revoke all on function public.archive_platform_posts(uuid, uuid, jsonb, text, boolean, timestamptz) from public, anon, authenticated;
revoke all on function public.bluesky_session_for_unchecked(uuid, text, timestamptz) from public, anon, authenticated;
revoke all on function public.bluesky_session_for(uuid, text, timestamptz) from public, anon, authenticated;
revoke all on function public.save_bluesky_session_unchecked(uuid, jsonb, text, timestamptz) from public, anon, authenticated;
revoke all on function public.save_bluesky_session(uuid, jsonb, text, timestamptz) from public, anon, authenticated;
revoke all on function public.queue_item_refusal(text, jsonb) from public, anon, authenticated;
revoke all on function public.charge_queue_item(text, jsonb, timestamptz) from public, anon, authenticated;
revoke all on function public.queue_screen_claimed(text, jsonb, timestamptz) from public, anon, authenticated;
revoke all on function public.queue_claim_unchecked(text, text, integer, integer, timestamptz) from public, anon, authenticated;
revoke all on function public.queue_claim(text, text, integer, integer, timestamptz) from public, anon, authenticated;
revoke all on function public.claim_next_scheduled_posts_unchecked(text, integer, integer, timestamptz) from public, anon, authenticated;
revoke all on function public.claim_next_scheduled_posts(text, integer, integer, timestamptz) from public, anon, authenticated;
revoke all on function public.claim_due_scheduled_posts_unchecked(text, integer, integer, timestamptz) from public, anon, authenticated;
revoke all on function public.claim_due_scheduled_posts(text, integer, integer, timestamptz) from public, anon, authenticated;
revoke all on function public.claim_next_archive_items_unchecked(text, integer, integer, timestamptz) from public, anon, authenticated;
revoke all on function public.claim_next_archive_items(text, integer, integer, timestamptz) from public, anon, authenticated;
revoke all on function public.begin_scheduled_post_publish_unchecked(uuid, bigint, integer, timestamptz) from public, anon, authenticated;
revoke all on function public.begin_scheduled_post_publish(uuid, bigint, integer, timestamptz) from public, anon, authenticated;
revoke all on function public.record_generation_result_unchecked(text, jsonb, uuid, timestamptz) from public, anon, authenticated;
revoke all on function public.record_generation_result(text, jsonb, uuid, timestamptz) from public, anon, authenticated;

grant execute on function public.mark_account_verified(uuid, text, timestamptz) to service_role;
grant execute on function public.archive_platform_posts_unchecked(uuid, uuid, jsonb, text, boolean, timestamptz) to service_role;
grant execute on function public.archive_platform_posts(uuid, uuid, jsonb, text, boolean, timestamptz) to service_role;
grant execute on function public.bluesky_session_for_unchecked(uuid, text, timestamptz) to service_role;
grant execute on function public.bluesky_session_for(uuid, text, timestamptz) to service_role;
grant execute on function public.save_bluesky_session_unchecked(uuid, jsonb, text, timestamptz) to service_role;
grant execute on function public.save_bluesky_session(uuid, jsonb, text, timestamptz) to service_role;
grant execute on function public.queue_item_refusal(text, jsonb) to service_role;
grant execute on function public.charge_queue_item(text, jsonb, timestamptz) to service_role;
grant execute on function public.queue_screen_claimed(text, jsonb, timestamptz) to service_role;
grant execute on function public.queue_claim_unchecked(text, text, integer, integer, timestamptz) to service_role;
grant execute on function public.queue_claim(text, text, integer, integer, timestamptz) to service_role;
grant execute on function public.claim_next_scheduled_posts_unchecked(text, integer, integer, timestamptz) to service_role;
grant execute on function public.claim_next_scheduled_posts(text, integer, integer, timestamptz) to service_role;
grant execute on function public.claim_due_scheduled_posts_unchecked(text, integer, integer, timestamptz) to service_role;
grant execute on function public.claim_due_scheduled_posts(text, integer, integer, timestamptz) to service_role;
grant execute on function public.claim_next_archive_items_unchecked(text, integer, integer, timestamptz) to service_role;
grant execute on function public.claim_next_archive_items(text, integer, integer, timestamptz) to service_role;
grant execute on function public.begin_scheduled_post_publish_unchecked(uuid, bigint, integer, timestamptz) to service_role;
grant execute on function public.begin_scheduled_post_publish(uuid, bigint, integer, timestamptz) to service_role;
grant execute on function public.record_generation_result_unchecked(text, jsonb, uuid, timestamptz) to service_role;
grant execute on function public.record_generation_result(text, jsonb, uuid, timestamptz) to service_role;
