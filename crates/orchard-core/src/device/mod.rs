//! The device surface after enrollment: check-in and command sessions, inventory, and Activation Lock.

pub mod activation_lock;
pub mod checkin;
pub mod inventory;
