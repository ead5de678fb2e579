//! The component's settings, read once per request from Spin variables.

use std::time::Duration;

use shared::{Error, config};

/// Which structured-output request the model API gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseFormat {
    /// `{"type": "json_schema", "json_schema": {..., "strict": true}}`: the
    /// provider constrains the answer to the schema (OpenAI, Venice models
    /// with `supportsResponseSchema`).
    JsonSchema,
    /// `{"type": "json_object"}`: JSON mode, for providers without schemas;
    /// the schema then only travels in the prompt, and validation here does
    /// the rest.
    JsonObject,
}

/// Everything this component reads from its variables.
#[derive(Debug, Clone)]
pub struct Config {
    /// The Postgres connection string.
    pub database_url: String,
    /// The Supabase project's JWT secret (user access tokens).
    pub supabase_jwt_secret: String,
    /// Origin of the OpenAI-compatible API (`https://api.venice.ai`); also
    /// its `allowed_outbound_hosts` entry, which may carry no path.
    pub api_url: String,
    /// Path prefix of the API under that origin (`/api/v1` for Venice,
    /// `/v1` for OpenAI and most others); `/chat/completions` follows.
    pub api_base_path: String,
    /// The bearer key (never logged, never in an error).
    pub api_key: String,
    /// The model asked.
    pub model: String,
    /// The provider's name in `ai_text_runs` and `api_logs`.
    pub provider: String,
    /// JSON schema or JSON mode.
    pub response_format: ResponseFormat,
    /// How long to wait for the first byte and between bytes; language
    /// models think before they answer, so this is long.
    pub timeout: Duration,
    /// Model calls a user may make per UTC day.
    pub daily_limit: i32,
}

impl Config {
    /// Reads the variables. The key is `adapt_api_key`, or `venice_api_key`
    /// when that is empty (Venice is the default provider).
    pub fn load() -> Result<Self, Error> {
        let api_key = match config::optional("adapt_api_key") {
            Some(key) => key,
            None => config::optional("venice_api_key").unwrap_or_default(),
        };
        let base_path = config::maybe_empty("adapt_api_base_path")?;
        let base_path = base_path.trim().trim_end_matches('/');
        let api_base_path = if base_path.is_empty() || base_path.starts_with('/') {
            base_path.to_string()
        } else {
            format!("/{base_path}")
        };
        let response_format = match config::maybe_empty("adapt_response_format")?.trim() {
            "" | "json_schema" => ResponseFormat::JsonSchema,
            "json_object" => ResponseFormat::JsonObject,
            other => {
                return Err(Error::Config(format!(
                    "variable `adapt_response_format` is `{other}`; use json_schema or json_object"
                )));
            }
        };
        let timeout_seconds: u64 = parse_number("adapt_timeout_seconds", 120)?;
        let daily_limit: i32 = parse_number("ai_text_daily_limit", 50)?;
        Ok(Config {
            database_url: config::database_url()?,
            supabase_jwt_secret: config::maybe_empty("supabase_jwt_secret")?,
            api_url: config::base_url("adapt_api_url")?,
            api_base_path,
            api_key,
            model: config::required("adapt_model")?,
            provider: config::optional("adapt_provider").unwrap_or_else(|| "venice".into()),
            response_format,
            timeout: Duration::from_secs(timeout_seconds.max(1)),
            daily_limit,
        })
    }

    /// The chat completions endpoint.
    pub fn completions_url(&self) -> String {
        format!("{}{}/chat/completions", self.api_url, self.api_base_path)
    }

    /// Its path, as `api_logs` keeps it.
    pub fn completions_path(&self) -> String {
        format!("{}/chat/completions", self.api_base_path)
    }
}

fn parse_number<T: std::str::FromStr>(name: &str, default: T) -> Result<T, Error> {
    match config::optional(name) {
        None => Ok(default),
        Some(text) => text
            .trim()
            .parse()
            .map_err(|_| Error::Config(format!("variable `{name}` is not a whole number"))),
    }
}
