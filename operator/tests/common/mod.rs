//! Debian's Prometheus for the operator's tests: started on a free port of 127.0.0.1 with a
//! config of the test's, in a directory of its own, and killed when dropped (however the test
//! ends).

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)] // each test uses part of it

use std::path::Path;
use std::process::{Child, Command, Stdio};

/// A running Prometheus.
pub struct Prometheus {
    child: Child,
    /// Its address, `127.0.0.1:PORT`.
    pub web: String,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    /// Its base URL, `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.web)
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port of 127.0.0.1 free now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Starts Prometheus scraping and evaluating every second, with `rules` loaded and the
/// `scrape_configs` list `scrape` writes for its own address (`127.0.0.1:PORT`).
pub fn start(rules: Option<&Path>, scrape: impl FnOnce(&str) -> String) -> Prometheus {
    let dir = tempfile::tempdir().unwrap();
    let web = format!("127.0.0.1:{}", free_port());
    let rule_files = rules.map(|r| format!("rule_files: [{}]\n", r.display())).unwrap_or_default();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\n{rule_files}scrape_configs:\n{}",
            scrape(&web)
        ),
    )
    .unwrap();
    let child = Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
        .arg(format!("--web.listen-address={web}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("Debian's prometheus (`make test-deps` installs it)");
    Prometheus { child, web, _dir: dir }
}
