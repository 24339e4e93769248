//! Enrollment links as their tenant's people manage them: listed and revoked. Links owned by enrollment
//! templates (zero-touch) are not shown here: they belong to their template.

use orchard_types::{EnrollmentLinkId, TenantId, UnixTime};

use crate::sql::Sql;
use crate::unit::Db;
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

    /// Ends a link now, in one transaction: its profile downloads stop, the challenges it handed out and that
    /// were not used yet stop working, and the identities issued through it that never bound a device are
    /// revoked (reason `link_revoked`); devices enrolled through it stay. Returns how many identities were
    /// revoked. NotFound outside the scope, for template links, and for links of another tenant than `tenant`.
    pub async fn revoke_enrollment_link(
        &self,
        scope: Scope,
        tenant: TenantId,
        id: EnrollmentLinkId,
        now: UnixTime,
    ) -> Result<u64, StoreError> {
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
        let mut unit = self.begin_unit().await?;
        if sql.query().execute(unit.conn()?).await?.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        sqlx::query(
            "UPDATE scep_challenges SET expires_at = $2 \
             WHERE link_id = $1 AND used_at IS NULL AND expires_at > $2",
        )
        .bind(id.to_string())
        .bind(end)
        .execute(unit.conn()?)
        .await?;
        let revoked = sqlx::query(
            "UPDATE issued_certificates SET revoked_at = $2, revoked_reason = 'link_revoked' \
             WHERE link_id = $1 AND bound_device_id IS NULL AND revoked_at IS NULL",
        )
        .bind(id.to_string())
        .bind(now.0)
        .execute(unit.conn()?)
        .await?
        .rows_affected();
        unit.commit().await?;
        Ok(revoked)
    }
}
