//! SCEP challenges, issued certificates and the Authenticate/TokenUpdate records.

pub(crate) mod identity;
pub(crate) mod renewal;
