//! A loopback fake of the Strava API v3, following `shared/PLATFORMS.md`
//! "Strava" and Strava's API reference field by field:
//!
//! - `GET /api/v3/activities/{id}` (`Authorization: Bearer <access token>`)
//!   -> the `DetailedActivity` (see [`FakeStrava::activity_json`] for every
//!   field), 404 `Record Not Found` when the athlete has no such activity.
//! - `GET /api/v3/athlete/activities?before=&after=&page=&per_page=` ->
//!   a JSON array of `SummaryActivity` (the detailed object without
//!   `description`, `photos`, `calories`, `segment_efforts`, `splits_metric`,
//!   `laps`, `gear`, `device_name`, `embed_token`; `resource_state` 2).
//!   `before`/`after` are Unix seconds, exclusive, on `start_date`;
//!   `per_page` defaults to 30 (at most 200), `page` to 1. Newest first, but
//!   oldest first when `after` is given (as Strava answers; the reference
//!   does not say). A page past the end is `[]`.
//! - `POST /oauth/token` (form or query) `grant_type=refresh_token`,
//!   `refresh_token`, `client_id`, `client_secret` -> `{token_type:
//!   "Bearer", access_token, expires_at, expires_in, refresh_token}`: a new
//!   access token for 6 hours and a **rotated** refresh token (the old one
//!   stops working). An unknown refresh token is 400 `Bad Request`
//!   (`RefreshToken refresh_token invalid`); wrong client credentials, when
//!   the fake was told them ([`FakeStrava::expect_client`]), 401.
//! - OAuth (Strava's "Authentication" guide; shared rules in
//!   [`crate::fakes::oauth`]): `GET /oauth/authorize?client_id&redirect_uri&
//!   response_type=code&approval_prompt&scope&state[&code_challenge&
//!   code_challenge_method=S256]` -> 302 to `redirect_uri?state&code&scope`
//!   (the accepted scope, comma-separated, as Strava sends it) for the
//!   athlete set with [`FakeStrava::consent_as`], or
//!   `?error=access_denied&state` after [`FakeStrava::deny_next`]. Strava
//!   does not document PKCE; the fake checks a `code_challenge` when one was
//!   sent, so a client that sends one is held to it.
//!   `POST /oauth/token` `grant_type=authorization_code`, `client_id`,
//!   `client_secret`, `code` (and `redirect_uri`, `code_verifier` when the
//!   authorize request had them) -> `{token_type, expires_at, expires_in,
//!   refresh_token, access_token, athlete: {id, username, resource_state:
//!   2, firstname, lastname, city, state, country, sex, premium, summit,
//!   created_at, updated_at, profile_medium, profile}}`; an unknown, used or
//!   expired code, a mismatched `redirect_uri` or `code_verifier` is 400
//!   `Bad Request` (`AuthorizationCode code invalid` / `code_verifier
//!   invalid`). Codes are single-use.
//!   `POST /oauth/deauthorize` (`access_token` in the form, query or as
//!   Bearer) -> `{"access_token": <token>}` and every token of the athlete
//!   stops working; an unknown token is 401.
//!   `GET /api/v3/athlete` -> the authenticated athlete (the same fields as
//!   the token answer's `athlete`, `resource_state` 3).
//! - Errors are `{"message", "errors": [{"resource", "field", "code"}]}`; a
//!   missing, unknown, revoked or expired access token is 401
//!   `Authorization Error` (`Athlete access_token invalid`).
//! - Rate limits on every answer: `X-RateLimit-Limit: 200,2000` and
//!   `X-RateLimit-Usage: <15 min>,<day>` (all requests), and
//!   `X-ReadRateLimit-Limit: 100,1000` / `X-ReadRateLimit-Usage` (GETs).
//!   A request once a window is full is 429 `Rate Limit Exceeded`
//!   (`Application rate limit exceeded`) and is not counted.
//!
//! Tests set usage and limits ([`FakeStrava::set_usage`],
//! [`FakeStrava::set_limits`]) and inject faults for the next requests
//! ([`FakeStrava::fail_next`], also on `/oauth/token` for 5xx and 429
//! during refreshes). [`FakeStrava::instant`] lifts the rate limits so a
//! benchmark can send as many requests as it likes; the fake never sleeps.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use rand::RngCore;
use serde_json::{Value, json};

use crate::KitError;
use crate::fake::{FakeServer, RecordedRequest};
use crate::fakes::oauth::{self, Grant, OAuth, Refusal, Rules};

/// Access tokens last six hours.
const ACCESS_LIFETIME_SECONDS: i64 = 6 * 3600;

/// The tokens the fake issued to an athlete.
#[derive(Debug, Clone)]
pub struct StravaTokens {
    /// Bearer access token.
    pub access_token: String,
    /// Refresh token (rotates on every refresh).
    pub refresh_token: String,
    /// Unix seconds when the access token expires.
    pub expires_at: i64,
}

/// A canned answer for the next matching request.
#[derive(Debug, Clone)]
pub struct Fault {
    /// Only requests whose path contains this (None: any).
    pub path_contains: Option<String>,
    /// HTTP status.
    pub status: u16,
    /// JSON body.
    pub body: Value,
    /// `Retry-After` seconds, if any.
    pub retry_after: Option<u64>,
}

impl Fault {
    /// `status` with Strava's error body for it.
    pub fn status(status: u16) -> Self {
        let message = match status {
            429 => "Rate Limit Exceeded",
            401 => "Authorization Error",
            404 => "Record Not Found",
            s if s >= 500 => "Internal Server Error",
            _ => "Bad Request",
        };
        Fault {
            path_contains: None,
            status,
            body: error_body(message, "Application", "request", "failed"),
            retry_after: None,
        }
    }

    /// Only for requests whose path contains `needle`.
    pub fn on_path(mut self, needle: &str) -> Self {
        self.path_contains = Some(needle.to_string());
        self
    }

    /// With `Retry-After: seconds`.
    pub fn retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds);
        self
    }
}

struct Athlete {
    activities: BTreeMap<u64, Value>,
    refresh_token: String,
    username: String,
    firstname: String,
    lastname: String,
}

impl Athlete {
    fn new(id: u64, refresh_token: String) -> Self {
        Athlete {
            activities: BTreeMap::new(),
            refresh_token,
            username: format!("athlete{id}"),
            firstname: "Test".into(),
            lastname: format!("Athlete {id}"),
        }
    }
}

struct State {
    oauth: OAuth,
    athletes: BTreeMap<u64, Athlete>,
    /// access token -> (athlete, expires_at)
    access: HashMap<String, (u64, i64)>,
    limits: (u64, u64),
    read_limits: (u64, u64),
    usage: (u64, u64),
    read_usage: (u64, u64),
    faults: VecDeque<(usize, Fault)>,
    client: Option<(String, String)>,
    refreshes: usize,
}

/// A running fake Strava; stops when dropped.
pub struct FakeStrava {
    server: FakeServer,
    state: Arc<Mutex<State>>,
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn token() -> String {
    let mut bytes = [0u8; 20];
    rand::thread_rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

fn rfc3339(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn error_body(message: &str, resource: &str, field: &str, code: &str) -> Value {
    json!({"message": message, "errors": [{"resource": resource, "field": field, "code": code}]})
}

impl FakeStrava {
    /// Starts the fake with Strava's default limits (200/2,000 overall,
    /// 100/1,000 reads) and no usage.
    pub async fn start() -> Result<Self, KitError> {
        let state = Arc::new(Mutex::new(State {
            oauth: OAuth::new(Rules {
                access_lifetime: ACCESS_LIFETIME_SECONDS,
                refresh_tokens: true,
                rotate_refresh: true,
                prefix: "",
                refresh_scope: None,
            }),
            athletes: BTreeMap::new(),
            access: HashMap::new(),
            limits: (200, 2000),
            read_limits: (100, 1000),
            usage: (0, 0),
            read_usage: (0, 0),
            faults: VecDeque::new(),
            client: None,
            refreshes: 0,
        }));
        let handler_state = state.clone();
        let server = FakeServer::start(move |request| answer(&handler_state, request)).await?;
        Ok(FakeStrava { server, state })
    }

    /// `http://127.0.0.1:<port>`: the `strava_api_url`.
    pub fn url(&self) -> String {
        self.server.url()
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.server.requests()
    }

    /// Requests whose path starts with `prefix`.
    pub fn requests_to(&self, prefix: &str) -> Vec<RecordedRequest> {
        self.requests()
            .into_iter()
            .filter(|r| r.uri.path().starts_with(prefix))
            .collect()
    }

    /// Adds athlete `id` with tokens valid for six hours.
    pub fn add_athlete(&self, id: u64) -> StravaTokens {
        self.add_athlete_expiring(id, Utc::now().timestamp() + ACCESS_LIFETIME_SECONDS)
    }

    /// Adds athlete `id` whose access token expires at `expires_at` (Unix
    /// seconds; in the past for an expired token).
    pub fn add_athlete_expiring(&self, id: u64, expires_at: i64) -> StravaTokens {
        let tokens = StravaTokens {
            access_token: token(),
            refresh_token: token(),
            expires_at,
        };
        let mut state = lock(&self.state);
        state
            .athletes
            .insert(id, Athlete::new(id, tokens.refresh_token.clone()));
        state
            .access
            .insert(tokens.access_token.clone(), (id, expires_at));
        // A re-added athlete has only the new refresh token, as before.
        state.oauth.revoke_user(&id.to_string());
        state
            .oauth
            .adopt_refresh(&id.to_string(), &tokens.refresh_token);
        tokens
    }

    /// Sets the athlete's `username`, `firstname` and `lastname` (default
    /// `athlete<id>`, `Test`, `Athlete <id>`).
    pub fn name_athlete(&self, id: u64, username: &str, firstname: &str, lastname: &str) {
        if let Some(a) = lock(&self.state).athletes.get_mut(&id) {
            a.username = username.into();
            a.firstname = firstname.into();
            a.lastname = lastname.into();
        }
    }

    /// Authorizations are approved by athlete `id` from now on (added
    /// without tokens if new).
    pub fn consent_as(&self, id: u64) {
        let mut state = lock(&self.state);
        state
            .athletes
            .entry(id)
            .or_insert_with(|| Athlete::new(id, format!("none-{}", token())));
        state.oauth.consent_as(&id.to_string());
    }

    /// The next `times` authorizations answer `error=access_denied`.
    pub fn deny_next(&self, times: usize) {
        lock(&self.state).oauth.deny_next(times);
    }

    /// Tokens for athlete `id` (added if new) as a completed connect would
    /// give them, issued at `issued_at` (Unix seconds; in the past for a
    /// token that is due or expired): the refresh token is the athlete's
    /// current one.
    pub fn grant(&self, id: u64, issued_at: i64) -> StravaTokens {
        let mut state = lock(&self.state);
        state
            .athletes
            .entry(id)
            .or_insert_with(|| Athlete::new(id, String::new()));
        let grant = state
            .oauth
            .mint(&id.to_string(), "read,activity:read_all", issued_at);
        remember(&mut state, id, &grant)
    }

    /// Successful code exchanges so far.
    pub fn code_exchanges(&self) -> usize {
        lock(&self.state).oauth.exchanges
    }

    /// Access tokens revoked through `POST /oauth/deauthorize`.
    pub fn deauthorizations(&self) -> Vec<String> {
        lock(&self.state).oauth.revocations.clone()
    }

    /// Whether `access_token` works now.
    pub fn access_valid(&self, access_token: &str) -> bool {
        let now = Utc::now().timestamp();
        lock(&self.state)
            .access
            .get(access_token)
            .is_some_and(|(_, expires_at)| *expires_at > now)
    }

    /// No rate limits (a benchmark's "instant" fake: nothing sleeps, nothing
    /// is refused for volume).
    pub fn instant(&self) {
        let mut state = lock(&self.state);
        state.limits = (u64::MAX, u64::MAX);
        state.read_limits = (u64::MAX, u64::MAX);
    }

    /// Access tokens live `seconds` from now on (6 hours by default).
    pub fn set_access_lifetime(&self, seconds: i64) {
        lock(&self.state).oauth.set_access_lifetime(seconds);
    }

    /// Stores (or replaces) an activity of `athlete`: a `DetailedActivity`
    /// such as [`FakeStrava::activity_json`] makes.
    pub fn put_activity(&self, athlete: u64, activity: Value) {
        let id = activity["id"].as_u64().unwrap_or(0);
        let mut state = lock(&self.state);
        if let Some(a) = state.athletes.get_mut(&athlete) {
            a.activities.insert(id, activity);
        }
    }

    /// Deletes an activity.
    pub fn remove_activity(&self, athlete: u64, id: u64) {
        if let Some(a) = lock(&self.state).athletes.get_mut(&athlete) {
            a.activities.remove(&id);
        }
    }

    /// Revokes every access and refresh token of `athlete` (the user
    /// deauthorized the app): further calls are 401.
    pub fn revoke(&self, athlete: u64) {
        let mut state = lock(&self.state);
        state.access.retain(|_, (owner, _)| *owner != athlete);
        state.oauth.revoke_user(&athlete.to_string());
        if let Some(a) = state.athletes.get_mut(&athlete) {
            a.refresh_token = format!("revoked-{}", token());
        }
    }

    /// The athlete's current refresh token.
    pub fn refresh_token(&self, athlete: u64) -> Option<String> {
        lock(&self.state)
            .athletes
            .get(&athlete)
            .map(|a| a.refresh_token.clone())
    }

    /// Token refreshes answered so far.
    pub fn refreshes(&self) -> usize {
        lock(&self.state).refreshes
    }

    /// Requires these client credentials on `/oauth/token`.
    pub fn expect_client(&self, client_id: &str, client_secret: &str) {
        let mut state = lock(&self.state);
        state.client = Some((client_id.into(), client_secret.into()));
        state.oauth.expect_client(client_id, client_secret);
    }

    /// Sets the overall limits (15 minutes, day).
    pub fn set_limits(&self, short: u64, daily: u64) {
        lock(&self.state).limits = (short, daily);
    }

    /// Sets the read limits (15 minutes, day).
    pub fn set_read_limits(&self, short: u64, daily: u64) {
        lock(&self.state).read_limits = (short, daily);
    }

    /// Sets the overall usage so far (15 minutes, day); read usage follows
    /// it, capped at... nothing: set it with [`FakeStrava::set_read_usage`].
    pub fn set_usage(&self, short: u64, daily: u64) {
        lock(&self.state).usage = (short, daily);
    }

    /// Sets the read usage so far.
    pub fn set_read_usage(&self, short: u64, daily: u64) {
        lock(&self.state).read_usage = (short, daily);
    }

    /// The next `times` matching requests answer with `fault`.
    pub fn fail_next(&self, times: usize, fault: Fault) {
        lock(&self.state).faults.push_back((times, fault));
    }

    /// A complete `DetailedActivity` as Strava sends it: `id`,
    /// `resource_state` 3, `external_id`, `upload_id`, `athlete {id,
    /// resource_state}`, `name`, `distance` (m), `moving_time` and
    /// `elapsed_time` (s), `total_elevation_gain` (m), `elev_high`,
    /// `elev_low`, `type` and `sport_type`, `start_date` (UTC, `Z`),
    /// `start_date_local` (local wall time, also written with `Z`),
    /// `timezone`, `utc_offset`, `start_latlng`, `end_latlng`,
    /// `achievement_count`, `kudos_count`, `comment_count`,
    /// `athlete_count`, `photo_count`, `total_photo_count`, `map {id,
    /// polyline, summary_polyline, resource_state}`, `trainer`, `commute`,
    /// `manual`, `private`, `visibility`, `flagged`, `gear_id`,
    /// `average_speed`, `max_speed`, `has_kudoed`, `description`,
    /// `calories`, `device_name`, `embed_token`, `photos {primary {id,
    /// unique_id, urls {"100", "600"}, source}, use_primary_photo, count}`,
    /// `segment_efforts`, `splits_metric`, `laps`. With `photos` when
    /// `photo_url_base` is given.
    pub fn activity_json(
        id: u64,
        athlete: u64,
        name: &str,
        description: Option<&str>,
        start: DateTime<Utc>,
        photo_url_base: Option<&str>,
    ) -> Value {
        let photos = match photo_url_base {
            Some(base) => json!({
                "primary": {
                    "id": null,
                    "unique_id": format!("{id}-photo"),
                    "urls": {
                        "100": format!("{base}/{id}-128x96.jpg"),
                        "600": format!("{base}/{id}-768x576.jpg"),
                    },
                    "source": 1
                },
                "use_primary_photo": true,
                "count": 1
            }),
            None => json!({"primary": null, "count": 0}),
        };
        let photo_count = i64::from(photo_url_base.is_some());
        let mut activity = json!({
            "id": id,
            "resource_state": 3,
            "external_id": format!("garmin_push_{id}"),
            "upload_id": id + 1_000_000,
            "athlete": {"id": athlete, "resource_state": 1},
            "name": name,
            "distance": 28099.0,
            "moving_time": 4207,
            "elapsed_time": 4410,
            "total_elevation_gain": 516.0,
            "elev_high": 104.2,
            "elev_low": 8.5,
            "type": "Ride",
            "sport_type": "MountainBikeRide",
            "start_date": rfc3339(start),
            "start_date_local": rfc3339(start - chrono::Duration::hours(8)),
            "timezone": "(GMT-08:00) America/Los_Angeles",
            "utc_offset": -28800,
        });
        let more = json!({
            "start_latlng": [37.83, -122.26],
            "end_latlng": [37.83, -122.26],
            "achievement_count": 0,
            "kudos_count": 19,
            "comment_count": 0,
            "athlete_count": 1,
            "photo_count": 0,
            "total_photo_count": photo_count,
            "map": {"id": format!("a{id}"), "polyline": "ki{eFvqfiVqAWQIGEEKAYJgBVqDJ{BHa@jAkNJw@Pw@V{APs@", "summary_polyline": "ki{eFvqfiVsBmA`Feh@qg@iX`B}JeCcCqGjIq~@kf@cM{KeHeX", "resource_state": 3},
            "trainer": false,
            "commute": false,
            "manual": false,
            "private": false,
            "visibility": "everyone",
            "flagged": false,
            "gear_id": "b12345678987654321",
            "average_speed": 6.679,
            "max_speed": 18.5,
            "has_kudoed": false,
            "description": description,
            "calories": 870.2,
            "device_name": "Garmin Edge 1030",
            "embed_token": "18e4615989b47dd4ff3dc711b0aa4502e4b311a9",
            "photos": photos,
            "segment_efforts": [],
            "splits_metric": [],
            "laps": [],
        });
        if let (Some(base), Some(more)) = (activity.as_object_mut(), more.as_object()) {
            base.extend(more.clone());
        }
        activity
    }
}

/// The detailed activity cut to its `SummaryActivity` form.
fn summary(detailed: &Value) -> Value {
    let mut summary = detailed.clone();
    if let Some(map) = summary.as_object_mut() {
        for key in [
            "description",
            "photos",
            "calories",
            "segment_efforts",
            "splits_metric",
            "laps",
            "gear",
            "device_name",
            "embed_token",
        ] {
            map.remove(key);
        }
        map.insert("resource_state".into(), json!(2));
    }
    summary
}

fn query(request: &RecordedRequest) -> HashMap<String, String> {
    url::form_urlencoded::parse(request.uri.query().unwrap_or("").as_bytes())
        .into_owned()
        .collect()
}

fn respond(
    state: &State,
    status: u16,
    body: &Value,
    retry_after: Option<u64>,
) -> http::Response<Bytes> {
    let mut builder = http::Response::builder()
        .status(status)
        .header("content-type", "application/json; charset=utf-8")
        .header(
            "x-ratelimit-limit",
            format!("{},{}", state.limits.0, state.limits.1),
        )
        .header(
            "x-ratelimit-usage",
            format!("{},{}", state.usage.0, state.usage.1),
        )
        .header(
            "x-readratelimit-limit",
            format!("{},{}", state.read_limits.0, state.read_limits.1),
        )
        .header(
            "x-readratelimit-usage",
            format!("{},{}", state.read_usage.0, state.read_usage.1),
        );
    if let Some(seconds) = retry_after {
        builder = builder.header("retry-after", seconds.to_string());
    }
    builder
        .body(Bytes::from(body.to_string()))
        .unwrap_or_else(|_| http::Response::new(Bytes::new()))
}

fn answer(shared: &Mutex<State>, request: &RecordedRequest) -> http::Response<Bytes> {
    let mut state = lock(shared);
    let read = request.method == http::Method::GET;
    let full = |(used, limit): ((u64, u64), (u64, u64))| used.0 >= limit.0 || used.1 >= limit.1;
    if full((state.usage, state.limits)) || (read && full((state.read_usage, state.read_limits))) {
        let body = error_body(
            "Rate Limit Exceeded",
            "Application",
            "rate limit",
            "exceeded",
        );
        return respond(&state, 429, &body, None);
    }
    state.usage = (state.usage.0 + 1, state.usage.1 + 1);
    if read {
        state.read_usage = (state.read_usage.0 + 1, state.read_usage.1 + 1);
    }

    let path = request.uri.path().to_string();
    let fault = state.faults.iter().position(|(_, f)| {
        f.path_contains
            .as_ref()
            .is_none_or(|n| path.contains(n.as_str()))
    });
    if let Some(index) = fault {
        let (times, fault) = state.faults[index].clone();
        if times <= 1 {
            state.faults.remove(index);
        } else {
            state.faults[index].0 = times - 1;
        }
        return respond(&state, fault.status, &fault.body, fault.retry_after);
    }

    if request.method == http::Method::POST && path == "/oauth/token" {
        return token_endpoint(&mut state, request);
    }
    if read && path == "/oauth/authorize" {
        return authorize(&mut state, request);
    }
    if request.method == http::Method::POST && path == "/oauth/deauthorize" {
        return deauthorize(&mut state, request);
    }
    if !read {
        return respond(
            &state,
            404,
            &error_body("Record Not Found", "resource", "path", "invalid"),
            None,
        );
    }
    let unauthorized = || error_body("Authorization Error", "Athlete", "access_token", "invalid");
    let bearer = request
        .headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_string);
    let now = Utc::now().timestamp();
    let athlete = match bearer.and_then(|t| state.access.get(&t).copied()) {
        Some((athlete, expires_at)) if expires_at > now => athlete,
        _ => return respond(&state, 401, &unauthorized(), None),
    };

    if path == "/api/v3/athlete" {
        let body = match state.athletes.get(&athlete) {
            Some(a) => athlete_json(athlete, a, 3),
            None => error_body("Record Not Found", "Athlete", "id", "not found"),
        };
        return respond(&state, 200, &body, None);
    }
    if let Some(id) = path.strip_prefix("/api/v3/activities/") {
        let activity = id
            .parse::<u64>()
            .ok()
            .and_then(|id| state.athletes.get(&athlete)?.activities.get(&id).cloned());
        return match activity {
            Some(activity) => respond(&state, 200, &activity, None),
            None => respond(
                &state,
                404,
                &error_body("Record Not Found", "Activity", "id", "not found"),
                None,
            ),
        };
    }
    if path == "/api/v3/athlete/activities" {
        let params = query(request);
        let number = |k: &str| params.get(k).and_then(|v| v.parse::<i64>().ok());
        let per_page = number("per_page").unwrap_or(30).clamp(1, 200);
        let page = number("page").unwrap_or(1).max(1);
        let (before, after) = (number("before"), number("after"));
        let mut list: Vec<(i64, Value)> = state
            .athletes
            .get(&athlete)
            .map(|a| a.activities.values().cloned().collect::<Vec<_>>())
            .unwrap_or_default()
            .into_iter()
            .filter_map(|a| {
                let start = a["start_date"]
                    .as_str()
                    .and_then(|s| DateTime::parse_from_rfc3339(s).ok())?
                    .timestamp();
                Some((start, a))
            })
            .filter(|(start, _)| {
                before.is_none_or(|b| *start < b) && after.is_none_or(|a| *start > a)
            })
            .collect();
        list.sort_by_key(|(start, a)| (*start, a["id"].as_u64().unwrap_or(0)));
        if after.is_none() {
            list.reverse();
        }
        let skip = usize::try_from((page - 1) * per_page).unwrap_or(usize::MAX);
        let take = usize::try_from(per_page).unwrap_or(30);
        let items: Vec<Value> = list
            .into_iter()
            .skip(skip)
            .take(take)
            .map(|(_, a)| summary(&a))
            .collect();
        return respond(&state, 200, &Value::Array(items), None);
    }
    respond(
        &state,
        404,
        &error_body("Record Not Found", "resource", "path", "invalid"),
        None,
    )
}

/// The athlete as `/api/v3/athlete` and the token answer give it.
fn athlete_json(id: u64, a: &Athlete, resource_state: u8) -> Value {
    json!({
        "id": id,
        "username": a.username,
        "resource_state": resource_state,
        "firstname": a.firstname,
        "lastname": a.lastname,
        "bio": null,
        "city": "San Francisco",
        "state": "California",
        "country": "United States",
        "sex": "F",
        "premium": true,
        "summit": true,
        "created_at": "2017-11-14T02:30:05Z",
        "updated_at": "2018-02-06T19:32:20Z",
        "badge_type_id": 4,
        "weight": 69.0,
        "profile_medium": "https://xxxxxx.cloudfront.net/pictures/athletes/123456789/123456789/2/medium.jpg",
        "profile": "https://xxxxx.cloudfront.net/pictures/athletes/123456789/123456789/2/large.jpg",
        "friend": null,
        "follower": null,
    })
}

/// Puts a grant's access token where the API endpoints look and makes its
/// refresh token the athlete's current one.
fn remember(state: &mut State, athlete: u64, grant: &Grant) -> StravaTokens {
    state
        .access
        .insert(grant.access_token.clone(), (athlete, grant.expires_at));
    let refresh_token = grant.refresh_token.clone().unwrap_or_default();
    if let Some(a) = state.athletes.get_mut(&athlete) {
        a.refresh_token = refresh_token.clone();
    }
    StravaTokens {
        access_token: grant.access_token.clone(),
        refresh_token,
        expires_at: grant.expires_at,
    }
}

fn authorize(state: &mut State, request: &RecordedRequest) -> http::Response<Bytes> {
    let scope = oauth::params(request)
        .get("scope")
        .cloned()
        .unwrap_or_else(|| "read".into());
    match state.oauth.authorize(request, &[("scope", scope)]) {
        Ok(location) => http::Response::builder()
            .status(302)
            .header("location", location)
            .body(Bytes::new())
            .unwrap_or_else(|_| http::Response::new(Bytes::new())),
        Err(message) => {
            let body = error_body("Bad Request", "Application", "redirect_uri", &message);
            respond(state, 400, &body, None)
        }
    }
}

fn deauthorize(state: &mut State, request: &RecordedRequest) -> http::Response<Bytes> {
    let presented = oauth::params(request)
        .get("access_token")
        .cloned()
        .or_else(|| oauth::bearer(request))
        .unwrap_or_default();
    let now = Utc::now().timestamp();
    let Some((athlete, _)) = state
        .access
        .get(&presented)
        .copied()
        .filter(|(_, expires_at)| *expires_at > now)
    else {
        let body = error_body("Authorization Error", "Athlete", "access_token", "invalid");
        return respond(state, 401, &body, None);
    };
    state.oauth.revoke(&presented);
    state.access.retain(|_, (owner, _)| *owner != athlete);
    state.oauth.revoke_user(&athlete.to_string());
    if let Some(a) = state.athletes.get_mut(&athlete) {
        a.refresh_token = format!("revoked-{}", token());
    }
    respond(state, 200, &json!({"access_token": presented}), None)
}

fn token_endpoint(state: &mut State, request: &RecordedRequest) -> http::Response<Bytes> {
    let params = oauth::params(request);
    let grant_type = params.get("grant_type").map(String::as_str);
    let result = match grant_type {
        Some("refresh_token") => state.oauth.refresh(request),
        Some("authorization_code") => state.oauth.exchange(request),
        _ => {
            let body = error_body("Bad Request", "RefreshToken", "grant_type", "invalid");
            return respond(state, 400, &body, None);
        }
    };
    let grant = match result {
        Ok(grant) => grant,
        Err(refusal) => {
            let (status, body) = match refusal {
                Refusal::Client => (
                    401,
                    error_body("Bad Request", "Application", "client_id", "invalid"),
                ),
                Refusal::RefreshToken => (
                    400,
                    error_body("Bad Request", "RefreshToken", "refresh_token", "invalid"),
                ),
                Refusal::Verifier => (
                    400,
                    error_body(
                        "Bad Request",
                        "AuthorizationCode",
                        "code_verifier",
                        "invalid",
                    ),
                ),
                Refusal::Code(_) => (
                    400,
                    error_body("Bad Request", "AuthorizationCode", "code", "invalid"),
                ),
                Refusal::Request(field) => (
                    400,
                    error_body("Bad Request", "Application", field, "missing"),
                ),
            };
            return respond(state, status, &body, None);
        }
    };
    let athlete = grant.user.parse::<u64>().unwrap_or(0);
    let tokens = remember(state, athlete, &grant);
    let mut body = json!({
        "token_type": "Bearer",
        "access_token": tokens.access_token,
        "expires_at": tokens.expires_at,
        "expires_in": grant.expires_in,
        "refresh_token": tokens.refresh_token,
    });
    if grant_type == Some("refresh_token") {
        state.refreshes += 1;
    } else if let Some(a) = state.athletes.get(&athlete) {
        body["athlete"] = athlete_json(athlete, a, 2);
    }
    respond(state, 200, &body, None)
}
