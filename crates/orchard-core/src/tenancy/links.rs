//! A tenant's enrollment links: listed (never their secret: only its hash is stored) and revoked.

use orchard_store::EnrollmentLink;
use orchard_types::{EnrollmentLinkId, TenantId, UnixTime};
use serde::Serialize;

use crate::access::principal::Principal;
use crate::{CoreError, Orchard};

/// A link as the API lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LinkView {
    pub id: String,
    pub tenant_id: String,
    pub name: String,
    pub max_uses: Option<i64>,
    pub uses: i64,
    pub expires_at: Option<String>,
    /// Still hands out profiles (not expired, not used up).
    pub active: bool,
    pub created_at: String,
    pub created_by: Option<String>,
}

fn view(l: &EnrollmentLink, now: UnixTime) -> LinkView {
    LinkView {
        id: l.id.to_string(),
        tenant_id: l.tenant_id.to_string(),
        name: l.name.clone(),
        max_uses: l.max_uses,
        uses: l.uses,
        expires_at: l.expires_at.map(UnixTime::to_rfc3339),
        active: l.expires_at.is_none_or(|e| e >= now) && l.max_uses.is_none_or(|m| l.uses < m),
        created_at: l.created_at.to_rfc3339(),
        created_by: l.created_by.clone(),
    }
}

impl Orchard {
    /// The tenant's links (everyone who may read the tenant).
    pub async fn list_enrollment_links(
        &self,
        who: &Principal,
        tenant: TenantId,
    ) -> Result<Vec<LinkView>, CoreError> {
        let scope = who.scope();
        self.store
            .get_tenant(scope, tenant)
            .await?
            .ok_or(CoreError::NotFound)?;
        let now = self.clock.now();
        Ok(self
            .store
            .list_enrollment_links(scope, tenant)
            .await?
            .iter()
            .map(|l| view(l, now))
            .collect())
    }

    /// Revokes a link at once (operators and the tenant's admins).
    pub async fn revoke_enrollment_link(
        &self,
        who: &Principal,
        tenant: TenantId,
        id: EnrollmentLinkId,
    ) -> Result<(), CoreError> {
        let scope = who.scope();
        self.store
            .get_tenant(scope, tenant)
            .await?
            .ok_or(CoreError::NotFound)?;
        if !who.may_administer(tenant) {
            return Err(CoreError::Forbidden(
                "enrollment links need the operator or the tenant's admin role".into(),
            ));
        }
        self.store
            .revoke_enrollment_link(scope, tenant, id, self.clock.now())
            .await?;
        tracing::info!(link = %id, tenant = %tenant, actor = %who.actor(), "enrollment link revoked");
        Ok(())
    }
}
