-- 0023: Replicate dispatch (issue 15): what ai-dispatch calls to send
-- generations to Replicate and apply what Replicate answers.
--
-- * Credits: a charge (0017's credit_charges, taken at first claim) is
--   settled when the work succeeds (settle_credit_charge) and given back
--   when it fails (refund_credit_charge, idempotent, for 'generations' and
--   'ai_jobs'); refund_failed_charges() sweeps the failures that ended some
--   other way (a lease that expired on the last attempt).
-- * Replicate's 600 creations per minute, across every worker:
--   replicate_creation_budget (the limit, one row) and
--   replicate_creation_seconds (creations per wall-clock second);
--   take_replicate_creation_slot() grants a creation when fewer than the
--   limit were granted in the last 61 one-second buckets (61, so that any
--   real 60-second interval is covered), else says how long to wait.
-- * begin_replicate_creation(): for a leased generation, the owner's LoRA
--   only, a budget slot and a token from the pool (get_next_replicate_token,
--   round robin under SKIP LOCKED); finish_replicate_creation() stores the
--   prediction id (status processing) and logs the call;
--   fail_replicate_generation() retries or dead-letters it (refunded,
--   user notified); retire_replicate_token() deactivates a refused token
--   and tells the admins, once.
-- * Webhooks the receiver stored (ingested_items, platform replicate):
--   claim_replicate_webhooks() in the order Replicate sent them, apply_replicate_prediction()
--   for a webhook or a poll: monotonic (a late processing never overwrites
--   a finished generation; repeats are no-ops), cost from metrics.predict_time
--   and replicate_model_prices, credits settled or refunded, the user notified.
-- * Polling: claim_replicate_polls() and claim_replicate_training_polls()
--   hand out generations and LoRA trainings still running after a delay,
--   with the token that created them.
-- * LoRA trainings: claim_lora_trainings() (pending -> uploading under a
--   lease, the owner's own images only), start_lora_training(),
--   fail_lora_training(), apply_replicate_training() (weights copied,
--   version kept, the user notified).
-- * replicate_status() for /status: counts only, never a token.
-- * generations gains replicate_token_id (which pool token created the
--   prediction: only that account may read it) and polled_at.

-- Credits: settle and refund -----------------------------------------------------------

alter table public.credit_charges
  add column settled_at timestamptz,
  add column refunded_at timestamptz,
  add column refund_reason text,
  add constraint credit_charge_settled_or_refunded check (settled_at is null or refunded_at is null);
comment on column public.credit_charges.settled_at is 'When the charged work succeeded: the credits are spent for good.';
comment on column public.credit_charges.refunded_at is 'When the charged work failed and the credits went back to the user (once).';

-- Gives the credits of a failed generation or AI job back to its user,
-- once: {"refunded": true, "credits", "balance"} or {"refunded": false,
-- "reason": "not_charged" | "already_refunded" | "settled"}.
create function public.refund_credit_charge(
  p_queue text,
  p_item_id uuid,
  p_reason text,
  p_now timestamptz default now()
) returns jsonb
language plpgsql
set search_path = ''
as $$
declare
  v_charge public.credit_charges;
  v_balance integer;
begin
  if p_queue is null or p_queue not in ('generations', 'ai_jobs') then
    raise exception 'refund_credit_charge: queue must be generations or ai_jobs, not %', p_queue
      using errcode = '22023';
  end if;
  update public.credit_charges c
     set refunded_at = p_now,
         refund_reason = left(coalesce(nullif(p_reason, ''), 'refunded'), 500)
   where c.queue = p_queue and c.item_id = p_item_id
     and c.refunded_at is null and c.settled_at is null
  returning * into v_charge;
  if not found then
    select * into v_charge from public.credit_charges c where c.queue = p_queue and c.item_id = p_item_id;
    return jsonb_build_object('refunded', false, 'reason',
      case when v_charge.item_id is null then 'not_charged'
           when v_charge.refunded_at is not null then 'already_refunded'
           else 'settled' end);
  end if;
  update public.users u set credits = u.credits + v_charge.credits
   where u.id = v_charge.user_id
  returning u.credits into v_balance;
  return jsonb_build_object('refunded', true, 'credits', v_charge.credits, 'balance', v_balance);
end
$$;
comment on function public.refund_credit_charge(text, uuid, text, timestamptz) is
  'Gives the credits charged for a failed generation or AI job back, once (idempotent); a settled charge is not refunded.';

-- Marks the charge of a succeeded item spent: {"settled": bool}.
create function public.settle_credit_charge(p_queue text, p_item_id uuid, p_now timestamptz default now())
returns jsonb
language sql
set search_path = ''
as $$
  with settled as (
    update public.credit_charges c
       set settled_at = p_now
     where c.queue = p_queue and c.item_id = p_item_id
       and c.settled_at is null and c.refunded_at is null
    returning 1
  )
  select jsonb_build_object('settled', exists (select 1 from settled))
$$;

-- Refunds every charge whose item failed or was canceled and is not
-- refunded yet (e.g. a lease that expired on its last attempt). Answers
-- {"refunded": n}.
create function public.refund_failed_charges(p_now timestamptz default now())
returns jsonb
language plpgsql
set search_path = ''
as $$
declare
  v_charge record;
  v_count integer := 0;
  v_answer jsonb;
begin
  for v_charge in
    select c.queue, c.item_id, coalesce(g.error, g.last_error, 'failed') as why
      from public.credit_charges c
      join public.generations g on g.id = c.item_id
     where c.queue = 'generations' and c.refunded_at is null and c.settled_at is null
       and g.status in ('failed', 'canceled')
    union all
    select c.queue, c.item_id, coalesce(j.last_error, 'failed')
      from public.credit_charges c
      join public.ai_jobs j on j.id = c.item_id
     where c.queue = 'ai_jobs' and c.refunded_at is null and c.settled_at is null
       and j.status = 'failed'
  loop
    v_answer := public.refund_credit_charge(v_charge.queue, v_charge.item_id, v_charge.why, p_now);
    if (v_answer ->> 'refunded')::boolean then
      v_count := v_count + 1;
    end if;
  end loop;
  return jsonb_build_object('refunded', v_count);
end
$$;

-- Replicate's creation budget ------------------------------------------------------------

create table public.replicate_creation_budget (
  id boolean primary key default true,
  per_minute integer not null default 600,
  updated_at timestamptz not null default now(),
  constraint one_budget_row check (id),
  constraint per_minute_positive check (per_minute > 0)
);
comment on table public.replicate_creation_budget is
  'Replicate''s prediction-creation limit shared by every worker (600 per minute). Service role only.';
insert into public.replicate_creation_budget (id, per_minute) values (true, 600);
create trigger update_replicate_creation_budget_updated_at
  before update on public.replicate_creation_budget
  for each row execute function public.update_updated_at();

create table public.replicate_creation_seconds (
  second bigint primary key,
  used integer not null default 0,
  constraint used_not_negative check (used >= 0)
);
comment on table public.replicate_creation_seconds is
  'Predictions created per Unix second (the last two minutes), for take_replicate_creation_slot(). Service role only.';

alter table public.replicate_creation_budget enable row level security;
alter table public.replicate_creation_seconds enable row level security;
create policy "Service role can manage the Replicate budget"
  on public.replicate_creation_budget for all to service_role using (true) with check (true);
create policy "Service role can manage the Replicate budget seconds"
  on public.replicate_creation_seconds for all to service_role using (true) with check (true);

-- {"granted": true, "used", "per_minute"} or {"granted": false,
-- "retry_after_seconds", ...}. The budget row lock serialises the callers.
create function public.take_replicate_creation_slot(p_now timestamptz default now())
returns jsonb
language plpgsql
set search_path = ''
as $$
declare
  v_limit integer;
  v_second bigint := floor(extract(epoch from p_now))::bigint;
  v_used integer;
  v_oldest bigint;
begin
  select b.per_minute into v_limit from public.replicate_creation_budget b where b.id for update;
  v_limit := coalesce(v_limit, 600);
  select coalesce(sum(s.used), 0), min(s.second) into v_used, v_oldest
    from public.replicate_creation_seconds s
   where s.second > v_second - 61 and s.second <= v_second and s.used > 0;
  if v_used >= v_limit then
    return jsonb_build_object('granted', false, 'used', v_used, 'per_minute', v_limit,
                              'retry_after_seconds', greatest(1, v_oldest + 61 - v_second));
  end if;
  insert into public.replicate_creation_seconds as s (second, used) values (v_second, 1)
  on conflict (second) do update set used = s.used + 1;
  delete from public.replicate_creation_seconds s where s.second <= v_second - 120;
  return jsonb_build_object('granted', true, 'used', v_used + 1, 'per_minute', v_limit, 'second', v_second);
end
$$;

-- Gives back a slot taken at p_second that was not used (no token free).
create function public.return_replicate_creation_slot(p_second bigint)
returns void
language sql
set search_path = ''
as $$
  update public.replicate_creation_seconds s set used = greatest(s.used - 1, 0) where s.second = p_second
$$;

-- Generations: which token, when polled -----------------------------------------------------

alter table public.generations
  add column replicate_token_id uuid,
  add column polled_at timestamptz;
comment on column public.generations.replicate_token_id is
  'The pool token that created the prediction (only its Replicate account can read the prediction back). No foreign key: a retired token may be deleted; polls then use the pool.';
comment on column public.generations.polled_at is
  'When ai-dispatch last asked Replicate for this prediction (webhook lost?).';
create index generations_poll_idx on public.generations ((coalesce(polled_at, updated_at)))
  where status = 'processing';

-- Prices per model ------------------------------------------------------------------------

create table public.replicate_model_prices (
  model text primary key,
  usd_per_second numeric(14, 8) not null default 0,
  usd_per_output numeric(14, 8) not null default 0,
  updated_at timestamptz not null default now(),
  constraint prices_not_negative check (usd_per_second >= 0 and usd_per_output >= 0)
);
comment on table public.replicate_model_prices is
  'What a Replicate model costs: per second of metrics.predict_time and per output file; model * is the default (an L40S, $0.000975/s).';
insert into public.replicate_model_prices (model, usd_per_second, usd_per_output) values ('*', 0.000975, 0);
create trigger update_replicate_model_prices_updated_at
  before update on public.replicate_model_prices
  for each row execute function public.update_updated_at();
alter table public.replicate_model_prices enable row level security;
create policy "Service role can manage Replicate prices"
  on public.replicate_model_prices for all to service_role using (true) with check (true);
create policy "Signed-in users can read Replicate prices"
  on public.replicate_model_prices for select to authenticated using (true);

-- Dispatch --------------------------------------------------------------------------------

-- What creating the prediction of a leased generation needs, or why not now:
--   {"ok": true, "token_id", "token", "lora": {...} | null, "slot_second"}
--   {"ok": false, "reason": "stale_lease"}
--   {"ok": false, "reason": "refused", "error"}              (fail it for good)
--   {"ok": false, "reason": "budget" | "no_token" | "lora_training", "retry_after_seconds"} (defer)
-- A LoRA is used only when it is the generation owner's own, trained one.
create function public.begin_replicate_creation(
  p_generation_id uuid,
  p_lease_token bigint,
  p_now timestamptz default now()
) returns jsonb
language plpgsql
set search_path = ''
as $$
declare
  v_row jsonb := public.queue_lock_leased('generations', p_generation_id, p_lease_token);
  v_lora public.user_loras;
  v_slot jsonb;
  v_token_id uuid;
  v_token text;
  v_wait integer;
begin
  if v_row is null then
    return jsonb_build_object('ok', false, 'reason', 'stale_lease');
  end if;
  if v_row ->> 'lora_id' is not null then
    select * into v_lora from public.user_loras l where l.id = (v_row ->> 'lora_id')::uuid;
    if v_lora.id is null then
      return jsonb_build_object('ok', false, 'reason', 'refused', 'error', 'refused: the LoRA no longer exists');
    end if;
    if v_lora.user_id is distinct from (v_row ->> 'user_id')::uuid then
      return jsonb_build_object('ok', false, 'reason', 'refused', 'error', 'refused: the LoRA belongs to another user');
    end if;
    if v_lora.status in ('pending', 'uploading', 'training') then
      return jsonb_build_object('ok', false, 'reason', 'lora_training', 'retry_after_seconds', 60);
    end if;
    if v_lora.status <> 'succeeded' or (v_lora.replicate_version is null and v_lora.weights_url is null) then
      return jsonb_build_object('ok', false, 'reason', 'refused',
                                'error', format('refused: the LoRA %s is %s, not trained', v_lora.name, v_lora.status));
    end if;
  end if;

  v_slot := public.take_replicate_creation_slot(p_now);
  if not (v_slot ->> 'granted')::boolean then
    return jsonb_build_object('ok', false, 'reason', 'budget',
                              'retry_after_seconds', (v_slot ->> 'retry_after_seconds')::integer);
  end if;

  select t.id, t.token into v_token_id, v_token from public.get_next_replicate_token() t;
  if v_token_id is null then
    perform public.return_replicate_creation_slot((v_slot ->> 'second')::bigint);
    select ceil(extract(epoch from min(t.cooldown_until) - p_now))::integer into v_wait
      from public.replicate_tokens t where t.is_active and t.cooldown_until > p_now;
    return jsonb_build_object('ok', false, 'reason', 'no_token',
                              'retry_after_seconds', greatest(coalesce(v_wait, 60), 1));
  end if;

  update public.generations g set replicate_token_id = v_token_id where g.id = p_generation_id;
  return jsonb_build_object(
    'ok', true,
    'token_id', v_token_id,
    'token', v_token,
    'lora', case when v_lora.id is null then null else jsonb_build_object(
      'id', v_lora.id, 'name', v_lora.name, 'trigger_word', v_lora.trigger_word,
      'replicate_model', v_lora.replicate_model, 'replicate_version', v_lora.replicate_version,
      'weights_url', v_lora.weights_url) end);
end
$$;

-- The prediction was created: status processing with its id, and the call
-- in api_logs (p_call as record_provider_call takes it, or null).
create function public.finish_replicate_creation(
  p_generation_id uuid,
  p_lease_token bigint,
  p_prediction_id text,
  p_call jsonb,
  p_now timestamptz default now()
) returns jsonb
language plpgsql
set search_path = ''
as $$
declare
  v_answer jsonb;
begin
  if p_call is not null then
    perform public.record_provider_call(p_call);
  end if;
  v_answer := public.complete_generation(p_generation_id, p_lease_token,
    jsonb_build_object('status', 'processing', 'replicate_prediction_id', p_prediction_id), p_now);
  if (v_answer ->> 'accepted')::boolean then
    update public.generations g set polled_at = null where g.id = p_generation_id;
  end if;
  return v_answer;
end
$$;

-- A dispatch attempt failed: retried with backoff, or dead-lettered
-- (permanent, or the last attempt): then its credits go back and the user
-- is told. p_call is logged when given.
create function public.fail_replicate_generation(
  p_generation_id uuid,
  p_lease_token bigint,
  p_error text,
  p_permanent boolean,
  p_retry_after_seconds integer,
  p_call jsonb,
  p_now timestamptz default now()
) returns jsonb
language plpgsql
set search_path = ''
as $$
declare
  v_answer jsonb;
  v_gen public.generations;
begin
  if p_call is not null then
    perform public.record_provider_call(p_call);
  end if;
  v_answer := public.fail_generation(p_generation_id, p_lease_token, p_error, p_permanent,
                                     p_retry_after_seconds, p_now);
  if (v_answer ->> 'accepted')::boolean and v_answer ->> 'status' = 'dead' then
    select * into v_gen from public.generations g where g.id = p_generation_id;
    v_answer := v_answer || jsonb_build_object('refund',
      public.refund_credit_charge('generations', p_generation_id, p_error, p_now));
    perform public.notify_user(v_gen.user_id, 'generation_failed', 'Your generation failed',
      left(p_error, 500), jsonb_build_object('generation_id', v_gen.id, 'model_id', v_gen.model_id),
      null);
  end if;
  return v_answer;
end
$$;

-- A token Replicate refused (401): deactivated, the admins told, once.
create function public.retire_replicate_token(p_token_id uuid, p_error text, p_now timestamptz default now())
returns jsonb
language plpgsql
set search_path = ''
as $$
declare
  v_label text;
  v_admin uuid;
  v_told integer := 0;
begin
  update public.replicate_tokens t
     set is_active = false,
         error_count = t.error_count + 1,
         last_error = left(p_error, 1000),
         last_error_at = p_now
   where t.id = p_token_id and t.is_active
  returning coalesce(t.label, t.id::text) into v_label;
  if not found then
    return jsonb_build_object('retired', false, 'reason', 'already_inactive');
  end if;
  for v_admin in select u.id from public.users u where u.role in ('admin', 'super_admin') and u.is_active loop
    perform public.notify_user(v_admin, 'replicate_token_refused', 'A Replicate token was refused',
      format('Replicate refused the pool token %s (%s); it is deactivated. Replace it in replicate_tokens.',
             v_label, left(p_error, 200)),
      jsonb_build_object('token_id', p_token_id), null);
    v_told := v_told + 1;
  end loop;
  return jsonb_build_object('retired', true, 'admins_told', v_told);
end
$$;

-- Applying predictions (webhooks and polls) -------------------------------------------------

-- Stored webhooks are applied in the order Replicate sent them, not the
-- order they arrived: the receiver (functions/webhook-receiver) keeps each
-- Replicate webhook's verified `webhook-timestamp` (Unix seconds) in the
-- stored payload under `webhook_timestamp` (no column: the prediction object
-- has no such field). Items stored without it (a body that is not a JSON
-- object) count as sent when they arrived. Repeats of one webhook-id are
-- deduplicated at storing, so the first delivery's timestamp is kept. Order
-- is a courtesy, not what correctness rests on: apply_replicate_prediction()
-- stays monotonic (finished is final).

-- When a stored Replicate webhook was sent: its `webhook_timestamp`, when it
-- is a plausible Unix time in seconds, else p_received_at.
create function public.replicate_webhook_sent_at(p_payload jsonb, p_received_at timestamptz)
returns timestamptz
language sql immutable
set search_path = ''
as $$
  select case
    when jsonb_typeof(p_payload) = 'object'
     and jsonb_typeof(p_payload -> 'webhook_timestamp') = 'number'
     and (p_payload ->> 'webhook_timestamp')::numeric between 0 and 32503680000
    then to_timestamp((p_payload ->> 'webhook_timestamp')::double precision)
    else p_received_at
  end
$$;
comment on function public.replicate_webhook_sent_at(jsonb, timestamptz) is
  'When Replicate sent a stored webhook: the verified webhook-timestamp the receiver kept in the payload, else its arrival.';
revoke all on function public.replicate_webhook_sent_at(jsonb, timestamptz) from public, anon, authenticated;
grant execute on function public.replicate_webhook_sent_at(jsonb, timestamptz) to service_role;

-- Pending Replicate webhooks, earliest sent first (then earliest arrival),
-- leased like any queue item (finish with complete_ingested_item /
-- fail_ingested_item). Each item carries `sent_at`.
create function public.claim_replicate_webhooks(
  p_worker_id text,
  p_lease_seconds integer,
  p_max_items integer,
  p_now timestamptz default now()
) returns jsonb
language plpgsql
set search_path = ''
as $$
declare
  v_items jsonb;
  v_item jsonb;
begin
  if p_worker_id is null or length(p_worker_id) = 0 then
    raise exception 'claim: p_worker_id is required' using errcode = '22023';
  end if;
  if p_lease_seconds is null or p_lease_seconds < 1 or p_max_items is null or p_max_items < 1 or p_max_items > 1000 then
    raise exception 'claim: p_lease_seconds >= 1 and p_max_items in 1..1000' using errcode = '22023';
  end if;
  perform public.queue_release_expired('ingested_items', p_now);
  with locked as (
    select q.id, public.replicate_webhook_sent_at(q.payload, q.received_at) as sent_at
      from public.ingested_items q
     where q.status = 'pending'
       and q.platform = 'replicate'
       and q.next_attempt_at <= p_now
     order by public.replicate_webhook_sent_at(q.payload, q.received_at), q.received_at, q.id
     limit p_max_items
     for update of q skip locked
  ), claimed as (
    update public.ingested_items t
       set status = 'processing',
           attempts = t.attempts + 1,
           started_at = p_now,
           locked_at = p_now,
           locked_by = p_worker_id,
           lease_expires_at = p_now + make_interval(secs => p_lease_seconds),
           lease_token = nextval('public.queue_lease_token_seq')
      from locked
     where t.id = locked.id
    returning t.id, t.lease_token, t.payload, t.received_at, locked.sent_at, t.attempts, t.max_attempts, t.external_id
  )
  select coalesce(jsonb_agg(to_jsonb(c.*) order by c.sent_at, c.received_at, c.id), '[]'::jsonb)
    into v_items from claimed c;
  for v_item in select * from jsonb_array_elements(v_items) loop
    perform public.queue_event('ingested_items', (v_item ->> 'id')::uuid, 'claimed',
      (v_item ->> 'lease_token')::bigint, p_worker_id,
      jsonb_build_object('attempt', (v_item ->> 'attempts')::int), p_now);
  end loop;
  return v_items;
end
$$;
comment on function public.claim_replicate_webhooks(text, integer, integer, timestamptz) is
  'Service only: leases pending Replicate webhooks, earliest webhook-timestamp first, then earliest arrival.';

-- Who a prediction (or training) id belongs to:
-- {"kind": "generation", "id", "user_id", "status", "finished", "model_id"},
-- {"kind": "lora", ...} or {"kind": null}.
create function public.replicate_prediction_target(p_prediction_id text)
returns jsonb
language plpgsql stable
set search_path = ''
as $$
declare
  v_gen public.generations;
  v_lora public.user_loras;
begin
  select * into v_gen from public.generations g where g.replicate_prediction_id = p_prediction_id
   order by g.created_at desc limit 1;
  if v_gen.id is not null then
    return jsonb_build_object('kind', 'generation', 'id', v_gen.id, 'user_id', v_gen.user_id,
      'status', v_gen.status, 'model_id', v_gen.model_id,
      'finished', v_gen.status in ('succeeded', 'failed', 'canceled'));
  end if;
  select * into v_lora from public.user_loras l where l.replicate_training_id = p_prediction_id
   order by l.created_at desc limit 1;
  if v_lora.id is not null then
    return jsonb_build_object('kind', 'lora', 'id', v_lora.id, 'user_id', v_lora.user_id,
      'status', v_lora.status, 'name', v_lora.name,
      'finished', v_lora.status in ('succeeded', 'failed', 'canceled'));
  end if;
  return jsonb_build_object('kind', null);
end
$$;

-- What the dollar cost of a prediction of p_model is.
create function public.replicate_prediction_cost(p_model text, p_predict_time double precision, p_outputs integer)
returns numeric
language sql stable
set search_path = ''
as $$
  select round(coalesce(p_predict_time, 0)::numeric * p.usd_per_second
               + coalesce(p_outputs, 0) * p.usd_per_output, 6)
    from public.replicate_model_prices p
   where p.model in (p_model, split_part(p_model, ':', 1), '*')
   order by (p.model = '*'), length(p.model) desc
   limit 1
$$;

-- Applies one prediction as Replicate reported it (webhook or poll) to its
-- generation. p_prediction: Replicate's prediction object (id, status,
-- error, metrics.predict_time); p_copies: for "succeeded", our copies
-- {"output_urls": [...], "output_thumbs": [...]}. Monotonic: a finished
-- generation never changes again, starting/processing change nothing.
-- {"applied": bool, "reason"?, "status"?, "id"?}
create function public.apply_replicate_prediction(
  p_prediction jsonb,
  p_copies jsonb default null,
  p_now timestamptz default now()
) returns jsonb
language plpgsql
set search_path = ''
as $$
declare
  v_id text := p_prediction ->> 'id';
  v_status text := p_prediction ->> 'status';
  v_gen public.generations;
  v_result jsonb;
  v_cost numeric;
  v_error text;
  v_outputs integer;
begin
  if v_id is null or v_status is null then
    return jsonb_build_object('applied', false, 'reason', 'not_a_prediction');
  end if;
  select * into v_gen from public.generations g where g.replicate_prediction_id = v_id
   order by g.created_at desc limit 1 for update;
  if v_gen.id is null then
    return jsonb_build_object('applied', false, 'reason', 'unknown_prediction');
  end if;
  if v_gen.status in ('succeeded', 'failed', 'canceled') then
    return jsonb_build_object('applied', false, 'reason', 'already_finished', 'status', v_gen.status, 'id', v_gen.id);
  end if;
  if v_status in ('starting', 'processing') then
    return jsonb_build_object('applied', true, 'status', v_gen.status, 'id', v_gen.id, 'changed', false);
  end if;

  if v_status = 'succeeded' then
    if p_copies is null or jsonb_typeof(p_copies -> 'output_urls') is distinct from 'array' then
      raise exception 'apply_replicate_prediction: a succeeded prediction needs our copies of its outputs'
        using errcode = '22023';
    end if;
    v_outputs := jsonb_array_length(p_copies -> 'output_urls');
    v_cost := public.replicate_prediction_cost(v_gen.model_id,
      (p_prediction #>> '{metrics,predict_time}')::double precision, v_outputs);
    v_result := public.record_generation_result(v_id, jsonb_build_object(
      'status', 'succeeded',
      'output_urls', p_copies -> 'output_urls',
      'output_thumbs', coalesce(p_copies -> 'output_thumbs', '[]'::jsonb),
      'cost_usd', v_cost), v_gen.id, p_now);
    if (v_result ->> 'applied')::boolean then
      perform public.settle_credit_charge('generations', v_gen.id, p_now);
      perform public.notify_user(v_gen.user_id, 'generation_succeeded', 'Your generation is ready',
        format('%s output%s from %s', v_outputs, case when v_outputs = 1 then '' else 's' end, v_gen.model_id),
        jsonb_build_object('generation_id', v_gen.id, 'output_urls', p_copies -> 'output_urls'), null);
    end if;
    return v_result || jsonb_build_object('cost_usd', v_cost);
  end if;

  if v_status in ('failed', 'canceled', 'aborted') then
    v_error := case v_status
      when 'failed' then coalesce(nullif(p_prediction ->> 'error', ''), 'Replicate reported the prediction failed')
      else format('the prediction was %s', v_status) end;
    v_result := public.record_generation_result(v_id, jsonb_build_object(
      'status', case when v_status = 'failed' then 'failed' else 'canceled' end,
      'error', left(v_error, 2000)), v_gen.id, p_now);
    if (v_result ->> 'applied')::boolean then
      update public.generations g set error = coalesce(g.error, left(v_error, 2000)) where g.id = v_gen.id;
      v_result := v_result || jsonb_build_object('refund',
        public.refund_credit_charge('generations', v_gen.id, v_error, p_now));
      perform public.notify_user(v_gen.user_id, 'generation_failed',
        case when v_status = 'failed' then 'Your generation failed' else 'Your generation was canceled' end,
        left(v_error, 500), jsonb_build_object('generation_id', v_gen.id, 'model_id', v_gen.model_id), null);
    end if;
    return v_result;
  end if;
  return jsonb_build_object('applied', false, 'reason', 'unknown_status', 'status', v_status);
end
$$;

-- A succeeded prediction whose outputs Replicate already deleted (or that
-- cannot be copied for good): failed, refunded, the user told.
create function public.fail_replicate_outputs(p_prediction_id text, p_error text, p_now timestamptz default now())
returns jsonb
language sql
set search_path = ''
as $$
  select public.apply_replicate_prediction(
    jsonb_build_object('id', p_prediction_id, 'status', 'failed', 'error', p_error), null, p_now)
$$;

-- Polling --------------------------------------------------------------------------------

-- Generations still processing p_after_seconds after their last news,
-- marked polled now, each with the token that created it (or, when that
-- one is gone, the next in the pool): [{"id", "prediction_id", "user_id",
-- "model_id", "token_id", "token"}].
create function public.claim_replicate_polls(
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
  with due as (
    select g.id
      from public.generations g
     where g.status = 'processing'
       and g.replicate_prediction_id is not null
       and coalesce(g.polled_at, g.updated_at) <= p_now - make_interval(secs => greatest(p_after_seconds, 0))
     order by coalesce(g.polled_at, g.updated_at), g.id
     limit greatest(least(p_max_items, 1000), 1)
     for update skip locked
  ), marked as (
    update public.generations g
       set polled_at = p_now
      from due
     where g.id = due.id
    returning g.id, g.replicate_prediction_id, g.user_id, g.model_id, g.replicate_token_id
  )
  select coalesce(jsonb_agg(jsonb_build_object(
           'id', m.id, 'prediction_id', m.replicate_prediction_id, 'user_id', m.user_id,
           'model_id', m.model_id, 'token_id', t.id, 'token', t.token)), '[]'::jsonb)
    into v_items
    from marked m
    left join public.replicate_tokens t on t.id = m.replicate_token_id and t.is_active;
  return v_items;
end
$$;

-- The next pool token as jsonb ({"id", "token"} or null), for polls whose
-- own token is gone.
create function public.next_replicate_token()
returns jsonb
language sql
set search_path = ''
as $$
  select to_jsonb(t.*) from public.get_next_replicate_token() t
$$;

-- Grants: service role only --------------------------------------------------------------

revoke all on function public.refund_credit_charge(text, uuid, text, timestamptz) from public, anon, authenticated;
revoke all on function public.settle_credit_charge(text, uuid, timestamptz) from public, anon, authenticated;
revoke all on function public.refund_failed_charges(timestamptz) from public, anon, authenticated;
revoke all on function public.take_replicate_creation_slot(timestamptz) from public, anon, authenticated;
revoke all on function public.return_replicate_creation_slot(bigint) from public, anon, authenticated;
revoke all on function public.begin_replicate_creation(uuid, bigint, timestamptz) from public, anon, authenticated;
revoke all on function public.finish_replicate_creation(uuid, bigint, text, jsonb, timestamptz) from public, anon, authenticated;
revoke all on function public.fail_replicate_generation(uuid, bigint, text, boolean, integer, jsonb, timestamptz) from public, anon, authenticated;
revoke all on function public.retire_replicate_token(uuid, text, timestamptz) from public, anon, authenticated;
revoke all on function public.claim_replicate_webhooks(text, integer, integer, timestamptz) from public, anon, authenticated;
revoke all on function public.replicate_prediction_target(text) from public, anon, authenticated;
revoke all on function public.replicate_prediction_cost(text, double precision, integer) from public, anon, authenticated;
revoke all on function public.apply_replicate_prediction(jsonb, jsonb, timestamptz) from public, anon, authenticated;
revoke all on function public.fail_replicate_outputs(text, text, timestamptz) from public, anon, authenticated;
revoke all on function public.claim_replicate_polls(text, integer, integer, timestamptz) from public, anon, authenticated;
revoke all on function public.next_replicate_token() from public, anon, authenticated;

grant execute on function public.refund_credit_charge(text, uuid, text, timestamptz) to service_role;
grant execute on function public.settle_credit_charge(text, uuid, timestamptz) to service_role;
grant execute on function public.refund_failed_charges(timestamptz) to service_role;
grant execute on function public.take_replicate_creation_slot(timestamptz) to service_role;
grant execute on function public.return_replicate_creation_slot(bigint) to service_role;
grant execute on function public.begin_replicate_creation(uuid, bigint, timestamptz) to service_role;
grant execute on function public.finish_replicate_creation(uuid, bigint, text, jsonb, timestamptz) to service_role;
grant execute on function public.fail_replicate_generation(uuid, bigint, text, boolean, integer, jsonb, timestamptz) to service_role;
grant execute on function public.retire_replicate_token(uuid, text, timestamptz) to service_role;
grant execute on function public.claim_replicate_webhooks(text, integer, integer, timestamptz) to service_role;
grant execute on function public.replicate_prediction_target(text) to service_role;
grant execute on function public.replicate_prediction_cost(text, double precision, integer) to service_role;
grant execute on function public.apply_replicate_prediction(jsonb, jsonb, timestamptz) to service_role;
grant execute on function public.fail_replicate_outputs(text, text, timestamptz) to service_role;
grant execute on function public.claim_replicate_polls(text, integer, integer, timestamptz) to service_role;
grant execute on function public.next_replicate_token() to service_role;

-- LoRA trainings ---------------------------------------------------------------------------

-- A training is claimed (pending -> uploading) with a lease, so two workers
-- never zip and start the same one; an expired lease hands it out again.
alter table public.user_loras
  add column training_attempts integer not null default 0,
  add column training_lease_expires_at timestamptz,
  add constraint training_attempts_not_negative check (training_attempts >= 0);
comment on column public.user_loras.training_lease_expires_at is
  'While status is uploading: until when the worker that zips the images and starts the training holds it.';

-- A training remembers the pool token that created it, and when it was
-- last heard of, so one whose webhook never comes is polled
-- (`GET /v1/trainings/{id}`) with that token: a training belongs to one
-- Replicate account, and another account's token is answered 404 for it,
-- which must not be read as "lost".
alter table public.user_loras
  add column replicate_token_id uuid,
  add column training_polled_at timestamptz;
comment on column public.user_loras.replicate_token_id is
  'The pool token the training was created with (worker-owned, like generations.replicate_token_id: no foreign key, a retired token stays retired): polls use it.';
comment on column public.user_loras.training_polled_at is
  'When ai-dispatch last heard of the running training, by starting it or polling it (worker-owned).';

-- LoRAs waiting for a training: [{"id", "user_id", "name", "trigger_word",
-- "training_params", "attempts", "images": [{"storage_path", "caption"}]}].
-- Only the owner's own images under the owner's folder are handed out.
create function public.claim_lora_trainings(
  p_worker_id text,
  p_lease_seconds integer,
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
     where l.replicate_training_id is null
       and (l.status = 'pending' or (l.status = 'uploading' and l.training_lease_expires_at <= p_now))
     order by l.created_at, l.id
     limit greatest(least(p_max_items, 100), 1)
     for update skip locked
  ), claimed as (
    update public.user_loras l
       set status = 'uploading',
           training_attempts = l.training_attempts + 1,
           training_lease_expires_at = p_now + make_interval(secs => greatest(p_lease_seconds, 1))
      from due
     where l.id = due.id
    returning l.*
  )
  select coalesce(jsonb_agg(jsonb_build_object(
           'id', c.id, 'user_id', c.user_id, 'name', c.name, 'trigger_word', c.trigger_word,
           'training_params', c.training_params, 'attempts', c.training_attempts,
           'images', (select coalesce(jsonb_agg(jsonb_build_object('storage_path', i.storage_path, 'caption', i.caption)
                                                order by i.created_at, i.id), '[]'::jsonb)
                        from public.lora_training_images i
                       where i.lora_id = c.id and i.user_id = c.user_id
                         and split_part(i.storage_path, '/', 1) = c.user_id::text))), '[]'::jsonb)
    into v_items
    from claimed c;
  return v_items;
end
$$;

-- The training was created at Replicate: status training, its id and the
-- token that created it kept (polls ask with it).
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


-- Starting a training failed: back to pending (tried again next run) or,
-- when permanent or after 3 attempts, failed and the user told.
create function public.fail_lora_training(
  p_lora_id uuid, p_error text, p_permanent boolean, p_call jsonb, p_now timestamptz default now())
returns jsonb
language plpgsql
set search_path = ''
as $$
declare
  v_lora public.user_loras;
begin
  if p_call is not null then
    perform public.record_provider_call(p_call);
  end if;
  select * into v_lora from public.user_loras l where l.id = p_lora_id and l.status = 'uploading' for update;
  if not found then
    return jsonb_build_object('accepted', false, 'reason', 'not_uploading');
  end if;
  if coalesce(p_permanent, false) or v_lora.training_attempts >= 3 then
    update public.user_loras l
       set status = 'failed', error = left(p_error, 2000), completed_at = p_now, training_lease_expires_at = null
     where l.id = p_lora_id;
    perform public.notify_user(v_lora.user_id, 'lora_failed', 'Your LoRA training failed', left(p_error, 500),
      jsonb_build_object('lora_id', v_lora.id, 'name', v_lora.name), null);
    return jsonb_build_object('accepted', true, 'status', 'failed');
  end if;
  update public.user_loras l
     set status = 'pending', error = left(p_error, 2000), training_lease_expires_at = null
   where l.id = p_lora_id;
  return jsonb_build_object('accepted', true, 'status', 'pending');
end
$$;

-- Applies a training as Replicate reported it (webhook or poll). p_copy:
-- for succeeded, {"storage_path", "weights_url"} of our copy of the
-- weights. Monotonic like apply_replicate_prediction.
create function public.apply_replicate_training(p_training jsonb, p_copy jsonb default null, p_now timestamptz default now())
returns jsonb
language plpgsql
set search_path = ''
as $$
declare
  v_status text := p_training ->> 'status';
  v_lora public.user_loras;
  v_error text;
begin
  select * into v_lora from public.user_loras l where l.replicate_training_id = p_training ->> 'id' for update;
  if not found then
    return jsonb_build_object('applied', false, 'reason', 'unknown_training');
  end if;
  if v_lora.status in ('succeeded', 'failed', 'canceled') then
    return jsonb_build_object('applied', false, 'reason', 'already_finished', 'status', v_lora.status, 'id', v_lora.id);
  end if;
  if v_status in ('starting', 'processing') then
    return jsonb_build_object('applied', true, 'changed', false, 'id', v_lora.id);
  end if;
  if v_status = 'succeeded' then
    if p_copy is null or p_training #>> '{output,version}' is null then
      raise exception 'apply_replicate_training: a succeeded training needs its version and our copy of the weights'
        using errcode = '22023';
    end if;
    update public.user_loras l
       set status = 'succeeded',
           replicate_version = p_training #>> '{output,version}',
           replicate_model = split_part(p_training #>> '{output,version}', ':', 1),
           weights_url = p_copy ->> 'weights_url',
           storage_path = p_copy ->> 'storage_path',
           cost_usd = public.replicate_prediction_cost(coalesce(p_training ->> 'model', '*'),
                        (p_training #>> '{metrics,predict_time}')::double precision, 0),
           completed_at = p_now,
           error = null
     where l.id = v_lora.id;
    perform public.notify_user(v_lora.user_id, 'lora_succeeded', 'Your LoRA is trained',
      format('%s is ready to use', v_lora.name), jsonb_build_object('lora_id', v_lora.id), null);
    return jsonb_build_object('applied', true, 'status', 'succeeded', 'id', v_lora.id);
  end if;
  if v_status in ('failed', 'canceled', 'aborted') then
    v_error := coalesce(nullif(p_training ->> 'error', ''), format('the training was %s', v_status));
    update public.user_loras l
       set status = case when v_status = 'failed' then 'failed' else 'canceled' end,
           error = left(v_error, 2000), completed_at = p_now
     where l.id = v_lora.id;
    perform public.notify_user(v_lora.user_id, 'lora_failed', 'Your LoRA training failed', left(v_error, 500),
      jsonb_build_object('lora_id', v_lora.id), null);
    return jsonb_build_object('applied', true, 'status', v_status, 'id', v_lora.id);
  end if;
  return jsonb_build_object('applied', false, 'reason', 'unknown_status', 'status', v_status);
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

-- What /status shows of Replicate: generations at Replicate and the oldest
-- one's age, stored webhooks waiting or dead, the pool (counts only, never
-- a token), trainings running, and the budget used in the last minute.
create function public.replicate_status(p_now timestamptz default now())
returns jsonb
language sql stable
set search_path = ''
as $$
  select jsonb_build_object(
    'generations_processing', (select count(*) from public.generations g where g.status = 'processing'),
    'oldest_processing_seconds', (select round(extract(epoch from p_now - min(g.updated_at))::numeric, 0)
                                    from public.generations g where g.status = 'processing'),
    'webhooks_pending', (select count(*) from public.ingested_items i
                          where i.platform = 'replicate' and i.status in ('pending', 'processing')),
    'webhooks_dead', (select count(*) from public.ingested_items i
                       where i.platform = 'replicate' and i.status in ('dead_letter', 'failed')),
    'trainings_running', (select count(*) from public.user_loras l where l.status in ('uploading', 'training')),
    'tokens', (select jsonb_build_object(
                 'active', count(*) filter (where t.is_active and (t.cooldown_until is null or t.cooldown_until <= p_now)),
                 'cooling_down', count(*) filter (where t.is_active and t.cooldown_until > p_now),
                 'inactive', count(*) filter (where not t.is_active))
                 from public.replicate_tokens t),
    'creations_last_minute', (select coalesce(sum(s.used), 0) from public.replicate_creation_seconds s
                               where s.second > floor(extract(epoch from p_now))::bigint - 61),
    'per_minute', (select b.per_minute from public.replicate_creation_budget b where b.id))
$$;

revoke all on function public.claim_lora_trainings(text, integer, integer, timestamptz) from public, anon, authenticated;
revoke all on function public.start_lora_training(uuid, text, jsonb, uuid, timestamptz) from public, anon, authenticated;
revoke all on function public.claim_replicate_training_polls(text, integer, integer, timestamptz) from public, anon, authenticated;
revoke all on function public.lose_replicate_training(text, timestamptz) from public, anon, authenticated;
revoke all on function public.fail_lora_training(uuid, text, boolean, jsonb, timestamptz) from public, anon, authenticated;
revoke all on function public.apply_replicate_training(jsonb, jsonb, timestamptz) from public, anon, authenticated;
revoke all on function public.replicate_status(timestamptz) from public, anon, authenticated;
grant execute on function public.claim_lora_trainings(text, integer, integer, timestamptz) to service_role;
grant execute on function public.start_lora_training(uuid, text, jsonb, uuid, timestamptz) to service_role;
grant execute on function public.claim_replicate_training_polls(text, integer, integer, timestamptz) to service_role;
grant execute on function public.lose_replicate_training(text, timestamptz) to service_role;
grant execute on function public.fail_lora_training(uuid, text, boolean, jsonb, timestamptz) to service_role;
grant execute on function public.apply_replicate_training(jsonb, jsonb, timestamptz) to service_role;
grant execute on function public.replicate_status(timestamptz) to service_role;
