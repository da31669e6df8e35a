//! Label selectors, matched the one way both binaries use: the operator for the nodes a
//! rollout or pin selects, the agent for the nodes an AlertPolicy applies to.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

/// An object's labels, read by key or in key order: the map the API gives, or a compact copy
/// of it (the operator keeps the labels of thousands of nodes).
pub trait LabelSet {
    /// The value of label `key`.
    fn label(&self, key: &str) -> Option<&str>;
    /// Every (key, value), in key order.
    fn pairs(&self) -> impl Iterator<Item = (&str, &str)>;
}

impl LabelSet for BTreeMap<String, String> {
    fn label(&self, key: &str) -> Option<&str> {
        self.get(key).map(String::as_str)
    }

    fn pairs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

/// Whether `labels` satisfy `sel`: every `matchLabels` pair and every `matchExpressions`
/// requirement (`In`, `NotIn`, `Exists`, `DoesNotExist`, as Kubernetes defines them; an
/// unknown operator matches nothing). An empty selector matches everything.
pub fn matches(sel: &LabelSelector, labels: &(impl LabelSet + ?Sized)) -> bool {
    let pairs = sel.match_labels.iter().flatten().all(|(k, v)| labels.label(k) == Some(v.as_str()));
    let exprs = sel.match_expressions.iter().flatten().all(|e| {
        let have = labels.label(&e.key);
        let values = e.values.as_deref().unwrap_or_default();
        match e.operator.as_str() {
            "In" => have.is_some_and(|h| values.iter().any(|v| v == h)),
            "NotIn" => have.is_none_or(|h| !values.iter().any(|v| v == h)),
            "Exists" => have.is_some(),
            "DoesNotExist" => have.is_none(),
            _ => false,
        }
    });
    pairs && exprs
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    fn req(key: &str, op: &str, values: &[&str]) -> LabelSelectorRequirement {
        LabelSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: (!values.is_empty()).then(|| values.iter().map(|v| (*v).to_owned()).collect()),
        }
    }

    #[test]
    fn pairs_and_every_operator_as_kubernetes_defines_them() {
        let labels: BTreeMap<String, String> =
            [("pool", "web"), ("zone", "a")].into_iter().map(|(k, v)| (k.to_owned(), v.to_owned())).collect();
        let sel = |pairs: &[(&str, &str)], exprs: Vec<LabelSelectorRequirement>| LabelSelector {
            match_labels: (!pairs.is_empty())
                .then(|| pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()),
            match_expressions: (!exprs.is_empty()).then_some(exprs),
        };
        assert!(matches(&sel(&[], vec![]), &labels), "empty selects all");
        assert!(matches(&sel(&[("pool", "web")], vec![]), &labels));
        assert!(!matches(&sel(&[("pool", "db")], vec![]), &labels));
        assert!(matches(&sel(&[], vec![req("zone", "In", &["a", "b"])]), &labels));
        assert!(!matches(&sel(&[], vec![req("zone", "In", &["b"])]), &labels));
        assert!(!matches(&sel(&[], vec![req("missing", "In", &["a"])]), &labels));
        assert!(matches(&sel(&[], vec![req("zone", "NotIn", &["b"])]), &labels));
        assert!(matches(&sel(&[], vec![req("missing", "NotIn", &["b"])]), &labels), "NotIn holds without the key");
        assert!(matches(&sel(&[], vec![req("pool", "Exists", &[])]), &labels));
        assert!(!matches(&sel(&[], vec![req("pool", "DoesNotExist", &[])]), &labels));
        assert!(!matches(&sel(&[], vec![req("pool", "Gt", &["1"])]), &labels), "unknown operators match nothing");
        assert!(!matches(&sel(&[("pool", "web")], vec![req("zone", "In", &["b"])]), &labels), "all must hold");
    }
}
