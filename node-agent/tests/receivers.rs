//! Receivers against real peers: Debian's Prometheus Alertmanager started on 127.0.0.1
//! (receives, groups and resolves alerts, asserted through its v2 API), and a local capture
//! server standing in for Slack, Discord, Telegram and a webhook (this machine has no
//! internet), which also answers 429 with Retry-After and 400. Every wait is bounded.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use serde_json::Value;
use vigil_agent::alert::Alert;

mod peers;
use peers::{Alertmanager, Capture, free_port, http_get};
use vigil_agent::alert::receivers::Receiver;
use vigil_agent::alert::send::{Backoff, Sender};
use vigil_agent::events::Severity;

fn disk_alert(mountpoint: &str) -> Alert {
    let mut a = Alert::new("VigilTestDiskFull", "node-a", Severity::Critical, jiff::Timestamp::now())
        .label("mountpoint", mountpoint);
    a.annotations.insert("summary".into(), format!("disk {mountpoint} full in 3h"));
    a
}

fn no_wait_backoff() -> Backoff {
    Backoff { ladder: vec![Duration::from_millis(10); 3], jitter: 0.0 }
}

#[test]
fn alertmanager_receives_groups_and_resolves() {
    let dir = tempfile::tempdir().unwrap();
    let am = Alertmanager::start(dir.path());
    let addr = am.addr.clone();

    let receiver = Receiver::Alertmanager { urls: vec![format!("http://{addr}")], bearer_token: None };
    let sender = Sender::new(Duration::from_secs(5)).unwrap();
    let firing = [disk_alert("/var"), disk_alert("/data")];
    for req in receiver.requests(&firing) {
        assert_eq!(sender.deliver(&req, &no_wait_backoff(), || 0.5, |_| true), Ok(1));
    }
    let (status, body) = http_get(&addr, "/api/v2/alerts");
    assert_eq!(status, 200);
    let alerts: Vec<Value> = serde_json::from_str(&body).unwrap();
    let ours: Vec<&Value> = alerts.iter().filter(|a| a["labels"]["alertname"] == "VigilTestDiskFull").collect();
    assert_eq!(ours.len(), 2, "{body}");
    assert!(ours.iter().all(|a| a["status"]["state"] == "active"), "{body}");
    assert!(ours.iter().any(|a| a["annotations"]["summary"] == "disk /var full in 3h"));
    assert!(ours.iter().all(|a| a["labels"]["node"] == "node-a" && a["labels"]["severity"] == "critical"));

    // Grouped by alertname: one group with both.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, body) = http_get(&addr, "/api/v2/alerts/groups");
        let groups: Vec<Value> = serde_json::from_str(&body).unwrap_or_default();
        let ours = groups.iter().find(|g| g["labels"]["alertname"] == "VigilTestDiskFull");
        if let Some(g) = ours {
            assert_eq!(g["alerts"].as_array().unwrap().len(), 2, "{body}");
            break;
        }
        assert!(Instant::now() < deadline, "no group: {body}");
        std::thread::sleep(Duration::from_millis(100));
    }

    // Resolve one: Alertmanager ends it (endsAt in the past) and stops listing it as active.
    // The same alert (same start) with its end: Alertmanager refuses an end before the start.
    let mut resolved = firing[0].clone();
    resolved.ends_at = Some(jiff::Timestamp::now());
    for req in receiver.requests(&[resolved]) {
        assert_eq!(sender.deliver(&req, &no_wait_backoff(), || 0.5, |_| true), Ok(1));
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, body) = http_get(&addr, "/api/v2/alerts?active=true&silenced=false&inhibited=false&unprocessed=false");
        let alerts: Vec<Value> = serde_json::from_str(&body).unwrap_or_default();
        let mounts: Vec<&str> = alerts
            .iter()
            .filter(|a| a["labels"]["alertname"] == "VigilTestDiskFull")
            .filter_map(|a| a["labels"]["mountpoint"].as_str())
            .collect();
        if mounts == ["/data"] {
            break;
        }
        assert!(Instant::now() < deadline, "still active: {mounts:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn capture(script: Vec<u16>) -> (String, Capture) {
    let c = Capture::with_script(script);
    (c.addr.clone(), c)
}

#[test]
fn saas_payloads_arrive_as_their_services_document_them() {
    let (addr, seen) = capture(vec![]);
    let base = format!("http://{addr}");
    let receivers = [
        Receiver::Slack { webhook_url: format!("{base}/services/T000/B000/hooksecret"), channel: None },
        Receiver::Discord { webhook_url: format!("{base}/api/webhooks/1/tok") },
        Receiver::Telegram { api_url: base.clone(), bot_token: "123:ABC".into(), chat_id: "-1001".into() },
        Receiver::Webhook { url: format!("{base}/hook"), bearer_token: None },
    ];
    let sender = Sender::new(Duration::from_secs(5)).unwrap();
    let alerts = [disk_alert("/var")];
    for r in &receivers {
        for req in r.requests(&alerts) {
            assert_eq!(sender.deliver(&req, &no_wait_backoff(), || 0.5, |_| true), Ok(1), "{}", r.kind());
        }
    }
    let seen: Vec<(String, Value)> = seen.requests().into_iter().map(|c| (c.path, c.body)).collect();
    let paths: Vec<&str> = seen.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(paths, ["/services/T000/B000/hooksecret", "/api/webhooks/1/tok", "/bot123:ABC/sendMessage", "/hook"]);
    let slack = &seen[0].1;
    assert!(slack["text"].is_string() && slack["blocks"][0]["text"]["type"] == "mrkdwn");
    let discord = &seen[1].1;
    assert!(discord["embeds"][0]["title"].as_str().unwrap().contains("VigilTestDiskFull"));
    assert!(discord["embeds"][0]["color"].is_u64());
    let telegram = &seen[2].1;
    assert_eq!((telegram["chat_id"].as_str(), telegram["parse_mode"].as_str()), (Some("-1001"), Some("HTML")));
    let hook = &seen[3].1;
    assert_eq!(hook["alerts"][0]["labels"]["mountpoint"], "/var");
}

#[test]
fn retry_after_is_honoured_and_a_refusal_is_not_retried() {
    let (addr, seen) = capture(vec![429, 503, 200, 400]);
    let sender = Sender::new(Duration::from_secs(5)).unwrap();
    let req = Receiver::Webhook { url: format!("http://{addr}/hook"), bearer_token: None }
        .requests(&[disk_alert("/var")])
        .remove(0);
    let mut waits = Vec::new();
    let backoff = Backoff { ladder: vec![Duration::from_millis(100); 3], jitter: 0.0 };
    assert_eq!(
        sender.deliver(
            &req,
            &backoff,
            || 0.5,
            |d| {
                waits.push(d);
                true
            }
        ),
        Ok(3)
    );
    assert_eq!(waits, [Duration::from_secs(2), Duration::from_millis(100)], "429's Retry-After, then the ladder");
    let refused = sender.deliver(&req, &backoff, || 0.5, |_| true);
    assert_eq!(refused, Err("HTTP 400; not retried".into()));
    assert_eq!(seen.requests().len(), 4);
    // Nobody listening: every rung of the ladder, then the error (without the URL).
    let dead = Receiver::Webhook { url: format!("http://127.0.0.1:{}/x", free_port()), bearer_token: None }
        .requests(&[disk_alert("/")])
        .remove(0);
    let err = sender.deliver(&dead, &backoff, || 0.5, |_| true).unwrap_err();
    assert!(err.starts_with("could not connect") && err.ends_with("after 4 attempts"), "{err}");
    assert!(!err.contains("127.0.0.1"), "{err}");
}
