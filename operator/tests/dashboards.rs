//! The fleet dashboard the chart ships (`charts/vigil/files/grafana/vigil-fleet.json`) and the
//! operator's alert rules, asked of Debian's Prometheus scraping the operator's `/metrics`: the
//! endpoint the binary serves (`metrics::router`), fed by the planner itself as the controller
//! feeds it (a rollout of 20 nodes admitted to wave 1 and baking, a node in its handover, a
//! silent agent, reconciles). Every dashboard query parses and returns data; every rule
//! parses, and every operator series it selects has data.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails loudly on the first surprise

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use serde_json::Value;
use vigil_crds::AgentHealth;
use vigil_crds::rollout::{AgentRolloutStatus, FailurePolicy};
use vigil_operator::metrics::Metrics;
use vigil_plan::simulate::{STABLE, spec};
use vigil_plan::{self as plan, AgentView, Limits, NodeAttributes, NodeView, Observed};

mod common;

/// The fleet: `n` ready nodes whose agents of `STABLE` are healthy and beating.
fn fleet(n: usize, now: Timestamp) -> Vec<NodeView> {
    (0..n)
        .map(|i| NodeView {
            name: format!("node-{i:02}"),
            labels: Default::default(),
            attributes: NodeAttributes { os: "linux".into(), arch: "amd64".into(), ..NodeAttributes::default() },
            revision: Some(STABLE.into()),
            admitted_at: None,
            ready: true,
            ready_changed_at: None,
            agent: Some(agent(STABLE, now)),
        })
        .collect()
}

fn agent(revision: &str, now: Timestamp) -> AgentView {
    AgentView {
        revision: revision.into(),
        ready: true,
        restarts: 0,
        waiting_reason: None,
        last_termination_reason: None,
        heartbeat: Some(now),
        health: Some(AgentHealth::Healthy),
        started_at: Some(now),
        created_at: None,
    }
}

/// Runs the planner over the fleet as the controller does, recording each plan and reconcile
/// in `m`, until wave 1 bakes; then a node in its handover and a silent agent.
fn operate(m: &Metrics) {
    let spec = spec(FailurePolicy::Rollback);
    let mut now: Timestamp = "2027-01-15T08:00:00Z".parse().unwrap();
    let mut nodes = fleet(20, now);
    let mut status = AgentRolloutStatus { stable_revision: Some(STABLE.into()), ..AgentRolloutStatus::default() };
    let mut moved = Vec::new();
    for _ in 0..3 {
        let observed = Observed {
            nodes: nodes.clone(),
            config_sha256: Some(spec.target.config.sha256.clone()),
            ..Observed::default()
        };
        let p = plan::next(&spec, &status, Some(1), "ops/agent", &observed, now, Limits::default());
        m.observe_plan("ops/agent", &p);
        m.observe_reconcile(true, Duration::from_millis(3));
        for mv in &p.moves {
            let n = nodes.iter_mut().find(|n| n.name == mv.node).unwrap();
            n.revision.clone_from(&mv.to);
            n.admitted_at = Some(now);
            n.agent = mv.to.as_deref().map(|r| agent(r, now));
            moved.push((mv.node.clone(), mv.from.clone().unwrap_or_default(), mv.to.clone().unwrap_or_default()));
        }
        status = p.status;
        now += Duration::from_secs(30);
    }
    assert_eq!(status.phase, Some(vigil_crds::rollout::RolloutPhase::Baking), "{:?}", status.reason);
    m.observe_reconcile(false, Duration::from_millis(40));
    // The requests the counting client of the binary saw, by the verb it names them.
    for (method, query) in
        [(http::Method::GET, Some("watch=true")), (http::Method::GET, None), (http::Method::PATCH, None)]
    {
        let verb = vigil_operator::metrics::verb(&method, query);
        m.api_requests.get_or_create(&vigil_operator::metrics::VerbLabels { verb }).inc();
    }
    let (node, from, to) = moved.first().cloned().expect("wave 1 moved a node");
    m.set_changing(&BTreeMap::from([(node, (from, to))]));
    m.set_silent(&BTreeMap::from([("node-07".to_owned(), "HeartbeatMissing")]));
}

/// GET `path` of `addr`: (status, body).
fn http_get(addr: &str, path: &str) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, body)
}

fn encode(q: &str) -> String {
    q.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn repo(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(p)
}

#[test]
fn the_fleet_dashboard_and_the_operator_rules_query_data_from_the_operators_metrics() {
    let metrics = Arc::new(Metrics::default());
    operate(&metrics);
    // The operator's endpoint, on a thread and runtime of its own for the length of the test.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let operator = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            axum::serve(listener, vigil_operator::metrics::router(metrics)).await
        })
    });

    let rules = repo("charts/vigil/files/prometheus/vigil.rules.yaml");
    let prometheus = common::start(Some(&rules), |_| {
        format!("  - job_name: vigil-operator\n    static_configs: [{{targets: ['{operator}']}}]\n")
    });
    let web = prometheus.web.clone();
    let query = |q: &str| -> Value {
        let (status, body) = http_get(&web, &format!("/api/v1/query?query={}", encode(q)));
        assert_eq!(status, 200, "{q}: {body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["status"], "success", "{q}: {body}");
        v["data"]["result"].clone()
    };
    // Prometheus listens before it is ready (503 while its TSDB opens).
    wait_for("Prometheus scraping the operator", Duration::from_secs(60), || {
        std::net::TcpStream::connect(&web).is_ok()
            && http_get(&web, "/-/ready").0 == 200
            && !query("vigil_operator_rollout_phase").as_array().unwrap().is_empty()
    });

    let dashboard = std::fs::read_to_string(repo("charts/vigil/files/grafana/vigil-fleet.json")).unwrap();
    let queries = vigil_crds::metrics::dashboard_queries(&dashboard).unwrap();
    assert!(queries.len() >= 9, "{queries:?}");
    for (panel, q) in &queries {
        // Grafana's variables as Grafana fills them in, "All" rollouts selected.
        let q = q.replace("$__rate_interval", "1m").replace("$rollout", ".+");
        // Rates and increases need two samples in their window: asked until they have them.
        wait_for(&format!("the fleet dashboard's {panel:?}: {q}"), Duration::from_secs(30), || {
            !query(&q).as_array().unwrap().is_empty()
        });
    }
    // The dashboard's rollout variable lists the rollout.
    let (_, body) = http_get(&web, "/api/v1/label/rollout/values");
    assert!(body.contains("\"ops/agent\""), "{body}");

    let file: serde_yaml::Value = serde_yaml::from_str(&std::fs::read_to_string(&rules).unwrap()).unwrap();
    let mut operator_rules = 0;
    for rule in file["groups"].as_sequence().unwrap().iter().flat_map(|g| g["rules"].as_sequence().unwrap()) {
        let expr = rule["expr"].as_str().unwrap();
        query(expr);
        let tokens: Vec<&str> = expr
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|t| t.starts_with("vigil_operator_"))
            .collect();
        operator_rules += usize::from(!tokens.is_empty());
        for token in tokens {
            assert!(!query(token).as_array().unwrap().is_empty(), "{token}: no data from the operator");
        }
    }
    assert!(operator_rules >= 5, "the rules select operator series");
}
