//! People signed in through the university's identity provider: turning their claims into memberships with
//! the operators' role mappings, and the browser sessions prepared for the web UI.
//!
//! A session is a random secret in an `HttpOnly` cookie; the database keeps only its hash. Its CSRF token is
//! derived from the secret (so the server need not store it to hand it out again through `/auth/me`) and
//! checked against a stored hash on every state-changing request made with the cookie.

use orchard_store::{Membership, RoleMappingRecord, SessionRecord, UserRecord};
use orchard_types::{Role, TenantId, UnixTime};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::access::capability::OperatorCtx;
use crate::{random_secret, secret_hash, CoreError, Orchard};

/// The longest claim name or value a role mapping may hold.
const MAX_MAPPING_FIELD: usize = 256;

/// A role mapping as the API shows it.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RoleMappingView {
    pub id: String,
    pub claim: String,
    pub value: String,
    #[cfg_attr(feature = "openapi", schema(value_type = crate::api_schema::RoleSchema))]
    pub role: Role,
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = Uuid))]
    pub tenant_id: Option<TenantId>,
    pub created_at: String,
    pub created_by: Option<String>,
}

impl From<RoleMappingRecord> for RoleMappingView {
    fn from(m: RoleMappingRecord) -> Self {
        RoleMappingView {
            id: m.id,
            claim: m.claim,
            value: m.value,
            role: m.role,
            tenant_id: m.tenant_id,
            created_at: m.created_at.to_rfc3339(),
            created_by: m.created_by,
        }
    }
}

/// `POST /api/v1/role-mappings`: users whose claim `claim` equals or contains `value` get `role`.
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct NewRoleMapping {
    #[cfg_attr(
        feature = "openapi",
        schema(min_length = 1, max_length = 256, pattern = r"\S")
    )]
    pub claim: String,
    #[cfg_attr(
        feature = "openapi",
        schema(min_length = 1, max_length = 256, pattern = r"\S")
    )]
    pub value: String,
    #[cfg_attr(feature = "openapi", schema(value_type = crate::api_schema::RoleSchema))]
    pub role: Role,
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = Uuid))]
    pub tenant_id: Option<TenantId>,
}

/// A membership as the API shows it.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MembershipView {
    #[cfg_attr(feature = "openapi", schema(value_type = crate::api_schema::RoleSchema))]
    pub role: Role,
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = Uuid))]
    pub tenant_id: Option<TenantId>,
}

impl From<&Membership> for MembershipView {
    fn from(m: &Membership) -> Self {
        MembershipView {
            role: m.role,
            tenant_id: m.tenant_id,
        }
    }
}

/// The person behind a valid session cookie.
#[derive(Debug, Clone)]
pub struct SignedInUser {
    pub user: UserRecord,
    pub memberships: Vec<Membership>,
    pub session_expires_at: UnixTime,
    /// To be sent back with state-changing requests made with the session (the server names the header).
    pub csrf_token: String,
    session_id_hash: String,
    csrf_hash: String,
}

impl SignedInUser {
    /// Checks the CSRF token of a state-changing request made with the session cookie.
    pub fn check_csrf(&self, presented: Option<&str>) -> Result<(), CoreError> {
        match presented {
            // Hashes are compared, so the comparison's timing says nothing about the token.
            Some(token) if secret_hash(token.trim()) == self.csrf_hash => Ok(()),
            _ => Err(CoreError::Forbidden(
                "a state-changing request made with the session needs its CSRF token from /auth/me"
                    .into(),
            )),
        }
    }

    /// How this user appears in audit events.
    pub fn actor_id(&self) -> String {
        format!("user:{}", self.user.id)
    }

    /// `/auth/me`'s answer.
    pub fn view(&self) -> Value {
        serde_json::json!({
            "user": {
                "id": self.user.id,
                "issuer": self.user.issuer,
                "subject": self.user.subject,
                "email": self.user.email,
                "display_name": self.user.display_name,
                "created_at": self.user.created_at.to_rfc3339(),
                "last_login_at": self.user.last_login_at.map(UnixTime::to_rfc3339),
            },
            "memberships": self.memberships.iter().map(MembershipView::from).collect::<Vec<_>>(),
            "csrf_token": self.csrf_token,
            "session_expires_at": self.session_expires_at.to_rfc3339(),
        })
    }
}

/// A session just created: the cookie's secret (never stored) and its CSRF token.
#[derive(Debug, Clone)]
pub struct NewSession {
    pub secret: String,
    pub csrf_token: String,
    pub expires_at: UnixTime,
    /// The cookie's lifetime.
    pub max_age_seconds: i64,
}

/// The CSRF token of a session: a one-way function of the session secret, so knowing it reveals nothing of
/// the cookie, and another site, which cannot read the cookie, cannot compute it.
fn csrf_token_for(session_secret: &str) -> String {
    secret_hash(&format!("orchard-csrf:{session_secret}"))
}

/// The memberships that `mappings` grant to a person with `claims`. A claim matches when it is a string equal
/// to the mapping's value, a list containing that string, or a number or boolean whose text is the value.
pub fn memberships_from_claims(
    mappings: &[RoleMappingRecord],
    claims: &Map<String, Value>,
) -> Vec<Membership> {
    let matches = |claim: &Value, wanted: &str| match claim {
        Value::String(s) => s == wanted,
        Value::Array(items) => items.iter().any(|i| i.as_str() == Some(wanted)),
        Value::Bool(b) => b.to_string() == wanted,
        Value::Number(n) => n.to_string() == wanted,
        Value::Null | Value::Object(_) => false,
    };
    let mut out: Vec<Membership> = mappings
        .iter()
        .filter(|m| claims.get(&m.claim).is_some_and(|c| matches(c, &m.value)))
        .map(|m| Membership {
            role: m.role,
            tenant_id: m.tenant_id,
        })
        .collect();
    out.sort_by_key(Membership::sort_key);
    out.dedup();
    out
}

impl Orchard {
    /// Creates a session for a user who just signed in.
    pub(crate) async fn create_session(&self, user_id: &str) -> Result<NewSession, CoreError> {
        let now = self.clock.now();
        let secret = random_secret(32);
        let csrf_token = csrf_token_for(&secret);
        let max_age_seconds = self.oidc.session_ttl_seconds();
        let expires_at = now.plus_seconds(max_age_seconds);
        self.store
            .create_session(
                &SessionRecord {
                    id_hash: secret_hash(&secret),
                    user_id: user_id.to_string(),
                    csrf_hash: secret_hash(&csrf_token),
                    created_at: now,
                    expires_at,
                    revoked_at: None,
                },
                now,
            )
            .await?;
        Ok(NewSession {
            secret,
            csrf_token,
            expires_at,
            max_age_seconds,
        })
    }

    /// Resolves a session cookie. Unknown, expired and revoked sessions, and sessions of disabled users, all
    /// answer `Unauthenticated`.
    pub async fn authenticate_session(&self, secret: &str) -> Result<SignedInUser, CoreError> {
        if secret.is_empty() || secret.len() > 256 {
            return Err(CoreError::Unauthenticated);
        }
        let now = self.clock.now();
        let session = self
            .store
            .session(&secret_hash(secret))
            .await?
            .ok_or(CoreError::Unauthenticated)?;
        if session.revoked_at.is_some() || session.expires_at <= now {
            return Err(CoreError::Unauthenticated);
        }
        let user = self
            .store
            .user(&session.user_id)
            .await?
            .ok_or(CoreError::Unauthenticated)?;
        if user.disabled_at.is_some() {
            return Err(CoreError::Unauthenticated);
        }
        let memberships = self.store.user_memberships(&user.id).await?;
        Ok(SignedInUser {
            user,
            memberships,
            session_expires_at: session.expires_at,
            csrf_token: csrf_token_for(secret),
            session_id_hash: session.id_hash,
            csrf_hash: session.csrf_hash,
        })
    }

    /// Ends a session, and records the logout in the audit log.
    pub async fn end_session(
        &self,
        who: &SignedInUser,
        request_id: Option<&str>,
    ) -> Result<(), CoreError> {
        self.store
            .revoke_session(&who.session_id_hash, self.clock.now())
            .await?;
        let event = crate::reporting::audit::AuditEvent {
            actor: crate::reporting::audit::AuditActor {
                id: who.actor_id(),
                name: who.user.email.clone(),
                role: who.memberships.first().map(|m| m.role),
                tenant_id: who.memberships.first().and_then(|m| m.tenant_id),
            },
            tenant_id: None,
            action: "auth.logout".into(),
            target: Some(who.actor_id()),
            request_id: request_id.map(str::to_string),
            outcome: crate::reporting::audit::AuditOutcome::Ok,
            http_status: None,
            details: Value::Null,
        };
        if let Err(e) = self.append_audit(event).await {
            tracing::error!(error = %e, "could not record a logout in the audit log");
        }
        Ok(())
    }

    /// The role mappings (operators only).
    pub async fn list_role_mappings(
        &self,
        _operator: &OperatorCtx,
    ) -> Result<Vec<RoleMappingView>, CoreError> {
        Ok(self
            .store
            .list_role_mappings()
            .await?
            .into_iter()
            .map(RoleMappingView::from)
            .collect())
    }

    /// Adds a role mapping (operators only). Tenant roles need an existing tenant; operator and helpdesk none.
    pub async fn create_role_mapping(
        &self,
        operator: &OperatorCtx,
        req: NewRoleMapping,
    ) -> Result<RoleMappingView, CoreError> {
        let claim = req.claim.trim();
        let value = req.value.trim();
        if claim.is_empty() || claim.len() > MAX_MAPPING_FIELD {
            return Err(CoreError::Invalid(format!(
                "claim must be 1 to {MAX_MAPPING_FIELD} characters"
            )));
        }
        if value.is_empty() || value.len() > MAX_MAPPING_FIELD {
            return Err(CoreError::Invalid(format!(
                "value must be 1 to {MAX_MAPPING_FIELD} characters"
            )));
        }
        crate::access::roles::check_tenant_for_role(
            req.role,
            req.tenant_id,
            "mapping",
            "tenant_id",
        )?;
        if let Some(t) = req.tenant_id {
            if self.store.get_tenant(operator.scope(), t).await?.is_none() {
                return Err(CoreError::Invalid(format!("tenant {t} does not exist")));
            }
        }
        let record = RoleMappingRecord {
            id: uuid::Uuid::now_v7().hyphenated().to_string(),
            claim: claim.to_string(),
            value: value.to_string(),
            role: req.role,
            tenant_id: req.tenant_id,
            created_at: self.clock.now(),
            created_by: Some(operator.principal().actor()),
        };
        self.store
            .create_role_mapping(&record)
            .await
            .map_err(|e| match e {
                orchard_store::StoreError::Conflict(_) => {
                    CoreError::Conflict("the same role mapping exists already".into())
                }
                other => other.into(),
            })?;
        tracing::info!(mapping = %record.id, claim = %record.claim, role = record.role.as_str(), "role mapping created");
        Ok(record.into())
    }

    /// Deletes a role mapping (operators only). Memberships it granted end at each user's next sign-in.
    pub async fn delete_role_mapping(
        &self,
        _operator: &OperatorCtx,
        id: &str,
    ) -> Result<(), CoreError> {
        // Ids are uuids: anything else names nothing.
        if uuid::Uuid::parse_str(id).is_err() {
            return Err(CoreError::NotFound);
        }
        self.store.delete_role_mapping(id).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn mapping(
        claim: &str,
        value: &str,
        role: Role,
        tenant: Option<TenantId>,
    ) -> RoleMappingRecord {
        RoleMappingRecord {
            id: uuid::Uuid::new_v4().to_string(),
            claim: claim.into(),
            value: value.into(),
            role,
            tenant_id: tenant,
            created_at: UnixTime(0),
            created_by: None,
        }
    }

    fn claims(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    #[test]
    fn list_and_string_claims_grant_memberships_once() {
        let physics = TenantId::from_uuid(uuid::Uuid::new_v4());
        let mappings = vec![
            mapping("groups", "physics-it-admins", Role::Admin, Some(physics)),
            mapping("groups", "physics-staff", Role::Viewer, Some(physics)),
            mapping("email", "root@example.edu", Role::Operator, None),
            mapping("groups", "physics-it-admins", Role::Admin, Some(physics)),
        ];
        let got = memberships_from_claims(
            &mappings,
            &claims(json!({"groups": ["physics-it-admins", "other"], "email": "a@example.edu"})),
        );
        assert_eq!(
            got,
            vec![Membership {
                role: Role::Admin,
                tenant_id: Some(physics)
            }]
        );
        let got = memberships_from_claims(
            &mappings,
            &claims(json!({"groups": "physics-staff", "email": "root@example.edu"})),
        );
        assert_eq!(got.len(), 2);
        assert!(got.contains(&Membership {
            role: Role::Operator,
            tenant_id: None
        }));
        assert!(got.contains(&Membership {
            role: Role::Viewer,
            tenant_id: Some(physics)
        }));
    }

    #[test]
    fn absent_or_other_claims_grant_nothing() {
        let mappings = vec![mapping("groups", "physics-it-admins", Role::Operator, None)];
        for c in [
            json!({}),
            json!({"groups": []}),
            json!({"groups": null}),
            json!({"groups": {"physics-it-admins": true}}),
            json!({"roles": ["physics-it-admins"]}),
            json!({"groups": ["physics-it-admins-old"]}),
        ] {
            assert!(
                memberships_from_claims(&mappings, &claims(c.clone())).is_empty(),
                "{c}"
            );
        }
    }

    #[test]
    fn csrf_tokens_follow_the_session_and_differ_from_it() {
        let a = csrf_token_for("secret-a");
        assert_eq!(a, csrf_token_for("secret-a"));
        assert_ne!(a, csrf_token_for("secret-b"));
        assert_ne!(a, secret_hash("secret-a"));
    }
}
