//! Declarative device management: the `DeclarativeManagement` check-in endpoints (`tokens`,
//! `declaration-items`, `declaration/<kind>/<identifier>`, `status`) per enrollment channel, answered from the
//! set generated for the channel ([`set`]), and the status reports devices upload, stored per channel and shown
//! in the device API.
//!
//! Sets are cached per channel in memory, keyed by everything they are generated from (the tenant's policy
//! revision and the catalogue's, the device's OS and model, the user): every request checks those revisions
//! with one small query, so a node never answers a stale set after another node changed the policy, and a
//! cache hit answers with bytes rendered once.

pub mod profiles;
pub mod set;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use orchard_protocol::checkin::DeclarativeManagementCheckin;
use orchard_protocol::declarative::{
    declaration_statuses, item, merge_status, DeclarationKind, DeclarationStatus, Endpoint,
    StatusReport, SyncTokens, TokensResponse,
};
use orchard_store::{DesiredRevisions, Device, DeviceFacts};
use orchard_types::{ChannelId, DeviceId, UnixTime};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::access::principal::Principal;
use crate::device::checkin::CheckinReply;
use crate::osupdate::resolve_target;
use crate::{CoreError, DeviceRejection, Orchard};
use set::{DeclarationSet, SetInputs};

/// Channels whose rendered set a node keeps (a few KiB each); beyond it the cache starts over.
const CACHE_CAPACITY: usize = 100_000;

/// What a cached set was generated from: the same key gives the same set.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct SetKey {
    device: DeviceId,
    revisions: DesiredRevisions,
    os_version: Option<String>,
    product_type: Option<String>,
    user: Option<String>,
}

/// This node's cache of rendered sets, by channel.
#[derive(Debug, Default)]
pub struct DeclarativeState {
    cache: Mutex<HashMap<ChannelId, (SetKey, Arc<DeclarationSet>)>>,
}

impl DeclarativeState {
    fn get(&self, channel: &ChannelId, key: &SetKey) -> Option<Arc<DeclarationSet>> {
        let cache = self.cache.lock().ok()?;
        cache
            .get(channel)
            .filter(|(k, _)| k == key)
            .map(|(_, set)| set.clone())
    }

    fn put(&self, channel: ChannelId, key: SetKey, set: Arc<DeclarationSet>) {
        if let Ok(mut cache) = self.cache.lock() {
            if cache.len() >= CACHE_CAPACITY {
                cache.clear();
            }
            cache.insert(channel, (key, set));
        }
    }
}

/// One declaration of a channel with the device's status of it.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeclarationView {
    /// activation | configuration | asset | management.
    pub kind: &'static str,
    pub identifier: String,
    #[serde(rename = "type")]
    pub declaration_type: String,
    pub server_token: String,
    /// Whether the device reported this very version (its ServerToken) as active; null when it did not report
    /// it yet.
    pub active: Option<bool>,
    /// `valid`, `invalid` or `unknown` as the device reported it; null when not reported.
    pub valid: Option<String>,
    /// `applied` (reported active and valid, this version), `pending` (not yet reported for this version),
    /// `failed` (reported invalid) or `inactive`.
    pub state: &'static str,
    /// The device's reasons, when it gave any.
    pub reasons: Vec<String>,
    pub payload: Map<String, Value>,
}

/// One channel's declarative state.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ChannelDeclarations {
    /// `device`, or `user` for a Shared iPad user channel.
    pub channel: &'static str,
    /// The Shared iPad user of a user channel.
    pub user: Option<String>,
    /// The token of the set Orchard holds for the channel now.
    pub declarations_token: String,
    /// The token last announced to the device in a DeclarativeManagement command.
    pub announced_token: Option<String>,
    /// Whether a DeclarativeManagement command waits for the device.
    pub sync_pending: bool,
    pub status_reported_at: Option<String>,
    pub full_report_at: Option<String>,
    pub declarations: Vec<DeclarationView>,
    /// The status items the device reported (merged), as it sent them.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub status: Value,
    /// The `Errors` of its last report.
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<Object>))]
    pub errors: Value,
}

/// `GET /devices/{id}/declarations`.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeviceDeclarations {
    pub device_id: String,
    pub channels: Vec<ChannelDeclarations>,
}

fn view_of(set: &DeclarationSet, status: Option<&Map<String, Value>>) -> Vec<DeclarationView> {
    let reported = status.map(declaration_statuses).unwrap_or_default();
    set.list
        .iter()
        .filter_map(|d| {
            let kind = d.kind()?;
            let st: Option<&DeclarationStatus> = reported
                .get(&kind)
                .and_then(|list| list.iter().find(|s| s.identifier == d.identifier))
                .filter(|s| s.server_token == d.server_token);
            let state = match st {
                None => "pending",
                Some(s) if s.valid == "invalid" => "failed",
                Some(s) if s.active => "applied",
                Some(_) => "inactive",
            };
            Some(DeclarationView {
                kind: kind.as_str(),
                identifier: d.identifier.clone(),
                declaration_type: d.declaration_type.clone(),
                server_token: d.server_token.clone(),
                active: st.map(|s| s.active),
                valid: st.map(|s| s.valid.clone()),
                state,
                reasons: st
                    .map(|s| {
                        s.reasons
                            .iter()
                            .map(|r| match &r.description {
                                Some(text) => format!("{}: {text}", r.code),
                                None => r.code.clone(),
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
                payload: d.payload.clone(),
            })
        })
        .collect()
}

impl Orchard {
    /// The channel's current set: from the cache when nothing it depends on changed, else generated.
    pub(crate) async fn declaration_set(
        &self,
        device: &Device,
        channel: &ChannelId,
        user: Option<&str>,
    ) -> Result<Arc<DeclarationSet>, CoreError> {
        let revisions = self
            .store
            .desired_revisions(device.tenant_id, device.id)
            .await?;
        let key = SetKey {
            device: device.id,
            revisions,
            os_version: device.os_version.clone(),
            product_type: device.product_name.clone(),
            user: user.map(str::to_owned),
        };
        if let Some(set) = self.declarative.get(channel, &key) {
            return Ok(set);
        }
        let target = match (revisions.policy, user) {
            (Some(_), None) => {
                let policy = self
                    .store
                    .os_policy_of_device_tenant(device.tenant_id)
                    .await?;
                let catalogue = match device.product_name.as_deref() {
                    Some(model) => self.store.os_catalogue_for(model).await?,
                    None => Vec::new(),
                };
                policy.and_then(|p| resolve_target(&p, device.product_name.as_deref(), &catalogue))
            }
            _ => None,
        };
        let tenant = device.tenant_id.to_string();
        let id = device.id.to_string();
        let extra = match user {
            None => {
                let declared = self.store.declared_profiles(device.id).await?;
                self.declared_profile_declarations(device.id, &declared)?
            }
            Some(_) => Vec::new(),
        };
        let set = Arc::new(set::render(set::generate(&SetInputs {
            tenant_id: &tenant,
            device_id: &id,
            user_short_name: user,
            os_version: device.os_version.as_deref(),
            os_target: target.as_ref(),
            extra: &extra,
        })));
        self.declarative.put(channel.clone(), key, set.clone());
        Ok(set)
    }

    /// A `DeclarativeManagement` check-in of an authenticated device: its own channel's answers only (the
    /// channel is derived from the signed message's UDID and user, and the caller checked the signer is that
    /// device's identity).
    pub(crate) async fn declarative_checkin(
        &self,
        device: &Device,
        message: &DeclarativeManagementCheckin,
        now: UnixTime,
    ) -> Result<CheckinReply, CoreError> {
        let user = message.user.as_ref().map(|u| u.user_short_name.as_str());
        let channel = match user {
            Some(u) => ChannelId::user(&device.udid, u),
            None => ChannelId::device(&device.udid),
        };
        let endpoint = Endpoint::parse(&message.endpoint)
            .map_err(|e| DeviceRejection::MalformedBody(e.to_string()))?;
        match endpoint {
            Endpoint::Tokens => {
                let set = self.declaration_set(device, &channel, user).await?;
                let stored = self.store.ddm_channel(&channel).await?;
                let since = stored
                    .filter(|c| c.declarations_token.as_deref() == Some(set.token.as_str()))
                    .and_then(|c| c.token_changed_at)
                    .unwrap_or(now);
                let body = TokensResponse {
                    sync_tokens: SyncTokens {
                        declarations_token: set.token.clone(),
                        timestamp: since.to_rfc3339(),
                    },
                };
                Ok(CheckinReply::Json(serde_json::to_vec(&body).map_err(
                    |e| CoreError::Internal(format!("tokens json: {e}")),
                )?))
            }
            Endpoint::DeclarationItems => {
                let set = self.declaration_set(device, &channel, user).await?;
                Ok(CheckinReply::Json(set.items_json.to_vec()))
            }
            Endpoint::Declaration { kind, identifier } => {
                let set = self.declaration_set(device, &channel, user).await?;
                match set.declaration(kind, &identifier) {
                    Some(json) => Ok(CheckinReply::Json(json.to_vec())),
                    None => Err(DeviceRejection::Unsupported(format!(
                        "no declaration {}/{identifier} for this channel",
                        kind.as_str()
                    ))
                    .into()),
                }
            }
            Endpoint::Status => {
                let data = message
                    .data
                    .as_deref()
                    .ok_or_else(|| DeviceRejection::MalformedBody("status without Data".into()))?;
                let report = StatusReport::parse(data)
                    .map_err(|e| DeviceRejection::MalformedBody(e.to_string()))?;
                self.store_status(device, &channel, report, now).await?;
                Ok(CheckinReply::Empty)
            }
        }
    }

    /// One status report is one unit of work: the merged tree (or the full report replacing it), its errors,
    /// and the OS version it names promoted to the device's facts.
    async fn store_status(
        &self,
        device: &Device,
        channel: &ChannelId,
        report: StatusReport,
        now: UnixTime,
    ) -> Result<(), CoreError> {
        let full = report.is_full();
        let mut unit = self.store.begin_unit().await?;
        let mut tree = if full {
            Map::new()
        } else {
            unit.ddm_channel(channel)
                .await?
                .and_then(|c| c.status_json)
                .and_then(|s| serde_json::from_str(&s).ok())
                .unwrap_or_default()
        };
        merge_status(&mut tree, report.status_items);
        let errors = serde_json::to_string(&report.errors)
            .map_err(|e| CoreError::Internal(format!("status errors json: {e}")))?;
        let tree_json = serde_json::to_string(&tree)
            .map_err(|e| CoreError::Internal(format!("status json: {e}")))?;
        unit.ddm_status_reported(channel, device.id, &tree_json, &errors, full, now)
            .await?;
        if !channel.is_user_channel() {
            let text = |name: &str| item(&tree, name).and_then(Value::as_str).map(str::to_owned);
            let os_version = text("device.operating-system.version");
            if os_version.is_some() && os_version != device.os_version {
                unit.update_device_facts(
                    device.id,
                    &DeviceFacts {
                        os_version,
                        build_version: text("device.operating-system.build-version"),
                        ..DeviceFacts::default()
                    },
                    now,
                )
                .await?;
                // Its smart groups were evaluated against the OS version its last DeviceInformation answer
                // gave: that answer's digest no longer describes the row, so the next one is evaluated in full
                // (and no node trusts the row for its memberships, see `desired::smart_group_cache`).
                unit.forget_facts_digest(device.id).await?;
            }
        }
        self.commit_unit(unit).await?;
        if !channel.is_user_channel() {
            if let Some(configurations) =
                declaration_statuses(&tree).get(&DeclarationKind::Configuration)
            {
                self.declared_profile_statuses(device, configurations, now)
                    .await?;
            }
        }
        tracing::debug!(udid = %device.udid, channel = %channel, full, "declarative status stored");
        Ok(())
    }

    /// `GET /devices/{id}/declarations`: each channel's declarations with the device's status of them.
    pub async fn device_declarations(
        &self,
        who: &Principal,
        device_id: DeviceId,
    ) -> Result<DeviceDeclarations, CoreError> {
        let device = self
            .store
            .get_device(who.scope(), device_id)
            .await?
            .ok_or(CoreError::NotFound)?;
        let mut channels = Vec::new();
        for record in self
            .store
            .ddm_channels_of_device(who.scope(), device_id)
            .await?
        {
            let user = record
                .channel
                .as_str()
                .split_once(':')
                .map(|(_, u)| u.to_owned());
            let set = self
                .declaration_set(&device, &record.channel, user.as_deref())
                .await?;
            let status: Option<Map<String, Value>> = record
                .status_json
                .as_deref()
                .and_then(|s| serde_json::from_str(s).ok());
            let errors: Value = record
                .errors_json
                .as_deref()
                .and_then(|s| serde_json::from_str(s).ok())
                .unwrap_or(Value::Array(Vec::new()));
            channels.push(ChannelDeclarations {
                channel: if user.is_some() { "user" } else { "device" },
                user,
                declarations_token: set.token.clone(),
                announced_token: record.declarations_token.clone(),
                sync_pending: record.sync_command.is_some(),
                status_reported_at: record.status_at.map(UnixTime::to_rfc3339),
                full_report_at: record.full_report_at.map(UnixTime::to_rfc3339),
                declarations: view_of(&set, status.as_ref()),
                status: status.map(Value::Object).unwrap_or(Value::Null),
                errors,
            });
        }
        Ok(DeviceDeclarations {
            device_id: device.id.to_string(),
            channels,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use orchard_protocol::declarative::build;

    /// The benchmark figure of docs/benchmarks.md: the declaration-items answer of a channel with 50
    /// declarations, on a cache hit (key check and the rendered bytes) and on a miss (generate and render).
    /// Prints the figures; asserts only what the answer is (no timing assertion: machines differ).
    #[test]
    fn declaration_items_answer_for_50_declarations() {
        let extra: Vec<_> = (0..44)
            .map(|i| {
                let mut p = Map::new();
                p.insert(format!("orchard.extra.{i}"), Value::String("x".repeat(40)));
                build::properties(&format!("orchard.extra-{i}"), p)
            })
            .collect();
        let target = crate::osupdate::OsTarget {
            version: "18.2".into(),
            build: Some("22C152".into()),
            deadline_local: "2026-12-11T18:00:00".into(),
            details_url: None,
        };
        let inputs = SetInputs {
            tenant_id: "t",
            device_id: "d",
            user_short_name: None,
            os_version: Some("18.1"),
            os_target: Some(&target),
            extra: &extra,
        };
        let miss_runs = 200;
        let started = std::time::Instant::now();
        let mut set = None;
        for _ in 0..miss_runs {
            set = Some(Arc::new(set::render(set::generate(&inputs))));
        }
        let miss = started.elapsed() / miss_runs;
        let set = set.expect("rendered");
        assert_eq!(set.list.len(), 50);
        let state = DeclarativeState::default();
        let channel = ChannelId::from_stored("UDID".into());
        let key = SetKey {
            device: DeviceId::new(),
            revisions: DesiredRevisions::default(),
            os_version: Some("18.1".into()),
            product_type: Some("iPad13,18".into()),
            user: None,
        };
        state.put(channel.clone(), key.clone(), set.clone());
        let hit_runs = 20_000;
        let started = std::time::Instant::now();
        let mut bytes = 0;
        for _ in 0..hit_runs {
            let hit = state.get(&channel, &key).expect("cached");
            bytes += hit.items_json.to_vec().len();
        }
        let hit = started.elapsed() / hit_runs;
        assert_eq!(bytes, set.items_json.len() * hit_runs as usize);
        println!(
            "declaration-items, 50 declarations ({} bytes): cache hit {:?} per answer, miss (generate + render) {:?}",
            set.items_json.len(),
            hit,
            miss
        );
    }
}
