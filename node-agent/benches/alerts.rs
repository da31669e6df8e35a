//! The alert pipeline's cost per scan and per notification:
//!
//! - the samples the rules see, read from the export tables behind this host's `/metrics`;
//!   the points of every OTLP instrument from one read of them;
//! - the rule engine on those samples with the example policy's seven rules, and with 100
//!   threshold rules; one anomaly rule over 100 series;
//! - the router taking and flushing 1,000 alerts;
//! - one spool entry written and removed, with and without fsync (on this machine's disk);
//! - a policy reload: the full load against the check that nothing changed.
//!
//! `cargo bench -p vigil-agent --bench alerts`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use criterion::{Criterion, criterion_group, criterion_main};
use vigil_agent::alert::Alert;
use vigil_agent::alert::policy::{PolicySet, load};
use vigil_agent::alert::route::{Notification, Router};
use vigil_agent::alert::rules::{Engine, Sample};
use vigil_agent::alert::spool::{Limits, Spool};
use vigil_agent::config::{Collectors, CompiledFilters};
use vigil_agent::events::Severity;
use vigil_agent::export::prometheus;
use vigil_agent::host::HostRoot;
use vigil_agent::selfmon::SelfUsage;
use vigil_agent::snapshot::Collector;

/// This host's `/metrics` text, as the daemon encodes it, and the tables behind it.
fn metrics_text() -> (String, vigil_agent::export::catalog::Tables) {
    let latest: prometheus::Latest = Arc::new(RwLock::new(None));
    let (registry, exports) = prometheus::registry(latest.clone(), SelfUsage::default(), "bench");
    let mut collector = Collector::new(HostRoot::new("/"), Collectors::default(), CompiledFilters::default(), 5);
    collector.collect(jiff::Timestamp::now());
    std::thread::sleep(std::time::Duration::from_millis(200));
    *latest.write().unwrap() = Some(Arc::new(collector.collect(jiff::Timestamp::now())));
    (prometheus::to_prometheus_text(&prometheus::encode(&registry).unwrap()), exports.tables)
}

/// A policy set from YAML (no receivers, so no secrets).
fn policy(dir: &std::path::Path, yaml: &str) -> PolicySet {
    let file = dir.join("p.yaml");
    std::fs::write(&file, yaml).unwrap();
    load(&[file], &PathBuf::from("/nonexistent"), None).unwrap()
}

fn bench(c: &mut Criterion) {
    let (text, tables) = metrics_text();
    let samples = tables.samples();
    eprintln!("/metrics: {} bytes, {} samples", text.len(), samples.len());
    let dir = tempfile::tempdir().unwrap();

    let mut g = c.benchmark_group("alerts");
    g.bench_function("samples_from_the_export_tables", |b| b.iter(|| tables.samples()));
    // What one OTLP push computes: one read of the tables, then every instrument's points.
    g.bench_function("otlp_points_of_every_instrument", |b| {
        use vigil_agent::export::semconv;
        b.iter(|| {
            let rows = tables.rows();
            let mut n = 0;
            for s in semconv::SEMANTIC {
                n += semconv::points(s, &rows.0).len();
            }
            for m in semconv::under_catalog_names() {
                n += semconv::catalog_points(m, &rows.0).len();
            }
            n
        })
    });

    let example = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/examples/alertpolicy.yaml"))
        .unwrap()
        .replace("ops-slack", "x")
        .replace("fleet-alertmanager", "x");
    // The example's receivers need secrets; keep its rules only.
    let rules_only: String = example.split("  routes:").next().unwrap().to_owned();
    let seven = policy(dir.path(), &rules_only);
    // A reload every interval: the full load (parse, schema and CEL checks, secrets) against
    // the check that nothing changed.
    let example_file = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/examples/alertpolicy.yaml"));
    let secrets_dir = dir.path().join("secrets");
    std::fs::create_dir_all(secrets_dir.join("vigil-alerting")).unwrap();
    std::fs::write(secrets_dir.join("vigil-alerting/slack-webhook-url"), "https://hooks.slack.invalid/x\n").unwrap();
    let paths = [example_file];
    let loaded = vigil_agent::alert::policy::load(&paths, &secrets_dir, None).unwrap();
    g.bench_function("policy_reload_full_load", |b| {
        b.iter(|| vigil_agent::alert::policy::load(&paths, &secrets_dir, None).unwrap())
    });
    g.bench_function("policy_reload_unchanged_check", |b| {
        b.iter(|| assert!(vigil_agent::alert::policy::unchanged(&loaded, &paths, &secrets_dir, None)))
    });

    let mut engine = Engine::new("node-a", std::time::Duration::from_secs(10));
    engine.set_policies(&seven, jiff::Timestamp::now());
    let mut i = 0i64;
    g.bench_function("engine_example_policy_7_rules", |b| {
        b.iter(|| {
            i += 1;
            engine.observe_metrics(jiff::Timestamp::from_second(1_700_000_000 + i * 10).unwrap(), &samples)
        });
    });

    let mut many = String::from("rules:\n");
    for r in 0..100 {
        many.push_str(&format!(
            "  - name: R{r}\n    metric: {{name: vigil_node_filesystem_utilization_ratio}}\n    detector: {{threshold: {{above: 0.{r:02}9}}}}\n"
        ));
    }
    let hundred = policy(dir.path(), &many);
    let mut engine = Engine::new("node-a", std::time::Duration::from_secs(10));
    engine.set_policies(&hundred, jiff::Timestamp::now());
    g.bench_function("engine_100_threshold_rules", |b| {
        b.iter(|| {
            i += 1;
            engine.observe_metrics(jiff::Timestamp::from_second(1_700_000_000 + i * 10).unwrap(), &samples)
        });
    });

    // One anomaly rule over 100 series (one per label value), the detector the rules default
    // to: the engine's whole cost per scan, series lookup included.
    let anomaly = policy(
        dir.path(),
        "rules:\n  - name: Odd\n    metric: {name: vigil_node_load1}\n    detector: {anomaly: {}}\n",
    );
    let mut engine = Engine::new("node-a", std::time::Duration::from_secs(10));
    engine.set_policies(&anomaly, jiff::Timestamp::now());
    let mut rng = vigil_detect::synth::Rng::new(1);
    let scans: Vec<Vec<Sample>> = (0..512)
        .map(|_| {
            (0..100)
                .map(|k| Sample {
                    name: "vigil_node_load1".into(),
                    labels: BTreeMap::from([("series".to_owned(), k.to_string())]),
                    value: 10.0 + rng.normal(),
                })
                .collect()
        })
        .collect();
    for (k, scan) in scans.iter().enumerate() {
        engine.observe_metrics(jiff::Timestamp::from_second(1_700_000_000 + k as i64 * 10).unwrap(), scan);
    }
    let mut k = scans.len() as i64;
    g.bench_function("engine_anomaly_rule_100_series", |b| {
        b.iter(|| {
            k += 1;
            let scan = &scans[k as usize % scans.len()];
            engine.observe_metrics(jiff::Timestamp::from_second(1_700_000_000 + k * 10).unwrap(), scan)
        });
    });

    let routed = policy(
        dir.path(),
        "routes:\n  - {name: all, receivers: [x], groupBy: [alertname, i], rateLimit: {minInterval: 0s, maxPerHour: 3600}}\nreceivers:\n  - {name: x, alertmanager: {urls: ['http://127.0.0.1:9']}}\n",
    );
    let id = routed.policies[0].id.clone();
    let alerts: Vec<Alert> = (0..1000)
        .map(|k| Alert::new("A", "node-a", Severity::Warning, jiff::Timestamp::UNIX_EPOCH).label("i", &k.to_string()))
        .collect();
    g.bench_function("router_1000_alerts_push_and_flush", |b| {
        b.iter(|| {
            let mut r = Router::new();
            let t0 = jiff::Timestamp::from_second(1_700_000_000).unwrap();
            for a in &alerts {
                r.push(&routed, &id, a, t0);
            }
            r.tick(&routed, t0 + jiff::SignedDuration::from_secs(60)).len()
        });
    });

    let note = Notification {
        receiver: "ops/p/x".into(),
        route: "all".into(),
        group: BTreeMap::new(),
        alerts: alerts[..3].to_vec(),
        suppressed: 0,
        created: jiff::Timestamp::UNIX_EPOCH,
        note: None,
        active_until: None,
    };
    for fsync in [false, true] {
        let spool =
            Spool::open(&dir.path().join(format!("spool-{fsync}")), Limits { fsync, ..Limits::default() }).unwrap();
        g.bench_function(format!("spool_enqueue_and_ack_fsync_{fsync}"), |b| {
            b.iter(|| {
                let seq = spool.enqueue(note.clone()).unwrap();
                spool.ack(seq).unwrap();
            });
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
