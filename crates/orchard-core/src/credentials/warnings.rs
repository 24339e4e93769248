//! Expiry warnings: when a credential of the register reaches a warning threshold (60, 30, 7 and 1 days by
//! default) or expires, its owner (the department's contact) and central IT get one e-mail each.
//!
//! Each warning is a row of `credential_warnings`, unique per (credential, its expiry, threshold, recipient). A
//! check records the warnings now due and claims the pending ones in one unit of work, then sends each and marks
//! it sent. A node that dies after claiming leaves a claim that runs out ([`CLAIM_SECONDS`]) and the next check
//! sends it; a failed send is tried again after a backoff. So each warning goes out once, by one node, even when
//! the mail server is down for a while. A warning still waiting when a tighter threshold falls due is superseded:
//! the owner gets the current one. A renewed credential has a new expiry and is warned about afresh.

use std::sync::Arc;
use std::time::Duration;

use orchard_store::{CredentialWarningRecord, NewCredentialWarning};

use super::{Credential, CredentialKind, CredentialState};
use crate::access::capability::SystemCtx;
use crate::jobs::{Job, Lease, Step};
use crate::reporting::audit::{AuditActor, AuditEvent, AuditOutcome};
use crate::{CoreError, Orchard};

/// How long a claimed warning is this node's to send before another node may take it over.
pub const CLAIM_SECONDS: i64 = 600;
/// Warnings claimed per round.
const CLAIM_BATCH: i64 = 100;
/// The first retry of a failed send waits this long, doubling per attempt up to [`MAX_BACKOFF_SECONDS`].
const FIRST_BACKOFF_SECONDS: i64 = 300;
const MAX_BACKOFF_SECONDS: i64 = 6 * 3600;

/// What one check did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WarningRound {
    /// Warnings newly due (recorded).
    pub recorded: u64,
    /// Warnings delivered.
    pub sent: u64,
    /// Warnings whose sending failed (tried again later).
    pub failed: u64,
    /// Warnings claimed this round (a full batch means more may wait).
    pub claimed: u64,
}

fn backoff_seconds(attempts: i64) -> i64 {
    let doublings = u32::try_from(attempts.saturating_sub(1).clamp(0, 16)).unwrap_or(16);
    FIRST_BACKOFF_SECONDS
        .saturating_mul(1_i64 << doublings)
        .min(MAX_BACKOFF_SECONDS)
}

/// The warning level a credential has reached: its tightest threshold, or 0 once expired. Missing credentials
/// and device identities (which renew themselves and are watched in aggregate) are not mailed about.
fn warning_level(c: &Credential) -> Option<i64> {
    if c.kind == CredentialKind::DeviceIdentities {
        return None;
    }
    match c.state {
        CredentialState::Warning => c.warning_threshold_days,
        CredentialState::Expired => Some(0),
        CredentialState::Ok | CredentialState::Missing => None,
    }
}

fn message(c: &Credential, level: i64) -> (String, String) {
    let owner = c
        .owner
        .tenant_name
        .clone()
        .unwrap_or_else(|| "central IT".into());
    let expires = c.expires_at.clone().unwrap_or_default();
    let subject = if level == 0 {
        format!("[Orchard] EXPIRED: {} of {owner}", c.name)
    } else {
        format!(
            "[Orchard] {} of {owner} expires in {} days ({level}-day warning)",
            c.name,
            c.days_left.unwrap_or(level)
        )
    };
    let mut body = format!(
        "{what}\nOwner: {owner}\nExpires: {expires}\n\nHow to renew: {how}\n",
        what = c.name,
        how = c.renew.instruction
    );
    if let Some(api) = &c.renew.api {
        body.push_str(&format!("API: {api}\n"));
    }
    if let Some(cli) = &c.renew.cli {
        body.push_str(&format!("CLI: {cli}\n"));
    }
    body.push_str(&format!("\nCredential: {} ({})\n", c.id, c.kind.as_str()));
    (subject, body)
}

impl Orchard {
    /// One expiry check (the [`CredentialExpiryJob`]'s step; tests call it with an injected clock): records the
    /// warnings now due, claims pending ones for `owner` in the same unit of work, sends them and records the
    /// outcome. Without a mailer or recipients it does nothing.
    pub async fn check_credential_expiry_once(
        &self,
        system: &SystemCtx,
        owner: &str,
    ) -> Result<WarningRound, CoreError> {
        let Some(mailer) = self.credentials.mail.clone() else {
            return Ok(WarningRound::default());
        };
        let register = self.credential_register_for_system(system).await?;
        let now = self.clock.now();
        let central = self.credentials.central_it_email.clone();
        let mut due = Vec::new();
        for c in &register.credentials {
            let (Some(level), Some(expiry)) = (warning_level(c), c.expiry) else {
                continue;
            };
            let (subject, body) = message(c, level);
            let mut recipients: Vec<String> = Vec::new();
            if let Some(contact) = c
                .owner
                .contact_email
                .as_deref()
                .filter(|_| c.tenant.is_some())
            {
                recipients.push(contact.to_owned());
            }
            if let Some(central) = &central {
                if !recipients.iter().any(|r| r.eq_ignore_ascii_case(central)) {
                    recipients.push(central.clone());
                }
            }
            for recipient in recipients {
                due.push(NewCredentialWarning {
                    id: uuid::Uuid::now_v7().to_string(),
                    credential_key: c.id.clone(),
                    expires_at: expiry,
                    threshold_days: level,
                    recipient,
                    tenant_id: c.tenant,
                    subject: subject.clone(),
                    body: body.clone(),
                });
            }
        }
        let mut unit = self.store.begin_unit().await?;
        let recorded = unit.record_credential_warnings(&due, now).await?;
        let claimed = unit
            .claim_credential_warnings(owner, now, now.plus_seconds(CLAIM_SECONDS), CLAIM_BATCH)
            .await?;
        unit.commit().await?;
        let mut round = WarningRound {
            recorded,
            claimed: claimed.len() as u64,
            ..WarningRound::default()
        };
        for warning in &claimed {
            match self.emit_expiry_warning(&mailer, warning).await {
                Ok(()) => {
                    if self
                        .store
                        .mark_credential_warning_sent(&warning.id, owner, self.clock.now())
                        .await?
                    {
                        round.sent += 1;
                        self.audit_warning_sent(warning).await;
                    }
                }
                Err(error) => {
                    tracing::warn!(credential = %warning.credential_key, threshold_days = warning.threshold_days, attempts = warning.attempts, %error, "an expiry warning could not be sent; it is tried again later");
                    let retry_at = self
                        .clock
                        .now()
                        .plus_seconds(backoff_seconds(warning.attempts));
                    self.store
                        .mark_credential_warning_failed(&warning.id, owner, retry_at, &error)
                        .await?;
                    round.failed += 1;
                }
            }
        }
        Ok(round)
    }

    /// A sent warning in the audit log (action `credential.warning_sent`, actor `system:credential-expiry`, the
    /// owning tenant); a failure to record it is logged and does not unsend it.
    async fn audit_warning_sent(&self, warning: &CredentialWarningRecord) {
        let event = AuditEvent {
            actor: AuditActor {
                id: "system:credential-expiry".into(),
                name: Some("credential expiry check".into()),
                role: None,
                tenant_id: None,
            },
            tenant_id: warning.tenant_id,
            action: "credential.warning_sent".into(),
            target: Some(warning.credential_key.clone()),
            request_id: None,
            outcome: AuditOutcome::Ok,
            http_status: None,
            details: serde_json::json!({
                "threshold_days": warning.threshold_days,
                "expires_at": warning.expires_at.to_rfc3339(),
                "recipient": warning.recipient,
                "attempts": warning.attempts,
            }),
        };
        if let Err(e) = self.append_audit(event).await {
            tracing::error!(error = %e, credential = %warning.credential_key, "a sent expiry warning could not be audited");
        }
    }

    /// The one place an expiry warning leaves Orchard (e-mail today; the webhook event belongs here too).
    async fn emit_expiry_warning(
        &self,
        mailer: &super::mail::Mailer,
        warning: &CredentialWarningRecord,
    ) -> Result<(), String> {
        tracing::info!(credential = %warning.credential_key, threshold_days = warning.threshold_days, tenant = ?warning.tenant_id, "sending an expiry warning");
        mailer
            .send(&warning.recipient, &warning.subject, &warning.body)
            .await
    }

    /// The ledger of expiry warnings (operators and tests).
    pub async fn credential_warnings(
        &self,
        _system: &SystemCtx,
    ) -> Result<Vec<CredentialWarningRecord>, CoreError> {
        Ok(self.store.credential_warnings().await?)
    }
}

/// Checks the register and sends due expiry warnings, on one node at a time (hourly by default).
pub struct CredentialExpiryJob {
    orchard: Arc<Orchard>,
    system: SystemCtx,
    owner: String,
    interval: Duration,
}

impl CredentialExpiryJob {
    /// None when no mailer is configured (nothing to send).
    pub fn new(orchard: Arc<Orchard>, system: SystemCtx, owner: &str) -> Option<Self> {
        orchard.credentials.mail.as_ref()?;
        let interval = orchard.credentials.check_interval;
        Some(Self {
            orchard,
            system,
            owner: owner.to_owned(),
            interval,
        })
    }
}

impl Job for CredentialExpiryJob {
    fn name(&self) -> &str {
        "credential-expiry"
    }

    fn interval(&self) -> Duration {
        self.interval
    }

    fn lease(&self) -> Lease {
        Lease::Cluster {
            lease: Duration::from_secs(u64::try_from(CLAIM_SECONDS).unwrap_or(600)),
        }
    }

    async fn run_once(&self) -> Result<Step, CoreError> {
        let round = self
            .orchard
            .check_credential_expiry_once(&self.system, &self.owner)
            .await?;
        if round.recorded + round.sent + round.failed > 0 {
            tracing::info!(
                recorded = round.recorded,
                sent = round.sent,
                failed = round.failed,
                "credential expiry check"
            );
        }
        if round.claimed >= CLAIM_BATCH as u64 {
            return Ok(Step::More(Duration::ZERO));
        }
        Ok(Step::Idle)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        assert_eq!(backoff_seconds(1), 300);
        assert_eq!(backoff_seconds(2), 600);
        assert_eq!(backoff_seconds(3), 1200);
        assert_eq!(backoff_seconds(40), MAX_BACKOFF_SECONDS);
        assert_eq!(backoff_seconds(0), 300);
    }
}
