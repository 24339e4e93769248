//! A tenant's enrollment links: created (the secret shown once), listed (never their secret: only its hash is
//! stored) and revoked. Creating and revoking need the tenant's admin (or an operator).

use orchard_store::EnrollmentLink;
use orchard_types::{EnrollmentLinkId, TenantId, UnixTime};
use serde::Serialize;

use crate::access::principal::Principal;
use crate::{random_secret, secret_hash, CoreError, Orchard};

/// A newly created enrollment link; `url` is shown once (only the secret's hash is stored).
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreatedLink {
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = Uuid))]
    pub id: EnrollmentLinkId,
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = Uuid))]
    pub tenant_id: TenantId,
    pub name: String,
    pub url: String,
    pub max_uses: Option<i64>,
    pub expires_at: Option<String>,
}

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
    /// Creates an enrollment link for a tenant. Another tenant's id answers exactly like a missing one.
    pub async fn create_enrollment_link(
        &self,
        who: &Principal,
        tenant_id: TenantId,
        name: &str,
        max_uses: Option<i64>,
        expires_in_seconds: Option<i64>,
    ) -> Result<CreatedLink, CoreError> {
        let tenant = self
            .store
            .get_tenant(who.scope(), tenant_id)
            .await?
            .ok_or(CoreError::NotFound)?;
        let admin = who.tenant_admin(tenant.id)?;
        if max_uses.is_some_and(|m| m < 1) {
            return Err(CoreError::Invalid("max_uses must be at least 1".into()));
        }
        if expires_in_seconds.is_some_and(|s| s < 1) {
            return Err(CoreError::Invalid(
                "expires_in_seconds must be positive".into(),
            ));
        }
        let now = self.clock.now();
        let secret = random_secret(24);
        let link = EnrollmentLink {
            id: EnrollmentLinkId::new(),
            tenant_id: tenant.id,
            name: name.trim().to_string(),
            secret_hash: secret_hash(&secret),
            max_uses,
            uses: 0,
            expires_at: expires_in_seconds.map(|s| now.plus_seconds(s)),
            created_at: now,
            created_by: Some(admin.principal().actor()),
        };
        self.store.create_enrollment_link(&link).await?;
        tracing::info!(link = %link.id, tenant = %tenant.id, actor = %who.actor(), "enrollment link created");
        Ok(CreatedLink {
            id: link.id,
            tenant_id: link.tenant_id,
            name: link.name,
            url: self.config.enrollment_url(&secret),
            max_uses: link.max_uses,
            expires_at: link.expires_at.map(UnixTime::to_rfc3339),
        })
    }

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

    /// Revokes a link at once (operators and the tenant's admins): no more profiles, its unused challenges end,
    /// and the identities issued through it that never bound a device are revoked. Returns how many were.
    pub async fn revoke_enrollment_link(
        &self,
        who: &Principal,
        tenant: TenantId,
        id: EnrollmentLinkId,
    ) -> Result<u64, CoreError> {
        self.store
            .get_tenant(who.scope(), tenant)
            .await?
            .ok_or(CoreError::NotFound)?;
        let admin = who.tenant_admin(tenant)?;
        let revoked_identities = self
            .store
            .revoke_enrollment_link(admin.scope(), tenant, id, self.clock.now())
            .await?;
        tracing::info!(link = %id, tenant = %tenant, actor = %who.actor(), revoked_identities, "enrollment link revoked");
        Ok(revoked_identities)
    }
}
