//! `kubectl vigil`: follow and steer Vigil's agent rollouts.
//!
//! ```text
//! cli (clap) ──▶ run (reads the API, writes one apply) ──▶ view / why / agents / actions / cleanup (pure)
//!                                                        ──▶ render (text) or JSON / YAML
//! ```
//!
//! What `status` and `why` say about waves, pins and guards is the operator's own planner
//! (`vigil_plan::placement`) run over the same objects the operator reads; the
//! changes are the spec fields the operator already takes (`paused`, `frozen`, `action`,
//! `pins`), each written by a server-side apply with a field manager of its own.

pub mod actions;
pub mod agents;
pub mod cleanup;
pub mod cli;
pub mod render;
pub mod run;
pub mod selector;
pub mod view;
pub mod why;
