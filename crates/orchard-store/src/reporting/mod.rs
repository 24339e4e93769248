//! The audit log, daily usage snapshots, the credential register's figures and warnings, and the operators' monitoring
//! figures.

pub(crate) mod audit;
pub(crate) mod credentials;
pub(crate) mod operations;
pub(crate) mod usage;
