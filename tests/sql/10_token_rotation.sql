-- 10_token_rotation.sql: token-rotation's SQL (issue 14, migration 0022):
-- which accounts are due per platform, one lease per account, the finish
-- call fenced by the lease token (a stale worker saves nothing), transient
-- failures kept with backoff, refusals expire and notify once, key rotation
-- claims old-key tokens. Times are in 2032 (injected p_now).
begin;
set local client_min_messages = warning;
create extension if not exists pgtap;

create function pg_temp.t(p_sec text) returns timestamptz
language sql immutable as $$ select '2032-05-01 12:00:00+00'::timestamptz + p_sec::interval $$;
create function pg_temp.a(p_n int) returns uuid
language sql immutable as $$ select ('00000000-0000-4000-8000-0000001000' || lpad(p_n::text, 2, '0'))::uuid $$;

select plan(39);

-- What the claim would do with account n at t(p_at), without claiming it.
create function pg_temp.action(p_n int, p_at text) returns text
language sql stable as $$
  select public.token_rotation_action(ca, s.reconnect_notified_for, 'k2', pg_temp.t(p_at))
    from public.connected_accounts ca
    left join public.account_token_rotation s on s.account_id = ca.id
   where ca.id = pg_temp.a(p_n)
$$;

insert into auth.users (id, email) values
  ('00000000-0000-4000-8000-0000001001a1', 'rotation-owner@example.test');

-- n, platform, expires in, refresh token?, status, verified?, key id
create temp table fixtures(n int, platform public.platform_enum, expires text, has_refresh boolean,
                           status public.account_status_enum, verified boolean, key_id text, expect text);
insert into fixtures values
  (1, 'strava', '30 minutes', true, 'active', true, 'k2', 'refresh'),
  (2, 'strava', '3 hours', true, 'active', true, 'k2', null),
  (3, 'x', '20 minutes', true, 'active', true, 'k2', 'refresh'),
  (4, 'x', '1 hour', true, 'active', true, 'k2', null),
  (5, 'instagram', '40 days', false, 'active', true, 'k2', 'refresh'),
  (6, 'instagram', '59 days 12 hours', false, 'active', true, 'k2', null),
  (7, 'instagram', '-1 hour', false, 'active', true, 'k2', 'expire'),
  (8, 'linkedin', '5 days', true, 'active', true, 'k2', 'refresh'),
  (9, 'linkedin', '5 days', false, 'active', true, 'k2', 'notify'),
  (10, 'linkedin', '30 days', false, 'active', true, 'k2', null),
  (11, 'strava', '10 minutes', true, 'active', false, 'k2', null),
  (12, 'strava', '10 minutes', true, 'token_expired', true, 'k2', null),
  (13, 'strava', '5 hours', true, 'active', true, 'k0', 'reseal'),
  (14, 'x', '-3 hours', false, 'active', true, 'k2', 'expire');

insert into public.connected_accounts (id, user_id, platform, platform_user_id, username,
                                       access_token, refresh_token, token_key_id, token_expires_at, status)
select pg_temp.a(n), '00000000-0000-4000-8000-0000001001a1', platform, 'pu' || n, 'user' || n,
       'v1.' || key_id || '.access' || n, case when has_refresh then 'v1.' || key_id || '.refresh' || n end,
       key_id, pg_temp.t(expires), status
  from fixtures;
update public.connected_accounts ca set verified_at = pg_temp.t('-10 days')
  from fixtures f where ca.id = pg_temp.a(f.n) and f.verified;

-- Due accounts and their actions ---------------------------------------------------------------
create temp table claim1 as
  select x from jsonb_array_elements(public.claim_token_rotations('w1', 100, 60, 'k2', pg_temp.t('0'))) x;
select set_eq(
  $$select (x->>'account_id')::uuid, x->>'action' from claim1$$,
  $$select pg_temp.a(n), expect from fixtures where expect is not null$$,
  'each platform''s margin: Strava 1 h, X 30 min, Instagram older than 7 days (not expired), LinkedIn 7 days (refresh or notify), expired without refresh expires, old keys reseal; unverified and token_expired accounts wait');
select ok((select bool_and(x->>'lease_token' is not null and x->>'access_token' like 'v1.%') from claim1),
          'claims carry a lease token and the sealed tokens');
select is(public.claim_token_rotations('w2', 100, 60, 'k2', pg_temp.t('1 second')), '[]'::jsonb,
          'a leased account is not claimed by a second worker');

-- Refreshed: saved and released in one call, fenced by the lease token ------------------------
select is(public.finish_token_rotation(pg_temp.a(1), 0,
            '{"outcome":"refreshed","access_token":"v1.k2.new","token_key_id":"k2","previous_access_token":"v1.k2.access1"}',
            pg_temp.t('2 seconds'))->>'reason', 'lease_lost', 'a wrong lease token saves nothing');
select is(public.finish_token_rotation(pg_temp.a(1), (select (x->>'lease_token')::bigint from claim1 where x->>'account_id' = pg_temp.a(1)::text),
            jsonb_build_object('outcome', 'refreshed', 'access_token', 'v1.k2.new-access1', 'refresh_token', 'v1.k2.new-refresh1',
                               'token_key_id', 'k2', 'token_expires_at', pg_temp.t('6 hours'), 'scope', 'read,activity:read_all',
                               'previous_access_token', 'v1.k2.access1'),
            pg_temp.t('2 seconds'))->>'saved', 'true', 'the refreshed tokens are saved');
select is((select array[access_token, refresh_token, token_key_id, scope] from public.connected_accounts where id = pg_temp.a(1)),
          array['v1.k2.new-access1', 'v1.k2.new-refresh1', 'k2', 'read,activity:read_all'], 'the new sealed pair, key id and scope are stored');
select is((select token_expires_at from public.connected_accounts where id = pg_temp.a(1)), pg_temp.t('6 hours'), 'with the new expiry');
select is((select lease_token from public.account_token_rotation where account_id = pg_temp.a(1)), null, 'and the lease released');
select is(public.finish_token_rotation(pg_temp.a(1), (select (x->>'lease_token')::bigint from claim1 where x->>'account_id' = pg_temp.a(1)::text),
            '{"outcome":"refreshed","access_token":"v1.k2.again","token_key_id":"k2","previous_access_token":"v1.k2.new-access1"}',
            pg_temp.t('3 seconds'))->>'reason', 'lease_lost', 'a second finish with the same lease saves nothing');
select is((select access_token from public.connected_accounts where id = pg_temp.a(1)), 'v1.k2.new-access1', 'the saved token stands');

-- A stale worker: its lease ran out and another claimed ------------------------------------------
create temp table claim2 as
  select x from jsonb_array_elements(public.claim_token_rotations('w2', 100, 60, 'k2', pg_temp.t('2 minutes'))) x;
select ok(exists (select 1 from claim2 where x->>'account_id' = pg_temp.a(3)::text), 'an account whose lease ran out is claimed again');
select ok((select (a.x->>'lease_token')::bigint > (b.x->>'lease_token')::bigint from claim2 a, claim1 b
            where a.x->>'account_id' = pg_temp.a(3)::text and b.x->>'account_id' = pg_temp.a(3)::text), 'with a newer lease token');
select is(public.finish_token_rotation(pg_temp.a(3), (select (x->>'lease_token')::bigint from claim1 where x->>'account_id' = pg_temp.a(3)::text),
            '{"outcome":"refreshed","access_token":"v1.k2.stale","refresh_token":"v1.k2.stale-r","token_key_id":"k2","previous_access_token":"v1.k2.access3"}',
            pg_temp.t('2 minutes 1 second'))->>'reason', 'lease_lost', 'the stale worker cannot overwrite');
select is((select access_token from public.connected_accounts where id = pg_temp.a(3)), 'v1.k2.access3', 'the tokens are untouched');

-- Refused: token_expired, one notification, never claimed again ----------------------------------
select is(public.finish_token_rotation(pg_temp.a(14), (select (x->>'lease_token')::bigint from claim2 where x->>'account_id' = pg_temp.a(14)::text),
            '{"outcome":"refused","error":"X token refresh failed with 400: invalid_grant","previous_access_token":"v1.k2.access14"}',
            pg_temp.t('2 minutes'))->>'saved', 'true', 'a refusal is recorded');
select is((select status::text from public.connected_accounts where id = pg_temp.a(14)), 'token_expired', 'the account is token_expired');
select is((select title from public.notifications where data->>'account_id' = pg_temp.a(14)::text),
          'Reconnect your X account', 'its user is told to reconnect');
select is(pg_temp.action(14, '1 day'), null, 'and it is not retried');

-- Notified (LinkedIn without refresh token): once per token ---------------------------------------
select is(public.finish_token_rotation(pg_temp.a(9), (select (x->>'lease_token')::bigint from claim2 where x->>'account_id' = pg_temp.a(9)::text),
            '{"outcome":"notified"}', pg_temp.t('2 minutes'))->>'saved', 'true', 'the reconnect notice is recorded');
select is((select count(*)::int from public.notifications where data->>'account_id' = pg_temp.a(9)::text and type = 'account_reconnect_soon'), 1,
          'one reconnect-soon notification');
select is((select status::text from public.connected_accounts where id = pg_temp.a(9)), 'active', 'the account stays active until expiry');
select is(pg_temp.action(9, '2 days'), null, 'and is not notified twice for the same token');

-- Reseal and a reconnect meanwhile --------------------------------------------------------------
update public.connected_accounts set access_token = 'v1.k2.reconnected', token_key_id = 'k2' where id = pg_temp.a(13);
select is(public.finish_token_rotation(pg_temp.a(13), (select (x->>'lease_token')::bigint from claim2 where x->>'account_id' = pg_temp.a(13)::text),
            '{"outcome":"resealed","access_token":"v1.k2.resealed","token_key_id":"k2","previous_access_token":"v1.k0.access13"}',
            pg_temp.t('2 minutes'))->>'reason', 'tokens_changed', 'tokens stored by a reconnect meanwhile are kept');
select is((select access_token from public.connected_accounts where id = pg_temp.a(13)), 'v1.k2.reconnected', 'the reconnect''s token stands');

-- Transient: tokens kept, backoff, account active -----------------------------------------------
select is(public.finish_token_rotation(pg_temp.a(3), (select (x->>'lease_token')::bigint from claim2 where x->>'account_id' = pg_temp.a(3)::text),
            '{"outcome":"transient","error":"X token refresh failed with 503","retry_after_seconds":600}',
            pg_temp.t('2 minutes 2 seconds'))->>'saved', 'true', 'a transient failure is recorded');
select is((select array[status::text, access_token, refresh_token] from public.connected_accounts where id = pg_temp.a(3)),
          array['active', 'v1.k2.access3', 'v1.k2.refresh3'], 'the account stays active with its tokens');
select is((select attempts from public.account_token_rotation where account_id = pg_temp.a(3)), 1, 'one attempt counted');
select is((select next_attempt_at from public.account_token_rotation where account_id = pg_temp.a(3)), pg_temp.t('12 minutes 2 seconds'),
          'retried after the platform''s Retry-After (longer than the first 60 s backoff)');
select ok(not exists (select 1 from jsonb_array_elements(public.claim_token_rotations('w3', 100, 60, 'k2', pg_temp.t('10 minutes'))) x
                       where x->>'account_id' = pg_temp.a(3)::text), 'not claimed during its backoff');
create temp table claim3 as
  select x from jsonb_array_elements(public.claim_token_rotations('w3', 100, 60, 'k2', pg_temp.t('13 minutes'))) x;
select ok(exists (select 1 from claim3 where x->>'account_id' = pg_temp.a(3)::text), 'claimed again after it');
select is(public.finish_token_rotation(pg_temp.a(3), (select (x->>'lease_token')::bigint from claim3 where x->>'account_id' = pg_temp.a(3)::text),
            '{"outcome":"transient","error":"timed out"}', pg_temp.t('13 minutes'))->>'saved', 'true', 'a second transient failure');
select is((select next_attempt_at from public.account_token_rotation where account_id = pg_temp.a(3)), pg_temp.t('15 minutes'),
          'backs off 120 s (doubling)');

-- On demand: one account, now -------------------------------------------------------------------
select is(public.claim_token_refresh(pg_temp.a(2), 'ingest', 60, pg_temp.t('3 minutes'))->>'claimed', 'true',
          'ingest claims an account that is not due yet');
select is(public.claim_token_refresh(pg_temp.a(2), 'publish', 60, pg_temp.t('3 minutes'))->>'reason', 'leased',
          'a second refresher is told it is leased');
select is(public.claim_token_refresh(pg_temp.a(11), 'ingest', 60, pg_temp.t('3 minutes'))->>'reason', 'not_active',
          'an unverified account is not refreshed');
select throws_ok($$select public.finish_token_rotation('00000000-0000-4000-8000-000000100002', 1, '{"outcome":"bogus"}')$$,
                 '22023', null, 'an unknown outcome is refused');

-- Service role only -----------------------------------------------------------------------------
select ok(not has_function_privilege('authenticated', 'public.claim_token_rotations(text, integer, integer, text, timestamptz)', 'execute'),
          'clients cannot claim');
select ok(not has_function_privilege('authenticated', 'public.finish_token_rotation(uuid, bigint, jsonb, timestamptz)', 'execute'),
          'clients cannot finish');
select ok(not has_table_privilege('authenticated', 'public.account_token_rotation', 'select'),
          'clients cannot read rotation state');

select * from finish();
rollback;
