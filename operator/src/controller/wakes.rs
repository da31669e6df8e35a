//! Which objects a reflector's nudge has woken the controller for, and with what key: kept in
//! step with the watch, deletes and relists included, so it holds only live objects (the
//! agent pods and Leases of a large fleet come and go with every revision).

use std::collections::{HashMap, HashSet};

use kube::runtime::watcher::Event;

use crate::kept::Keyed;

/// The last key each live object woke the controller with.
#[derive(Debug, Default)]
pub(super) struct Wakes {
    keys: HashMap<String, u64>,
    /// The objects a relist (after a dropped watch) has shown so far; at its end, the others
    /// are gone (deleted while the watch was down).
    relist: Option<HashSet<String>>,
}

fn id<K: Keyed>(o: &K) -> String {
    let (ns, name) = o.key();
    format!("{ns}/{name}")
}

impl Wakes {
    /// Takes one watch event in; `true` when it should wake the controller: an object whose
    /// key changed, or one that was read before and is gone (a deleted agent pod or Lease
    /// changes what the rollout it belonged to sees).
    pub(super) fn on<K: Keyed>(&mut self, event: &Event<K>, key: impl Fn(&K) -> Option<u64>) -> bool {
        match event {
            Event::Apply(o) | Event::InitApply(o) => {
                let id = id(o);
                if let (Event::InitApply(_), Some(live)) = (event, self.relist.as_mut()) {
                    live.insert(id.clone());
                }
                match key(o) {
                    Some(k) => self.keys.insert(id, k) != Some(k),
                    None => {
                        self.keys.remove(&id);
                        false
                    }
                }
            }
            Event::Delete(o) => self.keys.remove(&id(o)).is_some(),
            Event::Init => {
                self.relist = Some(HashSet::new());
                false
            }
            Event::InitDone => {
                let Some(live) = self.relist.take() else { return false };
                let before = self.keys.len();
                self.keys.retain(|id, _| live.contains(id));
                self.keys.len() != before
            }
        }
    }

    /// How many objects it remembers.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.keys.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_plan::facts::PodFacts as Pod;

    fn pod(name: &str, rev: &str) -> Pod {
        let pod: k8s_openapi::api::core::v1::Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": "vigil-system", "labels": {"vigil.dev/revision": rev}}
        }))
        .unwrap();
        Pod::from(&pod)
    }

    fn key(p: &Pod) -> Option<u64> {
        Some(p.revision.as_deref()?.bytes().map(u64::from).sum())
    }

    #[test]
    fn deleted_objects_are_forgotten_and_wake_the_controller() {
        let mut w = Wakes::default();
        for i in 0..1000 {
            assert!(w.on(&Event::Apply(pod(&format!("agent-{i}"), "r-a")), key), "a new object wakes");
        }
        assert!(!w.on(&Event::Apply(pod("agent-1", "r-a")), key), "an unchanged key does not");
        assert!(w.on(&Event::Apply(pod("agent-1", "r-b")), key), "a changed key does");
        for i in 0..1000 {
            assert!(w.on(&Event::Delete(pod(&format!("agent-{i}"), "r-a")), key), "a delete wakes");
        }
        assert_eq!(w.len(), 0, "nothing of the deleted objects is kept");
        assert!(!w.on(&Event::Delete(pod("never-seen", "r-a")), key), "nothing to forget: no wake");
    }

    #[test]
    fn a_relist_forgets_what_was_deleted_while_the_watch_was_down() {
        let mut w = Wakes::default();
        for name in ["a", "b", "c"] {
            w.on(&Event::Apply(pod(name, "r-a")), key);
        }
        assert!(!w.on(&Event::<Pod>::Init, key));
        assert!(!w.on(&Event::InitApply(pod("a", "r-a")), key), "unchanged");
        assert!(w.on(&Event::InitApply(pod("c", "r-b")), key), "changed while down");
        assert!(w.on(&Event::<Pod>::InitDone, key), "b went while the watch was down");
        assert_eq!(w.len(), 2);
        // A relist that finds everything still there changes nothing.
        w.on(&Event::<Pod>::Init, key);
        w.on(&Event::InitApply(pod("a", "r-a")), key);
        w.on(&Event::InitApply(pod("c", "r-b")), key);
        assert!(!w.on(&Event::<Pod>::InitDone, key));
        assert_eq!(w.len(), 2);
    }
}
