//! One plan of a 5,000- and a 65,000-node fleet, in the states that cost the most: admitting a
//! wave (every node ordered and judged), judging a full wave, and rolling back.
//!
//! `cargo bench -p vigil-plan --bench plan`

#![allow(clippy::unwrap_used, clippy::expect_used)]

use criterion::{Criterion, criterion_group, criterion_main};
use jiff::Timestamp;
use vigil_crds::AgentHealth;
use vigil_crds::rollout::{AgentRolloutStatus, FailurePolicy};
use vigil_plan::simulate::{STABLE, spec, target_name};
use vigil_plan::{AgentView, Limits, NodeAttributes, NodeView, Observed, next};

fn fleet(n: usize, target: &str, on_target: usize, crashing: bool, now: Timestamp) -> Vec<NodeView> {
    (0..n)
        .map(|i| {
            let rev = if i < on_target { target } else { STABLE };
            NodeView {
                name: format!("node-{i:05}"),
                labels: [("pool".to_owned(), "general".to_owned())].into(),
                attributes: NodeAttributes {
                    os_image: "ubuntu".into(),
                    kernel: "6.1.0".into(),
                    arch: "amd64".into(),
                    os: "linux".into(),
                    instance_type: "m5.large".into(),
                    zone: format!("zone-{}", i % 3),
                },
                revision: Some(rev.into()),
                ready: true,
                ready_changed_at: None,
                admitted_at: None,
                agent: Some(AgentView {
                    revision: rev.into(),
                    ready: !(crashing && rev == target),
                    restarts: if crashing && rev == target { 5 } else { 0 },
                    waiting_reason: (crashing && rev == target).then(|| "CrashLoopBackOff".into()),
                    last_termination_reason: None,
                    heartbeat: Some(now),
                    health: Some(AgentHealth::Healthy),
                    started_at: Some(now),
                    created_at: None,
                }),
            }
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    for size in [5000, 65_000] {
        bench_size(c, size);
    }
}

fn bench_size(c: &mut Criterion, size: usize) {
    let s = spec(FailurePolicy::Rollback);
    let target = target_name(&s);
    let now: Timestamp = "2026-01-05T01:00:00Z".parse().unwrap();
    let status = AgentRolloutStatus { stable_revision: Some(STABLE.into()), ..Default::default() };
    let first = next(
        &s,
        &status,
        Some(1),
        "ns/r",
        &Observed {
            nodes: fleet(size, &target, 0, false, now),
            config_sha256: Some(s.target.config.sha256.clone()),
            ..Observed::default()
        },
        now,
        Limits::default(),
    );

    let mut g = c.benchmark_group(format!("plan_{size}_nodes"));
    let healthy = Observed {
        nodes: fleet(size, &target, size / 20, false, now),
        config_sha256: Some(s.target.config.sha256.clone()),
        ..Observed::default()
    };
    g.bench_function("wave_1_healthy_judged", |b| {
        b.iter(|| next(&s, &first.status, Some(1), "ns/r", &healthy, now, Limits::default()))
    });
    let crashing = Observed {
        nodes: fleet(size, &target, size / 20, true, now),
        config_sha256: Some(s.target.config.sha256.clone()),
        ..Observed::default()
    };
    g.bench_function("wave_1_failing_rollback", |b| {
        b.iter(|| next(&s, &first.status, Some(1), "ns/r", &crashing, now, Limits::default()))
    });
    let fresh = Observed {
        nodes: fleet(size, &target, 0, false, now),
        config_sha256: Some(s.target.config.sha256.clone()),
        ..Observed::default()
    };
    g.bench_function("first_plan_admit_wave_1", |b| {
        b.iter(|| next(&s, &status, Some(1), "ns/r", &fresh, now, Limits::default()))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
