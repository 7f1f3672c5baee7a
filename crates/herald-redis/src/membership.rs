//! The group memberships of this layer's own channels, remembered so they can be re-added.
//!
//! Python never re-adds: a membership lives `group_expiry` seconds after its last `group_add`,
//! and a Redis restart without persistence loses every group, leaving connected sockets deaf.
//! Herald re-adds what it tracks after a reader reconnects to a shard and periodically before
//! `group_expiry` runs out. `group_discard`, `close_channel` and `flush` stop tracking.

use std::collections::{HashMap, HashSet};

use indexmap::IndexSet;

/// group → channels and channel → groups, kept in step.
#[derive(Debug, Default)]
pub(crate) struct Memberships {
    by_group: HashMap<String, IndexSet<String>>,
    by_channel: HashMap<String, HashSet<String>>,
}

impl Memberships {
    pub(crate) fn add(&mut self, group: &str, channel: &str) {
        self.by_group
            .entry(group.to_owned())
            .or_default()
            .insert(channel.to_owned());
        self.by_channel
            .entry(channel.to_owned())
            .or_default()
            .insert(group.to_owned());
    }

    pub(crate) fn discard(&mut self, group: &str, channel: &str) {
        if let Some(channels) = self.by_group.get_mut(group) {
            channels.shift_remove(channel);
            if channels.is_empty() {
                self.by_group.remove(group);
            }
        }
        if let Some(groups) = self.by_channel.get_mut(channel) {
            groups.remove(group);
            if groups.is_empty() {
                self.by_channel.remove(channel);
            }
        }
    }

    pub(crate) fn contains(&self, group: &str, channel: &str) -> bool {
        self.by_group
            .get(group)
            .is_some_and(|channels| channels.contains(channel))
    }

    /// Forgets every membership of `channel`.
    pub(crate) fn forget_channel(&mut self, channel: &str) {
        for group in self.by_channel.remove(channel).unwrap_or_default() {
            if let Some(channels) = self.by_group.get_mut(&group) {
                channels.shift_remove(channel);
                if channels.is_empty() {
                    self.by_group.remove(&group);
                }
            }
        }
    }

    pub(crate) fn clear(&mut self) {
        self.by_group.clear();
        self.by_channel.clear();
    }

    /// A copy of (group, channels) for the groups `keep` selects.
    pub(crate) fn snapshot(&self, keep: impl Fn(&str) -> bool) -> Vec<(String, Vec<String>)> {
        self.by_group
            .iter()
            .filter(|(g, _)| keep(g))
            .map(|(g, chs)| (g.clone(), chs.iter().cloned().collect()))
            .collect()
    }

    /// Number of tracked (group, channel) pairs.
    pub(crate) fn len(&self) -> usize {
        self.by_group.values().map(IndexSet::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discard_and_forget_keep_both_maps_in_step() {
        let mut m = Memberships::default();
        m.add("g1", "a");
        m.add("g2", "a");
        m.add("g1", "b");
        assert_eq!(m.len(), 3);
        m.discard("g1", "a");
        assert_eq!(m.len(), 2);
        m.forget_channel("a");
        assert_eq!(
            m.snapshot(|_| true),
            vec![("g1".to_owned(), vec!["b".to_owned()])]
        );
        m.forget_channel("b");
        assert_eq!(m.len(), 0);
        assert!(m.by_channel.is_empty() && m.by_group.is_empty());
    }
}
