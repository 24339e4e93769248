//! Desired state: what Orchard wants on devices. Today the profile library (profiles, versions, validation
//! against Apple's schema, sealed secrets, signed installs and what each device has); groups, assignments and
//! the reconciler build on it.

pub mod mobileconfig;
pub mod profile_schema;
pub mod profiles;
