//! The agent on this machine, for real: the host-root indirection, independent readings of
//! the same sources, and the binary's commands including the daemon's endpoints.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails loudly on the first surprise

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use vigil_agent::config::{Collectors, CompiledFilters};
use vigil_agent::host::HostRoot;
use vigil_agent::snapshot::Collector;

/// The agent binary, logging at its default level whatever `RUST_LOG` the tests run under
/// (the tests read what it says).
fn agent() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_vigil-agent"));
    c.env("RUST_LOG", "info");
    c
}

fn collector(root: HostRoot) -> Collector {
    Collector::new(root, Collectors::default(), CompiledFilters::default(), 5)
}

#[test]
fn a_host_root_elsewhere_reads_the_same_host_as_slash() {
    // A host root that is not `/`: the host's trees linked under a temporary directory, the
    // way the DaemonSet sees them under /host.
    let dir = tempfile::tempdir().unwrap();
    for t in ["proc", "sys", "etc"] {
        std::os::unix::fs::symlink(format!("/{t}"), dir.path().join(t)).unwrap();
    }
    let a = collector(HostRoot::new("/")).collect(jiff::Timestamp::now());
    let b = collector(HostRoot::new(dir.path())).collect(jiff::Timestamp::now());
    assert_eq!(a.host.identity, b.host.identity);
    assert_eq!(a.cpu.as_ref().unwrap().cores, b.cpu.as_ref().unwrap().cores);
    assert_eq!(a.cpu.as_ref().unwrap().counters.boot_time, b.cpu.as_ref().unwrap().counters.boot_time);
    assert_eq!(a.memory.as_ref().unwrap().total_bytes, b.memory.as_ref().unwrap().total_bytes);
    let names = |s: &vigil_agent::snapshot::Snapshot| {
        s.network.as_ref().unwrap().interfaces.iter().map(|i| i.name.clone()).collect::<Vec<_>>()
    };
    assert_eq!(names(&a), names(&b));
    let disks = |s: &vigil_agent::snapshot::Snapshot| {
        s.disks.as_ref().unwrap().iter().map(|d| d.device.clone()).collect::<Vec<_>>()
    };
    assert_eq!(disks(&a), disks(&b));
    let (pa, pb) = (a.processes.unwrap().total, b.processes.unwrap().total);
    assert!(pa.abs_diff(pb) <= 20, "{pa} vs {pb} processes");
    assert!(a.host.identity.hostname.is_some() && a.host.identity.kernel.is_some());
}

fn meminfo_kib(key: &str) -> u64 {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap();
    let line = text.lines().find(|l| l.starts_with(&format!("{key}:"))).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn memory_cpu_seconds_and_filesystem_size_match_independent_readings() {
    let mut c = collector(HostRoot::new("/"));
    let s = c.collect(jiff::Timestamp::now());

    // MemTotal is fixed; MemAvailable moves, so within 256 MiB.
    let m = s.memory.unwrap();
    assert_eq!(m.total_bytes, meminfo_kib("MemTotal") * 1024);
    let avail = meminfo_kib("MemAvailable") * 1024;
    assert!(m.available_bytes.abs_diff(avail) < 256 << 20, "{} vs {avail}", m.available_bytes);

    // Total CPU seconds: the first line of /proc/stat divided by `getconf CLK_TCK`, read after
    // ours, so it is at least ours and at most a few seconds more per core.
    let tck: f64 = String::from_utf8(Command::new("getconf").arg("CLK_TCK").output().unwrap().stdout)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let stat = std::fs::read_to_string("/proc/stat").unwrap();
    let ticks: u64 =
        stat.lines().next().unwrap().split_whitespace().skip(1).take(8).map(|v| v.parse::<u64>().unwrap()).sum();
    let theirs = ticks as f64 / tck;
    let cpu = s.cpu.unwrap();
    let t = cpu.counters.total;
    let ours = t.user + t.nice + t.system + t.idle + t.iowait + t.irq + t.softirq + t.steal;
    assert!(theirs >= ours - 1e-6 && theirs - ours < 5.0 * cpu.cores as f64, "{ours} vs {theirs}");

    // Size of / from `stat -f` (fundamental block size × blocks).
    let out =
        String::from_utf8(Command::new("stat").args(["-f", "-c", "%S %b", "/"]).output().unwrap().stdout).unwrap();
    let mut it = out.split_whitespace().map(|v| v.parse::<u64>().unwrap());
    let size = it.next().unwrap() * it.next().unwrap();
    let root = s.filesystems.unwrap().into_iter().find(|f| f.mount_point == "/").expect("/ is a real filesystem");
    assert_eq!(root.size_bytes, size);
}

#[test]
fn scan_json_carries_every_section_and_the_schema_version() {
    let out = agent().args(["scan", "--json", "--sample", "200ms"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["schemaVersion"], 1);
    for key in [
        "host",
        "cpu",
        "memory",
        "pressure",
        "filesystems",
        "disks",
        "network",
        "fileDescriptors",
        "processes",
        "clock",
        "readErrors",
        "scanSeconds",
    ] {
        assert!(v.get(key).is_some(), "no {key}");
    }
    let busy = v["cpu"]["utilization"]["busy"].as_f64().expect("two reads give utilisation");
    assert!((0.0..=1.0).contains(&busy));
    assert!(v["processes"]["total"].as_u64().unwrap() > 1);
}

#[test]
fn scan_text_is_plain_when_not_a_terminal_and_compact_is_one_line() {
    let out = agent().args(["scan", "--sample", "0s"]).output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("Memory") && text.contains("Processes"), "{text}");
    assert!(!text.contains('\u{1b}'), "no colour codes in a pipe");
    let out = agent().args(["scan", "--compact", "--sample", "0s"]).output().unwrap();
    assert_eq!(String::from_utf8(out.stdout).unwrap().lines().count(), 1);
}

#[test]
fn watch_writes_json_lines_and_stops_after_count() {
    let out = agent().args(["watch", "--json", "--interval", "1s", "--count", "2"]).output().unwrap();
    assert!(out.status.success());
    let lines: Vec<serde_json::Value> =
        out.stdout.lines().map(|l| serde_json::from_str(&l.unwrap()).unwrap()).collect();
    assert_eq!(lines.len(), 2);
    assert!(lines[0]["cpu"]["utilization"].is_null());
    assert!(lines[1]["cpu"]["utilization"]["busy"].is_number(), "the second snapshot has utilisation");
}

#[test]
fn a_bad_host_root_and_a_bad_config_are_clear_errors() {
    let out = agent().args(["scan", "--host-root", "/nonexistent"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent does not look like a host root"));

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("agent.yaml");
    std::fs::write(&bad, "interval: 10s\nexporters:\n  prometheus:\n    listn: 0.0.0.0:1\n").unwrap();
    let out = agent().arg("check-config").arg(&bad).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown field `listn`") && err.contains("line 4"), "{err}");
    let good = dir.path().join("good.yaml");
    std::fs::write(&good, "interval: 30s\n").unwrap();
    assert!(agent().arg("check-config").arg(&good).status().unwrap().success());
}

#[test]
fn run_refuses_a_config_other_than_the_pinned_one_and_says_so_in_the_termination_log() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("agent.yaml");
    std::fs::write(&cfg, "interval: 1s\n").unwrap();
    let log = dir.path().join("termination-log");
    std::fs::write(&log, "").unwrap();
    let out = agent()
        .arg("run")
        .arg("-c")
        .arg(&cfg)
        .arg("--termination-log")
        .arg(&log)
        .env("VIGIL_CONFIG_SHA256", "0".repeat(64))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let written = std::fs::read_to_string(&log).unwrap();
    assert!(written.contains("refusing a config that is not the one rolled out"), "{written}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("SHA-256 is"));
}

fn http_get(addr: &str, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let status = resp.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = resp.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, body)
}

#[test]
fn run_serves_metrics_that_promtool_accepts_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("agent.yaml");
    let watched = dir.path().join("etc");
    std::fs::create_dir(&watched).unwrap();
    std::fs::write(
        &cfg,
        format!(
            "interval: 1s\nexporters:\n  prometheus:\n    enabled: true\n    listen: 127.0.0.1:0\nevents:\n  stateDir: {}\n  files:\n    paths: [{{path: {}}}]\n",
            dir.path().join("state").display(),
            watched.display()
        ),
    )
    .unwrap();
    let ready_file = dir.path().join("ready");
    let mut child = agent()
        .arg("run")
        .arg("-c")
        .arg(&cfg)
        .env(vigil_crds::agent::env::READY_FILE, &ready_file)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    stderr.read_line(&mut line).unwrap();
    let addr = line
        .trim()
        .rsplit_once("http://")
        .expect("the bound address is announced")
        .1
        .trim_end_matches("/metrics")
        .to_owned();

    // Ready once the first snapshot exists; wait for it with a deadline.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if http_get(&addr, "/readyz").0 == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "/readyz never turned 200");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(http_get(&addr, "/healthz").0, 200);
    let (status, body) = http_get(&addr, "/metrics");
    assert_eq!(status, 200);
    for name in [
        "vigil_node_memory_total_bytes",
        "vigil_node_cpu_seconds_total",
        "vigil_agent_resident_memory_bytes",
        "vigil_agent_scan_duration_seconds_bucket",
        "vigil_node_filesystem_size_bytes",
        "vigil_agent_events_total{type=\"process.start\",source=\"process\"}",
        "vigil_agent_events_dropped_total{source=\"file\",reason=\"rate_limited\"}",
        "vigil_agent_event_queue_capacity 4096",
    ] {
        assert!(body.contains(name), "{name} missing");
    }
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus; `make test` installs it)");
    promtool.stdin.take().unwrap().write_all(body.as_bytes()).unwrap();
    let out = promtool.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // A second agent on the same state directory is refused, naming it, and changes nothing.
    let second = agent().arg("run").arg("-c").arg(&cfg).output().unwrap();
    assert_eq!(second.status.code(), Some(1));
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(
        err.contains("another vigil-agent works with the state directory")
            && err.contains(&dir.path().join("state").display().to_string()),
        "{err}"
    );
    assert_eq!(http_get(&addr, "/healthz").0, 200, "the first agent runs on");
    // The pod's readiness probe: this agent works, with its sources started.
    let probe = || agent().arg("ready").env(vigil_crds::agent::env::READY_FILE, &ready_file).output().unwrap();
    let ready = probe();
    assert!(ready.status.success(), "{}", String::from_utf8_lossy(&ready.stdout));
    assert!(String::from_utf8_lossy(&ready.stdout).contains(&format!("agent pid {} works", child.id())));

    assert!(Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success());
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "the agent did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
    // Stopped: not ready, and the probe says why.
    assert!(!ready_file.exists(), "the ready file goes with the agent");
    let not = probe();
    assert_eq!(not.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&not.stdout).contains("not the node's working agent"));
    // A file naming a process that is gone (an agent killed with SIGKILL) is not ready either,
    // nor one naming a live pid that started at another time (a pid given again).
    std::fs::write(&ready_file, format!("{} 1", child.id())).unwrap();
    let stale = probe();
    assert_eq!(stale.status.code(), Some(1), "{}", String::from_utf8_lossy(&stale.stdout));
    std::fs::write(&ready_file, format!("{} 1", std::process::id())).unwrap();
    let reused = probe();
    assert_eq!(reused.status.code(), Some(1), "{}", String::from_utf8_lossy(&reused.stdout));
    assert!(String::from_utf8_lossy(&reused.stdout).contains("is another process now"));
}
