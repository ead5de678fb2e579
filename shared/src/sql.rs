//! Every SQL statement a component sends, as a named constant. Each calls one
//! SQL function from `migrations/` and yields one `jsonb` value; parameters
//! are text, integers, booleans, uuids or jsonb, with timestamps passed as
//! RFC 3339 text and cast in SQL (`SPIN.md` §3).

/// One named SQL call.
#[derive(Debug, Clone, Copy)]
pub struct SqlCall {
    /// The SQL function's name, for error messages.
    pub name: &'static str,
    /// The statement text.
    pub sql: &'static str,
}

/// Database reachability, latest migration, queue depths and heartbeats.
pub const OUTPOST_STATUS: SqlCall = SqlCall {
    name: "outpost_status",
    sql: "select public.outpost_status() as status",
};

/// Records that a worker ran (`$1` worker id, `$2` detail jsonb).
pub const RECORD_WORKER_HEARTBEAT: SqlCall = SqlCall {
    name: "record_worker_heartbeat",
    sql: "select public.record_worker_heartbeat($1::text, $2::jsonb) as heartbeat",
};

/// One maintenance pass (`$1` worker id): what pg_cron does on Supabase.
pub const RUN_MAINTENANCE: SqlCall = SqlCall {
    name: "run_maintenance",
    sql: "select public.run_maintenance($1::text) as report",
};
