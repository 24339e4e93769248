//! Enrollment links as their tenant's people manage them: listed and revoked. Links owned by enrollment
//! templates (zero-touch) are not shown here: they belong to their template.

use orchard_types::{EnrollmentLinkId, TenantId, UnixTime};

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
        let sql = format!(
            "SELECT id, tenant_id, name, secret_hash, max_uses, uses, expires_at, created_at, created_by \
             FROM enrollment_links WHERE tenant_id = $1 AND {TEMPLATE_LINKS}{} ORDER BY created_at DESC, id",
            scope.filter("tenant_id", 2)
        );
        let mut query = sqlx::query(&sql).bind(tenant.to_string());
        if let Some(t) = scope.tenant() {
            query = query.bind(t.to_string());
        }
        query
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
        let sql = format!(
            "UPDATE enrollment_links SET expires_at = CASE WHEN expires_at IS NULL OR expires_at > $3 \
             THEN $3 ELSE expires_at END WHERE id = $1 AND tenant_id = $2 AND {TEMPLATE_LINKS}{}",
            scope.filter("tenant_id", 4)
        );
        // A link is usable through its expiry second: end it at the second before now.
        let mut query = sqlx::query(&sql)
            .bind(id.to_string())
            .bind(tenant.to_string())
            .bind(now.0 - 1);
        if let Some(t) = scope.tenant() {
            query = query.bind(t.to_string());
        }
        if query.execute(&self.pool).await?.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }
}
