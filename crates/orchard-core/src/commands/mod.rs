//! Queuing commands from the admin side: one device at a time with its history, the dangerous-command policy,
//! bulk commands (and bulk jobs a person follows), the secrets commands carry, and the queue's hygiene (resends, attempts, history).

pub mod bulk_jobs;
pub mod hygiene;
pub mod policy;
pub mod queue;
pub mod secrets;
