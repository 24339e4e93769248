//! orchard-store: every SQL statement of Orchard, over sqlx `Any` for SQLite and PostgreSQL.
//!
//! One implementation serves both databases: the schema is portable (STACK.md pitfall 7: TEXT ids, BIGINT unix
//! seconds, INTEGER 0/1 booleans, BLOB/BYTEA bytes, JSON as TEXT) and the dialect differences live in the two
//! migration folders. The only SQL that differs at run time is claiming the next command, where PostgreSQL
//! needs row locks and SQLite serialises writers anyway.
//!
//! Tenant data is read through a [`Scope`], so a query that forgets the tenant does not compile; a scope is made
//! only through the [`ScopeAuthority`] that comes with the opened database, and its filter becomes SQL in one
//! place (`sql::Sql::in_scope`).
//!
//! A use case that changes several rows runs them in one [`UnitOfWork`] (see `unit.rs`): it commits once or
//! not at all.

mod access;
mod apps;
mod backup;
mod commands;
mod declarative;
mod dep;
mod desired;
mod device;
mod drivers;
mod enrollment;
mod error;
#[cfg(feature = "fault-injection")]
mod fault;
mod jobs;
mod model;
mod osupdate;
mod postgres_driver;
mod push;
mod reporting;
mod rows;
mod scope;
mod server_keys;
mod sql;
mod sqlite_inline;
mod tenancy;
mod unit;
mod webhooks;

use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::migrate::Migrator;
use sqlx::{Any, AnyConnection, AnyPool, ConnectOptions, Connection, Executor, Transaction};

pub use access::api_tokens::{ApiTokenListing, PresentedToken};
pub use access::local_accounts::{LocalAccountRecord, LOCAL_ISSUER};
pub use access::users::{
    Membership, PendingLoginRecord, RoleMappingRecord, SessionRecord, UserLogin, UserRecord,
};
pub use apps::licences::{
    AppAssignmentOptions, DeviceAppLicence, LicenceOutcome, LicenceWork, PlannedAppCommand,
    WantedLicence,
};
pub use apps::tokens::{AppAssetRecord, AppsLocationState, AppsTokenRecord};
pub use backup::sqlite_database_file;
pub use commands::bulk_jobs::{BulkJobProgress, BulkJobRecord};
pub use commands::legacy::{LegacyCommand, LegacyCommandRow, LegacyUnlockToken, ResealedCommand};
pub use commands::queue::{IdlePoll, IdlePollClaim, QueuePolicy};
pub use declarative::channels::DdmChannelRecord;
pub use dep::sync::{DepDeviceFilter, DepDeviceRecord, DepTokenRecord, DepTokenUpload};
pub use dep::templates::{
    AssignOutcome, AssignResult, AssignStatus, DepAssignment, DepDeviceListing, DepListingFilter,
    DepSerialTemplate, DepTemplateRecord, DeviceSetup, DueAssignment,
};
pub use desired::assignments::{AssignmentRecord, AssignmentTarget};
pub use desired::groups::{
    DeviceGroupFacts, DeviceStanding, FactSections, GroupHistoryRecord, GroupKind,
    GroupMemberRecord, GroupRecord, GroupStanding,
};
pub use desired::profiles::{
    DeviceProfileRecord, ProfileCommand, ProfileRecord, ProfileSource, ProfileVersionRecord,
};
pub use desired::reconcile::{
    KnownDeviceProfile, PlannedProfileCommand, ReconcileDevice, ReconcileProfile,
};
pub use desired::shared_ipad::{SharedIpadDeviceState, SharedIpadPolicyRecord};
pub use device::device_search::{DeviceCounts, DeviceQuery, DeviceSort};
pub use device::devices::{IdentityStatus, RequestingDevice};
pub use drivers::install_drivers as install_sqlx_drivers;
pub use enrollment::identity::ScepTransaction;
pub use enrollment::renewal::{
    IdentityExpiryFigures, IdentityRenewal, RenewalCandidate, RenewalState,
};
pub use error::StoreError;
#[cfg(feature = "fault-injection")]
pub use fault::FaultInjector;
pub use jobs::runs::{JobClaim, JobRunRecord};
pub use model::{
    ApiToken, AuthenticateDevice, Channel, ChannelPushState, CommandBody, CommandRecord,
    CommandResultRecord, Device, DeviceBinding, DeviceFacts, DeviceGrantPurpose, DeviceRelease,
    EnrollmentLink, IdentityGrant, InventorySection, IssuedCertificate, NewCommand, Page,
    QueuedCommand, RecordOutcome, RepeatedFactsAnswer, ScepChallenge, Tenant, TokenUpdateOutcome,
    TokenUpdateRecord,
};
pub use osupdate::catalogue::{OsCatalogueEntry, OsCatalogueMeta};
pub use osupdate::policies::{DesiredRevisions, DeviceOsUpdateRecord, OsPolicyRecord};
pub use push::push_csr::PushCsrKeyRecord;
pub use push::queue_state::{PushCertificateRecord, PushResult, PushTarget};
pub use reporting::audit::{AuditEventRecord, AuditFilter};
pub use reporting::credentials::{
    CredentialWarningRecord, NewCredentialWarning, TenantIdentityExpiry,
};
pub use reporting::operations::{PoolFigures, QueueStatusFigures};
pub use reporting::usage::UsageSnapshotRecord;
pub use scope::{Scope, ScopeAuthority};
pub use server_keys::ServerKeyRecord;
pub use tenancy::maintenance::MaintenanceNoticeRecord;
pub use tenancy::tenant_details::TenantDetails;
pub use unit::UnitOfWork;
pub use webhooks::{
    ClaimedWebhookDelivery, WebhookAttemptEffect, WebhookAttemptLog, WebhookAttemptRecord,
    WebhookDeliveryRecord, WebhookEndpointChange, WebhookEndpointRecord, WebhookEventRecord,
};

static SQLITE_MIGRATOR: Migrator = sqlx::migrate!("../../migrations/sqlite");
static POSTGRES_MIGRATOR: Migrator = sqlx::migrate!("../../migrations/postgres");

/// How long a SQLite connection waits for the write lock before giving up.
const SQLITE_BUSY_TIMEOUT: Duration = sqlite_inline::BUSY_TIMEOUT;

/// Which database a [`Store`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// Picks the backend from the URL scheme.
    pub fn from_url(url: &str) -> Result<Backend, StoreError> {
        if url.starts_with("sqlite:") {
            Ok(Backend::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Backend::Postgres)
        } else {
            Err(StoreError::Database(sqlx::Error::Configuration(
                "database url must start with sqlite: or postgres://".into(),
            )))
        }
    }

    /// Connections a node keeps at most unless configured. SQLite has one writer at a time and readers gain
    /// nothing beyond the cores, while each SQLite handle costs its own page cache and statement cache (and,
    /// before Orchard's own driver, a worker thread and its malloc arena: 185 MiB peak with 10 connections
    /// against 136 MiB with 4 under S1's push-all to 50,000 iPads, the same time). Since the driver lends
    /// handles per statement (`sqlite_inline::InlineConnection`), this bounds the handles open at once; fewer
    /// are open when fewer statements run together. PostgreSQL serves each connection from a server process of
    /// its own.
    pub fn default_pool_size(self) -> u32 {
        match self {
            Backend::Sqlite => 4,
            Backend::Postgres => 10,
        }
    }
}

/// The database behind Orchard. Cheap to clone: the connection pool is shared.
#[derive(Clone, Debug)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    /// SQLite only: the units of this process take turns here before they take a connection. SQLite has
    /// one writer; a unit waiting inside `BEGIN IMMEDIATE` would hold a pooled connection while it waits for
    /// the lock, so a few waiting units could leave none for reads. Waiting here holds nothing and wakes
    /// as soon as the unit before commits. Other processes (the CLI) still meet the busy timeout.
    write_gate: Option<std::sync::Arc<tokio::sync::Semaphore>>,
    #[cfg(feature = "fault-injection")]
    faults: std::sync::Arc<FaultInjector>,
}

impl Store {
    /// Opens the database and brings its schema up to date; with it comes the [`ScopeAuthority`] over its
    /// tenants (whoever opens the database holds all of them), which the caller hands to orchard-core.
    ///
    /// `sqlite:///abs/path/orchard.db` or `sqlite://relative.db` (created if missing; WAL, synchronous NORMAL,
    /// busy_timeout 5 s, foreign keys on) or `postgres://...`; runs the embedded migrations of that backend.
    pub async fn connect(url: &str) -> Result<(Store, ScopeAuthority), StoreError> {
        Self::connect_with_pool_size(url, Backend::from_url(url)?.default_pool_size()).await
    }

    /// Like [`Store::connect`] with an explicit maximum number of pooled connections.
    pub async fn connect_with_pool_size(
        url: &str,
        max_connections: u32,
    ) -> Result<(Store, ScopeAuthority), StoreError> {
        drivers::install_drivers();
        let backend = Backend::from_url(url)?;
        // One process at a time opens and migrates a SQLite file (a server starting while `orchard token create`
        // runs on a fresh data directory, say): sqlx's SQLite migrator takes no lock, so two would both apply
        // the same migration and one fail. On PostgreSQL the migrator holds an advisory lock itself, so of
        // several nodes starting together one migrates and the others wait (tests/migration_lock.rs).
        let migration_lock = match backend {
            Backend::Sqlite => sqlite_migration_lock(url).await?,
            Backend::Postgres => None,
        };
        let pool = match backend {
            Backend::Sqlite => connect_sqlite(url, max_connections).await?,
            Backend::Postgres => connect_postgres(url, max_connections).await?,
        };
        // SQLite migrates on a connection of sqlx's own driver (see `migrate_sqlite`).
        let migrator = match backend {
            Backend::Sqlite => {
                migrate_sqlite(url).await?;
                None
            }
            Backend::Postgres => Some(&POSTGRES_MIGRATOR),
        };
        if let Some(migrator) = migrator {
            migrator.run(&pool).await?;
        }
        drop(migration_lock);
        Ok((
            Store {
                pool,
                backend,
                write_gate: write_gate(backend),
                #[cfg(feature = "fault-injection")]
                faults: Default::default(),
            },
            ScopeAuthority::of_opened_database(),
        ))
    }

    /// Opens the database as it is, without bringing its schema up to date: for `orchard backup`, which copies
    /// the database as it stands and must not migrate it under a running server of another version. No
    /// [`ScopeAuthority`] comes with it: such a store reads no tenant data.
    pub async fn connect_without_migrating(url: &str) -> Result<Store, StoreError> {
        drivers::install_drivers();
        let backend = Backend::from_url(url)?;
        let pool = match backend {
            Backend::Sqlite => connect_sqlite(url, 2).await?,
            Backend::Postgres => connect_postgres(url, 2).await?,
        };
        Ok(Store {
            pool,
            backend,
            write_gate: write_gate(backend),
            #[cfg(feature = "fault-injection")]
            faults: Default::default(),
        })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The fault injector every unit of work of this store (and its clones) consults.
    #[cfg(feature = "fault-injection")]
    pub fn faults(&self) -> &FaultInjector {
        &self.faults
    }

    /// Answers when the database does (one round trip on a pooled connection): readiness for `/readyz`.
    pub async fn ping(&self) -> Result<(), StoreError> {
        let mut conn = self.pool.acquire().await?;
        check_alive(&mut conn).await?;
        Ok(())
    }

    /// Closes every pooled connection (waits for those in use to be returned).
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// A transaction that will write. On SQLite it takes the write lock up front (`BEGIN IMMEDIATE`): a
    /// deferred transaction that reads first and writes later fails with SQLITE_BUSY instead of waiting when
    /// another connection wrote in between.
    /// [`Store::begin_write`] after this process's earlier units (SQLite: see `write_gate`). The permit is
    /// held until the transaction ends. Waiting longer than SQLite's busy timeout fails as a busy database
    /// would.
    pub(crate) async fn begin_gated_write(
        &self,
    ) -> Result<
        (
            Transaction<'static, Any>,
            Option<tokio::sync::OwnedSemaphorePermit>,
        ),
        StoreError,
    > {
        let permit = match &self.write_gate {
            None => None,
            Some(gate) => Some(
                tokio::time::timeout(SQLITE_BUSY_TIMEOUT, gate.clone().acquire_owned())
                    .await
                    .map_err(|_| StoreError::Database(sqlx::Error::PoolTimedOut))?
                    .map_err(|_| StoreError::Database(sqlx::Error::PoolClosed))?,
            ),
        };
        Ok((self.begin_write().await?, permit))
    }

    pub(crate) async fn begin_write(&self) -> Result<Transaction<'static, Any>, StoreError> {
        Ok(match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => self.pool.begin().await?,
        })
    }
}

/// One writer at a time on SQLite (see `Store::write_gate`); PostgreSQL's units run side by side.
fn write_gate(backend: Backend) -> Option<std::sync::Arc<tokio::sync::Semaphore>> {
    match backend {
        Backend::Sqlite => Some(std::sync::Arc::new(tokio::sync::Semaphore::new(1))),
        Backend::Postgres => None,
    }
}

/// Adds `mode=rwc` (create the file if missing) unless the URL chose a mode itself.
fn sqlite_url_with_create(url: &str) -> String {
    let has_mode = url
        .split_once('?')
        .map(|(_, query)| query.split('&').any(|pair| pair.starts_with("mode=")))
        .unwrap_or(false);
    if has_mode {
        url.to_owned()
    } else if url.contains('?') {
        format!("{url}&mode=rwc")
    } else {
        format!("{url}?mode=rwc")
    }
}

/// The database file a SQLite URL names, unless it is an in-memory database.
fn sqlite_file(url: &str) -> Option<std::path::PathBuf> {
    let (rest, query) = match url.split_once('?') {
        Some((rest, query)) => (rest, query),
        None => (url, ""),
    };
    let path = rest
        .strip_prefix("sqlite://")
        .or_else(|| rest.strip_prefix("sqlite:"))?;
    let in_memory =
        path.is_empty() || path == ":memory:" || query.split('&').any(|pair| pair == "mode=memory");
    (!in_memory).then(|| std::path::PathBuf::from(path))
}

/// The database holds sealed secrets, password hashes and the audit log: its files are the owner's alone.
/// SQLite creates `-wal` and `-shm` with the main file's mode, so creating that one 0600 (and tightening it and
/// any existing companions, left by an older version) covers all three.
fn restrict_sqlite_files(url: &str) -> Result<(), StoreError> {
    #[cfg(unix)]
    if let Some(path) = sqlite_file(url) {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        let io = |e: std::io::Error| {
            StoreError::Database(sqlx::Error::Configuration(
                format!("preparing {}: {e}", path.display()).into(),
            ))
        };
        if !path.exists()
            && path
                .parent()
                .is_some_and(|dir| dir.as_os_str().is_empty() || dir.is_dir())
        {
            // An empty file is an empty SQLite database.
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .open(&path)
                .map_err(io)?;
        }
        let mut companions = path.clone().into_os_string();
        for file in [
            path.clone(),
            {
                let mut wal = companions.clone();
                wal.push("-wal");
                wal.into()
            },
            {
                companions.push("-shm");
                companions.into()
            },
        ] {
            // Another node's last connection may delete the WAL and shared-memory files at any moment.
            match std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                outcome => outcome.map_err(io)?,
            }
        }
    }
    Ok(())
}

/// An exclusive lock on `<database file>.migrate-lock` (an advisory file lock, released when the file is
/// dropped or the process dies), taken on a blocking thread; `None` for an in-memory database.
async fn sqlite_migration_lock(url: &str) -> Result<Option<std::fs::File>, StoreError> {
    let Some(path) = sqlite_file(url) else {
        return Ok(None);
    };
    let mut lock_path = path.into_os_string();
    lock_path.push(".migrate-lock");
    let lock_path = std::path::PathBuf::from(lock_path);
    let failed = |e: String| {
        StoreError::Database(sqlx::Error::Configuration(
            format!("locking {} for migrations: {e}", lock_path.display()).into(),
        ))
    };
    let file = {
        let lock_path = lock_path.clone();
        tokio::task::spawn_blocking(move || -> std::io::Result<std::fs::File> {
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create(true).truncate(false);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            let file = options.open(&lock_path)?;
            file.lock()?;
            Ok(file)
        })
        .await
        .map_err(|e| failed(e.to_string()))?
        .map_err(|e| failed(e.to_string()))?
    };
    Ok(Some(file))
}

/// Brings a SQLite database's schema up to date on a connection of sqlx's own SQLite driver: Orchard's driver
/// (`sqlite_inline`) runs statements but not sqlx's migrator.
async fn migrate_sqlite(url: &str) -> Result<(), StoreError> {
    use std::str::FromStr;
    let options = sqlx::sqlite::SqliteConnectOptions::from_str(&sqlite_url_with_create(url))?
        .busy_timeout(SQLITE_BUSY_TIMEOUT)
        .foreign_keys(true);
    let pool = sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await?;
    SQLITE_MIGRATOR.run(&pool).await?;
    pool.close().await;
    Ok(())
}

/// How long a pooled PostgreSQL connection may sit unused before it is checked (a round trip) when taken again.
const IDLE_BEFORE_CHECK: std::time::Duration = std::time::Duration::from_secs(1);

/// One round trip through the connection: an error when the database or the way to it is gone. Not
/// `Connection::ping`, which for Orchard's PostgreSQL driver only settles the connection (`postgres_driver`).
pub(crate) async fn check_alive(conn: &mut AnyConnection) -> Result<(), sqlx::Error> {
    conn.execute("SELECT 1").await.map(drop)
}

async fn connect_postgres(url: &str, max_connections: u32) -> Result<AnyPool, StoreError> {
    Ok(AnyPoolOptions::new()
        .max_connections(max_connections.max(1))
        // sqlx would ping a connection (a round trip) each time it is taken from the pool and each time one
        // goes back: two round trips for every unit and lookup of a device session. The return only settles the
        // connection (Orchard's driver, `postgres_driver`), and a connection in steady use proved itself alive
        // with its last statement; only one that sat idle since (where a database restart or a dropped network
        // finds it) is checked before use, and a broken one is dropped and another taken. One dropped less than
        // a second after its last use fails its first statement instead, as one dropped in use always does:
        // that request fails (the client tries again) and the connection is closed.
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for >= IDLE_BEFORE_CHECK {
                    check_alive(conn).await?;
                }
                Ok(true)
            })
        })
        .after_connect(|conn, _meta| {
            Box::pin(async move {
                // PostgreSQL's default random_page_cost (4) prices an index probe as a read from a spinning
                // disk. Orchard's working set is cached, and at that price the planner answered a lookup of 500
                // devices by id (`id IN (…)`, how the store reads a batch) with a scan of the whole devices
                // table: 12 ms against 3 ms through the primary key at 55,000 devices. 1.1 is the usual value
                // for data in memory or on SSD; it is set for Orchard's own sessions only.
                conn.execute("SET random_page_cost = 1.1").await?;
                Ok(())
            })
        })
        .connect(url)
        .await?)
}

async fn connect_sqlite(url: &str, max_connections: u32) -> Result<AnyPool, StoreError> {
    restrict_sqlite_files(url)?;
    let url = sqlite_url_with_create(url);
    let options: AnyConnectOptions = url.parse()?;
    // Switching to WAL needs an exclusive lock that busy_timeout does not wait for, so it is done once on a
    // lone connection before the pool opens several; WAL then persists in the file.
    let mut first = options.connect().await?;
    first.execute("PRAGMA journal_mode = WAL").await?;
    first.close().await?;

    let pool = AnyPoolOptions::new()
        .max_connections(max_connections.max(1))
        // A connection to a local file does not go stale: no ping before handing one out (with sqlx's own
        // driver it was a round trip to the connection's worker thread on every acquire).
        .test_before_acquire(false)
        // Foreign keys and synchronous NORMAL are set by the driver on every handle it opens
        // (`sqlite_inline::Handle::open`); no busy_timeout: the driver waits for another writer's lock itself,
        // without blocking the thread (`sqlite_inline::BUSY_TIMEOUT`).
        .connect_with(options)
        .await?;
    Ok(pool)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_files_are_found_in_urls_and_memory_databases_have_none() {
        use std::path::PathBuf;
        assert_eq!(
            sqlite_file("sqlite:///var/lib/orchard/orchard.db"),
            Some(PathBuf::from("/var/lib/orchard/orchard.db"))
        );
        assert_eq!(
            sqlite_file("sqlite://a.db?mode=rwc"),
            Some(PathBuf::from("a.db"))
        );
        assert_eq!(sqlite_file("sqlite:a.db"), Some(PathBuf::from("a.db")));
        assert_eq!(sqlite_file("sqlite::memory:"), None);
        assert_eq!(sqlite_file("sqlite://x?mode=memory&cache=shared"), None);
    }

    /// Units waiting for SQLite's one writer wait at the store's gate, holding no connection: with a pool of
    /// two, a unit that reads outside itself while three more units queue behind it still gets a connection,
    /// and every unit then runs. Without the gate a waiting unit sat in `BEGIN IMMEDIATE` on the second
    /// connection, the read waited for it, and that unit failed with "database is locked" after the busy
    /// timeout while the first held the lock.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn units_waiting_for_the_sqlite_writer_hold_no_connection() {
        use crate::unit::Db;
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("orchard.db").display());
        let (store, _) = Store::connect_with_pool_size(&url, 2).await.unwrap();
        sqlx::query("CREATE TABLE gate_probe (x INTEGER)")
            .execute(&store.pool)
            .await
            .unwrap();
        let mut first = store.begin_unit().await.unwrap();
        sqlx::query("INSERT INTO gate_probe (x) VALUES (0)")
            .execute(first.conn().unwrap())
            .await
            .unwrap();
        let (started_tx, mut started) = tokio::sync::mpsc::unbounded_channel();
        let waiting: Vec<_> = (1..=3)
            .map(|x| {
                let store = store.clone();
                let started_tx = started_tx.clone();
                tokio::spawn(async move {
                    started_tx.send(()).unwrap();
                    let mut unit = store.begin_unit().await?;
                    sqlx::query("INSERT INTO gate_probe (x) VALUES ($1)")
                        .bind(x)
                        .execute(unit.conn()?)
                        .await?;
                    unit.commit().await
                })
            })
            .collect();
        for _ in 0..3 {
            started.recv().await.unwrap();
        }
        // Let the waiting units reach the gate (or, without it, a connection and SQLite's busy handler).
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        // A read outside the first unit while it holds the writer.
        let before: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM gate_probe")
            .fetch_one(&store.pool)
            .await
            .unwrap();
        assert_eq!(before, 0, "the first unit has not committed");
        first.commit().await.unwrap();
        for unit in waiting {
            unit.await
                .unwrap()
                .expect("a waiting unit runs after the first");
        }
        let after: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM gate_probe")
            .fetch_one(&store.pool)
            .await
            .unwrap();
        assert_eq!(after, 4);
        store.close().await;
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn a_new_sqlite_database_and_its_wal_are_the_owners_alone() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("orchard.db");
        let (store, _) = Store::connect(&format!("sqlite://{}", db.display()))
            .await
            .unwrap();
        // A write makes sure the WAL and shared-memory files exist while the pool is open.
        sqlx::query("CREATE TABLE mode_probe (x INTEGER)")
            .execute(&store.pool)
            .await
            .unwrap();
        for suffix in ["", "-wal", "-shm"] {
            let file = dir.path().join(format!("orchard.db{suffix}"));
            let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", file.display());
        }
        store.close().await;
    }

    #[test]
    fn sqlite_urls_get_create_mode_once() {
        assert_eq!(
            sqlite_url_with_create("sqlite://a.db"),
            "sqlite://a.db?mode=rwc"
        );
        assert_eq!(
            sqlite_url_with_create("sqlite://a.db?cache=shared"),
            "sqlite://a.db?cache=shared&mode=rwc"
        );
        assert_eq!(
            sqlite_url_with_create("sqlite://a.db?mode=ro"),
            "sqlite://a.db?mode=ro"
        );
    }

    #[test]
    fn backend_follows_the_scheme() {
        assert_eq!(
            Backend::from_url("sqlite://x.db").ok(),
            Some(Backend::Sqlite)
        );
        assert_eq!(
            Backend::from_url("postgres://u@h/db").ok(),
            Some(Backend::Postgres)
        );
        assert_eq!(
            Backend::from_url("postgresql://u@h/db").ok(),
            Some(Backend::Postgres)
        );
        assert!(Backend::from_url("mysql://u@h/db").is_err());
    }
}
