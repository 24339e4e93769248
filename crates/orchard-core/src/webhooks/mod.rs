//! Signed webhooks: endpoints that receive Orchard's events as signed JSON. A department's admins manage their
//! tenant's endpoints (which receive only that tenant's events); operators manage global ones (every event).
//!
//! Events are written to the outbox (`webhook_events`, one `webhook_deliveries` row per endpoint that wants
//! it) inside the unit of work of the change that caused them, so an event exists exactly when its change
//! committed. [`delivery`] sends them: `POST` of the body `{id, type, occurred_at, tenant, data}` with
//! `Orchard-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>` (docs/webhooks.md).
//!
//! The secret is made by the server, shown once, and sealed with the data key (bound to the endpoint id): it
//! is the HMAC key, so it must be recoverable, not hashed.

pub mod delivery;

use std::sync::Arc;
use std::time::Duration;

use orchard_store::{
    Scope, UnitOfWork, WebhookDeliveryRecord, WebhookEndpointChange, WebhookEndpointRecord,
    WebhookEventRecord,
};
use orchard_types::{TenantId, UnixTime, WebhookId};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::Notify;

use crate::access::capability::{OperatorCtx, SystemCtx};
use crate::access::principal::Principal;
use crate::{CoreError, Orchard};

/// The event types, as they appear in a body's `type` and in an endpoint's subscription.
pub const EVENT_TYPES: &[&str] = &[
    EVENT_DEVICE_ENROLLED,
    EVENT_DEVICE_CHECKED_OUT,
    EVENT_COMMAND_RESULT,
    EVENT_DEP_SYNC,
    EVENT_APP_RESULT,
    EVENT_APP_LICENCE,
    EVENT_EXPIRY_WARNING,
];
/// A device channel's first TokenUpdate: the iPad is enrolled and reachable.
pub const EVENT_DEVICE_ENROLLED: &str = "device.enrolled";
/// The iPad removed its MDM profile (CheckOut).
pub const EVENT_DEVICE_CHECKED_OUT: &str = "device.checked_out";
/// An iPad answered a command for good (Acknowledged, Error or CommandFormatError; NotNow is not final).
pub const EVENT_COMMAND_RESULT: &str = "command.result";
/// A DEP token's sync finished (service-wide: DEP tokens are central IT's).
pub const EVENT_DEP_SYNC: &str = "dep.sync";
/// An iPad answered an app command (install, removal, managed app list) for good.
pub const EVENT_APP_RESULT: &str = "app.result";
/// An iPad's Apps and Books licence was associated, released, or could not be (no licence left, refused).
pub const EVENT_APP_LICENCE: &str = "app.licence";
/// A credential is about to expire (published by the expiry watcher).
pub const EVENT_EXPIRY_WARNING: &str = "expiry.warning";

/// The longest URL taken.
pub const MAX_URL_CHARS: usize = 2048;
/// The largest event body sent; the events Orchard makes are far smaller.
pub const MAX_EVENT_BODY_BYTES: usize = 64 * 1024;
/// Deliveries shown per endpoint in the delivery log.
pub const DELIVERY_LOG_LIMIT: i64 = 100;

/// How deliveries are made. Defaults: 10 s timeout, retries after 30 s doubling up to 1 h with up to 20 %
/// jitter, 8 attempts per delivery, an endpoint disabled after 20 consecutive failed attempts, finished
/// deliveries kept 30 days.
#[derive(Debug, Clone)]
pub struct WebhookSettings {
    /// Whole request (connect, send, answer headers).
    pub timeout: Duration,
    /// The first retry's delay; doubled per attempt.
    pub retry_base_seconds: i64,
    /// The longest delay between attempts.
    pub retry_max_seconds: i64,
    /// Attempts per delivery before it is given up (`failed`).
    pub max_attempts: i64,
    /// Consecutive failed attempts (over all deliveries) that disable an endpoint.
    pub disable_after_failures: i64,
    /// How often due deliveries are looked for (committed events wake the job at once).
    pub interval: Duration,
    /// Deliveries claimed per step.
    pub batch: i64,
    /// Days delivered and given-up deliveries stay in the delivery log.
    pub retention_days: i64,
    /// Also allow `http://127.0.0.1`, `http://localhost` and `http://[::1]` URLs (tests only: event bodies and
    /// signatures would cross the network in clear text).
    pub danger_allow_http_localhost: bool,
}

impl Default for WebhookSettings {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(10),
            retry_base_seconds: 30,
            retry_max_seconds: 3600,
            max_attempts: 8,
            disable_after_failures: 20,
            interval: Duration::from_secs(5),
            batch: 50,
            retention_days: 30,
            danger_allow_http_localhost: false,
        }
    }
}

/// The settings and this node's wake-up signal for the delivery job.
#[derive(Debug, Clone, Default)]
pub(crate) struct WebhookState {
    pub(crate) settings: Arc<WebhookSettings>,
    pub(crate) wake: Arc<Notify>,
    /// When this node last pruned the delivery history (unix seconds).
    pub(crate) last_pruned: Arc<std::sync::atomic::AtomicI64>,
}

/// A new endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct NewWebhook {
    /// Where events are POSTed: an `https://` URL.
    pub url: String,
    /// The event types wanted (at least one): `device.enrolled`, `device.checked_out`, `command.result`,
    /// `dep.sync`, `app.result`, `app.licence`, `expiry.warning`.
    pub event_types: Vec<String>,
    /// Default true.
    pub enabled: Option<bool>,
}

/// A change to an endpoint; absent fields stay. Enabling a disabled endpoint clears its failure count.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct WebhookPatch {
    pub url: Option<String>,
    pub event_types: Option<Vec<String>>,
    pub enabled: Option<bool>,
}

/// An endpoint as the API shows it (never its secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WebhookView {
    pub id: String,
    /// The tenant whose events it receives; null for a global endpoint (every event).
    pub tenant_id: Option<String>,
    pub url: String,
    pub event_types: Vec<String>,
    pub enabled: bool,
    /// Failed attempts since the last delivered one.
    pub consecutive_failures: i64,
    /// When repeated failures disabled it.
    pub disabled_at: Option<String>,
    pub disabled_reason: Option<String>,
    pub created_at: String,
    pub created_by: Option<String>,
}

impl WebhookView {
    fn of(w: &WebhookEndpointRecord) -> Self {
        WebhookView {
            id: w.id.to_string(),
            tenant_id: w.tenant_id.map(|t| t.to_string()),
            url: w.url.clone(),
            event_types: w.event_types.clone(),
            enabled: w.enabled,
            consecutive_failures: w.consecutive_failures,
            disabled_at: w.disabled_at.map(UnixTime::to_rfc3339),
            disabled_reason: w.disabled_reason.clone(),
            created_at: w.created_at.to_rfc3339(),
            created_by: w.created_by.clone(),
        }
    }
}

/// A new endpoint with its secret, shown this once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreatedWebhook {
    pub webhook: WebhookView,
    /// The HMAC-SHA256 key of the signatures (its UTF-8 bytes). Shown only now: store it with the receiver.
    pub secret: String,
}

/// One attempt in the delivery log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WebhookAttemptView {
    pub attempt: i64,
    pub attempted_at: String,
    /// The receiver's HTTP status; null when it did not answer (timeout, refused connection).
    pub status_code: Option<i64>,
    pub error: Option<String>,
    /// When the next attempt was due after this one; null after the last.
    pub next_attempt_at: Option<String>,
}

/// One delivery of an event to an endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WebhookDeliveryView {
    pub id: String,
    pub event_id: String,
    pub event_type: String,
    /// `pending`, `delivered` or `failed` (out of attempts).
    pub state: String,
    pub attempts: i64,
    /// When a pending delivery is tried next.
    pub next_attempt_at: Option<String>,
    pub last_attempt_at: Option<String>,
    pub last_status: Option<i64>,
    pub last_error: Option<String>,
    pub delivered_at: Option<String>,
    pub created_at: String,
    pub attempt_log: Vec<WebhookAttemptView>,
}

impl WebhookDeliveryView {
    fn of(d: WebhookDeliveryRecord) -> Self {
        WebhookDeliveryView {
            id: d.id,
            event_id: d.event_id,
            event_type: d.event_type,
            state: d.state.clone(),
            attempts: d.attempts,
            next_attempt_at: (d.state == "pending")
                .then_some(d.next_attempt_at)
                .flatten()
                .map(UnixTime::to_rfc3339),
            last_attempt_at: d.last_attempt_at.map(UnixTime::to_rfc3339),
            last_status: d.last_status,
            last_error: d.last_error,
            delivered_at: d.delivered_at.map(UnixTime::to_rfc3339),
            created_at: d.created_at.to_rfc3339(),
            attempt_log: d
                .attempt_log
                .into_iter()
                .map(|a| WebhookAttemptView {
                    attempt: a.attempt,
                    attempted_at: a.attempted_at.to_rfc3339(),
                    status_code: a.status_code,
                    error: a.error,
                    next_attempt_at: a.next_attempt_at.map(UnixTime::to_rfc3339),
                })
                .collect(),
        }
    }
}

/// What the secret is sealed to: its endpoint, so a sealed secret copied to another row does not open.
pub(crate) fn seal_context(id: WebhookId) -> Vec<u8> {
    format!("webhook_endpoints:{id}").into_bytes()
}

/// Whether `url` may receive events: `https://` with a host, or (with the danger flag) plain http to this
/// machine's loopback. Errors name the field.
pub(crate) fn check_url(url: &str, settings: &WebhookSettings) -> Result<(), CoreError> {
    let invalid = |why: &str| CoreError::Invalid(format!("url {why}"));
    if url.chars().count() > MAX_URL_CHARS {
        return Err(invalid(&format!(
            "must be at most {MAX_URL_CHARS} characters"
        )));
    }
    let parsed = reqwest::Url::parse(url).map_err(|e| invalid(&format!("is not a url: {e}")))?;
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(invalid("must name a host"));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(invalid("must not carry credentials"));
    }
    match parsed.scheme() {
        "https" => Ok(()),
        "http"
            if settings.danger_allow_http_localhost
                && matches!(parsed.host_str(), Some("127.0.0.1" | "localhost" | "[::1]")) =>
        {
            Ok(())
        }
        _ => Err(invalid("must start with https://")),
    }
}

fn check_event_types(types: &[String]) -> Result<Vec<String>, CoreError> {
    if types.is_empty() {
        return Err(CoreError::Invalid(
            "event_types must name at least one event type".into(),
        ));
    }
    let mut wanted: Vec<String> = Vec::new();
    for t in types {
        if !EVENT_TYPES.contains(&t.as_str()) {
            return Err(CoreError::Invalid(format!(
                "event_types: unknown event type {t:?} (known: {})",
                EVENT_TYPES.join(", ")
            )));
        }
        if !wanted.contains(t) {
            wanted.push(t.clone());
        }
    }
    Ok(wanted)
}

/// The body of an event as sent and signed.
pub(crate) fn event_body(
    id: &str,
    event_type: &str,
    occurred_at: UnixTime,
    tenant: Option<TenantId>,
    data: &Value,
) -> String {
    json!({
        "id": id,
        "type": event_type,
        "occurred_at": occurred_at.to_rfc3339(),
        "tenant": tenant.map(|t| t.to_string()),
        "data": data,
    })
    .to_string()
}

fn event_record(
    tenant: Option<TenantId>,
    event_type: &str,
    data: &Value,
    now: UnixTime,
) -> Result<WebhookEventRecord, CoreError> {
    let id = uuid::Uuid::now_v7().hyphenated().to_string();
    let body = event_body(&id, event_type, now, tenant, data);
    if body.len() > MAX_EVENT_BODY_BYTES {
        return Err(CoreError::Invalid(format!(
            "data: the event body would be {} bytes, more than {MAX_EVENT_BODY_BYTES}",
            body.len()
        )));
    }
    Ok(WebhookEventRecord {
        id,
        tenant_id: tenant,
        event_type: event_type.to_owned(),
        occurred_at: now,
        body,
    })
}

/// The `app.licence` event of a licence pass's outcome for one iPad and app, if it is one worth telling:
/// associated, released, shortage or failed (submissions and retries are not).
pub(crate) fn licence_event(
    w: &orchard_store::LicenceWork,
    outcome: &orchard_store::LicenceOutcome,
    now: UnixTime,
) -> Option<WebhookEventRecord> {
    use orchard_store::LicenceOutcome;
    let (what, reason) = match (outcome, w.state.as_str()) {
        (LicenceOutcome::Done, "disassociating") => ("released", None),
        (LicenceOutcome::Done, _) => ("associated", None),
        (LicenceOutcome::Shortage { reason }, _) => ("shortage", Some(reason)),
        (LicenceOutcome::Failed { reason }, _) => ("failed", Some(reason)),
        _ => return None,
    };
    let data = json!({
        "device_id": w.device_id.to_string(),
        "serial_number": w.serial_number,
        "adam_id": w.adam_id,
        "outcome": what,
        "reason": reason,
    });
    event_record(Some(w.tenant_id), EVENT_APP_LICENCE, &data, now).ok()
}

/// Whose endpoints a call is about, after the access check: the caller's scope and the exact owner.
struct Owner {
    scope: Scope,
    tenant: Option<TenantId>,
}

impl Orchard {
    /// Delivery settings (default: [`WebhookSettings::default`]).
    pub fn with_webhook_settings(mut self, settings: WebhookSettings) -> Self {
        self.webhooks.settings = Arc::new(settings);
        self
    }

    pub fn webhook_settings(&self) -> &WebhookSettings {
        &self.webhooks.settings
    }

    /// Wakes this node's delivery job (a unit that recorded events committed).
    pub(crate) fn wake_webhooks(&self) {
        self.webhooks.wake.notify_one();
    }

    /// Puts an event in the outbox inside the caller's unit of work: it is delivered if and only if the unit
    /// commits. `tenant` is the tenant the event is about (its endpoints and the global ones get it); `None`
    /// only for service-wide events (global endpoints only).
    pub(crate) async fn record_webhook_event(
        &self,
        unit: &mut UnitOfWork,
        tenant: Option<TenantId>,
        event_type: &str,
        data: Value,
        now: UnixTime,
    ) -> Result<(), CoreError> {
        if !unit.writes_webhook_events() {
            return Ok(());
        }
        let event = event_record(tenant, event_type, &data, now)?;
        unit.record_webhook_event(&event).await?;
        Ok(())
    }

    /// Publishes an expiry warning (the expiry watcher's one call): to the owning tenant's endpoints and the
    /// global ones, or to the global ones alone when `tenant` is `None` (central IT's credentials). `data`
    /// says what expires and when, e.g. `{"credential": "dep_token", "name": "ASM", "expires_at": "…",
    /// "days_left": 30}`. Returns how many deliveries were queued.
    pub async fn publish_expiry_warning(
        &self,
        _system: &SystemCtx,
        tenant: Option<TenantId>,
        data: Value,
    ) -> Result<u64, CoreError> {
        let event = event_record(tenant, EVENT_EXPIRY_WARNING, &data, self.clock.now())?;
        let made = self.store.record_webhook_event(&event).await?;
        if made > 0 {
            self.wake_webhooks();
        }
        Ok(made)
    }

    /// The caller may manage `tenant`'s endpoints: another tenant answers NotFound (like a missing one), a
    /// viewer or helpdesk Forbidden.
    async fn tenant_owner(&self, who: &Principal, tenant: TenantId) -> Result<Owner, CoreError> {
        self.store
            .get_tenant(who.scope(), tenant)
            .await?
            .ok_or(CoreError::NotFound)?;
        let admin = who.tenant_admin(tenant)?;
        Ok(Owner {
            scope: admin.scope(),
            tenant: Some(tenant),
        })
    }

    fn global_owner(operator: &OperatorCtx) -> Owner {
        Owner {
            scope: operator.scope(),
            tenant: None,
        }
    }

    async fn create_webhook(
        &self,
        owner: Owner,
        who: &Principal,
        new: &NewWebhook,
    ) -> Result<CreatedWebhook, CoreError> {
        let url = new.url.trim().to_owned();
        check_url(&url, &self.webhooks.settings)?;
        let event_types = check_event_types(&new.event_types)?;
        let id = WebhookId::new();
        let secret = crate::random_secret(32);
        let record = WebhookEndpointRecord {
            id,
            tenant_id: owner.tenant,
            url,
            event_types,
            secret_sealed: self
                .pki
                .data_key
                .seal(secret.as_bytes(), &seal_context(id))?,
            enabled: new.enabled.unwrap_or(true),
            consecutive_failures: 0,
            disabled_at: None,
            disabled_reason: None,
            created_at: self.clock.now(),
            created_by: Some(who.actor()),
        };
        self.store.create_webhook_endpoint(&record).await?;
        tracing::info!(webhook = %id, tenant = ?owner.tenant, actor = %who.actor(), "webhook endpoint created");
        Ok(CreatedWebhook {
            webhook: WebhookView::of(&record),
            secret,
        })
    }

    async fn webhook_view(&self, owner: &Owner, id: WebhookId) -> Result<WebhookView, CoreError> {
        self.store
            .webhook_endpoint(owner.scope, owner.tenant, id)
            .await?
            .map(|w| WebhookView::of(&w))
            .ok_or(CoreError::NotFound)
    }

    async fn list_webhooks(&self, owner: &Owner) -> Result<Vec<WebhookView>, CoreError> {
        Ok(self
            .store
            .list_webhook_endpoints(owner.scope, owner.tenant)
            .await?
            .iter()
            .map(WebhookView::of)
            .collect())
    }

    async fn update_webhook(
        &self,
        owner: &Owner,
        id: WebhookId,
        patch: &WebhookPatch,
    ) -> Result<WebhookView, CoreError> {
        let url = patch.url.as_deref().map(str::trim).map(str::to_owned);
        if let Some(url) = &url {
            check_url(url, &self.webhooks.settings)?;
        }
        let event_types = patch
            .event_types
            .as_deref()
            .map(check_event_types)
            .transpose()?;
        self.store
            .update_webhook_endpoint(
                owner.scope,
                owner.tenant,
                id,
                &WebhookEndpointChange {
                    url,
                    event_types,
                    enabled: patch.enabled,
                },
            )
            .await?;
        if patch.enabled == Some(true) {
            self.wake_webhooks();
        }
        self.webhook_view(owner, id).await
    }

    async fn webhook_deliveries(
        &self,
        owner: &Owner,
        id: WebhookId,
    ) -> Result<Vec<WebhookDeliveryView>, CoreError> {
        Ok(self
            .store
            .list_webhook_deliveries(owner.scope, owner.tenant, id, DELIVERY_LOG_LIMIT)
            .await?
            .into_iter()
            .map(WebhookDeliveryView::of)
            .collect())
    }

    /// `GET /tenants/{id}/webhooks` (the tenant's admins and operators).
    pub async fn list_tenant_webhooks(
        &self,
        who: &Principal,
        tenant: TenantId,
    ) -> Result<Vec<WebhookView>, CoreError> {
        let owner = self.tenant_owner(who, tenant).await?;
        self.list_webhooks(&owner).await
    }

    /// `POST /tenants/{id}/webhooks`: the secret is in the answer, this once.
    pub async fn create_tenant_webhook(
        &self,
        who: &Principal,
        tenant: TenantId,
        new: &NewWebhook,
    ) -> Result<CreatedWebhook, CoreError> {
        let owner = self.tenant_owner(who, tenant).await?;
        self.create_webhook(owner, who, new).await
    }

    pub async fn tenant_webhook(
        &self,
        who: &Principal,
        tenant: TenantId,
        id: WebhookId,
    ) -> Result<WebhookView, CoreError> {
        let owner = self.tenant_owner(who, tenant).await?;
        self.webhook_view(&owner, id).await
    }

    pub async fn update_tenant_webhook(
        &self,
        who: &Principal,
        tenant: TenantId,
        id: WebhookId,
        patch: &WebhookPatch,
    ) -> Result<WebhookView, CoreError> {
        let owner = self.tenant_owner(who, tenant).await?;
        self.update_webhook(&owner, id, patch).await
    }

    pub async fn delete_tenant_webhook(
        &self,
        who: &Principal,
        tenant: TenantId,
        id: WebhookId,
    ) -> Result<(), CoreError> {
        let owner = self.tenant_owner(who, tenant).await?;
        Ok(self
            .store
            .delete_webhook_endpoint(owner.scope, owner.tenant, id)
            .await?)
    }

    pub async fn tenant_webhook_deliveries(
        &self,
        who: &Principal,
        tenant: TenantId,
        id: WebhookId,
    ) -> Result<Vec<WebhookDeliveryView>, CoreError> {
        let owner = self.tenant_owner(who, tenant).await?;
        self.webhook_deliveries(&owner, id).await
    }

    /// `GET /webhooks`: the global endpoints (operators).
    pub async fn list_global_webhooks(
        &self,
        operator: &OperatorCtx,
    ) -> Result<Vec<WebhookView>, CoreError> {
        self.list_webhooks(&Self::global_owner(operator)).await
    }

    pub async fn create_global_webhook(
        &self,
        operator: &OperatorCtx,
        new: &NewWebhook,
    ) -> Result<CreatedWebhook, CoreError> {
        self.create_webhook(Self::global_owner(operator), operator.principal(), new)
            .await
    }

    pub async fn global_webhook(
        &self,
        operator: &OperatorCtx,
        id: WebhookId,
    ) -> Result<WebhookView, CoreError> {
        self.webhook_view(&Self::global_owner(operator), id).await
    }

    pub async fn update_global_webhook(
        &self,
        operator: &OperatorCtx,
        id: WebhookId,
        patch: &WebhookPatch,
    ) -> Result<WebhookView, CoreError> {
        self.update_webhook(&Self::global_owner(operator), id, patch)
            .await
    }

    pub async fn delete_global_webhook(
        &self,
        operator: &OperatorCtx,
        id: WebhookId,
    ) -> Result<(), CoreError> {
        Ok(self
            .store
            .delete_webhook_endpoint(operator.scope(), None, id)
            .await?)
    }

    pub async fn global_webhook_deliveries(
        &self,
        operator: &OperatorCtx,
        id: WebhookId,
    ) -> Result<Vec<WebhookDeliveryView>, CoreError> {
        self.webhook_deliveries(&Self::global_owner(operator), id)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_https_urls_are_taken_unless_loopback_http_is_allowed_explicitly() {
        let strict = WebhookSettings::default();
        let loose = WebhookSettings {
            danger_allow_http_localhost: true,
            ..WebhookSettings::default()
        };
        assert!(check_url("https://hooks.example.edu/orchard", &strict).is_ok());
        for bad in [
            "http://hooks.example.edu/",
            "http://127.0.0.1:8080/",
            "ftp://example.edu/",
            "https://user:pw@example.edu/",
            "not a url",
        ] {
            let e = check_url(bad, &strict).unwrap_err().to_string();
            assert!(e.contains("url"), "{bad}: {e}");
        }
        assert!(check_url("http://127.0.0.1:8080/hook", &loose).is_ok());
        assert!(check_url("http://localhost/hook", &loose).is_ok());
        assert!(check_url("http://10.0.0.1/hook", &loose).is_err());
    }

    #[test]
    fn event_types_are_a_closed_vocabulary_and_duplicates_collapse() {
        assert!(check_event_types(&[]).is_err());
        assert!(check_event_types(&["device.exploded".into()])
            .unwrap_err()
            .to_string()
            .contains("event_types"));
        assert_eq!(
            check_event_types(&["command.result".into(), "command.result".into()]).unwrap(),
            vec!["command.result".to_owned()]
        );
    }
}
