//! Every SQL statement this component sends (migration 0021); each returns
//! one `jsonb` value.

use shared::sql::SqlCall;

/// A new connect row (`$1` user, `$2` platform, `$3` sealed verifier, `$4`
/// return URL, `$5` redirect URI, `$6` lifetime seconds).
pub const BEGIN_CONNECT_STATE: SqlCall = SqlCall {
    name: "begin_connect_state",
    sql: "select public.begin_connect_state($1::uuid, $2::text, $3::text, $4::text, $5::text, $6::int) as state",
};

/// Spends a connect row once (`$1` state id, `$2` user, `$3` platform).
pub const CONSUME_CONNECT_STATE: SqlCall = SqlCall {
    name: "consume_connect_state",
    sql: "select public.consume_connect_state($1::uuid, $2::uuid, $3::text) as state",
};

/// The callback's one write (`$1` user, `$2` platform, `$3` account jsonb).
pub const STORE_CONNECTED_ACCOUNT: SqlCall = SqlCall {
    name: "store_connected_account",
    sql: "select public.store_connected_account($1::uuid, $2::text, $3::jsonb) as stored",
};

/// The owner's account and sealed credentials (`$1` user, `$2` account).
pub const ACCOUNT_FOR_DISCONNECT: SqlCall = SqlCall {
    name: "connect_account_for_disconnect",
    sql: "select public.connect_account_for_disconnect($1::uuid, $2::uuid) as account",
};

/// Drops the credentials and marks the account disconnected (`$1` user, `$2` account).
pub const DISCONNECT_ACCOUNT: SqlCall = SqlCall {
    name: "disconnect_account",
    sql: "select public.disconnect_account($1::uuid, $2::uuid) as result",
};
