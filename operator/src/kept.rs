//! Stores of what the operator keeps of the objects it watches across the fleet (nodes,
//! agent pods, heartbeat Leases, AgentStatuses): each object's facts
//! ([`vigil_plan::facts`]), not the object, kept current by a watch.
//!
//! A watch's first list (and every relist after a dropped watch) fills a buffer that
//! replaces the store when the list is complete, so the store never holds half a fleet, and
//! objects deleted while the watch was down are gone after the relist.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use kube::runtime::watcher::Event;
use vigil_plan::facts::{LeaseFacts, NodeFacts, PodFacts, StatusFacts};

/// Where an object lives: its namespace (empty for a cluster-scoped one) and name.
pub trait Keyed {
    /// (namespace, name).
    fn key(&self) -> (&str, &str);
}

impl Keyed for NodeFacts {
    fn key(&self) -> (&str, &str) {
        ("", &self.name)
    }
}

impl Keyed for PodFacts {
    fn key(&self) -> (&str, &str) {
        (&self.namespace, &self.name)
    }
}

impl Keyed for LeaseFacts {
    fn key(&self) -> (&str, &str) {
        (&self.namespace, &self.name)
    }
}

impl Keyed for StatusFacts {
    fn key(&self) -> (&str, &str) {
        ("", &self.name)
    }
}

/// Namespace → name → facts: looked up without building a key.
type Map<T> = BTreeMap<String, BTreeMap<String, Arc<T>>>;

fn insert<T: Keyed>(map: &mut Map<T>, t: T) {
    let (ns, name) = t.key();
    // The API gives every object a name; one without is no object to act on.
    if name.is_empty() {
        return;
    }
    let (ns, name) = (ns.to_owned(), name.to_owned());
    map.entry(ns).or_default().insert(name, Arc::new(t));
}

fn remove<T: Keyed>(map: &mut Map<T>, t: &T) {
    let (ns, name) = t.key();
    if let Some(names) = map.get_mut(ns) {
        names.remove(name);
        if names.is_empty() {
            map.remove(ns);
        }
    }
}

/// A store's read side: cheap to clone, shared by the controller, the janitor and
/// AgentReporting.
#[derive(Debug)]
pub struct Kept<T> {
    map: Arc<RwLock<Map<T>>>,
    ready: tokio::sync::watch::Receiver<bool>,
}

impl<T> Clone for Kept<T> {
    fn clone(&self) -> Self {
        Self { map: self.map.clone(), ready: self.ready.clone() }
    }
}

/// A store's write side, fed by one watch.
#[derive(Debug)]
pub struct Writer<T> {
    map: Arc<RwLock<Map<T>>>,
    ready: tokio::sync::watch::Sender<bool>,
    /// A relist in progress: what it has shown so far.
    relist: Option<Map<T>>,
}

/// An empty store (not ready until its first list is complete) and its writer.
pub fn store<T>() -> (Kept<T>, Writer<T>) {
    let map = Arc::new(RwLock::new(BTreeMap::new()));
    let (tx, rx) = tokio::sync::watch::channel(false);
    (Kept { map: map.clone(), ready: rx }, Writer { map, ready: tx, relist: None })
}

impl<T: Keyed> Writer<T> {
    /// Takes one watch event in.
    pub fn apply(&mut self, event: Event<T>) {
        match event {
            Event::Init => self.relist = Some(BTreeMap::new()),
            Event::InitApply(t) => match self.relist.as_mut() {
                Some(relist) => insert(relist, t),
                None => insert(&mut self.write(), t),
            },
            Event::InitDone => {
                if let Some(relist) = self.relist.take() {
                    *self.write() = relist;
                }
                self.ready.send_replace(true);
            }
            Event::Apply(t) => insert(&mut self.write(), t),
            Event::Delete(t) => remove(&mut self.write(), &t),
        }
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Map<T>> {
        // A writer that panicked mid-insert left a map that is still a valid map.
        self.map.write().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl<T> Kept<T> {
    /// A ready store holding `items` (tests, and callers that list instead of watching).
    pub fn of(items: impl IntoIterator<Item = T>) -> Self
    where
        T: Keyed,
    {
        let (kept, mut writer) = store();
        writer.apply(Event::Init);
        for t in items {
            writer.apply(Event::InitApply(t));
        }
        writer.apply(Event::InitDone);
        kept
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Map<T>> {
        self.map.read().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Every object, in (namespace, name) order.
    pub fn state(&self) -> Vec<Arc<T>> {
        self.read().values().flat_map(BTreeMap::values).cloned().collect()
    }

    /// The object `name` in `namespace` (empty for a cluster-scoped one).
    pub fn get(&self, namespace: &str, name: &str) -> Option<Arc<T>> {
        self.read().get(namespace)?.get(name).cloned()
    }

    /// How many objects it holds.
    pub fn len(&self) -> usize {
        self.read().values().map(BTreeMap::len).sum()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.read().is_empty()
    }

    /// Waits until the first list is complete; `Err` when the writer is gone before that.
    pub async fn wait_until_ready(&self) -> Result<(), tokio::sync::watch::error::RecvError> {
        let mut ready = self.ready.clone();
        ready.wait_for(|r| *r).await.map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(ns: &str, name: &str, holder: &str) -> LeaseFacts {
        LeaseFacts {
            name: name.into(),
            namespace: ns.into(),
            holder: Some(holder.into()),
            renewed_at: None,
            acquired_at: None,
        }
    }

    #[test]
    fn a_relist_replaces_the_store_at_its_end_and_drops_what_was_deleted_meanwhile() {
        let (kept, mut w) = store();
        w.apply(Event::Init);
        w.apply(Event::InitApply(lease("a", "x", "r-1")));
        assert!(kept.is_empty(), "half a list is not shown");
        w.apply(Event::InitApply(lease("b", "x", "r-1")));
        w.apply(Event::InitDone);
        assert_eq!(kept.len(), 2);
        w.apply(Event::Apply(lease("a", "x", "r-2")));
        assert_eq!(kept.get("a", "x").unwrap().holder.as_deref(), Some("r-2"));
        assert_eq!(kept.get("b", "x").unwrap().holder.as_deref(), Some("r-1"), "same name, other namespace");
        // The watch drops; b/x is deleted meanwhile; the relist does not show it.
        w.apply(Event::Init);
        w.apply(Event::InitApply(lease("a", "x", "r-3")));
        assert_eq!(kept.len(), 2, "the old picture stands until the relist is complete");
        w.apply(Event::InitDone);
        assert_eq!(kept.len(), 1);
        assert!(kept.get("b", "x").is_none());
        w.apply(Event::Delete(lease("a", "x", "r-3")));
        assert!(kept.is_empty());
        w.apply(Event::Apply(lease("a", "", "r-1")));
        assert!(kept.is_empty(), "an object without a name is not kept");
    }

    #[tokio::test]
    async fn ready_once_the_first_list_is_complete() {
        let (kept, mut w) = store::<LeaseFacts>();
        assert!(!*kept.ready.borrow());
        w.apply(Event::Init);
        w.apply(Event::InitDone);
        kept.wait_until_ready().await.unwrap();
        let (never, w2) = store::<LeaseFacts>();
        drop(w2);
        assert!(never.wait_until_ready().await.is_err(), "a writer gone before its first list");
    }
}
