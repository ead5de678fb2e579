//! The answer's shape and the platforms' limits.
//!
//! The model is asked for one JSON object keyed by platform, in the seed's
//! `adaptations` shape ([`schema`]); [`parse`] accepts only that shape for
//! every platform asked (never a half-parsed adaptation), and [`fit`] holds
//! each variant to its platform's limit with the counters publish uses
//! (`publishing::x_text` and `publishing::limits`, one copy for both):
//!
//! - X: every post at most 280 weighted characters. A variant over it is
//!   split into a thread (`text` the first post, `thread` the rest), with
//!   publish's own splitter, so nothing is cut or lost.
//! - Bluesky: 300 graphemes and 3,000 bytes, LinkedIn: 3,000 graphemes for
//!   the text plus its hashtag line, Substack: a title of at most
//!   [`SUBSTACK_TITLE_MAX_GRAPHEMES`]. Over any of these, the variant is
//!   re-asked (the caller's job), never cut.

use publishing::{limits, x_text};
use serde_json::{Value, json};

use crate::request::Platform;

/// Substack's title limit as adapt holds it (Substack documents none; its
/// editor's title field takes 280 characters).
pub const SUBSTACK_TITLE_MAX_GRAPHEMES: usize = 280;

/// The limit number a platform's prompt names.
pub fn limit_of(platform: Platform) -> usize {
    match platform {
        Platform::LinkedIn => limits::LINKEDIN_MAX_GRAPHEMES,
        Platform::X => x_text::X_MAX_WEIGHT,
        Platform::Bluesky => limits::BLUESKY_MAX_GRAPHEMES,
        Platform::Substack => SUBSTACK_TITLE_MAX_GRAPHEMES,
    }
}

/// One platform's variant, in the seed's shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Variant {
    /// `{text, hashtags}` (tags without `#`).
    LinkedIn {
        /// Post text.
        text: String,
        /// Hashtags without the `#`.
        hashtags: Vec<String>,
    },
    /// `{text, thread}`: the first post and the ones after it.
    X {
        /// First post.
        text: String,
        /// Following posts, in order.
        thread: Vec<String>,
    },
    /// `{text}`.
    Bluesky {
        /// Post text.
        text: String,
    },
    /// `{title, body}`.
    Substack {
        /// Article title.
        title: String,
        /// Article body (Markdown).
        body: String,
    },
}

impl Variant {
    /// The seed's JSON shape.
    pub fn to_json(&self) -> Value {
        match self {
            Variant::LinkedIn { text, hashtags } => json!({"text": text, "hashtags": hashtags}),
            Variant::X { text, thread } => json!({"text": text, "thread": thread}),
            Variant::Bluesky { text } => json!({"text": text}),
            Variant::Substack { title, body } => json!({"title": title, "body": body}),
        }
    }

    /// Which platform it is for.
    pub fn platform(&self) -> Platform {
        match self {
            Variant::LinkedIn { .. } => Platform::LinkedIn,
            Variant::X { .. } => Platform::X,
            Variant::Bluesky { .. } => Platform::Bluesky,
            Variant::Substack { .. } => Platform::Substack,
        }
    }
}

fn string_schema() -> Value {
    json!({"type": "string"})
}

fn strings_schema() -> Value {
    json!({"type": "array", "items": {"type": "string"}})
}

fn object_schema(fields: &[(&str, Value)]) -> Value {
    let properties: serde_json::Map<String, Value> = fields
        .iter()
        .map(|(name, schema)| ((*name).to_string(), schema.clone()))
        .collect();
    let required: Vec<&str> = fields.iter().map(|(name, _)| *name).collect();
    json!({
        "type": "object",
        "additionalProperties": false,
        "required": required,
        "properties": properties,
    })
}

/// The JSON schema of an answer for `platforms` (strict: every field
/// required, nothing else allowed).
pub fn schema(platforms: &[Platform]) -> Value {
    let fields: Vec<(&str, Value)> = platforms
        .iter()
        .map(|p| {
            let schema = match p {
                Platform::LinkedIn => {
                    object_schema(&[("text", string_schema()), ("hashtags", strings_schema())])
                }
                Platform::X => {
                    object_schema(&[("text", string_schema()), ("thread", strings_schema())])
                }
                Platform::Bluesky => object_schema(&[("text", string_schema())]),
                Platform::Substack => {
                    object_schema(&[("title", string_schema()), ("body", string_schema())])
                }
            };
            (p.key(), schema)
        })
        .collect();
    object_schema(&fields)
}

/// Reads the model's answer text: one JSON object with a valid variant for
/// every platform asked (other keys are ignored). A surrounding Markdown
/// code fence, which models in JSON mode sometimes add, is allowed. The
/// error says what is wrong, for the re-ask and the final message.
pub fn parse(content: &str, platforms: &[Platform]) -> Result<Vec<Variant>, String> {
    let text = strip_fence(content.trim());
    let value: Value = serde_json::from_str(text).map_err(|e| format!("not valid JSON ({e})"))?;
    let Value::Object(object) = value else {
        return Err("not a JSON object".into());
    };
    platforms
        .iter()
        .map(|&p| {
            let field = object
                .get(p.key())
                .ok_or_else(|| format!("no `{}` variant", p.key()))?;
            parse_variant(p, field)
        })
        .collect()
}

fn strip_fence(text: &str) -> &str {
    let Some(rest) = text.strip_prefix("```") else {
        return text;
    };
    let rest = rest.strip_prefix("json").unwrap_or(rest);
    rest.strip_suffix("```").unwrap_or(rest).trim()
}

fn text_field(platform: Platform, object: &Value, name: &str) -> Result<String, String> {
    match object.get(name) {
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(s.trim().to_string()),
        Some(Value::String(_)) => Err(format!("`{}.{name}` is empty", platform.key())),
        Some(_) => Err(format!("`{}.{name}` is not a string", platform.key())),
        None => Err(format!("`{}.{name}` is missing", platform.key())),
    }
}

fn strings_field(platform: Platform, object: &Value, name: &str) -> Result<Vec<String>, String> {
    match object.get(name) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| {
                item.as_str().map(|s| s.trim().to_string()).ok_or_else(|| {
                    format!(
                        "`{}.{name}` holds something other than strings",
                        platform.key()
                    )
                })
            })
            .filter(|item| item.as_ref().map_or(true, |s| !s.is_empty()))
            .collect(),
        Some(_) => Err(format!(
            "`{}.{name}` is not a list of strings",
            platform.key()
        )),
    }
}

fn parse_variant(platform: Platform, value: &Value) -> Result<Variant, String> {
    if !value.is_object() {
        return Err(format!("`{}` is not an object", platform.key()));
    }
    Ok(match platform {
        Platform::LinkedIn => {
            let hashtags = strings_field(platform, value, "hashtags")?
                .into_iter()
                .map(|tag| tag.trim_start_matches('#').to_string())
                .filter(|tag| !tag.is_empty())
                .collect::<Vec<_>>();
            if let Some(tag) = hashtags.iter().find(|t| t.contains(char::is_whitespace)) {
                return Err(format!("linkedin hashtag `{tag}` contains a space"));
            }
            Variant::LinkedIn {
                text: text_field(platform, value, "text")?,
                hashtags,
            }
        }
        Platform::X => Variant::X {
            text: text_field(platform, value, "text")?,
            thread: strings_field(platform, value, "thread")?,
        },
        Platform::Bluesky => Variant::Bluesky {
            text: text_field(platform, value, "text")?,
        },
        Platform::Substack => Variant::Substack {
            title: text_field(platform, value, "title")?,
            body: text_field(platform, value, "body")?,
        },
    })
}

/// LinkedIn's text as posted: the text, then a line of `#tags`.
pub fn linkedin_post(text: &str, hashtags: &[String]) -> String {
    if hashtags.is_empty() {
        return text.to_string();
    }
    let tags: Vec<String> = hashtags.iter().map(|t| format!("#{t}")).collect();
    format!("{text}\n\n{}", tags.join(" "))
}

/// Holds `variant` to its platform's limit: the variant as stored (an X
/// variant over 280 split into a thread), or what is over the limit, for
/// the re-ask.
pub fn fit(variant: Variant) -> Result<Variant, String> {
    match variant {
        Variant::X { text, thread } => {
            if x_text::fits(&text) && thread.iter().all(|post| x_text::fits(post)) {
                return Ok(Variant::X { text, thread });
            }
            // Publish's splitter over the whole variant: every word kept, in order.
            let whole = std::iter::once(text.as_str())
                .chain(thread.iter().map(String::as_str))
                .collect::<Vec<_>>()
                .join("\n\n");
            let mut posts = x_text::split_thread(&whole).into_iter();
            let first = posts.next().unwrap_or_default();
            Ok(Variant::X {
                text: first,
                thread: posts.collect(),
            })
        }
        Variant::Bluesky { text } => match limits::check_bluesky(&text) {
            Ok(()) => Ok(Variant::Bluesky { text }),
            Err(problem) => Err(format!("bluesky: {problem}")),
        },
        Variant::LinkedIn { text, hashtags } => {
            let posted = linkedin_post(&text, &hashtags);
            match limits::check_graphemes(&posted, limits::LINKEDIN_MAX_GRAPHEMES, "LinkedIn") {
                Ok(()) => Ok(Variant::LinkedIn { text, hashtags }),
                Err(problem) => Err(format!("linkedin: {problem} (text and hashtag line)")),
            }
        }
        Variant::Substack { title, body } => {
            match limits::check_graphemes(&title, SUBSTACK_TITLE_MAX_GRAPHEMES, "Substack's title")
            {
                Ok(()) => Ok(Variant::Substack { title, body }),
                Err(problem) => Err(format!("substack title: {problem}")),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [Platform; 4] = Platform::ALL;

    fn answer() -> Value {
        json!({
            "linkedin": {"text": "A post.", "hashtags": ["#rust", "wasm"]},
            "x": {"text": "Short.", "thread": []},
            "bluesky": {"text": "Sky."},
            "substack": {"title": "T", "body": "B"}
        })
    }

    #[test]
    fn a_complete_answer_parses_in_the_seed_shape() {
        let variants = parse(&answer().to_string(), &ALL).unwrap();
        assert_eq!(
            variants[0].to_json(),
            json!({"text": "A post.", "hashtags": ["rust", "wasm"]})
        );
        assert_eq!(
            variants[1].to_json(),
            json!({"text": "Short.", "thread": []})
        );
        let fenced = format!("```json\n{}\n```", answer());
        assert_eq!(parse(&fenced, &ALL).unwrap(), variants);
    }

    #[test]
    fn anything_short_of_the_shape_is_refused_with_the_reason() {
        assert!(
            parse("Sure! Here are your posts", &ALL)
                .unwrap_err()
                .contains("not valid JSON")
        );
        assert!(
            parse("[1]", &ALL)
                .unwrap_err()
                .contains("not a JSON object")
        );
        let mut missing = answer();
        missing.as_object_mut().unwrap().remove("bluesky");
        assert_eq!(
            parse(&missing.to_string(), &ALL).unwrap_err(),
            "no `bluesky` variant"
        );
        let mut wrong = answer();
        wrong["x"]["text"] = json!(5);
        assert_eq!(
            parse(&wrong.to_string(), &ALL).unwrap_err(),
            "`x.text` is not a string"
        );
        let mut empty = answer();
        empty["substack"]["title"] = json!("  ");
        assert_eq!(
            parse(&empty.to_string(), &ALL).unwrap_err(),
            "`substack.title` is empty"
        );
        // Only the platforms asked must be there.
        assert_eq!(
            parse(
                &json!({"x": {"text": "a", "thread": []}}).to_string(),
                &[Platform::X]
            )
            .unwrap()
            .len(),
            1
        );
    }

    #[test]
    fn the_schema_is_strict_and_lists_only_the_platforms_asked() {
        let s = schema(&[Platform::X, Platform::Bluesky]);
        assert_eq!(s["required"], json!(["x", "bluesky"]));
        assert_eq!(s["additionalProperties"], json!(false));
        assert_eq!(s["properties"]["x"]["required"], json!(["text", "thread"]));
        assert!(s["properties"].get("linkedin").is_none());
    }

    #[test]
    fn a_long_x_variant_becomes_a_thread_with_nothing_lost() {
        let long = (1..=90)
            .map(|i| format!("word{i}"))
            .collect::<Vec<_>>()
            .join(" ");
        let Variant::X { text, thread } = fit(Variant::X {
            text: long.clone(),
            thread: vec![],
        })
        .unwrap() else {
            panic!("not X");
        };
        assert!(!thread.is_empty());
        for post in std::iter::once(&text).chain(thread.iter()) {
            assert!(x_text::weighted_length(post) <= 280, "{post}");
        }
        assert!(text.starts_with("word1 word2"));
        assert!(thread.last().unwrap().contains("word90"));
    }

    #[test]
    fn over_long_bluesky_linkedin_and_substack_are_refused_not_cut() {
        let e = fit(Variant::Bluesky {
            text: "a".repeat(301),
        })
        .unwrap_err();
        assert_eq!(e, "bluesky: 301 graphemes; Bluesky allows 300");
        assert!(
            fit(Variant::Bluesky {
                text: "👩‍👩‍👧‍👦".repeat(300)
            })
            .is_err(),
            "bytes too"
        );
        assert!(
            fit(Variant::Bluesky {
                text: "a".repeat(300)
            })
            .is_ok()
        );
        let tags = vec!["rust".to_string()];
        assert!(
            fit(Variant::LinkedIn {
                text: "a".repeat(2993),
                hashtags: tags.clone()
            })
            .is_ok()
        );
        let e = fit(Variant::LinkedIn {
            text: "a".repeat(2994),
            hashtags: tags,
        })
        .unwrap_err();
        assert!(e.contains("3001 graphemes; LinkedIn allows 3000"), "{e}");
        assert!(
            fit(Variant::Substack {
                title: "t".repeat(281),
                body: "b".into()
            })
            .is_err()
        );
    }
}
