//! Leader election, so two operator replicas never act at once. The decision is pure
//! (`decide`, over a Lease's fields); the loop writes the record with optimistic concurrency
//! (its resourceVersion), so of two replicas racing for an expired record one write wins and
//! the other gets a conflict. A leader that cannot renew before its record expires stops
//! (the process exits and restarts as a follower) rather than risk two leaders.
//!
//! The record is a ConfigMap's `control-plane.alpha.kubernetes.io/leader` annotation, in
//! client-go's `LeaderElectionRecord` form, not a `coordination.k8s.io` Lease: the agents
//! renew their heartbeat Leases in the same namespace, and RBAC cannot grant `update` on
//! Leases by a name chosen at run time, so a Lease there would be one every agent token may
//! overwrite (and with it stop every rollout and rollback). No agent may write a ConfigMap;
//! the operator may update this one by name (docs/adr/0006-least-authority.md).

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::coordination::v1::LeaseSpec;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, PostParams};
use kube::{Client, Error as KubeError};

/// What a replica should do about the Lease.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Take the Lease (none, free, or expired): one more transition.
    Acquire,
    /// Renew the Lease this replica holds.
    Renew,
    /// Another replica holds a live Lease; look again after this long.
    Follow(Duration),
}

/// The longest lease a record may claim: a record claiming more (written by a replica, or by
/// anyone allowed to update it) is held to this, so no record can freeze the election.
pub const MAX_LEASE: Duration = Duration::from_secs(300);

/// Decides from the record as read (`None`: it does not exist yet), which this replica first
/// saw in this version at `seen` (its own clock). A record expires a lease duration after it
/// was last seen to change, as client-go judges it: the holder's own `renewTime` is another
/// machine's clock, so a skewed or forged time can neither keep a dead leader nor cut a live
/// one short.
pub fn decide(
    spec: Option<&LeaseSpec>,
    me: &str,
    now: Timestamp,
    seen: Timestamp,
    lease_duration: Duration,
) -> Verdict {
    let Some(spec) = spec else { return Verdict::Acquire };
    let holder = spec.holder_identity.as_deref().unwrap_or("");
    if holder == me {
        return Verdict::Renew;
    }
    if holder.is_empty() {
        return Verdict::Acquire;
    }
    let duration = spec
        .lease_duration_seconds
        .and_then(|s| u64::try_from(s).ok())
        .map_or(lease_duration, Duration::from_secs)
        .clamp(lease_duration.min(MAX_LEASE), MAX_LEASE);
    let expires = seen.checked_add(SignedDuration::try_from(duration).unwrap_or(SignedDuration::ZERO)).unwrap_or(seen);
    if expires > now {
        Verdict::Follow(now.duration_until(expires).try_into().unwrap_or(Duration::from_secs(1)))
    } else {
        Verdict::Acquire
    }
}

/// The Lease spec after acquiring or renewing it.
pub fn next_spec(
    prev: Option<&LeaseSpec>,
    me: &str,
    now: Timestamp,
    lease_duration: Duration,
    verdict: &Verdict,
) -> LeaseSpec {
    let mut spec = prev.cloned().unwrap_or_default();
    if *verdict == Verdict::Acquire {
        spec.holder_identity = Some(me.to_owned());
        spec.acquire_time = Some(MicroTime(now));
        spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + i32::from(prev.is_some()));
    }
    spec.renew_time = Some(MicroTime(now));
    spec.lease_duration_seconds = Some(i32::try_from(lease_duration.as_secs()).unwrap_or(i32::MAX));
    spec
}

/// Leader election settings.
#[derive(Clone, Debug)]
pub struct Election {
    /// Namespace of the Lease.
    pub namespace: String,
    /// Name of the Lease.
    pub name: String,
    /// This replica's identity (its pod name).
    pub identity: String,
    /// How long a Lease lives without renewal.
    pub lease_duration: Duration,
    /// How often a standby looks at the Lease: how soon it takes over a released one.
    pub retry_period: Duration,
    /// The version of the record last read (its resourceVersion) and when this replica first
    /// read it: a record's age is measured on this replica's clock.
    pub seen: std::sync::Arc<std::sync::Mutex<Option<(String, Timestamp)>>>,
}

impl Election {
    /// The operator's election: a 15 s Lease, renewed every 5 s, looked at by standbys every 2 s
    /// (client-go's defaults for the Lease and the retry period).
    pub fn new(namespace: &str, name: &str, identity: &str) -> Self {
        Self {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            identity: identity.to_owned(),
            lease_duration: Duration::from_secs(15),
            retry_period: Duration::from_secs(2),
            seen: std::sync::Arc::default(),
        }
    }
}

/// The ConfigMap holding the record, in the operator's namespace (the chart grants `get` and
/// `update` on it by this name).
pub const NAME: &str = vigil_crds::labels::LEADER_RECORD;

/// The annotation holding the record (client-go's, so its tools read it).
pub const RECORD: &str = "control-plane.alpha.kubernetes.io/leader";

/// client-go's `LeaderElectionRecord`.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Record {
    #[serde(default)]
    holder_identity: String,
    #[serde(default)]
    lease_duration_seconds: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    acquire_time: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    renew_time: Option<Timestamp>,
    #[serde(default)]
    leader_transitions: i32,
}

/// The record a ConfigMap holds, as a Lease's fields; an unreadable record is none (taken
/// over, as an expired one).
pub fn record_of(cm: &ConfigMap) -> Option<LeaseSpec> {
    let text = cm.metadata.annotations.as_ref()?.get(RECORD)?;
    let r: Record = serde_json::from_str(text).ok()?;
    Some(LeaseSpec {
        holder_identity: Some(r.holder_identity).filter(|h| !h.is_empty()),
        lease_duration_seconds: Some(r.lease_duration_seconds),
        acquire_time: r.acquire_time.map(MicroTime),
        renew_time: r.renew_time.map(MicroTime),
        lease_transitions: Some(r.leader_transitions),
        ..LeaseSpec::default()
    })
}

fn set_record(cm: &mut ConfigMap, spec: &LeaseSpec) {
    let r = Record {
        holder_identity: spec.holder_identity.clone().unwrap_or_default(),
        lease_duration_seconds: spec.lease_duration_seconds.unwrap_or(0),
        acquire_time: spec.acquire_time.as_ref().map(|t| t.0),
        renew_time: spec.renew_time.as_ref().map(|t| t.0),
        leader_transitions: spec.lease_transitions.unwrap_or(0),
    };
    let text = serde_json::to_string(&r).unwrap_or_default();
    cm.metadata.annotations.get_or_insert_with(Default::default).insert(RECORD.to_owned(), text);
}

/// One round: read, decide, write. `Ok(true)` when this replica leads after it.
pub async fn round(client: &Client, e: &Election, now: Timestamp) -> Result<bool, KubeError> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), &e.namespace);
    let current = api.get_opt(&e.name).await?;
    // A record that cannot be read is someone's: taken over only once it has not changed for
    // a lease duration, never at once over a live leader.
    let unreadable = LeaseSpec { holder_identity: Some("(an unreadable record)".into()), ..LeaseSpec::default() };
    let prev = current.as_ref().map(|cm| {
        let annotated = cm.metadata.annotations.as_ref().is_some_and(|a| a.contains_key(RECORD));
        record_of(cm).or_else(|| annotated.then(|| unreadable.clone()))
    });
    let prev = prev.flatten();
    let version = current.as_ref().map(|cm| cm.metadata.resource_version.clone().unwrap_or_default());
    let seen = match (e.seen.lock(), version) {
        (Ok(mut last), Some(v)) => match &*last {
            Some((seen_v, at)) if *seen_v == v => *at,
            _ => {
                *last = Some((v, now));
                now
            }
        },
        _ => now,
    };
    let verdict = decide(prev.as_ref(), &e.identity, now, seen, e.lease_duration);
    if let Verdict::Follow(_) = verdict {
        return Ok(false);
    }
    let spec = next_spec(prev.as_ref(), &e.identity, now, e.lease_duration, &verdict);
    let result = match current {
        // replace carries the resourceVersion we read: a concurrent writer makes it conflict.
        Some(mut cm) => {
            set_record(&mut cm, &spec);
            api.replace(&e.name, &PostParams::default(), &cm).await.map(|_| ())
        }
        None => {
            let mut cm = ConfigMap::default();
            cm.metadata.name = Some(e.name.clone());
            cm.metadata.namespace = Some(e.namespace.clone());
            set_record(&mut cm, &spec);
            api.create(&PostParams::default(), &cm).await.map(|_| ())
        }
    };
    match result {
        Ok(()) => Ok(true),
        Err(KubeError::Api(s)) if s.code == 409 => Ok(false), // another replica won the race
        Err(err) => Err(err),
    }
}

/// Gives the record up when the leader stops of its own accord (SIGTERM), as client-go's
/// `ReleaseOnCancel` does: the holder is cleared and the record marked to expire in a second,
/// so a standby takes over at its next look instead of waiting it out. `Ok(false)` when this
/// replica no longer held it (nothing written).
pub async fn release(client: &Client, e: &Election, now: Timestamp) -> Result<bool, KubeError> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), &e.namespace);
    let Some(mut cm) = api.get_opt(&e.name).await? else { return Ok(false) };
    let Some(mut spec) = record_of(&cm).filter(|s| s.holder_identity.as_deref() == Some(e.identity.as_str())) else {
        return Ok(false);
    };
    spec.holder_identity = None;
    spec.lease_duration_seconds = Some(1);
    spec.renew_time = Some(MicroTime(now));
    set_record(&mut cm, &spec);
    match api.replace(&e.name, &PostParams::default(), &cm).await {
        Ok(_) => Ok(true),
        Err(KubeError::Api(s)) if s.code == 409 => Ok(false),
        Err(err) => Err(err),
    }
}

/// How long a leader may fail to renew before it stops: two thirds of the Lease, leaving the
/// last third for its work to stop before a standby can acquire the expired Lease.
pub fn renew_deadline(lease_duration: Duration) -> Duration {
    lease_duration * 2 / 3
}

/// Waits until this replica leads (looking every retry period), then runs `work` while
/// renewing the Lease every third of its duration, concurrently with it. Returns when `work`
/// ends (SIGTERM), after releasing the Lease; or with an error, having dropped `work` (and
/// with it every leader-only task it holds), once the Lease could not be renewed within its
/// renew deadline: each renewal round is itself bounded by what is left of that deadline, so
/// an API server that stops answering cannot keep a leader acting past it. Two thirds of the
/// Lease, the deadline leaves the last third for the work to stop before a standby may take
/// the expired Lease, so two leaders never act at once.
pub async fn lead<F: std::future::Future<Output = ()>>(client: &Client, e: &Election, work: F) -> Result<(), String> {
    let retry = e.retry_period;
    let clock = Clock::new();
    tracing::info!(lease = %format!("{}/{}", e.namespace, e.name), identity = %e.identity, "waiting to lead");
    let mut said_error = false;
    loop {
        // A look that hangs is given up after a retry period and tried again.
        match tokio::time::timeout(retry.max(Duration::from_secs(1)), round(client, e, clock.now())).await {
            Ok(Ok(true)) => break,
            Ok(Ok(false)) => tokio::time::sleep(retry).await,
            Ok(Err(err)) => {
                if !said_error {
                    tracing::warn!(error = %err, "reading the leader Lease failed; trying again");
                    said_error = true;
                }
                tokio::time::sleep(retry).await;
            }
            Err(_) => {}
        }
    }
    tracing::info!(lease = %format!("{}/{}", e.namespace, e.name), identity = %e.identity, "leading");
    let stop = {
        tokio::pin!(work);
        tokio::select! {
            () = &mut work => None,
            lost = keep_renewing(client, e, clock) => Some(lost),
        }
        // `work` is dropped here, before anything else is written or returned.
    };
    match stop {
        Some(lost) => Err(lost),
        None => {
            match tokio::time::timeout(e.lease_duration / 3, release(client, e, clock.now())).await {
                Ok(Ok(true)) => {
                    tracing::info!(lease = %format!("{}/{}", e.namespace, e.name), "released the leader Lease")
                }
                Ok(Ok(false)) => {}
                // The Lease then expires by itself; a standby waits it out.
                Ok(Err(err)) => tracing::warn!(error = %err, "releasing the leader Lease failed"),
                Err(_) => tracing::warn!("releasing the leader Lease timed out"),
            }
            Ok(())
        }
    }
}

/// The wall time at start, advanced by the monotonic clock: a step of the system clock (NTP,
/// a resumed virtual machine) moves neither a record's age nor a deadline, as client-go's
/// elector measures them.
#[derive(Clone, Copy, Debug)]
struct Clock {
    wall: Timestamp,
    mono: tokio::time::Instant,
}

impl Clock {
    fn new() -> Self {
        Self { wall: Timestamp::now(), mono: tokio::time::Instant::now() }
    }

    fn now(&self) -> Timestamp {
        let since = SignedDuration::try_from(self.mono.elapsed()).unwrap_or(SignedDuration::ZERO);
        self.wall.checked_add(since).unwrap_or(self.wall)
    }
}

/// Renews the Lease every third of its duration (a retry period after a failed try) until it
/// cannot: returns why, at the latest at the renew deadline after the last successful renewal,
/// every wait and every round bounded by what is left of it.
async fn keep_renewing(client: &Client, e: &Election, clock: Clock) -> String {
    let deadline = renew_deadline(e.lease_duration);
    let mut last_renewed = tokio::time::Instant::now();
    let mut wait = e.lease_duration / 3;
    let mut last_error = String::new();
    loop {
        tokio::time::sleep(wait.min(deadline.saturating_sub(last_renewed.elapsed()))).await;
        let left = deadline.saturating_sub(last_renewed.elapsed());
        if left.is_zero() {
            return format!(
                "could not renew the leader Lease {}/{} within its renew deadline ({deadline:?}): {last_error}",
                e.namespace, e.name
            );
        }
        match tokio::time::timeout(left, round(client, e, clock.now())).await {
            Ok(Ok(true)) => {
                last_renewed = tokio::time::Instant::now();
                wait = e.lease_duration / 3;
            }
            Ok(Ok(false)) => return format!("lost the leader Lease {}/{} to another replica", e.namespace, e.name),
            Ok(Err(err)) => {
                last_error = err.to_string();
                wait = e.retry_period;
            }
            Err(_) => {
                return format!(
                    "renewing the leader Lease {}/{} got no answer within its renew deadline ({deadline:?})",
                    e.namespace, e.name
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> Timestamp {
        Timestamp::UNIX_EPOCH + SignedDuration::from_secs(s)
    }

    fn held(by: &str, renewed: i64) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(by.into()),
            renew_time: Some(MicroTime(t(renewed))),
            lease_duration_seconds: Some(15),
            ..Default::default()
        }
    }

    #[test]
    fn a_missing_free_or_expired_lease_is_acquired() {
        let d = Duration::from_secs(15);
        assert_eq!(decide(None, "a", t(100), t(100), d), Verdict::Acquire);
        assert_eq!(decide(Some(&LeaseSpec::default()), "a", t(100), t(100), d), Verdict::Acquire);
        assert_eq!(
            decide(Some(&held("b", 80)), "a", t(100), t(80), d),
            Verdict::Acquire,
            "unchanged for 20 s with a 15 s lease"
        );
    }

    #[test]
    fn a_live_lease_of_another_replica_is_followed_until_it_expires() {
        assert_eq!(
            decide(Some(&held("b", 95)), "a", t(100), t(95), Duration::from_secs(15)),
            Verdict::Follow(Duration::from_secs(10))
        );
        assert_eq!(decide(Some(&held("a", 95)), "a", t(100), t(95), Duration::from_secs(15)), Verdict::Renew);
    }

    #[test]
    fn acquiring_counts_a_transition_and_renewing_does_not() {
        let d = Duration::from_secs(15);
        let prev = held("b", 80);
        let acquired = next_spec(Some(&prev), "a", t(100), d, &Verdict::Acquire);
        assert_eq!(acquired.holder_identity.as_deref(), Some("a"));
        assert_eq!(acquired.lease_transitions, Some(1));
        assert_eq!(acquired.acquire_time, Some(MicroTime(t(100))));
        let renewed = next_spec(Some(&acquired), "a", t(105), d, &Verdict::Renew);
        assert_eq!(renewed.lease_transitions, Some(1));
        assert_eq!(renewed.acquire_time, Some(MicroTime(t(100))));
        assert_eq!(renewed.renew_time, Some(MicroTime(t(105))));
        assert_eq!(next_spec(None, "a", t(1), d, &Verdict::Acquire).lease_transitions, Some(0));
    }

    #[test]
    fn no_record_can_freeze_the_election_or_panic_it() {
        let d = Duration::from_secs(15);
        // A renewTime at the end of time, a lease of 68 years: held to MAX_LEASE from when
        // this replica saw it, and no arithmetic overflows.
        let frozen = LeaseSpec {
            holder_identity: Some("b".into()),
            renew_time: Some(MicroTime("9999-12-30T21:59:59Z".parse().unwrap())),
            lease_duration_seconds: Some(i32::MAX),
            ..Default::default()
        };
        assert_eq!(decide(Some(&frozen), "a", t(100), t(100), d), Verdict::Follow(MAX_LEASE));
        let later = t(100) + SignedDuration::try_from(MAX_LEASE).unwrap();
        assert_eq!(decide(Some(&frozen), "a", later, t(100), d), Verdict::Acquire);
        let end = Timestamp::MAX;
        assert!(matches!(decide(Some(&frozen), "a", end, end, d), Verdict::Follow(_) | Verdict::Acquire));
        // Negative durations: expired at once.
        let negative = LeaseSpec { lease_duration_seconds: Some(-5), ..frozen.clone() };
        assert_eq!(decide(Some(&negative), "a", t(100), t(100), d), Verdict::Follow(d));
        // A renewTime from a clock running ahead cannot cut a live leader short, nor one
        // behind keep a dead one: only the time this replica saw the record counts.
        let behind = LeaseSpec { renew_time: Some(MicroTime(t(0))), lease_duration_seconds: Some(15), ..frozen };
        assert_eq!(decide(Some(&behind), "a", t(100), t(95), d), Verdict::Follow(Duration::from_secs(10)));
    }

    use http::{Method, Request, Response};
    use kube::client::Body;

    fn election() -> Election {
        Election::new("vigil-system", "leader", "a")
    }

    fn reply(status: u16, v: serde_json::Value) -> Response<Body> {
        Response::builder().status(status).body(Body::from(serde_json::to_vec(&v).unwrap())).unwrap()
    }

    fn lease_json(holder: &str, renewed: &str) -> serde_json::Value {
        let record = serde_json::json!({"holderIdentity": holder, "renewTime": renewed, "leaseDurationSeconds": 15, "leaderTransitions": 0});
        serde_json::json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "leader", "namespace": "vigil-system", "resourceVersion": "7",
                         "annotations": {RECORD: record.to_string()}},
        })
    }

    /// The record a written ConfigMap carries.
    fn record(body: &serde_json::Value) -> serde_json::Value {
        serde_json::from_str(body["metadata"]["annotations"][RECORD].as_str().unwrap()).unwrap()
    }

    fn not_found() -> Response<Body> {
        reply(
            404,
            serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404, "message": "not found"}),
        )
    }

    /// Plays the API server for an acquisition: no record yet, then the one created.
    async fn acquired(handle: &mut tower_test::mock::Handle<Request<Body>, Response<Body>>) {
        let (_, send) = handle.next_request().await.unwrap();
        send.send_response(not_found());
        let (req, send) = handle.next_request().await.unwrap();
        let body: serde_json::Value = serde_json::from_slice(&req.into_body().collect_bytes().await.unwrap()).unwrap();
        send.send_response(reply(201, body));
    }

    #[tokio::test]
    async fn rounds_create_a_missing_lease_follow_a_live_one_and_lose_a_race_gracefully() {
        let (svc, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let client = Client::new(svc, "default");
        let server = tokio::spawn(async move {
            // 1. No Lease: created with us as holder.
            let (req, send) = handle.next_request().await.unwrap();
            assert_eq!(
                (req.method(), req.uri().path()),
                (&Method::GET, "/api/v1/namespaces/vigil-system/configmaps/leader")
            );
            send.send_response(not_found());
            let (req, send) = handle.next_request().await.unwrap();
            assert_eq!(req.method(), Method::POST);
            let body: serde_json::Value =
                serde_json::from_slice(&req.into_body().collect_bytes().await.unwrap()).unwrap();
            assert_eq!(record(&body)["holderIdentity"], "a");
            send.send_response(reply(201, body));
            // 2. Held by b, first seen now: no write at all.
            let (_, send) = handle.next_request().await.unwrap();
            send.send_response(reply(200, lease_json("b", "2026-01-05T00:00:09.000000Z")));
            // 3. Held by b, unchanged since: expired, we replace it with its resourceVersion, and
            // b got there first (409). Its renewTime (another clock) plays no part.
            let (_, send) = handle.next_request().await.unwrap();
            send.send_response(reply(200, lease_json("b", "2026-01-05T00:00:00.000000Z")));
            let (req, send) = handle.next_request().await.unwrap();
            assert_eq!(req.method(), Method::PUT);
            let body: serde_json::Value =
                serde_json::from_slice(&req.into_body().collect_bytes().await.unwrap()).unwrap();
            assert_eq!(body["metadata"]["resourceVersion"], "7");
            assert_eq!(record(&body)["leaderTransitions"], 1);
            send.send_response(reply(409, serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Conflict", "code": 409, "message": "conflict"})));
        });
        let e = election();
        let now: Timestamp = "2026-01-05T00:00:10Z".parse().unwrap();
        assert!(round(&client, &e, now).await.unwrap(), "created: leading");
        assert!(!round(&client, &e, now).await.unwrap(), "following a live lease");
        // Unchanged (the same resourceVersion) for 16 s on this replica's clock: expired.
        let later: Timestamp = "2026-01-05T00:00:26Z".parse().unwrap();
        assert!(!round(&client, &e, later).await.unwrap(), "lost the race");
        server.await.unwrap();
    }

    #[tokio::test]
    async fn a_leader_told_to_stop_releases_its_lease_and_a_standby_takes_it_at_once() {
        let (svc, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let client = Client::new(svc, "default");
        let released = tokio::spawn(async move {
            // Acquire: no Lease yet, created.
            acquired(&mut handle).await;
            // The work ends (SIGTERM): the Lease is read and written back without a holder.
            let (req, send) = handle.next_request().await.unwrap();
            assert_eq!(req.method(), Method::GET);
            send.send_response(reply(200, lease_json("a", "2026-01-05T00:00:09.000000Z")));
            let (req, send) = handle.next_request().await.unwrap();
            assert_eq!(req.method(), Method::PUT);
            let body: serde_json::Value =
                serde_json::from_slice(&req.into_body().collect_bytes().await.unwrap()).unwrap();
            send.send_response(reply(200, body.clone()));
            body
        });
        let work_ran = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = work_ran.clone();
        lead(&client, &election(), async move { flag.store(true, std::sync::atomic::Ordering::SeqCst) }).await.unwrap();
        assert!(work_ran.load(std::sync::atomic::Ordering::SeqCst));
        let body = released.await.unwrap();
        assert_eq!(body["metadata"]["resourceVersion"], "7", "written over what was read");
        assert_eq!(record(&body)["holderIdentity"], "", "{body}");
        assert_eq!(record(&body)["leaseDurationSeconds"], 1);
        // A standby looking a moment later acquires it, though it was renewed just now.
        let spec = record_of(&serde_json::from_value(body.clone()).unwrap()).unwrap();
        let now: Timestamp = "2026-01-05T00:00:10Z".parse().unwrap();
        assert_eq!(decide(Some(&spec), "b", now, now, Duration::from_secs(15)), Verdict::Acquire);
    }

    #[tokio::test(start_paused = true)]
    async fn a_renewal_that_hangs_ends_leadership_and_every_leader_only_task_within_the_lease() {
        let (svc, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let client = Client::new(svc, "default");
        let (hung_tx, hung) = tokio::sync::oneshot::channel();
        let server = tokio::spawn(async move {
            // Acquired: no Lease yet, created.
            acquired(&mut handle).await;
            // The first renewal's read is never answered: the API server has stopped
            // answering this replica (the response is held, not dropped).
            let (req, send) = handle.next_request().await.unwrap();
            assert_eq!(req.method(), Method::GET);
            let _ = hung_tx.send(tokio::time::Instant::now());
            std::future::pending::<()>().await;
            drop(send);
        });
        // The leader-only work: a task of its own (as the janitor and the reporting are) and
        // the work future itself, neither of which ends by itself.
        let (ended_tx, ended) = tokio::sync::oneshot::channel::<()>();
        struct Ended(Option<tokio::sync::oneshot::Sender<()>>);
        impl Drop for Ended {
            fn drop(&mut self) {
                if let Some(tx) = self.0.take() {
                    let _ = tx.send(());
                }
            }
        }
        let work = async move {
            let _task = crate::controller::AbortOnDrop(tokio::spawn(async move {
                let _ended = Ended(Some(ended_tx));
                std::future::pending::<()>().await;
            }));
            std::future::pending::<()>().await;
        };
        let e = election();
        let started = tokio::time::Instant::now();
        let result = tokio::time::timeout(e.lease_duration * 4, lead(&client, &e, work))
            .await
            .expect("a leader whose renewal hangs still leads");
        let stopped = tokio::time::Instant::now();
        let err = result.unwrap_err();
        assert!(err.contains("no answer within its renew deadline"), "{err}");
        let hung_at = hung.await.unwrap();
        // The last renewal was at the start; the Lease would expire a lease duration later.
        assert!(stopped.duration_since(started) < e.lease_duration, "stopped after {:?}", stopped - started);
        assert!(stopped >= hung_at);
        // The leader-only task has ended too, before a standby could take the Lease.
        tokio::time::timeout(Duration::from_secs(1), ended).await.expect("the leader-only task still runs").unwrap();
        assert!(tokio::time::Instant::now().duration_since(started) < e.lease_duration);
        server.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn a_leader_whose_renewals_fail_stops_at_its_renew_deadline() {
        let (svc, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let client = Client::new(svc, "default");
        let server = tokio::spawn(async move {
            acquired(&mut handle).await;
            // Every renewal after that fails at once.
            while let Some((_, send)) = handle.next_request().await {
                send.send_response(reply(500, serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "InternalError", "code": 500, "message": "etcd down"})));
            }
        });
        let e = election();
        let started = tokio::time::Instant::now();
        let err = tokio::time::timeout(e.lease_duration * 4, lead(&client, &e, std::future::pending::<()>()))
            .await
            .expect("a leader whose renewals fail still leads")
            .unwrap_err();
        let took = started.elapsed();
        assert!(err.contains("renew deadline") && err.contains("etcd down"), "{err}");
        assert!(took <= renew_deadline(e.lease_duration) + Duration::from_millis(50), "stopped after {took:?}");
        server.abort();
    }

    #[tokio::test]
    async fn a_replica_that_no_longer_holds_the_lease_does_not_release_it() {
        let (svc, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let client = Client::new(svc, "default");
        let server = tokio::spawn(async move {
            let (_, send) = handle.next_request().await.unwrap();
            send.send_response(reply(200, lease_json("b", "2026-01-05T00:00:09.000000Z")));
            // No write follows: with the mock's other end gone, a second request would fail
            // and `release` return an error.
        });
        let now: Timestamp = "2026-01-05T00:00:10Z".parse().unwrap();
        assert!(!release(&client, &election(), now).await.unwrap());
        server.await.unwrap();
    }
}
