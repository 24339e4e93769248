//! The admin API for people signed in through the university's provider: a session (cookie) becomes a
//! [`Principal`] for one request. A person may hold several memberships (admin of physics, viewer of music,
//! helpdesk…); each request acts through one of them, so every scope check stays the single-role check tokens
//! have.
//!
//! Which membership: operator if the person is one (it sees everything anyway). Otherwise the tenant the
//! request asks for (the server reads it from a header; admin wins over viewer there); without one, helpdesk if
//! held, else the one tenant the person belongs to — several tenants and none requested is a clear 400.

use orchard_types::{Role, TenantId};

use crate::access::principal::{Actor, Principal};
use crate::access::users::SignedInUser;
use crate::{CoreError, Orchard};

impl Orchard {
    /// The principal a signed-in person acts as for this request, acting on `requested_tenant` when the request
    /// names one.
    pub fn principal_for_session(
        &self,
        user: &SignedInUser,
        requested_tenant: Option<&str>,
    ) -> Result<Principal, CoreError> {
        principal_for_session(self, user, requested_tenant)
    }
}

fn principal_for_session(
    orchard: &Orchard,
    user: &SignedInUser,
    requested_tenant: Option<&str>,
) -> Result<Principal, CoreError> {
    let name = user
        .user
        .email
        .clone()
        .or_else(|| user.user.display_name.clone())
        .unwrap_or_else(|| user.user.subject.clone());
    let principal = |role: Role, tenant_id: Option<TenantId>| {
        Principal::new(
            &orchard.scopes,
            Actor::User(user.user.id.clone()),
            name.clone(),
            role,
            tenant_id,
        )
    };
    let has = |role: Role| user.memberships.iter().any(|m| m.role == role);
    if has(Role::Operator) {
        return Ok(principal(Role::Operator, None));
    }
    let tenant_roles = |t: TenantId| {
        user.memberships
            .iter()
            .filter(move |m| m.tenant_id == Some(t))
            .map(|m| m.role)
    };
    if let Some(header) = requested_tenant.map(str::trim).filter(|h| !h.is_empty()) {
        let tenant = TenantId::parse(header).map_err(|_| {
            CoreError::Forbidden("the requested tenant is no tenant of yours".into())
        })?;
        let roles: Vec<Role> = tenant_roles(tenant).collect();
        let role = if roles.contains(&Role::Admin) {
            Role::Admin
        } else if roles.contains(&Role::Viewer) {
            Role::Viewer
        } else {
            return Err(CoreError::Forbidden(
                "the requested tenant is no tenant of yours".into(),
            ));
        };
        return Ok(principal(role, Some(tenant)));
    }
    if has(Role::Helpdesk) {
        return Ok(principal(Role::Helpdesk, None));
    }
    let mut tenants: Vec<TenantId> = user
        .memberships
        .iter()
        .filter_map(|m| m.tenant_id)
        .collect();
    tenants.sort();
    tenants.dedup();
    match tenants.as_slice() {
        [] => Err(CoreError::Forbidden(
            "you have no role in orchard: ask central IT to map your group".into(),
        )),
        [only] => {
            let role = if tenant_roles(*only).any(|r| r == Role::Admin) {
                Role::Admin
            } else {
                Role::Viewer
            };
            Ok(principal(role, Some(*only)))
        }
        _ => Err(CoreError::Invalid(
            "you belong to several tenants: name the one to act on".into(),
        )),
    }
}
