-- 16_provider_calls.sql: the api_logs and notifications writers of
-- migration 0020, used by every worker that calls an outside provider.
begin;
set local client_min_messages = warning;
create extension if not exists pgtap;
select plan(10);

insert into auth.users (id, email) values
  ('16000000-0000-0000-0000-000000000001', 'pc1@example.test');

select ok(
  (public.record_provider_call(jsonb_build_object(
     'method', 'post', 'path', '/v1/predictions?access_token=s3cr3t', 'status_code', 201,
     'duration_ms', 42, 'user_id', '16000000-0000-0000-0000-000000000001',
     'provider', 'replicate', 'model', 'owner/model')) ? 'id'),
  'record_provider_call answers the new row id');
select results_eq(
  $$ select method, path, status_code, duration_ms, provider, model from public.api_logs where user_id = '16000000-0000-0000-0000-000000000001' $$,
  $$ values ('POST'::text, '/v1/predictions'::text, 201, 42, 'replicate'::text, 'owner/model'::text) $$,
  'the row keeps method, status, duration, provider and model');
select is((select count(*)::int from public.api_logs where path like '%s3cr3t%' or metadata::text like '%s3cr3t%'), 0,
  'a query string (and any token in it) is cut from the path');
select throws_ok(
  $$ select public.record_provider_call('{"method": "GET"}') $$, '22023', null,
  'a call without a path is refused');
select is(
  (select count(*)::int from public.api_logs where status_code is null),
  0, 'the refused call wrote nothing');

select ok(
  (public.notify_user('16000000-0000-0000-0000-000000000001', 'generation_succeeded',
     'Your image is ready', 'One image', '{"generation_id": "g1"}', '/studio/g1') ? 'id'),
  'notify_user answers the new row id');
select results_eq(
  $$ select type, title, message, data, link, read from public.notifications where user_id = '16000000-0000-0000-0000-000000000001' $$,
  $$ values ('generation_succeeded'::text, 'Your image is ready'::text, 'One image'::text,
             '{"generation_id": "g1"}'::jsonb, '/studio/g1'::text, false) $$,
  'the notification holds what the user reads, unread');
select throws_ok(
  $$ select public.notify_user(null, 'x', 'y', null) $$, '22023', null,
  'a notification needs its user');

select ok(not has_function_privilege('authenticated', 'public.record_provider_call(jsonb)', 'execute'),
  'users cannot forge provider logs');
select ok(not has_function_privilege('authenticated', 'public.notify_user(uuid, text, text, text, jsonb, text)', 'execute'),
  'users cannot forge notifications');

select * from finish();
rollback;
