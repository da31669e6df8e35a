//! The Prometheus health gate: an instant query against the Prometheus HTTP API
//! (`GET /api/v1/query`), its answer reduced to the one value the gate compares.
//!
//! `$rollout` and `$revision` in the query are replaced by the rollout's `namespace/name` and
//! the target revision. A scalar answers with its value; a vector with the worst of its
//! samples (the highest, or the lowest with `failBelow`), so one bad series fails the gate.
//! An empty vector is no answer, and the wave holds: write `... or vector(0)` where "no
//! series" should count as zero.

use std::time::Duration;

use serde_json::Value;
use vigil_crds::rollout::PrometheusGate;

/// Why a query has no value.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request failed (connection, timeout, HTTP status).
    #[error("querying {url}: {source}")]
    Http {
        /// The query URL (without the query text).
        url: String,
        /// The cause.
        #[source]
        source: reqwest::Error,
    },
    /// Prometheus answered with an error.
    #[error("Prometheus refused the query: {0}")]
    Refused(String),
    /// The answer is not what the API documents.
    #[error("unexpected answer from Prometheus: {0}")]
    Malformed(String),
    /// The query returned no series.
    #[error("the query returned no series")]
    Empty,
}

/// The query text with `$rollout` and `$revision` replaced.
pub fn expand(query: &str, rollout: &str, revision: &str) -> String {
    query.replace("$rollout", rollout).replace("$revision", revision)
}

/// The value of an answer body (pure).
pub fn value_of(body: &Value, fail_below: bool) -> Result<f64, Error> {
    if body["status"] != "success" {
        let why = body["error"].as_str().unwrap_or("no error text");
        return Err(Error::Refused(format!("{}: {why}", body["errorType"].as_str().unwrap_or("error"))));
    }
    let data = &body["data"];
    let sample = |v: &Value| -> Result<f64, Error> {
        let text = v.get(1).and_then(Value::as_str).ok_or_else(|| Error::Malformed(format!("sample {v}")))?;
        text.parse::<f64>().map_err(|_| Error::Malformed(format!("sample value {text:?}")))
    };
    match data["resultType"].as_str() {
        Some("scalar") => sample(&data["result"]),
        Some("vector") => {
            let values = data["result"]
                .as_array()
                .ok_or_else(|| Error::Malformed("vector without result".into()))?
                .iter()
                .map(|s| sample(&s["value"]))
                .collect::<Result<Vec<f64>, Error>>()?;
            let worst = if fail_below {
                values.iter().copied().reduce(f64::min)
            } else {
                values.iter().copied().reduce(f64::max)
            };
            worst.ok_or(Error::Empty)
        }
        other => {
            Err(Error::Malformed(format!("result type {other:?} (an instant query returns a scalar or a vector)")))
        }
    }
}

/// Asks Prometheus for the gate's value.
pub async fn query(
    client: &reqwest::Client,
    gate: &PrometheusGate,
    rollout: &str,
    revision: &str,
) -> Result<f64, Error> {
    let url = format!("{}/api/v1/query", gate.url.trim_end_matches('/'));
    let q = expand(&gate.query, rollout, revision);
    let http = |source| Error::Http { url: url.clone(), source };
    let full = reqwest::Url::parse_with_params(&url, &[("query", q.as_str())])
        .map_err(|e| Error::Malformed(format!("healthGate.prometheus.url {url:?}: {e}")))?;
    let resp = client.get(full).timeout(Duration::from_secs(10)).send().await.map_err(http)?;
    // A refused query comes with 400/422 and an error body worth showing.
    let status = resp.status();
    let body: Value = resp.json().await.map_err(http)?;
    if !status.is_success() && body["status"] != "error" {
        return Err(Error::Malformed(format!("HTTP {status}")));
    }
    value_of(&body, gate.fail_below)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_scalar_or_the_worst_sample_of_a_vector_is_the_value() {
        let scalar = json!({"status": "success", "data": {"resultType": "scalar", "result": [1.7e9, "0.25"]}});
        assert_eq!(value_of(&scalar, false).unwrap(), 0.25);
        let vector = json!({"status": "success", "data": {"resultType": "vector", "result": [
            {"metric": {"node": "a"}, "value": [1.7e9, "0.5"]},
            {"metric": {"node": "b"}, "value": [1.7e9, "3"]},
        ]}});
        assert_eq!(value_of(&vector, false).unwrap(), 3.0, "failing above: the highest");
        assert_eq!(value_of(&vector, true).unwrap(), 0.5, "failing below: the lowest");
        let nan = json!({"status": "success", "data": {"resultType": "vector", "result": [{"metric": {}, "value": [1, "NaN"]}]}});
        assert!(value_of(&nan, false).unwrap().is_nan());
    }

    #[test]
    fn an_empty_answer_an_error_and_a_range_result_are_no_value_and_say_why() {
        let empty = json!({"status": "success", "data": {"resultType": "vector", "result": []}});
        assert!(matches!(value_of(&empty, false), Err(Error::Empty)));
        let refused = json!({"status": "error", "errorType": "bad_data", "error": "parse error at char 5"});
        let e = value_of(&refused, false).unwrap_err().to_string();
        assert!(e.contains("bad_data") && e.contains("parse error"), "{e}");
        let matrix = json!({"status": "success", "data": {"resultType": "matrix", "result": []}});
        assert!(matches!(value_of(&matrix, false), Err(Error::Malformed(_))));
        let garbage = json!({"status": "success", "data": {"resultType": "scalar", "result": [1, "x"]}});
        assert!(matches!(value_of(&garbage, false), Err(Error::Malformed(_))));
    }

    #[test]
    fn rollout_and_revision_are_filled_in() {
        assert_eq!(
            expand("sum(rate(x{revision=\"$revision\",rollout=\"$rollout\"}[5m]))", "ns/r", "r-1"),
            "sum(rate(x{revision=\"r-1\",rollout=\"ns/r\"}[5m]))"
        );
    }
}
