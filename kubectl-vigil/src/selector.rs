//! Label selectors as kubectl writes them (`pool=gpu,os in (centos7,rhel7),!canary`), to the
//! `LabelSelector` of a pin and back.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};

/// Parses a selector: requirements separated by commas, each `key`, `!key`, `key=value`,
/// `key==value`, `key!=value`, `key in (a,b)` or `key notin (a,b)`. Keys and values must be
/// valid label keys and values; the error names the requirement and what is wrong.
pub fn parse(text: &str) -> Result<LabelSelector, String> {
    let mut labels: BTreeMap<String, String> = BTreeMap::new();
    let mut exprs: Vec<LabelSelectorRequirement> = Vec::new();
    let parts = split_top(text)?;
    if parts.iter().all(|p| p.trim().is_empty()) {
        return Err("the selector is empty: it would select every node; write e.g. pool=gpu".into());
    }
    for part in parts {
        let req = part.trim();
        if req.is_empty() {
            return Err(format!("{text:?}: an empty requirement between commas"));
        }
        let at = |what: String| format!("selector requirement {req:?}: {what}");
        if let Some(key) = req.strip_prefix('!') {
            let key = key.trim();
            check_key(key).map_err(at)?;
            exprs.push(expr(key, "DoesNotExist", None));
        } else if let Some((key, value)) = req.split_once("!=") {
            let (key, value) = (key.trim(), value.trim());
            check_key(key).map_err(&at)?;
            check_value(value).map_err(&at)?;
            exprs.push(expr(key, "NotIn", Some(vec![value.to_owned()])));
        } else if let Some((key, value)) = req.split_once("==").or_else(|| req.split_once('=')) {
            let (key, value) = (key.trim(), value.trim());
            check_key(key).map_err(&at)?;
            check_value(value).map_err(&at)?;
            if let Some(old) = labels.insert(key.to_owned(), value.to_owned())
                && old != value
            {
                return Err(at(format!("{key} is already required to be {old:?}")));
            }
        } else if let Some((key, op, values)) = set_requirement(req) {
            check_key(key).map_err(&at)?;
            let values = values.map_err(&at)?;
            exprs.push(expr(key, op, Some(values)));
        } else {
            check_key(req).map_err(at)?;
            exprs.push(expr(req, "Exists", None));
        }
    }
    Ok(LabelSelector {
        match_labels: (!labels.is_empty()).then_some(labels),
        match_expressions: (!exprs.is_empty()).then_some(exprs),
    })
}

/// A selector written back as kubectl writes it (`everything` for an empty one).
pub fn render(sel: &LabelSelector) -> String {
    let mut parts: Vec<String> = Vec::new();
    for (k, v) in sel.match_labels.iter().flatten() {
        parts.push(format!("{k}={v}"));
    }
    for e in sel.match_expressions.iter().flatten() {
        let values = e.values.clone().unwrap_or_default();
        parts.push(match e.operator.as_str() {
            "Exists" => e.key.clone(),
            "DoesNotExist" => format!("!{}", e.key),
            "NotIn" if values.len() == 1 => format!("{}!={}", e.key, values[0]),
            "In" => format!("{} in ({})", e.key, values.join(",")),
            "NotIn" => format!("{} notin ({})", e.key, values.join(",")),
            other => format!("{} {other} ({})", e.key, values.join(",")),
        });
    }
    if parts.is_empty() { "everything".into() } else { parts.join(",") }
}

fn expr(key: &str, op: &str, values: Option<Vec<String>>) -> LabelSelectorRequirement {
    LabelSelectorRequirement { key: key.to_owned(), operator: op.to_owned(), values }
}

/// A set requirement's key, operator, and values (or what is wrong with them).
type SetRequirement<'a> = (&'a str, &'static str, Result<Vec<String>, String>);

/// `key in (a,b)` / `key notin (a,b)`: the key, the operator and the values (or what is
/// wrong with them); `None` when `req` is no set requirement.
fn set_requirement(req: &str) -> Option<SetRequirement<'_>> {
    let open = req.find('(')?;
    let head = req[..open].trim_end();
    let (key, op) = if let Some(k) = head.strip_suffix(" notin") {
        (k.trim(), "NotIn")
    } else if let Some(k) = head.strip_suffix(" in") {
        (k.trim(), "In")
    } else {
        return None;
    };
    let values = match req[open + 1..].strip_suffix(')') {
        None => Err("the value list must end with ')'".to_owned()),
        Some(list) => {
            let vals: Vec<String> = list.split(',').map(|v| v.trim().to_owned()).collect();
            match vals.iter().find_map(|v| check_value(v).err()) {
                Some(e) => Err(e),
                None if vals.iter().all(String::is_empty) => Err("the value list is empty".to_owned()),
                None => Ok(vals),
            }
        }
    };
    Some((key, op, values))
}

/// Splits at the commas outside parentheses.
fn split_top(text: &str) -> Result<Vec<&str>, String> {
    let mut out = Vec::new();
    let (mut depth, mut start) = (0i32, 0usize);
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth < 0 {
                    return Err(format!("{text:?}: ')' without '(' at byte {i}"));
                }
            }
            ',' if depth == 0 => {
                out.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err(format!("{text:?}: '(' without ')'"));
    }
    out.push(&text[start..]);
    Ok(out)
}

/// A label key: an optional DNS subdomain prefix and `/`, then a name of 1–63 characters.
fn check_key(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix {
        let ok = !p.is_empty()
            && p.len() <= 253
            && p.split('.').all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && l.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                    && !l.starts_with('-')
                    && !l.ends_with('-')
            });
        if !ok {
            return Err(format!("{key:?} has an invalid prefix: it must be a DNS subdomain such as example.com"));
        }
    }
    if name.is_empty() || name.len() > 63 || !name_ok(name) {
        return Err(format!(
            "{key:?} is not a label key: 1-63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit"
        ));
    }
    Ok(())
}

/// A label value: empty, or 1–63 characters like a key's name.
fn check_value(value: &str) -> Result<(), String> {
    if value.is_empty() || (value.len() <= 63 && name_ok(value)) {
        Ok(())
    } else {
        Err(format!(
            "{value:?} is not a label value: at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit"
        ))
    }
}

fn name_ok(s: &str) -> bool {
    let b = s.as_bytes();
    b.iter().all(|c| c.is_ascii_alphanumeric() || b"-_.".contains(c))
        && b.first().is_some_and(u8::is_ascii_alphanumeric)
        && b.last().is_some_and(u8::is_ascii_alphanumeric)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn every_form_kubectl_takes_is_read() {
        let s = parse("pool=gpu, tier==web,zone!=z1,os in (centos7, rhel7),arch notin (arm64),canary,!legacy").unwrap();
        assert_eq!(
            s.match_labels,
            Some([("pool".to_owned(), "gpu".to_owned()), ("tier".to_owned(), "web".to_owned())].into())
        );
        let ops: Vec<(String, String, Option<Vec<String>>)> =
            s.match_expressions.unwrap().into_iter().map(|e| (e.key, e.operator, e.values)).collect();
        assert_eq!(
            ops,
            vec![
                ("zone".into(), "NotIn".into(), Some(vec!["z1".into()])),
                ("os".into(), "In".into(), Some(vec!["centos7".into(), "rhel7".into()])),
                ("arch".into(), "NotIn".into(), Some(vec!["arm64".into()])),
                ("canary".into(), "Exists".into(), None),
                ("legacy".into(), "DoesNotExist".into(), None),
            ]
        );
    }

    #[test]
    fn mistakes_are_named() {
        for (text, says) in [
            ("", "empty"),
            ("a=b,,c=d", "empty requirement"),
            ("os in (a,b", "'(' without ')'"),
            ("os in a,b)", "')' without '('"),
            ("pool=gp u", "not a label value"),
            ("Bad Key=1", "not a label key"),
            ("Example.com/x=1", "invalid prefix"),
            ("a=1,a=2", "already required"),
            ("os in ()", "empty"),
        ] {
            let e = parse(text).expect_err(text);
            assert!(e.contains(says), "{text:?}: {e}");
        }
    }

    fn key() -> impl Strategy<Value = String> {
        "([a-z]{1,5}\\.io/)?[a-z][a-z0-9._-]{0,8}[a-z0-9]"
    }
    fn value() -> impl Strategy<Value = String> {
        "[a-zA-Z0-9]([a-zA-Z0-9._-]{0,6}[a-zA-Z0-9])?"
    }

    proptest! {
        #[test]
        fn rendering_then_parsing_gives_the_same_selector(
            labels in proptest::collection::btree_map(key(), value(), 0..3),
            sets in proptest::collection::vec((key(), prop_oneof![Just("In"), Just("NotIn")], proptest::collection::vec(value(), 2..4)), 0..3),
            exists in proptest::collection::vec((key(), any::<bool>()), 0..3),
        ) {
            let mut exprs: Vec<LabelSelectorRequirement> =
                sets.into_iter().map(|(k, op, v)| expr(&k, op, Some(v))).collect();
            exprs.extend(exists.into_iter().map(|(k, e)| expr(&k, if e { "Exists" } else { "DoesNotExist" }, None)));
            prop_assume!(!labels.is_empty() || !exprs.is_empty());
            let sel = LabelSelector {
                match_labels: (!labels.is_empty()).then_some(labels),
                match_expressions: (!exprs.is_empty()).then_some(exprs),
            };
            prop_assert_eq!(parse(&render(&sel)).unwrap(), sel);
        }

        #[test]
        fn any_text_gives_a_selector_or_an_error_never_a_panic(text in "\\PC{0,40}") {
            let _ = parse(&text);
        }
    }
}
