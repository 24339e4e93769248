//! Getting an identity onto an iPad: the enrollment profile of a link with its SCEP decisions, and Automated Device Enrollment (MachineInfo, templates, Setup Assistant).

pub mod ade;
pub mod binding;
pub mod identity;
pub mod profile;
pub mod renewal;
pub mod return_to_service;
