//! Departments (tenants), their enrollment links, and the planned-maintenance notices central IT shows them.

pub mod links;
pub mod maintenance;
pub mod tenants;
