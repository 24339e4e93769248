//! The per-channel command queue and results.

pub(crate) mod legacy;
pub(crate) mod queue;
