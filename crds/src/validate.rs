//! Client-side validation of a resource against its CRD schema, the way the
//! API server would: OpenAPI constraints (types, lengths, ranges, enums,
//! required) and the CEL rules (`x-kubernetes-validations`).
//!
//! Used by the operator before it acts on a spec, by `vigil-operator validate`,
//! and by the tests of the examples and the rule table.

use std::fmt;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde_json::Value;

/// One violation: the field it is about, in the API server's notation
/// (`spec.waves[2].percent`), and what is wrong with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    /// Path of the offending field from the object root.
    pub path: String,
    /// What is wrong, in words for a person.
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() { f.write_str(&self.message) } else { write!(f, "{}: {}", self.path, self.message) }
    }
}

/// All violations of one object, each naming its field.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{kind} {name} is invalid: {}", .errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
pub struct Invalid {
    /// Kind of the object.
    pub kind: String,
    /// Name of the object (`<unnamed>` when it has none).
    pub name: String,
    /// The violations, OpenAPI ones first, then CEL ones.
    pub errors: Vec<FieldError>,
}

/// The CRD a manifest belongs to, by its `apiVersion` and `kind`.
pub fn crd_for(value: &Value) -> Option<CustomResourceDefinition> {
    let api_version = value.get("apiVersion")?.as_str()?;
    let kind = value.get("kind")?.as_str()?;
    crate::finished_crds()
        .iter()
        .map(|(_, crd)| crd)
        .find(|crd| {
            crd.spec.names.kind == kind
                && crd.spec.versions.iter().any(|v| format!("{}/{}", crd.spec.group, v.name) == api_version)
        })
        .cloned()
}

/// Validates a manifest (as JSON) against the CRD of its `apiVersion` and `kind`, the way the
/// API server does on create: OpenAPI constraints, then CEL rules with defaults applied.
pub fn validate_manifest(value: &Value) -> Result<(), Invalid> {
    let kind = value.get("kind").and_then(Value::as_str).unwrap_or("<no kind>").to_owned();
    let name = value.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("<unnamed>").to_owned();
    let Some(crd) = crd_for(value) else {
        let api_version = value.get("apiVersion").and_then(Value::as_str).unwrap_or("<no apiVersion>");
        return Err(Invalid {
            kind,
            name,
            errors: vec![FieldError {
                path: "kind".into(),
                message: format!(
                    "{api_version} is not a Vigil resource (expected {}/{} AgentRollout, AlertPolicy or AgentStatus)",
                    crate::GROUP,
                    crate::VERSION
                ),
            }],
        });
    };
    let errors = validate_against(&crd, value);
    if errors.is_empty() { Ok(()) } else { Err(Invalid { kind, name, errors }) }
}

/// Every violation of `value` against the first version of `crd`.
pub fn validate_against(crd: &CustomResourceDefinition, value: &Value) -> Vec<FieldError> {
    let Some(schema) =
        crd.spec.versions.first().and_then(|v| v.schema.as_ref()).and_then(|s| s.open_api_v3_schema.as_ref())
    else {
        return vec![FieldError { path: String::new(), message: "the CRD carries no schema".into() }];
    };
    let schema = match serde_json::to_value(schema) {
        Ok(s) => s,
        Err(e) => {
            return vec![FieldError {
                path: String::new(),
                message: format!("the CRD schema does not serialize: {e}"),
            }];
        }
    };
    let mut errors = openapi_errors(&schema, value);
    if errors.is_empty() {
        // CEL rules see the object after defaulting, as on the API server; type errors would
        // only produce noise from rules reading mistyped fields, so they go first and alone.
        let result = kube::core::cel::Validator::new().validate_with_defaults(&schema, value, None);
        if let Err(cel) = result {
            errors.extend(cel.into_vec().into_iter().map(|e| FieldError {
                // A rule at the root with a `.spec.x` fieldPath comes back with its dot.
                path: e.field_path.trim_start_matches('.').to_owned(),
                message: e.message,
            }));
        }
    }
    errors
}

fn openapi_errors(schema: &Value, value: &Value) -> Vec<FieldError> {
    let json_schema = to_json_schema(schema.clone());
    let validator = match jsonschema::options().with_draft(jsonschema::Draft::Draft4).build(&json_schema) {
        Ok(v) => v,
        Err(e) => {
            return vec![FieldError { path: String::new(), message: format!("the CRD schema does not compile: {e}") }];
        }
    };
    // Only spec (and status, when present) are ours to judge; metadata is the API server's.
    validator
        .iter_errors(value)
        .map(|e| {
            let message = match e.kind() {
                // The default text names two options and "N other candidates"; a person
                // fixing a manifest wants all of them.
                jsonschema::error::ValidationErrorKind::Enum { options } => format!(
                    "must be one of: {}",
                    options
                        .as_array()
                        .map(|o| o
                            .iter()
                            .filter(|v| !v.is_null())
                            .map(ToString::to_string)
                            .collect::<Vec<_>>()
                            .join(", "))
                        .unwrap_or_default()
                ),
                _ => e.masked().to_string(),
            };
            FieldError { path: pointer_to_path(e.instance_path().as_str()), message }
        })
        .collect()
}

/// OpenAPI v3 as Kubernetes uses it, made plain JSON Schema: `nullable` becomes a `null` type,
/// Kubernetes extensions are dropped.
fn to_json_schema(mut v: Value) -> Value {
    if let Value::Object(map) = &mut v {
        map.retain(|k, _| !k.starts_with("x-kubernetes-") && k != "default");
        if map.remove("nullable") == Some(Value::Bool(true)) {
            if let Some(Value::String(t)) = map.get("type").cloned() {
                map.insert("type".into(), Value::Array(vec![Value::String(t), Value::String("null".into())]));
            }
            if let Some(Value::Array(e)) = map.get_mut("enum") {
                e.push(Value::Null);
            }
        }
        for (_, child) in map.iter_mut() {
            *child = to_json_schema(std::mem::take(child));
        }
    } else if let Value::Array(items) = &mut v {
        for child in items.iter_mut() {
            *child = to_json_schema(std::mem::take(child));
        }
    }
    v
}

/// `/spec/waves/2/percent` → `spec.waves[2].percent`.
fn pointer_to_path(pointer: &str) -> String {
    let mut out = String::new();
    for seg in pointer.split('/').skip(1) {
        let seg = seg.replace("~1", "/").replace("~0", "~");
        if !seg.is_empty() && seg.bytes().all(|b| b.is_ascii_digit()) {
            out.push_str(&format!("[{seg}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(&seg);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_pointers_become_api_server_paths() {
        assert_eq!(pointer_to_path("/spec/waves/2/percent"), "spec.waves[2].percent");
        assert_eq!(pointer_to_path(""), "");
        assert_eq!(pointer_to_path("/metadata/labels/a~1b"), "metadata.labels.a/b");
    }

    #[test]
    fn nullable_fields_accept_null_after_conversion() {
        let s = to_json_schema(serde_json::json!({"type": "string", "nullable": true, "x-kubernetes-validations": []}));
        assert_eq!(s, serde_json::json!({"type": ["string", "null"]}));
    }
}
