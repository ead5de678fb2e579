-- 0028_replicate_webhook_order.sql: stored Replicate webhooks are applied in
-- the order Replicate sent them (issue 15), not the order they arrived.
--
-- The receiver (functions/webhook-receiver) keeps each Replicate webhook's
-- verified `webhook-timestamp` (Unix seconds) in the stored payload under
-- the key `webhook_timestamp` (no column added: the prediction object has no
-- such field). claim_replicate_webhooks() (0023) is redefined to hand items
-- out by that time, then by arrival; items stored without it (before this
-- migration, or a body that is not a JSON object) count as sent when they
-- arrived. Repeats of one webhook-id are deduplicated at storing, so the
-- first delivery's timestamp is the one kept.
--
-- Order is a courtesy, not what correctness rests on: a webhook sent earlier
-- that arrives after a later one was already applied is still applied, and
-- apply_replicate_prediction() stays monotonic (finished is final).

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
create or replace function public.claim_replicate_webhooks(
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
