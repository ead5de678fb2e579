//! The object store: one client for any S3-compatible store (AWS S3,
//! Cloudflare R2, MinIO, Garage, Supabase Storage's S3 endpoint, the local
//! `s3s-fs`), over [`crate::outbound`] so every call has timeouts.
//!
//! Requests are signed with AWS SigV4 by `rusty-s3`, a sans-IO crate: it
//! turns an action (GET, PUT, HEAD, multipart steps) into a presigned URL
//! and we send that URL ourselves. Presigned (query-string) signing means
//! the payload is `UNSIGNED-PAYLOAD`, so a body can be streamed without
//! hashing it first, and a presigned GET doubles as the short-lived link a
//! user is given for their own media.
//!
//! Variables (all components that touch the store map the same ones):
//! `media_store_url` (endpoint), `media_store_region`,
//! `media_store_access_key`, `media_store_secret_key` (secret),
//! `media_store_path_style` (`true`: `endpoint/bucket/key`, as MinIO and
//! s3s-fs want; `false`: `bucket.endpoint/key`, AWS's virtual-host style).
//! Errors never carry the signature, the keys or the query string.

use std::time::Duration;

use rusty_s3::{Bucket, Credentials, S3Action, UrlStyle};

use crate::config;
use crate::error::{Error, Result};
use crate::outbound::{OutboundRequest, Reply, SendFailure, Upload};

/// How long a URL signed for the component's own request stays valid: long
/// enough for a slow 50 MB transfer to start, short enough to be useless if
/// it leaked.
const REQUEST_SIGNATURE_TTL: Duration = Duration::from_secs(15 * 60);

/// The store's connection settings.
#[derive(Clone)]
pub struct StoreConfig {
    /// The endpoint, e.g. `https://s3.eu-west-1.amazonaws.com`.
    pub endpoint: url::Url,
    /// The region in the signature (`us-east-1` when not set; R2 wants `auto`).
    pub region: String,
    /// Access key id.
    pub access_key: String,
    /// Secret access key.
    pub secret_key: String,
    /// Path-style (`endpoint/bucket/key`) rather than virtual-host addressing.
    pub path_style: bool,
}

impl std::fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreConfig")
            .field(
                "endpoint",
                &crate::outbound::describe_target(self.endpoint.as_str()),
            )
            .field("region", &self.region)
            .field("path_style", &self.path_style)
            .finish_non_exhaustive()
    }
}

impl StoreConfig {
    /// Reads the `media_store_*` variables.
    pub fn from_variables() -> Result<Self> {
        let endpoint = config::base_url("media_store_url")?;
        let endpoint = url::Url::parse(&endpoint)
            .map_err(|e| Error::Config(format!("variable `media_store_url` is not a URL: {e}")))?;
        let path_style = match config::optional("media_store_path_style").as_deref() {
            None | Some("true") => true,
            Some("false") => false,
            Some(_) => {
                return Err(Error::Config(
                    "variable `media_store_path_style` must be true or false".into(),
                ));
            }
        };
        Ok(StoreConfig {
            endpoint,
            region: config::optional("media_store_region").unwrap_or_else(|| "us-east-1".into()),
            access_key: config::maybe_empty("media_store_access_key")?,
            secret_key: config::maybe_empty("media_store_secret_key")?,
            path_style,
        })
    }
}

/// Why a store call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreFailure {
    /// No answer (down, timeout): try again later.
    #[error("object store unreachable: {0}")]
    Unreachable(SendFailure),
    /// The store answered with an error status (its S3 error code, if any).
    #[error("object store answered HTTP {status} ({code}) for {what}")]
    Status {
        /// HTTP status.
        status: u16,
        /// S3 error code from the XML body (`SignatureDoesNotMatch`, ...).
        code: String,
        /// What was asked (`PUT media/<key>`), without credentials.
        what: String,
    },
    /// The request could not be made (bad bucket name, bad settings).
    #[error("object store request invalid: {0}")]
    Invalid(String),
}

impl StoreFailure {
    /// Whether trying again later can succeed: no answer, 5xx, 429, and a
    /// store clock/expiry refusal (`RequestTimeTooSkewed`); not a refused
    /// signature or a missing bucket.
    pub fn is_transient(&self) -> bool {
        match self {
            StoreFailure::Unreachable(e) => e.is_transient(),
            StoreFailure::Status { status, .. } => *status >= 500 || *status == 429,
            StoreFailure::Invalid(_) => false,
        }
    }
}

/// What HEAD tells about an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    /// Size in bytes.
    pub size: u64,
    /// Its content type, when the store keeps one.
    pub content_type: Option<String>,
}

/// A signed client for one store.
#[derive(Debug, Clone)]
pub struct ObjectStore {
    config: StoreConfig,
    timeout: Duration,
}

impl ObjectStore {
    /// A client for `config`; every request uses `timeout` for connecting,
    /// the first byte and between bytes.
    pub fn new(config: StoreConfig, timeout: Duration) -> Self {
        ObjectStore { config, timeout }
    }

    fn bucket(&self, name: &str) -> std::result::Result<Bucket, StoreFailure> {
        let style = if self.config.path_style {
            UrlStyle::Path
        } else {
            UrlStyle::VirtualHost
        };
        Bucket::new(
            self.config.endpoint.clone(),
            style,
            name.to_string(),
            self.config.region.clone(),
        )
        .map_err(|e| StoreFailure::Invalid(format!("bucket {name}: {e}")))
    }

    fn credentials(&self) -> Credentials {
        Credentials::new(
            self.config.access_key.clone(),
            self.config.secret_key.clone(),
        )
    }

    /// A presigned `GET` URL for `bucket/key`, valid for `expires_in`.
    pub fn presign_get(
        &self,
        bucket: &str,
        key: &str,
        expires_in: Duration,
    ) -> std::result::Result<String, StoreFailure> {
        let b = self.bucket(bucket)?;
        let credentials = self.credentials();
        Ok(b.get_object(Some(&credentials), key)
            .sign(expires_in)
            .to_string())
    }

    /// `HEAD bucket/key`: `None` when there is no such object.
    pub fn head(
        &self,
        bucket: &str,
        key: &str,
    ) -> std::result::Result<Option<ObjectInfo>, StoreFailure> {
        let b = self.bucket(bucket)?;
        let credentials = self.credentials();
        let url = b
            .head_object(Some(&credentials), key)
            .sign(REQUEST_SIGNATURE_TTL);
        let reply = self.send(OutboundRequest::new("HEAD", url.as_str()))?;
        match reply.status {
            200 => Ok(Some(ObjectInfo {
                size: reply
                    .header("content-length")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0),
                content_type: reply.header("content-type").map(str::to_string),
            })),
            404 => Ok(None),
            _ => Err(status_failure(&reply, &format!("HEAD {bucket}/{key}"))),
        }
    }

    /// `GET bucket/key`, the whole object in memory (small objects: post
    /// images). `Ok(None)` when there is no such object.
    pub fn get(&self, bucket: &str, key: &str) -> std::result::Result<Option<Reply>, StoreFailure> {
        let b = self.bucket(bucket)?;
        let credentials = self.credentials();
        let url = b
            .get_object(Some(&credentials), key)
            .sign(REQUEST_SIGNATURE_TTL);
        let reply = self.send(OutboundRequest::get(url.as_str()))?;
        match reply.status {
            200 => Ok(Some(reply)),
            404 => Ok(None),
            _ => Err(status_failure(&reply, &format!("GET {bucket}/{key}"))),
        }
    }

    /// `PUT bucket/key` with a body held in memory.
    pub fn put(
        &self,
        bucket: &str,
        key: &str,
        content_type: &str,
        bytes: Vec<u8>,
    ) -> std::result::Result<(), StoreFailure> {
        let url = self.put_url(bucket, key)?;
        let reply = self.send(OutboundRequest::put(&url).body(content_type, bytes))?;
        expect_success(&reply, &format!("PUT {bucket}/{key}"))
    }

    /// Starts `PUT bucket/key` of exactly `length` bytes that the caller
    /// streams with [`ObjectUpload::write`]: memory stays at one chunk
    /// whatever the size.
    pub fn put_streaming(
        &self,
        bucket: &str,
        key: &str,
        content_type: &str,
        length: u64,
    ) -> std::result::Result<ObjectUpload, StoreFailure> {
        let url = self.put_url(bucket, key)?;
        let upload = OutboundRequest::put(&url)
            .header("content-type", content_type)
            .timeout(self.timeout)
            .upload(length)
            .map_err(StoreFailure::Unreachable)?;
        Ok(ObjectUpload {
            upload,
            what: format!("PUT {bucket}/{key}"),
        })
    }

    /// Starts a multipart upload (for bodies of unknown length): returns
    /// the upload id.
    pub fn create_multipart(
        &self,
        bucket: &str,
        key: &str,
        content_type: &str,
    ) -> std::result::Result<String, StoreFailure> {
        let b = self.bucket(bucket)?;
        let credentials = self.credentials();
        let url = b
            .create_multipart_upload(Some(&credentials), key)
            .sign(REQUEST_SIGNATURE_TTL);
        let what = format!("CreateMultipartUpload {bucket}/{key}");
        let reply =
            self.send(OutboundRequest::post(url.as_str()).header("content-type", content_type))?;
        expect_success(&reply, &what)?;
        let parsed = rusty_s3::actions::CreateMultipartUpload::parse_response(&reply.text())
            .map_err(|e| StoreFailure::Invalid(format!("{what}: unreadable answer: {e}")))?;
        Ok(parsed.upload_id().to_string())
    }

    /// Uploads part `number` (from 1) of a multipart upload; returns its ETag.
    pub fn upload_part(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        number: u16,
        bytes: Vec<u8>,
    ) -> std::result::Result<String, StoreFailure> {
        let b = self.bucket(bucket)?;
        let credentials = self.credentials();
        let url = b
            .upload_part(Some(&credentials), key, number, upload_id)
            .sign(REQUEST_SIGNATURE_TTL);
        let what = format!("UploadPart {number} {bucket}/{key}");
        let reply =
            self.send(OutboundRequest::put(url.as_str()).body("application/octet-stream", bytes))?;
        expect_success(&reply, &what)?;
        reply
            .header("etag")
            .map(str::to_string)
            .ok_or_else(|| StoreFailure::Invalid(format!("{what}: no ETag in the answer")))
    }

    /// Completes a multipart upload from its parts' ETags, in order.
    pub fn complete_multipart(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        etags: &[String],
    ) -> std::result::Result<(), StoreFailure> {
        let b = self.bucket(bucket)?;
        let credentials = self.credentials();
        let action = b.complete_multipart_upload(
            Some(&credentials),
            key,
            upload_id,
            etags.iter().map(String::as_str),
        );
        let url = action.sign(REQUEST_SIGNATURE_TTL);
        let body = action.body();
        let what = format!("CompleteMultipartUpload {bucket}/{key}");
        let reply = self
            .send(OutboundRequest::post(url.as_str()).body("application/xml", body.into_bytes()))?;
        expect_success(&reply, &what)?;
        // S3 may answer 200 with an error document when completion fails late.
        if reply.text().contains("<Error>") {
            return Err(StoreFailure::Status {
                status: 500,
                code: s3_error_code(&reply.text()),
                what,
            });
        }
        Ok(())
    }

    /// Abandons a multipart upload (best effort: the store also expires them).
    pub fn abort_multipart(&self, bucket: &str, key: &str, upload_id: &str) {
        let Ok(b) = self.bucket(bucket) else {
            return;
        };
        let credentials = self.credentials();
        let url = b
            .abort_multipart_upload(Some(&credentials), key, upload_id)
            .sign(REQUEST_SIGNATURE_TTL);
        drop(self.send(OutboundRequest::new("DELETE", url.as_str())));
    }

    fn put_url(&self, bucket: &str, key: &str) -> std::result::Result<String, StoreFailure> {
        let b = self.bucket(bucket)?;
        let credentials = self.credentials();
        Ok(b.put_object(Some(&credentials), key)
            .sign(REQUEST_SIGNATURE_TTL)
            .to_string())
    }

    fn send(&self, request: OutboundRequest) -> std::result::Result<Reply, StoreFailure> {
        request
            .timeout(self.timeout)
            .send()
            .map_err(StoreFailure::Unreachable)
    }
}

/// A streamed `PUT` in progress ([`ObjectStore::put_streaming`]).
pub struct ObjectUpload {
    upload: Upload,
    what: String,
}

impl ObjectUpload {
    /// Writes the next piece of the object.
    pub fn write(&mut self, bytes: &[u8]) -> std::result::Result<(), StoreFailure> {
        self.upload.write(bytes).map_err(StoreFailure::Unreachable)
    }

    /// Ends the object and checks the store's answer.
    pub fn finish(self) -> std::result::Result<(), StoreFailure> {
        let reply = self.upload.finish().map_err(StoreFailure::Unreachable)?;
        expect_success(&reply, &self.what)
    }
}

fn expect_success(reply: &Reply, what: &str) -> std::result::Result<(), StoreFailure> {
    if reply.is_success() {
        Ok(())
    } else {
        Err(status_failure(reply, what))
    }
}

fn status_failure(reply: &Reply, what: &str) -> StoreFailure {
    StoreFailure::Status {
        status: reply.status,
        code: s3_error_code(&reply.text()),
        what: what.to_string(),
    }
}

/// The `<Code>` of an S3 error document (the message may echo request
/// details, so only the code is kept).
fn s3_error_code(body: &str) -> String {
    body.split_once("<Code>")
        .and_then(|(_, rest)| rest.split_once("</Code>"))
        .map(|(code, _)| code.chars().take(64).collect())
        .unwrap_or_else(|| "no error code".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(path_style: bool) -> ObjectStore {
        ObjectStore::new(
            StoreConfig {
                endpoint: url::Url::parse("http://127.0.0.1:9000").unwrap(),
                region: "us-east-1".into(),
                access_key: "AKID".into(),
                secret_key: "very-secret-key".into(),
                path_style,
            },
            Duration::from_secs(5),
        )
    }

    #[test]
    fn presigned_urls_are_path_style_signed_and_never_show_the_secret() {
        let url = store(true)
            .presign_get("media", "u/bluesky/abc.jpg", Duration::from_secs(60))
            .unwrap();
        assert!(
            url.starts_with("http://127.0.0.1:9000/media/u/bluesky/abc.jpg?"),
            "{url}"
        );
        assert!(url.contains("X-Amz-Signature="), "{url}");
        assert!(url.contains("X-Amz-Credential=AKID%2F"), "{url}");
        assert!(url.contains("X-Amz-Expires=60"), "{url}");
        assert!(!url.contains("very-secret-key"));
    }

    #[test]
    fn virtual_host_style_puts_the_bucket_in_the_host() {
        let s = ObjectStore::new(
            StoreConfig {
                endpoint: url::Url::parse("https://s3.example.com").unwrap(),
                path_style: false,
                ..store(false).config
            },
            Duration::from_secs(5),
        );
        let url = s
            .presign_get("media", "k.png", Duration::from_secs(60))
            .unwrap();
        assert!(
            url.starts_with("https://media.s3.example.com/k.png?"),
            "{url}"
        );
    }

    #[test]
    fn debug_output_hides_the_keys() {
        let text = format!("{:?}", store(true));
        assert!(
            !text.contains("very-secret-key") && !text.contains("AKID"),
            "{text}"
        );
    }

    #[test]
    fn error_codes_come_from_the_xml_and_classify_retries() {
        assert_eq!(
            s3_error_code("<Error><Code>SignatureDoesNotMatch</Code><Message>x</Message></Error>"),
            "SignatureDoesNotMatch"
        );
        let refused = StoreFailure::Status {
            status: 403,
            code: "SignatureDoesNotMatch".into(),
            what: "PUT".into(),
        };
        assert!(!refused.is_transient());
        let down = StoreFailure::Status {
            status: 503,
            code: "SlowDown".into(),
            what: "PUT".into(),
        };
        assert!(down.is_transient());
    }
}
