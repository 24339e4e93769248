//! Which tenants a statement may touch: a [`Scope`], made only through the [`ScopeAuthority`] that comes with an
//! opened database, so a caller that was handed a `Store` method but no authority cannot widen what it sees.

use orchard_types::TenantId;

/// The tenants a read or write may touch: every tenant (central IT), or one. Its fields are private and it has
/// no public constructor: a scope comes from a [`ScopeAuthority`] (orchard-core's access module keeps the one
/// its `Orchard` was given and hands scopes out only for authenticated principals), or by narrowing a scope one
/// already holds ([`Scope::narrowed_to`]), which can never widen it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Scope {
    /// `None`: every tenant.
    tenant: Option<TenantId>,
}

impl Scope {
    /// The one tenant this scope is limited to; `None` when it spans every tenant.
    pub fn tenant_id(&self) -> Option<TenantId> {
        self.tenant
    }

    /// Whether rows of `tenant` are inside this scope.
    pub fn covers(&self, tenant: TenantId) -> bool {
        self.tenant.is_none_or(|own| own == tenant)
    }

    /// This scope limited to `tenant`: `None` when `tenant` is outside it (another tenant's rows must look like
    /// missing ones, so callers answer "nothing" rather than widening).
    pub fn narrowed_to(&self, tenant: TenantId) -> Option<Scope> {
        self.covers(tenant).then_some(Scope {
            tenant: Some(tenant),
        })
    }
}

/// The right to choose any scope over one database. One comes with every opened [`crate::Store`]
/// ([`crate::Store::connect`]): whoever opens the database holds every tenant's data anyway. The `orchard`
/// binary hands it to orchard-core, whose access module keeps it private; the server never opens the database
/// and so never holds one.
#[derive(Clone, Debug)]
pub struct ScopeAuthority {
    _private: (),
}

impl ScopeAuthority {
    /// Made only where a database is opened.
    pub(crate) fn of_opened_database() -> Self {
        ScopeAuthority { _private: () }
    }

    /// Every tenant (central IT, and work of the server itself).
    pub fn all_tenants(&self) -> Scope {
        Scope { tenant: None }
    }

    /// One tenant: rows of other tenants look exactly like missing rows.
    pub fn tenant(&self, tenant: TenantId) -> Scope {
        Scope {
            tenant: Some(tenant),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn narrowing_never_widens() {
        let authority = ScopeAuthority::of_opened_database();
        let (physics, music) = (TenantId::new(), TenantId::new());
        assert_eq!(
            authority.all_tenants().narrowed_to(physics),
            Some(authority.tenant(physics))
        );
        assert_eq!(
            authority.tenant(physics).narrowed_to(physics),
            Some(authority.tenant(physics))
        );
        assert_eq!(authority.tenant(physics).narrowed_to(music), None);
        assert!(authority.all_tenants().covers(music));
        assert!(!authority.tenant(physics).covers(music));
    }
}
