//! Two installs side by side on a real API server (a migration, or a staging install beside
//! production): two operators, each in its namespace with its own rollout and nodes. Both
//! rollouts complete, neither operator writes the other's rollout, and once done both stay
//! quiet (each operator used to refuse the other's rollout and overwrite its status, for ever).
//!
//! Bare control plane: the test plays the kubelets and agents of its own fake nodes and runs
//! both operators' controllers in-process; it selects only the nodes it created.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails loudly on the first surprise

use std::time::{Duration, Instant};

use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use vigil_crds::AgentRollout;
use vigil_crds::rollout::RolloutPhase;
use vigil_e2e::kubelets::{Bare, image, rollout, wait_phase};
use vigil_e2e::{client, install_crds};

/// How long both rollouts' objects must stay unwritten to count as quiet.
const QUIET: Duration = Duration::from_secs(20);

// Multi-threaded: the kubelet players' guards wait, in their destructors, for their rounds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(vigil_e2e), ignore = "needs a cluster: set VIGIL_E2E_KUBECONFIG to its kubeconfig file")]
async fn two_installs_each_complete_their_own_rollout_and_then_stay_quiet() {
    let client = client().await.unwrap();
    install_crds(&client, Duration::from_secs(60)).await.unwrap();
    let a = Bare::start(&client, "twoa", 2, &image('b')).await.unwrap();
    let b = Bare::start(&client, "twob", 2, &image('b')).await.unwrap();
    let pp = PatchParams::apply("vigil-e2e").force();
    let mut apis = Vec::new();
    for (bare, img) in [(&a, image('a')), (&b, image('c'))] {
        let api: Api<AgentRollout> = Api::namespaced(client.clone(), &bare.ns.name);
        let r = rollout(
            &bare.run,
            "agent",
            &img,
            json!([{"count": 1, "bakeTime": "2s"}, {"percent": 100, "bakeTime": "2s"}]),
        );
        api.patch("agent", &pp, &Patch::Apply(&r)).await.unwrap();
        apis.push(api);
    }
    for api in &apis {
        let done = wait_phase(api, "agent", RolloutPhase::Completed, Duration::from_secs(180)).await;
        let st = done.status.unwrap();
        assert!(
            !st.conditions.iter().any(|c| c.type_ == "Accepted"),
            "the other install refused this rollout: {:?}",
            st.conditions
        );
    }
    // Quiet: within 90 s, a stretch of QUIET in which neither rollout is written at all.
    let version = async |api: &Api<AgentRollout>| api.get("agent").await.unwrap().metadata.resource_version;
    let (deadline, mut since) = (Instant::now() + Duration::from_secs(90), Instant::now());
    let mut last = (version(&apis[0]).await, version(&apis[1]).await);
    let mut writes = 0u32;
    while since.elapsed() < QUIET {
        assert!(
            Instant::now() < deadline,
            "the two rollouts were written {writes} times in 90 s after both completed, never quiet for {QUIET:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = (version(&apis[0]).await, version(&apis[1]).await);
        if now != last {
            writes += 1;
            since = Instant::now();
            last = now;
        }
    }
    assert!(writes <= 4, "{writes} writes after completion before the rollouts went quiet");
    drop(b);
    drop(a);
}
