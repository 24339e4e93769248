//! The per-channel command queue and results.

pub(crate) mod bodies;
pub(crate) mod bulk_jobs;
pub(crate) mod legacy;
pub(crate) mod queue;
