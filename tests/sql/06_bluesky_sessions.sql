-- 06_bluesky_sessions.sql: the cached Bluesky sessions of migration 0011:
-- one creator at a time, reuse, the createSession budget (25 per 5 minutes,
-- 250 per day), refresh bookkeeping, permanent login failures marking the
-- account token_expired, and no access for API roles.
begin;
set local client_min_messages = warning;
create extension if not exists pgtap;

create function pg_temp.t(p_offset text) returns timestamptz
language sql immutable as $$ select '2030-06-01 00:00:00+00'::timestamptz + p_offset::interval $$;

select plan(22);

insert into auth.users (id, email) values ('00000000-0000-4000-8000-0000000006a1', 'sessions@example.test');
select vault.create_secret('app-pass-1234', 'bsky-app-password-06', '') as secret_id \gset
insert into public.connected_accounts (id, user_id, platform, platform_user_id, username, handle, vault_secret_id) values
  ('00000000-0000-4000-8000-00000006ca01', '00000000-0000-4000-8000-0000000006a1', 'bluesky', 'did:plc:sess', 'sess.test', 'sess.test', :'secret_id'),
  ('00000000-0000-4000-8000-00000006ca02', '00000000-0000-4000-8000-0000000006a1', 'bluesky', 'did:plc:nopw', 'nopw.test', 'nopw.test', null),
  ('00000000-0000-4000-8000-00000006ca03', '00000000-0000-4000-8000-0000000006a1', 'strava', '42', 'runner', null, null);

select is(public.bluesky_session_for('00000000-0000-4000-8000-00000006ca01', 'w1', pg_temp.t('0')) ->> 'state', 'create',
  'no stored session: the first worker is told to create one');
select is(public.bluesky_session_for('00000000-0000-4000-8000-00000006ca01', 'w1', pg_temp.t('0')) ->> 'password', 'app-pass-1234',
  'the creator gets the app password from Vault and the identifier');
select is(public.bluesky_session_for('00000000-0000-4000-8000-00000006ca01', 'w2', pg_temp.t('1 second')) ->> 'state', 'wait',
  'a second worker waits while the first creates');
select cmp_ok((public.bluesky_session_for('00000000-0000-4000-8000-00000006ca01', 'w2', pg_temp.t('1 second')) ->> 'retry_after_seconds')::int, '>', 0,
  'the wait names a retry time');
select is(public.save_bluesky_session('00000000-0000-4000-8000-00000006ca01',
  '{"did":"did:plc:sess","handle":"sess.test","accessJwt":"A1","refreshJwt":"R1"}', 'created', pg_temp.t('2 seconds')) ->> 'saved', 'true',
  'the created session is saved');
select is(public.bluesky_session_for('00000000-0000-4000-8000-00000006ca01', 'w2', pg_temp.t('3 seconds')),
  '{"state":"ready","session":{"did":"did:plc:sess","handle":"sess.test","accessJwt":"A1","refreshJwt":"R1"}}'::jsonb,
  'every worker then reuses the stored session');
select is(public.save_bluesky_session('00000000-0000-4000-8000-00000006ca01',
  '{"did":"did:plc:sess","handle":"sess.test","accessJwt":"A2","refreshJwt":"R2"}', 'refreshed', pg_temp.t('4 seconds')) ->> 'how', 'refreshed',
  'a refreshed session replaces it');
select is((select refreshed_at from public.bluesky_sessions where account_id = '00000000-0000-4000-8000-00000006ca01'), pg_temp.t('4 seconds'),
  'refreshed_at is recorded');
select is(public.forget_bluesky_session('00000000-0000-4000-8000-00000006ca01', 'A1', pg_temp.t('5 seconds')) ->> 'forgotten', 'false',
  'forgetting a stale token leaves the newer session alone');
select is(public.forget_bluesky_session('00000000-0000-4000-8000-00000006ca01', 'A2', pg_temp.t('5 seconds')) ->> 'forgotten', 'true',
  'forgetting the current token drops it');
select is(public.bluesky_session_for('00000000-0000-4000-8000-00000006ca01', 'w3', pg_temp.t('6 seconds')) ->> 'state', 'create',
  'after a forget the next worker logs in again');

-- the budget: 2 creations so far in this window; use up to 25
do $$
begin
  for i in 1..23 loop
    perform public.record_bluesky_login_failure('00000000-0000-4000-8000-00000006ca01', 'createSession: 502 HTTP502', false, 0,
      '2030-06-01 00:00:10+00'::timestamptz + make_interval(secs => i));
    perform public.bluesky_session_for('00000000-0000-4000-8000-00000006ca01', 'w' || i,
      '2030-06-01 00:00:10+00'::timestamptz + make_interval(secs => i + 1));
  end loop;
end $$;
select is(cardinality((select creations from public.bluesky_sessions where account_id = '00000000-0000-4000-8000-00000006ca01')), 25,
  '25 createSession calls were handed out');
select is(public.bluesky_session_for('00000000-0000-4000-8000-00000006ca01', 'w-late', pg_temp.t('1 minute')) ->> 'reason',
  'createSession budget (5 minutes) used up', 'the 26th within 5 minutes waits');
select ok((public.bluesky_session_for('00000000-0000-4000-8000-00000006ca01', 'w-late', pg_temp.t('1 minute')) ->> 'retry_after_seconds')::int between 200 and 240,
  'until the oldest creation leaves the window');
select is(public.bluesky_session_for('00000000-0000-4000-8000-00000006ca01', 'w-later', pg_temp.t('6 minutes')) ->> 'state', 'create',
  'after the window the budget is back');

select is(public.record_bluesky_login_failure('00000000-0000-4000-8000-00000006ca01', 'createSession: 401 AuthenticationRequired: Invalid identifier or password', true, null, pg_temp.t('7 minutes')) ->> 'permanent', 'true',
  'a wrong app password is recorded as permanent');
select is((select status::text from public.connected_accounts where id = '00000000-0000-4000-8000-00000006ca01'), 'token_expired',
  'and the account moves to token_expired');
select is(public.bluesky_session_for('00000000-0000-4000-8000-00000006ca01', 'w9', pg_temp.t('8 minutes')) ->> 'state', 'unusable',
  'no worker spends the budget on it any more');
select is(public.bluesky_session_for('00000000-0000-4000-8000-00000006ca02', 'w1', pg_temp.t('0')),
  '{"state":"unusable","reason":"the account has no app password in Vault"}'::jsonb, 'an account without app password is unusable');
select is(public.bluesky_session_for('00000000-0000-4000-8000-00000006ca03', 'w1', pg_temp.t('0')) ->> 'state', 'unusable',
  'a Strava account has no Bluesky session');

set local role authenticated;
set local request.jwt.claims = '{"sub":"00000000-0000-4000-8000-0000000006a1","role":"authenticated"}';
select throws_ok($$ select * from public.bluesky_sessions $$, '42501', null, 'the owner cannot read session tokens');
select throws_ok($$ select public.bluesky_session_for('00000000-0000-4000-8000-00000006ca01', 'x') $$, '42501', null,
  'nor ask for them through the function');
reset role;

select * from finish();
rollback;
