-- 0024: Venice images (issue 15, seed 000 ai_jobs / ai_assets / ai_job_events).
--
-- ai-dispatch claims ai_jobs with the queue contract (claim_next_ai_jobs:
-- 0017's screen refuses other users' references and charges one credit at
-- the first claim), calls Venice's POST /api/v1/image/generate, stores each
-- image in the object store, and then settles the job with ONE call:
--
--   finish_venice_image_job(id, lease_token, outcome, detail, now)
--
-- * 'succeeded' (detail: venice_id, model, timing, assets [{bucket, path,
--   mime, width, height, bytes}]): re-checks, under the job's lock, that the
--   lease is still ours and that every asset belongs to the job's owner
--   (bucket `generations`, path under `{user_id}/`, no (bucket, path) of
--   another job or user), then records one ai_assets row per image,
--   completes the job (complete_ai_job: `success` event) and notifies the
--   owner. A refused asset list fails the job for good with the reason
--   instead, and nothing is recorded for it.
-- * 'failed' (detail.error): a refusal (content policy, validation):
--   dead-lettered at once with the provider's message.
-- * 'retry' (detail.error, detail.retry_after_seconds): fail_ai_job with
--   backoff; after the last attempt it is dead-lettered.
-- * 'deferred' (detail.reason, detail.retry_after_seconds): Venice said 429
--   (or our key/balance is refused): back to queued at now + the wait, the
--   attempt not counted (defer_ai_job).
--
-- A dead-lettered job (failed or out of attempts) gets its credit back
-- (refund_credit_charge, 0023) and a notification; a succeeded one settles
-- its charge (settle_credit_charge, 0023) and gets a notification. Every transition writes its ai_job_events row through the
-- queue functions (claimed, success, retry, failure, deferred).
-- The queue contract itself (0009/0017, and its rewrite in 0027) is only
-- called here, never redefined.

create function public.finish_venice_image_job(
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
  v_detail jsonb := coalesce(p_detail, '{}'::jsonb);
  v_row jsonb;
  v_user uuid;
  v_asset jsonb;
  v_refusal text;
  v_error text;
  v_ids jsonb;
  v_count integer;
  v_answer jsonb;
  v_wait integer;
begin
  if p_outcome is null or p_outcome not in ('succeeded', 'failed', 'retry', 'deferred') then
    raise exception 'finish_venice_image_job: outcome % is not succeeded, failed, retry or deferred', p_outcome
      using errcode = '22023';
  end if;

  -- Locks the job; null unless p_lease_token is its current lease.
  v_row := public.queue_lock_leased('ai_jobs', p_id, p_lease_token);
  if v_row is null then
    return jsonb_build_object('accepted', false, 'reason', 'stale_lease');
  end if;
  v_user := (v_row ->> 'user_id')::uuid;

  if p_outcome = 'deferred' then
    v_wait := greatest(coalesce((v_detail ->> 'retry_after_seconds')::integer, 60), 1);
    return public.defer_ai_job(p_id, p_lease_token, p_now + make_interval(secs => v_wait),
                               left(coalesce(v_detail ->> 'reason', 'deferred'), 1000), p_now);
  end if;

  if p_outcome = 'succeeded' then
    -- The job may have changed hands since the claim's screen.
    v_refusal := public.queue_item_refusal('ai_jobs', v_row);
    if v_refusal is null
       and (jsonb_typeof(v_detail -> 'assets') is distinct from 'array'
            or jsonb_array_length(v_detail -> 'assets') = 0) then
      v_refusal := 'refused: a finished image job needs at least one asset';
    end if;
    if v_refusal is null then
      for v_asset in select e from jsonb_array_elements(v_detail -> 'assets') e loop
        if v_asset ->> 'bucket' is distinct from 'generations' then
          v_refusal := format('refused: asset bucket %s is not generations', coalesce(v_asset ->> 'bucket', 'null'));
        elsif v_asset ->> 'path' is null
              or not starts_with(v_asset ->> 'path', v_user::text || '/')
              or strpos(v_asset ->> 'path', '..') > 0 then
          v_refusal := 'refused: an asset path is outside the job owner''s folder';
        elsif coalesce((v_asset ->> 'width')::integer, 0) <= 0
              or coalesce((v_asset ->> 'height')::integer, 0) <= 0 then
          v_refusal := 'refused: an asset has no width or height';
        elsif exists (select 1 from public.ai_assets a
                       where a.bucket = v_asset ->> 'bucket'
                         and a.path = v_asset ->> 'path'
                         and (a.job_id <> p_id or a.user_id <> v_user)) then
          v_refusal := 'refused: an asset path belongs to another job or user';
        end if;
        exit when v_refusal is not null;
      end loop;
    end if;

    if v_refusal is null then
      -- A retried job that stored the same paths before keeps one row each.
      with written as (
        insert into public.ai_assets as a (job_id, user_id, bucket, path, mime, width, height, bytes, created_at)
        select p_id, v_user, e ->> 'bucket', e ->> 'path', e ->> 'mime',
               (e ->> 'width')::integer, (e ->> 'height')::integer, (e ->> 'bytes')::bigint, p_now
          from jsonb_array_elements(v_detail -> 'assets') e
        on conflict (bucket, path) do update
          set mime = excluded.mime, width = excluded.width, height = excluded.height, bytes = excluded.bytes
          where a.job_id = excluded.job_id and a.user_id = excluded.user_id
        returning a.id, a.path
      )
      select coalesce(jsonb_agg(jsonb_build_object('id', w.id, 'path', w.path) order by w.path), '[]'::jsonb),
             count(*)
        into v_ids, v_count
        from written w;

      v_answer := public.complete_ai_job(p_id, p_lease_token,
        jsonb_strip_nulls(jsonb_build_object(
          'provider', 'venice',
          'venice_id', v_detail ->> 'venice_id',
          'model', v_detail ->> 'model',
          'timing', v_detail -> 'timing',
          'images', v_count,
          'assets', v_ids)),
        p_now);
      -- The credit taken at the claim is spent now: never refunded later.
      perform public.settle_credit_charge('ai_jobs', p_id, p_now);
      perform public.notify_user(
        v_user, 'ai_image_ready', 'Your image is ready',
        format('%s image%s from %s', v_count, case when v_count = 1 then '' else 's' end,
               coalesce(v_detail ->> 'model', 'Venice')),
        jsonb_build_object('job_id', p_id, 'assets', v_ids), null);
      return v_answer || jsonb_build_object('assets', v_ids);
    end if;
  end if;

  -- failed, retry, or a refused success.
  v_error := left(coalesce(v_refusal, v_detail ->> 'error', p_outcome), 1000);
  v_answer := public.fail_ai_job(p_id, p_lease_token, v_error,
                                 p_outcome = 'failed' or v_refusal is not null,
                                 (v_detail ->> 'retry_after_seconds')::integer, p_now);
  if v_answer ->> 'status' = 'dead' then
    v_answer := v_answer || jsonb_build_object(
      'refund', public.refund_credit_charge('ai_jobs', p_id, v_error, p_now));
    perform public.notify_user(
      v_user, 'ai_image_failed', 'Your image could not be made', v_error,
      jsonb_build_object('job_id', p_id), null);
  end if;
  return v_answer;
end
$$;
comment on function public.finish_venice_image_job(uuid, bigint, text, jsonb, timestamptz) is
  'ai-dispatch: settles one Venice image job under its lease (succeeded: assets re-checked against the owner, recorded, completed, notified; failed/retry: fail_ai_job, refund + notification when dead-lettered; deferred: defer_ai_job).';

revoke all on function public.finish_venice_image_job(uuid, bigint, text, jsonb, timestamptz) from public, anon, authenticated;
grant execute on function public.finish_venice_image_job(uuid, bigint, text, jsonb, timestamptz) to service_role;
