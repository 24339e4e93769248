//! What central IT reads back: the append-only audit log (and the admin API's audit trail that feeds it) and
//! the usage report for billing.

pub mod audit;
pub mod audit_actions;
pub mod usage;
