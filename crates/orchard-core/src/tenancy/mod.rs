//! Departments (tenants) and their enrollment links.

pub mod links;
pub mod tenants;
