//! API principals: who is calling, with which role and tenant, derived from a bearer token.
//!
//! A `Principal` is the only way to obtain a store `Scope`, so every admin read is scoped by construction.

use orchard_store::{ApiToken, Scope, Store};
use orchard_types::{Clock, QueuedBy, Role, TenantId, TokenId, UnixTime};

use crate::{random_secret, secret_hash, CoreError, Orchard};

/// Prefix of every API token, so leaked tokens are recognisable by secret scanners.
pub const TOKEN_PREFIX: &str = "orc_";

/// Who a principal is: an API token, or a person signed in through the university's provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    Token(TokenId),
    /// A user's id (users table).
    User(String),
}

impl Actor {
    /// `token:<id>` or `user:<id>`: the stable identity the audit log records.
    pub fn id(&self) -> String {
        match self {
            Actor::Token(t) => format!("token:{t}"),
            Actor::User(u) => format!("user:{u}"),
        }
    }
}

/// An authenticated caller of the admin API: one role, and its tenant for the tenant roles. A person with
/// several memberships acts through one of them per request (see [`Orchard::principal_for_session`]).
#[derive(Debug, Clone)]
pub struct Principal {
    pub actor: Actor,
    pub name: String,
    pub role: Role,
    pub tenant_id: Option<TenantId>,
}

impl Principal {
    /// The data this principal may read.
    pub fn scope(&self) -> Scope {
        match (self.role, self.tenant_id) {
            (Role::Operator | Role::Helpdesk, _) => Scope::All,
            (Role::Admin | Role::Viewer, Some(t)) => Scope::Tenant(t),
            // A tenant role without a tenant can see nothing: scope it to a tenant that cannot exist.
            (Role::Admin | Role::Viewer, None) => {
                Scope::Tenant(TenantId::from_uuid(uuid::Uuid::nil()))
            }
        }
    }

    /// How this principal appears in logs (and, typed, in `queued_by`: see [`Principal::queued_by`]).
    pub fn actor(&self) -> String {
        format!("{}:{}", self.actor.id(), self.name)
    }

    /// The `queued_by` of commands this principal queues (stored as [`Principal::actor`] spells it).
    pub fn queued_by(&self) -> QueuedBy {
        match &self.actor {
            Actor::Token(id) => QueuedBy::Token {
                id: *id,
                name: self.name.clone(),
            },
            Actor::User(id) => QueuedBy::User {
                id: id.clone(),
                name: self.name.clone(),
            },
        }
    }

    pub fn is_operator(&self) -> bool {
        self.role == Role::Operator
    }

    /// Tenant admins act on their own tenant; operators on every tenant.
    pub fn may_administer(&self, tenant: TenantId) -> bool {
        match self.role {
            Role::Operator => true,
            Role::Admin => self.tenant_id == Some(tenant),
            Role::Helpdesk | Role::Viewer => false,
        }
    }
}

/// A token as created: the record, and the secret shown exactly once.
pub struct CreatedToken {
    pub token: ApiToken,
    pub secret: String,
}

impl Orchard {
    /// Resolves `Authorization: Bearer <secret>` to a principal. Unknown, revoked and expired tokens all answer
    /// the same `Unauthenticated`, so a caller learns nothing about which it was.
    pub async fn authenticate_bearer(&self, secret: &str) -> Result<Principal, CoreError> {
        self.authenticate_bearer_in(secret, None).await
    }

    /// [`Orchard::authenticate_bearer`] for a request with this id (named in the `token.use` audit event).
    pub async fn authenticate_bearer_in(
        &self,
        secret: &str,
        request_id: Option<&str>,
    ) -> Result<Principal, CoreError> {
        if !secret.starts_with(TOKEN_PREFIX) || secret.len() > 256 {
            return Err(CoreError::Unauthenticated);
        }
        let now = self.clock.now();
        let token = self
            .store
            .find_api_token_by_hash(&secret_hash(secret))
            .await?
            .ok_or(CoreError::Unauthenticated)?;
        if token.revoked_at.is_some() || token.expires_at.is_some_and(|e| e <= now) {
            return Err(CoreError::Unauthenticated);
        }
        let principal = Principal {
            actor: Actor::Token(token.id),
            name: token.name,
            role: token.role,
            tenant_id: token.tenant_id,
        };
        self.note_token_use(&principal, now, request_id).await;
        Ok(principal)
    }
}

/// Creates an API token. Tenant roles need a tenant that exists; operator and helpdesk must not have one.
pub async fn create_api_token(
    store: &Store,
    clock: &dyn Clock,
    name: &str,
    role: Role,
    tenant_id: Option<TenantId>,
    expires_at: Option<UnixTime>,
) -> Result<CreatedToken, CoreError> {
    let name = name.trim();
    if name.is_empty() || name.len() > 200 {
        return Err(CoreError::Invalid(
            "token name must be 1 to 200 characters".into(),
        ));
    }
    match (role, tenant_id) {
        (Role::Admin | Role::Viewer, None) => {
            return Err(CoreError::Invalid(format!(
                "a {} token needs a tenant",
                role.as_str()
            )))
        }
        (Role::Operator | Role::Helpdesk, Some(_)) => {
            return Err(CoreError::Invalid(format!(
                "a {} token spans all tenants and takes no tenant",
                role.as_str()
            )))
        }
        (_, Some(t)) if store.get_tenant(Scope::All, t).await?.is_none() => {
            return Err(CoreError::Invalid(format!("tenant {t} does not exist")));
        }
        _ => {}
    }
    let secret = format!("{TOKEN_PREFIX}{}", random_secret(32));
    let token = ApiToken {
        id: TokenId::new(),
        name: name.to_string(),
        role,
        tenant_id,
        token_hash: secret_hash(&secret),
        created_at: clock.now(),
        expires_at,
        revoked_at: None,
    };
    store.create_api_token(&token).await?;
    tracing::info!(token = %token.id, role = role.as_str(), "api token created");
    Ok(CreatedToken { token, secret })
}
