//! X's weighted length (twitter-text v3 configuration) and thread
//! splitting.
//!
//! twitter-text counts NFC-normalized text: every URL counts 23, every emoji
//! 2, a code point in the Latin, punctuation and general ranges (U+0000 to
//! U+10FF, U+2000 to U+200D, U+2010 to U+201F, U+2032 to U+2037) 1, and
//! everything else (CJK, Hangul, most symbols, characters outside the BMP)
//! 2; a post may weigh 280. URL detection reuses Bluesky's link rule (with
//! or without a scheme, known TLDs), and every emoji-capable non-ASCII
//! grapheme counts as an emoji: where the two libraries could disagree this
//! errs on the heavy side, so a part this module accepts is never too long
//! for X.

use unicode_normalization::UnicodeNormalization;
use unicode_properties::UnicodeEmoji;
use unicode_segmentation::UnicodeSegmentation;

use crate::facets::{self, Feature};

/// X's limit in weighted characters.
pub const X_MAX_WEIGHT: usize = 280;
/// What a URL weighs, whatever its length.
const URL_WEIGHT: usize = 23;

fn char_weight(c: char) -> usize {
    match u32::from(c) {
        0..=4351 | 8192..=8205 | 8208..=8223 | 8242..=8247 => 1,
        _ => 2,
    }
}

fn is_emoji(grapheme: &str) -> bool {
    let mut chars = grapheme.chars();
    let Some(first) = chars.next() else {
        return false;
    };
    (first.is_emoji_char() && !first.is_ascii())
        || grapheme.contains('\u{20e3}')
        || unicode_properties::emoji::is_regional_indicator(first)
}

/// The weighted length of `text` as X counts it.
pub fn weighted_length(text: &str) -> usize {
    let text: String = text.nfc().collect();
    let urls: Vec<(usize, usize)> = facets::detect(&text)
        .into_iter()
        .filter(|f| matches!(f.feature, Feature::Link { .. }))
        .map(|f| (f.byte_start, f.byte_end))
        .collect();
    let mut weight = 0;
    let mut next_url = urls.iter().peekable();
    for (offset, grapheme) in text.grapheme_indices(true) {
        while next_url.peek().is_some_and(|(_, end)| *end <= offset) {
            next_url.next();
        }
        if let Some((start, _)) = next_url.peek() {
            if offset == *start {
                weight += URL_WEIGHT;
                continue;
            }
            if offset > *start {
                continue; // inside a URL
            }
        }
        weight += if is_emoji(grapheme) {
            2
        } else {
            grapheme.chars().map(char_weight).sum()
        };
    }
    weight
}

/// Whether `text` fits one post on X.
pub fn fits(text: &str) -> bool {
    weighted_length(text) <= X_MAX_WEIGHT
}

/// One word of the text with the whitespace before it.
struct Atom<'a> {
    separator: &'a str,
    word: &'a str,
}

fn atoms(text: &str) -> Vec<Atom<'_>> {
    let mut out = Vec::new();
    let mut rest = text;
    loop {
        let word_start = rest
            .find(|c: char| !c.is_whitespace())
            .unwrap_or(rest.len());
        if word_start == rest.len() {
            break;
        }
        let after = &rest[word_start..];
        let word_len = after.find(char::is_whitespace).unwrap_or(after.len());
        out.push(Atom {
            separator: &rest[..word_start],
            word: &after[..word_len],
        });
        rest = &after[word_len..];
    }
    out
}

fn join(atoms: &[&Atom<'_>]) -> String {
    let mut out = String::new();
    for (i, atom) in atoms.iter().enumerate() {
        if i > 0 {
            out.push_str(atom.separator);
        }
        out.push_str(atom.word);
    }
    out
}

/// A good place to start the next part: a line break before the word, or
/// a sentence end before it.
fn is_nice_break(previous: &Atom<'_>, next: &Atom<'_>) -> bool {
    next.separator.contains('\n')
        || previous
            .word
            .ends_with(['.', '!', '?', '…', '。', '！', '？'])
}

/// Splits a word that does not fit `budget` on its own at grapheme
/// boundaries.
fn hard_split(word: &str, budget: usize) -> Vec<String> {
    let mut pieces = Vec::new();
    let mut current = String::new();
    for grapheme in word.graphemes(true) {
        let candidate = format!("{current}{grapheme}");
        if !current.is_empty() && weighted_length(&candidate) > budget {
            pieces.push(std::mem::take(&mut current));
            current.push_str(grapheme);
        } else {
            current = candidate;
        }
    }
    if !current.is_empty() {
        pieces.push(current);
    }
    pieces
}

/// Packs the words into parts of at most `budget`, breaking at line ends or
/// sentence ends when that keeps a part at least half full.
fn pack(atoms: &[Atom<'_>], budget: usize) -> Vec<String> {
    let mut parts = Vec::new();
    let mut current: Vec<&Atom<'_>> = Vec::new();
    let text_of = |atoms: &[&Atom<'_>]| join(atoms);
    for atom in atoms {
        current.push(atom);
        if weighted_length(&text_of(&current)) <= budget {
            continue;
        }
        current.pop();
        if current.is_empty() {
            // The word alone is too long: it becomes parts of its own.
            let mut pieces = hard_split(atom.word, budget);
            let last = pieces.pop().unwrap_or_default();
            parts.extend(pieces);
            parts.push(last);
            continue;
        }
        let break_at = (1..current.len())
            .rev()
            .find(|&b| {
                is_nice_break(current[b - 1], current[b])
                    && weighted_length(&text_of(&current[..b])) * 2 >= budget
            })
            .unwrap_or(current.len());
        parts.push(text_of(&current[..break_at]));
        let carried: Vec<&Atom<'_>> = current[break_at..].to_vec();
        current = carried;
        current.push(atom);
        // The carried words plus this one may still not fit: flush until they do.
        while weighted_length(&text_of(&current)) > budget && current.len() > 1 {
            let last = current.pop();
            parts.push(text_of(&current));
            current = last.into_iter().collect();
        }
        if weighted_length(&text_of(&current)) > budget {
            let word = current.first().map(|a| a.word).unwrap_or_default();
            let mut pieces = hard_split(word, budget);
            let last = pieces.pop().unwrap_or_default();
            parts.extend(pieces);
            parts.push(last);
            current.clear();
        }
    }
    if !current.is_empty() {
        parts.push(text_of(&current));
    }
    parts.retain(|p| !p.trim().is_empty());
    parts
}

fn suffix(index: usize, total: usize) -> String {
    format!(" ({index}/{total})")
}

/// Splits `text` into the posts of a thread, each at most 280 weighted
/// characters: one post when it fits; otherwise parts cut between words
/// (preferring line and sentence ends), a word too long for a post cut
/// between graphemes, each part numbered " (i/n)". Nothing is dropped or
/// reordered. Empty text gives no parts.
pub fn split_thread(text: &str) -> Vec<String> {
    let text = text.trim();
    if text.is_empty() {
        return Vec::new();
    }
    if fits(text) {
        return vec![text.to_string()];
    }
    let atoms = atoms(text);
    // The numbering's width depends on the count; grow it until it holds.
    let mut digits = 1;
    loop {
        let widest = suffix(10usize.pow(digits) - 1, 10usize.pow(digits) - 1);
        let budget = X_MAX_WEIGHT - weighted_length(&widest);
        let parts = pack(&atoms, budget);
        if parts.len() < 10usize.pow(digits) {
            let total = parts.len();
            return parts
                .into_iter()
                .enumerate()
                .map(|(i, part)| format!("{part}{}", suffix(i + 1, total)))
                .collect();
        }
        digits += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn weights_follow_twitter_text() {
        assert_eq!(weighted_length("hello"), 5);
        assert_eq!(weighted_length("日本語"), 6, "CJK weighs 2");
        assert_eq!(weighted_length("한국어"), 6, "Hangul weighs 2");
        assert_eq!(weighted_length("café"), 4);
        assert_eq!(weighted_length("cafe\u{301}"), 4, "NFC first");
        assert_eq!(weighted_length("👍"), 2);
        assert_eq!(weighted_length("👍🏽"), 2, "one emoji with its modifier");
        assert_eq!(weighted_length("👩‍👩‍👧‍👦"), 2, "ZWJ sequence");
        assert_eq!(weighted_length("🇫🇷"), 2);
        assert_eq!(weighted_length("1\u{fe0f}\u{20e3}"), 2, "keycap");
        assert_eq!(
            weighted_length("#1 *"),
            4,
            "ASCII emoji components are text"
        );
        assert_eq!(
            weighted_length("\u{2014}\u{201c}"),
            2,
            "dashes and quotes weigh 1"
        );
        assert_eq!(
            weighted_length("\u{2026}"),
            2,
            "the ellipsis is outside the light ranges"
        );
        assert_eq!(weighted_length("𝐀"), 2, "outside the BMP");
        assert_eq!(
            weighted_length("see https://example.com/a/very/long/path/that/goes/on/and/on"),
            4 + 23
        );
        assert_eq!(
            weighted_length("example.com"),
            23,
            "URLs without a scheme too"
        );
        assert_eq!(
            weighted_length("x https://a.com."),
            2 + 23 + 1,
            "trailing dot is text"
        );
    }

    #[test]
    fn short_text_is_one_post() {
        assert_eq!(split_thread("  hello world  "), vec!["hello world"]);
        assert_eq!(split_thread(""), Vec::<String>::new());
        let exact = "a".repeat(280);
        assert_eq!(split_thread(&exact), vec![exact.clone()]);
        let cjk = "日".repeat(140);
        assert_eq!(split_thread(&cjk).len(), 1);
    }

    #[test]
    fn long_text_splits_between_words_with_numbering() {
        let text = (1..=120)
            .map(|i| format!("word{i}"))
            .collect::<Vec<_>>()
            .join(" ");
        let parts = split_thread(&text);
        assert!(parts.len() >= 3, "{parts:?}");
        let total = parts.len();
        for (i, part) in parts.iter().enumerate() {
            assert!(weighted_length(part) <= 280, "{part}");
            assert!(part.ends_with(&format!(" ({}/{total})", i + 1)), "{part}");
        }
        assert!(parts[0].starts_with("word1 word2"));
    }

    #[test]
    fn prefers_sentence_and_paragraph_ends() {
        let first = format!("{}.", "alpha ".repeat(30).trim_end());
        let second = "beta ".repeat(40).trim_end().to_string();
        let text = format!("{first}\n\n{second}");
        let parts = split_thread(&text);
        assert_eq!(parts[0], format!("{first} (1/{})", parts.len()));
    }

    #[test]
    fn cjk_text_without_spaces_is_cut_between_graphemes() {
        let text = "日本語の文章".repeat(60); // 360 chars, 720 weighted
        let parts = split_thread(&text);
        assert_eq!(parts.len(), 3, "{parts:?}");
        for part in &parts {
            assert!(weighted_length(part) <= 280);
        }
    }

    #[test]
    fn urls_count_23_in_parts() {
        let url = format!("https://example.com/{}", "x".repeat(300));
        let text = format!(
            "{} {url} {}",
            "a ".repeat(100).trim_end(),
            "b ".repeat(100).trim_end()
        );
        let parts = split_thread(&text);
        assert!(
            parts.iter().any(|p| p.contains(&url)),
            "the URL is never cut: {parts:?}"
        );
        for part in &parts {
            assert!(weighted_length(part) <= 280);
        }
    }

    fn strip_suffix(part: &str) -> &str {
        match part.rfind(" (") {
            Some(i) if part.ends_with(')') => &part[..i],
            _ => part,
        }
    }

    proptest! {
        #[test]
        fn every_part_fits_and_nothing_is_lost_or_reordered(
            words in proptest::collection::vec("[a-zé日👍🏽\u{301}.!]{1,40}|https://ex\\.com/[a-z]{0,80}", 0..150),
            seps in proptest::collection::vec("( |\n|\n\n|  )", 150),
        ) {
            let mut text = String::new();
            for (i, word) in words.iter().enumerate() {
                if i > 0 {
                    text.push_str(&seps[i]);
                }
                text.push_str(word);
            }
            let parts = split_thread(&text);
            if text.trim().is_empty() {
                prop_assert!(parts.is_empty());
            }
            for part in &parts {
                prop_assert!(weighted_length(part) <= X_MAX_WEIGHT, "{} weighs {}", part, weighted_length(part));
                prop_assert!(!part.trim().is_empty());
            }
            let original: String = text.chars().filter(|c| !c.is_whitespace()).collect();
            let rebuilt: String = if parts.len() == 1 {
                parts[0].chars().filter(|c| !c.is_whitespace()).collect()
            } else {
                parts.iter().flat_map(|p| strip_suffix(p).chars()).filter(|c| !c.is_whitespace()).collect()
            };
            prop_assert_eq!(original, rebuilt);
        }
    }
}
