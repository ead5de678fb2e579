-- Outpost's jobs driven from Supabase: pg_cron ticks and pg_net calls the
-- app's POST /jobs/<name> routes with the job secret. For hosts where the Spin
-- cron trigger plugin does not run (SpinKube, Fermyon's hosted platforms,
-- `spin up` without the plugin) and whose database is a Supabase project.
--
-- Once, in the SQL editor (as postgres), store where the app is and its
-- `job_secret` in Vault:
--   select vault.create_secret('https://outpost.example.com', 'outpost_url', 'Outpost base URL');
--   select vault.create_secret('<job_secret>', 'outpost_job_secret', 'Bearer secret of Outpost''s /jobs routes');
-- then run this file. Running it again replaces the schedules (cron.schedule
-- updates a job of the same name). To stop: select cron.unschedule('outpost-ingest'); ...
--
-- pg_cron schedules have minute resolution (UTC): each is spin.toml's cron
-- expression without its seconds field; tests/e2e/tests/deploy.rs fails when
-- they drift apart. pg_net sends each request from a background worker and
-- keeps the answer in net._http_response for a few hours (see there why a run
-- failed, or in the app's /status). A run that overlaps the previous one does
-- no harm: the jobs claim their work from queues with leases.

create extension if not exists pg_cron;
create extension if not exists pg_net;

-- Not in an API-exposed schema, and only the owner (postgres, which pg_cron
-- runs these as) may call it: it reads the job secret.
create schema if not exists outpost_jobs;
revoke all on schema outpost_jobs from public;

create or replace function outpost_jobs.call(job text) returns bigint
language sql
security definer
set search_path = ''
as $$
  select net.http_post(
    url := pg_catalog.rtrim(
      (select s.decrypted_secret from vault.decrypted_secrets s where s.name = 'outpost_url'), '/'
    ) || '/jobs/' || job,
    body := '{}'::jsonb,
    headers := pg_catalog.jsonb_build_object(
      'Content-Type', 'application/json',
      'Authorization', 'Bearer ' || (select s.decrypted_secret from vault.decrypted_secrets s where s.name = 'outpost_job_secret')
    ),
    -- A run works for up to a minute or so; the default 5 s would give up
    -- on the answer (the run itself goes on).
    timeout_milliseconds := 290000
  );
$$;
revoke all on function outpost_jobs.call(text) from public;

-- spin.toml: ingest "0 * * * * *"
select cron.schedule('outpost-ingest', '* * * * *', $$select outpost_jobs.call('ingest')$$);

-- spin.toml: schedule-claim "0 * * * * *"
select cron.schedule('outpost-schedule-claim', '* * * * *', $$select outpost_jobs.call('schedule-claim')$$);

-- spin.toml: feed-indexer "0 */5 * * * *"
select cron.schedule('outpost-feed-indexer', '*/5 * * * *', $$select outpost_jobs.call('feed-indexer')$$);

-- spin.toml: media-fetch "30 * * * * *"
select cron.schedule('outpost-media-fetch', '* * * * *', $$select outpost_jobs.call('media-fetch')$$);

-- spin.toml: ai-dispatch "15 * * * * *"
select cron.schedule('outpost-ai-dispatch', '* * * * *', $$select outpost_jobs.call('ai-dispatch')$$);

-- spin.toml: token-rotation "0 */10 * * * *"
select cron.schedule('outpost-token-rotation', '*/10 * * * *', $$select outpost_jobs.call('token-rotation')$$);

-- spin.toml: maintenance "0 */5 * * * *"
select cron.schedule('outpost-maintenance', '*/5 * * * *', $$select outpost_jobs.call('maintenance')$$);

-- spin.toml: pipeline "45 */2 * * * *"
select cron.schedule('outpost-pipeline', '*/2 * * * *', $$select outpost_jobs.call('pipeline')$$);
