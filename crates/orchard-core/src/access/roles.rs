//! The one role table: which role may do what, and over which tenants. Every permission check in Orchard asks
//! [`grants`]; nothing else matches on [`Role`] to decide who may act.

use orchard_types::{Role, TenantId};

use crate::CoreError;

/// What a principal may do. Each ability reaches the tenants the principal's scope covers: every tenant for
/// the central roles (operator, helpdesk), its own tenant for the tenant roles (admin, viewer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ability {
    /// See tenants, devices, links, templates, command history.
    Read,
    /// Queue commands that only read or wake a device (inventory queries, pushes).
    Query,
    /// Change a tenant's devices and settings: any command (dangerous ones with confirmation), enrollment
    /// links, setup release, clearing Activation Lock.
    Administer,
    /// Make, list and revoke API tokens.
    ManageTokens,
    /// See the people, the audit log and the usage report.
    Oversee,
    /// Run the service itself: tenants, push certificate, DEP tokens and templates, role mappings, disabling
    /// people.
    Operate,
    /// See device secrets where a feature shows them: escrowed Activation Lock bypass codes and secret command
    /// results in a device's command history. Everyone else gets them redacted.
    SeeDeviceSecrets,
}

/// The role table.
///
/// | ability       | operator | helpdesk | admin | viewer |
/// |---------------|----------|----------|-------|--------|
/// | Read          | all      | all      | own   | own    |
/// | Query         | all      | all      | own   | —      |
/// | Administer    | all      | —        | own   | —      |
/// | ManageTokens  | all      | —        | own   | —      |
/// | Oversee       | all      | all      | own   | —      |
/// | Operate       | all      | —        | —     | —      |
/// | SeeDeviceSecrets | all   | —        | own   | —      |
pub const fn grants(role: Role, ability: Ability) -> bool {
    use Ability::*;
    match role {
        Role::Operator => true,
        Role::Helpdesk => matches!(ability, Read | Query | Oversee),
        Role::Admin => matches!(
            ability,
            Read | Query | Administer | ManageTokens | Oversee | SeeDeviceSecrets
        ),
        Role::Viewer => matches!(ability, Read),
    }
}

/// Whether the role acts on every tenant (central IT) rather than on one.
pub const fn spans_all_tenants(role: Role) -> bool {
    matches!(role, Role::Operator | Role::Helpdesk)
}

/// A role held by a token, a mapping or a principal names a tenant exactly when it is a tenant role.
/// `what` names the holder in the error ("token", "mapping").
pub(crate) fn check_tenant_for_role(
    role: Role,
    tenant: Option<TenantId>,
    what: &str,
    tenant_field: &str,
) -> Result<(), CoreError> {
    match (spans_all_tenants(role), tenant) {
        (false, None) => Err(CoreError::Invalid(format!(
            "a {} {what} needs a {tenant_field}",
            role.as_str()
        ))),
        (true, Some(_)) => Err(CoreError::Invalid(format!(
            "a {} {what} spans all tenants and takes no {tenant_field}",
            role.as_str()
        ))),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_reads_as_documented() {
        use Ability::*;
        let table: Vec<String> = [
            Read,
            Query,
            Administer,
            ManageTokens,
            Oversee,
            Operate,
            SeeDeviceSecrets,
        ]
        .iter()
        .map(|&a| {
            let cells: Vec<&str> = [Role::Operator, Role::Helpdesk, Role::Admin, Role::Viewer]
                .iter()
                .map(|&r| match (grants(r, a), spans_all_tenants(r)) {
                    (false, _) => "-",
                    (true, true) => "all",
                    (true, false) => "own",
                })
                .collect();
            format!("{a:?}: {}", cells.join(" "))
        })
        .collect();
        assert_eq!(
            table,
            [
                "Read: all all own own",
                "Query: all all own -",
                "Administer: all - own -",
                "ManageTokens: all - own -",
                "Oversee: all all own -",
                "Operate: all - - -",
                "SeeDeviceSecrets: all - own -",
            ]
        );
    }

    #[test]
    fn tenant_roles_need_a_tenant_and_central_roles_refuse_one() {
        let t = TenantId::new();
        assert!(check_tenant_for_role(Role::Admin, Some(t), "token", "tenant").is_ok());
        assert!(check_tenant_for_role(Role::Viewer, None, "token", "tenant").is_err());
        assert!(check_tenant_for_role(Role::Operator, None, "token", "tenant").is_ok());
        assert!(check_tenant_for_role(Role::Helpdesk, Some(t), "token", "tenant").is_err());
    }
}
