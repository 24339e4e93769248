//! Break-glass local accounts: an operator's password hash, its recent failures and its backoff.

use orchard_types::{Role, UnixTime};

use crate::{rows, Store, StoreError};

/// The issuer of users that are local accounts.
pub const LOCAL_ISSUER: &str = "local";

/// A local account as sign-in needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalAccountRecord {
    pub user_id: String,
    pub username: String,
    pub password_hash: String,
    pub failed_attempts: i64,
    /// Until when the account is in backoff (only sources without recent failures are heard meanwhile).
    pub locked_until: Option<UnixTime>,
    pub disabled_at: Option<UnixTime>,
}

impl Store {
    /// Creates or replaces the local operator `username` with `password_hash`: the user row (issuer `local`),
    /// its single operator membership and the account, in one transaction. Clears failures and the lock, and
    /// ends the account's sessions: a password is reset because the old one may be known to someone else.
    pub async fn set_local_account(
        &self,
        new_user_id: &str,
        username: &str,
        password_hash: &str,
        now: UnixTime,
    ) -> Result<String, StoreError> {
        let mut tx = self.begin_write().await?;
        let row = sqlx::query(
            "INSERT INTO users (id, issuer, subject, email, display_name, created_at) \
             VALUES ($1, $2, $3, NULL, $3, $4) \
             ON CONFLICT (issuer, subject) DO UPDATE SET display_name = excluded.display_name \
             RETURNING id",
        )
        .bind(new_user_id)
        .bind(LOCAL_ISSUER)
        .bind(username)
        .bind(now.0)
        .fetch_one(&mut *tx)
        .await?;
        let user_id = rows::text(&row, "id")?;
        sqlx::query("DELETE FROM memberships WHERE user_id = $1")
            .bind(&user_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO memberships (user_id, role, tenant_id, created_at) VALUES ($1, $2, NULL, $3)",
        )
        .bind(&user_id)
        .bind(Role::Operator.as_str())
        .bind(now.0)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO local_accounts (user_id, password_hash, failed_attempts, locked_until, created_at, \
             updated_at) VALUES ($1, $2, 0, NULL, $3, $3) \
             ON CONFLICT (user_id) DO UPDATE SET password_hash = excluded.password_hash, \
             failed_attempts = 0, locked_until = NULL, updated_at = excluded.updated_at",
        )
        .bind(&user_id)
        .bind(password_hash)
        .bind(now.0)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE sessions SET revoked_at = $2 WHERE user_id = $1 AND revoked_at IS NULL",
        )
        .bind(&user_id)
        .bind(now.0)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(user_id)
    }

    /// The local account of `username`, if there is one.
    pub async fn local_account(
        &self,
        username: &str,
    ) -> Result<Option<LocalAccountRecord>, StoreError> {
        let row = sqlx::query(
            "SELECT u.id, u.subject, u.disabled_at, a.password_hash, a.failed_attempts, a.locked_until \
             FROM users u JOIN local_accounts a ON a.user_id = u.id \
             WHERE u.issuer = $1 AND u.subject = $2",
        )
        .bind(LOCAL_ISSUER)
        .bind(username)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(LocalAccountRecord {
                user_id: rows::text(&r, "id")?,
                username: rows::text(&r, "subject")?,
                password_hash: rows::text(&r, "password_hash")?,
                failed_attempts: rows::int(&r, "failed_attempts")?,
                locked_until: rows::opt_time(&r, "locked_until")?,
                disabled_at: rows::opt_time(&r, "disabled_at")?,
            })
        })
        .transpose()
    }

    /// Counts a failed sign-in and sets the account's backoff (`locked_until`) from the new count, in one
    /// transaction; returns the count (0 when `user_id` is no account). The count starts again at 1 when the
    /// previous failure was at `forget_before` or earlier, so old failures do not add up for ever.
    pub async fn record_local_failure(
        &self,
        user_id: &str,
        now: UnixTime,
        forget_before: UnixTime,
        backoff_until: impl Fn(i64) -> Option<UnixTime>,
    ) -> Result<i64, StoreError> {
        let mut tx = self.begin_write().await?;
        // `updated_at` moves only with a failure, a success or a reset (both of which clear the count), so it
        // is the time of the last failure whenever the count is above zero.
        let row = sqlx::query(
            "UPDATE local_accounts SET failed_attempts = CASE WHEN updated_at <= $3 THEN 1 \
             ELSE failed_attempts + 1 END, updated_at = $2 WHERE user_id = $1 RETURNING failed_attempts",
        )
        .bind(user_id)
        .bind(now.0)
        .bind(forget_before.0)
        .fetch_optional(&mut *tx)
        .await?;
        // No account (an unknown name): the same statements and commit anyway, so the caller's timing is the
        // same for names that exist and names that do not.
        let failures = match row {
            Some(row) => rows::int(&row, "failed_attempts")?,
            None => 0,
        };
        sqlx::query("UPDATE local_accounts SET locked_until = $2 WHERE user_id = $1")
            .bind(user_id)
            .bind(backoff_until(failures).map(|t| t.0))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(failures)
    }

    /// A successful sign-in: failures cleared, last login noted.
    pub async fn record_local_success(
        &self,
        user_id: &str,
        now: UnixTime,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "UPDATE local_accounts SET failed_attempts = 0, locked_until = NULL, updated_at = $2 \
             WHERE user_id = $1",
        )
        .bind(user_id)
        .bind(now.0)
        .execute(&mut *tx)
        .await?;
        sqlx::query("UPDATE users SET last_login_at = $2 WHERE id = $1")
            .bind(user_id)
            .bind(now.0)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }
}
