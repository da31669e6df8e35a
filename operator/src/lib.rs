//! vigil-operator: reconciles `AgentRollout` and `AlertPolicy`.
//!
//! ```text
//! reflector stores ──observe──▶ Observed ──plan::next (pure)──▶ Plan ──act──▶ writes
//!                                                                 (status, node labels,
//!                                                                  DaemonSets per revision)
//! ```
//!
//! `observe` and `act` are pure translations between cluster objects and the planner's
//! data; `plan` decides; `simulate` drives the planner over a simulated fleet. Also here:
//! printing the CRDs (`vigil-operator crds`) and validating manifests exactly as the API
//! server will (`vigil-operator validate`).

pub mod act;
pub mod controller;
pub mod events;
pub mod janitor;
pub mod leader;
pub mod manifests;
pub mod metrics;
pub mod observe;
pub mod plan;
pub mod policies;
pub mod prometheus;
pub mod reporting;
pub mod simulate;
pub mod telemetry;
