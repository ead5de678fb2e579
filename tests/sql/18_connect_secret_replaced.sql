-- 18_connect_secret_replaced.sql: a Bluesky account reconnected or deleted
-- leaves no Vault secret of connect's behind (migration 0021); secrets a user
-- made and linked themselves stay theirs.
begin;
set local client_min_messages = warning;
create extension if not exists pgtap;

select plan(8);

insert into auth.users (id, email) values
  ('00000000-0000-0000-0000-0000000000a1', 'alice@example.test');

create function pg_temp.connect(p_password text) returns jsonb
language sql as $$
  select public.store_connected_account('00000000-0000-0000-0000-0000000000a1', 'bluesky',
    jsonb_build_object('platform_user_id', 'did:plc:alice', 'username', 'alice.test',
                       'app_password', p_password,
                       'session', jsonb_build_object('did', 'did:plc:alice', 'handle', 'alice.test',
                                                     'accessJwt', 'a.j.w', 'refreshJwt', 'r.j.w')))
$$;
create function pg_temp.connect_secrets() returns int
language sql as $$
  select count(*)::int from vault.secrets v where v.description = 'Bluesky app password (connect)'
$$;

select is((pg_temp.connect('aaaa-aaaa-aaaa-aaaa')->>'ok')::boolean, true, 'alice connects her Bluesky account');
create temp table first_secret as
  select vault_secret_id as id from public.connected_accounts where platform = 'bluesky';
select is((pg_temp.connect('bbbb-bbbb-bbbb-bbbb')->>'created')::boolean, false, 'and reconnects it with a new app password');
select is(pg_temp.connect_secrets(), 1, 'one connect secret is left, not two');
select is((select count(*)::int from vault.secrets v join first_secret f using (id)), 0,
          'the replaced secret is gone from Vault');
select is((select count(*)::int from public.account_secret_owners o join first_secret f on f.id = o.secret_id), 0,
          'and from its owners');
select is((select v.decrypted_secret from public.connected_accounts ca
             join vault.decrypted_secrets v on v.id = ca.vault_secret_id where ca.platform = 'bluesky'),
          'bbbb-bbbb-bbbb-bbbb', 'the account opens the new password');

-- A secret the user made and linked is not connect's to drop.
select vault.create_secret('user-kept', 'mine', 'my own note') as id \gset
insert into public.connected_accounts (user_id, platform, platform_user_id, username, vault_secret_id)
values ('00000000-0000-0000-0000-0000000000a1', 'instagram', '1784', 'alice.ig', :'id');
update public.connected_accounts set vault_secret_id = null where platform = 'instagram';
select is((select count(*)::int from vault.secrets where id = :'id'), 1, 'a user''s own secret survives being unlinked');

delete from public.connected_accounts where platform = 'bluesky';
select is(pg_temp.connect_secrets(), 0, 'deleting the account drops connect''s secret with it');

select * from finish();
rollback;
