//! Pending webhooks (`ingested_items`) into the archive. Items are claimed
//! in small batches with `claim_next_archive_items` (Bluesky, Strava and
//! Instagram only: Replicate items stay pending for the AI dispatcher, and
//! paused platforms are skipped) and each is settled with the queue
//! contract: done -> `complete_ingested_item`; transient trouble ->
//! `fail_ingested_item` (backoff, dead letter after the last attempt); a
//! payload or event that can never work -> `fail_ingested_item` permanent;
//! a used-up rate limit -> `defer_ingested_item` (no attempt used); a
//! rejected token -> the account becomes `token_expired` and the item fails
//! permanently.
//!
//! Event types (set by `webhook-receiver`): `strava.activity.create` and
//! `.update` fetch the activity and archive it; `strava.activity.delete`
//! marks the archived post `deleted_on_platform`; `strava.athlete.update`
//! with `updates.authorized == "false"` disconnects the account (other
//! athlete updates are ignored); `instagram.changes` fetches and archives
//! the user's media each change names. Anything else fails permanently.

use std::collections::BTreeSet;

use serde_json::{Value, json};
use shared::Error;
use spin_sdk::pg4::ParameterValue;

use crate::parse::{self, Aspect, StravaEvent};
use crate::run::{Account, Failure, ITEMS_UNTIL, Item, Run, WORKER, archived_result, jsonb, uuid};
use crate::sql;
use crate::tokens;
use crate::{instagram, strava};

/// Items claimed per batch.
const BATCH: i32 = 10;
/// Items handled per run at most.
const MAX_ITEMS: usize = 100;
/// A claimed item's lease: longer than a whole run.
const LEASE_SECONDS: i32 = 120;

/// Counts of one run's items, for the heartbeat report.
#[derive(Default)]
struct Tally {
    claimed: usize,
    completed: usize,
    retried: usize,
    failed: usize,
    deferred: usize,
}

/// Claims and handles items until none are due, `MAX_ITEMS` were handled,
/// or the run's item time is used up.
pub fn process(run: &Run) -> Result<Value, Error> {
    let mut tally = Tally::default();
    while !run.past(ITEMS_UNTIL) && tally.claimed < MAX_ITEMS {
        let batch: Vec<Item> = run.db.call(
            &sql::CLAIM_NEXT_ARCHIVE_ITEMS,
            &[
                WORKER.to_string().into(),
                LEASE_SECONDS.into(),
                BATCH.into(),
            ],
        )?;
        if batch.is_empty() {
            break;
        }
        tally.claimed += batch.len();
        for item in batch {
            let outcome = handle(run, &item);
            if let Err(Failure::Stop(error)) = outcome {
                // This and the rest stay leased: the lease runs out and
                // another run takes them.
                return Err(error);
            }
            settle(run, &item, outcome, &mut tally)?;
        }
    }
    Ok(json!({
        "claimed": tally.claimed,
        "completed": tally.completed,
        "retried": tally.retried,
        "failed": tally.failed,
        "deferred": tally.deferred,
    }))
}

fn settle(
    run: &Run,
    item: &Item,
    outcome: Result<Value, Failure>,
    tally: &mut Tally,
) -> Result<(), Error> {
    let id = uuid(&item.id);
    let token = ParameterValue::Int64(item.lease_token);
    match outcome {
        Ok(result) => {
            run.db
                .call_json(&sql::COMPLETE_INGESTED_ITEM, &[id, token, jsonb(&result)])?;
            tally.completed += 1;
        }
        Err(Failure::RateLimited { until, reason, .. }) => {
            run.db.call_json(
                &sql::DEFER_INGESTED_ITEM,
                &[id, token, parse::rfc3339(until).into(), reason.into()],
            )?;
            tally.deferred += 1;
        }
        Err(failure) => {
            if let Failure::TokenRejected {
                account_id: Some(account),
                message,
            } = &failure
            {
                run.token_rejected(account, message)?;
            }
            let (permanent, retry_after) = match &failure {
                Failure::Transient { retry_after, .. } => (
                    false,
                    retry_after.map(|s| i32::try_from(s.min(86_400)).unwrap_or(86_400)),
                ),
                _ => (true, None),
            };
            let answer = run.db.call_json(
                &sql::FAIL_INGESTED_ITEM,
                &[
                    id,
                    token,
                    parse::truncate(&failure.message(), 1000).into(),
                    ParameterValue::Boolean(permanent),
                    retry_after.into(),
                ],
            )?;
            if answer["status"] == "queued" {
                tally.retried += 1;
            } else {
                tally.failed += 1;
            }
        }
    }
    Ok(())
}

fn handle(run: &Run, item: &Item) -> Result<Value, Failure> {
    match item.event_type.as_str() {
        "strava.activity.create"
        | "strava.activity.update"
        | "strava.activity.delete"
        | "strava.athlete.update" => strava_item(run, item),
        "instagram.changes" => instagram_item(run, item),
        other => Err(Failure::permanent(format!(
            "unknown event type `{}`",
            parse::truncate(other, 60)
        ))),
    }
}

/// The account the item is about, or a permanent failure naming who.
fn account_for(run: &Run, item: &Item, platform_user_id: &str) -> Result<Account, Failure> {
    let account: Option<Account> = run.db.call(
        &sql::INGEST_ACCOUNT_FOR_ITEM,
        &[uuid(&item.id), platform_user_id.to_string().into()],
    )?;
    account.ok_or_else(|| {
        Failure::permanent(format!(
            "no verified {} account for user {} (only an account whose identity the platform confirmed receives its events)",
            item.platform,
            parse::truncate(platform_user_id, 40)
        ))
    })
}

fn strava_item(run: &Run, item: &Item) -> Result<Value, Failure> {
    match parse::strava_event(&item.payload).map_err(|e| Failure::permanent(e.0))? {
        StravaEvent::Activity {
            aspect: Aspect::Delete,
            activity_id,
            owner_id,
            ..
        } => {
            let account = account_for(run, item, &owner_id)?;
            let answer = run.db.call_json(
                &sql::MARK_PLATFORM_POST_DELETED,
                &[
                    uuid(&account.id),
                    strava::PLATFORM.to_string().into(),
                    activity_id.into(),
                ],
            )?;
            let found = answer["found"] == true;
            Ok(json!({
                "outcome": if found { "deleted_on_platform" } else { "not_archived" },
                "post_id": answer["post_id"],
            }))
        }
        StravaEvent::Activity {
            aspect,
            activity_id,
            owner_id,
            event_time,
        } => {
            let mut account = account_for(run, item, &owner_id)?;
            account.usable()?;
            run.check_pause(strava::PLATFORM)?;
            let fetched = tokens::with_strava_token(run, &mut account, |token| {
                strava::activity(run, token, &activity_id)
            })?;
            let Some(activity) = fetched else {
                return Ok(json!({"outcome": "unavailable", "activity_id": activity_id}));
            };
            let updated_at = if aspect == Aspect::Update {
                event_time
            } else {
                None
            };
            let post = parse::strava_activity(&activity, updated_at)
                .map_err(|e| Failure::permanent(format!("Strava activity: {e}")))?;
            let archived = run.archive(&account.id, Some(&item.id), &[post], false, false)?;
            Ok(archived_result(&archived))
        }
        StravaEvent::Deauthorized { owner_id } => {
            let account = account_for(run, item, &owner_id)?;
            let answer = run.db.call_json(
                &sql::DISCONNECT_PLATFORM_ACCOUNT,
                &[
                    uuid(&account.id),
                    "the athlete revoked access on Strava".to_string().into(),
                ],
            )?;
            // (`status` in a completion result is the queue's done status.)
            Ok(
                json!({"outcome": "disconnected", "account_id": account.id, "account_status": answer["status"]}),
            )
        }
        StravaEvent::AthleteUpdated { .. } => Ok(json!({"outcome": "ignored"})),
    }
}

fn instagram_item(run: &Run, item: &Item) -> Result<Value, Failure> {
    let changes = parse::instagram_changes(&item.payload).map_err(|e| Failure::permanent(e.0))?;
    let mut done = BTreeSet::new();
    let (mut ignored, mut unavailable, mut created, mut updated, mut media) = (0, 0, 0, 0, 0);
    for change in changes {
        let Some(media_id) = change.media_id else {
            ignored += 1;
            continue;
        };
        if !done.insert((change.ig_user_id.clone(), media_id.clone())) {
            continue;
        }
        let account = account_for(run, item, &change.ig_user_id)?;
        account.usable()?;
        let token = tokens::instagram_token(run, &account)?;
        let fetched =
            instagram::media(run, &token, &media_id).map_err(|f| f.for_account(&account.id))?;
        let Some(object) = fetched else {
            unavailable += 1;
            continue;
        };
        let post = parse::instagram_media(&object)
            .map_err(|e| Failure::permanent(format!("Instagram media: {e}")))?;
        let archived = run.archive(&account.id, Some(&item.id), &[post], false, false)?;
        created += archived.created;
        updated += archived.updated;
        media += archived.media_queued;
    }
    Ok(json!({
        "outcome": "archived",
        "media_fetched": done.len(),
        "created": created,
        "updated": updated,
        "media_queued": media,
        "ignored_changes": ignored,
        "unavailable": unavailable,
    }))
}
