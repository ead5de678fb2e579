//! What a client asks for: the bodies of `POST /adapt` and `POST
//! /adapt/{id}/regenerate`, checked with a reason for every refusal, and
//! the `idea_hash` that keeps the same idea with the same options from being
//! paid for twice.

use serde::Deserialize;
use sha2::{Digest, Sha256};
use shared::Error;
use unicode_normalization::UnicodeNormalization;
use uuid::Uuid;

/// The longest idea accepted, in characters (a long article's worth).
pub const MAX_IDEA_CHARS: usize = 20_000;
/// `content_adaptations.tone` is the seed's VARCHAR(50).
pub const MAX_TONE_CHARS: usize = 50;
/// `content_adaptations.target_audience` is the seed's VARCHAR(255).
pub const MAX_AUDIENCE_CHARS: usize = 255;

/// A platform adapt writes for, named as the seed's `adaptations` keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Platform {
    /// `linkedin {text, hashtags}`
    LinkedIn,
    /// `x {text, thread[]}`
    X,
    /// `bluesky {text}`
    Bluesky,
    /// `substack {title, body}`
    Substack,
}

impl Platform {
    /// Every platform, in the order answers list them.
    pub const ALL: [Platform; 4] = [
        Platform::LinkedIn,
        Platform::X,
        Platform::Bluesky,
        Platform::Substack,
    ];

    /// The key in `adaptations`.
    pub fn key(self) -> &'static str {
        match self {
            Platform::LinkedIn => "linkedin",
            Platform::X => "x",
            Platform::Bluesky => "bluesky",
            Platform::Substack => "substack",
        }
    }

    /// The platform named `name` (case-insensitive; `twitter` is X).
    pub fn parse(name: &str) -> Result<Platform, Error> {
        let lower = name.trim().to_ascii_lowercase();
        Platform::ALL
            .into_iter()
            .find(|p| p.key() == lower)
            .or((lower == "twitter").then_some(Platform::X))
            .ok_or_else(|| {
                Error::BadRequest(format!(
                    "unknown platform `{name}`; adapt writes for linkedin, x, bluesky and substack"
                ))
            })
    }
}

#[derive(Deserialize)]
struct AdaptBody {
    idea: Option<String>,
    platforms: Option<Vec<String>>,
    voice_profile_id: Option<String>,
    tone: Option<String>,
    target_audience: Option<String>,
    force: Option<bool>,
}

/// A checked `POST /adapt` body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdaptRequest {
    /// The idea, trimmed, as stored in `original_idea`.
    pub idea: String,
    /// The platforms, each once, in [`Platform::ALL`] order.
    pub platforms: Vec<Platform>,
    /// The voice profile asked for (else the user's default).
    pub voice_profile_id: Option<Uuid>,
    /// Desired tone.
    pub tone: Option<String>,
    /// Audience description.
    pub target_audience: Option<String>,
    /// Make a new adaptation even when the same one is stored.
    pub force: bool,
}

impl AdaptRequest {
    /// Parses and checks the body.
    pub fn parse(body: &[u8]) -> Result<Self, Error> {
        let body: AdaptBody = serde_json::from_slice(body).map_err(|e| {
            Error::BadRequest(format!(
                "body must be JSON {{idea, platforms, voice_profile_id?, tone?, target_audience?, force?}}: {e}"
            ))
        })?;
        let idea = body.idea.unwrap_or_default().trim().to_string();
        if idea.is_empty() {
            return Err(Error::BadRequest(
                "`idea` is required and must not be blank".into(),
            ));
        }
        let chars = idea.chars().count();
        if chars > MAX_IDEA_CHARS {
            return Err(Error::BadRequest(format!(
                "`idea` is {chars} characters; at most {MAX_IDEA_CHARS}"
            )));
        }
        let names = body.platforms.unwrap_or_default();
        if names.is_empty() {
            return Err(Error::BadRequest(
                "`platforms` must name at least one of linkedin, x, bluesky, substack".into(),
            ));
        }
        let mut platforms = names
            .iter()
            .map(|n| Platform::parse(n))
            .collect::<Result<Vec<_>, _>>()?;
        platforms.sort();
        platforms.dedup();
        let voice_profile_id = match body.voice_profile_id.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(text) => Some(Uuid::parse_str(text).map_err(|_| {
                Error::BadRequest(format!("`voice_profile_id` `{text}` is not a UUID"))
            })?),
        };
        Ok(AdaptRequest {
            idea,
            platforms,
            voice_profile_id,
            tone: option_text(body.tone, "tone", MAX_TONE_CHARS)?,
            target_audience: option_text(
                body.target_audience,
                "target_audience",
                MAX_AUDIENCE_CHARS,
            )?,
            force: body.force.unwrap_or(false),
        })
    }

    /// SHA-256 (hex) of the normalised idea and options: the idea in NFC
    /// with runs of whitespace made one space, the platforms in a fixed
    /// order, the tone lower-cased, the audience normalised like the idea,
    /// and the voice profile actually used (`profile`, the default one when
    /// none was named). Letter case in the idea is kept: it can change a post.
    pub fn idea_hash(&self, profile: Option<Uuid>) -> String {
        let canonical = serde_json::json!({
            "idea": normalise(&self.idea),
            "platforms": self.platforms.iter().map(|p| p.key()).collect::<Vec<_>>(),
            "tone": self.tone.as_deref().map(|t| normalise(t).to_lowercase()),
            "target_audience": self.target_audience.as_deref().map(normalise),
            "voice_profile_id": profile,
        });
        hex::encode(Sha256::digest(canonical.to_string().as_bytes()))
    }
}

/// NFC, whitespace runs collapsed to one space, trimmed.
pub fn normalise(text: &str) -> String {
    let nfc: String = text.nfc().collect();
    nfc.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn option_text(value: Option<String>, name: &str, max: usize) -> Result<Option<String>, Error> {
    let Some(text) = value
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
    else {
        return Ok(None);
    };
    let chars = text.chars().count();
    if chars > max {
        return Err(Error::BadRequest(format!(
            "`{name}` is {chars} characters; at most {max}"
        )));
    }
    Ok(Some(text))
}

/// A checked `POST /adapt/{id}/regenerate` body: `{platform}`.
pub fn parse_regenerate(body: &[u8]) -> Result<Platform, Error> {
    #[derive(Deserialize)]
    struct Body {
        platform: Option<String>,
    }
    let body: Body = serde_json::from_slice(body)
        .map_err(|e| Error::BadRequest(format!("body must be JSON {{platform}}: {e}")))?;
    Platform::parse(body.platform.as_deref().unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: serde_json::Value) -> Result<AdaptRequest, Error> {
        AdaptRequest::parse(body.to_string().as_bytes())
    }

    #[test]
    fn platforms_are_checked_deduplicated_and_ordered() {
        let r = parse(serde_json::json!({"idea": " x ", "platforms": ["Bluesky", "x", "twitter", "linkedin"]})).unwrap();
        assert_eq!(r.idea, "x");
        assert_eq!(
            r.platforms,
            vec![Platform::LinkedIn, Platform::X, Platform::Bluesky]
        );
        let e = parse(serde_json::json!({"idea": "x", "platforms": ["myspace"]})).unwrap_err();
        assert!(e.to_string().contains("myspace"), "{e}");
        assert!(parse(serde_json::json!({"idea": "x", "platforms": []})).is_err());
        assert!(parse(serde_json::json!({"idea": "  ", "platforms": ["x"]})).is_err());
        assert!(
            parse(serde_json::json!({"idea": "x", "platforms": ["x"], "voice_profile_id": "nope"}))
                .is_err()
        );
        assert!(
            parse(serde_json::json!({"idea": "x", "platforms": ["x"], "tone": "t".repeat(51)}))
                .is_err()
        );
    }

    #[test]
    fn the_hash_ignores_spacing_order_and_tone_case_but_not_options() {
        let a = parse(serde_json::json!({"idea": "Ship  it\n today", "platforms": ["x", "bluesky"], "tone": "Casual"})).unwrap();
        let b = parse(serde_json::json!({"idea": "Ship it today", "platforms": ["bluesky", "x"], "tone": "casual "})).unwrap();
        assert_eq!(a.idea_hash(None), b.idea_hash(None));
        assert_eq!(a.idea_hash(None).len(), 64);
        let c = parse(
            serde_json::json!({"idea": "Ship it today", "platforms": ["x"], "tone": "casual"}),
        )
        .unwrap();
        assert_ne!(a.idea_hash(None), c.idea_hash(None));
        let d = parse(serde_json::json!({"idea": "ship it today", "platforms": ["bluesky", "x"], "tone": "casual"})).unwrap();
        assert_ne!(a.idea_hash(None), d.idea_hash(None));
        assert_ne!(a.idea_hash(None), a.idea_hash(Some(Uuid::nil())));
        // NFC: a precomposed and a combining é are the same idea.
        let e1 = parse(serde_json::json!({"idea": "caf\u{e9}", "platforms": ["x"]})).unwrap();
        let e2 = parse(serde_json::json!({"idea": "cafe\u{301}", "platforms": ["x"]})).unwrap();
        assert_eq!(e1.idea_hash(None), e2.idea_hash(None));
    }

    #[test]
    fn regenerate_names_one_known_platform() {
        assert_eq!(
            parse_regenerate(br#"{"platform":"x"}"#).unwrap(),
            Platform::X
        );
        assert!(parse_regenerate(br#"{"platform":"fax"}"#).is_err());
        assert!(parse_regenerate(b"{}").is_err());
    }
}
