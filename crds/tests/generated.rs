//! The committed CRD YAML is what the types generate, everywhere it is copied,
//! and it is a structural schema a real API server accepts.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails loudly on the first surprise

use std::path::PathBuf;

use kube::core::cel::{CompiledSchema, compile_schema, estimate_rule_cost};
use serde_json::Value;

/// Every place `make generate` writes the CRDs to.
const COPIES: [&str; 3] = ["crds", "charts/vigil/crds", "manifests/crds"];

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf()
}

#[test]
fn committed_crd_yaml_is_what_the_types_generate_in_every_copy() {
    let rendered = vigil_crds::render_all().unwrap();
    let mut stale = Vec::new();
    for dir in COPIES {
        for (file, text) in &rendered {
            let path = repo_root().join(dir).join(file);
            let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
            if &on_disk != text {
                stale.push(path.display().to_string());
            }
        }
    }
    assert!(stale.is_empty(), "stale generated files (run `make generate`): {stale:?}");
}

#[test]
fn the_committed_crd_reference_is_what_the_schemas_generate() {
    let on_disk = std::fs::read_to_string(repo_root().join("docs/crd-reference.md")).unwrap_or_default();
    assert!(on_disk == vigil_crds::reference::markdown(), "docs/crd-reference.md is stale (run `make generate`)");
}

fn schemas() -> Vec<(String, Value)> {
    vigil_crds::all_crds()
        .into_iter()
        .map(|(file, crd)| {
            let v = crd.spec.versions[0].schema.as_ref().unwrap().open_api_v3_schema.as_ref().unwrap();
            (file.to_owned(), serde_json::to_value(v).unwrap())
        })
        .collect()
}

/// Walks every schema node with its path.
fn walk<'a>(path: &str, node: &'a Value, out: &mut Vec<(String, &'a Value)>) {
    out.push((path.to_owned(), node));
    if let Some(props) = node.get("properties").and_then(Value::as_object) {
        for (k, v) in props {
            walk(&format!("{path}.{k}"), v, out);
        }
    }
    if let Some(items) = node.get("items") {
        walk(&format!("{path}[]"), items, out);
    }
    if let Some(ap) = node.get("additionalProperties").filter(|v| v.is_object()) {
        walk(&format!("{path}{{}}"), ap, out);
    }
}

#[test]
fn schemas_are_structural() {
    for (file, schema) in schemas() {
        let mut nodes = Vec::new();
        walk("", &schema, &mut nodes);
        assert!(nodes.len() > 20, "{file}: suspiciously small schema");
        for (path, node) in nodes {
            let obj = node.as_object().unwrap();
            let int_or_string = obj.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true));
            assert!(obj.contains_key("type") || int_or_string, "{file}{path}: no type");
            for banned in ["$ref", "anyOf", "oneOf", "allOf", "not", "x-kubernetes-preserve-unknown-fields"] {
                assert!(!obj.contains_key(banned), "{file}{path}: {banned} is not allowed here");
            }
            assert!(
                !(obj.contains_key("properties") && obj.contains_key("additionalProperties")),
                "{file}{path}: properties and additionalProperties together"
            );
            if obj.get("x-kubernetes-list-type").and_then(Value::as_str) == Some("map") {
                let item = &obj["items"];
                let required: Vec<&str> = item
                    .get("required")
                    .and_then(Value::as_array)
                    .map(|r| r.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                for key in obj["x-kubernetes-list-map-keys"].as_array().unwrap() {
                    let key = key.as_str().unwrap();
                    assert!(
                        required.contains(&key) || item["properties"][key].get("default").is_some(),
                        "{file}{path}: list-map key {key} must be required or defaulted"
                    );
                }
            }
        }
    }
}

#[test]
fn every_spec_and_status_field_has_a_description_for_kubectl_explain() {
    for (file, schema) in schemas() {
        let mut nodes = Vec::new();
        walk("", &schema, &mut nodes);
        for (path, node) in nodes {
            let under_api = path.starts_with(".spec") || path.starts_with(".status");
            // Array items and map values are described by their parent.
            let element = path.ends_with("[]") || path.ends_with('}');
            if under_api && !element {
                let d = node.get("description").and_then(Value::as_str).unwrap_or("");
                assert!(!d.trim().is_empty(), "{file}{path}: no description");
            }
        }
    }
}

#[test]
fn every_default_is_valid_against_its_own_schema() {
    let mut checked = 0;
    for (file, schema) in schemas() {
        let mut nodes = Vec::new();
        walk("", &schema, &mut nodes);
        for (path, node) in nodes {
            if let Some(default) = node.get("default") {
                let mut sub = node.clone();
                sub.as_object_mut().unwrap().remove("default");
                let sub = strip_k8s(sub);
                let validator = jsonschema::options().with_draft(jsonschema::Draft::Draft4).build(&sub).unwrap();
                let errors: Vec<String> = validator.iter_errors(default).map(|e| e.to_string()).collect();
                assert!(errors.is_empty(), "{file}{path}: default {default} is invalid: {errors:?}");
                let cel = kube::core::cel::Validator::new().validate(&node.clone(), default, None);
                assert!(cel.is_ok(), "{file}{path}: default {default} breaks a CEL rule: {cel:?}");
                checked += 1;
            }
        }
    }
    assert!(checked >= 15, "only {checked} defaults found; the walk is broken");
}

fn strip_k8s(mut v: Value) -> Value {
    if let Value::Object(m) = &mut v {
        m.retain(|k, _| !k.starts_with("x-kubernetes-") && k != "nullable");
        for (_, c) in m.iter_mut() {
            *c = strip_k8s(std::mem::take(c));
        }
    }
    v
}

fn compile_errors(at: &str, c: &CompiledSchema, out: &mut Vec<String>, rules: &mut usize) {
    for r in &c.validations {
        *rules += 1;
        match r {
            Err(e) => out.push(format!("{at}: {e}")),
            // The API server refuses a CRD whose rule may cost more than its budget. kube-cel's
            // estimate assumes every comprehension iterates the node's largest list, which only
            // holds where the node has one list; rules over several lists (the routes →
            // receivers check) are covered by every one of those lists having maxItems, below.
            Ok(compiled) if c.items.is_some() || c.properties.values().filter(|p| p.items.is_some()).count() <= 1 => {
                for w in estimate_rule_cost(&compiled.rule.rule, c) {
                    out.push(format!("{at}: rule {:?}: {w:?}", compiled.rule.rule));
                }
            }
            Ok(_) => {}
        }
    }
    for (k, child) in &c.properties {
        compile_errors(&format!("{at}.{k}"), child, out, rules);
    }
    if let Some(items) = &c.items {
        compile_errors(&format!("{at}[]"), items, out, rules);
    }
    if let Some(ap) = &c.additional_properties {
        compile_errors(&format!("{at}{{}}"), ap, out, rules);
    }
}

/// The API server's cost rules (Kubernetes documentation, CustomResourceDefinitions,
/// "Validation rules" → "Resource use by validation functions"): it estimates the worst-case
/// cost of each CEL rule from the sizes of what the rule can reach and refuses the CRD when one
/// rule exceeds the per-rule limit (10,000,000 units) or the sum of all rules, each multiplied
/// by how many times it may run (the product of `maxItems`/`maxProperties` of every list and
/// map above it), exceeds the per-CRD limit (100,000,000). A string without `maxLength`, a list
/// without `maxItems` or a map without `maxProperties` counts as large as a whole request
/// (3 MiB), which is how one unbounded field gets a CRD refused (kube-cel's client-side
/// estimate does not model this, so it passed a CRD the real server refused by 40×).
///
/// So: every string, list and map below a rule (what the rule can read) and every list and map
/// above it (what multiplies it) must be bounded. String enums are sized by their values.
#[test]
fn every_cel_rule_compiles_and_everything_a_rule_reaches_or_repeats_under_is_bounded() {
    let mut rules = 0;
    for (file, schema) in schemas() {
        let mut errors = Vec::new();
        compile_errors(&file, &compile_schema(&schema), &mut errors, &mut rules);
        assert!(errors.is_empty(), "{errors:#?}");
        let mut unbounded = Vec::new();
        bounds_under_rules(&file, "", &schema, false, false, &mut unbounded);
        assert!(unbounded.is_empty(), "unbounded under or above a CEL rule:\n{}", unbounded.join("\n"));
    }
    assert!(rules >= 30, "only {rules} CEL rules found");
}

fn unbounded_kind(node: &Value) -> Option<&'static str> {
    match node.get("type").and_then(Value::as_str) {
        Some("string") if node.get("maxLength").is_none() && node.get("enum").is_none() => Some("maxLength"),
        Some("array") if node.get("maxItems").is_none() => Some("maxItems"),
        Some("object") if node.get("additionalProperties").is_some() && node.get("maxProperties").is_none() => {
            Some("maxProperties")
        }
        _ => None,
    }
}

/// `under`: a rule above this node can read it; `repeated_unbounded`: an unbounded list or map
/// above it multiplies the rules at and below it.
fn bounds_under_rules(
    file: &str,
    path: &str,
    node: &Value,
    under: bool,
    repeated_unbounded: bool,
    out: &mut Vec<String>,
) {
    let has_rule = node.get("x-kubernetes-validations").is_some();
    let under = under || has_rule;
    let missing = unbounded_kind(node);
    if let Some(kind) = missing
        && under
    {
        out.push(format!("{file}{path}: needs {kind}"));
    }
    if has_rule && repeated_unbounded {
        out.push(format!("{file}{path}: its rule repeats under an unbounded list or map above it"));
    }
    let repeats = repeated_unbounded || matches!(missing, Some("maxItems" | "maxProperties"));
    if let Some(props) = node.get("properties").and_then(Value::as_object) {
        for (k, v) in props {
            bounds_under_rules(file, &format!("{path}.{k}"), v, under, repeated_unbounded, out);
        }
    }
    if let Some(items) = node.get("items") {
        bounds_under_rules(file, &format!("{path}[]"), items, under, repeats, out);
    }
    if let Some(ap) = node.get("additionalProperties").filter(|v| v.is_object()) {
        bounds_under_rules(file, &format!("{path}{{}}"), ap, under, repeats, out);
    }
}

#[test]
fn the_bounds_check_finds_an_unbounded_string_under_a_rule_and_a_rule_under_an_unbounded_list() {
    let schema = serde_json::json!({"type": "object", "properties": {
        "urls": {"type": "array", "maxItems": 4, "x-kubernetes-validations": [{"rule": "self.all(u, u.size() > 0)"}],
                 "items": {"type": "string"}},
        "rules": {"type": "array", "items": {"type": "object", "x-kubernetes-validations": [{"rule": "true"}],
                  "properties": {"name": {"type": "string", "maxLength": 8}}}},
    }});
    let mut out = Vec::new();
    bounds_under_rules("t", "", &schema, false, false, &mut out);
    assert_eq!(
        out,
        ["t.rules[]: its rule repeats under an unbounded list or map above it", "t.urls[]: needs maxLength"]
    );
}

/// Only `int32`/`int64` for integers and `float`/`double` for numbers: the API server warns on
/// any other (`unrecognized format "uint32"`) at every apply.
#[test]
fn no_format_the_api_server_does_not_know() {
    const STRING_FORMATS: [&str; 4] = ["date-time", "date", "duration", "byte"];
    for (file, schema) in schemas() {
        let mut nodes = Vec::new();
        walk("", &schema, &mut nodes);
        for (path, node) in nodes {
            let Some(format) = node.get("format").and_then(Value::as_str) else { continue };
            let ok = match node.get("type").and_then(Value::as_str) {
                Some("integer") => ["int32", "int64"].contains(&format),
                Some("number") => ["float", "double"].contains(&format),
                Some("string") => STRING_FORMATS.contains(&format),
                _ => false,
            };
            assert!(ok, "{file}{path}: format {format:?} is unknown to the API server");
        }
    }
}

/// `kubectl explain` prints descriptions as they are: a line break may only start a paragraph,
/// a list item or a code line, never fall mid-sentence.
#[test]
fn descriptions_break_lines_only_between_paragraphs_and_list_items() {
    for (file, schema) in schemas() {
        let mut nodes = Vec::new();
        walk("", &schema, &mut nodes);
        for (path, node) in nodes {
            let Some(d) = node.get("description").and_then(Value::as_str) else { continue };
            let lines: Vec<&str> = d.split('\n').collect();
            for pair in lines.windows(2) {
                let (before, after) = (pair[0], pair[1]);
                let t = after.trim_start();
                let block = before.trim().is_empty()
                    || t.is_empty()
                    || t.starts_with("- ")
                    || t.starts_with("* ")
                    || t.starts_with("```")
                    || before.trim_start().starts_with("```")
                    || after.starts_with("  ")
                    || t.split_once(". ").is_some_and(|(n, _)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
                assert!(block, "{file}{path}: description breaks mid-sentence: {before:?} / {after:?}");
            }
        }
    }
}
