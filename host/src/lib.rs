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
//! This crate reads files and nothing else: no async runtime, no client, no server
//! (docs/adr/0009-crate-layout.md).

pub mod clock;
pub mod host;
pub mod proc;
