-- 0025: adapt's calls and prompts (issue 16, Nexus: one idea, every
-- platform's post, in the user's voice).
--
-- * The prompt templates adapt builds its model calls from, as rows of seed
--   003's `prompts` table (category 'adapt'), so they change with an UPDATE
--   and no deploy. `on conflict do nothing`: a template an operator edited
--   is never overwritten by a re-run.
-- * adapt_prepare(user, voice_profile_id): the voice profile to write in
--   (the one named, only if it is the user's own; else the user's default)
--   and the templates.
-- * adapt_reserve_run(user, provider, model, prompt_hash, daily_limit,
--   idea_hash, now, in_flight_seconds): under the user's ai_text_runs lock
--   (the advisory lock record_ai_text_run of 0003 takes), answers a stored
--   adaptation with the same idea_hash when one is given, or that an
--   identical request is writing it now (adapt_ideas_in_flight; the caller
--   waits), else reserves one ai_text_runs row
--   through record_ai_text_run if the user is under the daily limit, so the
--   limit holds however many requests arrive at once; over it, when the
--   limit resets (the next UTC midnight).
-- * adapt_settle_run(run_id, user, input_tokens, output_tokens, answered,
--   call): the usage tokens of the answer; a call that got no answer
--   (provider 429, 5xx, timeout) releases its reservation, since nothing was
--   spent. `call` is the provider call's api_logs record
--   (shared::provider_log::ProviderCall, written by 0020's
--   record_provider_call) in the same round trip.
-- * adapt_save(...): stores a new adaptation (a twin stored meanwhile under
--   the same idea_hash wins unless forced), re-checking the voice profile.
-- * adapt_context(adaptation_id, user): one of the user's adaptations with
--   its voice profile (still the user's, else the default) and the
--   templates, for a regenerate; adapt_save_platform(...) replaces one
--   platform's variant; adapt_get(adaptation_id, user) reads one back.
--
-- Every function takes the acting user and re-checks ownership: another
-- user's profile or adaptation answers exactly as an unknown id does.
-- Only service_role may call them (the component connects as it).

-- Prompt templates -------------------------------------------------------------

insert into public.prompts (id, category, context, prompt_text) values
('adapt.system', 'adapt', 'adapt: system message of every adaptation call',
$t$You adapt one idea into social media posts written in the user's own voice. Write as the user, in the first person, never as an assistant and never about yourself. Keep the user's facts; add no claims they did not make. Follow each platform's rules exactly, stay within every length limit, and answer with one JSON object that matches the given schema and nothing else.$t$),
('adapt.user', 'adapt', 'adapt: the request; placeholders {{idea}} {{voice_name}} {{voice}} {{sample_posts}} {{avoid_words}} {{tone}} {{target_audience}} {{platforms}} {{platform_rules}}',
$t$Idea:
{{idea}}

Write in this voice ({{voice_name}}):
{{voice}}

Posts the user wrote, to match their style:
{{sample_posts}}

Never use these words: {{avoid_words}}
Tone: {{tone}}
Target audience: {{target_audience}}

Write one variant for each of these platforms: {{platforms}}.
{{platform_rules}}$t$),
('adapt.rules.linkedin', 'adapt', 'adapt: LinkedIn rules; {{limit}} characters',
$t$- linkedin: {"text", "hashtags"}. A post of at most {{limit}} characters counting a final line of the hashtags; 0 to 5 hashtags, each without the # sign.$t$),
('adapt.rules.x', 'adapt', 'adapt: X rules; {{limit}} weighted characters',
$t$- x: {"text", "thread"}. "text" is one post of at most {{limit}} weighted characters (a link counts 23, an emoji or a CJK character 2). When the idea needs more room, continue in "thread": the following posts in order, each at most {{limit}} weighted characters; otherwise "thread" is [].$t$),
('adapt.rules.bluesky', 'adapt', 'adapt: Bluesky rules; {{limit}} graphemes',
$t$- bluesky: {"text"}. One post of at most {{limit}} characters (an emoji counts 1).$t$),
('adapt.rules.substack', 'adapt', 'adapt: Substack rules; {{limit}} title characters',
$t$- substack: {"title", "body"}. A title of at most {{limit}} characters and the article's body in Markdown.$t$),
('adapt.retry.invalid', 'adapt', 'adapt: re-asking after an unusable answer; {{problem}} {{platforms}}',
$t$Your previous answer could not be used: {{problem}}
Answer again with the complete JSON object for {{platforms}}, matching the schema exactly, and nothing else.$t$),
('adapt.retry.too_long', 'adapt', 'adapt: re-asking after a variant over its limit; {{problem}} {{platforms}}',
$t$Your previous answer broke a length limit: {{problem}}
Rewrite the variants for {{platforms}} so that each fits its limit, keeping the voice. Answer with the complete JSON object for them, matching the schema, and nothing else.$t$)
on conflict (id) do nothing;

-- Helpers ----------------------------------------------------------------------

-- The templates adapt uses, as one object {id: text}.
create function public.adapt_prompts() returns jsonb
language sql
stable
security definer
set search_path = ''
as $$
  select coalesce(jsonb_object_agg(p.id, p.prompt_text), '{}'::jsonb)
    from public.prompts p
   where p.category = 'adapt';
$$;

-- A voice profile as adapt reads it.
create function public.adapt_profile_json(p public.voice_profiles) returns jsonb
language sql
immutable
set search_path = ''
as $$
  select jsonb_build_object(
    'id', p.id,
    'name', p.name,
    'is_default', p.is_default,
    'characteristics', p.characteristics,
    'sample_posts', coalesce(to_jsonb(p.sample_posts), '[]'::jsonb));
$$;

-- An adaptation row as the API answers it (timestamps as RFC 3339 text).
create function public.adapt_row_json(a public.content_adaptations) returns jsonb
language sql
immutable
set search_path = ''
as $$
  select jsonb_build_object(
    'id', a.id,
    'user_id', a.user_id,
    'original_idea', a.original_idea,
    'idea_hash', a.idea_hash,
    'adaptations', a.adaptations,
    'tone', a.tone,
    'target_audience', a.target_audience,
    'voice_profile_id', a.voice_profile_id,
    'created_at', to_char(a.created_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
    'updated_at', to_char(a.updated_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
    'last_used_at', to_char(a.last_used_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'));
$$;

-- The profile to write in: p_voice_profile_id when it is p_user_id's own,
-- else (when null) the user's default; null when there is none.
create function public.adapt_pick_profile(p_user_id uuid, p_voice_profile_id uuid)
returns public.voice_profiles
language sql
stable
security definer
set search_path = ''
as $$
  select v.*
    from public.voice_profiles v
   where v.user_id = p_user_id
     and (case when p_voice_profile_id is null then v.is_default else v.id = p_voice_profile_id end)
   limit 1;
$$;

-- adapt_prepare ----------------------------------------------------------------

create function public.adapt_prepare(p_user_id uuid, p_voice_profile_id uuid)
returns jsonb
language plpgsql
stable
security definer
set search_path = ''
as $$
declare
  v_profile public.voice_profiles;
begin
  if p_user_id is null then
    raise exception 'adapt_prepare: p_user_id is required' using errcode = '22004';
  end if;
  v_profile := public.adapt_pick_profile(p_user_id, p_voice_profile_id);
  if p_voice_profile_id is not null and v_profile.id is null then
    -- Someone else's and unknown ids answer alike.
    return jsonb_build_object('ok', false, 'reason', 'voice_profile_not_found');
  end if;
  return jsonb_build_object(
    'ok', true,
    'profile', case when v_profile.id is null then null else public.adapt_profile_json(v_profile) end,
    'prompts', public.adapt_prompts());
end
$$;

-- Identical requests in flight: without a mark, two identical adapt
-- requests at the same instant would both reach the model and pay for it
-- (the idea_hash only dedupes once the first is stored). The first request
-- marks its idea as being written; an identical request
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
  'Ideas whose adaptation a request is writing now (adapt): service-only, no client access.';
alter table public.adapt_ideas_in_flight enable row level security;
revoke all on table public.adapt_ideas_in_flight from anon, authenticated;

-- adapt_reserve_run ------------------------------------------------------------

-- The reservation: answers {"existing": row}, or
-- {"in_flight": true, "retry_after_seconds"}, or record_ai_text_run's
-- answer with resets_at / resets_in_seconds. p_in_flight_seconds bounds how
-- long a mark holds (the model call's timeout, twice, and a margin).
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

-- adapt_settle_run -------------------------------------------------------------

create function public.adapt_settle_run(
  p_run_id uuid,
  p_user_id uuid,
  p_input_tokens integer,
  p_output_tokens integer,
  p_answered boolean,
  p_call jsonb default null
) returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_id uuid;
begin
  -- The call's api_logs row (shared::provider_log's shape, through 0020's
  -- record_provider_call) in the same round trip as the settlement.
  if p_call is not null then
    perform public.record_provider_call(p_call);
  end if;
  if p_answered then
    update public.ai_text_runs r
       set input_tokens = greatest(coalesce(p_input_tokens, 0), 0),
           output_tokens = greatest(coalesce(p_output_tokens, 0), 0)
     where r.id = p_run_id and r.user_id = p_user_id
    returning r.id into v_id;
  else
    delete from public.ai_text_runs r
     where r.id = p_run_id and r.user_id = p_user_id
    returning r.id into v_id;
  end if;
  return jsonb_build_object('settled', v_id is not null, 'kept', p_answered and v_id is not null);
end
$$;

-- adapt_save -------------------------------------------------------------------

create function public.adapt_save(
  p_user_id uuid,
  p_original_idea text,
  p_idea_hash text,
  p_voice_profile_id uuid,
  p_tone text,
  p_target_audience text,
  p_adaptations jsonb,
  p_force boolean,
  p_now timestamptz default now()
) returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_row public.content_adaptations;
begin
  if p_user_id is null then
    raise exception 'adapt_save: p_user_id is required' using errcode = '22004';
  end if;
  if p_voice_profile_id is not null
     and not exists (select 1 from public.voice_profiles v
                      where v.id = p_voice_profile_id and v.user_id = p_user_id) then
    return jsonb_build_object('ok', false, 'reason', 'voice_profile_not_found');
  end if;
  if jsonb_typeof(p_adaptations) is distinct from 'object' then
    raise exception 'adapt_save: adaptations must be a JSON object' using errcode = '22023';
  end if;

  -- Two identical requests at once both reach the model; the first stored
  -- answer is the one both get back (unless forced).
  perform pg_catalog.pg_advisory_xact_lock(
    pg_catalog.hashtextextended('content_adaptations:' || p_user_id::text || ':' || coalesce(p_idea_hash, ''), 0));
  if not coalesce(p_force, false) and p_idea_hash is not null then
    select a.* into v_row
      from public.content_adaptations a
     where a.user_id = p_user_id and a.idea_hash = p_idea_hash
     order by a.created_at desc, a.id
     limit 1;
    if v_row.id is not null then
      return jsonb_build_object('ok', true, 'deduplicated', true, 'adaptation', public.adapt_row_json(v_row));
    end if;
  end if;

  insert into public.content_adaptations
    (user_id, original_idea, idea_hash, adaptations, tone, target_audience, voice_profile_id, created_at, updated_at)
  values
    (p_user_id, p_original_idea, p_idea_hash, p_adaptations, p_tone, p_target_audience, p_voice_profile_id, p_now, p_now)
  returning * into v_row;

  if p_voice_profile_id is not null then
    update public.voice_profiles v set last_used_at = p_now
     where v.id = p_voice_profile_id and v.user_id = p_user_id;
  end if;
  return jsonb_build_object('ok', true, 'deduplicated', false, 'adaptation', public.adapt_row_json(v_row));
end
$$;

-- adapt_context, adapt_save_platform, adapt_get ---------------------------------

create function public.adapt_context(p_adaptation_id uuid, p_user_id uuid)
returns jsonb
language plpgsql
stable
security definer
set search_path = ''
as $$
declare
  v_row public.content_adaptations;
  v_profile public.voice_profiles;
begin
  select a.* into v_row
    from public.content_adaptations a
   where a.id = p_adaptation_id and a.user_id = p_user_id;
  if v_row.id is null then
    return jsonb_build_object('found', false);
  end if;
  -- The profile it was written in, if still the user's; else the default.
  v_profile := public.adapt_pick_profile(p_user_id, v_row.voice_profile_id);
  if v_profile.id is null then
    v_profile := public.adapt_pick_profile(p_user_id, null);
  end if;
  return jsonb_build_object(
    'found', true,
    'adaptation', public.adapt_row_json(v_row),
    'profile', case when v_profile.id is null then null else public.adapt_profile_json(v_profile) end,
    'prompts', public.adapt_prompts());
end
$$;

create function public.adapt_save_platform(
  p_adaptation_id uuid,
  p_user_id uuid,
  p_platform text,
  p_variant jsonb
) returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_row public.content_adaptations;
begin
  if p_platform is null or p_platform not in ('linkedin', 'x', 'bluesky', 'substack') then
    raise exception 'adapt_save_platform: unknown platform %', p_platform using errcode = '22023';
  end if;
  if jsonb_typeof(p_variant) is distinct from 'object' then
    raise exception 'adapt_save_platform: the variant must be a JSON object' using errcode = '22023';
  end if;
  update public.content_adaptations a
     set adaptations = jsonb_set(coalesce(a.adaptations, '{}'::jsonb), array[p_platform], p_variant, true)
   where a.id = p_adaptation_id and a.user_id = p_user_id
  returning a.* into v_row;
  if v_row.id is null then
    return jsonb_build_object('found', false);
  end if;
  return jsonb_build_object('found', true, 'adaptation', public.adapt_row_json(v_row));
end
$$;

create function public.adapt_get(p_adaptation_id uuid, p_user_id uuid)
returns jsonb
language sql
stable
security definer
set search_path = ''
as $$
  select coalesce(
    (select jsonb_build_object('found', true, 'adaptation', public.adapt_row_json(a))
       from public.content_adaptations a
      where a.id = p_adaptation_id and a.user_id = p_user_id),
    jsonb_build_object('found', false));
$$;

-- Grants -----------------------------------------------------------------------

revoke all on function public.adapt_prompts() from public, anon, authenticated;
revoke all on function public.adapt_profile_json(public.voice_profiles) from public, anon, authenticated;
revoke all on function public.adapt_row_json(public.content_adaptations) from public, anon, authenticated;
revoke all on function public.adapt_pick_profile(uuid, uuid) from public, anon, authenticated;
revoke all on function public.adapt_prepare(uuid, uuid) from public, anon, authenticated;
revoke all on function public.adapt_reserve_run(uuid, text, text, text, integer, text, timestamptz, integer) from public, anon, authenticated;
revoke all on function public.adapt_release_idea(uuid, text) from public, anon, authenticated;
revoke all on function public.adapt_idea_stored() from public, anon, authenticated;
revoke all on function public.adapt_settle_run(uuid, uuid, integer, integer, boolean, jsonb) from public, anon, authenticated;
revoke all on function public.adapt_save(uuid, text, text, uuid, text, text, jsonb, boolean, timestamptz) from public, anon, authenticated;
revoke all on function public.adapt_context(uuid, uuid) from public, anon, authenticated;
revoke all on function public.adapt_save_platform(uuid, uuid, text, jsonb) from public, anon, authenticated;
revoke all on function public.adapt_get(uuid, uuid) from public, anon, authenticated;

grant execute on function public.adapt_prepare(uuid, uuid) to service_role;
grant execute on function public.adapt_reserve_run(uuid, text, text, text, integer, text, timestamptz, integer) to service_role;
grant execute on function public.adapt_release_idea(uuid, text) to service_role;
grant select, insert, update, delete on table public.adapt_ideas_in_flight to service_role;
grant execute on function public.adapt_settle_run(uuid, uuid, integer, integer, boolean, jsonb) to service_role;
grant execute on function public.adapt_save(uuid, text, text, uuid, text, text, jsonb, boolean, timestamptz) to service_role;
grant execute on function public.adapt_context(uuid, uuid) to service_role;
grant execute on function public.adapt_save_platform(uuid, uuid, text, jsonb) to service_role;
grant execute on function public.adapt_get(uuid, uuid) to service_role;
