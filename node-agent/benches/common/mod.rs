//! Helpers shared by the benches.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// Child processes a bench started; all killed and reaped when it ends, however it ends.
#[derive(Default)]
pub struct Children(pub Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Writes `dir/agent.yaml`: snapshots every 10 s, `/metrics` on a free port of 127.0.0.1, the
/// state directory `dir/state`, and `events` (YAML lines under `events:`). Returns its path.
#[allow(dead_code)] // the snapshot bench does not start the agent
pub fn agent_config(dir: &Path, events: &str) -> std::path::PathBuf {
    let cfg = dir.join("agent.yaml");
    std::fs::write(
        &cfg,
        format!(
            "interval: 10s\nexporters:\n  prometheus:\n    enabled: true\n    listen: 127.0.0.1:0\nevents:\n  stateDir: {}\n{events}",
            dir.join("state").display()
        ),
    )
    .unwrap_or_else(|e| panic!("{}: {e}", cfg.display()));
    cfg
}

/// Starts `vigil-agent run --no-report -c config` (events on stdout to /dev/null), reads the
/// metrics address it announces (among its first 50 lines on stderr: the alert pipeline may
/// speak first), and keeps echoing what it says on stderr (its event sources' states, its
/// policy loads). Returns the child and the `host:port` of its `/metrics`. Also used by the
/// integration tests that run the agent.
#[allow(dead_code)] // the snapshot bench does not start the agent
pub fn spawn_agent(config: &Path) -> (Child, String) {
    // `VIGIL_BENCH_AGENT`: another build of the agent to measure (another profile, say).
    let binary = std::env::var("VIGIL_BENCH_AGENT").unwrap_or_else(|_| env!("CARGO_BIN_EXE_vigil-agent").to_owned());
    let mut agent = Command::new(binary)
        .args(["run", "--no-report", "-c"])
        .arg(config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(agent.stderr.take().unwrap());
    let mut addr = None;
    for _ in 0..50 {
        let mut line = String::new();
        if stderr.read_line(&mut line).unwrap_or(0) == 0 {
            break;
        }
        eprint!("  agent: {line}");
        if let Some((_, a)) = line.trim().rsplit_once("http://") {
            addr = Some(a.trim_end_matches("/metrics").to_owned());
            break;
        }
    }
    // Keep draining stderr so the agent never blocks on a full pipe.
    std::thread::spawn(move || {
        for l in stderr.lines().map_while(Result::ok) {
            eprintln!("  agent: {l}");
        }
    });
    (agent, addr.expect("the agent announces its metrics address"))
}

/// User plus system CPU seconds of `/proc/<pid>` (`self` for this process).
#[allow(dead_code)] // not every bench measures CPU
pub fn cpu_seconds(pid: &str) -> f64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let f: Vec<&str> = s.rsplit_once(") ").unwrap().1.split_whitespace().collect();
    (f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()) as f64 / procfs::ticks_per_second() as f64
}

/// A `kB` field (`VmRSS:`, `VmHWM:`) of `/proc/<pid>/status`, in KiB.
#[allow(dead_code)] // not every bench measures memory
pub fn status_kib(pid: u32, key: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status.lines().find(|l| l.starts_with(key)).unwrap().split_whitespace().nth(1).unwrap().parse().unwrap()
}
