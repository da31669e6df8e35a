//! Two rollouts must select disjoint nodes: each node has one revision label, and two
//! rollouts writing it would undo each other. The one created later yields.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use vigil_crds::selector::LabelSet;

use super::selector_matches;

/// A rollout as the overlap check sees it.
#[derive(Clone, Debug)]
pub struct Claim<'a> {
    /// Its name.
    pub name: &'a str,
    /// When it was created (`None`: not known, taken as the newest).
    pub created: Option<Timestamp>,
    /// Its node selector (`None`: every node).
    pub selector: Option<&'a LabelSelector>,
}

/// Who yields: `me` to an older rollout that selects some of the same nodes. Returns that
/// rollout's name, how many nodes both select, and one of them.
pub fn yields_to<L: LabelSet + ?Sized>(
    me: &Claim<'_>,
    others: &[Claim<'_>],
    nodes: &[(&str, &L)],
) -> Option<(String, usize, String)> {
    let selects = |c: &Claim<'_>, labels: &L| c.selector.is_none_or(|s| selector_matches(s, labels));
    let older = |o: &Claim<'_>| match (o.created, me.created) {
        (Some(a), Some(b)) if a != b => a < b,
        (Some(_), None) => true,
        (None, Some(_)) => false,
        // Same instant (or neither known): by name, so exactly one of the two yields.
        _ => o.name < me.name,
    };
    let mut candidates: Vec<&Claim<'_>> = others.iter().filter(|o| o.name != me.name && older(o)).collect();
    candidates.sort_by(|a, b| (a.created, a.name).cmp(&(b.created, b.name)));
    for other in candidates {
        let shared: Vec<&str> =
            nodes.iter().filter(|(_, l)| selects(me, l) && selects(other, l)).map(|(n, _)| *n).collect();
        if let Some(first) = shared.first() {
            return Some((other.name.to_owned(), shared.len(), (*first).to_owned()));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use vigil_crds::rollout::match_labels;

    fn labels(pool: &str) -> BTreeMap<String, String> {
        [("pool".to_owned(), pool.to_owned())].into()
    }

    #[test]
    fn the_newer_of_two_overlapping_rollouts_yields_and_disjoint_ones_do_not() {
        let (a, b) = (labels("a"), labels("b"));
        let nodes = [("n1", &a), ("n2", &b), ("n3", &a)];
        let sel_a = match_labels([("pool", "a")]);
        let sel_b = match_labels([("pool", "b")]);
        let t = |s: i64| Some(Timestamp::from_second(s).unwrap());
        let everything = Claim { name: "all", created: t(10), selector: None };
        let pool_a = Claim { name: "pool-a", created: t(20), selector: Some(&sel_a) };
        let pool_b = Claim { name: "pool-b", created: t(30), selector: Some(&sel_b) };
        let all = [everything.clone(), pool_a.clone(), pool_b.clone()];
        assert_eq!(yields_to(&pool_a, &all, &nodes), Some(("all".into(), 2, "n1".into())));
        assert_eq!(yields_to(&everything, &all, &nodes), None, "the oldest never yields");
        let disjoint = [pool_a.clone(), pool_b.clone()];
        assert_eq!(yields_to(&pool_b, &disjoint, &nodes), None);
        // Created at the same instant: by name, exactly one yields.
        let twin = Claim { name: "pool-a2", created: t(20), selector: Some(&sel_a) };
        let both = [pool_a.clone(), twin.clone()];
        assert!(yields_to(&pool_a, &both, &nodes).is_none());
        assert!(yields_to(&twin, &both, &nodes).is_some());
    }
}
