//! Length limits checked before any platform call (`DESIGN.md`, Publishing
//! rules): text length in extended grapheme clusters against the platform's
//! limit, failing with the count in the message.

use unicode_segmentation::UnicodeSegmentation;

/// Bluesky's post limit in graphemes.
pub const BLUESKY_MAX_GRAPHEMES: usize = 300;
/// Bluesky's post limit in UTF-8 bytes.
pub const BLUESKY_MAX_BYTES: usize = 3000;
/// LinkedIn's commentary limit.
pub const LINKEDIN_MAX_GRAPHEMES: usize = 3000;

/// The number of extended grapheme clusters in `text`.
pub fn graphemes(text: &str) -> usize {
    text.graphemes(true).count()
}

/// Refuses text over `max` graphemes: "317 graphemes; Bluesky allows 300".
pub fn check_graphemes(text: &str, max: usize, platform: &str) -> Result<(), String> {
    let count = graphemes(text);
    if count > max {
        Err(format!("{count} graphemes; {platform} allows {max}"))
    } else {
        Ok(())
    }
}

/// Bluesky's two text limits: 300 graphemes and 3000 bytes.
pub fn check_bluesky(text: &str) -> Result<(), String> {
    check_graphemes(text, BLUESKY_MAX_GRAPHEMES, "Bluesky")?;
    if text.len() > BLUESKY_MAX_BYTES {
        return Err(format!(
            "{} bytes; Bluesky allows {BLUESKY_MAX_BYTES}",
            text.len()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_graphemes_not_chars_or_bytes() {
        assert_eq!(graphemes("abc"), 3);
        assert_eq!(graphemes("e\u{301}"), 1, "combining mark");
        assert_eq!(graphemes("👩‍👩‍👧‍👦"), 1, "ZWJ family");
        assert_eq!(graphemes("🇫🇷🇩🇪"), 2, "flags");
        assert_eq!(graphemes("日本語"), 3);
        assert_eq!(graphemes("👍🏽"), 1, "skin tone");
    }

    #[test]
    fn bluesky_refuses_301_and_says_how_many() {
        assert!(check_bluesky(&"a".repeat(300)).is_ok());
        assert_eq!(
            check_bluesky(&"a".repeat(317)).unwrap_err(),
            "317 graphemes; Bluesky allows 300"
        );
        // 300 family emoji are 300 graphemes but 7500 bytes.
        let families = "👩‍👩‍👧‍👦".repeat(300);
        assert_eq!(
            check_bluesky(&families).unwrap_err(),
            format!("{} bytes; Bluesky allows 3000", families.len())
        );
        // 300 combining-mark graphemes (2 chars each) are fine.
        assert!(check_bluesky(&"e\u{301}".repeat(300)).is_ok());
    }
}
