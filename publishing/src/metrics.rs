//! Engagement of recently published Bluesky posts: a batch of posts whose
//! numbers are oldest (published in the last 7 days, not refreshed in the
//! last 15 minutes) is read with the AppView's `app.bsky.feed.getPosts` and
//! written to `published_posts.metrics` and `engagement_history`.

use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};
use shared::Error;
use shared::bluesky::Xrpc;
use shared::db::Database;
use spin_sdk::pg4::ParameterValue;

use crate::config::Config;
use crate::sql;

/// Posts per refresh (getPosts takes 25 uris).
const BATCH: i32 = 25;
/// Minimum seconds between two refreshes of one post.
const MIN_INTERVAL_SECONDS: i32 = 900;
/// How far back posts are followed.
const WINDOW_DAYS: i32 = 7;

#[derive(Deserialize)]
struct Due {
    uri: String,
}

/// Refreshes one batch; answers `{"claimed", "found", "updated", "history"}`.
pub fn refresh(db: &Database, config: &Config) -> Result<Value, Error> {
    let due: Vec<Due> = db.call(
        &sql::CLAIM_METRICS,
        &[
            ParameterValue::Int32(BATCH),
            ParameterValue::Int32(MIN_INTERVAL_SECONDS),
            ParameterValue::Int32(WINDOW_DAYS),
        ],
    )?;
    if due.is_empty() {
        return Ok(json!({ "claimed": 0, "found": 0, "updated": 0, "history": 0 }));
    }
    let uris: Vec<&str> = due.iter().map(|d| d.uri.as_str()).collect();
    let appview = Xrpc::new(&config.appview_url).with_timeout(Duration::from_secs(10));
    let views = match appview.get_posts(&uris) {
        Ok(views) => views,
        // The claim marks expire after a minute; the next run tries again.
        Err(failure) => {
            return Ok(json!({ "claimed": due.len(), "error": format!("getPosts: {failure}") }));
        }
    };
    let items: Vec<Value> = views
        .iter()
        .map(|view| {
            json!({
                "uri": view.uri,
                "likes": view.like_count,
                "reposts": view.repost_count,
                "replies": view.reply_count,
                "quotes": view.quote_count,
            })
        })
        .collect();
    let recorded = db.call_json(
        &sql::RECORD_METRICS,
        &[ParameterValue::Jsonb(json!(items).to_string().into_bytes())],
    )?;
    Ok(json!({
        "claimed": due.len(),
        "found": items.len(),
        "updated": recorded.get("updated"),
        "history": recorded.get("history"),
    }))
}
