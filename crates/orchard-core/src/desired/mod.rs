//! Desired state: what Orchard wants on devices. The profile library (profiles, versions, validation against
//! Apple's schema, sealed secrets, signed installs and what each device has), device groups (static and
//! smart), assignments (an object for the tenant, groups or devices, minus exclusions) and the reconciler that
//! turns the difference into commands.

pub mod assignments;
pub mod groups;
pub mod mobileconfig;
pub mod profile_schema;
pub mod profiles;
pub mod reconciler;
pub mod shared_ipad_policy;
pub(crate) mod smart_group_cache;
