-- 17_replicate_webhook_order.sql: stored Replicate webhooks are claimed in
-- the order Replicate sent them (the verified webhook-timestamp the receiver
-- keeps in the payload as `webhook_timestamp`), then by arrival; an item
-- without it counts as sent when it arrived (issue 15, migration 0023).
-- Times are in 2031 (injected p_now) so nothing else is due.
begin;
set local client_min_messages = warning;
create extension if not exists pgtap;

create function pg_temp.t(p_sec text) returns timestamptz
language sql immutable as $$ select '2031-03-01 00:00:00+00'::timestamptz + p_sec::interval $$;
create function pg_temp.epoch(p_sec text) returns bigint
language sql immutable as $$ select extract(epoch from pg_temp.t(p_sec))::bigint $$;

select plan(10);

delete from public.ingested_items where platform = 'replicate';

-- Stored out of order: the completed webhook (sent at +20 s) arrives first,
-- the processing one (sent at +10 s) after it, then one with no timestamp
-- arriving at +15 s.
select public.store_webhook_event('replicate', 'replicate.prediction', 'msg_17_completed',
  jsonb_build_object('id', 'p17', 'status', 'succeeded', 'webhook_timestamp', pg_temp.epoch('20 seconds')),
  null, null, pg_temp.t('1 second'));
select public.store_webhook_event('replicate', 'replicate.prediction', 'msg_17_processing',
  jsonb_build_object('id', 'p17', 'status', 'processing', 'webhook_timestamp', pg_temp.epoch('10 seconds')),
  null, null, pg_temp.t('2 seconds'));
select public.store_webhook_event('replicate', 'replicate.prediction', 'msg_17_untimed',
  jsonb_build_object('id', 'p17b', 'status', 'starting'),
  null, null, pg_temp.t('15 seconds'));
-- A repeat of the processing webhook (same webhook-id, a later timestamp)
-- is deduplicated: the first delivery's timestamp stays.
select is(public.store_webhook_event('replicate', 'replicate.prediction', 'msg_17_processing',
  jsonb_build_object('id', 'p17', 'status', 'processing', 'webhook_timestamp', pg_temp.epoch('40 seconds')),
  null, null, pg_temp.t('41 seconds')) ->> 'duplicate', 'true', 'a repeated webhook-id is a duplicate');

create temp table first_claim as
  select public.claim_replicate_webhooks('t17', 600, 1, pg_temp.t('1 minute')) as c;
select is((select jsonb_array_length(c) from first_claim), 1, 'one item claimed');
select is((select c -> 0 ->> 'external_id' from first_claim), 'msg_17_processing',
  'the webhook sent first is claimed first although it arrived second');
select is((select (c -> 0 ->> 'sent_at')::timestamptz from first_claim), pg_temp.t('10 seconds'),
  'the claim says when it was sent');

create temp table second_claim as
  select public.claim_replicate_webhooks('t17', 600, 10, pg_temp.t('1 minute')) as c;
select is((select array_agg(e ->> 'external_id' order by n) from second_claim,
                  jsonb_array_elements(c) with ordinality as x(e, n)),
  array['msg_17_untimed', 'msg_17_completed'],
  'then the untimed one by its arrival (+15 s), then the completed one (sent +20 s)');
select is((select (c -> 0 ->> 'sent_at')::timestamptz from second_claim), pg_temp.t('15 seconds'),
  'an item without webhook_timestamp counts as sent when it arrived');

-- Same sending second: arrival decides.
select public.store_webhook_event('replicate', 'replicate.prediction', 'msg_17_tie_b',
  jsonb_build_object('id', 'p17c', 'status', 'processing', 'webhook_timestamp', pg_temp.epoch('30 seconds')),
  null, null, pg_temp.t('31 seconds'));
select public.store_webhook_event('replicate', 'replicate.prediction', 'msg_17_tie_a',
  jsonb_build_object('id', 'p17c', 'status', 'succeeded', 'webhook_timestamp', pg_temp.epoch('30 seconds')),
  null, null, pg_temp.t('32 seconds'));
select is((select array_agg(e ->> 'external_id' order by n)
             from jsonb_array_elements(public.claim_replicate_webhooks('t17', 600, 10, pg_temp.t('2 minutes')))
                  with ordinality as x(e, n)),
  array['msg_17_tie_b', 'msg_17_tie_a'], 'the same webhook-timestamp falls back to arrival order');

-- Values the receiver never writes fall back to arrival, never an error.
select is(public.replicate_webhook_sent_at('{"webhook_timestamp": "1700000000"}', pg_temp.t('0')), pg_temp.t('0'),
  'a text webhook_timestamp is ignored');
select is(public.replicate_webhook_sent_at('{"webhook_timestamp": 1e300}', pg_temp.t('0')), pg_temp.t('0'),
  'an out-of-range webhook_timestamp is ignored');
select is(public.replicate_webhook_sent_at('"not an object"', pg_temp.t('0')), pg_temp.t('0'),
  'a payload that is not an object counts as sent when it arrived');

select * from finish();
rollback;
