//! Objects shaped like a production cluster's, for the benchmarks that measure what the
//! operator keeps of them: the scale and fleet benches create them on a real API server, and
//! the store bench parses and keeps them in-process. Not used by the planner itself.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Node;
use serde_json::json;

/// A Node as a cloud's node looks (the `i`-th of a fleet): 29 labels (6 well-known ones with
/// three zones, 23 of a team's) and the `extra` ones (the benches add their run's), 50 images in `status.images`, about 4 KB of annotations,
/// addresses, a Ready condition and node info.
pub fn cloud_node(name: &str, i: usize, extra: &BTreeMap<String, String>) -> Node {
    let mut labels: BTreeMap<String, String> = BTreeMap::from([
        ("kubernetes.io/hostname".into(), name.into()),
        ("kubernetes.io/os".into(), "linux".into()),
        ("kubernetes.io/arch".into(), "amd64".into()),
        ("node.kubernetes.io/instance-type".into(), "m6i.2xlarge".into()),
        ("topology.kubernetes.io/region".into(), "eu-west-1".into()),
        ("topology.kubernetes.io/zone".into(), format!("eu-west-1{}", ["a", "b", "c"][i % 3])),
    ]);
    for k in 0..23 {
        labels.insert(format!("team.example.com/label-{k:02}"), format!("value-{}-{k}", i % 17));
    }
    labels.extend(extra.iter().map(|(k, v)| (k.clone(), v.clone())));
    let images: Vec<serde_json::Value> = (0..50)
        .map(|k| {
            json!({"names": [
                format!("registry.example.com/platform/service-{k:02}@sha256:{:064x}", k * 7919 + i),
                format!("registry.example.com/platform/service-{k:02}:v1.{k}.{}", i % 5),
            ], "sizeBytes": 50_000_000 + k * 1_000_000})
        })
        .collect();
    let node = json!({
        "metadata": {
            "name": name,
            "labels": labels,
            "annotations": {
                "node.alpha.kubernetes.io/ttl": "0",
                "volumes.kubernetes.io/controller-managed-attach-detach": "true",
                "csi.volume.kubernetes.io/nodeid": format!("{{\"ebs.csi.aws.com\":\"i-{i:017x}\",\"efs.csi.aws.com\":\"i-{i:017x}\"}}"),
                "team.example.com/inventory": "x".repeat(3500),
            },
        },
        "spec": {"providerID": format!("aws:///eu-west-1a/i-{i:017x}")},
        "status": {
            "capacity": {"cpu": "8", "memory": "32Gi", "pods": "110", "ephemeral-storage": "100Gi"},
            "allocatable": {"cpu": "7910m", "memory": "31Gi", "pods": "110", "ephemeral-storage": "95Gi"},
            "addresses": [{"type": "InternalIP", "address": format!("10.{}.{}.{}", i / 65536 % 256, i / 256 % 256, i % 256)}, {"type": "Hostname", "address": name}],
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "kubelet is posting ready status"}],
            "nodeInfo": {"osImage": "Ubuntu 22.04.4 LTS", "kernelVersion": "6.5.0-1017-aws", "architecture": "amd64", "operatingSystem": "linux",
                         "containerRuntimeVersion": "containerd://1.7.13", "kubeletVersion": "v1.31.0", "kubeProxyVersion": "v1.31.0",
                         "bootID": format!("{i:08x}"), "machineID": format!("{i:032x}"), "systemUUID": format!("{i:032x}")},
            "images": images,
        }
    });
    // The shape above is a valid Node by construction; a failure here is a bug in it.
    serde_json::from_value(node).unwrap_or_else(|e| panic!("the cloud node shape is not a Node: {e}"))
}
