-- 01_completeness.sql: every relation, column, enum, function, trigger,
-- policy-bearing table, bucket and Supabase stand-in the seed documents
-- (/work/shared/seeds/000..004) and migrations/CONTRACT.md name.
-- The lists below are written out from those documents on purpose: they are
-- the regression net for the schema and must not be generated from the
-- database they check.
begin;
set local client_min_messages = warning;
create extension if not exists pgtap;

-- ---------------------------------------------------------------- expectations
create temp table exp_tables(sch text, name text, seed text);
insert into exp_tables values
  -- seed 000 (BA6 Bluesky Suite)
  ('public','users','000/001/002/004'),
  ('public','drafts','000'), ('public','scheduled_posts','000/002'),
  ('public','post_events','000'), ('public','feeds','000'),
  ('public','feed_sources','000'), ('public','feed_rules','000'),
  ('public','indexed_posts','000'), ('public','worker_heartbeats','000'),
  ('public','ai_jobs','000'), ('public','ai_assets','000'),
  ('public','ai_job_events','000'), ('public','ai_text_runs','000'),
  -- seed 001 (Trove)
  ('public','connected_accounts','001'), ('public','posts','001'),
  ('public','media_downloads','001'), ('public','sync_logs','001'),
  ('public','ingested_items','001'), ('public','ingested_posts','001'),
  ('public','engagement_history','001'),
  -- seed 002 (Nexus)
  ('public','content_adaptations','002'), ('public','voice_profiles','002'),
  ('public','published_posts','002'),
  -- seed 003 (pipeline job tracker)
  ('public','jobs','003'), ('public','job_events','003'),
  ('public','artifacts','003'), ('public','prompts','003'),
  -- seed 004 (AI generation studio)
  ('public','generations','004'), ('public','replicate_tokens','004'),
  ('public','workspaces','004'), ('public','workspace_members','004'),
  ('public','flows','004'), ('public','flow_nodes','004'),
  ('public','flow_edges','004'), ('public','flow_invites','004'),
  ('public','flow_members','004'), ('public','flow_comments','004'),
  ('public','user_loras','004'), ('public','lora_training_images','004'),
  ('public','notifications','004'), ('public','ideas','004'),
  ('public','assistant_conversations','004'), ('public','assistant_messages','004'),
  ('public','api_logs','004'), ('public','support_tickets','004'),
  -- CONTRACT.md
  ('public','queue_events','contract'),
  ('public','outpost_schema_migrations','contract (runner)'),
  -- Supabase stand-ins
  ('auth','users','supabase'), ('vault','secrets','supabase'),
  ('storage','buckets','supabase'), ('storage','objects','supabase');

create temp table exp_views(sch text, name text, seed text);
insert into exp_views values
  ('public','profiles','000: old users table kept as a view'),
  ('public','accounts','000: accounts over connected_accounts'),
  ('public','bsky_accounts','000: old accounts table kept as a view'),
  ('public','platform_connections','002: connections over connected_accounts'),
  ('public','nexus_scheduled_posts','002: seed-002 shape of scheduled_posts'),
  ('vault','decrypted_secrets','supabase');

create temp table exp_columns(tbl text, col text);
insert into exp_columns
select t, unnest(string_to_array(c, ',')) from (values
  ('users', 'id,email,display_name,full_name,avatar_url,timezone,role,credits,telegram_username,is_active,created_at,updated_at'),
  ('profiles', 'id,display_name,created_at'),
  ('connected_accounts', 'id,user_id,platform,platform_user_id,username,display_name,avatar_url,access_token,refresh_token,token_expires_at,scope,webhook_subscribed,webhook_subscription_id,last_sync_at,last_sync_status,next_sync_at,sync_enabled,status,error_message,error_count,metadata,created_at,updated_at'),
  ('accounts', 'id,user_id,account_did,handle,label,is_active,vault_secret_id,created_at,updated_at'),
  ('platform_connections', 'id,user_id,platform,platform_user_id,access_token,refresh_token,token_expires_at,scope,profile_data,is_active,created_at,updated_at,last_sync_at'),
  ('posts', 'id,account_id,user_id,platform,platform_post_id,content_type,text_content,html_content,created_at_platform,updated_at_platform,published,deleted_on_platform,search_vector,created_at,updated_at'),
  ('media_downloads', 'id,ingested_post_id,user_id,original_url,status,attempts,error,last_attempt_at,created_at,max_attempts,next_attempt_at,locked_at,locked_by,lease_expires_at,lease_token,last_error,dead_lettered_at'),
  ('sync_logs', 'id,account_id,user_id,sync_type,status,posts_fetched,posts_created,posts_updated,posts_deleted,media_downloaded,media_failed,error_message,error_details,started_at,completed_at,duration_ms,metadata,created_at'),
  ('ingested_items', 'id,source,platform,account_id,user_id,event_type,external_id,payload,status,attempts,received_at,started_at,completed_at,error_message,error_details,last_error_at,created_at,updated_at,max_attempts,next_attempt_at,locked_at,locked_by,lease_expires_at,lease_token,last_error,dead_lettered_at'),
  ('ingested_posts', 'id,ingested_item_id,platform,account_id,user_id,platform_post_id,post_data,status,attempts,received_at,started_at,completed_at,error_message,error_details,last_error_at,created_at,updated_at,max_attempts,next_attempt_at,locked_at,locked_by,lease_expires_at,lease_token,last_error,dead_lettered_at'),
  ('engagement_history', 'id,post_id,engagement_stats,recorded_at'),
  ('drafts', 'id,user_id,text,created_at,updated_at'),
  ('scheduled_posts', 'id,user_id,draft_id,account_id,account_did,run_at,status,attempt_count,locked_at,locked_by,created_at,updated_at,adaptation_id,content,platform,timezone,last_error,published_post_id,max_attempts,lease_expires_at,lease_token,dead_lettered_at'),
  ('nexus_scheduled_posts', 'id,user_id,adaptation_id,content,platform_connection_id,platform,status,scheduled_for,timezone,retry_count,last_error,published_post_id,created_at,updated_at'),
  ('post_events', 'id,scheduled_post_id,type,detail,created_at'),
  ('feeds', 'id,user_id,slug,title,display_name,description,is_enabled,published_uri,published_rkey,publisher_did,published_at,created_at,updated_at'),
  ('feed_sources', 'id,feed_id,actor_did,created_at'),
  ('feed_rules', 'id,feed_id,kind,value,lang,created_at'),
  ('indexed_posts', 'id,feed_id,uri,cid,author_did,text,lang,created_at'),
  ('worker_heartbeats', 'worker_id,last_seen_at,detail'),
  ('ai_jobs', 'id,user_id,provider,model,prompt,params,status,attempt_count,locked_at,locked_by,created_at,updated_at,max_attempts,next_attempt_at,lease_expires_at,lease_token,last_error,dead_lettered_at'),
  ('ai_assets', 'id,job_id,bucket,path,mime,width,height,created_at'),
  ('ai_text_runs', 'id,user_id,provider,model,prompt_hash,input_tokens,output_tokens,created_at'),
  ('content_adaptations', 'id,user_id,original_idea,idea_hash,adaptations,tone,target_audience,created_at,updated_at,last_used_at'),
  ('voice_profiles', 'id,user_id,name,is_default,characteristics,sample_posts,created_at,updated_at,last_used_at'),
  ('published_posts', 'id,user_id,adaptation_id,platform_connection_id,platform,platform_post_id,status,content,metadata,metrics,scheduled_for,published_at,created_at,updated_at'),
  ('jobs', 'run_id,project_spec,owner_id,status,started_at,completed_at,error_message,created_at,updated_at'),
  ('job_events', 'id,run_id,bot_name,event_type,payload,owner_id,created_at'),
  ('artifacts', 'id,run_id,kind,url,meta,owner_id,file_size,content_type,checksum,created_at'),
  ('prompts', 'id,category,context,prompt_text,created_at,updated_at'),
  ('generations', 'id,user_id,workspace_id,action,model_id,status,output_urls,output_thumbs,input_video_url,cost_usd,replicate_prediction_id,is_keyframe_segment,started_at,completed_at,processing_time_ms,created_at,attempts,max_attempts,next_attempt_at,locked_at,locked_by,lease_expires_at,lease_token,last_error,dead_lettered_at'),
  ('replicate_tokens', 'id,token,is_active,request_count,error_count'),
  ('workspaces', 'id,name,slug,created_by'),
  ('workspace_members', 'workspace_id,user_id,role'),
  ('flows', 'id,user_id,name,nodes,edges'),
  ('flow_nodes', 'id,flow_id,type,data'),
  ('flow_edges', 'id,flow_id,source,target'),
  ('flow_invites', 'flow_id,token,created_by'),
  ('flow_members', 'flow_id,user_id,role'),
  ('flow_comments', 'flow_id,user_id,content'),
  ('user_loras', 'id,user_id,name,status,replicate_training_id'),
  ('lora_training_images', 'lora_id,storage_path'),
  ('notifications', 'id,user_id,type,title,read'),
  ('ideas', 'id,title,votes,author_id'),
  ('assistant_conversations', 'id,user_id,title,preview_text'),
  ('assistant_messages', 'conversation_id,role,content,images'),
  ('api_logs', 'id,method,path,status_code,duration_ms,user_id,provider'),
  ('support_tickets', 'id,user_id,message,status'),
  ('queue_events', 'queue,item_id,event,lease_token,worker_id,detail,created_at'),
  ('outpost_schema_migrations', 'version,name,checksum,applied_at')
) v(t, c);

-- functions with the argument signature the seed or the contract gives
create temp table exp_functions(sch text, name text, args text[], why text);
insert into exp_functions values
  ('public','handle_new_auth_user', array[]::text[], '000 trigger on auth.users'),
  ('public','update_updated_at', array[]::text[], '001 updated_at trigger'),
  ('public','update_updated_at_column', array[]::text[], '002 updated_at trigger'),
  ('public','update_search_vector', array[]::text[], '001 posts search'),
  ('public','denormalize_post_user_id', array[]::text[], '001 posts user_id'),
  ('public','claim_next_scheduled_post', array['integer','text'], '000 claim_next_scheduled_post(lock_seconds, worker_id)'),
  ('public','create_account_secret', array['text','text','text'], '000 vault RPC'),
  ('public','get_account_secret', array['uuid'], '000 vault RPC'),
  ('public','get_next_replicate_token', array[]::text[], '004 token pool'),
  ('public','get_generation_counts', array['uuid'], '004'),
  ('public','get_workspace_generation_counts', array['uuid'], '004'),
  ('public','refresh_admin_stats', array[]::text[], '004'),
  ('public','cleanup_old_generations', array['integer'], '004'),
  ('public','update_generation_status', array[]::text[], '004 trigger'),
  ('public','queue_depths', array['timestamp with time zone'], 'contract'),
  ('public','record_worker_heartbeat', array['text','jsonb','timestamp with time zone'], 'contract'),
  ('public','outpost_status', array['timestamp with time zone'], 'contract'),
  ('public','run_maintenance', array['text','timestamp with time zone','integer','integer'], 'contract'),
  ('public','store_ingested_item', array['text','text','text','text','jsonb','uuid','uuid','text','timestamp with time zone'], 'contract'),
  ('public','record_generation_result', array['text','jsonb','uuid','timestamp with time zone'], 'contract'),
  ('public','record_ai_text_run', array['uuid','text','text','text','integer','integer','integer','timestamp with time zone'], 'contract, 000 daily limit'),
  ('public','record_replicate_token_error', array['uuid','text','integer','boolean','timestamp with time zone'], 'contract'),
  ('public','feed_skeleton_page', array['uuid','integer','timestamp with time zone','text'], 'contract'),
  ('auth','uid', array[]::text[], 'supabase'),
  ('auth','role', array[]::text[], 'supabase'),
  ('auth','jwt', array[]::text[], 'supabase'),
  ('storage','foldername', array['text'], 'supabase, 001 media policy');
-- the queue contract, for all six queues
insert into exp_functions
select 'public', f.fname, f.args, 'contract queue ' || q.queue
from (values ('scheduled_posts','scheduled_post'), ('ai_jobs','ai_job'),
             ('generations','generation'), ('media_downloads','media_download'),
             ('ingested_items','ingested_item'), ('ingested_posts','ingested_post')) q(queue, singular)
cross join lateral (values
  ('claim_next_' || q.queue, array['text','integer','integer','timestamp with time zone']),
  ('complete_' || q.singular, array['uuid','bigint','jsonb','timestamp with time zone']),
  ('fail_' || q.singular, array['uuid','bigint','text','boolean','integer','timestamp with time zone']),
  ('defer_' || q.singular, array['uuid','bigint','timestamp with time zone','text','timestamp with time zone'])
) f(fname, args);

-- functions the seeds name without an argument list
create temp table exp_functions_any(sch text, name text, why text);
insert into exp_functions_any values
  ('public','claim_next_ai_image_job','000 Venice worker claim'),
  ('vault','create_secret','supabase vault');

-- enums of seed 001 and their labels (the migration may add labels, never drop)
create temp table exp_enums(name text, labels text[]);
insert into exp_enums values
  ('platform_enum', array['bluesky','strava','instagram','linkedin','x','substack','replicate']),
  ('account_status_enum', array['active','error','disconnected','token_expired']),
  ('content_type_enum', array['post','activity','story','reel','reply','repost','article']),
  ('download_status_enum', array['pending','downloading','downloaded','failed','unavailable']),
  ('sync_type_enum', array['webhook','manual','scheduled','backfill']),
  ('sync_status_enum', array['running','success','partial','failed','cancelled']),
  ('ingestion_source_enum', array['webhook','fetch','backfill','retry']),
  ('processing_status_enum', array['pending','processing','completed','failed','dead_letter']);

-- triggers, checked by the function they call (trigger names are free)
create temp table exp_triggers(sch text, tbl text, fn text);
insert into exp_triggers values
  ('auth','users','handle_new_auth_user'),
  ('public','posts','update_search_vector'),
  ('public','posts','denormalize_post_user_id'),
  ('public','generations','update_generation_status');

-- tables whose updated_at a trigger keeps (seed 001 "all tables with updated_at", seed 002 list)
create temp table exp_updated_at(tbl text);
insert into exp_updated_at values ('users'),('connected_accounts'),('posts'),
  ('ingested_items'),('ingested_posts'),('content_adaptations'),('voice_profiles'),
  ('published_posts'),('scheduled_posts'),('drafts'),('feeds'),('jobs'),('prompts');

-- tables the seeds give RLS policies to (owner, membership, authenticated read)
create temp table exp_policy_tables(sch text, tbl text);
insert into exp_policy_tables values
  ('public','users'),('public','connected_accounts'),('public','posts'),
  ('public','media_downloads'),('public','sync_logs'),('public','drafts'),
  ('public','scheduled_posts'),('public','feeds'),('public','feed_sources'),
  ('public','feed_rules'),('public','content_adaptations'),('public','voice_profiles'),
  ('public','published_posts'),('public','jobs'),('public','job_events'),
  ('public','artifacts'),('public','prompts'),('public','generations'),
  ('public','workspaces'),('public','workspace_members'),('public','flows'),
  ('public','flow_nodes'),('public','flow_edges'),('public','flow_invites'),
  ('public','flow_members'),('public','flow_comments'),('public','user_loras'),
  ('public','lora_training_images'),('public','notifications'),
  ('public','assistant_conversations'),('public','assistant_messages'),
  ('public','support_tickets'),('storage','objects');

create temp table exp_unique(tbl text, cols text[]);
insert into exp_unique values
  ('connected_accounts', array['user_id','platform','platform_user_id']),  -- 001 unique_platform_account
  ('posts', array['platform','platform_post_id']),                        -- 001 unique_platform_post
  ('media_downloads', array['user_id','original_url']),                   -- 001 unique_user_url
  ('engagement_history', array['post_id','recorded_at']),                 -- 001 unique_post_recording
  ('feeds', array['user_id','slug']),                                     -- 000 feeds_user_slug_key
  ('ingested_items', array['platform','external_id']);                    -- DESIGN dedupe key

select plan(
    (select count(*)::int from exp_tables)
  + (select count(*)::int from exp_views)
  + 2                                   -- materialized views
  + (select count(*)::int from exp_columns)
  + (select count(*)::int from exp_functions)
  + (select count(*)::int from exp_functions_any)
  + (select 2 * count(*)::int from exp_enums)
  + (select count(*)::int from exp_triggers)
  + 3                                   -- other trigger checks
  + (select count(*)::int from exp_updated_at) + 1
  + (select count(*)::int from exp_policy_tables)
  + (select count(*)::int from exp_unique)
  + 6                                   -- rls everywhere, security_invoker, pk, definer search_path, storage rls, vault
  + 5                                   -- buckets
);

-- ------------------------------------------------------------------ relations
select has_table(sch, name, format('table %s.%s exists (%s)', sch, name, seed))
  from exp_tables order by seed, sch, name;
select has_view(sch, name, format('view %s.%s exists (%s)', sch, name, seed))
  from exp_views order by sch, name;
select has_materialized_view('public', 'public_posts', 'materialized view public.public_posts exists (001)');
select ok(exists(select 1 from pg_class c join pg_namespace n on n.oid = c.relnamespace
                  where n.nspname = 'public' and c.relkind = 'm' and c.relname like '%admin%stat%'),
          'an admin stats materialized view exists in public (004, refreshed by refresh_admin_stats)');

select has_column('public', tbl, col, format('%s.%s exists', tbl, col))
  from exp_columns order by tbl, col;

-- ------------------------------------------------------------------ functions
select has_function(sch, name, args,
         format('function %s.%s(%s) exists (%s)', sch, name, array_to_string(args, ', '), why))
  from exp_functions order by sch, name;
select has_function(sch, name, format('function %s.%s exists (%s)', sch, name, why))
  from exp_functions_any order by sch, name;

-- ---------------------------------------------------------------------- enums
select has_enum('public', name, format('enum %s exists (001)', name)) from exp_enums order by name;
select ok(
    case when to_regtype('public.' || name) is null then false
         else (select array_agg(e.enumlabel::text) from pg_enum e
                where e.enumtypid = to_regtype('public.' || name)) @> labels end,
    format('enum %s has labels %s', name, array_to_string(labels, ', ')))
  from exp_enums order by name;

-- ------------------------------------------------------------------- triggers
select ok(exists(
    select 1 from pg_trigger t
      join pg_class c on c.oid = t.tgrelid join pg_namespace n on n.oid = c.relnamespace
      join pg_proc p on p.oid = t.tgfoid
     where not t.tgisinternal and n.nspname = e.sch and c.relname = e.tbl and p.proname = e.fn),
  format('some trigger on %s.%s calls %s()', e.sch, e.tbl, e.fn))
  from exp_triggers e order by sch, tbl, fn;
select ok(exists(select 1 from pg_trigger t join pg_class c on c.oid = t.tgrelid
                  where not t.tgisinternal and c.oid = to_regclass('public.sync_logs')),
          'sync_logs has a trigger (001: duration_ms and connected_accounts.last_sync_at on completion)');
select ok(exists(select 1 from pg_trigger t join pg_proc p on p.oid = t.tgfoid
                  where not t.tgisinternal and t.tgrelid = to_regclass('public.voice_profiles')
                    and p.proname not in ('update_updated_at', 'update_updated_at_column')),
          'voice_profiles has a trigger besides updated_at (002: set default voice profile)');
select ok(exists(select 1 from pg_trigger t join pg_proc p on p.oid = t.tgfoid
                  where not t.tgisinternal and t.tgrelid = to_regclass('auth.users')
                    and p.proname = 'handle_new_auth_user'
                    and (t.tgtype & 4) = 4),  -- TRIGGER_TYPE_INSERT
          'the handle_new_auth_user trigger on auth.users fires on INSERT');
select ok(exists(
    select 1 from pg_trigger t join pg_proc p on p.oid = t.tgfoid
     where not t.tgisinternal and t.tgrelid = to_regclass('public.' || e.tbl)
       and p.proname in ('update_updated_at', 'update_updated_at_column')
       and (t.tgtype & 2) = 2 and (t.tgtype & 16) = 16),   -- BEFORE ... UPDATE
  format('a BEFORE UPDATE trigger on %s keeps updated_at (update_updated_at[_column])', e.tbl))
  from exp_updated_at e order by tbl;
select is_empty($$
    select c.relname from pg_class c join pg_namespace n on n.oid = c.relnamespace
      join pg_attribute a on a.attrelid = c.oid and a.attname = 'updated_at' and not a.attisdropped
     where n.nspname = 'public' and c.relkind in ('r','p')
       and not exists (select 1 from pg_trigger t join pg_proc p on p.oid = t.tgfoid
                        where t.tgrelid = c.oid and not t.tgisinternal
                          and p.proname in ('update_updated_at', 'update_updated_at_column'))
  $$, 'every public table with an updated_at column has an updated_at trigger (001: "apply to all tables with updated_at")');

-- ------------------------------------------------------------------- security
select ok(exists(select 1 from pg_policies where schemaname = e.sch and tablename = e.tbl),
          format('%s.%s carries RLS policies', e.sch, e.tbl))
  from exp_policy_tables e order by sch, tbl;
select is_empty($$
    select c.relname from pg_class c join pg_namespace n on n.oid = c.relnamespace
     where n.nspname = 'public' and c.relkind in ('r','p') and not c.relrowsecurity
  $$, 'RLS is enabled on every table in schema public');
select is_empty($$
    select c.relname from pg_class c join pg_namespace n on n.oid = c.relnamespace
     where n.nspname = 'public' and c.relkind = 'v'
       and not exists (select 1 from pg_depend d where d.classid = 'pg_class'::regclass
                          and d.objid = c.oid and d.deptype = 'e')   -- pgTAP's own views
       and not exists (select 1 from unnest(coalesce(c.reloptions, '{}')) o
                        where lower(o) in ('security_invoker=true','security_invoker=on','security_invoker=1','security_invoker=yes'))
  $$, 'every view in public is security_invoker (so RLS of the underlying table applies)');
select is_empty($$
    select c.relname from pg_class c join pg_namespace n on n.oid = c.relnamespace
     where n.nspname = 'public' and c.relkind in ('r','p')
       and not exists (select 1 from pg_constraint k where k.conrelid = c.oid and k.contype = 'p')
  $$, 'every table in public has a primary key');
select is_empty($$
    select n.nspname || '.' || p.proname from pg_proc p join pg_namespace n on n.oid = p.pronamespace
     where n.nspname in ('public','auth','vault','storage') and p.prosecdef
       and not exists (select 1 from unnest(coalesce(p.proconfig, '{}')) o where o like 'search_path=%')
  $$, 'every security definer function pins its search_path');
select ok(coalesce((select relrowsecurity from pg_class where oid = to_regclass('storage.objects')), false),
          'RLS is enabled on storage.objects (001 media policy)');
select ok(coalesce((select relrowsecurity from pg_class where oid = to_regclass('vault.secrets')), false)
          or not (has_table_privilege('authenticated', 'vault.secrets', 'select')
                  or has_table_privilege('anon', 'vault.secrets', 'select')),
          'vault.secrets is closed to anon and authenticated (RLS or no grant)');

-- unique constraints (or unique indexes) the seeds name
select ok(exists(
    select 1 from pg_index i
     where i.indrelid = to_regclass('public.' || u.tbl) and i.indisunique
       and (select array_agg(a.attname::text order by a.attname) from pg_attribute a
             where a.attrelid = i.indrelid and a.attnum = any(i.indkey::int2[]))
           = (select array_agg(x order by x) from unnest(u.cols) x)
       and i.indnkeyatts = cardinality(u.cols)),
  format('%s is unique on (%s)', u.tbl, array_to_string(u.cols, ', ')))
  from exp_unique u order by tbl;

-- -------------------------------------------------------------------- storage
select ok(array['media','generations','lora-training-images','lora-models']
          <@ (select coalesce(array_agg(id::text), '{}') from storage.buckets),
          'storage buckets media, generations, lora-training-images, lora-models exist');
select is((select public from storage.buckets where id = 'generations'), true, 'bucket generations is public read (004)');
select is((select public from storage.buckets where id = 'media'), false, 'bucket media is private (001)');
select is((select public from storage.buckets where id = 'lora-training-images'), false, 'bucket lora-training-images is private (004)');
select is((select public from storage.buckets where id = 'lora-models'), false, 'bucket lora-models is private (004)');

select * from finish();
rollback;
