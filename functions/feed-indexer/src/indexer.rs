//! One indexer run: read each source author's new posts from the AppView,
//! keep those matching each feed's rules, store them, prune, log.
//!
//! Authors are read once per run however many feeds use them, newest first
//! with `getAuthorFeed` cursor paging, down to the oldest high-water mark of
//! their sources (`feed_source_progress`: the newest item seen last time),
//! so a second run reads only what is new; the first read of an author
//! stops at the retention window or after [`MAX_PAGES`] pages. An item's
//! time is the one `getAuthorFeed` sorts by: the earlier of the post's
//! `createdAt` and `indexedAt` (the repost's `indexedAt` for a repost).
//! Reading stops at items more than [`OVERLAP`] older than the mark: the
//! AppView's `indexedAt` has milliseconds only, so the last second is read
//! again rather than risk a post in it (storing is idempotent). Reposts are
//! read past but neither indexed (a source contributes its own posts) nor
//! counted for the mark. A failed read stores what it got and leaves the
//! mark where it was, so the next run reads the rest again.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Deserialize;
use serde_json::{Value, json};
use shared::Error;
use shared::bluesky::{FeedViewPost, Xrpc};
use shared::db::Database;
use spin_sdk::pg4::ParameterValue;
use uuid::Uuid;

use crate::matching::{RuleRow, Rules};
use crate::sql;

/// Posts asked for per `getAuthorFeed` page (the AppView's maximum).
pub const PAGE_SIZE: u32 = 100;
/// Pages read per author per run at most.
pub const MAX_PAGES: u32 = 10;
/// No new author is started after this long (the cron fires every 5 minutes).
const RUN_BUDGET: Duration = Duration::from_secs(240);
/// How far before the mark reading goes on (see the module documentation).
pub const OVERLAP: chrono::TimeDelta = chrono::TimeDelta::seconds(1);

/// What the run needs besides the database.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The AppView to read authors from.
    pub appview_url: String,
    /// Posts created longer ago than this are not kept.
    pub retention_days: i32,
}

#[derive(Debug, Deserialize)]
struct PlanFeed {
    feed_id: Uuid,
    rules: Vec<RuleRow>,
    sources: Vec<PlanSource>,
}

#[derive(Debug, Deserialize)]
struct PlanSource {
    id: Uuid,
    actor_did: String,
    newest_seen_at: Option<String>,
}

impl PlanSource {
    fn mark(&self) -> Option<DateTime<Utc>> {
        self.newest_seen_at.as_deref().and_then(parse_time)
    }
}

/// One post read from an author, ready to match and store.
#[derive(Debug, Clone)]
struct ReadPost {
    uri: String,
    cid: String,
    author_did: String,
    text: String,
    langs: Vec<String>,
    /// RFC 3339 with microseconds.
    created_at: String,
    /// The item's time in the author feed (for the marks).
    seen_at: DateTime<Utc>,
}

/// What reading one author gave.
#[derive(Debug, Default)]
struct AuthorRead {
    posts: Vec<ReadPost>,
    /// The newest item seen (time, uri), when the read completed.
    newest: Option<(DateTime<Utc>, String)>,
    calls: u32,
    error: Option<String>,
}

fn parse_time(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

fn micros(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// The item's place in the author feed: the repost's indexedAt for a
/// repost, else the earlier of the post's createdAt and indexedAt.
fn item_time(item: &FeedViewPost) -> Option<DateTime<Utc>> {
    if let Some(reason) = &item.reason {
        return reason
            .get("indexedAt")
            .and_then(Value::as_str)
            .and_then(parse_time);
    }
    let created = item.post.created_at().and_then(parse_time);
    let indexed = item.post.indexed_at.as_deref().and_then(parse_time);
    match (created, indexed) {
        (Some(c), Some(i)) => Some(c.min(i)),
        (c, i) => c.or(i),
    }
}

/// Reads `actor`'s items newer than `stop` (and inside the retention
/// window), newest first.
fn read_author(
    appview: &Xrpc,
    actor: &str,
    stop: Option<DateTime<Utc>>,
    cutoff: DateTime<Utc>,
    now: DateTime<Utc>,
) -> AuthorRead {
    let mut read = AuthorRead::default();
    let mut cursor: Option<String> = None;
    loop {
        if read.calls >= MAX_PAGES {
            break;
        }
        read.calls += 1;
        let page = match appview.get_author_feed(actor, PAGE_SIZE, cursor.as_deref()) {
            Ok(page) => page,
            Err(failure) => {
                read.error = Some(format!("getAuthorFeed {actor}: {failure}"));
                read.newest = None;
                return read;
            }
        };
        let mut reached_old = false;
        for item in &page.feed {
            let Some(seen_at) = item_time(item) else {
                continue;
            };
            if stop.is_some_and(|mark| seen_at < mark - OVERLAP) || seen_at < cutoff {
                reached_old = true;
                continue;
            }
            if item.reason.is_some() || item.post.author.did != actor {
                continue;
            }
            if read.newest.as_ref().is_none_or(|(t, _)| seen_at > *t) {
                read.newest = Some((seen_at, item.post.uri.clone()));
            }
            // The author's clock may be off: a post dated in the future
            // would sit on top of the feed until then, so it is dated now.
            let created_at = item
                .post
                .created_at()
                .and_then(parse_time)
                .unwrap_or(seen_at)
                .min(now);
            read.posts.push(ReadPost {
                uri: item.post.uri.clone(),
                cid: item.post.cid.clone(),
                author_did: item.post.author.did.clone(),
                text: item.post.text().to_string(),
                langs: item.post.langs(),
                created_at: micros(created_at),
                seen_at,
            });
        }
        match page.cursor {
            Some(next)
                if !reached_old && !page.feed.is_empty() && Some(&next) != cursor.as_ref() =>
            {
                cursor = Some(next);
            }
            _ => break,
        }
    }
    read
}

/// Counts for one feed in this run.
#[derive(Debug, Default)]
struct FeedCounts {
    sources: u32,
    appview_calls: u32,
    posts_seen: u64,
    posts_matched: u64,
    posts_inserted: u64,
    errors: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct StoreAnswer {
    #[serde(default)]
    inserted: u64,
}

#[derive(Debug, Deserialize)]
struct RunLogged {
    #[serde(default)]
    posts_pruned: u64,
}

/// Runs the indexer once over every enabled feed; the report goes into the
/// heartbeat.
pub fn run(db: &Database, settings: &Settings) -> Result<Value, Error> {
    let started = Instant::now();
    let now = Utc::now();
    let started_at = micros(now);
    let cutoff = now - chrono::Duration::days(i64::from(settings.retention_days.max(1)));
    let plan: Vec<PlanFeed> = db.call(&sql::FEED_INDEXER_PLAN, &[])?;
    let appview = Xrpc::new(&settings.appview_url);

    // Each author once, down to the oldest mark among its sources (none:
    // some source has never been read, so down to the retention window).
    let mut stops: BTreeMap<&str, Option<DateTime<Utc>>> = BTreeMap::new();
    for source in plan.iter().flat_map(|f| &f.sources) {
        let mark = source.mark();
        stops
            .entry(source.actor_did.as_str())
            .and_modify(|stop| *stop = stop.zip(mark).map(|(a, b)| a.min(b)))
            .or_insert(mark);
    }
    let mut reads: BTreeMap<&str, AuthorRead> = BTreeMap::new();
    let mut skipped_authors = 0usize;
    for (actor, stop) in &stops {
        if started.elapsed() > RUN_BUDGET {
            skipped_authors += 1;
            continue;
        }
        reads.insert(actor, read_author(&appview, actor, *stop, cutoff, now));
    }

    let mut totals = json!({
        "feeds": plan.len(),
        "authors": stops.len(),
        "authors_deferred": skipped_authors,
        "appview_calls": reads.values().map(|r| r.calls).sum::<u32>(),
        "posts_inserted": 0,
        "posts_pruned": 0,
        "errors": 0,
    });
    let mut inserted_total = 0u64;
    let mut pruned_total = 0u64;
    let mut error_total = 0usize;
    for feed in &plan {
        let rules = Rules::new(&feed.rules);
        let mut counts = FeedCounts::default();
        for source in &feed.sources {
            counts.sources += 1;
            let Some(read) = reads.get(source.actor_did.as_str()) else {
                counts
                    .errors
                    .push(format!("{}: deferred to the next run", source.actor_did));
                continue;
            };
            counts.appview_calls += read.calls;
            if let Some(error) = &read.error {
                counts.errors.push(error.clone());
            }
            let mark = source.mark();
            let fresh: Vec<&ReadPost> = read
                .posts
                .iter()
                .filter(|p| mark.is_none_or(|m| p.seen_at >= m - OVERLAP))
                .collect();
            counts.posts_seen += fresh.len() as u64;
            let matched: Vec<Value> = fresh
                .into_iter()
                .filter(|p| rules.matches(&p.text, &p.langs))
                .map(|p| {
                    json!({
                        "uri": p.uri,
                        "cid": p.cid,
                        "author_did": p.author_did,
                        "text": p.text,
                        "lang": p.langs.first(),
                        "created_at": p.created_at,
                    })
                })
                .collect();
            counts.posts_matched += matched.len() as u64;
            let newest = read
                .newest
                .as_ref()
                .filter(|_| read.error.is_none())
                .map(|(t, uri)| json!({ "seen_at": micros(*t), "uri": uri }));
            if matched.is_empty() && newest.is_none() {
                continue;
            }
            let stored: StoreAnswer = db.call(
                &sql::STORE_FEED_SOURCE_POSTS,
                &[
                    ParameterValue::Uuid(source.id.to_string()),
                    ParameterValue::Jsonb(Value::Array(matched).to_string().into_bytes()),
                    newest.map_or(ParameterValue::DbNull, |n| {
                        ParameterValue::Jsonb(n.to_string().into_bytes())
                    }),
                    ParameterValue::Int32(settings.retention_days),
                ],
            )?;
            counts.posts_inserted += stored.inserted;
        }
        let report = json!({
            "sources": counts.sources,
            "appview_calls": counts.appview_calls,
            "posts_seen": counts.posts_seen,
            "posts_matched": counts.posts_matched,
            "posts_inserted": counts.posts_inserted,
            "errors": counts.errors,
            "started_at": started_at,
        });
        let logged: RunLogged = db.call(
            &sql::RECORD_FEED_INDEX_RUN,
            &[
                ParameterValue::Uuid(feed.feed_id.to_string()),
                ParameterValue::Jsonb(report.to_string().into_bytes()),
                ParameterValue::Int32(settings.retention_days),
            ],
        )?;
        inserted_total += counts.posts_inserted;
        pruned_total += logged.posts_pruned;
        error_total += counts.errors.len();
    }
    totals["posts_inserted"] = json!(inserted_total);
    totals["posts_pruned"] = json!(pruned_total);
    totals["errors"] = json!(error_total);
    Ok(totals)
}
