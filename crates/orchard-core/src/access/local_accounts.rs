//! Break-glass sign-in: a few central-IT operators with a local password, for when the university's identity
//! provider is down. Passwords are argon2id (memory-hard, salted; only the PHC string is stored). Five wrong
//! passwords in a row lock the account for 15 minutes; every attempt is audited. Local accounts are made on the
//! server host (`orchard local-account set`), never through the API.

use argon2::password_hash::{
    rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString,
};
use argon2::Argon2;
use orchard_types::UnixTime;

use crate::access::users::NewSession;
use crate::reporting::audit::{AuditActor, AuditEvent, AuditOutcome};
use crate::{CoreError, Orchard};

/// Wrong passwords in a row before the account is locked.
pub const LOCK_AFTER_FAILURES: i64 = 5;
/// How long a locked account stays locked.
pub const LOCK_SECONDS: i64 = 15 * 60;
/// Passwords shorter than this are refused when an account is set.
pub const MIN_PASSWORD_CHARS: usize = 16;

/// Hashes a password for storage (argon2id, random salt).
pub fn hash_password(password: &str) -> Result<String, CoreError> {
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(CoreError::Invalid(format!(
            "a break-glass password needs at least {MIN_PASSWORD_CHARS} characters"
        )));
    }
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| CoreError::Internal(format!("argon2: {e}")))
}

fn verify_password(password: &str, phc: &str) -> bool {
    PasswordHash::new(phc)
        .map(|parsed| {
            Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
        .unwrap_or(false)
}

fn valid_username(username: &str) -> bool {
    !username.is_empty()
        && username.len() <= 64
        && username
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'@'))
}

/// Creates or resets the break-glass operator `username` (server host only: through the binary's
/// [`crate::access::bootstrap::LocalBootstrap`]).
pub(crate) async fn set_local_account(
    store: &orchard_store::Store,
    clock: &dyn orchard_types::Clock,
    username: &str,
    password: &str,
) -> Result<String, CoreError> {
    if !valid_username(username) {
        return Err(CoreError::Invalid(
            "username: 1 to 64 letters, digits, '-', '_', '.', '@'".into(),
        ));
    }
    let password = password.to_owned();
    let hash = tokio::task::spawn_blocking(move || hash_password(&password))
        .await
        .map_err(|e| CoreError::Internal(format!("argon2 task: {e}")))??;
    let now = clock.now();
    let id = store
        .set_local_account(
            &uuid::Uuid::now_v7().hyphenated().to_string(),
            username,
            &hash,
            now,
        )
        .await?;
    tracing::warn!(user = %id, %username, "break-glass local operator account set");
    Ok(id)
}

impl Orchard {
    /// Signs a break-glass operator in. Unknown user, wrong password, locked or disabled account all answer
    /// the same `Unauthenticated` to the caller; the audit log and the server log say which.
    pub async fn local_sign_in(
        &self,
        username: &str,
        password: &str,
        request_id: Option<&str>,
    ) -> Result<NewSession, CoreError> {
        let now = self.clock.now();
        let account = if valid_username(username) && password.len() <= 1024 {
            self.store.local_account(username).await?
        } else {
            None
        };
        let audit = |outcome: AuditOutcome, reason: &str, user: Option<&str>| AuditEvent {
            actor: match user {
                Some(id) => AuditActor {
                    id: format!("user:{id}"),
                    name: Some(username.chars().take(64).collect()),
                    role: Some(orchard_types::Role::Operator),
                    tenant_id: None,
                },
                None => AuditActor::anonymous(),
            },
            tenant_id: None,
            action: "auth.local_login".into(),
            target: user.map(str::to_owned),
            request_id: request_id.map(str::to_owned),
            outcome,
            http_status: None,
            details: serde_json::json!({ "reason": reason }),
        };
        let Some(account) = account else {
            // Verify against a dummy hash anyway, so an unknown name takes as long as a wrong password.
            let _ = verify_password(password, DUMMY_HASH);
            self.record_audit(audit(AuditOutcome::Denied, "unknown user", None))
                .await?;
            return Err(CoreError::Unauthenticated);
        };
        if account.disabled_at.is_some() {
            self.record_audit(audit(
                AuditOutcome::Denied,
                "disabled",
                Some(&account.user_id),
            ))
            .await?;
            return Err(CoreError::Unauthenticated);
        }
        if account.locked_until.is_some_and(|t| t > now) {
            self.record_audit(audit(
                AuditOutcome::Denied,
                "locked",
                Some(&account.user_id),
            ))
            .await?;
            tracing::warn!(%username, "break-glass sign-in refused: account locked");
            return Err(CoreError::Unauthenticated);
        }
        let phc = account.password_hash.clone();
        let attempt = password.to_owned();
        let ok = tokio::task::spawn_blocking(move || verify_password(&attempt, &phc))
            .await
            .map_err(|e| CoreError::Internal(format!("argon2 task: {e}")))?;
        if !ok {
            self.store
                .record_local_failure(
                    &account.user_id,
                    LOCK_AFTER_FAILURES,
                    UnixTime(now.0 + LOCK_SECONDS),
                    now,
                )
                .await?;
            self.record_audit(audit(
                AuditOutcome::Denied,
                "wrong password",
                Some(&account.user_id),
            ))
            .await?;
            tracing::warn!(%username, "break-glass sign-in refused: wrong password");
            return Err(CoreError::Unauthenticated);
        }
        self.store
            .record_local_success(&account.user_id, now)
            .await?;
        let session = self.create_session(&account.user_id).await?;
        self.record_audit(audit(AuditOutcome::Ok, "signed in", Some(&account.user_id)))
            .await?;
        tracing::warn!(%username, "break-glass operator signed in");
        Ok(session)
    }
}

/// An argon2id hash of a random password nobody knows (for timing parity on unknown user names).
const DUMMY_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$0A3RjOsuT0Nkn9RMyvc8TCVkIz0hqeyDNTEyUZDBVUs";

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn passwords_hash_and_verify_and_short_ones_are_refused() {
        let phc = hash_password("correct horse battery staple").unwrap();
        assert!(phc.starts_with("$argon2id$"));
        assert!(verify_password("correct horse battery staple", &phc));
        assert!(!verify_password("correct horse battery stapl", &phc));
        assert!(hash_password("short").is_err());
        assert!(!verify_password("anything", "not a phc string"));
        assert!(PasswordHash::new(DUMMY_HASH).is_ok());
    }

    #[test]
    fn usernames_are_plain() {
        assert!(valid_username("it-oncall"));
        assert!(!valid_username("a b"));
        assert!(!valid_username(""));
    }
}
