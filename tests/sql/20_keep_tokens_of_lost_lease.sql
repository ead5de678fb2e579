-- 20_keep_tokens_of_lost_lease.sql: a token-rotation worker whose lease ran
-- out after the platform rotated the tokens keeps them when nobody saved
-- others since its claim, and never overwrites newer ones (migration 0022).
-- Times are in 2032 (injected p_now).
begin;
set local client_min_messages = warning;
create extension if not exists pgtap;

create function pg_temp.t(p_sec text) returns timestamptz
language sql immutable as $$ select '2032-06-01 12:00:00+00'::timestamptz + p_sec::interval $$;
create function pg_temp.a(p_n int) returns uuid
language sql immutable as $$ select ('00000000-0000-4000-8000-0000002000' || lpad(p_n::text, 2, '0'))::uuid $$;
create function pg_temp.stale(p_n int) returns jsonb
language sql immutable as $$
  select jsonb_build_object('outcome', 'refreshed', 'access_token', 'v1.k2.stale-access' || p_n,
                            'refresh_token', 'v1.k2.stale-refresh' || p_n, 'token_key_id', 'k2',
                            'token_expires_at', pg_temp.t('2 hours'), 'previous_access_token', 'v1.k2.access' || p_n)
$$;

select plan(13);

insert into auth.users (id, email) values
  ('00000000-0000-4000-8000-0000002001a1', 'lost-lease@example.test');
insert into public.connected_accounts (id, user_id, platform, platform_user_id, username,
                                       access_token, refresh_token, token_key_id, token_expires_at, status, verified_at)
select pg_temp.a(n), '00000000-0000-4000-8000-0000002001a1', 'x', 'pu' || n, 'user' || n,
       'v1.k2.access' || n, 'v1.k2.refresh' || n, 'k2', pg_temp.t('10 minutes'), 'active', pg_temp.t('-1 day')
  from generate_series(1, 3) n;

-- Worker A claims all three; its lease runs out; worker B claims them again.
create temp table a as select x from jsonb_array_elements(public.claim_token_rotations('wA', 10, 60, 'k2', pg_temp.t('0'))) x;
create temp table b as select x from jsonb_array_elements(public.claim_token_rotations('wB', 10, 60, 'k2', pg_temp.t('2 minutes'))) x;
select is((select count(*)::int from b), 3, 'after the lease ran out, B claims all three again');
create function pg_temp.lease(p_claims text, p_n int) returns bigint
language plpgsql as $$
declare v bigint;
begin
  execute format('select (x->>''lease_token'')::bigint from %I where x->>''account_id'' = $1', p_claims)
    into v using pg_temp.a(p_n)::text;
  return v;
end $$;

-- 1: A finishes late, B has not: A's tokens are kept.
select is(public.finish_token_rotation(pg_temp.a(1), pg_temp.lease('a', 1), pg_temp.stale(1), pg_temp.t('2 minutes 5 seconds'))->>'reason',
  'lease_lost', 'A''s late finish is still refused as lease_lost');
select is(public.keep_tokens_of_lost_lease(pg_temp.a(1), pg_temp.stale(1), pg_temp.t('2 minutes 5 seconds'))->>'saved', 'true',
  'but its rotated tokens are kept: nobody saved others since its claim');
select is((select array[access_token, refresh_token] from public.connected_accounts where id = pg_temp.a(1)),
  array['v1.k2.stale-access1', 'v1.k2.stale-refresh1'], 'the rotated pair is stored');
select is((select lease_token from public.account_token_rotation where account_id = pg_temp.a(1)), pg_temp.lease('b', 1),
  'and B keeps its lease');
-- B's refresh with the spent token is refused; its finish stands down.
select is(public.finish_token_rotation(pg_temp.a(1), pg_temp.lease('b', 1),
            '{"outcome":"refused","error":"invalid_grant","previous_access_token":"v1.k2.access1"}', pg_temp.t('2 minutes 6 seconds'))->>'reason',
  'tokens_changed', 'B, refused the spent refresh token, stands down');
select is((select status::text from public.connected_accounts where id = pg_temp.a(1)), 'active', 'the account stays active');

-- 2: B refreshed and saved first: A's late tokens never overwrite them.
select is(public.finish_token_rotation(pg_temp.a(2), pg_temp.lease('b', 2),
            '{"outcome":"refreshed","access_token":"v1.k2.b-access2","token_key_id":"k2","previous_access_token":"v1.k2.access2"}',
            pg_temp.t('2 minutes 3 seconds'))->>'saved', 'true', 'B saves first');
select is(public.keep_tokens_of_lost_lease(pg_temp.a(2), pg_temp.stale(2), pg_temp.t('2 minutes 5 seconds'))->>'reason',
  'tokens_changed', 'A''s late tokens are not kept over B''s');
select is((select access_token from public.connected_accounts where id = pg_temp.a(2)), 'v1.k2.b-access2', 'B''s tokens stand');

-- 3: B was refused the spent token before A came back: A's good tokens revive the account.
select is(public.finish_token_rotation(pg_temp.a(3), pg_temp.lease('b', 3),
            '{"outcome":"refused","error":"invalid_grant","previous_access_token":"v1.k2.access3"}', pg_temp.t('2 minutes 3 seconds'))->>'saved',
  'true', 'B is refused first and expires the account');
select is(public.keep_tokens_of_lost_lease(pg_temp.a(3), pg_temp.stale(3), pg_temp.t('2 minutes 5 seconds'))->>'saved',
  'true', 'A''s late tokens are kept');
select is((select status::text || '/' || access_token from public.connected_accounts where id = pg_temp.a(3)),
  'active/v1.k2.stale-access3', 'and make the account active again');

select * from finish();
rollback;
