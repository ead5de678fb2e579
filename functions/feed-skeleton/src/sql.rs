//! The SQL calls of this component (migration 0015). Each returns one
//! `jsonb` value; timestamps go in as RFC 3339 text and are cast in SQL.

use shared::sql::SqlCall;

/// One getFeedSkeleton request: resolves the feed and returns its page, plus
/// the cached signing key of the requesting DID when `$7` is given.
/// `$1` feed at-uri, `$2` publisher DID, `$3` rkey, `$4` limit, `$5` cursor
/// created_at (RFC 3339), `$6` cursor uri, `$7` issuer DID.
pub const FEED_SKELETON: SqlCall = SqlCall {
    name: "feed_skeleton",
    sql: "select public.feed_skeleton($1::text, $2::text, $3::text, $4::int, $5::text, $6::text, $7::text)",
};

/// The published, enabled feeds.
pub const DESCRIBE_FEED_GENERATOR: SqlCall = SqlCall {
    name: "describe_feed_generator",
    sql: "select public.describe_feed_generator()",
};

/// Caches an issuer's signing key: `$1` DID, `$2` multikey, `$3` TTL seconds.
pub const STORE_DID_SIGNING_KEY: SqlCall = SqlCall {
    name: "store_did_signing_key",
    sql: "select public.store_did_signing_key($1::text, $2::text, $3::int)",
};

/// The owner's feed and the account to publish it with: `$1` feed id, `$2` user id.
pub const FEED_PUBLISH_TARGET: SqlCall = SqlCall {
    name: "feed_publish_target",
    sql: "select public.feed_publish_target($1::uuid, $2::uuid)",
};

/// Stores where the generator record lives: `$1` feed id, `$2` user id,
/// `$3` at-uri, `$4` rkey, `$5` publisher DID, `$6` the record's createdAt.
pub const RECORD_FEED_PUBLISHED: SqlCall = SqlCall {
    name: "record_feed_published",
    sql: "select public.record_feed_published($1::uuid, $2::uuid, $3::text, $4::text, $5::text, $6::text)",
};
