//! DEP tokens, synced devices, templates and assignments.

pub(crate) mod sync;
pub(crate) mod templates;
