//! Enrollment links as their tenant's people manage them: listed and revoked. Links owned by enrollment
//! templates (zero-touch) are not shown here: they belong to their template.

use orchard_types::{EnrollmentLinkId, TenantId, UnixTime};

use crate::sql::Sql;
use crate::{rows, EnrollmentLink, Scope, Store, StoreError};

const TEMPLATE_LINKS: &str = "id NOT IN (SELECT link_id FROM dep_templates)";

fn link(r: &sqlx::any::AnyRow) -> Result<EnrollmentLink, StoreError> {
    Ok(EnrollmentLink {
        id: rows::link_id(r, "id")?,
        tenant_id: rows::tenant_id(r, "tenant_id")?,
        name: rows::text(r, "name")?,
        secret_hash: rows::text(r, "secret_hash")?,
        max_uses: rows::opt_int(r, "max_uses")?,
        uses: rows::int(r, "uses")?,
        expires_at: rows::opt_time(r, "expires_at")?,
        created_at: rows::time(r, "created_at")?,
        created_by: rows::opt_text(r, "created_by")?,
    })
}

impl Store {
    /// A tenant's enrollment links (in the scope), newest first.
    pub async fn list_enrollment_links(
        &self,
        scope: Scope,
        tenant: TenantId,
    ) -> Result<Vec<EnrollmentLink>, StoreError> {
        let mut sql = Sql::new(
            "SELECT id, tenant_id, name, secret_hash, max_uses, uses, expires_at, created_at, created_by \
             FROM enrollment_links WHERE tenant_id = ",
        );
        sql.bind(tenant)
            .push(" AND ")
            .push(TEMPLATE_LINKS)
            .in_scope("tenant_id", scope)
            .push(" ORDER BY created_at DESC, id");
        sql.query()
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(link)
            .collect()
    }

    /// Ends a link now (its profile downloads stop; devices enrolled through it stay). NotFound outside the
    /// scope, for template links, and for links of another tenant than `tenant`.
    pub async fn revoke_enrollment_link(
        &self,
        scope: Scope,
        tenant: TenantId,
        id: EnrollmentLinkId,
        now: UnixTime,
    ) -> Result<(), StoreError> {
        // A link is usable through its expiry second: end it at the second before now.
        let end = now.0 - 1;
        let mut sql =
            Sql::new("UPDATE enrollment_links SET expires_at = CASE WHEN expires_at IS NULL OR expires_at > ");
        sql.bind(end)
            .push(" THEN ")
            .bind(end)
            .push(" ELSE expires_at END WHERE id = ")
            .bind(id.to_string())
            .push(" AND tenant_id = ")
            .bind(tenant)
            .push(" AND ")
            .push(TEMPLATE_LINKS)
            .in_scope("tenant_id", scope);
        if sql.query().execute(&self.pool).await?.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }
}
