//! The one SQL call this component sends (migration 0012).

use shared::sql::SqlCall;

/// Resolves the account and archives one webhook, deduplicated on
/// `(platform, external_id)`: `$1` platform, `$2` event type, `$3` external
/// id, `$4` payload jsonb, `$5` platform user id or null, `$6` error or null
/// -> `{"stored", "duplicate", "id", "account_id", "user_id"}`.
pub const STORE_WEBHOOK_EVENT: SqlCall = SqlCall {
    name: "store_webhook_event",
    sql: "select public.store_webhook_event($1::text, $2::text, $3::text, $4::jsonb, $5::text, $6::text) as stored",
};
