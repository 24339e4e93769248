//! Devices, their facts and inventory, and the device search.

pub(crate) mod bootstrap_tokens;
pub(crate) mod device_search;
pub(crate) mod devices;
