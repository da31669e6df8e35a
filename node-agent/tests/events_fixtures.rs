//! The event parsers over captured logs: Debian 12 and Ubuntu 24.04 `auth.log`, RHEL 9
//! `secure`, and kernel logs of 4.19, 5.15 and 6.1 kernels in the /dev/kmsg format.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails loudly on the first surprise
use std::path::PathBuf;

use vigil_agent::events::auth::{AuthParser, BruteForce, BruteForceRule, Parsed};
use vigil_agent::events::kmsg::{Classifier, parse_record, split_records};
use vigil_agent::events::{Event, EventType};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/logs").join(name)
}

struct AuthRun {
    events: Vec<Event>,
    ignored: usize,
    unparsed: usize,
    brute: Vec<Event>,
}

fn auth(name: &str) -> AuthRun {
    let text = std::fs::read_to_string(fixture(name)).unwrap();
    let parser = AuthParser::default();
    let now: jiff::Timestamp = "2026-11-22T12:00:00Z".parse().unwrap();
    let mut bf = BruteForce::new(BruteForceRule::default());
    let mut run = AuthRun { events: Vec::new(), ignored: 0, unparsed: 0, brute: Vec::new() };
    for line in text.lines() {
        match parser.parse(line, now) {
            Parsed::Event(e) => {
                run.brute.extend(bf.observe(&e));
                run.events.push(e);
            }
            Parsed::Ignored => run.ignored += 1,
            Parsed::Unparsed(_) => run.unparsed += 1,
        }
    }
    run
}

fn types(events: &[Event]) -> Vec<&'static str> {
    events.iter().map(|e| e.kind.as_str()).collect()
}

#[test]
fn debian_auth_log() {
    let r = auth("debian12-auth.log");
    assert_eq!(
        types(&r.events),
        [
            "auth.ssh.accepted",
            "auth.session.opened",
            "auth.sudo",
            "auth.session.opened",
            "auth.session.closed",
            "auth.su",
            "auth.session.opened",
            "auth.account.added",
            "auth.account.added",
            "auth.password.changed",
            "auth.account.changed",
            "auth.ssh.failed",
            "auth.ssh.failed",
            "auth.ssh.failed",
            "auth.ssh.failed",
            "auth.ssh.failed",
            "auth.sudo.failed",
            "auth.sudo.failed",
            "auth.su.failed",
            "auth.session.closed",
            "auth.account.deleted",
            "auth.account.deleted",
        ]
    );
    // Cron sessions, logind, the shadow-group echo and the preauth close are ignored; the one
    // line that is not syslog is unparsed.
    assert_eq!((r.ignored, r.unparsed), (5, 1));
    let sudo = &r.events[2];
    assert_eq!(sudo.detail_str("command"), Some("/usr/bin/apt-get install -y htop"));
    // From 203.0.113.50: 1 failed password for the invalid user + 1 + 2 repeated for root = 4
    // attempts in 12 s, under the threshold of 5. sshd's `Invalid user` notice (the connection
    // named an unknown user; its attempt is the `Failed … for invalid user` line after it) and
    // PAM's `2 more authentication failures` (a summary of the failures logged above) are
    // reported, not counted again.
    // 3 wrong sudo passwords, sudo refused, su refused = 5 failures by mallory in 21 s.
    assert_eq!(r.brute.len(), 1);
    assert_eq!(r.brute[0].detail_str("user"), Some("mallory"));
    let added = r.events.iter().find(|e| e.detail_str("account") == Some("user")).unwrap();
    assert_eq!((added.detail_str("name"), added.detail_i64("uid")), (Some("deploy"), Some(1002)));
}

#[test]
fn ubuntu_auth_log_with_rfc3339_times() {
    let r = auth("ubuntu24-auth.log");
    assert_eq!(
        types(&r.events),
        [
            "auth.ssh.accepted",
            "auth.session.opened",
            "auth.sudo",
            "auth.ssh.failed",
            "auth.ssh.failed",
            "auth.ssh.failed",
            "auth.ssh.failed",
            "auth.account.changed",
            "auth.account.added",
        ]
    );
    assert_eq!((r.ignored, r.unparsed), (2, 0));
    assert_eq!(r.events[0].time, "2026-11-22T10:00:12.421907Z".parse().unwrap());
    assert_eq!(r.events[3].detail_str("program"), Some("sshd-session"));
    assert!(r.brute.is_empty(), "four failures stay under the threshold of five");
}

#[test]
fn rhel_secure() {
    let r = auth("rhel9-secure");
    assert_eq!(
        types(&r.events),
        [
            "auth.ssh.accepted",
            "auth.session.opened",
            "auth.sudo",
            "auth.su.failed",
            "auth.su.failed",
            "auth.account.added",
            "auth.account.changed",
            "auth.ssh.failed",
            "auth.ssh.failed",
            "auth.ssh.failed",
            "auth.ssh.failed",
            "auth.ssh.failed",
            "auth.ssh.failed",
            "auth.account.deleted",
        ]
    );
    assert_eq!((r.ignored, r.unparsed), (1, 0), "the crond session");
    assert_eq!(r.events[0].detail_str("method"), Some("password"));
    assert_eq!(r.events[2].detail_i64("programPid"), Some(4100));
    assert_eq!(r.brute.len(), 1);
    assert_eq!(r.brute[0].details["users"], serde_json::json!(["root"]));
}

fn kmsg(name: &str) -> (Vec<Event>, usize) {
    let bytes = std::fs::read(fixture(name)).unwrap();
    let boot: jiff::Timestamp = "2026-11-20T00:00:00Z".parse().unwrap();
    let mut c = Classifier::default();
    let mut out = Vec::new();
    let mut bad = 0;
    for rec in split_records(&bytes) {
        match parse_record(rec) {
            Some(r) => out.extend(c.classify(&r, boot)),
            None => bad += 1,
        }
    }
    (out, bad)
}

#[test]
fn kernel_4_19() {
    let (e, bad) = kmsg("kmsg-4.19.txt");
    assert_eq!(
        types(&e),
        [
            "kernel.link_up",
            "kernel.oom_kill",
            "kernel.hung_task",
            "kernel.lockup",
            "kernel.io_error",
            "kernel.io_error",
            "kernel.fs_error",
            "kernel.fs_readonly",
            // `BUG: unable to handle…` then `Oops: 0000 [#1]`: one crash, one event.
            "kernel.oops",
            "kernel.link_down",
            "kernel.taint",
        ]
    );
    assert_eq!(bad, 0);
    let oom = &e[1];
    assert_eq!((oom.detail_i64("pid"), oom.detail_str("comm")), (Some(3141), Some("java")));
    assert_eq!(oom.detail_i64("anonRssKiB"), Some(6_291_456));
    assert_eq!(oom.time, "2026-11-21T00:00:00.002Z".parse().unwrap(), "boot time plus the record's time");
    assert_eq!(e[4].detail_str("device"), Some("sda"));
    assert_eq!(e[10].detail_str("module"), Some("nvidia"));
}

#[test]
fn kernel_5_15() {
    let (e, bad) = kmsg("kmsg-5.15.txt");
    assert_eq!(
        types(&e),
        [
            "kernel.link_up",
            "kernel.oom_kill",
            "kernel.segfault",
            "kernel.general_protection",
            "kernel.io_error",
            "kernel.fs_error",
            "kernel.fs_error",
            "kernel.link_down",
            "kernel.lockup",
            "kernel.machine_check",
            "kernel.machine_check",
        ]
    );
    assert_eq!(bad, 0);
    let oom = &e[1];
    assert_eq!(oom.detail_str("constraint"), Some("CONSTRAINT_MEMCG"));
    assert_eq!(
        oom.detail_str("containerId"),
        Some("9f1e2d3c4b5a69788776655443322110ffeeddccbbaa99887766554433221100"),
        "an OOM kill in a pod names its container"
    );
    assert_eq!(e[4].detail_str("device"), Some("nvme1n1"));
    assert_eq!(e[7].detail_str("interface"), Some("ens1f0"));
    assert_eq!(e[8].detail_i64("pid"), Some(31337));
}

#[test]
fn kernel_6_1() {
    let (e, bad) = kmsg("kmsg-6.1.txt");
    assert_eq!(
        types(&e),
        [
            "kernel.oom_kill",
            "kernel.hung_task",
            // The BUG and its Oops line are one crash; the panic it led to is its own event.
            "kernel.oops",
            "kernel.oops",
            "kernel.io_error",
            "kernel.fs_error",
            "kernel.fs_readonly",
            "kernel.link_down",
            "kernel.taint",
            "kernel.taint",
            "kernel.lockup",
            "kernel.general_protection",
        ]
    );
    assert_eq!(bad, 1, "the line without a header");
    assert_eq!(e[0].detail_i64("uid"), Some(105));
    assert_eq!(e[0].detail_str("taskMemcg"), Some("/system.slice/postgresql@15-main.service"));
    assert_eq!(e[1].detail_i64("seconds"), Some(241));
    assert_eq!(e[7].detail_str("interface"), Some("eth1"));
    assert!(e.iter().all(|ev| ev.detail_i64("kernelSeq").is_some()));
    assert!(
        e.iter()
            .filter(|ev| ev.kind == EventType::Oops)
            .all(|ev| ev.severity == vigil_agent::events::Severity::Critical)
    );
}
