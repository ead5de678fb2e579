//! A loopback fake of Bluesky: one base URL serves a PDS (sessions, repo
//! writes, blobs), an AppView (author feeds, posts, profiles) and a PLC
//! directory (`GET /did:plc:...` -> DID document), following
//! `shared/PLATFORMS.md` "Bluesky (AT Protocol)" field by field, including
//! its quirks: a duplicate post `rkey` is a 500 `InternalServerError` (settle
//! it with `getRecord`), `createSession` is limited to 30 per 5 minutes per
//! account, writes cost points out of 5,000 per hour, `putRecord` of an
//! identical record has no `commit`, `listRecords` ends with an empty page
//! without a cursor, the PDS checks post records (graphemes, bytes, DIDs,
//! URIs, `langs`, time zones) but not facet byte ranges.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use outpost_test_kit::fakes::bluesky::{FakeBluesky, Fault, SeedPost};
//! let bsky = FakeBluesky::start().await?;
//! let alice = bsky.add_account("alice.test", "app-pass-1234");
//! bsky.add_posts(&alice.did, 250, |i| SeedPost::new(format!("post {i}")));
//! bsky.inject("com.atproto.repo.createRecord", Fault::CommitThen500);
//! // point `bluesky_pds_url` and `bluesky_appview_url` at bsky.url()
//! # Ok(()) }
//! ```
//!
//! Every method counts its calls ([`FakeBluesky::calls`], keyed by NSID;
//! the PLC directory is `"plc"`, the image CDN `"img"`) and takes faults
//! from a queue per method ([`FakeBluesky::inject`]), consumed one per call.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use k256::ecdsa::signature::Signer;
use k256::ecdsa::{Signature, SigningKey, VerifyingKey};
use rand::RngCore;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use unicode_segmentation::UnicodeSegmentation;

use crate::KitError;
use crate::fake::{FakeServer, RecordedRequest, ResponseFuture};

/// Re-exported so tests can check signatures and keys the fake hands out
/// (`k256::ecdsa::VerifyingKey`, `bs58` for `publicKeyMultibase`) without
/// depending on the crates themselves.
pub use {bs58, k256};

/// The post collection, whose record keys must be TIDs.
pub const POST: &str = "app.bsky.feed.post";
/// The repost collection (a repost shows in the reposter's author feed).
pub const REPOST: &str = "app.bsky.feed.repost";

/// The TID alphabet ("base32-sortable").
const TID_CHARS: &[u8; 32] = b"234567abcdefghijklmnopqrstuvwxyz";
/// `createSession` budget per account: 30 per 5 minutes, 300 per day.
const SESSION_LIMIT_5MIN: usize = 30;
const SESSION_LIMIT_DAY: usize = 300;
/// Write points per account: 5,000 per hour, 35,000 per day.
const POINTS_PER_HOUR: u32 = 5_000;
const POINTS_PER_DAY: u32 = 35_000;
/// Largest blob `uploadBlob` takes.
const MAX_BLOB_BYTES: usize = 1_000_000;
/// Access tokens live 2 hours, refresh tokens 90 days; a used refresh token
/// keeps working for a 2-hour grace window.
const ACCESS_LIFETIME: TimeDelta = TimeDelta::hours(2);
const REFRESH_LIFETIME: TimeDelta = TimeDelta::days(90);
const REFRESH_GRACE: TimeDelta = TimeDelta::hours(2);

type Answer = http::Response<Bytes>;
/// An answer that refuses the call (boxed: answers are large).
type Refused = Box<Answer>;

/// A fault to answer a method's next call with (see [`FakeBluesky::inject`]).
#[derive(Debug, Clone)]
pub enum Fault {
    /// Answer this XRPC error instead of doing anything.
    Status {
        /// HTTP status.
        status: u16,
        /// XRPC `error` name (e.g. `InternalServerError`).
        error: String,
        /// XRPC `message`.
        message: String,
    },
    /// Do the call (a write is stored), then answer 500
    /// `InternalServerError` "Internal Server Error": the response is lost
    /// but the record exists, so `getRecord` finds it.
    CommitThen500,
    /// Do the call at once (a write is stored now), then hold the answer for
    /// this long: a client with a shorter timeout gives up, yet the record
    /// is already there. Other requests are served meanwhile.
    Hang(Duration),
    /// Wait this long, then do the call (a write is stored only then, even
    /// if the client has given up) and answer normally: the lost-lease case,
    /// where `getRecord` first says `RecordNotFound` and the record appears
    /// later.
    HangThenCommit(Duration),
    /// 429 `RateLimitExceeded` with `RateLimit-Limit: 3000`, `-Remaining: 0`,
    /// `-Reset` (now + `retry_after_secs`, Unix seconds), `-Policy:
    /// 3000;w=300` and `Retry-After: retry_after_secs`; nothing done.
    RateLimited {
        /// Seconds in `Retry-After` (and until `RateLimit-Reset`).
        retry_after_secs: u64,
    },
}

impl Fault {
    /// A [`Fault::Status`] from borrowed strings.
    pub fn status(status: u16, error: &str, message: &str) -> Self {
        Self::Status {
            status,
            error: error.into(),
            message: message.into(),
        }
    }
}

/// An account on the fake PDS.
#[derive(Debug, Clone)]
pub struct FakeAccount {
    /// `did:plc:` + 24 base32 characters derived from the handle.
    pub did: String,
    /// The handle (`alice.test`).
    pub handle: String,
    /// The app password `createSession` accepts.
    pub app_password: String,
    /// Display name shown in post views (the handle's first label).
    pub display_name: String,
    /// The account's `#atproto` signing key, as in its DID document.
    pub verifying_key: VerifyingKey,
    /// `z` + base58btc(`[0xe7, 0x01]` + 33-byte compressed key).
    pub public_key_multibase: String,
}

/// An image to attach to a seeded post (stored as a blob).
#[derive(Debug, Clone)]
pub struct SeedImage {
    /// Alt text.
    pub alt: String,
    /// MIME type of `bytes`.
    pub mime_type: String,
    /// The image bytes (served by `com.atproto.sync.getBlob` and by the
    /// fake CDN URLs in the post view).
    pub bytes: Vec<u8>,
    /// `aspectRatio` {width, height}, when known.
    pub aspect_ratio: Option<(u32, u32)>,
}

impl SeedImage {
    /// A small fake JPEG with alt text.
    pub fn jpeg(alt: &str) -> Self {
        let mut bytes = vec![0xff, 0xd8, 0xff, 0xe0];
        bytes.extend_from_slice(alt.as_bytes());
        bytes.extend_from_slice(&[0xff, 0xd9]);
        Self {
            alt: alt.into(),
            mime_type: "image/jpeg".into(),
            bytes,
            aspect_ratio: Some((1200, 800)),
        }
    }
}

/// A link card (`app.bsky.embed.external`) for a seeded post.
#[derive(Debug, Clone, Default)]
pub struct SeedExternal {
    /// The link.
    pub uri: String,
    /// Card title.
    pub title: String,
    /// Card description.
    pub description: String,
}

/// A post to seed in an author's repo and feed ([`FakeBluesky::add_post`]).
#[derive(Debug, Clone, Default)]
pub struct SeedPost {
    /// `text`.
    pub text: String,
    /// `createdAt` verbatim; `None` = the fake clock now, with microseconds,
    /// one microsecond apart per seeded post so order is stable.
    pub created_at: Option<String>,
    /// When the AppView indexed it (`indexedAt`); `None` = `createdAt`.
    pub indexed_at: Option<String>,
    /// `langs` (left out when empty).
    pub langs: Vec<String>,
    /// `facets` verbatim.
    pub facets: Option<Value>,
    /// Images (`app.bsky.embed.images`).
    pub images: Vec<SeedImage>,
    /// A link card (`app.bsky.embed.external`), used when `images` is empty.
    pub external: Option<SeedExternal>,
    /// The at-uri of the post this one replies to (`reply` {root, parent}).
    pub reply_to: Option<String>,
    /// The record key; `None` = a TID from the fake clock.
    pub rkey: Option<String>,
    /// `likeCount`.
    pub likes: i64,
    /// `repostCount`.
    pub reposts: i64,
    /// `replyCount`.
    pub replies: i64,
    /// `quoteCount`.
    pub quotes: i64,
}

impl SeedPost {
    /// A plain text post.
    pub fn new(text: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            ..Self::default()
        }
    }

    /// Sets `createdAt`.
    pub fn created_at(mut self, at: impl Into<String>) -> Self {
        self.created_at = Some(at.into());
        self
    }

    /// Sets `langs`.
    pub fn langs(mut self, langs: &[&str]) -> Self {
        self.langs = langs.iter().map(|l| l.to_string()).collect();
        self
    }

    /// Adds an image.
    pub fn image(mut self, image: SeedImage) -> Self {
        self.images.push(image);
        self
    }

    /// Sets like, repost and reply counts.
    pub fn counts(mut self, likes: i64, reposts: i64, replies: i64) -> Self {
        self.likes = likes;
        self.reposts = reposts;
        self.replies = replies;
        self
    }

    /// Makes it a reply to `parent_uri`.
    pub fn reply_to(mut self, parent_uri: impl Into<String>) -> Self {
        self.reply_to = Some(parent_uri.into());
        self
    }
}

/// A record in a repo, as written.
#[derive(Debug, Clone)]
pub struct StoredRecord {
    /// Repo DID.
    pub did: String,
    /// Collection NSID.
    pub collection: String,
    /// Record key.
    pub rkey: String,
    /// `at://did/collection/rkey`.
    pub uri: String,
    /// `bafyrei...` of the canonical record JSON.
    pub cid: String,
    /// The record.
    pub value: Value,
    /// Creation order across the whole fake (a replace keeps it).
    pub seq: u64,
    /// When the fake stored it (RFC 3339, microseconds).
    pub indexed_at: String,
}

/// A blob uploaded (or seeded).
#[derive(Debug, Clone)]
pub struct StoredBlob {
    /// Uploader DID.
    pub did: String,
    /// `bafkrei...` of the bytes.
    pub cid: String,
    /// `Content-Type` given.
    pub mime_type: String,
    /// Byte count.
    pub size: usize,
    /// The bytes.
    pub bytes: Bytes,
}

/// The fake Bluesky: cheap to clone; the server stops when the last clone
/// is dropped.
#[derive(Clone)]
pub struct FakeBluesky {
    inner: Arc<Inner>,
    server: Arc<FakeServer>,
}

struct Inner {
    state: Mutex<State>,
    /// The server's base URL (known once it listens).
    base: OnceLock<String>,
}

struct Account {
    did: String,
    handle: String,
    display_name: String,
    password: String,
    password_revoked: bool,
    key: SigningKey,
    created_at: DateTime<Utc>,
    /// Times of `createSession` attempts (last day).
    session_attempts: VecDeque<DateTime<Utc>>,
    /// Write points spent (last day).
    writes: VecDeque<(DateTime<Utc>, u32)>,
}

struct AccessToken {
    did: String,
    expires_at: DateTime<Utc>,
    force_expired: bool,
}

struct RefreshToken {
    did: String,
    expires_at: DateTime<Utc>,
    used_at: Option<DateTime<Utc>>,
    revoked: bool,
}

struct Rec {
    cid: String,
    value: Value,
    seq: u64,
    indexed_at: DateTime<Utc>,
}

#[derive(Default, Clone, Copy)]
struct Counts {
    likes: i64,
    reposts: i64,
    replies: i64,
    quotes: i64,
}

#[derive(Default)]
struct State {
    accounts: BTreeMap<String, Account>,
    handles: HashMap<String, String>,
    access: HashMap<String, AccessToken>,
    refresh: HashMap<String, RefreshToken>,
    /// (did, collection, rkey) -> record; BTreeMap order = rkey order.
    records: BTreeMap<(String, String, String), Rec>,
    /// AppView-only facts about posts: like, repost, reply, quote counts.
    counts: HashMap<String, Counts>,
    blobs: Vec<StoredBlob>,
    calls: HashMap<String, usize>,
    faults: HashMap<String, VecDeque<Fault>>,
    clock_offset: TimeDelta,
    last_tid_micros: i64,
    last_seed_micros: i64,
    seq: u64,
}

impl FakeBluesky {
    /// Starts the fake on `127.0.0.1:0`.
    pub async fn start() -> Result<Self, KitError> {
        let inner = Arc::new(Inner {
            state: Mutex::new(State::default()),
            base: OnceLock::new(),
        });
        let handler_inner = inner.clone();
        let server = FakeServer::start_async(move |req: RecordedRequest| -> ResponseFuture {
            let inner = handler_inner.clone();
            Box::pin(async move { serve(inner, req).await })
        })
        .await?;
        inner.base.set(server.url()).ok();
        Ok(Self {
            inner,
            server: Arc::new(server),
        })
    }

    /// `http://127.0.0.1:<port>`: the PDS, the AppView and the PLC
    /// directory all live here.
    pub fn url(&self) -> String {
        self.server.url()
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.server.requests()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.inner.lock()
    }

    /// Adds an account (or, for a known handle, sets a new app password and
    /// lifts a revocation). The DID is `did:plc:` derived from the handle;
    /// the account gets a k256 signing key published by the fake PLC
    /// directory.
    pub fn add_account(&self, handle: &str, app_password: &str) -> FakeAccount {
        let handle = normalize_handle(handle);
        let mut st = self.state();
        let now = st.now();
        let did = derive_did(&handle);
        let account = st.accounts.entry(did.clone()).or_insert_with(|| Account {
            did: did.clone(),
            handle: handle.clone(),
            display_name: handle.split('.').next().unwrap_or(&handle).to_string(),
            password: String::new(),
            password_revoked: false,
            key: derive_key(&did),
            created_at: now,
            session_attempts: VecDeque::new(),
            writes: VecDeque::new(),
        });
        account.password = app_password.to_string();
        account.password_revoked = false;
        let public = fake_account(account);
        st.handles.insert(handle, did);
        public
    }

    /// The account for a handle or DID.
    pub fn account(&self, handle_or_did: &str) -> Option<FakeAccount> {
        let st = self.state();
        let did = st.resolve(handle_or_did)?;
        st.accounts.get(&did).map(fake_account)
    }

    /// Sets an account's display name.
    pub fn set_display_name(&self, did: &str, name: &str) {
        if let Some(a) = self.state().accounts.get_mut(did) {
            a.display_name = name.into();
        }
    }

    /// Seeds a post in `did`'s repo and feed (no auth, no validation, no
    /// write points); answers its at-uri.
    pub fn add_post(&self, did: &str, post: SeedPost) -> String {
        self.state().seed_post(did, post)
    }

    /// Seeds `n` posts made by `make(0..n)`, oldest first (so `make(n-1)`
    /// is the newest unless `created_at` says otherwise).
    pub fn add_posts(&self, did: &str, n: usize, make: impl Fn(usize) -> SeedPost) {
        let mut st = self.state();
        for i in 0..n {
            st.seed_post(did, make(i));
        }
    }

    /// Seeds a repost by `did` of the post at `subject_uri`; it shows in
    /// `did`'s author feed with `reason` `app.bsky.feed.defs#reasonRepost`.
    /// Answers the repost record's at-uri.
    pub fn add_repost(&self, did: &str, subject_uri: &str) -> String {
        let mut st = self.state();
        let now = st.now();
        let created = st.next_seed_time(now);
        let cid = st
            .record_by_uri(subject_uri)
            .map(|(_, r)| r.cid.clone())
            .unwrap_or_default();
        let value = json!({
            "$type": REPOST,
            "subject": {"uri": subject_uri, "cid": cid},
            "createdAt": micros(created),
        });
        let rkey = tid_from_micros(created.timestamp_micros());
        st.put(did, REPOST, &rkey, value, created);
        at_uri(did, REPOST, &rkey)
    }

    /// What was written to `did`'s `collection`, in creation order.
    pub fn records(&self, did: &str, collection: &str) -> Vec<StoredRecord> {
        let st = self.state();
        let mut out: Vec<StoredRecord> = st
            .records
            .iter()
            .filter(|((d, c, _), _)| d == did && c == collection)
            .map(|((d, c, k), r)| stored(d, c, k, r))
            .collect();
        out.sort_by_key(|r| r.seq);
        out
    }

    /// The record at an at-uri, if present.
    pub fn record(&self, uri: &str) -> Option<StoredRecord> {
        let st = self.state();
        st.record_by_uri(uri)
            .map(|((d, c, k), r)| stored(&d, &c, &k, r))
    }

    /// Removes the record at an at-uri (as if deleted elsewhere); answers
    /// whether it was there.
    pub fn remove_record(&self, uri: &str) -> bool {
        let mut st = self.state();
        let Some((key, _)) = st.record_by_uri(uri) else {
            return false;
        };
        st.records.remove(&key).is_some()
    }

    /// Every blob uploaded or seeded, in order.
    pub fn blobs(&self) -> Vec<StoredBlob> {
        self.state().blobs.clone()
    }

    /// How many requests `nsid` got (`"plc"` for the PLC directory, `"img"`
    /// for the image CDN), faulted ones included.
    pub fn calls(&self, nsid: &str) -> usize {
        self.state().calls.get(nsid).copied().unwrap_or(0)
    }

    /// Sets a post's like, repost and reply counts (as the AppView shows).
    pub fn set_counts(&self, uri: &str, likes: i64, reposts: i64, replies: i64) {
        let mut st = self.state();
        let c = st.counts.entry(uri.to_string()).or_default();
        c.likes = likes;
        c.reposts = reposts;
        c.replies = replies;
    }

    /// Queues a fault for `nsid`'s next call (faults are consumed one per
    /// call, in order).
    pub fn inject(&self, nsid: &str, fault: Fault) {
        self.inject_times(nsid, 1, fault);
    }

    /// Queues the same fault for `nsid`'s next `n` calls.
    pub fn inject_times(&self, nsid: &str, n: usize, fault: Fault) {
        let mut st = self.state();
        let q = st.faults.entry(nsid.to_string()).or_default();
        for _ in 0..n {
            q.push_back(fault.clone());
        }
    }

    /// Drops every queued fault.
    pub fn clear_faults(&self) {
        self.state().faults.clear();
    }

    /// Revokes the account's app password: `createSession` with it answers
    /// 401 `AuthenticationRequired`, its refresh tokens answer 400
    /// `ExpiredToken` "Token has been revoked"; access tokens already issued
    /// keep working until they expire (2 h).
    pub fn revoke_app_password(&self, did: &str) {
        let mut st = self.state();
        if let Some(a) = st.accounts.get_mut(did) {
            a.password_revoked = true;
        }
        for t in st.refresh.values_mut().filter(|t| t.did == did) {
            t.revoked = true;
        }
    }

    /// Makes every access token issued so far answer 400 `ExpiredToken`
    /// (tokens issued later work).
    pub fn expire_access_tokens(&self) {
        for t in self.state().access.values_mut() {
            t.force_expired = true;
        }
    }

    /// Moves the fake's clock forward (token lifetimes, rate-limit windows,
    /// TIDs and default timestamps follow it).
    pub fn advance_clock(&self, by: Duration) {
        let mut st = self.state();
        st.clock_offset += TimeDelta::from_std(by).unwrap_or(TimeDelta::zero());
    }

    /// The fake's clock.
    pub fn now(&self) -> DateTime<Utc> {
        self.state().now()
    }

    /// An inter-service JWT as a PDS makes for `iss_did` (ES256K, header
    /// `{"typ":"JWT","alg":"ES256K"}`, claims `iat`, `iss`, `aud`, `exp`,
    /// `lxm`, `jti`), signed with the account's key (low-S, `r||s`,
    /// base64url without padding). An `iss_did` with a `#fragment` uses the
    /// DID's key. A DID the fake does not know gets a key derived from it
    /// that no DID document publishes, so the signature cannot be checked.
    pub fn sign_service_jwt(&self, iss_did: &str, aud: &str, lxm: &str, exp: i64) -> String {
        let iat = self.now().timestamp();
        let mut jti = [0u8; 16];
        rand::thread_rng().fill_bytes(&mut jti);
        self.sign_jwt_claims(
            iss_did,
            &json!({
                "iat": iat,
                "iss": iss_did,
                "aud": aud,
                "exp": exp,
                "lxm": lxm,
                "jti": hex::encode(jti),
            }),
        )
    }

    /// A JWT with any claims, signed ES256K with `key_did`'s key (for
    /// tests of malformed or unusual tokens).
    pub fn sign_jwt_claims(&self, key_did: &str, claims: &Value) -> String {
        let did = key_did.split('#').next().unwrap_or(key_did);
        let key = self
            .state()
            .accounts
            .get(did)
            .map(|a| a.key.clone())
            .unwrap_or_else(|| derive_key(did));
        let header = b64(br#"{"typ":"JWT","alg":"ES256K"}"#);
        let payload = b64(claims.to_string().as_bytes());
        let input = format!("{header}.{payload}");
        let sig: Signature = key.sign(input.as_bytes());
        let sig = sig.normalize_s().unwrap_or(sig);
        format!("{input}.{}", b64(&sig.to_bytes()))
    }

    /// Decodes a `publicKeyMultibase` (`z` + base58btc of `[0xe7, 0x01]` +
    /// compressed secp256k1 key) back to a key.
    pub fn decode_multikey(multibase: &str) -> Option<VerifyingKey> {
        let rest = multibase.strip_prefix('z')?;
        let bytes = bs58::decode(rest).into_vec().ok()?;
        let key = bytes.strip_prefix(&[0xe7, 0x01])?;
        VerifyingKey::from_sec1_bytes(key).ok()
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panicking test thread must not wedge the fake for the others.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn base(&self) -> String {
        self.base.get().cloned().unwrap_or_default()
    }
}

fn fake_account(a: &Account) -> FakeAccount {
    let verifying_key = *a.key.verifying_key();
    FakeAccount {
        did: a.did.clone(),
        handle: a.handle.clone(),
        app_password: a.password.clone(),
        display_name: a.display_name.clone(),
        public_key_multibase: multikey(&verifying_key),
        verifying_key,
    }
}

fn stored(did: &str, collection: &str, rkey: &str, r: &Rec) -> StoredRecord {
    StoredRecord {
        did: did.into(),
        collection: collection.into(),
        rkey: rkey.into(),
        uri: at_uri(did, collection, rkey),
        cid: r.cid.clone(),
        value: r.value.clone(),
        seq: r.seq,
        indexed_at: micros(r.indexed_at),
    }
}

// ---------------------------------------------------------------------------
// Serving

/// Which counter and fault queue a request belongs to.
fn method_key(req: &RecordedRequest) -> String {
    let path = req.uri.path();
    if let Some(nsid) = path.strip_prefix("/xrpc/") {
        nsid.to_string()
    } else if path.starts_with("/did:") || path.starts_with("/did%3") {
        "plc".into()
    } else if path.starts_with("/img/") {
        "img".into()
    } else {
        path.to_string()
    }
}

async fn serve(inner: Arc<Inner>, req: RecordedRequest) -> Answer {
    let key = method_key(&req);
    let fault = {
        let mut st = inner.lock();
        *st.calls.entry(key.clone()).or_insert(0) += 1;
        st.faults.get_mut(&key).and_then(|q| q.pop_front())
    };
    match fault {
        None => handle(&inner, &req),
        Some(Fault::Status {
            status,
            error,
            message,
        }) => *xrpc_error(status, &error, &message),
        Some(Fault::RateLimited { retry_after_secs }) => {
            let now = inner.lock().now();
            let secs = i64::try_from(retry_after_secs).unwrap_or(i64::MAX / 2);
            *rate_limited(3000, 300, now + TimeDelta::seconds(secs), now)
        }
        Some(Fault::CommitThen500) => {
            drop(handle(&inner, &req));
            *xrpc_error(500, "InternalServerError", "Internal Server Error")
        }
        Some(Fault::Hang(d)) => {
            let answer = handle(&inner, &req);
            tokio::time::sleep(d).await;
            answer
        }
        Some(Fault::HangThenCommit(d)) => {
            // Spawned so the write still happens if the client hangs up.
            let task = tokio::spawn(async move {
                tokio::time::sleep(d).await;
                handle(&inner, &req)
            });
            task.await.unwrap_or_else(|_| {
                *xrpc_error(500, "InternalServerError", "Internal Server Error")
            })
        }
    }
}

const QUERIES: &[&str] = &[
    "com.atproto.server.getSession",
    "com.atproto.repo.getRecord",
    "com.atproto.repo.listRecords",
    "com.atproto.repo.describeRepo",
    "com.atproto.identity.resolveHandle",
    "com.atproto.sync.getBlob",
    "app.bsky.feed.getAuthorFeed",
    "app.bsky.feed.getPosts",
    "app.bsky.actor.getProfile",
];
const PROCEDURES: &[&str] = &[
    "com.atproto.server.createSession",
    "com.atproto.server.refreshSession",
    "com.atproto.server.deleteSession",
    "com.atproto.server.createAppPassword",
    "com.atproto.repo.createRecord",
    "com.atproto.repo.putRecord",
    "com.atproto.repo.deleteRecord",
    "com.atproto.repo.uploadBlob",
];

fn handle(inner: &Inner, req: &RecordedRequest) -> Answer {
    let path = req.uri.path();
    let base = inner.base();
    let mut st = inner.lock();
    // Some clients percent-encode the DID's colons.
    let decoded = path.replace("%3A", ":").replace("%3a", ":");
    if let Some(did) = decoded.strip_prefix('/').filter(|p| p.starts_with("did:")) {
        return st.plc_document(did, &base);
    }
    if let Some(rest) = path.strip_prefix("/img/") {
        return st.cdn_image(rest);
    }
    let Some(nsid) = path.strip_prefix("/xrpc/") else {
        return plain(404, "not found");
    };
    let is_query = QUERIES.contains(&nsid);
    let is_procedure = PROCEDURES.contains(&nsid);
    if !is_query && !is_procedure {
        return *xrpc_error(501, "MethodNotImplemented", "Method Not Implemented");
    }
    let expected = if is_query {
        http::Method::GET
    } else {
        http::Method::POST
    };
    if req.method != expected {
        return *xrpc_error(
            400,
            "InvalidRequest",
            &format!("Incorrect HTTP method ({}) expected {expected}", req.method),
        );
    }
    let q = Query::parse(req);
    let result = match nsid {
        "com.atproto.server.createSession" => with_body(req, |b| st.create_session(b)),
        "com.atproto.server.refreshSession" => no_body(req).and_then(|()| st.refresh_session(req)),
        "com.atproto.server.deleteSession" => no_body(req).and_then(|()| st.delete_session(req)),
        // Every fake session is an app-password session, which may not
        // make app passwords.
        "com.atproto.server.createAppPassword" => st
            .authed(req)
            .and_then(|_| Err(xrpc_error(400, "InvalidToken", "Bad token scope"))),
        "com.atproto.server.getSession" => st.get_session(req),
        "com.atproto.repo.createRecord" => with_body(req, |b| st.create_record(req, b)),
        "com.atproto.repo.putRecord" => with_body(req, |b| st.put_record(req, b)),
        "com.atproto.repo.deleteRecord" => with_body(req, |b| st.delete_record(req, b)),
        "com.atproto.repo.getRecord" => st.get_record(&q),
        "com.atproto.repo.listRecords" => st.list_records(&q),
        "com.atproto.repo.describeRepo" => st.describe_repo(&q),
        "com.atproto.repo.uploadBlob" => st.upload_blob(req),
        "com.atproto.identity.resolveHandle" => st.resolve_handle(&q),
        "com.atproto.sync.getBlob" => st.get_blob(&q),
        "app.bsky.feed.getAuthorFeed" => st.get_author_feed(&q, &base),
        "app.bsky.feed.getPosts" => st.get_posts(&q, &base),
        "app.bsky.actor.getProfile" => st.get_profile(&q),
        _ => Err(xrpc_error(
            501,
            "MethodNotImplemented",
            "Method Not Implemented",
        )),
    };
    result.unwrap_or_else(|e| *e)
}

/// Procedures without input refuse a body, as the reference server does.
fn no_body(req: &RecordedRequest) -> Result<(), Refused> {
    if req.body.is_empty() {
        Ok(())
    } else {
        Err(invalid(
            "A request body was provided when none was expected",
        ))
    }
}

fn with_body(
    req: &RecordedRequest,
    f: impl FnOnce(&Map<String, Value>) -> Result<Answer, Refused>,
) -> Result<Answer, Refused> {
    match serde_json::from_slice::<Value>(&req.body) {
        Ok(Value::Object(map)) => f(&map),
        Ok(_) => Err(invalid("Input must be an object")),
        Err(_) => Err(invalid("Request body is not valid JSON")),
    }
}

/// Query parameters (repeated names kept).
struct Query(Vec<(String, String)>);

impl Query {
    fn parse(req: &RecordedRequest) -> Self {
        let q = req.uri.query().unwrap_or("");
        Self(
            url::form_urlencoded::parse(q.as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn all(&self, name: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    fn required(&self, name: &str) -> Result<&str, Refused> {
        self.get(name)
            .ok_or_else(|| invalid(&format!("Params must have the property \"{name}\"")))
    }

    /// `limit` within `1..=100`, `default` when absent.
    fn limit(&self, default: usize) -> Result<usize, Refused> {
        let Some(raw) = self.get("limit") else {
            return Ok(default);
        };
        let n: i64 = raw
            .parse()
            .map_err(|_| invalid("limit must be an integer"))?;
        if n < 1 {
            return Err(invalid("limit can not be less than 1"));
        }
        if n > 100 {
            return Err(invalid("limit can not be greater than 100"));
        }
        Ok(usize::try_from(n).unwrap_or(100))
    }
}

fn body_str<'a>(body: &'a Map<String, Value>, name: &str) -> Result<&'a str, Refused> {
    body.get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| invalid(&format!("Input must have the property \"{name}\"")))
}

// ---------------------------------------------------------------------------
// State: clock, lookups, storage

impl State {
    fn now(&self) -> DateTime<Utc> {
        Utc::now() + self.clock_offset
    }

    /// Handle or DID -> DID of a known account.
    fn resolve(&self, actor: &str) -> Option<String> {
        if actor.starts_with("did:") {
            self.accounts.contains_key(actor).then(|| actor.to_string())
        } else {
            self.handles.get(&normalize_handle(actor)).cloned()
        }
    }

    /// A TID from the fake clock, strictly increasing.
    fn next_tid(&mut self) -> String {
        let now = self.now().timestamp_micros();
        let micros = now.max(self.last_tid_micros + 1);
        self.last_tid_micros = micros;
        tid_from_micros(micros)
    }

    /// Default seed timestamps: now, but one microsecond apart.
    fn next_seed_time(&mut self, now: DateTime<Utc>) -> DateTime<Utc> {
        let m = now.timestamp_micros().max(self.last_seed_micros + 1);
        self.last_seed_micros = m;
        DateTime::from_timestamp_micros(m).unwrap_or(now)
    }

    fn record_by_uri(&self, uri: &str) -> Option<((String, String, String), &Rec)> {
        let (repo, collection, rkey) = parse_at_uri(uri)?;
        let did = self.resolve(&repo).unwrap_or(repo);
        let key = (did, collection, rkey);
        self.records.get(&key).map(|r| (key, r))
    }

    /// Stores (or replaces) a record; answers its cid.
    fn put(
        &mut self,
        did: &str,
        collection: &str,
        rkey: &str,
        value: Value,
        indexed_at: DateTime<Utc>,
    ) -> String {
        let cid = cid_for(0x71, canonical_json(&value).as_bytes());
        let key = (did.to_string(), collection.to_string(), rkey.to_string());
        if let Some(r) = self.records.get_mut(&key) {
            r.cid = cid.clone();
            r.value = value;
            r.indexed_at = indexed_at;
        } else {
            self.seq += 1;
            let seq = self.seq;
            self.records.insert(
                key,
                Rec {
                    cid: cid.clone(),
                    value,
                    seq,
                    indexed_at,
                },
            );
        }
        cid
    }

    fn add_blob(&mut self, did: &str, mime_type: &str, bytes: Bytes) -> Value {
        let cid = cid_for(0x55, &bytes);
        let size = bytes.len();
        if !self.blobs.iter().any(|b| b.cid == cid && b.did == did) {
            self.blobs.push(StoredBlob {
                did: did.into(),
                cid: cid.clone(),
                mime_type: mime_type.into(),
                size,
                bytes,
            });
        }
        json!({"$type": "blob", "ref": {"$link": cid}, "mimeType": mime_type, "size": size})
    }

    fn commit(&mut self, did: &str) -> Value {
        let rev = self.next_tid();
        let cid = cid_for(0x71, format!("{did} {rev}").as_bytes());
        json!({"cid": cid, "rev": rev})
    }

    fn seed_post(&mut self, did: &str, post: SeedPost) -> String {
        let now = self.now();
        let created_at = match &post.created_at {
            Some(s) => s.clone(),
            None => micros(self.next_seed_time(now)),
        };
        let created = parse_time(&created_at).unwrap_or(now);
        let indexed = post
            .indexed_at
            .as_deref()
            .and_then(parse_time)
            .unwrap_or(created);
        let rkey = post
            .rkey
            .clone()
            .unwrap_or_else(|| self.unique_tid_near(did, created));
        let mut record = json!({"$type": POST, "text": post.text, "createdAt": created_at});
        if !post.langs.is_empty() {
            record["langs"] = json!(post.langs);
        }
        if let Some(f) = &post.facets {
            record["facets"] = f.clone();
        }
        if let Some(parent) = &post.reply_to {
            let parent_ref = self
                .record_by_uri(parent)
                .map(|(_, r)| (r.cid.clone(), r.value.get("reply").cloned()));
            let (cid, parent_reply) = parent_ref.unwrap_or_default();
            let parent_strong = json!({"uri": parent, "cid": cid});
            let root = parent_reply
                .and_then(|r| r.get("root").cloned())
                .unwrap_or_else(|| parent_strong.clone());
            record["reply"] = json!({"root": root, "parent": parent_strong});
        }
        if !post.images.is_empty() {
            let images: Vec<Value> = post
                .images
                .iter()
                .map(|img| {
                    let blob = self.add_blob(did, &img.mime_type, Bytes::from(img.bytes.clone()));
                    let mut v = json!({"alt": img.alt, "image": blob});
                    if let Some((w, h)) = img.aspect_ratio {
                        v["aspectRatio"] = json!({"width": w, "height": h});
                    }
                    v
                })
                .collect();
            record["embed"] = json!({"$type": "app.bsky.embed.images", "images": images});
        } else if let Some(ext) = &post.external {
            record["embed"] = json!({
                "$type": "app.bsky.embed.external",
                "external": {"uri": ext.uri, "title": ext.title, "description": ext.description},
            });
        }
        self.put(did, POST, &rkey, record, indexed);
        let uri = at_uri(did, POST, &rkey);
        self.counts.insert(
            uri.clone(),
            Counts {
                likes: post.likes,
                reposts: post.reposts,
                replies: post.replies,
                quotes: post.quotes,
            },
        );
        uri
    }

    /// A TID near `at` that `did`'s posts do not use yet (seeded posts).
    fn unique_tid_near(&self, did: &str, at: DateTime<Utc>) -> String {
        let mut m = at.timestamp_micros();
        loop {
            let tid = tid_from_micros(m);
            let key = (did.to_string(), POST.to_string(), tid.clone());
            if !self.records.contains_key(&key) {
                return tid;
            }
            m += 1;
        }
    }
}

// ---------------------------------------------------------------------------
// Sessions and auth

fn random_token(kind: &str, did: &str, scope: &str, iat: i64, exp: i64) -> String {
    let mut nonce = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut nonce);
    let header = b64(format!(r#"{{"typ":"{kind}","alg":"HS256"}}"#).as_bytes());
    let payload = json!({
        "scope": scope,
        "sub": did,
        "aud": "did:web:fake-pds.test",
        "iat": iat,
        "exp": exp,
        "jti": hex::encode(nonce),
    });
    let mut sig = Sha256::new();
    sig.update(nonce);
    sig.update(payload.to_string().as_bytes());
    format!(
        "{header}.{}.{}",
        b64(payload.to_string().as_bytes()),
        b64(&sig.finalize())
    )
}

fn bearer(req: &RecordedRequest) -> Result<&str, Refused> {
    let value = req
        .headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| xrpc_error(401, "AuthMissing", "Authentication Required"))?;
    value
        .strip_prefix("Bearer ")
        .map(str::trim)
        .ok_or_else(|| xrpc_error(401, "AuthMissing", "Authentication Required"))
}

impl State {
    /// The DID an access token belongs to, or the XRPC auth error.
    fn authed(&self, req: &RecordedRequest) -> Result<String, Refused> {
        let token = bearer(req)?;
        if self.refresh.contains_key(token) {
            return Err(xrpc_error(400, "InvalidToken", "Bad token scope"));
        }
        let Some(t) = self.access.get(token) else {
            return Err(xrpc_error(
                400,
                "InvalidToken",
                "Token could not be verified",
            ));
        };
        if t.force_expired || self.now() >= t.expires_at {
            return Err(xrpc_error(400, "ExpiredToken", "Token has expired"));
        }
        Ok(t.did.clone())
    }

    fn issue_session(&mut self, did: &str) -> Result<Answer, Refused> {
        let now = self.now();
        let iat = now.timestamp();
        let access = random_token(
            "at+jwt",
            did,
            "com.atproto.appPass",
            iat,
            (now + ACCESS_LIFETIME).timestamp(),
        );
        let refresh = random_token(
            "refresh+jwt",
            did,
            "com.atproto.refresh",
            iat,
            (now + REFRESH_LIFETIME).timestamp(),
        );
        self.access.insert(
            access.clone(),
            AccessToken {
                did: did.into(),
                expires_at: now + ACCESS_LIFETIME,
                force_expired: false,
            },
        );
        self.refresh.insert(
            refresh.clone(),
            RefreshToken {
                did: did.into(),
                expires_at: now + REFRESH_LIFETIME,
                used_at: None,
                revoked: false,
            },
        );
        let handle = self
            .accounts
            .get(did)
            .map(|a| a.handle.clone())
            .unwrap_or_default();
        Ok(ok_json(&json!({
            "did": did,
            "handle": handle,
            "accessJwt": access,
            "refreshJwt": refresh,
            "active": true,
        })))
    }

    fn create_session(&mut self, body: &Map<String, Value>) -> Result<Answer, Refused> {
        let identifier = body_str(body, "identifier")?;
        let password = body_str(body, "password")?;
        let now = self.now();
        let did = self.resolve(identifier.trim_start_matches('@'));
        let Some(account) = did.as_ref().and_then(|d| self.accounts.get_mut(d)) else {
            return Err(xrpc_error(
                401,
                "AuthenticationRequired",
                "Invalid identifier or password",
            ));
        };
        // The limiter counts every attempt, good password or not.
        let attempts = &mut account.session_attempts;
        while attempts
            .front()
            .is_some_and(|t| *t <= now - TimeDelta::days(1))
        {
            attempts.pop_front();
        }
        let window = now - TimeDelta::minutes(5);
        let recent: Vec<DateTime<Utc>> = attempts.iter().copied().filter(|t| *t > window).collect();
        if recent.len() >= SESSION_LIMIT_5MIN {
            let reset = recent[recent.len() - SESSION_LIMIT_5MIN] + TimeDelta::minutes(5);
            return Err(rate_limited(SESSION_LIMIT_5MIN as u32, 300, reset, now));
        }
        if attempts.len() >= SESSION_LIMIT_DAY {
            let reset = attempts[attempts.len() - SESSION_LIMIT_DAY] + TimeDelta::days(1);
            return Err(rate_limited(SESSION_LIMIT_DAY as u32, 86_400, reset, now));
        }
        attempts.push_back(now);
        if account.password_revoked || account.password != password {
            return Err(xrpc_error(
                401,
                "AuthenticationRequired",
                "Invalid identifier or password",
            ));
        }
        let did = account.did.clone();
        self.issue_session(&did)
    }

    fn refresh_session(&mut self, req: &RecordedRequest) -> Result<Answer, Refused> {
        let token = bearer(req)?.to_string();
        if self.access.contains_key(&token) {
            return Err(xrpc_error(400, "InvalidToken", "Invalid token type"));
        }
        let now = self.now();
        let Some(t) = self.refresh.get_mut(&token) else {
            return Err(xrpc_error(
                400,
                "InvalidToken",
                "Token could not be verified",
            ));
        };
        if t.revoked || t.used_at.is_some_and(|u| now > u + REFRESH_GRACE) {
            return Err(xrpc_error(400, "ExpiredToken", "Token has been revoked"));
        }
        if now >= t.expires_at {
            return Err(xrpc_error(400, "ExpiredToken", "Token has expired"));
        }
        t.used_at.get_or_insert(now);
        let did = t.did.clone();
        self.issue_session(&did)
    }

    fn delete_session(&mut self, req: &RecordedRequest) -> Result<Answer, Refused> {
        let token = bearer(req)?.to_string();
        match self.refresh.get_mut(&token) {
            Some(t) => {
                t.revoked = true;
                Ok(ok_empty())
            }
            None => Err(xrpc_error(
                400,
                "InvalidToken",
                "Token could not be verified",
            )),
        }
    }

    fn get_session(&self, req: &RecordedRequest) -> Result<Answer, Refused> {
        let did = self.authed(req)?;
        let handle = self
            .accounts
            .get(&did)
            .map(|a| a.handle.clone())
            .unwrap_or_default();
        Ok(ok_json(
            &json!({"did": did, "handle": handle, "active": true}),
        ))
    }

    /// Spends write points, or answers 429.
    fn charge(&mut self, did: &str, points: u32) -> Result<(), Refused> {
        let now = self.now();
        let Some(a) = self.accounts.get_mut(did) else {
            return Ok(());
        };
        while a
            .writes
            .front()
            .is_some_and(|(t, _)| *t <= now - TimeDelta::days(1))
        {
            a.writes.pop_front();
        }
        let hour_ago = now - TimeDelta::hours(1);
        let hour: u32 = a
            .writes
            .iter()
            .filter(|(t, _)| *t > hour_ago)
            .map(|(_, p)| p)
            .sum();
        let day: u32 = a.writes.iter().map(|(_, p)| p).sum();
        if hour + points > POINTS_PER_HOUR {
            let reset = a
                .writes
                .iter()
                .find(|(t, _)| *t > hour_ago)
                .map_or(now, |(t, _)| *t + TimeDelta::hours(1));
            return Err(rate_limited(POINTS_PER_HOUR, 3600, reset, now));
        }
        if day + points > POINTS_PER_DAY {
            let reset = a
                .writes
                .front()
                .map_or(now, |(t, _)| *t + TimeDelta::days(1));
            return Err(rate_limited(POINTS_PER_DAY, 86_400, reset, now));
        }
        a.writes.push_back((now, points));
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// Repo

impl State {
    /// The session's DID when `repo` names it, else 400 `InvalidRequest`.
    fn own_repo(&self, auth_did: &str, body: &Map<String, Value>) -> Result<(), Refused> {
        let repo = body_str(body, "repo")?;
        match self.resolve(repo) {
            Some(did) if did == auth_did => Ok(()),
            Some(_) => Err(invalid("Repo does not match the session's account")),
            None => Err(invalid(&format!("Could not find repo: {repo}"))),
        }
    }

    /// Checks a record about to be written; answers it with `$type` set.
    fn prepare(
        &self,
        did: &str,
        collection: &str,
        body: &Map<String, Value>,
    ) -> Result<(Value, bool), Refused> {
        if !is_nsid(collection) {
            return Err(invalid(&format!("Invalid collection: {collection}")));
        }
        let Some(Value::Object(record)) = body.get("record") else {
            return Err(invalid("Input must have the property \"record\""));
        };
        let mut record = record.clone();
        match record.get("$type").and_then(Value::as_str) {
            None => {
                record.insert("$type".into(), json!(collection));
            }
            Some(t) if t != collection => {
                return Err(invalid(&format!(
                    "Invalid $type: expected {collection}, got {t}"
                )));
            }
            Some(_) => {}
        }
        let record = Value::Object(record);
        let validate = body.get("validate").and_then(Value::as_bool) != Some(false);
        if collection == POST {
            if validate {
                validate_post(&record)
                    .map_err(|e| invalid(&format!("Invalid app.bsky.feed.post record: {e}")))?;
            }
            self.check_blobs(did, &record)?;
        }
        Ok((record, validate))
    }

    /// Images must point at blobs this account uploaded.
    fn check_blobs(&self, did: &str, record: &Value) -> Result<(), Refused> {
        let images = record
            .pointer("/embed/images")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for img in images {
            if let Some(cid) = img.pointer("/image/ref/$link").and_then(Value::as_str)
                && !self.blobs.iter().any(|b| b.cid == cid && b.did == did)
            {
                return Err(xrpc_error(
                    400,
                    "BlobNotFound",
                    &format!("Could not find blob: {cid}"),
                ));
            }
        }
        Ok(())
    }

    fn create_record(
        &mut self,
        req: &RecordedRequest,
        body: &Map<String, Value>,
    ) -> Result<Answer, Refused> {
        let did = self.authed(req)?;
        self.own_repo(&did, body)?;
        let collection = body_str(body, "collection")?;
        let rkey = match body.get("rkey").and_then(Value::as_str) {
            Some(k) => {
                check_rkey(collection, k)?;
                Some(k.to_string())
            }
            None => None,
        };
        self.charge(&did, 3)?;
        let (record, validated) = self.prepare(&did, collection, body)?;
        let rkey = match rkey {
            Some(k) => k,
            None => loop {
                // The clock's TID, unless a seeded post already took it.
                let tid = self.next_tid();
                if !self
                    .records
                    .contains_key(&(did.clone(), collection.to_string(), tid.clone()))
                {
                    break tid;
                }
            },
        };
        let key = (did.clone(), collection.to_string(), rkey.clone());
        if self.records.contains_key(&key) {
            // What the reference PDS answers for a duplicate rkey.
            return Err(xrpc_error(
                500,
                "InternalServerError",
                "Internal Server Error",
            ));
        }
        let now = self.now();
        let cid = self.put(&did, collection, &rkey, record, now);
        let commit = self.commit(&did);
        Ok(ok_json(&json!({
            "uri": at_uri(&did, collection, &rkey),
            "cid": cid,
            "commit": commit,
            "validationStatus": if validated { "valid" } else { "unknown" },
        })))
    }

    fn put_record(
        &mut self,
        req: &RecordedRequest,
        body: &Map<String, Value>,
    ) -> Result<Answer, Refused> {
        let did = self.authed(req)?;
        self.own_repo(&did, body)?;
        let collection = body_str(body, "collection")?;
        let rkey = body_str(body, "rkey")?;
        check_rkey(collection, rkey)?;
        let key = (did.clone(), collection.to_string(), rkey.to_string());
        let current = self.records.get(&key).map(|r| r.cid.clone());
        self.charge(&did, if current.is_some() { 2 } else { 3 })?;
        let (record, validated) = self.prepare(&did, collection, body)?;
        if let Some(swap) = body.get("swapRecord") {
            let matches = match swap {
                Value::Null => current.is_none(),
                Value::String(s) => current.as_deref() == Some(s.as_str()),
                _ => false,
            };
            if !matches {
                return Err(xrpc_error(
                    400,
                    "InvalidSwap",
                    &format!("Record was at {}", current.as_deref().unwrap_or("null")),
                ));
            }
        }
        let uri = at_uri(&did, collection, rkey);
        let status = if validated { "valid" } else { "unknown" };
        let new_cid = cid_for(0x71, canonical_json(&record).as_bytes());
        if current.as_deref() == Some(new_cid.as_str()) {
            // An identical record is a no-op: same cid, no commit.
            return Ok(ok_json(
                &json!({"uri": uri, "cid": new_cid, "validationStatus": status}),
            ));
        }
        let now = self.now();
        let cid = self.put(&did, collection, rkey, record, now);
        let commit = self.commit(&did);
        Ok(ok_json(&json!({
            "uri": uri,
            "cid": cid,
            "commit": commit,
            "validationStatus": status,
        })))
    }

    fn delete_record(
        &mut self,
        req: &RecordedRequest,
        body: &Map<String, Value>,
    ) -> Result<Answer, Refused> {
        let did = self.authed(req)?;
        self.own_repo(&did, body)?;
        let collection = body_str(body, "collection")?;
        let rkey = body_str(body, "rkey")?;
        let key = (did.clone(), collection.to_string(), rkey.to_string());
        if !self.records.contains_key(&key) {
            return Ok(ok_json(&json!({})));
        }
        self.charge(&did, 1)?;
        self.records.remove(&key);
        let commit = self.commit(&did);
        Ok(ok_json(&json!({"commit": commit})))
    }

    fn get_record(&self, q: &Query) -> Result<Answer, Refused> {
        let repo = q.required("repo")?;
        let collection = q.required("collection")?;
        let rkey = q.required("rkey")?;
        let did = self
            .resolve(repo)
            .ok_or_else(|| invalid(&format!("Could not find repo: {repo}")))?;
        let uri = at_uri(&did, collection, rkey);
        let key = (did, collection.to_string(), rkey.to_string());
        match self.records.get(&key) {
            Some(r) if q.get("cid").is_none_or(|c| c == r.cid) => Ok(ok_json(
                &json!({"uri": uri, "cid": r.cid, "value": r.value}),
            )),
            _ => Err(xrpc_error(
                400,
                "RecordNotFound",
                &format!("Could not locate record: {uri}"),
            )),
        }
    }

    fn list_records(&self, q: &Query) -> Result<Answer, Refused> {
        let repo = q.required("repo")?;
        let collection = q.required("collection")?;
        let limit = q.limit(50)?;
        let reverse = q.get("reverse") == Some("true");
        let did = self
            .resolve(repo)
            .ok_or_else(|| invalid(&format!("Could not find repo: {repo}")))?;
        let cursor = q.get("cursor");
        let mut keys: Vec<(&String, &Rec)> = self
            .records
            .iter()
            .filter(|((d, c, _), _)| *d == did && c == collection)
            .map(|((_, _, k), r)| (k, r))
            .collect();
        if !reverse {
            keys.reverse();
        }
        let page: Vec<(&String, &Rec)> = keys
            .into_iter()
            .filter(|(k, _)| match cursor {
                None => true,
                Some(c) if reverse => k.as_str() > c,
                Some(c) => k.as_str() < c,
            })
            .take(limit)
            .collect();
        let records: Vec<Value> = page
            .iter()
            .map(|(k, r)| json!({"uri": at_uri(&did, collection, k), "cid": r.cid, "value": r.value}))
            .collect();
        let mut out = json!({"records": records});
        if let Some((last, _)) = page.last() {
            out["cursor"] = json!(last);
        }
        Ok(ok_json(&out))
    }

    fn describe_repo(&self, q: &Query) -> Result<Answer, Refused> {
        let repo = q.required("repo")?;
        let did = self
            .resolve(repo)
            .ok_or_else(|| invalid(&format!("Could not find repo: {repo}")))?;
        let handle = self
            .accounts
            .get(&did)
            .map(|a| a.handle.clone())
            .unwrap_or_default();
        let mut collections: Vec<&str> = self
            .records
            .keys()
            .filter(|(d, _, _)| *d == did)
            .map(|(_, c, _)| c.as_str())
            .collect();
        collections.dedup();
        Ok(ok_json(&json!({
            "did": did, "handle": handle, "collections": collections, "handleIsCorrect": true,
        })))
    }

    fn upload_blob(&mut self, req: &RecordedRequest) -> Result<Answer, Refused> {
        let did = self.authed(req)?;
        if req.body.len() > MAX_BLOB_BYTES {
            return Err(xrpc_error(
                400,
                "BlobTooLarge",
                &format!(
                    "This file is too large. It is {} bytes but the maximum size is {MAX_BLOB_BYTES} bytes.",
                    req.body.len()
                ),
            ));
        }
        let mime = req
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("application/octet-stream")
            .to_string();
        let blob = self.add_blob(&did, &mime, req.body.clone());
        Ok(ok_json(&json!({"blob": blob})))
    }

    fn get_blob(&self, q: &Query) -> Result<Answer, Refused> {
        let did = q.required("did")?;
        let cid = q.required("cid")?;
        self.blobs
            .iter()
            .find(|b| b.did == did && b.cid == cid)
            .map(blob_answer)
            .ok_or_else(|| xrpc_error(400, "BlobNotFound", "Blob not found"))
    }

    /// `/img/<preset>/plain/<did>/<cid>@<format>`: the CDN URLs post views
    /// carry.
    fn cdn_image(&self, rest: &str) -> Answer {
        let parts: Vec<&str> = rest.split('/').collect();
        if let [_, "plain", did, file] = parts.as_slice() {
            let cid = file.split('@').next().unwrap_or(file);
            if let Some(b) = self.blobs.iter().find(|b| b.did == *did && b.cid == cid) {
                return blob_answer(b);
            }
        }
        plain(404, "not found")
    }

    fn resolve_handle(&self, q: &Query) -> Result<Answer, Refused> {
        let handle = q.required("handle")?;
        match self.handles.get(&normalize_handle(handle)) {
            Some(did) => Ok(ok_json(&json!({"did": did}))),
            None => Err(xrpc_error(
                400,
                "HandleNotFound",
                "Unable to resolve handle",
            )),
        }
    }

    fn plc_document(&self, did: &str, base: &str) -> Answer {
        let Some(a) = self.accounts.get(did) else {
            return json_answer(
                404,
                &json!({"message": format!("DID not registered: {did}")}),
            );
        };
        ok_json(&json!({
            "@context": [
                "https://www.w3.org/ns/did/v1",
                "https://w3id.org/security/multikey/v1",
                "https://w3id.org/security/suites/secp256k1-2019/v1"
            ],
            "id": did,
            "alsoKnownAs": [format!("at://{}", a.handle)],
            "verificationMethod": [{
                "id": format!("{did}#atproto"),
                "type": "Multikey",
                "controller": did,
                "publicKeyMultibase": multikey(a.key.verifying_key()),
            }],
            "service": [{
                "id": "#atproto_pds",
                "type": "AtprotoPersonalDataServer",
                "serviceEndpoint": base,
            }],
        }))
    }
}

fn check_rkey(collection: &str, rkey: &str) -> Result<(), Refused> {
    let ok = if collection == POST {
        is_tid(rkey)
    } else {
        is_record_key(rkey)
    };
    if ok {
        Ok(())
    } else {
        Err(invalid("Invalid record key"))
    }
}

// ---------------------------------------------------------------------------
// AppView

/// One author-feed entry before paging.
struct FeedEntry {
    sort_at: DateTime<Utc>,
    /// Tie-breaker: the post's (or repost's) at-uri.
    uri: String,
    post_uri: String,
    repost_indexed_at: Option<DateTime<Utc>>,
    is_reply: bool,
    reply_to_self: bool,
    has_media: bool,
}

impl State {
    fn actor(&self, q: &Query) -> Result<String, Refused> {
        let actor = q.required("actor")?;
        self.resolve(actor)
            .ok_or_else(|| invalid("Profile not found"))
    }

    fn get_profile(&self, q: &Query) -> Result<Answer, Refused> {
        let did = self.actor(q)?;
        let Some(a) = self.accounts.get(&did) else {
            return Err(invalid("Profile not found"));
        };
        let posts = self
            .records
            .keys()
            .filter(|(d, c, _)| *d == did && c == POST)
            .count();
        Ok(ok_json(&json!({
            "did": a.did,
            "handle": a.handle,
            "displayName": a.display_name,
            "description": "",
            "followersCount": 0,
            "followsCount": 0,
            "postsCount": posts,
            "indexedAt": millis(a.created_at),
            "createdAt": millis(a.created_at),
            "labels": [],
        })))
    }

    fn get_author_feed(&self, q: &Query, base: &str) -> Result<Answer, Refused> {
        let did = self.actor(q)?;
        let limit = q.limit(50)?;
        let filter = q.get("filter").unwrap_or("posts_with_replies");
        let after = match q.get("cursor") {
            Some(c) => Some(decode_cursor(c).ok_or_else(|| invalid("Malformed cursor"))?),
            None => None,
        };
        let mut entries: Vec<FeedEntry> = Vec::new();
        for ((d, c, k), r) in &self.records {
            if *d != did {
                continue;
            }
            let uri = at_uri(d, c, k);
            let created = r
                .value
                .get("createdAt")
                .and_then(Value::as_str)
                .and_then(parse_time);
            let indexed = r.indexed_at;
            // The AppView sorts by the earlier of createdAt and indexedAt.
            let sort_at = created.map_or(indexed, |c| c.min(indexed));
            if c == POST {
                let parent = r.value.pointer("/reply/parent/uri").and_then(Value::as_str);
                entries.push(FeedEntry {
                    sort_at,
                    uri: uri.clone(),
                    post_uri: uri,
                    repost_indexed_at: None,
                    is_reply: parent.is_some(),
                    reply_to_self: parent
                        .and_then(parse_at_uri)
                        .is_some_and(|(repo, _, _)| repo == did),
                    has_media: r.value.pointer("/embed/images").is_some(),
                });
            } else if c == REPOST
                && let Some(subject) = r.value.pointer("/subject/uri").and_then(Value::as_str)
            {
                entries.push(FeedEntry {
                    sort_at,
                    uri,
                    post_uri: subject.to_string(),
                    repost_indexed_at: Some(indexed),
                    is_reply: false,
                    reply_to_self: false,
                    has_media: false,
                });
            }
        }
        entries.retain(|e| match filter {
            "posts_no_replies" => !e.is_reply,
            "posts_and_author_threads" => !e.is_reply || e.reply_to_self,
            "posts_with_media" => e.has_media && e.repost_indexed_at.is_none(),
            _ => true,
        });
        entries.sort_by(|a, b| b.sort_at.cmp(&a.sort_at).then_with(|| b.uri.cmp(&a.uri)));
        if let Some((at, uri)) = &after {
            entries.retain(|e| (e.sort_at, e.uri.as_str()) < (*at, uri.as_str()));
        }
        let more = entries.len() > limit;
        entries.truncate(limit);
        let reposter = self.author_view(&did);
        let mut feed = Vec::new();
        for e in &entries {
            let Some(view) = self.post_view(&e.post_uri, base) else {
                continue;
            };
            let mut item = json!({"post": view});
            if let Some(at) = e.repost_indexed_at {
                item["reason"] = json!({
                    "$type": "app.bsky.feed.defs#reasonRepost",
                    "by": reposter,
                    "indexedAt": millis(at),
                });
            }
            if let Some(reply) = self.reply_context(&view, base) {
                item["reply"] = reply;
            }
            feed.push(item);
        }
        let mut out = json!({"feed": feed});
        if more && let Some(last) = entries.last() {
            out["cursor"] = json!(encode_cursor(last.sort_at, &last.uri));
        }
        Ok(ok_json(&out))
    }

    fn get_posts(&self, q: &Query, base: &str) -> Result<Answer, Refused> {
        let uris = q.all("uris");
        if uris.len() > 25 {
            return Err(invalid("uris must not have more than 25 elements"));
        }
        if uris.is_empty() {
            return Err(invalid("Params must have the property \"uris\""));
        }
        let posts: Vec<Value> = uris
            .iter()
            .filter_map(|u| self.post_view(u, base))
            .collect();
        Ok(ok_json(&json!({"posts": posts})))
    }

    fn author_view(&self, did: &str) -> Value {
        match self.accounts.get(did) {
            Some(a) => json!({
                "did": a.did,
                "handle": a.handle,
                "displayName": a.display_name,
                "labels": [],
                "createdAt": millis(a.created_at),
            }),
            None => json!({"did": did, "handle": "handle.invalid", "labels": []}),
        }
    }

    /// `app.bsky.feed.defs#postView` of a stored post.
    fn post_view(&self, uri: &str, base: &str) -> Option<Value> {
        let ((did, collection, _), r) = self.record_by_uri(uri)?;
        if collection != POST {
            return None;
        }
        let uri = at_uri(&did, &collection, &parse_at_uri(uri)?.2);
        let counts = self.counts.get(&uri).copied().unwrap_or_default();
        let indexed = r.indexed_at;
        let mut view = json!({
            "uri": uri,
            "cid": r.cid,
            "author": self.author_view(&did),
            "record": r.value,
            "replyCount": counts.replies,
            "repostCount": counts.reposts,
            "likeCount": counts.likes,
            "quoteCount": counts.quotes,
            "indexedAt": millis(indexed),
            "viewer": {},
            "labels": [],
        });
        if let Some(embed) = embed_view(&did, r.value.get("embed"), base) {
            view["embed"] = embed;
        }
        Some(view)
    }

    fn reply_context(&self, view: &Value, base: &str) -> Option<Value> {
        let reply = view.pointer("/record/reply")?;
        let side = |name: &str| -> Value {
            let uri = reply
                .pointer(&format!("/{name}/uri"))
                .and_then(Value::as_str)
                .unwrap_or("");
            self.post_view(uri, base).map_or_else(
                || json!({"$type": "app.bsky.feed.defs#notFoundPost", "uri": uri, "notFound": true}),
                |mut v| {
                    v["$type"] = json!("app.bsky.feed.defs#postView");
                    v
                },
            )
        };
        Some(json!({"root": side("root"), "parent": side("parent")}))
    }
}

/// The `embed` of a post view, from the record's `embed`.
fn embed_view(did: &str, embed: Option<&Value>, base: &str) -> Option<Value> {
    let embed = embed?;
    match embed.get("$type").and_then(Value::as_str)? {
        "app.bsky.embed.images" => {
            let images: Vec<Value> = embed
                .get("images")
                .and_then(Value::as_array)?
                .iter()
                .map(|img| {
                    let cid = img
                        .pointer("/image/ref/$link")
                        .and_then(Value::as_str)
                        .unwrap_or("");
                    let mut v = json!({
                        "thumb": format!("{base}/img/feed_thumbnail/plain/{did}/{cid}@jpeg"),
                        "fullsize": format!("{base}/img/feed_fullsize/plain/{did}/{cid}@jpeg"),
                        "alt": img.get("alt").cloned().unwrap_or(json!("")),
                    });
                    if let Some(ar) = img.get("aspectRatio") {
                        v["aspectRatio"] = ar.clone();
                    }
                    v
                })
                .collect();
            Some(json!({"$type": "app.bsky.embed.images#view", "images": images}))
        }
        "app.bsky.embed.external" => {
            let ext = embed.get("external")?;
            Some(json!({
                "$type": "app.bsky.embed.external#view",
                "external": {
                    "uri": ext.get("uri").cloned().unwrap_or(json!("")),
                    "title": ext.get("title").cloned().unwrap_or(json!("")),
                    "description": ext.get("description").cloned().unwrap_or(json!("")),
                },
            }))
        }
        _ => None,
    }
}

fn encode_cursor(at: DateTime<Utc>, uri: &str) -> String {
    b64(format!("{}::{uri}", at.timestamp_micros()).as_bytes())
}

fn decode_cursor(c: &str) -> Option<(DateTime<Utc>, String)> {
    let raw = String::from_utf8(URL_SAFE_NO_PAD.decode(c).ok()?).ok()?;
    let (m, uri) = raw.split_once("::")?;
    Some((
        DateTime::from_timestamp_micros(m.parse().ok()?)?,
        uri.to_string(),
    ))
}

// ---------------------------------------------------------------------------
// Post record validation (the PDS's lexicon checks)

fn graphemes(s: &str) -> usize {
    s.graphemes(true).count()
}

/// Checks a string's byte and grapheme limits, like the lexicon does.
fn check_string(s: &str, max_bytes: usize, max_graphemes: usize, path: &str) -> Result<(), String> {
    if s.len() > max_bytes {
        return Err(format!(
            "string too big (maximum {max_bytes}, got {}) at {path}",
            s.len()
        ));
    }
    let g = graphemes(s);
    if g > max_graphemes {
        return Err(format!(
            "grapheme too big (maximum {max_graphemes}, got {g}) at {path}"
        ));
    }
    Ok(())
}

/// The checks the PDS makes on an `app.bsky.feed.post` record; facet byte
/// ranges are not among them.
fn validate_post(record: &Value) -> Result<(), String> {
    let text = record
        .get("text")
        .ok_or("required property missing at $.record.text")?
        .as_str()
        .ok_or("expected a string at $.record.text")?;
    check_string(text, 3000, 300, "$.record.text")?;
    let created = record
        .get("createdAt")
        .ok_or("required property missing at $.record.createdAt")?
        .as_str()
        .ok_or("expected a string at $.record.createdAt")?;
    if DateTime::parse_from_rfc3339(created).is_err() {
        return Err("invalid datetime (RFC 3339 with a time zone) at $.record.createdAt".into());
    }
    if let Some(langs) = record.get("langs") {
        let langs = langs
            .as_array()
            .ok_or("expected an array at $.record.langs")?;
        if langs.len() > 3 {
            return Err(format!(
                "array too long (maximum 3, got {}) at $.record.langs",
                langs.len()
            ));
        }
        for (i, l) in langs.iter().enumerate() {
            if !l.as_str().is_some_and(is_language) {
                return Err(format!("invalid language at $.record.langs[{i}]"));
            }
        }
    }
    if let Some(facets) = record.get("facets") {
        let facets = facets
            .as_array()
            .ok_or("expected an array at $.record.facets")?;
        for (i, facet) in facets.iter().enumerate() {
            let path = format!("$.record.facets[{i}]");
            for end in ["byteStart", "byteEnd"] {
                let offset = facet
                    .pointer(&format!("/index/{end}"))
                    .and_then(Value::as_i64);
                if offset.is_none_or(|n| n < 0) {
                    return Err(format!(
                        "expected a non-negative integer at {path}.index.{end}"
                    ));
                }
            }
            let features = facet
                .get("features")
                .and_then(Value::as_array)
                .ok_or(format!("required property missing at {path}.features"))?;
            for (j, f) in features.iter().enumerate() {
                let fpath = format!("{path}.features[{j}]");
                match f.get("$type").and_then(Value::as_str) {
                    Some("app.bsky.richtext.facet#mention")
                        if !f.get("did").and_then(Value::as_str).is_some_and(is_did) =>
                    {
                        return Err(format!("invalid did at {fpath}.did"));
                    }
                    Some("app.bsky.richtext.facet#link")
                        if !f.get("uri").and_then(Value::as_str).is_some_and(is_uri) =>
                    {
                        return Err(format!("invalid uri at {fpath}.uri"));
                    }
                    Some("app.bsky.richtext.facet#tag") => {
                        let tag = f
                            .get("tag")
                            .and_then(Value::as_str)
                            .ok_or(format!("required property missing at {fpath}.tag"))?;
                        check_string(tag, 640, 64, &format!("{fpath}.tag"))?;
                    }
                    _ => {}
                }
            }
        }
    }
    if let Some(embed) = record.get("embed") {
        match embed.get("$type").and_then(Value::as_str) {
            Some("app.bsky.embed.images") => {
                let images = embed
                    .get("images")
                    .and_then(Value::as_array)
                    .ok_or("required property missing at $.record.embed.images")?;
                if images.len() > 4 {
                    return Err(format!(
                        "array too long (maximum 4, got {}) at $.record.embed.images",
                        images.len()
                    ));
                }
                for (i, img) in images.iter().enumerate() {
                    let path = format!("$.record.embed.images[{i}]");
                    if !img.get("alt").is_some_and(Value::is_string) {
                        return Err(format!("required property missing at {path}.alt"));
                    }
                    let blob = img
                        .get("image")
                        .ok_or(format!("required property missing at {path}.image"))?;
                    if blob.get("$type").and_then(Value::as_str) != Some("blob")
                        || blob.pointer("/ref/$link").and_then(Value::as_str).is_none()
                    {
                        return Err(format!("expected a blob at {path}.image"));
                    }
                    let size = blob.get("size").and_then(Value::as_u64).unwrap_or(0);
                    if size > MAX_BLOB_BYTES as u64 {
                        return Err(format!(
                            "blob too big (maximum {MAX_BLOB_BYTES}, got {size}) at {path}.image"
                        ));
                    }
                }
            }
            Some("app.bsky.embed.external") => {
                let ext = embed
                    .get("external")
                    .ok_or("required property missing at $.record.embed.external")?;
                if !ext.get("uri").and_then(Value::as_str).is_some_and(is_uri) {
                    return Err("invalid uri at $.record.embed.external.uri".into());
                }
                for field in ["title", "description"] {
                    if !ext.get(field).is_some_and(Value::is_string) {
                        return Err(format!(
                            "required property missing at $.record.embed.external.{field}"
                        ));
                    }
                }
            }
            _ => {}
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Identifiers and encodings

/// `did:<method>:<id>` as the DID syntax allows.
pub fn is_did(s: &str) -> bool {
    let Some(rest) = s.strip_prefix("did:") else {
        return false;
    };
    let Some((method, id)) = rest.split_once(':') else {
        return false;
    };
    !method.is_empty()
        && method.bytes().all(|b| b.is_ascii_lowercase())
        && !id.is_empty()
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._:%-".contains(&b))
        && !id.ends_with(':')
        && !id.ends_with('%')
        && s.len() <= 2048
}

fn is_uri(s: &str) -> bool {
    let Some((scheme, rest)) = s.split_once(':') else {
        return false;
    };
    scheme
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic())
        && scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+.-".contains(&b))
        && !rest.is_empty()
        && !s.chars().any(char::is_whitespace)
}

fn is_language(s: &str) -> bool {
    let mut parts = s.split('-');
    parts.next().is_some_and(|p| {
        (2..=3).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_alphabetic()) || p == "i"
    }) && parts
        .all(|p| !p.is_empty() && p.len() <= 8 && p.bytes().all(|b| b.is_ascii_alphanumeric()))
}

fn is_nsid(s: &str) -> bool {
    let parts: Vec<&str> = s.split('.').collect();
    parts.len() >= 3
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
}

/// A valid TID: 13 characters of `234567a-z`, the first in `234567a-j`.
pub fn is_tid(s: &str) -> bool {
    s.len() == 13
        && s.bytes().all(|b| TID_CHARS.contains(&b))
        && s.bytes()
            .next()
            .is_some_and(|b| b"234567abcdefghij".contains(&b))
}

/// Record-key syntax: 1..512 of `A-Za-z0-9._:~-`, not `.` or `..`.
fn is_record_key(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 512
        && s != "."
        && s != ".."
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._:~-".contains(&b))
}

/// The TID of a microsecond timestamp (clock id 0).
pub fn tid_from_micros(micros: i64) -> String {
    let mut v = (u64::try_from(micros).unwrap_or(0) & ((1 << 53) - 1)) << 10;
    let mut out = [0u8; 13];
    for slot in out.iter_mut().rev() {
        *slot = TID_CHARS[(v & 31) as usize];
        v >>= 5;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn at_uri(did: &str, collection: &str, rkey: &str) -> String {
    format!("at://{did}/{collection}/{rkey}")
}

fn parse_at_uri(uri: &str) -> Option<(String, String, String)> {
    let rest = uri.strip_prefix("at://")?;
    let mut parts = rest.splitn(3, '/');
    Some((
        parts.next()?.to_string(),
        parts.next()?.to_string(),
        parts.next()?.to_string(),
    ))
}

fn normalize_handle(h: &str) -> String {
    h.trim_start_matches('@').to_ascii_lowercase()
}

fn derive_did(handle: &str) -> String {
    let digest = Sha256::digest(format!("fake-plc:{handle}").as_bytes());
    format!("did:plc:{}", &base32_lower(&digest)[..24])
}

fn derive_key(did: &str) -> SigningKey {
    let mut n = 0u32;
    loop {
        let seed = Sha256::digest(format!("fake-bluesky-key:{did}:{n}").as_bytes());
        if let Ok(k) = SigningKey::from_slice(&seed) {
            return k;
        }
        n += 1;
    }
}

/// `z` + base58btc(multicodec secp256k1-pub `[0xe7, 0x01]` + compressed key).
pub fn multikey(key: &VerifyingKey) -> String {
    let mut bytes = vec![0xe7, 0x01];
    bytes.extend_from_slice(key.to_encoded_point(true).as_bytes());
    format!("z{}", bs58::encode(bytes).into_string())
}

fn base32_lower(data: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
    let mut out = String::new();
    let (mut buffer, mut bits) = (0u32, 0u32);
    for &byte in data {
        buffer = (buffer << 8) | u32::from(byte);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(ALPHABET[((buffer >> bits) & 31) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((buffer << (5 - bits)) & 31) as usize] as char);
    }
    out
}

/// A CIDv1 (sha2-256) string: codec 0x71 (dag-cbor) gives `bafyrei...`,
/// 0x55 (raw) gives `bafkrei...`.
fn cid_for(codec: u8, data: &[u8]) -> String {
    let mut bytes = vec![0x01, codec, 0x12, 0x20];
    bytes.extend_from_slice(&Sha256::digest(data));
    format!("b{}", base32_lower(&bytes))
}

/// JSON with object keys sorted at every level (the cid input).
fn canonical_json(v: &Value) -> String {
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            let fields: Vec<String> = keys
                .iter()
                .map(|k| {
                    format!(
                        "{}:{}",
                        Value::String((*k).clone()),
                        canonical_json(&map[k.as_str()])
                    )
                })
                .collect();
            format!("{{{}}}", fields.join(","))
        }
        Value::Array(items) => {
            let items: Vec<String> = items.iter().map(canonical_json).collect();
            format!("[{}]", items.join(","))
        }
        other => other.to_string(),
    }
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn micros(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

fn millis(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

// ---------------------------------------------------------------------------
// Answers

fn json_answer(status: u16, body: &Value) -> Answer {
    let mut r = http::Response::new(Bytes::from(body.to_string()));
    *r.status_mut() = http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::OK);
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json; charset=utf-8"),
    );
    r
}

fn ok_json(body: &Value) -> Answer {
    json_answer(200, body)
}

fn ok_empty() -> Answer {
    http::Response::new(Bytes::new())
}

fn plain(status: u16, text: &'static str) -> Answer {
    let mut r = http::Response::new(Bytes::from_static(text.as_bytes()));
    *r.status_mut() = http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::NOT_FOUND);
    r
}

fn blob_answer(b: &StoredBlob) -> Answer {
    let mut r = http::Response::new(b.bytes.clone());
    if let Ok(v) = http::HeaderValue::from_str(&b.mime_type) {
        r.headers_mut().insert(http::header::CONTENT_TYPE, v);
    }
    r
}

/// An XRPC error `{error, message}`.
fn xrpc_error(status: u16, error: &str, message: &str) -> Refused {
    Box::new(json_answer(
        status,
        &json!({"error": error, "message": message}),
    ))
}

fn invalid(message: &str) -> Refused {
    xrpc_error(400, "InvalidRequest", message)
}

/// 429 `RateLimitExceeded` with the `RateLimit-*` headers and `Retry-After`.
fn rate_limited(limit: u32, window_secs: u32, reset: DateTime<Utc>, now: DateTime<Utc>) -> Refused {
    let mut r = xrpc_error(429, "RateLimitExceeded", "Rate Limit Exceeded");
    let retry_after = (reset - now).num_seconds().max(1);
    let headers = [
        ("ratelimit-limit", limit.to_string()),
        ("ratelimit-remaining", "0".to_string()),
        ("ratelimit-reset", reset.timestamp().to_string()),
        ("ratelimit-policy", format!("{limit};w={window_secs}")),
        ("retry-after", retry_after.to_string()),
    ];
    for (name, value) in headers {
        if let Ok(v) = http::HeaderValue::from_str(&value) {
            r.headers_mut().insert(name, v);
        }
    }
    r
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn tids_are_valid_and_sortable() {
        let a = tid_from_micros(1_700_000_000_000_000);
        let b = tid_from_micros(1_700_000_000_000_001);
        assert!(is_tid(&a), "{a}");
        assert!(a < b);
        assert!(!is_tid("3jzfcijpj2z2"));
        assert!(!is_tid("kjzfcijpj2z2a"));
    }

    #[test]
    fn cids_look_like_bluesky_cids() {
        assert!(cid_for(0x71, b"x").starts_with("bafyrei"));
        assert!(cid_for(0x55, b"x").starts_with("bafkrei"));
    }

    #[test]
    fn dids_and_uris() {
        assert!(is_did("did:plc:abc234"));
        assert!(is_did("did:web:example.com"));
        assert!(!is_did("alice.test"));
        assert!(!is_did("did:plc:"));
        assert!(is_uri("https://example.com/a"));
        assert!(!is_uri("example dot com"));
    }
}
