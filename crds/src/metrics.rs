//! The agent's metric catalog: every series the agent exports on `/metrics` (and through
//! the alert rules' own per-process series), with its kind, unit, help and label keys.
//!
//! The agent names what it exports from here, `check-policy`, the agent's policy reload and
//! the operator's publication check alert rules against it, and the documentation's tables
//! are tested against it: a rule on a name the agent does not export is refused, with the
//! closest name that exists, instead of staying quiet for ever.
//!
//! Names follow Prometheus' conventions: `vigil_node_*` for the host, `vigil_agent_*` for
//! the agent itself, `vigil_process_*` for the per-process series only rules see; the base
//! unit as a suffix (`_seconds`, `_bytes`, `_ratio`) and `_total` on counters.

use std::fmt;

/// What a series is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A value that goes up and down.
    Gauge,
    /// A value that only goes up (reset by a restart); the exported name ends in `_total`.
    Counter,
    /// A distribution (`_bucket`, `_sum`, `_count`); rules do not read histograms.
    Histogram,
}

/// The base unit a name carries as its suffix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    /// `_seconds`.
    Seconds,
    /// `_bytes`.
    Bytes,
    /// `_ratio`: a share between 0 and 1.
    Ratio,
}

impl Unit {
    /// The suffix word, as OpenMetrics' `# UNIT` line gives it.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Seconds => "seconds",
            Self::Bytes => "bytes",
            Self::Ratio => "ratio",
        }
    }
}

/// One metric family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Metric {
    /// The family name without its unit or `_total` suffix (what an exposition library is
    /// given).
    pub family: &'static str,
    /// Gauge, counter or histogram.
    pub kind: Kind,
    /// The base unit, when the value has one.
    pub unit: Option<Unit>,
    /// One line for `# HELP`.
    pub help: &'static str,
    /// The label keys every series of the family carries.
    pub labels: &'static [&'static str],
}

impl Metric {
    /// The name of its samples as Prometheus stores them and alert rules select them:
    /// the family, the unit suffix, and `_total` for counters.
    pub fn name(&self) -> String {
        let mut n = String::from(self.family);
        if let Some(u) = self.unit {
            n.push('_');
            n.push_str(u.as_str());
        }
        if self.kind == Kind::Counter {
            n.push_str("_total");
        }
        n
    }
}

impl fmt::Display for Metric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

const FILESYSTEM: &[&str] = &["device", "mountpoint", "fstype"];
const DEVICE: &[&str] = &["device"];
const PROCESS_LABELS: &[&str] = &["pid", "command", "user"];

/// Time one snapshot of the host took.
pub const AGENT_SCAN_DURATION: Metric = Metric {
    family: "vigil_agent_scan_duration",
    kind: Kind::Histogram,
    unit: Some(Unit::Seconds),
    help: "Time one snapshot of the host took",
    labels: &[],
};
/// Snapshots of the host taken.
pub const AGENT_SCANS: Metric = Metric {
    family: "vigil_agent_scans",
    kind: Kind::Counter,
    unit: None,
    help: "Snapshots of the host taken",
    labels: &[],
};
/// Failed reads of host files by reader and kind.
pub const AGENT_READ_ERRORS: Metric = Metric {
    family: "vigil_agent_read_errors",
    kind: Kind::Counter,
    unit: None,
    help: "Failed reads of host files by reader and kind; a vanished process is normal",
    labels: &["reader", "kind"],
};
/// The agent's version.
pub const AGENT_BUILD_INFO: Metric = Metric {
    family: "vigil_agent_build_info",
    kind: Kind::Gauge,
    unit: None,
    help: "The agent's version",
    labels: &["version"],
};
/// The agent's resident memory.
pub const AGENT_RESIDENT_MEMORY: Metric = Metric {
    family: "vigil_agent_resident_memory",
    kind: Kind::Gauge,
    unit: Some(Unit::Bytes),
    help: "The agent's resident memory",
    labels: &[],
};
/// CPU time the agent used.
pub const AGENT_CPU: Metric = Metric {
    family: "vigil_agent_cpu",
    kind: Kind::Counter,
    unit: Some(Unit::Seconds),
    help: "CPU time the agent used",
    labels: &[],
};
/// When the latest snapshot was taken.
pub const AGENT_LAST_SCAN_TIMESTAMP: Metric = Metric {
    family: "vigil_agent_last_scan_timestamp",
    kind: Kind::Gauge,
    unit: Some(Unit::Seconds),
    help: "When the latest snapshot was taken",
    labels: &[],
};
/// Security events queued, by type and source.
pub const AGENT_EVENTS: Metric = Metric {
    family: "vigil_agent_events",
    kind: Kind::Counter,
    unit: None,
    help: "Security events queued, by type and source",
    labels: &["type", "source"],
};
/// Security events dropped by source and reason (rate_limited, queue_full, container_limited: one container's share used up).
pub const AGENT_EVENTS_DROPPED: Metric = Metric {
    family: "vigil_agent_events_dropped",
    kind: Kind::Counter,
    unit: None,
    help: "Security events dropped by source and reason (rate_limited, queue_full, container_limited: one container's share used up)",
    labels: &["source", "reason"],
};
/// Records the host lost before the agent read them, by source (a kernel buffer overflowed: kernel log sequence gaps, process connector overruns, inotify queue overflows).
pub const AGENT_EVENTS_LOST: Metric = Metric {
    family: "vigil_agent_events_lost",
    kind: Kind::Counter,
    unit: None,
    help: "Records the host lost before the agent read them, by source (a kernel buffer overflowed: kernel log sequence gaps, process connector overruns, inotify queue overflows)",
    labels: &["source"],
};
/// Lines or records of host input a source could not parse, by reason (cut, malformed, time, incomplete; each kept raw in an agent.unparsed event).
pub const AGENT_EVENTS_UNPARSED: Metric = Metric {
    family: "vigil_agent_events_unparsed",
    kind: Kind::Counter,
    unit: None,
    help: "Lines or records of host input a source could not parse, by reason (cut, malformed, time, incomplete; each kept raw in an agent.unparsed event)",
    labels: &["source", "reason"],
};
/// 1 for the state each event source is in (on, degraded, off); all 0 for a source not started.
pub const AGENT_EVENT_SOURCE_STATE: Metric = Metric {
    family: "vigil_agent_event_source_state",
    kind: Kind::Gauge,
    unit: None,
    help: "1 for the state each event source is in (on, degraded, off); all 0 for a source not started",
    labels: &["source", "state"],
};
/// Events waiting for the consumers.
pub const AGENT_EVENT_QUEUE_DEPTH: Metric = Metric {
    family: "vigil_agent_event_queue_depth",
    kind: Kind::Gauge,
    unit: None,
    help: "Events waiting for the consumers",
    labels: &[],
};
/// Events the queue holds at most.
pub const AGENT_EVENT_QUEUE_CAPACITY: Metric = Metric {
    family: "vigil_agent_event_queue_capacity",
    kind: Kind::Gauge,
    unit: None,
    help: "Events the queue holds at most",
    labels: &[],
};
/// Alerts firing now.
pub const AGENT_ALERTS_ACTIVE: Metric = Metric {
    family: "vigil_agent_alerts_active",
    kind: Kind::Gauge,
    unit: None,
    help: "Alerts firing now",
    labels: &[],
};
/// Alert rules in force.
pub const AGENT_ALERT_RULES: Metric = Metric {
    family: "vigil_agent_alert_rules",
    kind: Kind::Gauge,
    unit: None,
    help: "Alert rules in force",
    labels: &[],
};
/// Series of a rule whose detector is still learning its baseline: they are watched but not
/// yet judged.
pub const AGENT_ALERT_SERIES_LEARNING: Metric = Metric {
    family: "vigil_agent_alert_series_learning",
    kind: Kind::Gauge,
    unit: None,
    help: "Series of a rule whose detector is still learning its baseline and does not judge yet",
    labels: &["policy", "rule"],
};
/// Per series of an anomaly rule: its last score divided by the limit it fires at (1.0
/// fires), so a person sees how close a series is to alerting.
pub const AGENT_ALERT_RULE_SCORE: Metric = Metric {
    family: "vigil_agent_alert_rule_score",
    kind: Kind::Gauge,
    unit: None,
    help: "Per series of an anomaly rule: its last score divided by the limit it fires at (1.0 fires); series is the series' labels",
    labels: &["policy", "rule", "series"],
};
/// Alert state changes by state (firing, resolved).
pub const AGENT_ALERTS: Metric = Metric {
    family: "vigil_agent_alerts",
    kind: Kind::Counter,
    unit: None,
    help: "Alert state changes by state (firing, resolved)",
    labels: &["state"],
};
/// What the alert pipeline could not take, by reason (input_behind: samples or events while it was behind; spool_full: notifications).
pub const AGENT_ALERT_PIPELINE_DROPPED: Metric = Metric {
    family: "vigil_agent_alert_pipeline_dropped",
    kind: Kind::Counter,
    unit: None,
    help: "What the alert pipeline could not take, by reason (input_behind: samples or events while it was behind; spool_full: notifications)",
    labels: &["reason"],
};
/// Policy sets refused (the last good set stays).
pub const AGENT_ALERT_POLICY_RELOAD_ERRORS: Metric = Metric {
    family: "vigil_agent_alert_policy_reload_errors",
    kind: Kind::Counter,
    unit: None,
    help: "Policy sets refused (the last good set stays)",
    labels: &[],
};
/// 1 while the policies on disk are refused and the last good set is in force.
pub const AGENT_ALERT_POLICY_REFUSED: Metric = Metric {
    family: "vigil_agent_alert_policy_refused",
    kind: Kind::Gauge,
    unit: None,
    help: "1 while the policies on disk are refused and the last good set is in force",
    labels: &[],
};
/// Alerts no route took.
pub const AGENT_ALERTS_UNROUTED: Metric = Metric {
    family: "vigil_agent_alerts_unrouted",
    kind: Kind::Counter,
    unit: None,
    help: "Alerts no route took",
    labels: &[],
};
/// Notifications deferred by a rate limit.
pub const AGENT_ALERT_NOTIFICATIONS_RATE_LIMITED: Metric = Metric {
    family: "vigil_agent_alert_notifications_rate_limited",
    kind: Kind::Counter,
    unit: None,
    help: "Notifications deferred by a rate limit",
    labels: &[],
};
/// Alert states held back by a silence.
pub const AGENT_ALERTS_SILENCED: Metric = Metric {
    family: "vigil_agent_alerts_silenced",
    kind: Kind::Counter,
    unit: None,
    help: "Alert states held back by a silence",
    labels: &[],
};
/// Notifications waiting for delivery.
pub const AGENT_ALERT_SPOOL_ENTRIES: Metric = Metric {
    family: "vigil_agent_alert_spool_entries",
    kind: Kind::Gauge,
    unit: None,
    help: "Notifications waiting for delivery",
    labels: &[],
};
/// Bytes of notifications waiting for delivery.
pub const AGENT_ALERT_SPOOL: Metric = Metric {
    family: "vigil_agent_alert_spool",
    kind: Kind::Gauge,
    unit: Some(Unit::Bytes),
    help: "Bytes of notifications waiting for delivery",
    labels: &[],
};
/// Notifications in the dead-letter spool.
pub const AGENT_ALERT_DEAD_LETTERS: Metric = Metric {
    family: "vigil_agent_alert_dead_letters",
    kind: Kind::Gauge,
    unit: None,
    help: "Notifications in the dead-letter spool",
    labels: &[],
};
/// Dead letters removed for the spool's bound.
pub const AGENT_ALERT_DEAD_LETTERS_EVICTED: Metric = Metric {
    family: "vigil_agent_alert_dead_letters_evicted",
    kind: Kind::Counter,
    unit: None,
    help: "Dead letters removed for the spool's bound",
    labels: &[],
};
/// Notifications by receiver and outcome (delivered, failed_attempt, dead_lettered).
pub const AGENT_ALERT_NOTIFICATIONS: Metric = Metric {
    family: "vigil_agent_alert_notifications",
    kind: Kind::Counter,
    unit: None,
    help: "Notifications by receiver and outcome (delivered, failed_attempt, dead_lettered)",
    labels: &["receiver", "outcome"],
};
/// 1 while deliveries to the receiver have failed longer than failingAfter.
pub const AGENT_ALERT_DELIVERY_FAILING: Metric = Metric {
    family: "vigil_agent_alert_delivery_failing",
    kind: Kind::Gauge,
    unit: None,
    help: "1 while deliveries to the receiver have failed longer than failingAfter",
    labels: &["receiver"],
};
/// Time since the host booted.
pub const NODE_UPTIME: Metric = Metric {
    family: "vigil_node_uptime",
    kind: Kind::Gauge,
    unit: Some(Unit::Seconds),
    help: "Time since the host booted",
    labels: &[],
};
/// CPU time per CPU and mode since boot.
pub const NODE_CPU: Metric = Metric {
    family: "vigil_node_cpu",
    kind: Kind::Counter,
    unit: Some(Unit::Seconds),
    help: "CPU time per CPU and mode since boot",
    labels: &["cpu", "mode"],
};
/// Share of CPU time not idle since the previous scan, all CPUs.
pub const NODE_CPU_UTILIZATION: Metric = Metric {
    family: "vigil_node_cpu_utilization",
    kind: Kind::Gauge,
    unit: Some(Unit::Ratio),
    help: "Share of CPU time not idle since the previous scan, all CPUs",
    labels: &[],
};
/// Share of CPU time per mode since the previous scan, all CPUs.
pub const NODE_CPU_MODE_UTILIZATION: Metric = Metric {
    family: "vigil_node_cpu_mode_utilization",
    kind: Kind::Gauge,
    unit: Some(Unit::Ratio),
    help: "Share of CPU time per mode since the previous scan, all CPUs",
    labels: &["mode"],
};
/// Load average over 1 minute.
pub const NODE_LOAD1: Metric = Metric {
    family: "vigil_node_load1",
    kind: Kind::Gauge,
    unit: None,
    help: "Load average over 1 minute",
    labels: &[],
};
/// Load average over 5 minutes.
pub const NODE_LOAD5: Metric = Metric {
    family: "vigil_node_load5",
    kind: Kind::Gauge,
    unit: None,
    help: "Load average over 5 minutes",
    labels: &[],
};
/// Load average over 15 minutes.
pub const NODE_LOAD15: Metric = Metric {
    family: "vigil_node_load15",
    kind: Kind::Gauge,
    unit: None,
    help: "Load average over 15 minutes",
    labels: &[],
};
/// Context switches since boot.
pub const NODE_CONTEXT_SWITCHES: Metric = Metric {
    family: "vigil_node_context_switches",
    kind: Kind::Counter,
    unit: None,
    help: "Context switches since boot",
    labels: &[],
};
/// Processes and threads created since boot.
pub const NODE_FORKS: Metric = Metric {
    family: "vigil_node_forks",
    kind: Kind::Counter,
    unit: None,
    help: "Processes and threads created since boot",
    labels: &[],
};
/// Runnable threads.
pub const NODE_PROCS_RUNNING: Metric =
    Metric { family: "vigil_node_procs_running", kind: Kind::Gauge, unit: None, help: "Runnable threads", labels: &[] };
/// Threads blocked on I/O.
pub const NODE_PROCS_BLOCKED: Metric = Metric {
    family: "vigil_node_procs_blocked",
    kind: Kind::Gauge,
    unit: None,
    help: "Threads blocked on I/O",
    labels: &[],
};
/// When the host booted.
pub const NODE_BOOT_TIME: Metric = Metric {
    family: "vigil_node_boot_time",
    kind: Kind::Gauge,
    unit: Some(Unit::Seconds),
    help: "When the host booted",
    labels: &[],
};
/// Usable RAM.
pub const NODE_MEMORY_TOTAL: Metric = Metric {
    family: "vigil_node_memory_total",
    kind: Kind::Gauge,
    unit: Some(Unit::Bytes),
    help: "Usable RAM",
    labels: &[],
};
/// RAM available without swapping (MemAvailable).
pub const NODE_MEMORY_AVAILABLE: Metric = Metric {
    family: "vigil_node_memory_available",
    kind: Kind::Gauge,
    unit: Some(Unit::Bytes),
    help: "RAM available without swapping (MemAvailable)",
    labels: &[],
};
/// RAM in use: total minus available.
pub const NODE_MEMORY_USED: Metric = Metric {
    family: "vigil_node_memory_used",
    kind: Kind::Gauge,
    unit: Some(Unit::Bytes),
    help: "RAM in use: total minus available",
    labels: &[],
};
/// Entirely unused RAM.
pub const NODE_MEMORY_FREE: Metric = Metric {
    family: "vigil_node_memory_free",
    kind: Kind::Gauge,
    unit: Some(Unit::Bytes),
    help: "Entirely unused RAM",
    labels: &[],
};
/// Block device buffers.
pub const NODE_MEMORY_BUFFERS: Metric = Metric {
    family: "vigil_node_memory_buffers",
    kind: Kind::Gauge,
    unit: Some(Unit::Bytes),
    help: "Block device buffers",
    labels: &[],
};
/// Page cache and reclaimable slab.
pub const NODE_MEMORY_CACHED: Metric = Metric {
    family: "vigil_node_memory_cached",
    kind: Kind::Gauge,
    unit: Some(Unit::Bytes),
    help: "Page cache and reclaimable slab",
    labels: &[],
};
/// Used over total RAM.
pub const NODE_MEMORY_UTILIZATION: Metric = Metric {
    family: "vigil_node_memory_utilization",
    kind: Kind::Gauge,
    unit: Some(Unit::Ratio),
    help: "Used over total RAM",
    labels: &[],
};
/// Swap size.
pub const NODE_SWAP_TOTAL: Metric = Metric {
    family: "vigil_node_swap_total",
    kind: Kind::Gauge,
    unit: Some(Unit::Bytes),
    help: "Swap size",
    labels: &[],
};
/// Swap in use.
pub const NODE_SWAP_USED: Metric = Metric {
    family: "vigil_node_swap_used",
    kind: Kind::Gauge,
    unit: Some(Unit::Bytes),
    help: "Swap in use",
    labels: &[],
};
/// Time some tasks stalled on the resource (PSI some total).
pub const NODE_PRESSURE_WAITING: Metric = Metric {
    family: "vigil_node_pressure_waiting",
    kind: Kind::Counter,
    unit: Some(Unit::Seconds),
    help: "Time some tasks stalled on the resource (PSI some total)",
    labels: &["resource"],
};
/// Time all non-idle tasks stalled on the resource at once (PSI full total).
pub const NODE_PRESSURE_STALLED: Metric = Metric {
    family: "vigil_node_pressure_stalled",
    kind: Kind::Counter,
    unit: Some(Unit::Seconds),
    help: "Time all non-idle tasks stalled on the resource at once (PSI full total)",
    labels: &["resource"],
};
/// Filesystem size.
pub const NODE_FILESYSTEM_SIZE: Metric = Metric {
    family: "vigil_node_filesystem_size",
    kind: Kind::Gauge,
    unit: Some(Unit::Bytes),
    help: "Filesystem size",
    labels: FILESYSTEM,
};
/// Filesystem space in use.
pub const NODE_FILESYSTEM_USED: Metric = Metric {
    family: "vigil_node_filesystem_used",
    kind: Kind::Gauge,
    unit: Some(Unit::Bytes),
    help: "Filesystem space in use",
    labels: FILESYSTEM,
};
/// Filesystem space available to unprivileged users.
pub const NODE_FILESYSTEM_AVAIL: Metric = Metric {
    family: "vigil_node_filesystem_avail",
    kind: Kind::Gauge,
    unit: Some(Unit::Bytes),
    help: "Filesystem space available to unprivileged users",
    labels: FILESYSTEM,
};
/// Used over used plus available, as df shows.
pub const NODE_FILESYSTEM_UTILIZATION: Metric = Metric {
    family: "vigil_node_filesystem_utilization",
    kind: Kind::Gauge,
    unit: Some(Unit::Ratio),
    help: "Used over used plus available, as df shows",
    labels: FILESYSTEM,
};
/// Inodes.
pub const NODE_FILESYSTEM_FILES: Metric =
    Metric { family: "vigil_node_filesystem_files", kind: Kind::Gauge, unit: None, help: "Inodes", labels: FILESYSTEM };
/// Inodes in use.
pub const NODE_FILESYSTEM_FILES_USED: Metric = Metric {
    family: "vigil_node_filesystem_files_used",
    kind: Kind::Gauge,
    unit: None,
    help: "Inodes in use",
    labels: FILESYSTEM,
};
/// 1 when mounted read-only.
pub const NODE_FILESYSTEM_READONLY: Metric = Metric {
    family: "vigil_node_filesystem_readonly",
    kind: Kind::Gauge,
    unit: None,
    help: "1 when mounted read-only",
    labels: FILESYSTEM,
};
/// Reads completed.
pub const NODE_DISK_READS_COMPLETED: Metric = Metric {
    family: "vigil_node_disk_reads_completed",
    kind: Kind::Counter,
    unit: None,
    help: "Reads completed",
    labels: DEVICE,
};
/// Bytes read.
pub const NODE_DISK_READ: Metric = Metric {
    family: "vigil_node_disk_read",
    kind: Kind::Counter,
    unit: Some(Unit::Bytes),
    help: "Bytes read",
    labels: DEVICE,
};
/// Writes completed.
pub const NODE_DISK_WRITES_COMPLETED: Metric = Metric {
    family: "vigil_node_disk_writes_completed",
    kind: Kind::Counter,
    unit: None,
    help: "Writes completed",
    labels: DEVICE,
};
/// Bytes written.
pub const NODE_DISK_WRITTEN: Metric = Metric {
    family: "vigil_node_disk_written",
    kind: Kind::Counter,
    unit: Some(Unit::Bytes),
    help: "Bytes written",
    labels: DEVICE,
};
/// Time spent doing I/O.
pub const NODE_DISK_IO_TIME: Metric = Metric {
    family: "vigil_node_disk_io_time",
    kind: Kind::Counter,
    unit: Some(Unit::Seconds),
    help: "Time spent doing I/O",
    labels: DEVICE,
};
/// I/Os in flight.
pub const NODE_DISK_IO_NOW: Metric =
    Metric { family: "vigil_node_disk_io_now", kind: Kind::Gauge, unit: None, help: "I/Os in flight", labels: DEVICE };
/// Bytes received.
pub const NODE_NETWORK_RECEIVE: Metric = Metric {
    family: "vigil_node_network_receive",
    kind: Kind::Counter,
    unit: Some(Unit::Bytes),
    help: "Bytes received",
    labels: DEVICE,
};
/// Packets received.
pub const NODE_NETWORK_RECEIVE_PACKETS: Metric = Metric {
    family: "vigil_node_network_receive_packets",
    kind: Kind::Counter,
    unit: None,
    help: "Packets received",
    labels: DEVICE,
};
/// Receive errors.
pub const NODE_NETWORK_RECEIVE_ERRORS: Metric = Metric {
    family: "vigil_node_network_receive_errors",
    kind: Kind::Counter,
    unit: None,
    help: "Receive errors",
    labels: DEVICE,
};
/// Received packets dropped.
pub const NODE_NETWORK_RECEIVE_DROPS: Metric = Metric {
    family: "vigil_node_network_receive_drops",
    kind: Kind::Counter,
    unit: None,
    help: "Received packets dropped",
    labels: DEVICE,
};
/// Bytes sent.
pub const NODE_NETWORK_TRANSMIT: Metric = Metric {
    family: "vigil_node_network_transmit",
    kind: Kind::Counter,
    unit: Some(Unit::Bytes),
    help: "Bytes sent",
    labels: DEVICE,
};
/// Packets sent.
pub const NODE_NETWORK_TRANSMIT_PACKETS: Metric = Metric {
    family: "vigil_node_network_transmit_packets",
    kind: Kind::Counter,
    unit: None,
    help: "Packets sent",
    labels: DEVICE,
};
/// Send errors.
pub const NODE_NETWORK_TRANSMIT_ERRORS: Metric = Metric {
    family: "vigil_node_network_transmit_errors",
    kind: Kind::Counter,
    unit: None,
    help: "Send errors",
    labels: DEVICE,
};
/// Packets dropped on send.
pub const NODE_NETWORK_TRANSMIT_DROPS: Metric = Metric {
    family: "vigil_node_network_transmit_drops",
    kind: Kind::Counter,
    unit: None,
    help: "Packets dropped on send",
    labels: DEVICE,
};
/// TCP connections established or closing now (CurrEstab).
pub const NODE_TCP_ESTABLISHED: Metric = Metric {
    family: "vigil_node_tcp_established",
    kind: Kind::Gauge,
    unit: None,
    help: "TCP connections established or closing now (CurrEstab)",
    labels: &[],
};
/// TCP connections this host opened (ActiveOpens).
pub const NODE_TCP_ACTIVE_OPENS: Metric = Metric {
    family: "vigil_node_tcp_active_opens",
    kind: Kind::Counter,
    unit: None,
    help: "TCP connections this host opened (ActiveOpens)",
    labels: &[],
};
/// TCP connections this host accepted (PassiveOpens).
pub const NODE_TCP_PASSIVE_OPENS: Metric = Metric {
    family: "vigil_node_tcp_passive_opens",
    kind: Kind::Counter,
    unit: None,
    help: "TCP connections this host accepted (PassiveOpens)",
    labels: &[],
};
/// TCP connection attempts that failed (AttemptFails).
pub const NODE_TCP_ATTEMPT_FAILS: Metric = Metric {
    family: "vigil_node_tcp_attempt_fails",
    kind: Kind::Counter,
    unit: None,
    help: "TCP connection attempts that failed (AttemptFails)",
    labels: &[],
};
/// Established TCP connections reset (EstabResets).
pub const NODE_TCP_ESTABLISHED_RESETS: Metric = Metric {
    family: "vigil_node_tcp_established_resets",
    kind: Kind::Counter,
    unit: None,
    help: "Established TCP connections reset (EstabResets)",
    labels: &[],
};
/// TCP segments retransmitted (RetransSegs).
pub const NODE_TCP_RETRANSMITTED_SEGMENTS: Metric = Metric {
    family: "vigil_node_tcp_retransmitted_segments",
    kind: Kind::Counter,
    unit: None,
    help: "TCP segments retransmitted (RetransSegs)",
    labels: &[],
};
/// TCP segments received in error (InErrs).
pub const NODE_TCP_RECEIVE_ERRORS: Metric = Metric {
    family: "vigil_node_tcp_receive_errors",
    kind: Kind::Counter,
    unit: None,
    help: "TCP segments received in error (InErrs)",
    labels: &[],
};
/// TCP resets sent (OutRsts).
pub const NODE_TCP_RESETS_SENT: Metric = Metric {
    family: "vigil_node_tcp_resets_sent",
    kind: Kind::Counter,
    unit: None,
    help: "TCP resets sent (OutRsts)",
    labels: &[],
};
/// SYN cookies sent: the listen queue overflowed, as under a SYN flood (TcpExt SyncookiesSent).
pub const NODE_TCP_SYNCOOKIES_SENT: Metric = Metric {
    family: "vigil_node_tcp_syncookies_sent",
    kind: Kind::Counter,
    unit: None,
    help: "SYN cookies sent: the listen queue overflowed, as under a SYN flood (TcpExt SyncookiesSent)",
    labels: &[],
};
/// Connections a full accept queue turned away (TcpExt ListenOverflows).
pub const NODE_TCP_LISTEN_OVERFLOWS: Metric = Metric {
    family: "vigil_node_tcp_listen_overflows",
    kind: Kind::Counter,
    unit: None,
    help: "Connections a full accept queue turned away (TcpExt ListenOverflows)",
    labels: &[],
};
/// SYNs dropped by listeners (TcpExt ListenDrops).
pub const NODE_TCP_LISTEN_DROPS: Metric = Metric {
    family: "vigil_node_tcp_listen_drops",
    kind: Kind::Counter,
    unit: None,
    help: "SYNs dropped by listeners (TcpExt ListenDrops)",
    labels: &[],
};
/// Connection tracking entries (nf_conntrack_count), when conntrack is loaded.
pub const NODE_CONNTRACK_ENTRIES: Metric = Metric {
    family: "vigil_node_conntrack_entries",
    kind: Kind::Gauge,
    unit: None,
    help: "Connection tracking entries (nf_conntrack_count), when conntrack is loaded",
    labels: &[],
};
/// The connection tracking table's size (nf_conntrack_max): at it, new connections are dropped.
pub const NODE_CONNTRACK_LIMIT: Metric = Metric {
    family: "vigil_node_conntrack_limit",
    kind: Kind::Gauge,
    unit: None,
    help: "The connection tracking table's size (nf_conntrack_max): at it, new connections are dropped",
    labels: &[],
};
/// TCP sockets by state, IPv4 and IPv6.
pub const NODE_TCP_CONNECTIONS: Metric = Metric {
    family: "vigil_node_tcp_connections",
    kind: Kind::Gauge,
    unit: None,
    help: "TCP sockets by state, IPv4 and IPv6",
    labels: &["state"],
};
/// Socket counters from /proc/net/sockstat{,6} by protocol and field.
pub const NODE_SOCKSTAT: Metric = Metric {
    family: "vigil_node_sockstat",
    kind: Kind::Gauge,
    unit: None,
    help: "Socket counters from /proc/net/sockstat{,6} by protocol and field",
    labels: &["protocol", "field"],
};
/// Allocated file handles.
pub const NODE_FILEFD_ALLOCATED: Metric = Metric {
    family: "vigil_node_filefd_allocated",
    kind: Kind::Gauge,
    unit: None,
    help: "Allocated file handles",
    labels: &[],
};
/// Maximum file handles (fs.file-max).
pub const NODE_FILEFD_MAXIMUM: Metric = Metric {
    family: "vigil_node_filefd_maximum",
    kind: Kind::Gauge,
    unit: None,
    help: "Maximum file handles (fs.file-max)",
    labels: &[],
};
/// Allocated over maximum file handles.
pub const NODE_FILEFD_UTILIZATION: Metric = Metric {
    family: "vigil_node_filefd_utilization",
    kind: Kind::Gauge,
    unit: Some(Unit::Ratio),
    help: "Allocated over maximum file handles",
    labels: &[],
};
/// Processes by state.
pub const NODE_PROCESSES: Metric = Metric {
    family: "vigil_node_processes",
    kind: Kind::Gauge,
    unit: None,
    help: "Processes by state",
    labels: &["state"],
};
/// Threads of all processes.
pub const NODE_THREADS: Metric = Metric {
    family: "vigil_node_threads",
    kind: Kind::Gauge,
    unit: None,
    help: "Threads of all processes",
    labels: &[],
};
/// 1 when a time daemon keeps the kernel clock synchronised.
pub const NODE_CLOCK_SYNCHRONIZED: Metric = Metric {
    family: "vigil_node_clock_synchronized",
    kind: Kind::Gauge,
    unit: None,
    help: "1 when a time daemon keeps the kernel clock synchronised",
    labels: &[],
};
/// Offset being corrected.
pub const NODE_CLOCK_OFFSET: Metric = Metric {
    family: "vigil_node_clock_offset",
    kind: Kind::Gauge,
    unit: Some(Unit::Seconds),
    help: "Offset being corrected",
    labels: &[],
};
/// Estimated clock error.
pub const NODE_CLOCK_ESTIMATED_ERROR: Metric = Metric {
    family: "vigil_node_clock_estimated_error",
    kind: Kind::Gauge,
    unit: Some(Unit::Seconds),
    help: "Estimated clock error",
    labels: &[],
};
/// Maximum clock error.
pub const NODE_CLOCK_MAX_ERROR: Metric = Metric {
    family: "vigil_node_clock_max_error",
    kind: Kind::Gauge,
    unit: Some(Unit::Seconds),
    help: "Maximum clock error",
    labels: &[],
};

/// Resident memory of one of the top processes (by memory or CPU) of the latest scan.
pub const PROCESS_RESIDENT_MEMORY: Metric = Metric {
    family: "vigil_process_resident_memory",
    kind: Kind::Gauge,
    unit: Some(Unit::Bytes),
    help: "Resident memory of one of the top processes",
    labels: PROCESS_LABELS,
};
/// Threads of one of the top processes.
pub const PROCESS_THREADS: Metric = Metric {
    family: "vigil_process_threads",
    kind: Kind::Gauge,
    unit: None,
    help: "Threads of one of the top processes",
    labels: PROCESS_LABELS,
};
/// Share of one CPU one of the top processes used since the previous scan.
pub const PROCESS_CPU: Metric = Metric {
    family: "vigil_process_cpu",
    kind: Kind::Gauge,
    unit: Some(Unit::Ratio),
    help: "Share of one CPU the process used since the previous scan",
    labels: PROCESS_LABELS,
};

/// Every family the agent exports on `/metrics`.
pub const EXPORTED: &[&Metric] = &[
    &AGENT_SCAN_DURATION,
    &AGENT_SCANS,
    &AGENT_READ_ERRORS,
    &AGENT_BUILD_INFO,
    &AGENT_RESIDENT_MEMORY,
    &AGENT_CPU,
    &AGENT_LAST_SCAN_TIMESTAMP,
    &AGENT_EVENTS,
    &AGENT_EVENTS_DROPPED,
    &AGENT_EVENTS_LOST,
    &AGENT_EVENTS_UNPARSED,
    &AGENT_EVENT_SOURCE_STATE,
    &AGENT_EVENT_QUEUE_DEPTH,
    &AGENT_EVENT_QUEUE_CAPACITY,
    &AGENT_ALERTS_ACTIVE,
    &AGENT_ALERT_RULES,
    &AGENT_ALERT_SERIES_LEARNING,
    &AGENT_ALERT_RULE_SCORE,
    &AGENT_ALERTS,
    &AGENT_ALERT_PIPELINE_DROPPED,
    &AGENT_ALERT_POLICY_RELOAD_ERRORS,
    &AGENT_ALERT_POLICY_REFUSED,
    &AGENT_ALERTS_UNROUTED,
    &AGENT_ALERT_NOTIFICATIONS_RATE_LIMITED,
    &AGENT_ALERTS_SILENCED,
    &AGENT_ALERT_SPOOL_ENTRIES,
    &AGENT_ALERT_SPOOL,
    &AGENT_ALERT_DEAD_LETTERS,
    &AGENT_ALERT_DEAD_LETTERS_EVICTED,
    &AGENT_ALERT_NOTIFICATIONS,
    &AGENT_ALERT_DELIVERY_FAILING,
    &NODE_UPTIME,
    &NODE_CPU,
    &NODE_CPU_UTILIZATION,
    &NODE_CPU_MODE_UTILIZATION,
    &NODE_LOAD1,
    &NODE_LOAD5,
    &NODE_LOAD15,
    &NODE_CONTEXT_SWITCHES,
    &NODE_FORKS,
    &NODE_PROCS_RUNNING,
    &NODE_PROCS_BLOCKED,
    &NODE_BOOT_TIME,
    &NODE_MEMORY_TOTAL,
    &NODE_MEMORY_AVAILABLE,
    &NODE_MEMORY_USED,
    &NODE_MEMORY_FREE,
    &NODE_MEMORY_BUFFERS,
    &NODE_MEMORY_CACHED,
    &NODE_MEMORY_UTILIZATION,
    &NODE_SWAP_TOTAL,
    &NODE_SWAP_USED,
    &NODE_PRESSURE_WAITING,
    &NODE_PRESSURE_STALLED,
    &NODE_FILESYSTEM_SIZE,
    &NODE_FILESYSTEM_USED,
    &NODE_FILESYSTEM_AVAIL,
    &NODE_FILESYSTEM_UTILIZATION,
    &NODE_FILESYSTEM_FILES,
    &NODE_FILESYSTEM_FILES_USED,
    &NODE_FILESYSTEM_READONLY,
    &NODE_DISK_READS_COMPLETED,
    &NODE_DISK_READ,
    &NODE_DISK_WRITES_COMPLETED,
    &NODE_DISK_WRITTEN,
    &NODE_DISK_IO_TIME,
    &NODE_DISK_IO_NOW,
    &NODE_NETWORK_RECEIVE,
    &NODE_NETWORK_RECEIVE_PACKETS,
    &NODE_NETWORK_RECEIVE_ERRORS,
    &NODE_NETWORK_RECEIVE_DROPS,
    &NODE_NETWORK_TRANSMIT,
    &NODE_NETWORK_TRANSMIT_PACKETS,
    &NODE_NETWORK_TRANSMIT_ERRORS,
    &NODE_NETWORK_TRANSMIT_DROPS,
    &NODE_TCP_ESTABLISHED,
    &NODE_TCP_ACTIVE_OPENS,
    &NODE_TCP_PASSIVE_OPENS,
    &NODE_TCP_ATTEMPT_FAILS,
    &NODE_TCP_ESTABLISHED_RESETS,
    &NODE_TCP_RETRANSMITTED_SEGMENTS,
    &NODE_TCP_RECEIVE_ERRORS,
    &NODE_TCP_RESETS_SENT,
    &NODE_TCP_SYNCOOKIES_SENT,
    &NODE_TCP_LISTEN_OVERFLOWS,
    &NODE_TCP_LISTEN_DROPS,
    &NODE_CONNTRACK_ENTRIES,
    &NODE_CONNTRACK_LIMIT,
    &NODE_TCP_CONNECTIONS,
    &NODE_SOCKSTAT,
    &NODE_FILEFD_ALLOCATED,
    &NODE_FILEFD_MAXIMUM,
    &NODE_FILEFD_UTILIZATION,
    &NODE_PROCESSES,
    &NODE_THREADS,
    &NODE_CLOCK_SYNCHRONIZED,
    &NODE_CLOCK_OFFSET,
    &NODE_CLOCK_ESTIMATED_ERROR,
    &NODE_CLOCK_MAX_ERROR,
];

/// The per-process series alert rules see besides the exported ones (not on `/metrics`: a
/// series per process would be unbounded there). Labels: `pid`, `command`, `user`.
pub const PROCESS: &[&Metric] = &[&PROCESS_RESIDENT_MEMORY, &PROCESS_THREADS, &PROCESS_CPU];

/// Every family an alert rule can select: the exported gauges and counters, and the
/// per-process series.
pub fn rule_series() -> impl Iterator<Item = &'static Metric> {
    EXPORTED.iter().chain(PROCESS).copied().filter(|m| m.kind != Kind::Histogram)
}

/// The family whose samples are named `name` (see [`Metric::name`]), when a rule can select it.
pub fn find(name: &str) -> Option<&'static Metric> {
    rule_series().find(|m| m.name() == name)
}

/// Why a rule's metric selector selects nothing the agent exports, or nothing its detector can
/// judge.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Unknown {
    /// No family of that name.
    #[error("metric {name:?} is not a series the agent exports{}", closest_text(.closest))]
    Name {
        /// The name the rule gave.
        name: String,
        /// The existing name it most likely meant.
        closest: Option<String>,
    },
    /// The family exists but has no such label key.
    #[error("metric {name} has no label {label:?} (its labels: {})", if .labels.is_empty() { "none".to_owned() } else { .labels.join(", ") })]
    Label {
        /// The metric.
        name: String,
        /// The label key the rule gave.
        label: String,
        /// The keys it has.
        labels: Vec<&'static str>,
    },
    /// A detector that judges a series' level, on a counter: its level is the count since the
    /// agent or host started, which grows by design.
    #[error(
        "metric {name} is a counter (it only grows): the {detector} detector would judge its total, which is never anomalous; use rateOfChange (its change per second) or a gauge"
    )]
    Counter {
        /// The metric.
        name: String,
        /// The rule's detector kind.
        detector: &'static str,
    },
}

fn closest_text(closest: &Option<String>) -> String {
    closest.as_ref().map(|c| format!("; did you mean {c}?")).unwrap_or_default()
}

/// Checks a rule's metric selector: the name is a series the agent exports and each label
/// key is one of its labels.
pub fn check_selector<'a>(
    name: &str,
    label_keys: impl IntoIterator<Item = &'a str>,
) -> Result<&'static Metric, Unknown> {
    let Some(m) = find(name) else {
        return Err(Unknown::Name { name: name.to_owned(), closest: closest(name) });
    };
    for k in label_keys {
        if !m.labels.contains(&k) {
            return Err(Unknown::Label { name: name.to_owned(), label: k.to_owned(), labels: m.labels.to_vec() });
        }
    }
    Ok(m)
}

/// The selectable name nearest to `name` by edit distance, when it is near enough to be a
/// likely slip (at most a third of the name's length away).
pub fn closest(name: &str) -> Option<String> {
    rule_series()
        .map(|m| {
            let n = m.name();
            (edit_distance(name, &n), n)
        })
        .filter(|(d, _)| *d * 3 <= name.len().max(3))
        .min()
        .map(|(_, n)| n)
}

/// Levenshtein distance over bytes.
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, ca) in a.iter().enumerate() {
        cur[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != cb)).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

/// Every PromQL query of a Grafana dashboard (its JSON): (panel title, expression), in panel
/// order, rows' nested panels included. For the tests that ask a real Prometheus each one.
pub fn dashboard_queries(dashboard: &str) -> Result<Vec<(String, String)>, String> {
    fn walk(panels: &[serde_json::Value], out: &mut Vec<(String, String)>) {
        for p in panels {
            let title = p["title"].as_str().unwrap_or("").to_owned();
            for t in p["targets"].as_array().into_iter().flatten() {
                if let Some(e) = t["expr"].as_str() {
                    out.push((title.clone(), e.to_owned()));
                }
            }
            walk(p["panels"].as_array().map(Vec::as_slice).unwrap_or_default(), out);
        }
    }
    let v: serde_json::Value = serde_json::from_str(dashboard).map_err(|e| format!("dashboard JSON: {e}"))?;
    let mut out = Vec::new();
    walk(v["panels"].as_array().map(Vec::as_slice).unwrap_or_default(), &mut out);
    Ok(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn dashboard_queries_are_every_targets_expr_nested_rows_included() {
        let d = r#"{"panels": [
            {"title": "A", "targets": [{"expr": "up"}, {"expr": "rate(x[1m])"}, {"refId": "no expr"}]},
            {"title": "Row", "type": "row", "panels": [{"title": "B", "targets": [{"expr": "y"}]}]}
        ]}"#;
        let q = dashboard_queries(d).unwrap();
        let want: Vec<(String, String)> =
            [("A", "up"), ("A", "rate(x[1m])"), ("B", "y")].iter().map(|(a, b)| ((*a).into(), (*b).into())).collect();
        assert_eq!(q, want);
        assert!(dashboard_queries("{").unwrap_err().starts_with("dashboard JSON: "));
        // The shipped dashboards parse and query something.
        for f in ["vigil-fleet.json", "vigil-node.json"] {
            let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../charts/vigil/files/grafana").join(f);
            assert!(dashboard_queries(&std::fs::read_to_string(path).unwrap()).unwrap().len() >= 9, "{f}");
        }
    }

    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn names_follow_prometheus_conventions_and_are_unique() {
        let mut seen = BTreeSet::new();
        for m in EXPORTED.iter().chain(PROCESS) {
            let n = m.name();
            assert!(seen.insert(n.clone()), "{n} twice");
            assert!(n.starts_with("vigil_node_") || n.starts_with("vigil_agent_") || n.starts_with("vigil_process_"));
            assert!(!n.ends_with("_ratios"), "{n}");
            assert_eq!(m.kind == Kind::Counter, n.ends_with("_total"), "{n}");
            assert!(m.family.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'), "{n}");
            assert!(!m.help.is_empty() && !m.help.ends_with('.'), "{n}: help {:?}", m.help);
            for unit in ["seconds", "bytes", "ratio"] {
                assert!(!m.family.ends_with(&format!("_{unit}")), "{}: the suffix comes from the unit", m.family);
            }
        }
    }

    #[test]
    fn a_misspelt_name_is_refused_with_the_one_meant() {
        assert_eq!(
            check_selector("vigil_node_cpu_utilization_ratios", []),
            Err(Unknown::Name {
                name: "vigil_node_cpu_utilization_ratios".into(),
                closest: Some("vigil_node_cpu_utilization_ratio".into())
            })
        );
        let e = check_selector("vigil_node_memory_utilisation_ratio", []).unwrap_err();
        assert!(e.to_string().contains("did you mean vigil_node_memory_utilization_ratio?"), "{e}");
        let far = check_selector("http_requests_total", []).unwrap_err();
        assert_eq!(far, Unknown::Name { name: "http_requests_total".into(), closest: None });
        assert_eq!(far.to_string(), "metric \"http_requests_total\" is not a series the agent exports");
    }

    #[test]
    fn label_keys_are_checked_against_the_family() {
        assert!(check_selector("vigil_node_filesystem_utilization_ratio", ["mountpoint", "fstype"]).is_ok());
        let e = check_selector("vigil_node_filesystem_utilization_ratio", ["mount"]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "metric vigil_node_filesystem_utilization_ratio has no label \"mount\" (its labels: device, mountpoint, fstype)"
        );
        assert!(check_selector("vigil_node_load1", ["cpu"]).unwrap_err().to_string().contains("(its labels: none)"));
        assert!(check_selector("vigil_process_resident_memory_bytes", ["command"]).is_ok());
    }

    #[test]
    fn histograms_and_counters_by_family_name_are_not_selectable() {
        assert!(find("vigil_agent_scan_duration_seconds").is_none());
        assert!(find("vigil_node_cpu_seconds").is_none());
        assert!(find("vigil_node_cpu_seconds_total").is_some());
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
    }
}
