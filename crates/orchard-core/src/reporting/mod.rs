//! What central IT reads back: the append-only audit log and the usage report for billing.

pub mod audit;
pub mod usage;
