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
/// CR, LF and TAB; DEL; C1), the line and paragraph separators, and every format character
/// (Unicode category Cf: the bidirectional marks, embeddings, overrides and isolates,
/// zero-width spaces and joiners, the soft hyphen, invisible operators, interlinear
/// annotation marks, the byte-order mark, tag characters) — what can reorder, hide or break
/// what a person reads.
pub fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{00ad}'
                | '\u{0600}'..='\u{0605}'
                | '\u{061c}'
                | '\u{06dd}'
                | '\u{070f}'
                | '\u{0890}'..='\u{0891}'
                | '\u{08e2}'
                | '\u{180e}'
                | '\u{200b}'..='\u{200f}'
                | '\u{2028}'..='\u{202e}'
                | '\u{2060}'..='\u{2064}'
                | '\u{2066}'..='\u{206f}'
                | '\u{feff}'
                | '\u{fff9}'..='\u{fffb}'
                | '\u{110bd}'
                | '\u{110cd}'
                | '\u{13430}'..='\u{1343f}'
                | '\u{1bca0}'..='\u{1bca3}'
                | '\u{1d173}'..='\u{1d17a}'
                | '\u{e0001}'
                | '\u{e0020}'..='\u{e007f}'
        )
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
        for hidden in [
            '\u{2028}',
            '\u{2029}',
            '\u{200b}',
            '\u{061c}',
            '\u{feff}',
            '\u{e0041}',
            '\u{00ad}',
            '\u{2060}',
            '\u{206a}',
            '\u{fff9}',
        ] {
            assert!(is_unsafe(hidden), "{:x}", hidden as u32);
            assert!(!printable(&format!("a{hidden}b")).contains(hidden));
        }
        for fine in ['é', '✓', '中', ' ', '\u{3000}'] {
            assert!(!is_unsafe(fine), "{fine}");
        }
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
