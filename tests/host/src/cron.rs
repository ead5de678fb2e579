//! The cron trigger, as the `spin-trigger-cron` 0.3.0 plugin runs it (SPIN.md
//! §6): exactly six fields (seconds first), croner with seconds required and
//! day-of-month AND day-of-week, UTC; each tick instantiates the component
//! and calls its `handle-cron-event` export with the Unix time in seconds.
//! Errors are logged, never retried. Tests fire a component on demand with
//! [`crate::App::fire_cron`].

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chrono::Utc;
use croner::Cron;

use crate::app::AppInner;
use crate::error::HostError;

/// Why firing a cron component did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum CronFailure {
    /// The component has no `[[trigger.cron]]` or no cron export.
    #[error("{0}")]
    NotCron(String),
    /// The component returned `error::other(message)`.
    #[error("cron component returned an error: {0}")]
    Guest(String),
    /// The component trapped (or could not be instantiated).
    #[error("cron component trapped: {0}")]
    Trap(String),
}

/// Parses a cron expression the way the plugin does, refusing five- and
/// seven-field expressions.
pub fn parse_expression(component: &str, expression: &str) -> Result<Cron, HostError> {
    let err = |message: String| HostError::Cron {
        component: component.to_string(),
        expression: expression.to_string(),
        message,
    };
    let fields = expression.split_whitespace().count();
    if !expression.trim_start().starts_with('@') && fields != 6 {
        return Err(err(format!(
            "ParseSchedule: the cron plugin needs exactly 6 fields (sec min hour dom month dow), this has {fields}"
        )));
    }
    Cron::new(expression)
        .with_seconds_required()
        .with_dom_and_dow()
        .parse()
        .map_err(|e| err(format!("ParseSchedule: {e}")))
}

/// The current time in whole seconds since the Unix epoch.
pub fn now_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Runs every `[[trigger.cron]]` of the application until the task is aborted.
pub fn spawn_scheduler(app: Arc<AppInner>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tasks = Vec::new();
        for (component, cron) in app.cron_schedules() {
            let app = app.clone();
            tasks.push(tokio::spawn(async move {
                loop {
                    let now = Utc::now();
                    let next = match cron.find_next_occurrence(&now, false) {
                        Ok(next) => next,
                        Err(e) => {
                            eprintln!("outpost-host: cron for {component:?} has no next time: {e}");
                            return;
                        }
                    };
                    let wait = (next - now).to_std().unwrap_or(Duration::ZERO);
                    tokio::time::sleep(wait).await;
                    if let Err(e) = app.fire_cron(&component).await {
                        eprintln!("outpost-host: Component {component} failed: {e}");
                    }
                }
            }));
        }
        // Keep the children alive as long as this task; aborting this task
        // drops the guard, which aborts them.
        let _guard = AbortAll(tasks);
        std::future::pending::<()>().await;
    })
}

struct AbortAll(Vec<tokio::task::JoinHandle<()>>);

impl Drop for AbortAll {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn six_fields_are_required() {
        assert!(parse_expression("a", "0 * * * * *").is_ok());
        assert!(parse_expression("a", "0 */5 * * * *").is_ok());
        assert!(parse_expression("a", "30 * * * * *").is_ok());
        assert!(parse_expression("a", "0 0 12 * * MON").is_ok());
        let five = parse_expression("a", "* * * * *").unwrap_err().to_string();
        assert!(five.contains("exactly 6 fields"), "{five}");
        let seven = parse_expression("a", "0 0 * * * * 2030")
            .unwrap_err()
            .to_string();
        assert!(seven.contains("exactly 6 fields"), "{seven}");
        assert!(parse_expression("a", "0 61 * * * *").is_err());
    }

    #[test]
    fn question_mark_and_names() {
        assert!(parse_expression("a", "0 0 0 ? JAN *").is_ok());
    }
}
