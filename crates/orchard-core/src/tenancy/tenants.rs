//! Tenants (departments) as central IT edits them: name, cost centre for billing, and the contact who is warned
//! about expiring certificates and tokens. Everyone reads the tenants of their scope; operators create and edit.

use orchard_store::{Tenant, TenantDetails};
use orchard_types::{TenantId, UnixTime};
use serde::{Deserialize, Serialize};

use crate::access::capability::OperatorCtx;
use crate::access::principal::Principal;
use crate::{CoreError, Orchard};

/// A tenant's short code: lowercase letters, digits and dashes, so it is safe in URLs and file names.
fn valid_code(code: &str) -> bool {
    !code.is_empty()
        && code.len() <= 32
        && code
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// A tenant with its details, as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TenantView {
    pub id: String,
    pub name: String,
    pub code: String,
    pub cost_centre: Option<String>,
    pub contact_name: Option<String>,
    pub contact_email: Option<String>,
    pub created_at: String,
    pub updated_at: Option<String>,
}

/// An edit of a tenant: every field optional; absent fields keep their value, `""` clears a detail.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct TenantEdit {
    pub name: Option<String>,
    pub cost_centre: Option<String>,
    pub contact_name: Option<String>,
    pub contact_email: Option<String>,
}

fn view(t: &Tenant, d: &TenantDetails) -> TenantView {
    TenantView {
        id: t.id.to_string(),
        name: t.name.clone(),
        code: t.code.clone(),
        cost_centre: d.cost_centre.clone(),
        contact_name: d.contact_name.clone(),
        contact_email: d.contact_email.clone(),
        created_at: t.created_at.to_rfc3339(),
        updated_at: d.updated_at.map(UnixTime::to_rfc3339),
    }
}

/// `Some("")` clears, `Some(x)` sets (validated), `None` keeps.
fn merged(
    field: &str,
    current: Option<String>,
    edit: Option<&str>,
    max: usize,
) -> Result<Option<String>, CoreError> {
    match edit.map(str::trim) {
        None => Ok(current),
        Some("") => Ok(None),
        Some(v) if v.chars().count() > max => Err(CoreError::Invalid(format!(
            "{field} must be at most {max} characters"
        ))),
        Some(v) => Ok(Some(v.to_owned())),
    }
}

impl Orchard {
    /// Creates a department (operators).
    pub async fn create_tenant(
        &self,
        operator: &OperatorCtx,
        name: &str,
        code: &str,
    ) -> Result<Tenant, CoreError> {
        let name = name.trim();
        if name.is_empty() || name.len() > 200 {
            return Err(CoreError::Invalid(
                "name must be 1 to 200 characters".into(),
            ));
        }
        if !valid_code(code) {
            return Err(CoreError::Invalid(
                "code must be 1 to 32 lowercase letters, digits or dashes".into(),
            ));
        }
        let tenant = Tenant {
            id: TenantId::new(),
            name: name.to_string(),
            code: code.to_string(),
            created_at: self.clock.now(),
        };
        self.store.create_tenant(&tenant).await?;
        tracing::info!(tenant = %tenant.id, code, actor = %operator.principal().actor(), "tenant created");
        Ok(tenant)
    }

    /// The tenants the caller may read.
    pub async fn list_tenants(&self, who: &Principal) -> Result<Vec<Tenant>, CoreError> {
        Ok(self.store.list_tenants(who.scope()).await?)
    }

    /// One tenant of the caller's scope with its details.
    pub async fn tenant_view(
        &self,
        who: &Principal,
        id: TenantId,
    ) -> Result<TenantView, CoreError> {
        let scope = who.scope();
        let tenant = self
            .store
            .get_tenant(scope, id)
            .await?
            .ok_or(CoreError::NotFound)?;
        let details = self
            .store
            .tenant_details(scope, id)
            .await?
            .ok_or(CoreError::NotFound)?;
        Ok(view(&tenant, &details))
    }

    /// Edits a tenant (operators only; a tenant's own people read it but do not change how they are billed).
    pub async fn edit_tenant(
        &self,
        who: &Principal,
        id: TenantId,
        edit: TenantEdit,
    ) -> Result<TenantView, CoreError> {
        let scope = who.scope();
        let tenant = self
            .store
            .get_tenant(scope, id)
            .await?
            .ok_or(CoreError::NotFound)?;
        let operator = who.operator()?;
        let current = self
            .store
            .tenant_details(scope, id)
            .await?
            .ok_or(CoreError::NotFound)?;
        let name = match edit.name.as_deref().map(str::trim) {
            None => tenant.name.clone(),
            Some(n) if n.is_empty() || n.chars().count() > 200 => {
                return Err(CoreError::Invalid(
                    "name must be 1 to 200 characters".into(),
                ))
            }
            Some(n) => n.to_owned(),
        };
        let details = TenantDetails {
            cost_centre: merged(
                "cost_centre",
                current.cost_centre,
                edit.cost_centre.as_deref(),
                64,
            )?,
            contact_name: merged(
                "contact_name",
                current.contact_name,
                edit.contact_name.as_deref(),
                200,
            )?,
            contact_email: merged(
                "contact_email",
                current.contact_email,
                edit.contact_email.as_deref(),
                254,
            )?,
            updated_at: None,
        };
        if let Some(email) = &details.contact_email {
            let valid = email.split_once('@').is_some_and(|(l, d)| {
                !l.is_empty() && d.contains('.') && !email.contains(char::is_whitespace)
            });
            if !valid {
                return Err(CoreError::Invalid(
                    "contact_email is not an e-mail address".into(),
                ));
            }
        }
        let now = self.clock.now();
        self.store
            .update_tenant(operator.scope(), id, &name, &details, now)
            .await?;
        tracing::info!(tenant = %id, actor = %who.actor(), "tenant edited");
        self.tenant_view(who, id).await
    }
}
