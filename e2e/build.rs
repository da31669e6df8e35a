//! e2e tests run only against the cluster named by `VIGIL_E2E_KUBECONFIG`; without it they
//! are compiled as ignored, so the test runner reports them as skipped, never as passed. The
//! real-node tests also need `VIGIL_E2E_AGENT_IMAGE` and `VIGIL_E2E_OPERATOR_IMAGE`, and the
//! alert delivery test `VIGIL_E2E_ALERTMANAGER_ADDRESS` too, and the handover storm (run on a
//! node) `VIGIL_E2E_STORM_NODE`.

fn main() {
    println!("cargo::rustc-check-cfg=cfg(vigil_e2e)");
    println!("cargo::rustc-check-cfg=cfg(vigil_e2e_images)");
    println!("cargo::rustc-check-cfg=cfg(vigil_e2e_alerts)");
    println!("cargo::rustc-check-cfg=cfg(vigil_e2e_storm)");
    for var in [
        "VIGIL_E2E_KUBECONFIG",
        "VIGIL_E2E_AGENT_IMAGE",
        "VIGIL_E2E_OPERATOR_IMAGE",
        "VIGIL_E2E_ALERTMANAGER_ADDRESS",
        "VIGIL_E2E_STORM_NODE",
    ] {
        println!("cargo::rerun-if-env-changed={var}");
    }
    let set = |k: &str| std::env::var_os(k).is_some_and(|v| !v.is_empty());
    if set("VIGIL_E2E_KUBECONFIG") {
        println!("cargo::rustc-cfg=vigil_e2e");
        if set("VIGIL_E2E_AGENT_IMAGE") && set("VIGIL_E2E_OPERATOR_IMAGE") {
            println!("cargo::rustc-cfg=vigil_e2e_images");
            if set("VIGIL_E2E_ALERTMANAGER_ADDRESS") {
                println!("cargo::rustc-cfg=vigil_e2e_alerts");
            }
            if set("VIGIL_E2E_STORM_NODE") {
                println!("cargo::rustc-cfg=vigil_e2e_storm");
            }
        }
    }
}
