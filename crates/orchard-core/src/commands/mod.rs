//! Queuing commands from the admin side: one device at a time with its history, the dangerous-command policy,
//! and bulk commands.

pub mod policy;
pub mod queue;
