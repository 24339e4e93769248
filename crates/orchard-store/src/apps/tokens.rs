//! `vpp_tokens` and `vpp_assets`. A token upload (and a renewal for another location, which drops the old
//! location's apps) and an asset sync (every app of the location and the token's sync state) each commit once.

use orchard_types::{TenantId, UnixTime};
use sqlx::any::AnyRow;

use crate::sql::Sql;
use crate::unit::Db;
use crate::{rows, Scope, Store, StoreError};

/// A tenant's content token and what Orchard last learnt about its location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppsTokenRecord {
    pub tenant_id: TenantId,
    /// The token sealed with the data key (context `vpp_tokens:{tenant}`).
    pub token_sealed: Vec<u8>,
    pub org_name: String,
    pub location_name: Option<String>,
    pub location_uid: Option<String>,
    pub expires_at: UnixTime,
    pub claim_state: String,
    pub other_mdm_name: Option<String>,
    pub last_sync_at: Option<UnixTime>,
    pub last_error: Option<String>,
    pub uploaded_at: UnixTime,
    pub uploaded_by: Option<String>,
}

/// What a check of the location found (client config at Apple).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppsLocationState {
    pub claim_state: String,
    pub other_mdm_name: Option<String>,
    pub location_name: Option<String>,
    pub location_uid: Option<String>,
    pub expires_at: Option<UnixTime>,
    pub last_error: Option<String>,
}

/// One app of a tenant's location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppAssetRecord {
    pub adam_id: String,
    pub pricing_param: String,
    pub name: Option<String>,
    pub total_count: i64,
    pub assigned_count: i64,
    pub available_count: i64,
    pub device_assignable: bool,
    pub synced_at: UnixTime,
}

const TOKEN_COLUMNS: &str =
    "tenant_id, token_sealed, org_name, location_name, location_uid, expires_at, \
    claim_state, other_mdm_name, last_sync_at, last_error, uploaded_at, uploaded_by";

fn token(row: &AnyRow) -> Result<AppsTokenRecord, StoreError> {
    Ok(AppsTokenRecord {
        tenant_id: rows::tenant_id(row, "tenant_id")?,
        token_sealed: rows::bytes(row, "token_sealed")?,
        org_name: rows::text(row, "org_name")?,
        location_name: rows::opt_text(row, "location_name")?,
        location_uid: rows::opt_text(row, "location_uid")?,
        expires_at: rows::time(row, "expires_at")?,
        claim_state: rows::text(row, "claim_state")?,
        other_mdm_name: rows::opt_text(row, "other_mdm_name")?,
        last_sync_at: rows::opt_time(row, "last_sync_at")?,
        last_error: rows::opt_text(row, "last_error")?,
        uploaded_at: rows::time(row, "uploaded_at")?,
        uploaded_by: rows::opt_text(row, "uploaded_by")?,
    })
}

fn asset(row: &AnyRow) -> Result<AppAssetRecord, StoreError> {
    Ok(AppAssetRecord {
        adam_id: rows::text(row, "adam_id")?,
        pricing_param: rows::text(row, "pricing_param")?,
        name: rows::opt_text(row, "name")?,
        total_count: rows::int(row, "total_count")?,
        assigned_count: rows::int(row, "assigned_count")?,
        available_count: rows::int(row, "available_count")?,
        device_assignable: rows::int(row, "device_assignable")? != 0,
        synced_at: rows::time(row, "synced_at")?,
    })
}

impl Store {
    /// Stores a tenant's token (first upload or renewal). When the new token is for another location than the
    /// stored one (`other_location`), the old location's apps go in the same transaction.
    pub async fn put_apps_token(
        &self,
        r: &AppsTokenRecord,
        other_location: bool,
    ) -> Result<(), StoreError> {
        let mut unit = self.begin_unit().await?;
        if other_location {
            sqlx::query("DELETE FROM vpp_assets WHERE tenant_id = $1")
                .bind(r.tenant_id.to_string())
                .execute(unit.conn()?)
                .await?;
        }
        sqlx::query(&format!(
            "INSERT INTO vpp_tokens ({TOKEN_COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) \
             ON CONFLICT (tenant_id) DO UPDATE SET token_sealed = excluded.token_sealed, \
             org_name = excluded.org_name, location_name = excluded.location_name, \
             location_uid = excluded.location_uid, expires_at = excluded.expires_at, \
             claim_state = excluded.claim_state, other_mdm_name = excluded.other_mdm_name, \
             last_sync_at = excluded.last_sync_at, last_error = excluded.last_error, \
             uploaded_at = excluded.uploaded_at, uploaded_by = excluded.uploaded_by"
        ))
        .bind(r.tenant_id.to_string())
        .bind(r.token_sealed.as_slice())
        .bind(r.org_name.as_str())
        .bind(r.location_name.as_deref())
        .bind(r.location_uid.as_deref())
        .bind(r.expires_at.0)
        .bind(r.claim_state.as_str())
        .bind(r.other_mdm_name.as_deref())
        .bind(r.last_sync_at.map(|t| t.0))
        .bind(r.last_error.as_deref())
        .bind(r.uploaded_at.0)
        .bind(r.uploaded_by.as_deref())
        .execute(unit.conn()?)
        .await?;
        unit.commit().await
    }

    /// The tenant's token, if it is in the scope.
    pub async fn apps_token(
        &self,
        scope: Scope,
        tenant: TenantId,
    ) -> Result<Option<AppsTokenRecord>, StoreError> {
        let mut sql = Sql::new(&format!(
            "SELECT {TOKEN_COLUMNS} FROM vpp_tokens WHERE tenant_id = "
        ));
        sql.bind(tenant).in_scope("tenant_id", scope);
        sql.query()
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(token)
            .transpose()
    }

    /// Every tenant's token (the background sync, acting as the system).
    pub async fn list_apps_tokens(&self) -> Result<Vec<AppsTokenRecord>, StoreError> {
        sqlx::query(&format!(
            "SELECT {TOKEN_COLUMNS} FROM vpp_tokens ORDER BY tenant_id"
        ))
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(token)
        .collect()
    }

    /// Records what a check of the location found (claim, name, expiry, error).
    pub async fn record_apps_location(
        &self,
        tenant: TenantId,
        state: &AppsLocationState,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE vpp_tokens SET claim_state = $2, other_mdm_name = $3, \
             location_name = COALESCE($4, location_name), location_uid = COALESCE($5, location_uid), \
             expires_at = COALESCE($6, expires_at), last_error = $7 WHERE tenant_id = $1",
        )
        .bind(tenant.to_string())
        .bind(state.claim_state.as_str())
        .bind(state.other_mdm_name.as_deref())
        .bind(state.location_name.as_deref())
        .bind(state.location_uid.as_deref())
        .bind(state.expires_at.map(|t| t.0))
        .bind(state.last_error.as_deref())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Replaces the tenant's apps with what the location lists now and marks the token synced, in one unit.
    /// Names already known are kept when the new record has none.
    pub async fn replace_app_assets(
        &self,
        tenant: TenantId,
        assets: &[AppAssetRecord],
        now: UnixTime,
    ) -> Result<(), StoreError> {
        let mut unit = self.begin_unit().await?;
        let mut known: std::collections::HashMap<(String, String), Option<String>> =
            sqlx::query("SELECT adam_id, pricing_param, name FROM vpp_assets WHERE tenant_id = $1")
                .bind(tenant.to_string())
                .fetch_all(unit.conn()?)
                .await?
                .iter()
                .map(|r| {
                    Ok((
                        (rows::text(r, "adam_id")?, rows::text(r, "pricing_param")?),
                        rows::opt_text(r, "name")?,
                    ))
                })
                .collect::<Result<_, StoreError>>()?;
        sqlx::query("DELETE FROM vpp_assets WHERE tenant_id = $1")
            .bind(tenant.to_string())
            .execute(unit.conn()?)
            .await?;
        for a in assets {
            let name = a.name.clone().or_else(|| {
                known
                    .remove(&(a.adam_id.clone(), a.pricing_param.clone()))
                    .flatten()
            });
            sqlx::query(
                "INSERT INTO vpp_assets (tenant_id, adam_id, pricing_param, name, total_count, \
                 assigned_count, available_count, device_assignable, synced_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            )
            .bind(tenant.to_string())
            .bind(a.adam_id.as_str())
            .bind(a.pricing_param.as_str())
            .bind(name.as_deref())
            .bind(a.total_count)
            .bind(a.assigned_count)
            .bind(a.available_count)
            .bind(i64::from(a.device_assignable))
            .bind(a.synced_at.0)
            .execute(unit.conn()?)
            .await?;
        }
        sqlx::query(
            "UPDATE vpp_tokens SET last_sync_at = $2, last_error = NULL WHERE tenant_id = $1",
        )
        .bind(tenant.to_string())
        .bind(now.0)
        .execute(unit.conn()?)
        .await?;
        unit.commit().await
    }

    /// The tenant's apps in the scope, by adamId.
    pub async fn list_app_assets(
        &self,
        scope: Scope,
        tenant: TenantId,
    ) -> Result<Vec<AppAssetRecord>, StoreError> {
        let mut sql = Sql::new(
            "SELECT adam_id, pricing_param, name, total_count, assigned_count, available_count, \
             device_assignable, synced_at FROM vpp_assets WHERE tenant_id = ",
        );
        sql.bind(tenant)
            .in_scope("tenant_id", scope)
            .push(" ORDER BY adam_id, pricing_param");
        sql.query()
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(asset)
            .collect()
    }
}
