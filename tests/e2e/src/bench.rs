//! What the benchmarks in `benches/` share: latency statistics, the
//! connection reset real Spin's Postgres pool sends on every checkout, and
//! small helpers for reading host URLs and printing verdicts.

use std::net::SocketAddr;
use std::time::Duration;

/// Connections every load generator keeps busy.
pub const CONNECTIONS: usize = 32;

/// What deadpool's `RecyclingMethod::Clean` sends on every checkout: real
/// Spin's Postgres pool (and the test host's) recycles a connection this way
/// each time a component calls `Connection::open`, so "Spin's pool path"
/// baselines send it before each call.
pub const SPIN_CHECKOUT_RESET: &str = "CLOSE ALL; SET SESSION AUTHORIZATION DEFAULT; RESET ALL; \
     UNLISTEN *; SELECT pg_advisory_unlock_all(); DISCARD TEMP; DISCARD SEQUENCES;";

/// Results of one load run: how many requests counted, how many failed,
/// how long it took and each request's latency (sorted, microseconds).
#[derive(Debug, Clone)]
pub struct Stats {
    /// Requests that count towards the rate.
    pub requests: usize,
    /// Requests that failed.
    pub errors: usize,
    /// Wall time of the run.
    pub elapsed: Duration,
    /// Latencies in microseconds, ascending.
    pub latencies_us: Vec<u64>,
}

impl Stats {
    /// Every latency counts as a request.
    pub fn from_latencies(latencies_us: Vec<u64>, errors: usize, elapsed: Duration) -> Self {
        let requests = latencies_us.len();
        Self::merge(vec![(latencies_us, requests, errors)], elapsed)
    }

    /// Joins the parts of concurrent workers, each `(latencies, counted,
    /// errors)`.
    pub fn merge(parts: Vec<(Vec<u64>, usize, usize)>, elapsed: Duration) -> Self {
        let mut latencies_us = Vec::new();
        let (mut requests, mut errors) = (0, 0);
        for (latencies, counted, failed) in parts {
            requests += counted;
            errors += failed;
            latencies_us.extend(latencies);
        }
        latencies_us.sort_unstable();
        Stats {
            requests,
            errors,
            elapsed,
            latencies_us,
        }
    }

    /// Counted requests per second.
    pub fn rate(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }

    /// The latency at quantile `p` (0..=1) in milliseconds.
    pub fn percentile(&self, p: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return 0.0;
        }
        let i = ((self.latencies_us.len() as f64 - 1.0) * p).round() as usize;
        self.latencies_us[i] as f64 / 1000.0
    }
}

/// The socket address of a loopback `http://host:port` URL.
pub fn addr_of(url: &str) -> Result<SocketAddr, std::net::AddrParseError> {
    url.trim_start_matches("http://").parse()
}

/// "met" or "NOT met", for target lines.
pub fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "NOT met" }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_merge_counts_sort_and_rate() {
        let stats = Stats::merge(
            vec![(vec![3000, 1000], 2, 0), (vec![2000, 4000], 1, 1)],
            Duration::from_secs(1),
        );
        assert_eq!(stats.requests, 3);
        assert_eq!(stats.errors, 1);
        assert_eq!(stats.latencies_us, vec![1000, 2000, 3000, 4000]);
        assert_eq!(stats.rate(), 3.0);
        assert_eq!(stats.percentile(0.0), 1.0);
        assert_eq!(stats.percentile(1.0), 4.0);
        let all = Stats::from_latencies(vec![5, 1], 0, Duration::from_secs(2));
        assert_eq!((all.requests, all.rate()), (2, 1.0));
    }
}
