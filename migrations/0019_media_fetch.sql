-- 0019: media-fetch's two calls (issue 13).
--
-- * claim_media_fetch(worker, lease_seconds, max_items, now): claim_next_media_downloads
--   (0009, with 0017's tenancy screening) plus what the worker needs to name
--   the object (the archived post's platform, account and platform post id)
--   and, for Instagram, to refresh an expired CDN link (the Graph media id
--   and field that carry the URL, the account's sealed access token).
-- * finish_media_download(id, lease_token, outcome, detail, now): one call
--   per item that settles the queue row (complete_/fail_media_download, so
--   the lease token fences it) and, for a final outcome, counts it in the
--   account's latest sync_logs row (media_downloaded or media_failed) in the
--   same transaction, so a count is never lost nor doubled by a stale worker.
--
-- * media_object_for_user(id, user_id): where a user's own downloaded media
--   is stored ({"found": true, "bucket", "key", "content_type"}), else
--   {"found": false} (someone else's, not downloaded, unknown: the same
--   answer, so ids of other users' media cannot be probed). The key is the
--   one media-fetch reported in the item's success event.
--
-- Outcomes: 'downloaded' and 'unavailable' complete the item; 'failed' is a
-- permanent failure (dead letter with the reason); 'retry' is transient
-- (backoff, dead letter after the last attempt, which then counts as failed).

create function public.claim_media_fetch(
  p_worker_id text,
  p_lease_seconds integer,
  p_max_items integer,
  p_now timestamptz default now()
) returns jsonb
language sql
set search_path = ''
as $$
  select coalesce(
    jsonb_agg(
      c.item || jsonb_strip_nulls(jsonb_build_object(
        'platform', p.platform::text,
        'account_id', p.account_id,
        'platform_post_id', p.platform_post_id,
        -- Instagram CDN links expire (403): the Graph media (or carousel
        -- child) whose media_url / thumbnail_url is this URL, and the
        -- account's sealed token, let the worker ask for a fresh link.
        'instagram_media', case when p.platform = 'instagram' then (
          select jsonb_build_object('id', m.obj ->> 'id', 'field', f.field)
            from (select p.post_data
                  union all
                  select jsonb_array_elements(
                    case when jsonb_typeof(p.post_data -> 'children' -> 'data') = 'array'
                         then p.post_data -> 'children' -> 'data' else '[]'::jsonb end)) as m(obj)
           cross join (values ('media_url'), ('thumbnail_url')) as f(field)
           where m.obj ->> f.field = c.item ->> 'original_url' and m.obj ? 'id'
           limit 1) end,
        'access_token', case when p.platform = 'instagram' and ca.verified_at is not null
                             then ca.access_token end))
      order by c.ord),
    '[]'::jsonb)
  from jsonb_array_elements(
         public.claim_next_media_downloads(p_worker_id, p_lease_seconds, p_max_items, p_now))
       with ordinality as c(item, ord)
  left join public.ingested_posts p on p.id = (c.item ->> 'ingested_post_id')::uuid
  left join public.connected_accounts ca on ca.id = p.account_id and ca.user_id = p.user_id
$$;
comment on function public.claim_media_fetch(text, integer, integer, timestamptz) is
  'claim_next_media_downloads plus the archived post''s platform, account_id and platform_post_id (media-fetch).';

create function public.finish_media_download(
  p_id uuid,
  p_lease_token bigint,
  p_outcome text,
  p_detail jsonb default '{}'::jsonb,
  p_now timestamptz default now()
) returns jsonb
language plpgsql
set search_path = ''
as $$
declare
  v_answer jsonb;
  v_counted text;
  v_account uuid;
  v_user uuid;
  v_log uuid;
  v_detail jsonb := coalesce(p_detail, '{}'::jsonb);
begin
  if p_outcome in ('downloaded', 'unavailable') then
    v_answer := public.complete_media_download(
      p_id, p_lease_token, v_detail || jsonb_build_object('status', p_outcome), p_now);
    if (v_answer ->> 'accepted')::boolean and p_outcome = 'unavailable' then
      -- complete_ clears error; an unavailable item keeps why.
      update public.media_downloads
         set error = left(coalesce(v_detail ->> 'error', 'unavailable'), 1000)
       where id = p_id;
    end if;
  elsif p_outcome in ('failed', 'retry') then
    v_answer := public.fail_media_download(
      p_id, p_lease_token, left(coalesce(v_detail ->> 'error', p_outcome), 1000),
      p_outcome = 'failed', (v_detail ->> 'retry_after_seconds')::integer, p_now);
  else
    raise exception 'finish_media_download: outcome % is not downloaded, unavailable, failed or retry', p_outcome
      using errcode = '22023';
  end if;

  if not coalesce((v_answer ->> 'accepted')::boolean, false) then
    return v_answer;
  end if;

  v_counted := case
    when p_outcome = 'downloaded' then 'media_downloaded'
    when p_outcome = 'retry' and v_answer ->> 'status' <> 'dead' then null
    else 'media_failed'
  end;

  if v_counted is not null then
    select p.account_id, m.user_id into v_account, v_user
      from public.media_downloads m
      join public.ingested_posts p on p.id = m.ingested_post_id
     where m.id = p_id;
    if v_account is not null then
      select l.id into v_log
        from public.sync_logs l
       where l.account_id = v_account
       order by l.started_at desc, l.id desc
       limit 1
       for update;
      if v_log is null then
        insert into public.sync_logs (account_id, user_id, sync_type, status, started_at, completed_at, metadata)
        values (v_account, v_user, 'scheduled', 'success', p_now, p_now, '{"source": "media-fetch"}')
        returning id into v_log;
      end if;
      update public.sync_logs l
         set media_downloaded = coalesce(l.media_downloaded, 0) + (v_counted = 'media_downloaded')::integer,
             media_failed = coalesce(l.media_failed, 0) + (v_counted = 'media_failed')::integer
       where l.id = v_log;
    end if;
  end if;

  return v_answer || jsonb_build_object('counted', v_counted, 'sync_log_id', v_log);
end
$$;
comment on function public.finish_media_download(uuid, bigint, text, jsonb, timestamptz) is
  'Settles a claimed media download (downloaded | unavailable | failed | retry) under its lease token and counts final outcomes in the account''s latest sync_logs row.';

create function public.media_object_for_user(
  p_id uuid,
  p_user_id uuid
) returns jsonb
language sql
stable
set search_path = ''
as $$
  select coalesce(
    (select jsonb_build_object(
              'found', true,
              'bucket', e.detail -> 'result' ->> 'bucket',
              'key', e.detail -> 'result' ->> 'key',
              'content_type', e.detail -> 'result' ->> 'content_type')
       from public.media_downloads m
       join public.queue_events e
         on e.queue = 'media_downloads' and e.item_id = m.id and e.event = 'success'
      where m.id = p_id
        and m.user_id = p_user_id
        and m.status = 'downloaded'
        and e.detail -> 'result' ? 'key'
      order by e.created_at desc
      limit 1),
    jsonb_build_object('found', false))
$$;
comment on function public.media_object_for_user(uuid, uuid) is
  'Bucket and key of a user''s own downloaded media (GET /media/{id}); {"found": false} otherwise.';

revoke all on function public.media_object_for_user(uuid, uuid) from public, anon, authenticated;
grant execute on function public.media_object_for_user(uuid, uuid) to service_role;
revoke all on function public.claim_media_fetch(text, integer, integer, timestamptz) from public, anon, authenticated;
revoke all on function public.finish_media_download(uuid, bigint, text, jsonb, timestamptz) from public, anon, authenticated;
grant execute on function public.claim_media_fetch(text, integer, integer, timestamptz) to service_role;
grant execute on function public.finish_media_download(uuid, bigint, text, jsonb, timestamptz) to service_role;
