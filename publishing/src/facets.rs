//! Rich-text facets found the way Bluesky's own client finds them
//! (`detectFacets` in `@atproto/api`'s `rich-text/detection.ts` and the
//! regular expressions of `util.ts`), with UTF-8 byte offsets:
//! - mentions `@handle` after the start, a space or `(`, whose last label
//!   is a known TLD (or `.test`), to be resolved to a DID afterwards;
//! - links with a scheme (`https?://` up to the next space) or without one
//!   (a domain with a known TLD, then `https://` is put in front), minus one
//!   trailing `.,;:!?` and an unbalanced trailing `)`;
//! - tags `#word` (or the fullwidth `＃`) after the start or a space, minus
//!   trailing punctuation, at most 64 UTF-16 units, stored without the `#`.
//!
//! The reference works on UTF-16 with JavaScript's regular expressions; this
//! is the same scan by hand over `char`s (JavaScript's `\s`, `\b` and `\d`
//! are reproduced, not Rust's), so offsets agree for emoji, CJK and
//! combining marks.

use serde_json::{Value, json};
use unicode_properties::{GeneralCategoryGroup, UnicodeGeneralCategory};

use crate::tlds::is_valid_domain;

/// What a facet marks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Feature {
    /// `@handle`, not yet resolved to a DID.
    Mention {
        /// The handle as written (without `@`).
        handle: String,
    },
    /// A link.
    Link {
        /// The URI (with `https://` added when the text had no scheme).
        uri: String,
    },
    /// A hashtag.
    Tag {
        /// The tag without `#`.
        tag: String,
    },
}

/// A facet: a byte range of the UTF-8 text and what it marks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facet {
    /// First byte (inclusive).
    pub byte_start: usize,
    /// Last byte (exclusive).
    pub byte_end: usize,
    /// What it is.
    pub feature: Feature,
}

/// JavaScript's `\s` (ECMAScript WhiteSpace and LineTerminator).
pub fn is_js_space(c: char) -> bool {
    matches!(
        c,
        '\t' | '\n' | '\u{b}' | '\u{c}' | '\r' | ' ' | '\u{a0}' | '\u{1680}' | '\u{2000}'
            ..='\u{200a}'
                | '\u{2028}'
                | '\u{2029}'
                | '\u{202f}'
                | '\u{205f}'
                | '\u{3000}'
                | '\u{feff}'
    )
}

/// JavaScript's (non-Unicode) word character for `\b`.
fn is_js_word(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

fn is_punctuation(c: char) -> bool {
    c.general_category_group() == GeneralCategoryGroup::Punctuation
}

/// The zero-width characters Bluesky's tag rule stops at.
fn is_tag_breaker(c: char) -> bool {
    matches!(
        c,
        '\u{ad}' | '\u{2060}' | '\u{200a}' | '\u{200b}' | '\u{200c}' | '\u{200d}' | '\u{20e2}'
    )
}

/// The text as chars with their byte offsets (plus the end offset).
struct Chars {
    chars: Vec<char>,
    offsets: Vec<usize>,
}

impl Chars {
    fn new(text: &str) -> Self {
        let mut chars = Vec::new();
        let mut offsets = Vec::new();
        for (offset, c) in text.char_indices() {
            chars.push(c);
            offsets.push(offset);
        }
        offsets.push(text.len());
        Chars { chars, offsets }
    }

    fn len(&self) -> usize {
        self.chars.len()
    }

    fn get(&self, i: usize) -> Option<char> {
        self.chars.get(i).copied()
    }

    fn byte(&self, i: usize) -> usize {
        self.offsets[i.min(self.chars.len())]
    }

    fn string(&self, from: usize, to: usize) -> String {
        self.chars[from..to].iter().collect()
    }

    /// Whether a match may begin its prefix at char `i`, given where the
    /// previous match of the same expression ended (JavaScript `lastIndex`).
    fn prefix_ok(&self, start: usize, last_end: usize, allow_paren: bool) -> bool {
        if start == 0 {
            return last_end == 0;
        }
        let prefix = start - 1;
        prefix >= last_end
            && self
                .get(prefix)
                .is_some_and(|c| is_js_space(c) || (allow_paren && c == '('))
    }
}

/// Every facet in `text`, mentions unresolved, ordered by position.
pub fn detect(text: &str) -> Vec<Facet> {
    let chars = Chars::new(text);
    let mut facets = mentions(&chars);
    facets.extend(links(&chars));
    facets.extend(tags(&chars));
    facets.sort_by_key(|f| (f.byte_start, f.byte_end));
    facets
}

/// `/(^|\s|\()(@)([a-zA-Z0-9.-]+)(\b)/g`, then the TLD check.
fn mentions(chars: &Chars) -> Vec<Facet> {
    let mut out = Vec::new();
    let mut last_end = 0;
    for at in 0..chars.len() {
        if chars.get(at) != Some('@') || !chars.prefix_ok(at, last_end, true) {
            continue;
        }
        let run_start = at + 1;
        let mut run_end = run_start;
        while chars
            .get(run_end)
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
        {
            run_end += 1;
        }
        // Backtrack from the greedy run to the longest prefix followed by a
        // word boundary.
        let mut end = run_end;
        let found = loop {
            if end == run_start {
                break false;
            }
            let before = chars.get(end - 1).is_some_and(is_js_word);
            let after = chars.get(end).is_some_and(is_js_word);
            if before != after {
                break true;
            }
            end -= 1;
        };
        if !found {
            continue;
        }
        last_end = end;
        let handle = chars.string(run_start, end);
        if !is_valid_domain(&handle) && !handle.ends_with(".test") {
            continue; // probably not a handle
        }
        out.push(Facet {
            byte_start: chars.byte(at),
            byte_end: chars.byte(end),
            feature: Feature::Mention { handle },
        });
    }
    out
}

/// `/(^|\s|\()((https?:\/\/[\S]+)|((?<domain>[a-z][a-z0-9]*(\.[a-z0-9]+)+)[\S]*))/gim`.
fn links(chars: &Chars) -> Vec<Facet> {
    let mut out = Vec::new();
    let mut last_end = 0;
    for start in 0..chars.len() {
        if !chars.prefix_ok(start, last_end, true) {
            continue;
        }
        let non_space_end = |from: usize| {
            let mut end = from;
            while chars.get(end).is_some_and(|c| !is_js_space(c)) {
                end += 1;
            }
            end
        };
        // Alternative 1: a scheme (case-insensitive) and at least one more char.
        let scheme_len = ["https://", "http://"].iter().find_map(|scheme| {
            let n = scheme.chars().count();
            let candidate = chars.chars.get(start..start + n)?;
            let matches = candidate
                .iter()
                .zip(scheme.chars())
                .all(|(a, b)| a.to_ascii_lowercase() == b);
            matches.then_some(n)
        });
        if let Some(n) = scheme_len {
            let end = non_space_end(start + n);
            if end > start + n {
                last_end = end;
                let uri = chars.string(start, end);
                // The reference only keeps it when it starts with lower-case
                // "http" (`HTTPS://...` matched, but is skipped).
                if uri.starts_with("http") {
                    out.push(link_facet(chars, start, end, uri));
                }
                continue;
            }
        }
        // Alternative 2: a bare domain, then anything up to a space.
        let Some(domain_end) = bare_domain_end(chars, start) else {
            continue;
        };
        let end = non_space_end(domain_end);
        last_end = end;
        let domain = chars.string(start, domain_end);
        if !is_valid_domain(&domain) {
            continue;
        }
        let uri = format!("https://{}", chars.string(start, end));
        out.push(link_facet(chars, start, end, uri));
    }
    out
}

/// `[a-z][a-z0-9]*(\.[a-z0-9]+)+` (case-insensitive) at `start`: its end.
fn bare_domain_end(chars: &Chars, start: usize) -> Option<usize> {
    if !chars.get(start)?.is_ascii_alphabetic() {
        return None;
    }
    let mut end = start + 1;
    while chars.get(end).is_some_and(|c| c.is_ascii_alphanumeric()) {
        end += 1;
    }
    let mut labels = 0;
    while chars.get(end) == Some('.')
        && chars
            .get(end + 1)
            .is_some_and(|c| c.is_ascii_alphanumeric())
    {
        end += 2;
        while chars.get(end).is_some_and(|c| c.is_ascii_alphanumeric()) {
            end += 1;
        }
        labels += 1;
    }
    (labels > 0).then_some(end)
}

fn link_facet(chars: &Chars, start: usize, end: usize, mut uri: String) -> Facet {
    let mut end = end;
    if uri.ends_with(['.', ',', ';', ':', '!', '?']) {
        uri.pop();
        end -= 1;
    }
    if uri.ends_with(')') && !uri.contains('(') {
        uri.pop();
        end -= 1;
    }
    Facet {
        byte_start: chars.byte(start),
        byte_end: chars.byte(end),
        feature: Feature::Link { uri },
    }
}

/// `/(^|\s)[#＃]((?!\ufe0f)[^\s\u00AD\u2060\u200A\u200B\u200C\u200D\u20e2]*
/// [^\d\s\p{P}\u00AD\u2060\u200A\u200B\u200C\u200D\u20e2]+[^\s...]*)?/gu`.
fn tags(chars: &Chars) -> Vec<Facet> {
    let mut out = Vec::new();
    let mut last_end = 0;
    for hash in 0..chars.len() {
        if !matches!(chars.get(hash), Some('#' | '＃')) || !chars.prefix_ok(hash, last_end, false)
        {
            continue;
        }
        let body = hash + 1;
        let mut end = body;
        if chars.get(body) != Some('\u{fe0f}') {
            while chars
                .get(end)
                .is_some_and(|c| !is_js_space(c) && !is_tag_breaker(c))
            {
                end += 1;
            }
        }
        let has_letter = chars.chars[body..end]
            .iter()
            .any(|&c| !c.is_ascii_digit() && !is_punctuation(c));
        if !has_letter {
            last_end = body; // matched "#" alone
            continue;
        }
        last_end = end;
        // Strip trailing punctuation (the run holds no spaces to trim).
        let mut tag_end = end;
        while tag_end > body && chars.get(tag_end - 1).is_some_and(is_punctuation) {
            tag_end -= 1;
        }
        let tag = chars.string(body, tag_end);
        let utf16_len = tag.encode_utf16().count();
        if utf16_len == 0 || utf16_len > 64 {
            continue;
        }
        out.push(Facet {
            byte_start: chars.byte(hash),
            byte_end: chars.byte(tag_end),
            feature: Feature::Tag { tag },
        });
    }
    out
}

/// The record's `facets`: mentions whose handle `resolve` turned into a DID,
/// links and tags; mentions that did not resolve are left out (the post
/// still goes, as in Bluesky's client). Also returns the dropped handles.
pub fn to_record(
    facets: &[Facet],
    mut resolve: impl FnMut(&str) -> Option<String>,
) -> (Vec<Value>, Vec<String>) {
    let mut out = Vec::new();
    let mut dropped = Vec::new();
    for facet in facets {
        let feature = match &facet.feature {
            Feature::Mention { handle } => match resolve(handle) {
                Some(did) => json!({ "$type": "app.bsky.richtext.facet#mention", "did": did }),
                None => {
                    dropped.push(handle.clone());
                    continue;
                }
            },
            Feature::Link { uri } => json!({ "$type": "app.bsky.richtext.facet#link", "uri": uri }),
            Feature::Tag { tag } => json!({ "$type": "app.bsky.richtext.facet#tag", "tag": tag }),
        };
        out.push(json!({
            "$type": "app.bsky.richtext.facet",
            "index": { "byteStart": facet.byte_start, "byteEnd": facet.byte_end },
            "features": [feature],
        }));
    }
    (out, dropped)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn covered<'a>(text: &'a str, f: &Facet) -> &'a str {
        &text[f.byte_start..f.byte_end]
    }

    fn mention(handle: &str) -> Feature {
        Feature::Mention {
            handle: handle.into(),
        }
    }
    fn link(uri: &str) -> Feature {
        Feature::Link { uri: uri.into() }
    }
    fn tag(tag: &str) -> Feature {
        Feature::Tag { tag: tag.into() }
    }

    fn detected(text: &str) -> Vec<(String, Feature)> {
        detect(text)
            .into_iter()
            .map(|f| (covered(text, &f).to_string(), f.feature))
            .collect()
    }

    #[test]
    fn reference_cases_from_atproto_rich_text_detection_tests() {
        // Cases from @atproto/api's rich-text-detection.test.ts.
        assert_eq!(detected("no mention"), vec![]);
        assert_eq!(
            detected("@handle.com middle end"),
            vec![("@handle.com".into(), mention("handle.com"))]
        );
        assert_eq!(
            detected("start @handle.com end"),
            vec![("@handle.com".into(), mention("handle.com"))]
        );
        assert_eq!(
            detected("start middle @handle.com"),
            vec![("@handle.com".into(), mention("handle.com"))]
        );
        assert_eq!(detected("@handle.com @handle.com @handle.com").len(), 3);
        assert_eq!(
            detected("@full123-chars.test"),
            vec![("@full123-chars.test".into(), mention("full123-chars.test"))]
        );
        assert_eq!(detected("not@right"), vec![]);
        assert_eq!(
            detected("@handle.com!@#$chars"),
            vec![("@handle.com".into(), mention("handle.com"))]
        );
        assert_eq!(
            detected("@handle.com\n@handle.com"),
            vec![
                ("@handle.com".into(), mention("handle.com")),
                ("@handle.com".into(), mention("handle.com"))
            ]
        );
        assert_eq!(
            detected("parenthetical (@handle.com)"),
            vec![("@handle.com".into(), mention("handle.com"))]
        );
        assert_eq!(
            detected("start https://middle.com end"),
            vec![("https://middle.com".into(), link("https://middle.com"))]
        );
        assert_eq!(
            detected("start https://middle.com/foo/bar?baz=bux#hash end"),
            vec![(
                "https://middle.com/foo/bar?baz=bux#hash".into(),
                link("https://middle.com/foo/bar?baz=bux#hash")
            )]
        );
        assert_eq!(
            detected("https://newline1.com\nhttps://newline2.com").len(),
            2
        );
        assert_eq!(
            detected("start middle.com end"),
            vec![("middle.com".into(), link("https://middle.com"))]
        );
        assert_eq!(
            detected("start middle.com/foo/bar?baz=bux#hash end"),
            vec![(
                "middle.com/foo/bar?baz=bux#hash".into(),
                link("https://middle.com/foo/bar?baz=bux#hash")
            )]
        );
        assert_eq!(
            detected("a example.com/index.php php link"),
            vec![(
                "example.com/index.php".into(),
                link("https://example.com/index.php")
            )]
        );
        assert_eq!(
            detected("a trailing bsky.app: colon"),
            vec![("bsky.app".into(), link("https://bsky.app"))]
        );
        assert_eq!(detected("not.. a..url ..here"), vec![]);
        assert_eq!(detected("e.g."), vec![]);
        assert_eq!(detected("something-cool.jpg"), vec![]);
        assert_eq!(detected("website.com.jpg"), vec![]);
        assert_eq!(detected("e.g./foo"), vec![]);
        assert_eq!(detected("website.com.jpg/foo"), vec![]);
        assert_eq!(
            detected(
                "Classic article https://socket3.wordpress.com/2018/02/03/designing-windows-95s-user-interface/"
            ),
            vec![(
                "https://socket3.wordpress.com/2018/02/03/designing-windows-95s-user-interface/"
                    .into(),
                link(
                    "https://socket3.wordpress.com/2018/02/03/designing-windows-95s-user-interface/"
                )
            )]
        );
        assert_eq!(
            detected(
                "Classic article https://socket3.wordpress.com/2018/02/03/designing-windows-95s-user-interface/ "
            ),
            vec![(
                "https://socket3.wordpress.com/2018/02/03/designing-windows-95s-user-interface/"
                    .into(),
                link(
                    "https://socket3.wordpress.com/2018/02/03/designing-windows-95s-user-interface/"
                )
            )]
        );
        assert_eq!(
            detected("https://foo.com https://bar.com/whatever https://baz.com"),
            vec![
                ("https://foo.com".into(), link("https://foo.com")),
                (
                    "https://bar.com/whatever".into(),
                    link("https://bar.com/whatever")
                ),
                ("https://baz.com".into(), link("https://baz.com")),
            ]
        );
        assert_eq!(
            detected("punctuation https://foo.com, https://bar.com/whatever; https://baz.com."),
            vec![
                ("https://foo.com".into(), link("https://foo.com")),
                (
                    "https://bar.com/whatever".into(),
                    link("https://bar.com/whatever")
                ),
                ("https://baz.com".into(), link("https://baz.com")),
            ]
        );
        assert_eq!(
            detected("parenthentical (https://foo.com)"),
            vec![("https://foo.com".into(), link("https://foo.com"))]
        );
        assert_eq!(
            detected("except for https://foo.com/thing_(cool)"),
            vec![(
                "https://foo.com/thing_(cool)".into(),
                link("https://foo.com/thing_(cool)")
            )]
        );
    }

    #[test]
    fn tags_follow_the_reference_rules() {
        assert_eq!(detected("#a"), vec![("#a".into(), tag("a"))]);
        assert_eq!(
            detected("#a #b"),
            vec![("#a".into(), tag("a")), ("#b".into(), tag("b"))]
        );
        assert_eq!(detected("#1"), vec![], "digits only are not a tag");
        assert_eq!(detected("#1a"), vec![("#1a".into(), tag("1a"))]);
        assert_eq!(detected("#tag!"), vec![("#tag".into(), tag("tag"))]);
        assert_eq!(detected("#a!?"), vec![("#a".into(), tag("a"))]);
        assert_eq!(
            detected("a#b"),
            vec![],
            "needs a space or the start before #"
        );
        assert_eq!(detected("#"), vec![]);
        assert_eq!(detected("# a"), vec![]);
        assert_eq!(detected("#\u{fe0f}"), vec![]);
        assert_eq!(detected("#a\u{200b}b"), vec![("#a".into(), tag("a"))]);
        assert_eq!(detected("＃tag"), vec![("＃tag".into(), tag("tag"))]);
        assert_eq!(detected("#タグ"), vec![("#タグ".into(), tag("タグ"))]);
        assert_eq!(detected("#🙏"), vec![("#🙏".into(), tag("🙏"))]);
        let long = format!("#{}", "a".repeat(64));
        assert_eq!(detect(&long).len(), 1);
        let too_long = format!("#{}", "a".repeat(65));
        assert_eq!(detect(&too_long).len(), 0);
        assert_eq!(detected("#a-b_c"), vec![("#a-b_c".into(), tag("a-b_c"))]);
    }

    #[test]
    fn byte_offsets_with_emoji_cjk_and_combining_marks() {
        let text = "👋🏽 こんにちは @alice.bsky.social e\u{301}te\u{301} #café https://例え.jp/x 🇫🇷 example.com";
        let facets = detect(text);
        let found: Vec<String> = facets
            .iter()
            .map(|f| covered(text, f).to_string())
            .collect();
        assert_eq!(
            found,
            vec![
                "@alice.bsky.social",
                "#café",
                "https://例え.jp/x",
                "example.com"
            ]
        );
        // The waving hand with skin tone is 8 bytes, the space 1, the five
        // kana 15, the space 1: the mention starts at byte 25.
        assert_eq!(facets[0].byte_start, 25);
        assert_eq!(facets[0].byte_end, 25 + "@alice.bsky.social".len());
        // Combining acute accents are 2 bytes each and belong to the text
        // before the tag, not to it.
        let tag_start = text.find("#café").unwrap();
        assert_eq!(facets[1].byte_start, tag_start);
        assert_eq!(facets[1].byte_end, tag_start + "#café".len());
        assert_eq!(facets[1].feature, tag("café"));
        for f in &facets {
            assert!(text.is_char_boundary(f.byte_start) && text.is_char_boundary(f.byte_end));
        }
        // A combining mark inside a tag stays inside it.
        let decomposed = "#cafe\u{301} ok";
        let f = detect(decomposed);
        assert_eq!(covered(decomposed, &f[0]), "#cafe\u{301}");
        assert_eq!(f[0].byte_end, 1 + 4 + 2);
    }

    #[test]
    fn mentions_need_a_known_tld_or_test() {
        assert_eq!(detected("@alice"), vec![]);
        assert_eq!(detected("@alice.notatld"), vec![]);
        assert_eq!(
            detected("@alice.test."),
            vec![("@alice.test".into(), mention("alice.test"))]
        );
        assert_eq!(
            detected("@ALICE.COM"),
            vec![],
            "the TLD check is case-sensitive"
        );
        assert_eq!(detected("@alice_bob.com"), vec![]);
        assert_eq!(detected("email me@alice.com"), vec![]);
    }

    #[test]
    fn upper_case_schemes_and_hosts_are_not_links() {
        assert_eq!(detected("HTTPS://EXAMPLE.COM"), vec![]);
        assert_eq!(detected("Example.COM"), vec![]);
        assert_eq!(
            detected("Example.com"),
            vec![("Example.com".into(), link("https://Example.com"))]
        );
    }

    #[test]
    fn unresolved_mentions_lose_their_facet() {
        let text = "hi @alice.test and @ghost.test #x";
        let (facets, dropped) = to_record(&detect(text), |handle| {
            (handle == "alice.test").then(|| "did:plc:alice".to_string())
        });
        assert_eq!(dropped, vec!["ghost.test".to_string()]);
        assert_eq!(facets.len(), 2);
        assert_eq!(facets[0]["features"][0]["did"], "did:plc:alice");
        assert_eq!(facets[0]["index"]["byteStart"], 3);
        assert_eq!(facets[0]["index"]["byteEnd"], 14);
        assert_eq!(
            facets[1]["features"][0]["$type"],
            "app.bsky.richtext.facet#tag"
        );
    }

    proptest! {
        #[test]
        fn facets_are_in_bounds_on_char_boundaries_and_do_not_overlap(text in "\\PC{0,80}") {
            let facets = detect(&text);
            let mut last_end = 0;
            for f in &facets {
                prop_assert!(f.byte_start < f.byte_end);
                prop_assert!(f.byte_end <= text.len());
                prop_assert!(text.is_char_boundary(f.byte_start));
                prop_assert!(text.is_char_boundary(f.byte_end));
                prop_assert!(f.byte_start >= last_end, "overlap in {:?}: {:?}", text, facets);
                last_end = f.byte_end;
            }
        }

        #[test]
        fn words_with_mentions_links_and_tags_are_found_wherever_they_sit(
            before in "[ a-zé日本👍🏽\u{301}]{0,12}",
            after in "[ a-zé日本👍🏽\u{301}]{0,12}",
            pick in 0usize..3,
        ) {
            let word = ["@bob.test", "https://example.com/p", "#rust"][pick];
            let text = format!("{before} {word} {after}");
            let facets = detect(&text);
            let found = facets.iter().find(|f| covered(&text, f) == word);
            prop_assert!(found.is_some(), "{:?} in {:?}: {:?}", word, text, facets);
            let f = found.unwrap();
            prop_assert_eq!(f.byte_start, before.len() + 1);
        }
    }
}
