//! Leases and run records of background jobs that run on one node at a time, at most once per interval.

pub(crate) mod runs;
