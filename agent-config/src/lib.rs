//! The agent's YAML config: defaults for everything, unknown keys refused, errors that name
//! the key and the line.
//!
//! Its schema and every check that needs no host live here, apart from the agent, so the
//! operator applies exactly the agent's rules to a rollout's config before any node runs it
//! (`vigil-agent check-config` and the operator's `ConfigInvalid` print the same words).
//! Checks that need the node (paths, kernel features, the policy files) stay in the agent.

pub mod filter;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::filter::{FilterSpec, NameFilter};

/// One watched tree of the file-integrity source.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WatchPath {
    /// Host path (`/etc`).
    pub path: String,
    /// Hash file content (off for logs, which change by design).
    #[serde(default = "yes")]
    pub content: bool,
}

fn yes() -> bool {
    true
}

/// A rate limit: a sustained rate and a burst.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RateLimit {
    /// Events per second, sustained.
    pub per_second: f64,
    /// Events allowed at once after a quiet period.
    pub burst: u32,
}

impl RateLimit {
    /// A limit of `per_second` with a burst of `burst`.
    pub const fn new(per_second: f64, burst: u32) -> Self {
        Self { per_second, burst }
    }
}

/// Why a config was refused. The message names the file, and the key and line where known.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("reading {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The YAML does not parse or does not fit the schema (unknown key, wrong type).
    #[error("{path}: {message}")]
    Syntax {
        /// The file.
        path: String,
        /// serde_yaml's message, which carries the key and the line.
        message: String,
    },
    /// The file is not the config the rollout pinned.
    #[error(
        "{path}: SHA-256 is {actual}, but the rollout pinned {expected}: refusing a config that is not the one rolled out"
    )]
    HashMismatch {
        /// The file.
        path: String,
        /// The pinned hash.
        expected: String,
        /// The file's hash.
        actual: String,
    },
    /// A value parses but is not acceptable.
    #[error("{path}: {key}: {message}")]
    Invalid {
        /// The file.
        path: String,
        /// The key, dotted (`exporters.prometheus.listen`).
        key: &'static str,
        /// What is wrong.
        message: String,
    },
}

/// The whole config. Every field has a default; an empty file is a valid config.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Config {
    /// Where the host's `/` is mounted (`/host` in the DaemonSet). `--host-root` overrides it.
    pub host_root: PathBuf,
    /// Time between snapshots in `watch` and `run`.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// The node name reported in telemetry (default: the host name; the DaemonSet sets it from
    /// the downward API).
    pub node_name: Option<String>,
    /// Which collectors run.
    pub collectors: Collectors,
    /// Process collection.
    pub processes: ProcessesConfig,
    /// Name filters.
    pub filters: Filters,
    /// Where metrics go in `run`.
    pub exporters: Exporters,
    /// Security events (processes, files, authentication, network, kernel log, clock).
    pub events: EventsConfig,
    /// Alert rules, routing and delivery (AlertPolicy files).
    pub alerts: AlertsConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            host_root: PathBuf::from("/"),
            interval: Duration::from_secs(10),
            node_name: None,
            collectors: Collectors::default(),
            processes: ProcessesConfig::default(),
            filters: Filters::default(),
            exporters: Exporters::default(),
            events: EventsConfig::default(),
            alerts: AlertsConfig::default(),
        }
    }
}

/// Alerting: the AlertPolicies the agent applies and how it delivers. Off while `policies`
/// is empty; when it is not set at all, an agent in a Kubernetes pod reads the operator's
/// published policies (`/etc/vigil/policies`, where the agent's DaemonSet mounts them) and
/// an agent on a plain host applies none.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct AlertsConfig {
    /// AlertPolicy files, or directories of them (every `.yaml`, `.yml` and `.json` file).
    /// Unset: in a pod, the directory the operator's published policies are mounted at, when
    /// it is mounted; on a host, none. `[]` turns alerting off everywhere.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policies: Option<Vec<PathBuf>>,
    /// Where the Secrets that receivers name are mounted: `<secretsDir>/<secret>/<key>`.
    pub secrets_dir: PathBuf,
    /// How often the policies (and secrets) are re-read.
    #[serde(with = "humantime_serde")]
    pub reload_interval: Duration,
    /// The spool of undelivered notifications; default `<events.stateDir>/spool`.
    pub spool_dir: Option<PathBuf>,
    /// Most bytes of pending notifications; a full spool refuses new ones (counted).
    pub spool_max_bytes: u64,
    /// Most bytes of dead letters; beyond it the oldest go.
    pub dead_letter_max_bytes: u64,
    /// fsync every spool write: survives a host crash (a process crash or `kill -9` loses
    /// nothing either way).
    pub fsync: bool,
    /// Timeout of one delivery attempt.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Waits between attempts; the last repeats.
    #[serde(with = "durations")]
    pub backoff: Vec<Duration>,
    /// Jitter of each wait, as a fraction (0.2: ±20 %).
    pub jitter: f64,
    /// Dead-letter a notification this long after its first failed attempt.
    #[serde(with = "humantime_serde")]
    pub give_up_after: Duration,
    /// Raise `VigilAlertDeliveryFailing` to the fallback receiver after failing this long.
    #[serde(with = "humantime_serde")]
    pub failing_after: Duration,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        Self {
            policies: None,
            secrets_dir: PathBuf::from(vigil_crds::policy::SECRETS_DIR),
            reload_interval: Duration::from_secs(10),
            spool_dir: None,
            spool_max_bytes: 64 << 20,
            dead_letter_max_bytes: 64 << 20,
            fsync: true,
            timeout: Duration::from_secs(10),
            backoff: vec![Duration::from_secs(5), Duration::from_secs(15), Duration::from_secs(60)],
            jitter: 0.2,
            give_up_after: Duration::from_secs(3600),
            failing_after: Duration::from_secs(120),
        }
    }
}

/// A list of durations in humantime form (`[5s, 15s, 1m]`).
mod durations {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(v: &[Duration], s: S) -> Result<S::Ok, S::Error> {
        v.iter().map(|d| humantime_serde::Serde::from(*d)).collect::<Vec<_>>().serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Duration>, D::Error> {
        let v = Vec::<humantime_serde::Serde<Duration>>::deserialize(d)?;
        Ok(v.into_iter().map(humantime_serde::Serde::into_inner).collect())
    }
}

impl AlertsConfig {
    /// The spool directory.
    pub fn spool_dir(&self, events: &EventsConfig) -> PathBuf {
        self.spool_dir.clone().unwrap_or_else(|| events.state_dir.join("spool"))
    }
}

/// Collector switches; all on by default.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
#[allow(clippy::struct_excessive_bools)]
pub struct Collectors {
    /// CPU time, load, context switches, forks.
    pub cpu: bool,
    /// Memory and swap.
    pub memory: bool,
    /// Pressure stall information.
    pub pressure: bool,
    /// Filesystem usage and inodes.
    pub filesystems: bool,
    /// Block device I/O.
    pub disk_io: bool,
    /// Interface counters and socket counts.
    pub network: bool,
    /// TCP connections by state. Off by default: it reads the kernel's whole connection
    /// tables, whose cost follows the size of the kernel's hash tables rather than the number
    /// of connections (about 5 ms per table on a 24 GiB host). TCP counters from
    /// /proc/net/snmp (established, opens, retransmits, resets) are always read.
    pub tcp_states: bool,
    /// System-wide file handles.
    pub file_descriptors: bool,
    /// Process counts and top processes.
    pub processes: bool,
    /// Clock synchronisation.
    pub clock: bool,
}

impl Default for Collectors {
    fn default() -> Self {
        Self {
            cpu: true,
            memory: true,
            pressure: true,
            filesystems: true,
            disk_io: true,
            network: true,
            tcp_states: false,
            file_descriptors: true,
            processes: true,
            clock: true,
        }
    }
}

/// Process collection settings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ProcessesConfig {
    /// Length of the top lists (by CPU and by memory); 0 turns them off.
    pub top: usize,
}

impl Default for ProcessesConfig {
    fn default() -> Self {
        Self { top: 5 }
    }
}

/// Include/exclude glob filters.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Filters {
    /// Mount points (`/var/lib/*`). Network filesystems are read only when included here.
    pub mounts: FilterSpec,
    /// Filesystem types (`ext4`, `xfs`).
    pub fs_types: FilterSpec,
    /// Block devices (`nvme*`).
    pub devices: FilterSpec,
    /// Network interfaces (`eth*`, `veth*`).
    pub interfaces: FilterSpec,
}

/// The compiled filters.
#[derive(Clone, Debug, Default)]
pub struct CompiledFilters {
    /// Mount points.
    pub mounts: NameFilter,
    /// Filesystem types.
    pub fs_types: NameFilter,
    /// Block devices.
    pub devices: NameFilter,
    /// Interfaces.
    pub interfaces: NameFilter,
}

/// Exporters of `run`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Exporters {
    /// Prometheus endpoint.
    pub prometheus: PrometheusConfig,
    /// OTLP push.
    pub otlp: OtlpConfig,
}

/// Prometheus endpoint; off by default (the agent listens on no port unless asked).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct PrometheusConfig {
    /// Serve `/metrics`, `/healthz` and `/readyz`.
    pub enabled: bool,
    /// Address to bind.
    pub listen: String,
}

impl Default for PrometheusConfig {
    fn default() -> Self {
        Self { enabled: false, listen: "127.0.0.1:9817".into() }
    }
}

/// OTLP metrics push; off by default. The standard `OTEL_EXPORTER_OTLP_*` variables apply too.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct OtlpConfig {
    /// Push metrics over OTLP.
    pub enabled: bool,
    /// Collector endpoint (`http://127.0.0.1:4318` for HTTP, `http://127.0.0.1:4317` for gRPC).
    pub endpoint: String,
    /// `http` (protobuf over HTTP) or `grpc`.
    pub protocol: OtlpProtocol,
    /// Time between pushes.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// Also push security events as OTLP log records (to `<endpoint>/v1/logs` over HTTP).
    pub events: bool,
}

impl Default for OtlpConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            endpoint: "http://127.0.0.1:4318".into(),
            protocol: OtlpProtocol::Http,
            interval: Duration::from_secs(30),
            events: true,
        }
    }
}

/// OTLP transport.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OtlpProtocol {
    /// Protobuf over HTTP.
    Http,
    /// gRPC.
    Grpc,
}

/// Security event sources. On by default in `run`; `watch --events` and `scan --events` use
/// them too.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct EventsConfig {
    /// Run the event sources in `run`.
    pub enabled: bool,
    /// Where the agent keeps the file-integrity baseline and its log positions (a hostPath
    /// in the DaemonSet, so they survive restarts and upgrades). Not under the host root.
    pub state_dir: PathBuf,
    /// Events held between the sources and the consumers; beyond it they are dropped and
    /// counted (`vigil_agent_events_dropped_total{reason="queue_full"}`).
    pub queue_capacity: usize,
    /// A token bucket per source and container (events whose details name one), in front of
    /// the source's: one noisy container cannot use up the source's rate and starve the
    /// others' events. Critical events are not held by it.
    pub container_rate_limit: RateLimit,
    /// Print each event as a JSON line on stdout in `run` (`kubectl logs`).
    pub log: bool,
    /// Process start and exit.
    pub processes: ProcessEvents,
    /// File integrity.
    pub files: FileEvents,
    /// Authentication logs, wtmp and btmp.
    pub auth: AuthEvents,
    /// Listening sockets and outbound connections.
    pub network: NetworkEvents,
    /// The kernel log.
    pub kernel: KernelEvents,
    /// Clock synchronisation.
    pub clock: ClockEvents,
    /// Node conditions the agent sets on its own Node from kernel and clock events.
    pub conditions: NodeConditions,
}

impl Default for EventsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            state_dir: PathBuf::from(vigil_crds::agent::STATE_DIR),
            queue_capacity: 4096,
            container_rate_limit: RateLimit::new(20.0, 200),
            log: true,
            processes: ProcessEvents::default(),
            files: FileEvents::default(),
            auth: AuthEvents::default(),
            network: NetworkEvents::default(),
            kernel: KernelEvents::default(),
            clock: ClockEvents::default(),
            conditions: NodeConditions::default(),
        }
    }
}

/// How process events are collected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProcessMode {
    /// The process connector when the kernel lets the agent listen (CAP_NET_ADMIN, or any user
    /// from Linux 6.6), else polling.
    Auto,
    /// The process connector only (the source is off when the kernel refuses it).
    Netlink,
    /// Compare /proc listings at `pollInterval` (misses processes shorter than it).
    Poll,
}

/// Process events.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ProcessEvents {
    /// On or off.
    pub enabled: bool,
    /// Collection mode.
    pub mode: ProcessMode,
    /// Time between /proc listings in poll mode.
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// Rate limit of this source.
    pub rate_limit: RateLimit,
}

impl Default for ProcessEvents {
    fn default() -> Self {
        Self {
            enabled: true,
            mode: ProcessMode::Auto,
            poll_interval: Duration::from_secs(1),
            rate_limit: RateLimit::new(200.0, 2000),
        }
    }
}

/// File integrity.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct FileEvents {
    /// On or off.
    pub enabled: bool,
    /// Watched trees (host paths); `content: false` for trees whose files change by design.
    pub paths: Vec<WatchPath>,
    /// Host paths left out (globs: `/etc/*.swp`, `/var/log/journal/**`).
    pub exclude: Vec<String>,
    /// Most paths in the baseline.
    pub max_files: usize,
    /// Larger files are compared by metadata only.
    pub max_hash_bytes: u64,
    /// Full comparison against the baseline this often (catches what inotify could not say).
    #[serde(with = "humantime_serde")]
    pub rescan_interval: Duration,
    /// One path reports at most once per this; its changes in between fold into one event.
    #[serde(with = "humantime_serde")]
    pub per_path_interval: Duration,
    /// Rate limit of this source.
    pub rate_limit: RateLimit,
}

impl Default for FileEvents {
    fn default() -> Self {
        let content = |p: &str| WatchPath { path: p.into(), content: true };
        Self {
            enabled: true,
            paths: vec![
                content("/etc"),
                content("/usr/bin"),
                content("/usr/sbin"),
                WatchPath { path: "/var/log".into(), content: false },
            ],
            exclude: vec![
                "**/*.swp".into(),
                "**/*~".into(),
                "/etc/mtab".into(),
                "/etc/ld.so.cache".into(),
                "/var/log/journal/**".into(),
                "/var/log/pods/**".into(),
                "/var/log/containers/**".into(),
            ],
            max_files: 200_000,
            max_hash_bytes: 64 << 20,
            rescan_interval: Duration::from_secs(3600),
            per_path_interval: Duration::from_secs(1),
            rate_limit: RateLimit::new(100.0, 1000),
        }
    }
}

/// Authentication events.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct AuthEvents {
    /// On or off.
    pub enabled: bool,
    /// Syslog files followed (host paths): Debian/Ubuntu `auth.log`, RHEL `secure`. Missing
    /// ones are picked up when they appear.
    pub logs: Vec<String>,
    /// Whether the systemd journal is read for these events: `auto` reads it when none of
    /// `logs` exists at start (a host without a syslog daemon: Debian 12, Fedora, most cloud
    /// images), `on` always (where rsyslog also copies the journal into `logs`, each event then
    /// comes twice), `off` never.
    pub journal: JournalMode,
    /// The journal's directories (host paths), each holding files or machine-id directories
    /// of files: the persistent journal and the volatile one.
    pub journal_dirs: Vec<String>,
    /// wtmp (logins, logouts, boots); empty to skip.
    pub wtmp: String,
    /// btmp (failed logins); empty to skip.
    pub btmp: String,
    /// Time between reads of the files.
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// Failures from one address (or by one user for sudo and su) that make a brute force.
    pub brute_force_threshold: u32,
    /// The window those failures must fall in.
    #[serde(with = "humantime_serde")]
    pub brute_force_window: Duration,
    /// PAM services whose session lines are not events (cron opens one a minute).
    pub ignore_session_services: Vec<String>,
    /// Where the programs whose journal entries count may run from (host directories; an
    /// executable must lie directly in one). A journal entry tagged `sshd` counts as sshd's
    /// only when journald recorded that root ran an executable named sshd in one of these
    /// (a set-user-ID program such as su may be run by a user); any other writer makes it an
    /// `auth.forged` event. Only root may write here.
    pub program_dirs: Vec<String>,
    /// Rate limit of this source.
    pub rate_limit: RateLimit,
}

/// Root's program directories on the common distributions: an executable must lie directly
/// in one of them (not below). Not `/usr/local/*` (group-writable on hosts that follow
/// Debian's `staff` convention) nor `/nix/store` (any allowed user adds paths there): add them
/// where they hold root's programs only.
pub fn default_program_dirs() -> Vec<String> {
    [
        "/usr/bin",
        "/usr/sbin",
        "/bin",
        "/sbin",
        "/usr/lib/openssh",
        "/usr/libexec/openssh",
        "/usr/lib/ssh",
        "/usr/libexec",
        "/usr/lib/systemd",
    ]
    .map(String::from)
    .to_vec()
}

impl Default for AuthEvents {
    fn default() -> Self {
        Self {
            enabled: true,
            logs: vec!["/var/log/auth.log".into(), "/var/log/secure".into()],
            journal: JournalMode::Auto,
            journal_dirs: vec!["/var/log/journal".into(), "/run/log/journal".into()],
            wtmp: "/var/log/wtmp".into(),
            btmp: "/var/log/btmp".into(),
            poll_interval: Duration::from_secs(1),
            brute_force_threshold: 5,
            brute_force_window: Duration::from_secs(60),
            ignore_session_services: vec!["cron".into(), "CRON".into(), "crond".into(), "systemd-user".into()],
            program_dirs: default_program_dirs(),
            rate_limit: RateLimit::new(100.0, 1000),
        }
    }
}

/// When the auth source reads the systemd journal.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JournalMode {
    /// When none of the auth log files exists at start.
    #[default]
    Auto,
    /// Always.
    On,
    /// Never.
    Off,
}

/// Network events.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct NetworkEvents {
    /// On or off.
    pub enabled: bool,
    /// Time between looks at the socket tables. A look reads the socket counters first
    /// (microseconds) and the tables (milliseconds on a large host) only when they moved.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// Report outbound connections (listeners are always reported).
    pub outbound: bool,
    /// An outbound connection to the same address and port by the same uid is reported once
    /// per this.
    #[serde(with = "humantime_serde")]
    pub outbound_dedup: Duration,
    /// Rate limit of this source.
    pub rate_limit: RateLimit,
}

impl Default for NetworkEvents {
    fn default() -> Self {
        Self {
            enabled: true,
            interval: Duration::from_secs(30),
            outbound: true,
            outbound_dedup: Duration::from_secs(3600),
            rate_limit: RateLimit::new(50.0, 500),
        }
    }
}

/// Kernel log events.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct KernelEvents {
    /// On or off.
    pub enabled: bool,
    /// The kernel log device (not under the host root: it is the kernel's, the same from any
    /// mount namespace). A regular file in the kmsg format is followed like a log (tests).
    pub device: PathBuf,
    /// auditd's log (a host path; empty to skip). Where auditd runs, the kernel's AppArmor,
    /// SELinux and seccomp records go there instead of to the kernel log; its `AVC` and
    /// `SECCOMP` records are read as the kernel log's would be. A missing file is picked up
    /// when it appears.
    pub audit_log: String,
    /// Rate limit of this source.
    pub rate_limit: RateLimit,
}

impl Default for KernelEvents {
    fn default() -> Self {
        Self {
            enabled: true,
            device: PathBuf::from("/dev/kmsg"),
            audit_log: "/var/log/audit/audit.log".into(),
            rate_limit: RateLimit::new(50.0, 500),
        }
    }
}

/// Node conditions from events: `KernelDeadlock` (hung tasks, lockups), `ReadonlyFilesystem`
/// (a filesystem remounted read-only), `FrequentOOMKills`, `DiskIOErrors` (block I/O,
/// filesystem errors, disk command timeouts), `ClockUnsynchronized`, `ConntrackFull` (the
/// connection tracking table full), `FrequentUnregisterNetDevice` (network devices that
/// cannot be unregistered), `FrequentKubeletRestart` and `FrequentContainerdRestart`, each cleared when its cause has not recurred for `clearAfter` (the
/// clock's when it is synchronised again).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct NodeConditions {
    /// On or off (in a pod; a plain host has no Node).
    pub enabled: bool,
    /// A condition is cleared when its cause has not recurred for this long.
    #[serde(with = "humantime_serde")]
    pub clear_after: Duration,
    /// OOM kills within `oomWindow` that make `FrequentOOMKills`.
    pub oom_kills: u32,
    /// The window of those OOM kills.
    #[serde(with = "humantime_serde")]
    pub oom_window: Duration,
    /// `unregister_netdevice: waiting for …` reports within `unregisterNetDeviceWindow` that
    /// make `FrequentUnregisterNetDevice` (node-problem-detector's threshold: 3 in 20 minutes).
    pub unregister_net_device: u32,
    /// The window of those reports.
    #[serde(with = "humantime_serde")]
    pub unregister_net_device_window: Duration,
    /// Starts of the kubelet (or of containerd) within `serviceRestartWindow` that no stop
    /// preceded (a crash, or a kill, not a `systemctl restart`) that make
    /// `FrequentKubeletRestart` (`FrequentContainerdRestart`): node-problem-detector's 5 in
    /// 20 minutes.
    pub service_restarts: u32,
    /// The window of those starts.
    #[serde(with = "humantime_serde")]
    pub service_restart_window: Duration,
}

impl Default for NodeConditions {
    fn default() -> Self {
        Self {
            enabled: true,
            clear_after: Duration::from_secs(30 * 60),
            oom_kills: 3,
            oom_window: Duration::from_secs(10 * 60),
            unregister_net_device: 3,
            unregister_net_device_window: Duration::from_secs(20 * 60),
            service_restarts: 5,
            service_restart_window: Duration::from_secs(20 * 60),
        }
    }
}

/// Clock events.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ClockEvents {
    /// On or off.
    pub enabled: bool,
    /// An offset beyond this is reported.
    #[serde(with = "humantime_serde")]
    pub max_offset: Duration,
}

impl Default for ClockEvents {
    fn default() -> Self {
        Self { enabled: true, max_offset: Duration::from_millis(100) }
    }
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        Self::load_verified(path, None)
    }

    /// Reads a config file, checks its bytes against the SHA-256 its revision pinned (the
    /// operator checked the same ConfigMap before rolling it out), and validates it.
    pub fn load_verified(path: &Path, expected_sha256: Option<&str>) -> Result<Self, ConfigError> {
        let bytes = std::fs::read(path).map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
        if let Some(expected) = expected_sha256 {
            let actual = vigil_crds::ConfigHash::of(&bytes);
            if !actual.as_str().eq_ignore_ascii_case(expected.trim()) {
                return Err(ConfigError::HashMismatch {
                    path: path.display().to_string(),
                    expected: expected.trim().to_owned(),
                    actual: actual.to_string(),
                });
            }
        }
        let text = String::from_utf8(bytes).map_err(|e| ConfigError::Syntax {
            path: path.display().to_string(),
            message: format!("not UTF-8: {e}"),
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parses and validates config text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self, ConfigError> {
        let config: Config = if text.trim().is_empty() {
            Config::default()
        } else {
            serde_yaml::from_str(text)
                .map_err(|e| ConfigError::Syntax { path: origin.to_owned(), message: e.to_string() })?
        };
        config.validate(origin)?;
        Ok(config)
    }

    fn validate(&self, origin: &str) -> Result<(), ConfigError> {
        let invalid = |key, message: String| ConfigError::Invalid { path: origin.to_owned(), key, message };
        if self.interval < Duration::from_secs(1) {
            return Err(invalid("interval", format!("{:?} is below the 1s minimum", self.interval)));
        }
        if self.processes.top > 100 {
            return Err(invalid("processes.top", format!("{} is above the maximum of 100", self.processes.top)));
        }
        if self.exporters.prometheus.listen.parse::<SocketAddr>().is_err() {
            return Err(invalid(
                "exporters.prometheus.listen",
                format!("{:?} is not an address:port such as 127.0.0.1:9817", self.exporters.prometheus.listen),
            ));
        }
        let ep = &self.exporters.otlp.endpoint;
        if !(ep.starts_with("http://") || ep.starts_with("https://")) {
            return Err(invalid("exporters.otlp.endpoint", format!("{ep:?} is not an http:// or https:// URL")));
        }
        if self.exporters.otlp.interval < Duration::from_secs(1) {
            return Err(invalid("exporters.otlp.interval", "must be at least 1s".into()));
        }
        self.compiled_filters().map_err(|(key, e)| invalid(key, e.to_string()))?;
        self.validate_events(origin)?;
        self.validate_alerts(origin)
    }

    fn validate_alerts(&self, origin: &str) -> Result<(), ConfigError> {
        let invalid = |key, message: String| ConfigError::Invalid { path: origin.to_owned(), key, message };
        let a = &self.alerts;
        if a.backoff.is_empty() || a.backoff.iter().any(Duration::is_zero) {
            return Err(invalid("alerts.backoff", "needs at least one wait, each longer than zero".into()));
        }
        if !(0.0..=1.0).contains(&a.jitter) {
            return Err(invalid("alerts.jitter", format!("{} is not between 0 and 1", a.jitter)));
        }
        for (key, d, min) in [
            ("alerts.reloadInterval", a.reload_interval, Duration::from_secs(1)),
            ("alerts.timeout", a.timeout, Duration::from_millis(100)),
            ("alerts.giveUpAfter", a.give_up_after, Duration::from_secs(1)),
        ] {
            if d < min {
                return Err(invalid(key, format!("{d:?} is below the minimum of {min:?}")));
            }
        }
        if a.spool_max_bytes < 64 << 10 {
            return Err(invalid(
                "alerts.spoolMaxBytes",
                format!("{} is below the minimum of 65536", a.spool_max_bytes),
            ));
        }
        Ok(())
    }

    /// The policy files and directories in force: the configured ones, else `pod_default`
    /// (the published policies' mount, given by the caller when the agent runs in a pod and
    /// the directory is there).
    pub fn policy_paths(&self, pod_default: Option<&Path>) -> Vec<PathBuf> {
        match &self.alerts.policies {
            Some(p) => p.clone(),
            None => pod_default.map(|d| vec![d.to_path_buf()]).unwrap_or_default(),
        }
    }

    fn validate_events(&self, origin: &str) -> Result<(), ConfigError> {
        let invalid = |key, message: String| ConfigError::Invalid { path: origin.to_owned(), key, message };
        let ev = &self.events;
        if !(1..=1_000_000).contains(&ev.queue_capacity) {
            return Err(invalid("events.queueCapacity", format!("{} is not between 1 and 1000000", ev.queue_capacity)));
        }
        for (key, limit) in [
            ("events.processes.rateLimit", ev.processes.rate_limit),
            ("events.files.rateLimit", ev.files.rate_limit),
            ("events.auth.rateLimit", ev.auth.rate_limit),
            ("events.network.rateLimit", ev.network.rate_limit),
            ("events.kernel.rateLimit", ev.kernel.rate_limit),
            ("events.containerRateLimit", ev.container_rate_limit),
        ] {
            if !(limit.per_second.is_finite() && limit.per_second >= 0.0) || limit.burst == 0 {
                return Err(invalid(key, "perSecond must be a number ≥ 0 and burst at least 1".into()));
            }
        }
        for (key, d, min) in [
            ("events.processes.pollInterval", ev.processes.poll_interval, Duration::from_millis(100)),
            ("events.auth.pollInterval", ev.auth.poll_interval, Duration::from_millis(100)),
            ("events.network.interval", ev.network.interval, Duration::from_millis(500)),
            ("events.files.rescanInterval", ev.files.rescan_interval, Duration::from_secs(60)),
        ] {
            if d < min {
                return Err(invalid(key, format!("{d:?} is below the minimum of {min:?}")));
            }
        }
        for w in &ev.files.paths {
            if !w.path.starts_with('/') {
                return Err(invalid("events.files.paths", format!("{:?} is not an absolute host path", w.path)));
            }
        }
        self.events_exclude().map_err(|e| invalid("events.files.exclude", e.to_string()))?;
        if ev.auth.brute_force_threshold == 0 {
            return Err(invalid("events.auth.bruteForceThreshold", "must be at least 1".into()));
        }
        let c = &ev.conditions;
        if c.service_restarts == 0 {
            return Err(invalid("events.conditions.serviceRestarts", "must be at least 1".into()));
        }
        if c.unregister_net_device == 0 {
            return Err(invalid("events.conditions.unregisterNetDevice", "must be at least 1".into()));
        }
        if c.oom_kills == 0 {
            return Err(invalid("events.conditions.oomKills", "must be at least 1".into()));
        }
        for (key, d) in [
            ("events.conditions.clearAfter", c.clear_after),
            ("events.conditions.oomWindow", c.oom_window),
            ("events.conditions.unregisterNetDeviceWindow", c.unregister_net_device_window),
            ("events.conditions.serviceRestartWindow", c.service_restart_window),
        ] {
            if d < Duration::from_secs(1) {
                return Err(invalid(key, "must be at least 1s".into()));
            }
        }
        Ok(())
    }

    /// The file-integrity excludes, compiled.
    pub fn events_exclude(&self) -> Result<globset::GlobSet, globset::Error> {
        let mut b = globset::GlobSetBuilder::new();
        for p in &self.events.files.exclude {
            b.add(globset::GlobBuilder::new(p).literal_separator(true).build()?);
        }
        b.build()
    }

    /// The filters, compiled; the error names the filter key.
    pub fn compiled_filters(&self) -> Result<CompiledFilters, (&'static str, globset::Error)> {
        let f = &self.filters;
        Ok(CompiledFilters {
            mounts: NameFilter::from_spec(&f.mounts).map_err(|e| ("filters.mounts", e))?,
            fs_types: NameFilter::from_spec(&f.fs_types).map_err(|e| ("filters.fsTypes", e))?,
            devices: NameFilter::from_spec(&f.devices).map_err(|e| ("filters.devices", e))?,
            interfaces: NameFilter::from_spec(&f.interfaces).map_err(|e| ("filters.interfaces", e))?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_file_is_the_default_config() {
        assert_eq!(Config::parse("", "x.yaml").unwrap(), Config::default());
        assert_eq!(Config::parse("# only a comment\n", "x.yaml").unwrap(), Config::default());
    }

    #[test]
    fn values_override_defaults() {
        let c = Config::parse("interval: 30s\ncollectors:\n  cpu: false\nexporters:\n  prometheus:\n    enabled: true\n    listen: 0.0.0.0:9100\n", "x").unwrap();
        assert_eq!(c.interval, Duration::from_secs(30));
        assert!(!c.collectors.cpu && c.collectors.memory);
        assert!(c.exporters.prometheus.enabled);
    }

    #[test]
    fn an_unknown_key_is_refused_naming_it_and_its_line() {
        let e = Config::parse("interval: 10s\ncollectors:\n  cpuu: true\n", "agent.yaml").unwrap_err().to_string();
        assert!(e.starts_with("agent.yaml: "), "{e}");
        assert!(e.contains("unknown field `cpuu`"), "{e}");
        assert!(e.contains("line 3"), "{e}");
    }

    #[test]
    fn a_config_that_is_not_the_pinned_one_is_refused() {
        let dir = std::env::temp_dir().join(format!("vigil-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("agent.yaml");
        std::fs::write(&path, "interval: 30s\n").unwrap();
        let good = vigil_crds::ConfigHash::of(b"interval: 30s\n").to_string();
        assert_eq!(Config::load_verified(&path, Some(&good)).unwrap().interval, Duration::from_secs(30));
        let e = Config::load_verified(&path, Some(&"0".repeat(64))).unwrap_err().to_string();
        std::fs::remove_dir_all(&dir).ok();
        assert!(e.contains("refusing a config that is not the one rolled out") && e.contains(&good), "{e}");
    }

    #[test]
    fn in_a_pod_unset_policies_are_the_published_ones_and_an_empty_list_is_off() {
        let mount = Path::new("/etc/vigil/policies");
        let unset = Config::parse("interval: 10s\n", "a.yaml").unwrap();
        assert_eq!(unset.policy_paths(Some(mount)), [mount]);
        assert!(unset.policy_paths(None).is_empty(), "on a host: none");
        let off = Config::parse("alerts:\n  policies: []\n", "a.yaml").unwrap();
        assert!(off.policy_paths(Some(mount)).is_empty(), "[] is off in a pod too");
        let own = Config::parse("alerts:\n  policies: [/srv/p.yaml]\n", "a.yaml").unwrap();
        assert_eq!(own.policy_paths(Some(mount)), [Path::new("/srv/p.yaml")]);
    }

    #[test]
    fn bad_values_name_their_key() {
        for (text, key) in [
            ("interval: 100ms", "interval"),
            ("interval: soon", "interval"),
            ("processes:\n  top: 1000", "processes.top"),
            ("exporters:\n  prometheus:\n    listen: localhost", "exporters.prometheus.listen"),
            ("exporters:\n  otlp:\n    endpoint: collector:4317", "exporters.otlp.endpoint"),
            ("exporters:\n  otlp:\n    protocol: udp", "protocol"),
            ("filters:\n  interfaces:\n    exclude: ['[veth']", "filters.interfaces"),
            ("events:\n  queueCapacity: 0", "events.queueCapacity"),
            ("events:\n  files:\n    paths: [{path: etc}]", "events.files.paths"),
            ("events:\n  files:\n    exclude: ['[x']", "events.files.exclude"),
            ("events:\n  auth:\n    pollInterval: 1ms", "events.auth.pollInterval"),
            ("events:\n  kernel:\n    rateLimit: {perSecond: 1, burst: 0}", "events.kernel.rateLimit"),
            ("events:\n  processes:\n    mode: ebpf", "mode"),
            ("events:\n  network:\n    outbund: true", "outbund"),
            ("alerts:\n  backoff: []", "alerts.backoff"),
            ("alerts:\n  backoff: [5s, 0s]", "alerts.backoff"),
            ("alerts:\n  backoff: [soon]", "backoff"),
            ("alerts:\n  jitter: 2", "alerts.jitter"),
            ("alerts:\n  reloadInterval: 10ms", "alerts.reloadInterval"),
            ("alerts:\n  spoolMaxBytes: 100", "alerts.spoolMaxBytes"),
            ("alerts:\n  polices: [/etc]", "polices"),
        ] {
            let e = Config::parse(text, "a.yaml").unwrap_err().to_string();
            assert!(e.contains(key), "{text:?} → {e}");
        }
    }
}
