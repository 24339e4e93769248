//! People who sign in, as central IT and departments see them: who they are, which roles their claims gave
//! them at their last sign-in, and (operators) disabling someone at once, whatever the provider says.

use orchard_store::{Membership, UserRecord};
use orchard_types::UnixTime;
use serde::{Deserialize, Serialize};

use crate::access::capability::OversightCtx;
use crate::access::principal::Principal;
use crate::access::users::MembershipView;
use crate::{CoreError, Orchard};

/// A user as the API shows it.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UserView {
    pub id: String,
    pub issuer: String,
    pub subject: String,
    pub email: Option<String>,
    pub display_name: Option<String>,
    pub created_at: String,
    pub last_login_at: Option<String>,
    pub disabled_at: Option<String>,
    pub memberships: Vec<MembershipView>,
}

/// `PATCH /users/{id}`.
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct UserEdit {
    pub disabled: bool,
}

fn view(u: &UserRecord, memberships: &[Membership]) -> UserView {
    UserView {
        id: u.id.clone(),
        issuer: u.issuer.clone(),
        subject: u.subject.clone(),
        email: u.email.clone(),
        display_name: u.display_name.clone(),
        created_at: u.created_at.to_rfc3339(),
        last_login_at: u.last_login_at.map(UnixTime::to_rfc3339),
        disabled_at: u.disabled_at.map(UnixTime::to_rfc3339),
        memberships: memberships.iter().map(MembershipView::from).collect(),
    }
}

impl Orchard {
    /// Users in the caller's scope, with their memberships (a tenant admin sees only memberships of its own
    /// tenant: other departments a person works for are not its business).
    pub async fn list_users(
        &self,
        overseer: &OversightCtx,
        limit: i64,
        offset: i64,
    ) -> Result<Vec<UserView>, CoreError> {
        let scope = overseer.scope();
        let users = self
            .store
            .list_users(scope, limit.clamp(1, 1000), offset.max(0))
            .await?;
        let mut out = Vec::with_capacity(users.len());
        for u in &users {
            let memberships: Vec<Membership> = self
                .store
                .user_memberships(&u.id)
                .await?
                .into_iter()
                .filter(|m| scope.tenant_id().is_none() || m.tenant_id == scope.tenant_id())
                .collect();
            out.push(view(u, &memberships));
        }
        Ok(out)
    }

    /// Disables (or enables again) a user at once: its sessions stop working at their next request and its
    /// next sign-in is refused (operators only).
    pub async fn edit_user(
        &self,
        who: &Principal,
        id: &str,
        edit: UserEdit,
    ) -> Result<UserView, CoreError> {
        let Ok(operator) = who.operator() else {
            // Another tenant's user and a missing one must look alike to those who may see people.
            if let Ok(overseer) = who.oversight() {
                if overseer.scope().tenant_id().is_some() {
                    let visible = self
                        .store
                        .list_users(overseer.scope(), 1000, 0)
                        .await?
                        .iter()
                        .any(|u| u.id == id);
                    if !visible {
                        return Err(CoreError::NotFound);
                    }
                }
            }
            return Err(CoreError::Forbidden("only operators disable users".into()));
        };
        let now = self.clock.now();
        self.store
            .set_user_disabled(id, edit.disabled.then_some(now))
            .await?;
        tracing::info!(user = %id, disabled = edit.disabled, actor = %operator.principal().actor(), "user edited");
        let user = self.store.user(id).await?.ok_or(CoreError::NotFound)?;
        let memberships = self.store.user_memberships(id).await?;
        Ok(view(&user, &memberships))
    }
}
