//! AlertPolicy publication on a real API server: a policy whose Secret exists is published
//! into the ConfigMap and its Secret key mirrored; one whose Secret is missing is left out
//! with `Ready=False, SecretMissing`; one with a rule on a metric the agent does not export,
//! with `Ready=False, UnknownMetric`. The publisher runs in-process, reading the policies of
//! the test's namespace only and publishing into it; a deleted policy, the last one too,
//! leaves the published set within seconds.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails loudly on the first surprise

use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, PostParams};
use serde_json::json;
use vigil_crds::AlertPolicy;
use vigil_e2e::{TestNamespace, client, install_crds};

fn policy(name: &str, secret: &str) -> AlertPolicy {
    serde_json::from_value(json!({
        "apiVersion": "vigil.dev/v1alpha1",
        "kind": "AlertPolicy",
        "metadata": {"name": name},
        "spec": {
            "rules": [{"name": "HighCpu", "metric": {"name": "vigil_node_cpu_utilization_ratio"}, "detector": {"threshold": {"above": 0.9}}}],
            "routes": [{"name": "all", "receivers": ["ops"]}],
            "receivers": [{"name": "ops", "slack": {"webhookUrl": {"name": secret, "key": "slack-url"}}}],
        },
    }))
    .unwrap()
}

/// A namespace of the test's own holding the Secret `alerting` (labelled for alerting), and
/// the APIs of its Secrets and AlertPolicies.
async fn setup(prefix: &str) -> (kube::Client, TestNamespace, Api<Secret>, Api<AlertPolicy>) {
    let client = client().await.unwrap();
    install_crds(&client, Duration::from_secs(60)).await.unwrap();
    let ns = TestNamespace::create(&client, prefix).await.unwrap();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns.name);
    let s: Secret = serde_json::from_value(
        json!({"metadata": {"name": "alerting", "labels": {"vigil.dev/alerting": "true"}}, "stringData": {"slack-url": "https://hooks.slack.invalid/x"}}),
    )
    .unwrap();
    secrets.create(&PostParams::default(), &s).await.unwrap();
    let policies: Api<AlertPolicy> = Api::namespaced(client.clone(), &ns.name);
    (client, ns, secrets, policies)
}

#[tokio::test]
#[cfg_attr(not(vigil_e2e), ignore = "needs a cluster: set VIGIL_E2E_KUBECONFIG to its kubeconfig file")]
async fn policies_are_published_with_their_secrets_or_say_why_not() {
    let (client, ns, secrets, policies) = setup("policies").await;
    policies.create(&PostParams::default(), &policy("good", "alerting")).await.unwrap();
    policies.create(&PostParams::default(), &policy("orphan", "absent")).await.unwrap();
    let mut typo = policy("typo", "alerting");
    typo.spec.rules[0].metric.as_mut().unwrap().name = "vigil_node_cpu_utilization_ratios".into();
    policies.create(&PostParams::default(), &typo).await.unwrap();

    // Only this test's namespace: policies elsewhere are not this test's to touch.
    let source = vigil_operator::policies::Source::Namespace(ns.name.clone());
    vigil_operator::policies::reconcile(&client, &ns.name, &source).await.unwrap();

    let cm = Api::<ConfigMap>::namespaced(client.clone(), &ns.name).get("vigil-alert-policies").await.unwrap();
    let data = cm.data.unwrap_or_default();
    assert!(data.contains_key(&format!("{}.good.yaml", ns.name)), "{:?}", data.keys());
    assert!(!data.contains_key(&format!("{}.orphan.yaml", ns.name)));
    let mirror = secrets.get("vigil-alert-secrets").await.unwrap().data.unwrap_or_default();
    let value = &mirror[&format!("{}_alerting_slack-url", ns.name)];
    assert_eq!(value.0, b"https://hooks.slack.invalid/x");
    let good = policies.get_status("good").await.unwrap().status.unwrap();
    assert_eq!((good.conditions[0].status.as_str(), good.rules), ("True", 1));
    let orphan = policies.get_status("orphan").await.unwrap().status.unwrap();
    assert_eq!(orphan.conditions[0].reason, "SecretMissing");
    assert!(!data.contains_key(&format!("{}.typo.yaml", ns.name)));
    let typo = policies.get_status("typo").await.unwrap().status.unwrap();
    assert_eq!(typo.conditions[0].reason, "UnknownMetric");
    assert!(
        typo.conditions[0].message.contains("did you mean vigil_node_cpu_utilization_ratio?"),
        "{}",
        typo.conditions[0].message
    );
    ns.delete().await.unwrap();
}

#[tokio::test]
#[cfg_attr(not(vigil_e2e), ignore = "needs a cluster: set VIGIL_E2E_KUBECONFIG to its kubeconfig file")]
async fn a_deleted_policy_leaves_the_published_set_even_when_it_was_the_last() {
    let (client, ns, _, policies) = setup("unpublish").await;
    policies.create(&PostParams::default(), &policy("only", "alerting")).await.unwrap();
    // The publisher as the operator runs it, publishing into this test's namespace.
    let publisher = tokio::spawn(vigil_operator::policies::run(
        client.clone(),
        ns.name.clone(),
        vigil_operator::policies::Source::Namespace(ns.name.clone()),
        Default::default(),
    ));
    let cms = Api::<ConfigMap>::namespaced(client.clone(), &ns.name);
    let key = format!("{}.only.yaml", ns.name);
    let published = |want: bool| {
        let (cms, key) = (cms.clone(), key.clone());
        async move {
            let cm = cms.get_opt("vigil-alert-policies").await.map_err(|e| e.to_string())?;
            let has = cm.and_then(|c| c.data).is_some_and(|d| d.contains_key(&key));
            if has == want { Ok(Some(())) } else { Err(format!("published: {has}")) }
        }
    };
    vigil_e2e::wait_for("the policy published", Duration::from_secs(30), Duration::from_millis(500), || {
        published(true)
    })
    .await
    .unwrap();
    policies.delete("only", &Default::default()).await.unwrap();
    // Within seconds (the watch), not the minute's republication.
    vigil_e2e::wait_for("the policy unpublished", Duration::from_secs(20), Duration::from_millis(500), || {
        published(false)
    })
    .await
    .unwrap();
    publisher.abort();
    ns.delete().await.unwrap();
}

#[tokio::test]
#[cfg_attr(not(vigil_e2e), ignore = "needs a cluster: set VIGIL_E2E_KUBECONFIG to its kubeconfig file")]
async fn the_operator_reads_secrets_only_in_the_namespaces_the_chart_lists() {
    // A tenant namespace with a policy and its labelled Secret, and a release of the test's own
    // whose operator acts with exactly the chart's grants (impersonated).
    let (admin, tenant, _secrets, policies) = setup("tenant").await;
    policies.create(&PostParams::default(), &policy("cpu", "alerting")).await.unwrap();
    let release = vigil_e2e::TestNamespace::create(&admin, "secrets").await.unwrap();
    let mut cleanup = vigil_e2e::Cleanup::default();
    let operator_rbac = |values: serde_json::Value| {
        vigil_e2e::chart::render(&release.name, &release.name, &values)
            .unwrap()
            .into_iter()
            .filter(|o| {
                let kind = o.types.as_ref().map(|t| t.kind.as_str()).unwrap_or("");
                kind.contains("Role") && o.metadata.name.as_deref().unwrap_or("").contains("operator")
            })
            .collect::<Vec<_>>()
    };
    let objects = operator_rbac(json!({}));
    vigil_e2e::chart::apply(&admin, &release.name, &objects, &mut cleanup).await.unwrap();
    let operator = vigil_e2e::client_as(
        &format!("system:serviceaccount:{}:vigil-operator", release.name),
        &["system:serviceaccounts", "system:authenticated"],
        Default::default(),
    )
    .await
    .unwrap();
    let source = vigil_operator::policies::Source::Namespace(tenant.name.clone());
    let reason = |client: kube::Client| {
        let (source, release, policies) = (source.clone(), release.name.clone(), policies.clone());
        async move {
            vigil_operator::policies::reconcile(&client, &release, &source).await.map_err(|e| e.to_string())?;
            let st = policies.get_status("cpu").await.map_err(|e| e.to_string())?.status.unwrap_or_default();
            Ok::<_, String>(st.conditions.first().map(|c| (c.reason.clone(), c.message.clone())).unwrap_or_default())
        }
    };
    // Not listed: RBAC refuses the read, and the policy says what to do.
    let (why, message) = reason(operator.clone()).await.unwrap();
    assert_eq!(why, "SecretNotReadable", "{message}");
    assert!(message.contains("alertSecretNamespaces"), "{message}");
    let direct = Api::<Secret>::namespaced(operator.clone(), &tenant.name).get("alerting").await;
    assert!(direct.unwrap_err().to_string().contains("forbidden"));

    // Listed: a RoleBinding there, and the policy publishes (RBAC takes effect at once, but
    // wait on the outcome all the same).
    let listed = json!({"alertSecretNamespaces": [tenant.name]});
    let (here, there): (Vec<_>, Vec<_>) = operator_rbac(listed)
        .into_iter()
        .partition(|o| o.metadata.namespace.as_deref().is_none_or(|n| n == release.name));
    assert_eq!(there.len(), 1, "one RoleBinding in the listed namespace");
    vigil_e2e::chart::apply(&admin, &release.name, &here, &mut cleanup).await.unwrap();
    vigil_e2e::chart::apply(&admin, &tenant.name, &there, &mut cleanup).await.unwrap();
    vigil_e2e::wait_for("the policy published", Duration::from_secs(30), Duration::from_millis(500), || {
        let op = operator.clone();
        let reason = &reason;
        async move {
            let (why, message) = reason(op).await?;
            if why == "Published" { Ok(Some(())) } else { Err(format!("{why}: {message}")) }
        }
    })
    .await
    .unwrap();
    drop(cleanup);
    release.delete().await.unwrap();
    tenant.delete().await.unwrap();
}
