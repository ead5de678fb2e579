-- Reconnecting a Bluesky account stores its new app password in a new Vault
-- secret (store_connected_account, 0021); the one it replaces was left behind,
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
