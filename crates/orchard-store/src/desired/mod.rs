//! Desired state: the profile library (what Orchard installs on devices and what it knows they have), device
//! groups, assignments and the reconciler's rows.

pub(crate) mod assignments;
pub(crate) mod groups;
pub(crate) mod profiles;
pub(crate) mod reconcile;
pub(crate) mod shared_ipad;
