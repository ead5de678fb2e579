-- Provider calls and user notifications, written by workers.
--
-- Every worker that calls an outside provider (Replicate, Venice, an
-- OpenAI-compatible model, the OAuth platforms) records one api_logs row per
-- call, and tells users what happened to their work through notifications.
-- Both go through these two functions so the rows have one shape, and so a
-- component's statement returns one jsonb value (SPIN.md §0).
--
-- The callers keep secrets out: path without its query string, no tokens,
-- no prompts. The functions also strip a query string and cap the error
-- text, so a careless caller cannot log a token passed in a URL.

create function public.record_provider_call(p_call jsonb)
returns jsonb
language plpgsql
security definer
set search_path = public, pg_temp
as $$
declare
  v_id uuid;
  v_path text := split_part(coalesce(p_call->>'path', ''), '?', 1);
begin
  if coalesce(p_call->>'method', '') = '' or v_path = '' then
    raise exception 'record_provider_call: method and path are required'
      using errcode = '22023';
  end if;
  insert into public.api_logs (method, path, status_code, duration_ms, user_id, provider, model, error, metadata)
  values (
    upper(p_call->>'method'),
    left(v_path, 500),
    (p_call->>'status_code')::integer,
    greatest((p_call->>'duration_ms')::integer, 0),
    (p_call->>'user_id')::uuid,
    p_call->>'provider',
    p_call->>'model',
    left(p_call->>'error', 1000),
    coalesce(p_call->'metadata', '{}'::jsonb)
  )
  returning id into v_id;
  return jsonb_build_object('id', v_id);
end;
$$;

comment on function public.record_provider_call(jsonb) is
  'One api_logs row for one call a worker made to an outside provider (method, path without query, status_code, duration_ms, user_id, provider, model, error, metadata). Never given tokens or prompts.';

create function public.notify_user(
  p_user_id uuid,
  p_type text,
  p_title text,
  p_message text,
  p_data jsonb default '{}'::jsonb,
  p_link text default null
)
returns jsonb
language plpgsql
security definer
set search_path = public, pg_temp
as $$
declare
  v_id uuid;
begin
  if p_user_id is null or coalesce(p_type, '') = '' or coalesce(p_title, '') = '' then
    raise exception 'notify_user: user, type and title are required'
      using errcode = '22023';
  end if;
  insert into public.notifications (user_id, type, title, message, data, link)
  values (p_user_id, p_type, p_title, p_message, coalesce(p_data, '{}'::jsonb), p_link)
  returning id into v_id;
  return jsonb_build_object('id', v_id);
end;
$$;

comment on function public.notify_user(uuid, text, text, text, jsonb, text) is
  'One notifications row telling a user what a worker did with their work (a generation finished, an account needs reconnecting).';

-- Workers only: users must not forge provider logs or notifications.
revoke all on function public.record_provider_call(jsonb) from public, anon, authenticated;
revoke all on function public.notify_user(uuid, text, text, text, jsonb, text) from public, anon, authenticated;
grant execute on function public.record_provider_call(jsonb) to service_role;
grant execute on function public.notify_user(uuid, text, text, text, jsonb, text) to service_role;
