//! [`Lanes`]: a queue's ready jobs, one FIFO lane per priority.

use std::{cmp::Reverse, collections::BTreeMap, collections::VecDeque};

use crate::job::JobId;

/// Ready jobs by priority, highest first; each lane in `run_at` order
/// (oldest at the front). Only lanes holding jobs are kept, so a queue
/// whose jobs all have one priority costs one map entry.
#[derive(Debug, Default)]
pub(super) struct Lanes {
    lanes: BTreeMap<Reverse<i8>, VecDeque<JobId>>,
    len: usize,
}

impl Lanes {
    /// How many jobs are ready.
    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// Whether no job is ready.
    pub(super) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Adds a job at the back of its priority's lane.
    pub(super) fn push_back(&mut self, id: JobId, priority: i8) {
        self.lanes.entry(Reverse(priority)).or_default().push_back(id);
        self.len += 1;
    }

    /// Inserts a job into its lane at the place `before` says: the first
    /// position whose job does not come before it.
    pub(super) fn insert_by(&mut self, id: JobId, priority: i8, before: impl FnMut(&JobId) -> bool) {
        let lane = self.lanes.entry(Reverse(priority)).or_default();
        let at = lane.partition_point(before);
        lane.insert(at, id);
        self.len += 1;
    }

    /// Takes the next job to reserve: the oldest of the highest priority.
    pub(super) fn pop_front(&mut self) -> Option<JobId> {
        let mut lane = self.lanes.first_entry()?;
        let id = lane.get_mut().pop_front();
        if lane.get().is_empty() {
            lane.remove();
        }
        self.len -= usize::from(id.is_some());
        id
    }

    /// Removes a job (an operator cancelled it); `false` if it is not here.
    pub(super) fn remove(&mut self, id: JobId, priority: i8) -> bool {
        let Some(lane) = self.lanes.get_mut(&Reverse(priority)) else {
            return false;
        };
        let Some(at) = lane.iter().position(|j| *j == id) else {
            return false;
        };
        lane.remove(at);
        if lane.is_empty() {
            self.lanes.remove(&Reverse(priority));
        }
        self.len -= 1;
        true
    }

    /// The front of each lane: the oldest ready job is one of them.
    pub(super) fn fronts(&self) -> impl Iterator<Item = &JobId> {
        self.lanes.values().filter_map(|lane| lane.front())
    }

    /// Every ready job, in reservation order.
    pub(super) fn iter(&self) -> impl Iterator<Item = &JobId> {
        self.lanes.values().flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn highest_priority_first_then_fifo() {
        let mut lanes = Lanes::default();
        let ids: Vec<JobId> = (0..5).map(|_| JobId::new()).collect();
        lanes.push_back(ids[0], 0);
        lanes.push_back(ids[1], 3);
        lanes.push_back(ids[2], -2);
        lanes.push_back(ids[3], 3);
        lanes.push_back(ids[4], 0);
        assert!(lanes.remove(ids[4], 0));
        assert!(!lanes.remove(ids[4], 0));
        assert_eq!(lanes.len(), 4);
        let order: Vec<_> = std::iter::from_fn(|| lanes.pop_front()).collect();
        assert_eq!(order, [ids[1], ids[3], ids[0], ids[2]]);
        assert!(lanes.is_empty());
    }
}
