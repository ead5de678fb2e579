//! Pure rules of a download: which answers are media, the object's key and
//! extension, what the first bytes say, and what each HTTP status means.

use sha2::{Digest, Sha256};

/// The `media` bucket's size limit (seed 001): 50 MB.
pub const MAX_BYTES: u64 = 50 * 1024 * 1024;

/// Redirects followed before giving up.
pub const MAX_REDIRECTS: usize = 5;

/// The bucket media goes to.
pub const BUCKET: &str = "media";

/// The media type of a `Content-Type` value, lower-cased, without
/// parameters (`Image/JPEG; q=1` -> `image/jpeg`).
pub fn media_type(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// Whether the bucket takes this media type: `image/*`, `video/*`, `audio/*`.
pub fn is_allowed(media_type: &str) -> bool {
    ["image/", "video/", "audio/"]
        .iter()
        .any(|prefix| media_type.starts_with(prefix) && media_type.len() > prefix.len())
}

/// The file extension for a media type: the common ones by name, otherwise
/// the subtype reduced to letters and digits (`image/x-icon` -> `xicon`).
pub fn extension(media_type: &str) -> String {
    let known = match media_type {
        "image/jpeg" | "image/jpg" | "image/pjpeg" => "jpg",
        "image/png" => "png",
        "image/gif" => "gif",
        "image/webp" => "webp",
        "image/heic" => "heic",
        "image/avif" => "avif",
        "image/svg+xml" => "svg",
        "video/mp4" => "mp4",
        "video/quicktime" => "mov",
        "video/webm" => "webm",
        "audio/mpeg" => "mp3",
        "audio/mp4" | "audio/x-m4a" | "audio/aac" => "m4a",
        "audio/ogg" => "ogg",
        "audio/wav" | "audio/x-wav" => "wav",
        _ => "",
    };
    if !known.is_empty() {
        return known.to_string();
    }
    let subtype: String = media_type
        .split_once('/')
        .map(|(_, s)| s)
        .unwrap_or("")
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(10)
        .collect();
    if subtype.is_empty() {
        "bin".to_string()
    } else {
        subtype
    }
}

/// `{user_id}/{platform}/{sha256(original_url)}.{ext}`: one object per URL
/// and user, whatever the number of posts that share it.
pub fn object_key(user_id: &str, platform: &str, original_url: &str, ext: &str) -> String {
    let digest = hex::encode(Sha256::digest(original_url.as_bytes()));
    format!("{user_id}/{platform}/{digest}.{ext}")
}

/// The top-level type (`image`, `video`, `audio`) the first bytes show, or
/// `Some("text")` for markup, `None` when the bytes are not recognised
/// (the declared type is then trusted).
pub fn sniff(head: &[u8]) -> Option<&'static str> {
    let starts = |magic: &[u8]| head.starts_with(magic);
    if starts(b"\xFF\xD8\xFF")
        || starts(b"\x89PNG\r\n\x1a\n")
        || starts(b"GIF87a")
        || starts(b"GIF89a")
        || (starts(b"RIFF") && head.get(8..12) == Some(b"WEBP"))
    {
        return Some("image");
    }
    if head.get(4..8) == Some(b"ftyp") {
        // ISO base media: the brand tells images (HEIC/AVIF) from video/audio.
        return match head.get(8..12) {
            Some(b"heic" | b"heix" | b"mif1" | b"avif" | b"msf1") => Some("image"),
            Some(b"M4A " | b"M4B ") => Some("audio"),
            _ => Some("video"),
        };
    }
    if starts(b"\x1A\x45\xDF\xA3") || (starts(b"RIFF") && head.get(8..12) == Some(b"AVI ")) {
        return Some("video");
    }
    if starts(b"ID3")
        || starts(b"OggS")
        || starts(b"fLaC")
        || (starts(b"RIFF") && head.get(8..12) == Some(b"WAVE"))
    {
        return Some("audio");
    }
    let text = String::from_utf8_lossy(&head[..head.len().min(64)]).to_ascii_lowercase();
    let trimmed = text.trim_start();
    if trimmed.starts_with("<!doctype html")
        || trimmed.starts_with("<html")
        || trimmed.starts_with("<?xml") && !trimmed.contains("svg")
    {
        return Some("text");
    }
    None
}

/// Whether the first bytes contradict the declared media type (an HTML
/// error page served as `image/jpeg`, a video served as an image).
/// Containers shared by audio and video (MP4, WebM, Ogg) are not held to
/// one or the other.
pub fn contradicts(media_type: &str, head: &[u8]) -> Option<String> {
    let declared = media_type.split('/').next().unwrap_or("");
    let seen = sniff(head)?;
    let compatible = seen == declared
        || (matches!(seen, "video" | "audio") && matches!(declared, "video" | "audio"));
    if compatible {
        None
    } else {
        Some(format!(
            "the bytes are {seen}, not the declared {media_type}"
        ))
    }
}

/// What an HTTP status from the media host means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusClass {
    /// 2xx: the media.
    Media,
    /// 301/302/303/307/308: follow `Location`.
    Redirect,
    /// 404/410: the media is gone; no retry.
    Gone,
    /// 408, 425, 429, 5xx: try again later.
    Transient,
    /// Any other 4xx (401, 403, ...): refused; retrying will not help.
    Refused,
}

/// Classifies a status.
pub fn classify(status: u16) -> StatusClass {
    match status {
        200..=299 => StatusClass::Media,
        301 | 302 | 303 | 307 | 308 => StatusClass::Redirect,
        404 | 410 => StatusClass::Gone,
        408 | 425 | 429 | 500..=599 => StatusClass::Transient,
        _ => StatusClass::Refused,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_image_video_and_audio_are_taken() {
        assert!(is_allowed(&media_type("Image/JPEG; charset=x")));
        assert!(is_allowed("video/mp4") && is_allowed("audio/mpeg"));
        assert!(
            !is_allowed("text/html")
                && !is_allowed("image/")
                && !is_allowed("application/octet-stream")
        );
    }

    #[test]
    fn keys_hash_the_original_url_and_carry_the_type_extension() {
        let key = object_key(
            "u1",
            "instagram",
            "https://cdn.example/a.jpg",
            &extension("image/jpeg"),
        );
        assert_eq!(
            key,
            format!(
                "u1/instagram/{}.jpg",
                hex::encode(Sha256::digest(b"https://cdn.example/a.jpg"))
            )
        );
        assert_eq!(extension("video/quicktime"), "mov");
        assert_eq!(extension("image/x-icon"), "xicon");
        assert_eq!(extension("audio/"), "bin");
    }

    #[test]
    fn magic_bytes_catch_pages_dressed_as_media() {
        assert_eq!(contradicts("image/jpeg", b"\xFF\xD8\xFF\xE0rest"), None);
        assert!(contradicts("image/jpeg", b"<!DOCTYPE html><html>").is_some());
        assert!(contradicts("image/png", b"\x00\x00\x00\x18ftypmp42").is_some());
        assert_eq!(contradicts("audio/mp4", b"\x00\x00\x00\x18ftypmp42"), None);
        assert_eq!(contradicts("image/heic", b"\x00\x00\x00\x18ftypheic"), None);
        assert_eq!(contradicts("video/mp4", b"unknown bytes"), None);
    }

    #[test]
    fn statuses_are_classified() {
        assert_eq!(classify(200), StatusClass::Media);
        assert_eq!(classify(302), StatusClass::Redirect);
        assert_eq!(classify(404), StatusClass::Gone);
        assert_eq!(classify(410), StatusClass::Gone);
        assert_eq!(classify(503), StatusClass::Transient);
        assert_eq!(classify(429), StatusClass::Transient);
        assert_eq!(classify(403), StatusClass::Refused);
    }
}
