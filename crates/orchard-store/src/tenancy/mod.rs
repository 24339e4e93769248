//! Tenants, their details and enrollment links.

pub(crate) mod links;
pub(crate) mod tenant_details;
