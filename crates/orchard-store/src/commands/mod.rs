//! The per-channel command queue and results.

pub(crate) mod queue;
