//! The component's settings from Spin variables.

use shared::{Error, config};

use crate::indexer::Settings;

/// Reads `bluesky_appview_url` and `feed_retention_days` (a whole number of
/// days, at least 1).
pub fn load() -> Result<Settings, Error> {
    let appview_url = config::required("bluesky_appview_url")?;
    let days = config::required("feed_retention_days")?;
    let retention_days = days
        .trim()
        .parse::<i32>()
        .ok()
        .filter(|d| *d >= 1)
        .ok_or_else(|| {
            Error::Config(
                "variable `feed_retention_days` must be a whole number of days, at least 1".into(),
            )
        })?;
    Ok(Settings {
        appview_url,
        retention_days,
    })
}
