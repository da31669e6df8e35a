//! vigil-host: what a node is doing, read from the host through a host root.
//!
//! ```text
//!  HostRoot (/ or /host) ──▶ proc::* readers ──▶ (the agent's Collector ──▶ Snapshot)
//! ```
//!
//! Readers never name `/proc` themselves: the root is a value ([`host::HostRoot`]), so
//! fixtures are plain directories. A failed read is counted ([`proc::ReadErrors`]), never
//! fatal; the agent never takes its node down.
//!
//! This crate reads the host and nothing else: files under the root, `statvfs(2)` of its
//! mounts, the kernel clock state (`adjtimex(2)`, read-only) and the node's name from the
//! environment. No async runtime, no client, no server, no exporter
//! (docs/adr/0009-crate-layout.md, checked by `crds/tests/architecture.rs`).

pub mod clock;
pub mod host;
pub mod proc;
