//! API tokens through the API: personal and service-account tokens with a role, a tenant scope and an expiry,
//! shown once, stored hashed, revocable.
//!
//! Operators make any token; a tenant's admin makes admin and viewer tokens of its own tenant only (never a
//! central role). Listing and revoking follow the same scope: another tenant's token answers like a missing one.

use orchard_store::ApiTokenListing;
use orchard_types::{Role, TenantId, TokenId, UnixTime};
use serde::{Deserialize, Serialize};

use crate::access::capability::TokenAdminCtx;
use crate::access::principal::{create_api_token, Actor, Principal, TokenSpec};
use crate::{CoreError, Orchard};

/// How long tokens made through the API may live, per role. A token is a password that never asks for a
/// second factor: the roles that can change devices get the shortest, and nobody gets years.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenPolicy {
    /// Days a token lives when the request does not say (capped by the role's maximum).
    pub default_days: i64,
    pub max_days_operator: i64,
    pub max_days_helpdesk: i64,
    pub max_days_admin: i64,
    pub max_days_viewer: i64,
}

impl Default for TokenPolicy {
    /// Operators and helpdesk automate central IT's work (a year at most); a department's admin token can
    /// erase that department's iPads (90 days); a viewer's only reads (180 days).
    fn default() -> Self {
        TokenPolicy {
            default_days: 30,
            max_days_operator: 365,
            max_days_helpdesk: 365,
            max_days_admin: 90,
            max_days_viewer: 180,
        }
    }
}

impl TokenPolicy {
    /// The longest lifetime a token of `role` may have, in days.
    pub fn max_days(&self, role: Role) -> i64 {
        match role {
            Role::Operator => self.max_days_operator,
            Role::Helpdesk => self.max_days_helpdesk,
            Role::Admin => self.max_days_admin,
            Role::Viewer => self.max_days_viewer,
        }
    }

    /// Sets the maximum of one role from `role=days` (the binary's `--token-max-days`).
    pub fn set_from_spec(&mut self, spec: &str) -> Result<(), String> {
        let (role, days) = spec
            .split_once('=')
            .ok_or_else(|| format!("{spec:?}: expected ROLE=DAYS"))?;
        let role = Role::parse(role.trim()).ok_or_else(|| format!("{role:?}: unknown role"))?;
        let days: i64 = days
            .trim()
            .parse()
            .map_err(|_| format!("{days:?}: not a number of days"))?;
        if days < 1 {
            return Err(format!("{spec:?}: at least one day"));
        }
        match role {
            Role::Operator => self.max_days_operator = days,
            Role::Helpdesk => self.max_days_helpdesk = days,
            Role::Admin => self.max_days_admin = days,
            Role::Viewer => self.max_days_viewer = days,
        }
        Ok(())
    }
}
/// `last_used_at` is written, and a `token.use` audit event recorded, at most this often per token: the
/// audit log shows when a token was in use without one row per request.
const TOKEN_USE_GRANULARITY_SECONDS: i64 = 3600;

/// What the caller asks for.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct NewTokenRequest {
    pub name: String,
    #[cfg_attr(feature = "openapi", schema(value_type = crate::api_schema::RoleSchema))]
    pub role: Role,
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = Uuid))]
    pub tenant_id: Option<TenantId>,
    /// Days until the token expires (default 30; at most the role's maximum: 365 for operator and helpdesk,
    /// 90 for admin, 180 for viewer unless the server is configured otherwise).
    #[serde(default)]
    pub expires_in_days: Option<i64>,
}

/// A token as the API shows it (never the hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TokenView {
    pub id: String,
    pub name: String,
    pub role: &'static str,
    pub tenant_id: Option<String>,
    pub created_at: String,
    pub created_by: Option<String>,
    pub expires_at: Option<String>,
    pub revoked_at: Option<String>,
    pub last_used_at: Option<String>,
    /// Usable now (not revoked, not expired).
    pub active: bool,
}

/// A new token: its view and the secret, shown exactly once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreatedTokenView {
    #[serde(flatten)]
    pub token: TokenView,
    pub secret: String,
}

fn view(t: &ApiTokenListing, now: UnixTime) -> TokenView {
    TokenView {
        id: t.id.to_string(),
        name: t.name.clone(),
        role: t.role.as_str(),
        tenant_id: t.tenant_id.map(|x| x.to_string()),
        created_at: t.created_at.to_rfc3339(),
        created_by: t.created_by.clone(),
        expires_at: t.expires_at.map(UnixTime::to_rfc3339),
        revoked_at: t.revoked_at.map(UnixTime::to_rfc3339),
        last_used_at: t.last_used_at.map(UnixTime::to_rfc3339),
        active: t.revoked_at.is_none() && t.expires_at.is_none_or(|e| e > now),
    }
}

impl Orchard {
    /// Makes a token (operators: any; tenant admins: admin or viewer of their own tenant).
    pub async fn create_token(
        &self,
        manager: &TokenAdminCtx,
        req: NewTokenRequest,
    ) -> Result<CreatedTokenView, CoreError> {
        let who = manager.principal();
        let scope = manager.scope();
        if let Some(own) = scope.tenant_id() {
            // A tenant's admin: never a central role, never another tenant.
            let allowed =
                !crate::access::roles::spans_all_tenants(req.role) && req.tenant_id == Some(own);
            if !allowed {
                return Err(CoreError::Forbidden(
                    "a tenant admin makes admin and viewer tokens of its own tenant only".into(),
                ));
            }
        }
        let max_days = self.token_policy.max_days(req.role);
        let days = req
            .expires_in_days
            .unwrap_or(self.token_policy.default_days.min(max_days));
        if !(1..=max_days).contains(&days) {
            return Err(CoreError::Invalid(format!(
                "expires_in_days must be 1..={max_days} for a {} token",
                req.role.as_str()
            )));
        }
        let now = self.clock.now();
        let created = create_api_token(
            &self.store,
            scope,
            self.clock.as_ref(),
            TokenSpec {
                name: &req.name,
                role: req.role,
                tenant_id: req.tenant_id,
                expires_at: Some(now.plus_seconds(days * 86_400)),
                // A token minted by a person (or by one of their tokens) acts for that person.
                owner_user_id: who.person().map(str::to_owned),
            },
        )
        .await?;
        self.store
            .set_api_token_creator(created.token.id, &who.actor())
            .await?;
        tracing::info!(token = %created.token.id, role = req.role.as_str(), actor = %who.actor(), "api token created through the api");
        let listing = self
            .store
            .api_token(scope, created.token.id)
            .await?
            .ok_or(CoreError::NotFound)?;
        Ok(CreatedTokenView {
            token: view(&listing, now),
            secret: created.secret,
        })
    }

    /// Tokens the caller manages.
    pub async fn list_tokens(
        &self,
        manager: &TokenAdminCtx,
        limit: i64,
        offset: i64,
    ) -> Result<Vec<TokenView>, CoreError> {
        let scope = manager.scope();
        let now = self.clock.now();
        Ok(self
            .store
            .list_api_tokens(scope, limit.clamp(1, 1000), offset.max(0))
            .await?
            .iter()
            .map(|t| view(t, now))
            .collect())
    }

    /// Revokes a token the caller manages (its next request is refused).
    pub async fn revoke_token(
        &self,
        manager: &TokenAdminCtx,
        id: TokenId,
    ) -> Result<TokenView, CoreError> {
        let (who, scope) = (manager.principal(), manager.scope());
        let now = self.clock.now();
        self.store.revoke_api_token(scope, id, now).await?;
        tracing::info!(token = %id, actor = %who.actor(), "api token revoked");
        let listing = self
            .store
            .api_token(scope, id)
            .await?
            .ok_or(CoreError::NotFound)?;
        Ok(view(&listing, now))
    }

    /// Notes that a token was used: `last_used_at` and a `token.use` audit event, at most once an hour per
    /// token. A failure only logs (the request itself is not refused for it).
    pub(crate) async fn note_token_use(
        &self,
        principal: &Principal,
        now: UnixTime,
        request_id: Option<&str>,
    ) {
        let Actor::Token(id) = principal.actor_kind() else {
            return;
        };
        match self
            .store
            .touch_api_token(*id, now, TOKEN_USE_GRANULARITY_SECONDS)
            .await
        {
            Ok(false) => {}
            Ok(true) => {
                let event = crate::reporting::audit::AuditEvent {
                    actor: crate::reporting::audit::AuditActor::of(principal),
                    tenant_id: principal.tenant_id(),
                    action: "token.use".into(),
                    target: Some(id.to_string()),
                    request_id: request_id.map(str::to_owned),
                    outcome: crate::reporting::audit::AuditOutcome::Ok,
                    http_status: None,
                    details: serde_json::json!({"period_seconds": TOKEN_USE_GRANULARITY_SECONDS}),
                };
                if let Err(e) = self.append_audit(event).await {
                    tracing::warn!(token = %id, error = %e, "recording token use in the audit log failed");
                }
            }
            Err(e) => tracing::warn!(token = %id, error = %e, "recording token use failed"),
        }
    }
}
