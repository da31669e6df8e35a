#![allow(dead_code)] // each test crate uses a part of it
//! The peers of the alert tests, on 127.0.0.1 only:
//!
//! - [`Capture`], a local HTTP capture server standing in for the SaaS endpoints (Slack,
//!   Discord, Telegram, webhooks) that this machine cannot reach: it records every POST (path,
//!   JSON body, `Authorization` header) and answers with a scripted status, then with the
//!   current one (200 unless set), adding `Retry-After: 2` to a 429. It serves at most 10,000
//!   requests and ends with the test process.
//! - [`Alertmanager`], Debian's prometheus-alertmanager started on a free port.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

/// One request the server got.
#[derive(Clone, Debug)]
pub struct Captured {
    /// Request path.
    pub path: String,
    /// JSON body (`null` when not JSON).
    pub body: Value,
    /// The `Authorization` header.
    pub auth: Option<String>,
    /// The status it was answered with.
    pub status: u16,
}

/// A running capture server.
pub struct Capture {
    /// `127.0.0.1:port`.
    pub addr: String,
    seen: Arc<Mutex<Vec<Captured>>>,
    status: Arc<AtomicU16>,
    delay_ms: Arc<AtomicU64>,
}

impl Capture {
    /// A server answering `script` first, then the current status.
    pub fn with_script(script: Vec<u16>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let status = Arc::new(AtomicU16::new(200));
        let delay_ms = Arc::new(AtomicU64::new(0));
        let (log, current, delay) = (seen.clone(), status.clone(), delay_ms.clone());
        std::thread::spawn(move || {
            let mut script: VecDeque<u16> = script.into();
            for stream in listener.incoming().take(10_000) {
                let Ok(mut s) = stream else { continue };
                s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                let Some((head, body)) = read_request(&mut s) else { continue };
                let path = head.split_whitespace().nth(1).unwrap_or("").to_owned();
                let auth = head.lines().find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("authorization").then(|| v.trim().to_owned())
                });
                std::thread::sleep(Duration::from_millis(delay.load(Ordering::SeqCst)));
                let status = script.pop_front().unwrap_or_else(|| current.load(Ordering::SeqCst));
                let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
                log.lock().unwrap().push(Captured { path, body, auth, status });
                let extra = if status == 429 { "Retry-After: 2\r\n" } else { "" };
                let _ = write!(s, "HTTP/1.1 {status} X\r\n{extra}Content-Length: 2\r\nConnection: close\r\n\r\nok");
            }
        });
        Self { addr, seen, status, delay_ms }
    }

    /// A server answering 200.
    pub fn start() -> Self {
        Self::with_script(Vec::new())
    }

    /// `http://127.0.0.1:port`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Answers `status` from now on.
    pub fn set_status(&self, status: u16) {
        self.status.store(status, Ordering::SeqCst);
    }

    /// Waits this long before answering each request.
    pub fn set_delay(&self, d: Duration) {
        self.delay_ms.store(d.as_millis() as u64, Ordering::SeqCst);
    }

    /// What it got so far.
    pub fn requests(&self) -> Vec<Captured> {
        self.seen.lock().unwrap().clone()
    }

    /// Waits (at most `timeout`) until `done` holds for what it got; returns that.
    pub fn wait_until(&self, timeout: Duration, done: impl Fn(&[Captured]) -> bool) -> Vec<Captured> {
        let deadline = Instant::now() + timeout;
        loop {
            let seen = self.requests();
            if done(&seen) {
                return seen;
            }
            assert!(Instant::now() < deadline, "timed out after {timeout:?}; got {} requests: {seen:#?}", seen.len());
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn read_request(s: &mut std::net::TcpStream) -> Option<(String, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let n = s.read(&mut chunk).unwrap_or(0);
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else { continue };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        let len: usize = head
            .lines()
            .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap_or(0)))
            .unwrap_or(0);
        if buf.len() >= end + 4 + len {
            return Some((head, buf[end + 4..end + 4 + len].to_vec()));
        }
    }
}

/// A child process killed when dropped.
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// `GET path` on `addr`: the status and the body (the JSON between the first `[`/`{` and the
/// last `]`/`}`, so a chunked body reads as its JSON).
pub fn http_get(addr: &str, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").unwrap();
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    let status = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    let start = body.find(['[', '{']).unwrap_or(0);
    let end = body.rfind([']', '}']).map_or(body.len(), |e| e + 1);
    (status, body[start..end].to_owned())
}

/// Debian's Alertmanager, grouping by `alertname` with 1 s waits, ready to take alerts.
pub struct Alertmanager {
    /// `127.0.0.1:port`.
    pub addr: String,
    _child: Killed,
}

impl Alertmanager {
    /// Starts it with its data under `dir` and waits (at most 30 s) until it is ready.
    pub fn start(dir: &Path) -> Self {
        let bin = ["prometheus-alertmanager", "/usr/bin/prometheus-alertmanager", "alertmanager"]
            .into_iter()
            .find(|b| Command::new(b).arg("--version").output().is_ok())
            .expect("Alertmanager (Debian package prometheus-alertmanager; `make test` installs it)");
        let config = dir.join("alertmanager.yml");
        std::fs::write(
            &config,
            "route:\n  receiver: 'null'\n  group_by: [alertname]\n  group_wait: 1s\n  group_interval: 1s\nreceivers:\n  - name: 'null'\n",
        )
        .unwrap();
        let addr = format!("127.0.0.1:{}", free_port());
        let child = Killed(
            Command::new(bin)
                .arg(format!("--config.file={}", config.display()))
                .arg(format!("--storage.path={}", dir.join("alertmanager-data").display()))
                .arg(format!("--web.listen-address={addr}"))
                .arg("--cluster.listen-address=")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(&addr).is_err() || http_get(&addr, "/-/ready").0 != 200 {
            assert!(Instant::now() < deadline, "Alertmanager never became ready");
            std::thread::sleep(Duration::from_millis(100));
        }
        Self { addr, _child: child }
    }

    /// The active alerts, through the v2 API.
    pub fn active_alerts(&self) -> Vec<Value> {
        serde_json::from_str(&http_get(&self.addr, "/api/v2/alerts?active=true").1).unwrap_or_default()
    }
}
