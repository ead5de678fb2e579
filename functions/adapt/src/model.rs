//! One call to an OpenAI-compatible chat completions endpoint (`POST
//! {api}/chat/completions`, bearer key; Venice by default), asking for
//! structured output (`response_format` `json_schema`, strict, or
//! `json_object`), and the reading of its answer: `choices[0].message`
//! (`content`, `refusal`), `finish_reason`, `usage {prompt_tokens,
//! completion_tokens}`, and error bodies `{"error": {"message", "type",
//! "code"}}`. Each call also yields its `api_logs` record, with neither the
//! key nor the prompt.

use std::time::Instant;

use serde::Deserialize;
use serde_json::{Value, json};
use shared::outbound::{OutboundRequest, Reply, SendFailure};
use shared::provider_log::ProviderCall;
use uuid::Uuid;

use crate::config::{Config, ResponseFormat};
use crate::error::AdaptError;
use crate::prompt::Message;
use crate::request::Platform;
use crate::variants;

/// Seconds to wait after a provider 5xx or a lost connection when the
/// provider names no `Retry-After`.
pub const DEFAULT_RETRY_AFTER: u64 = 10;

/// Longest provider error message passed on (it can be chatty).
const MAX_PROVIDER_MESSAGE: usize = 200;

/// What the model answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    /// `choices[0].message.content` (empty when absent).
    pub content: String,
    /// `choices[0].message.refusal`, when the model declined.
    pub refusal: Option<String>,
    /// `choices[0].finish_reason`.
    pub finish_reason: Option<String>,
    /// `usage.prompt_tokens`.
    pub input_tokens: i32,
    /// `usage.completion_tokens`.
    pub output_tokens: i32,
}

/// The request body.
pub fn body(config: &Config, messages: &[Message], platforms: &[Platform]) -> Value {
    let response_format = match config.response_format {
        ResponseFormat::JsonSchema => json!({
            "type": "json_schema",
            "json_schema": {
                "name": "adaptations",
                "strict": true,
                "schema": variants::schema(platforms),
            }
        }),
        ResponseFormat::JsonObject => json!({"type": "json_object"}),
    };
    json!({
        "model": config.model,
        "messages": messages,
        "response_format": response_format,
        "temperature": 0.7,
    })
}

/// Sends one call; answers the completion or why not, and the call as
/// `api_logs` keeps it.
pub fn complete(
    config: &Config,
    messages: &[Message],
    platforms: &[Platform],
    user: Uuid,
) -> (Result<Completion, AdaptError>, ProviderCall) {
    let started = Instant::now();
    let sent = OutboundRequest::post(&config.completions_url())
        .bearer(&config.api_key)
        .header("accept", "application/json")
        .json(&body(config, messages, platforms))
        .timeout(config.timeout)
        .send();
    let mut call = ProviderCall {
        provider: config.provider.clone(),
        method: "POST".into(),
        path: config.completions_path(),
        status_code: None,
        duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        user_id: Some(user),
        model: Some(config.model.clone()),
        error: None,
    };
    let result = match sent {
        Ok(reply) => {
            call.status_code = Some(reply.status);
            read(&reply)
        }
        Err(failure) => Err(unanswered(&failure)),
    };
    if let Err(e) = &result {
        call.error = Some(e.to_string());
    }
    (result, call)
}

fn unanswered(failure: &SendFailure) -> AdaptError {
    if failure.is_transient() {
        AdaptError::ModelUnavailable {
            message: format!("the model API did not answer: {failure}"),
            retry_after: DEFAULT_RETRY_AFTER,
        }
    } else {
        AdaptError::ModelApi(format!("the model API cannot be called: {failure}"))
    }
}

#[derive(Deserialize)]
struct ErrorBody {
    error: Option<ErrorDetail>,
}

#[derive(Deserialize)]
struct ErrorDetail {
    message: Option<String>,
}

#[derive(Deserialize)]
struct Answer {
    #[serde(default)]
    choices: Vec<Choice>,
    usage: Option<Usage>,
}

#[derive(Deserialize)]
struct Choice {
    message: Option<AnswerMessage>,
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct AnswerMessage {
    content: Option<String>,
    refusal: Option<String>,
}

#[derive(Deserialize)]
struct Usage {
    prompt_tokens: Option<i64>,
    completion_tokens: Option<i64>,
}

fn clamp_tokens(n: Option<i64>) -> i32 {
    i32::try_from(n.unwrap_or(0).max(0)).unwrap_or(i32::MAX)
}

/// The provider's own error message, shortened; never for 401/403, whose
/// messages can quote part of the key.
fn provider_message(reply: &Reply) -> String {
    let message = serde_json::from_slice::<ErrorBody>(&reply.body)
        .ok()
        .and_then(|b| b.error)
        .and_then(|e| e.message)
        .unwrap_or_default();
    let mut short: String = message.chars().take(MAX_PROVIDER_MESSAGE).collect();
    if short.len() < message.len() {
        short.push('…');
    }
    short
}

/// Reads an answer of any status.
pub fn read(reply: &Reply) -> Result<Completion, AdaptError> {
    match reply.status {
        429 => Err(AdaptError::ModelUnavailable {
            message: format!(
                "the model API is rate limited (429): {}",
                provider_message(reply)
            ),
            retry_after: reply
                .retry_after_seconds()
                .unwrap_or(DEFAULT_RETRY_AFTER)
                .max(1),
        }),
        500..=599 => Err(AdaptError::ModelUnavailable {
            message: format!(
                "the model API failed ({}): {}",
                reply.status,
                provider_message(reply)
            ),
            retry_after: reply
                .retry_after_seconds()
                .unwrap_or(DEFAULT_RETRY_AFTER)
                .max(1),
        }),
        401 | 403 => Err(AdaptError::ModelApi(format!(
            "the model API refused the key ({}); check adapt_api_key",
            reply.status
        ))),
        status if !(200..300).contains(&status) => Err(AdaptError::ModelApi(format!(
            "the model API answered {status}: {}",
            provider_message(reply)
        ))),
        _ => {
            let answer: Answer = serde_json::from_slice(&reply.body).map_err(|e| {
                AdaptError::ModelApi(format!(
                    "the model API's answer is not a chat completion: {e}"
                ))
            })?;
            let usage = answer.usage;
            let choice = answer.choices.into_iter().next().ok_or_else(|| {
                AdaptError::ModelApi("the model API's answer has no choices".into())
            })?;
            let message = choice.message;
            Ok(Completion {
                content: message
                    .as_ref()
                    .and_then(|m| m.content.clone())
                    .unwrap_or_default(),
                refusal: message
                    .and_then(|m| m.refusal)
                    .filter(|r| !r.trim().is_empty()),
                finish_reason: choice.finish_reason,
                input_tokens: clamp_tokens(usage.as_ref().and_then(|u| u.prompt_tokens)),
                output_tokens: clamp_tokens(usage.as_ref().and_then(|u| u.completion_tokens)),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(status: u16, headers: &[(&str, &str)], body: &str) -> Reply {
        Reply::new(
            status,
            headers,
            body,
            "http://model.test/v1/chat/completions",
        )
    }

    #[test]
    fn a_completion_is_read_with_its_usage() {
        let c = read(&reply(
            200,
            &[],
            r#"{"choices":[{"index":0,"message":{"role":"assistant","content":"{}"},"finish_reason":"stop"}],
                "usage":{"prompt_tokens":12,"completion_tokens":3,"total_tokens":15}}"#,
        ))
        .unwrap();
        assert_eq!(
            (c.content.as_str(), c.input_tokens, c.output_tokens),
            ("{}", 12, 3)
        );
        assert_eq!(c.finish_reason.as_deref(), Some("stop"));
        let refused = read(&reply(
            200,
            &[],
            r#"{"choices":[{"message":{"content":null,"refusal":"I can't help"}}]}"#,
        ))
        .unwrap();
        assert_eq!(refused.refusal.as_deref(), Some("I can't help"));
    }

    #[test]
    fn busy_and_failing_providers_are_503_with_retry_after() {
        let e = read(&reply(
            429,
            &[("retry-after", "17")],
            r#"{"error":{"message":"slow down","type":"rate_limit","code":"rate_limited"}}"#,
        ))
        .unwrap_err();
        assert_eq!((e.status(), e.retry_after()), (503, Some(17)));
        assert!(e.to_string().contains("slow down"));
        let e = read(&reply(500, &[], "oops")).unwrap_err();
        assert_eq!(
            (e.status(), e.retry_after()),
            (503, Some(DEFAULT_RETRY_AFTER))
        );
        let e = read(&reply(
            401,
            &[],
            r#"{"error":{"message":"Incorrect API key provided: sk-abc***xyz"}}"#,
        ))
        .unwrap_err();
        assert_eq!(e.status(), 502);
        assert!(!e.to_string().contains("sk-"), "{e}");
        let e = read(&reply(
            400,
            &[],
            &format!(r#"{{"error":{{"message":"{}"}}}}"#, "m".repeat(500)),
        ))
        .unwrap_err();
        assert!(e.to_string().len() < 300);
    }
}
