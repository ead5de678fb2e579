-- Two identical adapt requests at the same instant both reached the model
-- and paid for it (0025 deduplicated only once the first was stored). The
-- first request now marks its idea as being written; an identical request
-- meanwhile is told so (`in_flight`) and waits for the stored answer
-- instead of paying for its own. The mark goes when the adaptation is
-- stored (a trigger), when the writer gives up (adapt_release_idea), or
-- when it expires (a writer that died).

create table public.adapt_ideas_in_flight (
  user_id uuid not null references public.users (id) on delete cascade,
  idea_hash text not null,
  started_at timestamptz not null,
  expires_at timestamptz not null,
  primary key (user_id, idea_hash)
);
comment on table public.adapt_ideas_in_flight is
  'Ideas whose adaptation a request is writing now (adapt, migration 0032): service-only, no client access.';
alter table public.adapt_ideas_in_flight enable row level security;
revoke all on table public.adapt_ideas_in_flight from anon, authenticated;

-- 0025's reservation, plus the mark: answers {"existing": row}, or
-- {"in_flight": true, "retry_after_seconds"}, or record_ai_text_run's
-- answer with resets_at / resets_in_seconds. p_in_flight_seconds bounds how
-- long a mark holds (the model call's timeout, twice, and a margin).
drop function public.adapt_reserve_run(uuid, text, text, text, integer, text, timestamptz);
create function public.adapt_reserve_run(
  p_user_id uuid,
  p_provider text,
  p_model text,
  p_prompt_hash text,
  p_daily_limit integer,
  p_idea_hash text,
  p_now timestamptz default now(),
  p_in_flight_seconds integer default 180
) returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_existing public.content_adaptations;
  v_flight public.adapt_ideas_in_flight;
  v_run jsonb;
  v_resets_at timestamptz := (date_trunc('day', p_now at time zone 'UTC') + interval '1 day') at time zone 'UTC';
begin
  if p_user_id is null then
    raise exception 'adapt_reserve_run: p_user_id is required' using errcode = '22004';
  end if;
  -- The lock record_ai_text_run takes (re-entrant within this transaction):
  -- dedupe check, mark, count and reservation happen as one step per user.
  perform pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtextextended('ai_text_runs:' || p_user_id::text, 0));

  if p_idea_hash is not null then
    select a.* into v_existing
      from public.content_adaptations a
     where a.user_id = p_user_id and a.idea_hash = p_idea_hash
     order by a.created_at desc, a.id
     limit 1;
    if v_existing.id is not null then
      update public.content_adaptations a set last_used_at = p_now where a.id = v_existing.id
      returning a.* into v_existing;
      return jsonb_build_object('existing', public.adapt_row_json(v_existing));
    end if;
    select f.* into v_flight from public.adapt_ideas_in_flight f
     where f.user_id = p_user_id and f.idea_hash = p_idea_hash and f.expires_at > p_now;
    if v_flight.user_id is not null then
      return jsonb_build_object('in_flight', true,
        'retry_after_seconds', greatest(1, ceil(extract(epoch from v_flight.expires_at - p_now))::integer));
    end if;
  end if;

  v_run := public.record_ai_text_run(p_user_id, p_provider, p_model, p_prompt_hash, 0, 0, p_daily_limit, p_now);
  if p_idea_hash is not null and coalesce((v_run->>'allowed')::boolean, false) then
    insert into public.adapt_ideas_in_flight (user_id, idea_hash, started_at, expires_at)
    values (p_user_id, p_idea_hash, p_now, p_now + make_interval(secs => least(greatest(p_in_flight_seconds, 1), 900)))
    on conflict (user_id, idea_hash) do update
      set started_at = excluded.started_at, expires_at = excluded.expires_at;
  end if;
  return v_run || jsonb_build_object(
    'resets_at', to_char(v_resets_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
    'resets_in_seconds', greatest(1, ceil(extract(epoch from v_resets_at - p_now))::integer));
end
$$;

-- The writer gave up (the model failed, refused or answered unusably): an
-- identical request waiting, or the next one, makes its own call.
create function public.adapt_release_idea(p_user_id uuid, p_idea_hash text)
returns jsonb
language sql
security definer
set search_path = ''
as $$
  with released as (
    delete from public.adapt_ideas_in_flight f
     where f.user_id = p_user_id and f.idea_hash = p_idea_hash
    returning 1
  )
  select jsonb_build_object('released', exists (select 1 from released))
$$;

-- Stored: the mark has done its work.
create function public.adapt_idea_stored() returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  if new.idea_hash is not null then
    delete from public.adapt_ideas_in_flight f
     where f.user_id = new.user_id and f.idea_hash = new.idea_hash;
  end if;
  return null;
end
$$;
create trigger content_adaptations_idea_stored
  after insert on public.content_adaptations
  for each row execute function public.adapt_idea_stored();

revoke all on function public.adapt_reserve_run(uuid, text, text, text, integer, text, timestamptz, integer) from public, anon, authenticated;
revoke all on function public.adapt_release_idea(uuid, text) from public, anon, authenticated;
revoke all on function public.adapt_idea_stored() from public, anon, authenticated;
grant execute on function public.adapt_reserve_run(uuid, text, text, text, integer, text, timestamptz, integer) to service_role;
grant execute on function public.adapt_release_idea(uuid, text) to service_role;
grant select, insert, update, delete on table public.adapt_ideas_in_flight to service_role;
