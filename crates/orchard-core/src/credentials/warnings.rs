//! Expiry warnings: when a credential of the register reaches a warning threshold (60, 30, 7 and 1 days by
//! default) or expires, its owner (the department's contact) and central IT get one e-mail each, and one
//! `expiry.warning` webhook event goes to the owning department's endpoints and the global ones (central IT's
//! own credentials: the global ones only).
//!
//! The webhook event is written to the outbox in the unit of work that records it in the ledger (recipient
//! [`WEBHOOK_RECIPIENT`], `sent` at once), so it is published once per threshold whatever the mail server does,
//! and also when no mailer is configured.
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
/// The ledger's recipient for the webhook event of a warning (not an address: it has no `@`).
pub const WEBHOOK_RECIPIENT: &str = "webhooks";
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
    /// Warnings newly published as webhook events.
    pub published: u64,
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

/// The `data` of an `expiry.warning` webhook event: what expires, whose it is, when, and how to renew it.
fn event_data(c: &Credential, level: i64) -> serde_json::Value {
    serde_json::json!({
        "credential": c.kind.as_str(),
        "id": c.id,
        "name": c.name,
        "owner": c.owner.tenant_name.clone().unwrap_or_else(|| "central IT".into()),
        "expires_at": c.expires_at,
        "days_left": c.days_left,
        "threshold_days": level,
        "expired": level == 0,
        "renew": c.renew.instruction,
    })
}

impl Orchard {
    /// One expiry check (the [`CredentialExpiryJob`]'s step; tests call it with an injected clock): records the
    /// warnings now due, publishes their webhook events and claims pending e-mails for `owner`, all in one unit
    /// of work, then sends the e-mails and records the outcome. Without a mailer only the events go out.
    pub async fn check_credential_expiry_once(
        &self,
        system: &SystemCtx,
        owner: &str,
    ) -> Result<WarningRound, CoreError> {
        let mailer = self.credentials.mail.clone();
        let register = self.credential_register_for_system(system).await?;
        let now = self.clock.now();
        let central = self.credentials.central_it_email.clone();
        let mut due = Vec::new();
        let mut events = Vec::new();
        for c in &register.credentials {
            let (Some(level), Some(expiry)) = (warning_level(c), c.expiry) else {
                continue;
            };
            let (subject, body) = message(c, level);
            let warning = |recipient: String| NewCredentialWarning {
                id: uuid::Uuid::now_v7().to_string(),
                credential_key: c.id.clone(),
                expires_at: expiry,
                threshold_days: level,
                recipient,
                tenant_id: c.tenant,
                subject: subject.clone(),
                body: body.clone(),
            };
            events.push((warning(WEBHOOK_RECIPIENT.to_owned()), event_data(c, level)));
            if mailer.is_none() {
                continue;
            }
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
            due.extend(recipients.into_iter().map(warning));
        }
        let mut unit = self.store.begin_unit().await?;
        let recorded = unit.record_credential_warnings(&due, now).await?;
        let mut published = 0;
        for (warning, data) in events {
            if unit.record_credential_warning_sent(&warning, now).await? {
                self.record_webhook_event(
                    &mut unit,
                    warning.tenant_id,
                    crate::webhooks::EVENT_EXPIRY_WARNING,
                    data,
                    now,
                )
                .await?;
                published += 1;
            }
        }
        let claimed = match &mailer {
            Some(_) => {
                unit.claim_credential_warnings(
                    owner,
                    now,
                    now.plus_seconds(CLAIM_SECONDS),
                    CLAIM_BATCH,
                )
                .await?
            }
            None => Vec::new(),
        };
        let wake = unit.recorded_webhook_events();
        unit.commit().await?;
        if wake {
            self.wake_webhooks();
        }
        let Some(mailer) = mailer else {
            return Ok(WarningRound {
                published,
                ..WarningRound::default()
            });
        };
        let mut round = WarningRound {
            recorded,
            published,
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

    /// The one place an expiry warning's e-mail leaves Orchard (its webhook event went out with the ledger row).
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
    /// Runs with or without a mailer: the webhook events go out either way.
    pub fn new(orchard: Arc<Orchard>, system: SystemCtx, owner: &str) -> Self {
        let interval = orchard.credentials.check_interval;
        Self {
            orchard,
            system,
            owner: owner.to_owned(),
            interval,
        }
    }
}

impl Job for CredentialExpiryJob {
    /// Without a mailer the job publishes webhook events only and runs under its own name: the cluster lease
    /// runs a name at most once per interval, so a server restarted with SMTP newly configured mails the warnings
    /// due at its start instead of an hour later.
    fn name(&self) -> &str {
        if self.orchard.credentials.mail.is_some() {
            "credential-expiry"
        } else {
            "credential-expiry-events"
        }
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
        if round.recorded + round.published + round.sent + round.failed > 0 {
            tracing::info!(
                recorded = round.recorded,
                published = round.published,
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
