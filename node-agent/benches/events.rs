//! Security event figures, in three parts:
//!
//! 1. pipeline: auth lines and kernel records parsed, classified, rate-limited, queued and
//!    written as JSON lines by a consumer thread: events per second and CPU per event;
//! 2. misses: short-lived processes seen by the process connector and by /proc polling;
//! 3. storms: the agent binary (`vigil-agent run`) under a fork storm and then 10,000 file
//!    changes per second in a watched tree, each for `VIGIL_STORM_SECS` (default 15): peak
//!    RSS, events out, drops by reason (from its /metrics);
//! 4. kernel: the agent binary following a kernel log (a file in the kmsg format) written at
//!    10,000 records a second for `VIGIL_STORM_SECS`, every record a node problem, with a gap
//!    in the sequence numbers each second: peak RSS, events out, drops and losses counted.
//!
//! `cargo bench -p vigil-agent --bench events` (root, for the process connector). Every loop
//! is bounded in count and time; every process it starts is killed at the end.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::Children;
use vigil_agent::config::{Config, ProcessMode};
use vigil_agent::events::auth::{AuthParser, BruteForce, BruteForceRule, Parsed};
use vigil_agent::events::kmsg::{Classifier, parse_record};
use vigil_agent::events::queue::RateLimit;
use vigil_agent::events::{EventQueue, EventType, Source};

fn pipeline() {
    const LINES: usize = 200_000;
    let auth_lines = [
        "Nov 22 10:10:05 web-1 sshd[21003]: Failed password for root from 203.0.113.{i} port 40120 ssh2",
        "Nov 22 10:00:12 web-1 sshd[20500]: Accepted publickey for alice from 10.0.{i}.5 port 51234 ssh2: ED25519 SHA256:Vn0mHq2c1zVvK2kbZ9xN0q0vYw3v2sJk8yB1XzQ7p3E",
        "Nov 22 10:01:40 web-1 sudo:    alice : TTY=pts/0 ; PWD=/home/alice ; USER=root ; COMMAND=/usr/bin/apt-get install -y pkg{i}",
        "Nov 22 09:58:01 web-1 CRON[20411]: pam_unix(cron:session): session opened for user root(uid=0) by (uid=0)",
    ];
    let kmsg = [
        "3,{i},7200000200,-;Memory cgroup out of memory: Killed process {i} (stress-ng) total-vm:540164kB, anon-rss:524288kB, file-rss:3212kB, shmem-rss:0kB, UID:0 pgtables:1096kB oom_score_adj:1000",
        "6,{i},7300000000,-;nginx[{i}]: segfault at 10 ip 000055b1c2a1b2c3 sp 00007ffd4a3b2c10 error 4 in nginx[55b1c2a00000+110000]",
        "6,{i},5000000,-;cni0: port 1(veth{i}) entered forwarding state",
    ];
    let auth: Vec<String> = (0..LINES).map(|i| auth_lines[i % 4].replace("{i}", &(i % 250).to_string())).collect();
    let kern: Vec<String> = (0..LINES).map(|i| kmsg[i % 3].replace("{i}", &i.to_string())).collect();

    let (queue, mut rx) = EventQueue::new(4096, "bench");
    let consumed = Arc::new(AtomicU64::new(0));
    let consumer = {
        let consumed = consumed.clone();
        std::thread::spawn(move || {
            let mut sink = std::io::sink();
            while let Some(e) = rx.blocking_recv() {
                serde_json::to_writer(&mut sink, &e).unwrap();
                sink.write_all(b"\n").unwrap();
                consumed.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    let unlimited = RateLimit::new(1e12, u32::MAX);
    let mut auth_em = queue.emitter(Source::Auth, unlimited);
    let mut kern_em = queue.emitter(Source::Kernel, unlimited);
    let parser = AuthParser::default();
    let now: jiff::Timestamp = "2026-11-22T12:00:00Z".parse().unwrap();
    let mut brute = BruteForce::new(BruteForceRule::default());
    let mut classifier = Classifier::default();
    let cpu0 = common::cpu_seconds("self");
    let t0 = Instant::now();
    let mut produced = 0u64;
    for (a, k) in auth.iter().zip(&kern) {
        if let Parsed::Event(e) = parser.parse(a, now) {
            if let Some(b) = brute.observe(&e) {
                produced += 1;
                while !auth_em.emit(b.clone()) {
                    std::thread::yield_now();
                }
            }
            produced += 1;
            // Spin on a full queue here: the figure is throughput, not drop behaviour.
            let mut e = e;
            loop {
                match try_emit(&mut auth_em, e) {
                    None => break,
                    Some(back) => {
                        e = back;
                        std::thread::yield_now();
                    }
                }
            }
        }
        if let Some(e) = parse_record(k.as_bytes()).and_then(|r| classifier.classify(&r, now)) {
            produced += 1;
            let mut e = e;
            loop {
                match try_emit(&mut kern_em, e) {
                    None => break,
                    Some(back) => {
                        e = back;
                        std::thread::yield_now();
                    }
                }
            }
        }
    }
    drop(auth_em);
    drop(kern_em);
    drop(queue);
    consumer.join().unwrap();
    let secs = t0.elapsed().as_secs_f64();
    let cpu = common::cpu_seconds("self") - cpu0;
    let n = consumed.load(Ordering::Relaxed);
    assert_eq!(n, produced);
    println!(
        "pipeline: {} input lines → {n} events in {secs:.2} s: {:.0} lines/s, {:.0} events/s; CPU {cpu:.2} s ({:.1} µs per event, both threads)",
        2 * LINES,
        2.0 * LINES as f64 / secs,
        n as f64 / secs,
        cpu / n as f64 * 1e6
    );
}

/// Emits, handing the event back when the queue was full (the drop counter counts it; the
/// bench retries, so its figure is throughput).
fn try_emit(
    em: &mut vigil_agent::events::Emitter,
    e: vigil_agent::events::Event,
) -> Option<vigil_agent::events::Event> {
    let keep = e.clone();
    if em.emit(e) { None } else { Some(keep) }
}

fn misses() {
    const N: usize = 1000;
    let mut runs = Vec::new();
    for (mode, interval) in [(ProcessMode::Netlink, 1000), (ProcessMode::Poll, 1000), (ProcessMode::Poll, 100)] {
        let state = tempfile::tempdir().unwrap();
        let mut c = Config::default();
        c.events.state_dir = state.path().to_owned();
        for off in [&mut c.events.files.enabled, &mut c.events.auth.enabled, &mut c.events.network.enabled] {
            *off = false;
        }
        c.events.kernel.enabled = false;
        c.events.clock.enabled = false;
        c.events.processes.mode = mode;
        c.events.processes.poll_interval = Duration::from_millis(interval);
        c.events.processes.rate_limit = RateLimit::new(1e9, u32::MAX);
        c.events.queue_capacity = 100_000;
        let (queue, mut rx) = EventQueue::new(c.events.queue_capacity, "bench");
        let sources = vigil_agent::events::runner::start(&c, &queue);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !sources.states.lock().unwrap().0.contains_key(&Source::Process) {
            assert!(Instant::now() < deadline);
            std::thread::sleep(Duration::from_millis(10));
        }
        std::thread::sleep(Duration::from_millis(1500)); // past the baseline listing
        let mut pids = std::collections::HashSet::new();
        let t0 = Instant::now();
        for _ in 0..N {
            let mut child = Command::new("/bin/true").spawn().unwrap();
            pids.insert(i64::from(child.id()));
            child.wait().unwrap();
        }
        let spawn_secs = t0.elapsed().as_secs_f64();
        std::thread::sleep(Duration::from_millis(interval + 500));
        sources.stop();
        let mut seen = std::collections::HashSet::new();
        while let Ok(e) = rx.try_recv() {
            if e.kind == EventType::ProcessStart
                && let Some(pid) = e.detail_i64("pid")
                && pids.contains(&pid)
            {
                seen.insert(pid);
            }
        }
        let label = match mode {
            ProcessMode::Netlink => "process connector".to_owned(),
            _ => format!("/proc polling every {interval} ms"),
        };
        runs.push(format!(
            "{label}: saw {} of {N} /bin/true processes ({:.1}% missed; {:.0} spawned per second)",
            seen.len(),
            100.0 * (N - seen.len()) as f64 / N as f64,
            N as f64 / spawn_secs
        ));
    }
    for r in runs {
        println!("misses: {r}");
    }
}

fn metrics(addr: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).unwrap();
    body
}

fn sum(body: &str, prefix: &str) -> f64 {
    body.lines().filter(|l| l.starts_with(prefix)).filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok()).sum()
}

fn drops(body: &str) -> String {
    body.lines()
        .filter(|l| l.starts_with("vigil_agent_events_dropped_total{"))
        .filter(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()).is_some_and(|v| v > 0.0))
        .map(|l| l.trim_start_matches("vigil_agent_events_dropped_total").to_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Work done per 10 ms tick by the paced storms.
const PER_TICK: u64 = 100;

/// Runs `tick` every 10 ms for `secs` (and no longer than twice that), sampling the agent's RSS
/// every 200 ms: the seconds it took and the peak RSS (KiB).
fn paced(secs: u64, pid: u32, mut tick: impl FnMut(u64)) -> (f64, u64) {
    let t0 = Instant::now();
    let mut peak = 0;
    for n in 0..(secs * 100) {
        tick(n);
        if n % 20 == 0 {
            peak = peak.max(common::status_kib(pid, "VmRSS:"));
        }
        let due = Duration::from_millis(10 * (n + 1));
        if let Some(wait) = due.checked_sub(t0.elapsed()) {
            std::thread::sleep(wait);
        }
        if t0.elapsed() > Duration::from_secs(secs * 2) {
            break;
        }
    }
    (t0.elapsed().as_secs_f64(), peak)
}

/// `vigil-agent run` with /metrics on a port of its own and `events` (YAML lines under
/// `events:`) in `dir`, settled for 3 s: its guard, metrics address, pid and idle RSS (KiB).
fn agent_with(dir: &std::path::Path, events: &str) -> (Children, String, u32, u64) {
    let cfg = common::agent_config(dir, events);
    let mut guard = Children::default();
    let (agent, addr) = common::spawn_agent(&cfg);
    let pid = agent.id();
    guard.0.push(agent);
    std::thread::sleep(Duration::from_secs(3));
    let idle = common::status_kib(pid, "VmRSS:");
    (guard, addr, pid, idle)
}

fn storms() {
    let secs: u64 = std::env::var("VIGIL_STORM_SECS").ok().and_then(|v| v.parse().ok()).unwrap_or(15);
    let dir = tempfile::tempdir().unwrap();
    let watched = dir.path().join("watched");
    std::fs::create_dir_all(&watched).unwrap();
    for i in 0..2000 {
        std::fs::write(watched.join(format!("f{i}")), "initial").unwrap();
    }
    let (_guard, addr, pid, idle) = agent_with(
        dir.path(),
        &format!("  files:\n    paths: [{{path: {}}}]\n  auth:\n    logs: []\n", watched.display()),
    );
    println!("storm: agent idle RSS {:.1} MiB (pid {pid})", idle as f64 / 1024.0);

    // Fork storm: two threads starting /bin/true as fast as they can.
    let stop = Arc::new(AtomicBool::new(false));
    let spawned = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..2)
        .map(|_| {
            let (stop, spawned) = (stop.clone(), spawned.clone());
            std::thread::spawn(move || {
                for _ in 0..1_000_000 {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    if let Ok(mut c) = Command::new("/bin/true").spawn() {
                        let _ = c.wait();
                        spawned.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    let before = metrics(&addr);
    let cpu0 = common::cpu_seconds(&pid.to_string());
    let t0 = Instant::now();
    let mut peak = 0;
    while t0.elapsed() < Duration::from_secs(secs) {
        peak = peak.max(common::status_kib(pid, "VmRSS:"));
        std::thread::sleep(Duration::from_millis(200));
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().unwrap();
    }
    std::thread::sleep(Duration::from_secs(2));
    let after = metrics(&addr);
    let n = spawned.load(Ordering::Relaxed);
    let cpu_share = (common::cpu_seconds(&pid.to_string()) - cpu0) / t0.elapsed().as_secs_f64() * 100.0;
    let starts = sum(&after, "vigil_agent_events_total{type=\"process.start\"")
        - sum(&before, "vigil_agent_events_total{type=\"process.start\"");
    println!(
        "storm: fork storm {secs} s, {n} processes ({:.0}/s): {starts} process.start events out, agent RSS peak {:.1} MiB, CPU {cpu_share:.0}% of a core; drops {}",
        n as f64 / secs as f64,
        peak as f64 / 1024.0,
        drops(&after)
    );

    // File storm: 10,000 writes per second over 2,000 files kept open (a write is one
    // pwrite(2), so the writer keeps up on two cores).
    use std::os::unix::fs::FileExt;
    let files: Vec<std::fs::File> = (0..2000)
        .map(|i| std::fs::OpenOptions::new().write(true).open(watched.join(format!("f{i}"))).unwrap())
        .collect();
    let before = metrics(&addr);
    let cpu0 = common::cpu_seconds(&pid.to_string());
    let mut writes = 0u64;
    let (elapsed, mut peak) = paced(secs, pid, |tick| {
        for k in 0..PER_TICK {
            let i = (tick * PER_TICK + k) % 2000;
            files[i as usize].write_all_at(format!("write {tick} {k}").as_bytes(), 0).unwrap();
            writes += 1;
        }
    });
    let cpu_share = (common::cpu_seconds(&pid.to_string()) - cpu0) / elapsed * 100.0;
    std::thread::sleep(Duration::from_secs(3));
    peak = peak.max(common::status_kib(pid, "VmRSS:"));
    let after = metrics(&addr);
    let modified = sum(&after, "vigil_agent_events_total{type=\"file.modified\"")
        - sum(&before, "vigil_agent_events_total{type=\"file.modified\"");
    println!(
        "storm: file storm {elapsed:.1} s, {writes} writes ({:.0}/s) to 2000 files: {modified} file.modified events out, agent RSS peak {:.1} MiB, high-water {:.1} MiB, CPU {cpu_share:.0}% of a core; drops {}",
        writes as f64 / elapsed,
        peak as f64 / 1024.0,
        common::status_kib(pid, "VmHWM:") as f64 / 1024.0,
        drops(&after)
    );
}

fn kernel_storm() {
    let secs: u64 = std::env::var("VIGIL_STORM_SECS").ok().and_then(|v| v.parse().ok()).unwrap_or(15);
    let dir = tempfile::tempdir().unwrap();
    let kmsg = dir.path().join("kmsg");
    std::fs::write(&kmsg, "").unwrap();
    let (_guard, addr, pid, idle) = agent_with(
        dir.path(),
        &format!(
            "  processes: {{enabled: false}}\n  files: {{enabled: false}}\n  network: {{enabled: false}}\n  auth: {{enabled: false}}\n  kernel: {{device: {}}}\n",
            kmsg.display()
        ),
    );
    // Node problems of every kind the classifier knows, each record a new one.
    let lines = [
        "nf_conntrack: nf_conntrack: table full, dropping packet",
        "nvme nvme0: I/O 123 QID 4 timeout, aborting",
        "TCP: request_sock_TCP: Possible SYN flooding on port 0.0.0.0:80. Sending cookies.",
        "audit: type=1400 audit(1700000000.123:45): apparmor=\"DENIED\" operation=\"open\" profile=\"cri-containerd.apparmor.d\" name=\"/etc/shadow\" pid=1 comm=\"cat\" requested_mask=\"r\" denied_mask=\"r\"",
        "EXT4-fs error (device nvme1n1): ext4_validate_block_bitmap:390: comm kworker/1:2: bg 12: bad block bitmap checksum",
        "INFO: task kworker/u8:2:1234 blocked for more than 122 seconds.",
        "unregister_netdevice: waiting for veth3a1b2c to become free. Usage count = 2",
        "WARNING: CPU: 0 PID: 1 at kernel/workqueue.c:3045 __flush_work+0x2d1/0x2f0",
    ];
    let mut out = std::fs::OpenOptions::new().append(true).open(&kmsg).unwrap();
    let before = metrics(&addr);
    let cpu0 = common::cpu_seconds(&pid.to_string());
    let (mut seq, mut written, mut gaps) = (1u64, 0u64, 0u64);
    let (elapsed, mut peak) = paced(secs, pid, |tick| {
        let mut batch = String::with_capacity(200 * PER_TICK as usize);
        for k in 0..PER_TICK {
            let line = lines[((tick * PER_TICK + k) % lines.len() as u64) as usize];
            batch.push_str(&format!("3,{seq},{},-;{line}\n", seq * 100));
            seq += 1;
            written += 1;
        }
        // Once a second, three records the ring buffer "overwrote": a gap of 3.
        if tick % 100 == 99 {
            seq += 3;
            gaps += 3;
        }
        out.write_all(batch.as_bytes()).unwrap();
    });
    std::thread::sleep(Duration::from_secs(3));
    let cpu_share = (common::cpu_seconds(&pid.to_string()) - cpu0) / (elapsed + 3.0) * 100.0;
    peak = peak.max(common::status_kib(pid, "VmRSS:"));
    let after = metrics(&addr);
    let out_events = sum(&after, "vigil_agent_events_total{") - sum(&before, "vigil_agent_events_total{");
    let lost = sum(&after, "vigil_agent_events_lost_total{source=\"kernel\"}");
    println!(
        "storm: kernel storm {elapsed:.1} s, {written} records ({:.0}/s), {gaps} records lost on purpose: {out_events} events out, lost counted {lost}, agent RSS idle {:.1} MiB, peak {:.1} MiB, high-water {:.1} MiB, CPU {cpu_share:.0}% of a core; drops {}",
        written as f64 / elapsed,
        idle as f64 / 1024.0,
        peak as f64 / 1024.0,
        common::status_kib(pid, "VmHWM:") as f64 / 1024.0,
        drops(&after)
    );
}

fn main() {
    let only = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let run = |name: &str| only.as_deref().is_none_or(|o| name.contains(o));
    if run("pipeline") {
        pipeline();
    }
    if run("misses") {
        misses();
    }
    if run("storms") {
        storms();
    }
    if run("kernel") {
        kernel_storm();
    }
}
