//! Every SQL call `ingest` sends (migrations 0009 and 0013), one named
//! constant each; every one answers one `jsonb` value.

use shared::sql::SqlCall;

/// Claims pending Bluesky/Strava/Instagram items of platforms that are not
/// paused: `$1` worker, `$2` lease seconds, `$3` max items -> jsonb array of
/// `ingested_items` rows with `lease_token`.
pub const CLAIM_NEXT_ARCHIVE_ITEMS: SqlCall = SqlCall {
    name: "claim_next_archive_items",
    sql: "select public.claim_next_archive_items($1::text, $2::int, $3::int) as items",
};

/// The account of an item: `$1` item id, `$2` platform user id or null ->
/// the account (tokens as ciphertext) or null.
pub const INGEST_ACCOUNT_FOR_ITEM: SqlCall = SqlCall {
    name: "ingest_account_for_item",
    sql: "select public.ingest_account_for_item($1::uuid, $2::text) as account",
};

/// Archives posts: `$1` account id, `$2` item id or null, `$3` posts jsonb
/// array, `$4` mode (`replace` | `keep_existing`), `$5` stop at the first
/// known post -> `{seen, created, updated, unchanged, skipped, media_queued,
/// stopped_at_known, results}`.
pub const ARCHIVE_PLATFORM_POSTS: SqlCall = SqlCall {
    name: "archive_platform_posts",
    sql: "select public.archive_platform_posts($1::uuid, $2::uuid, $3::jsonb, $4::text, $5::boolean) as archived",
};

/// `$1` account id, `$2` platform, `$3` platform post id -> `{found, post_id}`.
pub const MARK_PLATFORM_POST_DELETED: SqlCall = SqlCall {
    name: "mark_platform_post_deleted",
    sql: "select public.mark_platform_post_deleted($1::uuid, $2::text, $3::text) as deleted",
};

/// `$1` account id, `$2` reason -> `{found, status}`.
pub const DISCONNECT_PLATFORM_ACCOUNT: SqlCall = SqlCall {
    name: "disconnect_platform_account",
    sql: "select public.disconnect_platform_account($1::uuid, $2::text) as disconnected",
};

/// `$1` account id, `$2` platform error text -> `{found, status}`.
pub const MARK_ACCOUNT_TOKEN_EXPIRED: SqlCall = SqlCall {
    name: "mark_account_token_expired",
    sql: "select public.mark_account_token_expired($1::uuid, $2::text) as expired",
};

/// `$1` platform, `$2` not before (RFC 3339), `$3` reason -> the pause.
pub const PAUSE_PLATFORM: SqlCall = SqlCall {
    name: "pause_platform",
    sql: "select public.pause_platform($1::text, $2::text::timestamptz, $3::text) as paused",
};

/// Completes an item: `$1` id, `$2` lease token, `$3` result jsonb.
pub const COMPLETE_INGESTED_ITEM: SqlCall = SqlCall {
    name: "complete_ingested_item",
    sql: "select public.complete_ingested_item($1::uuid, $2::bigint, $3::jsonb) as completed",
};

/// Fails an item: `$1` id, `$2` lease token, `$3` error, `$4` permanent,
/// `$5` retry-after seconds or null.
pub const FAIL_INGESTED_ITEM: SqlCall = SqlCall {
    name: "fail_ingested_item",
    sql: "select public.fail_ingested_item($1::uuid, $2::bigint, $3::text, $4::boolean, $5::int) as failed",
};

/// Defers an item without using an attempt: `$1` id, `$2` lease token, `$3`
/// not before (RFC 3339), `$4` reason.
pub const DEFER_INGESTED_ITEM: SqlCall = SqlCall {
    name: "defer_ingested_item",
    sql: "select public.defer_ingested_item($1::uuid, $2::bigint, $3::text::timestamptz, $4::text) as deferred",
};

/// Leases the next account due for polling and opens its running sync log:
/// `$1` worker, `$2` lease seconds -> the account with `lease_token`,
/// `sync_log_id`, `sync_type`, `backfill_cursor`, `last_post_at`, ... or null.
pub const CLAIM_NEXT_SYNC_ACCOUNT: SqlCall = SqlCall {
    name: "claim_next_sync_account",
    sql: "select public.claim_next_sync_account($1::text, $2::int) as account",
};

/// Closes a sync: `$1` account id, `$2` lease token, `$3` sync log id, `$4`
/// outcome jsonb -> `{accepted, sync_log_id, status, duration_ms, next_sync_at}`.
pub const FINISH_ACCOUNT_SYNC: SqlCall = SqlCall {
    name: "finish_account_sync",
    sql: "select public.finish_account_sync($1::uuid, $2::bigint, $3::uuid, $4::jsonb) as finished",
};
