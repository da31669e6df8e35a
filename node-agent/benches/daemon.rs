//! The agent as a daemon next to Debian's prometheus-node-exporter, on the same host in the
//! same run: both scraped every 10 s (the agent also snapshots every 10 s) for
//! `VIGIL_SOAK_SECS` seconds (default 600) with about 400 processes on the host; then steady
//! RSS, CPU share of one core, and CPU per /metrics scrape (200 back-to-back scrapes each).
//!
//! `cargo bench -p vigil-agent --bench daemon` (needs `prometheus-node-exporter` on PATH or
//! in /usr/bin; every loop is bounded and every process it starts is killed at the end).
//! `cargo bench -p vigil-agent --bench daemon parts`: the agent's memory part by part instead.
//! `cargo bench -p vigil-agent --bench daemon churn`: the agent's memory through a burst of
//! short-lived processes (`VIGIL_CHURN_PROCESSES`, default 100,000) instead.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::Children;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn proc_stat(pid: u32) -> (f64, u64) {
    (common::cpu_seconds(&pid.to_string()), common::status_kib(pid, "VmRSS:") * 1024)
}

fn scrape(addr: &str) -> usize {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").unwrap();
    let mut body = Vec::new();
    s.read_to_end(&mut body).unwrap();
    body.len()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn wait_up(addr: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "{addr} never came up");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Debian's node_exporter with its default collectors on a port of its own, killed with
/// `guard`: its address and pid.
fn node_exporter(guard: &mut Children) -> (String, u32) {
    let bin = ["prometheus-node-exporter", "/usr/bin/prometheus-node-exporter"]
        .into_iter()
        .find(|b| Command::new(b).arg("--version").output().is_ok())
        .expect("prometheus-node-exporter (apt-get install prometheus-node-exporter)");
    let addr = format!("127.0.0.1:{}", free_port());
    let ne = Command::new(bin)
        .arg(format!("--web.listen-address={addr}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = ne.id();
    guard.0.push(ne);
    (addr, pid)
}

fn mib(b: u64) -> f64 {
    b as f64 / (1024.0 * 1024.0)
}

/// The agent's resident memory part by part: the same binary started with one more part on
/// each time, each settled for 10 s and sampled over 5 s, beside node_exporter; RSS (and of
/// it the anonymous memory: heap and stacks, the rest being the binary's and libraries'
/// pages) per configuration and the increment of each part.
fn parts() {
    let dir = std::env::temp_dir().join(format!("vigil-parts-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let policy = dir.join("policy.yaml");
    // Detectors per series: the default anomaly detector on every process's CPU (one series
    // per process) and on the node's, and an event rule.
    std::fs::write(
        &policy,
        "apiVersion: vigil.dev/v1alpha1\nkind: AlertPolicy\nmetadata: {name: parts, namespace: vigil-system}\nspec:\n  rules:\n    - name: ProcessCpu\n      metric: {name: vigil_process_cpu_ratio}\n      detector: {anomaly: {}}\n      severity: warning\n    - name: NodeCpu\n      metric: {name: vigil_node_cpu_utilization_ratio}\n      detector: {anomaly: {}}\n      severity: warning\n    - name: Ooms\n      event: {type: kernel.oom_kill}\n      detector: {eventRate: {count: 3, window: 10m}}\n      severity: warning\n  routes:\n    - {name: all, receivers: [am]}\n  receivers:\n    - {name: am, alertmanager: {urls: ['http://127.0.0.1:9']}}\n",
    )
    .unwrap();
    let off = "{enabled: false}";
    let sources = ["kernel", "auth", "processes", "files", "network", "clock"];
    // Each step turns one more part on.
    let mut steps: Vec<(String, String)> = Vec::new();
    let events = |on: &[&str]| {
        let mut e = format!("events:\n  stateDir: {}\n", dir.join("state").display());
        for s in sources {
            if !on.contains(&s) {
                e.push_str(&format!("  {s}: {off}\n"));
            }
        }
        e
    };
    let prom = "exporters:\n  prometheus:\n    enabled: true\n    listen: 127.0.0.1:0\n";
    steps.push(("snapshots and /metrics, no event source".into(), format!("{prom}{}", events(&[]))));
    let mut on: Vec<&str> = Vec::new();
    for s in sources {
        on.push(s);
        let what = match s {
            "kernel" => "+ kernel source (kmsg, auditd's log)",
            "auth" => "+ auth source (auth logs, journal)",
            "processes" => "+ processes source (process connector)",
            "files" => "+ files source (inotify, baseline)",
            "network" => "+ network source",
            _ => "+ clock source (every source on)",
        };
        steps.push((what.into(), format!("{prom}{}", events(&on))));
    }
    steps.push((
        "+ alert pipeline (anomaly detector on every process's CPU and the node's, an event rule)".into(),
        format!("{prom}{}alerts:\n  policies: [{}]\n", events(&on), policy.display()),
    ));
    let mut guard = Children::default();
    let (ne_addr, ne_pid) = node_exporter(&mut guard);
    wait_up(&ne_addr);
    // Median of 5 samples over 5 s, `/metrics` scraped at each.
    let sample = |pid: u32, addr: Option<&str>| {
        let mut rss = Vec::new();
        for _ in 0..5 {
            if let Some(a) = addr {
                scrape(a);
            }
            rss.push((common::status_kib(pid, "VmRSS:"), common::status_kib(pid, "RssAnon:")));
            std::thread::sleep(Duration::from_secs(1));
        }
        rss.sort_unstable();
        rss[rss.len() / 2]
    };
    // Once started (10 s), and once working: after the agent gave its start-up code back
    // (30 s) and 30 s more of its work (three snapshots, scrapes).
    let settle = Duration::from_secs(10);
    let working = Duration::from_secs(60);
    println!("| agent configuration | RSS started (anonymous) | RSS working (anonymous) | this part adds, working |");
    println!("| --- | --- | --- | --- |");
    let mut before: Option<u64> = None;
    for (i, (name, cfg)) in steps.iter().enumerate() {
        let file = dir.join(format!("agent-{i}.yaml"));
        std::fs::write(&file, format!("interval: 10s\n{cfg}")).unwrap();
        let (agent, addr) = common::spawn_agent(&file);
        let pid = agent.id();
        let mut one = Children(vec![agent]);
        let t0 = std::time::Instant::now();
        std::thread::sleep(settle);
        let (rss0, anon0) = sample(pid, Some(&addr));
        std::thread::sleep(working.saturating_sub(t0.elapsed()));
        let (rss, anon) = sample(pid, Some(&addr));
        drop(one.0.pop().map(|mut c| {
            let _ = c.kill();
            c.wait()
        }));
        let adds = before.map_or_else(|| "—".to_owned(), |b| format!("{:+.1} MiB", (rss as f64 - b as f64) / 1024.0));
        println!(
            "| {name} | {:.1} ({:.1}) MiB | {:.1} ({:.1}) MiB | {adds} |",
            mib(rss0 * 1024),
            mib(anon0 * 1024),
            mib(rss * 1024),
            mib(anon * 1024)
        );
        before = Some(rss);
    }
    std::thread::sleep(settle);
    let (ne_rss, ne_anon) = sample(ne_pid, Some(&ne_addr));
    println!(
        "| node_exporter, default collectors, same run | {:.1} ({:.1}) MiB | | |",
        mib(ne_rss * 1024),
        mib(ne_anon * 1024)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A directory of the bench's own (`vigil-NAME-PID` under the temporary directory) and in it
/// the config of an agent with every event source on, the default watched trees, snapshots
/// every 10 s and `/metrics` on a free port; only the state directory is the bench's own.
fn every_source_on(name: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("vigil-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = common::agent_config(&dir, "");
    (dir, cfg)
}

/// RSS and of it the anonymous memory of `pid`, KiB: the median of 5 samples a second apart,
/// `/metrics` scraped at each.
fn settled(pid: u32, addr: &str) -> (u64, u64) {
    let (mut rss, mut anon) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        scrape(addr);
        rss.push(common::status_kib(pid, "VmRSS:"));
        anon.push(common::status_kib(pid, "RssAnon:"));
        std::thread::sleep(Duration::from_secs(1));
    }
    rss.sort_unstable();
    anon.sort_unstable();
    (rss[rss.len() / 2], anon[anon.len() / 2])
}

/// The agent's memory through a host's process churn, as on a build host: every event source
/// on (run it as root, or the process source polls /proc instead of following the process
/// connector), sampled once working (60 s after start, past the start-up code's release), then
/// `VIGIL_CHURN_PROCESSES` (default 100,000) short-lived processes (`true`, 16 started at a
/// time and each reaped), then 20 s of settling and a second sample, and a third a minute after
/// the burst (past the 30 s for which the handover keeps the stamps of handled messages).
fn churn() {
    let n: usize = std::env::var("VIGIL_CHURN_PROCESSES").ok().and_then(|v| v.parse().ok()).unwrap_or(100_000);
    let (dir, cfg) = every_source_on("churn");
    let (agent, addr) = common::spawn_agent(&cfg);
    let pid = agent.id();
    let _guard = Children(vec![agent]);
    std::thread::sleep(Duration::from_secs(60));
    let (rss0, anon0) = settled(pid, &addr);
    let t0 = Instant::now();
    let true_bin = ["/usr/bin/true", "/bin/true"].into_iter().find(|b| std::path::Path::new(b).exists()).unwrap();
    for _ in 0..n.div_ceil(16) {
        let batch: Vec<_> = (0..16).map(|_| Command::new(true_bin).spawn().unwrap()).collect();
        for mut c in batch {
            c.wait().unwrap();
        }
    }
    let took = t0.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_secs(20));
    let (rss1, anon1) = settled(pid, &addr);
    // Past the handover's window of handled messages (30 s), which a burst fills.
    std::thread::sleep(Duration::from_secs(40));
    let (rss2, anon2) = settled(pid, &addr);
    println!(
        "| agent, every source on | working (anonymous) | after {n} processes in {took:.0} s (anonymous) | a minute later (anonymous) |"
    );
    println!("| --- | --- | --- | --- |");
    println!(
        "| {} | {:.1} ({:.2}) MiB | {:.1} ({:.2}) MiB | {:.1} ({:.2}) MiB |",
        std::env::var("VIGIL_BENCH_AGENT").unwrap_or_else(|_| "this build".into()),
        mib(rss0 * 1024),
        mib(anon0 * 1024),
        mib(rss1 * 1024),
        mib(anon1 * 1024),
        mib(rss2 * 1024),
        mib(anon2 * 1024)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

fn main() {
    if std::env::args().skip(1).any(|a| a == "parts") {
        return parts();
    }
    if std::env::args().skip(1).any(|a| a == "churn") {
        return churn();
    }
    let secs: u64 = std::env::var("VIGIL_SOAK_SECS").ok().and_then(|v| v.parse().ok()).unwrap_or(600);
    let target_procs = 400;
    let have = procfs::process::all_processes().unwrap().count();
    let mut guard = Children::default();
    for _ in have..target_procs {
        guard.0.push(Command::new("sleep").arg((secs + 600).to_string()).spawn().unwrap());
    }

    let (dir, cfg) = every_source_on("soak");
    let (agent, agent_addr) = common::spawn_agent(&cfg);
    let agent_pid = agent.id();
    guard.0.push(agent);

    let (ne_addr, ne_pid) = node_exporter(&mut guard);
    wait_up(&agent_addr);
    wait_up(&ne_addr);
    let procs = procfs::process::all_processes().unwrap().count();
    eprintln!(
        "soak: {secs} s, {procs} processes, agent {agent_addr} (pid {agent_pid}), node_exporter {ne_addr} (pid {ne_pid})"
    );

    // Warm-up: the first minute (or tenth of the run) is not "steady".
    let warm = Duration::from_secs((secs / 10).clamp(10, 60));
    let start = Instant::now();
    let (mut a_cpu0, mut n_cpu0) = (proc_stat(agent_pid).0, proc_stat(ne_pid).0);
    let mut measured_from = start;
    let mut warmed = false;
    let (mut a_rss, mut n_rss) = (Vec::new(), Vec::new());
    let mut scrapes = 0u64;
    let max_rounds = secs / 10 + 2;
    for _ in 0..max_rounds {
        if start.elapsed() >= Duration::from_secs(secs) {
            break;
        }
        let round = Instant::now();
        scrape(&agent_addr);
        scrape(&ne_addr);
        scrapes += 1;
        if !warmed && start.elapsed() >= warm {
            warmed = true;
            a_cpu0 = proc_stat(agent_pid).0;
            n_cpu0 = proc_stat(ne_pid).0;
            measured_from = Instant::now();
        }
        if warmed {
            a_rss.push(proc_stat(agent_pid).1);
            n_rss.push(proc_stat(ne_pid).1);
        }
        std::thread::sleep(Duration::from_secs(10).saturating_sub(round.elapsed()));
    }
    let span = measured_from.elapsed().as_secs_f64();
    let a_share = (proc_stat(agent_pid).0 - a_cpu0) / span * 100.0;
    let n_share = (proc_stat(ne_pid).0 - n_cpu0) / span * 100.0;

    // CPU per scrape: 200 back-to-back scrapes.
    let per_scrape = |pid: u32, addr: &str| {
        let c0 = proc_stat(pid).0;
        let mut bytes = 0;
        for _ in 0..200 {
            bytes = scrape(addr);
        }
        ((proc_stat(pid).0 - c0) / 200.0 * 1000.0, bytes)
    };
    let (a_scrape, a_bytes) = per_scrape(agent_pid, &agent_addr);
    let (n_scrape, n_bytes) = per_scrape(ne_pid, &ne_addr);

    let stats = |v: &mut Vec<u64>| {
        v.sort_unstable();
        if v.is_empty() { (0.0, 0.0, 0.0) } else { (mib(v[0]), mib(v[v.len() / 2]), mib(v[v.len() - 1])) }
    };
    let (a_min, a_med, a_max) = stats(&mut a_rss);
    let (n_min, n_med, n_max) = stats(&mut n_rss);
    println!(
        "| measure ({secs} s run, {procs} processes, scraped every 10 s, {scrapes} scrapes each) | vigil-agent | node_exporter |"
    );
    println!("| --- | --- | --- |");
    println!(
        "| RSS after warm-up, min / median / max (MiB) | {a_min:.1} / {a_med:.1} / {a_max:.1} | {n_min:.1} / {n_med:.1} / {n_max:.1} |"
    );
    println!("| CPU, % of one core over {span:.0} s | {a_share:.3} | {n_share:.3} |");
    println!("| CPU per /metrics scrape (ms, mean of 200) | {a_scrape:.2} | {n_scrape:.2} |");
    println!("| /metrics size (bytes) | {a_bytes} | {n_bytes} |");
    std::fs::remove_dir_all(&dir).ok();
}
