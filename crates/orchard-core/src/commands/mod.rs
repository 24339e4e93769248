//! Queuing commands from the admin side: one device at a time with its history, the dangerous-command policy,
//! bulk commands, and the secrets commands carry.

pub mod policy;
pub mod queue;
pub mod secrets;
