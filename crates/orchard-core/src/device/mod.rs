//! Devices: the device surface after enrollment (check-in and command sessions, inventory, Activation Lock)
//! and the admin views of devices.

pub mod activation_lock;
pub mod checkin;
pub mod inventory;
pub mod views;
