//! Tenants, their details and enrollment links; the planned-maintenance notices central IT shows them.

pub(crate) mod links;
pub(crate) mod maintenance;
pub(crate) mod tenant_details;
