//! Scheduled polling and backfill of connected accounts. One account at a
//! time is leased with `claim_next_sync_account` (due `next_sync_at`,
//! syncing on, not paused; the claim opens its running `sync_logs` row) and
//! closed with `finish_account_sync` (counts, status, `duration_ms`,
//! `next_sync_at`, `error_count` by the schema's triggers).
//!
//! - The first sync of an account is a backfill: every page, oldest last,
//!   resumable from a saved cursor when the run's time is used up.
//! - Later syncs fetch only what is new: Bluesky `getAuthorFeed` and
//!   Instagram `/me/media` from the newest page on, stopping at the first
//!   post already archived (or older than the newest archived one); Strava
//!   `athlete/activities?after=` a week before the last sync, keeping
//!   archived activities as they are (webhooks carry their edits).
//! - A used-up rate limit ends the sync as `cancelled` (or `partial` when
//!   some posts were archived) with `next_sync_at` at the window's end: it
//!   waits, it does not count as a failure. A rejected token makes the
//!   account `token_expired`.

use chrono::{DateTime, Duration, Utc};
use serde_json::{Value, json};
use shared::Error;
use shared::bluesky::{Xrpc, XrpcFailure};
use spin_sdk::pg4::ParameterValue;

use crate::parse::{self, ArchivePost, FeedEntry};
use crate::run::{ACCOUNTS_UNTIL, Account, Failure, REQUEST_TIMEOUT, Run, WORKER, jsonb, uuid};
use crate::sql;
use crate::tokens;
use crate::{instagram, strava};

/// Accounts synced per run at most.
const MAX_ACCOUNTS: usize = 5;
/// A sync's lease: longer than a whole run.
const LEASE_SECONDS: i32 = 300;
/// Pages per account per run at most.
const MAX_PAGES: u32 = 20;
/// Strava activities per page.
const STRAVA_PER_PAGE: usize = 100;
/// Bluesky posts per page (the first page of a later sync is smaller: it
/// usually holds everything new).
const BLUESKY_PAGE: &str = "100";
const BLUESKY_FIRST_PAGE: &str = "25";

/// Seconds between polls of a healthy account, per platform: Bluesky has no
/// webhooks; Strava and Instagram webhooks bring most changes.
fn interval_seconds(platform: &str) -> i64 {
    match platform {
        "bluesky" => 900,
        "instagram" => 3600,
        _ => 21_600,
    }
}

/// What one account's sync did so far.
#[derive(Default)]
struct Progress {
    pages: u32,
    fetched: i64,
    created: i64,
    updated: i64,
    unchanged: i64,
    skipped: i64,
    not_archived: i64,
    invalid: i64,
    first_invalid: Option<String>,
    media_queued: i64,
    resume: Option<String>,
    complete: bool,
}

/// One fetched page, parsed.
struct Page {
    posts: Vec<ArchivePost>,
    received: usize,
    not_archived: usize,
    invalid: Vec<String>,
    next: Option<String>,
}

/// How to walk an account's pages.
struct Walk {
    cursor: Option<String>,
    keep_existing: bool,
    stop_at_known: bool,
    stop_at_or_before: Option<DateTime<Utc>>,
    resumable: bool,
}

/// Syncs due accounts until none is due, `MAX_ACCOUNTS` were synced, or the
/// run's time is used up.
pub fn process(run: &Run) -> Result<Value, Error> {
    let mut synced = Vec::new();
    while !run.past(ACCOUNTS_UNTIL) && synced.len() < MAX_ACCOUNTS {
        let claimed: Option<Account> = run.db.call(
            &sql::CLAIM_NEXT_SYNC_ACCOUNT,
            &[WORKER.to_string().into(), LEASE_SECONDS.into()],
        )?;
        let Some(mut account) = claimed else {
            break;
        };
        let mut progress = Progress::default();
        let result = sync_account(run, &mut account, &mut progress);
        let outcome = outcome(&account, &progress, &result);
        let finished = run.db.call_json(
            &sql::FINISH_ACCOUNT_SYNC,
            &[
                uuid(&account.id),
                account
                    .lease_token
                    .map_or(ParameterValue::DbNull, ParameterValue::Int64),
                account
                    .sync_log_id
                    .as_deref()
                    .map_or(ParameterValue::DbNull, uuid),
                jsonb(&outcome),
            ],
        );
        if let Err(Failure::Stop(error)) = result {
            return Err(error);
        }
        let finished = finished?;
        synced.push(json!({
            "account_id": account.id,
            "platform": account.platform,
            "sync_type": account.sync_type,
            "status": outcome["status"],
            "created": progress.created,
            "updated": progress.updated,
            "pages": progress.pages,
            "accepted": finished["accepted"],
        }));
    }
    Ok(json!({ "synced": synced.len(), "accounts": synced }))
}

fn sync_account(run: &Run, account: &mut Account, progress: &mut Progress) -> Result<(), Failure> {
    account.usable()?;
    match account.platform.as_str() {
        "bluesky" => bluesky(run, account, progress),
        "strava" => strava_sync(run, account, progress),
        "instagram" => instagram_sync(run, account, progress),
        other => Err(Failure::permanent(format!("ingest does not poll {other}"))),
    }
}

fn backfill(account: &Account) -> bool {
    account.sync_type.as_deref() != Some("scheduled")
}

fn last_post_at(account: &Account) -> Option<DateTime<Utc>> {
    account.last_post_at.as_deref().and_then(parse::parse_time)
}

/// Fetches pages with `fetch` and archives them, as `walk` says.
fn page_through(
    run: &Run,
    account: &Account,
    progress: &mut Progress,
    walk: Walk,
    mut fetch: impl FnMut(Option<&str>) -> Result<Page, Failure>,
) -> Result<(), Failure> {
    let mut cursor = walk.cursor;
    loop {
        if walk.resumable {
            progress.resume = cursor.clone();
        }
        if run.past(ACCOUNTS_UNTIL) || progress.pages >= MAX_PAGES {
            return Ok(());
        }
        let page = fetch(cursor.as_deref())?;
        progress.pages += 1;
        progress.fetched += i64::try_from(page.received).unwrap_or(i64::MAX);
        progress.not_archived += i64::try_from(page.not_archived).unwrap_or(0);
        progress.invalid += i64::try_from(page.invalid.len()).unwrap_or(0);
        if progress.first_invalid.is_none() {
            progress.first_invalid = page.invalid.first().cloned();
        }
        let reached_old = walk.stop_at_or_before.is_some_and(|newest| {
            page.posts
                .iter()
                .filter_map(|p| parse::parse_time(&p.created_at_platform))
                .any(|at| at <= newest)
        });
        if !page.posts.is_empty() {
            let archived = run.archive(
                &account.id,
                None,
                &page.posts,
                walk.keep_existing,
                walk.stop_at_known,
            )?;
            progress.created += archived.created;
            progress.updated += archived.updated;
            progress.unchanged += archived.unchanged;
            progress.skipped += archived.skipped;
            progress.media_queued += archived.media_queued;
            if archived.stopped_at_known {
                break;
            }
        }
        match page.next {
            Some(next) if page.received > 0 && !reached_old && cursor.as_ref() != Some(&next) => {
                cursor = Some(next);
            }
            _ => break,
        }
    }
    progress.complete = true;
    progress.resume = None;
    Ok(())
}

// Bluesky ------------------------------------------------------------------

fn bluesky(run: &Run, account: &Account, progress: &mut Progress) -> Result<(), Failure> {
    let appview = Xrpc::new(&run.config.bluesky_appview_url).with_timeout(REQUEST_TIMEOUT);
    let did = account.platform_user_id.clone();
    let backfill = backfill(account);
    let walk = Walk {
        cursor: account.resume_cursor.clone(),
        keep_existing: false,
        stop_at_known: !backfill,
        stop_at_or_before: if backfill {
            None
        } else {
            last_post_at(account)
        },
        resumable: true,
    };
    page_through(run, account, progress, walk, |cursor| {
        run.check_pause("bluesky")?;
        let limit = if backfill || cursor.is_some() {
            BLUESKY_PAGE
        } else {
            BLUESKY_FIRST_PAGE
        };
        let mut params = vec![("actor", did.as_str()), ("limit", limit)];
        if let Some(cursor) = cursor {
            params.push(("cursor", cursor));
        }
        let page: Value = appview
            .query("app.bsky.feed.getAuthorFeed", &params, None)
            .map_err(|f| xrpc_failure(run, f))?;
        let (entries, next) = parse::bluesky_feed_page(&page, &did)
            .map_err(|e| Failure::transient(format!("getAuthorFeed answer: {e}")))?;
        let mut out = Page {
            posts: Vec::new(),
            received: entries.len(),
            not_archived: 0,
            invalid: Vec::new(),
            next,
        };
        for entry in entries {
            match entry {
                Ok(FeedEntry::Post(post)) => out.posts.push(*post),
                Ok(FeedEntry::Skipped(_)) => out.not_archived += 1,
                Err(e) => out.invalid.push(e.0),
            }
        }
        Ok(out)
    })
}

fn xrpc_failure(run: &Run, failure: XrpcFailure) -> Failure {
    if failure.status() == Some(429) {
        let wait = failure.retry_after().unwrap_or(60).clamp(1, 86_400);
        let until = run.now() + Duration::seconds(i64::try_from(wait).unwrap_or(60));
        let reason = format!("AppView: {failure}");
        if let Err(stop) = run.pause("bluesky", until, &reason) {
            return stop;
        }
        return Failure::RateLimited {
            platform: "bluesky",
            until,
            reason,
        };
    }
    if failure.is_transient() {
        Failure::Transient {
            retry_after: failure.retry_after(),
            message: format!("AppView: {failure}"),
        }
    } else {
        Failure::permanent(format!("AppView: {failure}"))
    }
}

// Strava -------------------------------------------------------------------

fn strava_sync(run: &Run, account: &mut Account, progress: &mut Progress) -> Result<(), Failure> {
    let backfill = backfill(account);
    // Later syncs look a week back from the last sync: activities are often
    // uploaded hours after they start.
    let after = if backfill {
        None
    } else {
        account
            .last_sync_at
            .as_deref()
            .and_then(parse::parse_time)
            .or_else(|| last_post_at(account))
            .map(|at| (at - Duration::days(7)).timestamp().to_string())
    };
    let walk = Walk {
        cursor: if backfill {
            account.resume_cursor.clone()
        } else {
            None
        },
        keep_existing: true,
        stop_at_known: false,
        stop_at_or_before: None,
        resumable: backfill,
    };
    let snapshot = account.clone();
    let mut account_state = account.clone();
    let per_page = STRAVA_PER_PAGE.to_string();
    let result = page_through(run, &snapshot, progress, walk, |cursor| {
        // Backfill: the cursor is `before` (Unix seconds), always page 1.
        // Later syncs: `after` fixed, the cursor is the page number.
        let page_number = if backfill {
            "1".to_string()
        } else {
            cursor.unwrap_or("1").to_string()
        };
        let mut params = vec![
            ("per_page", per_page.as_str()),
            ("page", page_number.as_str()),
        ];
        if backfill && let Some(before) = cursor {
            params.push(("before", before));
        }
        if let Some(after) = after.as_deref() {
            params.push(("after", after));
        }
        let list = tokens::with_strava_token(run, &mut account_state, |token| {
            strava::activities(run, token, &params)
        })?;
        let parsed = parse::strava_activity_page(&list)
            .map_err(|e| Failure::transient(format!("athlete/activities answer: {e}")))?;
        let received = parsed.len();
        let mut out = Page {
            posts: Vec::new(),
            received,
            not_archived: 0,
            invalid: Vec::new(),
            next: None,
        };
        for activity in parsed {
            match activity {
                Ok(post) => out.posts.push(post),
                Err(e) => out.invalid.push(e.0),
            }
        }
        if received >= STRAVA_PER_PAGE {
            out.next = if backfill {
                out.posts
                    .iter()
                    .filter_map(|p| parse::parse_time(&p.created_at_platform))
                    .min()
                    .map(|oldest| (oldest.timestamp() + 1).to_string())
            } else {
                page_number.parse::<u32>().ok().map(|n| (n + 1).to_string())
            };
        }
        Ok(out)
    });
    *account = account_state;
    result
}

// Instagram ----------------------------------------------------------------

fn instagram_sync(run: &Run, account: &Account, progress: &mut Progress) -> Result<(), Failure> {
    let token = tokens::instagram_token(run, account)?;
    let backfill = backfill(account);
    let walk = Walk {
        cursor: account.resume_cursor.clone(),
        keep_existing: false,
        stop_at_known: !backfill,
        stop_at_or_before: if backfill {
            None
        } else {
            last_post_at(account)
        },
        resumable: true,
    };
    page_through(run, account, progress, walk, |cursor| {
        let page =
            instagram::media_page(run, &token, cursor).map_err(|f| f.for_account(&account.id))?;
        let (media, after) = parse::instagram_media_page(&page)
            .map_err(|e| Failure::transient(format!("/me/media answer: {e}")))?;
        let mut out = Page {
            posts: Vec::new(),
            received: media.len(),
            not_archived: 0,
            invalid: Vec::new(),
            next: after,
        };
        for item in media {
            match item {
                Ok(post) => out.posts.push(post),
                Err(e) => out.invalid.push(e.0),
            }
        }
        Ok(out)
    })
}

// Outcome --------------------------------------------------------------------

/// The `finish_account_sync` outcome for what happened.
fn outcome(account: &Account, progress: &Progress, result: &Result<(), Failure>) -> Value {
    let backfill = backfill(account);
    let wrote = progress.created + progress.updated > 0;
    let status = match result {
        Ok(()) => "success",
        Err(Failure::RateLimited { .. }) if wrote => "partial",
        Err(Failure::RateLimited { .. }) => "cancelled",
        Err(_) => "failed",
    };
    let mut metadata = json!({
        "sync_type": account.sync_type,
        "platform": account.platform,
        "pages": progress.pages,
        "posts_unchanged": progress.unchanged,
        "posts_skipped": progress.skipped,
        "not_archived": progress.not_archived,
        "invalid": progress.invalid,
        "media_queued": progress.media_queued,
        "complete": progress.complete,
    });
    if let Some(first) = &progress.first_invalid {
        metadata["first_invalid"] = json!(parse::truncate(first, 300));
    }
    let mut outcome = json!({
        "status": status,
        "posts_fetched": progress.fetched,
        "posts_created": progress.created,
        "posts_updated": progress.updated,
        "posts_deleted": 0,
        "interval_seconds": interval_seconds(&account.platform),
        "resume_cursor": progress.resume,
        "backfill_done": backfill && progress.complete && result.is_ok(),
        "metadata": metadata,
    });
    if let Err(failure) = result {
        outcome["error_message"] = json!(parse::truncate(&failure.message(), 1000));
        let kind = match failure {
            Failure::Transient { .. } => "transient",
            Failure::Permanent(_) => "permanent",
            Failure::RateLimited { .. } => "rate_limited",
            Failure::TokenRejected { .. } => "token_rejected",
            Failure::Stop(_) => "stopped",
        };
        outcome["error_details"] = json!({ "kind": kind });
        match failure {
            Failure::RateLimited { until, .. } => {
                outcome["next_sync_at"] = json!(parse::rfc3339(*until));
                outcome["metadata"]["rate_limited_until"] = json!(parse::rfc3339(*until));
            }
            Failure::TokenRejected { .. } => outcome["token_expired"] = json!(true),
            _ => {}
        }
    }
    outcome
}
