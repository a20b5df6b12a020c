//! Trying again what failed with an error that may pass (the store or the catalog away, a
//! commit race): `iceberg.retries.attempts` attempts in all, the wait between them doubling
//! from `backoff-ms`. Opening, creating and committing a table all go through it, so an
//! outage shorter than the budget stops nothing and one longer than it stops the connector
//! without moving an offset.

use crate::config::RetrySection;
use anyhow::{anyhow, Result};
use iceberg_cdc_merge::MergeError;
use std::future::Future;
use std::time::Duration;

/// The attempts of one step.
pub struct Retries {
    attempts: u32,
    base_ms: u64,
    made: u32,
}

impl Retries {
    pub fn new(section: &RetrySection) -> Retries {
        Retries {
            attempts: section.attempts.max(1),
            base_ms: section.backoff_ms,
            made: 0,
        }
    }

    /// After a failed attempt: how long to wait before the next one, or `None` when that
    /// was the last the budget allows.
    pub fn after_failure(&mut self) -> Option<Duration> {
        self.made += 1;
        (self.made < self.attempts).then(|| backoff(self.base_ms, self.made))
    }

    /// Attempts that failed so far.
    pub fn failed(&self) -> u32 {
        self.made
    }
}

/// Runs `attempt` until it succeeds, fails for good (the inner error: retrying cannot help)
/// or has failed as often as the budget allows (the outer error, naming `doing`).
pub async fn retrying<T, Fut>(
    section: &RetrySection,
    doing: &str,
    mut attempt: impl FnMut() -> Fut,
) -> Result<Result<T, MergeError>>
where
    Fut: Future<Output = Result<T, MergeError>>,
{
    let mut retries = Retries::new(section);
    loop {
        match attempt().await {
            Ok(done) => return Ok(Ok(done)),
            Err(e) if !e.is_retryable() => return Ok(Err(e)),
            Err(e) => match retries.after_failure() {
                Some(wait) => {
                    let attempt = retries.failed();
                    tracing::warn!(attempt, error = %e, "{doing} failed; retrying in {wait:?}");
                    tokio::time::sleep(wait).await;
                }
                None => {
                    let times = retries.failed();
                    return Err(anyhow!(e).context(format!("{doing} failed {times} times")));
                }
            },
        }
    }
}

/// The wait before attempt `attempt + 1`: doubling from `base_ms`.
fn backoff(base_ms: u64, attempt: u32) -> Duration {
    Duration::from_millis(base_ms.saturating_mul(1 << (attempt - 1).min(10)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_stops_growing() {
        assert_eq!(backoff(100, 1), Duration::from_millis(100));
        assert_eq!(backoff(100, 2), Duration::from_millis(200));
        assert_eq!(backoff(100, 4), Duration::from_millis(800));
        assert_eq!(backoff(100, 30), Duration::from_millis(100 << 10));
        assert_eq!(backoff(u64::MAX, 3), Duration::from_millis(u64::MAX));
    }

    #[test]
    fn the_budget_counts_every_attempt() {
        let mut r = Retries::new(&RetrySection {
            attempts: 3,
            backoff_ms: 10,
        });
        assert_eq!(r.after_failure(), Some(Duration::from_millis(10)));
        assert_eq!(r.after_failure(), Some(Duration::from_millis(20)));
        assert_eq!(r.after_failure(), None);
        assert_eq!(r.failed(), 3);
        let mut once = Retries::new(&RetrySection {
            attempts: 1,
            backoff_ms: 10,
        });
        assert_eq!(once.after_failure(), None);
    }
}
