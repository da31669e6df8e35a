//! Helpers for Vigil's end-to-end tests against a real cluster.
//!
//! The cluster is the one named by `VIGIL_E2E_KUBECONFIG` (a kubeconfig file, its current
//! context) and never a default kubeconfig picked up by accident: `KUBECONFIG` and
//! `~/.kube/config` are ignored on purpose. Without the variable every test is compiled as
//! ignored (see `build.rs`) and reported as skipped.
//!
//! Two modes, chosen by the variables:
//! - a bare control plane (API server, controller-manager, scheduler; kubelets optional): the
//!   tests create their own Node objects and play their kubelets and agents;
//! - real nodes, with `VIGIL_E2E_AGENT_IMAGE` and `VIGIL_E2E_OPERATOR_IMAGE` (digest
//!   references the cluster can pull): the chart is installed into a namespace of the test's
//!   own and the real agents run on every schedulable node.
//!
//! Every test works in a namespace of its own ([`TestNamespace`]), deletes what it created
//! when it ends, on failure too ([`Cleanup`] runs when dropped, also while a failed
//! assertion unwinds), never touches objects it did not create, and waits on conditions with
//! timeouts, never on sleeps.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, DynamicObject, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::discovery::ApiResource;
use kube::runtime::wait::{await_condition, conditions};
use kube::{Client, Config};

pub mod alertmanager;
pub mod chart;
pub mod fleet;
pub mod kubelets;
pub mod plugin;
pub mod release;

/// The variable naming the cluster's kubeconfig.
pub const KUBECONFIG_VAR: &str = "VIGIL_E2E_KUBECONFIG";
/// The agent image (by digest) for the real-node tests.
pub const AGENT_IMAGE_VAR: &str = "VIGIL_E2E_AGENT_IMAGE";
/// The operator image (by digest) for the real-node tests.
pub const OPERATOR_IMAGE_VAR: &str = "VIGIL_E2E_OPERATOR_IMAGE";

/// Field manager of everything the e2e tests apply.
pub const FIELD_MANAGER: &str = "vigil-e2e";

/// The images of the real-node mode, when both variables are set.
pub fn images() -> Option<(String, String)> {
    let get = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    Some((get(AGENT_IMAGE_VAR)?, get(OPERATOR_IMAGE_VAR)?))
}

/// A client for the cluster named by [`KUBECONFIG_VAR`].
pub async fn client() -> Result<Client> {
    let path = std::env::var_os(KUBECONFIG_VAR).with_context(|| format!("{KUBECONFIG_VAR} is not set"))?;
    let kubeconfig = Kubeconfig::read_from(&path).with_context(|| format!("reading {}", path.to_string_lossy()))?;
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .context("building a client config from the kubeconfig")?;
    Client::try_from(config).context("creating the client")
}

/// A client for the same cluster that authenticates with `token` alone (a service-account
/// token from the TokenRequest API, bound to a pod as the kubelet's projected token is).
pub async fn client_with_token(token: String) -> Result<Client> {
    let path = std::env::var_os(KUBECONFIG_VAR).with_context(|| format!("{KUBECONFIG_VAR} is not set"))?;
    let kubeconfig = Kubeconfig::read_from(&path).with_context(|| format!("reading {}", path.to_string_lossy()))?;
    let mut config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .context("building a client config from the kubeconfig")?;
    config.auth_info = kube::config::AuthInfo { token: Some(secrecy::SecretString::from(token)), ..Default::default() };
    Client::try_from(config).context("creating the client")
}

/// A client for the same cluster acting as `user` in `groups` with the `extra` user info
/// (impersonation: the kubeconfig's user must be allowed to impersonate, as a cluster admin
/// is), to see what the API server lets that user do.
pub async fn client_as(
    user: &str,
    groups: &[&str],
    extra: std::collections::HashMap<String, Vec<String>>,
) -> Result<Client> {
    let path = std::env::var_os(KUBECONFIG_VAR).with_context(|| format!("{KUBECONFIG_VAR} is not set"))?;
    let kubeconfig = Kubeconfig::read_from(&path).with_context(|| format!("reading {}", path.to_string_lossy()))?;
    let mut config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .context("building a client config from the kubeconfig")?;
    config.auth_info.impersonate = Some(user.to_owned());
    config.auth_info.impersonate_groups = Some(groups.iter().map(|g| (*g).to_owned()).collect());
    config.auth_info.impersonate_user_extra = Some(extra);
    Client::try_from(config).context("creating the client")
}

/// The label the e2e tests put on the CRDs they create, so that a later run may update them.
pub const CREATED_BY_E2E: (&str, &str) = ("app.kubernetes.io/managed-by", FIELD_MANAGER);

/// Makes sure Vigil's CRDs are installed and Established. A CRD that is missing is created
/// (labelled [`CREATED_BY_E2E`], and left installed: other tests use it, and deleting a CRD
/// deletes every object of it); one that exists is used as it is when it serves the same
/// schema, brought up to date when an earlier e2e run created it, and otherwise the test
/// fails, changing nothing (another version of Vigil is installed there).
pub async fn install_crds(client: &Client, timeout: Duration) -> Result<()> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for (_, mut crd) in vigil_crds::all_crds() {
        let name = crd.metadata.name.clone().context("CRD without a name")?;
        crd.metadata.labels.get_or_insert_default().insert(CREATED_BY_E2E.0.into(), CREATED_BY_E2E.1.into());
        match api.get_opt(&name).await.with_context(|| format!("reading CRD {name}"))? {
            Some(existing) => {
                let ours = serde_json::to_value(&crd.spec.versions)?;
                let theirs = serde_json::to_value(&existing.spec.versions)?;
                let by_e2e = existing.metadata.labels.as_ref().and_then(|l| l.get(CREATED_BY_E2E.0))
                    == Some(&CREATED_BY_E2E.1.to_owned());
                if !same_schemas(&ours, &theirs) {
                    if !by_e2e {
                        bail!("CRD {name} exists with another schema (another Vigil version?): not touching it");
                    }
                    let pp = kube::api::PatchParams::apply(FIELD_MANAGER).force();
                    api.patch(&name, &pp, &kube::api::Patch::Apply(&crd))
                        .await
                        .with_context(|| format!("updating CRD {name}, which an earlier e2e run created"))?;
                }
            }
            None => match api.create(&PostParams::default(), &crd).await {
                Ok(_) => {}
                // Another test created it meanwhile.
                Err(kube::Error::Api(e)) if e.code == 409 => {}
                Err(e) => return Err(e).with_context(|| format!("creating CRD {name}")),
            },
        }
        let established = await_condition(api.clone(), &name, conditions::is_crd_established());
        match tokio::time::timeout(timeout, established).await {
            Ok(r) => {
                r.with_context(|| format!("watching CRD {name}"))?;
            }
            Err(_) => bail!("CRD {name} not Established within {timeout:?}"),
        }
    }
    Ok(())
}

/// The schemas as the server returns them carry its defaults (`served`, `storage`…) and write
/// `0.0` as `0`; compare what ours set, numbers as numbers.
fn same_schemas(ours: &serde_json::Value, theirs: &serde_json::Value) -> bool {
    fn numbers_as_f64(v: &serde_json::Value) -> serde_json::Value {
        match v {
            serde_json::Value::Number(n) => n.as_f64().map_or(serde_json::Value::Null, serde_json::Value::from),
            serde_json::Value::Array(a) => a.iter().map(numbers_as_f64).collect(),
            serde_json::Value::Object(o) => o.iter().map(|(k, v)| (k.clone(), numbers_as_f64(v))).collect(),
            other => other.clone(),
        }
    }
    let pick = |v: &serde_json::Value| -> Vec<serde_json::Value> {
        v.as_array()
            .into_iter()
            .flatten()
            .map(|ver| numbers_as_f64(&serde_json::json!([ver["name"], ver["schema"], ver["subresources"]])))
            .collect()
    };
    pick(ours) == pick(theirs)
}

/// Objects to delete when the guard is dropped: at the end of a test, and while a failed
/// assertion unwinds. Deletes in the reverse order of [`Cleanup::add`]; an object already
/// gone is fine. Deleting runs on a thread and runtime of its own (a destructor cannot
/// await, and the test's runtime is blocked in it), with a client of its own: a client's
/// connection worker lives on the runtime that made it.
#[derive(Default)]
pub struct Cleanup {
    items: Vec<(ApiResource, Option<String>, String)>,
}

/// Runs `work` with a fresh client on a thread of its own and waits for it.
pub fn blocking<F, Fut>(work: F)
where
    F: FnOnce(Client) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()>,
{
    let done = std::thread::spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
        rt.block_on(async move {
            match client().await {
                Ok(c) => work(c).await,
                Err(e) => eprintln!("cleanup: no client: {e:#}"),
            }
        });
    });
    let _ = done.join();
}

impl Cleanup {
    /// Deletes `name` (of `ar`, in `namespace` or cluster-scoped) when the guard goes.
    pub fn add(&mut self, ar: ApiResource, namespace: Option<&str>, name: &str) {
        self.items.push((ar, namespace.map(str::to_owned), name.to_owned()));
    }

    /// Whether the guard will delete `name` of `ar` (in `namespace`): the test created it.
    pub fn holds(&self, ar: &ApiResource, namespace: Option<&str>, name: &str) -> bool {
        self.items.iter().any(|(a, ns, n)| a == ar && ns.as_deref() == namespace && n == name)
    }

    /// Deletes `name` of the typed kind `K` when the guard goes.
    pub fn add_typed<K: kube::Resource<DynamicType = ()>>(&mut self, namespace: Option<&str>, name: &str) {
        self.add(ApiResource::erase::<K>(&()), namespace, name);
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let items: Vec<_> = std::mem::take(&mut self.items).into_iter().rev().collect();
        if items.is_empty() {
            return;
        }
        blocking(move |client| async move {
            for (ar, ns, name) in items {
                let api: Api<DynamicObject> = match &ns {
                    Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
                    None => Api::all_with(client.clone(), &ar),
                };
                let dp = DeleteParams::background();
                match tokio::time::timeout(Duration::from_secs(30), api.delete(&name, &dp)).await {
                    Ok(Ok(_)) | Ok(Err(kube::Error::Api(_))) => {}
                    Ok(Err(e)) => eprintln!("cleanup: deleting {} {name}: {e}", ar.kind),
                    Err(_) => eprintln!("cleanup: deleting {} {name}: timed out", ar.kind),
                }
            }
        });
    }
}

/// A namespace that lives as long as the test (deleted when dropped, on failure too).
pub struct TestNamespace {
    /// Its name.
    pub name: String,
    _guard: Cleanup,
}

impl TestNamespace {
    /// Creates `vigil-e2e-<prefix>-<random>`.
    pub async fn create(client: &Client, prefix: &str) -> Result<Self> {
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
        let name = format!("vigil-e2e-{prefix}-{:08x}", nanos ^ std::process::id());
        let ns: Namespace = serde_json::from_value(serde_json::json!({"metadata": {"name": name}}))?;
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .with_context(|| format!("creating namespace {name}"))?;
        let mut guard = Cleanup::default();
        guard.add_typed::<Namespace>(None, &name);
        Ok(Self { name, _guard: guard })
    }

    /// Deletes the namespace (and everything in it) now.
    pub async fn delete(self) -> Result<()> {
        drop(self);
        Ok(())
    }

    /// Deletes the namespace and waits (up to `timeout`) until it is gone.
    pub async fn delete_and_wait(self, client: &Client, timeout: Duration) -> Result<()> {
        let name = self.name.clone();
        drop(self);
        let namespaces: Api<Namespace> = Api::all(client.clone());
        wait_for(&format!("namespace {name} gone"), timeout, Duration::from_secs(1), || async {
            match namespaces.get_opt(&name).await.map_err(|e| e.to_string())? {
                None => Ok(Some(())),
                Some(n) => Err(format!("{:?}", n.status.and_then(|s| s.phase))),
            }
        })
        .await
    }
}

/// Waits up to `timeout` for `check` to return `Some`, asking every `every`; the error names
/// `what` and the last answer.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, every: Duration, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>, String>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    let mut last = String::from("not asked yet");
    loop {
        match check().await {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last = e,
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("{what}: not within {timeout:?} (last: {last})");
        }
        tokio::time::sleep(every).await;
    }
}

/// Plays the working agent of `node` (revision `revision`) as the agent reports itself: its
/// heartbeat Lease in `namespace` renewed now in the revision's name, and its AgentStatus
/// Healthy on that revision. Errors are left to the next round of the caller.
pub async fn report_as_agent(client: &Client, namespace: &str, node: &str, revision: &str) {
    use kube::api::{Patch, PatchParams};
    let pp = PatchParams::apply("vigil-e2e-agent").force();
    let now = jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string();
    let name = vigil_crds::agent::lease_name(node);
    let lease = serde_json::json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": name, "labels": {vigil_crds::agent::NAME_LABEL.0: vigil_crds::agent::NAME_LABEL.1}},
        "spec": {"holderIdentity": revision, "leaseDurationSeconds": 40, "renewTime": now}});
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> = Api::namespaced(client.clone(), namespace);
    let _ = leases.patch(&name, &pp, &Patch::Apply(&lease)).await;
    let st = serde_json::json!({"apiVersion": "vigil.dev/v1alpha1", "kind": "AgentStatus", "metadata": {"name": node},
        "spec": {"nodeName": node}, "status": {"revision": revision, "health": "Healthy", "lastReportTime": now}});
    let statuses: Api<vigil_crds::AgentStatus> = Api::all(client.clone());
    let _ = statuses.patch(node, &pp, &Patch::Apply(&st)).await;
    let _ = statuses.patch_status(node, &pp, &Patch::Apply(&st)).await;
}
