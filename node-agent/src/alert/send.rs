//! Delivering one request: a timeout per attempt, retries on the seed's 5 s → 15 s → 60 s
//! ladder with ±20 % jitter, `Retry-After` honoured on 429 and 503, and no retry of a request
//! the receiver refused for good (a 4xx other than 408 and 429).
//!
//! The decisions ([`classify`], [`Backoff::delay`], [`parse_retry_after`]) are pure; [`Sender`]
//! is the thin HTTP part.

use std::time::Duration;

use super::receivers::Request;

/// What one attempt came to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Accepted (2xx).
    Delivered,
    /// Worth another attempt, after the receiver's `Retry-After` if it gave one.
    Retry {
        /// The receiver's wish.
        after: Option<Duration>,
        /// What happened, for the log and the dead-letter entry.
        why: String,
    },
    /// Refused for good: retrying cannot help.
    Rejected {
        /// What happened.
        why: String,
    },
}

/// Classifies an HTTP status (and its `Retry-After` value, already parsed).
pub fn classify(status: u16, retry_after: Option<Duration>) -> Outcome {
    match status {
        200..=299 => Outcome::Delivered,
        408 | 429 | 500..=599 => Outcome::Retry { after: retry_after, why: format!("HTTP {status}") },
        _ => Outcome::Rejected { why: format!("HTTP {status}") },
    }
}

/// `Retry-After` as seconds or an HTTP date, relative to `now`; capped at an hour.
pub fn parse_retry_after(value: &str, now: jiff::Timestamp) -> Option<Duration> {
    let v = value.trim();
    let d = if let Ok(secs) = v.parse::<u64>() {
        Duration::from_secs(secs)
    } else {
        let at = jiff::fmt::rfc2822::DateTimeParser::new().parse_timestamp(v).ok()?;
        at.duration_since(now).try_into().unwrap_or(Duration::ZERO)
    };
    Some(d.min(Duration::from_secs(3600)))
}

/// The retry schedule.
#[derive(Clone, Debug, PartialEq)]
pub struct Backoff {
    /// The wait before each retry; its length is the number of retries.
    pub ladder: Vec<Duration>,
    /// Relative jitter (0.2: ±20 %), so a fleet does not retry in step.
    pub jitter: f64,
}

impl Default for Backoff {
    fn default() -> Self {
        Self { ladder: vec![Duration::from_secs(5), Duration::from_secs(15), Duration::from_secs(60)], jitter: 0.2 }
    }
}

impl Backoff {
    /// The wait before retry number `retry` (0-based), or `None` when the ladder is used up.
    /// A receiver's `Retry-After` wins when longer. `unit` is a uniform random number in
    /// [0, 1) (the caller's, so this stays pure).
    pub fn delay(&self, retry: usize, retry_after: Option<Duration>, unit: f64) -> Option<Duration> {
        let base = *self.ladder.get(retry)?;
        let factor = 1.0 + self.jitter * (2.0 * unit.clamp(0.0, 1.0) - 1.0);
        let jittered = base.mul_f64(factor.max(0.0));
        Some(retry_after.map_or(jittered, |ra| ra.max(jittered)))
    }
}

/// Posts requests over HTTP(S) with a timeout.
#[derive(Clone, Debug)]
pub struct Sender {
    client: reqwest::blocking::Client,
}

impl Sender {
    /// A sender whose attempts time out after `timeout`.
    pub fn new(timeout: Duration) -> Result<Self, reqwest::Error> {
        crate::tls::ensure_crypto_provider();
        let client = reqwest::blocking::Client::builder()
            .timeout(timeout)
            .user_agent(concat!("vigil-agent/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self { client })
    }

    /// One attempt.
    pub fn post(&self, req: &Request) -> Outcome {
        let mut post = self.client.post(&req.url).json(&req.body);
        if let Some(token) = &req.bearer {
            post = post.bearer_auth(token);
        }
        match post.send() {
            Ok(resp) => {
                let retry_after = resp
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| parse_retry_after(v, jiff::Timestamp::now()));
                classify(resp.status().as_u16(), retry_after)
            }
            // Connection refused, timeout, TLS: the receiver may be back soon.
            Err(e) => Outcome::Retry { after: None, why: without_url(e) },
        }
    }

    /// Attempts until delivered, rejected, or the backoff is used up; `wait` sleeps between
    /// attempts and returns false to give up early (shutdown). Returns the attempts made, or
    /// why it failed.
    pub fn deliver(
        &self,
        req: &Request,
        backoff: &Backoff,
        mut unit: impl FnMut() -> f64,
        mut wait: impl FnMut(Duration) -> bool,
    ) -> Result<usize, String> {
        let mut retry = 0;
        loop {
            match self.post(req) {
                Outcome::Delivered => return Ok(retry + 1),
                Outcome::Rejected { why } => return Err(format!("{why}; not retried")),
                Outcome::Retry { after, why } => {
                    let Some(d) = backoff.delay(retry, after, unit()) else {
                        return Err(format!("{why} after {} attempts", retry + 1));
                    };
                    if !wait(d) {
                        return Err(format!("{why}; stopped before retrying"));
                    }
                    retry += 1;
                }
            }
        }
    }
}

/// An error's text without the URL (webhook URLs carry secrets).
fn without_url(e: reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else if e.is_request() {
        "request failed"
    } else {
        "failed"
    };
    format!("{kind}: {}", e.without_url())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses() {
        assert_eq!(classify(202, None), Outcome::Delivered);
        assert!(
            matches!(classify(429, Some(Duration::from_secs(7))), Outcome::Retry { after: Some(d), .. } if d == Duration::from_secs(7))
        );
        assert!(matches!(classify(503, None), Outcome::Retry { .. }));
        assert!(matches!(classify(408, None), Outcome::Retry { .. }));
        assert!(matches!(classify(400, None), Outcome::Rejected { .. }));
        assert!(matches!(classify(404, None), Outcome::Rejected { .. }));
    }

    #[test]
    fn retry_after_in_seconds_or_as_a_date() {
        let now: jiff::Timestamp = "2015-10-21T07:27:30Z".parse().unwrap();
        assert_eq!(parse_retry_after("120", now), Some(Duration::from_secs(120)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now), Some(Duration::from_secs(30)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("999999", now), Some(Duration::from_secs(3600)));
        assert_eq!(parse_retry_after("soon", now), None);
    }

    #[test]
    fn the_ladder_with_jitter_and_retry_after() {
        let b = Backoff::default();
        assert_eq!(b.delay(0, None, 0.5), Some(Duration::from_secs(5)));
        assert_eq!(b.delay(1, None, 0.0), Some(Duration::from_secs(12)));
        assert_eq!(b.delay(2, None, 1.0), Some(Duration::from_secs(72)));
        assert_eq!(b.delay(3, None, 0.5), None);
        assert_eq!(b.delay(0, Some(Duration::from_secs(30)), 0.5), Some(Duration::from_secs(30)));
        assert_eq!(b.delay(2, Some(Duration::from_secs(1)), 0.5), Some(Duration::from_secs(60)));
    }
}
