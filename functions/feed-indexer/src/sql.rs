//! The SQL calls of this component (migration 0015). Each returns one
//! `jsonb` value.

use shared::sql::SqlCall;

/// Every enabled feed with its rules and sources (and their marks).
pub const FEED_INDEXER_PLAN: SqlCall = SqlCall {
    name: "feed_indexer_plan",
    sql: "select public.feed_indexer_plan()",
};

/// Stores one source's matching posts and moves its mark: `$1` source id,
/// `$2` posts jsonb, `$3` newest item jsonb or null, `$4` retention days.
pub const STORE_FEED_SOURCE_POSTS: SqlCall = SqlCall {
    name: "store_feed_source_posts",
    sql: "select public.store_feed_source_posts($1::uuid, $2::jsonb, $3::jsonb, $4::int)",
};

/// Prunes one feed and logs its counts: `$1` feed id, `$2` report jsonb,
/// `$3` retention days.
pub const RECORD_FEED_INDEX_RUN: SqlCall = SqlCall {
    name: "record_feed_index_run",
    sql: "select public.record_feed_index_run($1::uuid, $2::jsonb, $3::int)",
};
