//! People who sign in through OpenID Connect: users, their memberships, the operators' role mappings that
//! grant them, sign-ins under way, and browser sessions.
//!
//! Sessions and pending logins are looked up by the hash of their secret; the secrets themselves never reach
//! the database.

use orchard_types::{Role, TenantId, UnixTime};

use crate::sql::Sql;
use crate::{rows, Store, StoreError};

/// A person known from the identity provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord {
    pub id: String,
    pub issuer: String,
    pub subject: String,
    pub email: Option<String>,
    pub display_name: Option<String>,
    pub created_at: UnixTime,
    pub last_login_at: Option<UnixTime>,
    pub disabled_at: Option<UnixTime>,
}

/// One role a user holds: operator and helpdesk without a tenant, admin and viewer on one tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Membership {
    pub role: Role,
    pub tenant_id: Option<TenantId>,
}

/// What a sign-in tells about the person; the user row is created or refreshed from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserLogin {
    /// Used only when the user is new.
    pub new_id: String,
    pub issuer: String,
    pub subject: String,
    pub email: Option<String>,
    pub display_name: Option<String>,
}

/// An operator's rule: a claim `claim` equal to (or, for a list, containing) `value` grants the membership.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleMappingRecord {
    pub id: String,
    pub claim: String,
    pub value: String,
    pub role: Role,
    pub tenant_id: Option<TenantId>,
    pub created_at: UnixTime,
    pub created_by: Option<String>,
}

/// A sign-in between the redirect to the provider and its answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingLoginRecord {
    pub state_hash: String,
    /// The PKCE code verifier, sealed with the data key.
    pub pkce_verifier_sealed: Vec<u8>,
    pub nonce: String,
    pub created_at: UnixTime,
    pub expires_at: UnixTime,
}

/// A browser session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    pub id_hash: String,
    pub user_id: String,
    pub csrf_hash: String,
    pub created_at: UnixTime,
    pub expires_at: UnixTime,
    pub revoked_at: Option<UnixTime>,
}

const USER_COLUMNS: &str =
    "id, issuer, subject, email, display_name, created_at, last_login_at, disabled_at";
const MAPPING_COLUMNS: &str = "id, claim, value, role, tenant_id, created_at, created_by";
const SESSION_COLUMNS: &str = "id_hash, user_id, csrf_hash, created_at, expires_at, revoked_at";

fn user_from_row(row: &sqlx::any::AnyRow) -> Result<UserRecord, StoreError> {
    Ok(UserRecord {
        id: rows::text(row, "id")?,
        issuer: rows::text(row, "issuer")?,
        subject: rows::text(row, "subject")?,
        email: rows::opt_text(row, "email")?,
        display_name: rows::opt_text(row, "display_name")?,
        created_at: rows::time(row, "created_at")?,
        last_login_at: rows::opt_time(row, "last_login_at")?,
        disabled_at: rows::opt_time(row, "disabled_at")?,
    })
}

fn mapping_from_row(row: &sqlx::any::AnyRow) -> Result<RoleMappingRecord, StoreError> {
    Ok(RoleMappingRecord {
        id: rows::text(row, "id")?,
        claim: rows::text(row, "claim")?,
        value: rows::text(row, "value")?,
        role: rows::role(row, "role")?,
        tenant_id: rows::opt_tenant_id(row, "tenant_id")?,
        created_at: rows::time(row, "created_at")?,
        created_by: rows::opt_text(row, "created_by")?,
    })
}

fn session_from_row(row: &sqlx::any::AnyRow) -> Result<SessionRecord, StoreError> {
    Ok(SessionRecord {
        id_hash: rows::text(row, "id_hash")?,
        user_id: rows::text(row, "user_id")?,
        csrf_hash: rows::text(row, "csrf_hash")?,
        created_at: rows::time(row, "created_at")?,
        expires_at: rows::time(row, "expires_at")?,
        revoked_at: rows::opt_time(row, "revoked_at")?,
    })
}

impl Membership {
    /// A stable order: by role name, then tenant.
    pub fn sort_key(&self) -> (&'static str, String) {
        (
            self.role.as_str(),
            self.tenant_id.map(|t| t.to_string()).unwrap_or_default(),
        )
    }
}

impl Store {
    /// Creates the user on first sign-in or refreshes e-mail, name and last login, and replaces the user's
    /// memberships with `memberships`, in one transaction. Returns the user as stored.
    pub async fn record_user_login(
        &self,
        login: &UserLogin,
        memberships: &[Membership],
        now: UnixTime,
    ) -> Result<UserRecord, StoreError> {
        let mut tx = self.begin_write().await?;
        let sql = format!(
            "INSERT INTO users (id, issuer, subject, email, display_name, created_at, last_login_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $6) \
             ON CONFLICT (issuer, subject) DO UPDATE SET email = excluded.email, \
             display_name = excluded.display_name, last_login_at = excluded.last_login_at \
             RETURNING {USER_COLUMNS}"
        );
        let row = sqlx::query(&sql)
            .bind(&login.new_id)
            .bind(&login.issuer)
            .bind(&login.subject)
            .bind(login.email.as_deref())
            .bind(login.display_name.as_deref())
            .bind(now.0)
            .fetch_one(&mut *tx)
            .await?;
        let user = user_from_row(&row)?;
        sqlx::query("DELETE FROM memberships WHERE user_id = $1")
            .bind(&user.id)
            .execute(&mut *tx)
            .await?;
        let mut unique = memberships.to_vec();
        unique.sort_by_key(Membership::sort_key);
        unique.dedup();
        for m in &unique {
            sqlx::query(
                "INSERT INTO memberships (user_id, role, tenant_id, created_at) VALUES ($1, $2, $3, $4)",
            )
            .bind(&user.id)
            .bind(m.role.as_str())
            .bind(m.tenant_id.map(|t| t.to_string()))
            .bind(now.0)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(user)
    }

    /// Removes every membership of the user with this issuer and subject, if there is one (a person whose
    /// claims no longer map to any role keeps no access from an earlier sign-in).
    pub async fn clear_memberships_of_subject(
        &self,
        issuer: &str,
        subject: &str,
    ) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "DELETE FROM memberships WHERE user_id IN \
             (SELECT id FROM users WHERE issuer = $1 AND subject = $2)",
        )
        .bind(issuer)
        .bind(subject)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    /// The user with this issuer and subject.
    pub async fn user_by_subject(
        &self,
        issuer: &str,
        subject: &str,
    ) -> Result<Option<UserRecord>, StoreError> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE issuer = $1 AND subject = $2");
        sqlx::query(&sql)
            .bind(issuer)
            .bind(subject)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(user_from_row)
            .transpose()
    }

    /// Users in the scope (a tenant sees the users holding a membership of it), by email then id.
    pub async fn list_users(
        &self,
        scope: crate::Scope,
        limit: i64,
        offset: i64,
    ) -> Result<Vec<UserRecord>, StoreError> {
        let mut sql = Sql::new(&format!("SELECT {USER_COLUMNS} FROM users WHERE 1 = 1"));
        if scope.tenant_id().is_some() {
            // A tenant sees the people holding one of its memberships.
            sql.push(" AND id IN (SELECT user_id FROM memberships WHERE 1 = 1")
                .in_scope("tenant_id", scope)
                .push(")");
        }
        sql.push(&format!(
            " ORDER BY email, id LIMIT {} OFFSET {}",
            limit.max(0),
            offset.max(0)
        ));
        sql.query()
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(user_from_row)
            .collect()
    }

    pub async fn user(&self, id: &str) -> Result<Option<UserRecord>, StoreError> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1");
        sqlx::query(&sql)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(user_from_row)
            .transpose()
    }

    /// Marks a user disabled (or enabled again with `None`): a disabled user cannot sign in or use a session.
    pub async fn set_user_disabled(
        &self,
        id: &str,
        disabled_at: Option<UnixTime>,
    ) -> Result<(), StoreError> {
        let done = sqlx::query("UPDATE users SET disabled_at = $2 WHERE id = $1")
            .bind(id)
            .bind(disabled_at.map(|t| t.0))
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    /// The user's memberships, operator and helpdesk first, then by tenant.
    pub async fn user_memberships(&self, user_id: &str) -> Result<Vec<Membership>, StoreError> {
        let rows = sqlx::query("SELECT role, tenant_id FROM memberships WHERE user_id = $1")
            .bind(user_id)
            .fetch_all(&self.pool)
            .await?;
        let mut out = rows
            .iter()
            .map(|row| {
                Ok(Membership {
                    role: rows::role(row, "role")?,
                    tenant_id: rows::opt_tenant_id(row, "tenant_id")?,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        out.sort_by_key(Membership::sort_key);
        Ok(out)
    }

    /// Every role mapping, oldest first.
    pub async fn list_role_mappings(&self) -> Result<Vec<RoleMappingRecord>, StoreError> {
        let sql = format!("SELECT {MAPPING_COLUMNS} FROM role_mappings ORDER BY created_at, id");
        sqlx::query(&sql)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(mapping_from_row)
            .collect()
    }

    /// Stores a role mapping. `Conflict` when the same rule exists; `NotFound` when its tenant does not.
    pub async fn create_role_mapping(&self, m: &RoleMappingRecord) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO role_mappings (id, claim, value, role, tenant_id, created_at, created_by) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&m.id)
        .bind(&m.claim)
        .bind(&m.value)
        .bind(m.role.as_str())
        .bind(m.tenant_id.map(|t| t.to_string()))
        .bind(m.created_at.0)
        .bind(m.created_by.as_deref())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Deletes a role mapping; `NotFound` when there is none with this id. Memberships it granted last until
    /// the user's next sign-in.
    pub async fn delete_role_mapping(&self, id: &str) -> Result<(), StoreError> {
        let done = sqlx::query("DELETE FROM role_mappings WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    /// Remembers a sign-in under way, and forgets those that expired before `now`.
    pub async fn insert_pending_login(
        &self,
        login: &PendingLoginRecord,
        now: UnixTime,
    ) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM oidc_logins WHERE expires_at <= $1")
            .bind(now.0)
            .execute(&self.pool)
            .await?;
        sqlx::query(
            "INSERT INTO oidc_logins (state_hash, pkce_verifier, nonce, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&login.state_hash)
        .bind(login.pkce_verifier_sealed.as_slice())
        .bind(&login.nonce)
        .bind(login.created_at.0)
        .bind(login.expires_at.0)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Takes (reads and deletes) the sign-in with this state hash if it has not expired: a state is good for
    /// one answer only, on whichever node receives it.
    pub async fn take_pending_login(
        &self,
        state_hash: &str,
        now: UnixTime,
    ) -> Result<Option<PendingLoginRecord>, StoreError> {
        let row = sqlx::query(
            "DELETE FROM oidc_logins WHERE state_hash = $1 \
             RETURNING state_hash, pkce_verifier, nonce, created_at, expires_at",
        )
        .bind(state_hash)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let login = PendingLoginRecord {
            state_hash: rows::text(&row, "state_hash")?,
            pkce_verifier_sealed: rows::bytes(&row, "pkce_verifier")?,
            nonce: rows::text(&row, "nonce")?,
            created_at: rows::time(&row, "created_at")?,
            expires_at: rows::time(&row, "expires_at")?,
        };
        Ok((login.expires_at > now).then_some(login))
    }

    /// Stores a new session, and forgets sessions that expired before `now`.
    pub async fn create_session(
        &self,
        session: &SessionRecord,
        now: UnixTime,
    ) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM sessions WHERE expires_at <= $1")
            .bind(now.0)
            .execute(&self.pool)
            .await?;
        sqlx::query(
            "INSERT INTO sessions (id_hash, user_id, csrf_hash, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&session.id_hash)
        .bind(&session.user_id)
        .bind(&session.csrf_hash)
        .bind(session.created_at.0)
        .bind(session.expires_at.0)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The session with this id hash, whatever its state (the caller checks expiry and revocation).
    pub async fn session(&self, id_hash: &str) -> Result<Option<SessionRecord>, StoreError> {
        let sql = format!("SELECT {SESSION_COLUMNS} FROM sessions WHERE id_hash = $1");
        sqlx::query(&sql)
            .bind(id_hash)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(session_from_row)
            .transpose()
    }

    /// Revokes a session (idempotent: the first revocation time is kept); `NotFound` when there is none.
    pub async fn revoke_session(&self, id_hash: &str, now: UnixTime) -> Result<(), StoreError> {
        let done = sqlx::query(
            "UPDATE sessions SET revoked_at = COALESCE(revoked_at, $2) WHERE id_hash = $1",
        )
        .bind(id_hash)
        .bind(now.0)
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }
}
