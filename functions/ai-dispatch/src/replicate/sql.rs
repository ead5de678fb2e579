//! The SQL calls of Replicate's work (migrations 0009, 0017, 0020, 0023),
//! each one named function answering one `jsonb` value.

use shared::sql::SqlCall;

/// Claims pending generations, screened and charged (`$1` worker, `$2`
/// lease seconds, `$3` max items).
pub const CLAIM_NEXT_GENERATIONS: SqlCall = SqlCall {
    name: "claim_next_generations",
    sql: "select public.claim_next_generations($1::text, $2::integer, $3::integer) as items",
};

/// Token, budget slot and the owner's LoRA for one leased generation
/// (`$1` id, `$2` lease token).
pub const BEGIN_REPLICATE_CREATION: SqlCall = SqlCall {
    name: "begin_replicate_creation",
    sql: "select public.begin_replicate_creation($1::uuid, $2::bigint) as answer",
};

/// Stores the prediction id, status processing, and logs the call (`$1`
/// id, `$2` lease token, `$3` prediction id, `$4` call).
pub const FINISH_REPLICATE_CREATION: SqlCall = SqlCall {
    name: "finish_replicate_creation",
    sql: "select public.finish_replicate_creation($1::uuid, $2::bigint, $3::text, $4::jsonb) as answer",
};

/// Retries or dead-letters (refund, notification) a generation (`$1` id,
/// `$2` lease token, `$3` error, `$4` permanent, `$5` retry after s or
/// null, `$6` call or null).
pub const FAIL_REPLICATE_GENERATION: SqlCall = SqlCall {
    name: "fail_replicate_generation",
    sql: "select public.fail_replicate_generation($1::uuid, $2::bigint, $3::text, $4::boolean, $5::integer, $6::jsonb) as answer",
};

/// Puts a generation back to wait `$3` seconds without using an attempt
/// (`$1` id, `$2` lease token, `$4` reason).
pub const DEFER_GENERATION: SqlCall = SqlCall {
    name: "defer_generation",
    sql: "select public.defer_generation($1::uuid, $2::bigint, now() + make_interval(secs => $3::integer), $4::text) as answer",
};

/// Counts an error on a token and cools it down (`$1` token id, `$2`
/// error, `$3` cool-down seconds).
pub const RECORD_REPLICATE_TOKEN_ERROR: SqlCall = SqlCall {
    name: "record_replicate_token_error",
    sql: "select public.record_replicate_token_error($1::uuid, $2::text, $3::integer, false) as answer",
};

/// Deactivates a refused token and tells the admins once (`$1` token id,
/// `$2` error).
pub const RETIRE_REPLICATE_TOKEN: SqlCall = SqlCall {
    name: "retire_replicate_token",
    sql: "select public.retire_replicate_token($1::uuid, $2::text) as answer",
};

/// One `api_logs` row (`$1` the call).
pub const RECORD_PROVIDER_CALL: SqlCall = SqlCall {
    name: "record_provider_call",
    sql: "select public.record_provider_call($1::jsonb) as call",
};

/// Claims stored Replicate webhooks, earliest `webhook-timestamp` first,
/// then earliest arrival (`$1` worker, `$2` lease
/// seconds, `$3` max items).
pub const CLAIM_REPLICATE_WEBHOOKS: SqlCall = SqlCall {
    name: "claim_replicate_webhooks",
    sql: "select public.claim_replicate_webhooks($1::text, $2::integer, $3::integer) as items",
};

/// Settles a webhook item (`$1` id, `$2` lease token, `$3` result).
pub const COMPLETE_INGESTED_ITEM: SqlCall = SqlCall {
    name: "complete_ingested_item",
    sql: "select public.complete_ingested_item($1::uuid, $2::bigint, $3::jsonb) as answer",
};

/// Retries or dead-letters a webhook item (`$1` id, `$2` lease token, `$3`
/// error, `$4` permanent, `$5` retry after s or null).
pub const FAIL_INGESTED_ITEM: SqlCall = SqlCall {
    name: "fail_ingested_item",
    sql: "select public.fail_ingested_item($1::uuid, $2::bigint, $3::text, $4::boolean, $5::integer) as answer",
};

/// Whose a prediction or training id is (`$1` id).
pub const REPLICATE_PREDICTION_TARGET: SqlCall = SqlCall {
    name: "replicate_prediction_target",
    sql: "select public.replicate_prediction_target($1::text) as target",
};

/// Applies a prediction to its generation (`$1` prediction summary, `$2`
/// our copies or null).
pub const APPLY_REPLICATE_PREDICTION: SqlCall = SqlCall {
    name: "apply_replicate_prediction",
    sql: "select public.apply_replicate_prediction($1::jsonb, $2::jsonb) as answer",
};

/// Fails a succeeded prediction whose outputs cannot be copied (`$1`
/// prediction id, `$2` error).
pub const FAIL_REPLICATE_OUTPUTS: SqlCall = SqlCall {
    name: "fail_replicate_outputs",
    sql: "select public.fail_replicate_outputs($1::text, $2::text) as answer",
};

/// Generations to poll (`$1` worker, `$2` seconds without news, `$3` max).
pub const CLAIM_REPLICATE_POLLS: SqlCall = SqlCall {
    name: "claim_replicate_polls",
    sql: "select public.claim_replicate_polls($1::text, $2::integer, $3::integer) as items",
};

/// The next pool token (`{"id", "token"}` or null).
pub const NEXT_REPLICATE_TOKEN: SqlCall = SqlCall {
    name: "next_replicate_token",
    sql: "select public.next_replicate_token() as token",
};

/// Refunds every failed item's unrefunded charge.
pub const REFUND_FAILED_CHARGES: SqlCall = SqlCall {
    name: "refund_failed_charges",
    sql: "select public.refund_failed_charges() as answer",
};

/// LoRAs waiting for a training, with their owner's images (`$1` worker,
/// `$2` lease seconds, `$3` max).
pub const CLAIM_LORA_TRAININGS: SqlCall = SqlCall {
    name: "claim_lora_trainings",
    sql: "select public.claim_lora_trainings($1::text, $2::integer, $3::integer) as items",
};

/// The training was created (`$1` LoRA id, `$2` training id, `$3` call,
/// `$4` the pool token that created it).
pub const START_LORA_TRAINING: SqlCall = SqlCall {
    name: "start_lora_training",
    sql: "select public.start_lora_training($1::uuid, $2::text, $3::jsonb, $4::uuid) as answer",
};

/// Running trainings to poll, each with the token that created it or the
/// pool's next (`$1` worker, `$2` seconds without news, `$3` max).
pub const CLAIM_REPLICATE_TRAINING_POLLS: SqlCall = SqlCall {
    name: "claim_replicate_training_polls",
    sql: "select public.claim_replicate_training_polls($1::text, $2::integer, $3::integer) as items",
};

/// Fails a training Replicate does not know (`$1` training id).
pub const LOSE_REPLICATE_TRAINING: SqlCall = SqlCall {
    name: "lose_replicate_training",
    sql: "select public.lose_replicate_training($1::text) as answer",
};

/// Starting a training failed (`$1` LoRA id, `$2` error, `$3` permanent,
/// `$4` call or null).
pub const FAIL_LORA_TRAINING: SqlCall = SqlCall {
    name: "fail_lora_training",
    sql: "select public.fail_lora_training($1::uuid, $2::text, $3::boolean, $4::jsonb) as answer",
};

/// Applies a training to its LoRA (`$1` training summary, `$2` our copy of
/// the weights or null).
pub const APPLY_REPLICATE_TRAINING: SqlCall = SqlCall {
    name: "apply_replicate_training",
    sql: "select public.apply_replicate_training($1::jsonb, $2::jsonb) as answer",
};
