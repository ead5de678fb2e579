//! Supabase access tokens as the Supabase Auth server issues them: an HS256
//! JWT signed with the project's JWT secret (the app's `supabase_jwt_secret`),
//! with the user's id as `sub` and the `authenticated` role and audience;
//! and users as Supabase Auth creates them.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use uuid::Uuid;

/// A signed-in `user`'s access token, signed with `secret`, expiring
/// `expires_in` seconds from now (negative for one already expired).
#[allow(clippy::expect_used)] // HMAC accepts a key of any length: the expect cannot fire
pub fn supabase_access_token(secret: &str, user: Uuid, expires_in: i64) -> String {
    let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"HS256","typ":"JWT"}"#);
    let claims = URL_SAFE_NO_PAD.encode(
        serde_json::json!({
            "sub": user,
            "role": "authenticated",
            "aud": "authenticated",
            "exp": chrono::Utc::now().timestamp() + expires_in,
        })
        .to_string(),
    );
    let input = format!("{header}.{claims}");
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
    mac.update(input.as_bytes());
    format!(
        "{input}.{}",
        URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    )
}

/// A new user as Supabase Auth signs one up: an `auth.users` row (the
/// schema's trigger adds `public.users`), email `<id>@example.test`.
pub async fn create_user(sql: &tokio_postgres::Client) -> Result<Uuid, tokio_postgres::Error> {
    let id = Uuid::new_v4();
    sql.execute(
        "insert into auth.users (id, email) values ($1, $2)",
        &[&id, &format!("{id}@example.test")],
    )
    .await?;
    Ok(id)
}
