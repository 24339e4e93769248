//! What backups need from the database: a consistent copy of a SQLite database taken while the server runs
//! (`VACUUM INTO` reads one snapshot in one read transaction, so the server's writers go on meanwhile), and the
//! schema version (the newest migration applied) a backup records so a restore can refuse a database newer than
//! its binary. PostgreSQL is backed up with its own tools (pg_dump, pg_restore).

use std::path::{Path, PathBuf};

use crate::{rows, Backend, Store, StoreError, POSTGRES_MIGRATOR, SQLITE_MIGRATOR};

impl Store {
    /// Writes a consistent copy of this SQLite database to `path`, which must not exist yet (SQLite refuses to
    /// overwrite). The copy is a complete database on its own (no WAL), compacted.
    pub async fn copy_sqlite_into(&self, path: &Path) -> Result<(), StoreError> {
        if self.backend != Backend::Sqlite {
            return Err(StoreError::Database(sqlx::Error::Configuration(
                "only a SQLite database is copied by orchard; back PostgreSQL up with pg_dump"
                    .into(),
            )));
        }
        let target = path.to_str().ok_or_else(|| {
            StoreError::Database(sqlx::Error::Configuration(
                format!("the backup path {} is not UTF-8", path.display()).into(),
            ))
        })?;
        sqlx::query("VACUUM INTO $1")
            .bind(target)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The newest migration applied to this database.
    pub async fn schema_version(&self) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT MAX(version) AS version FROM _sqlx_migrations")
            .fetch_one(&self.pool)
            .await?;
        Ok(rows::opt_int(&row, "version")?.unwrap_or(0))
    }

    /// The newest migration applied to the database at `url`, read without connecting a store (which would
    /// migrate it): `None` when the database has no schema yet (empty, or a database pg_restore did not fill).
    pub async fn schema_version_without_migrating(url: &str) -> Result<Option<i64>, StoreError> {
        use sqlx::Connection;
        crate::drivers::install_drivers();
        let backend = Backend::from_url(url)?;
        let mut conn = sqlx::AnyConnection::connect(url).await?;
        let exists = match backend {
            Backend::Sqlite => {
                "SELECT COUNT(*) AS n FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'"
            }
            Backend::Postgres => {
                "SELECT COUNT(*) AS n FROM information_schema.tables \
                 WHERE table_name = '_sqlx_migrations' AND table_schema = current_schema()"
            }
        };
        let row = sqlx::query(exists).fetch_one(&mut conn).await?;
        let version = if rows::int(&row, "n")? == 0 {
            None
        } else {
            let row = sqlx::query("SELECT MAX(version) AS version FROM _sqlx_migrations")
                .fetch_one(&mut conn)
                .await?;
            Some(rows::opt_int(&row, "version")?.unwrap_or(0))
        };
        conn.close().await?;
        Ok(version)
    }

    /// The newest migration this build knows for `backend`: what [`Store::connect`] brings a database up to.
    pub fn known_schema_version(backend: Backend) -> i64 {
        let migrator = match backend {
            Backend::Sqlite => &SQLITE_MIGRATOR,
            Backend::Postgres => &POSTGRES_MIGRATOR,
        };
        migrator.iter().map(|m| m.version).max().unwrap_or(0)
    }
}

/// The file a `sqlite:` URL names (`None` for an in-memory database or another backend's URL).
pub fn sqlite_database_file(url: &str) -> Option<PathBuf> {
    crate::sqlite_file(url)
}
