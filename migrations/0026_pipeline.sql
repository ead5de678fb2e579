-- 0026: the pipeline tracker (issue 17): runs, bot events, verified artifacts.
--
-- Seed 003's jobs / job_events / artifacts, plus what the `pipeline`
-- component needs to serve them safely. Every call the component makes is
-- one of the functions below, each answering one jsonb value.
--
-- * Bot tokens (pipeline_bot_tokens): one per owner (any bot name) or per
--   bot (that name only); only the SHA-256 of the token is stored (hex), so
--   a copy of the table lets no one post events. Revoked tokens stay, with
--   revoked_at, for the audit trail.
-- * Event order: job_events.seq is a per-run counter (jobs.event_seq)
--   assigned by a trigger while the run's row is locked, so seq order is
--   commit order within a run. A reader that has seen seq n has seen every
--   seq below n: paging with `seq > cursor` never skips nor repeats an event,
--   whatever the number of concurrent writers. This holds for every insert,
--   the component's and direct (RLS) inserts alike.
-- * Idempotency: (run_id, event_id) is unique when the bot sends an id; a
--   repeat answers the stored event, a different event under a used id is
--   refused.
-- * Status moves: pending -> running on the first event; pending|running ->
--   completed / failed on events of those types; pending|running ->
--   cancelled by the owner. completed, failed and cancelled are final: a
--   trigger refuses any later change of status, whoever writes it, so the
--   state machine holds for direct updates too.
-- * Artifacts: uploaded ones carry object_key ({owner}/{run}/{sha256}) and
--   verification 'verified'; registered outside URLs start 'pending' and a
--   worker fetches and checks them under a lease (claim / finish, fenced by
--   queue_lease_token_seq like every queue), ending 'verified' or 'failed'
--   (after max_verify_attempts transient failures, with the last error).
--   verification is null for artifacts written directly by clients (not
--   checked by the pipeline).

-- ------------------------------------------------------------------ columns

alter table public.jobs add column event_seq bigint not null default 0;

alter table public.job_events add column seq bigint;
alter table public.job_events add column event_id text;

-- Existing events get their run's order by time.
with numbered as (
  select id, row_number() over (partition by run_id order by created_at, id) as n
    from public.job_events
)
update public.job_events e set seq = numbered.n from numbered where numbered.id = e.id;
update public.jobs j
   set event_seq = coalesce((select max(e.seq) from public.job_events e where e.run_id = j.run_id), 0);

alter table public.job_events alter column seq set not null;
alter table public.job_events add constraint job_events_run_id_seq_key unique (run_id, seq);
alter table public.job_events add constraint event_id_length
  check (event_id is null or length(event_id) between 1 and 200);
create unique index job_events_run_id_event_id_key
  on public.job_events (run_id, event_id) where event_id is not null;

alter table public.artifacts
  add column bot_name text,
  add column object_key text,
  add column verification text,
  add column verified_at timestamptz,
  add column verify_error text,
  add column verify_attempts integer not null default 0,
  add column max_verify_attempts integer not null default 5,
  add column next_verify_at timestamptz,
  add column verify_lease_expires_at timestamptz,
  add column verify_lease_token bigint,
  add constraint verification_is_known
    check (verification is null or verification in ('pending', 'verified', 'failed'));
create unique index artifacts_run_id_object_key_key
  on public.artifacts (run_id, object_key) where object_key is not null;
create index artifacts_pending_verification_idx
  on public.artifacts (next_verify_at) where verification = 'pending';

-- ------------------------------------------------------------------ bot tokens

create table public.pipeline_bot_tokens (
  id uuid primary key default gen_random_uuid(),
  owner_id uuid not null references public.users (id) on delete cascade,
  bot_name text,
  token_hash text not null unique,
  created_at timestamptz not null default now(),
  revoked_at timestamptz,
  constraint bot_name_length check (bot_name is null or length(bot_name) between 1 and 100),
  constraint token_hash_is_sha256_hex check (token_hash ~ '^[0-9a-f]{64}$')
);
create index pipeline_bot_tokens_owner_id_idx on public.pipeline_bot_tokens (owner_id, created_at);

alter table public.pipeline_bot_tokens enable row level security;
create policy "Users can see their own bot tokens"
  on public.pipeline_bot_tokens for select to authenticated using (auth.uid() = owner_id);
-- Tokens are minted and revoked through the pipeline only; nobody reads a hash.
revoke all on public.pipeline_bot_tokens from anon, authenticated;
grant select (id, owner_id, bot_name, created_at, revoked_at) on public.pipeline_bot_tokens to authenticated;

-- ------------------------------------------------------------------ triggers

-- The run's next sequence number, taken under the run's row lock (held to
-- commit), so a run's events commit in seq order.
create function public.assign_job_event_seq() returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  update public.jobs
     set event_seq = event_seq + 1
   where run_id = new.run_id
  returning event_seq into new.seq;
  if new.seq is null then
    raise exception 'job % does not exist', new.run_id using errcode = 'foreign_key_violation';
  end if;
  return new;
end
$$;
revoke all on function public.assign_job_event_seq() from public, anon, authenticated;

create trigger job_events_sequence
  before insert on public.job_events
  for each row execute function public.assign_job_event_seq();

-- completed, failed and cancelled are final; nothing goes back to pending.
create function public.check_job_status_move() returns trigger
language plpgsql
set search_path = ''
as $$
begin
  if new.status is distinct from old.status then
    if old.status in ('completed', 'failed', 'cancelled') then
      raise exception 'job % is % and can no longer become %', old.run_id, old.status, new.status
        using errcode = 'check_violation';
    end if;
    if new.status = 'pending' then
      raise exception 'job % cannot go back to pending', old.run_id
        using errcode = 'check_violation';
    end if;
  end if;
  return new;
end
$$;
revoke all on function public.check_job_status_move() from public, anon, authenticated;

create trigger jobs_status_moves
  before update of status on public.jobs
  for each row execute function public.check_job_status_move();

-- What the pipeline checked stays as it checked it: clients may still edit
-- kind and meta of their artifacts, not the checked facts.
create function public.keep_checked_artifacts() returns trigger
language plpgsql
set search_path = ''
as $$
begin
  if old.verification is not null
     and current_user in ('anon', 'authenticated')
     and (new.url is distinct from old.url
          or new.checksum is distinct from old.checksum
          or new.file_size is distinct from old.file_size
          or new.content_type is distinct from old.content_type) then
    raise exception 'artifact % was checked by the pipeline: its url, checksum, size and type cannot change', old.id
      using errcode = 'insufficient_privilege';
  end if;
  return new;
end
$$;
revoke all on function public.keep_checked_artifacts() from public, anon, authenticated;

create trigger artifacts_keep_checked
  before update on public.artifacts
  for each row execute function public.keep_checked_artifacts();

-- ------------------------------------------------------------------ helpers

create function public.pipeline_event_json(e public.job_events) returns jsonb
language sql
immutable
set search_path = ''
as $$
  select jsonb_build_object(
    'seq', e.seq, 'id', e.id, 'event_id', e.event_id, 'bot_name', e.bot_name,
    'event_type', e.event_type, 'payload', e.payload, 'created_at', e.created_at)
$$;

create function public.pipeline_artifact_json(a public.artifacts) returns jsonb
language sql
immutable
set search_path = ''
as $$
  select jsonb_build_object(
    'id', a.id, 'kind', a.kind, 'url', a.url, 'meta', a.meta, 'bot_name', a.bot_name,
    'file_size', a.file_size, 'content_type', a.content_type, 'checksum', a.checksum,
    'object_key', a.object_key, 'verification', a.verification, 'verified_at', a.verified_at,
    'verify_error', a.verify_error, 'created_at', a.created_at)
$$;

create function public.pipeline_run_json(j public.jobs) returns jsonb
language sql
immutable
set search_path = ''
as $$
  select jsonb_build_object(
    'run_id', j.run_id, 'project_spec', j.project_spec, 'status', j.status,
    'started_at', j.started_at, 'completed_at', j.completed_at,
    'error_message', j.error_message, 'event_count', j.event_seq,
    'created_at', j.created_at, 'updated_at', j.updated_at)
$$;

-- Who a bot token speaks for. p_bot_name may be null for a per-bot token
-- (its own name is used). Answers {"ok": true, "owner_id", "bot_name"} or
-- {"ok": false, "outcome", "reason", "message"}.
create function public.pipeline_bot_identity(p_token_hash text, p_bot_name text) returns jsonb
language plpgsql
stable
set search_path = ''
as $$
declare
  v_token public.pipeline_bot_tokens;
begin
  select * into v_token from public.pipeline_bot_tokens t where t.token_hash = p_token_hash;
  if v_token.id is null then
    return jsonb_build_object('ok', false, 'outcome', 'unauthorized', 'reason', 'unknown_token',
                              'message', 'the bot token is not valid');
  end if;
  if v_token.revoked_at is not null then
    return jsonb_build_object('ok', false, 'outcome', 'unauthorized', 'reason', 'revoked_token',
                              'message', 'the bot token has been revoked');
  end if;
  if v_token.bot_name is not null and p_bot_name is not null and p_bot_name <> v_token.bot_name then
    return jsonb_build_object('ok', false, 'outcome', 'forbidden', 'reason', 'bot_name_mismatch',
                              'message', format('this token belongs to bot %s, not %s', v_token.bot_name, p_bot_name));
  end if;
  if coalesce(p_bot_name, v_token.bot_name) is null then
    return jsonb_build_object('ok', false, 'outcome', 'bad_request', 'reason', 'bot_name_required',
                              'message', 'bot_name is required with an owner-wide bot token');
  end if;
  return jsonb_build_object('ok', true, 'owner_id', v_token.owner_id,
                            'bot_name', coalesce(p_bot_name, v_token.bot_name));
end
$$;

-- The refusal for a run that takes no more bot input, or null.
create function public.pipeline_closed_refusal(j public.jobs) returns jsonb
language sql
immutable
set search_path = ''
as $$
  select case when j.status in ('completed', 'failed', 'cancelled') then
    jsonb_build_object('outcome', 'refused', 'reason', 'run_' || j.status, 'status', j.status,
                       'message', format('run %s is %s: it takes no more events or artifacts', j.run_id, j.status))
  end
$$;

-- ------------------------------------------------------------------ users

-- POST /pipeline/runs.
create function public.pipeline_create_run(p_owner_id uuid, p_project_spec jsonb) returns jsonb
language plpgsql
set search_path = ''
as $$
declare
  v_job public.jobs;
begin
  if not exists (select 1 from public.users u where u.id = p_owner_id) then
    return jsonb_build_object('created', false, 'reason', 'unknown_user',
                              'message', 'no such user: sign up first');
  end if;
  insert into public.jobs (run_id, project_spec, owner_id)
  -- 90 random bits (of a v4 uuid) in 16 base64url characters: short, because the run id
  -- is part of every artifact's object key (and some stores, s3s-fs among
  -- them, put an encoded key into a file name of at most 255 bytes).
  values ('run_' || translate(left(encode(uuid_send(gen_random_uuid()), 'base64'), 16), '+/', '-_'),
          p_project_spec, p_owner_id)
  returning * into v_job;
  return jsonb_build_object('created', true, 'run', public.pipeline_run_json(v_job));
end
$$;

-- POST /pipeline/runs/{run_id}/cancel. Someone else's run is not found.
create function public.pipeline_cancel_run(p_owner_id uuid, p_run_id text) returns jsonb
language plpgsql
set search_path = ''
as $$
declare
  v_job public.jobs;
begin
  select * into v_job from public.jobs j
   where j.run_id = p_run_id and j.owner_id = p_owner_id
   for update;
  if v_job.run_id is null then
    return jsonb_build_object('outcome', 'not_found');
  end if;
  if v_job.status = 'cancelled' then
    return jsonb_build_object('outcome', 'unchanged', 'run', public.pipeline_run_json(v_job));
  end if;
  if v_job.status in ('completed', 'failed') then
    return jsonb_build_object('outcome', 'refused', 'reason', 'run_' || v_job.status, 'status', v_job.status,
                              'message', format('run %s is already %s and cannot be cancelled', v_job.run_id, v_job.status));
  end if;
  update public.jobs set status = 'cancelled' where run_id = v_job.run_id returning * into v_job;
  return jsonb_build_object('outcome', 'cancelled', 'run', public.pipeline_run_json(v_job));
end
$$;

-- GET /pipeline/runs/{run_id}/events?after=: events with seq > p_after, in
-- order, at most p_limit (1..1000).
create function public.pipeline_run_events(p_owner_id uuid, p_run_id text, p_after bigint, p_limit integer)
returns jsonb
language plpgsql
stable
set search_path = ''
as $$
declare
  v_job public.jobs;
  v_limit integer := least(greatest(coalesce(p_limit, 100), 1), 1000);
  v_events jsonb;
  v_last bigint;
  v_count integer;
begin
  select * into v_job from public.jobs j where j.run_id = p_run_id and j.owner_id = p_owner_id;
  if v_job.run_id is null then
    return jsonb_build_object('found', false);
  end if;
  select coalesce(jsonb_agg(public.pipeline_event_json(e) order by e.seq), '[]'::jsonb), max(e.seq), count(*)
    into v_events, v_last, v_count
    from (select * from public.job_events e
           where e.run_id = p_run_id and e.seq > coalesce(p_after, 0)
           order by e.seq limit v_limit) e;
  return jsonb_build_object(
    'found', true,
    'status', v_job.status,
    'events', v_events,
    'next_after', coalesce(v_last, greatest(coalesce(p_after, 0), 0)),
    'has_more', exists (select 1 from public.job_events e
                         where e.run_id = p_run_id and e.seq > coalesce(v_last, coalesce(p_after, 0))));
end
$$;

-- GET /pipeline/runs/{run_id}: the run, its first p_event_limit events and
-- every artifact.
create function public.pipeline_run_for_user(p_owner_id uuid, p_run_id text, p_event_limit integer)
returns jsonb
language plpgsql
stable
set search_path = ''
as $$
declare
  v_job public.jobs;
  v_page jsonb;
begin
  select * into v_job from public.jobs j where j.run_id = p_run_id and j.owner_id = p_owner_id;
  if v_job.run_id is null then
    return jsonb_build_object('found', false);
  end if;
  v_page := public.pipeline_run_events(p_owner_id, p_run_id, 0, p_event_limit);
  return jsonb_build_object(
    'found', true,
    'run', public.pipeline_run_json(v_job),
    'events', v_page -> 'events',
    'events_next_after', v_page -> 'next_after',
    'events_has_more', v_page -> 'has_more',
    'artifacts', coalesce((select jsonb_agg(public.pipeline_artifact_json(a) order by a.created_at, a.id)
                             from public.artifacts a where a.run_id = p_run_id), '[]'::jsonb));
end
$$;

-- POST /pipeline/bot-tokens: stores the hash of a token the component made.
create function public.pipeline_mint_bot_token(p_owner_id uuid, p_bot_name text, p_token_hash text)
returns jsonb
language plpgsql
set search_path = ''
as $$
declare
  v_token public.pipeline_bot_tokens;
begin
  if not exists (select 1 from public.users u where u.id = p_owner_id) then
    return jsonb_build_object('created', false, 'reason', 'unknown_user',
                              'message', 'no such user: sign up first');
  end if;
  -- Serialises one owner's mints so the cap holds.
  perform 1 from public.users u where u.id = p_owner_id for update;
  if (select count(*) from public.pipeline_bot_tokens t
       where t.owner_id = p_owner_id and t.revoked_at is null) >= 50 then
    return jsonb_build_object('created', false, 'reason', 'too_many_tokens',
                              'message', 'at most 50 bot tokens can be active: revoke one first');
  end if;
  insert into public.pipeline_bot_tokens (owner_id, bot_name, token_hash)
  values (p_owner_id, p_bot_name, p_token_hash)
  returning * into v_token;
  return jsonb_build_object('created', true, 'token', jsonb_build_object(
    'id', v_token.id, 'bot_name', v_token.bot_name, 'created_at', v_token.created_at));
end
$$;

-- GET /pipeline/bot-tokens (never the hashes).
create function public.pipeline_list_bot_tokens(p_owner_id uuid) returns jsonb
language sql
stable
set search_path = ''
as $$
  select jsonb_build_object('tokens', coalesce(jsonb_agg(jsonb_build_object(
           'id', t.id, 'bot_name', t.bot_name, 'created_at', t.created_at, 'revoked_at', t.revoked_at)
           order by t.created_at, t.id), '[]'::jsonb))
    from public.pipeline_bot_tokens t
   where t.owner_id = p_owner_id
$$;

-- DELETE /pipeline/bot-tokens/{id}. Someone else's token is not found.
create function public.pipeline_revoke_bot_token(p_owner_id uuid, p_id uuid) returns jsonb
language plpgsql
set search_path = ''
as $$
declare
  v_token public.pipeline_bot_tokens;
begin
  update public.pipeline_bot_tokens t
     set revoked_at = coalesce(t.revoked_at, now())
   where t.id = p_id and t.owner_id = p_owner_id
  returning * into v_token;
  if v_token.id is null then
    return jsonb_build_object('found', false);
  end if;
  return jsonb_build_object('found', true, 'token', jsonb_build_object(
    'id', v_token.id, 'bot_name', v_token.bot_name, 'created_at', v_token.created_at,
    'revoked_at', v_token.revoked_at));
end
$$;

-- ------------------------------------------------------------------ bots

-- POST /pipeline/runs/{run_id}/events: checks the token, that its owner owns
-- the run, the event id, the move; appends the event and moves the run, all
-- under the run's row lock. Outcomes: accepted, duplicate, refused (409),
-- not_found, unauthorized, forbidden, bad_request.
create function public.pipeline_record_event(
  p_token_hash text,
  p_run_id text,
  p_bot_name text,
  p_event_type text,
  p_payload jsonb,
  p_event_id text
) returns jsonb
language plpgsql
set search_path = ''
as $$
declare
  v_bot jsonb := public.pipeline_bot_identity(p_token_hash, p_bot_name);
  v_job public.jobs;
  v_event public.job_events;
  v_bot_name text;
  v_next text;
  v_previous text;
begin
  if not (v_bot ->> 'ok')::boolean then
    return v_bot - 'ok';
  end if;
  v_bot_name := v_bot ->> 'bot_name';
  select * into v_job from public.jobs j
   where j.run_id = p_run_id and j.owner_id = (v_bot ->> 'owner_id')::uuid
   for update;
  if v_job.run_id is null then
    return jsonb_build_object('outcome', 'not_found');
  end if;

  if p_event_id is not null then
    select * into v_event from public.job_events e where e.run_id = p_run_id and e.event_id = p_event_id;
    if v_event.id is not null then
      if v_event.bot_name = v_bot_name and v_event.event_type = p_event_type
         and v_event.payload is not distinct from p_payload then
        return jsonb_build_object('outcome', 'duplicate', 'status', v_job.status,
                                  'event', public.pipeline_event_json(v_event));
      end if;
      return jsonb_build_object('outcome', 'refused', 'reason', 'event_id_reused', 'status', v_job.status,
                                'message', format('event_id %s was already used for another event of this run', p_event_id));
    end if;
  end if;

  if public.pipeline_closed_refusal(v_job) is not null then
    return public.pipeline_closed_refusal(v_job);
  end if;

  v_previous := v_job.status;
  v_next := case p_event_type
              when 'completed' then 'completed'
              when 'failed' then 'failed'
              else 'running'
            end;
  if v_next <> v_job.status then
    update public.jobs j
       set status = v_next,
           started_at = coalesce(j.started_at, now()),
           error_message = case when v_next = 'failed'
                                then coalesce(p_payload ->> 'error', p_payload ->> 'message',
                                              format('failed (reported by %s)', v_bot_name))
                                else j.error_message end
     where j.run_id = p_run_id
    returning * into v_job;
  end if;

  insert into public.job_events (run_id, bot_name, event_type, payload, owner_id, event_id)
  values (p_run_id, v_bot_name, p_event_type, p_payload, v_job.owner_id, p_event_id)
  returning * into v_event;

  return jsonb_build_object('outcome', 'accepted', 'status', v_job.status, 'previous_status', v_previous,
                            'event', public.pipeline_event_json(v_event));
end
$$;

-- Before an upload is read: may this bot add an artifact with this SHA-256
-- to the run? Outcomes: proceed ({owner_id, bot_name}), duplicate (the
-- stored artifact), or the refusals of pipeline_record_event.
create function public.pipeline_begin_artifact(
  p_token_hash text,
  p_run_id text,
  p_bot_name text,
  p_checksum text
) returns jsonb
language plpgsql
stable
set search_path = ''
as $$
declare
  v_bot jsonb := public.pipeline_bot_identity(p_token_hash, p_bot_name);
  v_job public.jobs;
  v_artifact public.artifacts;
begin
  if not (v_bot ->> 'ok')::boolean then
    return v_bot - 'ok';
  end if;
  select * into v_job from public.jobs j
   where j.run_id = p_run_id and j.owner_id = (v_bot ->> 'owner_id')::uuid;
  if v_job.run_id is null then
    return jsonb_build_object('outcome', 'not_found');
  end if;
  if public.pipeline_closed_refusal(v_job) is not null then
    return public.pipeline_closed_refusal(v_job);
  end if;
  select * into v_artifact from public.artifacts a
   where a.run_id = p_run_id and a.object_key = v_job.owner_id::text || '/' || p_run_id || '/' || p_checksum;
  if v_artifact.id is not null then
    return jsonb_build_object('outcome', 'duplicate', 'artifact', public.pipeline_artifact_json(v_artifact));
  end if;
  return jsonb_build_object('outcome', 'proceed', 'owner_id', v_job.owner_id,
                            'bot_name', v_bot ->> 'bot_name');
end
$$;

-- After the bytes are checked, before the object is committed: records the
-- artifact (p_artifact: kind, url, meta, file_size, content_type, checksum,
-- object_key) after checking token, run and state again (a token revoked or
-- a run cancelled during the upload refuses it, and the upload is
-- abandoned). A second upload of the same bytes answers the first.
create function public.pipeline_record_artifact(
  p_token_hash text,
  p_run_id text,
  p_bot_name text,
  p_artifact jsonb
) returns jsonb
language plpgsql
set search_path = ''
as $$
declare
  v_bot jsonb := public.pipeline_bot_identity(p_token_hash, p_bot_name);
  v_job public.jobs;
  v_artifact public.artifacts;
  v_key text;
begin
  if not (v_bot ->> 'ok')::boolean then
    return v_bot - 'ok';
  end if;
  select * into v_job from public.jobs j
   where j.run_id = p_run_id and j.owner_id = (v_bot ->> 'owner_id')::uuid
   for share;
  if v_job.run_id is null then
    return jsonb_build_object('outcome', 'not_found');
  end if;
  if public.pipeline_closed_refusal(v_job) is not null then
    return public.pipeline_closed_refusal(v_job);
  end if;
  v_key := v_job.owner_id::text || '/' || p_run_id || '/' || (p_artifact ->> 'checksum');
  if p_artifact ->> 'object_key' is distinct from v_key then
    return jsonb_build_object('outcome', 'bad_request', 'reason', 'object_key',
                              'message', 'the object key must be {owner_id}/{run_id}/{sha256}');
  end if;
  insert into public.artifacts (run_id, kind, url, meta, owner_id, file_size, content_type, checksum,
                                bot_name, object_key, verification, verified_at)
  values (p_run_id, coalesce(p_artifact ->> 'kind', 'file'), p_artifact ->> 'url', p_artifact -> 'meta',
          v_job.owner_id, (p_artifact ->> 'file_size')::bigint, p_artifact ->> 'content_type',
          p_artifact ->> 'checksum', v_bot ->> 'bot_name', v_key, 'verified', now())
  on conflict (run_id, object_key) where object_key is not null do nothing
  returning * into v_artifact;
  if v_artifact.id is null then
    select * into v_artifact from public.artifacts a where a.run_id = p_run_id and a.object_key = v_key;
    return jsonb_build_object('outcome', 'duplicate', 'artifact', public.pipeline_artifact_json(v_artifact));
  end if;
  return jsonb_build_object('outcome', 'accepted', 'artifact', public.pipeline_artifact_json(v_artifact));
end
$$;

-- The store did not take an object whose record was written: drop the record.
create function public.pipeline_forget_artifact(p_id uuid) returns jsonb
language sql
set search_path = ''
as $$
  with gone as (delete from public.artifacts a where a.id = p_id and a.object_key is not null returning 1)
  select jsonb_build_object('forgotten', (select count(*) from gone) > 0)
$$;

-- POST /pipeline/runs/{run_id}/artifact-links: an outside URL with its
-- SHA-256 (p_link: url, checksum, kind, meta), verified later.
create function public.pipeline_register_artifact_link(
  p_token_hash text,
  p_run_id text,
  p_bot_name text,
  p_link jsonb
) returns jsonb
language plpgsql
set search_path = ''
as $$
declare
  v_bot jsonb := public.pipeline_bot_identity(p_token_hash, p_bot_name);
  v_job public.jobs;
  v_artifact public.artifacts;
begin
  if not (v_bot ->> 'ok')::boolean then
    return v_bot - 'ok';
  end if;
  select * into v_job from public.jobs j
   where j.run_id = p_run_id and j.owner_id = (v_bot ->> 'owner_id')::uuid
   for share;
  if v_job.run_id is null then
    return jsonb_build_object('outcome', 'not_found');
  end if;
  if public.pipeline_closed_refusal(v_job) is not null then
    return public.pipeline_closed_refusal(v_job);
  end if;
  insert into public.artifacts (run_id, kind, url, meta, owner_id, checksum, bot_name,
                                verification, next_verify_at)
  values (p_run_id, coalesce(p_link ->> 'kind', 'file'), p_link ->> 'url', p_link -> 'meta',
          v_job.owner_id, p_link ->> 'checksum', v_bot ->> 'bot_name', 'pending', now())
  returning * into v_artifact;
  return jsonb_build_object('outcome', 'accepted', 'artifact', public.pipeline_artifact_json(v_artifact));
end
$$;

-- ------------------------------------------------------------------ verifier

-- Claims due outside links to check (of one run when p_run_id is given:
-- the owner reading it checks its links): [{id, url, checksum, lease_token,
-- attempt, max_attempts}]. A link whose lease ran out on its last attempt is
-- failed instead.
create function public.pipeline_claim_link_checks(
  p_worker_id text,
  p_lease_seconds integer,
  p_max_items integer,
  p_run_id text default null,
  p_now timestamptz default now()
) returns jsonb
language plpgsql
set search_path = ''
as $$
declare
  v_items jsonb;
begin
  update public.artifacts a
     set verification = 'failed',
         verify_error = coalesce(a.verify_error, 'the check did not finish') || format(' (gave up after %s attempts)', a.verify_attempts),
         verify_lease_expires_at = null
   where a.verification = 'pending'
     and a.verify_lease_expires_at < p_now
     and a.verify_attempts >= a.max_verify_attempts;

  with due as (
    select a.id from public.artifacts a
     where a.verification = 'pending'
       and (p_run_id is null or a.run_id = p_run_id)
       and a.next_verify_at <= p_now
       and (a.verify_lease_expires_at is null or a.verify_lease_expires_at < p_now)
       and a.verify_attempts < a.max_verify_attempts
     order by a.next_verify_at, a.id
     limit greatest(coalesce(p_max_items, 1), 1)
     for update skip locked
  ), claimed as (
    update public.artifacts a
       set verify_attempts = a.verify_attempts + 1,
           verify_lease_expires_at = p_now + make_interval(secs => greatest(coalesce(p_lease_seconds, 60), 1)),
           verify_lease_token = nextval('public.queue_lease_token_seq')
      from due
     where a.id = due.id
    returning a.id, a.url, a.checksum, a.verify_lease_token, a.verify_attempts, a.max_verify_attempts, a.next_verify_at
  )
  select coalesce(jsonb_agg(jsonb_build_object(
           'id', c.id, 'url', c.url, 'checksum', c.checksum, 'lease_token', c.verify_lease_token,
           'attempt', c.verify_attempts, 'max_attempts', c.max_verify_attempts)
           order by c.next_verify_at, c.id), '[]'::jsonb)
    into v_items
    from claimed c;
  return v_items;
end
$$;

-- Settles one check under its lease token: 'verified' (p_detail: file_size,
-- content_type), 'failed' (p_detail.error, for good: wrong checksum, too
-- big, 404) or 'retry' (p_detail.error, retry_after_seconds: backoff, and
-- failed after the last attempt). A stale token changes nothing.
create function public.pipeline_finish_link_check(
  p_id uuid,
  p_lease_token bigint,
  p_outcome text,
  p_detail jsonb,
  p_now timestamptz default now()
) returns jsonb
language plpgsql
set search_path = ''
as $$
declare
  v_artifact public.artifacts;
  v_backoff integer;
begin
  select * into v_artifact from public.artifacts a
   where a.id = p_id and a.verification = 'pending' and a.verify_lease_token = p_lease_token
   for update;
  if v_artifact.id is null then
    return jsonb_build_object('accepted', false, 'reason', 'stale_lease');
  end if;
  if p_outcome = 'verified' then
    update public.artifacts a
       set verification = 'verified', verified_at = p_now, verify_error = null,
           file_size = (p_detail ->> 'file_size')::bigint,
           content_type = coalesce(p_detail ->> 'content_type', a.content_type),
           verify_lease_expires_at = null
     where a.id = p_id returning * into v_artifact;
  elsif p_outcome = 'failed'
        or (p_outcome = 'retry' and v_artifact.verify_attempts >= v_artifact.max_verify_attempts) then
    update public.artifacts a
       set verification = 'failed',
           verify_error = coalesce(p_detail ->> 'error', 'failed')
                          || case when p_outcome = 'retry'
                                  then format(' (gave up after %s attempts)', a.verify_attempts) else '' end,
           verify_lease_expires_at = null
     where a.id = p_id returning * into v_artifact;
  elsif p_outcome = 'retry' then
    v_backoff := greatest(coalesce((p_detail ->> 'retry_after_seconds')::integer, 0),
                          least(30 * (2 ^ (v_artifact.verify_attempts - 1))::integer, 3600));
    update public.artifacts a
       set verify_error = p_detail ->> 'error',
           next_verify_at = p_now + make_interval(secs => v_backoff),
           verify_lease_expires_at = null
     where a.id = p_id returning * into v_artifact;
  else
    raise exception 'unknown outcome %', p_outcome using errcode = 'invalid_parameter_value';
  end if;
  return jsonb_build_object('accepted', true, 'verification', v_artifact.verification,
                            'artifact', public.pipeline_artifact_json(v_artifact));
end
$$;

-- ------------------------------------------------------------------ grants

-- The functions take an owner or a token hash from the component, which has
-- checked them; no API role may call them with someone else's.
do $$
declare
  f text;
begin
  foreach f in array array[
    'public.pipeline_event_json(public.job_events)',
    'public.pipeline_artifact_json(public.artifacts)',
    'public.pipeline_run_json(public.jobs)',
    'public.pipeline_bot_identity(text, text)',
    'public.pipeline_closed_refusal(public.jobs)',
    'public.pipeline_create_run(uuid, jsonb)',
    'public.pipeline_cancel_run(uuid, text)',
    'public.pipeline_run_events(uuid, text, bigint, integer)',
    'public.pipeline_run_for_user(uuid, text, integer)',
    'public.pipeline_mint_bot_token(uuid, text, text)',
    'public.pipeline_list_bot_tokens(uuid)',
    'public.pipeline_revoke_bot_token(uuid, uuid)',
    'public.pipeline_record_event(text, text, text, text, jsonb, text)',
    'public.pipeline_begin_artifact(text, text, text, text)',
    'public.pipeline_record_artifact(text, text, text, jsonb)',
    'public.pipeline_forget_artifact(uuid)',
    'public.pipeline_register_artifact_link(text, text, text, jsonb)',
    'public.pipeline_claim_link_checks(text, integer, integer, text, timestamptz)',
    'public.pipeline_finish_link_check(uuid, bigint, text, jsonb, timestamptz)'
  ] loop
    execute format('revoke all on function %s from public, anon, authenticated', f);
    execute format('grant execute on function %s to service_role', f);
  end loop;
end
$$;
