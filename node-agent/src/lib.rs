//! vigil-agent: what a node is doing, read from the host through a host root.
//!
//! ```text
//!  HostRoot (/ or /host) ──▶ proc::* readers ──▶ Collector ──▶ Snapshot
//!  (the vigil-host crate)                                     ├─▶ scan / watch (text, JSON)
//!                                                             └─▶ run: /metrics, OTLP
//! ```
//!
//! Readers never name `/proc` themselves: the root is a value, so fixtures are plain
//! directories. A failed read is counted, never fatal; the agent never takes its node down.
//! The readers are their own crate, `vigil-host` (no async runtime, client or server), and
//! the security event sources theirs, `vigil-events` (no client, server or exporter); both
//! are re-exported here under their old paths (`host`, `proc`, `clock`, `events`).

pub mod alert;
pub use vigil_host::clock;
pub mod config;
pub mod daemon;
pub use vigil_events as events;
pub mod export;
pub mod handover;
pub mod kubelet;
pub use vigil_agent_config::filter;
pub use vigil_host::host;
pub mod log;
pub use vigil_host::proc;
pub mod render;
pub mod report;
pub mod selfmon;
pub mod snapshot;
pub mod tls;
