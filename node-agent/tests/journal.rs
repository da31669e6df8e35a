//! The systemd journal as an auth source: files journald wrote (compact and regular layouts,
//! Zstandard-compressed fields), and a journald started here, logged to with `logger`, read by
//! `vigil-agent watch --events-only` on a host with no auth.log. Every wait is bounded.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails loudly on the first surprise

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use vigil_agent::events::auth::{AuthParser, Parsed, Writer};
use vigil_agent::events::journal::{Cursor, Follower};
use vigil_agent::events::{Event, Severity};

/// A fixture journal (stored Zstandard-compressed: journal files are mostly zeros), written
/// out into `dir`.
fn unpack(name: &str, dir: &Path) -> PathBuf {
    let packed = std::fs::read(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/journal").join(format!("{name}.journal.zst")),
    )
    .unwrap();
    let mut bytes = Vec::new();
    ruzstd::decoding::StreamingDecoder::new(&packed[..]).unwrap().read_to_end(&mut bytes).unwrap();
    let path = dir.join(format!("{name}.journal"));
    std::fs::write(&path, bytes).unwrap();
    path
}

/// The auth events of the journal files in `dir`. `as_written`: each entry judged with the
/// writer journald recorded; else as if the program it names had written it (to read what
/// the entry claims).
fn auth_events(dir: &Path, as_written: bool) -> Vec<Event> {
    let mut follower = Follower::new(vec![dir.to_owned()], None, false);
    let poll = follower.poll(&|_| true);
    assert!(poll.errors.is_empty(), "{:?}", poll.errors);
    let parser = AuthParser::default();
    poll.entries
        .iter()
        .filter_map(|e| {
            let time = jiff::Timestamp::from_microsecond(e.realtime as i64).unwrap();
            let pid = e.text("SYSLOG_PID").and_then(|p| p.parse().ok());
            let program = e.text("SYSLOG_IDENTIFIER")?;
            let (exe, comm) = (e.text("_EXE"), e.text("_COMM"));
            let claimed = format!("/usr/sbin/{program}");
            let writer = if as_written {
                Writer {
                    exe: exe.as_deref(),
                    comm: comm.as_deref(),
                    uid: e.text("_UID").and_then(|u| u.parse().ok()),
                    ..Writer::default()
                }
            } else {
                Writer { exe: Some(&claimed), uid: Some(0), ..Writer::default() }
            };
            match parser.parse_entry(
                &program,
                pid,
                &e.text("_HOSTNAME").unwrap_or_default(),
                &e.text("MESSAGE")?,
                time,
                &writer,
            ) {
                Parsed::Event(ev) => Some(ev),
                _ => None,
            }
        })
        .collect()
}

#[test]
fn journal_files_of_both_layouts_give_the_auth_events_with_compressed_fields() {
    for name in ["debian12-compact", "debian12-regular"] {
        let dir = tempfile::tempdir().unwrap();
        unpack(name, dir.path());
        let events = auth_events(dir.path(), false);
        let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
        assert_eq!(
            kinds,
            ["auth.ssh.accepted", "auth.ssh.failed", "auth.sudo", "auth.su", "auth.account.added", "auth.ssh.failed"],
            "{name}"
        );
        assert_eq!(events[0].detail_str("user"), Some("alice"));
        assert_eq!(events[0].detail_str("sourceAddress"), Some("192.0.2.10"));
        assert_eq!(events[1].detail_str("sourceAddress"), Some("198.51.100.7"));
        assert_eq!(events[4].severity, Severity::Critical, "a second UID 0 account");
        // journald compresses fields over 512 bytes: this one was read through Zstandard.
        assert_eq!(events[5].detail_str("user").map(str::len), Some(600), "{name}");
        assert!(events[0].time > jiff::Timestamp::from_second(1_700_000_000).unwrap());
        // These entries were written as root with `logger -t sshd` (and -t sudo, su, useradd).
        // Judged as written: where journald recorded the writer's name (logger), the entry is
        // a forgery naming it; where it recorded only root's uid (the writer was gone before
        // journald looked), root's word is taken.
        let judged = auth_events(dir.path(), true);
        assert_eq!(judged.len(), events.len(), "{name}");
        let mut forged = 0;
        for (j, claimed) in judged.iter().zip(&events) {
            assert_eq!(j.detail_i64("writerUid"), Some(0), "{name}: {j:?}");
            if j.detail_str("writerComm") == Some("logger") {
                forged += 1;
                assert_eq!(j.kind.as_str(), "auth.forged", "{name}: {j:?}");
                assert_eq!(j.detail_str("claimedType"), Some(claimed.kind.as_str()));
                assert_eq!(j.severity, Severity::Warning);
            } else {
                assert_eq!((j.kind, j.detail_str("writerComm")), (claimed.kind, None), "{name}: {j:?}");
            }
        }
        assert!(forged >= 1, "{name}: {judged:#?}");
    }
}

#[test]
fn a_saved_cursor_resumes_after_the_last_entry_and_a_new_file_is_read_whole() {
    let dir = tempfile::tempdir().unwrap();
    unpack("debian12-compact", dir.path());
    let mut first = Follower::new(vec![dir.path().to_owned()], None, false);
    let all = first.poll(&|_| true).entries;
    assert!(all.len() >= 8);
    // Resume from a cursor half way: only what follows it.
    let mut half = Cursor::default();
    let mid = &all[all.len() / 2];
    let id = first.cursor().seqnums.keys().next().unwrap().clone();
    half.seqnums.insert(id, mid.seqnum);
    let mut again = Follower::new(vec![dir.path().to_owned()], Some(half), true);
    let rest = again.poll(&|_| true).entries;
    assert_eq!(rest.first().map(|e| e.seqnum), Some(mid.seqnum + 1));
    assert_eq!(rest.len(), all.len() - all.len() / 2 - 1);
    assert!(again.poll(&|_| true).entries.is_empty(), "nothing twice");
    // A fresh start at the end reads nothing old, then a file that appears (rotation) whole.
    let other = tempfile::tempdir().unwrap();
    let mut at_end = Follower::new(vec![other.path().to_owned()], None, true);
    assert!(at_end.poll(&|_| true).entries.is_empty());
    unpack("debian12-regular", other.path());
    assert!(!at_end.poll(&|_| true).entries.is_empty(), "a file that appeared later is new");
}

#[test]
fn a_backlog_comes_over_several_polls_each_holding_at_most_its_share() {
    let dir = tempfile::tempdir().unwrap();
    unpack("debian12-compact", dir.path());
    unpack("debian12-regular", dir.path());
    let mut whole = Follower::new(vec![dir.path().to_owned()], None, false);
    let all: Vec<u64> = whole.poll(&|_| true).entries.iter().map(|e| e.realtime).collect();
    assert!(all.len() > 12);
    let mut f = Follower::new(vec![dir.path().to_owned()], None, false);
    f.max_entries = 5;
    let mut got = Vec::new();
    for _ in 0..100 {
        let poll = f.poll(&|_| true);
        assert!(poll.entries.len() <= 5, "{} entries in one poll", poll.entries.len());
        got.extend(poll.entries.iter().map(|e| e.realtime));
        if !poll.more {
            break;
        }
    }
    got.sort_unstable();
    let mut expected = all.clone();
    expected.sort_unstable();
    assert_eq!(got, expected, "every entry once");
}

/// A journald in a namespace of its own (its sockets under /run/systemd/journal.NS, its
/// files under /run/log/journal/MACHINE-ID.NS), removed with everything it made on drop.
struct Journald {
    child: Child,
    ns: String,
    files: PathBuf,
}

impl Journald {
    fn start() -> Self {
        // One namespace per journald: tests of one process run side by side.
        static STARTED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = STARTED.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let ns = format!("vigiltest{}x{n}", std::process::id());
        let machine = std::fs::read_to_string("/etc/machine-id").unwrap().trim().to_owned();
        std::fs::write(format!("/etc/systemd/journald@{ns}.conf"), "[Journal]\nStorage=volatile\n").unwrap();
        let child = Command::new("/lib/systemd/systemd-journald")
            .arg(&ns)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("systemd-journald (make test-deps installs it)");
        let j = Self { child, files: PathBuf::from(format!("/run/log/journal/{machine}.{ns}")), ns };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !(j.socket().exists() && j.files.join("system.journal").exists()) {
            assert!(Instant::now() < deadline, "journald did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        j
    }

    fn socket(&self) -> PathBuf {
        PathBuf::from(format!("/run/systemd/journal.{}/dev-log", self.ns))
    }

    /// Logs `message` tagged `tag` through `program` (a logger reading its standard input),
    /// as `uid` when given, `wrapped` in a command line of its own when given (`{}` stands for
    /// the logger's arguments). The writer stays alive, its input open, until the returned
    /// [`Held`] is dropped: journald then records its executable, as it does for a daemon
    /// such as sshd (a writer gone before journald looks leaves only its uid).
    fn log_with(&self, program: &Path, uid: Option<u32>, tag: &str, message: &str) -> Held {
        self.spawn_writer(program, uid, tag, message, None)
    }

    fn spawn_writer(&self, program: &Path, uid: Option<u32>, tag: &str, message: &str, wrapped: Option<&str>) -> Held {
        use std::io::Write;
        let socket = self.socket().display().to_string();
        let logger_args = format!("{} --socket {socket} -t {tag} -i", program.display());
        let mut cmd = match uid {
            Some(uid) => {
                let mut c = Command::new("setpriv");
                c.args([format!("--reuid={uid}"), format!("--regid={uid}"), "--clear-groups".into()]);
                c
            }
            None => Command::new("env"),
        };
        match wrapped {
            Some(script) => cmd.args(["sh", "-c", &script.replace("{}", &logger_args)]),
            None => cmd.args(logger_args.split(' ')),
        };
        let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::null()).spawn().unwrap();
        let mut stdin = child.stdin.take().unwrap();
        writeln!(stdin, "{message}").unwrap();
        stdin.flush().unwrap();
        Held { child, stdin: Some(stdin) }
    }
}

/// A log writer kept running with its input open; dropped, it ends.
struct Held {
    child: Child,
    stdin: Option<std::process::ChildStdin>,
}

impl Drop for Held {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.wait();
    }
}

/// Copies of `logger` named after the programs a test logs as (`sshd`, `sudo`, `su`), in a
/// directory the agent's config lists in `programDirs`: the journal then records an
/// executable of that name there, as it does for the real programs under /usr/sbin.
struct Programs(tempfile::TempDir);

impl Programs {
    fn new(names: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let logger = which("logger");
        for name in names {
            std::fs::copy(&logger, dir.path().join(name)).unwrap();
        }
        Self(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.path().join(name)
    }
}

fn which(program: &str) -> PathBuf {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join(program))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{program} is not on PATH (make test-deps installs it)"))
}

impl Journald {
    /// Logs as the program `tag` names would: through its stand-in in `programs`, as root.
    fn log(&self, programs: &Programs, tag: &str, message: &str) -> Held {
        self.log_with(&programs.path(tag), None, tag, message)
    }
}

impl Drop for Journald {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(format!("/etc/systemd/journald@{}.conf", self.ns));
        let _ = std::fs::remove_dir_all(format!("/run/systemd/journal.{}", self.ns));
        let _ = std::fs::remove_dir_all(&self.files);
    }
}

/// `vigil-agent watch --events-only --json` with only the auth source on, its JSON events
/// arriving on a channel.
struct Watch {
    child: Child,
    lines: mpsc::Receiver<serde_json::Value>,
}

impl Watch {
    fn start(config: &Path) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_vigil-agent"))
            .args(["watch", "--events-only", "--json", "--interval", "1s", "--config"])
            .arg(config)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let (tx, lines) = mpsc::channel();
        let out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str(&line)
                    && tx.send(v).is_err()
                {
                    break;
                }
            }
        });
        Self { child, lines }
    }

    /// Events until `done` holds or 20 s pass (then fails naming what arrived).
    fn until(&self, what: &str, done: impl Fn(&[serde_json::Value]) -> bool) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut seen = Vec::new();
        while !done(&seen) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(v) => seen.push(v),
                Err(_) => panic!("waited 20 s for {what}; got {seen:#?}"),
            }
        }
        seen
    }

    /// Stops it as Ctrl-C does (it saves where it is) and waits for it to exit.
    fn stop(mut self) {
        let pid = i32::try_from(self.child.id()).unwrap();
        // SAFETY: kill(2) on our own child's pid.
        #[allow(unsafe_code)]
        unsafe {
            libc::kill(pid, libc::SIGINT);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "watch did not stop on SIGINT");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn kinds(events: &[serde_json::Value]) -> Vec<String> {
    events.iter().filter_map(|e| e["type"].as_str()).filter(|t| t.starts_with("auth.")).map(str::to_owned).collect()
}

/// A config for `watch` with only the auth source on, reading `journald`'s files from this
/// moment on, trusting the programs in `programs`.
fn auth_only_config(work: &Path, journald: &Journald, programs: &Programs) -> PathBuf {
    let state = work.join("state");
    std::fs::create_dir_all(&state).unwrap();
    // Start after a cursor at this moment: what is logged from now on is news, whenever the
    // agent's first read comes.
    let now = jiff::Timestamp::now().as_microsecond();
    std::fs::write(state.join("journal-cursor.json"), format!("{{\"seqnums\":{{}},\"realtime\":{now}}}")).unwrap();
    let config = work.join("agent.yaml");
    std::fs::write(
        &config,
        format!(
            "events:\n  stateDir: {}\n  processes: {{enabled: false}}\n  files: {{enabled: false}}\n  network: {{enabled: false}}\n  kernel: {{enabled: false}}\n  clock: {{enabled: false}}\n  auth:\n    logs: [{}]\n    wtmp: ''\n    btmp: ''\n    pollInterval: 100ms\n    journalDirs: [{}]\n    programDirs: [{}]\n",
            state.display(),
            work.join("no-such-auth.log").display(),
            journald.files.display(),
            programs.0.path().display(),
        ),
    )
    .unwrap();
    config
}

#[test]
fn watch_shows_sshd_sudo_and_su_from_a_live_journal_once_across_a_restart() {
    let journald = Journald::start();
    let programs = Programs::new(&["sshd", "sudo", "su"]);
    let work = tempfile::tempdir().unwrap();
    let config = auth_only_config(work.path(), &journald, &programs);

    let watch = Watch::start(&config);
    let _a = journald.log(
        &programs,
        "sshd",
        "Accepted publickey for alice from 192.0.2.10 port 50022 ssh2: ED25519 SHA256:abc",
    );
    let _b =
        journald.log(&programs, "sudo", "   alice : TTY=pts/0 ; PWD=/home/alice ; USER=root ; COMMAND=/usr/bin/id");
    let _c = journald.log(&programs, "su", "(to root) alice on pts/1");
    let seen = watch.until("sshd, sudo and su", |ev| kinds(ev).len() >= 3);
    assert!(
        seen.iter()
            .filter(|e| kinds(std::slice::from_ref(e)).len() == 1)
            .all(|e| e["details"]["writerVerified"] == true),
        "{seen:#?}"
    );
    // Each writer is a process of its own: their entries come in any order.
    let sorted = |seen: &[serde_json::Value]| {
        let mut k = kinds(seen);
        k.sort();
        k
    };
    assert_eq!(sorted(&seen), ["auth.ssh.accepted", "auth.su", "auth.sudo"]);
    assert_eq!(seen.iter().find(|e| e["type"] == "auth.sudo").unwrap()["details"]["user"], "alice");
    watch.stop();

    // Down: one more entry. The restart reads it once, and nothing from before.
    let _d =
        journald.log(&programs, "sshd", "Failed password for invalid user admin from 198.51.100.7 port 41000 ssh2");
    let watch = Watch::start(&config);
    let _e = journald.log(&programs, "su", "FAILED SU (to root) alice on pts/1");
    let seen = watch.until("the entry from while it was down", |ev| kinds(ev).len() >= 2);
    assert_eq!(sorted(&seen), ["auth.ssh.failed", "auth.su.failed"]);
    let failed = &seen.iter().find(|e| e["type"] == "auth.ssh.failed").unwrap()["details"];
    assert_eq!(failed["sourceAddress"], "198.51.100.7");
    watch.stop();
}

#[test]
fn an_unprivileged_user_forging_sshd_and_sudo_entries_gets_auth_forged_naming_them() {
    let journald = Journald::start();
    let programs = Programs::new(&["sshd"]);
    let work = tempfile::tempdir().unwrap();
    let config = auth_only_config(work.path(), &journald, &programs);
    let watch = Watch::start(&config);
    let logger = which("logger");
    // As nobody (65534), through the system's logger: the tag claims sshd and sudo.
    let _a = journald.log_with(
        &logger,
        Some(65534),
        "sshd",
        "Accepted publickey for root from 6.6.6.6 port 22 ssh2: RSA SHA256:forged",
    );
    let _b = journald.log_with(&logger, Some(65534), "sshd", "Failed password for root from 6.6.6.6 port 22 ssh2");
    let _c =
        journald.log_with(&logger, Some(65534), "sudo", "   root : TTY=pts/0 ; PWD=/ ; USER=root ; COMMAND=/bin/sh");
    // As nobody in a user namespace of its own, with a mount namespace in which its own copy
    // of logger is `sshd` in the very directory the config trusts: journald records that path.
    let unshare_ok = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "unshare", "-Urm", "true"])
        .status()
        .unwrap()
        .success();
    assert!(unshare_ok, "unprivileged user namespaces are off here: this test needs them to try the attack");
    let dir = programs.0.path().display().to_string();
    let script = format!("mount -t tmpfs none {dir} && cp {} {dir}/sshd && exec {{}}", logger.display());
    let _d = journald.spawn_writer(
        &programs.path("sshd"),
        Some(65534),
        "sshd",
        "Accepted publickey for root from 7.7.7.7 port 22 ssh2: RSA SHA256:userns",
        Some(&format!("exec unshare -Urm sh -c '{script}'")),
    );
    // A PAM record tagged by the program that truly wrote it, logger, claiming sshd's service.
    let _e = journald.log_with(
        &logger,
        Some(65534),
        "logger",
        "pam_unix(sshd:session): session opened for user root(uid=0) by (uid=0)",
    );
    // A real one too: root's sshd in the trusted directory.
    let _f = journald.log(
        &programs,
        "sshd",
        "Accepted publickey for alice from 192.0.2.10 port 50022 ssh2: ED25519 SHA256:abc",
    );
    let seen = watch.until("five forgeries and a real login", |ev| kinds(ev).len() >= 6);
    // The writers are separate processes: their entries come in any order.
    let mut got = kinds(&seen);
    got.sort();
    assert_eq!(
        got,
        ["auth.forged", "auth.forged", "auth.forged", "auth.forged", "auth.forged", "auth.ssh.accepted"],
        "{seen:#?}"
    );
    let mut claims: Vec<&str> = seen
        .iter()
        .filter(|e| e["type"] == "auth.forged")
        .map(|f| f["details"]["claimedType"].as_str().unwrap())
        .collect();
    claims.sort_unstable();
    assert_eq!(
        claims,
        ["auth.session.opened", "auth.ssh.accepted", "auth.ssh.accepted", "auth.ssh.failed", "auth.sudo"]
    );
    for f in seen.iter().filter(|e| e["type"] == "auth.forged") {
        assert_eq!(f["severity"], "warning");
        assert_eq!(f["details"]["writerUid"], 65534, "{f:#}");
        assert!(f["details"].get("sourceAddress").is_none(), "a forgery names no source: {f:#}");
        let why = f["details"]["why"].as_str().unwrap();
        assert!(why.contains("uid 65534") || why.contains("PAM service sshd"), "{why}");
    }
    // The user namespace's `sshd` in the trusted directory: refused for its uid.
    let userns = seen.iter().find(|e| e["details"]["claim"].as_str().is_some_and(|c| c.contains("7.7.7.7"))).unwrap();
    let why = userns["details"]["why"].as_str().unwrap();
    assert!(why.contains("sshd runs as root") || why.contains("did not record"), "{why}");
    let real = seen.iter().find(|e| e["type"] == "auth.ssh.accepted").unwrap();
    assert_eq!(real["details"]["user"], "alice");
    assert_eq!(real["details"]["writerVerified"], true);
    watch.stop();
}
