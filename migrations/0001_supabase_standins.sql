-- 0001: Supabase stand-ins for plain PostgreSQL.
--
-- On Supabase every object below already exists and each step is skipped;
-- on a bare PostgreSQL 15 this creates what the later files rely on:
--   * roles anon, authenticated, service_role (service_role has BYPASSRLS);
--   * schema auth: auth.users, auth.uid(), auth.role(), auth.jwt(), auth.email(),
--     reading the request.jwt.claims setting exactly as PostgREST sets it
--     (and the older request.jwt.claim.sub / request.jwt.claim.role);
--   * pgcrypto (in schema extensions, as on Supabase);
--   * schema vault: vault.secrets, vault.create_secret(), vault.update_secret(),
--     vault.decrypted_secrets; secrets are encrypted at rest with pgcrypto
--     (OpenPGP symmetric, AES-256, with integrity check) under a random root
--     key kept in vault.root_key, a table no API role can read;
--   * schema storage: storage.buckets, storage.objects (RLS enabled),
--     storage.foldername(), storage.filename(), storage.extension();
--   * Supabase's default privileges in schema public (anon, authenticated and
--     service_role get table privileges; row level security decides).

-- Roles ----------------------------------------------------------------------

do $$
begin
  if not exists (select 1 from pg_catalog.pg_roles where rolname = 'anon') then
    create role anon nologin noinherit;
  end if;
  if not exists (select 1 from pg_catalog.pg_roles where rolname = 'authenticated') then
    create role authenticated nologin noinherit;
  end if;
  if not exists (select 1 from pg_catalog.pg_roles where rolname = 'service_role') then
    create role service_role nologin noinherit bypassrls;
  end if;
end
$$;

-- A migrating user that is not a superuser must still be able to
-- "set role" to the API roles (tests and the runner do so).
do $$
begin
  if not (select rolsuper from pg_catalog.pg_roles where rolname = current_user) then
    begin
      execute format('grant anon, authenticated, service_role to %I', current_user);
    exception when others then
      raise notice 'could not grant API roles to %: %', current_user, sqlerrm;
    end;
  end if;
end
$$;

-- pgcrypto ---------------------------------------------------------------------

do $$
begin
  if not exists (select 1 from pg_catalog.pg_extension where extname = 'pgcrypto') then
    create schema if not exists extensions;
    create extension pgcrypto with schema extensions;
  end if;
  if exists (select 1 from pg_catalog.pg_namespace where nspname = 'extensions') then
    grant usage on schema extensions to anon, authenticated, service_role;
  end if;
end
$$;

-- Schema auth ------------------------------------------------------------------

create schema if not exists auth;
grant usage on schema auth to anon, authenticated, service_role;

do $$
begin
  if to_regclass('auth.users') is null then
    create table auth.users (
      instance_id uuid,
      id uuid primary key default gen_random_uuid(),
      aud text default 'authenticated',
      role text default 'authenticated',
      email text,
      encrypted_password text,
      email_confirmed_at timestamptz,
      phone text,
      phone_confirmed_at timestamptz,
      last_sign_in_at timestamptz,
      raw_app_meta_data jsonb not null default '{}'::jsonb,
      raw_user_meta_data jsonb not null default '{}'::jsonb,
      is_super_admin boolean,
      is_anonymous boolean not null default false,
      banned_until timestamptz,
      deleted_at timestamptz,
      created_at timestamptz not null default now(),
      updated_at timestamptz not null default now()
    );
    create unique index users_email_partial_key on auth.users (email) where email is not null;
    comment on table auth.users is 'Stand-in for Supabase Auth users (plain PostgreSQL only).';
    alter table auth.users enable row level security;
    grant select on auth.users to service_role;
  end if;
end
$$;

do $$
begin
  if to_regprocedure('auth.uid()') is null then
    create function auth.uid() returns uuid
    language sql stable
    as $f$
      select coalesce(
        nullif(current_setting('request.jwt.claim.sub', true), ''),
        nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub'
      )::uuid
    $f$;
  end if;
  if to_regprocedure('auth.role()') is null then
    create function auth.role() returns text
    language sql stable
    as $f$
      select coalesce(
        nullif(current_setting('request.jwt.claim.role', true), ''),
        nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'role'
      )::text
    $f$;
  end if;
  if to_regprocedure('auth.email()') is null then
    create function auth.email() returns text
    language sql stable
    as $f$
      select coalesce(
        nullif(current_setting('request.jwt.claim.email', true), ''),
        nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'email'
      )::text
    $f$;
  end if;
  if to_regprocedure('auth.jwt()') is null then
    create function auth.jwt() returns jsonb
    language sql stable
    as $f$
      select coalesce(
        nullif(current_setting('request.jwt.claim', true), ''),
        nullif(current_setting('request.jwt.claims', true), '')
      )::jsonb
    $f$;
  end if;
end
$$;

grant execute on function auth.uid(), auth.role(), auth.email(), auth.jwt()
  to anon, authenticated, service_role;

-- Schema vault -----------------------------------------------------------------
-- Only where Supabase Vault is absent. The functions are created through
-- format() so that pgcrypto is called in whichever schema it lives in.

do $vault$
declare
  v_crypto text;
begin
  if to_regclass('vault.secrets') is not null then
    return;
  end if;

  select n.nspname into v_crypto
    from pg_catalog.pg_extension e
    join pg_catalog.pg_namespace n on n.oid = e.extnamespace
   where e.extname = 'pgcrypto';

  create schema if not exists vault;
  revoke all on schema vault from public;
  grant usage on schema vault to service_role;

  -- The root key: random, created here, never in vault.secrets, readable by
  -- no API role (only the security definer functions below use it).
  create table vault.root_key (
    id uuid primary key default gen_random_uuid(),
    key bytea not null,
    created_at timestamptz not null default now(),
    constraint root_key_is_256_bits check (octet_length(key) = 32)
  );
  execute format('insert into vault.root_key (key) values (%I.gen_random_bytes(32))', v_crypto);
  revoke all on vault.root_key from public, anon, authenticated, service_role;
  alter table vault.root_key enable row level security;
  comment on table vault.root_key is
    'Vault stand-in: the key that encrypts vault.secrets. Not readable by any API role.';

  create table vault.secrets (
    id uuid primary key default gen_random_uuid(),
    name text,
    description text not null default '',
    secret text not null,
    key_id uuid references vault.root_key (id),
    nonce bytea,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now()
  );
  create unique index secrets_name_idx on vault.secrets (name) where name is not null;
  revoke all on vault.secrets from public, anon, authenticated;
  grant select, delete on vault.secrets to service_role;
  alter table vault.secrets enable row level security;
  comment on table vault.secrets is
    'Vault stand-in: secret holds base64 OpenPGP (AES-256) ciphertext, never the clear text.';

  execute format($f$
    create function vault._encrypt(p_clear text, p_key_id uuid)
    returns text
    language sql volatile security definer
    set search_path = ''
    as $b$
      select encode(%1$I.pgp_sym_encrypt(p_clear, encode(k.key, 'hex'), 'cipher-algo=aes256'), 'base64')
        from vault.root_key k
       where k.id = p_key_id
    $b$ $f$, v_crypto);

  execute format($f$
    create function vault._decrypt(p_secret text, p_key_id uuid)
    returns text
    language sql stable security definer
    set search_path = ''
    as $b$
      select %1$I.pgp_sym_decrypt(decode(p_secret, 'base64'), encode(k.key, 'hex'))
        from vault.root_key k
       where k.id = p_key_id
    $b$ $f$, v_crypto);

  create function vault.create_secret(
    new_secret text,
    new_name text default null,
    new_description text default '',
    new_key_id uuid default null
  ) returns uuid
  language plpgsql volatile security definer
  set search_path = ''
  as $f$
  declare
    v_key uuid := coalesce(new_key_id, (select k.id from vault.root_key k order by k.created_at limit 1));
    v_id uuid;
  begin
    if new_secret is null then
      raise exception 'vault.create_secret: secret must not be null' using errcode = '22004';
    end if;
    insert into vault.secrets (name, description, secret, key_id)
    values (new_name, coalesce(new_description, ''), vault._encrypt(new_secret, v_key), v_key)
    returning id into v_id;
    return v_id;
  end
  $f$;

  create function vault.update_secret(
    secret_id uuid,
    new_secret text default null,
    new_name text default null,
    new_description text default null,
    new_key_id uuid default null
  ) returns void
  language plpgsql volatile security definer
  set search_path = ''
  as $f$
  declare
    v_key uuid;
  begin
    select coalesce(new_key_id, s.key_id) into v_key from vault.secrets s where s.id = secret_id;
    update vault.secrets s
       set secret = case when new_secret is null then s.secret else vault._encrypt(new_secret, v_key) end,
           key_id = case when new_secret is null then s.key_id else v_key end,
           name = coalesce(new_name, s.name),
           description = coalesce(new_description, s.description),
           updated_at = now()
     where s.id = secret_id;
  end
  $f$;

  create view vault.decrypted_secrets as
    select s.id, s.name, s.description, s.secret,
           vault._decrypt(s.secret, s.key_id) as decrypted_secret,
           s.key_id, s.nonce, s.created_at, s.updated_at
      from vault.secrets s;
  comment on view vault.decrypted_secrets is
    'Vault stand-in: clear text for service_role and security definer functions only.';

  revoke all on function vault._encrypt(text, uuid) from public;
  revoke all on function vault._decrypt(text, uuid) from public;
  revoke all on function vault.create_secret(text, text, text, uuid) from public;
  revoke all on function vault.update_secret(uuid, text, text, text, uuid) from public;
  revoke all on vault.decrypted_secrets from public, anon, authenticated;
  grant execute on function vault._decrypt(text, uuid) to service_role;
  grant execute on function vault.create_secret(text, text, text, uuid) to service_role;
  grant execute on function vault.update_secret(uuid, text, text, text, uuid) to service_role;
  grant select on vault.decrypted_secrets to service_role;
end
$vault$;

-- Schema storage ---------------------------------------------------------------

do $storage$
begin
  if to_regclass('storage.buckets') is not null then
    return;
  end if;

  create schema if not exists storage;
  grant usage on schema storage to anon, authenticated, service_role;

  create table storage.buckets (
    id text primary key,
    name text not null unique,
    owner uuid,
    owner_id text,
    public boolean not null default false,
    avif_autodetection boolean default false,
    file_size_limit bigint,
    allowed_mime_types text[],
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now()
  );

  create table storage.objects (
    id uuid primary key default gen_random_uuid(),
    bucket_id text references storage.buckets (id),
    name text,
    owner uuid,
    owner_id text,
    metadata jsonb,
    user_metadata jsonb,
    path_tokens text[] generated always as (string_to_array(name, '/')) stored,
    version text,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    last_accessed_at timestamptz default now(),
    constraint objects_bucket_name_key unique (bucket_id, name)
  );
  create index objects_bucket_id_name_idx on storage.objects (bucket_id, name text_pattern_ops);

  alter table storage.buckets enable row level security;
  alter table storage.objects enable row level security;
  grant all on storage.buckets, storage.objects to anon, authenticated, service_role;
  comment on table storage.objects is 'Stand-in for Supabase Storage objects (plain PostgreSQL only).';
end
$storage$;

do $$
begin
  if to_regprocedure('storage.foldername(text)') is null then
    create function storage.foldername(name text) returns text[]
    language plpgsql immutable
    as $f$
    declare
      _parts text[];
    begin
      select string_to_array(name, '/') into _parts;
      return _parts[1:array_length(_parts, 1) - 1];
    end
    $f$;
  end if;
  if to_regprocedure('storage.filename(text)') is null then
    create function storage.filename(name text) returns text
    language plpgsql immutable
    as $f$
    declare
      _parts text[];
    begin
      select string_to_array(name, '/') into _parts;
      return _parts[array_length(_parts, 1)];
    end
    $f$;
  end if;
  if to_regprocedure('storage.extension(text)') is null then
    create function storage.extension(name text) returns text
    language plpgsql immutable
    as $f$
    declare
      _parts text[];
      _filename text;
    begin
      select string_to_array(name, '/') into _parts;
      select _parts[array_length(_parts, 1)] into _filename;
      return reverse(split_part(reverse(_filename), '.', 1));
    end
    $f$;
  end if;
end
$$;

-- Default privileges in public, as Supabase sets them -------------------------
-- Table privileges go to every API role; row level security (enabled on every
-- table) decides which rows each may see or change.

grant usage on schema public to anon, authenticated, service_role;
alter default privileges in schema public
  grant all on tables to anon, authenticated, service_role;
alter default privileges in schema public
  grant all on sequences to anon, authenticated, service_role;
alter default privileges in schema public
  grant execute on functions to anon, authenticated, service_role;
