//! The feed cursor: `<created_at as Unix microseconds>::<base64url(uri)>`.
//!
//! It names one item exactly: the full-precision `created_at` (post
//! timestamps carry microseconds; milliseconds would skip posts) plus the
//! post's at-uri, unique within a feed, matching the page order
//! `(created_at desc, uri desc)`. A page holds only items strictly after
//! the cursor, so no post is skipped or repeated, however many share a
//! timestamp and whatever is inserted meanwhile. The format is opaque to
//! clients but stable: a cursor handed out keeps working across releases.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, SecondsFormat};

/// The earliest instant a cursor may name (0001-01-01T00:00:00Z): post
/// timestamps are whatever the author's client wrote, so they can be old.
const MIN_MICROS: i64 = -62_135_596_800_000_000;
/// The latest (9999-12-31T23:59:59.999999Z).
const MAX_MICROS: i64 = 253_402_300_799_999_999;
/// A post uri is short; anything longer is not one of ours.
const MAX_URI_BYTES: usize = 2048;

/// One position in a feed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    /// The item's `created_at` in Unix microseconds.
    pub created_at_micros: i64,
    /// The item's at-uri.
    pub uri: String,
}

impl Cursor {
    /// The cursor text handed to clients.
    pub fn encode(&self) -> String {
        format!(
            "{}::{}",
            self.created_at_micros,
            URL_SAFE_NO_PAD.encode(self.uri.as_bytes())
        )
    }

    /// Reads a cursor a client sent back; `Err` says what is wrong with it.
    pub fn decode(text: &str) -> Result<Self, String> {
        let (micros, uri) = text
            .split_once("::")
            .ok_or_else(|| "malformed cursor".to_string())?;
        let created_at_micros: i64 = micros
            .parse()
            .map_err(|_| "malformed cursor: bad timestamp".to_string())?;
        if !(MIN_MICROS..=MAX_MICROS).contains(&created_at_micros) {
            return Err("malformed cursor: timestamp out of range".into());
        }
        let bytes = URL_SAFE_NO_PAD
            .decode(uri)
            .map_err(|_| "malformed cursor: bad uri encoding".to_string())?;
        if bytes.len() > MAX_URI_BYTES {
            return Err("malformed cursor: uri too long".into());
        }
        let uri = String::from_utf8(bytes)
            .map_err(|_| "malformed cursor: uri is not UTF-8".to_string())?;
        if !uri.starts_with("at://") {
            return Err("malformed cursor: not an at-uri".into());
        }
        Ok(Cursor {
            created_at_micros,
            uri,
        })
    }

    /// `created_at` as RFC 3339 with microseconds, the form SQL casts.
    pub fn created_at_rfc3339(&self) -> String {
        // In range by construction (decode checks it); the fallback keeps
        // this total for cursors built by hand.
        DateTime::from_timestamp_micros(self.created_at_micros)
            .unwrap_or_default()
            .to_rfc3339_opts(SecondsFormat::Micros, true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_keeps_microseconds() {
        let cursor = Cursor {
            created_at_micros: 1_767_225_605_000_005,
            uri: "at://did:plc:abc/app.bsky.feed.post/3kabc::x".into(),
        };
        let text = cursor.encode();
        assert!(text.starts_with("1767225605000005::"), "{text}");
        assert_eq!(Cursor::decode(&text).unwrap(), cursor);
        assert_eq!(cursor.created_at_rfc3339(), "2026-01-01T00:00:05.000005Z");
    }

    #[test]
    fn old_timestamps_are_fine() {
        let cursor = Cursor {
            created_at_micros: -1,
            uri: "at://did:plc:a/app.bsky.feed.post/1".into(),
        };
        let back = Cursor::decode(&cursor.encode()).unwrap();
        assert_eq!(back.created_at_rfc3339(), "1969-12-31T23:59:59.999999Z");
    }

    #[test]
    fn refuses_what_it_did_not_make() {
        for bad in [
            "",
            "123",
            "abc::YXQ6Ly94",
            "123::!!!",
            "123::aHR0cHM6Ly94",               // https://x
            "99999999999999999999::YXQ6Ly94",  // overflow
            "253402300800000000::YXQ6Ly94",    // year 10000
            "1700000000000000::YXQ6Ly94\u{0}", // trailing junk
            "1700000000000000::/w",            // not UTF-8
        ] {
            assert!(Cursor::decode(bad).is_err(), "{bad:?} accepted");
        }
        assert!(Cursor::decode("1700000000000000::YXQ6Ly94").is_ok());
    }
}
