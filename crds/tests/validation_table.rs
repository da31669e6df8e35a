//! Every schema rule of the contract, exercised both ways client-side: OpenAPI
//! constraints and CEL rules (through kube's CEL support), on whole manifests.
//! Each invalid case names the field the error must point at and words the
//! message must carry, so a rule that stops firing, or fires on the wrong
//! field, fails here.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails loudly on the first surprise

use serde_json::{Value, json};
use vigil_crds::validate::validate_manifest;

const DIGEST: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

fn rollout() -> Value {
    json!({
        "apiVersion": "vigil.dev/v1alpha1",
        "kind": "AgentRollout",
        "metadata": {"name": "agent-1-10", "namespace": "vigil-system"},
        "spec": {
            "target": {
                "image": format!("ghcr.io/vigil-dev/vigil-agent:1.10.0@sha256:{DIGEST}"),
                "version": "1.10.0",
                "config": {"configMap": "vigil-agent-v3-2", "sha256": DIGEST}
            }
        }
    })
}

fn policy() -> Value {
    json!({
        "apiVersion": "vigil.dev/v1alpha1",
        "kind": "AlertPolicy",
        "metadata": {"name": "node-basics", "namespace": "vigil-system"},
        "spec": {
            "rules": [{
                "name": "HighCpu",
                "metric": {"name": "vigil_node_cpu_utilization_ratio"},
                "detector": {"threshold": {"above": 0.9, "hysteresis": 0.05}},
                "for": "5m",
                "severity": "warning"
            }],
            "routes": [{"name": "default", "receivers": ["ops-slack"]}],
            "receivers": [{
                "name": "ops-slack",
                "slack": {"webhookUrl": {"name": "vigil-alerting", "key": "slack-url"}}
            }]
        }
    })
}

fn status() -> Value {
    json!({
        "apiVersion": "vigil.dev/v1alpha1",
        "kind": "AgentStatus",
        "metadata": {"name": "node-a"},
        "spec": {"nodeName": "node-a"}
    })
}

/// Replaces the value at a JSON pointer (removes it when `new` is null; appends when the
/// index is one past the end), creating objects on the way.
fn set(mut v: Value, pointer: &str, new: Value) -> Value {
    let (parent, key) = pointer.rsplit_once('/').expect("pointer");
    let mut cur = &mut v;
    for seg in parent.split('/').skip(1) {
        cur = match cur {
            Value::Array(a) => &mut a[seg.parse::<usize>().expect("index")],
            Value::Object(_) => cur.as_object_mut().expect("object").entry(seg).or_insert(json!({})),
            _ => panic!("cannot descend into {seg}"),
        };
    }
    match cur {
        Value::Array(a) => {
            let i = key.parse::<usize>().expect("index");
            if i == a.len() { a.push(new) } else { a[i] = new }
        }
        Value::Object(m) if new.is_null() => {
            m.remove(key);
        }
        Value::Object(m) => {
            m.insert(key.to_owned(), new);
        }
        _ => panic!("cannot set {key}"),
    }
    v
}

struct Case {
    name: &'static str,
    manifest: Value,
    /// `None`: must be valid. `Some((path, words))`: must fail with an error at exactly `path`
    /// whose message contains `words`.
    expect: Option<(&'static str, &'static str)>,
}

fn ok(name: &'static str, manifest: Value) -> Case {
    Case { name, manifest, expect: None }
}
fn bad(name: &'static str, manifest: Value, path: &'static str, words: &'static str) -> Case {
    Case { name, manifest, expect: Some((path, words)) }
}

fn cases() -> Vec<Case> {
    let waves = |w: Value| set(rollout(), "/spec/waves", w);
    let window = |w: Value| set(rollout(), "/spec/maintenanceWindows", json!([w]));
    let pin = |name: &str, pool: &str| json!({"name": name, "nodeSelector": {"matchLabels": {"pool": pool}}, "revision": "1.9.3", "reason": "legacy OS"});
    vec![
        // --- AgentRollout: valid ---
        ok("minimal rollout takes every default", rollout()),
        ok(
            "explicit percent waves",
            waves(json!([{"percent": 10, "bakeTime": "5m"}, {"percent": 50}, {"percent": 100}])),
        ),
        ok("count waves then a final 100%", waves(json!([{"count": 1}, {"count": 20}, {"percent": 100}]))),
        ok("single wave of 100%", waves(json!([{"percent": 100, "bakeTime": "0s"}]))),
        ok(
            "tag reference with the explicit opt-out",
            set(
                set(rollout(), "/spec/target/image", json!("ghcr.io/vigil-dev/vigil-agent:dev")),
                "/spec/target/allowTagReference",
                json!(true),
            ),
        ),
        ok(
            "window crossing midnight",
            window(json!({"days": ["Sat", "Sun"], "start": "22:00", "end": "04:00", "timeZone": "Asia/Seoul"})),
        ),
        ok("two distinct pins", set(rollout(), "/spec/pins", json!([pin("legacy", "old"), pin("canary", "edge")]))),
        ok(
            "compatibility guard",
            set(
                rollout(),
                "/spec/compatibility",
                json!({"minKernel": "5.4", "architectures": ["amd64", "arm64"], "osImages": ["Ubuntu 22.04*"]}),
            ),
        ),
        ok(
            "prometheus gate",
            set(
                rollout(),
                "/spec/healthGate",
                json!({"prometheus": {"url": "http://prometheus.monitoring:9090", "query": "sum(up)", "threshold": 0.5, "failBelow": true}}),
            ),
        ),
        ok("pin failing group policy", set(rollout(), "/spec/failurePolicy", json!("PinFailingGroup"))),
        // --- AgentRollout: invalid ---
        bad(
            "image without digest",
            set(rollout(), "/spec/target/image", json!("ghcr.io/vigil-dev/vigil-agent:1.10.0")),
            "spec.target.image",
            "pinned by digest",
        ),
        bad(
            "image with a short digest",
            set(rollout(), "/spec/target/image", json!("ghcr.io/vigil-dev/vigil-agent@sha256:abc")),
            "spec.target.image",
            "pinned by digest",
        ),
        bad(
            "config hash too short",
            set(rollout(), "/spec/target/config/sha256", json!("abc123")),
            "spec.target.config.sha256",
            "64 lowercase hex",
        ),
        bad(
            "config hash in upper case",
            set(rollout(), "/spec/target/config/sha256", json!(DIGEST.to_uppercase())),
            "spec.target.config.sha256",
            "64 lowercase hex",
        ),
        bad("config reference missing", set(rollout(), "/spec/target/config", Value::Null), "spec.target", "config"),
        bad(
            "last wave short of 100%",
            waves(json!([{"percent": 5}, {"percent": 50}])),
            "spec.waves",
            "last wave must be percent: 100",
        ),
        bad(
            "last wave is a count",
            waves(json!([{"percent": 5}, {"count": 100}])),
            "spec.waves",
            "last wave must be percent: 100",
        ),
        bad(
            "percent waves going down",
            waves(json!([{"percent": 25}, {"percent": 5}, {"percent": 100}])),
            "spec.waves",
            "percent waves must be strictly increasing",
        ),
        bad(
            "percent waves repeating",
            waves(json!([{"percent": 25}, {"percent": 25}, {"percent": 100}])),
            "spec.waves",
            "percent waves must be strictly increasing",
        ),
        bad(
            "count waves going down",
            waves(json!([{"count": 10}, {"count": 3}, {"percent": 100}])),
            "spec.waves",
            "count waves must be strictly increasing",
        ),
        bad(
            "wave with percent and count",
            waves(json!([{"percent": 5, "count": 3}, {"percent": 100}])),
            "spec.waves[0]",
            "exactly one of percent or count",
        ),
        bad(
            "wave with neither",
            waves(json!([{"bakeTime": "1m"}, {"percent": 100}])),
            "spec.waves[0]",
            "exactly one of percent or count",
        ),
        bad("wave over 100%", waves(json!([{"percent": 150}])), "spec.waves[0].percent", "maximum"),
        bad("no waves at all", waves(json!([])), "spec.waves", "less than 1 item"),
        bad(
            "negative bake time",
            waves(json!([{"percent": 100, "bakeTime": "-5m"}])),
            "spec.waves[0].bakeTime",
            "must not be negative",
        ),
        bad(
            "zero heartbeat gap",
            set(rollout(), "/spec/healthGate", json!({"heartbeatGap": "0s"})),
            "spec.healthGate",
            "must be positive",
        ),
        bad(
            "unknown failure policy",
            set(rollout(), "/spec/failurePolicy", json!("Ignore")),
            "spec.failurePolicy",
            "Rollback",
        ),
        bad(
            "window start not HH:MM",
            window(json!({"start": "9:00", "end": "17:00"})),
            "spec.maintenanceWindows[0].start",
            "start must be HH:MM",
        ),
        bad(
            "window end past midnight",
            window(json!({"start": "09:00", "end": "24:30"})),
            "spec.maintenanceWindows[0].end",
            "end must be HH:MM",
        ),
        bad(
            "empty window",
            window(json!({"start": "09:00", "end": "09:00"})),
            "spec.maintenanceWindows[0].end",
            "start and end are equal",
        ),
        bad(
            "repeated day",
            window(json!({"days": ["Mon", "Mon"], "start": "09:00", "end": "17:00"})),
            "spec.maintenanceWindows[0].days",
            "days must not repeat",
        ),
        bad(
            "unknown day",
            window(json!({"days": ["Monday"], "start": "09:00", "end": "17:00"})),
            "spec.maintenanceWindows[0].days[0]",
            "Mon",
        ),
        bad(
            "time zone that is not IANA",
            window(json!({"start": "09:00", "end": "17:00", "timeZone": "+09:00"})),
            "spec.maintenanceWindows[0].timeZone",
            "IANA",
        ),
        bad(
            "duplicate pin names",
            set(rollout(), "/spec/pins", json!([pin("legacy", "old"), pin("legacy", "edge")])),
            "spec.pins",
            "pin names must be unique",
        ),
        bad(
            "duplicate pin selectors",
            set(rollout(), "/spec/pins", json!([pin("legacy", "old"), pin("legacy2", "old")])),
            "spec.pins",
            "same nodeSelector",
        ),
        bad(
            "pin without a reason",
            set(rollout(), "/spec/pins", json!([{"name": "p", "nodeSelector": {}, "revision": "1.9.3", "reason": ""}])),
            "spec.pins[0].reason",
            "shorter than 1",
        ),
        bad(
            "pin name not a DNS label",
            set(rollout(), "/spec/pins", json!([pin("Legacy_OS", "old")])),
            "spec.pins[0].name",
            "DNS label",
        ),
        bad(
            "kernel guard not a version",
            set(rollout(), "/spec/compatibility", json!({"minKernel": "five"})),
            "spec.compatibility.minKernel",
            "MAJOR.MINOR",
        ),
        bad(
            "prometheus url without scheme",
            set(
                rollout(),
                "/spec/healthGate",
                json!({"prometheus": {"url": "prometheus:9090", "query": "up", "threshold": 1}}),
            ),
            "spec.healthGate.prometheus.url",
            "http:// or https://",
        ),
        ok(
            "manual rollback to a named revision",
            set(rollout(), "/spec/action", json!({"id": "INC-42", "kind": "Rollback", "to": "r-3f9c2a1b0d"})),
        ),
        bad(
            "promote naming a revision",
            set(rollout(), "/spec/action", json!({"id": "1", "kind": "Promote", "to": "r-3f9c2a1b0d"})),
            "spec.action.to",
            "only Rollback takes a target revision",
        ),
        bad(
            "action without an id",
            set(rollout(), "/spec/action", json!({"id": "", "kind": "Abort"})),
            "spec.action.id",
            "shorter than 1",
        ),
        bad("unknown channel", set(rollout(), "/spec/channel", json!("nightly")), "spec.channel", "stable"),
        // --- AlertPolicy ---
        ok("policy with a rule, a route and a receiver", policy()),
        ok(
            "event-rate rule for brute force",
            set(
                policy(),
                "/spec/rules/0",
                json!({"name": "SshBruteForce", "event": {"type": "auth.ssh.failed"}, "detector": {"eventRate": {"count": 10, "window": "1m", "per": "source_ip"}}, "severity": "critical"}),
            ),
        ),
        ok(
            "alertmanager receiver",
            set(
                policy(),
                "/spec/receivers/0",
                json!({"name": "ops-slack", "alertmanager": {"urls": ["http://127.0.0.1:9093"]}}),
            ),
        ),
        ok(
            "silence and fallback receiver",
            set(
                set(policy(), "/spec/fallbackReceiver", json!("ops-slack")),
                "/spec/silences",
                json!([{"matchers": [{"label": "alertname", "value": "HighCpu"}], "endsAt": "2026-12-01T00:00:00Z", "comment": "kernel upgrade"}]),
            ),
        ),
        ok(
            "trend with a capacity metric",
            set(
                policy(),
                "/spec/rules/0/detector",
                json!({"trend": {"window": "1h", "horizon": "4h", "capacityMetric": "vigil_node_filesystem_size_bytes"}}),
            ),
        ),
        bad(
            "trend without a capacity",
            set(policy(), "/spec/rules/0/detector", json!({"trend": {"window": "1h", "horizon": "4h"}})),
            "spec.rules[0].detector.trend",
            "exactly one of capacity or capacityMetric",
        ),
        bad(
            "fallback receiver not defined",
            set(policy(), "/spec/fallbackReceiver", json!("pager")),
            "spec.fallbackReceiver",
            "fallback receiver must be defined",
        ),
        bad(
            "silence without matchers",
            set(policy(), "/spec/silences", json!([{"matchers": [], "endsAt": "2026-12-01T00:00:00Z"}])),
            "spec.silences[0].matchers",
            "at least one matcher",
        ),
        bad(
            "route without receivers",
            set(policy(), "/spec/routes/0/receivers", json!([])),
            "spec.routes[0].receivers",
            "at least one receiver",
        ),
        bad(
            "route without a receivers field",
            set(policy(), "/spec/routes/0/receivers", Value::Null),
            "spec.routes[0].receivers",
            "at least one receiver",
        ),
        bad(
            "route naming an unknown receiver",
            set(policy(), "/spec/routes/0/receivers", json!(["pager"])),
            "spec.routes",
            "must be defined in spec.receivers",
        ),
        bad(
            "receiver of two kinds",
            set(policy(), "/spec/receivers/0/discord", json!({"webhookUrl": {"name": "s", "key": "k"}})),
            "spec.receivers[0]",
            "exactly one receiver kind",
        ),
        bad(
            "receiver of no kind",
            set(policy(), "/spec/receivers/0/slack", Value::Null),
            "spec.receivers[0]",
            "exactly one receiver kind",
        ),
        bad(
            "duplicate receiver names",
            set(
                policy(),
                "/spec/receivers/1",
                json!({"name": "ops-slack", "discord": {"webhookUrl": {"name": "s", "key": "k"}}}),
            ),
            "spec.receivers",
            "receiver names must be unique",
        ),
        bad(
            "rule with metric and event",
            set(policy(), "/spec/rules/0/event", json!({"type": "auth.ssh.failed"})),
            "spec.rules[0]",
            "exactly one of metric or event",
        ),
        bad(
            "rule with two detectors",
            set(policy(), "/spec/rules/0/detector/zScore", json!({"window": 60, "threshold": 4})),
            "spec.rules[0].detector",
            "exactly one detector",
        ),
        ok("anomaly with the default sensitivity", set(policy(), "/spec/rules/0/detector", json!({"anomaly": {}}))),
        ok(
            "anomaly with a sensitivity",
            set(policy(), "/spec/rules/0/detector", json!({"anomaly": {"sensitivity": "low"}})),
        ),
        bad(
            "anomaly with an unknown sensitivity",
            set(policy(), "/spec/rules/0/detector", json!({"anomaly": {"sensitivity": "extreme"}})),
            "spec.rules[0].detector.anomaly.sensitivity",
            "\"medium\"",
        ),
        bad(
            "anomaly next to another detector",
            set(policy(), "/spec/rules/0/detector/anomaly", json!({})),
            "spec.rules[0].detector",
            "exactly one detector",
        ),
        ok(
            "z-score window bounded in time",
            set(policy(), "/spec/rules/0/detector", json!({"zScore": {"window": 60, "threshold": 4, "maxAge": "1h"}})),
        ),
        bad(
            "z-score window with a negative maxAge",
            set(policy(), "/spec/rules/0/detector", json!({"mad": {"window": 60, "threshold": 4, "maxAge": "-5m"}})),
            "spec.rules[0].detector.mad",
            "maxAge must be positive",
        ),
        bad(
            "threshold with no bound",
            set(policy(), "/spec/rules/0/detector/threshold", json!({"hysteresis": 0.1})),
            "spec.rules[0].detector.threshold",
            "above, below or both",
        ),
        bad(
            "duplicate rule names",
            set(
                policy(),
                "/spec/rules/1",
                json!({"name": "HighCpu", "metric": {"name": "x"}, "detector": {"threshold": {"above": 1}}}),
            ),
            "spec.rules",
            "rule names must be unique",
        ),
        bad(
            "rule name with spaces",
            set(policy(), "/spec/rules/0/name", json!("high cpu")),
            "spec.rules[0].name",
            "start with a letter",
        ),
        bad(
            "unknown severity",
            set(policy(), "/spec/rules/0/severity", json!("page")),
            "spec.rules[0].severity",
            "critical",
        ),
        bad(
            "smtp smarthost without port",
            set(
                policy(),
                "/spec/receivers/0",
                json!({"name": "ops-slack", "email": {"smarthost": "smtp.example.com", "from": "vigil@example.com", "to": ["ops@example.com"]}}),
            ),
            "spec.receivers[0].email.smarthost",
            "host:port",
        ),
        bad(
            "alertmanager url without scheme",
            set(
                policy(),
                "/spec/receivers/0",
                json!({"name": "ops-slack", "alertmanager": {"urls": ["alertmanager:9093"]}}),
            ),
            "spec.receivers[0].alertmanager.urls",
            "http:// or https://",
        ),
        bad(
            "rate limit of zero per hour",
            set(policy(), "/spec/routes/0/rateLimit", json!({"maxPerHour": 0})),
            "spec.routes[0].rateLimit.maxPerHour",
            "minimum",
        ),
        // --- AgentStatus ---
        ok("agent status named after its node", status()),
        bad(
            "agent status named after another node",
            set(status(), "/metadata/name", json!("node-b")),
            "spec.nodeName",
            "named after its node",
        ),
        bad(
            "agent status with unknown health",
            set(status(), "/status", json!({"health": "Fine"})),
            "status.health",
            "Healthy",
        ),
    ]
}

#[test]
fn every_rule_accepts_what_it_should_and_names_the_field_it_refuses() {
    let cases = cases();
    assert!(cases.len() >= 30, "the table must hold at least 30 cases");
    assert!(cases.iter().filter(|c| c.expect.is_none()).count() >= 10);
    let mut failures = Vec::new();
    for case in &cases {
        let result = validate_manifest(&case.manifest);
        match (&case.expect, result) {
            (None, Ok(())) => {}
            (None, Err(e)) => failures.push(format!("{}: expected valid, got {e}", case.name)),
            (Some((path, _)), Ok(())) => failures.push(format!("{}: expected an error at {path}, got none", case.name)),
            (Some((path, words)), Err(e)) => {
                if !e.errors.iter().any(|f| f.path == *path && f.message.contains(words)) {
                    failures.push(format!(
                        "{}: expected an error at {path} containing {words:?}, got {:?}",
                        case.name, e.errors
                    ));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{} of {} cases wrong:\n{}", failures.len(), cases.len(), failures.join("\n"));
}

#[test]
fn a_manifest_of_another_kind_is_refused_with_a_clear_error() {
    let e = validate_manifest(&json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"}}))
        .unwrap_err();
    assert_eq!(e.errors[0].path, "kind");
    assert!(e.to_string().contains("apps/v1 is not a Vigil resource"), "{e}");
}

#[test]
fn typed_validate_cel_from_the_derive_agrees_with_the_manifest_validator() {
    use vigil_crds::AgentRollout;
    let good: AgentRollout = serde_json::from_value(rollout()).unwrap();
    assert!(good.validate_cel().is_ok());
    let bad: AgentRollout =
        serde_json::from_value(set(rollout(), "/spec/target/config/sha256", json!("nope"))).unwrap();
    let errs = bad.validate_cel().unwrap_err().into_vec();
    assert!(errs.iter().any(|e| e.field_path == "spec.target.config.sha256"), "{errs:?}");
}
