//! Capability handles: what a principal may do beyond reading, as values a caller must hold. Core's methods
//! that change tenant data or run the service take one of these (or the [`Principal`] itself for reads, and
//! for operations that first look their object up in the caller's scope so another tenant's ids answer like
//! missing ones), and the handles are made only here, from a principal, through the role table
//! ([`crate::access::roles`]). A handler that needs an operator cannot call an operator method without an
//! [`OperatorCtx`], and cannot make one for a principal that is not an operator.
//!
//! Scopes are made here too, from the [`ScopeAuthority`] the `Orchard` was built with; no other module of
//! core can reach it.
//!
//! Neither a scope nor a handle can be written down outside (each of these fails to compile):
//!
//! ```compile_fail
//! // The store's scope has private fields and no public constructor.
//! let everything = orchard_store::Scope { tenant: None };
//! ```
//!
//! ```compile_fail
//! // The old enum variants are gone: a scope is not a value anyone can name.
//! let everything = orchard_store::Scope::All;
//! ```
//!
//! ```compile_fail
//! // A scope authority comes only with an opened database.
//! let authority = orchard_store::ScopeAuthority { _private: () };
//! ```
//!
//! ```compile_fail
//! // A principal is made by authentication, not by its fields.
//! use orchard_core::access::principal::{Actor, Principal};
//! let root = Principal {
//!     actor: Actor::User("me".into()),
//!     name: "me".into(),
//!     role: orchard_types::Role::Operator,
//!     tenant_id: None,
//! };
//! ```
//!
//! ```compile_fail
//! // Nor is an operator's handle.
//! fn forge(p: orchard_core::access::principal::Principal) -> orchard_core::access::capability::OperatorCtx {
//!     orchard_core::access::capability::OperatorCtx { principal: p }
//! }
//! ```
//!
//! ```compile_fail
//! // And a tenant admin's handle cannot be built for a tenant of one's choosing.
//! fn forge(
//!     p: orchard_core::access::principal::Principal,
//!     tenant: orchard_types::TenantId,
//! ) -> orchard_core::access::capability::TenantAdminCtx {
//!     orchard_core::access::capability::TenantAdminCtx::new(p, tenant)
//! }
//! ```
//!
//! ```compile_fail
//! // The server's own capability (background steps, start-up, metrics, the audit trail) has no constructor
//! // outside the access module: the one door is `Orchard::system()`.
//! let system = orchard_core::access::capability::SystemCtx { _private: () };
//! ```
//!
//! ```compile_fail
//! // Nor can a background step run without it.
//! async fn sneak(orchard: &orchard_core::Orchard) {
//!     let _ = orchard.dispatch_pushes_once(100).await;
//! }
//! ```
//!
//! ```compile_fail
//! // The server cannot reach the store behind core to skip the principal.
//! fn bypass(orchard: &orchard_core::Orchard) {
//!     let _ = orchard.store();
//! }
//! ```
//!
//! The legitimate paths compile: a principal comes from authentication (or, for the binary that opened the
//! database itself, from its [`crate::access::bootstrap::LocalBootstrap`]), and handles come from the
//! principal through the role table:
//!
//! ```no_run
//! # async fn example(orchard: &orchard_core::Orchard, secret: &str) -> Result<(), orchard_core::CoreError> {
//! let principal = orchard.authenticate_bearer(secret).await?;
//! let tenants = orchard.list_tenants(&principal).await?; // reads go through the principal's scope
//! let operator = principal.operator()?; // Forbidden unless the role table says operator
//! let tenant = orchard.create_tenant(&operator, "Physics", "physics").await?;
//! let _admin = principal.tenant_admin(tenant.id)?;
//! # let _ = tenants;
//! # Ok(())
//! # }
//! ```
//!
//! The binary that opens the database itself holds its scope authority, and acts through a
//! [`crate::access::bootstrap::LocalBootstrap`]:
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use orchard_core::access::bootstrap::LocalBootstrap;
//! let (store, scopes): (orchard_store::Store, orchard_store::ScopeAuthority) =
//!     orchard_store::Store::connect("sqlite://orchard.db").await?;
//! let everything: orchard_store::Scope = scopes.all_tenants();
//! let clock = std::sync::Arc::new(orchard_types::SystemClock);
//! let bootstrap = LocalBootstrap::for_opened_database(store, scopes, clock);
//! let first = bootstrap
//!     .create_api_token("central-it", orchard_types::Role::Operator, None, None)
//!     .await?;
//! let _operator = bootstrap.operator()?;
//! # let _ = (everything, first.secret);
//! # Ok(())
//! # }
//! ```

use orchard_store::{Scope, ScopeAuthority};
use orchard_types::{Role, TenantId};

use crate::access::principal::Principal;
use crate::access::roles::{self, Ability};
use crate::{CoreError, Orchard};

/// The scope authority of the database an `Orchard` serves. Its field is private to this module: the rest of
/// core holds the mint (inside `Orchard`) but cannot turn it into scopes.
#[derive(Debug, Clone)]
pub(crate) struct ScopeMint {
    authority: ScopeAuthority,
}

impl ScopeMint {
    pub(crate) fn new(authority: ScopeAuthority) -> Self {
        ScopeMint { authority }
    }

    /// Every tenant (see [`Orchard::system_scope`]).
    pub(in crate::access) fn every_tenant(&self) -> Scope {
        self.authority.all_tenants()
    }

    /// What a role may read: every tenant for the central roles, its own for the tenant roles. A tenant role
    /// without a tenant can see nothing: it gets a tenant that cannot exist.
    pub(in crate::access) fn read_scope(&self, role: Role, tenant: Option<TenantId>) -> Scope {
        match (roles::spans_all_tenants(role), tenant) {
            (true, _) => self.authority.all_tenants(),
            (false, Some(t)) => self.authority.tenant(t),
            (false, None) => self
                .authority
                .tenant(TenantId::from_uuid(uuid::Uuid::nil())),
        }
    }
}

fn refused(principal: &Principal, needs: &str) -> CoreError {
    CoreError::Forbidden(format!(
        "the {} role may not do this: it needs {needs}",
        principal.role().as_str()
    ))
}

/// Central IT acting on the service: tenants, the push certificate, DEP tokens and templates, role mappings,
/// people. Spans every tenant.
#[derive(Debug, Clone)]
pub struct OperatorCtx {
    principal: Principal,
}

impl OperatorCtx {
    pub fn principal(&self) -> &Principal {
        &self.principal
    }

    /// Every tenant.
    pub(crate) fn scope(&self) -> Scope {
        self.principal.scope()
    }
}

/// Changing one tenant's data: an operator, or an admin of that tenant.
#[derive(Debug, Clone)]
pub struct TenantAdminCtx {
    principal: Principal,
    tenant: TenantId,
    /// The principal's scope narrowed to the tenant.
    scope: Scope,
}

impl TenantAdminCtx {
    pub fn principal(&self) -> &Principal {
        &self.principal
    }

    /// The tenant this handle administers.
    pub fn tenant(&self) -> TenantId {
        self.tenant
    }

    /// Exactly this tenant.
    pub(crate) fn scope(&self) -> Scope {
        self.scope
    }
}

/// Seeing the people, the audit log and the usage report: operators and helpdesk over every tenant, a tenant's
/// admins over theirs.
#[derive(Debug, Clone)]
pub struct OversightCtx {
    principal: Principal,
}

impl OversightCtx {
    pub fn principal(&self) -> &Principal {
        &self.principal
    }

    pub(crate) fn scope(&self) -> Scope {
        self.principal.scope()
    }
}

/// Managing API tokens: operators over every tenant, a tenant's admins over their own tenant's tokens.
#[derive(Debug, Clone)]
pub struct TokenAdminCtx {
    principal: Principal,
}

impl TokenAdminCtx {
    pub fn principal(&self) -> &Principal {
        &self.principal
    }

    pub(crate) fn scope(&self) -> Scope {
        self.principal.scope()
    }
}

/// The server acting for itself, for no principal: background steps (push dispatch, DEP sync and assignments,
/// identity renewal, command hygiene, usage snapshots, the jobs' leases), start-up steps (loading the push
/// certificate, resealing), the audit trail and the `/metrics` gauges. It carries no scope: these steps span
/// every tenant because no tenant asked for them.
///
/// Made only here. [`Orchard::start_jobs`] gives one to each job it starts; [`Orchard::system`] is the one
/// explicit door, for the binary's start-up steps, the server's own surfaces (`/metrics` and the audit trail,
/// and nowhere else: the server's `layout_tests.rs` checks it) and tests.
#[derive(Debug, Clone)]
pub struct SystemCtx {
    _private: (),
}

impl Orchard {
    /// The server's own capability (see [`SystemCtx`]): for the binary's start-up, the jobs host, the server's
    /// metrics and audit trail, and tests. A request handler acts for its caller's principal, never this.
    pub fn system(&self) -> SystemCtx {
        SystemCtx { _private: () }
    }

    /// Every tenant, for a step the server takes for itself (the credential register behind `/metrics` and
    /// the expiry warnings): only a holder of the server's own capability gets it.
    pub(crate) fn system_scope(&self, _system: &SystemCtx) -> Scope {
        self.scopes.every_tenant()
    }
}

impl Principal {
    /// The operator's handle, if the role table makes this principal one.
    pub fn operator(&self) -> Result<OperatorCtx, CoreError> {
        if self.has(Ability::Operate) {
            Ok(OperatorCtx {
                principal: self.clone(),
            })
        } else {
            Err(refused(self, "the operator role"))
        }
    }

    /// The handle to change `tenant`'s data: Forbidden unless this principal administers that tenant. Callers
    /// look the tenant's object up in the principal's scope first, so another tenant's ids stay "not found".
    pub fn tenant_admin(&self, tenant: TenantId) -> Result<TenantAdminCtx, CoreError> {
        match self.scope().narrowed_to(tenant) {
            Some(scope) if self.may(Ability::Administer, tenant) => Ok(TenantAdminCtx {
                principal: self.clone(),
                tenant,
                scope,
            }),
            _ => Err(refused(self, "the operator or the tenant's admin role")),
        }
    }

    /// The handle to see people, the audit log and usage.
    pub fn oversight(&self) -> Result<OversightCtx, CoreError> {
        if self.has(Ability::Oversee) {
            Ok(OversightCtx {
                principal: self.clone(),
            })
        } else {
            Err(refused(
                self,
                "the operator, helpdesk or a tenant admin role",
            ))
        }
    }

    /// The handle to manage API tokens.
    pub fn token_admin(&self) -> Result<TokenAdminCtx, CoreError> {
        if self.has(Ability::ManageTokens) {
            Ok(TokenAdminCtx {
                principal: self.clone(),
            })
        } else {
            Err(CoreError::Forbidden(format!(
                "the {} role does not manage api tokens",
                self.role().as_str()
            )))
        }
    }
}
