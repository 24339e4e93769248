//! Apps and Books: tenants' content tokens (sealed) and the apps of their locations with licence counts.

pub(crate) mod tokens;
