-- 05_vault.sql: seed 000's Vault RPCs (create_account_secret, get_account_secret)
-- over the Vault stand-in, and who may execute the worker-only functions.
-- The clear text must come back to the account's owner and the service, to
-- nobody else, and must never be stored in vault.secrets.
begin;
set local client_min_messages = warning;
create extension if not exists pgtap;

insert into auth.users (id, email) values
  ('00000000-0000-4000-8000-0000000005a1', 'vault-owner@example.test'),
  ('00000000-0000-4000-8000-0000000005a2', 'vault-other@example.test');
insert into public.connected_accounts (id, user_id, platform, platform_user_id, username) values
  ('00000000-0000-4000-8000-00000005ca01', '00000000-0000-4000-8000-0000000005a1', 'bluesky', 'did:plc:vaultowner', 'vaultowner.bsky.social'),
  ('00000000-0000-4000-8000-00000005ca02', '00000000-0000-4000-8000-0000000005a2', 'bluesky', 'did:plc:vaultother', 'vaultother.bsky.social'),
  ('00000000-0000-4000-8000-00000005ca03', '00000000-0000-4000-8000-0000000005a1', 'bluesky', 'did:plc:nosecret', 'nosecret.bsky.social');

-- Run one SQL text as an actor; returns its single text value, or ERR:<sqlstate>.
create function pg_temp.as_actor(p_role text, p_uid uuid, p_sql text) returns text
language plpgsql as $$
declare
  v text;
begin
  begin
    execute format('set local role %I', p_role);
    perform set_config('request.jwt.claims',
      case when p_uid is null then json_build_object('role', p_role)
           else json_build_object('sub', p_uid, 'role', p_role) end::text, true);
    begin
      execute p_sql into v;
      v := coalesce(v, '<null>');
    exception when others then
      v := 'ERR:' || sqlstate;
    end;
    raise exception using errcode = 'TSTRB', message = v;
  exception when sqlstate 'TSTRB' then
    return sqlerrm;
  end;
end
$$;

select plan(25);

-- the owner stores an app password and links it to their account (as the dashboard does)
set local role authenticated;
set local request.jwt.claims = '{"sub":"00000000-0000-4000-8000-0000000005a1","role":"authenticated"}';
select set_config('test.secret_id',
                  public.create_account_secret('app-pw-zebra-7731', 'bsky-vault-owner', 'Bluesky app password')::text,
                  true);
with u as (update public.accounts set vault_secret_id = current_setting('test.secret_id')::uuid
            where id = '00000000-0000-4000-8000-00000005ca01' returning 1)
select is(count(*), 1::bigint, 'the owner links the secret to their own account through the accounts view') from u;
select is(public.get_account_secret('00000000-0000-4000-8000-00000005ca01'), 'app-pw-zebra-7731',
          'get_account_secret returns the clear text to the account owner');
select is(public.get_account_secret('00000000-0000-4000-8000-00000005ca03'), null,
          'get_account_secret returns null for the owner''s account without a secret');
select throws_ok($$select count(*) from vault.secrets$$, '42501', null,
                 'authenticated cannot read vault.secrets');
select throws_ok($$select count(*) from vault.decrypted_secrets$$, '42501', null,
                 'authenticated cannot read vault.decrypted_secrets');
select throws_ok($$select vault.create_secret('x')$$, '42501', null,
                 'authenticated cannot call vault.create_secret directly');
reset role;
select set_config('request.jwt.claims', '', true);

select ok(current_setting('test.secret_id', true) ~ '^[0-9a-f-]{36}$', 'create_account_secret returned a uuid');
select is((select count(*) from vault.secrets where id = current_setting('test.secret_id')::uuid), 1::bigint,
          'the secret is stored in vault.secrets');
select is((select name from vault.secrets where id = current_setting('test.secret_id')::uuid),
          '00000000-0000-4000-8000-0000000005a1/bsky-vault-owner',
          'the secret keeps its name, under its owner''s id (0016: names are namespaced per user)');
select is_empty($$select 1 from vault.secrets s where s::text like '%app-pw-zebra-7731%'$$,
                'vault.secrets holds no clear text (no column of any row contains the password)');
select is((select decrypted_secret from vault.decrypted_secrets where id = current_setting('test.secret_id')::uuid),
          'app-pw-zebra-7731', 'vault.decrypted_secrets decrypts it (for the service)');

-- another user: no clear text, neither directly nor by pointing their own account at it
select ok(pg_temp.as_actor('authenticated', '00000000-0000-4000-8000-0000000005a2',
            $$select public.get_account_secret('00000000-0000-4000-8000-00000005ca01')$$) in ('<null>')
          or pg_temp.as_actor('authenticated', '00000000-0000-4000-8000-0000000005a2',
            $$select public.get_account_secret('00000000-0000-4000-8000-00000005ca01')$$) like 'ERR:%',
          'get_account_secret is refused to another user');
select isnt(pg_temp.as_actor('authenticated', '00000000-0000-4000-8000-0000000005a2',
            format($$with u as (update public.connected_accounts set vault_secret_id = %L
                                 where id = '00000000-0000-4000-8000-00000005ca02' returning 1)
                     select public.get_account_secret('00000000-0000-4000-8000-00000005ca02') from u$$,
                   current_setting('test.secret_id'))),
            'app-pw-zebra-7731',
            'another user cannot read the secret by linking its id to their own account');
select ok(pg_temp.as_actor('anon', null,
            $$select public.get_account_secret('00000000-0000-4000-8000-00000005ca01')$$) like 'ERR:%',
          'anon cannot call get_account_secret');
select ok(pg_temp.as_actor('anon', null,
            $$select public.create_account_secret('x', 'anon-secret', '')::text$$) like 'ERR:%',
          'anon cannot call create_account_secret');
select ok(pg_temp.as_actor('anon', null, $$select count(*)::text from vault.decrypted_secrets$$) like 'ERR:%',
          'anon cannot read vault.decrypted_secrets');

-- the service (worker publishing) reads it
select is(pg_temp.as_actor('service_role', null,
            $$select public.get_account_secret('00000000-0000-4000-8000-00000005ca01')$$),
          'app-pw-zebra-7731', 'service_role gets the clear text for publishing');

-- worker-only functions are not callable by API users
select ok(not has_function_privilege('anon', 'public.get_next_replicate_token()', 'execute')
          and not has_function_privilege('authenticated', 'public.get_next_replicate_token()', 'execute'),
          'anon and authenticated cannot execute get_next_replicate_token() (tokens are service_role only)');
select is_empty($$
    select p.oid::regprocedure::text from pg_proc p join pg_namespace n on n.oid = p.pronamespace
     where n.nspname = 'public'
       and p.proname ~ '^(claim_next_(scheduled_posts|ai_jobs|generations|media_downloads|ingested_items|ingested_posts)|(complete|fail|defer)_(scheduled_post|ai_job|generation|media_download|ingested_item|ingested_post))$'
       and (has_function_privilege('anon', p.oid, 'execute') or has_function_privilege('authenticated', p.oid, 'execute'))
  $$, 'anon and authenticated cannot execute the queue functions (claim/complete/fail/defer)');
select is_empty($$
    select p.oid::regprocedure::text from pg_proc p join pg_namespace n on n.oid = p.pronamespace
     where n.nspname = 'public'
       and p.proname in ('claim_next_scheduled_post', 'claim_next_ai_image_job', 'record_worker_heartbeat',
                         'cleanup_old_generations', 'refresh_admin_stats')
       and (has_function_privilege('anon', p.oid, 'execute') or has_function_privilege('authenticated', p.oid, 'execute'))
  $$, 'anon and authenticated cannot execute the seed worker / maintenance functions');
select is_empty($$
    select p.oid::regprocedure::text from pg_proc p join pg_namespace n on n.oid = p.pronamespace
     where n.nspname = 'public'
       and p.proname in ('record_ai_text_run', 'store_ingested_item', 'record_generation_result',
                         'record_replicate_token_error', 'run_maintenance', 'queue_depths', 'outpost_status')
       and (has_function_privilege('anon', p.oid, 'execute') or has_function_privilege('authenticated', p.oid, 'execute'))
  $$, 'anon and authenticated cannot execute the service-only functions of CONTRACT.md (record_ai_text_run, store_ingested_item, ...)');
select is_empty($$
    select p.oid::regprocedure::text from pg_proc p join pg_namespace n on n.oid = p.pronamespace
     where n.nspname = 'public' and p.proname = 'feed_skeleton_page'
       and (has_function_privilege('anon', p.oid, 'execute') or has_function_privilege('authenticated', p.oid, 'execute'))
  $$, 'feed_skeleton_page is granted to service_role only (CONTRACT.md: "service_role only unless noted")');
select ok(has_function_privilege('authenticated', 'public.create_account_secret(text,text,text)', 'execute')
          and has_function_privilege('service_role', 'public.create_account_secret(text,text,text)', 'execute'),
          'create_account_secret is granted to authenticated and service_role (seed 000)');
select ok(has_function_privilege('authenticated', 'public.get_account_secret(uuid)', 'execute')
          and has_function_privilege('service_role', 'public.get_account_secret(uuid)', 'execute'),
          'get_account_secret is granted to authenticated and service_role (seed 000)');
select ok(not has_function_privilege('anon', 'public.create_account_secret(text,text,text)', 'execute')
          and not has_function_privilege('anon', 'public.get_account_secret(uuid)', 'execute'),
          'anon cannot execute the vault RPCs');

select * from finish();
rollback;
