//! A fresh database for each test: SQLite in a temp dir, or a new PostgreSQL database on the server named by
//! `ORCHARD_TEST_POSTGRES_URL`, dropped when the test ends (also when it fails).
//!
//! PostgreSQL is never skipped silently: without the variable a PostgreSQL test fails, unless
//! `ORCHARD_TEST_SKIP_POSTGRES=1` says to skip it on purpose.

use std::future::Future;
use std::path::Path;

use anyhow::{bail, Context, Result};
use orchard_store::{Backend, ScopeAuthority, Store};
use sqlx::{AnyConnection, Connection, Executor};

/// The PostgreSQL server tests make their databases on (any database of it, e.g. `…/postgres`).
pub const POSTGRES_URL_VAR: &str = "ORCHARD_TEST_POSTGRES_URL";
/// `1`: skip the PostgreSQL half of the tests on purpose (they then pass without running).
pub const SKIP_POSTGRES_VAR: &str = "ORCHARD_TEST_SKIP_POSTGRES";

/// The SQLite file inside [`TestDatabase::dir`]: the name `orchard serve --data-dir` uses, so the binary
/// started on that directory opens this very database without `--database-url`.
const SQLITE_FILE: &str = "orchard.db";

/// A database of its own for one test. Removed when dropped: the temp dir of SQLite, or the PostgreSQL
/// database (`DROP DATABASE … WITH (FORCE)`, so connections still open do not keep it).
pub struct TestDatabase {
    backend: Backend,
    url: String,
    postgres: Option<PostgresDatabase>,
    /// Holds the SQLite file; on both backends the place for anything else the test keeps on disk.
    dir: tempfile::TempDir,
}

/// A PostgreSQL database made for one test, dropped with it.
struct PostgresDatabase {
    admin_url: String,
    name: String,
}

impl TestDatabase {
    /// A fresh database of `backend`; `None` when PostgreSQL is skipped on purpose.
    pub async fn create(backend: Backend) -> Result<Option<TestDatabase>> {
        let dir = tempfile::tempdir().context("temp dir for the test database")?;
        match backend {
            Backend::Sqlite => {
                let url = format!("sqlite://{}", dir.path().join(SQLITE_FILE).display());
                Ok(Some(TestDatabase {
                    backend,
                    url,
                    postgres: None,
                    dir,
                }))
            }
            Backend::Postgres => {
                let Some(admin_url) = postgres_admin_url()? else {
                    eprintln!("{SKIP_POSTGRES_VAR}=1: skipping the PostgreSQL run");
                    return Ok(None);
                };
                Self::create_postgres_on(&admin_url).await.map(Some)
            }
        }
    }

    /// A fresh database on the PostgreSQL server of `admin_url` (any database of it): a private cluster of one
    /// test, say, instead of the shared one of `ORCHARD_TEST_POSTGRES_URL`.
    pub async fn create_postgres_on(admin_url: &str) -> Result<TestDatabase> {
        let dir = tempfile::tempdir().context("temp dir for the test database")?;
        let name = format!("orchard_t_{}", uuid::Uuid::new_v4().simple());
        orchard_store::install_sqlx_drivers();
        let mut admin = AnyConnection::connect(admin_url)
            .await
            .with_context(|| format!("connecting to {admin_url}"))?;
        admin
            .execute(format!("CREATE DATABASE {name}").as_str())
            .await
            .with_context(|| format!("creating the test database {name}"))?;
        admin.close().await?;
        let url = url_with_database(admin_url, &name)?;
        Ok(TestDatabase {
            backend: Backend::Postgres,
            url,
            postgres: Some(PostgresDatabase {
                admin_url: admin_url.to_owned(),
                name,
            }),
            dir,
        })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The database's URL (`sqlite://…` or `postgres://…`).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A temp dir that lives as long as the database. On SQLite it holds the database file, so it is also the
    /// data directory of an `orchard` binary started on this database.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// What `--database-url` the binary needs: none on SQLite, where the database is the binary's default file in
    /// [`dir`](Self::dir); the database's URL on PostgreSQL.
    pub fn binary_database_url(&self) -> Option<String> {
        self.postgres.as_ref().map(|_| self.url.clone())
    }

    /// The store on this database (migrations run on first connect), with the [`ScopeAuthority`] that comes
    /// with every opened database: tests hand it to `Orchard::new` or `LocalBootstrap`, or choose scopes with it.
    pub async fn store(&self) -> Result<(Store, ScopeAuthority)> {
        let (store, scopes) = Store::connect(&self.url)
            .await
            .with_context(|| format!("opening the test database {}", self.url))?;
        if store.backend() != self.backend {
            bail!(
                "the store opened {:?}, not {:?}",
                store.backend(),
                self.backend
            );
        }
        Ok((store, scopes))
    }

    /// A plain connection, for the checks that must go around the store (append-only tables, expired tokens).
    pub async fn connect(&self) -> Result<AnyConnection> {
        orchard_store::install_sqlx_drivers();
        AnyConnection::connect(&self.url)
            .await
            .with_context(|| format!("connecting to the test database {}", self.url))
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let Some(PostgresDatabase { admin_url, name }) = self.postgres.take() else {
            return;
        };
        // Drop may run inside the test's runtime (or while a failed test unwinds): the DROP runs on a thread of
        // its own with a small runtime, and the test waits for it so no database outlives its test.
        let dropped = std::thread::spawn(move || -> Result<()> {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async {
                orchard_store::install_sqlx_drivers();
                let mut admin = AnyConnection::connect(&admin_url).await?;
                admin
                    .execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str())
                    .await?;
                admin.close().await?;
                Ok(())
            })
        })
        .join();
        match dropped {
            Ok(Ok(())) => {}
            // A leftover database is harmless (its name is unique); say so rather than fail a test that passed.
            Ok(Err(e)) => eprintln!("could not drop a test database: {e:#}"),
            Err(_) => eprintln!("could not drop a test database: the cleanup thread panicked"),
        }
    }
}

/// `ORCHARD_TEST_POSTGRES_URL`, or `None` when PostgreSQL is skipped on purpose; an error when it is missing.
fn postgres_admin_url() -> Result<Option<String>> {
    match std::env::var(POSTGRES_URL_VAR) {
        Ok(url) if !url.trim().is_empty() => Ok(Some(url)),
        _ if std::env::var(SKIP_POSTGRES_VAR).as_deref() == Ok("1") => Ok(None),
        _ => bail!(
            "{POSTGRES_URL_VAR} is not set (e.g. postgres://orchard:orchard@127.0.0.1:5432/postgres, see \
             .ci/postgres-setup.sh; scripts/test.sh sets it); set {SKIP_POSTGRES_VAR}=1 to skip PostgreSQL on purpose"
        ),
    }
}

/// The admin URL with its database name replaced (query parameters kept).
fn url_with_database(admin_url: &str, database: &str) -> Result<String> {
    let (base, query) = match admin_url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (admin_url, None),
    };
    let (scheme, rest) = base
        .split_once("://")
        .with_context(|| format!("{POSTGRES_URL_VAR} is not a URL"))?;
    let authority = rest.split('/').next().unwrap_or_default();
    let mut url = format!("{scheme}://{authority}/{database}");
    if let Some(query) = query {
        url.push('?');
        url.push_str(query);
    }
    Ok(url)
}

/// Runs `scenario` with a fresh database of `backend`, which it owns (and so drops, removing the database, when
/// it ends). Returns without running it when PostgreSQL is skipped on purpose; panics when no database can be
/// made.
pub async fn with_database<F, Fut>(backend: Backend, scenario: F)
where
    F: FnOnce(TestDatabase) -> Fut,
    Fut: Future<Output = ()>,
{
    let database = TestDatabase::create(backend)
        .await
        .unwrap_or_else(|e| panic!("no {backend:?} test database: {e:#}"));
    if let Some(database) = database {
        scenario(database).await;
    }
}

/// Runs `check` with the store on a fresh database of `backend` and its [`ScopeAuthority`]; closes the store and
/// removes the database afterwards, also when the check fails. Skipped like [`with_database`].
pub async fn with_store<F, Fut>(backend: Backend, check: F)
where
    F: FnOnce(Store, ScopeAuthority) -> Fut,
    Fut: Future<Output = ()>,
{
    with_database(backend, |database| async move {
        let (store, scopes) = database.store().await.unwrap_or_else(|e| panic!("{e:#}"));
        check(store.clone(), scopes).await;
        store.close().await;
        drop(database);
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::url_with_database;

    #[test]
    fn the_database_name_is_replaced_and_parameters_kept() {
        assert_eq!(
            url_with_database(
                "postgres://u:p@127.0.0.1:5432/postgres?sslmode=disable",
                "t1"
            )
            .unwrap(),
            "postgres://u:p@127.0.0.1:5432/t1?sslmode=disable"
        );
        assert_eq!(
            url_with_database("postgres://u@db", "t2").unwrap(),
            "postgres://u@db/t2"
        );
        assert!(url_with_database("not a url", "t3").is_err());
    }
}
