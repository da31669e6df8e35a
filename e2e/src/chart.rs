//! The chart, rendered with Helm's own SDK (`scripts/chart.py template`, in `.venv`) and
//! applied server-side, as `helm install` would create it; and removed again.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result, bail};
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::discovery::{ApiResource, Discovery, Scope};
use kube::{Client, ResourceExt};
use serde::Deserialize;

use crate::{Cleanup, FIELD_MANAGER};

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().map(PathBuf::from).unwrap_or_default()
}

/// The objects of the chart installed as `release` into `namespace` with `values` over the
/// defaults, CRDs first.
pub fn render(release: &str, namespace: &str, values: &serde_json::Value) -> Result<Vec<DynamicObject>> {
    let python = repo_root().join(".venv/bin/python");
    if !python.exists() {
        bail!("{} missing: run `make test-deps` (Helm's SDK renders the chart)", python.display());
    }
    let out = Command::new(&python)
        .arg(repo_root().join("scripts/chart.py"))
        .args(["template", release, namespace, &values.to_string()])
        .output()
        .context("running scripts/chart.py template")?;
    if !out.status.success() {
        bail!("rendering the chart: {}", String::from_utf8_lossy(&out.stderr));
    }
    let text = String::from_utf8(out.stdout).context("the rendered chart is not UTF-8")?;
    let mut objects = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(&text) {
        let value = serde_json::Value::deserialize(doc).context("parsing the rendered chart")?;
        if value.is_null() {
            continue;
        }
        objects.push(serde_json::from_value(value).context("a rendered document is not an object")?);
    }
    Ok(objects)
}

fn resource_of(discovery: &Discovery, obj: &DynamicObject) -> Result<(ApiResource, bool)> {
    let types = obj.types.as_ref().context("a rendered object without apiVersion/kind")?;
    let (group, version) = types.api_version.split_once('/').unwrap_or(("", types.api_version.as_str()));
    for g in discovery.groups() {
        if g.name() != group {
            continue;
        }
        for (ar, caps) in g.versioned_resources(version) {
            if ar.kind == types.kind {
                return Ok((ar, caps.scope == Scope::Namespaced));
            }
        }
    }
    bail!("the API server does not serve {}/{}", types.api_version, types.kind)
}

fn api_for(client: &Client, ar: &ApiResource, namespaced: bool, namespace: &str) -> Api<DynamicObject> {
    if namespaced { Api::namespaced_with(client.clone(), namespace, ar) } else { Api::all_with(client.clone(), ar) }
}

/// Applies `objects` server-side in order (discovery is run again after the CRDs, so the
/// custom resources that follow are known) and registers each one created with `cleanup`,
/// CRDs excepted: they are shared by every test and stay. A cluster-scoped object that exists
/// and that `cleanup` does not hold (this test did not create it) is left alone and fails the
/// apply. Applying again (an upgrade) updates what the test created.
pub async fn apply(client: &Client, namespace: &str, objects: &[DynamicObject], cleanup: &mut Cleanup) -> Result<()> {
    let mut discovery = Discovery::new(client.clone()).run().await.context("discovering the API")?;
    let pp = PatchParams::apply(FIELD_MANAGER).force();
    let mut after_crds = false;
    for obj in objects {
        let kind = obj.types.as_ref().map(|t| t.kind.as_str()).unwrap_or("");
        if kind == "CustomResourceDefinition" {
            // `install_crds` has made sure they exist with this schema.
            continue;
        }
        if !after_crds {
            discovery = Discovery::new(client.clone()).run().await.context("discovering the API")?;
            after_crds = true;
        }
        let (ar, namespaced) = resource_of(&discovery, obj)?;
        let name = obj.name_any();
        let api = api_for(client, &ar, namespaced, namespace);
        let existed = api.get_opt(&name).await.with_context(|| format!("reading {kind} {name}"))?.is_some();
        let ours = cleanup.holds(&ar, namespaced.then_some(namespace), &name);
        if existed && !namespaced && !ours {
            bail!("cluster-scoped {kind} {name} exists already: not touching it (use another release name)");
        }
        api.patch(&name, &pp, &Patch::Apply(obj)).await.with_context(|| format!("applying {kind} {name}"))?;
        if !existed && !ours {
            cleanup.add(ar, namespaced.then_some(namespace), &name);
        }
    }
    Ok(())
}
