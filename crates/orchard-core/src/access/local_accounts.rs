//! Break-glass sign-in: a few central-IT operators with a local password, for when the university's identity
//! provider is down. Passwords are argon2id (memory-hard, salted; only the PHC string is stored), verified on
//! blocking threads. Failures slow the guessing source down and put the account in a backoff that the
//! guessing sources cannot pass but a clean source with the right password can ([`Orchard::local_sign_in`]):
//! nobody can hold the emergency account locked. Every attempt is audited. Local accounts are made on the
//! server host (`orchard local-account set`), never through the API.

use std::net::IpAddr;

use argon2::password_hash::{
    rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString,
};
use argon2::Argon2;
use orchard_types::UnixTime;

use crate::access::users::NewSession;
use crate::reporting::audit::{AuditActor, AuditEvent, AuditOutcome};
use crate::{CoreError, Orchard};

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

/// The answer to a break-glass sign-in that was heard.
#[derive(Debug)]
pub enum LocalSignIn {
    /// The right password: a session.
    SignedIn(NewSession),
    /// The source failed too often lately; it may try again after this many seconds. Decided before the
    /// account is looked at, so it says nothing about the account.
    Throttled { retry_after_seconds: i64 },
}

impl Orchard {
    /// Signs a break-glass operator in. Unknown user, wrong password, disabled account and an account in
    /// backoff seen from a guessing source all answer the same `Unauthenticated` after the same work (one
    /// argon2 verification on a blocking thread, against a dummy hash for unknown names); the audit log and the
    /// server log say which.
    ///
    /// Limits (see [`crate::limits`]): a source (`source`, the peer address) with [`crate::limits::FREE_FAILURES`]
    /// recent failures waits a doubling time before it is heard again ([`LocalSignIn::Throttled`]). An account
    /// with as many recent failures is in backoff: meanwhile only sources with fewer than
    /// [`crate::limits::ACCOUNT_BACKOFF_SOURCE_ALLOWANCE`] recent failures are heard, so the real operator
    /// at a clean machine still gets in with the right password while whoever guesses elsewhere cannot hold
    /// the account locked. Failures are forgotten an hour after the last one and cleared by a success.
    pub async fn local_sign_in(
        &self,
        username: &str,
        password: &str,
        request_id: Option<&str>,
        source: Option<IpAddr>,
    ) -> Result<LocalSignIn, CoreError> {
        let now = self.clock.now();
        let source = source.unwrap_or(IpAddr::from([0, 0, 0, 0]));
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
        if let Some(wait) = self.abuse.source_wait(source, now) {
            self.append_audit(audit(AuditOutcome::Denied, "source throttled", None))
                .await?;
            tracing::warn!(%source, retry_after = wait, "break-glass sign-in refused: source throttled");
            return Ok(LocalSignIn::Throttled {
                retry_after_seconds: wait,
            });
        }
        let account = if valid_username(username) && password.len() <= 1024 {
            self.store.local_account(username).await?
        } else {
            None
        };
        // Always exactly one verification, so the answer's timing does not tell which refusal it was.
        let phc = account
            .as_ref()
            .map_or_else(|| DUMMY_HASH.to_owned(), |a| a.password_hash.clone());
        let password_ok = self.verify_password_off_runtime(password, phc).await?;

        let refusal = match &account {
            None => Some("unknown user"),
            Some(a) if a.disabled_at.is_some() => Some("disabled"),
            Some(a)
                if a.locked_until.is_some_and(|t| t > now)
                    && self.abuse.source_failures(source, now)
                        >= crate::limits::ACCOUNT_BACKOFF_SOURCE_ALLOWANCE =>
            {
                Some("account in backoff, source has failed before")
            }
            Some(_) if !password_ok => Some("wrong password"),
            Some(_) => None,
        };
        let user_id = account.as_ref().map(|a| a.user_id.as_str());
        if let Some(reason) = refusal {
            self.abuse.record_source_failure(source, now);
            // Every refusal runs the same statements (an unknown name's update changes no row), so the time
            // the answer takes tells neither whether the name exists nor whether the password was right.
            self.store
                .record_local_failure(
                    user_id.unwrap_or(""),
                    now,
                    UnixTime(now.0 - crate::limits::FAILURE_WINDOW_SECONDS),
                    |failures| {
                        crate::limits::backoff_seconds(failures).map(|s| UnixTime(now.0 + s))
                    },
                )
                .await?;
            self.append_audit(audit(AuditOutcome::Denied, reason, user_id))
                .await?;
            // The name only when it is an account's: a refused "name" is often a password typed one field early.
            tracing::warn!(user = ?user_id, %source, reason, "break-glass sign-in refused");
            return Err(CoreError::Unauthenticated);
        }
        let Some(account) = account else {
            return Err(CoreError::Unauthenticated);
        };
        self.abuse.forget_source(source);
        self.store
            .record_local_success(&account.user_id, now)
            .await?;
        let session = self.create_session(&account.user_id).await?;
        self.append_audit(audit(AuditOutcome::Ok, "signed in", Some(&account.user_id)))
            .await?;
        tracing::warn!(%username, %source, "break-glass operator signed in");
        Ok(LocalSignIn::SignedIn(session))
    }

    /// argon2 takes a core and ~19 MiB for a while: it runs on a blocking thread, never on the async runtime,
    /// and only a few at once (the rest wait their turn).
    async fn verify_password_off_runtime(
        &self,
        password: &str,
        phc: String,
    ) -> Result<bool, CoreError> {
        let _permit = self
            .abuse
            .password_checks
            .acquire()
            .await
            .map_err(|e| CoreError::Internal(format!("password check limit: {e}")))?;
        let attempt = password.to_owned();
        tokio::task::spawn_blocking(move || verify_password(&attempt, &phc))
            .await
            .map_err(|e| CoreError::Internal(format!("argon2 task: {e}")))
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
