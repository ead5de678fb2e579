//! Publishing to X: `POST {x_api_url}/2/tweets` with the user's OAuth 2.0
//! token, a long post as a thread (a chain of replies, 280 weighted
//! characters each, see `x_text`).
//!
//! Idempotency: X takes no idempotency key. Each part's intent is recorded
//! before it is sent and its id after, so a thread resumes at the first
//! part not known to be posted. A part whose answer was lost is sent again:
//! X refuses identical text from the same account with 403 "duplicate
//! content", and that refusal is settled by finding the part among the
//! account's recent posts (`GET /2/users/{id}/tweets`, same text, created
//! after the intent) and keeping its id. Residual risk: X's duplicate check
//! is a heuristic with a time window, not a guarantee; if it lets the
//! second copy through, the part appears twice. It can only happen after a
//! lost answer, and the events show it (`sends` > 1 on the part).

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use shared::Error;
use shared::outbound::{OutboundRequest, Reply};

use crate::attempt::{Attempt, sha256_hex};
use crate::oauth;
use crate::outcome::{Outcome, Published};
use crate::x_text;

/// Publishes the attempt's post to X.
pub fn publish(a: &Attempt<'_>) -> Result<Outcome, Error> {
    let text = a.post.text.clone().unwrap_or_default();
    let parts = x_text::split_thread(&text);
    if parts.is_empty() {
        return Ok(Outcome::fail("the post has no text"));
    }
    let token = match oauth::access_token(a, "X") {
        Ok(token) => token,
        Err(outcome) => return Ok(*outcome),
    };
    let mut ids: Vec<String> = Vec::new();
    let mut settled_by = None;
    for (index, part) in parts.iter().enumerate() {
        let earlier = a.part(index);
        if let Some(done) = earlier.filter(|p| p.is_posted()) {
            ids.push(done.platform_post_id.clone().unwrap_or_default());
            settled_by = Some("recorded");
            continue;
        }
        let resent = earlier.is_some();
        let Some(timeout) = a.next_call() else {
            return Ok(Outcome::retry(format!(
                "the lease ran out after {} of {} posts of the thread; the rest follows on the next attempt",
                ids.len(),
                parts.len()
            )));
        };
        if !a.record_sending(index, part, None)? {
            return Ok(Outcome::Stale);
        }
        let mut body = json!({ "text": part });
        if let Some(previous) = ids.last() {
            body["reply"] = json!({ "in_reply_to_tweet_id": previous });
        }
        let sent = OutboundRequest::post(&format!("{}/2/tweets", a.config.x_api_url))
            .bearer(&token)
            .json(&body)
            .timeout(timeout)
            .send();
        let reply = match sent {
            Ok(reply) => reply,
            Err(failure) if failure.is_transient() => {
                return Ok(Outcome::retry(format!(
                    "post {} of {}: {failure}; it is settled on the next attempt",
                    index + 1,
                    parts.len()
                )));
            }
            Err(failure) => return Ok(Outcome::fail(format!("X: {failure}"))),
        };
        let id = if reply.status == 201 || reply.status == 200 {
            match reply.json::<Value>().ok().and_then(|v| {
                v.pointer("/data/id")
                    .and_then(Value::as_str)
                    .map(str::to_string)
            }) {
                Some(id) => id,
                None => {
                    return Ok(Outcome::retry(format!(
                        "post {}: X answered {} without an id",
                        index + 1,
                        reply.status
                    )));
                }
            }
        } else if reply.status == 403 && is_duplicate(&reply) && resent {
            let since = earlier.and_then(|p| p.first_sent_at.as_deref());
            match find_recent(a, &token, part, since) {
                Ok(Some(id)) => {
                    settled_by = Some("duplicate");
                    id
                }
                Ok(None) => {
                    return Ok(Outcome::fail(format!(
                        "post {} of the thread was sent before and X refuses it as duplicate content, \
                         but it is not among the account's recent posts: {}",
                        index + 1,
                        message(&reply)
                    )));
                }
                Err(outcome) => return Ok(*outcome),
            }
        } else {
            return Ok(refusal(&reply, index, parts.len(), &ids));
        };
        let url = status_url(&a.account.username, &id);
        a.record_posted(index, part, None, &id, &url, &json!({}))?;
        ids.push(id);
    }

    let first = ids.first().cloned().unwrap_or_default();
    Ok(Outcome::Published(Published {
        platform: "x".into(),
        url: status_url(&a.account.username, &first),
        platform_post_id: first,
        content: parts.join("\n\n"),
        metadata: json!({ "thread": ids, "parts": parts.len(), "username": a.account.username }),
        archive: ids
            .iter()
            .zip(&parts)
            .enumerate()
            .map(|(i, (id, text))| {
                json!({
                    "platform_post_id": id,
                    "text": text,
                    "content_type": if i == 0 { "post" } else { "reply" },
                })
            })
            .collect(),
        settled_by: settled_by.map(str::to_string),
        published_at: Some(Utc::now()),
    }))
}

fn status_url(username: &str, id: &str) -> String {
    if username.is_empty() {
        format!("https://x.com/i/web/status/{id}")
    } else {
        format!("https://x.com/{username}/status/{id}")
    }
}

/// X's own words: `detail`, `title`, or the first of `errors`.
fn message(reply: &Reply) -> String {
    let body: Value = reply.json().unwrap_or(Value::Null);
    let text = body
        .pointer("/errors/0/message")
        .and_then(Value::as_str)
        .filter(|_| body.get("detail").is_none())
        .or_else(|| body.get("detail").and_then(Value::as_str))
        .or_else(|| body.get("title").and_then(Value::as_str))
        .map(str::to_string)
        .unwrap_or_else(|| reply.text().chars().take(300).collect());
    format!("X answered {}: {text}", reply.status)
}

fn is_duplicate(reply: &Reply) -> bool {
    reply
        .text()
        .to_ascii_lowercase()
        .contains("duplicate content")
}

/// Seconds until X's rate-limit window resets (`x-rate-limit-reset`, Unix
/// seconds), else `Retry-After`, else 15 minutes.
fn reset_seconds(reply: &Reply) -> u64 {
    reply
        .header("x-rate-limit-reset")
        .and_then(|v| v.trim().parse::<i64>().ok())
        .map(|reset| {
            u64::try_from(reset - Utc::now().timestamp())
                .unwrap_or(0)
                .max(1)
        })
        .or_else(|| reply.retry_after_seconds())
        .unwrap_or(900)
}

/// What a non-success answer means for the post.
fn refusal(reply: &Reply, index: usize, total: usize, ids: &[String]) -> Outcome {
    let where_ = if total > 1 {
        format!(
            " (post {} of {}, {} already out)",
            index + 1,
            total,
            ids.len()
        )
    } else {
        String::new()
    };
    match reply.status {
        429 => Outcome::hold_for(reset_seconds(reply), format!("{}{where_}", message(reply))),
        401 => Outcome::Fail {
            error: format!(
                "{}{where_}: the access token was refused (revoked or invalid); reconnect the account",
                message(reply)
            ),
            account_status: Some("token_expired"),
            detail: json!({ "status": 401 }),
        },
        status if status >= 500 => Outcome::retry(format!("{}{where_}", message(reply))),
        status => Outcome::Fail {
            error: format!("{}{where_}", message(reply)),
            account_status: None,
            detail: json!({ "status": status }),
        },
    }
}

/// Text as X shows it back: entities escaped, links shortened. Compared
/// without links and with entities undone.
fn comparable(text: &str) -> String {
    text.replace("&amp;", "&")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .split_whitespace()
        .filter(|word| !word.starts_with("http://") && !word.starts_with("https://"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The id of the account's recent post with `text`, created after `since`
/// (less a minute of clock skew).
fn find_recent(
    a: &Attempt<'_>,
    token: &str,
    text: &str,
    since: Option<&str>,
) -> Result<Option<String>, Box<Outcome>> {
    let Some(timeout) = a.next_call() else {
        return Err(Box::new(Outcome::retry(
            "X says the post is a duplicate; no time left to look it up",
        )));
    };
    let url = format!(
        "{}/2/users/{}/tweets",
        a.config.x_api_url, a.account.platform_user_id
    );
    let reply = OutboundRequest::get(&url)
        .query(&[("max_results", "20"), ("tweet.fields", "created_at")])
        .bearer(token)
        .timeout(timeout)
        .send()
        .map_err(|e| Box::new(Outcome::retry(format!("looking up a duplicate on X: {e}"))))?;
    if reply.status != 200 {
        return Err(Box::new(Outcome::retry(format!(
            "looking up a duplicate: {}",
            message(&reply)
        ))));
    }
    let since: Option<DateTime<Utc>> = since
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc) - chrono::TimeDelta::minutes(1));
    let wanted = comparable(text);
    let body: Value = reply.json().unwrap_or(Value::Null);
    let found = body
        .get("data")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|tweet| {
            let same = tweet
                .get("text")
                .and_then(Value::as_str)
                .is_some_and(|t| comparable(t) == wanted || sha256_hex(t) == sha256_hex(text));
            let recent = match (since, tweet.get("created_at").and_then(Value::as_str)) {
                (Some(since), Some(at)) => DateTime::parse_from_rfc3339(at)
                    .map(|at| at.with_timezone(&Utc) >= since)
                    .unwrap_or(true),
                _ => true,
            };
            same && recent
        })
        .and_then(|tweet| tweet.get("id").and_then(Value::as_str).map(str::to_string));
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(status: u16, headers: &[(&str, &str)], body: &str) -> Reply {
        Reply::new(status, headers, body, "http://x/2/tweets")
    }

    #[test]
    fn x_refusals_map_to_outcomes() {
        let reset = (Utc::now().timestamp() + 120).to_string();
        let limited = reply(
            429,
            &[("x-rate-limit-reset", &reset)],
            r#"{"title":"Too Many Requests","detail":"Too Many Requests","type":"about:blank","status":429}"#,
        );
        match refusal(&limited, 0, 1, &[]) {
            Outcome::Hold { until, reason } => {
                let wait = (until - Utc::now()).num_seconds();
                assert!((100..=121).contains(&wait), "{wait}");
                assert_eq!(reason, "X answered 429: Too Many Requests");
            }
            other => panic!("{other:?}"),
        }
        let revoked = reply(
            401,
            &[],
            r#"{"title":"Unauthorized","type":"about:blank","status":401,"detail":"Unauthorized"}"#,
        );
        match refusal(&revoked, 1, 3, &["1".into()]) {
            Outcome::Fail {
                error,
                account_status,
                ..
            } => {
                assert_eq!(account_status, Some("token_expired"));
                assert!(
                    error.starts_with("X answered 401: Unauthorized (post 2 of 3, 1 already out)"),
                    "{error}"
                );
            }
            other => panic!("{other:?}"),
        }
        let duplicate = reply(
            403,
            &[],
            r#"{"detail":"You are not allowed to create a Tweet with duplicate content.","type":"about:blank","title":"Forbidden","status":403}"#,
        );
        assert!(is_duplicate(&duplicate));
        match refusal(&duplicate, 0, 1, &[]) {
            Outcome::Fail { error, .. } => assert_eq!(
                error,
                "X answered 403: You are not allowed to create a Tweet with duplicate content."
            ),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            refusal(&reply(503, &[], "{}"), 0, 1, &[]),
            Outcome::Retry { .. }
        ));
    }

    #[test]
    fn texts_compare_without_links_and_entities() {
        assert_eq!(
            comparable("a &amp; b https://t.co/xyz  c"),
            comparable("a & b https://example.com/long c")
        );
    }
}
