//! Platform payloads in, archive rows out: Strava webhook events and
//! activities, Instagram (Meta) webhook changes and media, Bluesky feed
//! items, Strava's rate-limit headers and the platforms' error bodies.
//!
//! Pure functions of their input (the clock is passed in), with no I/O, so
//! they run natively under `cargo test -p ingest`, property tests included:
//! no input makes any of them panic. Anything unusable is a [`ParseError`]
//! naming what is missing, never a crash.

use chrono::{DateTime, Duration, SecondsFormat, Timelike, Utc};
use serde::Serialize;
use serde_json::{Map, Value};

/// Why a payload cannot be archived (permanent: the same bytes will never
/// parse better).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError(pub String);

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn missing(what: &str) -> ParseError {
    ParseError(format!("{what} is missing or malformed"))
}

/// `posts.content_type` values the parsers produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ContentType {
    /// A standard post (Bluesky post, Instagram feed media).
    Post,
    /// A Strava activity.
    Activity,
    /// An Instagram story.
    Story,
    /// An Instagram reel.
    Reel,
    /// A Bluesky reply.
    Reply,
}

/// One post as `archive_platform_posts` takes it: the normalized `posts`
/// columns, the raw platform object for `ingested_posts.post_data`, and the
/// media URLs to queue in `media_downloads`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ArchivePost {
    /// The platform's id (Strava activity id, Instagram media id, Bluesky at-uri).
    pub platform_post_id: String,
    /// `posts.content_type`.
    pub content_type: ContentType,
    /// `posts.text_content` (what full-text search indexes).
    pub text_content: Option<String>,
    /// `posts.html_content` (no platform here sends HTML).
    pub html_content: Option<String>,
    /// When it was posted on the platform (RFC 3339, UTC).
    pub created_at_platform: String,
    /// When it was last changed on the platform, if known (RFC 3339, UTC).
    pub updated_at_platform: Option<String>,
    /// False for a private Strava activity.
    pub published: bool,
    /// The platform's object as received, plus the seed's search keys
    /// `author_handle` / `activity_type` (read by `update_search_vector`).
    pub post_data: Value,
    /// Media to download, largest rendition first.
    pub media_urls: Vec<String>,
}

// ---------------------------------------------------------------------------
// Shared helpers

/// An identifier: a non-empty string without NUL, or an integer in decimal.
pub fn id_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) if !s.is_empty() && !s.contains('\0') && s.len() <= 512 => Some(s.clone()),
        Value::Number(n) if n.is_u64() || n.is_i64() => Some(n.to_string()),
        _ => None,
    }
}

/// A non-empty string field with NULs removed (PostgreSQL text cannot hold them).
fn text_field(value: &Value, key: &str) -> Option<String> {
    let text = value.get(key)?.as_str()?.replace('\0', "");
    (!text.trim().is_empty()).then_some(text)
}

/// `value` with NUL characters removed from every string and key:
/// PostgreSQL's jsonb refuses `\u0000`.
pub fn sanitize(value: &Value) -> Value {
    match value {
        Value::String(s) if s.contains('\0') => Value::String(s.replace('\0', "")),
        Value::Array(items) => Value::Array(items.iter().map(sanitize).collect()),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.replace('\0', ""), sanitize(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// `post_data`: the object sanitized, with `key` set to `value` unless the
/// platform already sent that key.
fn post_data_with(object: &Value, extra: &[(&str, Option<String>)]) -> Value {
    let mut data = match sanitize(object) {
        Value::Object(map) => map,
        other => {
            let mut map = Map::new();
            map.insert("value".into(), other);
            map
        }
    };
    for (key, value) in extra {
        if let Some(value) = value
            && !data.contains_key(*key)
        {
            data.insert((*key).to_string(), Value::String(value.clone()));
        }
    }
    Value::Object(data)
}

/// Parses a platform timestamp: RFC 3339 (Strava, Bluesky) or the Graph
/// API's `2024-01-15T10:30:00+0000`. Years before 1 are refused (PostgreSQL
/// has no year 0).
pub fn parse_time(text: &str) -> Option<DateTime<Utc>> {
    let text = text.trim();
    let parsed = DateTime::parse_from_rfc3339(text)
        .or_else(|_| DateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%z"))
        .or_else(|_| DateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f%z"))
        .ok()?
        .with_timezone(&Utc);
    use chrono::Datelike;
    (1..=9999).contains(&parsed.year()).then_some(parsed)
}

/// RFC 3339 with microseconds in UTC, as PostgreSQL reads it exactly.
pub fn rfc3339(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Micros, true)
}

fn time_field(value: &Value, key: &str) -> Option<DateTime<Utc>> {
    parse_time(value.get(key)?.as_str()?)
}

/// An http(s) URL without NUL, or nothing.
fn url_text(value: Option<&Value>) -> Option<String> {
    let text = value?.as_str()?;
    let lower = text.get(..8).unwrap_or(text).to_ascii_lowercase();
    ((lower.starts_with("https://") || lower.starts_with("http://")) && !text.contains('\0'))
        .then(|| text.to_string())
}

fn push_unique(urls: &mut Vec<String>, url: Option<String>) {
    if let Some(url) = url
        && !urls.contains(&url)
    {
        urls.push(url);
    }
}

/// At most `max` characters of `text`, with an ellipsis when cut.
pub fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut cut: String = text.chars().take(max).collect();
    cut.push('…');
    cut
}

// ---------------------------------------------------------------------------
// Strava

/// What a Strava webhook asks of us.
#[derive(Debug, Clone, PartialEq)]
pub enum StravaEvent {
    /// An activity was created, updated or deleted.
    Activity {
        /// create, update or delete.
        aspect: Aspect,
        /// The activity id (decimal).
        activity_id: String,
        /// The athlete id (decimal): `connected_accounts.platform_user_id`.
        owner_id: String,
        /// Strava's `event_time`, when it is a valid Unix time.
        event_time: Option<DateTime<Utc>>,
    },
    /// `updates.authorized == "false"`: the athlete revoked our access.
    Deauthorized {
        /// The athlete id.
        owner_id: String,
    },
    /// Any other athlete update (nothing to archive).
    AthleteUpdated {
        /// The athlete id.
        owner_id: String,
    },
}

/// Strava's `aspect_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Aspect {
    /// A new activity.
    Create,
    /// Title, type or privacy changed.
    Update,
    /// Deleted on Strava.
    Delete,
}

/// Reads Strava's event `{object_type, object_id, aspect_type, updates,
/// owner_id, subscription_id, event_time}`.
pub fn strava_event(payload: &Value) -> Result<StravaEvent, ParseError> {
    let object_type = payload
        .get("object_type")
        .and_then(Value::as_str)
        .ok_or_else(|| missing("object_type"))?;
    let owner_id = payload
        .get("owner_id")
        .and_then(id_text)
        .ok_or_else(|| missing("owner_id"))?;
    let aspect = match payload.get("aspect_type").and_then(Value::as_str) {
        Some("create") => Aspect::Create,
        Some("update") => Aspect::Update,
        Some("delete") => Aspect::Delete,
        Some(other) => {
            return Err(ParseError(format!(
                "unknown aspect_type `{}`",
                truncate(other, 40)
            )));
        }
        None => return Err(missing("aspect_type")),
    };
    match object_type {
        "activity" => Ok(StravaEvent::Activity {
            aspect,
            activity_id: payload
                .get("object_id")
                .and_then(id_text)
                .ok_or_else(|| missing("object_id"))?,
            owner_id,
            event_time: payload
                .get("event_time")
                .and_then(Value::as_i64)
                .and_then(|t| DateTime::from_timestamp(t, 0))
                .filter(|t| {
                    use chrono::Datelike;
                    (1..=9999).contains(&t.year())
                }),
        }),
        "athlete" => {
            let authorized = payload.get("updates").and_then(|u| u.get("authorized"));
            let revoked = matches!(authorized, Some(Value::String(s)) if s == "false")
                || matches!(authorized, Some(Value::Bool(false)));
            if revoked {
                Ok(StravaEvent::Deauthorized { owner_id })
            } else {
                Ok(StravaEvent::AthleteUpdated { owner_id })
            }
        }
        other => Err(ParseError(format!(
            "unknown object_type `{}`",
            truncate(other, 40)
        ))),
    }
}

/// A Strava activity (detailed from `GET /activities/{id}`, or summary from
/// `GET /athlete/activities`) as an archive post: text is `name` and
/// `description`, `created_at_platform` is `start_date`, `published` is not
/// `private`, the media is the primary photo's largest `urls` entry, and
/// `post_data` carries `activity_type` (`sport_type`, else `type`).
pub fn strava_activity(
    activity: &Value,
    updated_at: Option<DateTime<Utc>>,
) -> Result<ArchivePost, ParseError> {
    if !activity.is_object() {
        return Err(ParseError("activity is not a JSON object".into()));
    }
    let id = activity
        .get("id")
        .and_then(id_text)
        .ok_or_else(|| missing("activity id"))?;
    let started = time_field(activity, "start_date").ok_or_else(|| missing("start_date"))?;
    let name = text_field(activity, "name");
    let description = text_field(activity, "description");
    let text = match (name, description) {
        (Some(name), Some(description)) => Some(format!("{name}\n\n{description}")),
        (name, description) => name.or(description),
    };
    let activity_type = text_field(activity, "sport_type").or_else(|| text_field(activity, "type"));
    let private = activity
        .get("private")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let mut media_urls = Vec::new();
    if let Some(Value::Object(urls)) = activity
        .get("photos")
        .and_then(|p| p.get("primary"))
        .and_then(|p| p.get("urls"))
    {
        // Keys are sizes ("100", "600"); the largest first.
        let mut sized: Vec<(u64, Option<String>)> = urls
            .iter()
            .map(|(size, url)| (size.parse::<u64>().unwrap_or(0), url_text(Some(url))))
            .collect();
        sized.sort_by_key(|(size, _)| std::cmp::Reverse(*size));
        if let Some((_, url)) = sized.into_iter().find(|(_, url)| url.is_some()) {
            push_unique(&mut media_urls, url);
        }
    }
    Ok(ArchivePost {
        platform_post_id: id,
        content_type: ContentType::Activity,
        text_content: text,
        html_content: None,
        created_at_platform: rfc3339(started),
        updated_at_platform: updated_at.map(rfc3339),
        published: !private,
        post_data: post_data_with(activity, &[("activity_type", activity_type)]),
        media_urls,
    })
}

/// A page of `GET /athlete/activities` (a JSON array): each activity parsed
/// on its own, so one odd activity does not hide the others.
pub fn strava_activity_page(
    page: &Value,
) -> Result<Vec<Result<ArchivePost, ParseError>>, ParseError> {
    let items = page
        .as_array()
        .ok_or_else(|| ParseError("activity list is not a JSON array".into()))?;
    Ok(items.iter().map(|a| strava_activity(a, None)).collect())
}

/// The message of a Strava error body `{"message", "errors": [{resource,
/// field, code}]}`, for error columns (never contains a token: Strava does
/// not echo them).
pub fn strava_message(body: &[u8]) -> String {
    let Ok(value) = serde_json::from_slice::<Value>(body) else {
        return truncate(String::from_utf8_lossy(body).trim(), 200);
    };
    let message = value
        .get("message")
        .and_then(Value::as_str)
        .unwrap_or("no message");
    let details: Vec<String> = value
        .get("errors")
        .and_then(Value::as_array)
        .map(|errors| {
            errors
                .iter()
                .take(5)
                .map(|e| {
                    let part =
                        |k: &str| e.get(k).and_then(Value::as_str).unwrap_or("?").to_string();
                    format!("{} {} {}", part("resource"), part("field"), part("code"))
                })
                .collect()
        })
        .unwrap_or_default();
    let text = if details.is_empty() {
        message.to_string()
    } else {
        format!("{message} ({})", details.join("; "))
    };
    truncate(&text, 300)
}

/// Strava's rate-limit headers: `X-RateLimit-Limit` / `X-RateLimit-Usage`
/// (and the `X-ReadRateLimit-*` pair), each "15-minute,daily".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StravaUsage {
    /// Requests allowed per 15 minutes.
    pub short_limit: u64,
    /// Requests allowed per UTC day.
    pub daily_limit: u64,
    /// Requests used in the current 15 minutes.
    pub short_usage: u64,
    /// Requests used today.
    pub daily_usage: u64,
}

fn pair(text: &str) -> Option<(u64, u64)> {
    let mut parts = text.split(',').map(|p| p.trim().parse::<u64>());
    match (parts.next(), parts.next(), parts.next()) {
        (Some(Ok(a)), Some(Ok(b)), None) => Some((a, b)),
        _ => None,
    }
}

impl StravaUsage {
    /// Reads one limit/usage header pair; `None` when either is absent or
    /// malformed.
    pub fn parse(limit: Option<&str>, usage: Option<&str>) -> Option<Self> {
        let (short_limit, daily_limit) = pair(limit?)?;
        let (short_usage, daily_usage) = pair(usage?)?;
        Some(StravaUsage {
            short_limit,
            daily_limit,
            short_usage,
            daily_usage,
        })
    }

    /// When the next request may go, if a window is used up: the next UTC
    /// midnight for the daily window, else the next quarter hour (Strava's
    /// 15-minute windows start at :00, :15, :30, :45). `None` when there is
    /// room. A limit of 0 means the header did not say.
    pub fn resume_at(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        if self.daily_limit > 0 && self.daily_usage >= self.daily_limit {
            Some(next_utc_midnight(now))
        } else if self.short_limit > 0 && self.short_usage >= self.short_limit {
            Some(next_quarter_hour(now))
        } else {
            None
        }
    }
}

/// The next 15-minute boundary after `now` (strictly later).
pub fn next_quarter_hour(now: DateTime<Utc>) -> DateTime<Utc> {
    let into_window = i64::from(now.minute() % 15) * 60 + i64::from(now.second());
    let start =
        now - Duration::seconds(into_window) - Duration::nanoseconds(i64::from(now.nanosecond()));
    start + Duration::minutes(15)
}

/// The next UTC midnight after `now`.
pub fn next_utc_midnight(now: DateTime<Utc>) -> DateTime<Utc> {
    let today = now.date_naive().and_hms_opt(0, 0, 0).map(|t| t.and_utc());
    match today {
        Some(midnight) => midnight + Duration::days(1),
        None => now + Duration::days(1),
    }
}

// ---------------------------------------------------------------------------
// Instagram

/// The fields ingest asks the Graph API for, for one media and for
/// `/me/media` pages: `id`, `caption`, `media_type` (IMAGE, VIDEO,
/// CAROUSEL_ALBUM), `media_product_type` (FEED, REELS, STORY, AD),
/// `media_url`, `permalink`, `thumbnail_url` (videos), `timestamp` (with a
/// `+0000` offset), `username`, and the album's `children` with their own
/// `id`, `media_type`, `media_url`, `thumbnail_url`.
pub const INSTAGRAM_MEDIA_FIELDS: &str = "id,caption,media_type,media_product_type,media_url,permalink,thumbnail_url,timestamp,username,children{id,media_type,media_url,thumbnail_url}";

/// One `changes[]` entry of a Meta webhook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstagramChange {
    /// `entry[].id`: the Instagram user id the change is about
    /// (`connected_accounts.platform_user_id`).
    pub ig_user_id: String,
    /// `changes[].field` (`comments`, `mentions`, `story_insights`, ...).
    pub field: String,
    /// The user's own media the change is about, to fetch and archive;
    /// `None` when the change names none of theirs (a mention is someone
    /// else's media).
    pub media_id: Option<String>,
}

/// Splits a Meta webhook `{object: "instagram", entry: [{id, time, changes:
/// [{field, value}]}]}` into its changes. The media id is `value.media.id`
/// for `comments` and `live_comments`, `value.media_id` for
/// `story_insights`, none for `mentions`, and for other fields
/// `value.media_id`, `value.media.id` or (field `media`) `value.id`.
pub fn instagram_changes(payload: &Value) -> Result<Vec<InstagramChange>, ParseError> {
    match payload.get("object") {
        None => {}
        Some(Value::String(object)) if object == "instagram" => {}
        Some(_) => return Err(ParseError("`object` is not \"instagram\"".into())),
    }
    let entries = payload
        .get("entry")
        .and_then(Value::as_array)
        .ok_or_else(|| missing("entry"))?;
    let mut changes = Vec::new();
    for entry in entries {
        let ig_user_id = entry
            .get("id")
            .and_then(id_text)
            .ok_or_else(|| missing("entry id"))?;
        let Some(list) = entry.get("changes").and_then(Value::as_array) else {
            continue;
        };
        for change in list {
            let field = change
                .get("field")
                .and_then(Value::as_str)
                .ok_or_else(|| missing("changes[].field"))?
                .replace('\0', "");
            let value = change.get("value").unwrap_or(&Value::Null);
            let media_dot_id = || {
                value
                    .get("media")
                    .and_then(|m| m.get("id"))
                    .and_then(id_text)
            };
            let media_id = match field.as_str() {
                "comments" | "live_comments" => media_dot_id(),
                "story_insights" => value.get("media_id").and_then(id_text),
                "mentions" => None,
                "media" => value
                    .get("media_id")
                    .and_then(id_text)
                    .or_else(media_dot_id)
                    .or_else(|| value.get("id").and_then(id_text)),
                _ => value
                    .get("media_id")
                    .and_then(id_text)
                    .or_else(media_dot_id),
            };
            changes.push(InstagramChange {
                ig_user_id: ig_user_id.clone(),
                field,
                media_id,
            });
        }
    }
    Ok(changes)
}

/// An Instagram media object (fields [`INSTAGRAM_MEDIA_FIELDS`]) as an
/// archive post: the caption is the text; REELS are reels, STORY stories,
/// the rest posts; media URLs are the image or video (and a video's
/// thumbnail), or every child of a carousel album.
pub fn instagram_media(media: &Value) -> Result<ArchivePost, ParseError> {
    if !media.is_object() {
        return Err(ParseError("media is not a JSON object".into()));
    }
    let id = media
        .get("id")
        .and_then(id_text)
        .ok_or_else(|| missing("media id"))?;
    let posted = time_field(media, "timestamp").ok_or_else(|| missing("timestamp"))?;
    let content_type = match media.get("media_product_type").and_then(Value::as_str) {
        Some("REELS") => ContentType::Reel,
        Some("STORY") => ContentType::Story,
        _ => ContentType::Post,
    };
    let mut media_urls = Vec::new();
    let mut add_rendition = |item: &Value| {
        push_unique(&mut media_urls, url_text(item.get("media_url")));
        if item.get("media_type").and_then(Value::as_str) == Some("VIDEO") {
            push_unique(&mut media_urls, url_text(item.get("thumbnail_url")));
        }
    };
    let children = media
        .get("children")
        .and_then(|c| c.get("data"))
        .and_then(Value::as_array);
    match (media.get("media_type").and_then(Value::as_str), children) {
        (Some("CAROUSEL_ALBUM"), Some(children)) if !children.is_empty() => {
            children.iter().for_each(&mut add_rendition);
        }
        _ => add_rendition(media),
    }
    Ok(ArchivePost {
        platform_post_id: id,
        content_type,
        text_content: text_field(media, "caption"),
        html_content: None,
        created_at_platform: rfc3339(posted),
        updated_at_platform: None,
        published: true,
        post_data: post_data_with(media, &[("author_handle", text_field(media, "username"))]),
        media_urls,
    })
}

/// A `/me/media` page `{data: [...], paging: {cursors: {before, after},
/// next?}}`: its media, and the `after` cursor when there is a next page
/// (Graph omits `next` on the last one).
pub type InstagramPage = (Vec<Result<ArchivePost, ParseError>>, Option<String>);

/// Reads a `/me/media` page (see [`InstagramPage`]).
pub fn instagram_media_page(page: &Value) -> Result<InstagramPage, ParseError> {
    let data = page
        .get("data")
        .and_then(Value::as_array)
        .ok_or_else(|| missing("data"))?;
    let paging = page.get("paging");
    let has_next = paging
        .and_then(|p| p.get("next"))
        .and_then(Value::as_str)
        .is_some();
    let after = paging
        .and_then(|p| p.get("cursors"))
        .and_then(|c| c.get("after"))
        .and_then(id_text)
        .filter(|_| has_next);
    Ok((data.iter().map(instagram_media).collect(), after))
}

/// A Graph API error `{"error": {"message", "type", "code", "error_subcode"?,
/// "fbtrace_id"}}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GraphError {
    /// The message (platform text, safe to store).
    pub message: String,
    /// `type`, e.g. `OAuthException`.
    pub kind: String,
    /// `code`: 190 invalid token, 4/17/32/613 rate limits, 100 bad object.
    pub code: i64,
}

impl GraphError {
    /// The token is invalid or expired (code 190).
    pub fn is_token_rejected(&self) -> bool {
        self.code == 190
    }

    /// A rate limit (application 4, user 17, page 32, custom 613, and the
    /// business-use-case 80000-range codes).
    pub fn is_rate_limit(&self) -> bool {
        matches!(self.code, 4 | 17 | 32 | 613) || (80001..=80014).contains(&self.code)
    }
}

/// Reads a Graph API error body.
pub fn graph_error(body: &[u8]) -> Option<GraphError> {
    let value: Value = serde_json::from_slice(body).ok()?;
    let error = value.get("error")?;
    Some(GraphError {
        message: truncate(
            error
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("no message"),
            300,
        ),
        kind: truncate(error.get("type").and_then(Value::as_str).unwrap_or("?"), 60),
        code: error.get("code").and_then(Value::as_i64).unwrap_or(0),
    })
}

// ---------------------------------------------------------------------------
// Bluesky

/// One `feed[]` entry of `app.bsky.feed.getAuthorFeed`.
#[derive(Debug, Clone, PartialEq)]
pub enum FeedEntry {
    /// The author's own post or reply.
    Post(Box<ArchivePost>),
    /// Not archived: a repost of someone else's post, or another author's.
    Skipped(&'static str),
}

/// A feed item `{post: PostView, reply?, reason?}` of the account with DID
/// `account_did`. Reposts (`reason` `#reasonRepost`) and posts by other
/// authors are skipped; a pinned post (`#reasonPin`) is the author's own.
/// Text is `record.text`, the time `record.createdAt` (else `indexedAt`), a
/// record with `reply` is a reply; media are the images' `fullsize` and a
/// video's `thumbnail` (HLS playlists are not files to download), also
/// inside `recordWithMedia`.
pub fn bluesky_feed_item(item: &Value, account_did: &str) -> Result<FeedEntry, ParseError> {
    let reason_type = item
        .get("reason")
        .and_then(|r| r.get("$type"))
        .and_then(Value::as_str);
    if reason_type.is_some_and(|t| t.ends_with("#reasonRepost")) {
        return Ok(FeedEntry::Skipped("repost"));
    }
    let post = item.get("post").ok_or_else(|| missing("post"))?;
    bluesky_post(post, account_did)
}

/// A `PostView` as an archive post (see [`bluesky_feed_item`]).
pub fn bluesky_post(post: &Value, account_did: &str) -> Result<FeedEntry, ParseError> {
    let uri = post
        .get("uri")
        .and_then(Value::as_str)
        .filter(|u| u.starts_with("at://") && !u.contains('\0') && u.len() <= 512)
        .ok_or_else(|| missing("post uri"))?;
    let author = post.get("author").ok_or_else(|| missing("post author"))?;
    if author.get("did").and_then(Value::as_str) != Some(account_did) {
        return Ok(FeedEntry::Skipped("another author"));
    }
    let record = post.get("record").ok_or_else(|| missing("post record"))?;
    let created = time_field(record, "createdAt")
        .or_else(|| time_field(post, "indexedAt"))
        .ok_or_else(|| missing("createdAt"))?;
    let content_type = if record.get("reply").is_some_and(Value::is_object) {
        ContentType::Reply
    } else {
        ContentType::Post
    };
    let mut media_urls = Vec::new();
    if let Some(embed) = post.get("embed") {
        bluesky_media(embed, &mut media_urls, 0);
    }
    Ok(FeedEntry::Post(Box::new(ArchivePost {
        platform_post_id: uri.to_string(),
        content_type,
        text_content: text_field(record, "text"),
        html_content: None,
        created_at_platform: rfc3339(created),
        updated_at_platform: None,
        published: true,
        post_data: post_data_with(post, &[("author_handle", text_field(author, "handle"))]),
        media_urls,
    })))
}

fn bluesky_media(embed: &Value, urls: &mut Vec<String>, depth: u8) {
    if depth > 3 {
        return;
    }
    let kind = embed.get("$type").and_then(Value::as_str).unwrap_or("");
    match kind {
        "app.bsky.embed.images#view" => {
            if let Some(images) = embed.get("images").and_then(Value::as_array) {
                for image in images {
                    push_unique(
                        urls,
                        url_text(image.get("fullsize")).or_else(|| url_text(image.get("thumb"))),
                    );
                }
            }
        }
        "app.bsky.embed.video#view" => push_unique(urls, url_text(embed.get("thumbnail"))),
        "app.bsky.embed.recordWithMedia#view" => {
            if let Some(media) = embed.get("media") {
                bluesky_media(media, urls, depth + 1);
            }
        }
        _ => {}
    }
}

/// A getAuthorFeed page `{feed: [...], cursor?}`: its entries and cursor.
pub type FeedPage = (Vec<Result<FeedEntry, ParseError>>, Option<String>);

/// Reads a getAuthorFeed page (see [`FeedPage`]).
pub fn bluesky_feed_page(page: &Value, account_did: &str) -> Result<FeedPage, ParseError> {
    let feed = page
        .get("feed")
        .and_then(Value::as_array)
        .ok_or_else(|| missing("feed"))?;
    let cursor = page
        .get("cursor")
        .and_then(Value::as_str)
        .filter(|c| !c.is_empty() && !c.contains('\0'))
        .map(str::to_string);
    Ok((
        feed.iter()
            .map(|item| bluesky_feed_item(item, account_did))
            .collect(),
        cursor,
    ))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use chrono::TimeZone;
    use proptest::prelude::*;
    use serde_json::json;

    fn at(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, s).unwrap()
    }

    #[test]
    fn strava_events_are_read_as_strava_sends_them() {
        let create = json!({"aspect_type":"create","event_time":1516126040,"object_id":1360128428u64,
            "object_type":"activity","owner_id":134815,"subscription_id":120475,"updates":{}});
        assert_eq!(
            strava_event(&create).unwrap(),
            StravaEvent::Activity {
                aspect: Aspect::Create,
                activity_id: "1360128428".into(),
                owner_id: "134815".into(),
                event_time: DateTime::from_timestamp(1516126040, 0),
            }
        );
        let revoke = json!({"aspect_type":"update","event_time":1516126040,"object_id":134815,
            "object_type":"athlete","owner_id":134815,"subscription_id":120475,"updates":{"authorized":"false"}});
        assert_eq!(
            strava_event(&revoke).unwrap(),
            StravaEvent::Deauthorized {
                owner_id: "134815".into()
            }
        );
        let other = json!({"aspect_type":"update","object_id":1,"object_type":"athlete","owner_id":1,"updates":{"title":"x"}});
        assert!(matches!(
            strava_event(&other).unwrap(),
            StravaEvent::AthleteUpdated { .. }
        ));
        let unknown = json!({"aspect_type":"update","object_type":"club","owner_id":1});
        assert!(strava_event(&unknown).unwrap_err().0.contains("club"));
        assert!(strava_event(&json!({"object_type":"activity"})).is_err());
    }

    #[test]
    fn a_strava_activity_becomes_an_activity_post() {
        let activity = json!({
            "id": 154504250376u64, "name": "Morning Run", "type": "Run", "sport_type": "TrailRun",
            "description": "Along the river", "start_date": "2018-02-16T14:52:54Z",
            "start_date_local": "2018-02-16T06:52:54Z", "distance": 28099.0, "private": false,
            "photos": {"primary": {"id": null, "unique_id": "abc", "urls": {
                "100": "https://dgtzuqphqg23d.cloudfront.net/a-128x96.jpg",
                "600": "https://dgtzuqphqg23d.cloudfront.net/a-768x576.jpg"}, "source": 1}, "count": 2}
        });
        let post = strava_activity(&activity, None).unwrap();
        assert_eq!(post.platform_post_id, "154504250376");
        assert_eq!(post.content_type, ContentType::Activity);
        assert_eq!(
            post.text_content.as_deref(),
            Some("Morning Run\n\nAlong the river")
        );
        assert_eq!(post.created_at_platform, "2018-02-16T14:52:54.000000Z");
        assert_eq!(
            post.media_urls,
            vec!["https://dgtzuqphqg23d.cloudfront.net/a-768x576.jpg"]
        );
        assert_eq!(post.post_data["activity_type"], "TrailRun");
        assert_eq!(post.post_data["distance"], 28099.0);
        assert!(post.published);
        let private = strava_activity(
            &json!({"id": 1, "start_date": "2020-01-01T00:00:00Z", "private": true}),
            None,
        )
        .unwrap();
        assert!(!private.published);
        assert!(private.text_content.is_none());
    }

    #[test]
    fn rate_limit_windows_end_at_quarter_hours_and_utc_midnight() {
        let now = at(2024, 5, 1, 10, 7, 30);
        let usage = StravaUsage::parse(Some("200,2000"), Some("200,350")).unwrap();
        assert_eq!(usage.resume_at(now), Some(at(2024, 5, 1, 10, 15, 0)));
        let daily = StravaUsage::parse(Some("200, 2000"), Some("12,2000")).unwrap();
        assert_eq!(daily.resume_at(now), Some(at(2024, 5, 2, 0, 0, 0)));
        let fine = StravaUsage::parse(Some("200,2000"), Some("199,1999")).unwrap();
        assert_eq!(fine.resume_at(now), None);
        assert_eq!(
            next_quarter_hour(at(2024, 5, 1, 23, 59, 59)),
            at(2024, 5, 2, 0, 0, 0)
        );
        assert_eq!(
            next_quarter_hour(at(2024, 5, 1, 10, 15, 0)),
            at(2024, 5, 1, 10, 30, 0)
        );
        assert!(StravaUsage::parse(Some("200"), Some("1,2")).is_none());
        assert!(StravaUsage::parse(None, Some("1,2")).is_none());
    }

    #[test]
    fn instagram_changes_name_the_users_own_media() {
        let payload = json!({"object": "instagram", "entry": [
            {"id": "17841400000000000", "time": 1700000000, "changes": [
                {"field": "comments", "value": {"id": "c1", "text": "nice", "media": {"id": "1790000000001", "media_product_type": "FEED"}}},
                {"field": "mentions", "value": {"media_id": "999", "comment_id": "c2"}},
                {"field": "story_insights", "value": {"media_id": "1790000000002", "impressions": 3}}
            ]}
        ]});
        let changes = instagram_changes(&payload).unwrap();
        assert_eq!(changes.len(), 3);
        assert_eq!(changes[0].media_id.as_deref(), Some("1790000000001"));
        assert_eq!(changes[0].ig_user_id, "17841400000000000");
        assert_eq!(changes[1].media_id, None);
        assert_eq!(changes[2].media_id.as_deref(), Some("1790000000002"));
        assert!(instagram_changes(&json!({"object": "page", "entry": []})).is_err());
    }

    #[test]
    fn a_carousel_queues_every_child() {
        let media = json!({
            "id": "17900000000000001", "caption": "Summer #beach", "media_type": "CAROUSEL_ALBUM",
            "media_product_type": "FEED", "media_url": "https://scontent.cdninstagram.com/cover.jpg?oh=1",
            "permalink": "https://www.instagram.com/p/abc/", "timestamp": "2024-01-15T10:30:00+0000",
            "username": "sunny", "children": {"data": [
                {"id": "1", "media_type": "IMAGE", "media_url": "https://scontent.cdninstagram.com/1.jpg?oh=1"},
                {"id": "2", "media_type": "VIDEO", "media_url": "https://video.cdninstagram.com/2.mp4?oh=1",
                 "thumbnail_url": "https://scontent.cdninstagram.com/2.jpg?oh=1"}
            ]}
        });
        let post = instagram_media(&media).unwrap();
        assert_eq!(post.created_at_platform, "2024-01-15T10:30:00.000000Z");
        assert_eq!(post.media_urls.len(), 3, "{:?}", post.media_urls);
        assert_eq!(post.post_data["author_handle"], "sunny");
        assert_eq!(post.text_content.as_deref(), Some("Summer #beach"));
        let reel = instagram_media(&json!({"id": "5", "timestamp": "2024-01-15T10:30:00+0000",
            "media_type": "VIDEO", "media_product_type": "REELS", "media_url": "https://v/5.mp4"}))
        .unwrap();
        assert_eq!(reel.content_type, ContentType::Reel);
        let page = json!({"data": [media], "paging": {"cursors": {"before": "b", "after": "a"}, "next": "https://graph/next"}});
        let (items, after) = instagram_media_page(&page).unwrap();
        assert_eq!((items.len(), after.as_deref()), (1, Some("a")));
        let last = json!({"data": [], "paging": {"cursors": {"before": "b", "after": "a"}}});
        assert_eq!(instagram_media_page(&last).unwrap().1, None);
    }

    #[test]
    fn graph_errors_are_classified() {
        let body = br#"{"error":{"message":"Invalid OAuth access token - Cannot parse access token","type":"OAuthException","code":190,"fbtrace_id":"AbC"}}"#;
        let error = graph_error(body).unwrap();
        assert!(error.is_token_rejected() && !error.is_rate_limit());
        let limit = graph_error(br#"{"error":{"message":"Application request limit reached","type":"OAuthException","code":4}}"#).unwrap();
        assert!(limit.is_rate_limit());
        assert!(graph_error(b"nope").is_none());
    }

    #[test]
    fn bluesky_feed_items_keep_own_posts_and_skip_reposts() {
        let did = "did:plc:abc";
        let item = json!({"post": {
            "uri": "at://did:plc:abc/app.bsky.feed.post/3k2a", "cid": "bafy",
            "author": {"did": did, "handle": "alice.test"},
            "record": {"$type": "app.bsky.feed.post", "text": "hello world", "createdAt": "2024-03-01T12:00:00.123456Z",
                       "reply": {"root": {}, "parent": {}}},
            "embed": {"$type": "app.bsky.embed.images#view", "images": [
                {"thumb": "https://cdn.bsky.app/t/1", "fullsize": "https://cdn.bsky.app/f/1", "alt": ""}]},
            "indexedAt": "2024-03-01T12:00:01Z", "likeCount": 3
        }});
        let FeedEntry::Post(post) = bluesky_feed_item(&item, did).unwrap() else {
            panic!("own post")
        };
        assert_eq!(post.content_type, ContentType::Reply);
        assert_eq!(post.created_at_platform, "2024-03-01T12:00:00.123456Z");
        assert_eq!(post.media_urls, vec!["https://cdn.bsky.app/f/1"]);
        assert_eq!(post.post_data["author_handle"], "alice.test");
        let mut repost = item.clone();
        repost["reason"] =
            json!({"$type": "app.bsky.feed.defs#reasonRepost", "by": {}, "indexedAt": "x"});
        assert_eq!(
            bluesky_feed_item(&repost, did).unwrap(),
            FeedEntry::Skipped("repost")
        );
        assert_eq!(
            bluesky_feed_item(&item, "did:plc:other").unwrap(),
            FeedEntry::Skipped("another author")
        );
    }

    #[test]
    fn nul_characters_never_reach_postgres() {
        let activity = json!({"id": 7, "start_date": "2020-01-01T00:00:00Z", "name": "a\u{0}b", "k\u{0}": "v\u{0}"});
        let post = strava_activity(&activity, None).unwrap();
        assert_eq!(post.text_content.as_deref(), Some("ab"));
        assert!(!post.post_data.to_string().contains("\\u0000"));
        assert!(parse_time("0000-01-01T00:00:00Z").is_none());
    }

    // Property tests: any JSON, and JSON shaped like each payload with
    // arbitrary values in the fields the parsers read, never panics.

    fn any_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::from),
            ".{0,24}".prop_map(Value::String),
            "(19|20|00|99)[0-9]{2}-[0-1][0-9]-[0-3][0-9]T[0-2][0-9]:[0-5][0-9]:[0-6][0-9](Z|\\+0000|\\.[0-9]{1,9}Z|[+-][0-9]{2}:?[0-9]{2})"
                .prop_map(Value::String),
            "https?://[a-z./?=]{0,20}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::btree_map(".{0,8}", inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// Objects whose keys come from `keys` (each value arbitrary JSON).
    fn shaped(keys: &'static [&'static str]) -> impl Strategy<Value = Value> {
        prop::collection::vec((prop::sample::select(keys), any_json()), 0..keys.len() + 2).prop_map(
            |pairs| Value::Object(pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect()),
        )
    }

    const STRAVA_EVENT_KEYS: &[&str] = &[
        "object_type",
        "object_id",
        "aspect_type",
        "updates",
        "owner_id",
        "subscription_id",
        "event_time",
    ];
    const STRAVA_ACTIVITY_KEYS: &[&str] = &[
        "id",
        "name",
        "type",
        "sport_type",
        "start_date",
        "start_date_local",
        "description",
        "private",
        "photos",
        "distance",
        "map",
    ];
    const IG_MEDIA_KEYS: &[&str] = &[
        "id",
        "caption",
        "media_type",
        "media_product_type",
        "media_url",
        "thumbnail_url",
        "timestamp",
        "children",
        "username",
        "permalink",
    ];
    const BSKY_POST_KEYS: &[&str] = &["uri", "cid", "author", "record", "embed", "indexedAt"];

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn strava_event_never_panics(value in prop_oneof![any_json(), shaped(STRAVA_EVENT_KEYS)]) {
            let _outcome = strava_event(&value);
        }

        #[test]
        fn strava_activity_never_panics(value in prop_oneof![any_json(), shaped(STRAVA_ACTIVITY_KEYS)], t in any::<i64>()) {
            let when = DateTime::from_timestamp(t % 253_402_300_799, 0);
            if let Ok(post) = strava_activity(&value, when) {
                prop_assert!(parse_time(&post.created_at_platform).is_some());
                prop_assert!(!post.post_data.to_string().contains("\\u0000"));
            }
            let _outcome = strava_activity_page(&Value::Array(vec![value]));
        }

        #[test]
        fn instagram_parsers_never_panic(value in prop_oneof![any_json(), shaped(IG_MEDIA_KEYS)], change in any_json()) {
            if let Ok(post) = instagram_media(&value) {
                prop_assert!(parse_time(&post.created_at_platform).is_some());
            }
            let payload = json!({"object": "instagram", "entry": [{"id": "1", "changes": [change.clone()]}, change]});
            let _outcome = instagram_changes(&payload);
            let _outcome = instagram_changes(&value);
            let _outcome = instagram_media_page(&json!({"data": [value], "paging": {"next": "x"}}));
        }

        #[test]
        fn bluesky_post_view_never_panics(value in prop_oneof![any_json(), shaped(BSKY_POST_KEYS)], reason in any_json()) {
            let item = json!({"post": value, "reason": reason});
            if let Ok(FeedEntry::Post(post)) = bluesky_feed_item(&item, "did:plc:abc") {
                prop_assert!(post.platform_post_id.starts_with("at://"));
            }
            let _outcome = bluesky_post(&value, "did:plc:abc");
            let _outcome = bluesky_feed_page(&json!({"feed": [item], "cursor": "c"}), "did:plc:abc");
        }

        #[test]
        fn headers_and_error_bodies_never_panic(limit in ".{0,20}", usage in ".{0,20}", body in prop::collection::vec(any::<u8>(), 0..64), t in 0i64..253_402_300_000) {
            if let (Some(usage), Some(now)) = (
                StravaUsage::parse(Some(&limit), Some(&usage)),
                DateTime::from_timestamp(t, 0),
            ) && let Some(resume) = usage.resume_at(now)
            {
                prop_assert!(resume > now);
            }
            let _outcome = strava_message(&body);
            let _outcome = graph_error(&body);
            let _outcome = parse_time(&String::from_utf8_lossy(&body));
        }
    }
}
