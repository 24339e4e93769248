//! PostgreSQL for Orchard's `AnyPool`: sqlx's connection with one change, a connection goes back to the pool
//! without a round trip.
//!
//! sqlx 0.8's pool pings every connection returned to it (`Floating::return_to_pool`, unconditional: a Sync
//! message and its ReadyForQuery), to flush a rollback a dropped transaction queued and to drain a statement
//! whose future was dropped mid-answer. A device session returns a connection after each signed request's lookup
//! and after each unit, so that was a round trip, with its CPU on both sides, for every one of them. Here the
//! ping `Any` calls is [`settle`](QuietPgConnection::settle): it sends what is queued and reads the answers
//! still owed (what the ping achieved), and costs nothing when nothing is owed.
//!
//! What the ping did besides, noticing a connection the database dropped while it was in use, is left to the
//! connection's next use: a connection whose statement failed on a broken socket still owes its answer, so
//! settling it fails and the pool closes it. Before a connection that sat idle is used, the pool checks it with
//! a real round trip ([`crate::check_alive`]), as does `/readyz`.

use std::borrow::Cow;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::BoxStream;
use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::Error;
use sqlx_core::any::driver::AnyDriver;
use sqlx_core::any::{
    Any, AnyArguments, AnyConnectOptions, AnyConnectionBackend, AnyQueryResult, AnyRow,
    AnyStatement, AnyTypeInfo,
};
use sqlx_core::connection::{ConnectOptions, Connection};
use sqlx_core::describe::Describe;
use sqlx_core::transaction::Transaction;
use sqlx_core::Either;

/// The driver for `postgres:` and `postgresql:` URLs (installed by `drivers::install_drivers`).
pub(crate) const DRIVER: AnyDriver = AnyDriver::without_migrate::<QuietPostgres>();

/// sqlx's PostgreSQL connection, returned to the pool without a ping (see the module's comment).
#[derive(Debug)]
pub struct QuietPgConnection {
    inner: PgConnection,
}

impl QuietPgConnection {
    /// Sends what the connection has queued (a dropped transaction's rollback) and reads every answer still
    /// owed (a statement whose future was dropped), leaving the connection ready for the next statement. No
    /// round trip when nothing is owed; an error when what is owed cannot be sent or read (a broken
    /// connection, which the pool then closes).
    fn settle(&mut self) -> BoxFuture<'_, Result<(), Error>> {
        AnyConnectionBackend::flush(&mut self.inner)
    }
}

impl AnyConnectionBackend for QuietPgConnection {
    fn name(&self) -> &str {
        AnyConnectionBackend::name(&self.inner)
    }

    fn close(self: Box<Self>) -> BoxFuture<'static, Result<(), Error>> {
        Connection::close(self.inner)
    }

    fn close_hard(self: Box<Self>) -> BoxFuture<'static, Result<(), Error>> {
        Connection::close_hard(self.inner)
    }

    /// Settles the connection instead of pinging it: what sqlx's pool calls when a connection comes back.
    fn ping(&mut self) -> BoxFuture<'_, Result<(), Error>> {
        self.settle()
    }

    fn begin(&mut self, statement: Option<Cow<'static, str>>) -> BoxFuture<'_, Result<(), Error>> {
        AnyConnectionBackend::begin(&mut self.inner, statement)
    }

    fn commit(&mut self) -> BoxFuture<'_, Result<(), Error>> {
        AnyConnectionBackend::commit(&mut self.inner)
    }

    fn rollback(&mut self) -> BoxFuture<'_, Result<(), Error>> {
        AnyConnectionBackend::rollback(&mut self.inner)
    }

    fn start_rollback(&mut self) {
        AnyConnectionBackend::start_rollback(&mut self.inner)
    }

    fn get_transaction_depth(&self) -> usize {
        AnyConnectionBackend::get_transaction_depth(&self.inner)
    }

    fn cached_statements_size(&self) -> usize {
        AnyConnectionBackend::cached_statements_size(&self.inner)
    }

    fn clear_cached_statements(&mut self) -> BoxFuture<'_, Result<(), Error>> {
        AnyConnectionBackend::clear_cached_statements(&mut self.inner)
    }

    fn shrink_buffers(&mut self) {
        AnyConnectionBackend::shrink_buffers(&mut self.inner)
    }

    fn flush(&mut self) -> BoxFuture<'_, Result<(), Error>> {
        AnyConnectionBackend::flush(&mut self.inner)
    }

    fn should_flush(&self) -> bool {
        AnyConnectionBackend::should_flush(&self.inner)
    }

    fn as_migrate(
        &mut self,
    ) -> Result<&mut (dyn sqlx_core::migrate::Migrate + Send + 'static), Error> {
        AnyConnectionBackend::as_migrate(&mut self.inner)
    }

    fn fetch_many<'q>(
        &'q mut self,
        query: &'q str,
        persistent: bool,
        arguments: Option<AnyArguments<'q>>,
    ) -> BoxStream<'q, Result<Either<AnyQueryResult, AnyRow>, Error>> {
        AnyConnectionBackend::fetch_many(&mut self.inner, query, persistent, arguments)
    }

    fn fetch_optional<'q>(
        &'q mut self,
        query: &'q str,
        persistent: bool,
        arguments: Option<AnyArguments<'q>>,
    ) -> BoxFuture<'q, Result<Option<AnyRow>, Error>> {
        AnyConnectionBackend::fetch_optional(&mut self.inner, query, persistent, arguments)
    }

    fn prepare_with<'c, 'q: 'c>(
        &'c mut self,
        sql: &'q str,
        parameters: &[AnyTypeInfo],
    ) -> BoxFuture<'c, Result<AnyStatement<'q>, Error>> {
        AnyConnectionBackend::prepare_with(&mut self.inner, sql, parameters)
    }

    fn describe<'q>(&'q mut self, sql: &'q str) -> BoxFuture<'q, Result<Describe<Any>, Error>> {
        AnyConnectionBackend::describe(&mut self.inner, sql)
    }
}

/// Connection options: sqlx's, parsed from the same URL.
#[derive(Debug, Clone)]
pub struct QuietPgConnectOptions(PgConnectOptions);

impl std::str::FromStr for QuietPgConnectOptions {
    type Err = Error;

    fn from_str(url: &str) -> Result<Self, Error> {
        Ok(Self(url.parse()?))
    }
}

impl<'a> TryFrom<&'a AnyConnectOptions> for QuietPgConnectOptions {
    type Error = Error;

    fn try_from(options: &'a AnyConnectOptions) -> Result<Self, Error> {
        Ok(Self(PgConnectOptions::try_from(options)?))
    }
}

impl ConnectOptions for QuietPgConnectOptions {
    type Connection = QuietPgConnection;

    fn from_url(url: &sqlx_core::Url) -> Result<Self, Error> {
        Ok(Self(PgConnectOptions::from_url(url)?))
    }

    fn connect(&self) -> BoxFuture<'_, Result<QuietPgConnection, Error>> {
        Box::pin(async move {
            Ok(QuietPgConnection {
                inner: self.0.connect().await?,
            })
        })
    }

    fn log_statements(self, level: log::LevelFilter) -> Self {
        Self(self.0.log_statements(level))
    }

    fn log_slow_statements(self, level: log::LevelFilter, duration: Duration) -> Self {
        Self(self.0.log_slow_statements(level, duration))
    }
}

crate::drivers::database_shell!(
    QuietPostgres,
    QuietPgConnection,
    QuietPgTransactionManager,
    "PostgreSQL",
    &["postgres", "postgresql"]
);

impl Connection for QuietPgConnection {
    type Database = QuietPostgres;
    type Options = QuietPgConnectOptions;

    fn close(self) -> BoxFuture<'static, Result<(), Error>> {
        Connection::close(self.inner)
    }

    fn close_hard(self) -> BoxFuture<'static, Result<(), Error>> {
        Connection::close_hard(self.inner)
    }

    fn ping(&mut self) -> BoxFuture<'_, Result<(), Error>> {
        AnyConnectionBackend::ping(self)
    }

    fn begin(&mut self) -> BoxFuture<'_, Result<Transaction<'_, QuietPostgres>, Error>> {
        Transaction::begin(self, None)
    }

    fn shrink_buffers(&mut self) {
        Connection::shrink_buffers(&mut self.inner)
    }

    fn flush(&mut self) -> BoxFuture<'_, Result<(), Error>> {
        Connection::flush(&mut self.inner)
    }

    fn should_flush(&self) -> bool {
        Connection::should_flush(&self.inner)
    }
}
