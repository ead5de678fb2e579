//! Post images. A scheduled post names them in its `media` column (seed
//! 000's schema has the column but no shape for it; this is the shape):
//!
//! ```json
//! [{"bucket": "generations", "path": "<user id>/img.png", "alt": "A red kite",
//!   "mime": "image/png", "width": 1200, "height": 800}]
//! ```
//!
//! or `{"ai_asset_id": "<ai_assets.id>", "alt": "..."}`, which `begin`
//! turns into the asset's bucket, path and MIME type. The bytes are read
//! with a SigV4-signed `GET` of `{bucket}/{path}` through
//! `shared::object_store` (the `media_store_*` variables), so buckets stay
//! private. At most 4 images, each with alt text, each at most 1,000,000
//! bytes (Bluesky's blob limit).

use serde_json::Value;
use shared::object_store::{ObjectStore, StoreFailure};

/// Bluesky's image count limit.
pub const MAX_IMAGES: usize = 4;
/// Bluesky's blob size limit for images.
pub const MAX_IMAGE_BYTES: usize = 1_000_000;

/// One image as the post names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    /// Bucket.
    pub bucket: String,
    /// Object path in the bucket.
    pub path: String,
    /// Alt text (required).
    pub alt: String,
    /// MIME type, when the post says.
    pub mime: Option<String>,
    /// Width and height, when known (`aspectRatio`).
    pub size: Option<(u64, u64)>,
}

/// An image read from the store.
#[derive(Debug, Clone)]
pub struct Image {
    /// Where it came from.
    pub reference: ImageRef,
    /// Its bytes.
    pub bytes: Vec<u8>,
    /// Its MIME type.
    pub mime: String,
}

/// Why an image could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageProblem {
    /// Will not change by trying again (missing, too big, not an image).
    Permanent(String),
    /// May work later (store unreachable, 5xx, timeout).
    Transient(String),
}

/// Checks the `media` list before any call: at most 4 images, each with a
/// bucket, a path and alt text.
pub fn check(media: &[Value]) -> Result<Vec<ImageRef>, String> {
    if media.len() > MAX_IMAGES {
        return Err(format!(
            "{} images; Bluesky allows {MAX_IMAGES}",
            media.len()
        ));
    }
    media
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let n = i + 1;
            let text = |key: &str| {
                item.get(key)
                    .and_then(Value::as_str)
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
            };
            let alt = text("alt").ok_or_else(|| {
                format!("image {n} has no alt text; every image needs a description")
            })?;
            let bucket = text("bucket")
                .ok_or_else(|| format!("image {n} names no storage bucket (or ai_asset_id)"))?;
            let path = text("path").ok_or_else(|| format!("image {n} names no storage path"))?;
            if path.split('/').any(|segment| segment == "..") || bucket.contains('/') {
                return Err(format!("image {n} has an invalid storage path"));
            }
            let size = match (
                item.get("width").and_then(Value::as_u64),
                item.get("height").and_then(Value::as_u64),
            ) {
                (Some(w), Some(h)) if w > 0 && h > 0 => Some((w, h)),
                _ => None,
            };
            Ok(ImageRef {
                bucket,
                path,
                alt,
                mime: text("mime"),
                size,
            })
        })
        .collect()
}

/// Reads one image from the store.
pub fn load(store: &ObjectStore, image: &ImageRef, n: usize) -> Result<Image, ImageProblem> {
    let reply = match store.get(&image.bucket, &image.path) {
        Ok(Some(reply)) => reply,
        Ok(None) => {
            return Err(ImageProblem::Permanent(format!(
                "image {n} ({}/{}) is not readable in storage: HTTP 404",
                image.bucket, image.path
            )));
        }
        Err(
            e @ StoreFailure::Status {
                status: 403 | 410, ..
            },
        ) => {
            return Err(ImageProblem::Permanent(format!(
                "image {n} ({}/{}) is not readable in storage: {e}",
                image.bucket, image.path
            )));
        }
        Err(e) if e.is_transient() => {
            return Err(ImageProblem::Transient(format!("image {n}: {e}")));
        }
        Err(e) => return Err(ImageProblem::Permanent(format!("image {n}: {e}"))),
    };
    if reply.body.len() > MAX_IMAGE_BYTES {
        return Err(ImageProblem::Permanent(format!(
            "image {n} is {} bytes; Bluesky allows {MAX_IMAGE_BYTES}",
            reply.body.len()
        )));
    }
    let mime = image
        .mime
        .clone()
        .or_else(|| {
            reply
                .header("content-type")
                .map(|v| v.split(';').next().unwrap_or(v).trim().to_string())
        })
        .unwrap_or_default();
    if !mime.starts_with("image/") {
        return Err(ImageProblem::Permanent(format!(
            "image {n} is not an image (type {:?})",
            mime
        )));
    }
    Ok(Image {
        reference: image.clone(),
        bytes: reply.body,
        mime,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn alt_text_and_location_are_required() {
        let ok = json!([{"bucket": "media", "path": "u/a.png", "alt": "A kite", "width": 10, "height": 5}]);
        let refs = check(ok.as_array().unwrap()).unwrap();
        assert_eq!(refs[0].size, Some((10, 5)));
        let no_alt = json!([{"bucket": "media", "path": "u/a.png", "alt": "  "}]);
        assert_eq!(
            check(no_alt.as_array().unwrap()).unwrap_err(),
            "image 1 has no alt text; every image needs a description"
        );
        let five = json!([{}, {}, {}, {}, {}]);
        assert_eq!(
            check(five.as_array().unwrap()).unwrap_err(),
            "5 images; Bluesky allows 4"
        );
        let escape = json!([{"bucket": "media", "path": "../secrets", "alt": "x"}]);
        assert!(check(escape.as_array().unwrap()).is_err());
    }
}
