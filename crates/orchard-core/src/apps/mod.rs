//! Apps and Books per tenant: a department's admin uploads the content token of its Apps and Books location;
//! Orchard reads the location's client config and claims it with its own `mdmInfo` only when no other MDM holds
//! it (a location claimed elsewhere is reported with the other MDM's name and left alone until an admin takes
//! it over with an explicit confirmation); the apps and licence counts are synced on demand and by the
//! `apps-sync` job.
//!
//! The token is sealed with the data key, bound to its tenant, and never leaves core: views show the
//! organization, location and expiry only. Apple is called between units of work, never inside one. App installs
//! through device licences: [`installs`].

pub mod installs;

use std::sync::Arc;

use orchard_store::{AppAssetRecord, AppsLocationState, AppsTokenRecord};
use orchard_types::{TenantId, UnixTime};
use orchard_vpp::{ContentToken, MdmInfo, VppClient, VppConfig, VppError};
use serde::Serialize;

use crate::access::capability::SystemCtx;
use crate::access::principal::Principal;
use crate::{CoreError, Orchard};

/// Tokens are flagged from this many days before they expire (they last a year).
pub const APPS_TOKEN_WARNING_DAYS: i64 = 30;

/// Where Apps and Books is. Default: Apple's production service and the public roots.
#[derive(Debug, Clone, Default)]
pub struct AppsSettings {
    pub config: VppConfig,
    /// Seconds between background syncs of every tenant's location (0: only on request).
    pub sync_interval_seconds: u64,
}

impl AppsSettings {
    /// Another service than Apple's (the local Apps and Books server in tests), trusting `roots_pem` if given.
    pub fn with_base_url(base_url: &str, roots_pem: Option<&[u8]>) -> Result<Self, CoreError> {
        let root_certificates_der = match roots_pem {
            Some(pem) => crate::dep::pem_certificates(pem)?,
            None => Vec::new(),
        };
        Ok(Self {
            config: VppConfig {
                base_url: base_url.to_owned(),
                root_certificates_der,
                ..VppConfig::default()
            },
            ..Self::default()
        })
    }
}

/// Whether Orchard manages the location.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ClaimState {
    /// Orchard's `mdmInfo` is on the location.
    Claimed,
    /// Another MDM's `mdmInfo` is on the location: nothing is taken over until an admin confirms.
    ClaimedElsewhere,
    /// Apple refused the token (expired, revoked, invalid): upload a new one.
    TokenError,
}

impl ClaimState {
    fn as_str(self) -> &'static str {
        match self {
            ClaimState::Claimed => "claimed",
            ClaimState::ClaimedElsewhere => "claimed_elsewhere",
            ClaimState::TokenError => "token_error",
        }
    }
    fn parse(s: &str) -> Self {
        match s {
            "claimed" => ClaimState::Claimed,
            "claimed_elsewhere" => ClaimState::ClaimedElsewhere,
            _ => ClaimState::TokenError,
        }
    }
}

/// A tenant's token as the API shows it (never the token).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AppsTokenStatus {
    /// The organization named in the token.
    pub org_name: String,
    /// The Apps and Books location (library) name, from Apple.
    pub location_name: Option<String>,
    pub expires_at: String,
    /// Whole days until the token expires (negative once expired).
    pub days_to_expiry: i64,
    pub expires_soon: bool,
    pub claim_state: ClaimState,
    /// The other MDM's name when `claim_state` is `claimed_elsewhere`.
    pub other_mdm_name: Option<String>,
    pub last_sync_at: Option<String>,
    /// Why the last check or sync failed, and what to do.
    pub last_error: Option<String>,
    pub uploaded_at: String,
}

/// One app of the tenant's location with its licences.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AppView {
    pub adam_id: String,
    pub pricing_param: String,
    /// Null until a name is known (Apple's asset list carries none).
    pub name: Option<String>,
    pub total: i64,
    pub assigned: i64,
    pub available: i64,
    pub device_assignable: bool,
    pub synced_at: String,
    /// The tenant's devices per licence state for this app (`shortage`: the shortfall).
    pub devices: installs::AppDeviceStates,
}

/// What one sync did.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AppsSyncSummary {
    pub claim_state: ClaimState,
    pub apps: usize,
}

fn seal_context(tenant: TenantId) -> Vec<u8> {
    format!("vpp_tokens:{tenant}").into_bytes()
}

fn status_of(r: &AppsTokenRecord, now: UnixTime) -> AppsTokenStatus {
    let days = (r.expires_at.0 - now.0).div_euclid(86_400);
    AppsTokenStatus {
        org_name: r.org_name.clone(),
        location_name: r.location_name.clone(),
        expires_at: r.expires_at.to_rfc3339(),
        days_to_expiry: days,
        expires_soon: days <= APPS_TOKEN_WARNING_DAYS,
        claim_state: ClaimState::parse(&r.claim_state),
        other_mdm_name: r.other_mdm_name.clone(),
        last_sync_at: r.last_sync_at.map(UnixTime::to_rfc3339),
        last_error: r.last_error.clone(),
        uploaded_at: r.uploaded_at.to_rfc3339(),
    }
}

fn app_view(a: AppAssetRecord) -> AppView {
    AppView {
        adam_id: a.adam_id,
        pricing_param: a.pricing_param,
        name: a.name,
        total: a.total_count,
        assigned: a.assigned_count,
        available: a.available_count,
        device_assignable: a.device_assignable,
        synced_at: a.synced_at.to_rfc3339(),
        devices: installs::AppDeviceStates::default(),
    }
}

/// What Apple said about the location at a check.
struct Checked {
    state: AppsLocationState,
    claim: ClaimState,
}

impl Orchard {
    /// The Apps and Books settings (Apple's service unless set here).
    pub fn with_apps_settings(mut self, settings: AppsSettings) -> Self {
        self.apps = Arc::new(settings);
        self
    }

    pub fn apps_sync_interval_seconds(&self) -> u64 {
        self.apps.sync_interval_seconds
    }

    /// Orchard's `mdmInfo`: stable for one deployment (its public URL), so a second node or a restart sees its
    /// own claim.
    fn own_mdm_info(&self) -> MdmInfo {
        MdmInfo {
            id: format!("orchard:{}", self.config.public_url),
            metadata: Some(self.config.public_url.clone()),
            name: format!("Orchard ({})", self.config.organization),
        }
    }

    fn vpp_client(&self, token: ContentToken) -> Result<VppClient, CoreError> {
        VppClient::new(self.apps.config.clone(), token)
            .map_err(|e| CoreError::Internal(format!("apps and books client: {e}")))
    }

    async fn visible_apps_tenant(
        &self,
        who: &Principal,
        tenant: TenantId,
    ) -> Result<(), CoreError> {
        self.store
            .get_tenant(who.scope(), tenant)
            .await?
            .ok_or(CoreError::NotFound)?;
        Ok(())
    }

    /// Reads client config and claims the location when nobody holds it (or when `take_over` and it holds the
    /// name the admin confirmed). Token problems come back as state, not as errors.
    async fn check_location(
        &self,
        client: &VppClient,
        take_over: bool,
    ) -> Result<Checked, CoreError> {
        let own = self.own_mdm_info();
        let config = match client.client_config().await {
            Ok(c) => c,
            Err(e) if e.is_token_problem() => {
                return Ok(Checked {
                    claim: ClaimState::TokenError,
                    state: AppsLocationState {
                        claim_state: ClaimState::TokenError.as_str().into(),
                        other_mdm_name: None,
                        location_name: None,
                        location_uid: None,
                        expires_at: None,
                        last_error: Some(e.to_string()),
                    },
                })
            }
            Err(e) => return Err(vpp_error(e)),
        };
        let held_by_other = config
            .mdm_info
            .as_ref()
            .filter(|info| info.id != own.id)
            .cloned();
        let config = match held_by_other {
            Some(other) if !take_over => {
                return Ok(Checked {
                    claim: ClaimState::ClaimedElsewhere,
                    state: AppsLocationState {
                        claim_state: ClaimState::ClaimedElsewhere.as_str().into(),
                        other_mdm_name: Some(if other.name.is_empty() {
                            other.id.clone()
                        } else {
                            other.name.clone()
                        }),
                        location_name: config.location_name.clone(),
                        location_uid: config.u_id.clone(),
                        expires_at: config.expires_at(),
                        last_error: None,
                    },
                })
            }
            Some(_) => client.claim(&own).await.map_err(vpp_error)?,
            None if config.mdm_info.is_none() => client.claim(&own).await.map_err(vpp_error)?,
            None => config,
        };
        Ok(Checked {
            claim: ClaimState::Claimed,
            state: AppsLocationState {
                claim_state: ClaimState::Claimed.as_str().into(),
                other_mdm_name: None,
                location_name: config.location_name.clone(),
                location_uid: config.u_id.clone(),
                expires_at: config.expires_at(),
                last_error: None,
            },
        })
    }

    /// Uploads (or renews) a tenant's content token (its admins and operators). Apple must accept the token;
    /// the location is claimed if nobody holds it, reported as `claimed_elsewhere` if another MDM does, and its
    /// apps are synced when Orchard holds it. A renewal for the same location keeps its apps.
    pub async fn upload_apps_token(
        &self,
        who: &Principal,
        tenant: TenantId,
        text: &str,
    ) -> Result<AppsTokenStatus, CoreError> {
        self.visible_apps_tenant(who, tenant).await?;
        who.tenant_admin(tenant)?;
        let token = ContentToken::parse(text).map_err(|e| CoreError::Invalid(e.to_string()))?;
        let now = self.clock.now();
        if token.is_expired(now) {
            return Err(CoreError::Invalid(
                VppError::TokenExpired {
                    expired_at: Some(token.expires_at.to_rfc3339()),
                }
                .to_string(),
            ));
        }
        let client = self.vpp_client(token.clone())?;
        let checked = self.check_location(&client, false).await?;
        if checked.claim == ClaimState::TokenError {
            return Err(CoreError::Invalid(
                checked
                    .state
                    .last_error
                    .unwrap_or_else(|| "apple refused the token".into()),
            ));
        }
        let previous = self.store.apps_token(who.scope(), tenant).await?;
        let other_location = previous.as_ref().is_some_and(|p| {
            p.location_uid.is_some() && p.location_uid != checked.state.location_uid
        });
        let token_sealed = self
            .pki
            .data_key
            .seal(token.expose_bearer().as_bytes(), &seal_context(tenant))?;
        self.store
            .put_apps_token(
                &AppsTokenRecord {
                    tenant_id: tenant,
                    token_sealed,
                    org_name: token.org_name.clone(),
                    location_name: checked.state.location_name.clone(),
                    location_uid: checked.state.location_uid.clone(),
                    expires_at: checked.state.expires_at.unwrap_or(token.expires_at),
                    claim_state: checked.state.claim_state.clone(),
                    other_mdm_name: checked.state.other_mdm_name.clone(),
                    last_sync_at: previous.as_ref().and_then(|p| p.last_sync_at),
                    last_error: None,
                    uploaded_at: now,
                    uploaded_by: Some(who.actor()),
                },
                other_location,
            )
            .await?;
        tracing::info!(%tenant, claim = checked.state.claim_state.as_str(), "apps and books token uploaded");
        if checked.claim == ClaimState::Claimed {
            if let Err(e) = self.sync_assets(tenant, &client).await {
                tracing::warn!(%tenant, error = %e, "apps sync after upload failed");
            }
        }
        self.apps_token_status(who, tenant).await
    }

    /// The tenant's token status (no token: NotFound).
    pub async fn apps_token_status(
        &self,
        who: &Principal,
        tenant: TenantId,
    ) -> Result<AppsTokenStatus, CoreError> {
        self.visible_apps_tenant(who, tenant).await?;
        let record = self
            .store
            .apps_token(who.scope(), tenant)
            .await?
            .ok_or(CoreError::NotFound)?;
        Ok(status_of(&record, self.clock.now()))
    }

    /// Takes a location over from another MDM (its admins and operators): `confirm_other_mdm` must repeat the
    /// other MDM's name exactly as the status shows it, so nobody takes a location over by accident.
    pub async fn take_over_apps_location(
        &self,
        who: &Principal,
        tenant: TenantId,
        confirm_other_mdm: &str,
    ) -> Result<AppsTokenStatus, CoreError> {
        self.visible_apps_tenant(who, tenant).await?;
        who.tenant_admin(tenant)?;
        let record = self
            .store
            .apps_token(who.scope(), tenant)
            .await?
            .ok_or(CoreError::NotFound)?;
        let client = self.client_of(&record)?;
        // Read again: the name confirmed must be the one holding the location now.
        let current = self.check_location(&client, false).await?;
        match current.claim {
            ClaimState::ClaimedElsewhere => {
                let other = current.state.other_mdm_name.clone().unwrap_or_default();
                if confirm_other_mdm != other {
                    return Err(CoreError::Invalid(format!(
                        "confirm_other_mdm must be the other mdm's name exactly: {other:?}"
                    )));
                }
            }
            _ => {
                self.store
                    .record_apps_location(tenant, &current.state)
                    .await?;
                return Err(CoreError::Conflict(
                    "the location is not claimed by another mdm: nothing to take over".into(),
                ));
            }
        }
        let checked = self.check_location(&client, true).await?;
        self.store
            .record_apps_location(tenant, &checked.state)
            .await?;
        tracing::warn!(%tenant, actor = %who.actor(), "apps and books location taken over from another mdm");
        if checked.claim == ClaimState::Claimed {
            if let Err(e) = self.sync_assets(tenant, &client).await {
                tracing::warn!(%tenant, error = %e, "apps sync after take-over failed");
            }
        }
        self.apps_token_status(who, tenant).await
    }

    /// Syncs the tenant's location now (its admins and operators).
    pub async fn sync_apps(
        &self,
        who: &Principal,
        tenant: TenantId,
    ) -> Result<AppsSyncSummary, CoreError> {
        self.visible_apps_tenant(who, tenant).await?;
        who.tenant_admin(tenant)?;
        self.store
            .apps_token(who.scope(), tenant)
            .await?
            .ok_or(CoreError::NotFound)?;
        self.run_apps_sync(&self.system(), tenant).await
    }

    /// The tenant's apps and their licences (anyone who sees the tenant).
    pub async fn list_apps(
        &self,
        who: &Principal,
        tenant: TenantId,
    ) -> Result<Vec<AppView>, CoreError> {
        self.visible_apps_tenant(who, tenant).await?;
        let mut states: std::collections::HashMap<String, installs::AppDeviceStates> =
            std::collections::HashMap::new();
        for (adam_id, state, n) in self.store.app_licence_states(who.scope(), tenant).await? {
            states.entry(adam_id).or_default().add(&state, n);
        }
        Ok(self
            .store
            .list_app_assets(who.scope(), tenant)
            .await?
            .into_iter()
            .map(|a| {
                let devices = states.remove(&a.adam_id).unwrap_or_default();
                AppView {
                    devices,
                    ..app_view(a)
                }
            })
            .collect())
    }

    fn client_of(&self, record: &AppsTokenRecord) -> Result<VppClient, CoreError> {
        let bearer = self
            .pki
            .data_key
            .open(&record.token_sealed, &seal_context(record.tenant_id))?;
        let text = std::str::from_utf8(bearer.expose())
            .map_err(|_| CoreError::Internal("sealed apps token is not text".into()))?;
        let token = ContentToken::parse(text).map_err(|e| CoreError::Internal(e.to_string()))?;
        self.vpp_client(token)
    }

    /// One tenant's sync, as the system: check the claim, then (only when Orchard holds the location) the apps
    /// and counts. The outcome is stored on the token either way.
    pub async fn run_apps_sync(
        &self,
        system: &SystemCtx,
        tenant: TenantId,
    ) -> Result<AppsSyncSummary, CoreError> {
        let result = self.sync_apps_location(system, tenant).await;
        // A sync of a token that does not exist is no sync (a mistyped id): not counted. One that found Apple
        // refusing the token answers (the department must upload a new one) but failed all the same.
        match &result {
            Err(CoreError::NotFound) => {}
            Err(_) => self.metrics.apps_sync(true),
            Ok(summary) => self
                .metrics
                .apps_sync(summary.claim_state == ClaimState::TokenError),
        }
        result
    }

    /// The sync itself, uncounted.
    async fn sync_apps_location(
        &self,
        _system: &SystemCtx,
        tenant: TenantId,
    ) -> Result<AppsSyncSummary, CoreError> {
        let record = self
            .store
            .list_apps_tokens()
            .await?
            .into_iter()
            .find(|r| r.tenant_id == tenant)
            .ok_or(CoreError::NotFound)?;
        let client = self.client_of(&record)?;
        let checked = match self.check_location(&client, false).await {
            Ok(c) => c,
            Err(e) => {
                let mut state = AppsLocationState {
                    claim_state: record.claim_state.clone(),
                    other_mdm_name: record.other_mdm_name.clone(),
                    location_name: None,
                    location_uid: None,
                    expires_at: None,
                    last_error: Some(e.to_string()),
                };
                state.last_error = Some(e.to_string());
                self.store.record_apps_location(tenant, &state).await?;
                return Err(e);
            }
        };
        self.store
            .record_apps_location(tenant, &checked.state)
            .await?;
        let mut apps = 0;
        if checked.claim == ClaimState::Claimed {
            match self.sync_assets(tenant, &client).await {
                Ok(n) => apps = n,
                Err(e) => {
                    let mut state = checked.state.clone();
                    state.last_error = Some(e.to_string());
                    self.store.record_apps_location(tenant, &state).await?;
                    return Err(e);
                }
            }
        }
        Ok(AppsSyncSummary {
            claim_state: checked.claim,
            apps,
        })
    }

    async fn sync_assets(&self, tenant: TenantId, client: &VppClient) -> Result<usize, CoreError> {
        let assets = client.assets().await.map_err(vpp_error)?;
        let now = self.clock.now();
        let records: Vec<AppAssetRecord> = assets
            .into_iter()
            .map(|a| AppAssetRecord {
                adam_id: a.adam_id.to_string(),
                pricing_param: a.pricing_param.as_str().to_owned(),
                name: None,
                total_count: a.total_count,
                assigned_count: a.assigned_count,
                available_count: a.available_count,
                device_assignable: a.device_assignable,
                synced_at: now,
            })
            .collect();
        let count = records.len();
        self.store.replace_app_assets(tenant, &records, now).await?;
        // Licences added: devices waiting in shortage try again, as many as there are licences.
        let mut retried = 0;
        for a in &records {
            retried += self
                .store
                .retry_licence_shortage(tenant, &a.adam_id, a.available_count, now)
                .await?;
        }
        if retried > 0 {
            tracing::info!(%tenant, retried, "licences available again: shortage retried");
            self.wake_reconciler();
        }
        Ok(count)
    }

    /// The background round: every tenant's location, one after the other; failures stay on each token.
    pub async fn apps_sync_round(&self, system: &SystemCtx) {
        let tokens = match self.store.list_apps_tokens().await {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(error = %e, "apps sync: listing tokens failed");
                return;
            }
        };
        let now = self.clock.now();
        for token in tokens {
            let days = (token.expires_at.0 - now.0).div_euclid(86_400);
            if days < 0 {
                tracing::error!(tenant = %token.tenant_id, "apps and books token expired: the department must download a new one and upload it");
            } else if days <= APPS_TOKEN_WARNING_DAYS {
                tracing::warn!(tenant = %token.tenant_id, days, "apps and books token expires soon");
            }
            if let Err(e) = self.run_apps_sync(system, token.tenant_id).await {
                tracing::warn!(tenant = %token.tenant_id, error = %e, "apps sync failed");
            }
        }
    }

    /// Days to expiry of every tenant's token, for the `/metrics` gauge (the system only).
    pub async fn apps_token_expiry_days(
        &self,
        _system: &SystemCtx,
    ) -> Result<Vec<(TenantId, i64)>, CoreError> {
        let now = self.clock.now();
        Ok(self
            .store
            .list_apps_tokens()
            .await?
            .iter()
            .map(|t| (t.tenant_id, (t.expires_at.0 - now.0).div_euclid(86_400)))
            .collect())
    }
}

/// Apple's refusals an admin must act on are conflicts (the message says what to do); faults are internal.
fn vpp_error(e: VppError) -> CoreError {
    match e {
        VppError::TokenExpired { .. }
        | VppError::TokenRevoked
        | VppError::InvalidToken { .. }
        | VppError::RateLimited { .. }
        | VppError::Apple { .. } => CoreError::Conflict(e.to_string()),
        VppError::InvalidContentToken(_) | VppError::InvalidRequest(_) => {
            CoreError::Invalid(e.to_string())
        }
        other => CoreError::Internal(other.to_string()),
    }
}
