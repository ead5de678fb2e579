//! Replicate's HTTP API as ai-dispatch speaks it: which request creates a
//! generation's prediction, and what each answer means. Pure functions, so
//! the rules are unit-tested without a network.
//!
//! - `POST /v1/models/{owner}/{name}/predictions` `{input, webhook?,
//!   webhook_events_filter?}` runs an official model's latest version;
//!   `POST /v1/predictions` `{version, input, ...}` runs a version id
//!   (`owner/name:<version>` in `model_id`, or a trained LoRA's version).
//! - Answers: 201 (or 200) with the prediction `{id, status, urls, ...}`;
//!   errors are problem details `{title, detail, status}` (422 adds
//!   `invalid_fields`); 429 carries `Retry-After`; 401 is a token Replicate
//!   no longer accepts; 402 an account out of credit.

use serde::Deserialize;
use serde_json::{Map, Value, json};

/// The events our webhook asks for: the start (so the prediction is known
/// to be running) and the end (outputs, error, metrics).
pub const WEBHOOK_EVENTS: [&str; 2] = ["start", "completed"];

/// A claimed generation, as `claim_next_generations` hands it out.
#[derive(Debug, Clone, Deserialize)]
pub struct Generation {
    /// Its id.
    pub id: String,
    /// Its lease's fencing token.
    pub lease_token: i64,
    /// Whose it is.
    pub user_id: String,
    /// `owner/name`, `owner/name:<version>` or a bare version id.
    pub model_id: String,
    /// The user's prompt, when kept apart from `input`.
    #[serde(default)]
    pub prompt: Option<String>,
    /// The model's input.
    #[serde(default)]
    pub input: Value,
    /// The LoRA it asks for (checked again at dispatch: the owner's only).
    #[serde(default)]
    pub lora_id: Option<String>,
}

/// The owner's trained LoRA, as `begin_replicate_creation` answers it.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Lora {
    /// Its id.
    pub id: String,
    /// The word that calls it up in a prompt.
    #[serde(default)]
    pub trigger_word: Option<String>,
    /// The destination model of its training (`owner/name`).
    #[serde(default)]
    pub replicate_model: Option<String>,
    /// The trained version (`owner/name:<version>` or the version id).
    #[serde(default)]
    pub replicate_version: Option<String>,
    /// The trained weights, for models that take them as an input.
    #[serde(default)]
    pub weights_url: Option<String>,
}

/// The creation request: path and JSON body.
#[derive(Debug, Clone, PartialEq)]
pub struct Creation {
    /// `/v1/predictions` or `/v1/models/{owner}/{name}/predictions`.
    pub path: String,
    /// The body.
    pub body: Value,
}

/// Builds the request that creates `generation`'s prediction, with our
/// webhook when there is one. `Err` names what is wrong with the row.
pub fn creation(
    generation: &Generation,
    lora: Option<&Lora>,
    webhook: Option<&str>,
) -> Result<Creation, String> {
    let mut input = match &generation.input {
        Value::Object(map) => map.clone(),
        Value::Null => Map::new(),
        other => {
            return Err(format!(
                "the generation's input must be a JSON object, not {}",
                kind(other)
            ));
        }
    };
    if let Some(prompt) = generation.prompt.as_deref().filter(|p| !p.is_empty()) {
        input
            .entry("prompt")
            .or_insert_with(|| Value::String(prompt.to_string()));
    }
    let mut body = Map::new();
    let path = match lora.and_then(lora_version) {
        Some(version) => {
            if let Some(word) = lora.and_then(|l| l.trigger_word.as_deref())
                && let Some(Value::String(prompt)) = input.get_mut("prompt")
                && !word.is_empty()
                && !prompt.contains(word)
            {
                *prompt = format!("{word} {prompt}");
            }
            body.insert("version".into(), Value::String(version));
            "/v1/predictions".to_string()
        }
        None => {
            if let Some(weights) = lora.and_then(|l| l.weights_url.as_deref()) {
                input
                    .entry("lora_weights")
                    .or_insert_with(|| Value::String(weights.to_string()));
            }
            model_path(&generation.model_id, &mut body)?
        }
    };
    body.insert("input".into(), Value::Object(input));
    if let Some(url) = webhook.filter(|u| !u.is_empty()) {
        body.insert("webhook".into(), Value::String(url.to_string()));
        body.insert("webhook_events_filter".into(), json!(WEBHOOK_EVENTS));
    }
    Ok(Creation {
        path,
        body: Value::Object(body),
    })
}

/// The version a trained LoRA runs as.
fn lora_version(lora: &Lora) -> Option<String> {
    let version = lora.replicate_version.as_deref()?.trim();
    if version.is_empty() {
        return None;
    }
    Some(
        version
            .rsplit_once(':')
            .map_or(version, |(_, id)| id)
            .to_string(),
    )
}

/// `owner/name` -> the model's predictions route; `owner/name:version` or a
/// bare version id -> `/v1/predictions` with `version` in the body.
fn model_path(model_id: &str, body: &mut Map<String, Value>) -> Result<String, String> {
    let model_id = model_id.trim();
    let segment = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    if let Some((model, version)) = model_id.split_once(':') {
        if model
            .split_once('/')
            .is_some_and(|(o, n)| segment(o) && segment(n))
            && segment(version)
        {
            body.insert("version".into(), Value::String(version.to_string()));
            return Ok("/v1/predictions".into());
        }
    } else if let Some((owner, name)) = model_id.split_once('/') {
        if segment(owner) && segment(name) {
            return Ok(format!("/v1/models/{owner}/{name}/predictions"));
        }
    } else if model_id.len() == 64 && model_id.chars().all(|c| c.is_ascii_hexdigit()) {
        body.insert("version".into(), Value::String(model_id.to_string()));
        return Ok("/v1/predictions".into());
    }
    Err(format!(
        "model_id {model_id:?} is not owner/name, owner/name:version or a version id"
    ))
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// What an answer to a creation (or a read) means for us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Created (or read): the prediction's id.
    Prediction(String),
    /// 429: this token must wait this long.
    Throttled(u64, String),
    /// 401/403: Replicate no longer accepts this token.
    TokenRefused(String),
    /// 402: this token's account is out of credit.
    OutOfCredit(String),
    /// 400/404/422: the request itself is wrong; trying again is useless.
    Refused(String),
    /// 5xx and anything unexpected: try again later (maybe after this long).
    Transient(String, Option<u64>),
}

/// Reads Replicate's answer (`status`, `Retry-After`, body).
pub fn answer(status: u16, retry_after: Option<u64>, body: &[u8]) -> Answer {
    let parsed: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let problem = problem(status, &parsed);
    match status {
        200 | 201 => match parsed.get("id").and_then(Value::as_str) {
            Some(id) if !id.is_empty() => Answer::Prediction(id.to_string()),
            _ => Answer::Transient(format!("HTTP {status} without a prediction id"), None),
        },
        429 => Answer::Throttled(retry_after.unwrap_or(10).max(1), problem),
        401 | 403 => Answer::TokenRefused(problem),
        402 => Answer::OutOfCredit(problem),
        400 | 404 | 409 | 413 | 422 => Answer::Refused(problem),
        _ => Answer::Transient(problem, retry_after),
    }
}

/// `HTTP 422 Input validation failed: <detail> (<invalid fields>)`: the
/// problem in Replicate's words, never the request (so never a token).
fn problem(status: u16, body: &Value) -> String {
    let text = |key: &str| body.get(key).and_then(Value::as_str).map(str::trim);
    let mut message = format!("HTTP {status}");
    if let Some(title) = text("title").filter(|t| !t.is_empty()) {
        message.push(' ');
        message.push_str(title);
    }
    if let Some(detail) = text("detail").filter(|d| !d.is_empty())
        && Some(detail) != text("title")
    {
        message.push_str(": ");
        message.push_str(detail);
    }
    if let Some(fields) = body.get("invalid_fields").and_then(Value::as_array) {
        let described: Vec<&str> = fields
            .iter()
            .filter_map(|f| f.get("description").and_then(Value::as_str))
            .collect();
        if !described.is_empty() {
            message.push_str(" (");
            message.push_str(&described.join("; "));
            message.push(')');
        }
    }
    message.chars().take(1000).collect()
}

/// The output files of a prediction: a URL, a list of URLs, or an object
/// whose values are URLs (in key order), anything else left out.
pub fn output_urls(prediction: &Value) -> Vec<String> {
    fn collect(value: &Value, out: &mut Vec<String>) {
        match value {
            Value::String(s) if s.starts_with("http://") || s.starts_with("https://") => {
                out.push(s.clone())
            }
            Value::Array(items) => items.iter().for_each(|v| collect(v, out)),
            Value::Object(map) => map.values().for_each(|v| collect(v, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    if let Some(output) = prediction.get("output") {
        collect(output, &mut out);
    }
    out
}

/// What of a prediction goes to the database: id, status, error and
/// metrics, never its input (the prompt) or logs.
pub fn summary(prediction: &Value) -> Value {
    json!({
        "id": prediction.get("id"),
        "status": prediction.get("status"),
        "error": prediction.get("error").filter(|e| !e.is_null()).map(|e| match e {
            Value::String(s) => Value::String(s.chars().take(2000).collect()),
            other => Value::String(other.to_string().chars().take(2000).collect()),
        }),
        "metrics": prediction.get("metrics"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn generation(model: &str) -> Generation {
        Generation {
            id: "g".into(),
            lease_token: 1,
            user_id: "u".into(),
            model_id: model.into(),
            prompt: Some("a red fox".into()),
            input: json!({"aspect_ratio": "1:1"}),
            lora_id: None,
        }
    }

    #[test]
    fn official_models_use_the_model_route_with_our_webhook() {
        let c = creation(
            &generation("black-forest-labs/flux-schnell"),
            None,
            Some("https://x/webhooks/replicate"),
        )
        .unwrap();
        assert_eq!(
            c.path,
            "/v1/models/black-forest-labs/flux-schnell/predictions"
        );
        assert_eq!(c.body["input"]["prompt"], "a red fox");
        assert_eq!(c.body["input"]["aspect_ratio"], "1:1");
        assert_eq!(c.body["webhook"], "https://x/webhooks/replicate");
        assert_eq!(
            c.body["webhook_events_filter"],
            json!(["start", "completed"])
        );
        assert!(c.body.get("version").is_none());
    }

    #[test]
    fn versions_use_the_predictions_route() {
        let c = creation(&generation("owner/model:abc123"), None, None).unwrap();
        assert_eq!(c.path, "/v1/predictions");
        assert_eq!(c.body["version"], "abc123");
        assert!(c.body.get("webhook").is_none());
        let hex = "5c7d5dc6dd8bf75c1acaa8565735e7986bc5b66206b55cca93cb72c9bf15ccaa";
        assert_eq!(
            creation(&generation(hex), None, None).unwrap().body["version"],
            hex
        );
    }

    #[test]
    fn bad_rows_are_refused_with_the_reason() {
        assert!(creation(&generation("not a model"), None, None).is_err());
        assert!(creation(&generation("a/b:c d"), None, None).is_err());
        let mut g = generation("a/b");
        g.input = json!([1]);
        assert!(creation(&g, None, None).unwrap_err().contains("an array"));
    }

    #[test]
    fn a_trained_lora_runs_as_its_version_with_its_trigger_word() {
        let lora = Lora {
            id: "l".into(),
            trigger_word: Some("TOK".into()),
            replicate_version: Some("me/my-lora:v42".into()),
            ..Lora::default()
        };
        let c = creation(&generation("black-forest-labs/flux-dev"), Some(&lora), None).unwrap();
        assert_eq!(c.path, "/v1/predictions");
        assert_eq!(c.body["version"], "v42");
        assert_eq!(c.body["input"]["prompt"], "TOK a red fox");
    }

    #[test]
    fn answers_are_classified() {
        assert_eq!(
            answer(201, None, br#"{"id":"p1","status":"starting"}"#),
            Answer::Prediction("p1".into())
        );
        assert!(matches!(
            answer(
                429,
                Some(7),
                br#"{"title":"Request was throttled.","status":429}"#
            ),
            Answer::Throttled(7, _)
        ));
        assert!(matches!(answer(401, None, b"{}"), Answer::TokenRefused(_)));
        assert!(matches!(answer(402, None, b"{}"), Answer::OutOfCredit(_)));
        assert!(matches!(
            answer(503, Some(3), b"oops"),
            Answer::Transient(_, Some(3))
        ));
        let refused = answer(
            422,
            None,
            br#"{"title":"Input validation failed","detail":"- input.steps: Must be <= 50","status":422,
                "invalid_fields":[{"type":"less_equal","field":"input.steps","description":"Must be less than or equal to 50"}]}"#,
        );
        assert_eq!(
            refused,
            Answer::Refused("HTTP 422 Input validation failed: - input.steps: Must be <= 50 (Must be less than or equal to 50)".into())
        );
    }

    #[test]
    fn outputs_are_every_url_in_order() {
        let p = json!({"output": ["https://a/0.png", "https://a/1.png"]});
        assert_eq!(output_urls(&p), vec!["https://a/0.png", "https://a/1.png"]);
        assert_eq!(
            output_urls(&json!({"output": "https://a/v.mp4"})),
            vec!["https://a/v.mp4"]
        );
        assert!(output_urls(&json!({"output": null})).is_empty());
        assert!(output_urls(&json!({"output": "plain text"})).is_empty());
    }

    #[test]
    fn the_summary_keeps_no_input() {
        let s = summary(&json!({"id": "p", "status": "failed", "error": "boom",
                                "input": {"prompt": "secret plan"}, "logs": "..."}));
        assert_eq!(s["error"], "boom");
        assert!(!s.to_string().contains("secret plan"));
    }
}
