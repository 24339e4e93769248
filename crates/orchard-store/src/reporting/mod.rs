//! The audit log, daily usage snapshots and the credential register's figures and warnings.

pub(crate) mod audit;
pub(crate) mod credentials;
pub(crate) mod usage;
