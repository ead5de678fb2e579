-- A LoRA training whose webhook never comes was left `training` forever
-- (0023 polled generations only). Trainings are now polled like
-- generations (`GET /v1/trainings/{id}`), with the token that created them:
-- a training belongs to one Replicate account, and another account's token
-- is answered 404 for it, which must not be read as "lost".

alter table public.user_loras
  add column replicate_token_id uuid,
  add column training_polled_at timestamptz;
comment on column public.user_loras.replicate_token_id is
  'The pool token the training was created with (worker-owned, like generations.replicate_token_id: no foreign key, a retired token stays retired): polls use it.';
comment on column public.user_loras.training_polled_at is
  'When ai-dispatch last heard of the running training, by starting it or polling it (worker-owned).';

-- The training was created at Replicate: status training, its id and the
-- token that created it kept. Replaces 0023's, which did not keep the token.
drop function public.start_lora_training(uuid, text, jsonb, timestamptz);
create function public.start_lora_training(
  p_lora_id uuid,
  p_training_id text,
  p_call jsonb,
  p_token_id uuid default null,
  p_now timestamptz default now()
) returns jsonb
language plpgsql
set search_path = ''
as $$
begin
  if p_call is not null then
    perform public.record_provider_call(p_call);
  end if;
  update public.user_loras l
     set status = 'training', replicate_training_id = p_training_id, replicate_token_id = p_token_id,
         training_lease_expires_at = null, training_polled_at = p_now, error = null
   where l.id = p_lora_id and l.status = 'uploading';
  return jsonb_build_object('started', found);
end
$$;

-- Trainings still running p_after_seconds after their last news (or last
-- poll), marked polled now: [{"id", "training_id", "user_id", "token_id",
-- "token"}], like claim_replicate_polls: "token" is the one that created
-- the training while it is active, otherwise null (the worker then asks
-- with the pool's next, whose 404 proves nothing).
create function public.claim_replicate_training_polls(
  p_worker_id text,
  p_after_seconds integer,
  p_max_items integer,
  p_now timestamptz default now()
) returns jsonb
language plpgsql
set search_path = ''
as $$
declare
  v_items jsonb;
begin
  if p_worker_id is null or length(p_worker_id) = 0 then
    raise exception 'claim: p_worker_id is required' using errcode = '22023';
  end if;
  with due as (
    select l.id
      from public.user_loras l
     where l.status = 'training'
       and l.replicate_training_id is not null
       and coalesce(l.training_polled_at, l.updated_at) <= p_now - make_interval(secs => greatest(p_after_seconds, 0))
     order by coalesce(l.training_polled_at, l.updated_at), l.id
     limit greatest(least(p_max_items, 100), 1)
     for update skip locked
  ), marked as (
    update public.user_loras l
       set training_polled_at = p_now
      from due
     where l.id = due.id
    returning l.id, l.replicate_training_id, l.user_id, l.replicate_token_id
  )
  select coalesce(jsonb_agg(jsonb_build_object(
           'id', m.id, 'training_id', m.replicate_training_id, 'user_id', m.user_id,
           'token_id', t.id, 'token', t.token)), '[]'::jsonb)
    into v_items
    from marked m
    left join public.replicate_tokens t on t.id = m.replicate_token_id and t.is_active;
  return v_items;
end
$$;

-- A training Replicate does not know when asked with the token that
-- created it: failed for good, the user told (like a 404 prediction).
create function public.lose_replicate_training(p_training_id text, p_now timestamptz default now())
returns jsonb
language sql
set search_path = ''
as $$
  select public.apply_replicate_training(
    jsonb_build_object('id', p_training_id, 'status', 'failed',
                       'error', 'Replicate has no such training (HTTP 404 when polled)'),
    null, p_now)
$$;

revoke all on function public.start_lora_training(uuid, text, jsonb, uuid, timestamptz) from public, anon, authenticated;
revoke all on function public.claim_replicate_training_polls(text, integer, integer, timestamptz) from public, anon, authenticated;
revoke all on function public.lose_replicate_training(text, timestamptz) from public, anon, authenticated;
