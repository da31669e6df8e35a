//! The event sources on this machine, for real: processes started here, files changed in a
//! watched directory, a listening socket and a connection on 127.0.0.1, auth log lines
//! appended and rotated, and records written to the real /dev/kmsg. Every wait is bounded.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use tokio::sync::mpsc::Receiver;
use vigil_agent::config::{Config, ProcessMode};
use vigil_agent::events::runner::{self, Sources};
use vigil_agent::events::{Event, EventQueue, EventType, Source};

mod catalogue;

/// A config with every source off and the state directory in `state`.
fn quiet(state: &Path) -> Config {
    let mut c = Config::default();
    c.events.state_dir = state.to_owned();
    c.events.processes.enabled = false;
    c.events.files.enabled = false;
    c.events.auth.enabled = false;
    c.events.network.enabled = false;
    c.events.kernel.enabled = false;
    c.events.clock.enabled = false;
    c
}

fn start(config: &Config) -> (Sources, Receiver<Event>, EventQueue) {
    let (queue, rx) = EventQueue::new(config.events.queue_capacity, "live");
    (runner::start(config, &queue), rx, queue)
}

/// Receives events until `done` holds for what arrived, or `within` passes (then fails with
/// what did arrive).
fn wait_for(
    rx: &mut Receiver<Event>,
    within: Duration,
    what: &str,
    mut done: impl FnMut(&[Event]) -> bool,
) -> Vec<Event> {
    let deadline = Instant::now() + within;
    let mut seen = Vec::new();
    while !done(&seen) {
        match rx.try_recv() {
            Ok(e) => seen.push(e),
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            Err(_) => panic!(
                "waited {within:?} for {what}; got {} events: {:#?}",
                seen.len(),
                seen.iter().map(|e| format!("{} {}", e.kind.as_str(), e.message)).collect::<Vec<_>>()
            ),
        }
    }
    seen
}

/// Waits until the source reports a state (it is set up and listening).
fn wait_ready(sources: &Sources, source: Source) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(s) = sources.states.lock().unwrap().0.get(&source) {
            return s.detail.clone();
        }
        assert!(Instant::now() < deadline, "{source:?} never started");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A kernel log file holding `initial`, under a directory of its own, and a config with only the
/// kernel source on, following it: the state and log directories (kept while they are
/// used), the file and the config.
fn kernel_file(initial: &str) -> (tempfile::TempDir, tempfile::TempDir, std::path::PathBuf, Config) {
    let state = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kmsg = dir.path().join("kmsg");
    std::fs::write(&kmsg, initial).unwrap();
    let mut c = quiet(state.path());
    c.events.kernel.enabled = true;
    c.events.kernel.device = kmsg.clone();
    // Not this machine's auditd log: only the test's input.
    c.events.kernel.audit_log = String::new();
    (state, dir, kmsg, c)
}

/// An agent config with only the kernel source on, reading `kmsg` and auditd's log `audit`
/// (`''`: none), its state in `state`; `auth` is the auth source's settings (`{enabled:
/// false}` or a block).
fn kernel_only_yaml(state: &Path, kmsg: &Path, audit: &str, auth: &str) -> String {
    format!(
        "events:\n  stateDir: {}\n  processes: {{enabled: false}}\n  files: {{enabled: false}}\n  network: {{enabled: false}}\n  clock: {{enabled: false}}\n  kernel: {{device: {}, auditLog: {audit}}}\n  auth: {auth}\n",
        state.display(),
        kmsg.display(),
    )
}

fn pid_of(e: &Event) -> Option<i64> {
    e.detail_i64("pid")
}

#[test]
fn every_short_lived_process_is_seen_through_the_process_connector() {
    let state = tempfile::tempdir().unwrap();
    let mut c = quiet(state.path());
    c.events.processes.enabled = true;
    c.events.processes.mode = ProcessMode::Netlink;
    c.events.processes.rate_limit = vigil_agent::events::queue::RateLimit::new(10_000.0, 100_000);
    let (sources, mut rx, _q) = start(&c);
    let state_text = wait_ready(&sources, Source::Process);
    assert!(
        state_text.contains("netlink"),
        "the process connector needs CAP_NET_ADMIN (run the tests as root): {state_text}"
    );
    let mut pids = Vec::new();
    for code in 0..20 {
        let mut child = std::process::Command::new("/bin/sh").args(["-c", &format!("exit {code}")]).spawn().unwrap();
        pids.push((i64::from(child.id()), code));
        child.wait().unwrap();
    }
    let seen = wait_for(&mut rx, Duration::from_secs(10), "20 starts and exits", |ev| {
        pids.iter().all(|(pid, _)| {
            ev.iter().any(|e| e.kind == EventType::ProcessStart && pid_of(e) == Some(*pid))
                && ev.iter().any(|e| e.kind == EventType::ProcessExit && pid_of(e) == Some(*pid))
        })
    });
    for (pid, code) in &pids {
        let exit = seen.iter().find(|e| e.kind == EventType::ProcessExit && pid_of(e) == Some(*pid)).unwrap();
        assert_eq!(exit.detail_i64("exitCode"), Some(*code), "{exit:?}");
        let start = seen.iter().find(|e| e.kind == EventType::ProcessStart && pid_of(e) == Some(*pid)).unwrap();
        assert_eq!(start.detail_i64("ppid"), Some(i64::from(std::process::id())), "{start:?}");
    }
    sources.stop();
}

/// A handover under a process storm, on this machine's process connector: the incoming agent
/// opens its listener while the outgoing one works, the outgoing one stops (leaving the record
/// of what it reported), and the incoming one takes over some time later. Every process the
/// storm started is reported by the pair exactly once, start and exit: none in the gap between
/// them, none twice where both listened.
#[test]
fn a_handover_under_a_process_storm_reports_every_process_once() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    let state = tempfile::tempdir().unwrap();
    let mut c = quiet(state.path());
    c.events.processes.enabled = true;
    c.events.processes.mode = ProcessMode::Netlink;
    c.events.processes.rate_limit = vigil_agent::events::queue::RateLimit::new(100_000.0, 1_000_000);
    c.events.queue_capacity = 200_000;
    let (queue_a, mut rx_a) = EventQueue::new(c.events.queue_capacity, "a");
    let a = runner::start(&c, &queue_a);
    assert!(wait_ready(&a, Source::Process).contains("netlink"), "run the live tests as root");
    // The storm: a process every 2 ms, 600 in all.
    let started = Arc::new(Mutex::new(Vec::<i64>::new()));
    let count = Arc::new(AtomicUsize::new(0));
    let storm = {
        let (started, count) = (started.clone(), count.clone());
        std::thread::spawn(move || {
            for _ in 0..600 {
                let mut child = std::process::Command::new("/bin/true").spawn().unwrap();
                started.lock().unwrap().push(i64::from(child.id()));
                child.wait().unwrap();
                count.fetch_add(1, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(2));
            }
        })
    };
    let at_least = |n: usize| {
        let deadline = Instant::now() + Duration::from_secs(60);
        while count.load(Ordering::SeqCst) < n {
            assert!(Instant::now() < deadline, "the storm stalled below {n}");
            std::thread::sleep(Duration::from_millis(1));
        }
    };
    at_least(100);
    // The incoming agent asks for the node: it listens from now on, holding what it reads.
    let early = runner::Early::open(&c);
    assert!(early.process.is_some(), "the process connector opens early");
    at_least(250);
    // The outgoing agent hands over: it stops, and for a while nobody but the early
    // listener hears the storm.
    a.stop();
    drop(queue_a);
    at_least(350);
    let (queue_b, mut rx_b) = EventQueue::new(c.events.queue_capacity, "b");
    let b = runner::start_after(&c, &queue_b, early);
    let took_over = wait_ready(&b, Source::Process);
    storm.join().unwrap();
    let pids = started.lock().unwrap().clone();
    // Starts and exits per storm pid, from each agent.
    type Counts = std::collections::HashMap<(i64, bool), usize>;
    let note = |counts: &mut Counts, e: &Event| {
        if let (Some(pid), true) = (pid_of(e), matches!(e.kind, EventType::ProcessStart | EventType::ProcessExit)) {
            *counts.entry((pid, e.kind == EventType::ProcessStart)).or_default() += 1;
        }
    };
    let (mut by_a, mut by_b) = (Counts::new(), Counts::new());
    while let Ok(e) = rx_a.try_recv() {
        note(&mut by_a, &e);
    }
    let both = |a: &Counts, b: &Counts, key: (i64, bool)| a.get(&key).unwrap_or(&0) + b.get(&key).unwrap_or(&0);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !pids.iter().all(|p| both(&by_a, &by_b, (*p, true)) >= 1 && both(&by_a, &by_b, (*p, false)) >= 1) {
        match rx_b.try_recv() {
            Ok(e) => note(&mut by_b, &e),
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            Err(_) => break,
        }
    }
    // Every start and exit is in, or the wait ran out: anything twice is in by now too.
    b.stop();
    while let Ok(e) = rx_b.try_recv() {
        note(&mut by_b, &e);
    }
    for start in [true, false] {
        let wrong: Vec<(i64, usize)> =
            pids.iter().map(|p| (*p, both(&by_a, &by_b, (*p, start)))).filter(|(_, n)| *n != 1).collect();
        assert!(
            wrong.is_empty(),
            "{} reported other than once (pid, times): {wrong:?}",
            if start { "starts" } else { "exits" }
        );
    }
    let by_a = pids.iter().filter(|p| by_a.contains_key(&(**p, true))).count();
    assert!(by_a >= 250, "the outgoing agent reported what it saw ({by_a})");
    assert!(pids.len() - by_a >= 250, "the incoming agent reported the rest ({})", pids.len() - by_a);
    assert!(took_over.contains("opened while the agent before this one worked"), "{took_over}");
    assert!(!took_over.contains("left no record"), "the outgoing agent left its record: {took_over}");
}

#[test]
fn polling_sees_a_process_that_outlives_the_interval_with_its_command_line() {
    let state = tempfile::tempdir().unwrap();
    let mut c = quiet(state.path());
    c.events.processes.enabled = true;
    c.events.processes.mode = ProcessMode::Poll;
    c.events.processes.poll_interval = Duration::from_millis(100);
    let (sources, mut rx, _q) = start(&c);
    assert!(wait_ready(&sources, Source::Process).contains("polling"));
    // Let the first listing (the baseline) happen before the child exists.
    std::thread::sleep(Duration::from_millis(300));
    let mut child = std::process::Command::new("sleep").arg("1.5").spawn().unwrap();
    let pid = i64::from(child.id());
    let seen = wait_for(&mut rx, Duration::from_secs(10), "the sleep starting", |ev| {
        ev.iter().any(|e| e.kind == EventType::ProcessStart && pid_of(e) == Some(pid))
    });
    let start = seen.iter().find(|e| pid_of(e) == Some(pid)).unwrap();
    assert_eq!(start.detail_str("cmdline"), Some("sleep 1.5"));
    assert_eq!(start.detail_str("comm"), Some("sleep"));
    child.wait().unwrap();
    wait_for(&mut rx, Duration::from_secs(10), "the sleep exiting", |ev| {
        ev.iter().any(|e| e.kind == EventType::ProcessExit && pid_of(e) == Some(pid))
    });
    sources.stop();
}

#[test]
fn file_changes_in_a_watched_tree_arrive_live_and_changes_while_down_at_start() {
    let state = tempfile::tempdir().unwrap();
    let watched = tempfile::tempdir().unwrap();
    let w = watched.path();
    std::fs::write(w.join("config"), "a=1\n").unwrap();
    std::fs::create_dir(w.join("sub")).unwrap();
    let mut c = quiet(state.path());
    c.events.files.enabled = true;
    c.events.files.paths = vec![vigil_agent::events::fim::WatchPath { path: w.display().to_string(), content: true }];
    c.events.files.per_path_interval = Duration::ZERO;
    let (sources, mut rx, _q) = start(&c);
    assert!(wait_ready(&sources, Source::File).contains("watching 2 directories"));
    let path = |n: &str| w.join(n).display().to_string();
    std::fs::write(w.join("config"), "a=2\n").unwrap();
    std::fs::write(w.join("sub/new"), "x").unwrap();
    std::fs::set_permissions(w.join("config"), std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::create_dir(w.join("sub/deeper")).unwrap();
    // A file in a directory made a moment ago: its watch may not exist yet, the walk of the
    // new directory finds it.
    std::fs::write(w.join("sub/deeper/inner"), "y").unwrap();
    let has = |ev: &[Event], kind, p: &str| ev.iter().any(|e| e.kind == kind && e.detail_str("path") == Some(p));
    let seen = wait_for(&mut rx, Duration::from_secs(10), "the live changes", |ev| {
        has(ev, EventType::FileModified, &path("config"))
            && has(ev, EventType::FileCreated, &path("sub/new"))
            && has(ev, EventType::FilePermissions, &path("config"))
            && has(ev, EventType::FileCreated, &path("sub/deeper/inner"))
    });
    let modified = seen.iter().find(|e| e.kind == EventType::FileModified).unwrap();
    assert_ne!(modified.detail_str("oldSha256"), modified.detail_str("newSha256"));
    sources.stop();

    // While the agent is down.
    std::fs::remove_file(w.join("sub/new")).unwrap();
    std::fs::write(w.join("sub/deeper/inner"), "changed").unwrap();
    let (sources, mut rx, _q) = start(&c);
    wait_for(&mut rx, Duration::from_secs(10), "the changes made while stopped", |ev| {
        has(ev, EventType::FileDeleted, &path("sub/new")) && has(ev, EventType::FileModified, &path("sub/deeper/inner"))
    });
    sources.stop();
}

#[test]
fn a_new_listener_and_an_outbound_connection_name_their_process() {
    let state = tempfile::tempdir().unwrap();
    let mut c = quiet(state.path());
    c.events.network.enabled = true;
    c.events.network.interval = Duration::from_millis(500);
    let (sources, mut rx, _q) = start(&c);
    wait_ready(&sources, Source::Network);
    // After the first read (the baseline).
    std::thread::sleep(Duration::from_millis(700));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = i64::from(listener.local_addr().unwrap().port());
    let me = i64::from(std::process::id());
    let seen = wait_for(&mut rx, Duration::from_secs(10), "the listener", |ev| {
        ev.iter().any(|e| e.kind == EventType::NetListen && e.detail_i64("localPort") == Some(port))
    });
    let listen = seen.iter().find(|e| e.detail_i64("localPort") == Some(port)).unwrap();
    assert_eq!(listen.detail_i64("pid"), Some(me), "{listen:?}");
    assert_eq!(listen.detail_str("localAddress"), Some("127.0.0.1"));
    let _client = std::net::TcpStream::connect(("127.0.0.1", u16::try_from(port).unwrap())).unwrap();
    let _server = listener.accept().unwrap();
    let seen = wait_for(&mut rx, Duration::from_secs(10), "the outbound connection", |ev| {
        ev.iter().any(|e| e.kind == EventType::NetOutbound && e.detail_i64("remotePort") == Some(port))
    });
    let out = seen.iter().find(|e| e.kind == EventType::NetOutbound).unwrap();
    assert_eq!((out.detail_i64("pid"), out.detail_str("remoteAddress")), (Some(me), Some("127.0.0.1")));
    assert_eq!(out.detail_str("protocol"), Some("tcp"));
    drop(listener);
    wait_for(&mut rx, Duration::from_secs(10), "the listener closing", |ev| {
        ev.iter().any(|e| e.kind == EventType::NetListenClosed && e.detail_i64("localPort") == Some(port))
    });
    sources.stop();
}

fn append(path: &Path, text: &str) {
    std::fs::OpenOptions::new().create(true).append(true).open(path).unwrap().write_all(text.as_bytes()).unwrap();
}

fn failed(i: u32) -> String {
    format!("Nov 22 10:00:{i:02} web-1 sshd[{}]: Failed password for root from 192.0.2.{i} port 22 ssh2\n", 100 + i)
}

#[test]
fn auth_lines_arrive_once_across_rotation_and_restart() {
    let state = tempfile::tempdir().unwrap();
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("auth.log");
    append(&log, &failed(0)); // history before the first start is not news
    let mut c = quiet(state.path());
    c.events.auth.enabled = true;
    c.events.auth.logs = vec![log.display().to_string()];
    c.events.auth.wtmp = String::new();
    c.events.auth.btmp = String::new();
    c.events.auth.poll_interval = Duration::from_millis(100);
    let (sources, mut rx, _q) = start(&c);
    wait_ready(&sources, Source::Auth);
    std::thread::sleep(Duration::from_millis(300));
    let addr = |e: &Event| e.detail_str("sourceAddress").map(str::to_owned);
    let expect = |from: u32, to: u32| (from..to).map(|i| Some(format!("192.0.2.{i}"))).collect::<Vec<_>>();
    append(&log, &(failed(1) + &failed(2)));
    std::fs::rename(&log, logs.path().join("auth.log.1")).unwrap();
    append(&log, &failed(3));
    let seen = wait_for(&mut rx, Duration::from_secs(10), "lines 1-3", |ev| ev.len() >= 3);
    assert_eq!(seen.iter().map(addr).collect::<Vec<_>>(), expect(1, 4));
    sources.stop();

    // Down: more lines, another rotation.
    append(&log, &failed(4));
    std::fs::rename(&log, logs.path().join("auth.log.1")).unwrap();
    append(&log, &(failed(5) + &failed(6)));
    let (sources, mut rx, _q) = start(&c);
    let seen = wait_for(&mut rx, Duration::from_secs(10), "lines 4-6", |ev| ev.len() >= 3);
    assert_eq!(seen.iter().map(addr).collect::<Vec<_>>(), expect(4, 7));
    // Five failures from distinct addresses are not a brute force; nothing else arrives.
    std::thread::sleep(Duration::from_millis(300));
    assert!(rx.try_recv().is_err(), "a line was repeated");
    sources.stop();
}

#[test]
fn records_written_to_the_real_kernel_log_are_classified() {
    let state = tempfile::tempdir().unwrap();
    let mut c = quiet(state.path());
    c.events.kernel.enabled = true;
    let (sources, mut rx, _q) = start(&c);
    let s = wait_ready(&sources, Source::Kernel);
    assert!(s.starts_with("reading /dev/kmsg"), "{s}");
    let e = link_down_through_the_kernel_log(&mut rx, "vt");
    assert_eq!(e.kind, EventType::LinkDown);
    assert_eq!(e.details["userspace"], true, "written from user space, and marked so");
    sources.stop();
}

/// Writes a link-down record for a made-up interface (`prefix` + pid) to the real kernel log
/// and waits, bounded, for the source to report it.
fn link_down_through_the_kernel_log(rx: &mut Receiver<Event>, prefix: &str) -> Event {
    let iface = format!("{prefix}{}", std::process::id() % 100_000);
    write_link_down(&iface);
    let seen = wait_for(rx, Duration::from_secs(10), "the link-down record", |ev| {
        ev.iter().any(|e| e.detail_str("interface") == Some(iface.as_str()))
    });
    seen.into_iter().find(|e| e.detail_str("interface") == Some(iface.as_str())).unwrap()
}

/// Writes a link-down record for interface `iface` to the real kernel log (root may write to
/// /dev/kmsg; the record is logged with the user facility).
fn write_link_down(iface: &str) {
    std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/kmsg")
        .unwrap()
        .write_all(format!("<4>vigil-live-test: {iface}: Link down\n").as_bytes())
        .unwrap();
}

#[test]
fn what_the_kernel_printed_while_no_agent_ran_is_read_by_the_next_one_and_nothing_twice() {
    // The device, then syslog(2) (what a pod without /dev/kmsg reads).
    for (mode, device) in [("kmsg", None), ("syslog", Some("no-kmsg-here"))] {
        let state = tempfile::tempdir().unwrap();
        let mut c = quiet(state.path());
        c.events.kernel.enabled = true;
        if let Some(d) = device {
            c.events.kernel.device = state.path().join(d);
        }
        let tag = std::process::id() % 100_000;
        let (before, during) = (format!("rb{mode}{tag}"), format!("rd{mode}{tag}"));
        let (sources, mut rx, _q) = start(&c);
        wait_ready(&sources, Source::Kernel);
        write_link_down(&before);
        wait_for(&mut rx, Duration::from_secs(10), "the record while running", |ev| {
            ev.iter().any(|e| e.detail_str("interface") == Some(before.as_str()))
        });
        sources.stop();
        assert!(state.path().join("kernel-position.json").exists(), "{mode}: the position is kept");

        // Printed while no agent runs (a rollout's handover).
        write_link_down(&during);
        let (sources, mut rx, _q) = start(&c);
        let s = wait_ready(&sources, Source::Kernel);
        let seen = wait_for(&mut rx, Duration::from_secs(10), "the record printed while down", |ev| {
            ev.iter().any(|e| e.detail_str("interface") == Some(during.as_str()))
        });
        sources.stop();
        assert!(
            seen.iter().all(|e| e.detail_str("interface") != Some(before.as_str())),
            "{mode}: a record the agent before read is not read again: {s}"
        );

        // A saved position of this boot that no record of the ring can be (damaged, or from
        // elsewhere) does not blind the source: it reads on from the end.
        let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap().trim().replace('-', "");
        std::fs::write(
            state.path().join("kernel-position.json"),
            format!(r#"{{"bootId":"{boot}","seq":1000000000000,"last":[18446744073709551615,1]}}"#),
        )
        .unwrap();
        let (sources, mut rx, _q) = start(&c);
        let s = wait_ready(&sources, Source::Kernel);
        assert!(!s.contains("from record"), "{mode}: {s}");
        let after = format!("ra{mode}{tag}");
        // The syslog(2) follow takes its first look a moment after starting: write until seen.
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut got = false;
        while !got {
            assert!(Instant::now() < deadline, "{mode}: nothing read after a bogus position");
            write_link_down(&after);
            std::thread::sleep(Duration::from_millis(300));
            while let Ok(e) = rx.try_recv() {
                got |= e.detail_str("interface") == Some(after.as_str());
            }
        }
        sources.stop();
    }
}

/// In a container that is not privileged `/dev/kmsg` cannot be opened; the agent then reads
/// the same ring buffer with syslog(2), which needs CAP_SYSLOG and no device. Here the device
/// path names nothing, so the fallback is what runs, against this host's real kernel log.
#[test]
fn without_the_kmsg_device_the_kernel_log_is_read_through_syslog() {
    let state = tempfile::tempdir().unwrap();
    let mut c = quiet(state.path());
    c.events.kernel.enabled = true;
    c.events.kernel.device = state.path().join("no-kmsg-here");
    let (sources, mut rx, _q) = start(&c);
    let s = wait_ready(&sources, Source::Kernel);
    assert!(s.starts_with("reading the kernel ring buffer with syslog(2)"), "{s}");
    let status = sources.states.lock().unwrap().0[&Source::Kernel].clone();
    assert_eq!((status.state, status.mode), (vigil_crds::SourceState::On, "syslog"));
    let e = link_down_through_the_kernel_log(&mut rx, "vs");
    assert_eq!(e.kind, EventType::LinkDown);
    assert_eq!(e.details["userspace"], true, "the facility survives the syslog(2) format");
    sources.stop();
}

#[test]
fn a_kmsg_file_is_followed_like_the_device() {
    let (_state, _dir, file, c) = kernel_file("6,1,1,-;old record\n");
    let (sources, mut rx, q) = start(&c);
    assert!(wait_ready(&sources, Source::Kernel).starts_with("following"));
    std::thread::sleep(Duration::from_millis(300));
    append(
        &file,
        "3,2,5000000,-;Out of memory: Killed process 77 (leaky) total-vm:10kB, anon-rss:8kB, file-rss:0kB, shmem-rss:0kB\nnot a record\n",
    );
    let seen = wait_for(&mut rx, Duration::from_secs(10), "the OOM kill and the raw line", |ev| ev.len() >= 2);
    assert_eq!(seen[0].kind, EventType::OomKill);
    assert_eq!(seen[1].kind, EventType::Unparsed);
    assert_eq!(seen[1].detail_str("raw"), Some("not a record"));
    assert_eq!(q.stats().unparsed(Source::Kernel), 1);
    sources.stop();
}

#[test]
fn denials_in_auditds_log_arrive_as_the_kernel_logs_would_and_scan_reads_them_too() {
    let (state, dir, kmsg, mut c) = kernel_file("");
    let audit = dir.path().join("audit.log");
    std::fs::write(
        &audit,
        "type=AVC msg=audit(1.0:1): avc:  denied  { read } for  pid=1 comm=\"old\" tclass=file permissive=0\n",
    )
    .unwrap();
    c.events.kernel.audit_log = audit.display().to_string();
    let (sources, mut rx, _q) = start(&c);
    wait_ready(&sources, Source::Kernel);
    // The follow starts at the log's end; what auditd writes from now on is seen.
    // Records of this boot (one of an earlier boot is not read).
    let now = jiff::Timestamp::now().as_second();
    let lines = format!(
        "type=SYSCALL msg=audit({now}.250:812): arch=c000003e syscall=257 success=no exit=-13 pid=5151 comm=\"cat\"\n\
        type=AVC msg=audit({now}.250:812): avc:  denied  {{ read }} for  pid=5151 comm=\"cat\" name=\"shadow\" scontext=system_u:system_r:container_t:s0:c1,c2 tcontext=system_u:object_r:shadow_t:s0 tclass=file permissive=0\n\
        type=SECCOMP msg=audit({now}.500:813): auid=4294967295 uid=0 pid=7171 comm=\"unshare\" exe=\"/usr/bin/unshare\" sig=31 arch=c000003e syscall=272 code=0x80000000\n"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen = Vec::new();
    // auditd may be written to before the follow has opened it: append until it is seen.
    while seen.len() < 2 {
        assert!(Instant::now() < deadline, "no denials from the audit log: {seen:?}");
        if seen.is_empty() {
            append(&audit, &lines);
        }
        while let Ok(e) = rx.try_recv() {
            seen.push(e);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    sources.stop();
    let kinds: Vec<EventType> = seen.iter().take(2).map(|e| e.kind).collect();
    assert_eq!(kinds, [EventType::SelinuxDenied, EventType::Seccomp], "{seen:?}");
    assert_eq!((seen[0].detail_i64("pid"), seen[0].detail_str("comm")), (Some(5151), Some("cat")));
    assert!(seen.iter().all(|e| e.detail_str("comm") != Some("old")), "the follow starts at the end");

    // scan: the whole log, once.
    let config = dir.path().join("agent.yaml");
    std::fs::write(&config, kernel_only_yaml(state.path(), &kmsg, &audit.display().to_string(), "{enabled: false}"))
        .unwrap();
    let (scanned, stderr) = scan_events(&config);
    let kinds: Vec<&str> = scanned.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert!(
        kinds.iter().filter(|k| **k == "kernel.selinux_denied").count() >= 2 && kinds.contains(&"kernel.seccomp"),
        "{kinds:?} {stderr}"
    );
}

/// A kernel log with what a reader must not get wrong: a record with its dictionary, an oops
/// printed in two fragments, the `Oops:` line of the same crash, a line that is no record and
/// an OOM kill.
const KERNEL_LOG: &str = "3,10,1000000,-;Buffer I/O error on dev sdb1, logical block 0, async page read\n SUBSYSTEM=block\n DEVICE=b8:17\n1,11,2000000,c;BUG: unable to handle kernel NULL pointer dereference\n1,12,2000001,-; at 0000000000000008\n4,13,2000100,-;Oops: 0002 [#1] SMP PTI\nnot a record\n3,14,3000000,-;Out of memory: Killed process 77 (leaky) total-vm:10kB, anon-rss:8kB, file-rss:0kB, shmem-rss:0kB\n4,20,4000000,-;nf_conntrack: nf_conntrack: table full, dropping packet\n";

/// `vigil-agent scan --events --json` with `config`: its events, and what it said on stderr.
fn scan_events(config: &Path) -> (Vec<serde_json::Value>, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_vigil-agent"))
        .env("RUST_LOG", "info")
        .args(["scan", "--events", "--json", "--config"])
        .arg(config)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let scanned = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v.get("schemaVersion").is_some() && v.get("type").is_some())
        .collect();
    (scanned, String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Runs the agent binary with `args` and `config` until its kernel source follows `kmsg`,
/// appends `log`, and returns the events it writes to stdout (at most 30 s for `want` of them);
/// the process is killed at the end.
fn follow_binary(args: &[&str], config: &Path, kmsg: &Path, log: &str, want: usize) -> Vec<serde_json::Value> {
    use std::io::BufRead;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_vigil-agent"))
        .env("RUST_LOG", "info")
        .args(args)
        .arg(config)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<serde_json::Value>();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line)
                && v.get("type").is_some()
                && v.get("schemaVersion").is_some()
                && tx.send(v).is_err()
            {
                break;
            }
        }
    });
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut line = String::new();
    while !line.contains("kernel: on (file): following") {
        line.clear();
        assert!(
            stderr.read_line(&mut line).unwrap_or(0) > 0 && Instant::now() < deadline,
            "{args:?}: no kernel source"
        );
    }
    std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
    append(kmsg, log);
    let mut got = Vec::new();
    while got.len() < want && Instant::now() < deadline {
        if let Ok(v) = rx.recv_timeout(Duration::from_millis(200)) {
            got.push(v);
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    got
}

fn sorted_kinds(events: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut k: Vec<String> = events.into_iter().collect();
    k.sort();
    k
}

#[test]
fn scan_and_watch_read_the_kernel_log_alike_and_scan_says_what_it_could_not_read() {
    // watch: the sources follow the file; the log is written after they started.
    let (state, dir, kmsg, c) = kernel_file("");
    let (sources, mut rx, q) = start(&c);
    assert!(wait_ready(&sources, Source::Kernel).starts_with("following"));
    append(&kmsg, KERNEL_LOG);
    let watched = wait_for(&mut rx, Duration::from_secs(10), "six events", |ev| ev.len() >= 6);
    sources.stop();
    assert_eq!(q.stats().unparsed_for(Source::Kernel, vigil_agent::events::UnparsedReason::Malformed), 1);
    // Records 15 to 19 never came: lost, said and counted.
    assert_eq!(q.stats().lost(Source::Kernel), 5);
    let lost = watched.iter().find(|e| e.kind == EventType::Lost).expect("an agent.lost event");
    assert_eq!((lost.detail_i64("afterSeq"), lost.detail_i64("nextSeq")), (Some(14), Some(20)));
    let io = watched.iter().find(|e| e.kind == EventType::IoError).unwrap();
    assert_eq!(io.details["kernelDictionary"]["DEVICE"], "b8:17");
    let oops = watched.iter().find(|e| e.kind == EventType::Oops).unwrap();
    assert!(oops.message.contains("dereference at 0000000000000008"), "{}", oops.message);
    assert!(watched.iter().find(|e| e.kind == EventType::OomKill).unwrap().detail_str("line").is_some());

    // scan: the same file read once, by the binary; auth logs that do not exist.
    let config = dir.path().join("agent.yaml");
    std::fs::write(
        &config,
        kernel_only_yaml(
            state.path(),
            &kmsg,
            "''",
            &format!(
                "\n    logs: [{}]\n    journal: 'off'\n    wtmp: ''\n    btmp: ''",
                dir.path().join("auth.lgo").display()
            ),
        ),
    )
    .unwrap();
    let (scanned, stderr) = scan_events(&config);
    assert_eq!(
        sorted_kinds(scanned.iter().map(|e| e["type"].as_str().unwrap().to_owned())),
        sorted_kinds(watched.iter().map(|e| e.kind.as_str().to_owned())),
        "scan and watch find the same events in the same log"
    );
    assert!(stderr.contains("input not understood, kept as agent.unparsed events: kernel malformed 1"), "{stderr}");
    assert!(stderr.contains("records lost before they were read (agent.lost events above): kernel 5"), "{stderr}");
    assert!(stderr.contains("auth.lgo exists and the journal is not read"), "a typo in a path is said: {stderr}");

    // A kernel device that cannot be opened (a typo): said, whether syslog(2) stood in or not.
    let missing = dir.path().join("no-such-kmsg");
    let text =
        std::fs::read_to_string(&config).unwrap().replace(&kmsg.display().to_string(), &missing.display().to_string());
    std::fs::write(&config, text).unwrap();
    let (_, stderr) = scan_events(&config);
    assert!(stderr.contains(&format!("kernel: opening {}: No such file", missing.display())), "{stderr}");
}

#[test]
fn with_log_format_json_every_log_line_is_one_json_object_with_its_fields() {
    let dir = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-kmsg");
    let config = dir.path().join("agent.yaml");
    let yaml = kernel_only_yaml(
        state.path(),
        &missing,
        "''",
        "\n    logs: []\n    journal: 'off'\n    wtmp: ''\n    btmp: ''",
    );
    std::fs::write(&config, yaml).unwrap();
    let run = |format: &str| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_vigil-agent"))
            .env("RUST_LOG", "info")
            .args(["--log-format", format, "scan", "--events", "--json", "--config"])
            .arg(&config)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let json = run("json");
    let lines: Vec<serde_json::Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not one JSON object ({e}): {l:?}")))
        .collect();
    let opening = format!("kernel: opening {}: No such file", missing.display());
    let said = lines
        .iter()
        .find(|v| v["fields"]["message"].as_str().is_some_and(|m| m.contains(&opening)))
        .unwrap_or_else(|| panic!("the unreadable device is said: {json}"));
    assert!(said["timestamp"].is_string() && said["target"].as_str().is_some_and(|t| t.starts_with("vigil_agent")));
    assert!(matches!(said["level"].as_str(), Some("INFO" | "WARN")), "{said}");
    // The same line as text, for a person.
    let text = run("text");
    assert!(text.lines().any(|l| l.contains(&opening) && !l.starts_with('{')), "{text}");
    // A format that does not exist is refused, naming the choices.
    let bad = std::process::Command::new(env!("CARGO_BIN_EXE_vigil-agent"))
        .env("RUST_LOG", "info")
        .args(["--log-format", "xml", "scan"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("[possible values: text, json]"));
}

/// Hands each event to `take` until it says it has all it wants, nothing arrives for `quiet`,
/// or `within` passes: a drain that ends by itself.
fn drain(rx: &mut Receiver<Event>, within: Duration, quiet: Duration, mut take: impl FnMut(Event) -> bool) {
    let (deadline, mut quiet_since) = (Instant::now() + within, Instant::now());
    while Instant::now() < deadline && quiet_since.elapsed() < quiet {
        match rx.try_recv() {
            Ok(e) => {
                quiet_since = Instant::now();
                if take(e) {
                    return;
                }
            }
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
}

/// Starts `n` short-lived processes (`/bin/true`), waiting `gap` after each, while two threads
/// spin on the CPUs; returns their pids.
fn storm(n: usize, gap: Duration) -> std::collections::BTreeSet<i64> {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let spinners: Vec<_> = (0..2)
        .map(|_| {
            let stop = stop.clone();
            // Bounded: it ends when the storm does.
            std::thread::spawn(move || {
                let mut x = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                    std::hint::black_box(x);
                }
            })
        })
        .collect();
    let mut pids = std::collections::BTreeSet::new();
    for _ in 0..n {
        let mut child = std::process::Command::new("/bin/true").spawn().unwrap();
        pids.insert(i64::from(child.id()));
        child.wait().unwrap();
        if !gap.is_zero() {
            std::thread::sleep(gap);
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for s in spinners {
        s.join().unwrap();
    }
    pids
}

#[test]
fn every_execution_is_reported_or_counted_as_lost_under_a_competing_load() {
    use vigil_agent::events::queue::RateLimit;
    const N: usize = 1500;
    let default_limit = vigil_agent::config::Config::default().events.processes.rate_limit;
    for (gap, limit) in [
        (Duration::ZERO, default_limit),
        // A limit the storm overruns: what it holds back is counted.
        (Duration::ZERO, RateLimit::new(100.0, 200)),
        (Duration::ZERO, RateLimit::new(100_000.0, 1_000_000)),
        (Duration::from_millis(2), RateLimit::new(100_000.0, 1_000_000)),
    ] {
        let state = tempfile::tempdir().unwrap();
        let mut c = quiet(state.path());
        c.events.processes.enabled = true;
        c.events.processes.mode = ProcessMode::Netlink;
        c.events.processes.rate_limit = limit;
        c.events.queue_capacity = 1 << 16;
        let (sources, mut rx, q) = start(&c);
        assert!(wait_ready(&sources, Source::Process).contains("netlink"), "run the live tests as root");
        let started = Instant::now();
        let pids = storm(N, gap);
        let took = started.elapsed();
        // Drain: every start of ours arrived, or nothing more came for 2 s (at most 30 s).
        let mut seen = std::collections::BTreeMap::new();
        drain(&mut rx, Duration::from_secs(30), Duration::from_secs(2), |e| {
            if e.kind == EventType::ProcessStart
                && let Some(pid) = pid_of(&e).filter(|p| pids.contains(p))
            {
                let vanished = e.details.get("vanished").and_then(serde_json::Value::as_bool) == Some(true);
                seen.insert(pid, (e.detail_str("comm").map(str::to_owned), vanished, e.detail_i64("ppid")));
            }
            seen.len() >= N
        });
        sources.stop();
        let stats = q.stats();
        let dropped = stats.dropped_of(EventType::ProcessStart);
        let lost = stats.lost(Source::Process);
        eprintln!(
            "{N} executions in {took:?} ({:.0}/s), gap {gap:?}, limit {}/s: reported {}, starts dropped and counted {dropped}, kernel messages lost and counted {lost}",
            N as f64 / took.as_secs_f64(),
            limit.per_second,
            seen.len()
        );
        // Every execution is reported or counted (the counters also hold other processes of
        // this machine, so they may count more); with nothing dropped or lost, every one is
        // reported.
        if dropped + lost == 0 {
            assert_eq!(seen.len(), N, "nothing counted, yet executions missing");
        }
        assert!(
            seen.len() as u64 + dropped + lost >= N as u64,
            "{} of {N} executions neither reported nor counted",
            N as u64 - seen.len() as u64 - dropped - lost
        );
        // Each start names its program, or, for a process gone before /proc was read, says so
        // and still names its parent (from the kernel's fork message).
        let me = Some(i64::from(std::process::id()));
        let wrong: Vec<_> = seen
            .iter()
            .filter(|(_, (comm, vanished, ppid))| !(comm.as_deref() == Some("true") || (*vanished && *ppid == me)))
            .collect();
        assert!(wrong.is_empty(), "starts naming neither program nor parent: {wrong:?}");
        let vanished = seen.values().filter(|(_, v, _)| *v).count();
        eprintln!("  of them gone before /proc was read (named by pid and parent only): {vanished}");
    }
}

#[test]
fn a_burst_of_file_changes_past_the_kernel_queue_is_reported_or_counted() {
    // More changes than the kernel queues for one inotify instance (fs.inotify.max_queued_events,
    // 16,384 by default): each file is a create, a write and a close.
    const N: usize = 20_000;
    let state = tempfile::tempdir().unwrap();
    let watched = tempfile::tempdir().unwrap();
    let w = watched.path().to_owned();
    let mut c = quiet(state.path());
    c.events.files.enabled = true;
    c.events.files.paths = vec![vigil_agent::events::fim::WatchPath { path: w.display().to_string(), content: false }];
    c.events.files.per_path_interval = Duration::ZERO;
    c.events.files.rate_limit = vigil_agent::events::queue::RateLimit::new(100_000.0, 1_000_000);
    c.events.queue_capacity = 1 << 16;
    let (sources, mut rx, q) = start(&c);
    assert!(wait_ready(&sources, Source::File).contains("watching 1 directories"));
    for i in 0..N {
        std::fs::write(w.join(format!("f{i}")), "x").unwrap();
    }
    let mut created = std::collections::BTreeSet::new();
    drain(&mut rx, Duration::from_secs(60), Duration::from_secs(5), |e| {
        if e.kind == EventType::FileCreated
            && let Some(p) = e.detail_str("path")
        {
            created.insert(p.to_owned());
        }
        created.len() >= N
    });
    sources.stop();
    let stats = q.stats();
    let (overflowed, dropped) = (stats.lost(Source::File), stats.dropped_of(EventType::FileCreated));
    eprintln!("{N} files created: reported {}, overflows counted {overflowed}, dropped {dropped}", created.len());
    // A queue overflow is counted and the tree walked again, which reports what it hid.
    assert!(created.len() as u64 + dropped >= N as u64, "{} files neither reported nor counted", N - created.len());
}

#[test]
fn the_whole_catalogue_gives_the_same_events_to_a_follow_a_scan_watch_and_run() {
    // Every test line of docs/agent-events.md's catalogue, as one kernel log: followed by the
    // sources in-process (`runner::start`), read once by `scan --events`, and followed by the
    // `watch` and `run` binaries.
    let (log, expected) = catalogue::kmsg_log(100);
    let (state, dir, kmsg, mut c) = kernel_file("");
    c.events.kernel.rate_limit = vigil_agent::events::queue::RateLimit::new(10_000.0, 10_000);
    let (sources, mut rx, _q) = start(&c);
    assert!(wait_ready(&sources, Source::Kernel).starts_with("following"));
    append(&kmsg, &log);
    let followed = wait_for(&mut rx, Duration::from_secs(10), "an event per row", |ev| ev.len() >= expected.len());
    sources.stop();
    let mut want = expected.clone();
    want.sort();
    assert_eq!(sorted_kinds(followed.iter().map(|e| e.kind.as_str().to_owned())), want, "followed");

    let config = dir.path().join("agent.yaml");
    std::fs::write(&config, kernel_only_yaml(state.path(), &kmsg, "''", "{enabled: false}")).unwrap();
    let (scanned, _) = scan_events(&config);
    assert_eq!(sorted_kinds(scanned.iter().map(|e| e["type"].as_str().unwrap().to_owned())), want, "scanned");
    // The binaries that follow: `watch --events-only` and `run` (the DaemonSet's), each over a
    // log of its own written once its kernel source says it follows.
    for args in [&["watch", "--events-only", "--json", "--config"][..], &["run", "--no-report", "-c"][..]] {
        let kmsg2 = dir.path().join(format!("kmsg-{}", args[0]));
        std::fs::write(&kmsg2, "").unwrap();
        let config2 = dir.path().join(format!("agent-{}.yaml", args[0]));
        let text = std::fs::read_to_string(&config)
            .unwrap()
            .replace(&kmsg.display().to_string(), &kmsg2.display().to_string());
        std::fs::write(&config2, text).unwrap();
        let got = follow_binary(args, &config2, &kmsg2, &log, expected.len());
        assert_eq!(sorted_kinds(got.iter().map(|e| e["type"].as_str().unwrap().to_owned())), want, "{}", args[0]);
    }
    // The same fields either way, row by row.
    for (f, s) in followed.iter().zip(&scanned) {
        let line = f.detail_str("line").unwrap();
        let same = scanned.iter().find(|s| s["details"]["line"] == line).unwrap_or(s);
        for (k, v) in &f.details {
            assert_eq!(&same["details"][k], v, "{k} of {line}");
        }
    }
}
