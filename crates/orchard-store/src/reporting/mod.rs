//! The audit log and daily usage snapshots.

pub(crate) mod audit;
pub(crate) mod usage;
