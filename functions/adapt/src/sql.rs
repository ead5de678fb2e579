//! The SQL calls of this component (migration 0025). Each returns one
//! `jsonb` value and takes the acting user, whose ownership the SQL
//! function re-checks.

use shared::sql::SqlCall;

/// The voice profile and the templates: `$1` user, `$2` voice profile id or null.
pub const ADAPT_PREPARE: SqlCall = SqlCall {
    name: "adapt_prepare",
    sql: "select public.adapt_prepare($1::uuid, $2::uuid)",
};

/// A stored twin (by `$6` idea hash, when given), word that an identical
/// request is writing it now, or one reserved `ai_text_runs` row within the
/// daily limit (which marks the idea as being written for at most `$7`
/// seconds): `$1` user, `$2` provider, `$3` model, `$4`
/// prompt hash, `$5` daily limit, `$6` idea hash or null.
pub const ADAPT_RESERVE_RUN: SqlCall = SqlCall {
    name: "adapt_reserve_run",
    sql: "select public.adapt_reserve_run($1::uuid, $2::text, $3::text, $4::text, $5::int, $6::text, p_in_flight_seconds => $7::int)",
};

/// The writer of an idea gave up: its mark goes (`$1` user, `$2` idea hash).
pub const ADAPT_RELEASE_IDEA: SqlCall = SqlCall {
    name: "adapt_release_idea",
    sql: "select public.adapt_release_idea($1::uuid, $2::text)",
};

/// Settles a reserved run and logs its provider call: `$1` run, `$2` user,
/// `$3` input tokens, `$4` output tokens, `$5` whether the provider answered
/// (else the run is released), `$6` the call's `api_logs` record
/// (`shared::provider_log::ProviderCall::to_json`).
pub const ADAPT_SETTLE_RUN: SqlCall = SqlCall {
    name: "adapt_settle_run",
    sql: "select public.adapt_settle_run($1::uuid, $2::uuid, $3::int, $4::int, $5::bool, $6::jsonb)",
};

/// Stores a new adaptation: `$1` user, `$2` idea, `$3` idea hash, `$4`
/// voice profile or null, `$5` tone, `$6` audience, `$7` adaptations,
/// `$8` force.
pub const ADAPT_SAVE: SqlCall = SqlCall {
    name: "adapt_save",
    sql: "select public.adapt_save($1::uuid, $2::text, $3::text, $4::uuid, $5::text, $6::text, $7::jsonb, $8::bool)",
};

/// One of the user's adaptations with its profile and the templates: `$1`
/// adaptation, `$2` user.
pub const ADAPT_CONTEXT: SqlCall = SqlCall {
    name: "adapt_context",
    sql: "select public.adapt_context($1::uuid, $2::uuid)",
};

/// Replaces one platform's variant: `$1` adaptation, `$2` user, `$3`
/// platform, `$4` variant.
pub const ADAPT_SAVE_PLATFORM: SqlCall = SqlCall {
    name: "adapt_save_platform",
    sql: "select public.adapt_save_platform($1::uuid, $2::uuid, $3::text, $4::jsonb)",
};

/// One of the user's adaptations: `$1` adaptation, `$2` user.
pub const ADAPT_GET: SqlCall = SqlCall {
    name: "adapt_get",
    sql: "select public.adapt_get($1::uuid, $2::uuid)",
};
