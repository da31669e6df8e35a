//! vigil-operator: reconciles `AgentRollout` and `AlertPolicy`.
//!
//! ```text
//! stores (kept facts) ──observe──▶ Observed ──vigil_plan::next (pure)──▶ Plan
//!        │                                                            │
//!        └──────────────── controller::effects (pure) ◀───────────────┘
//!                                   │
//!                                   ▼
//!                  Vec<act::Effect> ──act::apply──▶ writes (status, Events, node labels,
//!                                                   DaemonSets per revision, config copies)
//! ```
//!
//! The planner, the facts the stores keep of each object (`vigil_plan::facts`), its view of
//! a node (`vigil_plan::observe`) and the fleet simulator live in
//! the `vigil-plan` crate, which links no kube client, runtime or HTTP stack
//! (docs/adr/0009-crate-layout.md). Here: the controller that reads the stores and decides a
//! reconcile's effects as values, `act`, which builds the bodies and sends them, printing the
//! CRDs (`vigil-operator crds`) and validating manifests exactly as the API server will
//! (`vigil-operator validate`).

pub mod act;
pub mod controller;
pub mod events;
pub mod janitor;
pub mod kept;
pub mod leader;
pub mod manifests;
pub mod metrics;
pub mod policies;
pub mod prometheus;
pub mod reporting;
pub mod telemetry;
