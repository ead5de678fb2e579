//! The SQL call `schedule-claim` sends (migration 0014).

use shared::sql::SqlCall;

/// `$1` worker id, `$2` lease seconds, `$3` max items -> the claimed posts
/// (rows with `lease_token`): due, oldest first, one per account in flight,
/// accounts on hold skipped; expired leases are released first.
pub const CLAIM_DUE_POSTS: SqlCall = SqlCall {
    name: "claim_due_scheduled_posts",
    sql: "select public.claim_due_scheduled_posts($1::text, $2::int, $3::int)",
};
