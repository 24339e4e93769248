//! Push bookkeeping and the push certificate with its CSR keys.

pub(crate) mod push_csr;
pub(crate) mod queue_state;
