//! The run's report: counts per platform and outcome, and the first few
//! failures in words (platform text only: `shared::oauth` scrubs tokens).

use std::collections::BTreeMap;

use serde_json::{Value, json};
use shared::token_refresh::{Outcome, Rotated};

/// Failures kept word for word in one report.
const MAX_ERRORS: usize = 10;

/// Counts of one run.
#[derive(Debug, Default)]
pub struct Report {
    counts: BTreeMap<String, BTreeMap<&'static str, u64>>,
    errors: Vec<Value>,
    /// The key new tokens were sealed under.
    pub current_key_id: String,
}

impl Report {
    /// Counts one handled account.
    pub fn add(&mut self, platform: &str, rotated: &Rotated) {
        let platform_counts = self.counts.entry(platform.to_string()).or_insert_with(|| {
            // The three counts the issue asks for are always present.
            [
                (Outcome::Refreshed.name(), 0),
                (Outcome::Transient.name(), 0),
                (Outcome::Expired.name(), 0),
            ]
            .into_iter()
            .collect()
        });
        *platform_counts.entry(rotated.outcome.name()).or_default() += 1;
        if let Some(error) = &rotated.error
            && self.errors.len() < MAX_ERRORS
        {
            self.errors.push(json!({
                "platform": platform,
                "outcome": rotated.outcome.name(),
                "error": error,
            }));
        }
    }

    /// The report as the heartbeat and the HTTP answer carry it.
    pub fn to_json(&self) -> Value {
        let handled: u64 = self.counts.values().flat_map(|c| c.values()).sum();
        json!({
            "handled": handled,
            "platforms": self.counts,
            "errors": self.errors,
            "current_key_id": self.current_key_id,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rotated(outcome: Outcome, error: Option<&str>) -> Rotated {
        Rotated {
            outcome,
            access_token: Some("plain-access".into()),
            error: error.map(str::to_string),
            call: None,
            retry_after: None,
            stored: None,
        }
    }

    #[test]
    fn counts_per_platform_with_the_three_asked_counts_always_present() {
        let mut report = Report::default();
        report.add("x", &rotated(Outcome::Refreshed, None));
        report.add("x", &rotated(Outcome::Refreshed, None));
        report.add(
            "strava",
            &rotated(
                Outcome::Transient,
                Some("Strava token refresh failed with 503"),
            ),
        );
        let json = report.to_json();
        assert_eq!(json["handled"], 3);
        assert_eq!(json["platforms"]["x"]["refreshed"], 2);
        assert_eq!(json["platforms"]["x"]["expired"], 0);
        assert_eq!(json["platforms"]["strava"]["failed_transiently"], 1);
        assert_eq!(json["errors"][0]["platform"], "strava");
        // The plain token a refresh hands back is never reported.
        assert!(!json.to_string().contains("plain-access"));
    }
}
