//! The messages sent to the model, built from templates kept in the
//! `prompts` table (category `adapt`, seeded by migration 0025) so they can
//! change without a deploy. A template names its inputs as `{{name}}`;
//! the voice profile (`characteristics`, `sample_posts`, `avoid_words`) and
//! the platform rules fill them.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use shared::Error;
use uuid::Uuid;

use crate::request::Platform;
use crate::variants;

/// Sample posts put in a prompt at most (the newest first as stored).
pub const MAX_SAMPLE_POSTS: usize = 5;

/// A voice profile as `adapt_prepare` answers it.
#[derive(Debug, Clone, Deserialize)]
pub struct VoiceProfile {
    /// Its id.
    pub id: Uuid,
    /// Its name ("Professional").
    pub name: String,
    /// The seed's characteristics object (tone, style, avoid_words, ...).
    #[serde(default)]
    pub characteristics: Value,
    /// Posts the user wrote.
    #[serde(default)]
    pub sample_posts: Vec<String>,
}

/// One chat message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Message {
    /// `system`, `user` or `assistant`.
    pub role: &'static str,
    /// Its text.
    pub content: String,
}

/// The templates, by id.
pub struct Templates(HashMap<String, String>);

impl Templates {
    /// From the `{id: prompt_text}` object the SQL answers.
    pub fn new(map: HashMap<String, String>) -> Self {
        Templates(map)
    }

    fn get(&self, id: &str) -> Result<&str, Error> {
        self.0.get(id).map(String::as_str).ok_or_else(|| {
            Error::Config(format!(
                "prompt `{id}` is missing from the prompts table (category adapt; migration 0025 seeds it)"
            ))
        })
    }
}

/// What the prompt is about.
pub struct Brief<'a> {
    /// The idea.
    pub idea: &'a str,
    /// The platforms to write for.
    pub platforms: &'a [Platform],
    /// Desired tone.
    pub tone: Option<&'a str>,
    /// Audience.
    pub target_audience: Option<&'a str>,
    /// The voice.
    pub profile: Option<&'a VoiceProfile>,
    /// Whether the schema must travel in the prompt (JSON mode).
    pub schema_in_prompt: bool,
}

/// Replaces every `{{name}}` with its value.
pub fn fill(template: &str, values: &[(&str, &str)]) -> String {
    let mut out = template.to_string();
    for (name, value) in values {
        out = out.replace(&format!("{{{{{name}}}}}"), value);
    }
    out
}

fn describe_value(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Array(items) => items
            .iter()
            .map(describe_value)
            .collect::<Vec<_>>()
            .join(", "),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// The profile's characteristics as lines `- key: value` (avoid_words are
/// listed on their own line of the prompt).
pub fn describe_voice(profile: Option<&VoiceProfile>) -> String {
    let lines: Vec<String> = profile
        .and_then(|p| p.characteristics.as_object())
        .map(|object| {
            object
                .iter()
                .filter(|(key, _)| key.as_str() != "avoid_words")
                .map(|(key, value)| {
                    format!("- {}: {}", key.replace('_', " "), describe_value(value))
                })
                .filter(|line| !line.ends_with(": "))
                .collect()
        })
        .unwrap_or_default();
    if lines.is_empty() {
        "- no voice profile: plain, clear, first person".to_string()
    } else {
        lines.join("\n")
    }
}

fn avoid_words(profile: Option<&VoiceProfile>) -> String {
    let words = profile
        .and_then(|p| p.characteristics.get("avoid_words"))
        .map(describe_value)
        .unwrap_or_default();
    if words.is_empty() {
        "(none)".into()
    } else {
        words
    }
}

fn sample_posts(profile: Option<&VoiceProfile>) -> String {
    let posts: Vec<String> = profile
        .map(|p| {
            p.sample_posts
                .iter()
                .filter(|s| !s.trim().is_empty())
                .take(MAX_SAMPLE_POSTS)
                .map(|s| format!("---\n{}", s.trim()))
                .collect()
        })
        .unwrap_or_default();
    if posts.is_empty() {
        "(none)".into()
    } else {
        posts.join("\n")
    }
}

fn platform_list(platforms: &[Platform]) -> String {
    platforms
        .iter()
        .map(|p| p.key())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The system and user messages of a first call.
pub fn messages(templates: &Templates, brief: &Brief<'_>) -> Result<Vec<Message>, Error> {
    let rules = brief
        .platforms
        .iter()
        .map(|&p| {
            let limit = variants::limit_of(p).to_string();
            templates
                .get(&format!("adapt.rules.{}", p.key()))
                .map(|t| fill(t, &[("limit", &limit)]))
        })
        .collect::<Result<Vec<_>, _>>()?
        .join("\n");
    let voice_name = brief.profile.map(|p| p.name.as_str()).unwrap_or("default");
    let mut user = fill(
        templates.get("adapt.user")?,
        &[
            ("idea", brief.idea),
            ("voice_name", voice_name),
            ("voice", &describe_voice(brief.profile)),
            ("sample_posts", &sample_posts(brief.profile)),
            ("avoid_words", &avoid_words(brief.profile)),
            ("tone", brief.tone.unwrap_or("the voice's own")),
            (
                "target_audience",
                brief.target_audience.unwrap_or("the user's followers"),
            ),
            ("platforms", &platform_list(brief.platforms)),
            ("platform_rules", &rules),
        ],
    );
    if brief.schema_in_prompt {
        user.push_str("\n\nThe answer's JSON schema:\n");
        user.push_str(&variants::schema(brief.platforms).to_string());
    }
    Ok(vec![
        Message {
            role: "system",
            content: templates.get("adapt.system")?.to_string(),
        },
        Message {
            role: "user",
            content: user,
        },
    ])
}

/// Why a first answer is asked for again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryReason {
    /// Not the JSON asked for.
    Invalid,
    /// A variant over its platform's limit.
    TooLong,
}

/// The conversation for a re-ask: the first messages, the model's answer,
/// and what was wrong with it.
pub fn retry_messages(
    templates: &Templates,
    first: &[Message],
    answer: &str,
    reason: RetryReason,
    problem: &str,
    platforms: &[Platform],
) -> Result<Vec<Message>, Error> {
    let id = match reason {
        RetryReason::Invalid => "adapt.retry.invalid",
        RetryReason::TooLong => "adapt.retry.too_long",
    };
    let mut messages = first.to_vec();
    messages.push(Message {
        role: "assistant",
        content: answer.to_string(),
    });
    messages.push(Message {
        role: "user",
        content: fill(
            templates.get(id)?,
            &[
                ("problem", problem),
                ("platforms", &platform_list(platforms)),
            ],
        ),
    });
    Ok(messages)
}

/// SHA-256 (hex) of the messages, for `ai_text_runs.prompt_hash`: the same
/// prompt is recognisable without keeping its text.
pub fn prompt_hash(messages: &[Message]) -> String {
    let text = serde_json::to_string(messages).unwrap_or_default();
    hex::encode(Sha256::digest(text.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn templates() -> Templates {
        let mut map = HashMap::new();
        map.insert("adapt.system".into(), "SYSTEM".into());
        map.insert(
            "adapt.user".into(),
            "{{idea}}|{{voice_name}}|{{voice}}|{{sample_posts}}|{{avoid_words}}|{{tone}}|{{target_audience}}|{{platforms}}|{{platform_rules}}".into(),
        );
        for p in ["linkedin", "x", "bluesky", "substack"] {
            map.insert(format!("adapt.rules.{p}"), format!("{p}<={{{{limit}}}}"));
        }
        map.insert(
            "adapt.retry.invalid".into(),
            "BAD {{problem}} for {{platforms}}".into(),
        );
        Templates::new(map)
    }

    #[test]
    fn the_voice_and_platform_rules_reach_the_prompt() {
        let profile = VoiceProfile {
            id: Uuid::nil(),
            name: "Pro".into(),
            characteristics: json!({"tone": ["warm", "direct"], "formality_level": 7, "avoid_words": ["very", "really"]}),
            sample_posts: vec!["I shipped it.".into()],
        };
        let m = messages(
            &templates(),
            &Brief {
                idea: "Ship small",
                platforms: &[Platform::X, Platform::Bluesky],
                tone: Some("casual"),
                target_audience: None,
                profile: Some(&profile),
                schema_in_prompt: false,
            },
        )
        .unwrap();
        assert_eq!(m[0].content, "SYSTEM");
        let user = &m[1].content;
        assert!(user.starts_with("Ship small|Pro|"), "{user}");
        assert!(user.contains("- tone: warm, direct"), "{user}");
        assert!(user.contains("- formality level: 7"), "{user}");
        assert!(user.contains("|very, really|"), "{user}");
        assert!(user.contains("I shipped it."), "{user}");
        assert!(user.contains("x, bluesky|x<=280\nbluesky<=300"), "{user}");
        assert!(!user.contains("linkedin"), "{user}");
    }

    #[test]
    fn a_missing_template_is_a_clear_configuration_error() {
        let e = messages(
            &Templates::new(HashMap::new()),
            &Brief {
                idea: "x",
                platforms: &[Platform::X],
                tone: None,
                target_audience: None,
                profile: None,
                schema_in_prompt: true,
            },
        )
        .unwrap_err();
        assert!(e.to_string().contains("adapt.rules.x"), "{e}");
    }

    #[test]
    fn a_retry_carries_the_answer_and_the_problem() {
        let first = vec![Message {
            role: "user",
            content: "hi".into(),
        }];
        let m = retry_messages(
            &templates(),
            &first,
            "oops",
            RetryReason::Invalid,
            "not valid JSON",
            &[Platform::X],
        )
        .unwrap();
        assert_eq!(m.len(), 3);
        assert_eq!(m[1].role, "assistant");
        assert_eq!(m[2].content, "BAD not valid JSON for x");
        assert_ne!(prompt_hash(&first), prompt_hash(&m));
    }
}
