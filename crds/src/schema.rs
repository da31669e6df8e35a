//! The last touches on a generated CRD schema, so that a real API server accepts it whole and
//! `kubectl explain` reads as prose.
//!
//! Three things the derive macros leave undone:
//!
//! - **Bounds.** The API server estimates the worst-case cost of every CEL rule from the sizes
//!   of what the rule can reach, and refuses the CRD when one rule may cost more than its
//!   per-rule limit or all rules together more than the per-CRD limit (see [`bound`]). A
//!   string, list or map without a bound counts as large as a whole request (3 MiB), so one
//!   unbounded field can multiply a rule's cost by thousands. Every string, list and map the
//!   Rust types leave unbounded gets the generous bound of [`DEFAULT_MAX_LENGTH`],
//!   [`DEFAULT_MAX_ITEMS`] or [`DEFAULT_MAX_PROPERTIES`]; the types set tighter ones where a
//!   field has a natural size (names, URLs, label values).
//! - **Formats.** schemars writes `uint32`, `uint64`, `uint8`… for unsigned integers; the API
//!   server knows only `int32` and `int64` (and `float`/`double` for numbers) and warns on
//!   every apply. Unknown integer formats become `int64`, the unsigned ones with a `minimum`
//!   of 0 (and a `maximum` for `uint32`).
//! - **Prose.** Doc comments keep their source line breaks; `kubectl explain` prints them
//!   mid-sentence. Lines of one paragraph are joined; blank lines, list items and indented
//!   lines keep their breaks.

use serde_json::{Map, Value};

/// The bound of a string the Rust type leaves unbounded, in characters.
pub const DEFAULT_MAX_LENGTH: u64 = 4096;
/// The bound of a list the Rust type leaves unbounded, in items.
pub const DEFAULT_MAX_ITEMS: u64 = 256;
/// The bound of a map (labels, annotations, details) the Rust type leaves unbounded, in entries.
pub const DEFAULT_MAX_PROPERTIES: u64 = 64;

/// Integer formats the API server recognises; any other one is replaced.
const INTEGER_FORMATS: [&str; 2] = ["int32", "int64"];
/// Number formats the API server recognises.
const NUMBER_FORMATS: [&str; 2] = ["float", "double"];

/// Applies bounds, formats and prose to every node of an OpenAPI v3 schema (as JSON).
pub fn finish(schema: &mut Value) {
    let Value::Object(node) = schema else { return };
    bound(node);
    fix_format(node);
    if let Some(Value::String(d)) = node.get_mut("description") {
        *d = reflow(d);
    }
    if let Some(Value::Object(props)) = node.get_mut("properties") {
        for child in props.values_mut() {
            finish(child);
        }
    }
    if let Some(items) = node.get_mut("items") {
        finish(items);
    }
    if let Some(ap) = node.get_mut("additionalProperties").filter(|v| v.is_object()) {
        finish(ap);
    }
}

/// Gives an unbounded string, list or map its default bound.
///
/// The API server's cost rules, which these bounds serve (Kubernetes documentation,
/// "Validation rules" of CustomResourceDefinitions, "Resource use by validation functions"):
/// each rule's estimated cost must stay under the per-rule limit (`StaticEstimatedCostLimit`,
/// 10,000,000 units), and the sum over all rules, each multiplied by how many times it can run
/// (the product of the `maxItems`/`maxProperties` of every list and map above it), under the
/// per-CRD limit (`StaticEstimatedCRDCostLimit`, 100,000,000). Sizes come from `maxLength`,
/// `maxItems` and `maxProperties`; without them, from the largest request the server takes
/// (3 MiB) divided by the smallest element. String enums are sized by their values and get
/// no `maxLength`; strings with a `format` get the default bound like any other.
fn bound(node: &mut Map<String, Value>) {
    let ty = node.get("type").and_then(Value::as_str).map(str::to_owned);
    match ty.as_deref() {
        Some("string") if !node.contains_key("maxLength") && !node.contains_key("enum") => {
            node.insert("maxLength".into(), DEFAULT_MAX_LENGTH.into());
        }
        Some("array") if !node.contains_key("maxItems") => {
            node.insert("maxItems".into(), DEFAULT_MAX_ITEMS.into());
        }
        Some("object")
            if node.get("additionalProperties").is_some_and(Value::is_object)
                && !node.contains_key("maxProperties") =>
        {
            node.insert("maxProperties".into(), DEFAULT_MAX_PROPERTIES.into());
        }
        _ => {}
    }
}

fn fix_format(node: &mut Map<String, Value>) {
    let ty = node.get("type").and_then(Value::as_str).unwrap_or("");
    let Some(format) = node.get("format").and_then(Value::as_str).map(str::to_owned) else { return };
    let known = match ty {
        "integer" => INTEGER_FORMATS.contains(&format.as_str()),
        "number" => NUMBER_FORMATS.contains(&format.as_str()),
        _ => true,
    };
    if known {
        return;
    }
    if ty == "integer" {
        // uint8/uint16/uint32 fit in int64 and so does every uint64 the API can carry (JSON
        // integers are int64 on the server): a minimum of 0 keeps the meaning.
        node.insert("format".into(), Value::from("int64"));
        if format.starts_with("uint") {
            let has_min = node.get("minimum").and_then(Value::as_f64).is_some_and(|m| m >= 0.0);
            if !has_min {
                node.insert("minimum".into(), Value::from(0));
            }
            if format == "uint32" && !node.contains_key("maximum") {
                node.insert("maximum".into(), Value::from(u32::MAX));
            }
        }
    } else {
        node.remove("format");
    }
}

/// Joins the lines of each paragraph of a doc comment. A line break stays before a blank line,
/// a list item (`- `, `* `, `1. `), an indented line (code) and inside fenced code.
pub fn reflow(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut in_fence = false;
    let mut prev_kept_break = true;
    for (i, line) in text.split('\n').enumerate() {
        let trimmed = line.trim_end();
        let fence = trimmed.trim_start().starts_with("```");
        if i > 0 {
            let keep = in_fence
                || fence
                || trimmed.is_empty()
                || prev_kept_break
                || starts_block(trimmed)
                || line.starts_with("  ")
                || line.starts_with('\t');
            out.push(if keep { '\n' } else { ' ' });
        }
        out.push_str(if in_fence { line } else { trimmed });
        // After a blank line or a fence the next line starts a block of its own.
        prev_kept_break = trimmed.is_empty() || fence || in_fence;
        if fence {
            in_fence = !in_fence;
        }
    }
    out
}

fn starts_block(line: &str) -> bool {
    let l = line.trim_start();
    if l.starts_with("- ") || l.starts_with("* ") || l.starts_with("| ") || l.starts_with('#') {
        return true;
    }
    let digits = l.bytes().take_while(u8::is_ascii_digit).count();
    digits > 0 && l[digits..].starts_with(". ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn paragraph_lines_are_joined_and_blocks_kept() {
        assert_eq!(reflow("One sentence\nthat goes on."), "One sentence that goes on.");
        assert_eq!(reflow("Para one\nends.\n\nPara two."), "Para one ends.\n\nPara two.");
        assert_eq!(reflow("Items:\n- a\n- b\nand more"), "Items:\n- a\n- b and more");
        assert_eq!(reflow("Steps:\n1. first\n2. second"), "Steps:\n1. first\n2. second");
        assert_eq!(reflow("Code:\n\n```\nx = 1\ny = 2\n```\nAfter."), "Code:\n\n```\nx = 1\ny = 2\n```\nAfter.");
        assert_eq!(reflow("single line"), "single line");
    }

    #[test]
    fn unbounded_strings_lists_and_maps_get_default_bounds_and_set_ones_stay() {
        let mut s = json!({"type": "object", "properties": {
            "name": {"type": "string", "maxLength": 63},
            "free": {"type": "string"},
            "mode": {"type": "string", "enum": ["a", "b"]},
            "items": {"type": "array", "items": {"type": "string"}},
            "few": {"type": "array", "maxItems": 3, "items": {"type": "integer", "format": "uint32"}},
            "labels": {"type": "object", "additionalProperties": {"type": "string"}},
            "count": {"type": "integer", "format": "uint64", "minimum": 1},
            "ratio": {"type": "number", "format": "double"},
        }});
        finish(&mut s);
        let p = &s["properties"];
        assert_eq!(p["name"]["maxLength"], 63);
        assert_eq!(p["free"]["maxLength"], DEFAULT_MAX_LENGTH);
        assert!(p["mode"].get("maxLength").is_none(), "an enum is bounded by its values");
        assert_eq!(p["items"]["maxItems"], DEFAULT_MAX_ITEMS);
        assert_eq!(p["items"]["items"]["maxLength"], DEFAULT_MAX_LENGTH);
        assert_eq!(p["few"]["maxItems"], 3);
        assert_eq!(p["few"]["items"]["format"], "int64");
        assert_eq!(p["few"]["items"]["minimum"], 0);
        assert_eq!(p["few"]["items"]["maximum"], u32::MAX);
        assert_eq!(p["labels"]["maxProperties"], DEFAULT_MAX_PROPERTIES);
        assert_eq!(p["labels"]["additionalProperties"]["maxLength"], DEFAULT_MAX_LENGTH);
        assert_eq!(p["count"]["format"], "int64");
        assert_eq!(p["count"]["minimum"], 1, "a tighter minimum stays");
        assert_eq!(p["ratio"]["format"], "double");
        assert!(s.get("maxProperties").is_none(), "an object with properties is no map");
    }
}
