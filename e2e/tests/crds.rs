//! The API contract against a real API server: the CRDs are accepted as structural schemas,
//! the examples pass server-side validation, and a bad manifest is refused naming its field.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails loudly on the first surprise

use std::time::Duration;

use kube::api::{Api, PostParams};
use kube::core::{DynamicObject, GroupVersionKind};
use kube::discovery::ApiResource;
use vigil_e2e::{TestNamespace, client, install_crds};

fn example(file: &str) -> DynamicObject {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/examples").join(file);
    serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn api_for(client: &kube::Client, ns: &str, kind: &str) -> Api<DynamicObject> {
    let ar = ApiResource::from_gvk(&GroupVersionKind::gvk(vigil_crds::GROUP, vigil_crds::VERSION, kind));
    Api::namespaced_with(client.clone(), ns, &ar)
}

#[tokio::test]
#[cfg_attr(not(vigil_e2e), ignore = "needs a cluster: set VIGIL_E2E_KUBECONFIG to its kubeconfig file")]
async fn crds_install_and_the_api_server_validates_like_the_client() {
    let client = client().await.unwrap();
    install_crds(&client, Duration::from_secs(60)).await.unwrap();
    let ns = TestNamespace::create(&client, "crds").await.unwrap();
    let dry = PostParams { dry_run: true, ..Default::default() };

    for (file, kind) in [("agentrollout.yaml", "AgentRollout"), ("alertpolicy.yaml", "AlertPolicy")] {
        let mut obj = example(file);
        obj.metadata.namespace = Some(ns.name.clone());
        let created = api_for(&client, &ns.name, kind).create(&dry, &obj).await;
        assert!(created.is_ok(), "{file}: {created:?}");
        // Server-side defaulting agrees with the Rust defaults.
        if kind == "AlertPolicy" {
            let c = created.unwrap();
            assert_eq!(c.data["spec"]["routes"][0]["rateLimit"]["maxPerHour"], 20);
        }
    }

    let mut bad = example("agentrollout.yaml");
    bad.metadata.namespace = Some(ns.name.clone());
    bad.data["spec"]["target"]["config"]["sha256"] = serde_json::json!("not-a-hash");
    let err = api_for(&client, &ns.name, "AgentRollout").create(&dry, &bad).await.unwrap_err();
    let text = err.to_string();
    assert!(text.contains("spec.target.config.sha256"), "{text}");
    assert!(text.contains("64 lowercase hex"), "{text}");

    // The anomaly detector: `anomaly: {}` takes the default sensitivity from the server's
    // defaulting; an unknown sensitivity and a second detector are refused where they are.
    let mut anomaly = example("alertpolicy.yaml");
    anomaly.metadata.namespace = Some(ns.name.clone());
    anomaly.data["spec"]["rules"][0]["detector"] = serde_json::json!({"anomaly": {}});
    let policies = api_for(&client, &ns.name, "AlertPolicy");
    let created = policies.create(&dry, &anomaly).await.unwrap();
    assert_eq!(created.data["spec"]["rules"][0]["detector"]["anomaly"]["sensitivity"], "medium");
    anomaly.data["spec"]["rules"][0]["detector"] = serde_json::json!({"anomaly": {"sensitivity": "extreme"}});
    let text = policies.create(&dry, &anomaly).await.unwrap_err().to_string();
    assert!(text.contains("spec.rules[0].detector.anomaly.sensitivity") && text.contains("\"medium\""), "{text}");
    anomaly.data["spec"]["rules"][0]["detector"] =
        serde_json::json!({"anomaly": {}, "zScore": {"window": 60, "threshold": 4}});
    let text = policies.create(&dry, &anomaly).await.unwrap_err().to_string();
    assert!(text.contains("spec.rules[0].detector") && text.contains("set exactly one detector"), "{text}");

    ns.delete().await.unwrap();
}
