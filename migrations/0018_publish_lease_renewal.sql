-- 0018_publish_lease_renewal.sql: short publishing leases that a working
-- publisher renews while it works (issue 11).
--
-- Until now a batch was claimed for `lease x batch size` (300 s by default),
-- so a publisher killed mid-run held its accounts for five minutes before
-- the next claim took them over. Now the claim lease is short (20 s by
-- default) and the worker renews every lease it still holds (the post it is
-- publishing and the ones of its batch that wait) between outside calls;
-- a dead worker stops renewing and its posts are claimable again within one
-- lease. Renewal is fenced like every other write: only the current lease
-- token of a post still `posting` renews it, so a worker whose post was
-- taken over learns that it lost it and renews nothing for it.

create function public.renew_scheduled_post_leases(
  p_items jsonb,
  p_lease_seconds integer,
  p_now timestamptz default now()
) returns jsonb
language plpgsql volatile
set search_path = ''
as $$
declare
  v_renewed jsonb;
begin
  if p_lease_seconds is null or p_lease_seconds < 1 or p_lease_seconds > 900 then
    raise exception 'renew: p_lease_seconds must be between 1 and 900' using errcode = '22023';
  end if;
  if p_items is null or jsonb_typeof(p_items) <> 'array' then
    raise exception 'renew: p_items must be an array of {"id", "lease_token"}' using errcode = '22023';
  end if;
  if jsonb_array_length(p_items) > 1000 then
    raise exception 'renew: at most 1000 leases at once' using errcode = '22023';
  end if;

  with wanted as (
    select (i ->> 'id')::uuid as id, (i ->> 'lease_token')::bigint as lease_token
      from jsonb_array_elements(p_items) as i
  ), renewed as (
    -- Never shortens a lease (begin may have asked for a longer one).
    update public.scheduled_posts sp
       set lease_expires_at = greatest(sp.lease_expires_at, p_now + make_interval(secs => p_lease_seconds))
      from wanted w
     where sp.id = w.id
       and sp.lease_token = w.lease_token
       and sp.status = 'posting'
    returning sp.id, sp.lease_token, sp.lease_expires_at
  )
  select coalesce(jsonb_agg(jsonb_build_object(
           'id', r.id,
           'lease_token', r.lease_token,
           'lease_remaining_ms', floor(extract(epoch from (r.lease_expires_at - p_now)) * 1000)::bigint)
           order by r.id), '[]'::jsonb)
    into v_renewed
    from renewed r;
  return v_renewed;
end
$$;

comment on function public.renew_scheduled_post_leases(jsonb, integer, timestamptz) is
  'Renews the publishing leases a worker still holds ([{"id", "lease_token"}]) to at least now + p_lease_seconds; answers the ones renewed with the lease left. Fenced by lease token and status.';

revoke all on function public.renew_scheduled_post_leases(jsonb, integer, timestamptz) from public, anon, authenticated;
grant execute on function public.renew_scheduled_post_leases(jsonb, integer, timestamptz) to service_role;
