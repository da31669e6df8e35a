//! Reading multi-document YAML manifests and validating each document.

use std::fmt;

use serde::Deserialize;
use serde_json::Value;
use vigil_crds::validate::{FieldError, validate_manifest};

/// The verdict on one YAML document of a file.
#[derive(Debug, PartialEq)]
pub struct DocReport {
    /// 1-based index of the document in its file.
    pub index: usize,
    /// `Kind/name` when the document says so.
    pub object: String,
    /// Empty when the document is valid.
    pub errors: Vec<FieldError>,
}

impl fmt::Display for DocReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.errors.is_empty() {
            return write!(f, "document {} ({}): valid", self.index, self.object);
        }
        write!(f, "document {} ({}): {} error(s)", self.index, self.object, self.errors.len())?;
        for e in &self.errors {
            write!(f, "\n  {e}")?;
        }
        Ok(())
    }
}

/// Validates every document of a YAML stream. A document that is not YAML, or not an object,
/// is reported with the line the parser stopped at; empty documents are skipped.
pub fn validate_stream(text: &str) -> Vec<DocReport> {
    let mut out = Vec::new();
    for (i, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let index = i + 1;
        let value = match Value::deserialize(doc) {
            Ok(Value::Null) => continue,
            Ok(v) => v,
            Err(e) => {
                let at =
                    e.location().map(|l| format!(" at line {}, column {}", l.line(), l.column())).unwrap_or_default();
                out.push(DocReport {
                    index,
                    object: "unparsed".into(),
                    errors: vec![FieldError { path: String::new(), message: format!("not valid YAML{at}: {e}") }],
                });
                // The parser cannot resume after a syntax error.
                break;
            }
        };
        let object = format!(
            "{}/{}",
            value.get("kind").and_then(Value::as_str).unwrap_or("<no kind>"),
            value.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("<unnamed>")
        );
        let errors = match validate_manifest(&value) {
            Ok(()) => Vec::new(),
            Err(invalid) => invalid.errors,
        };
        out.push(DocReport { index, object, errors });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_each_document_and_names_the_bad_field() {
        let text = r#"
apiVersion: vigil.dev/v1alpha1
kind: AgentStatus
metadata: {name: node-a}
spec: {nodeName: node-a}
---
---
apiVersion: vigil.dev/v1alpha1
kind: AgentStatus
metadata: {name: node-b}
spec: {nodeName: node-c}
"#;
        let r = validate_stream(text);
        assert_eq!(r.len(), 2, "{r:?}");
        assert!(r[0].errors.is_empty());
        assert_eq!(r[1].index, 3);
        assert_eq!(r[1].object, "AgentStatus/node-b");
        assert_eq!(r[1].errors[0].path, "spec.nodeName");
    }

    #[test]
    fn broken_yaml_is_reported_with_its_line() {
        let r = validate_stream("kind: AgentRollout\nspec: [unclosed\n");
        assert_eq!(r.len(), 1);
        assert!(r[0].errors[0].message.contains("line"), "{}", r[0]);
    }
}
