//! Publishing to LinkedIn: `POST {linkedin_api_url}/rest/posts` with the
//! `LinkedIn-Version` header, the member as author URN, and the text as
//! `commentary` (at most 3,000 characters, in LinkedIn's "little text"
//! format, where `\ | { } @ [ ] ( ) < > # * _ ~` must be escaped or the
//! post is cut or refused). The new post's URN comes back in `x-restli-id`.
//!
//! Idempotency: no key either. The intent is recorded before the call; a
//! resend after a lost answer that LinkedIn refuses as a duplicate
//! ("Content is a duplicate of urn:li:share:...") is settled with the URN
//! in that message.

use chrono::Utc;
use serde_json::{Value, json};
use shared::Error;
use shared::outbound::{OutboundRequest, Reply};

use crate::attempt::Attempt;
use crate::limits;
use crate::oauth;
use crate::outcome::{Outcome, Published};

/// The Posts API version this client speaks (YYYYMM).
pub const LINKEDIN_VERSION: &str = "202505";

/// Escapes LinkedIn's reserved "little text" characters.
pub fn escape_little_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(
            c,
            '\\' | '|'
                | '{'
                | '}'
                | '@'
                | '['
                | ']'
                | '('
                | ')'
                | '<'
                | '>'
                | '#'
                | '*'
                | '_'
                | '~'
        ) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The author URN of a member id (`urn:li:person:<id>`); a full URN (an
/// organization) is used as it is.
pub fn author_urn(platform_user_id: &str) -> String {
    if platform_user_id.starts_with("urn:li:") {
        platform_user_id.to_string()
    } else {
        format!("urn:li:person:{platform_user_id}")
    }
}

/// Publishes the attempt's post to LinkedIn.
pub fn publish(a: &Attempt<'_>) -> Result<Outcome, Error> {
    let text = a.post.text.clone().unwrap_or_default();
    if text.trim().is_empty() {
        return Ok(Outcome::fail("the post has no text"));
    }
    if let Err(problem) = limits::check_graphemes(&text, limits::LINKEDIN_MAX_GRAPHEMES, "LinkedIn")
    {
        return Ok(Outcome::fail(problem));
    }
    let earlier = a.part(0);
    if let Some(done) = earlier.filter(|p| p.is_posted()) {
        let urn = done.platform_post_id.clone().unwrap_or_default();
        return Ok(Outcome::Published(published(&text, &urn, Some("recorded"))));
    }
    let token = match oauth::access_token(a, "LinkedIn") {
        Ok(token) => token,
        Err(outcome) => return Ok(*outcome),
    };
    let Some(timeout) = a.next_call() else {
        return Ok(Outcome::retry("the lease ran out before the post was sent"));
    };
    if !a.record_sending(0, &text, None)? {
        return Ok(Outcome::Stale);
    }
    let body = json!({
        "author": author_urn(&a.account.platform_user_id),
        "commentary": escape_little_text(&text),
        "visibility": "PUBLIC",
        "distribution": {
            "feedDistribution": "MAIN_FEED",
            "targetEntities": [],
            "thirdPartyDistributionChannels": [],
        },
        "lifecycleState": "PUBLISHED",
        "isReshareDisabledByAuthor": false,
    });
    let sent = OutboundRequest::post(&format!("{}/rest/posts", a.config.linkedin_api_url))
        .bearer(&token)
        .header("LinkedIn-Version", LINKEDIN_VERSION)
        .header("X-Restli-Protocol-Version", "2.0.0")
        .json(&body)
        .timeout(timeout)
        .send();
    let reply = match sent {
        Ok(reply) => reply,
        Err(failure) if failure.is_transient() => {
            return Ok(Outcome::retry(format!(
                "LinkedIn: {failure}; it is settled on the next attempt"
            )));
        }
        Err(failure) => return Ok(Outcome::fail(format!("LinkedIn: {failure}"))),
    };
    let (urn, settled_by) = match reply.status {
        200 | 201 => match reply
            .header("x-restli-id")
            .or_else(|| reply.header("x-linkedin-id"))
        {
            Some(urn) if !urn.is_empty() => (urn.to_string(), None),
            _ => {
                return Ok(Outcome::retry(
                    "LinkedIn answered 201 without the post's URN (x-restli-id)",
                ));
            }
        },
        422 if earlier.is_some() && duplicate_of(&reply).is_some() => {
            (duplicate_of(&reply).unwrap_or_default(), Some("duplicate"))
        }
        _ => return Ok(refusal(&reply)),
    };
    let url = post_url(&urn);
    a.record_posted(0, &text, None, &urn, &url, &json!({}))?;
    Ok(Outcome::Published(published(&text, &urn, settled_by)))
}

fn post_url(urn: &str) -> String {
    format!("https://www.linkedin.com/feed/update/{urn}/")
}

fn published(text: &str, urn: &str, settled_by: Option<&str>) -> Published {
    Published {
        platform: "linkedin".into(),
        platform_post_id: urn.to_string(),
        url: post_url(urn),
        content: text.to_string(),
        metadata: json!({ "urn": urn, "linkedin_version": LINKEDIN_VERSION }),
        archive: vec![json!({ "platform_post_id": urn, "text": text, "content_type": "post" })],
        settled_by: settled_by.map(str::to_string),
        published_at: Some(Utc::now()),
    }
}

/// LinkedIn's own words (`message`).
fn message(reply: &Reply) -> String {
    let body: Value = reply.json().unwrap_or(Value::Null);
    let text = body
        .get("message")
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| reply.text().chars().take(300).collect());
    format!("LinkedIn answered {}: {text}", reply.status)
}

/// The URN in "Content is a duplicate of urn:li:share:123".
fn duplicate_of(reply: &Reply) -> Option<String> {
    let text = message(reply);
    if !text.to_ascii_lowercase().contains("duplicate") {
        return None;
    }
    let start = text.find("urn:li:")?;
    let urn: String = text[start..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == ':' || *c == '_' || *c == '-')
        .collect();
    Some(urn)
}

fn refusal(reply: &Reply) -> Outcome {
    match reply.status {
        429 => Outcome::hold_for(reply.retry_after_seconds().unwrap_or(60), message(reply)),
        401 => Outcome::Fail {
            error: format!(
                "{}: the access token was refused (revoked or expired); reconnect the account",
                message(reply)
            ),
            account_status: Some("token_expired"),
            detail: json!({ "status": 401 }),
        },
        status if status >= 500 => Outcome::retry(message(reply)),
        status => Outcome::Fail {
            error: message(reply),
            account_status: None,
            detail: json!({ "status": status }),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(status: u16, body: &str) -> Reply {
        Reply::new(status, &[], body, "http://li/rest/posts")
    }

    #[test]
    fn reserved_characters_are_escaped() {
        assert_eq!(
            escape_little_text("Hi @team (v2) #launch_day *now* ~ok~ [x] {y} <z> a|b \\"),
            "Hi \\@team \\(v2\\) \\#launch\\_day \\*now\\* \\~ok\\~ \\[x\\] \\{y\\} \\<z\\> a\\|b \\\\"
        );
        assert_eq!(escape_little_text("plain, text."), "plain, text.");
    }

    #[test]
    fn authors_and_duplicates() {
        assert_eq!(author_urn("abc123"), "urn:li:person:abc123");
        assert_eq!(
            author_urn("urn:li:organization:42"),
            "urn:li:organization:42"
        );
        let dup = reply(
            422,
            r#"{"message":"Content is a duplicate of urn:li:share:7123456789","status":422}"#,
        );
        assert_eq!(
            duplicate_of(&dup).as_deref(),
            Some("urn:li:share:7123456789")
        );
        let invalid = reply(
            422,
            r#"{"message":"/commentary: length exceeds 3000","status":422}"#,
        );
        assert_eq!(duplicate_of(&invalid), None);
        match refusal(&invalid) {
            Outcome::Fail {
                error,
                account_status,
                ..
            } => {
                assert_eq!(
                    error,
                    "LinkedIn answered 422: /commentary: length exceeds 3000"
                );
                assert_eq!(account_status, None);
            }
            other => panic!("{other:?}"),
        }
        match refusal(&reply(
            401,
            r#"{"serviceErrorCode":65600,"code":"INVALID_ACCESS_TOKEN","message":"Invalid access token","status":401}"#,
        )) {
            Outcome::Fail {
                account_status,
                error,
                ..
            } => {
                assert_eq!(account_status, Some("token_expired"));
                assert!(error.starts_with("LinkedIn answered 401: Invalid access token"));
            }
            other => panic!("{other:?}"),
        }
    }
}
