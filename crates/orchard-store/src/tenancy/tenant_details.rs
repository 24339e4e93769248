//! What central IT keeps about a department besides its name and code: cost centre and contact.

use orchard_types::{TenantId, UnixTime};

use crate::{rows, Scope, Store, StoreError};

/// A tenant's billing and contact details (all optional).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TenantDetails {
    pub cost_centre: Option<String>,
    pub contact_name: Option<String>,
    pub contact_email: Option<String>,
    pub updated_at: Option<UnixTime>,
}

impl Store {
    /// The details of a tenant in the scope (None: no such tenant there).
    pub async fn tenant_details(
        &self,
        scope: Scope,
        id: TenantId,
    ) -> Result<Option<TenantDetails>, StoreError> {
        let sql = format!(
            "SELECT cost_centre, contact_name, contact_email, updated_at FROM tenants WHERE id = $1{}",
            scope.filter("id", 2)
        );
        let mut query = sqlx::query(&sql).bind(id.to_string());
        if let Some(t) = scope.tenant() {
            query = query.bind(t.to_string());
        }
        let row = query.fetch_optional(&self.pool).await?;
        row.map(|r| {
            Ok(TenantDetails {
                cost_centre: rows::opt_text(&r, "cost_centre")?,
                contact_name: rows::opt_text(&r, "contact_name")?,
                contact_email: rows::opt_text(&r, "contact_email")?,
                updated_at: rows::opt_time(&r, "updated_at")?,
            })
        })
        .transpose()
    }

    /// Replaces a tenant's name and details (operators' edit).
    pub async fn update_tenant(
        &self,
        id: TenantId,
        name: &str,
        details: &TenantDetails,
        now: UnixTime,
    ) -> Result<(), StoreError> {
        let changed = sqlx::query(
            "UPDATE tenants SET name = $2, cost_centre = $3, contact_name = $4, contact_email = $5, \
             updated_at = $6 WHERE id = $1",
        )
        .bind(id.to_string())
        .bind(name)
        .bind(details.cost_centre.as_deref())
        .bind(details.contact_name.as_deref())
        .bind(details.contact_email.as_deref())
        .bind(now.0)
        .execute(&self.pool)
        .await?
        .rows_affected();
        if changed == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }
}
