//! Copies one of Replicate's output files into our store before Replicate
//! deletes it (an hour after the prediction ends). A body with a length is
//! piped chunk by chunk into one `PUT`; one without is read up to
//! [`MAX_UNSIZED_BYTES`] and put whole.

use std::time::{Duration, Instant};

use shared::object_store::{ObjectStore, StoreConfig, StoreFailure};
use shared::outbound::{OutboundRequest, SendFailure, describe_target};

/// The largest output file taken.
pub const MAX_OUTPUT_BYTES: u64 = 512 * 1024 * 1024;

/// The largest output without a `Content-Length` (held in memory).
pub const MAX_UNSIZED_BYTES: usize = 64 * 1024 * 1024;

/// Why a copy did not happen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CopyFailure {
    /// The file is gone for good (404/410/403: Replicate deleted it) or
    /// refused (too large): the generation cannot get its outputs.
    Gone(String),
    /// Worth another try (5xx, timeouts, the store unreachable).
    Retry(String),
}

/// A stored copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Copied {
    /// Key in the bucket.
    pub key: String,
    /// Bytes stored.
    pub bytes: u64,
    /// Its media type.
    pub content_type: String,
}

/// Copies `url` to `bucket/{key_stem}.{ext}`, the extension from the type
/// or the URL.
pub fn copy(
    store: &ObjectStore,
    bucket: &str,
    key_stem: &str,
    url: &str,
    timeout: Duration,
    transfer: Duration,
) -> Result<Copied, CopyFailure> {
    let deadline = Instant::now() + transfer;
    let mut answer = OutboundRequest::get(url)
        .timeout(timeout)
        .open()
        .map_err(source_failure)?;
    match answer.status {
        200 => {}
        403 | 404 | 410 => {
            return Err(CopyFailure::Gone(format!(
                "HTTP {} from {}: Replicate no longer has the file",
                answer.status, answer.target
            )));
        }
        status if status == 429 || status >= 500 => {
            return Err(CopyFailure::Retry(format!(
                "HTTP {status} from {}",
                answer.target
            )));
        }
        status => {
            return Err(CopyFailure::Gone(format!(
                "HTTP {status} from {}",
                answer.target
            )));
        }
    }
    let content_type = answer
        .header("content-type")
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase())
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "application/octet-stream".into());
    let key = format!("{key_stem}.{}", extension(&content_type, url));
    let length = answer
        .header("content-length")
        .and_then(|v| v.trim().parse::<u64>().ok());
    let store_failure = |e: StoreFailure| CopyFailure::Retry(e.to_string());
    match length {
        Some(length) if length > MAX_OUTPUT_BYTES => Err(CopyFailure::Gone(format!(
            "{length} bytes is over the {MAX_OUTPUT_BYTES} byte limit"
        ))),
        Some(length) => {
            let mut upload = store
                .put_streaming(bucket, &key, &content_type, length)
                .map_err(store_failure)?;
            let mut written = 0u64;
            while let Some(chunk) = answer.read_chunk(256 * 1024).map_err(source_failure)? {
                written += chunk.len() as u64;
                if written > length {
                    return Err(CopyFailure::Retry(
                        "the file host sent more than it announced".into(),
                    ));
                }
                if Instant::now() > deadline {
                    return Err(CopyFailure::Retry("the copy took too long".into()));
                }
                upload.write(&chunk).map_err(store_failure)?;
            }
            if written != length {
                // Dropping the upload aborts the PUT: no short object.
                return Err(CopyFailure::Retry(format!(
                    "the file host sent {written} of {length} bytes"
                )));
            }
            upload.finish().map_err(store_failure)?;
            Ok(Copied {
                key,
                bytes: written,
                content_type,
            })
        }
        None => {
            let bytes = answer
                .read_to_end(MAX_UNSIZED_BYTES)
                .map_err(source_failure)?;
            let size = bytes.len() as u64;
            store
                .put(bucket, &key, &content_type, bytes)
                .map_err(store_failure)?;
            Ok(Copied {
                key,
                bytes: size,
                content_type,
            })
        }
    }
}

/// The public URL of `bucket/key` (the `generations` bucket is public
/// read): path style `endpoint/bucket/key`, else `bucket.host/key`.
pub fn public_url(config: &StoreConfig, bucket: &str, key: &str) -> String {
    let endpoint = config.endpoint.as_str().trim_end_matches('/');
    if config.path_style {
        format!("{endpoint}/{bucket}/{key}")
    } else {
        let mut url = config.endpoint.clone();
        let host = format!("{bucket}.{}", url.host_str().unwrap_or_default());
        if url.set_host(Some(&host)).is_err() {
            return format!("{endpoint}/{bucket}/{key}");
        }
        format!("{}/{key}", url.as_str().trim_end_matches('/'))
    }
}

/// A file extension from the media type, else from the URL's last segment.
pub fn extension(content_type: &str, url: &str) -> String {
    let known = match content_type {
        "image/png" => Some("png"),
        "image/jpeg" | "image/jpg" => Some("jpg"),
        "image/webp" => Some("webp"),
        "image/gif" => Some("gif"),
        "video/mp4" => Some("mp4"),
        "video/webm" => Some("webm"),
        "audio/mpeg" => Some("mp3"),
        "audio/wav" | "audio/x-wav" => Some("wav"),
        "application/zip" => Some("zip"),
        "application/x-tar" => Some("tar"),
        _ => None,
    };
    if let Some(ext) = known {
        return ext.into();
    }
    let path = describe_target(url);
    path.rsplit('/')
        .next()
        .and_then(|name| name.rsplit_once('.'))
        .map(|(_, ext)| ext.to_ascii_lowercase())
        .filter(|ext| {
            (1..=5).contains(&ext.len()) && ext.chars().all(|c| c.is_ascii_alphanumeric())
        })
        .unwrap_or_else(|| "bin".into())
}

fn source_failure(e: SendFailure) -> CopyFailure {
    if e.is_transient() {
        CopyFailure::Retry(e.to_string())
    } else {
        CopyFailure::Gone(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extensions_from_type_then_url() {
        assert_eq!(extension("image/png", "https://x/a"), "png");
        assert_eq!(
            extension("application/octet-stream", "https://x/out-0.WEBP?sig=1"),
            "webp"
        );
        assert_eq!(
            extension("application/octet-stream", "https://x/noext"),
            "bin"
        );
    }

    #[test]
    fn public_urls_follow_the_addressing_style() {
        let mut config = StoreConfig {
            endpoint: url::Url::parse("http://127.0.0.1:9000").unwrap(),
            region: "us-east-1".into(),
            access_key: "a".into(),
            secret_key: "s".into(),
            path_style: true,
        };
        assert_eq!(
            public_url(&config, "generations", "u/g/0.png"),
            "http://127.0.0.1:9000/generations/u/g/0.png"
        );
        config.endpoint = url::Url::parse("https://s3.example.com").unwrap();
        config.path_style = false;
        assert_eq!(
            public_url(&config, "generations", "u/g/0.png"),
            "https://generations.s3.example.com/u/g/0.png"
        );
    }
}
