#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Self-tests of the OAuth endpoints of the loopback platform fakes
//! (`outpost_test_kit::fakes::{strava, instagram, x, linkedin}`): plain HTTP
//! calls against them, so the connect and token-rotation tests that lean on
//! them lean on the documented behaviour (single-use codes, PKCE S256,
//! rotating refresh tokens, `invalid_grant`, revocation, identity).

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use outpost_test_kit::fakes::instagram::{FakeInstagram, Fault as InstagramFault};
use outpost_test_kit::fakes::linkedin::FakeLinkedIn;
use outpost_test_kit::fakes::oauth::s256;
use outpost_test_kit::fakes::strava::FakeStrava;
use outpost_test_kit::fakes::x::FakeX;
use serde_json::Value;

type Res = anyhow::Result<()>;

const REDIRECT: &str = "https://app.example/connect/cb";
const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// Follows an authorize URL once: the `Location` the fake redirects to.
async fn authorize(url: &str) -> anyhow::Result<reqwest::Url> {
    let answer = client().get(url).send().await?;
    assert_eq!(answer.status(), 302, "{}", answer.text().await?);
    let location = answer.headers()["location"].to_str()?.to_string();
    Ok(reqwest::Url::parse(&location)?)
}

fn param(url: &reqwest::Url, name: &str) -> Option<String> {
    url.query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

fn authorize_url(base: &str, path: &str, client_id: &str, scope: &str) -> String {
    let mut url = reqwest::Url::parse(&format!("{base}{path}")).unwrap();
    url.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", client_id)
        .append_pair("redirect_uri", REDIRECT)
        .append_pair("scope", scope)
        .append_pair("state", "s-1")
        .append_pair("code_challenge", &s256(VERIFIER))
        .append_pair("code_challenge_method", "S256");
    url.to_string()
}

async fn post_form(
    url: &str,
    form: &[(&str, &str)],
    basic: Option<(&str, &str)>,
) -> anyhow::Result<(u16, Value)> {
    let mut request = client().post(url).form(form);
    if let Some((id, secret)) = basic {
        request = request.header(
            "authorization",
            format!("Basic {}", STANDARD.encode(format!("{id}:{secret}"))),
        );
    }
    let answer = request.send().await?;
    let status = answer.status().as_u16();
    Ok((status, answer.json().await.unwrap_or(Value::Null)))
}

async fn get_bearer(url: &str, token: &str) -> anyhow::Result<(u16, Value)> {
    let answer = client().get(url).bearer_auth(token).send().await?;
    let status = answer.status().as_u16();
    Ok((status, answer.json().await.unwrap_or(Value::Null)))
}

#[tokio::test]
async fn strava_code_flow_pkce_single_use_rotation_and_deauthorize() -> Res {
    let strava = FakeStrava::start().await?;
    strava.expect_client("123", "sec");
    strava.consent_as(42);
    strava.name_athlete(42, "marianne", "Marianne", "V");
    let url = authorize_url(
        &strava.url(),
        "/oauth/authorize",
        "123",
        "read,activity:read_all",
    );
    let back = authorize(&url).await?;
    assert_eq!(param(&back, "state").as_deref(), Some("s-1"));
    assert_eq!(
        param(&back, "scope").as_deref(),
        Some("read,activity:read_all")
    );
    let code = param(&back, "code").unwrap();
    let token_url = format!("{}/oauth/token", strava.url());

    // A wrong verifier spends the code: the right one afterwards is refused too.
    let exchange = |code: String, verifier: &'static str| {
        let token_url = token_url.clone();
        async move {
            post_form(
                &token_url,
                &[
                    ("client_id", "123"),
                    ("client_secret", "sec"),
                    ("code", &code),
                    ("grant_type", "authorization_code"),
                    ("redirect_uri", REDIRECT),
                    ("code_verifier", verifier),
                ],
                None,
            )
            .await
        }
    };
    let (status, body) =
        exchange(code.clone(), "wrong-verifier-wrong-verifier-wrong-verifier").await?;
    assert_eq!(status, 400);
    assert_eq!(body["errors"][0]["field"], "code_verifier");
    let (status, body) = exchange(code, VERIFIER).await?;
    assert_eq!(
        (status, body["errors"][0]["field"].as_str()),
        (400, Some("code"))
    );

    let code = param(&authorize(&url).await?, "code").unwrap();
    let (status, body) = exchange(code.clone(), VERIFIER).await?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["athlete"]["id"], 42);
    assert_eq!(body["athlete"]["username"], "marianne");
    let access = body["access_token"].as_str().unwrap().to_string();
    let refresh = body["refresh_token"].as_str().unwrap().to_string();
    assert!(body["expires_at"].as_i64().unwrap() > chrono::Utc::now().timestamp() + 5 * 3600);
    assert_eq!(
        exchange(code, VERIFIER).await?.0,
        400,
        "codes are single-use"
    );

    let (status, me) = get_bearer(&format!("{}/api/v3/athlete", strava.url()), &access).await?;
    assert_eq!((status, me["id"].as_u64()), (200, Some(42)));

    // Rotation: the new refresh token works, the old one is refused.
    let refresh_form = |token: String| {
        let token_url = token_url.clone();
        async move {
            post_form(
                &token_url,
                &[
                    ("client_id", "123"),
                    ("client_secret", "sec"),
                    ("grant_type", "refresh_token"),
                    ("refresh_token", &token),
                ],
                None,
            )
            .await
        }
    };
    let (status, body) = refresh_form(refresh.clone()).await?;
    assert_eq!(status, 200);
    let rotated = body["refresh_token"].as_str().unwrap().to_string();
    assert_ne!(rotated, refresh);
    assert_eq!(strava.refresh_token(42).as_deref(), Some(rotated.as_str()));
    let (status, body) = refresh_form(refresh).await?;
    assert_eq!(
        (status, body["errors"][0]["resource"].as_str()),
        (400, Some("RefreshToken"))
    );
    assert_eq!(strava.refreshes(), 1);

    // A minted grant is refreshable too (what token-rotation tests start from).
    let old = strava.grant(7, chrono::Utc::now().timestamp() - 7 * 3600);
    assert!(
        !strava.access_valid(&old.access_token),
        "issued 7 h ago: expired"
    );
    assert_eq!(refresh_form(old.refresh_token).await?.0, 200);

    // Deauthorize: every token of the athlete stops working.
    let (status, body) = post_form(
        &format!("{}/oauth/deauthorize", strava.url()),
        &[("access_token", &access)],
        None,
    )
    .await?;
    assert_eq!(
        (status, body["access_token"].as_str()),
        (200, Some(access.as_str()))
    );
    assert_eq!(
        get_bearer(&format!("{}/api/v3/athlete", strava.url()), &access)
            .await?
            .0,
        401
    );
    assert_eq!(refresh_form(rotated).await?.0, 400);

    strava.deny_next(1);
    let denied = authorize(&url).await?;
    assert_eq!(param(&denied, "error").as_deref(), Some("access_denied"));
    assert_eq!(param(&denied, "code"), None);
    Ok(())
}

#[tokio::test]
async fn x_requires_pkce_rotates_refresh_tokens_and_revokes() -> Res {
    let x = FakeX::start().await?;
    x.expect_client("xid", "xsecret");
    x.consent_as("2244994945", "marianne");
    let scope = "tweet.read tweet.write users.read offline.access";
    let mut no_pkce = reqwest::Url::parse(&format!("{}/i/oauth2/authorize", x.url()))?;
    no_pkce
        .query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", "xid")
        .append_pair("redirect_uri", REDIRECT)
        .append_pair("state", "s");
    assert_eq!(client().get(no_pkce.as_str()).send().await?.status(), 400);

    let url = authorize_url(&x.url(), "/i/oauth2/authorize", "xid", scope);
    let code = param(&authorize(&url).await?, "code").unwrap();
    let token_url = format!("{}/2/oauth2/token", x.url());
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", REDIRECT),
        ("code_verifier", VERIFIER),
    ];
    let (status, body) = post_form(&token_url, &form, Some(("xid", "wrong"))).await?;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("unauthorized_client"))
    );
    let (status, body) = post_form(&token_url, &form, Some(("xid", "xsecret"))).await?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["expires_in"], 7200);
    assert_eq!(body["scope"], scope);
    let access = body["access_token"].as_str().unwrap().to_string();
    let refresh = body["refresh_token"].as_str().unwrap().to_string();

    let (status, me) = get_bearer(&format!("{}/2/users/me", x.url()), &access).await?;
    assert_eq!(status, 200);
    assert_eq!(me["data"]["id"], "2244994945");
    assert_eq!(me["data"]["username"], "marianne");

    let refresh_with = |token: String| {
        let token_url = token_url.clone();
        async move {
            post_form(
                &token_url,
                &[("grant_type", "refresh_token"), ("refresh_token", &token)],
                Some(("xid", "xsecret")),
            )
            .await
        }
    };
    x.fail_oauth_next(1, 503, Some("/2/oauth2/token"));
    assert_eq!(refresh_with(refresh.clone()).await?.0, 503);
    assert!(x.refresh_valid(&refresh), "a fault changes nothing");
    let (status, body) = refresh_with(refresh.clone()).await?;
    assert_eq!(status, 200);
    let rotated = body["refresh_token"].as_str().unwrap().to_string();
    let (status, body) = refresh_with(refresh).await?;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant"))
    );

    let (status, body) = post_form(
        &format!("{}/2/oauth2/revoke", x.url()),
        &[("token", &rotated), ("token_type_hint", "refresh_token")],
        Some(("xid", "xsecret")),
    )
    .await?;
    assert_eq!((status, body["revoked"].as_bool()), (200, Some(true)));
    assert_eq!(
        refresh_with(rotated.clone()).await?.1["error"],
        "invalid_grant"
    );
    assert_eq!(x.revocations(), vec![rotated]);

    // Without offline.access there is no refresh token.
    let url = authorize_url(
        &x.url(),
        "/i/oauth2/authorize",
        "xid",
        "tweet.read users.read",
    );
    let code = param(&authorize(&url).await?, "code").unwrap();
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", REDIRECT),
        ("code_verifier", VERIFIER),
    ];
    let (_, body) = post_form(&token_url, &form, Some(("xid", "xsecret"))).await?;
    assert!(body.get("refresh_token").is_none(), "{body}");

    x.deny_next(1);
    let url = authorize_url(&x.url(), "/i/oauth2/authorize", "xid", scope);
    let denied = authorize(&url).await?;
    assert_eq!(param(&denied, "error").as_deref(), Some("access_denied"));
    assert_eq!(param(&denied, "state").as_deref(), Some("s-1"));
    Ok(())
}

#[tokio::test]
async fn linkedin_userinfo_refresh_without_rotation_and_cancel() -> Res {
    let li = FakeLinkedIn::start().await?;
    li.expect_client("lid", "lsecret");
    li.consent_as("yrZCpj2Z12");
    li.name_member("yrZCpj2Z12", "Marianne", "V", "m@example.com");
    let url = authorize_url(
        &li.url(),
        "/oauth/v2/authorization",
        "lid",
        "openid profile email w_member_social",
    );
    let exchange = |code: String, verifier: &'static str| {
        let token_url = format!("{}/oauth/v2/accessToken", li.url());
        async move {
            post_form(
                &token_url,
                &[
                    ("grant_type", "authorization_code"),
                    ("code", &code),
                    ("client_id", "lid"),
                    ("client_secret", "lsecret"),
                    ("redirect_uri", REDIRECT),
                    ("code_verifier", verifier),
                ],
                None,
            )
            .await
        }
    };
    let code = param(&authorize(&url).await?, "code").unwrap();
    let (status, body) = exchange(code, "not-the-verifier-not-the-verifier-not-the-v").await?;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_request"))
    );

    let code = param(&authorize(&url).await?, "code").unwrap();
    let (status, body) = exchange(code, VERIFIER).await?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["expires_in"], 5_184_000);
    assert!(
        body.get("refresh_token").is_none(),
        "no refresh tokens unless enabled"
    );
    let access = body["access_token"].as_str().unwrap().to_string();
    let (status, me) = get_bearer(&format!("{}/v2/userinfo", li.url()), &access).await?;
    assert_eq!((status, me["sub"].as_str()), (200, Some("yrZCpj2Z12")));
    assert_eq!(me["email"], "m@example.com");

    li.enable_refresh_tokens();
    let code = param(&authorize(&url).await?, "code").unwrap();
    let (_, body) = exchange(code, VERIFIER).await?;
    let refresh = body["refresh_token"].as_str().unwrap().to_string();
    let (status, body) = post_form(
        &format!("{}/oauth/v2/accessToken", li.url()),
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", &refresh),
            ("client_id", "lid"),
            ("client_secret", "lsecret"),
        ],
        None,
    )
    .await?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["refresh_token"],
        refresh.as_str(),
        "LinkedIn does not rotate"
    );
    let (status, body) = post_form(
        &format!("{}/oauth/v2/accessToken", li.url()),
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", "nope"),
            ("client_id", "lid"),
            ("client_secret", "lsecret"),
        ],
        None,
    )
    .await?;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant"))
    );

    li.deny_next(1);
    let denied = authorize(&url).await?;
    assert_eq!(
        param(&denied, "error").as_deref(),
        Some("user_cancelled_authorize")
    );
    Ok(())
}

#[tokio::test]
async fn instagram_short_lived_then_long_lived_then_refresh() -> Res {
    let ig = FakeInstagram::start().await?;
    ig.expect_client("igapp", "igsecret");
    ig.consent_as("17841400000000001", "marianne.v");
    let url = authorize_url(
        &ig.url(),
        "/oauth/authorize",
        "igapp",
        "instagram_business_basic,instagram_business_content_publish",
    );
    let back = authorize(&url).await?;
    assert_eq!(back.fragment(), Some("_"));
    let code = param(&back, "code").unwrap();
    let (status, body) = post_form(
        &format!("{}/oauth/access_token", ig.url()),
        &[
            ("client_id", "igapp"),
            ("client_secret", "igsecret"),
            ("grant_type", "authorization_code"),
            ("redirect_uri", REDIRECT),
            ("code", &code),
            ("code_verifier", VERIFIER),
        ],
        None,
    )
    .await?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"][0]["user_id"], "17841400000000001");
    let short = body["data"][0]["access_token"]
        .as_str()
        .unwrap()
        .to_string();

    let me = client()
        .get(format!(
            "{}/me?fields=user_id,username&access_token={short}",
            ig.url()
        ))
        .send()
        .await?
        .json::<Value>()
        .await?;
    assert_eq!(me["user_id"], "17841400000000001");
    assert_eq!(me["username"], "marianne.v");

    let exchange = |token: String, secret: &'static str| {
        let url = format!(
            "{}/access_token?grant_type=ig_exchange_token&client_secret={secret}&access_token={token}",
            ig.url()
        );
        async move {
            let answer = client().get(url).send().await?;
            let status = answer.status().as_u16();
            anyhow::Ok((status, answer.json::<Value>().await?))
        }
    };
    let (status, body) = exchange(short.clone(), "wrong").await?;
    assert_eq!((status, body["error"]["code"].as_i64()), (400, Some(101)));
    let (status, body) = exchange(short.clone(), "igsecret").await?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["expires_in"], 5_184_000);
    let long = body["access_token"].as_str().unwrap().to_string();
    assert_eq!(
        exchange(long.clone(), "igsecret").await?.1["error"]["code"],
        190
    );

    let refresh = |token: String| {
        let url = format!(
            "{}/refresh_access_token?grant_type=ig_refresh_token&access_token={token}",
            ig.url()
        );
        async move {
            let answer = client().get(url).send().await?;
            let status = answer.status().as_u16();
            anyhow::Ok((status, answer.json::<Value>().await?))
        }
    };
    let (status, body) = refresh(long).await?;
    assert_eq!(
        (status, body["error"]["code"].as_i64()),
        (400, Some(100)),
        "younger than 24 h"
    );
    let old = ig.grant(
        "17841400000000001",
        "marianne.v",
        chrono::Utc::now().timestamp() - 3 * 86_400,
    );
    ig.fail_next(
        1,
        InstagramFault::server_error(500).on_path("/refresh_access_token"),
    );
    assert_eq!(refresh(old.access_token.clone()).await?.0, 500);
    let (status, body) = refresh(old.access_token).await?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(ig.refreshes(), 1);
    assert!(ig.access_valid(body["access_token"].as_str().unwrap()));
    Ok(())
}
