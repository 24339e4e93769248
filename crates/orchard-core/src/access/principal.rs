//! Principals: who is calling, with which role and tenant, as authentication established it (a bearer token, a
//! session, the break-glass login, or the binary's own [`crate::access::bootstrap::LocalBootstrap`]).
//!
//! A `Principal` is made only inside the access module, with the read scope its role gives it; its fields are
//! private. It is the capability to read within that scope; every other right is a capability handle derived
//! from it through the role table (see [`crate::access::capability`]).

use orchard_store::{ApiToken, Scope, Store};
use orchard_types::{Clock, QueuedBy, Role, TenantId, TokenId, UnixTime};

use crate::access::capability::ScopeMint;
use crate::access::roles::{self, Ability};
use crate::{random_secret, secret_hash, CoreError, Orchard};

/// Prefix of every API token, so leaked tokens are recognisable by secret scanners.
pub const TOKEN_PREFIX: &str = "orc_";

/// Who a principal is: an API token, a person signed in through the university's provider, or someone at the
/// server's console running the `orchard` binary on the database directly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    Token(TokenId),
    /// A user's id (users table).
    User(String),
    /// The `orchard` binary's bootstrap commands (`orchard token create`, `push-cert`, `local-account`).
    Local(String),
}

impl Actor {
    /// `token:<id>`, `user:<id>` or `local:<name>`: the stable identity the audit log records.
    pub fn id(&self) -> String {
        match self {
            Actor::Token(t) => format!("token:{t}"),
            Actor::User(u) => format!("user:{u}"),
            Actor::Local(l) => format!("local:{l}"),
        }
    }
}

/// An authenticated caller: one role, and its tenant for the tenant roles. A person with several memberships
/// acts through one of them per request (see [`Orchard::principal_for_session`]).
#[derive(Debug, Clone)]
pub struct Principal {
    actor: Actor,
    name: String,
    role: Role,
    tenant_id: Option<TenantId>,
    /// What this principal may read: every tenant for the central roles, its own for the tenant roles.
    scope: Scope,
    /// The person (users.id) a token acts for, when a person minted it; a session's person is its actor.
    token_owner: Option<String>,
}

impl Principal {
    /// Only the access module makes principals, right after it authenticated one.
    pub(in crate::access) fn new(
        mint: &ScopeMint,
        actor: Actor,
        name: String,
        role: Role,
        tenant_id: Option<TenantId>,
    ) -> Principal {
        let scope = mint.read_scope(role, tenant_id);
        Principal {
            actor,
            name,
            role,
            tenant_id,
            scope,
            token_owner: None,
        }
    }

    /// The person (users.id) this principal acts for: the signed-in user, or the owner of a token a person
    /// minted. Tokens minted by this principal act for the same person and die with them.
    pub fn person(&self) -> Option<&str> {
        match &self.actor {
            Actor::User(id) => Some(id),
            Actor::Token(_) => self.token_owner.as_deref(),
            Actor::Local(_) => None,
        }
    }

    /// Who this is.
    pub fn actor_kind(&self) -> &Actor {
        &self.actor
    }

    /// `token:<id>`, `user:<id>` or `local:<name>` (the audit log's actor).
    pub fn actor_id(&self) -> String {
        self.actor.id()
    }

    /// The token's or person's display name.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn role(&self) -> Role {
        self.role
    }

    /// The tenant of a tenant role; `None` for the central roles.
    pub fn tenant_id(&self) -> Option<TenantId> {
        self.tenant_id
    }

    /// How this principal appears in `created_by` and logs (and, typed, in `queued_by`: see
    /// [`Principal::queued_by`]).
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
            Actor::Local(id) => QueuedBy::Local {
                id: id.clone(),
                name: self.name.clone(),
            },
        }
    }

    /// The data this principal may read.
    pub(crate) fn scope(&self) -> Scope {
        self.scope
    }

    /// Whether the role table gives this principal `ability` over `tenant`.
    pub(crate) fn may(&self, ability: Ability, tenant: TenantId) -> bool {
        roles::grants(self.role, ability) && self.scope.covers(tenant)
    }

    /// [`Principal::may`], or Forbidden naming what was refused.
    pub(crate) fn require(
        &self,
        ability: Ability,
        tenant: TenantId,
        refused: &str,
    ) -> Result<(), CoreError> {
        if self.may(ability, tenant) {
            Ok(())
        } else {
            Err(CoreError::Forbidden(refused.to_owned()))
        }
    }

    /// Whether the role table gives this principal `ability` at all (over the tenants its scope covers).
    pub(crate) fn has(&self, ability: Ability) -> bool {
        roles::grants(self.role, ability)
    }
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
        let presented = self
            .store
            .find_api_token_by_hash(&secret_hash(secret))
            .await?
            .ok_or(CoreError::Unauthenticated)?;
        let token = presented.token;
        if token.revoked_at.is_some() || token.expires_at.is_some_and(|e| e <= now) {
            return Err(CoreError::Unauthenticated);
        }
        if !presented.owner_active {
            tracing::info!(token = %token.id, owner = token.owner_user_id.as_deref().unwrap_or(""), "token refused: the person it acts for is disabled");
            return Err(CoreError::Unauthenticated);
        }
        let mut principal = Principal::new(
            &self.scopes,
            Actor::Token(token.id),
            token.name,
            token.role,
            token.tenant_id,
        );
        principal.token_owner = token.owner_user_id;
        self.note_token_use(&principal, now, request_id).await;
        Ok(principal)
    }
}

/// A token as created: the record, and the secret shown exactly once.
pub struct CreatedToken {
    pub token: ApiToken,
    pub secret: String,
}

/// What a new token is: its name, role, tenant (for the tenant roles), expiry and the person it acts for.
pub(crate) struct TokenSpec<'a> {
    pub name: &'a str,
    pub role: Role,
    pub tenant_id: Option<TenantId>,
    pub expires_at: Option<UnixTime>,
    pub owner_user_id: Option<String>,
}

/// Creates an API token. Tenant roles need a tenant that exists in `scope`; operator and helpdesk must not have
/// one. Reached through the token API ([`Orchard::create_token`]) or the binary's
/// [`crate::access::bootstrap::LocalBootstrap`].
pub(crate) async fn create_api_token(
    store: &Store,
    scope: Scope,
    clock: &dyn Clock,
    spec: TokenSpec<'_>,
) -> Result<CreatedToken, CoreError> {
    let TokenSpec {
        name,
        role,
        tenant_id,
        expires_at,
        owner_user_id,
    } = spec;
    let name = name.trim();
    if name.is_empty() || name.len() > 200 {
        return Err(CoreError::Invalid(
            "token name must be 1 to 200 characters".into(),
        ));
    }
    roles::check_tenant_for_role(role, tenant_id, "token", "tenant")?;
    if let Some(t) = tenant_id {
        if store.get_tenant(scope, t).await?.is_none() {
            return Err(CoreError::Invalid(format!("tenant {t} does not exist")));
        }
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
        owner_user_id,
    };
    store.create_api_token(&token).await?;
    tracing::info!(token = %token.id, role = role.as_str(), "api token created");
    Ok(CreatedToken { token, secret })
}
