//! Desired state: the profile library (what Orchard installs on devices and what it knows they have).

pub(crate) mod profiles;
