//! Text that someone else wrote, made safe for the terminal of the person who reads it.
//!
//! An agent writes strings into its AgentStatus (health reasons, source states, problems), a
//! node's users write the log lines its events quote, a tenant writes AlertPolicies. Any of
//! them may hold terminal escapes (retitle or clear the reader's terminal, hide a line, fake
//! a prompt) or Unicode bidirectional overrides (show text in another order than it is). Every
//! program of Vigil that prints such text for a person goes through [`printable`]; the agent's
//! CLI and `kubectl vigil` alike.

use std::borrow::Cow;
use std::fmt::Write as _;

/// Whether `c` must not reach a terminal as it is: control characters (C0 with ESC, BEL, NUL,
/// CR, LF and TAB; DEL; C1) and the bidirectional embeddings, overrides and isolates.
pub fn is_unsafe(c: char) -> bool {
    c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{200e}' | '\u{200f}')
}

/// `s` safe to write to a terminal: every [`is_unsafe`] character written as `\x1b`,
/// `\u{202e}` and so on; everything else as it is. Borrowed when nothing needed escaping.
pub fn printable(s: &str) -> Cow<'_, str> {
    if !s.chars().any(is_unsafe) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        let _ = match (is_unsafe(c), c as u32) {
            (false, _) => write!(out, "{c}"),
            (true, n) if n < 0x100 => write!(out, "\\x{n:02x}"),
            (true, n) => write!(out, "\\u{{{n:x}}}"),
        };
    }
    Cow::Owned(out)
}

/// Every string of a JSON value, keys included, through [`printable`]: for an object read
/// from the API before any of it is shown.
pub fn printable_json(v: &mut serde_json::Value) {
    use serde_json::Value;
    match v {
        Value::String(s) => {
            if let Cow::Owned(clean) = printable(s) {
                *s = clean;
            }
        }
        Value::Array(items) => items.iter_mut().for_each(printable_json),
        Value::Object(map) => {
            if map.keys().any(|k| k.chars().any(is_unsafe)) {
                let old = std::mem::take(map);
                for (k, mut item) in old {
                    printable_json(&mut item);
                    map.insert(printable(&k).into_owned(), item);
                }
            } else {
                map.values_mut().for_each(printable_json);
            }
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_controls_and_bidi_overrides_and_leaves_the_rest() {
        assert_eq!(printable("plain text, ünïcode ✓"), "plain text, ünïcode ✓");
        assert!(matches!(printable("plain"), Cow::Borrowed(_)));
        assert_eq!(printable("a\x1b]0;pwned\x07b"), "a\\x1b]0;pwned\\x07b");
        assert_eq!(printable("line\nnext\r\t"), "line\\x0anext\\x0d\\x09");
        assert_eq!(printable("\u{9b}31m"), "\\x9b31m", "the C1 CSI");
        assert_eq!(printable("evil\u{202e}txt.exe"), "evil\\u{202e}txt.exe");
        assert_eq!(printable("\u{2066}x\u{2069}"), "\\u{2066}x\\u{2069}");
    }

    #[test]
    fn every_string_of_a_json_value_is_escaped_keys_too() {
        let mut v = serde_json::json!({
            "a": "x\x1b[2J",
            "list": ["ok", {"k\x1b": "\u{202e}"}],
            "n": 1, "b": true, "z": null
        });
        printable_json(&mut v);
        assert_eq!(
            v,
            serde_json::json!({
                "a": "x\\x1b[2J",
                "list": ["ok", {"k\\x1b": "\\u{202e}"}],
                "n": 1, "b": true, "z": null
            })
        );
    }

    proptest::proptest! {
        #[test]
        fn nothing_unsafe_survives(s in "\\PC*|[\\x00-\\x1f\\x7f-\\u{9f}\\u{202a}-\\u{202e}a-z]*") {
            proptest::prop_assert!(!printable(&s).chars().any(is_unsafe));
        }
    }
}
