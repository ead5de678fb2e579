//! Every SQL call publishing sends (functions of migrations 0014 and 0018),
//! each one row holding one `jsonb` value.

use shared::sql::SqlCall;

/// `$1` post id, `$2` lease token, `$3` lease seconds -> the post, its
/// account, its parts, any account hold and the lease left; or the stale
/// answer.
pub const BEGIN: SqlCall = SqlCall {
    name: "begin_scheduled_post_publish",
    sql: "select public.begin_scheduled_post_publish($1::uuid, $2::bigint, $3::int)",
};

/// `$1` leases jsonb `[{"id", "lease_token"}]`, `$2` lease seconds -> the
/// ones renewed `[{"id", "lease_token", "lease_remaining_ms"}]`.
pub const RENEW_LEASES: SqlCall = SqlCall {
    name: "renew_scheduled_post_leases",
    sql: "select public.renew_scheduled_post_leases($1::jsonb, $2::int)",
};

/// `$1` post id, `$2` lease token, `$3` part index, `$4` platform, `$5`
/// status (`sending` | `posted`), `$6` text SHA-256 hex, `$7` record key,
/// `$8` platform post id, `$9` URL, `$10` detail jsonb.
pub const RECORD_PART: SqlCall = SqlCall {
    name: "record_scheduled_post_part",
    sql: "select public.record_scheduled_post_part($1::uuid, $2::bigint, $3::int, $4::text, $5::text, \
          $6::text, $7::text, $8::text, $9::text, $10::jsonb)",
};

/// `$1` post id, `$2` lease token, `$3` result jsonb -> `{"accepted", ...}`.
pub const COMPLETE: SqlCall = SqlCall {
    name: "complete_scheduled_post_publish",
    sql: "select public.complete_scheduled_post_publish($1::uuid, $2::bigint, $3::jsonb)",
};

/// `$1` post id, `$2` lease token, `$3` error, `$4` permanent, `$5`
/// retry-after seconds or null, `$6` detail jsonb.
pub const FAIL: SqlCall = SqlCall {
    name: "fail_scheduled_post_publish",
    sql: "select public.fail_scheduled_post_publish($1::uuid, $2::bigint, $3::text, $4::boolean, $5::int, $6::jsonb)",
};

/// `$1` post id, `$2` lease token, `$3` not before (RFC 3339), `$4` reason.
pub const HOLD: SqlCall = SqlCall {
    name: "hold_scheduled_post_publish",
    sql: "select public.hold_scheduled_post_publish($1::uuid, $2::bigint, $3::text::timestamptz, $4::text)",
};

/// `$1` account id, `$2` platform, `$3` points -> `{"allowed", "not_before"?}`.
pub const RESERVE_WRITE_POINTS: SqlCall = SqlCall {
    name: "reserve_publish_write_points",
    sql: "select public.reserve_publish_write_points($1::uuid, $2::text, $3::int)",
};

/// `$1` limit, `$2` minimum seconds between refreshes, `$3` window days ->
/// `[{"published_post_id", "uri"}]`.
pub const CLAIM_METRICS: SqlCall = SqlCall {
    name: "claim_bluesky_metrics_batch",
    sql: "select public.claim_bluesky_metrics_batch($1::int, $2::int, $3::int)",
};

/// `$1` items jsonb `[{"uri", "likes", "reposts", "replies", "quotes"}]`.
pub const RECORD_METRICS: SqlCall = SqlCall {
    name: "record_bluesky_post_metrics",
    sql: "select public.record_bluesky_post_metrics($1::jsonb)",
};
