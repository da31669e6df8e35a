//! Node conditions from events: the kernel problems a person or a remediation controller acts
//! on, as conditions on the agent's own Node that also clear. node-problem-detector's
//! conditions are set and never cleared for some problems; here every condition clears when
//! its cause has not recurred for `clearAfter`, and the clock's as soon as it is synchronised.
//!
//! | condition | set by | cleared |
//! | --- | --- | --- |
//! | `KernelDeadlock` | `kernel.lockup`; `kernel.hung_task` of the kubelet or a container runtime outside every pod, or of 3 distinct tasks within 10 minutes (one slow volume is an event, not a node problem) | no recurrence for `clearAfter` (the kernel stops reporting hung tasks after `kernel.hung_task_warnings`, 10 by default) |
//! | `ReadonlyFilesystem` | `kernel.fs_readonly` | the device no longer mounted read-only, then no recurrence for `clearAfter` |
//! | `FrequentOOMKills` | `oomKills` OOM kills within `oomWindow` | no OOM kill for `clearAfter` |
//! | `DiskIOErrors` | `kernel.io_error`, `kernel.fs_error` (not warnings), `kernel.disk_timeout` | no recurrence for `clearAfter` |
//! | `ClockUnsynchronized` | `clock.unsynchronized` | `clock.synchronized` |
//! | `ConntrackFull` | `kernel.conntrack_full` | no recurrence for `clearAfter` |
//! | `FrequentUnregisterNetDevice` | `unregisterNetDevice` `kernel.netdev_stuck` within `unregisterNetDeviceWindow` | none for `clearAfter` |
//! | `KubeletUnhealthy` | the kubelet's `/healthz` failing 3 looks in a row | the first healthy look |
//! | `FrequentKubeletRestart`, `FrequentContainerdRestart` | `serviceRestarts` `service.started` of the unit within `serviceRestartWindow`, none preceded by `service.stopping` | none for `clearAfter` |
//!
//! Pure: events and the time in, conditions out; the daemon writes them.

use std::collections::VecDeque;

use vigil_crds::agent::NODE_CONDITIONS;

use super::{Event, EventType};
use vigil_agent_config::NodeConditions;

/// One condition as it goes on the Node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Condition {
    /// The type (one of [`NODE_CONDITIONS`]).
    pub kind: &'static str,
    /// Whether the problem is there.
    pub active: bool,
    /// One word (CamelCase): why.
    pub reason: String,
    /// What happened and what to do, for a person.
    pub message: String,
    /// When `active` last changed.
    pub since: jiff::Timestamp,
}

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct State {
    active: bool,
    reason: String,
    message: String,
    since: jiff::Timestamp,
    last_cause: Option<jiff::Timestamp>,
}

// Each condition's place in [`NODE_CONDITIONS`].
const KERNEL_DEADLOCK: usize = 0;
const READONLY: usize = 1;
const FREQUENT_OOM: usize = 2;
const DISK_IO: usize = 3;
const CLOCK: usize = 4;
const CONNTRACK: usize = 5;
const UNREGISTER: usize = 6;
const KUBELET_RESTART: usize = 7;
const CONTAINERD_RESTART: usize = 8;
const KUBELET_HEALTH: usize = 9;
/// Failed looks in a row at the kubelet's health that make `KubeletUnhealthy` (one failed
/// look is a slow answer; three, at the agent's 10 s interval, half a minute).
const KUBELET_FAILURES: u32 = 3;
/// Hung-task reports of workloads' tasks within [`HUNG_TASK_WINDOW`] that make
/// `KernelDeadlock` (one of the node's own daemons makes it at once).
const HUNG_TASKS: usize = 3;
const HUNG_TASK_WINDOW: std::time::Duration = std::time::Duration::from_secs(600);

/// Whether a hung task is one of the daemons the node needs to run pods (a hung kubelet or
/// container runtime is a node that no longer starts or stops anything). A name is any
/// process's choice: the task must also be known to run outside every pod (its cgroup read
/// from `/proc` while it hung, not under `kubepods` and no container's).
fn is_node_daemon(e: &Event) -> bool {
    let named = e.detail_str("comm").is_some_and(|c| ["kubelet", "containerd", "dockerd", "crio"].contains(&c));
    let outside_pods = e
        .detail_str("cgroup")
        .is_some_and(|c| !c.contains("kubepods") && !c.contains("/docker/") && !c.contains("libpod"))
        && e.detail_str("containerId").is_none();
    named && outside_pods
}

/// Times of recent occurrences within a window (at most 1,024 kept).
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct Recent(VecDeque<jiff::Timestamp>);

impl Recent {
    /// Adds one at `at`; how many fall within `window` of it.
    fn add(&mut self, at: jiff::Timestamp, window: std::time::Duration) -> usize {
        // The same record read twice (a journal re-read after a hard stop) is one.
        if self.0.contains(&at) {
            return self.trim(at, window);
        }
        self.0.push_back(at);
        self.trim(at, window)
    }

    fn trim(&mut self, at: jiff::Timestamp, window: std::time::Duration) -> usize {
        let window = jiff::SignedDuration::try_from(window).unwrap_or(jiff::SignedDuration::MAX);
        while self.0.front().is_some_and(|t| at.duration_since(*t) > window) {
            self.0.pop_front();
        }
        while self.0.len() > 1024 {
            self.0.pop_front();
        }
        self.0.len()
    }
}

/// The conditions of one node.
#[derive(Debug)]
pub struct Conditions {
    config: NodeConditions,
    states: [State; NODE_CONDITIONS.len()],
    ooms: Recent,
    unregisters: Recent,
    /// Reports of hung workload tasks, each task once.
    hung: Recent,
    /// The tasks (pids) counted in `hung`, and when.
    hung_pids: VecDeque<(jiff::Timestamp, i64)>,
    /// Starts of the kubelet and of containerd that no stop preceded, and whether a stop is
    /// pending for each.
    restarts: [Recent; 2],
    stopping: [bool; 2],
    /// Failed looks in a row at the kubelet's `/healthz`.
    kubelet_failures: u32,
    /// Whether the kubelet ever answered: after that, nothing listening is a kubelet down.
    kubelet_seen: bool,
    /// The devices the kernel said went read-only (their kernel names, `sda1`), while
    /// `ReadonlyFilesystem` is set.
    readonly: std::collections::BTreeSet<String>,
}

/// What [`Conditions::save`] keeps for the next agent on this node: every condition by its
/// name, and what the counted ones have counted so far.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Saved {
    /// The boot the conditions are of (`/proc/sys/kernel/random/boot_id`).
    boot_id: String,
    conditions: std::collections::BTreeMap<String, State>,
    ooms: Recent,
    unregisters: Recent,
    #[serde(default)]
    hung: Recent,
    #[serde(default)]
    hung_pids: VecDeque<(jiff::Timestamp, i64)>,
    restarts: [Recent; 2],
    stopping: [bool; 2],
    kubelet_seen: bool,
    readonly: std::collections::BTreeSet<String>,
}

fn clear_reason(kind: &str) -> &'static str {
    match kind {
        "KernelDeadlock" => "KernelHasNoDeadlock",
        "ReadonlyFilesystem" => "FilesystemIsNotReadOnly",
        "FrequentOOMKills" => "NoFrequentOOMKills",
        "DiskIOErrors" => "NoDiskIOErrors",
        "ConntrackFull" => "ConntrackHasRoom",
        "FrequentUnregisterNetDevice" => "NoFrequentUnregisterNetDevice",
        "FrequentKubeletRestart" => "NoFrequentKubeletRestart",
        "FrequentContainerdRestart" => "NoFrequentContainerdRestart",
        "KubeletUnhealthy" => "KubeletIsHealthy",
        _ => "ClockSynchronized",
    }
}

fn clear_message(kind: &str) -> &'static str {
    match kind {
        "KernelDeadlock" => "no hung task or CPU lockup recently",
        "ReadonlyFilesystem" => "no filesystem remounted read-only recently",
        "FrequentOOMKills" => "no frequent OOM kills recently",
        "DiskIOErrors" => "no disk I/O or filesystem errors recently",
        "ConntrackFull" => "the connection tracking table has not been full recently",
        "FrequentUnregisterNetDevice" => "no network device stuck unregistering recently",
        "FrequentKubeletRestart" => "the kubelet has not restarted frequently",
        "FrequentContainerdRestart" => "containerd has not restarted frequently",
        "KubeletUnhealthy" => "the kubelet answers its health check (or serves none to ask)",
        _ => "the clock is synchronised",
    }
}

impl Conditions {
    /// Every condition clear, as of `now`.
    pub fn new(config: NodeConditions, now: jiff::Timestamp) -> Self {
        let states = NODE_CONDITIONS.map(|k| State {
            active: false,
            reason: clear_reason(k).into(),
            message: clear_message(k).into(),
            since: now,
            last_cause: None,
        });
        Self {
            config,
            states,
            ooms: Recent::default(),
            unregisters: Recent::default(),
            hung: Recent::default(),
            hung_pids: VecDeque::new(),
            restarts: Default::default(),
            stopping: [false; 2],
            kubelet_failures: 0,
            kubelet_seen: false,
            readonly: Default::default(),
        }
    }

    /// What the next agent on this node needs to go on where this one stopped (an agent
    /// restarts on every rollout; a condition must not clear because of that), as JSON.
    pub fn save(&self, boot_id: &str) -> Vec<u8> {
        let saved = Saved {
            boot_id: boot_id.to_owned(),
            conditions: NODE_CONDITIONS.iter().map(|k| (*k).to_owned()).zip(self.states.iter().cloned()).collect(),
            ooms: Recent(self.ooms.0.clone()),
            unregisters: Recent(self.unregisters.0.clone()),
            hung: Recent(self.hung.0.clone()),
            hung_pids: self.hung_pids.clone(),
            restarts: [Recent(self.restarts[0].0.clone()), Recent(self.restarts[1].0.clone())],
            stopping: self.stopping,
            kubelet_seen: self.kubelet_seen,
            readonly: self.readonly.clone(),
        };
        serde_json::to_vec(&saved).unwrap_or_default()
    }

    /// The conditions an earlier agent saved (`save`), if they are of this boot (`boot_id`):
    /// a reboot ends a deadlock, a read-only remount and a crash loop, and the new boot starts
    /// clear. Conditions the file does not name start clear. `Err` says why `bytes` could not
    /// be read; the caller starts clear then.
    pub fn restore(config: NodeConditions, now: jiff::Timestamp, bytes: &[u8], boot_id: &str) -> Result<Self, String> {
        let mut c = Self::new(config, now);
        let saved: Saved = serde_json::from_slice(bytes).map_err(|e| format!("not saved conditions: {e}"))?;
        if saved.boot_id != boot_id {
            return Ok(c);
        }
        for (i, kind) in NODE_CONDITIONS.iter().enumerate() {
            if let Some(s) = saved.conditions.get(*kind) {
                // Nothing from the future: a saved time past `now` is a clock that went back.
                let s = State {
                    since: s.since.min(now),
                    last_cause: s.last_cause.map(|l| l.min(now)),
                    message: s.message.chars().take(1024).collect(),
                    reason: s.reason.chars().take(128).collect(),
                    ..s.clone()
                };
                c.states[i] = s;
            }
        }
        let cap = |r: Recent| Recent(r.0.into_iter().rev().take(1024).rev().collect());
        c.ooms = cap(saved.ooms);
        c.unregisters = cap(saved.unregisters);
        c.hung = cap(saved.hung);
        c.hung_pids = saved.hung_pids.into_iter().rev().take(1024).rev().collect();
        let [k, d] = saved.restarts;
        c.restarts = [cap(k), cap(d)];
        c.stopping = saved.stopping;
        c.kubelet_seen = saved.kubelet_seen;
        c.readonly = saved.readonly.into_iter().take(1024).collect();
        Ok(c)
    }

    /// Counts a hung-task report of task `pid` at `at`: how many distinct tasks hung within
    /// [`HUNG_TASK_WINDOW`] (the kernel reports one blocked task again every two minutes).
    fn hung_task(&mut self, at: jiff::Timestamp, pid: Option<i64>) -> usize {
        let window = jiff::SignedDuration::try_from(HUNG_TASK_WINDOW).unwrap_or(jiff::SignedDuration::MAX);
        self.hung_pids.retain(|(t, _)| at.duration_since(*t) <= window);
        if let Some(p) = pid {
            if self.hung_pids.iter().any(|(_, q)| *q == p) {
                return self.hung.trim(at, HUNG_TASK_WINDOW);
            }
            self.hung_pids.push_back((at, p));
            while self.hung_pids.len() > 1024 {
                self.hung_pids.pop_front();
            }
        }
        self.hung.add(at, HUNG_TASK_WINDOW)
    }

    fn set(&mut self, i: usize, at: jiff::Timestamp, reason: &str, message: String) {
        let s = &mut self.states[i];
        if !s.active {
            s.since = at;
        }
        s.active = true;
        s.reason = reason.into();
        s.message = message;
        s.last_cause = Some(s.last_cause.map_or(at, |l| l.max(at)));
    }

    fn clear(&mut self, i: usize, at: jiff::Timestamp) {
        let kind = NODE_CONDITIONS[i];
        let s = &mut self.states[i];
        if s.active {
            s.active = false;
            s.since = at;
            s.reason = clear_reason(kind).into();
            s.message = clear_message(kind).into();
        }
    }

    /// Takes one event into account, at its own time (never later than `now`: a record with
    /// a time in the future cannot hold a condition longer).
    ///
    /// A kernel log record written by a process (`userspace`: root may write to `/dev/kmsg`,
    /// and the kernel marks what it did not write itself), or one whose writer cannot be told
    /// (`writerUncertain`) sets nothing: a remediation controller drains nodes on these
    /// conditions, and only the kernel speaks for them.
    pub fn observe(&mut self, e: &Event, now: jiff::Timestamp) {
        let flag = |k: &str| e.details.get(k).and_then(serde_json::Value::as_bool) == Some(true);
        if flag("userspace") || flag("writerUncertain") {
            return;
        }
        let at = e.time.min(now);
        let what = |e: &Event| e.detail_str("line").map_or_else(|| e.message.clone(), str::to_owned);
        match e.kind {
            // One task of a workload blocked for two minutes (a slow NFS server, a throttled
            // volume) is an event; the node's own daemons hung, or hung tasks again and
            // again, are a node that no longer does its work.
            EventType::HungTask
                if !is_node_daemon(e)
                    && self.hung_task(at, e.detail_i64("pid")) < HUNG_TASKS
                    && !self.states[KERNEL_DEADLOCK].active => {}
            EventType::HungTask | EventType::Lockup => {
                let reason = if e.kind == EventType::HungTask { "HungTask" } else { "CPULockup" };
                let msg = format!(
                    "{} at {}: {}; tasks stuck in the kernel usually mean a storage or driver problem: drain the node and look at dmesg",
                    e.kind.as_str(),
                    at.round(jiff::Unit::Second).unwrap_or(at),
                    what(e)
                );
                self.set(KERNEL_DEADLOCK, at, reason, msg);
            }
            EventType::FsReadOnly => {
                let dev = e.detail_str("device").unwrap_or("?");
                let msg = format!(
                    "filesystem on {dev} remounted read-only at {}: {}; writes there fail until it is repaired (fsck) and remounted",
                    at.round(jiff::Unit::Second).unwrap_or(at),
                    what(e)
                );
                self.set(READONLY, at, "FilesystemIsReadOnly", msg);
                if let Some(d) = e.detail_str("device") {
                    self.readonly.insert(d.to_owned());
                }
            }
            EventType::OomKill => {
                let n = self.ooms.add(at, self.config.oom_window);
                if n >= self.config.oom_kills as usize {
                    let pod = match (e.detail_str("podNamespace"), e.detail_str("podName")) {
                        (Some(ns), Some(name)) => format!(", the last in pod {ns}/{name}"),
                        _ => String::new(),
                    };
                    let msg = format!(
                        "{} OOM kills within {}{pod} (the last killed {} pid {}); raise the memory limits of what is killed, or move work off this node",
                        n,
                        humantime::format_duration(self.config.oom_window),
                        e.detail_str("comm").unwrap_or("?"),
                        e.detail_i64("pid").map_or("?".into(), |p| p.to_string()),
                    );
                    self.set(FREQUENT_OOM, at, "FrequentOOMKills", msg);
                } else if self.states[FREQUENT_OOM].active {
                    // Still active: a further kill keeps it.
                    self.states[FREQUENT_OOM].last_cause = Some(at);
                }
            }
            // A filesystem's warning (ext4 warning, a btrfs checksum retried from a mirror) is
            // not yet an error of the disk.
            EventType::FsError if e.severity < crate::Severity::Critical => {}
            EventType::IoError | EventType::FsError | EventType::DiskTimeout => {
                let dev = e.detail_str("device").unwrap_or("?");
                let reason = match e.kind {
                    EventType::IoError => "DiskIOError",
                    EventType::DiskTimeout => "DiskTimeout",
                    _ => "FilesystemError",
                };
                let msg = format!(
                    "{} on {dev} at {}: {}; check the disk's health (smartctl, the cloud volume's status) before it fails",
                    e.kind.as_str(),
                    at.round(jiff::Unit::Second).unwrap_or(at),
                    what(e)
                );
                self.set(DISK_IO, at, reason, msg);
            }
            EventType::ClockUnsynchronized => {
                let msg = format!(
                    "the clock lost synchronisation at {}; certificates, leases and logs depend on it: check chrony or systemd-timesyncd",
                    at.round(jiff::Unit::Second).unwrap_or(at)
                );
                self.set(CLOCK, at, "ClockUnsynchronized", msg);
            }
            EventType::ClockSynchronized => self.clear(CLOCK, at),
            EventType::ConntrackFull => {
                let msg = format!(
                    "the connection tracking table was full at {}: the node dropped new connections; raise net.netfilter.nf_conntrack_max or find what opens so many",
                    at.round(jiff::Unit::Second).unwrap_or(at)
                );
                self.set(CONNTRACK, at, "ConntrackTableFull", msg);
            }
            // Only what journald vouched for: anyone may write `Started kubelet.service` to
            // syslog.
            EventType::ServiceStopping | EventType::ServiceStarted
                if e.details.get("writerVerified").and_then(serde_json::Value::as_bool) != Some(true) => {}
            EventType::ServiceStopping | EventType::ServiceStarted => {
                let (i, cond, name) = match e.detail_str("unit") {
                    Some("kubelet") => (0, KUBELET_RESTART, "the kubelet"),
                    Some("containerd") => (1, CONTAINERD_RESTART, "containerd"),
                    _ => return,
                };
                if e.kind == EventType::ServiceStopping {
                    self.stopping[i] = true;
                    return;
                }
                // A start after a stop is a person's or a tool's restart; one without is a
                // crash or a kill that systemd started again.
                if std::mem::take(&mut self.stopping[i]) {
                    return;
                }
                let n = self.restarts[i].add(at, self.config.service_restart_window);
                if n >= self.config.service_restarts as usize {
                    let msg = format!(
                        "{name} started {n} times within {} without being stopped first (it crashes or is killed): look at its journal (journalctl -u {})",
                        humantime::format_duration(self.config.service_restart_window),
                        e.detail_str("unit").unwrap_or("?"),
                    );
                    let reason = if i == 0 { "FrequentKubeletRestart" } else { "FrequentContainerdRestart" };
                    self.set(cond, at, reason, msg);
                } else if self.states[cond].active {
                    self.states[cond].last_cause = Some(at);
                }
            }
            EventType::NetdevStuck => {
                let n = self.unregisters.add(at, self.config.unregister_net_device_window);
                if n >= self.config.unregister_net_device as usize {
                    let msg = format!(
                        "{n} reports of a network device stuck unregistering within {} (the last of {}): network namespaces of deleted pods are not freed; a kernel or CNI leak, often cleared only by a reboot",
                        humantime::format_duration(self.config.unregister_net_device_window),
                        e.detail_str("interface").unwrap_or("?"),
                    );
                    self.set(UNREGISTER, at, "UnregisterNetDevice", msg);
                } else if self.states[UNREGISTER].active {
                    self.states[UNREGISTER].last_cause = Some(at);
                }
            }
            _ => {}
        }
    }

    /// One look at the kubelet's health (`events::health`): unhealthy after
    /// [`KUBELET_FAILURES`] failed looks in a row, healthy again at the first good one. No
    /// kubelet listening (a host without one, or one serving its health elsewhere) says
    /// nothing either way.
    pub fn observe_kubelet(&mut self, health: &super::health::Health, now: jiff::Timestamp) {
        use super::health::Health;
        match health {
            Health::Healthy => {
                self.kubelet_failures = 0;
                self.kubelet_seen = true;
                self.clear(KUBELET_HEALTH, now);
            }
            Health::Absent if !self.kubelet_seen => self.kubelet_failures = 0,
            Health::Absent | Health::Unhealthy(_) => {
                let why = match health {
                    Health::Unhealthy(why) => why.as_str(),
                    _ => "nothing listens on its health port any more",
                };
                self.kubelet_failures = self.kubelet_failures.saturating_add(1);
                if self.kubelet_failures >= KUBELET_FAILURES {
                    let msg = format!(
                        "the kubelet's health check failed {} times in a row (last: {why}); pods on this node are not being looked after: journalctl -u kubelet",
                        self.kubelet_failures
                    );
                    self.set(KUBELET_HEALTH, now, "KubeletUnhealthy", msg);
                }
            }
        }
    }

    /// What the mounts say now, as `(device, read_only)` of each mounted filesystem (`/dev/sda1`
    /// or `sda1`): a device the kernel remounted read-only that is still mounted read-only
    /// holds `ReadonlyFilesystem` (the kernel says it once, and it stays so until a person
    /// repairs and remounts it); one mounted read-write again no longer does.
    pub fn observe_mounts<'a>(&mut self, mounts: impl IntoIterator<Item = (&'a str, bool)>, now: jiff::Timestamp) {
        if !self.states[READONLY].active || self.readonly.is_empty() {
            return;
        }
        let name = |d: &'a str| d.rsplit('/').next().unwrap_or(d);
        let mut still = false;
        let mut seen = std::collections::BTreeSet::new();
        for (device, ro) in mounts {
            let n = name(device);
            if self.readonly.contains(n) {
                seen.insert(n.to_owned());
                still |= ro;
            }
        }
        if still {
            self.states[READONLY].last_cause = Some(now);
        } else {
            // Mounted read-write again, or no longer mounted: the quiet time runs from the
            // last report, as for any other condition.
            self.readonly.retain(|d| !seen.contains(d));
        }
    }

    /// The conditions as of `now`: those whose cause has not recurred for `clearAfter`
    /// cleared (the clock's only by synchronisation).
    pub fn current(&mut self, now: jiff::Timestamp) -> Vec<Condition> {
        let clear_after = jiff::SignedDuration::try_from(self.config.clear_after).unwrap_or(jiff::SignedDuration::MAX);
        for i in (0..NODE_CONDITIONS.len()).filter(|i| *i != CLOCK && *i != KUBELET_HEALTH) {
            if let Some(last) = self.states[i].last_cause
                && self.states[i].active
                && now.duration_since(last) >= clear_after
            {
                self.clear(i, last.checked_add(clear_after).unwrap_or(now));
                match i {
                    READONLY => self.readonly.clear(),
                    FREQUENT_OOM => self.ooms.0.clear(),
                    UNREGISTER => self.unregisters.0.clear(),
                    KERNEL_DEADLOCK => {
                        self.hung.0.clear();
                        self.hung_pids.clear();
                    }
                    KUBELET_RESTART => self.restarts[0].0.clear(),
                    CONTAINERD_RESTART => self.restarts[1].0.clear(),
                    _ => {}
                }
            }
        }
        NODE_CONDITIONS
            .iter()
            .zip(&self.states)
            .map(|(kind, s)| Condition {
                kind,
                active: s.active,
                reason: s.reason.clone(),
                message: s.message.chars().take(1024).collect(),
                since: s.since,
            })
            .collect()
    }
}

/// The strategic-merge patch of a Node's status that sets `conditions` (merged by type: the
/// kubelet's and other writers' conditions are untouched).
pub fn status_patch(conditions: &[Condition], now: jiff::Timestamp) -> serde_json::Value {
    let list: Vec<serde_json::Value> = conditions
        .iter()
        .map(|c| {
            serde_json::json!({
                "type": c.kind,
                "status": if c.active { "True" } else { "False" },
                "reason": c.reason,
                "message": c.message,
                "lastTransitionTime": c.since.round(jiff::Unit::Second).unwrap_or(c.since).to_string(),
                "lastHeartbeatTime": now.round(jiff::Unit::Second).unwrap_or(now).to_string(),
            })
        })
        .collect();
    serde_json::json!({"status": {"conditions": list}})
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn t(s: i64) -> jiff::Timestamp {
        jiff::Timestamp::from_second(1_800_000_000 + s).unwrap()
    }

    fn ev(kind: EventType, at: i64) -> Event {
        Event::new(kind, t(at), "m").with("device", "sdb").with("comm", "java").with("pid", 7)
    }

    fn by_kind<'a>(c: &'a [Condition], kind: &str) -> &'a Condition {
        c.iter().find(|c| c.kind == kind).unwrap()
    }

    #[test]
    fn every_condition_starts_clear_and_is_set_by_its_events() {
        let mut c = Conditions::new(NodeConditions::default(), t(0));
        let now = c.current(t(0));
        assert_eq!(now.len(), NODE_CONDITIONS.len());
        assert!(now.iter().all(|c| !c.active && c.since == t(0)));
        for (kind, event) in [
            ("KernelDeadlock", EventType::Lockup),
            ("ReadonlyFilesystem", EventType::FsReadOnly),
            ("DiskIOErrors", EventType::IoError),
            ("ClockUnsynchronized", EventType::ClockUnsynchronized),
        ] {
            c.observe(&ev(event, 10), t(10));
            let cond = c.current(t(11));
            let cond = by_kind(&cond, kind);
            assert!(cond.active, "{kind}");
            assert_eq!(cond.since, t(10));
            assert!(!cond.message.is_empty());
        }
        assert!(by_kind(&c.current(t(11)), "DiskIOErrors").message.contains("sdb"));
    }

    #[test]
    fn a_condition_clears_when_its_cause_has_not_recurred_and_a_recurrence_holds_it() {
        let cfg = NodeConditions { clear_after: Duration::from_secs(600), ..NodeConditions::default() };
        let mut c = Conditions::new(cfg, t(0));
        c.observe(&ev(EventType::FsReadOnly, 100), t(100));
        c.observe(&ev(EventType::FsReadOnly, 500), t(500));
        assert!(by_kind(&c.current(t(1000)), "ReadonlyFilesystem").active, "500 + 600 > 1000");
        let cleared = c.current(t(1100));
        let ro = by_kind(&cleared, "ReadonlyFilesystem");
        assert!(!ro.active);
        assert_eq!(ro.reason, "FilesystemIsNotReadOnly");
        assert_eq!(ro.since, t(1100), "cleared as of when the quiet time ran out");
        // The clock clears by synchronisation, not by time.
        c.observe(&ev(EventType::ClockUnsynchronized, 2000), t(2000));
        assert!(by_kind(&c.current(t(99_999)), "ClockUnsynchronized").active);
        c.observe(&ev(EventType::ClockSynchronized, 100_000), t(100_000));
        assert!(!by_kind(&c.current(t(100_001)), "ClockUnsynchronized").active);
    }

    #[test]
    fn oom_kills_make_a_condition_only_when_frequent() {
        let cfg = NodeConditions { oom_kills: 3, oom_window: Duration::from_secs(600), ..NodeConditions::default() };
        let mut c = Conditions::new(cfg, t(0));
        c.observe(&ev(EventType::OomKill, 0), t(0));
        c.observe(&ev(EventType::OomKill, 700), t(700));
        c.observe(&ev(EventType::OomKill, 800), t(800));
        assert!(!by_kind(&c.current(t(801)), "FrequentOOMKills").active, "the first fell out of the window");
        let oom = ev(EventType::OomKill, 900).with("podNamespace", "shop").with("podName", "api-1");
        c.observe(&oom, t(900));
        let now = c.current(t(901));
        let f = by_kind(&now, "FrequentOOMKills");
        assert!(f.active);
        assert!(f.message.starts_with("3 OOM kills within 10m, the last in pod shop/api-1"), "{}", f.message);
        assert!(!by_kind(&c.current(t(900 + 1800)), "FrequentOOMKills").active);
    }

    #[test]
    fn conntrack_and_stuck_devices_set_their_conditions_and_warnings_set_none() {
        let mut c = Conditions::new(NodeConditions::default(), t(0));
        c.observe(&ev(EventType::ConntrackFull, 10), t(10));
        let ct = c.current(t(11));
        assert_eq!(by_kind(&ct, "ConntrackFull").reason, "ConntrackTableFull");
        assert!(by_kind(&ct, "ConntrackFull").active);
        // Two stuck devices are no condition; the third within 20 minutes is.
        c.observe(&ev(EventType::NetdevStuck, 0), t(0));
        c.observe(&ev(EventType::NetdevStuck, 1300), t(1300));
        c.observe(&ev(EventType::NetdevStuck, 1400), t(1400));
        assert!(!by_kind(&c.current(t(1401)), "FrequentUnregisterNetDevice").active, "the first fell out of 20 min");
        c.observe(&ev(EventType::NetdevStuck, 1500), t(1500));
        assert!(by_kind(&c.current(t(1501)), "FrequentUnregisterNetDevice").active);
        assert!(!by_kind(&c.current(t(1500 + 1800)), "FrequentUnregisterNetDevice").active, "cleared");
        // A filesystem's warning is not a disk error; a disk timeout is.
        let mut c = Conditions::new(NodeConditions::default(), t(0));
        c.observe(&ev(EventType::FsError, 5).severity(crate::Severity::Warning), t(5));
        assert!(!by_kind(&c.current(t(6)), "DiskIOErrors").active);
        c.observe(&ev(EventType::DiskTimeout, 7), t(7));
        let d = c.current(t(8));
        assert_eq!(
            (by_kind(&d, "DiskIOErrors").active, by_kind(&d, "DiskIOErrors").reason.as_str()),
            (true, "DiskTimeout")
        );
    }

    #[test]
    fn a_filesystem_still_mounted_read_only_holds_its_condition_and_one_remounted_read_write_does_not() {
        let cfg = NodeConditions { clear_after: Duration::from_secs(600), ..NodeConditions::default() };
        let mut c = Conditions::new(cfg, t(0));
        c.observe(&ev(EventType::FsReadOnly, 100).with("device", "nvme0n1p2"), t(100));
        // The kernel said it once; the mounts say it every interval.
        for at in [700, 1300, 1900] {
            c.observe_mounts([("/dev/nvme0n1p2", true), ("/dev/sda1", false)], t(at));
            assert!(by_kind(&c.current(t(at)), "ReadonlyFilesystem").active, "at {at}");
        }
        // Repaired and remounted read-write: cleared a quiet time after the last sighting.
        c.observe_mounts([("/dev/nvme0n1p2", false)], t(2000));
        assert!(by_kind(&c.current(t(2400)), "ReadonlyFilesystem").active);
        assert!(!by_kind(&c.current(t(2600)), "ReadonlyFilesystem").active);
    }

    #[test]
    fn the_next_agent_goes_on_with_the_conditions_of_this_boot_and_a_reboot_starts_clear() {
        let config = NodeConditions::default();
        let mut c = Conditions::new(config.clone(), t(0));
        c.observe(&ev(EventType::Lockup, 100), t(100));
        c.observe(&ev(EventType::OomKill, 110), t(110));
        let before = c.current(t(120));
        let saved = c.save("boot-a");

        let mut next = Conditions::restore(config.clone(), t(130), &saved, "boot-a").unwrap();
        assert_eq!(next.current(t(130)), before, "a restart changes nothing");
        // The count goes on: the kills before the restart still count toward frequent.
        for at in 1..config.oom_kills {
            next.observe(&ev(EventType::OomKill, 110 + i64::from(at)), t(140));
        }
        assert!(by_kind(&next.current(t(140)), "FrequentOOMKills").active);
        // And the deadlock still clears when its time comes, not at the restart.
        let clear = 100 + i64::try_from(config.clear_after.as_secs()).unwrap();
        assert!(by_kind(&next.current(t(clear - 1)), "KernelDeadlock").active);
        assert!(!by_kind(&next.current(t(clear)), "KernelDeadlock").active);

        let rebooted = Conditions::restore(config.clone(), t(130), &saved, "boot-b").unwrap().current(t(130));
        assert!(rebooted.iter().all(|c| !c.active), "another boot starts clear");
        let err = Conditions::restore(config, t(130), b"{half", "boot-a").unwrap_err();
        assert!(err.contains("not saved conditions"), "{err}");
    }

    #[test]
    fn a_hung_kubelet_is_a_deadlock_at_once_and_a_hung_workload_task_only_when_it_recurs() {
        let hung = |comm: &str, pid: i64, at| {
            ev(EventType::HungTask, at).with("comm", comm).with("pid", pid).with("cgroup", "/system.slice/x.service")
        };
        let deadlock = |c: &mut Conditions, at| by_kind(&c.current(t(at)), "KernelDeadlock").active;
        let mut c = Conditions::new(NodeConditions::default(), t(0));
        c.observe(&hung("containerd", 1, 10), t(10));
        assert!(deadlock(&mut c, 10), "the runtime hung");

        // A pod's process that names itself so is no runtime; nor one whose cgroup is unknown.
        let mut c = Conditions::new(NodeConditions::default(), t(0));
        let pod = "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1.slice/cri-containerd-ab.scope";
        c.observe(&hung("kubelet", 2, 10).with("cgroup", pod), t(10));
        c.observe(&ev(EventType::HungTask, 11).with("comm", "kubelet").with("pid", 3), t(11));
        assert!(!deadlock(&mut c, 11), "a name is not a daemon");

        let mut c = Conditions::new(NodeConditions::default(), t(0));
        // One task reported again and again (every two minutes) is one task.
        for at in [10, 130, 250, 370, 490] {
            c.observe(&hung("nfs-reader", 40, at), t(at));
        }
        assert!(!deadlock(&mut c, 490), "one task hung for eight minutes: events only");
        c.observe(&hung("nfs-reader", 41, 500), t(500));
        assert!(!deadlock(&mut c, 500), "two tasks");
        c.observe(&hung("postgres", 42, 700), t(700));
        assert!(!deadlock(&mut c, 700), "the first fell out of the window");
        c.observe(&hung("postgres", 43, 750), t(750));
        assert!(deadlock(&mut c, 750), "three tasks within ten minutes");
    }

    #[test]
    fn kernel_records_a_process_wrote_set_no_condition() {
        let mut c = Conditions::new(NodeConditions::default(), t(0));
        for kind in [EventType::HungTask, EventType::IoError, EventType::ConntrackFull, EventType::FsReadOnly] {
            c.observe(&ev(kind, 10).with("userspace", true), t(10));
        }
        assert!(c.current(t(11)).iter().all(|c| !c.active), "forged records set nothing");
        c.observe(&ev(EventType::IoError, 12).with("userspace", false), t(12));
        assert!(by_kind(&c.current(t(13)), "DiskIOErrors").active, "the kernel's own do");
    }

    #[test]
    fn crashing_services_make_a_condition_and_restarts_by_a_person_do_not() {
        let mut c = Conditions::new(NodeConditions::default(), t(0));
        let svc = |kind, unit: &str, at| Event::new(kind, t(at), "m").with("unit", unit).with("writerVerified", true);
        // Five restarts by `systemctl restart` (stop, then start): no condition.
        for i in 0..5 {
            c.observe(&svc(EventType::ServiceStopping, "kubelet", i * 10), t(i * 10));
            c.observe(&svc(EventType::ServiceStarted, "kubelet", i * 10 + 1), t(i * 10 + 1));
        }
        assert!(!by_kind(&c.current(t(60)), "FrequentKubeletRestart").active);
        // Five starts with no stop (crashes): the condition, naming the unit.
        for i in 0..5 {
            c.observe(&svc(EventType::ServiceStarted, "kubelet", 100 + i * 60), t(100 + i * 60));
        }
        let now = c.current(t(400));
        let k = by_kind(&now, "FrequentKubeletRestart");
        assert!(k.active && k.message.contains("journalctl -u kubelet"), "{}", k.message);
        assert!(!by_kind(&now, "FrequentContainerdRestart").active, "the other unit's own count");
        assert!(!by_kind(&c.current(t(400 + 1800)), "FrequentKubeletRestart").active, "cleared");
        // `logger -t systemd` lines (unverified) count for nothing.
        for i in 0..5 {
            let forged = Event::new(EventType::ServiceStarted, t(4000 + i), "m")
                .with("unit", "containerd")
                .with("writerVerified", false);
            c.observe(&forged, t(4000 + i));
        }
        assert!(!by_kind(&c.current(t(4010)), "FrequentContainerdRestart").active);
        for i in 0..5 {
            c.observe(&svc(EventType::ServiceStarted, "containerd", 5000 + i), t(5000 + i));
        }
        assert!(by_kind(&c.current(t(5010)), "FrequentContainerdRestart").active);
    }

    #[test]
    fn the_kubelet_is_unhealthy_after_three_failed_looks_and_healthy_at_the_first_good_one() {
        use crate::health::Health;
        let mut c = Conditions::new(NodeConditions::default(), t(0));
        let bad = Health::Unhealthy("HTTP/1.1 500 Internal Server Error: [-]syncloop failed".into());
        c.observe_kubelet(&bad, t(10));
        c.observe_kubelet(&bad, t(20));
        assert!(!by_kind(&c.current(t(21)), "KubeletUnhealthy").active, "two slow answers are no problem");
        c.observe_kubelet(&Health::Healthy, t(30));
        c.observe_kubelet(&bad, t(40));
        c.observe_kubelet(&bad, t(50));
        assert!(!by_kind(&c.current(t(51)), "KubeletUnhealthy").active, "in a row");
        c.observe_kubelet(&bad, t(60));
        let k = c.current(t(61));
        let k = by_kind(&k, "KubeletUnhealthy");
        assert!(k.active && k.message.contains("syncloop failed"), "{}", k.message);
        assert!(by_kind(&c.current(t(100_000)), "KubeletUnhealthy").active, "holds until healthy, not by time");
        c.observe_kubelet(&Health::Absent, t(100_010));
        assert!(by_kind(&c.current(t(100_011)), "KubeletUnhealthy").active, "a kubelet gone stays unhealthy");
        c.observe_kubelet(&Health::Healthy, t(100_020));
        assert!(!by_kind(&c.current(t(100_021)), "KubeletUnhealthy").active);
        // A kubelet that answered once and then no longer listens: down, after three looks.
        for at in [100_030, 100_040, 100_050] {
            c.observe_kubelet(&Health::Absent, t(at));
        }
        assert!(by_kind(&c.current(t(100_051)), "KubeletUnhealthy").active);
        // A host that never had one: nothing.
        let mut fresh = Conditions::new(NodeConditions::default(), t(0));
        for at in [10, 20, 30, 40] {
            fresh.observe_kubelet(&Health::Absent, t(at));
        }
        assert!(!by_kind(&fresh.current(t(41)), "KubeletUnhealthy").active);
    }

    #[test]
    fn the_patch_sets_only_our_types_with_status_words() {
        let mut c = Conditions::new(NodeConditions::default(), t(0));
        c.observe(&ev(EventType::Lockup, 5), t(5));
        let p = status_patch(&c.current(t(6)), t(6));
        let list = p["status"]["conditions"].as_array().unwrap();
        assert_eq!(list.len(), NODE_CONDITIONS.len());
        let kd = list.iter().find(|c| c["type"] == "KernelDeadlock").unwrap();
        assert_eq!((kd["status"].as_str(), kd["reason"].as_str()), (Some("True"), Some("CPULockup")));
        assert!(list.iter().all(|c| NODE_CONDITIONS.contains(&c["type"].as_str().unwrap())));
    }
}
