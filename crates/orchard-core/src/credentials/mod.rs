//! The credential register: one list of every certificate and token Orchard depends on — the push certificate,
//! every DEP token, every department's Apps and Books token, the device CA, the server CA, the profile signer,
//! the server's TLS certificate, and the device identities of each department in aggregate — each with its
//! owner, expiry, state and how to renew it. The API, the CLI, `/metrics`, the web UI's "expiring credentials"
//! page and the expiry warnings ([`warnings`]) all read this one list.

pub mod mail;
pub mod warnings;

use std::time::Duration;

use orchard_store::Scope;
use orchard_types::{TenantId, UnixTime};
use serde::Serialize;

use crate::access::capability::{OversightCtx, SystemCtx};
use crate::{CoreError, Orchard};

const DAY: i64 = 86_400;

/// The default warning thresholds in days before expiry.
pub const DEFAULT_WARNING_DAYS: [i64; 4] = [60, 30, 7, 1];

/// What the register and its warnings need beyond the database: thresholds, who central IT is, the server's
/// TLS certificate (the binary reads it) and how to send e-mail.
#[derive(Debug, Clone)]
pub struct CredentialSettings {
    /// Warning thresholds in days, largest first, no duplicates, each at least 1.
    warning_days: Vec<i64>,
    /// Central IT's address: every warning goes there too.
    pub central_it_email: Option<String>,
    /// When the TLS certificate the server presents runs out (None: not known to this process).
    pub tls_certificate_not_after: Option<UnixTime>,
    /// How warnings are sent; None: the register is shown but nobody is e-mailed.
    pub mail: Option<mail::Mailer>,
    /// How often the expiry check runs (hourly by default).
    pub check_interval: Duration,
}

impl Default for CredentialSettings {
    fn default() -> Self {
        Self {
            warning_days: DEFAULT_WARNING_DAYS.to_vec(),
            central_it_email: None,
            tls_certificate_not_after: None,
            mail: None,
            check_interval: Duration::from_secs(3600),
        }
    }
}

impl CredentialSettings {
    /// Checks and orders the thresholds (any order in, largest first out).
    pub fn with_warning_days(mut self, days: &[i64]) -> Result<Self, CoreError> {
        if days.is_empty() {
            return Err(CoreError::Invalid(
                "credential warning days: give at least one threshold".into(),
            ));
        }
        if let Some(bad) = days.iter().find(|d| !(1..=3650).contains(*d)) {
            return Err(CoreError::Invalid(format!(
                "credential warning days: {bad} is not between 1 and 3650"
            )));
        }
        let mut sorted = days.to_vec();
        sorted.sort_unstable_by(|a, b| b.cmp(a));
        sorted.dedup();
        self.warning_days = sorted;
        Ok(self)
    }

    pub fn warning_days(&self) -> &[i64] {
        &self.warning_days
    }
}

/// Which credential a register entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum CredentialKind {
    PushCertificate,
    DepToken,
    AppsToken,
    DeviceCa,
    ServerCa,
    ProfileSigner,
    TlsCertificate,
    DeviceIdentities,
}

impl CredentialKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CredentialKind::PushCertificate => "push_certificate",
            CredentialKind::DepToken => "dep_token",
            CredentialKind::AppsToken => "apps_token",
            CredentialKind::DeviceCa => "device_ca",
            CredentialKind::ServerCa => "server_ca",
            CredentialKind::ProfileSigner => "profile_signer",
            CredentialKind::TlsCertificate => "tls_certificate",
            CredentialKind::DeviceIdentities => "device_identities",
        }
    }
}

/// Where a credential stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum CredentialState {
    Ok,
    /// Within a warning threshold (`warning_threshold_days` says which).
    Warning,
    Expired,
    /// Not there at all (no push certificate uploaded, a DEP token without its server token, a department
    /// without an Apps and Books token).
    Missing,
}

/// Who must renew a credential.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CredentialOwner {
    /// `central_it` or `tenant`.
    pub kind: String,
    pub tenant_id: Option<String>,
    pub tenant_name: Option<String>,
    pub contact_name: Option<String>,
    pub contact_email: Option<String>,
}

impl CredentialOwner {
    fn central_it() -> Self {
        Self {
            kind: "central_it".into(),
            tenant_id: None,
            tenant_name: None,
            contact_name: None,
            contact_email: None,
        }
    }
}

/// How to renew a credential: a short instruction and the API route and CLI command that do it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RenewalHelp {
    pub instruction: String,
    pub api: Option<String>,
    pub cli: Option<String>,
}

/// Identities expiring within a threshold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ExpiringWithin {
    pub days: i64,
    pub count: i64,
}

/// A department's device identities in aggregate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct IdentityAggregate {
    /// Enrolled iPads with an identity.
    pub devices: i64,
    /// Of those, identities that have run out (the iPad can no longer reach Orchard).
    pub expired: i64,
    /// Identities not yet expired that run out within each warning threshold.
    pub expiring_within: Vec<ExpiringWithin>,
}

/// One credential of the register.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Credential {
    /// Stable id: `push-certificate`, `dep-token:<id>`, `apps-token:<tenant id>`, `device-identities:<tenant id>`,
    /// `device-ca`, `server-ca`, `profile-signer`, `tls-certificate`.
    pub id: String,
    pub kind: CredentialKind,
    /// What it is, for people (a DEP token's name, a push certificate's topic).
    pub name: String,
    pub owner: CredentialOwner,
    /// RFC 3339; for device identities the soonest one not yet expired.
    pub expires_at: Option<String>,
    /// Whole days left (negative once expired).
    pub days_left: Option<i64>,
    pub state: CredentialState,
    /// The tightest warning threshold reached, while `state` is `warning`.
    pub warning_threshold_days: Option<i64>,
    pub renew: RenewalHelp,
    /// Device identities only.
    pub identities: Option<IdentityAggregate>,
    #[serde(skip)]
    pub(crate) expiry: Option<UnixTime>,
    #[serde(skip)]
    pub(crate) tenant: Option<TenantId>,
}

impl Credential {
    /// The owning department (None: central IT).
    pub fn tenant(&self) -> Option<TenantId> {
        self.tenant
    }

    pub fn expiry(&self) -> Option<UnixTime> {
        self.expiry
    }
}

/// The register as a caller may see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CredentialRegister {
    pub generated_at: String,
    /// The warning thresholds in days, largest first.
    pub warning_days: Vec<i64>,
    /// Soonest expiry first; missing credentials last.
    pub credentials: Vec<Credential>,
}

/// Whole days from `now` until `expiry`, rounded down (negative once expired).
pub fn days_until(expiry: UnixTime, now: UnixTime) -> i64 {
    (expiry.0 - now.0).div_euclid(DAY)
}

/// The state of a credential that runs out at `expiry`, and the tightest threshold it has reached.
pub fn state_of(
    expiry: Option<UnixTime>,
    now: UnixTime,
    warning_days: &[i64],
) -> (CredentialState, Option<i64>) {
    let Some(expiry) = expiry else {
        return (CredentialState::Missing, None);
    };
    if expiry <= now {
        return (CredentialState::Expired, None);
    }
    let left = expiry.0 - now.0;
    match warning_days
        .iter()
        .copied()
        .filter(|d| left <= d.saturating_mul(DAY))
        .min()
    {
        Some(threshold) => (CredentialState::Warning, Some(threshold)),
        None => (CredentialState::Ok, None),
    }
}

fn help(instruction: &str, api: Option<&str>, cli: Option<&str>) -> RenewalHelp {
    RenewalHelp {
        instruction: instruction.into(),
        api: api.map(Into::into),
        cli: cli.map(Into::into),
    }
}

struct Entry {
    id: String,
    kind: CredentialKind,
    name: String,
    owner: CredentialOwner,
    tenant: Option<TenantId>,
    expiry: Option<UnixTime>,
    renew: RenewalHelp,
    identities: Option<IdentityAggregate>,
}

impl Orchard {
    /// The register for people: operators and helpdesk see every credential; a department's admin sees its own
    /// Apps and Books token and its iPads' identities, never another department's or central IT's.
    pub async fn credential_register(
        &self,
        overseer: &OversightCtx,
    ) -> Result<CredentialRegister, CoreError> {
        self.register_in(overseer.scope()).await
    }

    /// The whole register for the server itself (`/metrics`, the expiry warnings).
    pub async fn credential_register_for_system(
        &self,
        system: &SystemCtx,
    ) -> Result<CredentialRegister, CoreError> {
        self.register_in(self.system_scope(system)).await
    }

    pub fn credential_settings(&self) -> &CredentialSettings {
        &self.credentials
    }

    /// Thresholds, central IT's address, the TLS certificate's expiry and the mailer.
    pub fn with_credential_settings(mut self, settings: CredentialSettings) -> Self {
        self.credentials = settings;
        self
    }

    async fn register_in(&self, scope: Scope) -> Result<CredentialRegister, CoreError> {
        let now = self.clock.now();
        let warning_days = self.credentials.warning_days.clone();
        let mut entries = Vec::new();
        if scope.tenant_id().is_none() {
            self.central_credentials(&mut entries).await?;
        }
        let tenants = self.store.list_tenants(scope).await?;
        let apps_tokens = self.store.list_apps_tokens().await?;
        let horizons: Vec<UnixTime> = warning_days
            .iter()
            .map(|d| now.plus_seconds(d.saturating_mul(DAY)))
            .collect();
        let identities = self
            .store
            .identity_expiry_by_tenant(scope, now, &horizons)
            .await?;
        for tenant in &tenants {
            let details = self
                .store
                .tenant_details(scope, tenant.id)
                .await?
                .unwrap_or_default();
            let owner = CredentialOwner {
                kind: "tenant".into(),
                tenant_id: Some(tenant.id.to_string()),
                tenant_name: Some(tenant.name.clone()),
                contact_name: details.contact_name.clone(),
                contact_email: details.contact_email.clone(),
            };
            let token = apps_tokens.iter().find(|t| t.tenant_id == tenant.id);
            entries.push(Entry {
                id: format!("apps-token:{}", tenant.id),
                kind: CredentialKind::AppsToken,
                name: token
                    .map(|t| match &t.location_name {
                        Some(location) => format!("{} ({location})", t.org_name),
                        None => t.org_name.clone(),
                    })
                    .unwrap_or_else(|| "Apps and Books content token".into()),
                owner: owner.clone(),
                tenant: Some(tenant.id),
                expiry: token.map(|t| t.expires_at),
                renew: help(
                    "The department's Apps and Books content token owner downloads a new token in Apple School \
                     Manager (Settings > Apps and Books) and uploads it.",
                    Some("PUT /api/v1/tenants/{id}/apps/token"),
                    Some("orchard apps upload --tenant <id> <token.vpptoken>"),
                ),
                identities: None,
            });
            if let Some(figures) = identities.iter().find(|f| f.tenant_id == tenant.id) {
                entries.push(Entry {
                    id: format!("device-identities:{}", tenant.id),
                    kind: CredentialKind::DeviceIdentities,
                    name: format!("{} iPad identities", figures.devices),
                    owner,
                    tenant: Some(tenant.id),
                    expiry: figures.earliest_not_after,
                    renew: help(
                        "Identities renew themselves over the air before they run out; an expired one needs the \
                         iPad enrolled again.",
                        Some("GET /api/v1/devices?identity_expires_before=<time>"),
                        Some("orchard device list --tenant <id>"),
                    ),
                    identities: Some(IdentityAggregate {
                        devices: figures.devices,
                        expired: figures.expired,
                        expiring_within: warning_days
                            .iter()
                            .zip(&figures.expiring_by)
                            .map(|(days, count)| ExpiringWithin {
                                days: *days,
                                count: *count,
                            })
                            .collect(),
                    }),
                });
            }
        }
        let mut credentials: Vec<Credential> = entries
            .into_iter()
            .map(|e| {
                let (state, threshold) = state_of(e.expiry, now, &warning_days);
                let state = match (&e.identities, state) {
                    // Expired identities are counted; the aggregate's soonest expiry is among the live ones.
                    (Some(agg), CredentialState::Missing | CredentialState::Ok)
                        if agg.expired > 0 =>
                    {
                        CredentialState::Expired
                    }
                    _ => state,
                };
                Credential {
                    id: e.id,
                    kind: e.kind,
                    name: e.name,
                    owner: e.owner,
                    expires_at: e.expiry.map(UnixTime::to_rfc3339),
                    days_left: e.expiry.map(|x| days_until(x, now)),
                    state,
                    warning_threshold_days: threshold,
                    renew: e.renew,
                    identities: e.identities,
                    expiry: e.expiry,
                    tenant: e.tenant,
                }
            })
            .collect();
        credentials.sort_by_key(|c| (c.expiry.is_none(), c.expiry, c.id.clone()));
        Ok(CredentialRegister {
            generated_at: now.to_rfc3339(),
            warning_days,
            credentials,
        })
    }

    /// Central IT's credentials: the push certificate, DEP tokens, the CAs, the profile signer and TLS.
    async fn central_credentials(&self, entries: &mut Vec<Entry>) -> Result<(), CoreError> {
        let push = self.push_certificate_status();
        entries.push(Entry {
            id: "push-certificate".into(),
            kind: CredentialKind::PushCertificate,
            name: push
                .as_ref()
                .map(|p| p.topic.clone())
                .unwrap_or_else(|| "MDM push certificate".into()),
            owner: CredentialOwner::central_it(),
            tenant: None,
            expiry: push
                .as_ref()
                .and_then(|p| UnixTime::parse_rfc3339(&p.not_after)),
            renew: help(
                "Renew (never replace) the certificate at the Apple Push Certificates Portal with the same Apple \
                 Account, from a new CSR; a new topic orphans every iPad.",
                Some("POST /api/v1/push-certificate/csr, then PUT /api/v1/push-certificate"),
                Some("orchard push-cert csr, then orchard push-cert upload --cert <file>"),
            ),
            identities: None,
        });
        for token in self.store.list_dep_tokens().await? {
            entries.push(Entry {
                id: format!("dep-token:{}", token.id),
                kind: CredentialKind::DepToken,
                name: token.name.clone(),
                owner: CredentialOwner::central_it(),
                tenant: None,
                expiry: token.access_token_expiry,
                renew: help(
                    "Download a new server token for this MDM server in Apple School Manager and upload it.",
                    Some("PUT /api/v1/dep-tokens/{id}/token"),
                    Some("orchard dep token upload <id> --p7m <file>"),
                ),
                identities: None,
            });
        }
        let pki = &self.pki;
        let fixed = [
            (
                "device-ca",
                CredentialKind::DeviceCa,
                "Device CA (issues iPad identities)",
                pki.ca.cert_der(),
                "Cannot be renewed in place: every iPad's identity chains to it. Plan a re-enrollment of all \
                 iPads well before it runs out.",
            ),
            (
                "server-ca",
                CredentialKind::ServerCa,
                "Server CA (trusted by iPads for Orchard's names)",
                pki.server_ca.cert_der(),
                "Cannot be renewed in place: enrolled iPads and ADE profiles pin it. Plan a re-enrollment of all \
                 iPads well before it runs out.",
            ),
            (
                "profile-signer",
                CredentialKind::ProfileSigner,
                "Enrollment profile signer",
                pki.profile_signer.cert_der(),
                "Issued by the server CA from the shared keys; a new one is issued with the server's keys when \
                 the shared keys are renewed.",
            ),
        ];
        for (id, kind, name, der, instruction) in fixed {
            let expiry = orchard_pki::cert_validity(&der).map(|(_, after)| after)?;
            entries.push(Entry {
                id: id.into(),
                kind,
                name: name.into(),
                owner: CredentialOwner::central_it(),
                tenant: None,
                expiry: Some(expiry),
                renew: help(instruction, None, None),
                identities: None,
            });
        }
        if let Some(expiry) = self.credentials.tls_certificate_not_after {
            entries.push(Entry {
                id: "tls-certificate".into(),
                kind: CredentialKind::TlsCertificate,
                name: "Server TLS certificate".into(),
                owner: CredentialOwner::central_it(),
                tenant: None,
                expiry: Some(expiry),
                renew: help(
                    "Replace the files given as --tls-cert and --tls-key and restart each node (a certificate \
                     Orchard issued itself is issued again at start when it nears its end).",
                    None,
                    Some("orchard serve --tls-cert <chain.pem> --tls-key <key.pem>"),
                ),
                identities: None,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_follows_the_tightest_threshold_reached() {
        let now = UnixTime(1_000_000_000);
        let days = [60, 30, 7, 1];
        let at = |d: i64| Some(now.plus_seconds(d * DAY));
        assert_eq!(state_of(None, now, &days), (CredentialState::Missing, None));
        assert_eq!(state_of(at(61), now, &days), (CredentialState::Ok, None));
        assert_eq!(
            state_of(at(60), now, &days),
            (CredentialState::Warning, Some(60))
        );
        assert_eq!(
            state_of(at(29), now, &days),
            (CredentialState::Warning, Some(30))
        );
        assert_eq!(
            state_of(at(1), now, &days),
            (CredentialState::Warning, Some(1))
        );
        assert_eq!(
            state_of(at(0), now, &days),
            (CredentialState::Expired, None)
        );
        assert_eq!(days_until(now.plus_seconds(-1), now), -1);
    }

    #[test]
    fn thresholds_are_checked_and_ordered() {
        let s = CredentialSettings::default()
            .with_warning_days(&[7, 60, 7, 1])
            .expect("valid");
        assert_eq!(s.warning_days(), &[60, 7, 1]);
        assert!(CredentialSettings::default()
            .with_warning_days(&[])
            .is_err());
        assert!(CredentialSettings::default()
            .with_warning_days(&[0])
            .is_err());
    }
}
