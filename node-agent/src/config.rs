//! The agent's YAML config: defaults for everything, unknown keys refused, errors that name
//! the key and the line.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::filter::{FilterSpec, NameFilter};

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
        }
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
}

impl Default for OtlpConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            endpoint: "http://127.0.0.1:4318".into(),
            protocol: OtlpProtocol::Http,
            interval: Duration::from_secs(30),
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
        Ok(())
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
    fn bad_values_name_their_key() {
        for (text, key) in [
            ("interval: 100ms", "interval"),
            ("interval: soon", "interval"),
            ("processes:\n  top: 1000", "processes.top"),
            ("exporters:\n  prometheus:\n    listen: localhost", "exporters.prometheus.listen"),
            ("exporters:\n  otlp:\n    endpoint: collector:4317", "exporters.otlp.endpoint"),
            ("exporters:\n  otlp:\n    protocol: udp", "protocol"),
            ("filters:\n  interfaces:\n    exclude: ['[veth']", "filters.interfaces"),
        ] {
            let e = Config::parse(text, "a.yaml").unwrap_err().to_string();
            assert!(e.contains(key), "{text:?} → {e}");
        }
    }
}
