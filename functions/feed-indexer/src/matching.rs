//! A feed's rules and whether a post matches them.
//!
//! A post is kept when it matches at least one include rule (or the feed has
//! none) and no exclude rule. A rule matches when its keyword occurs in the
//! post's text as whole words and, when the rule names a language, the post
//! is in it (`en` matches `en` and `en-US`). A rule with a language and no
//! keyword matches every post in that language.
//!
//! Words are compared case- and accent-insensitively: text is NFKD
//! normalized, combining marks (and emoji variation selectors and skin-tone
//! modifiers, the accents of emoji) are dropped, it is lower-cased, then
//! split into tokens: each run of letters and digits is one token, and each
//! symbol (an emoji, `€`, `+`) is a token of its own; punctuation and spaces
//! only separate. A keyword of several words matches them in sequence, so
//! `new york` matches "New-York" but not "new yorker". A ZWJ emoji sequence
//! becomes its parts in sequence. Scripts written without spaces (Chinese,
//! Japanese, Thai) only match whole runs of text, not words inside them.

use serde::Deserialize;
use unicode_normalization::UnicodeNormalization;
use unicode_normalization::char::is_combining_mark;
use unicode_properties::{GeneralCategoryGroup, UnicodeGeneralCategory};

/// One row of `feed_rules`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct RuleRow {
    /// `include` or `exclude`.
    pub kind: String,
    /// The keyword (may be empty when `lang` is set).
    pub value: String,
    /// A BCP-47 language the post must be in, when set.
    pub lang: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    tokens: Vec<String>,
    lang: Option<String>,
}

/// A feed's rules, ready to match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rules {
    include: Vec<Rule>,
    exclude: Vec<Rule>,
}

impl Rules {
    /// Builds the rules. A rule with neither a keyword (after tokenizing)
    /// nor a language can match nothing meaningful and is ignored.
    pub fn new(rows: &[RuleRow]) -> Self {
        let mut rules = Rules::default();
        for row in rows {
            let rule = Rule {
                tokens: tokens(&row.value),
                lang: row
                    .lang
                    .as_deref()
                    .map(|l| l.trim().to_ascii_lowercase())
                    .filter(|l| !l.is_empty()),
            };
            if rule.tokens.is_empty() && rule.lang.is_none() {
                continue;
            }
            match row.kind.as_str() {
                "include" => rules.include.push(rule),
                "exclude" => rules.exclude.push(rule),
                _ => {}
            }
        }
        rules
    }

    /// Whether a post with `text` in `langs` belongs in the feed.
    pub fn matches(&self, text: &str, langs: &[String]) -> bool {
        let words = tokens(text);
        let langs: Vec<String> = langs.iter().map(|l| l.to_ascii_lowercase()).collect();
        let hit = |rule: &Rule| rule_matches(rule, &words, &langs);
        (self.include.is_empty() || self.include.iter().any(hit)) && !self.exclude.iter().any(hit)
    }
}

fn rule_matches(rule: &Rule, words: &[String], langs: &[String]) -> bool {
    if let Some(lang) = &rule.lang
        && !langs.iter().any(|l| language_matches(lang, l))
    {
        return false;
    }
    rule.tokens.is_empty() || contains_sequence(words, &rule.tokens)
}

/// `en` matches `en` and `en-us`; `en-us` matches only `en-us`.
fn language_matches(rule: &str, post: &str) -> bool {
    post == rule
        || post
            .strip_prefix(rule)
            .is_some_and(|rest| rest.starts_with('-'))
}

fn contains_sequence(words: &[String], needle: &[String]) -> bool {
    !needle.is_empty() && words.windows(needle.len()).any(|w| w == needle)
}

/// Emoji presentation selectors and skin-tone modifiers: dropped so that
/// `❤` matches `❤️` and `👍` matches `👍🏽`.
fn is_emoji_accent(c: char) -> bool {
    matches!(c, '\u{FE0E}' | '\u{FE0F}' | '\u{1F3FB}'..='\u{1F3FF}')
}

/// The comparable tokens of `text` (see the module documentation).
pub fn tokens(text: &str) -> Vec<String> {
    let mut tokens = Vec::new();
    let mut word = String::new();
    for c in text.nfkd() {
        if is_combining_mark(c) || is_emoji_accent(c) {
            continue;
        }
        if c.is_alphanumeric() {
            word.extend(c.to_lowercase());
            continue;
        }
        if !word.is_empty() {
            tokens.push(std::mem::take(&mut word));
        }
        if c.general_category_group() == GeneralCategoryGroup::Symbol {
            tokens.push(c.to_string());
        }
    }
    if !word.is_empty() {
        tokens.push(word);
    }
    tokens
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(kind: &str, value: &str, lang: Option<&str>) -> RuleRow {
        RuleRow {
            kind: kind.into(),
            value: value.into(),
            lang: lang.map(str::to_string),
        }
    }

    fn langs(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn tokens_fold_case_accents_and_width() {
        assert_eq!(
            tokens("Crème BRÛLÉE, s'il-vous-plaît!"),
            ["creme", "brulee", "s", "il", "vous", "plait"]
        );
        assert_eq!(tokens("Ｒｕｓｔ２０２４"), ["rust2024"]);
        assert_eq!(tokens("I ❤️ Rust 🦀🦀"), ["i", "❤", "rust", "🦀", "🦀"]);
        assert_eq!(tokens("👍🏽+1"), ["👍", "+", "1"]);
        assert_eq!(
            tokens("#rustlang @bob.bsky.social"),
            ["rustlang", "bob", "bsky", "social"]
        );
        assert!(tokens("  ... ,, ").is_empty());
    }

    #[test]
    fn includes_match_whole_words_only() {
        let rules = Rules::new(&[
            rule("include", "rust", None),
            rule("include", "new york", None),
        ]);
        assert!(rules.matches("I love Rust!", &[]));
        assert!(rules.matches("#Rust", &[]));
        assert!(!rules.matches("trusty rusty crust", &[]));
        assert!(rules.matches("Back in NEW-YORK today", &[]));
        assert!(!rules.matches("a new yorker", &[]));
        assert!(!rules.matches("york new", &[]));
    }

    #[test]
    fn accents_and_case_are_ignored_both_ways() {
        let rules = Rules::new(&[rule("include", "Café", None)]);
        assert!(rules.matches("cafe time", &[]));
        assert!(rules.matches("CAFÉ TIME", &[]));
        assert!(rules.matches("cafe\u{301} (combining accent)", &[]));
        let plain = Rules::new(&[rule("include", "creme", None)]);
        assert!(plain.matches("Crème brûlée", &[]));
    }

    #[test]
    fn excludes_win_over_includes() {
        let rules = Rules::new(&[rule("include", "rust", None), rule("exclude", "nsfw", None)]);
        assert!(rules.matches("rust tips", &[]));
        assert!(!rules.matches("rust tips NSFW", &[]));
        assert!(!rules.matches("nothing relevant", &[]));
        let only_exclude = Rules::new(&[rule("exclude", "spam", None)]);
        assert!(only_exclude.matches("anything at all", &[]));
        assert!(!only_exclude.matches("buy spam now", &[]));
        assert!(Rules::new(&[]).matches("no rules keep everything", &[]));
    }

    #[test]
    fn languages_restrict_their_rule() {
        let rules = Rules::new(&[rule("include", "rust", Some("en"))]);
        assert!(rules.matches("rust", &langs(&["en"])));
        assert!(rules.matches("rust", &langs(&["fr", "en-US"])));
        assert!(!rules.matches("rust", &langs(&["fr"])));
        assert!(!rules.matches("rust", &[]));
        assert!(!rules.matches("rust", &langs(&["eng"])));
        let language_only = Rules::new(&[rule("include", "", Some("pt"))]);
        assert!(language_only.matches("qualquer coisa", &langs(&["pt-BR"])));
        assert!(!language_only.matches("anything", &langs(&["en"])));
        let exclude_lang = Rules::new(&[rule("exclude", "", Some("de"))]);
        assert!(!exclude_lang.matches("hallo", &langs(&["de"])));
        assert!(exclude_lang.matches("hello", &langs(&["en"])));
    }

    #[test]
    fn emoji_keywords_match_as_tokens() {
        let rules = Rules::new(&[rule("include", "🦀", None), rule("include", "❤️", None)]);
        assert!(rules.matches("Ferris🦀is here", &[]));
        assert!(rules.matches("love ❤ it", &[]));
        assert!(rules.matches("love ❤️ it", &[]));
        assert!(!rules.matches("crab", &[]));
        let thumbs = Rules::new(&[rule("include", "👍", None)]);
        assert!(thumbs.matches("ok 👍🏿", &[]));
        let family = Rules::new(&[rule("include", "👨‍👩‍👧", None)]);
        assert!(family.matches("my 👨‍👩‍👧 trip", &[]));
        assert!(!family.matches("my 👨 trip", &[]));
    }

    #[test]
    fn blank_rules_are_ignored() {
        let rules = Rules::new(&[rule("include", "  ", None), rule("include", "!!", None)]);
        assert_eq!(rules, Rules::default());
        assert!(rules.matches("anything", &[]));
    }
}
