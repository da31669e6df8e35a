//! vigil-agent: what a node is doing, read from the host through a host root.
//!
//! ```text
//!  HostRoot (/ or /host) ──▶ proc/* readers ──▶ Collector ──▶ Snapshot
//!                                                              ├─▶ scan / watch (text, JSON)
//!                                                              └─▶ run: /metrics, OTLP
//! ```
//!
//! Readers never name `/proc` themselves: the root is a value, so fixtures are plain
//! directories. A failed read is counted, never fatal; the agent never takes its node down.

pub mod alert;
pub mod clock;
pub mod config;
pub mod daemon;
pub mod events;
pub mod export;
pub mod handover;
pub use vigil_agent_config::filter;
pub mod host;
pub mod log;
pub mod proc;
pub mod render;
pub mod report;
pub mod selfmon;
pub mod snapshot;
pub mod tls;
