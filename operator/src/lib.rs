//! vigil-operator: reconciles `AgentRollout` and `AlertPolicy`.
//!
//! What lands today is the offline half a user needs before any cluster is
//! involved: printing the CRDs (`vigil-operator crds | kubectl apply -f -`)
//! and validating manifests exactly as the API server will
//! (`vigil-operator validate rollout.yaml`). The controllers build on the same
//! validation as the first step of every reconcile.

pub mod manifests;
pub mod plan;
pub mod simulate;
