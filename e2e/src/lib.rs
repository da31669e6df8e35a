//! Helpers for Vigil's end-to-end tests against a real cluster.
//!
//! The cluster is the one named by `VIGIL_E2E_KUBECONFIG` (a kubeconfig file, its current
//! context) and never a default kubeconfig picked up by accident: `KUBECONFIG` and
//! `~/.kube/config` are ignored on purpose. Without the variable every test is compiled as
//! ignored (see `build.rs`) and reported as skipped.
//!
//! Every test works in a namespace of its own, made by [`TestNamespace::create`] and deleted
//! when the test ends, and waits on conditions with timeouts, never on sleeps.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::wait::{await_condition, conditions};
use kube::{Client, Config};

/// The variable naming the cluster's kubeconfig.
pub const KUBECONFIG_VAR: &str = "VIGIL_E2E_KUBECONFIG";

/// Field manager of everything the e2e tests apply.
pub const FIELD_MANAGER: &str = "vigil-e2e";

/// A client for the cluster named by [`KUBECONFIG_VAR`].
pub async fn client() -> Result<Client> {
    let path = std::env::var_os(KUBECONFIG_VAR).with_context(|| format!("{KUBECONFIG_VAR} is not set"))?;
    let kubeconfig = Kubeconfig::read_from(&path).with_context(|| format!("reading {}", path.to_string_lossy()))?;
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .context("building a client config from the kubeconfig")?;
    Client::try_from(config).context("creating the client")
}

/// Applies the generated CRDs (server-side apply) and waits until each is Established.
pub async fn install_crds(client: &Client, timeout: Duration) -> Result<()> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let pp = PatchParams::apply(FIELD_MANAGER).force();
    for (_, crd) in vigil_crds::all_crds() {
        let name = crd.metadata.name.clone().context("CRD without a name")?;
        api.patch(&name, &pp, &Patch::Apply(&crd)).await.with_context(|| format!("applying CRD {name}"))?;
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

/// A namespace that lives as long as the test.
pub struct TestNamespace {
    client: Client,
    /// Its name.
    pub name: String,
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
        Ok(Self { client: client.clone(), name })
    }

    /// Deletes the namespace (and everything in it).
    pub async fn delete(self) -> Result<()> {
        Api::<Namespace>::all(self.client.clone())
            .delete(&self.name, &DeleteParams::default())
            .await
            .with_context(|| format!("deleting namespace {}", self.name))?;
        Ok(())
    }
}
