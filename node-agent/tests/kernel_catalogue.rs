//! The catalogue of node problems in `docs/agent-events.md` ("node-problem-detector's
//! catalogue, and beyond"), row by row: each test line, as a `/dev/kmsg` record, through the
//! kernel log's parser and classifier gives the row's event type, severity and key fields; the
//! row's condition is set (three times over, for the conditions of frequency) and clears again;
//! a row with no condition sets none. A row without a test line must say why (`n/a:` or `not
//! covered yet:`), so a row added without a test fails here.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use vigil_agent::config::Config;
use vigil_agent::events::auth::{AuthParser, Parsed, Writer};
use vigil_agent::events::conditions::Conditions;
use vigil_agent::events::kmsg::{Classifier, parse_record};
use vigil_agent::events::{Event, Severity};

mod catalogue;
use catalogue::{catalogue, spans};

fn t0() -> jiff::Timestamp {
    jiff::Timestamp::from_second(1_800_000_000).unwrap()
}

fn classify(line: &str, seq: u64) -> Option<Event> {
    let record = parse_record(format!("3,{seq},{},-;{line}", seq * 1_000_000).as_bytes()).expect("a record");
    Classifier::default().classify(&record, t0())
}

fn detail_text(e: &Event, key: &str) -> Option<String> {
    e.details.get(key).map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
}

#[test]
fn every_row_of_the_catalogue_is_tested_and_gives_its_event_severity_fields_and_condition() {
    let rows = catalogue();
    assert!(rows.len() >= 40, "the catalogue has {} rows", rows.len());
    let mut tested = 0;
    for row in &rows {
        let Some(line) = row.line() else {
            assert!(
                row.test.starts_with("n/a:") || row.test.starts_with("not covered yet:"),
                "{}: no test line, and no reason why: {:?}",
                row.problem,
                row.test
            );
            continue;
        };
        tested += 1;
        let e = if row.is_syslog() {
            // As the journal gives it: systemd's entry, written by pid 1 (journald's record of
            // the writer vouches for it).
            let message = line.split_once(" systemd[1]: ").map_or(line, |(_, m)| m);
            let pid1 = Writer {
                exe: Some("/usr/lib/systemd/systemd"),
                comm: Some("systemd"),
                uid: Some(0),
                ..Writer::default()
            };
            match AuthParser::default().parse_entry("systemd", Some(1), "node-1", message, t0(), &pid1) {
                Parsed::Event(e) => e,
                other => panic!("{}: {other:?} for {line:?}", row.problem),
            }
        } else {
            classify(line, 10).unwrap_or_else(|| panic!("{}: no event for {line:?}", row.problem))
        };
        assert_eq!(e.kind.as_str(), row.kind(), "{}: {line}", row.problem);
        let severity = match row.severity.as_str() {
            "info" => Severity::Info,
            "warning" => Severity::Warning,
            "critical" => Severity::Critical,
            other => panic!("{}: severity {other:?}", row.problem),
        };
        assert_eq!(e.severity, severity, "{}: {line}", row.problem);
        for field in spans(&row.fields) {
            let (k, v) = field.split_once('=').unwrap_or_else(|| panic!("{}: field {field:?}", row.problem));
            assert_eq!(detail_text(&e, k).as_deref(), Some(v), "{}: {k} of {line}: {:?}", row.problem, e.details);
        }
        let said = detail_text(&e, "line").unwrap_or_default();
        assert!(
            said.ends_with(line.split_once(" systemd[1]: ").map_or(line, |(_, m)| m).trim()),
            "{}: the line: {said}",
            row.problem
        );

        // The condition: set by the event (five of them, for the conditions of frequency),
        // cleared once `clearAfter` passes with none; a row without one sets none.
        let config = Config::default().events.conditions;
        let clear_after = jiff::SignedDuration::try_from(config.clear_after).unwrap();
        let mut conditions = Conditions::new(config, t0());
        for i in 0..5 {
            let mut again = e.clone();
            again.time = t0() + jiff::SignedDuration::from_secs(i);
            conditions.observe(&again, t0() + jiff::SignedDuration::from_secs(i));
        }
        let active: Vec<&str> = conditions
            .current(t0() + jiff::SignedDuration::from_secs(3))
            .iter()
            .filter(|c| c.active)
            .map(|c| c.kind)
            .collect();
        // The condition the cell starts with; a cell starting `—` names none (and may say why).
        let expected: Vec<&str> =
            spans(&row.condition).into_iter().take(1).filter(|_| row.condition.starts_with('`')).collect();
        assert_eq!(active, expected, "{}: the condition of {line}", row.problem);
        let later = t0() + clear_after + jiff::SignedDuration::from_secs(10);
        assert!(conditions.current(later).iter().all(|c| !c.active), "{}: the condition clears", row.problem);
    }
    assert!(tested >= 35, "{tested} rows with a test line");
}

#[test]
fn ordinary_lines_near_the_catalogues_are_no_events() {
    for line in [
        "nvme nvme0: 8/0/0 default/read/poll queues",
        "audit: type=1400 audit(1700000000.1:2): apparmor=\"STATUS\" operation=\"profile_load\" profile=\"unconfined\" name=\"cri-containerd.apparmor.d\" pid=1 comm=\"apparmor_parser\"",
        "audit: type=1400 audit(1700000000.1:3): avc:  granted  { setenforce } for  pid=1 comm=\"load_policy\"",
        "------------[ cut here ]------------",
        "nf_conntrack: default automatic helper assignment has been turned off for security reasons",
        "TCP: Hash tables configured (established 524288 bind 65536)",
        "EXT4-fs (sda1): mounted filesystem with ordered data mode. Quota mode: none.",
        "BTRFS info (device sdb1): disk space caching is enabled",
    ] {
        assert!(classify(line, 1).is_none(), "{line}: {:?}", classify(line, 1));
    }
}
