//! Placeholder until the merge of several loops' snapshots lands.
use super::Snapshot;

pub fn merge_snapshots(parts: Vec<Box<Snapshot>>) -> Option<Box<Snapshot>> {
    parts.into_iter().next()
}
