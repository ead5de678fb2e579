//! The SQL calls of the pipeline (migration 0026): one function per request,
//! each answering one jsonb value.

use shared::sql::SqlCall;

/// `$1` owner, `$2` project spec.
pub const CREATE_RUN: SqlCall = SqlCall {
    name: "pipeline_create_run",
    sql: "select public.pipeline_create_run($1::uuid, $2::jsonb) as answer",
};

/// `$1` owner, `$2` run id.
pub const CANCEL_RUN: SqlCall = SqlCall {
    name: "pipeline_cancel_run",
    sql: "select public.pipeline_cancel_run($1::uuid, $2::text) as answer",
};

/// `$1` owner, `$2` run id, `$3` events in the first page.
pub const RUN_FOR_USER: SqlCall = SqlCall {
    name: "pipeline_run_for_user",
    sql: "select public.pipeline_run_for_user($1::uuid, $2::text, $3::integer) as answer",
};

/// `$1` owner, `$2` run id, `$3` cursor (seq), `$4` page size.
pub const RUN_EVENTS: SqlCall = SqlCall {
    name: "pipeline_run_events",
    sql: "select public.pipeline_run_events($1::uuid, $2::text, $3::bigint, $4::integer) as answer",
};

/// `$1` owner, `$2` bot name or null, `$3` SHA-256 (hex) of the token.
pub const MINT_BOT_TOKEN: SqlCall = SqlCall {
    name: "pipeline_mint_bot_token",
    sql: "select public.pipeline_mint_bot_token($1::uuid, $2::text, $3::text) as answer",
};

/// `$1` owner.
pub const LIST_BOT_TOKENS: SqlCall = SqlCall {
    name: "pipeline_list_bot_tokens",
    sql: "select public.pipeline_list_bot_tokens($1::uuid) as answer",
};

/// `$1` owner, `$2` token id.
pub const REVOKE_BOT_TOKEN: SqlCall = SqlCall {
    name: "pipeline_revoke_bot_token",
    sql: "select public.pipeline_revoke_bot_token($1::uuid, $2::uuid) as answer",
};

/// `$1` token hash, `$2` run id, `$3` bot name, `$4` event type, `$5`
/// payload, `$6` event id.
pub const RECORD_EVENT: SqlCall = SqlCall {
    name: "pipeline_record_event",
    sql: "select public.pipeline_record_event($1::text, $2::text, $3::text, $4::text, $5::jsonb, $6::text) as answer",
};

/// `$1` token hash, `$2` run id, `$3` bot name, `$4` SHA-256 (hex).
pub const BEGIN_ARTIFACT: SqlCall = SqlCall {
    name: "pipeline_begin_artifact",
    sql: "select public.pipeline_begin_artifact($1::text, $2::text, $3::text, $4::text) as answer",
};

/// `$1` token hash, `$2` run id, `$3` bot name, `$4` the artifact.
pub const RECORD_ARTIFACT: SqlCall = SqlCall {
    name: "pipeline_record_artifact",
    sql: "select public.pipeline_record_artifact($1::text, $2::text, $3::text, $4::jsonb) as answer",
};

/// `$1` artifact id.
pub const FORGET_ARTIFACT: SqlCall = SqlCall {
    name: "pipeline_forget_artifact",
    sql: "select public.pipeline_forget_artifact($1::uuid) as answer",
};

/// `$1` token hash, `$2` run id, `$3` bot name, `$4` the link.
pub const REGISTER_ARTIFACT_LINK: SqlCall = SqlCall {
    name: "pipeline_register_artifact_link",
    sql: "select public.pipeline_register_artifact_link($1::text, $2::text, $3::text, $4::jsonb) as answer",
};

/// `$1` worker, `$2` lease seconds, `$3` max items, `$4` run id or null.
pub const CLAIM_LINK_CHECKS: SqlCall = SqlCall {
    name: "pipeline_claim_link_checks",
    sql: "select public.pipeline_claim_link_checks($1::text, $2::integer, $3::integer, $4::text) as answer",
};

/// `$1` artifact id, `$2` lease token, `$3` outcome, `$4` detail.
pub const FINISH_LINK_CHECK: SqlCall = SqlCall {
    name: "pipeline_finish_link_check",
    sql: "select public.pipeline_finish_link_check($1::uuid, $2::bigint, $3::text, $4::jsonb) as answer",
};
