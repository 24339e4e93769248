//! Orchard's drivers behind sqlx's `Any` layer: `sqlite_inline` for `sqlite:` URLs (statements stepped on the
//! caller's thread) and `postgres_driver` for `postgres:` ones (sqlx's connection, returned to the pool without
//! a round trip). Every store statement, pool and transaction goes through `Any` unchanged.
//!
//! `Any` drives a connection only through its `AnyConnectionBackend` methods, but
//! `AnyDriver::without_migrate::<DB>()` takes a `Database` type whose `Connection` is that connection, and the
//! trait names a row, column, value and statement type besides. Each driver declares such a type with
//! [`database_shell!`]: the types it names are uninhabited, never made.

use sqlx_core::any::driver::AnyDriver;

static DRIVERS: [AnyDriver; 2] = [crate::postgres_driver::DRIVER, crate::sqlite_inline::DRIVER];

/// Installs the drivers every `Any` connection of this process uses. Call it instead of
/// `sqlx::any::install_default_drivers` (which would panic after it).
pub fn install_drivers() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // Installed already by other code: sqlx's drivers then serve both (slower, but correct: sqlx's SQLite
        // connections have a 5 s busy timeout of their own, and its PostgreSQL ones are pinged).
        if let Err(error) = sqlx::any::install_drivers(&DRIVERS) {
            tracing::warn!(%error, "Orchard's database drivers are not installed");
        }
    });
}

/// Declares, in the calling module, the `Database` type `$db` for the connection `$connection`, with the
/// transaction manager `$manager` (the connection's own `AnyConnectionBackend` methods) and the arguments, row,
/// column, value and statement types it names.
macro_rules! database_shell {
    ($db:ident, $connection:ty, $manager:ident, $name:literal, $schemes:expr) => {
        #[derive(Debug)]
        pub struct $db;

        impl sqlx_core::database::Database for $db {
            type Connection = $connection;
            type TransactionManager = $manager;
            type Row = Never;
            type QueryResult = sqlx_core::any::AnyQueryResult;
            type Column = Never;
            type TypeInfo = sqlx_core::any::AnyTypeInfo;
            type Value = Never;
            type ValueRef<'r> = NeverRef<'r>;
            type Arguments<'q> = ShellArguments<'q>;
            type ArgumentBuffer<'q> = Vec<sqlx_core::any::AnyValueKind<'q>>;
            type Statement<'q> = NeverStatement<'q>;
            const NAME: &'static str = $name;
            const URL_SCHEMES: &'static [&'static str] = $schemes;
        }

        pub struct $manager;

        impl sqlx_core::transaction::TransactionManager for $manager {
            type Database = $db;

            fn begin<'conn>(
                conn: &'conn mut $connection,
                statement: Option<std::borrow::Cow<'static, str>>,
            ) -> futures::future::BoxFuture<'conn, Result<(), sqlx::Error>> {
                sqlx_core::any::AnyConnectionBackend::begin(conn, statement)
            }

            fn commit(
                conn: &mut $connection,
            ) -> futures::future::BoxFuture<'_, Result<(), sqlx::Error>> {
                sqlx_core::any::AnyConnectionBackend::commit(conn)
            }

            fn rollback(
                conn: &mut $connection,
            ) -> futures::future::BoxFuture<'_, Result<(), sqlx::Error>> {
                sqlx_core::any::AnyConnectionBackend::rollback(conn)
            }

            fn start_rollback(conn: &mut $connection) {
                sqlx_core::any::AnyConnectionBackend::start_rollback(conn)
            }

            fn get_transaction_depth(conn: &$connection) -> usize {
                sqlx_core::any::AnyConnectionBackend::get_transaction_depth(conn)
            }
        }

        /// Arguments of the shell `Database` (`Any` passes its own `AnyArguments` to the connection).
        #[derive(Default)]
        pub struct ShellArguments<'q> {
            values: Vec<sqlx_core::any::AnyValueKind<'q>>,
        }

        impl<'q> sqlx_core::arguments::Arguments<'q> for ShellArguments<'q> {
            type Database = $db;

            fn reserve(&mut self, additional: usize, _size: usize) {
                self.values.reserve(additional);
            }

            fn add<T>(&mut self, value: T) -> Result<(), sqlx::error::BoxDynError>
            where
                T: 'q + sqlx_core::encode::Encode<'q, $db> + sqlx_core::types::Type<$db>,
            {
                let _ = value.encode(&mut self.values)?;
                Ok(())
            }

            fn len(&self) -> usize {
                self.values.len()
            }
        }

        /// A row, column or value of the shell `Database`: never made.
        #[derive(Debug)]
        pub enum Never {}

        /// A value reference of the shell `Database`: never made.
        pub enum NeverRef<'r> {
            #[allow(dead_code)]
            Never(Never, std::marker::PhantomData<&'r ()>),
        }

        /// A statement of the shell `Database`: never made.
        pub enum NeverStatement<'q> {
            #[allow(dead_code)]
            Never(Never, std::marker::PhantomData<&'q ()>),
        }

        impl sqlx_core::row::Row for Never {
            type Database = $db;

            fn columns(&self) -> &[Never] {
                match *self {}
            }

            fn try_get_raw<I>(&self, _index: I) -> Result<NeverRef<'_>, sqlx::Error>
            where
                I: sqlx_core::column::ColumnIndex<Self>,
            {
                match *self {}
            }
        }

        impl sqlx_core::column::ColumnIndex<Never> for usize {
            fn index(&self, row: &Never) -> Result<usize, sqlx::Error> {
                match *row {}
            }
        }

        impl sqlx_core::column::ColumnIndex<Never> for &'_ str {
            fn index(&self, row: &Never) -> Result<usize, sqlx::Error> {
                match *row {}
            }
        }

        impl sqlx_core::column::Column for Never {
            type Database = $db;

            fn ordinal(&self) -> usize {
                match *self {}
            }

            fn name(&self) -> &str {
                match *self {}
            }

            fn type_info(&self) -> &sqlx_core::any::AnyTypeInfo {
                match *self {}
            }
        }

        impl sqlx_core::value::Value for Never {
            type Database = $db;

            fn as_ref(&self) -> NeverRef<'_> {
                match *self {}
            }

            fn type_info(&self) -> std::borrow::Cow<'_, sqlx_core::any::AnyTypeInfo> {
                match *self {}
            }

            fn is_null(&self) -> bool {
                match *self {}
            }
        }

        impl<'r> sqlx_core::value::ValueRef<'r> for NeverRef<'r> {
            type Database = $db;

            fn to_owned(&self) -> Never {
                match self {
                    NeverRef::Never(never, _) => match *never {},
                }
            }

            fn type_info(&self) -> std::borrow::Cow<'_, sqlx_core::any::AnyTypeInfo> {
                match self {
                    NeverRef::Never(never, _) => match *never {},
                }
            }

            fn is_null(&self) -> bool {
                match self {
                    NeverRef::Never(never, _) => match *never {},
                }
            }
        }

        impl<'q> sqlx_core::statement::Statement<'q> for NeverStatement<'q> {
            type Database = $db;

            fn to_owned(&self) -> NeverStatement<'static> {
                match self {
                    NeverStatement::Never(never, _) => match *never {},
                }
            }

            fn sql(&self) -> &str {
                match self {
                    NeverStatement::Never(never, _) => match *never {},
                }
            }

            fn parameters(
                &self,
            ) -> Option<sqlx_core::Either<&[sqlx_core::any::AnyTypeInfo], usize>> {
                match self {
                    NeverStatement::Never(never, _) => match *never {},
                }
            }

            fn columns(&self) -> &[Never] {
                match self {
                    NeverStatement::Never(never, _) => match *never {},
                }
            }

            sqlx_core::impl_statement_query!(ShellArguments<'_>);
        }
    };
}

pub(crate) use database_shell;
