//! Apps and Books: tenants' content tokens (sealed), the apps of their locations with licence counts, and each
//! device's licence and install state per app.

pub(crate) mod licences;
pub(crate) mod tokens;
