//! The order nodes join a rollout: deterministic, and spread across zones so that a
//! zone-specific fault shows in the first wave.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

use super::model::NodeView;

/// A stable 64-bit rank of a node within a rollout.
fn rank(rollout: &str, node: &str) -> u64 {
    let d = Sha256::new().chain_update(rollout.as_bytes()).chain_update(b"/").chain_update(node.as_bytes()).finalize();
    u64::from_be_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]])
}

/// Indices of `nodes` in rollout order: each zone's nodes by rank, zones interleaved (the
/// zone whose best node ranks first leads).
pub fn rollout_order(rollout: &str, nodes: &[&NodeView]) -> Vec<usize> {
    let mut zones: BTreeMap<&str, Vec<(u64, usize)>> = BTreeMap::new();
    for (i, n) in nodes.iter().enumerate() {
        zones.entry(n.attributes.zone.as_str()).or_default().push((rank(rollout, &n.name), i));
    }
    let mut queues: Vec<Vec<(u64, usize)>> = zones
        .into_values()
        .map(|mut v| {
            v.sort_unstable();
            v.reverse(); // pop from the end = lowest rank first
            v
        })
        .collect();
    queues.sort_by_key(|q| q.last().map(|(r, _)| *r));
    let mut out = Vec::with_capacity(nodes.len());
    while out.len() < nodes.len() {
        for q in &mut queues {
            if let Some((_, i)) = q.pop() {
                out.push(i);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::NodeAttributes;

    fn node(name: &str, zone: &str) -> NodeView {
        NodeView {
            name: name.into(),
            labels: Default::default(),
            attributes: NodeAttributes { zone: zone.into(), ..Default::default() },
            revision: None,
            ready: true,
            ready_changed_at: None,
            admitted_at: None,
            agent: None,
        }
    }

    #[test]
    fn order_is_deterministic_and_alternates_zones() {
        let nodes: Vec<NodeView> = (0..30).map(|i| node(&format!("n{i}"), ["a", "b", "c"][i % 3])).collect();
        let refs: Vec<&NodeView> = nodes.iter().collect();
        let o1 = rollout_order("ns/r", &refs);
        let o2 = rollout_order("ns/r", &refs);
        assert_eq!(o1, o2);
        let first3: std::collections::BTreeSet<&str> =
            o1[..3].iter().map(|&i| nodes[i].attributes.zone.as_str()).collect();
        assert_eq!(first3.len(), 3, "the first three nodes come from three zones");
        let mut sorted = o1.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..30).collect::<Vec<_>>(), "a permutation");
        assert_ne!(o1, rollout_order("ns/other", &refs), "another rollout, another order");
    }
}
