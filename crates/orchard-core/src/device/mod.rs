//! Devices: the device surface after enrollment (check-in and command sessions, inventory, Activation Lock)
//! and the admin views of devices.

pub mod activation_lock;
mod bootstrap_token;
pub mod checkin;
pub mod checklist;
pub mod inventory;
pub mod shared_ipad;
pub mod views;

use orchard_store::UnitOfWork;

use crate::{CoreError, Orchard};

impl Orchard {
    /// Commits a use case's unit of work, then wakes the push dispatcher if the unit queued commands, the
    /// webhook delivery job if it recorded events and the licence pass if it gave licences work for Apple. All
    /// three are durable in the unit and the wake only saves a wait: the push needs no outbox, being owed by the
    /// `push_wanted` counter bumped in the same transaction (the dispatcher polls it every second anyway); the
    /// events are in the outbox; the licence rows wait in their states for the pass's next interval.
    pub(crate) async fn commit_unit(&self, unit: UnitOfWork) -> Result<(), CoreError> {
        let queued = unit.queued_commands();
        let events = unit.recorded_webhook_events();
        let licences = unit.made_licence_work();
        unit.commit().await?;
        if queued {
            self.wake_dispatcher();
        }
        if events {
            self.wake_webhooks();
        }
        if licences {
            // The licence pass runs with the reconciler's.
            self.wake_reconciler();
        }
        Ok(())
    }
}
