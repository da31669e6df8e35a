//! Which node group a failure belongs to: the attribute every failing node shares and no
//! healthy node of the wave has (seed 000's worked example: old-OS nodes crash-loop).

use super::model::NodeView;

/// The first attribute (in the order osImage, kernel, instanceType, zone, arch) whose value
/// every failing node shares and no healthy node has. `None` when the failures do not
/// isolate a group (or there are no healthy nodes to tell them apart from).
pub fn failing_group(failing: &[&NodeView], healthy: &[&NodeView]) -> Option<(&'static str, String)> {
    let first = failing.first()?;
    if healthy.is_empty() {
        return None;
    }
    for (key, value) in first.attributes.pairs() {
        if value.is_empty() {
            continue;
        }
        let all_fail = failing.iter().all(|n| n.attributes.get(key) == Some(value));
        let no_healthy = healthy.iter().all(|n| n.attributes.get(key) != Some(value));
        if all_fail && no_healthy {
            return Some((key, value.to_owned()));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::NodeAttributes;

    fn node(os: &str, zone: &str) -> NodeView {
        NodeView {
            name: format!("{os}-{zone}"),
            labels: Default::default(),
            attributes: NodeAttributes {
                os_image: os.into(),
                zone: zone.into(),
                kernel: "5.15".into(),
                ..Default::default()
            },
            revision: None,
            ready: true,
            ready_changed_at: None,
            admitted_at: None,
            agent: None,
        }
    }

    #[test]
    fn the_shared_os_image_of_the_failing_nodes_is_the_group() {
        let (f1, f2) = (node("CentOS 7", "a"), node("CentOS 7", "b"));
        let (h1, h2) = (node("Ubuntu 22.04", "a"), node("Ubuntu 22.04", "b"));
        assert_eq!(failing_group(&[&f1, &f2], &[&h1, &h2]), Some(("osImage", "CentOS 7".into())));
    }

    #[test]
    fn a_zone_is_found_when_the_os_does_not_separate() {
        let (f1, f2) = (node("Ubuntu", "c"), node("Ubuntu", "c"));
        let h = node("Ubuntu", "a");
        assert_eq!(failing_group(&[&f1, &f2], &[&h]), Some(("zone", "c".into())));
    }

    #[test]
    fn no_group_when_healthy_nodes_share_every_attribute_or_there_are_none() {
        let (f, h) = (node("Ubuntu", "a"), node("Ubuntu", "a"));
        assert_eq!(failing_group(&[&f], &[&h]), None);
        assert_eq!(failing_group(&[&f], &[]), None);
    }
}
