-- 09_connect.sql: the SQL side of connecting accounts (issue 14, migration
-- 0021): connect states are service-only and spent once; the callback's one
-- write stores a verified account or nothing; disconnect drops credentials
-- and keeps the account. Times are injected (p_now in 2030).
begin;
set local client_min_messages = warning;
create extension if not exists pgtap;

select plan(27);

create function pg_temp.t(p_min text) returns timestamptz
language sql immutable as $$ select '2030-06-01 00:00:00+00'::timestamptz + p_min::interval $$;
-- one SQL text as an authenticated user; its sqlstate, or 'ok'
create function pg_temp.as_user(p_uid uuid, p_sql text) returns text
language plpgsql as $$
begin
  perform set_config('request.jwt.claims', json_build_object('sub', p_uid, 'role', 'authenticated')::text, true);
  set local role authenticated;
  begin
    execute p_sql;
  exception when others then
    reset role;
    perform set_config('request.jwt.claims', '', true);
    return sqlstate;
  end;
  reset role;
  perform set_config('request.jwt.claims', '', true);
  return 'ok';
end
$$;

insert into auth.users (id, email) values
  ('00000000-0000-0000-0000-0000000000a1', 'alice@example.test'),
  ('00000000-0000-0000-0000-0000000000b2', 'bob@example.test');

-- Tables and grants -----------------------------------------------------------
select ok((select relrowsecurity from pg_class where oid = 'public.connect_states'::regclass),
          'connect_states has RLS on');
select is(pg_temp.as_user('00000000-0000-0000-0000-0000000000a1',
          'select * from public.connect_states'), '42501',
          'an authenticated user cannot read connect_states');
select is(pg_temp.as_user('00000000-0000-0000-0000-0000000000a1',
          $$select public.begin_connect_state('00000000-0000-0000-0000-0000000000a1', 'x', 'v', 'https://r', 'https://cb', 600)$$),
          '42501', 'users cannot start connects in SQL (the component does)');
select is(pg_temp.as_user('00000000-0000-0000-0000-0000000000a1',
          $$select public.store_connected_account('00000000-0000-0000-0000-0000000000a1', 'x', '{"platform_user_id":"1"}')$$),
          '42501', 'users cannot store verified accounts');
select is(pg_temp.as_user('00000000-0000-0000-0000-0000000000a1',
          $$select public.disconnect_account('00000000-0000-0000-0000-0000000000a1', gen_random_uuid())$$),
          '42501', 'users cannot call disconnect_account directly');

-- State: single use, expiry, binding ------------------------------------------
select lives_ok($$
  select set_config('c.s1', (public.begin_connect_state('00000000-0000-0000-0000-0000000000a1', 'x',
    'v1.k1.sealed', 'https://app.example/settings', 'https://outpost.example/connect/x/callback', 300,
    pg_temp.t('0 min'))->>'id'), true)
$$, 'begin_connect_state makes a row');
select is((select expires_at from public.connect_states where id = current_setting('c.s1')::uuid),
          pg_temp.t('5 min'), 'it expires after the given lifetime');
select is(public.consume_connect_state(current_setting('c.s1')::uuid, '00000000-0000-0000-0000-0000000000b2', 'x', pg_temp.t('1 min'))->>'reason',
          'mismatch', 'another user cannot spend it');
select is(public.consume_connect_state(current_setting('c.s1')::uuid, '00000000-0000-0000-0000-0000000000a1', 'strava', pg_temp.t('1 min'))->>'reason',
          'mismatch', 'nor another platform''s callback');
select is(public.consume_connect_state(current_setting('c.s1')::uuid, '00000000-0000-0000-0000-0000000000a1', 'x', pg_temp.t('1 min')),
          '{"ok": true, "code_verifier": "v1.k1.sealed", "return_url": "https://app.example/settings", "redirect_uri": "https://outpost.example/connect/x/callback"}'::jsonb,
          'its user and platform spend it once, with the sealed verifier');
select is(public.consume_connect_state(current_setting('c.s1')::uuid, '00000000-0000-0000-0000-0000000000a1', 'x', pg_temp.t('2 min'))->>'reason',
          'replayed', 'a second use is a replay');
select lives_ok($$
  select set_config('c.s2', (public.begin_connect_state('00000000-0000-0000-0000-0000000000a1', 'strava',
    'v1.k1.x', 'https://app.example/settings', 'https://cb', 300, pg_temp.t('0 min'))->>'id'), true)
$$, 'a second connect');
select is(public.consume_connect_state(current_setting('c.s2')::uuid, '00000000-0000-0000-0000-0000000000a1', 'strava', pg_temp.t('6 min'))->>'reason',
          'expired', 'after its lifetime it is expired (and spent)');
select is(public.consume_connect_state(gen_random_uuid(), '00000000-0000-0000-0000-0000000000a1', 'x')->>'reason',
          'unknown', 'an unknown state is unknown');
select throws_ok($$select public.begin_connect_state('00000000-0000-0000-0000-0000000000a1', 'bluesky', 'v', 'r', 'c', 300)$$,
          '23514', null, 'only the four OAuth platforms have connect states');

-- Store: identity from the platform, verified, or nothing -----------------------
select is((public.store_connected_account('00000000-0000-0000-0000-0000000000a1', 'x',
  '{"platform_user_id": "2244994945", "username": "alice_x", "access_token": "v1.k1.at", "refresh_token": "v1.k1.rt",
    "token_key_id": "k1", "token_expires_at": "2030-06-01T02:00:00Z", "scope": "tweet.read offline.access"}',
  pg_temp.t('0 min'))->>'ok')::boolean, true, 'alice''s X account is stored');
select results_eq($$select platform_user_id, username, access_token, refresh_token, token_expires_at, scope, status::text, verified_at
                      from public.connected_accounts where user_id = '00000000-0000-0000-0000-0000000000a1'$$,
  $$values ('2244994945', 'alice_x', 'v1.k1.at', 'v1.k1.rt', '2030-06-01 02:00:00+00'::timestamptz,
            'tweet.read offline.access', 'active', '2030-06-01 00:00:00+00'::timestamptz)$$,
  'with sealed tokens, expiry, scope, active and verified');
select is(public.store_connected_account('00000000-0000-0000-0000-0000000000b2', 'x',
  '{"platform_user_id": "2244994945", "username": "bob_x", "access_token": "v1.k1.bt"}', pg_temp.t('1 min'))->>'reason',
  'verified_by_another_user', 'bob cannot connect the identity alice verified');
select is((select count(*)::int from public.connected_accounts where user_id = '00000000-0000-0000-0000-0000000000b2'),
          0, 'and nothing of bob''s was written');
select is((public.store_connected_account('00000000-0000-0000-0000-0000000000a1', 'x',
  '{"platform_user_id": "2244994945", "username": "alice_renamed", "access_token": "v1.k1.at2"}', pg_temp.t('2 min'))->>'created')::boolean,
  false, 'reconnecting updates alice''s one account');
select is((select access_token || '/' || username from public.connected_accounts where user_id = '00000000-0000-0000-0000-0000000000a1'),
          'v1.k1.at2/alice_renamed', 'with the new token and name');
select throws_ok($$select public.store_connected_account('00000000-0000-0000-0000-0000000000a1', 'x', '{"username": "nobody"}')$$,
          '22023', null, 'no identity from the platform, no account');

-- Bluesky: the password to Vault, the session cached, in the same call ------------
select is((public.store_connected_account('00000000-0000-0000-0000-0000000000a1', 'bluesky',
  '{"platform_user_id": "did:plc:alice", "username": "alice.test", "app_password": "abcd-efgh-ijkl-mnop",
    "session": {"did": "did:plc:alice", "handle": "alice.test", "accessJwt": "a.j.w", "refreshJwt": "r.j.w"}}',
  pg_temp.t('3 min'))->>'ok')::boolean, true, 'a Bluesky account is stored');
select results_eq($$select ca.account_did, ca.handle, v.decrypted_secret, s.did, s.refresh_jwt, ca.verified_at is not null
                      from public.connected_accounts ca
                      join vault.decrypted_secrets v on v.id = ca.vault_secret_id
                      join public.bluesky_sessions s on s.account_id = ca.id
                     where ca.user_id = '00000000-0000-0000-0000-0000000000a1' and ca.platform = 'bluesky'$$,
  $$values ('did:plc:alice', 'alice.test', 'abcd-efgh-ijkl-mnop', 'did:plc:alice', 'r.j.w', true)$$,
  'DID and handle, the app password in Vault, the session in bluesky_sessions, verified');

-- Disconnect: credentials gone, account kept ---------------------------------------
select is(public.connect_account_for_disconnect('00000000-0000-0000-0000-0000000000b2',
          (select id from public.connected_accounts where user_id = '00000000-0000-0000-0000-0000000000a1' and platform = 'x')),
          '{"found": false}'::jsonb, 'another user''s account is not found');
select is((public.disconnect_account('00000000-0000-0000-0000-0000000000a1',
          (select id from public.connected_accounts where user_id = '00000000-0000-0000-0000-0000000000a1' and platform = 'bluesky'))->>'disconnected')::boolean,
          true, 'alice disconnects her Bluesky account');
select results_eq($$select ca.status::text, ca.vault_secret_id, ca.verified_at,
                           (select count(*)::int from public.bluesky_sessions s where s.account_id = ca.id),
                           (select count(*)::int from vault.secrets v where v.description = 'Bluesky app password (connect)')
                      from public.connected_accounts ca
                     where ca.user_id = '00000000-0000-0000-0000-0000000000a1' and ca.platform = 'bluesky'$$,
  $$values ('disconnected', null::uuid, null::timestamptz, 0, 0)$$,
  'disconnected, unverified, session and Vault password gone, the row kept');

select * from finish();
rollback;
