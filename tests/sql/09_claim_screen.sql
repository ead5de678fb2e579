-- 09_claim_screen.sql: the one-statement screen of claimed scheduled posts
-- (migration 0020) lets a batch through unchecked only when no post of it
-- could be refused; every kind of refusal sends the batch to the full check.
begin;
set local client_min_messages = warning;
create extension if not exists pgtap;
select plan(10);

insert into auth.users (id, email) values
  ('00000000-0000-4000-8000-0000000009a1', 'screen-owner@example.test'),
  ('00000000-0000-4000-8000-0000000009a2', 'screen-other@example.test');
insert into public.connected_accounts (id, user_id, platform, platform_user_id, username, account_did, verified_at) values
  ('00000000-0000-4000-8000-00000009ca01', '00000000-0000-4000-8000-0000000009a1', 'x', 'x-9-owner', 'owner9', null, now()),
  ('00000000-0000-4000-8000-00000009ca02', '00000000-0000-4000-8000-0000000009a2', 'x', 'x-9-other', 'other9', null, now()),
  ('00000000-0000-4000-8000-00000009ca03', '00000000-0000-4000-8000-0000000009a1', 'x', 'x-9-unproven', 'unproven9', null, null),
  ('00000000-0000-4000-8000-00000009ca04', '00000000-0000-4000-8000-0000000009a1', 'bluesky', 'did:plc:screen9', 'owner9.bsky', 'did:plc:screen9', null);
insert into public.drafts (id, user_id, text) values
  ('00000000-0000-4000-8000-00000009d001', '00000000-0000-4000-8000-0000000009a1', 'own'),
  ('00000000-0000-4000-8000-00000009d002', '00000000-0000-4000-8000-0000000009a2', 'theirs');

create function pg_temp.post(p jsonb) returns jsonb language sql immutable as $$
  select jsonb_build_array(jsonb_build_object('id', gen_random_uuid(),
    'user_id', '00000000-0000-4000-8000-0000000009a1') || p)
$$;

select ok(public.scheduled_posts_batch_is_clean(
  pg_temp.post('{"account_id": "00000000-0000-4000-8000-00000009ca01", "draft_id": "00000000-0000-4000-8000-00000009d001"}')
  || pg_temp.post('{"account_id": "00000000-0000-4000-8000-00000009ca04", "media": [{"bucket": "media", "path": "x.png"}]}')
  || pg_temp.post('{"account_did": "did:plc:screen9"}')),
  'own account, own draft, own unverified Bluesky account, a DID-only post and stored images: clean');
select ok(public.scheduled_posts_batch_is_clean('[]'::jsonb), 'an empty batch is clean');
select ok(not public.scheduled_posts_batch_is_clean(
  pg_temp.post('{"account_id": "00000000-0000-4000-8000-00000009ca01"}')
  || pg_temp.post('{"account_id": "00000000-0000-4000-8000-00000009ca02"}')),
  'one post on another user''s account sends the batch to the full check');
select ok(not public.scheduled_posts_batch_is_clean(pg_temp.post('{"account_id": "00000000-0000-4000-8000-00000009ca03"}')),
  'an unverified X account: full check');
select ok(not public.scheduled_posts_batch_is_clean(pg_temp.post('{"draft_id": "00000000-0000-4000-8000-00000009d002"}')),
  'another user''s draft: full check');
select ok(not public.scheduled_posts_batch_is_clean(
  pg_temp.post('{"media": [{"ai_asset_id": "00000000-0000-4000-8000-00000009aa01", "alt": "a"}]}')),
  'an image named by AI asset: full check');

-- Through the claim: a clean batch comes back whole, a mixed one loses its bad post.
insert into public.scheduled_posts (id, user_id, account_id, draft_id, platform, content, run_at) values
  ('00000000-0000-4000-8000-000000095001', '00000000-0000-4000-8000-0000000009a1', '00000000-0000-4000-8000-00000009ca01',
   '00000000-0000-4000-8000-00000009d001', 'x', null, '2031-01-01 00:00:00+00'),
  ('00000000-0000-4000-8000-000000095002', '00000000-0000-4000-8000-0000000009a1', '00000000-0000-4000-8000-00000009ca01',
   '00000000-0000-4000-8000-00000009d002', 'x', null, '2031-01-01 00:00:01+00');
select is(jsonb_array_length(public.claim_next_scheduled_posts('screen-1', 60, 1, '2031-01-01 00:00:00.5+00')), 1,
  'the clean post is claimed');
select is(public.claim_next_scheduled_posts('screen-2', 60, 1, '2031-01-01 00:00:02+00'), '[]'::jsonb,
  'the post of another user''s draft is not handed out');
select is((select status || ' / ' || last_error from public.scheduled_posts where id = '00000000-0000-4000-8000-000000095002'),
  'failed / refused: the draft belongs to another user', 'it is failed with the reason by the full check');
select is((select status from public.scheduled_posts where id = '00000000-0000-4000-8000-000000095001'), 'posting',
  'the clean one is leased');

select * from finish();
rollback;
