//! The Prometheus health gate against a real Prometheus (Debian's `prometheus`, on 127.0.0.1)
//! that scrapes itself: a real series answers with its value, a query with no series and a
//! refused query say why, and a Prometheus that is not there is an error, not a pass.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails loudly on the first surprise

use std::time::{Duration, Instant};

use vigil_crds::rollout::PrometheusGate;
use vigil_operator::prometheus::{Error, query};

mod common;

/// A Prometheus that scrapes itself.
fn start() -> common::Prometheus {
    common::start(None, |web| format!("  - job_name: self\n    static_configs: [{{targets: ['{web}']}}]\n"))
}

fn gate(url: &str, q: &str, fail_below: bool) -> PrometheusGate {
    PrometheusGate { url: url.into(), query: q.into(), threshold: 0.5, fail_below }
}

#[tokio::test]
async fn the_gate_reads_a_real_series_and_says_why_when_there_is_none() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let prom = start();
    let http = reqwest::Client::new();
    // Wait, bounded, until Prometheus has scraped itself once.
    let deadline = Instant::now() + Duration::from_secs(60);
    let up = gate(&prom.url(), "up{job=\"self\"}", true);
    let value = loop {
        match query(&http, &up, "vigil-system/agent", "r-1").await {
            Ok(v) => break v,
            Err(e) => assert!(Instant::now() < deadline, "Prometheus never answered with its own series: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(value, 1.0, "up{{job=\"self\"}} of a Prometheus that scrapes itself");

    // $revision is filled in: a label matcher on it selects nothing here, so no series.
    let none = gate(&prom.url(), "up{job=\"self\",revision=\"$revision\"}", false);
    assert!(matches!(query(&http, &none, "vigil-system/agent", "r-1").await, Err(Error::Empty)));
    // `or vector(0)` makes "no series" a zero.
    let zero = gate(&prom.url(), "sum(up{job=\"absent\"}) or vector(0)", false);
    assert_eq!(query(&http, &zero, "vigil-system/agent", "r-1").await.unwrap(), 0.0);
    // A query Prometheus refuses names the problem.
    let bad = gate(&prom.url(), "sum(", false);
    let e = query(&http, &bad, "vigil-system/agent", "r-1").await.unwrap_err().to_string();
    assert!(e.contains("bad_data"), "{e}");
    drop(prom);
    // No Prometheus: an error, and the gate holds.
    let gone = gate(&up.url, "up", false);
    assert!(matches!(query(&http, &gone, "vigil-system/agent", "r-1").await, Err(Error::Http { .. })));
}
