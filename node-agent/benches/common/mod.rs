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

/// Starts `vigil-agent run --no-report -c config` (events on stdout to /dev/null), reads the
/// metrics address it announces, and keeps echoing what it says on stderr afterwards (its
/// event sources' states). Returns the child and the `host:port` of its `/metrics`.
#[allow(dead_code)] // the snapshot bench does not start the agent
pub fn spawn_agent(config: &Path) -> (Child, String) {
    let mut agent = Command::new(env!("CARGO_BIN_EXE_vigil-agent"))
        .args(["run", "--no-report", "-c"])
        .arg(config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    let mut stderr = BufReader::new(agent.stderr.take().unwrap());
    stderr.read_line(&mut line).unwrap();
    std::thread::spawn(move || {
        for l in stderr.lines().map_while(Result::ok) {
            eprintln!("  agent: {l}");
        }
    });
    let addr = line.trim().rsplit_once("http://").unwrap().1.trim_end_matches("/metrics").to_owned();
    (agent, addr)
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
