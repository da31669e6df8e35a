//! Publishing AlertPolicies to the agents.
//!
//! Every AlertPolicy of the cluster that passes the API server's own checks (schema and CEL,
//! from `vigil-crds`) and whose referenced Secret keys exist is written, as a clean manifest,
//! into the ConfigMap [`POLICIES_CONFIGMAP`] of the operator's namespace, one key
//! `<namespace>.<name>.yaml` each; the Secret keys it references are mirrored into the Secret
//! [`SECRETS_SECRET`] under `<namespace>_<secret>_<key>`. The agents mount both (optional, so
//! an agent starts before anything is published) and re-read them on change: a policy reaches
//! every node without a restart. A policy can only reference Secrets of its own namespace.
//!
//! [`publish`] is pure; [`reconcile`] reads the policies and the Secrets they name, then applies
//! the ConfigMap, the Secret and each policy's status (rules, routes, receivers, the SHA-256
//! of what was published, and `Ready` with the reason when not).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use sha2::{Digest, Sha256};
use vigil_crds::policy::{AlertPolicySpec, POLICIES_CONFIGMAP, SECRETS_SECRET, mirrored_secret_key};
use vigil_crds::{AlertPolicy, AlertPolicyStatus};

use crate::act::FIELD_MANAGER;

/// What to write.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Published {
    /// The ConfigMap's data.
    pub policies: BTreeMap<String, String>,
    /// The mirror Secret's data.
    pub secrets: BTreeMap<String, ByteString>,
    /// Each policy's status: (namespace, name, status).
    pub statuses: Vec<(String, String, AlertPolicyStatus)>,
}

/// The Secret keys a policy references: (secret name, key).
pub fn secret_refs(spec: &AlertPolicySpec) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for r in &spec.receivers {
        let mut refs = Vec::new();
        if let Some(s) = &r.slack {
            refs.push(&s.webhook_url);
        }
        if let Some(d) = &r.discord {
            refs.push(&d.webhook_url);
        }
        if let Some(t) = &r.telegram {
            refs.push(&t.bot_token);
        }
        if let Some(w) = &r.webhook {
            refs.push(&w.url);
            refs.extend(w.bearer_token.as_ref());
        }
        if let Some(a) = &r.alertmanager {
            refs.extend(a.bearer_token.as_ref());
        }
        if let Some(e) = &r.email {
            refs.extend(e.password.as_ref());
            refs.extend(e.ca_certificate.as_ref());
        }
        out.extend(refs.into_iter().map(|s| (s.name.clone(), s.key.clone())));
    }
    out
}

/// The policy's `Ready` condition; its transition time moves only when its status does.
fn ready(
    old: Option<&AlertPolicyStatus>,
    on: bool,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: jiff::Timestamp,
) -> Condition {
    let prev = old.map_or(&[][..], |s| s.conditions.as_slice());
    vigil_plan::conditions::condition(prev, "Ready", on, reason, message, generation, now)
}

/// A Secret a policy references, as the operator found it.
#[derive(Clone, Debug, PartialEq)]
pub enum FoundSecret {
    /// Labelled `vigil.dev/alerting=true`: its data may be used.
    Allowed(BTreeMap<String, ByteString>),
    /// It exists but its owner did not opt in: not used.
    NotLabelled,
    /// The operator may not read Secrets in its namespace: the namespace is not one the
    /// chart's `alertSecretNamespaces` lists (RBAC answered 403).
    NotReadable,
}

/// What to publish for `policies`, given the Secrets they reference (`(namespace, name)`;
/// a Secret missing from the map does not exist).
pub fn publish(
    policies: &[AlertPolicy],
    secrets: &BTreeMap<(String, String), FoundSecret>,
    now: jiff::Timestamp,
) -> Published {
    let mut out = Published::default();
    let mut sorted: Vec<&AlertPolicy> = policies.iter().collect();
    sorted.sort_by_key(|p| (p.namespace(), p.name_any()));
    for p in sorted {
        let (ns, name) = (p.namespace().unwrap_or_default(), p.name_any());
        let generation = p.metadata.generation;
        let manifest = json!({
            "apiVersion": vigil_crds::API_VERSION,
            "kind": "AlertPolicy",
            "metadata": {"name": name, "namespace": ns},
            "spec": p.spec,
        });
        let counts = AlertPolicyStatus {
            observed_generation: generation,
            rules: p.spec.rules.len() as u32,
            routes: p.spec.routes.len() as u32,
            receivers: p.spec.receivers.len() as u32,
            ..AlertPolicyStatus::default()
        };
        let refused = |reason: &str, message: String| AlertPolicyStatus {
            conditions: vec![ready(p.status.as_ref(), false, reason, &message, generation, now)],
            ..counts.clone()
        };
        if let Err(e) = vigil_crds::validate::validate_manifest(&manifest) {
            out.statuses.push((ns, name, refused("Invalid", e.to_string())));
            continue;
        }
        let unknown = vigil_crds::policy::unknown_metrics(&p.spec);
        if !unknown.is_empty() {
            let message = format!(
                "not published: {}",
                unknown.iter().map(|(at, e)| format!("{at}: {e}")).collect::<Vec<_>>().join("; ")
            );
            out.statuses.push((ns, name, refused("UnknownMetric", message)));
            continue;
        }
        let mut mirrored = BTreeMap::new();
        let mut missing = Vec::new();
        let mut not_labelled = BTreeSet::new();
        let mut not_readable = BTreeSet::new();
        for (secret, key) in secret_refs(&p.spec) {
            match secrets.get(&(ns.clone(), secret.clone())) {
                Some(FoundSecret::Allowed(data)) => match data.get(&key) {
                    Some(v) => {
                        mirrored.insert(mirrored_secret_key(&ns, &secret, &key), v.clone());
                    }
                    None => missing.push(format!("{secret}/{key}")),
                },
                Some(FoundSecret::NotLabelled) => {
                    not_labelled.insert(secret);
                }
                Some(FoundSecret::NotReadable) => {
                    not_readable.insert(secret);
                }
                None => missing.push(format!("{secret}/{key}")),
            }
        }
        if !not_readable.is_empty() {
            let message = format!(
                "not published: the operator may not read Secrets in namespace {ns} (wanted: {}); list {ns} in the chart's alertSecretNamespaces to let it read the Secrets labelled {}=true there",
                not_readable.into_iter().collect::<Vec<_>>().join(", "),
                vigil_crds::labels::ALERTING_SECRET
            );
            out.statuses.push((ns, name, refused("SecretNotReadable", message)));
            continue;
        }
        if !not_labelled.is_empty() {
            let message = format!(
                "not published: Secret(s) {} in namespace {ns} lack the label {}=true, by which their owner lets AlertPolicies use them",
                not_labelled.into_iter().collect::<Vec<_>>().join(", "),
                vigil_crds::labels::ALERTING_SECRET
            );
            out.statuses.push((ns, name, refused("SecretNotAllowed", message)));
            continue;
        }
        if !missing.is_empty() {
            let message = format!("not published: Secret key(s) {} not found in namespace {ns}", missing.join(", "));
            out.statuses.push((ns, name, refused("SecretMissing", message)));
            continue;
        }
        let yaml = match serde_yaml::to_string(&manifest) {
            Ok(y) => y,
            Err(e) => {
                out.statuses.push((ns, name, refused("Invalid", e.to_string())));
                continue;
            }
        };
        let sha: String = Sha256::digest(yaml.as_bytes()).iter().map(|b| format!("{b:02x}")).collect();
        let message = format!(
            "published to the agents: {} rules, {} routes, {} receivers",
            counts.rules, counts.routes, counts.receivers
        );
        let status = AlertPolicyStatus {
            compiled_sha256: Some(sha),
            conditions: vec![ready(p.status.as_ref(), true, "Published", &message, generation, now)],
            ..counts
        };
        out.policies.insert(format!("{ns}.{name}.yaml"), yaml);
        out.secrets.extend(mirrored);
        out.statuses.push((ns, name, status));
    }
    out
}

impl Published {
    /// Policies by state: (`published`, `invalid`, `unknown_metric`, `secret_missing`,
    /// `secret_not_allowed`, `secret_not_readable`).
    pub fn counts(&self) -> [(&'static str, i64); 6] {
        let reason = |r: &str| {
            self.statuses.iter().filter(|(_, _, s)| s.conditions.first().is_some_and(|c| c.reason == r)).count() as i64
        };
        [
            ("published", reason("Published")),
            ("invalid", reason("Invalid")),
            ("unknown_metric", reason("UnknownMetric")),
            ("secret_missing", reason("SecretMissing")),
            ("secret_not_allowed", reason("SecretNotAllowed")),
            ("secret_not_readable", reason("SecretNotReadable")),
        ]
    }
}

/// Which AlertPolicies are published: every namespace's (the operator), or one namespace's
/// (tests, which touch no policy they did not create).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Source {
    /// Every namespace.
    #[default]
    All,
    /// One namespace.
    Namespace(String),
}

impl Source {
    fn api(&self, client: &Client) -> Api<AlertPolicy> {
        match self {
            Self::All => Api::all(client.clone()),
            Self::Namespace(ns) => Api::namespaced(client.clone(), ns),
        }
    }
}

/// Reads the AlertPolicies of `source` and the Secrets they reference, and writes what
/// [`publish`] makes of them into `namespace` (the operator's), then each changed status.
/// Returns what it published.
pub async fn reconcile(client: &Client, namespace: &str, source: &Source) -> Result<Published, kube::Error> {
    let policies = source.api(client).list(&ListParams::default()).await?.items;
    let mut secrets = BTreeMap::new();
    for p in &policies {
        let ns = p.namespace().unwrap_or_default();
        for (secret, _) in secret_refs(&p.spec) {
            let id = (ns.clone(), secret.clone());
            if secrets.contains_key(&id) {
                continue;
            }
            // The operator may read Secrets only in the namespaces the chart lists: elsewhere
            // RBAC refuses, and that policy (not the whole publication) says so.
            match Api::<Secret>::namespaced(client.clone(), &ns).get_opt(&secret).await {
                Ok(Some(s)) => {
                    let allowed = s.labels().get(vigil_crds::labels::ALERTING_SECRET).is_some_and(|v| v == "true");
                    let found = if allowed {
                        FoundSecret::Allowed(s.data.unwrap_or_default())
                    } else {
                        FoundSecret::NotLabelled
                    };
                    secrets.insert(id, found);
                }
                Ok(None) => {}
                Err(kube::Error::Api(e)) if e.code == 403 => {
                    secrets.insert(id, FoundSecret::NotReadable);
                }
                Err(e) => return Err(e),
            }
        }
    }
    let out = publish(&policies, &secrets, jiff::Timestamp::now());
    // What the agents read now: written only when it differs (a minute's re-check of an
    // unchanged set reads the two objects and writes nothing).
    let live_policies = Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(client.clone(), namespace)
        .get_opt(POLICIES_CONFIGMAP)
        .await?
        .map(|c| c.data.unwrap_or_default());
    let live_secrets = Api::<Secret>::namespaced(client.clone(), namespace)
        .get_opt(SECRETS_SECRET)
        .await?
        .map(|s| s.data.unwrap_or_default());
    let todo = effects(namespace, &policies, &out, live_policies.as_ref(), live_secrets.as_ref());
    crate::act::apply(&crate::act::Writer::new(client.clone()), None, todo, jiff::Timestamp::now())
        .await
        .map_err(crate::act::WriteError::into_cause)?;
    Ok(out)
}

/// The publication's writes, as the operator's effects: the policies ConfigMap and the
/// mirror Secret when what the agents would read differs from what is `live` (`None`: not
/// there), then each status that changed. Pure.
pub fn effects(
    namespace: &str,
    policies: &[AlertPolicy],
    out: &Published,
    live_policies: Option<&BTreeMap<String, String>>,
    live_secrets: Option<&BTreeMap<String, k8s_openapi::ByteString>>,
) -> Vec<crate::act::Effect> {
    use crate::act::{Effect, Published as Kind};
    let labels = json!({vigil_crds::agent::NAME_LABEL.0: vigil_crds::agent::NAME_LABEL.1, vigil_crds::labels::MANAGED_BY: FIELD_MANAGER});
    let mut todo = Vec::new();
    if live_policies != Some(&out.policies) {
        let body = json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": POLICIES_CONFIGMAP, "namespace": namespace, "labels": labels},
            "data": out.policies,
        });
        todo.push(Effect::Publish {
            kind: Kind::ConfigMap,
            namespace: namespace.to_owned(),
            name: POLICIES_CONFIGMAP.to_owned(),
            body: Box::new(body),
        });
    }
    if live_secrets != Some(&out.secrets) {
        let body = json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": SECRETS_SECRET, "namespace": namespace, "labels": labels},
            "type": "Opaque",
            "data": out.secrets,
        });
        todo.push(Effect::Publish {
            kind: Kind::Secret,
            namespace: namespace.to_owned(),
            name: SECRETS_SECRET.to_owned(),
            body: Box::new(body),
        });
    }
    for (ns, name, status) in &out.statuses {
        let old = policies.iter().find(|p| p.namespace().as_deref() == Some(ns.as_str()) && &p.name_any() == name);
        if old.and_then(|p| p.status.as_ref()) == Some(status) {
            continue;
        }
        todo.push(Effect::PolicyStatus { namespace: ns.clone(), name: name.clone(), status: Box::new(status.clone()) });
    }
    todo
}

/// Publishes on every AlertPolicy change (a deletion too), and every minute (a rotated Secret
/// reaches the agents within it), until the process stops.
pub async fn run(client: Client, namespace: String, source: Source, metrics: Arc<crate::metrics::Metrics>) {
    use kube::runtime::{WatchStreamExt, watcher};
    // Every event of the policies' watch, a deletion too, nudges a publication (a full
    // channel already holds one). A controller would not: it reconciles only objects that
    // exist, so deleting the last policy would never be published.
    let (tx, mut nudged) = tokio::sync::mpsc::channel::<()>(1);
    let watch = watcher::watcher(source.api(&client), watcher::Config::default());
    let _watching = crate::controller::AbortOnDrop(tokio::spawn(watch.default_backoff().for_each(move |ev| {
        if ev.is_ok() {
            let _ = tx.try_send(());
        }
        std::future::ready(())
    })));
    let mut stop = std::pin::pin!(shutdown());
    let mut wait = Duration::ZERO;
    loop {
        tokio::select! {
            () = &mut stop => break,
            _ = nudged.recv() => {}
            () = tokio::time::sleep(wait) => {}
        }
        // One publication at a time, each writing the whole ConfigMap from a fresh list.
        wait = match reconcile(&client, &namespace, &source).await {
            Ok(out) => {
                for (state, n) in out.counts() {
                    metrics.alert_policies.get_or_create(&crate::metrics::PolicyStateLabels { state }).set(n);
                }
                metrics.publications.get_or_create(&crate::metrics::ResultLabels { result: "ok" }).inc();
                Duration::from_secs(60)
            }
            Err(e) => {
                metrics.publications.get_or_create(&crate::metrics::ResultLabels { result: "error" }).inc();
                tracing::warn!(error = %e, "publishing alert policies failed");
                Duration::from_secs(15)
            }
        };
    }
}

/// SIGTERM or Ctrl-C.
async fn shutdown() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn policy(ns: &str, name: &str, yaml: &str) -> AlertPolicy {
        let spec: AlertPolicySpec = serde_yaml::from_str(yaml).unwrap();
        let mut p = AlertPolicy::new(name, spec);
        p.metadata.namespace = Some(ns.into());
        p.metadata.generation = Some(4);
        p
    }

    const SLACK: &str = "rules:\n  - name: HighCpu\n    metric: {name: vigil_node_cpu_utilization_ratio}\n    detector: {threshold: {above: 0.9}}\nroutes:\n  - {name: all, receivers: [ops]}\nreceivers:\n  - name: ops\n    slack: {webhookUrl: {name: alerting, key: slack-url}}\n";

    fn secrets(entries: &[(&str, &str, &str, &str)]) -> BTreeMap<(String, String), FoundSecret> {
        let mut out: BTreeMap<(String, String), FoundSecret> = BTreeMap::new();
        for (ns, name, key, value) in entries {
            let entry =
                out.entry(((*ns).into(), (*name).into())).or_insert_with(|| FoundSecret::Allowed(BTreeMap::new()));
            if let FoundSecret::Allowed(data) = entry {
                data.insert((*key).into(), ByteString(value.as_bytes().to_vec()));
            }
        }
        out
    }

    #[test]
    fn valid_policies_are_published_with_their_own_namespaces_secrets() {
        let policies = [policy("team-a", "cpu", SLACK), policy("team-b", "cpu", SLACK)];
        let s = secrets(&[
            ("team-a", "alerting", "slack-url", "https://hooks.slack.com/a"),
            ("team-b", "alerting", "slack-url", "https://hooks.slack.com/b"),
        ]);
        let out = publish(&policies, &s, jiff::Timestamp::UNIX_EPOCH);
        assert_eq!(out.policies.keys().collect::<Vec<_>>(), ["team-a.cpu.yaml", "team-b.cpu.yaml"]);
        assert_eq!(
            out.secrets.get("team-a_alerting_slack-url"),
            Some(&ByteString(b"https://hooks.slack.com/a".to_vec())),
            "each namespace's own value"
        );
        assert_eq!(
            out.secrets.get("team-b_alerting_slack-url"),
            Some(&ByteString(b"https://hooks.slack.com/b".to_vec()))
        );
        let published: serde_json::Value = serde_yaml::from_str(&out.policies["team-a.cpu.yaml"]).unwrap();
        assert_eq!(published["metadata"], json!({"name": "cpu", "namespace": "team-a"}));
        vigil_crds::validate::validate_manifest(&published).unwrap();
        let (_, _, st) = &out.statuses[0];
        assert_eq!((st.rules, st.routes, st.receivers, st.observed_generation), (1, 1, 1, Some(4)));
        assert_eq!(st.compiled_sha256.as_ref().unwrap().len(), 64);
        assert_eq!((st.conditions[0].status.as_str(), st.conditions[0].reason.as_str()), ("True", "Published"));
    }

    #[test]
    fn invalid_policies_and_missing_secrets_are_left_out_with_the_reason() {
        let bad = policy("team-a", "bad", "rules:\n  - name: X\n    metric: {name: m}\n    detector: {}\n");
        let orphan = policy("team-b", "cpu", SLACK);
        // A Secret of the same name in another namespace does not count.
        let s = secrets(&[("team-a", "alerting", "slack-url", "https://hooks.slack.com/a")]);
        let out = publish(&[bad, orphan], &s, jiff::Timestamp::UNIX_EPOCH);
        assert!(out.policies.is_empty() && out.secrets.is_empty());
        let (_, _, bad) = &out.statuses[0];
        assert_eq!((bad.conditions[0].status.as_str(), bad.conditions[0].reason.as_str()), ("False", "Invalid"));
        assert!(bad.conditions[0].message.contains("exactly one detector"), "{}", bad.conditions[0].message);
        let (_, _, orphan) = &out.statuses[1];
        assert_eq!(orphan.conditions[0].reason, "SecretMissing");
        assert_eq!(
            orphan.conditions[0].message,
            "not published: Secret key(s) alerting/slack-url not found in namespace team-b"
        );
        assert_eq!(
            out.counts(),
            [
                ("published", 0),
                ("invalid", 1),
                ("unknown_metric", 0),
                ("secret_missing", 1),
                ("secret_not_allowed", 0),
                ("secret_not_readable", 0)
            ]
        );
    }

    #[test]
    fn a_rule_on_a_metric_the_agent_does_not_export_is_not_published() {
        let typo = SLACK.replace("vigil_node_cpu_utilization_ratio", "vigil_node_cpu_utilization_ratios");
        let label = SLACK.replace(
            "{name: vigil_node_cpu_utilization_ratio}",
            "{name: vigil_node_cpu_utilization_ratio, labels: {cpu: \"0\"}}",
        );
        let s = secrets(&[("team-a", "alerting", "slack-url", "https://hooks.slack.com/a")]);
        let out = publish(
            &[policy("team-a", "typo", &typo), policy("team-a", "label", &label)],
            &s,
            jiff::Timestamp::UNIX_EPOCH,
        );
        assert!(out.policies.is_empty(), "{:?}", out.policies.keys());
        let msg = |i: usize| {
            (out.statuses[i].2.conditions[0].reason.clone(), out.statuses[i].2.conditions[0].message.clone())
        };
        // Sorted by name: "label" first.
        assert_eq!(
            msg(0),
            (
                "UnknownMetric".to_owned(),
                "not published: spec.rules[0] (HighCpu).metric: metric vigil_node_cpu_utilization_ratio has no label \"cpu\" (its labels: none)".to_owned()
            )
        );
        assert_eq!(
            msg(1),
            (
                "UnknownMetric".to_owned(),
                "not published: spec.rules[0] (HighCpu).metric: metric \"vigil_node_cpu_utilization_ratios\" is not a series the agent exports; did you mean vigil_node_cpu_utilization_ratio?".to_owned()
            )
        );
        assert_eq!(out.counts()[2], ("unknown_metric", 2));
    }

    #[test]
    fn a_policy_whose_secrets_the_operator_may_not_read_says_so_and_the_others_publish() {
        let s = BTreeMap::from([
            (("team-b".to_owned(), "alerting".to_owned()), FoundSecret::NotReadable),
            (
                ("team-a".to_owned(), "alerting".to_owned()),
                FoundSecret::Allowed(BTreeMap::from([(
                    "slack-url".to_owned(),
                    ByteString(b"https://hooks.slack.com/a".to_vec()),
                )])),
            ),
        ]);
        let out =
            publish(&[policy("team-a", "cpu", SLACK), policy("team-b", "cpu", SLACK)], &s, jiff::Timestamp::UNIX_EPOCH);
        assert_eq!(out.policies.len(), 1, "team-a's still publishes: {:?}", out.policies.keys());
        let (ns, _, st) = out.statuses.iter().find(|(ns, _, _)| ns == "team-b").unwrap();
        let c = &st.conditions[0];
        assert_eq!((ns.as_str(), c.reason.as_str()), ("team-b", "SecretNotReadable"));
        assert!(c.message.contains("alertSecretNamespaces") && c.message.contains("alerting"), "{}", c.message);
        assert_eq!(out.counts()[5], ("secret_not_readable", 1));
    }

    #[test]
    fn a_secret_its_owner_did_not_label_for_alerting_is_not_used() {
        // A policy author could otherwise send any Secret of the namespace to a URL of their
        // choosing (a Telegram apiUrl, an Alertmanager bearer token).
        let p = policy("team-a", "cpu", SLACK);
        let s = BTreeMap::from([(("team-a".to_owned(), "alerting".to_owned()), FoundSecret::NotLabelled)]);
        let out = publish(&[p], &s, jiff::Timestamp::UNIX_EPOCH);
        assert!(out.policies.is_empty() && out.secrets.is_empty());
        let c = &out.statuses[0].2.conditions[0];
        assert_eq!(c.reason, "SecretNotAllowed");
        assert_eq!(
            c.message,
            "not published: Secret(s) alerting in namespace team-a lack the label vigil.dev/alerting=true, by which their owner lets AlertPolicies use them"
        );
    }

    #[test]
    fn the_ready_transition_time_moves_only_with_the_status() {
        let mut p = policy("team-a", "cpu", SLACK);
        let s = secrets(&[("team-a", "alerting", "slack-url", "u")]);
        let first = publish(std::slice::from_ref(&p), &s, jiff::Timestamp::UNIX_EPOCH);
        p.status = Some(first.statuses[0].2.clone());
        let later = jiff::Timestamp::from_second(3600).unwrap();
        let again = publish(std::slice::from_ref(&p), &s, later);
        assert_eq!(again.statuses[0].2, first.statuses[0].2, "nothing changed: same status, no write");
        let gone = publish(std::slice::from_ref(&p), &BTreeMap::new(), later);
        assert_eq!(gone.statuses[0].2.conditions[0].last_transition_time, Time(later));
    }

    #[test]
    fn a_publication_writes_only_what_the_agents_would_read_differently_and_changed_statuses() {
        use crate::act::{Effect, Published as Kind};
        let p = policy("team-a", "cpu", SLACK);
        let out = publish(std::slice::from_ref(&p), &BTreeMap::new(), jiff::Timestamp::UNIX_EPOCH);
        let kinds = |e: &[Effect]| e.iter().map(Effect::kind).collect::<Vec<_>>();
        // Nothing published yet: both objects, then the status.
        let first = effects("vigil-system", std::slice::from_ref(&p), &out, None, None);
        assert_eq!(kinds(&first), ["Publish", "Publish", "PolicyStatus"]);
        assert!(matches!(&first[0], Effect::Publish { kind: Kind::ConfigMap, name, .. } if name == POLICIES_CONFIGMAP));
        assert!(matches!(&first[1], Effect::Publish { kind: Kind::Secret, name, .. } if name == SECRETS_SECRET));
        // The same again, with the status written: nothing.
        let mut written = p.clone();
        written.status = Some(out.statuses[0].2.clone());
        let again = effects("vigil-system", &[written], &out, Some(&out.policies), Some(&out.secrets));
        assert!(again.is_empty(), "{again:?}");
    }

    #[tokio::test]
    async fn a_reconcile_reads_policies_secrets_and_what_is_published_then_writes_what_changed() {
        use http::{Method, Request, Response};
        use kube::client::Body;
        let (svc, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let client = Client::new(svc, "default");
        let reply = |v: serde_json::Value| {
            Response::builder().status(200).body(Body::from(serde_json::to_vec(&v).unwrap())).unwrap()
        };
        let api = tokio::spawn(async move {
            let mut next = async || {
                let (req, send) = tokio::time::timeout(Duration::from_secs(10), handle.next_request())
                    .await
                    .expect("a request expected")
                    .expect("open");
                let (method, uri) = (req.method().clone(), req.uri().to_string());
                let bytes = req.into_body().collect_bytes().await.unwrap();
                let body: serde_json::Value =
                    if bytes.is_empty() { serde_json::Value::Null } else { serde_json::from_slice(&bytes).unwrap() };
                (method, uri, body, send)
            };
            let (m, uri, _, send) = next().await;
            assert_eq!(m, Method::GET);
            assert!(uri.starts_with("/apis/vigil.dev/v1alpha1/alertpolicies?"), "{uri}");
            let p = serde_json::to_value(policy("team-a", "cpu", SLACK)).unwrap();
            send.send_response(reply(
                json!({"apiVersion": "vigil.dev/v1alpha1", "kind": "AlertPolicyList", "metadata": {}, "items": [p]}),
            ));
            let (_, uri, _, send) = next().await;
            assert_eq!(uri, "/api/v1/namespaces/team-a/secrets/alerting");
            send.send_response(reply(json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "alerting", "labels": {"vigil.dev/alerting": "true"}}, "data": {"slack-url": "aHR0cHM6Ly9ob29rcw=="}})));
            // The published ConfigMap does not exist yet: it is written.
            let (m, uri, _, send) = next().await;
            assert_eq!(
                (m, uri.as_str()),
                (Method::GET, "/api/v1/namespaces/vigil-system/configmaps/vigil-alert-policies")
            );
            send.send_response(
                Response::builder()
                    .status(404)
                    .body(Body::from(serde_json::to_vec(&json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "reason": "NotFound", "code": 404})).unwrap()))
                    .unwrap(),
            );
            // The mirror Secret holds the same keys already: read, not written.
            let (m, uri, _, send) = next().await;
            assert_eq!((m, uri.as_str()), (Method::GET, "/api/v1/namespaces/vigil-system/secrets/vigil-alert-secrets"));
            send.send_response(reply(json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "vigil-alert-secrets"}, "data": {"team-a_alerting_slack-url": "aHR0cHM6Ly9ob29rcw=="}})));
            // Then the writes: the ConfigMap, then the status.
            let (m, uri, body, send) = next().await;
            assert_eq!(m, Method::PATCH);
            assert!(uri.starts_with("/api/v1/namespaces/vigil-system/configmaps/vigil-alert-policies?"), "{uri}");
            assert!(uri.contains("fieldManager=vigil-operator"), "{uri}");
            assert!(body["data"]["team-a.cpu.yaml"].as_str().unwrap().contains("HighCpu"));
            assert_eq!(body["metadata"]["labels"]["app.kubernetes.io/managed-by"], "vigil-operator");
            send.send_response(reply(body));
            let (_, uri, body, send) = next().await;
            assert!(uri.starts_with("/apis/vigil.dev/v1alpha1/namespaces/team-a/alertpolicies/cpu/status?"), "{uri}");
            assert_eq!(body["status"]["conditions"][0]["reason"], "Published");
            assert_eq!(body["status"]["rules"], 1);
            send.send_response(reply(serde_json::to_value(policy("team-a", "cpu", SLACK)).unwrap()));
        });
        reconcile(&client, "vigil-system", &Source::All).await.unwrap();
        tokio::time::timeout(Duration::from_secs(10), api).await.unwrap().unwrap();
    }
}
