//! Queuing commands from the admin side: single and bulk commands, the dangerous-command policy, and the device views the API shows.

pub mod admin;
pub mod policy;
