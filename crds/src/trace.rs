//! The ids of a rollout's trace, which the operator and the agents both derive: one trace per
//! rollout and revision, so every operator replica and restart adds to the same trace, and
//! every agent started for that revision joins it under the same root span.

use sha2::{Digest, Sha256};

/// The trace id of revision `revision` of the rollout with uid `uid` (16 bytes; written as
/// 32 lowercase hex digits in `status.traceId` and in the agent pods'
/// [`ROLLOUT_TRACE_ID`](crate::labels::ROLLOUT_TRACE_ID) annotation).
pub fn trace_id(uid: &str, revision: &str) -> [u8; 16] {
    let d = Sha256::new().chain_update(uid.as_bytes()).chain_update(b"/").chain_update(revision.as_bytes()).finalize();
    let mut t = [0u8; 16];
    t.copy_from_slice(&d[..16]);
    t
}

/// The id of the root span of trace `trace` (8 bytes): the parent of the operator's decision
/// and wave spans and of every agent's start-up span. Derived from the trace id alone, so an
/// agent, which knows only its pod's annotation, finds the same parent.
pub fn root_span_id(trace: [u8; 16]) -> [u8; 8] {
    let d = Sha256::new().chain_update(b"vigil rollout root span/").chain_update(trace).finalize();
    let mut s = [0u8; 8];
    s.copy_from_slice(&d[..8]);
    // An all-zero span id is invalid in OpenTelemetry; a hash gives one with odds 2^-64.
    if s == [0; 8] {
        s[7] = 1;
    }
    s
}

/// Reads a trace id written as 32 hex digits; `None` for anything else, and for the invalid
/// all-zero id.
pub fn parse_trace_id(hex: &str) -> Option<[u8; 16]> {
    let hex = hex.trim();
    if hex.len() != 32 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut t = [0u8; 16];
    for (i, b) in t.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    (t != [0; 16]).then_some(t)
}

/// Writes a trace id as 32 lowercase hex digits.
pub fn format_trace_id(t: [u8; 16]) -> String {
    t.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_stable_and_distinct_per_rollout_and_revision() {
        let a = trace_id("uid-1", "r-aaaaaaaaaa");
        assert_eq!(a, trace_id("uid-1", "r-aaaaaaaaaa"));
        assert_ne!(a, trace_id("uid-2", "r-aaaaaaaaaa"));
        assert_ne!(a, trace_id("uid-1", "r-bbbbbbbbbb"));
        assert_ne!(root_span_id(a), root_span_id(trace_id("uid-2", "r-aaaaaaaaaa")));
        assert_ne!(root_span_id(a), [0; 8]);
    }

    #[test]
    fn trace_ids_round_trip_through_hex_and_bad_text_is_refused() {
        let t = trace_id("uid-1", "r-aaaaaaaaaa");
        let hex = format_trace_id(t);
        assert_eq!(hex.len(), 32);
        assert_eq!(parse_trace_id(&hex), Some(t));
        assert_eq!(parse_trace_id(&hex.to_uppercase()), Some(t));
        assert_eq!(parse_trace_id(&format!(" {hex}\n")), Some(t));
        for bad in
            ["", "abc", &hex[..31], &format!("{hex}0"), &"0".repeat(32), &"g".repeat(32), "é".repeat(16).as_str()]
        {
            assert_eq!(parse_trace_id(bad), None, "{bad:?}");
        }
    }
}
