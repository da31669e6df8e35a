//! Every command of `kubectl vigil` against a fake API server: what it reads, what it writes
//! (the exact server-side apply: field manager, content type, body), what it prints and its
//! exit status.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails loudly on the first surprise

mod support;

use serde_json::{Value, json};
use support::{GITOPS, NAME, NS, Operator, STABLE, Seen, Shared, edit_rollout, fleet, rollouts, target, vigil};

/// The one write of a command: a server-side apply of the test rollout by `manager`.
fn the_apply(f: &Shared, manager: &str) -> Seen {
    let writes = f.lock().unwrap().writes();
    assert_eq!(writes.len(), 1, "one write expected: {writes:#?}");
    let w = writes.into_iter().next().unwrap();
    assert_eq!(w.method, "PATCH");
    assert_eq!(w.path, format!("{}/{NAME}", rollouts(NS)));
    assert_eq!(w.content_type.as_deref(), Some("application/apply-patch+yaml"));
    assert_eq!(w.query.get("fieldManager").map(String::as_str), Some(manager));
    assert_eq!(w.body["apiVersion"], "vigil.dev/v1alpha1");
    assert_eq!(w.body["kind"], "AgentRollout");
    assert_eq!(w.body["metadata"], json!({"name": NAME, "namespace": NS}));
    w
}

fn no_writes(f: &Shared) {
    let writes = f.lock().unwrap().writes();
    assert!(writes.is_empty(), "nothing may be written: {writes:#?}");
}

fn spec_of(f: &Shared) -> Value {
    f.lock().unwrap().rollout()["spec"].clone()
}

fn json_out(o: &support::Outcome) -> Value {
    serde_json::from_str(&o.out).unwrap_or_else(|e| panic!("not JSON ({e}): {}", o.out))
}

#[tokio::test]
async fn status_shows_the_operators_waves_pins_and_decisions() {
    let f = fleet();
    let target = target(&f);
    let o = vigil(&f, &["status", NAME, "-o", "json"]).await;
    assert_eq!((o.code, o.err.as_str()), (0, ""));
    let v = json_out(&o);
    assert_eq!(v["rollout"], "ops/agent");
    assert_eq!(v["phase"], "Baking");
    assert_eq!(v["upToDate"], true);
    assert_eq!(v["currentWave"], 1);
    assert_eq!(v["target"]["name"], target.as_str());
    assert_eq!(v["stable"]["name"], STABLE);
    // 5% of the 18 nodes the pin leaves: one node in wave 1, on the target and healthy.
    let waves = v["waves"].as_array().unwrap();
    assert_eq!(waves.len(), 3);
    assert_eq!(waves[0]["size"], 1);
    assert_eq!(waves[0]["gate"]["healthy"], 1);
    let first = waves[0]["nodes"][0]["name"].as_str().unwrap().to_owned();
    assert_eq!(waves[0]["nodes"][0]["health"], "healthy");
    assert_eq!(waves[2]["size"], 18);
    assert_eq!(waves[1]["state"], "waiting");
    // The pin holds the two legacy nodes on the stable revision.
    let pin = &v["pins"][0];
    assert_eq!(
        (pin["name"].as_str(), pin["source"].as_str(), pin["nodes"].as_u64()),
        (Some("legacy"), Some("spec"), Some(2))
    );
    assert_eq!(pin["holdsOn"], STABLE);
    // Nodes per revision.
    let count =
        |rev: &str| v["revisions"].as_array().unwrap().iter().find(|r| r["revision"] == rev).unwrap()["nodes"].clone();
    assert_eq!(count(&target), 1);
    assert_eq!(count(STABLE), 19);
    // The operator's Events about the rollout, newest first; another object's are not read.
    let reasons: Vec<&str> = v["decisions"].as_array().unwrap().iter().map(|d| d["reason"].as_str().unwrap()).collect();
    assert_eq!(reasons, ["Bake", "Admit"]);
    let events = f.lock().unwrap().seen.iter().find(|s| s.path.ends_with("/events")).cloned().unwrap();
    assert_eq!(events.path, "/api/v1/namespaces/ops/events");
    assert_eq!(
        events.query.get("fieldSelector").map(String::as_str),
        Some("involvedObject.kind=AgentRollout,involvedObject.name=agent")
    );
    // The bake of wave 1 ends 60 s after it was ready.
    assert!(v["next"]["what"].as_str().unwrap().contains("wave 2"), "{}", v["next"]);
    assert!(v["next"]["at"].is_string(), "{}", v["next"]);

    // The same as a tree for people.
    let o = vigil(&f, &["status", NAME]).await;
    assert_eq!(o.code, 0, "{}", o.err);
    for want in ["ops/agent", "Baking", "wave 1", &first, "legacy", STABLE, &target, "Bake", "wave 2"] {
        assert!(o.out.contains(want), "{want:?} missing from:\n{}", o.out);
    }
    assert!(!o.out.contains('\x1b'), "no colour unless asked for");
    // YAML says the same as JSON.
    let y = vigil(&f, &["status", NAME, "-o", "yaml"]).await;
    let yv: Value = serde_yaml::from_str(&y.out).unwrap();
    assert_eq!(yv["waves"], v["waves"]);
    no_writes(&f);
}

#[tokio::test]
async fn status_without_rights_to_events_warns_and_shows_the_rest() {
    let f = fleet();
    f.lock().unwrap().events_forbidden = true;
    let o = vigil(&f, &["status", "-o", "json"]).await;
    assert_eq!(o.code, 0, "{}", o.err);
    assert!(o.err.contains("warning: the rollout's Events could not be read"), "{}", o.err);
    assert_eq!(json_out(&o)["decisions"], json!([]));
    assert_eq!(json_out(&o)["phase"], "Baking");
}

#[tokio::test]
async fn the_rollout_is_found_by_name_in_any_namespace_and_ambiguity_is_an_error() {
    let f = fleet();
    // The only rollout: found without a name.
    assert_eq!(vigil(&f, &["status"]).await.code, 0);
    // A name in another namespace than the context's, found without -n.
    let mut other = f.lock().unwrap().rollout();
    other["metadata"]["namespace"] = json!("edge");
    other["metadata"]["name"] = json!("edge-agent");
    f.lock().unwrap().put(&rollouts("edge"), other.clone());
    let o = vigil(&f, &["status", "edge-agent", "-o", "json"]).await;
    assert_eq!(o.code, 0, "{}", o.err);
    assert_eq!(json_out(&o)["rollout"], "edge/edge-agent");
    // With -n, only there.
    let o = vigil(&f, &["-n", "prod", "status", "edge-agent"]).await;
    assert_eq!(o.code, 1);
    assert_eq!(o.err, "error: no AgentRollout edge-agent in namespace prod\n");
    // No name and two rollouts: name one.
    let o = vigil(&f, &["-n", "prod", "pause"]).await;
    assert_eq!((o.code, o.err.as_str()), (1, "error: no AgentRollout in namespace prod\n"));
    other["metadata"]["name"] = json!(NAME);
    f.lock().unwrap().put(&rollouts("edge"), other);
    let o = vigil(&f, &["pause"]).await;
    assert_eq!(o.code, 1);
    assert!(o.err.contains("several AgentRollouts (edge/agent, edge/edge-agent, ops/agent): name one"), "{}", o.err);
    // The context's namespace wins for a name found there.
    let o = vigil(&f, &["status", NAME, "-o", "json"]).await;
    assert_eq!(json_out(&o)["rollout"], "ops/agent");
    no_writes(&f);
}

#[tokio::test]
async fn status_watch_ends_with_the_rollout_and_says_how_by_its_exit_status() {
    let f = fleet();
    // Baking, not ending: the watch gives up at its timeout.
    let o = vigil(&f, &["status", "--watch", "--interval", "20ms", "--timeout", "100ms", "-o", "json"]).await;
    assert_eq!(o.code, 4, "{}", o.err);
    assert!(o.err.contains("ops/agent did not complete, roll back or fail within"), "{}", o.err);
    // One frame: nothing changed between looks.
    assert_eq!(o.out.lines().count(), 1, "{}", o.out);
    for (phase, code) in [("Completed", 0), ("RolledBack", 3), ("Failed", 3)] {
        let f = fleet();
        edit_rollout(&f, |r| {
            r["status"]["phase"] = json!(phase);
        });
        let o = vigil(&f, &["status", "--watch", "--interval", "20ms", "--timeout", "10s"]).await;
        assert_eq!(o.code, code, "{phase}: {}", o.err);
        assert!(o.out.contains(phase), "{phase}: {}", o.out);
    }
    // A phase written for an older generation is not the end: the operator has not planned
    // the latest spec yet.
    let f = fleet();
    edit_rollout(&f, |r| {
        r["status"]["phase"] = json!("Completed");
        r["metadata"]["generation"] = json!(2);
    });
    let o = vigil(&f, &["status", "--watch", "--interval", "20ms", "--timeout", "100ms"]).await;
    assert_eq!(o.code, 4, "{}", o.out);
}

#[tokio::test]
async fn pause_and_resume_apply_spec_paused_with_their_own_field_manager() {
    let f = fleet();
    let o = vigil(&f, &["pause", NAME]).await;
    assert_eq!(o.code, 0, "{}", o.err);
    let w = the_apply(&f, "kubectl-vigil-pause");
    assert_eq!(w.body["spec"], json!({"paused": true}));
    assert!(!w.query.contains_key("force"), "no force unless asked for");
    assert!(o.out.contains("ops/agent stops admitting nodes to"), "{}", o.out);
    // The operator took it up: the plugin read the rollout again and says so.
    assert!(o.out.contains("operator: "), "{}", o.out);
    let spec = spec_of(&f);
    assert_eq!(spec["paused"], true);
    assert_eq!(spec["pins"][0]["name"], "legacy", "the GitOps tool's pin stays");
    // Again: nothing to do, nothing written.
    f.lock().unwrap().seen.clear();
    let o = vigil(&f, &["pause", NAME]).await;
    assert_eq!(o.code, 0);
    assert_eq!(o.out, "ops/agent is already paused (spec.paused)\n");
    no_writes(&f);
    let o = vigil(&f, &["resume", NAME, "--wait", "0s"]).await;
    assert_eq!(o.code, 0, "{}", o.err);
    assert_eq!(the_apply(&f, "kubectl-vigil-pause").body["spec"], json!({"paused": false}));
    assert!(o.out.contains("goes on admitting nodes"), "{}", o.out);
    assert!(o.out.contains("written; the operator carries it out at its next step"), "{}", o.out);
    assert_eq!(spec_of(&f)["paused"], false);
}

#[tokio::test]
async fn dry_run_writes_nothing_and_prints_the_apply() {
    let f = fleet();
    let o = vigil(&f, &["freeze", "--dry-run"]).await;
    assert_eq!(o.code, 0, "{}", o.err);
    assert!(
        o.out.contains("dry run: nothing written; the server-side apply (field manager kubectl-vigil-freeze)"),
        "{}",
        o.out
    );
    assert!(o.out.contains("frozen: true"), "{}", o.out);
    no_writes(&f);
    let o = vigil(&f, &["freeze", "--dry-run", "-o", "json"]).await;
    let v = json_out(&o);
    assert_eq!((v["written"].as_bool(), v["fieldManager"].as_str()), (Some(false), Some("kubectl-vigil-freeze")));
    assert_eq!(v["apply"]["spec"], json!({"frozen": true}));
    no_writes(&f);
}

#[tokio::test]
async fn freeze_and_unfreeze_apply_spec_frozen() {
    let f = fleet();
    let o = vigil(&f, &["freeze", NAME]).await;
    assert_eq!(o.code, 0, "{}", o.err);
    assert_eq!(the_apply(&f, "kubectl-vigil-freeze").body["spec"], json!({"frozen": true}));
    assert!(o.out.contains("is frozen where it stands (Baking, wave 1)"), "{}", o.out);
    f.lock().unwrap().seen.clear();
    let o = vigil(&f, &["unfreeze", NAME]).await;
    assert_eq!(o.code, 0, "{}", o.err);
    assert_eq!(the_apply(&f, "kubectl-vigil-freeze").body["spec"], json!({"frozen": false}));
    assert_eq!(spec_of(&f)["frozen"], false);
}

#[tokio::test]
async fn a_field_another_manager_owns_is_refused_with_a_hint_then_taken_over_by_force() {
    let f = fleet();
    // The GitOps tool applied spec.paused: false.
    edit_rollout(&f, |r| {
        r["spec"]["paused"] = json!(false);
        r["metadata"]["managedFields"][0]["fieldsV1"]["f:spec"]["f:paused"] = json!({});
    });
    let o = vigil(&f, &["pause", NAME]).await;
    assert_eq!(o.code, 1);
    assert!(o.err.contains(&format!("conflict with \"{GITOPS}\"")), "{}", o.err);
    assert!(o.err.contains("run again with --force to take it over"), "{}", o.err);
    assert_eq!(spec_of(&f)["paused"], false);
    f.lock().unwrap().seen.clear();
    let o = vigil(&f, &["pause", NAME, "--force"]).await;
    assert_eq!(o.code, 0, "{}", o.err);
    let w = the_apply(&f, "kubectl-vigil-pause");
    assert_eq!(w.query.get("force").map(String::as_str), Some("true"));
    assert_eq!(spec_of(&f)["paused"], true);
}

#[tokio::test]
async fn promote_sets_an_action_and_waits_for_the_operator_to_handle_it() {
    let f = fleet();
    let o = vigil(&f, &["promote", NAME, "--wait", "10s"]).await;
    assert_eq!(o.code, 0, "{}", o.err);
    let w = the_apply(&f, "kubectl-vigil-action");
    // The id is the plugin's clock: the operator records it in status.handledAction.
    assert_eq!(w.body["spec"], json!({"action": {"id": "kubectl-vigil-promote-20270115t080130z", "kind": "Promote"}}));
    assert!(o.out.contains("ends wave 1's bake now: if its gate passes, wave 2 starts"), "{}", o.out);
    assert!(o.out.contains("carried out kubectl-vigil-promote-20270115t080130z"), "{}", o.out);
    // -o json reports the same.
    let f = fleet();
    let v = json_out(&vigil(&f, &["promote", "-o", "json"]).await);
    assert_eq!(v["actionId"], "kubectl-vigil-promote-20270115t080130z");
    assert_eq!(v["written"], true);
}

#[tokio::test]
async fn an_action_nobody_takes_up_times_out_and_one_refused_fails() {
    let f = fleet();
    f.lock().unwrap().operator = Operator::Absent;
    let o = vigil(&f, &["promote", NAME, "--wait", "1s"]).await;
    assert_eq!(o.code, 4, "{}", o.err);
    assert!(o.out.contains("the operator did not take it up within 1s: is it running?"), "{}", o.out);
    let f = fleet();
    f.lock().unwrap().operator = Operator::Refuses;
    let o = vigil(&f, &["abort", NAME]).await;
    assert_eq!(o.code, 1);
    assert_eq!(the_apply(&f, "kubectl-vigil-action").body["spec"]["action"]["kind"], "Abort");
    assert!(o.err.contains("the operator refused the request: action kubectl-vigil-abort-"), "{}", o.err);
}

#[tokio::test]
async fn promote_and_retry_say_why_there_is_nothing_to_do_and_write_nothing() {
    let f = fleet();
    let o = vigil(&f, &["retry", NAME]).await;
    assert_eq!(o.code, 1);
    assert!(o.err.contains("nothing to retry") && o.err.contains("not Bad"), "{}", o.err);
    edit_rollout(&f, |r| {
        r["status"]["phase"] = json!("Progressing");
    });
    let o = vigil(&f, &["promote", NAME]).await;
    assert_eq!(o.code, 1);
    assert!(o.err.contains("nothing to promote: ops/agent is Progressing at wave 1, not baking"), "{}", o.err);
    no_writes(&f);
}

#[tokio::test]
async fn retry_admits_a_bad_target_again() {
    let f = fleet();
    let target = target(&f);
    edit_rollout(&f, |r| {
        for h in r["status"]["history"].as_array_mut().unwrap() {
            if h["revision"] == target.as_str() {
                h["outcome"] = json!("Bad");
            }
        }
        r["status"]["phase"] = json!("RolledBack");
    });
    let o = vigil(&f, &["retry", NAME]).await;
    assert_eq!(o.code, 0, "{}", o.err);
    assert_eq!(the_apply(&f, "kubectl-vigil-action").body["spec"]["action"]["kind"], "Retry");
    assert!(o.out.contains(&format!("admits {target} again from wave 1")), "{}", o.out);
}

#[tokio::test]
async fn rollback_goes_to_the_stable_revision_or_to_a_good_one_named() {
    let f = fleet();
    let o = vigil(&f, &["rollback", NAME]).await;
    assert_eq!(o.code, 0, "{}", o.err);
    let w = the_apply(&f, "kubectl-vigil-action");
    assert_eq!(w.body["spec"]["action"]["kind"], "Rollback");
    assert!(w.body["spec"]["action"].get("to").is_none(), "{}", w.body);
    assert!(o.out.contains(&format!("1 node(s) move back to {STABLE}")), "{}", o.out);
    let f = fleet();
    let o = vigil(&f, &["rollback", NAME, "--to", STABLE]).await;
    assert_eq!(o.code, 0, "{}", o.err);
    assert_eq!(the_apply(&f, "kubectl-vigil-action").body["spec"]["action"]["to"], STABLE);
    // A revision that is not Good in the history: refused before anything is written.
    let f = fleet();
    let o = vigil(&f, &["rollback", NAME, "--to", "r-ffffffffff"]).await;
    assert_eq!(o.code, 1);
    assert!(
        o.err.contains("r-ffffffffff is no Good revision of this rollout's history; its Good revisions:"),
        "{}",
        o.err
    );
    assert!(o.err.contains(STABLE), "{}", o.err);
    no_writes(&f);
}

#[tokio::test]
async fn pin_adds_a_pin_of_its_own_and_unpin_removes_only_that() {
    let f = fleet();
    let o = vigil(
        &f,
        &[
            "pin",
            "zone-1",
            "--selector",
            "topology.kubernetes.io/zone=z1,pool!=legacy",
            "--revision",
            STABLE,
            "--reason",
            "ticket 4711",
        ],
    )
    .await;
    assert_eq!(o.code, 0, "{}", o.err);
    // Nodes 1, 4, 7, 10, 13, 16: which nodes the selector holds now, asked of the API server.
    assert!(o.out.contains("the selector matches 6 of the rollout's nodes now: node-01, node-04"), "{}", o.out);
    let list = f
        .lock()
        .unwrap()
        .seen
        .iter()
        .find(|s| s.path == "/api/v1/nodes" && s.query.contains_key("labelSelector"))
        .cloned();
    assert_eq!(list.unwrap().query["labelSelector"], "topology.kubernetes.io/zone=z1,pool!=legacy");
    let w = the_apply(&f, "kubectl-vigil-pin");
    // Only its own pins: the GitOps tool's stays the GitOps tool's.
    assert_eq!(
        w.body["spec"]["pins"],
        json!([{"name": "zone-1", "nodeSelector": {"matchLabels": {"topology.kubernetes.io/zone": "z1"}, "matchExpressions": [{"key": "pool", "operator": "NotIn", "values": ["legacy"]}]}, "revision": STABLE, "reason": "ticket 4711"}])
    );
    let names: Vec<Value> = spec_of(&f)["pins"].as_array().unwrap().iter().map(|p| p["name"].clone()).collect();
    assert_eq!(names, [json!("legacy"), json!("zone-1")]);
    // A second pin of the plugin's keeps the first.
    f.lock().unwrap().seen.clear();
    let o = vigil(&f, &["pin", "gpu", "-l", "gpu", "--revision", STABLE, "--reason", "driver"]).await;
    assert_eq!(o.code, 0, "{}", o.err);
    assert!(o.out.contains("matches none of the rollout's nodes now"), "{}", o.out);
    let pins = the_apply(&f, "kubectl-vigil-pin").body["spec"]["pins"].clone();
    assert_eq!(
        pins.as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect::<Vec<_>>(),
        ["zone-1", "gpu"]
    );
    // Unpin: the apply leaves it out, which removes it.
    f.lock().unwrap().seen.clear();
    let o = vigil(&f, &["unpin", "zone-1"]).await;
    assert_eq!(o.code, 0, "{}", o.err);
    assert!(o.out.contains("unpins zone-1"), "{}", o.out);
    let pins = the_apply(&f, "kubectl-vigil-pin").body["spec"]["pins"].clone();
    assert_eq!(pins.as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect::<Vec<_>>(), ["gpu"]);
    let names: Vec<Value> = spec_of(&f)["pins"].as_array().unwrap().iter().map(|p| p["name"].clone()).collect();
    assert_eq!(names, [json!("legacy"), json!("gpu")]);
}

#[tokio::test]
async fn pin_refuses_bad_names_selectors_and_duplicates_before_writing() {
    let f = fleet();
    let o = vigil(&f, &["pin", "Zone_1", "-l", "pool=general", "--revision", STABLE, "--reason", "x"]).await;
    assert_eq!(o.code, 1);
    assert!(o.err.contains("pin name \"Zone_1\": it must be a DNS label"), "{}", o.err);
    let o = vigil(&f, &["pin", "z", "-l", "pool in (a", "--revision", STABLE, "--reason", "x"]).await;
    assert_eq!(o.code, 1);
    assert!(o.err.starts_with("error: --selector: "), "{}", o.err);
    let o = vigil(&f, &["pin", "again", "-l", "pool=legacy", "--revision", STABLE, "--reason", "x"]).await;
    assert_eq!(o.code, 1);
    assert!(o.err.contains("pin legacy already holds the nodes of this selector"), "{}", o.err);
    no_writes(&f);
}

#[tokio::test]
async fn unpin_of_another_managers_pin_needs_force_and_is_then_a_guarded_json_patch() {
    let f = fleet();
    let o = vigil(&f, &["unpin", "legacy"]).await;
    assert_eq!(o.code, 1);
    assert!(o.err.contains(&format!("pin legacy was not written by kubectl vigil but by {GITOPS}")), "{}", o.err);
    let o = vigil(&f, &["unpin", "nope"]).await;
    assert_eq!(o.code, 1);
    assert!(o.err.contains("ops/agent has no pin nope (its pins: legacy)"), "{}", o.err);
    no_writes(&f);
    let o = vigil(&f, &["unpin", "legacy", "--force"]).await;
    assert_eq!(o.code, 0, "{}", o.err);
    let writes = f.lock().unwrap().writes();
    assert_eq!(writes.len(), 1);
    assert_eq!(writes[0].content_type.as_deref(), Some("application/json-patch+json"));
    assert_eq!(
        writes[0].body,
        json!([{"op": "test", "path": "/spec/pins/0/name", "value": "legacy"}, {"op": "remove", "path": "/spec/pins/0"}])
    );
    assert_eq!(spec_of(&f)["pins"], json!([]));
}

#[tokio::test]
async fn agents_lists_the_inventory_with_filters() {
    let f = fleet();
    let target = target(&f);
    let o = vigil(&f, &["agents"]).await;
    assert_eq!(o.code, 0, "{}", o.err);
    let lines: Vec<&str> = o.out.lines().collect();
    assert!(lines[0].starts_with("NODE") && lines[0].contains("REVISION") && lines[0].contains("HEALTH"), "{}", o.out);
    assert_eq!(lines.len(), 1 + support::NODES + 1, "header, a row per node, a summary:\n{}", o.out);
    let v = json_out(&vigil(&f, &["agents", "--revision", &target, "-o", "json"]).await);
    let rows = v.as_array().unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["version"], "2.0.0");
    assert_eq!(rows[0]["health"], "Healthy");
    // By version too.
    let v = json_out(&vigil(&f, &["agents", "--revision", "1.9.0", "-o", "json"]).await);
    assert_eq!(v.as_array().unwrap().len(), support::NODES - 1);
    let o = vigil(&f, &["agents", "--health", "degraded"]).await;
    assert_eq!(o.out, format!("no agents match ({} AgentStatus object(s) in the cluster)\n", support::NODES));
    // Reports are 5 s old: none older than a minute, all older than a second.
    let v = json_out(&vigil(&f, &["agents", "--stale", "1m", "-o", "json"]).await);
    assert_eq!(v, json!([]));
    let v = json_out(&vigil(&f, &["agents", "--stale", "1s", "-o", "json"]).await);
    assert_eq!(v.as_array().unwrap().len(), support::NODES);
    let o = vigil(&f, &["agents", "--health", "sick"]).await;
    assert_eq!(o.code, 1);
    assert!(o.err.contains("--health \"sick\": write Healthy, Degraded, Unhealthy or Unknown"), "{}", o.err);
}

#[tokio::test]
async fn why_names_the_rollout_and_the_reason_for_a_node() {
    let f = fleet();
    let target = target(&f);
    let status = json_out(&vigil(&f, &["status", "-o", "json"]).await);
    let first = status["waves"][0]["nodes"][0]["name"].as_str().unwrap().to_owned();
    let v = json_out(&vigil(&f, &["why", &first, "-o", "json"]).await);
    assert_eq!(v["rollout"], "ops/agent");
    assert_eq!(v["kind"], "wave");
    assert_eq!(v["revision"], target.as_str());
    let v = json_out(&vigil(&f, &["why", "node-19", "-o", "json"]).await);
    assert_eq!(v["kind"], "pinned");
    assert_eq!(v["revision"], STABLE);
    assert_eq!(v["running"], json!([STABLE]), "the agent of its revision runs there");
    assert!(v["because"][0].as_str().unwrap().contains("legacy"), "{}", v["because"]);
    let o = vigil(&f, &["why", "node-19"]).await;
    assert_eq!(o.code, 0, "{}", o.err);
    assert!(o.out.starts_with("node-19\n  rollout   ops/agent\n"), "{}", o.out);
    assert!(o.out.contains("because  held on r-0000000001 by pin legacy"), "{}", o.out);
    assert!(!o.out.contains("running"), "one agent, of the node's revision: nothing to add\n{}", o.out);
    let o = vigil(&f, &["why", "node-99"]).await;
    assert_eq!((o.code, o.err.as_str()), (1, "error: no node node-99\n"));
}

#[tokio::test]
async fn completion_prints_a_script_for_each_shell_without_reading_the_cluster() {
    let f = fleet();
    for shell in ["bash", "zsh", "fish"] {
        let o = vigil(&f, &["completion", shell]).await;
        assert_eq!(o.code, 0, "{}", o.err);
        assert!(o.out.contains("kubectl-vigil"), "{shell}: {}", &o.out[..o.out.len().min(300)]);
        for sub in ["status", "rollback", "unpin", "agents"] {
            assert!(o.out.contains(sub), "{shell} completes {sub}");
        }
    }
    assert!(f.lock().unwrap().seen.is_empty());
}

/// Terminal escapes and a bidirectional override, as a taken-over agent would write them.
const HOSTILE: &str = "\x1b]0;pwned\x07\x1b[2J\u{202e}\u{9b}31m";

#[tokio::test]
async fn no_command_prints_what_an_agent_or_an_event_writer_slipped_in_unescaped() {
    let f = fleet();
    {
        let mut fake = f.lock().unwrap();
        for ((path, _), obj) in fake.objects.iter_mut() {
            if path.ends_with("/agentstatuses") {
                let st = &mut obj["status"];
                for key in
                    ["agentVersion", "channel", "kernel", "osImage", "architecture", "imageDigest", "sourcesSummary"]
                {
                    st[key] = json!(format!("v{HOSTILE}"));
                }
                st["health"] = json!("Degraded");
                st["healthReason"] = json!(format!("disk full{HOSTILE}"));
                st["sources"] =
                    json!([{"name": format!("kernel{HOSTILE}"), "state": "Off", "mode": HOSTILE, "reason": HOSTILE}]);
                st["conditions"] = json!([{"type": "Forged", "status": "True", "reason": "X", "message": HOSTILE, "lastTransitionTime": "2027-01-15T08:00:00Z"}]);
            }
            if path.ends_with("/events") {
                obj["message"] = json!(format!("note{HOSTILE}"));
                obj["reason"] = json!(format!("Admit{HOSTILE}"));
            }
        }
    }
    let node = "node-00";
    let commands: &[&[&str]] = &[
        &["status"],
        &["status", "-o", "json"],
        &["status", "-o", "yaml"],
        &["agents"],
        &["agents", "-o", "json"],
        &["agents", "-o", "yaml"],
        &["agents", "--health", "degraded"],
        &["why", node],
        &["why", node, "-o", "yaml"],
        &["pause", "--dry-run"],
        &["rollback", "--dry-run"],
        &["pin", "edge", "--selector", "pool=legacy", "--revision", STABLE, "--reason", "r", "--dry-run"],
        &["why", "node-99"],
    ];
    let unsafe_char = |c: char| c != '\n' && vigil_crds::text::is_unsafe(c);
    let mut shown = 0;
    for args in commands {
        let o = vigil(&f, args).await;
        for (stream, text) in [("stdout", &o.out), ("stderr", &o.err)] {
            assert!(
                !text.chars().any(unsafe_char),
                "kubectl vigil {args:?} wrote an unescaped control or bidi character to {stream}:\n{text:?}"
            );
        }
        shown += o.out.matches("\\x1b").count();
    }
    assert!(shown > 0, "the hostile text was shown (escaped) somewhere: the test reached it");
}

#[tokio::test]
async fn a_change_writes_back_what_was_stored_never_its_escaped_display() {
    let f = fleet();
    let reason = "first line\twith a tab\nsecond line \u{202e}";
    let o = vigil(
        &f,
        &["pin", "grp-a", "--selector", "topology.kubernetes.io/zone=z1", "--revision", STABLE, "--reason", reason],
    )
    .await;
    assert_eq!(o.code, 0, "{}", o.err);
    assert!(!o.out.chars().any(|c| c != '\n' && vigil_crds::text::is_unsafe(c)), "{:?}", o.out);
    // A second pin re-applies the first (the plugin's own): its reason as it was written.
    let o = vigil(
        &f,
        &["pin", "grp-b", "--selector", "topology.kubernetes.io/zone=z2", "--revision", STABLE, "--reason", "r"],
    )
    .await;
    assert_eq!(o.code, 0, "{}", o.err);
    let pins = spec_of(&f)["pins"].clone();
    let a = pins.as_array().unwrap().iter().find(|p| p["name"] == "grp-a").unwrap();
    assert_eq!(a["reason"], reason, "{pins}");
}
