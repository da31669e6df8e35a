//! One working agent per node, handed over without a gap.
//!
//! During a revision change the operator keeps the outgoing revision's pod on the node until
//! the incoming one has taken over (docs/adr/0005-zero-gap-handover.md), so for a few seconds
//! two agents run on one node. They share the state directory (log positions, file baseline,
//! alert spool), the node's AgentStatus, its heartbeat Lease and, with the host's network, the
//! metrics port. An exclusive lock on `<state dir>/agent.lock` decides which one works; the
//! other stands by, holding nothing:
//!
//! - a free lock is taken by whichever agent asks (an agent standing by takes it back when
//!   the other one stops, so a node is never left without a working agent);
//! - an agent that cannot take the lock and runs the revision the node is assigned to (its
//!   `vigil.dev/revision` label) writes a request, `<state dir>/handover`, naming its revision;
//! - the working agent sees the request within [`POLL`], checks the node's label names the
//!   requester, stops as on SIGTERM (events drained, positions and spool saved, metrics port
//!   closed), releases the lock and stands by until its pod is deleted;
//! - the requester takes the lock and starts; its heartbeat Lease, whose holder is its
//!   revision, tells the operator the handover is done.
//!
//! The lock is `flock(2)`: the kernel releases it when its holder dies, whatever the way.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How often the working agent looks for a request, and a waiting one tries the lock.
pub const POLL: Duration = Duration::from_millis(200);

/// How often an agent that does not hold the lock re-reads its node's assigned revision.
pub const LABEL_EVERY: Duration = Duration::from_secs(2);

/// How long a request keeps a free lock for its requester: an agent standing by takes a free
/// lock only when no other agent asked for it within this time (the requester tries every
/// [`POLL`]; a request older than this is from an agent that went away).
pub const REQUEST_HOLDS: Duration = Duration::from_secs(5);

/// The lock file in the state directory.
pub const LOCK_FILE: &str = "agent.lock";

/// The request file in the state directory.
pub const REQUEST_FILE: &str = "handover";

/// The node's state directory, held: dropping it releases the lock.
#[derive(Debug)]
pub struct NodeLock {
    _file: File,
    dir: PathBuf,
}

impl NodeLock {
    /// Takes the lock on `dir` when it is free; `Ok(None)` when another agent holds it.
    pub fn try_take(dir: &Path) -> std::io::Result<Option<Self>> {
        std::fs::create_dir_all(dir)?;
        let file = OpenOptions::new().create(true).truncate(false).write(true).open(dir.join(LOCK_FILE))?;
        match file.try_lock() {
            Ok(()) => Ok(Some(Self { _file: file, dir: dir.to_owned() })),
            Err(std::fs::TryLockError::WouldBlock) => Ok(None),
            Err(std::fs::TryLockError::Error(e)) => Err(e),
        }
    }

    /// The revision a waiting agent asked to hand over to, when one did (and not `mine`).
    pub fn request(&self, mine: Option<&str>) -> Option<String> {
        read_request(&self.dir).filter(|r| Some(r.as_str()) != mine)
    }

    /// Clears a request once it is served (or when it was this agent's own).
    pub fn clear_request(&self) {
        let _ = std::fs::remove_file(self.dir.join(REQUEST_FILE));
    }
}

/// Whether another agent than `mine` asked for the lock within [`REQUEST_HOLDS`].
fn fresh_request_of_another(dir: &Path, mine: Option<&str>) -> bool {
    let fresh = std::fs::metadata(dir.join(REQUEST_FILE))
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_some_and(|age| age < REQUEST_HOLDS);
    fresh && read_request(dir).is_some_and(|r| Some(r.as_str()) != mine)
}

fn read_request(dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(dir.join(REQUEST_FILE)).ok()?;
    let r = text.trim();
    // A revision name is a label value; anything else is not a request.
    (!r.is_empty() && r.len() <= 63 && r.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)))
        .then(|| r.to_owned())
}

/// Writes a request for the lock on behalf of `revision` (write, then rename: a reader never
/// sees half of it).
pub fn write_request(dir: &Path, revision: &str) -> std::io::Result<()> {
    let tmp = dir.join(format!(".{REQUEST_FILE}.tmp"));
    let mut f = File::create(&tmp)?;
    f.write_all(revision.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, dir.join(REQUEST_FILE))
}

/// What an agent that does not hold the lock does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Waiting {
    /// The node is assigned to this agent's revision: ask for the lock.
    Ask,
    /// Another revision is assigned (or none is known): stand by, and take the lock only when
    /// it is free.
    StandBy,
}

/// Whether an agent of revision `mine` asks for the lock, given the node's assigned revision.
pub fn waiting(mine: Option<&str>, assigned: Option<&str>) -> Waiting {
    match (mine, assigned) {
        (Some(m), Some(a)) if m == a => Waiting::Ask,
        _ => Waiting::StandBy,
    }
}

/// Whether the working agent of revision `mine` hands over to the agent that asked for
/// `requested`: only to the revision the node is assigned to, and never to itself, so an
/// outgoing agent that restarts mid-handover cannot take the node back by asking.
pub fn hands_over(mine: Option<&str>, requested: &str, assigned: Option<&str>) -> bool {
    Some(requested) != mine && Some(requested) == assigned
}

/// Where an agent learns the revision its node is assigned to.
#[derive(Clone)]
pub enum Assigned {
    /// The node's `vigil.dev/revision` label, read through the API (an agent in a pod).
    Node {
        /// In-cluster client.
        client: kube::Client,
        /// This agent's node.
        node: String,
    },
    /// A fixed answer, shared so a test can change it (and `None` on a plain host).
    Fixed(std::sync::Arc<std::sync::Mutex<Option<String>>>),
    /// A fixed answer that counts how often it was asked.
    #[cfg(test)]
    Counted(Option<String>, std::sync::Arc<std::sync::atomic::AtomicUsize>),
}

impl Assigned {
    /// The revision the node is assigned to now, when it can be read.
    pub async fn get(&self) -> Option<String> {
        match self {
            Assigned::Node { client, node } => {
                let api: kube::Api<k8s_openapi::api::core::v1::Node> = kube::Api::all(client.clone());
                let n = api.get_opt(node).await.ok().flatten()?;
                n.metadata.labels.and_then(|mut l| l.remove(vigil_crds::labels::REVISION))
            }
            Assigned::Fixed(v) => v.lock().ok().and_then(|g| g.clone()),
            #[cfg(test)]
            Assigned::Counted(v, reads) => {
                reads.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                v.clone()
            }
        }
    }
}

/// How one turn of work ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ended {
    Stopped,
    HandedOver,
}

/// Runs `work` whenever this agent holds the node's lock on `dir`, until `stop` turns true.
/// `work` gets the future to stop on (this agent stopping, or handing over to the agent of
/// the node's assigned revision), and runs again each time the lock comes back. `mine` is this
/// agent's revision. Without a way to lock `dir` (it cannot be created or locked) the agent
/// works without the lock, and says so.
///
/// An agent that asks for the node calls `open_early` once and hands what it returns to
/// `work` when it takes over: its live sources, opened while the other agent still works, so
/// that one of the two always listens. One that stops asking (the node is assigned elsewhere
/// again) drops it.
pub async fn exclusive<E, T, O, F, Fut>(
    dir: &Path,
    mine: Option<String>,
    assigned: Assigned,
    mut stop: tokio::sync::watch::Receiver<bool>,
    mut open_early: O,
    mut work: F,
) -> Result<(), E>
where
    O: FnMut() -> T,
    F: FnMut(std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>, Option<T>) -> Fut,
    Fut: std::future::Future<Output = Result<(), E>>,
{
    let say = |line: String| {
        tracing::info!("handover: {line}");
    };
    loop {
        // 1. The lock: taken when free; asked for when the node is this agent's.
        let mut asked = false;
        let mut label_read: Option<std::time::Instant> = None;
        let mut said_waiting = false;
        let mut early: Option<T> = None;
        let lock = loop {
            if *stop.borrow() {
                return Ok(());
            }
            // A free lock another agent asked for is left to it.
            let held_for_another = fresh_request_of_another(dir, mine.as_deref());
            match NodeLock::try_take(dir) {
                Ok(Some(l)) if held_for_another => drop(l),
                Ok(Some(l)) => break Some(l),
                Ok(None) => {}
                Err(e) => {
                    say(format!("cannot lock {}: {e}; working without the lock", dir.join(LOCK_FILE).display()));
                    break None;
                }
            }
            // The label is read every LABEL_EVERY at most; an agent of the assigned revision asks
            // again each time, so its request stays fresh (the working agent heeds only fresh
            // ones) for as long as it waits.
            if label_read.is_none_or(|t| t.elapsed() >= LABEL_EVERY) {
                label_read = Some(std::time::Instant::now());
                let now_assigned = assigned.get().await;
                match (waiting(mine.as_deref(), now_assigned.as_deref()), mine.as_deref()) {
                    (Waiting::Ask, Some(m)) => {
                        // Listening before asking: from the request on, one of the two agents
                        // always listens.
                        if early.is_none() {
                            early = Some(open_early());
                        }
                        match write_request(dir, m) {
                            Ok(()) => {
                                if !asked {
                                    say(format!("another agent works on this node; asked it to hand over to {m}"));
                                }
                                asked = true;
                            }
                            Err(e) => say(format!("cannot ask for the node: {e}")),
                        }
                    }
                    _ => {
                        early = None;
                        if !said_waiting {
                            said_waiting = true;
                            say(format!(
                                "another agent works on this node (assigned to {}); standing by",
                                now_assigned.as_deref().unwrap_or("no revision")
                            ));
                        }
                    }
                }
            }
            tokio::select! {
                () = tokio::time::sleep(POLL) => {}
                _ = stop.changed() => {}
            }
        };
        if let Some(l) = &lock {
            if read_request(dir).as_deref() == mine.as_deref() {
                l.clear_request();
            }
            if asked {
                say("took over the node".into());
            }
        }
        // 2. Work until this agent stops or a successor asks.
        let ended = std::sync::Arc::new(std::sync::Mutex::new(Ended::Stopped));
        let shutdown = {
            let (ended, mut stop, assigned, mine) = (ended.clone(), stop.clone(), assigned.clone(), mine.clone());
            let dir = dir.to_owned();
            let watching = lock.is_some();
            Box::pin(async move {
                // The node's label, read only while a fresh request waits, and then at most
                // every LABEL_EVERY: a request the label does not back costs a read every 2 s
                // for its 5 s, then nothing.
                let mut label: Option<(std::time::Instant, Option<String>)> = None;
                loop {
                    if *stop.borrow() {
                        return;
                    }
                    let request = if watching && fresh_request_of_another(&dir, mine.as_deref()) {
                        read_request(&dir)
                    } else {
                        None
                    };
                    if let Some(r) = request {
                        if label.as_ref().is_none_or(|(at, _)| at.elapsed() >= LABEL_EVERY) {
                            label = Some((std::time::Instant::now(), assigned.get().await));
                        }
                        let now_assigned = label.as_ref().and_then(|(_, l)| l.as_deref());
                        if hands_over(mine.as_deref(), &r, now_assigned) {
                            if let Ok(mut e) = ended.lock() {
                                *e = Ended::HandedOver;
                            }
                            tracing::info!(to = %r, "handover: handing the node over");
                            return;
                        }
                    }
                    tokio::select! {
                        () = tokio::time::sleep(POLL) => {}
                        _ = stop.changed() => {}
                    }
                }
            }) as std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>
        };
        work(shutdown, early.take()).await?;
        let how = ended.lock().map(|e| *e).unwrap_or(Ended::Stopped);
        drop(lock);
        if how == Ended::Stopped || *stop.borrow() {
            return Ok(());
        }
        say("handed over; standing by until this pod is deleted".into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_holder_at_a_time_and_the_lock_goes_with_its_holder() {
        let dir = tempfile::tempdir().unwrap();
        let a = NodeLock::try_take(dir.path()).unwrap().expect("free");
        assert!(NodeLock::try_take(dir.path()).unwrap().is_none(), "held");
        drop(a);
        assert!(NodeLock::try_take(dir.path()).unwrap().is_some(), "released with its holder");
    }

    #[test]
    fn requests_are_read_whole_and_hostile_contents_are_no_request() {
        let dir = tempfile::tempdir().unwrap();
        let lock = NodeLock::try_take(dir.path()).unwrap().unwrap();
        assert_eq!(lock.request(Some("r-a")), None);
        write_request(dir.path(), "r-b").unwrap();
        assert_eq!(lock.request(Some("r-a")).as_deref(), Some("r-b"));
        assert_eq!(lock.request(Some("r-b")), None, "its own request is none");
        for junk in ["", "r b", "../../etc", &"x".repeat(64), "r-\u{1b}[2J"] {
            std::fs::write(dir.path().join(REQUEST_FILE), junk).unwrap();
            assert_eq!(lock.request(Some("r-a")), None, "{junk:?}");
        }
        lock.clear_request();
        assert!(!dir.path().join(REQUEST_FILE).exists());
    }

    /// Two agents on one node, as during a handover: the one assigned the node takes it over
    /// from the other, which stands by; when the new one stops, the one standing by takes the
    /// node back at once (never a node without a working agent).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_assigned_agent_takes_over_and_the_other_takes_back_a_node_left_free() {
        use std::sync::{Arc, Mutex};
        use tokio::sync::mpsc;
        let dir = tempfile::tempdir().unwrap();
        let assigned = Assigned::Fixed(Arc::new(Mutex::new(Some("r-a".to_owned()))));
        let (log_tx, mut log) = mpsc::unbounded_channel::<String>();
        let start = |rev: &'static str, stop: tokio::sync::watch::Receiver<bool>| {
            let (dir, assigned, log_tx) = (dir.path().to_owned(), assigned.clone(), log_tx.clone());
            tokio::spawn(async move {
                let early_tx = log_tx.clone();
                let open_early = move || {
                    let _ = early_tx.send(format!("{rev} listens"));
                    rev
                };
                exclusive::<(), _, _, _, _>(
                    &dir,
                    Some(rev.to_owned()),
                    assigned,
                    stop,
                    open_early,
                    |shutdown, early| {
                        let log_tx = log_tx.clone();
                        async move {
                            if let Some(e) = early {
                                let _ = log_tx.send(format!("{rev} took over what {e} opened early"));
                            }
                            let _ = log_tx.send(format!("{rev} works"));
                            shutdown.await;
                            let _ = log_tx.send(format!("{rev} stops"));
                            Ok(())
                        }
                    },
                )
                .await
            })
        };
        let next = async |log: &mut mpsc::UnboundedReceiver<String>| {
            tokio::time::timeout(Duration::from_secs(10), log.recv()).await.expect("within 10 s").unwrap()
        };
        let (_stop_a, stop_a) = tokio::sync::watch::channel(false);
        let a = start("r-a", stop_a);
        assert_eq!(next(&mut log).await, "r-a works");
        // The node is reassigned; r-b's agent starts beside r-a's.
        *match &assigned {
            Assigned::Fixed(v) => v,
            Assigned::Node { .. } | Assigned::Counted(..) => unreachable!(),
        }
        .lock()
        .unwrap() = Some("r-b".to_owned());
        let (stop_b_tx, stop_b) = tokio::sync::watch::channel(false);
        let b = start("r-b", stop_b);
        assert_eq!(next(&mut log).await, "r-b listens", "r-b opens its live sources before it asks");
        assert_eq!(next(&mut log).await, "r-a stops", "r-a hands over first");
        assert_eq!(next(&mut log).await, "r-b took over what r-b opened early");
        assert_eq!(next(&mut log).await, "r-b works", "then r-b works, alone");
        // r-b stops (crashes, is deleted): r-a, standing by, takes the node back.
        stop_b_tx.send(true).unwrap();
        assert_eq!(next(&mut log).await, "r-b stops");
        assert_eq!(next(&mut log).await, "r-a works", "the node is not left without an agent");
        b.await.unwrap().unwrap();
        // r-a runs on (it will be asked again when r-b's agent is back); nothing else happens.
        assert!(tokio::time::timeout(Duration::from_millis(800), log.recv()).await.is_err());
        a.abort();
    }

    /// A request the node's label does not back (a stale or a wrong one) is never served and
    /// costs a bounded number of label reads: at most one per LABEL_EVERY while it is fresh,
    /// none after.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_request_the_label_does_not_back_is_ignored_at_a_bounded_cost() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicUsize, Ordering};
        let dir = tempfile::tempdir().unwrap();
        let reads = Arc::new(AtomicUsize::new(0));
        let assigned = Assigned::Counted(Some("r-a".into()), reads.clone());
        let (stop_tx, stop) = tokio::sync::watch::channel(false);
        let (works_tx, mut works) = tokio::sync::mpsc::unbounded_channel::<&str>();
        let path = dir.path().to_owned();
        let agent = tokio::spawn(async move {
            exclusive::<(), _, _, _, _>(
                &path,
                Some("r-a".into()),
                assigned,
                stop,
                || (),
                |shutdown, _| {
                    let works_tx = works_tx.clone();
                    async move {
                        let _ = works_tx.send("works");
                        shutdown.await;
                        let _ = works_tx.send("stops");
                        Ok(())
                    }
                },
            )
            .await
        });
        let first = tokio::time::timeout(Duration::from_secs(10), works.recv()).await.unwrap();
        assert_eq!(first, Some("works"));
        let before = reads.load(Ordering::SeqCst);
        write_request(dir.path(), "r-x").unwrap();
        // Bounded by time, not by sleeping for a result: the request is stale after 5 s.
        let still = tokio::time::timeout(REQUEST_HOLDS + Duration::from_secs(2), works.recv()).await;
        assert!(still.is_err(), "the working agent never stopped for a request its node does not back");
        let used = reads.load(Ordering::SeqCst) - before;
        assert!((1..=4).contains(&used), "{used} label reads for one unbacked request");
        let settled = reads.load(Ordering::SeqCst);
        tokio::time::timeout(Duration::from_secs(3), works.recv()).await.unwrap_err();
        assert_eq!(reads.load(Ordering::SeqCst), settled, "a stale request costs no more reads");
        stop_tx.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(10), agent).await.unwrap().unwrap().unwrap();
    }

    #[test]
    fn only_the_assigned_revision_asks_and_is_handed_the_node() {
        assert_eq!(waiting(Some("r-b"), Some("r-b")), Waiting::Ask);
        assert_eq!(waiting(Some("r-a"), Some("r-b")), Waiting::StandBy, "outgoing");
        assert_eq!(waiting(Some("r-a"), None), Waiting::StandBy, "label unknown");
        assert_eq!(waiting(None, Some("r-b")), Waiting::StandBy, "no revision of its own (not from a rollout)");
        assert!(hands_over(Some("r-a"), "r-b", Some("r-b")));
        assert!(!hands_over(Some("r-b"), "r-a", Some("r-b")), "an outgoing agent never takes the node back");
        assert!(!hands_over(Some("r-b"), "r-b", Some("r-b")));
        assert!(!hands_over(Some("r-a"), "r-b", None));
    }
}
