//! The alert pipeline against real peers and real failures: a local capture server standing in
//! for the webhook services (down, refusing, slow), a real SMTP server with STARTTLS (aiosmtpd
//! from PyPI, in .venv), Debian's Alertmanager and Prometheus (which scrapes the agent and runs
//! the shipped alert rules), the agent binary killed with SIGKILL mid-way.
//! Every wait is bounded; every server binds 127.0.0.1.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use vigil_agent::alert::Alert;
use vigil_agent::alert::deliver::{Delivery, DeliveryConfig};
use vigil_agent::alert::email::EmailConfig;
use vigil_agent::alert::policy::load;
use vigil_agent::alert::route::Notification;
use vigil_agent::alert::send::{Backoff, Outcome};
use vigil_agent::alert::spool::{Limits, Spool};
use vigil_agent::events::Severity;

#[path = "../benches/common/mod.rs"]
mod bench_common;
mod peers;
use peers::{Alertmanager, Capture, Captured, Killed, free_port, http_get};

fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A policy directory and a secrets directory holding `secrets` (name, key, value).
fn policy_dirs(root: &Path, policy: &str, secrets: &[(&str, &str, String)]) -> (PathBuf, PathBuf) {
    let policies = root.join("policies");
    std::fs::create_dir_all(&policies).unwrap();
    std::fs::write(policies.join("policy.yaml"), policy).unwrap();
    let dir = root.join("secrets");
    for (name, key, value) in secrets {
        std::fs::create_dir_all(dir.join(name)).unwrap();
        std::fs::write(dir.join(name).join(key), value).unwrap();
    }
    (policies, dir)
}

fn notification(receiver: &str, name: &str, group: &str) -> Notification {
    let a = Alert::new(name, "node-a", Severity::Warning, jiff::Timestamp::now()).label("group", group);
    Notification {
        receiver: receiver.into(),
        route: "all".into(),
        group: BTreeMap::from([("group".to_owned(), group.to_owned())]),
        alerts: vec![a],
        suppressed: 0,
        created: jiff::Timestamp::now(),
        note: None,
        active_until: None,
    }
}

fn fast_delivery() -> DeliveryConfig {
    DeliveryConfig {
        timeout: Duration::from_secs(2),
        backoff: Backoff { ladder: vec![Duration::from_millis(100)], jitter: 0.0 },
        give_up_after: Duration::from_secs(3600),
        failing_after: Duration::from_millis(300),
    }
}

fn alert_names(c: &[Captured], status: u16) -> Vec<String> {
    c.iter()
        .filter(|r| r.status == status)
        .flat_map(|r| r.body["alerts"].as_array().cloned().unwrap_or_default())
        .map(|a| a["labels"]["alertname"].as_str().unwrap_or_default().to_owned())
        .collect()
}

const TWO_RECEIVERS: &str = "
apiVersion: vigil.dev/v1alpha1
kind: AlertPolicy
metadata: {name: p, namespace: ops}
spec:
  receivers:
    - name: hook
      webhook: {url: {name: alerting, key: hook-url}, bearerToken: {name: alerting, key: token}}
    - name: fallback
      webhook: {url: {name: alerting, key: fallback-url}}
  fallbackReceiver: fallback
";

/// [`TWO_RECEIVERS`] with its secrets: the two URLs and the hook's bearer token.
fn two_receivers(root: &Path, hook_url: String, token: String, fallback_url: String) -> (PathBuf, PathBuf) {
    let secrets =
        [("alerting", "hook-url", hook_url), ("alerting", "token", token), ("alerting", "fallback-url", fallback_url)];
    policy_dirs(root, TWO_RECEIVERS, &secrets)
}

#[test]
fn a_receiver_down_for_a_while_then_up_gets_everything_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let hook = Capture::start();
    hook.set_status(503);
    let fallback = Capture::start();
    let (policies, secrets) = two_receivers(
        dir.path(),
        format!("{}/hook", hook.url()),
        "s3cret\n".into(),
        format!("{}/fallback", fallback.url()),
    );
    let set = Arc::new(load(&[policies], &secrets, None).unwrap());
    let spool = Arc::new(Spool::open(&dir.path().join("spool"), Limits::default()).unwrap());
    let config = DeliveryConfig { failing_after: Duration::from_secs(3600), ..fast_delivery() };
    let delivery = Delivery::new(spool.clone(), config, "node-a");
    for i in 0..20 {
        spool.enqueue(notification("ops/p/hook", &format!("Seq{i:02}"), &format!("g{}", i % 2))).unwrap();
    }
    delivery.set_policies(set);
    // Down: the head is retried and nothing behind it overtakes it.
    hook.wait_until(Duration::from_secs(10), |r| r.len() >= 4);
    assert!(alert_names(&hook.requests(), 503).iter().all(|n| n == "Seq00"));
    hook.set_status(200);
    let got = hook.wait_until(Duration::from_secs(20), |r| r.iter().filter(|c| c.status == 200).count() >= 20);
    let delivered = alert_names(&got, 200);
    let expected: Vec<String> = (0..20).map(|i| format!("Seq{i:02}")).collect();
    assert_eq!(delivered, expected, "everything, in the order it was made");
    assert!(got.iter().all(|c| c.auth.as_deref() == Some("Bearer s3cret")), "the bearer token from the secret");
    wait_for("an empty spool", Duration::from_secs(5), || spool.pending().0 == 0);
    let stats = delivery.shared.stats();
    assert_eq!(stats["ops/p/hook"].delivered, 20);
    assert!(stats["ops/p/hook"].failed_attempts >= 4);
    assert!(fallback.requests().is_empty(), "nothing failed for good");
    delivery.stop();
}

#[test]
fn refused_notifications_go_to_the_dead_letters_and_the_fallback_and_replay() {
    let dir = tempfile::tempdir().unwrap();
    let hook = Capture::with_script(vec![400]);
    let fallback = Capture::start();
    let (policies, secrets) =
        two_receivers(dir.path(), format!("{}/hook", hook.url()), "t".into(), format!("{}/fallback", fallback.url()));
    let set = Arc::new(load(&[policies], &secrets, None).unwrap());
    let spool_dir = dir.path().join("spool");
    let spool = Arc::new(Spool::open(&spool_dir, Limits::default()).unwrap());
    let delivery = Delivery::new(spool.clone(), fast_delivery(), "node-a");
    delivery.set_policies(set);
    let refused = spool.enqueue(notification("ops/p/hook", "Refused", "g")).unwrap();

    // 400: dead-lettered at once, and a copy with the reason goes to the fallback receiver.
    let fb = fallback.wait_until(Duration::from_secs(10), |r| !r.is_empty());
    assert_eq!(alert_names(&fb, 200), ["Refused"]);
    assert_eq!(fb[0].body["note"], "Could not be delivered to ops/p/hook: HTTP 400; not retried");
    wait_for("the dead letter", Duration::from_secs(5), || spool.dead().0 == 1);

    // Down for longer than failingAfter: the agent's own alert goes to the fallback, and is
    // resolved once deliveries work again.
    hook.set_status(503);
    spool.enqueue(notification("ops/p/hook", "Later", "g")).unwrap();
    let fb = fallback
        .wait_until(Duration::from_secs(10), |r| alert_names(r, 200).contains(&"VigilAlertDeliveryFailing".to_owned()));
    let failing =
        fb.iter().find(|c| c.body["alerts"][0]["labels"]["alertname"] == "VigilAlertDeliveryFailing").unwrap();
    assert_eq!(failing.body["status"], "firing");
    assert_eq!(failing.body["alerts"][0]["labels"]["receiver"], "ops/p/hook");
    assert!(failing.body["alerts"][0]["annotations"]["summary"].as_str().unwrap().contains("HTTP 503"));
    hook.set_status(200);
    let fb = fallback.wait_until(Duration::from_secs(10), |r| {
        r.iter().any(|c| {
            c.body["alerts"][0]["labels"]["alertname"] == "VigilAlertDeliveryFailing" && c.body["status"] == "resolved"
        })
    });
    assert_eq!(fb.len(), 3);
    hook.wait_until(Duration::from_secs(10), |r| alert_names(r, 200) == ["Later"]);

    // The dead letter through the CLI: listed, replayed, delivered.
    let agent = env!("CARGO_BIN_EXE_vigil-agent");
    let out = Command::new(agent).args(["dlq", "list", "--json", "--spool"]).arg(&spool_dir).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let listed: Vec<Value> =
        String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["seq"], refused);
    assert_eq!(listed[0]["lastError"], "HTTP 400; not retried");
    let text = Command::new(agent).args(["dlq", "list", "--spool"]).arg(&spool_dir).output().unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.starts_with("1 dead letter in "), "{text}");
    assert!(text.contains("ops/p/hook") && text.contains("Refused"), "{text}");
    let bad = Command::new(agent).args(["dlq", "replay", "999", "--spool"]).arg(&spool_dir).output().unwrap();
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("no dead letter with sequence number 999"));
    let replay = Command::new(agent).args(["dlq", "replay", "--all", "--spool"]).arg(&spool_dir).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&replay.stdout), "1 dead letter put back for delivery\n");
    delivery.rescan();
    hook.wait_until(Duration::from_secs(10), |r| alert_names(r, 200) == ["Later", "Refused"]);
    wait_for("no dead letters", Duration::from_secs(5), || {
        vigil_agent::alert::spool::dead_entries(&spool_dir).unwrap().is_empty()
    });
    delivery.stop();
}

#[test]
fn check_policy_says_what_loads_and_names_what_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let (policies, secrets) =
        two_receivers(dir.path(), "http://127.0.0.1:9/h".into(), "t".into(), "http://127.0.0.1:9/f".into());
    let agent = env!("CARGO_BIN_EXE_vigil-agent");
    let ok =
        Command::new(agent).arg("check-policy").arg(&policies).arg("--secrets-dir").arg(&secrets).output().unwrap();
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    assert_eq!(String::from_utf8_lossy(&ok.stdout), "ops/p: valid: 0 rules, 0 routes, 2 receivers, 0 silences\n");
    std::fs::remove_file(secrets.join("alerting/token")).unwrap();
    let bad =
        Command::new(agent).arg("check-policy").arg(&policies).arg("--secrets-dir").arg(&secrets).output().unwrap();
    assert_eq!(bad.status.code(), Some(2));
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        err.starts_with("vigil-agent: AlertPolicy ops/p: spec.receivers[0] (hook): secret alerting/token: reading "),
        "{err}"
    );
    // check-config checks the policies the config names.
    let cfg = write_config(dir.path(), &policies, &secrets);
    let out = Command::new(agent).arg("check-config").arg(&cfg).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("secret alerting/token"));
}

#[test]
fn watch_tries_a_policy_on_this_host_and_prints_its_alerts() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("try.yaml");
    // Receivers whose secrets do not exist here: a dry run does not read them.
    std::fs::write(
        &file,
        "rules:\n  - name: HostUp\n    metric: {name: vigil_node_uptime_seconds}\n    detector: {threshold: {above: 0}}\n    severity: info\n  - name: OddLoad\n    metric: {name: vigil_node_load1}\n    detector: {anomaly: {}}\nroutes:\n  - {name: all, receivers: [x]}\nreceivers:\n  - {name: x, webhook: {url: {name: absent, key: url}}}\n",
    )
    .unwrap();
    let agent = env!("CARGO_BIN_EXE_vigil-agent");
    let out = Command::new(agent)
        .args(["watch", "--json", "--interval", "1s", "--count", "2", "--policy"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let alerts: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|v| v.get("alert").is_some())
        .collect();
    assert_eq!(alerts.len(), 1, "fired once, at the first snapshot: {alerts:?}");
    assert_eq!(alerts[0]["status"], "firing");
    assert_eq!(alerts[0]["alert"]["labels"]["alertname"], "HostUp");
    assert_eq!(alerts[0]["alert"]["labels"]["severity"], "info");
    // A rule that cannot judge yet says so once, with how far it is, not at every scan.
    let learning: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|v| v.get("status").is_some_and(|s| s == "learning" || s == "judging"))
        .collect();
    assert_eq!(learning.len(), 1, "{learning:?}");
    assert_eq!(learning[0]["status"], "learning");
    assert_eq!(learning[0]["series"]["rule"], "OddLoad");
    assert_eq!((learning[0]["have"].as_u64(), learning[0]["need"].as_u64()), (Some(1), Some(32)));
    assert_eq!(learning[0]["unit"], "samples");
    let text = Command::new(agent)
        .args(["watch", "--compact", "--no-color", "--interval", "1s", "--count", "1", "--policy"])
        .arg(&file)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.lines().any(|l| l.contains(" FIRING   HostUp (info) — ")), "{text}");
    assert!(text.lines().any(|l| l.ends_with("/OddLoad: learning, 1 of 32 samples before it judges")), "{text}");
    std::fs::write(&file, "rules:\n  - name: Bad\n    metric: {name: m}\n    detector: {}\n").unwrap();
    let bad = Command::new(agent).args(["watch", "--count", "1", "--policy"]).arg(&file).output().unwrap();
    assert_eq!(bad.status.code(), Some(1));
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("try.yaml, document 1") && err.contains("exactly one detector"), "{err}");
}

fn venv_python() -> PathBuf {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python");
    assert!(p.exists(), "{} missing: `make test` installs aiosmtpd there", p.display());
    p
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl").args(args).current_dir(dir).output().expect("openssl");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn email_goes_out_over_starttls_to_a_real_smtp_server() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // A private CA and a certificate for localhost signed by it.
    openssl(
        d,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=vigil-test-ca",
        ],
    );
    openssl(
        d,
        &["req", "-newkey", "rsa:2048", "-nodes", "-keyout", "leaf.key", "-out", "leaf.csr", "-subj", "/CN=localhost"],
    );
    std::fs::write(
        d.join("ext"),
        "subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(
        d,
        &[
            "x509",
            "-req",
            "-in",
            "leaf.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "leaf.pem",
            "-days",
            "2",
            "-extfile",
            "ext",
        ],
    );
    let port = free_port();
    let maildir = d.join("mail");
    let _smtp = Killed(
        Command::new(venv_python())
            .args(["-m", "aiosmtpd", "-n", "-l", &format!("127.0.0.1:{port}"), "--tlscert"])
            .arg(d.join("leaf.pem"))
            .arg("--tlskey")
            .arg(d.join("leaf.key"))
            .args(["-c", "aiosmtpd.handlers.Mailbox"])
            .arg(&maildir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for("the SMTP server", Duration::from_secs(20), || TcpStream::connect(("127.0.0.1", port)).is_ok());
    let mut a =
        Alert::new("DiskFull", "node-a", Severity::Critical, jiff::Timestamp::now()).label("mountpoint", "/var");
    a.annotations.insert("summary".into(), "/var is 97% full".into());
    let config = EmailConfig {
        smarthost: format!("localhost:{port}"),
        from: "Vigil <vigil@example.test>".into(),
        to: vec!["oncall@example.test".into(), "ops@example.test".into()],
        require_tls: true,
        username: None,
        password: None,
        ca_pem: Some(std::fs::read_to_string(d.join("ca.pem")).unwrap()),
    };
    let outcome =
        config.send(std::slice::from_ref(&a), Some("2 earlier notifications suppressed"), Duration::from_secs(10));
    assert_eq!(outcome, Outcome::Delivered);
    let new = maildir.join("new");
    wait_for("the message in the mailbox", Duration::from_secs(10), || {
        std::fs::read_dir(&new).is_ok_and(|mut r| r.next().is_some())
    });
    let file = std::fs::read_dir(&new).unwrap().next().unwrap().unwrap().path();
    let mut msg = String::new();
    std::fs::File::open(file).unwrap().read_to_string(&mut msg).unwrap();
    assert!(msg.contains("Subject: [FIRING] DiskFull on node-a (critical)"), "{msg}");
    assert!(msg.contains("To: oncall@example.test, ops@example.test"), "{msg}");
    assert!(msg.contains("From: Vigil <vigil@example.test>"), "{msg}");
    assert!(msg.contains("2 earlier notifications suppressed"), "{msg}");
    assert!(msg.contains(&format!("fingerprint {}", a.fingerprint())), "{msg}");

    // Without the CA the server's certificate is not trusted, and STARTTLS is required:
    // nothing goes out in the clear, and the attempt is retried later (not dropped).
    let untrusted = EmailConfig { ca_pem: None, ..config.clone() };
    assert!(matches!(untrusted.send(std::slice::from_ref(&a), None, Duration::from_secs(10)), Outcome::Retry { .. }));

    // A server that requires login after STARTTLS: the right password is accepted, a wrong
    // one is refused for good (535), not retried.
    let auth_port = free_port();
    let script = format!(
        "import sys, ssl\n\
         from aiosmtpd.controller import Controller\n\
         from aiosmtpd.handlers import Mailbox\n\
         from aiosmtpd.smtp import AuthResult, LoginPassword\n\
         def auth(server, session, envelope, mechanism, data):\n\
         \x20   ok = isinstance(data, LoginPassword) and data.login == b'vigil' and data.password == b's3cret'\n\
         \x20   return AuthResult(success=ok, handled=False)\n\
         ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)\n\
         ctx.load_cert_chain({cert:?}, {key:?})\n\
         c = Controller(Mailbox({mail:?}), hostname='127.0.0.1', port={auth_port}, tls_context=ctx, require_starttls=True, authenticator=auth, auth_required=True)\n\
         c.start()\n\
         sys.stdin.read()\n",
        cert = d.join("leaf.pem").display().to_string(),
        key = d.join("leaf.key").display().to_string(),
        mail = d.join("authmail").display().to_string(),
    );
    let _auth_smtp = Killed(
        Command::new(venv_python())
            .args(["-c", &script])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for("the SMTP server with login", Duration::from_secs(20), || {
        TcpStream::connect(("127.0.0.1", auth_port)).is_ok()
    });
    let login = EmailConfig {
        smarthost: format!("localhost:{auth_port}"),
        username: Some("vigil".into()),
        password: Some("s3cret".into()),
        ..config.clone()
    };
    assert_eq!(login.send(std::slice::from_ref(&a), None, Duration::from_secs(10)), Outcome::Delivered);
    let auth_new = d.join("authmail").join("new");
    wait_for("the logged-in message", Duration::from_secs(10), || {
        std::fs::read_dir(&auth_new).is_ok_and(|mut r| r.next().is_some())
    });
    let wrong = EmailConfig { password: Some("nope".into()), ..login };
    let refused = wrong.send(&[a], None, Duration::from_secs(10));
    assert!(matches!(&refused, Outcome::Rejected { why } if why.contains("535")), "{refused:?}");
}

fn write_config(dir: &Path, policies: &Path, secrets: &Path) -> PathBuf {
    let cfg = dir.join("agent.yaml");
    std::fs::write(
        &cfg,
        format!(
            "interval: 1s\nexporters:\n  prometheus:\n    enabled: true\n    listen: 127.0.0.1:0\nevents:\n  enabled: false\n  stateDir: {}\nalerts:\n  policies: [{}]\n  secretsDir: {}\n  reloadInterval: 1s\n  timeout: 2s\n  backoff: [200ms]\n",
            dir.join("state").display(),
            policies.display(),
            secrets.display()
        ),
    )
    .unwrap();
    cfg
}

/// Starts `vigil-agent run`; returns it (killed when dropped) and its metrics address.
fn start_agent(cfg: &Path) -> (bench_common::Children, String) {
    let (child, addr) = bench_common::spawn_agent(cfg);
    (bench_common::Children(vec![child]), addr)
}

fn metrics(addr: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nAccept: text/plain\r\nConnection: close\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    text
}

/// Groups the saved router state records as told to their receiver.
fn recorded_groups(spool: &Path) -> usize {
    let Ok(bytes) = std::fs::read(spool.join("router.json")) else { return 0 };
    let state: Value = serde_json::from_slice(&bytes).unwrap_or_default();
    state["groups"]
        .as_array()
        .map_or(0, |g| g.iter().filter(|e| e[1]["notified"].as_object().is_some_and(|m| !m.is_empty())).count())
}

/// The value of the sample `series` (name and labels as exposed) in `/metrics` text.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

fn pending_files(spool: &Path) -> usize {
    std::fs::read_dir(spool.join("pending"))
        .map_or(0, |r| r.filter_map(Result::ok).filter(|e| e.file_name().to_string_lossy().ends_with(".json")).count())
}

/// One alert per CPU and mode of this host (every counter is above -1), one group each.
const PER_CPU_MODE: &str = "
apiVersion: vigil.dev/v1alpha1
kind: AlertPolicy
metadata: {name: p, namespace: ops}
spec:
  rules:
    - name: CpuSeries
      metric: {name: vigil_node_cpu_seconds_total}
      detector: {threshold: {above: -1}}
  routes:
    - name: all
      receivers: [hook]
      groupBy: [alertname, cpu, mode]
      groupWait: 1s
      rateLimit: {minInterval: 1s, maxPerHour: 3600}
  receivers:
    - name: hook
      webhook: {url: {name: alerting, key: hook-url}}
";

/// The same receiver, no rules: what reaches the receiver after a restart comes from the spool.
const NO_RULES: &str = "
apiVersion: vigil.dev/v1alpha1
kind: AlertPolicy
metadata: {name: p, namespace: ops}
spec:
  receivers:
    - name: hook
      webhook: {url: {name: alerting, key: hook-url}}
";

/// Fingerprints of the alerts delivered (200) in notifications of `status`.
fn fingerprints(c: &[Captured], status: &str) -> std::collections::BTreeSet<String> {
    c.iter()
        .filter(|r| r.status == 200 && r.body["status"] == status)
        .flat_map(|r| r.body["alerts"].as_array().cloned().unwrap_or_default())
        .map(|a| a["fingerprint"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[test]
fn kill_9_while_spooled_and_while_delivering_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let hook = Capture::start();
    hook.set_status(503);
    let secrets = [("alerting", "hook-url", format!("{}/hook", hook.url()))];
    let (policies, secrets_dir) = policy_dirs(dir.path(), PER_CPU_MODE, &secrets);
    let cfg = write_config(dir.path(), &policies, &secrets_dir);
    let spool = dir.path().join("state/spool");
    let stat = std::fs::read_to_string("/proc/stat").unwrap();
    let cpus =
        stat.lines().filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit)).count();
    let expected = cpus * 8;

    // 1. The receiver is down: every notification waits in the spool. SIGKILL once the
    // router's record of them is saved too (a kill between the two makes the next start
    // send them again: at-least-once, counted below as more than the in-flight duplicates).
    let (agent, _) = start_agent(&cfg);
    wait_for("every notification spooled and recorded", Duration::from_secs(30), || {
        pending_files(&spool) >= expected && recorded_groups(&spool) >= expected
    });
    drop(agent);
    assert_eq!(pending_files(&spool), expected, "all still there after SIGKILL");
    let failed_before = hook.requests().len();
    assert!(failed_before >= 1);

    // 2. The receiver is back but slow; SIGKILL again after a few deliveries.
    std::fs::write(policies.join("policy.yaml"), NO_RULES).unwrap();
    hook.set_status(200);
    hook.set_delay(Duration::from_millis(300));
    let (agent, _) = start_agent(&cfg);
    hook.wait_until(Duration::from_secs(30), |r| r.iter().filter(|c| c.status == 200).count() >= 3);
    drop(agent);
    let partial = fingerprints(&hook.requests(), "firing");
    assert!(partial.len() < expected, "killed mid-way: {} of {expected} delivered", partial.len());

    // 3. Restarted: the rest arrives; every alert spooled in step 1 was delivered. The rule is
    // gone, so the agent, remembering what it told the receiver, resolves each alert too.
    hook.set_delay(Duration::ZERO);
    let (agent, addr) = start_agent(&cfg);
    let got = hook.wait_until(Duration::from_secs(30), |r| {
        fingerprints(r, "firing").len() >= expected && fingerprints(r, "resolved").len() >= expected
    });
    wait_for("an empty spool", Duration::from_secs(10), || pending_files(&spool) == 0);
    assert_eq!(fingerprints(&got, "firing").len(), expected);
    assert_eq!(fingerprints(&got, "resolved"), fingerprints(&got, "firing"));
    let firing = got.iter().filter(|c| c.status == 200 && c.body["status"] == "firing").count();
    assert!(firing <= expected + 2, "at most the requests in flight at a kill again: {firing}");
    let text = metrics(&addr);
    assert_eq!(sample(&text, "vigil_agent_alert_spool_entries"), Some(0.0), "{text}");
    drop(agent);
}

#[test]
fn policies_reload_keep_the_last_good_set_and_resolve_through_alertmanager() {
    let dir = tempfile::tempdir().unwrap();
    let am = Alertmanager::start(dir.path());
    let am_addr = am.addr.clone();
    // Two rules on the agent's own gauge of rules in force: with two rules, "more than 1.5
    // rules" fires.
    let policy = |rules: &[&str]| {
        let mut text = String::from(
            "apiVersion: vigil.dev/v1alpha1\nkind: AlertPolicy\nmetadata: {name: am, namespace: ops}\nspec:\n  rules:\n",
        );
        for r in rules {
            text.push_str(&format!("    - name: {r}\n      metric: {{name: vigil_agent_alert_rules}}\n      detector: {{threshold: {{above: 1.5}}}}\n      severity: critical\n"));
        }
        text.push_str(&format!("  routes:\n    - name: fleet\n      receivers: [am]\n      groupWait: 1s\n      groupInterval: 1s\n      rateLimit: {{minInterval: 1s}}\n  receivers:\n    - name: am\n      alertmanager: {{urls: ['http://{am_addr}']}}\n"));
        text
    };
    let (policies, secrets) = policy_dirs(dir.path(), &policy(&["TwoRules", "Other"]), &[]);
    let cfg = write_config(dir.path(), &policies, &secrets);
    let (_agent, addr) = start_agent(&cfg);
    let am_alerts = || am.active_alerts();
    let active = |name: &str| am_alerts().iter().any(|a| a["labels"]["alertname"] == name);
    wait_for("TwoRules firing in Alertmanager", Duration::from_secs(30), || active("TwoRules"));
    let fired = am_alerts();
    let a = fired.iter().find(|a| a["labels"]["alertname"] == "TwoRules").unwrap();
    assert_eq!(a["labels"]["severity"], "critical");
    assert_eq!(a["labels"]["detector"], "threshold");
    assert!(a["annotations"]["description"].as_str().unwrap().contains("1.5"), "{a}");

    // A broken policy is refused; the last good set keeps running and says so on /metrics.
    std::fs::write(policies.join("policy.yaml"), "apiVersion: vigil.dev/v1alpha1\nkind: AlertPolicy\nmetadata: {name: am, namespace: ops}\nspec:\n  rules:\n    - name: Broken\n      metric: {name: m}\n      detector: {}\n").unwrap();
    wait_for("the refusal on /metrics", Duration::from_secs(15), || {
        sample(&metrics(&addr), "vigil_agent_alert_policy_refused") == Some(1.0)
    });
    let text = metrics(&addr);
    assert_eq!(sample(&text, "vigil_agent_alert_rules"), Some(2.0), "the last good set: {text}");
    assert_eq!(sample(&text, "vigil_agent_alert_policy_reload_errors_total"), Some(1.0), "{text}");
    assert!(active("TwoRules"), "still firing under the last good set");
    // Put back as it was (the set in force): no longer refused.
    std::fs::write(policies.join("policy.yaml"), policy(&["TwoRules", "Other"])).unwrap();
    wait_for("the refusal cleared", Duration::from_secs(15), || {
        sample(&metrics(&addr), "vigil_agent_alert_policy_refused") == Some(0.0)
    });

    // A good policy without that rule: its alert resolves (the rule went), and so does the
    // other (one rule in force is not more than 1.5); Alertmanager takes both off.
    assert!(active("Other"));
    std::fs::write(policies.join("policy.yaml"), policy(&["Other"])).unwrap();
    wait_for("both resolved in Alertmanager", Duration::from_secs(30), || !active("TwoRules") && !active("Other"));
    let text = metrics(&addr);
    assert_eq!(sample(&text, "vigil_agent_alert_policy_refused"), Some(0.0), "{text}");
    assert_eq!(sample(&text, "vigil_agent_alerts_total{state=\"resolved\"}"), Some(2.0), "{text}");
}

fn metrics_as(addr: &str, accept: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nAccept: {accept}\r\nConnection: close\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default()
}

/// Sample names (labels cut off) and `# TYPE` names of an exposition.
fn exposed_names(text: &str) -> (std::collections::BTreeSet<String>, std::collections::BTreeSet<String>) {
    let mut samples = std::collections::BTreeSet::new();
    let mut types = std::collections::BTreeSet::new();
    for l in text.lines() {
        if let Some(t) = l.strip_prefix("# TYPE ") {
            types.insert(t.split(' ').next().unwrap().to_owned());
        } else if !l.starts_with('#') && !l.is_empty() {
            samples.insert(l.split(['{', ' ']).next().unwrap().to_owned());
        }
    }
    (samples, types)
}

#[test]
fn every_exported_name_is_in_the_metric_catalog_and_every_catalog_name_is_exported_and_prometheus_runs_the_shipped_rules_on_them()
 {
    use vigil_crds::metrics::{EXPORTED, Kind};
    let dir = tempfile::tempdir().unwrap();
    let hook = Capture::start();
    let policy = "apiVersion: vigil.dev/v1alpha1\nkind: AlertPolicy\nmetadata: {name: p, namespace: ops}\nspec:\n  rules:\n    - name: Load\n      metric: {name: vigil_node_load1}\n      detector: {threshold: {above: -1}}\n  routes:\n    - {name: all, receivers: [hook], groupWait: 0s}\n  receivers:\n    - name: hook\n      webhook: {url: {name: alerting, key: hook-url}}\n";
    let (policies, secrets_dir) =
        policy_dirs(dir.path(), policy, &[("alerting", "hook-url", format!("{}/hook", hook.url()))]);
    let cfg = dir.path().join("agent.yaml");
    std::fs::write(
        &cfg,
        format!(
            "interval: 1s\ncollectors: {{tcpStates: true}}\nexporters:\n  prometheus:\n    enabled: true\n    listen: 127.0.0.1:0\nevents:\n  stateDir: {}\nalerts:\n  policies: [{}]\n  secretsDir: {}\n",
            dir.path().join("state").display(),
            policies.display(),
            secrets_dir.display()
        ),
    )
    .unwrap();
    let (_agent, addr) = start_agent(&cfg);
    // Notification counters have a row once a receiver was used; utilisation needs two scans.
    hook.wait_until(Duration::from_secs(30), |r| !r.is_empty());
    wait_for("a notification counted and a second scan", Duration::from_secs(10), || {
        let m = metrics(&addr);
        m.contains("vigil_agent_alert_notifications_total{") && m.contains("vigil_node_cpu_utilization_ratio ")
    });

    let histogram_family =
        |n: &str| {
            EXPORTED.iter().filter(|m| m.kind == Kind::Histogram).map(|m| m.name()).find(|h| {
                ["_bucket", "_sum", "_count", "_created"].iter().any(|s| n.strip_suffix(s) == Some(h.as_str()))
            })
        };
    let catalog: std::collections::BTreeSet<String> = EXPORTED.iter().map(|m| m.name()).collect();
    // Families with no row until something happened that this run cannot cause on purpose
    // (a read error; an anomaly rule's series judging, after its 32-sample warm-up).
    let rowless = std::collections::BTreeSet::from([
        "vigil_agent_read_errors_total".to_owned(),
        "vigil_agent_alert_rule_score".to_owned(),
    ]);
    for (format, accept, family_name) in [
        ("classic", "text/plain", (|m: &vigil_crds::metrics::Metric| m.name()) as fn(&_) -> String),
        ("OpenMetrics", "application/openmetrics-text; version=1.0.0", |m| {
            m.name().strip_suffix("_total").map(str::to_owned).unwrap_or_else(|| m.name())
        }),
    ] {
        let text = metrics_as(&addr, accept);
        let (samples, types) = exposed_names(&text);
        let samples: std::collections::BTreeSet<String> =
            samples.into_iter().map(|n| histogram_family(&n).unwrap_or(n)).collect();
        let unknown: Vec<_> = samples.difference(&catalog).collect();
        assert!(unknown.is_empty(), "{format}: exported but not in the catalog: {unknown:?}");
        let missing: Vec<_> = catalog.difference(&samples).filter(|n| !rowless.contains(*n)).collect();
        assert!(missing.is_empty(), "{format}: in the catalog but not exported: {missing:?}");
        let families: std::collections::BTreeSet<String> =
            EXPORTED.iter().filter(|m| types.contains(&family_name(m))).map(|m| family_name(m)).collect();
        assert_eq!(types.len(), families.len(), "{format}: # TYPE names outside the catalog: {types:?}");
        // Help comes from the catalog too.
        for m in EXPORTED.iter().filter(|m| !rowless.contains(&m.name())) {
            assert!(
                text.contains(&format!("# HELP {} {}", family_name(m), m.help)),
                "{format}: help of {} is not the catalog's",
                m.name()
            );
        }
    }
    prometheus_runs_the_shipped_rules(&addr, dir.path());
}

/// Percent-encodes a query parameter.
fn encode(q: &str) -> String {
    q.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// The node the test's scrape labels the agent's series with, as the chart's PodMonitor does.
const DASHBOARD_NODE: &str = "test-node";

/// Debian's Prometheus on 127.0.0.1 scrapes the agent at `addr` every second with the
/// shipped rules file loaded: every rule evaluates without error on the real series, every
/// agent series a rule selects has data, and every query of the node dashboard the chart
/// ships (`files/grafana/vigil-node.json`, for the node the scrape names) returns data.
fn prometheus_runs_the_shipped_rules(addr: &str, dir: &Path) {
    let rules = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../charts/vigil/files/prometheus/vigil.rules.yaml");
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\nrule_files: [{}]\nscrape_configs:\n  - job_name: vigil-agent\n    static_configs: [{{targets: ['{addr}'], labels: {{node: {DASHBOARD_NODE}}}}}]\n",
            rules.display()
        ),
    )
    .unwrap();
    let web = format!("127.0.0.1:{}", free_port());
    let child = Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.tsdb.path={}", dir.join("tsdb").display()))
        .arg(format!("--web.listen-address={web}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("prometheus (Debian's prometheus package: `make test-deps` installs it)");
    let _prometheus = bench_common::Children(vec![child]);
    let query = |q: &str| -> Value {
        let (status, body) = http_get(&web, &format!("/api/v1/query?query={}", encode(q)));
        assert_eq!(status, 200, "{q}: {body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["status"], "success", "{q}: {body}");
        v["data"]["result"].clone()
    };
    // Prometheus listens before it is ready (it answers 503 while its TSDB opens): ask
    // /-/ready first.
    let up = |q: &str| {
        std::net::TcpStream::connect(&web).is_ok()
            && http_get(&web, "/-/ready").0 == 200
            && !query(q).as_array().unwrap().is_empty()
    };
    wait_for("Prometheus scraping the agent", Duration::from_secs(60), || up("vigil_agent_build_info"));
    let text = std::fs::read_to_string(&rules).unwrap();
    let file: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    let mut exprs = 0;
    for group in file["groups"].as_sequence().unwrap() {
        for rule in group["rules"].as_sequence().unwrap() {
            let expr = rule["expr"].as_str().unwrap();
            query(expr);
            exprs += 1;
            for token in
                expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).filter(|t| t.starts_with("vigil_agent_"))
            {
                assert!(!query(token).as_array().unwrap().is_empty(), "{token}: no data from the agent");
            }
        }
    }
    assert_eq!(exprs, 13);
    // The rule engine itself ran every rule on the scraped data: each one's health is ok.
    wait_for("every rule evaluated with health ok", Duration::from_secs(30), || {
        let (_, body) = http_get(&web, "/api/v1/rules");
        let v: Value = serde_json::from_str(&body).unwrap_or_default();
        let health: Vec<String> = v["data"]["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
            .map(|r| r["health"].as_str().unwrap_or("").to_owned())
            .collect();
        health.len() == 13 && health.iter().all(|h| h == "ok")
    });
    let dashboard = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../charts/vigil/files/grafana/vigil-node.json");
    let queries = vigil_crds::metrics::dashboard_queries(&std::fs::read_to_string(dashboard).unwrap()).unwrap();
    assert!(queries.len() >= 15, "{queries:?}");
    for (panel, q) in queries {
        // Grafana's variables as Grafana fills them in for this node.
        let q = q.replace("$__rate_interval", "1m").replace("$node", DASHBOARD_NODE);
        // Rates and increases need two samples in their window: asked until they have them.
        wait_for(&format!("the node dashboard's {panel:?}: {q}"), Duration::from_secs(30), || {
            !query(&q).as_array().unwrap().is_empty()
        });
    }
}

#[test]
fn removing_a_policy_resolves_its_alerts_at_its_own_receiver() {
    let dir = tempfile::tempdir().unwrap();
    let hook = Capture::start();
    let policy = "apiVersion: vigil.dev/v1alpha1\nkind: AlertPolicy\nmetadata: {name: p, namespace: ops}\nspec:\n  rules:\n    - name: Load\n      metric: {name: vigil_node_load1}\n      detector: {threshold: {above: -1}}\n  routes:\n    - {name: all, receivers: [hook], groupWait: 1s, groupInterval: 1s, rateLimit: {minInterval: 1s, maxPerHour: 3600}}\n  receivers:\n    - name: hook\n      webhook: {url: {name: alerting, key: hook-url}}\n";
    let (policies, secrets_dir) =
        policy_dirs(dir.path(), policy, &[("alerting", "hook-url", format!("{}/hook", hook.url()))]);
    let cfg = write_config(dir.path(), &policies, &secrets_dir);
    let (_agent, _) = start_agent(&cfg);
    hook.wait_until(Duration::from_secs(30), |r| !fingerprints(r, "firing").is_empty());
    // The last policy goes: the set in force is empty, and the receiver with it.
    std::fs::remove_file(policies.join("policy.yaml")).unwrap();
    let firing = fingerprints(&hook.requests(), "firing");
    hook.wait_until(Duration::from_secs(30), |r| fingerprints(r, "resolved") == firing);
}
