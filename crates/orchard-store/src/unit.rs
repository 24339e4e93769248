//! Units of work: one write transaction that a core use case carries through every store call it makes, so
//! the use case commits once or not at all.
//!
//! The store methods a use case needs exist twice in name only: as `Store::x` (on a pooled connection, or in
//! a unit of its own when it writes several rows) and as `UnitOfWork::x` (inside the caller's unit). Both call
//! one private function written against [`Db`], so every SQL text exists once.
//!
//! Dropping a unit without [`UnitOfWork::commit`] rolls it back (sqlx rolls back a dropped transaction when
//! the connection returns to the pool).

use sqlx::pool::PoolConnection;
use sqlx::{Any, AnyConnection, Transaction};

use crate::{Backend, Store, StoreError};

/// One use case's transaction. Made by [`Store::begin_unit`]; on SQLite it holds the write lock from the
/// start (`BEGIN IMMEDIATE`), on PostgreSQL it is a READ COMMITTED transaction whose conditional updates
/// (`… WHERE setup_state = $from`, `… AND status IN (unfinished)`) decide races.
pub struct UnitOfWork {
    tx: Transaction<'static, Any>,
    /// This process's turn to write (SQLite), released when the unit ends; declared after `tx` so a dropped
    /// unit starts its rollback before the next unit is let in.
    _write_turn: Option<tokio::sync::OwnedSemaphorePermit>,
    backend: Backend,
    queued_commands: bool,
    recorded_webhook_events: bool,
    made_licence_work: bool,
    /// The caller saw no enabled webhook endpoint when its request began: events are not written.
    no_webhook_endpoints: bool,
    #[cfg(feature = "fault-injection")]
    faults: std::sync::Arc<crate::fault::FaultInjector>,
}

impl std::fmt::Debug for UnitOfWork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UnitOfWork")
            .field("backend", &self.backend)
            .field("queued_commands", &self.queued_commands)
            .field("recorded_webhook_events", &self.recorded_webhook_events)
            .field("made_licence_work", &self.made_licence_work)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Starts a unit of work (a write transaction).
    pub async fn begin_unit(&self) -> Result<UnitOfWork, StoreError> {
        #[cfg(feature = "fault-injection")]
        self.faults.before_statement()?;
        let (tx, write_turn) = self.begin_gated_write().await?;
        Ok(UnitOfWork {
            tx,
            _write_turn: write_turn,
            backend: self.backend,
            queued_commands: false,
            recorded_webhook_events: false,
            made_licence_work: false,
            no_webhook_endpoints: false,
            #[cfg(feature = "fault-injection")]
            faults: self.faults.clone(),
        })
    }

    /// A pooled connection for a store call that runs on its own (one statement, or reads).
    pub(crate) async fn pooled(&self) -> Result<Pooled, StoreError> {
        Ok(Pooled {
            conn: self.pool.acquire().await?,
            backend: self.backend,
        })
    }
}

impl UnitOfWork {
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Whether this unit queued commands: their push is already owed durably (`push_wanted`, bumped in this
    /// transaction), so after the commit the caller only needs to wake the dispatcher.
    pub fn queued_commands(&self) -> bool {
        self.queued_commands
    }

    /// Whether this unit recorded webhook deliveries (durable in the outbox; after the commit the caller only
    /// wakes the delivery job).
    pub fn recorded_webhook_events(&self) -> bool {
        self.recorded_webhook_events
    }

    /// Whether this unit gave Apps and Books licences work for Apple (wanted, released, or on their way out with
    /// a removal): durable on the rows, so after the commit the caller only wakes the licence pass. Without the
    /// wake the rows would wait for the pass's next interval.
    pub fn made_licence_work(&self) -> bool {
        self.made_licence_work
    }

    /// The caller's request read that no webhook endpoint is enabled (the device lookup says so): the unit's
    /// events are not written, which spares a device report the event's statement. An endpoint made after
    /// that read misses this unit's events, as one made just after the event's own check always could.
    pub fn assume_no_webhook_endpoints(&mut self) {
        self.no_webhook_endpoints = true;
    }

    /// Whether the unit writes the webhook events it is given (see
    /// [`UnitOfWork::assume_no_webhook_endpoints`]).
    pub fn writes_webhook_events(&self) -> bool {
        !self.no_webhook_endpoints
    }

    pub(crate) fn note_webhook_events(&mut self) {
        self.recorded_webhook_events = true;
    }

    /// Makes every change of the unit durable at once.
    pub async fn commit(mut self) -> Result<(), StoreError> {
        self.before_statement()?;
        self.tx.commit().await?;
        Ok(())
    }

    /// Drops every change of the unit (dropping it does the same, later).
    pub async fn rollback(self) -> Result<(), StoreError> {
        self.tx.rollback().await?;
        Ok(())
    }

    fn before_statement(&mut self) -> Result<(), StoreError> {
        #[cfg(feature = "fault-injection")]
        self.faults.before_statement()?;
        Ok(())
    }
}

/// Where a store statement runs: a unit of work, or a pooled connection of its own.
pub(crate) trait Db: Send {
    fn backend(&self) -> Backend;

    /// The connection for the next statement. Every statement asks anew, so the fault injector can count
    /// (and fail) statements one by one.
    fn conn(&mut self) -> Result<&mut AnyConnection, StoreError>;

    /// A statement queued commands (see [`UnitOfWork::queued_commands`]).
    fn note_queued_commands(&mut self) {}

    /// A statement gave licences work for Apple (see [`UnitOfWork::made_licence_work`]).
    fn note_licence_work(&mut self) {}
}

impl Db for UnitOfWork {
    fn backend(&self) -> Backend {
        self.backend
    }

    fn conn(&mut self) -> Result<&mut AnyConnection, StoreError> {
        self.before_statement()?;
        Ok(&mut self.tx)
    }

    fn note_queued_commands(&mut self) {
        self.queued_commands = true;
    }

    fn note_licence_work(&mut self) {
        self.made_licence_work = true;
    }
}

/// A pooled connection used outside any unit of work.
pub(crate) struct Pooled {
    conn: PoolConnection<Any>,
    backend: Backend,
}

impl Db for Pooled {
    fn backend(&self) -> Backend {
        self.backend
    }

    fn conn(&mut self) -> Result<&mut AnyConnection, StoreError> {
        Ok(&mut self.conn)
    }
}
