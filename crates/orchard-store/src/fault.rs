//! The store fault injector (cargo feature `fault-injection`, enabled only by dev-dependencies): fails the
//! Nth statement executed inside a unit of work, so a test can walk N = 1, 2, 3 … through a use case and see
//! that every failure leaves the state before, and that a retry completes the use case.
//!
//! Counted statements are those of units of work only: `BEGIN` (statement 1 of a unit), each statement run
//! through the unit, and `COMMIT`. Statements on pooled connections outside a unit are not counted.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use crate::StoreError;

#[derive(Debug, Default)]
struct Plan {
    /// The statement to fail, counted from 1 since arming.
    fail_at: u64,
    /// Statements counted since arming.
    seen: u64,
    /// The statement that failed, once it did.
    fired_at: Option<u64>,
}

/// Shared by every clone of a [`crate::Store`] (and so by every unit of work it begins).
#[derive(Debug, Default)]
pub struct FaultInjector {
    /// Cheap check on every statement while nothing is armed.
    armed: AtomicBool,
    plan: Mutex<Plan>,
}

impl FaultInjector {
    /// Fails the `n`th statement (from 1) executed inside any unit of work from now on, once; the statements
    /// before it run normally. `n = 0` disarms.
    pub fn fail_nth_statement(&self, n: u64) {
        let mut plan = self.lock();
        *plan = Plan {
            fail_at: n,
            ..Plan::default()
        };
        self.armed.store(n > 0, Ordering::SeqCst);
    }

    /// No fault any more (a fault that has not fired is dropped).
    pub fn disarm(&self) {
        self.fail_nth_statement(0);
    }

    /// The statement number that was failed since the last arming, if the fault fired.
    pub fn fired(&self) -> Option<u64> {
        self.lock().fired_at
    }

    /// Statements counted since the last arming (up to the one that failed).
    pub fn statements_seen(&self) -> u64 {
        self.lock().seen
    }

    /// Called before each statement of a unit of work.
    pub(crate) fn before_statement(&self) -> Result<(), StoreError> {
        if !self.armed.load(Ordering::SeqCst) {
            return Ok(());
        }
        let mut plan = self.lock();
        if plan.fired_at.is_some() || plan.fail_at == 0 {
            return Ok(());
        }
        plan.seen += 1;
        if plan.seen < plan.fail_at {
            return Ok(());
        }
        plan.fired_at = Some(plan.seen);
        self.armed.store(false, Ordering::SeqCst);
        // What a dropped connection looks like to the caller (a PostgreSQL restart, a killed backend).
        Err(StoreError::Database(sqlx::Error::Io(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            format!(
                "injected fault at statement {} of a unit of work",
                plan.seen
            ),
        ))))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Plan> {
        // A panic while holding the lock cannot leave the plan half-written: take it as it is.
        self.plan
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
