//! Property tests: every parser of host text takes any input without panicking, and the
//! whole collector survives any content in any host file.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails loudly on the first surprise

mod common;

use common::copy_tree;

use std::collections::BTreeMap;

use proptest::prelude::*;
use vigil_agent::config::{Collectors, CompiledFilters, Config};
use vigil_agent::host::HostRoot;
use vigil_agent::proc::{disks, fd, identity, net, pressure, processes};
use vigil_agent::snapshot::Collector;

/// Text that looks like host files often enough to reach deep into the parsers.
fn hostish() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        proptest::collection::vec(
            prop_oneof![
                Just(" ".to_owned()),
                Just("\n".to_owned()),
                Just(":".to_owned()),
                Just("=".to_owned()),
                Just("-".to_owned()),
                Just("\\040".to_owned()),
                "[0-9]{1,25}",
                "[a-z_]{1,8}",
                "[0-9A-F]{1,8}",
                Just("(".to_owned()),
                Just(")".to_owned())
            ],
            0..80
        )
        .prop_map(|v| v.concat()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn text_parsers_never_panic(text in hostish()) {
        let _ = pressure::parse(&text);
        let _ = fd::parse(&text);
        let _ = disks::parse_mountinfo(&text);
        let _ = disks::unescape(&text);
        let mut states = BTreeMap::new();
        let _ = net::count_tcp_states(&text, &mut states);
        let _ = net::parse_sockstat(&text);
        let _ = net::parse_snmp_section(&text, "Tcp");
        let _ = processes::cgroup_path(&text);
        let _ = processes::container_id(&text);
        let _ = processes::cmdline_text(text.as_bytes());
        let _ = processes::Users::parse(&text);
        let _ = identity::pretty_name(&text);
        let _ = Config::parse(&text, "fuzz.yaml");
    }

    #[test]
    fn a_mount_point_with_any_characters_survives_escaping(name in "[ -~\t\n]{1,40}") {
        let escaped: String = name.chars().map(|c| match c {
            ' ' => "\\040".to_owned(),
            '\t' => "\\011".to_owned(),
            '\n' => "\\012".to_owned(),
            '\\' => "\\134".to_owned(),
            c => c.to_string(),
        }).collect();
        prop_assert_eq!(disks::unescape(&escaped), name.clone());
        let line = format!("27 1 254:1 / {escaped} rw - ext4 /dev/vda1 rw");
        let (m, bad) = disks::parse_mountinfo(&line);
        prop_assert_eq!(bad, 0);
        prop_assert_eq!(&m[0].mount_point, &name);
    }

    #[test]
    fn a_container_id_is_found_wherever_it_sits(prefix in "[g-z/._-]{0,30}", suffix in "[g-z/._-]{0,20}", id in "[0-9a-f]{64}") {
        let path = format!("{prefix}{id}{suffix}");
        prop_assert_eq!(processes::container_id(&path), Some(id));
    }

    #[test]
    fn fd_utilisation_stays_within_zero_and_one(a in any::<u64>(), b in any::<u64>(), c in any::<u64>()) {
        let f = fd::parse(&format!("{a}\t{b}\t{c}\n")).unwrap();
        prop_assert!((0.0..=1.0).contains(&f.utilization));
    }
}

const FILES: &[&str] = &[
    "proc/stat",
    "proc/meminfo",
    "proc/loadavg",
    "proc/uptime",
    "proc/diskstats",
    "proc/pressure/cpu",
    "proc/sys/fs/file-nr",
    "proc/1/mountinfo",
    "proc/1/net/dev",
    "proc/1/net/tcp",
    "proc/1/net/sockstat",
    "proc/1/net/snmp",
    "proc/1/stat",
    "proc/1/cgroup",
    "proc/4242/stat",
    "etc/os-release",
    "etc/passwd",
];

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Any file of the host tree replaced by anything (bytes, truncations of the real content,
    /// huge numbers): the collector counts what it cannot read and still returns a snapshot.
    #[test]
    fn the_collector_survives_any_content_in_any_host_file(
        file in proptest::sample::select(FILES),
        content in prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..400),
            hostish().prop_map(String::into_bytes),
            (0usize..2000).prop_map(|n| n.to_string().into_bytes()),
            Just(b"MemTotal: 18446744073709551615 kB\nMemFree: 18446744073709551615 kB\n".to_vec()),
            Just(b"cpu  18446744073709551615 18446744073709551615 1 1 1 1 1 1\n".to_vec()),
        ],
        truncate_real in any::<bool>(),
        cut in 0usize..4000,
    ) {
        let src = common::fixture_dir("debian12-vm");
        let dir = tempfile::tempdir().unwrap();
        copy_tree(&src, dir.path());
        let path = dir.path().join(file);
        let bytes = if truncate_real {
            let real = std::fs::read(&path).unwrap();
            real[..cut.min(real.len())].to_vec()
        } else {
            content
        };
        std::fs::write(&path, bytes).unwrap();
        let all = Collectors { tcp_states: true, ..Collectors::default() };
        let mut c = Collector::new(HostRoot::new(dir.path()), all, CompiledFilters::default(), 3);
        let s1 = c.collect(jiff::Timestamp::UNIX_EPOCH);
        let s2 = c.collect(jiff::Timestamp::UNIX_EPOCH);
        prop_assert_eq!(s1.schema_version, 1);
        prop_assert!(serde_json::to_string(&s2).is_ok());
    }
}

/// Text shaped like the event sources' input: syslog and kmsg prefixes, the phrases the
/// classifiers look for, and punctuation they split on.
fn eventish() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        proptest::collection::vec(
            prop_oneof![
                Just(" ".to_owned()),
                Just(": ".to_owned()),
                Just(";".to_owned()),
                Just(",".to_owned()),
                Just("[".to_owned()),
                Just("]".to_owned()),
                Just("(".to_owned()),
                Just(")".to_owned()),
                Just("=".to_owned()),
                Just("'".to_owned()),
                Just("Nov 22 10:00:00 h ".to_owned()),
                Just("2026-11-22T10:00:00+00:00 h ".to_owned()),
                Just("6,1,2,-;".to_owned()),
                Just("sshd[1]: ".to_owned()),
                Just("sudo: ".to_owned()),
                Just("su[2]: ".to_owned()),
                Just("useradd[3]: ".to_owned()),
                Just("Accepted password for ".to_owned()),
                Just("Failed password for invalid user ".to_owned()),
                Just("Invalid user ".to_owned()),
                Just("message repeated 3 times: [ ".to_owned()),
                Just("PAM 2 more authentication failures".to_owned()),
                Just(" from ".to_owned()),
                Just(" port ".to_owned()),
                Just("pam_unix(sshd:session): session opened for user ".to_owned()),
                Just(" : TTY=pts/0 ; PWD=/ ; USER=root ; COMMAND=".to_owned()),
                Just("incorrect password attempts".to_owned()),
                Just("FAILED SU (to ".to_owned()),
                Just("new user: name=".to_owned()),
                Just("add '".to_owned()),
                Just("oom-kill:".to_owned()),
                Just("Killed process ".to_owned()),
                Just(" segfault at ".to_owned()),
                Just("traps: ".to_owned()),
                Just("INFO: task ".to_owned()),
                Just(" blocked for more than ".to_owned()),
                Just("soft lockup - CPU#".to_owned()),
                Just("stuck for ".to_owned()),
                Just("I/O error, dev ".to_owned()),
                Just("EXT4-fs error (device ".to_owned()),
                Just("XFS (".to_owned()),
                Just("BTRFS".to_owned()),
                Just("NIC Link is Down".to_owned()),
                Just("interface ".to_owned()),
                Just("(slave ".to_owned()),
                Just(" op ".to_owned()),
                Just("EDAC ".to_owned()),
                Just("audit: type=1400 audit(1.2:3): ".to_owned()),
                Just("apparmor=\"DENIED\" ".to_owned()),
                Just("avc:  denied  { ".to_owned()),
                Just(" } for ".to_owned()),
                Just("type=1326 ".to_owned()),
                Just("type=AVC msg=audit(1700000000.25:9): ".to_owned()),
                Just("node=n1 type=SECCOMP msg=audit(".to_owned()),
                Just("\u{1d}".to_owned()),
                Just("Memory failure: 0x1: recovery action for ".to_owned()),
                Just("vmalloc error: size ".to_owned()),
                Just(" messages suppressed.".to_owned()),
                Just("Unable to handle kernel ".to_owned()),
                Just("code=0x".to_owned()),
                Just(" pid=".to_owned()),
                Just(" comm=\"".to_owned()),
                Just("\"".to_owned()),
                Just("nvme nvme0: ".to_owned()),
                Just(" timeout, ".to_owned()),
                Just("QID ".to_owned()),
                Just("timing out command, waited ".to_owned()),
                Just("Possible SYN flooding on port ".to_owned()),
                Just("NETDEV WATCHDOG: ".to_owned()),
                Just("transmit queue ".to_owned()),
                Just("unregister_netdevice: waiting for ".to_owned()),
                Just("Usage count = ".to_owned()),
                Just(": page allocation failure: ".to_owned()),
                Just("order:".to_owned()),
                Just("WARNING: CPU: ".to_owned()),
                Just(" PID: ".to_owned()),
                Just(" at ".to_owned()),
                Just("[Hardware Error]: event severity: ".to_owned()),
                Just("JBD2: ".to_owned()),
                Just(" error, dev ".to_owned()),
                Just("EXT4-fs (".to_owned()),
                Just("I/O error while writing superblock".to_owned()),
                "[0-9]{1,22}",
                "[a-z_/.]{1,8}",
                "[0-9A-F:]{1,40}",
            ],
            0..40
        )
        .prop_map(|v| v.concat()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn event_parsers_never_panic(text in eventish()) {
        use vigil_agent::events::{auth, kmsg, netconn};
        let now = jiff::Timestamp::from_second(1_800_000_000).unwrap();
        let parser = auth::AuthParser::default();
        let mut brute = auth::BruteForce::new(auth::BruteForceRule::default());
        let mut classifier = kmsg::Classifier::default();
        for line in text.lines().chain(std::iter::once(text.as_str())) {
            if let auth::Parsed::Event(e) = parser.parse(line, now) {
                brute.observe(&e);
            }
            let _ = kmsg::classify_message(line, now);
            // auditd's lines, as the kernel records they were, classified.
            if let Some(r) = kmsg::audit_log_record(line, jiff::Timestamp::UNIX_EPOCH, Some("n1")) {
                let _ = classifier.classify(&r, now);
            }
        }
        for rec in kmsg::split_records(text.as_bytes()) {
            if let Some(r) = kmsg::parse_record(rec) {
                let _ = classifier.classify(&r, now);
            }
        }
        let _ = netconn::parse_table(&text, netconn::Proto::Tcp);
        // The kernel log's assembly, as lines of a file and as device reads, with the
        // journal's view of the same bytes and cgroup paths made of them.
        let mut pieces = Vec::new();
        let mut lines = kmsg::Assembler::default();
        let mut reads = kmsg::Assembler::default();
        for line in text.as_bytes().split(|&b| b == b'\n') {
            lines.line(line, &mut pieces);
            reads.record(line, &mut pieces);
        }
        lines.flush(&mut pieces);
        reads.flush(&mut pieces);
        for p in &pieces {
            if let kmsg::Piece::Record(r) = p {
                prop_assert!(r.message.len() <= 16 * 1024 + 8192, "joined fragments stay bounded");
                let _ = classifier.classify(r, now);
            }
        }
        for line in text.lines() {
            let _ = vigil_agent::events::pods::parse_cgroup(line);
        }
    }

    #[test]
    fn binary_event_decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..1200)) {
        use vigil_agent::events::{cnproc, utmp};
        let _ = cnproc::decode(&bytes);
        // Any bytes as a journal file: refused or walked, never a panic.
        if let Ok(h) = vigil_agent::events::journal::Header::read(&bytes[..]) {
            let mut w = vigil_agent::events::journal::Walk::default();
            let _ = vigil_agent::events::journal::walk(&bytes[..], &h, &mut w, 10_000, 10_000, &|_| true);
        }
        for chunk in bytes.chunks(utmp::RECORD_SIZE) {
            if let Some(u) = utmp::parse(chunk) {
                let _ = utmp::to_event(&u, utmp::Log::Wtmp);
                let _ = utmp::to_event(&u, utmp::Log::Btmp);
            }
        }
    }

    #[test]
    fn a_process_connector_datagram_cut_anywhere_decodes_its_whole_messages(
        pids in proptest::collection::vec((1i32..4_000_000, any::<u32>()), 1..20),
        cut in any::<prop::sample::Index>(),
    ) {
        use vigil_agent::events::cnproc::{ProcEvent, decode, encode};
        let mut datagram = Vec::new();
        for (pid, code) in &pids {
            let payload: Vec<u8> = [*pid, *pid].iter().flat_map(|v| v.to_ne_bytes()).chain(code.to_ne_bytes()).chain(0u32.to_ne_bytes()).collect();
            datagram.extend(encode(0x8000_0000, &payload));
        }
        let whole = decode(&datagram);
        prop_assert_eq!(whole.len(), pids.len());
        for (ev, (pid, code)) in whole.iter().zip(&pids) {
            prop_assert_eq!(*ev, ProcEvent::Exit { pid: *pid, tgid: *pid, exit_code: *code, exit_signal: 0 });
        }
        let at = cut.index(datagram.len() + 1);
        let part = decode(&datagram[..at]);
        prop_assert!(part.len() <= pids.len());
        prop_assert_eq!(&part[..], &whole[..part.len()]);
    }

    #[test]
    fn wtmp_records_round_trip(kind in 0i16..=9, pid in any::<i32>(), user in "[a-z]{0,32}", host in "[a-z0-9.]{0,64}", secs in 0i32..i32::MAX, v4 in any::<[u8; 4]>()) {
        use vigil_agent::events::utmp::{Utmp, encode, parse};
        let addr = (v4 != [0; 4]).then(|| std::net::IpAddr::from(v4));
        let u = Utmp { kind, pid, line: "pts/1".into(), user, host, addr, time: jiff::Timestamp::from_second(i64::from(secs)).unwrap() };
        prop_assert_eq!(parse(&encode(&u)), Some(u));
    }
}

/// Text near an AlertPolicy: its keys, detector names, durations, regexes and YAML syntax.
fn policyish() -> impl Strategy<Value = String> {
    let token = prop_oneof![
        Just("apiVersion: vigil.dev/v1alpha1\n".to_owned()),
        Just("kind: AlertPolicy\n".to_owned()),
        Just("metadata: {name: p, namespace: ns}\n".to_owned()),
        Just("spec:\n".to_owned()),
        Just("rules:\n  - name: A\n".to_owned()),
        Just("    metric: {name: m, labels: {a: b}}\n".to_owned()),
        Just("    event: {type: auth.ssh.failed}\n".to_owned()),
        Just("    detector: {threshold: {above: 0.9}}\n".to_owned()),
        Just("    detector: {eventRate: {count: 0, window: 1m, per: x}}\n".to_owned()),
        Just("    detector: {trend: {window: -1h, horizon: 0s}}\n".to_owned()),
        Just("    for: 5m\n".to_owned()),
        Just("routes:\n  - {name: r, receivers: [x], matchers: [{label: a, op: '=~', value: '(a|'}]}\n".to_owned()),
        Just("receivers:\n  - {name: x, webhook: {url: {name: s, key: k}}}\n".to_owned()),
        Just("silences:\n  - {matchers: [{label: a, value: b}], endsAt: 2026-01-01T00:00:00Z}\n".to_owned()),
        Just("---\n".to_owned()),
        "[ -~\n]{0,40}",
    ];
    proptest::collection::vec(token, 0..12).prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn the_policy_parser_never_panics(text in policyish()) {
        let _ = vigil_agent::alert::policy::parse(&text, "fuzz.yaml");
    }
}
