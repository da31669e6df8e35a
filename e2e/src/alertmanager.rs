//! A real Alertmanager (Debian's `prometheus-alertmanager`) on an address the agents' pods can
//! reach, for the alert delivery test: started on `VIGIL_E2E_ALERTMANAGER_ADDRESS`
//! (`host:port` of this machine as the pods see it), stopped when dropped.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// The variable naming the address the test's Alertmanager listens on.
pub const ADDRESS_VAR: &str = "VIGIL_E2E_ALERTMANAGER_ADDRESS";

/// A running Alertmanager; killed when dropped.
pub struct Alertmanager {
    /// `host:port` it listens on.
    pub addr: String,
    child: Child,
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP/1.1 GET: the status and the body.
fn get(addr: &str, path: &str) -> Result<(u16, String)> {
    let mut s = TcpStream::connect(addr).with_context(|| format!("connecting to {addr}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")?;
    let mut resp = String::new();
    s.read_to_string(&mut resp)?;
    let status = resp.split_whitespace().nth(1).and_then(|c| c.parse().ok()).context("no HTTP status")?;
    let body = resp.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    // The v2 API answers in chunks; the bodies here are small JSON documents.
    let body = if resp.to_ascii_lowercase().contains("transfer-encoding: chunked") { dechunk(&body) } else { body };
    Ok((status, body))
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else { break };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

impl Alertmanager {
    /// Starts it on `addr` with its data under `dir`, and waits (at most 30 s) until ready.
    pub fn start(addr: &str, dir: &Path) -> Result<Self> {
        let bin = ["prometheus-alertmanager", "/usr/bin/prometheus-alertmanager", "alertmanager"]
            .into_iter()
            .find(|b| Command::new(b).arg("--version").output().is_ok())
            .context("Alertmanager (Debian package prometheus-alertmanager; `make test` installs it)")?;
        let config = dir.join("alertmanager.yml");
        std::fs::write(
            &config,
            "route:\n  receiver: 'null'\n  group_by: [alertname]\n  group_wait: 1s\n  group_interval: 1s\nreceivers:\n  - name: 'null'\n",
        )?;
        let child = Command::new(bin)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--cluster.listen-address=")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting Alertmanager")?;
        let am = Self { addr: addr.to_owned(), child };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !get(addr, "/-/ready").is_ok_and(|(s, _)| s == 200) {
            if Instant::now() > deadline {
                bail!("Alertmanager on {addr} never became ready");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(am)
    }

    /// The active alerts, through the v2 API.
    pub fn active_alerts(&self) -> Result<Vec<serde_json::Value>> {
        let (status, body) = get(&self.addr, "/api/v2/alerts?active=true&silenced=false&inhibited=false")?;
        if status != 200 {
            bail!("Alertmanager answered {status}: {body}");
        }
        serde_json::from_str(&body).with_context(|| format!("Alertmanager's alerts: {body}"))
    }
}
