//! OS currency: the catalogue of releases per model, the tenants' OS policies and the command-driven updates
//! of devices older than iOS 17.

pub(crate) mod catalogue;
pub(crate) mod policies;
