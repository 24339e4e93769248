//! Devices as the admin API shows them: lists, search and the detail page (channels without their secrets,
//! and the latest inventory), always through the caller's scope.

use std::collections::BTreeMap;

use orchard_store::{Device, Page};
use orchard_types::{DeviceId, TenantId, UnixTime};
use serde::Serialize;

use crate::access::principal::Principal;
use crate::{CoreError, Orchard};

/// A channel as the API shows it: never the push token, PushMagic or UnlockToken.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ChannelView {
    pub id: String,
    pub user_short_name: Option<String>,
    pub has_push_token: bool,
    pub has_unlock_token: bool,
    pub awaiting_configuration: bool,
    pub token_updated_at: Option<String>,
    pub push: ChannelPushView,
}

/// Where the channel's pushes stand (times RFC 3339).
#[derive(Debug, Default, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ChannelPushView {
    /// A push is requested and APNs has not answered it yet.
    pub owed: bool,
    pub requested_at: Option<String>,
    /// When APNs last accepted a push for this channel.
    pub last_delivered_at: Option<String>,
    /// When APNs last answered (or could not be reached for) a push of this channel, and what: `delivered`,
    /// `rejected: …`, `token dead: 410 Unregistered`, `retry later: 429 TooManyRequests`, `not sent: …`.
    pub last_attempt_at: Option<String>,
    pub last_result: Option<String>,
    /// APNs asked to wait: nothing is pushed to this channel before then.
    pub not_before: Option<String>,
    /// APNs said the token is dead (and why): no push until the device sends a new token.
    pub token_dead_at: Option<String>,
    pub token_dead_reason: Option<String>,
}

impl From<&orchard_store::ChannelPushState> for ChannelPushView {
    fn from(p: &orchard_store::ChannelPushState) -> Self {
        let time = |t: Option<UnixTime>| t.map(UnixTime::to_rfc3339);
        ChannelPushView {
            owed: p.owed,
            requested_at: time(p.requested_at),
            last_delivered_at: time(p.last_delivered_at),
            last_attempt_at: time(p.last_attempt_at),
            last_result: p.last_result.clone(),
            not_before: time(p.not_before),
            token_dead_at: time(p.token_dead_at),
            token_dead_reason: p.token_dead_reason.clone(),
        }
    }
}

/// One device with everything the detail page shows.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeviceDetail {
    #[serde(flatten)]
    pub device: DeviceView,
    pub channels: Vec<ChannelView>,
    /// The device identity's expiry and renewal.
    pub identity: crate::enrollment::renewal::IdentityStatusView,
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub inventory: BTreeMap<String, serde_json::Value>,
}

#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeviceView {
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = Uuid))]
    pub id: DeviceId,
    pub udid: String,
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = Uuid))]
    pub tenant_id: TenantId,
    pub serial_number: Option<String>,
    pub enrollment_state: &'static str,
    pub device_name: Option<String>,
    pub model: Option<String>,
    pub model_name: Option<String>,
    pub product_name: Option<String>,
    pub os_version: Option<String>,
    pub build_version: Option<String>,
    pub is_supervised: Option<bool>,
    pub enrolled_at: Option<String>,
    pub last_seen_at: Option<String>,
}

impl From<&Device> for DeviceView {
    fn from(d: &Device) -> Self {
        DeviceView {
            id: d.id,
            udid: d.udid.to_string(),
            tenant_id: d.tenant_id,
            serial_number: d.serial_number.clone(),
            enrollment_state: d.state.as_str(),
            device_name: d.device_name.clone(),
            model: d.model.clone(),
            model_name: d.model_name.clone(),
            product_name: d.product_name.clone(),
            os_version: d.os_version.clone(),
            build_version: d.build_version.clone(),
            is_supervised: d.is_supervised,
            enrolled_at: d.enrolled_at.map(UnixTime::to_rfc3339),
            last_seen_at: d.last_seen_at.map(UnixTime::to_rfc3339),
        }
    }
}

impl Orchard {
    pub async fn list_devices(
        &self,
        who: &Principal,
        page: Page,
    ) -> Result<(Vec<Device>, i64), CoreError> {
        self.search_devices(who, &orchard_store::DeviceQuery::default(), page)
            .await
    }

    /// Devices of the caller's scope matching `query` (filters, text search, sort), and how many match.
    pub async fn search_devices(
        &self,
        who: &Principal,
        query: &orchard_store::DeviceQuery,
        page: Page,
    ) -> Result<(Vec<Device>, i64), CoreError> {
        if query.text.as_ref().is_some_and(|t| t.chars().count() > 200) {
            return Err(CoreError::Invalid(
                "q must be at most 200 characters".into(),
            ));
        }
        let scope = who.scope();
        if let Some(group) = query.group_id {
            // A group the caller cannot see (another tenant's) answers like one that does not exist.
            self.store
                .group_in_scope(scope, group)
                .await?
                .ok_or(CoreError::NotFound)?;
        }
        Ok(self
            .store
            .search_devices_counted(scope, query, page)
            .await?)
    }

    /// How many devices of the caller's scope matching `query` are enrolled, waiting to enroll, and enrolled but
    /// not seen since `not_seen_since`: the dashboard's tiles.
    pub async fn device_counts(
        &self,
        who: &Principal,
        query: &orchard_store::DeviceQuery,
        not_seen_since: UnixTime,
    ) -> Result<orchard_store::DeviceCounts, CoreError> {
        Ok(self
            .store
            .count_devices_by_state(who.scope(), query, not_seen_since)
            .await?)
    }

    /// How many devices of the caller's scope matching `query` run each OS version, most common first (at most
    /// `limit` versions; `None` = not reported yet): the dashboard's "iOS versions".
    pub async fn os_version_counts(
        &self,
        who: &Principal,
        query: &orchard_store::DeviceQuery,
        limit: i64,
    ) -> Result<Vec<(Option<String>, i64)>, CoreError> {
        Ok(self
            .store
            .count_devices_by_os_version(who.scope(), query, limit)
            .await?)
    }

    pub async fn device_detail(
        &self,
        who: &Principal,
        id: DeviceId,
    ) -> Result<DeviceDetail, CoreError> {
        let scope = who.scope();
        let device = self
            .store
            .get_device(scope, id)
            .await?
            .ok_or(CoreError::NotFound)?;
        let channels = self
            .store
            .list_channels(device.id)
            .await?
            .into_iter()
            .map(|c| ChannelView {
                id: c.id.to_string(),
                user_short_name: c.user_short_name,
                has_push_token: c.push_token.is_some(),
                has_unlock_token: c.unlock_token.is_some(),
                awaiting_configuration: c.awaiting_configuration,
                token_updated_at: c.token_updated_at.map(UnixTime::to_rfc3339),
                push: ChannelPushView::from(&c.push),
            })
            .collect();
        let inventory = self
            .store
            .get_inventory(scope, device.id)
            .await?
            .into_iter()
            .filter_map(|s| {
                let v = serde_json::from_str(&s.json).ok()?;
                Some((s.section, v))
            })
            .collect();
        let identity = self.identity_status_view(&device).await?;
        Ok(DeviceDetail {
            device: DeviceView::from(&device),
            channels,
            identity,
            inventory,
        })
    }

    /// The tenant of a device the caller can see (the audit log files a device action under it).
    pub async fn device_tenant(
        &self,
        who: &Principal,
        id: DeviceId,
    ) -> Result<Option<TenantId>, CoreError> {
        Ok(self
            .store
            .get_device(who.scope(), id)
            .await?
            .map(|d| d.tenant_id))
    }
}
