//! What central IT keeps about a department besides its name and code: cost centre and contact.

use orchard_types::{TenantId, UnixTime};

use crate::sql::Sql;
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
        let mut sql = Sql::new(
            "SELECT cost_centre, contact_name, contact_email, updated_at FROM tenants WHERE id = ",
        );
        sql.bind(id).in_scope("id", scope);
        let row = sql.query().fetch_optional(&self.pool).await?;
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

    /// Replaces a tenant's name and details (operators' edit). NotFound outside the scope.
    pub async fn update_tenant(
        &self,
        scope: Scope,
        id: TenantId,
        name: &str,
        details: &TenantDetails,
        now: UnixTime,
    ) -> Result<(), StoreError> {
        let mut sql = Sql::new("UPDATE tenants SET name = ");
        sql.bind(name)
            .push(", cost_centre = ")
            .bind_optional(details.cost_centre.as_deref())
            .push(", contact_name = ")
            .bind_optional(details.contact_name.as_deref())
            .push(", contact_email = ")
            .bind_optional(details.contact_email.as_deref())
            .push(", updated_at = ")
            .bind(now.0)
            .push(" WHERE id = ")
            .bind(id)
            .in_scope("id", scope);
        let changed = sql.query().execute(&self.pool).await?.rows_affected();
        if changed == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }
}
