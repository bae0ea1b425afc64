//! The instances the supervisor holds, by id.
//!
//! Ids are handed out in order and never reused, so an event, a timer or a message
//! about an instance can never reach another one. An ended foreach item is *folded*:
//! its stage's counters take what `after` conditions and `halt` need
//! ([`batch`](super::batch)), and its [`Inst`] is dropped, so the supervisor's memory
//! does not grow with the number of items run. What is held is every replica, every
//! foreach item still unfinished, and the few ended instances not folded yet.
//!
//! Late news about a folded instance (a timer entry, a log-line match, a probe's exit)
//! finds nothing: callers use [`Insts::get`] where an id may be stale.

use std::collections::BTreeMap;

use super::instance::Inst;
use crate::event::{InstanceId, InstanceInfo};

#[derive(Default)]
pub(super) struct Insts {
    held: BTreeMap<InstanceId, Inst>,
    next: InstanceId,
}

impl Insts {
    /// A new instance; `make` gets its id.
    pub(super) fn add(&mut self, make: impl FnOnce(InstanceId) -> InstanceInfo) -> InstanceId {
        let id = self.next;
        self.next += 1;
        self.held.insert(id, Inst::new(make(id)));
        id
    }

    pub(super) fn get(&self, id: InstanceId) -> Option<&Inst> {
        self.held.get(&id)
    }

    pub(super) fn get_mut(&mut self, id: InstanceId) -> Option<&mut Inst> {
        self.held.get_mut(&id)
    }

    /// Forget an instance (folded).
    pub(super) fn remove(&mut self, id: InstanceId) -> Option<Inst> {
        self.held.remove(&id)
    }

    /// The instances held, in id order.
    pub(super) fn iter(&self) -> impl Iterator<Item = &Inst> {
        self.held.values()
    }

    /// The ids held, in order.
    pub(super) fn ids(&self) -> Vec<InstanceId> {
        self.held.keys().copied().collect()
    }

    /// How many are held.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.held.len()
    }
}

impl std::ops::Index<InstanceId> for Insts {
    type Output = Inst;
    fn index(&self, id: InstanceId) -> &Inst {
        match self.held.get(&id) {
            Some(i) => i,
            None => panic!("instance {id} is not held (folded or never made)"),
        }
    }
}

impl std::ops::IndexMut<InstanceId> for Insts {
    fn index_mut(&mut self, id: InstanceId) -> &mut Inst {
        match self.held.get_mut(&id) {
            Some(i) => i,
            None => panic!("instance {id} is not held (folded or never made)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(id: InstanceId) -> InstanceInfo {
        InstanceInfo {
            id,
            name: format!("s.{id}"),
            stage: 0,
            stage_name: "s".into(),
            index: id,
            item: None,
            daemon: false,
            resumed: false,
        }
    }

    #[test]
    fn ids_are_never_reused() {
        let mut insts = Insts::default();
        let a = insts.add(info);
        let b = insts.add(info);
        assert!(insts.remove(a).is_some());
        let c = insts.add(info);
        assert_eq!((a, b, c), (0, 1, 2));
        assert!(insts.get(a).is_none());
        assert_eq!(insts.ids(), [1, 2]);
        assert_eq!(insts.len(), 2);
        assert_eq!(insts[2].info.name, "s.2");
    }
}
