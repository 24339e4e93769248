//! The `orchard` binary's own access to a database it opened on the server's host: `orchard token create` (the
//! first operator token), `orchard push-cert` and `orchard local-account set`. Whoever can open the database
//! holds every tenant's data anyway; this makes that explicit and keeps it out of the server: a
//! [`LocalBootstrap`] needs the [`ScopeAuthority`] that only [`orchard_store::Store::connect`] hands out, and
//! the server is given an `Orchard`, never an opened store.

use std::sync::Arc;

use orchard_store::{ScopeAuthority, Store};
use orchard_types::{Clock, Role, TenantId, UnixTime};

use crate::access::capability::{OperatorCtx, ScopeMint};
use crate::access::principal::{create_api_token, Actor, CreatedToken, Principal, TokenSpec};
use crate::access::roles;
use crate::CoreError;

/// The local-bootstrap capability: the database opened directly by the binary at the server's console.
pub struct LocalBootstrap {
    store: Store,
    scopes: ScopeMint,
    clock: Arc<dyn Clock>,
}

impl LocalBootstrap {
    /// For the binary's commands that work on the database directly: `store` and `scopes` are what
    /// [`Store::connect`] returned.
    pub fn for_opened_database(
        store: Store,
        scopes: ScopeAuthority,
        clock: Arc<dyn Clock>,
    ) -> Self {
        LocalBootstrap {
            store,
            scopes: ScopeMint::new(scopes),
            clock,
        }
    }

    /// Acts as the local actor `actor` (recorded as `local:<actor>`) named `name`, with `role` (and the tenant
    /// of a tenant role): the binary runs its commands as a local operator; tests that opened their own database
    /// act as any principal they need.
    pub fn act_as(
        &self,
        actor: &str,
        name: &str,
        role: Role,
        tenant_id: Option<TenantId>,
    ) -> Result<Principal, CoreError> {
        roles::check_tenant_for_role(role, tenant_id, "principal", "tenant")?;
        Ok(Principal::new(
            &self.scopes,
            Actor::Local(actor.to_owned()),
            name.to_owned(),
            role,
            tenant_id,
        ))
    }

    /// The operator the bootstrap commands act as (recorded as `local:cli`).
    pub fn operator(&self) -> Result<OperatorCtx, CoreError> {
        self.act_as("cli", "cli", Role::Operator, None)?.operator()
    }

    /// `orchard token create`: an API token of any role (the first operator token is made this way). It acts
    /// for no person: whoever holds the server's console is responsible for it, and `expires_at` is theirs to
    /// choose (the binary defaults to 30 days and asks for `--no-expiry` explicitly).
    pub async fn create_api_token(
        &self,
        name: &str,
        role: Role,
        tenant_id: Option<TenantId>,
        expires_at: Option<UnixTime>,
    ) -> Result<CreatedToken, CoreError> {
        let scope = self.scopes.read_scope(Role::Operator, None);
        create_api_token(
            &self.store,
            scope,
            self.clock.as_ref(),
            TokenSpec {
                name,
                role,
                tenant_id,
                expires_at,
                owner_user_id: None,
            },
        )
        .await
    }

    /// `orchard local-account set`: creates or resets the break-glass operator `username`.
    pub async fn set_local_account(
        &self,
        username: &str,
        password: &str,
    ) -> Result<String, CoreError> {
        crate::access::local_accounts::set_local_account(
            &self.store,
            self.clock.as_ref(),
            username,
            password,
        )
        .await
    }
}
