//! `os_catalogue` and its one-row `os_catalogue_meta`: which iOS/iPadOS releases (version and build) exist for
//! which model, replaced as a whole by an operator or a refresh from Apple's feed.

use orchard_types::UnixTime;
use sqlx::any::AnyRow;

use crate::unit::Db;
use crate::{rows, Store, StoreError, UnitOfWork};

/// One release of one model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OsCatalogueEntry {
    /// Apple's product type, e.g. `iPad13,18`.
    pub product_type: String,
    pub os_version: String,
    pub build: String,
    /// Apple's posting date (yyyy-mm-dd) when the feed says.
    pub posted: Option<String>,
}

/// Where the catalogue came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OsCatalogueMeta {
    /// Grows with every replacement.
    pub revision: i64,
    /// `file`, `api` or the feed's URL.
    pub source: String,
    pub updated_at: UnixTime,
    pub updated_by: Option<String>,
}

fn entry(r: &AnyRow) -> Result<OsCatalogueEntry, StoreError> {
    Ok(OsCatalogueEntry {
        product_type: rows::text(r, "product_type")?,
        os_version: rows::text(r, "os_version")?,
        build: rows::text(r, "build")?,
        posted: rows::opt_text(r, "posted")?,
    })
}

impl Store {
    /// Replaces the whole catalogue in one transaction and bumps its revision; returns the new meta.
    pub async fn replace_os_catalogue(
        &self,
        entries: &[OsCatalogueEntry],
        source: &str,
        updated_by: Option<&str>,
        now: UnixTime,
    ) -> Result<OsCatalogueMeta, StoreError> {
        let mut unit = self.begin_unit().await?;
        sqlx::query("DELETE FROM os_catalogue")
            .execute(unit.conn()?)
            .await?;
        for e in entries {
            sqlx::query(
                "INSERT INTO os_catalogue (product_type, os_version, build, posted) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (product_type, os_version) DO UPDATE SET build = excluded.build, \
                 posted = excluded.posted",
            )
            .bind(e.product_type.as_str())
            .bind(e.os_version.as_str())
            .bind(e.build.as_str())
            .bind(e.posted.as_deref())
            .execute(unit.conn()?)
            .await?;
        }
        let row = sqlx::query(
            "INSERT INTO os_catalogue_meta (id, revision, source, updated_at, updated_by) \
             VALUES (1, 1, $1, $2, $3) ON CONFLICT (id) DO UPDATE SET \
             revision = os_catalogue_meta.revision + 1, source = excluded.source, \
             updated_at = excluded.updated_at, updated_by = excluded.updated_by \
             RETURNING revision",
        )
        .bind(source)
        .bind(now.0)
        .bind(updated_by)
        .fetch_one(unit.conn()?)
        .await?;
        let revision = rows::int(&row, "revision")?;
        unit.commit().await?;
        Ok(OsCatalogueMeta {
            revision,
            source: source.to_owned(),
            updated_at: now,
            updated_by: updated_by.map(str::to_owned),
        })
    }

    /// Where the catalogue came from; None while no catalogue was ever set.
    pub async fn os_catalogue_meta(&self) -> Result<Option<OsCatalogueMeta>, StoreError> {
        sqlx::query(
            "SELECT revision, source, updated_at, updated_by FROM os_catalogue_meta WHERE id = 1",
        )
        .fetch_optional(&self.pool)
        .await?
        .map(|r| {
            Ok(OsCatalogueMeta {
                revision: rows::int(&r, "revision")?,
                source: rows::text(&r, "source")?,
                updated_at: rows::time(&r, "updated_at")?,
                updated_by: rows::opt_text(&r, "updated_by")?,
            })
        })
        .transpose()
    }

    /// Every entry, by model and version.
    pub async fn os_catalogue(&self) -> Result<Vec<OsCatalogueEntry>, StoreError> {
        sqlx::query(
            "SELECT product_type, os_version, build, posted FROM os_catalogue \
             ORDER BY product_type, os_version",
        )
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(entry)
        .collect()
    }

    /// The releases of one model.
    pub async fn os_catalogue_for(
        &self,
        product_type: &str,
    ) -> Result<Vec<OsCatalogueEntry>, StoreError> {
        catalogue_for(&mut self.pooled().await?, product_type).await
    }
}

async fn catalogue_for(
    db: &mut impl Db,
    product_type: &str,
) -> Result<Vec<OsCatalogueEntry>, StoreError> {
    sqlx::query(
        "SELECT product_type, os_version, build, posted FROM os_catalogue WHERE product_type = $1",
    )
    .bind(product_type)
    .fetch_all(db.conn()?)
    .await?
    .iter()
    .map(entry)
    .collect()
}

impl UnitOfWork {
    /// The releases of one model, inside the unit.
    pub async fn os_catalogue_for(
        &mut self,
        product_type: &str,
    ) -> Result<Vec<OsCatalogueEntry>, StoreError> {
        catalogue_for(self, product_type).await
    }
}
