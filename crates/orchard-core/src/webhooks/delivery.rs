//! Delivering webhook events: the `webhooks` job claims due deliveries (a guarded UPDATE per row, so every
//! node may run it and each delivery is sent by one), signs and POSTs each, and records the attempt.
//!
//! A 2xx answer is delivered. Anything else (another status, a redirect — never followed —, a timeout, a
//! refused connection) is retried after `retry_base_seconds · 2^(attempt−1)`, at most `retry_max_seconds`,
//! plus up to 20 % jitter, until `max_attempts`; `disable_after_failures` consecutive failed attempts disable
//! the endpoint, which is audited (`webhook.endpoint.disabled`). The answer's body is never read. Finished
//! deliveries older than `retention_days` are pruned (at most hourly per node).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use orchard_store::{ClaimedWebhookDelivery, WebhookAttemptEffect, WebhookAttemptRecord};
use orchard_types::UnixTime;
use rand::Rng;
use serde_json::json;
use tokio::sync::Notify;

use super::{check_url, seal_context, WebhookSettings};
use crate::access::capability::SystemCtx;
use crate::jobs::{Job, Step};
use crate::reporting::audit::{AuditActor, AuditEvent, AuditOutcome};
use crate::{CoreError, Orchard};

/// The signature header: `t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">`.
pub const SIGNATURE_HEADER: &str = "Orchard-Signature";
/// The event id (the same on every retry of an event): receivers deduplicate by it.
pub const EVENT_ID_HEADER: &str = "Orchard-Event-Id";
/// The event type.
pub const EVENT_TYPE_HEADER: &str = "Orchard-Event-Type";
/// How far a receiver should let the signature's timestamp be from its own clock (documented, not enforced
/// here: the receiver enforces it).
pub const REPLAY_WINDOW_SECONDS: i64 = 300;
/// How often a node prunes the delivery history.
const PRUNE_INTERVAL_SECONDS: i64 = 3600;
/// The audit action of an endpoint disabled by repeated failures.
pub const DISABLED_ACTION: &str = "webhook.endpoint.disabled";

/// The `Orchard-Signature` value for `body` sent at `timestamp` with `secret`.
pub fn signature_header(secret: &[u8], timestamp: i64, body: &str) -> Result<String, CoreError> {
    let signed = format!("{timestamp}.{body}");
    let mac = orchard_pki::seal::hmac_sha256_of(secret, signed.as_bytes())?;
    Ok(format!("t={timestamp},v1={}", hex::encode(mac)))
}

/// When the attempt after `attempt` failed ones is due, or `None` when the delivery is out of attempts.
pub fn next_attempt_at(
    settings: &WebhookSettings,
    attempt: i64,
    attempted_at: UnixTime,
    jitter_fraction: f64,
) -> Option<UnixTime> {
    if attempt >= settings.max_attempts {
        return None;
    }
    let exponent = u32::try_from((attempt - 1).clamp(0, 30)).unwrap_or(30);
    let delay = settings
        .retry_base_seconds
        .max(1)
        .saturating_mul(1_i64 << exponent)
        .min(settings.retry_max_seconds.max(1));
    // Truncation is fine: jitter spreads receivers' load, it need not be exact.
    #[allow(clippy::cast_possible_truncation, clippy::cast_precision_loss)]
    let jitter = (delay as f64 * jitter_fraction.clamp(0.0, 0.2)) as i64;
    Some(attempted_at.plus_seconds(delay + jitter))
}

/// What one step did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeliveryStats {
    pub claimed: usize,
    pub delivered: usize,
    pub failed: usize,
}

struct Answer {
    status: Option<u16>,
    error: Option<String>,
}

impl Orchard {
    /// One delivery step as node `owner`: claims due deliveries, sends them concurrently and records each
    /// attempt. Tests call this directly.
    pub async fn deliver_webhooks_once(
        &self,
        _system: &SystemCtx,
        owner: &str,
    ) -> Result<DeliveryStats, CoreError> {
        let settings = self.webhooks.settings.clone();
        let now = self.clock.now();
        self.prune_webhook_history_if_due(&settings, now).await?;
        let lease_seconds = i64::try_from(settings.timeout.as_secs())
            .unwrap_or(60)
            .saturating_mul(2)
            + 30;
        let claimed = self
            .store
            .claim_webhook_deliveries(owner, now, now.plus_seconds(lease_seconds), settings.batch)
            .await?;
        let mut stats = DeliveryStats {
            claimed: claimed.len(),
            ..DeliveryStats::default()
        };
        if claimed.is_empty() {
            return Ok(stats);
        }
        let client = |resolver: Option<Arc<PublicOnlyResolver>>| {
            let builder = reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(settings.timeout)
                .connect_timeout(settings.timeout)
                .user_agent("Orchard-Webhooks/1");
            match resolver {
                Some(r) => builder.dns_resolver(r),
                None => builder,
            }
            .build()
            .map_err(|e| CoreError::Internal(format!("webhook http client: {e}")))
        };
        // A department's endpoint reaches public addresses only (see PublicOnlyResolver); the operators'
        // global endpoints may name hosts on the campus network.
        let departments = client(Some(Arc::new(PublicOnlyResolver {
            allow_loopback: settings.danger_allow_http_localhost,
        })))?;
        let operators = client(None)?;
        let attempts = futures::future::join_all(claimed.iter().map(|d| {
            let client = if d.endpoint_tenant_id.is_some() {
                &departments
            } else {
                &operators
            };
            self.send_delivery(client, &settings, d)
        }))
        .await;
        for (d, (attempted_at, answer)) in claimed.iter().zip(attempts) {
            let delivered = answer.status.is_some_and(|s| (200..300).contains(&s));
            if delivered {
                stats.delivered += 1;
            } else {
                stats.failed += 1;
            }
            let attempt = d.attempts + 1;
            let next = if delivered {
                None
            } else {
                next_attempt_at(
                    &settings,
                    attempt,
                    attempted_at,
                    rand::thread_rng().gen_range(0.0..=0.2),
                )
            };
            let error = match (&answer.error, answer.status) {
                (Some(e), _) => Some(e.clone()),
                (None, Some(s)) if !delivered => Some(format!("answered {s}")),
                _ => None,
            };
            let effect = self
                .store
                .record_webhook_attempt(&WebhookAttemptRecord {
                    delivery_id: &d.delivery_id,
                    endpoint_id: d.endpoint_id,
                    lease_owner: owner,
                    attempt,
                    attempted_at,
                    status_code: answer.status,
                    error: error.clone(),
                    delivered,
                    next_attempt_at: next,
                    disable_after_failures: settings.disable_after_failures,
                })
                .await?;
            match effect {
                WebhookAttemptEffect::Recorded => {
                    if !delivered {
                        tracing::info!(webhook = %d.endpoint_id, delivery = %d.delivery_id, attempt, error = ?error, "webhook delivery failed");
                    }
                }
                WebhookAttemptEffect::LeaseLost => {
                    tracing::warn!(webhook = %d.endpoint_id, delivery = %d.delivery_id, "webhook delivery outlived its lease; another node may send it again");
                }
                WebhookAttemptEffect::DisabledEndpoint => {
                    tracing::warn!(webhook = %d.endpoint_id, failures = settings.disable_after_failures, "webhook endpoint disabled after repeated failures");
                    let event = AuditEvent {
                        actor: AuditActor {
                            id: "system".into(),
                            name: Some("orchard".into()),
                            role: None,
                            tenant_id: None,
                        },
                        tenant_id: d.endpoint_tenant_id,
                        action: DISABLED_ACTION.into(),
                        target: Some(d.endpoint_id.to_string()),
                        request_id: None,
                        outcome: AuditOutcome::Ok,
                        http_status: None,
                        details: json!({
                            "url": d.url,
                            "consecutive_failures": settings.disable_after_failures,
                            "last_error": error,
                        }),
                    };
                    if let Err(e) = self.append_audit(event).await {
                        tracing::error!(webhook = %d.endpoint_id, error = %e, "disabling of a webhook endpoint could not be audited");
                    }
                }
            }
        }
        Ok(stats)
    }

    /// Deletes finished deliveries older than the retention, at most once an hour per node.
    async fn prune_webhook_history_if_due(
        &self,
        settings: &WebhookSettings,
        now: UnixTime,
    ) -> Result<(), CoreError> {
        use std::sync::atomic::Ordering;
        let last = self.webhooks.last_pruned.load(Ordering::Relaxed);
        if now.0 - last < PRUNE_INTERVAL_SECONDS
            || self
                .webhooks
                .last_pruned
                .compare_exchange(last, now.0, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return Ok(());
        }
        let before = now.plus_seconds(-settings.retention_days.max(1).saturating_mul(86_400));
        let pruned = self.store.prune_webhook_history(before).await?;
        if pruned > 0 {
            tracing::info!(deliveries = pruned, "old webhook deliveries pruned");
        }
        Ok(())
    }

    /// Signs and POSTs one delivery; the time it was sent and what came back.
    async fn send_delivery(
        &self,
        client: &reqwest::Client,
        settings: &WebhookSettings,
        d: &ClaimedWebhookDelivery,
    ) -> (UnixTime, Answer) {
        let now = self.clock.now();
        let failed = |e: String| Answer {
            status: None,
            error: Some(e),
        };
        if let Err(e) = check_url(&d.url, settings) {
            return (now, failed(e.to_string()));
        }
        // An address written in the URL is never resolved, so the resolver cannot refuse it: check it here.
        if d.endpoint_tenant_id.is_some() {
            let literal = reqwest::Url::parse(&d.url).ok().and_then(|u| {
                let host = u.host_str()?;
                host.trim_start_matches('[')
                    .trim_end_matches(']')
                    .parse::<IpAddr>()
                    .ok()
            });
            if let Some(ip) = literal {
                if !destination_allowed(ip, settings.danger_allow_http_localhost) {
                    tracing::warn!(webhook = %d.endpoint_id, %ip, "a department's webhook names a non-public address; not sent");
                    return (
                        now,
                        failed(format!("refused: {ip} is not a public address")),
                    );
                }
            }
        }
        let secret = match self
            .pki
            .data_key
            .open(&d.secret_sealed, &seal_context(d.endpoint_id))
        {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(webhook = %d.endpoint_id, error = %e, "webhook secret does not open");
                return (now, failed("the endpoint's secret does not open".into()));
            }
        };
        let signature = match signature_header(secret.expose(), now.0, &d.body) {
            Ok(s) => s,
            Err(e) => return (now, failed(e.to_string())),
        };
        let sent = client
            .post(&d.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(SIGNATURE_HEADER, signature)
            .header(EVENT_ID_HEADER, &d.event_id)
            .header(EVENT_TYPE_HEADER, &d.event_type)
            .body(d.body.clone())
            .send()
            .await;
        let answer = match sent {
            Ok(response) => Answer {
                status: Some(response.status().as_u16()),
                error: None,
            },
            Err(e) if e.is_timeout() => {
                failed(format!("no answer within {} s", settings.timeout.as_secs()))
            }
            Err(e) if e.is_connect() => {
                // The public-only resolver's refusal travels as a connect error: say so, not "failed".
                let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
                let mut refused = None;
                while let Some(s) = source {
                    if let Some(r) = s.downcast_ref::<NoPublicAddress>() {
                        refused = Some(r.to_string());
                        break;
                    }
                    source = s.source();
                }
                failed(refused.unwrap_or_else(|| "connection failed".into()))
            }
            Err(e) => failed(format!("request failed: {e}")),
        };
        (now, answer)
    }
}

/// The delivery job: on every node (claims decide who sends what), woken when a unit recorded events.
pub struct WebhookDeliveryJob {
    orchard: Arc<Orchard>,
    system: SystemCtx,
    owner: String,
}

impl WebhookDeliveryJob {
    pub fn new(orchard: Arc<Orchard>, system: SystemCtx, owner: &str) -> Self {
        Self {
            orchard,
            system,
            owner: owner.to_owned(),
        }
    }
}

impl Job for WebhookDeliveryJob {
    fn name(&self) -> &str {
        "webhooks"
    }

    fn interval(&self) -> Duration {
        self.orchard.webhooks.settings.interval
    }

    fn wake_signal(&self) -> Option<Arc<Notify>> {
        Some(self.orchard.webhooks.wake.clone())
    }

    async fn run_once(&self) -> Result<Step, CoreError> {
        let stats = self
            .orchard
            .deliver_webhooks_once(&self.system, &self.owner)
            .await?;
        let batch = usize::try_from(self.orchard.webhooks.settings.batch).unwrap_or(usize::MAX);
        Ok(if stats.claimed >= batch {
            Step::More(Duration::ZERO)
        } else {
            Step::Idle
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_double_up_to_the_cap_with_bounded_jitter_and_stop_at_the_last_attempt() {
        let s = WebhookSettings {
            retry_base_seconds: 10,
            retry_max_seconds: 60,
            max_attempts: 5,
            ..WebhookSettings::default()
        };
        let t = UnixTime(1_000);
        assert_eq!(next_attempt_at(&s, 1, t, 0.0), Some(UnixTime(1_010)));
        assert_eq!(next_attempt_at(&s, 2, t, 0.0), Some(UnixTime(1_020)));
        assert_eq!(next_attempt_at(&s, 3, t, 0.0), Some(UnixTime(1_040)));
        assert_eq!(next_attempt_at(&s, 4, t, 0.0), Some(UnixTime(1_060)));
        assert_eq!(next_attempt_at(&s, 4, t, 0.2), Some(UnixTime(1_072)));
        assert_eq!(next_attempt_at(&s, 4, t, 5.0), Some(UnixTime(1_072)));
        assert_eq!(next_attempt_at(&s, 5, t, 0.0), None);
    }

    #[test]
    fn the_signature_is_hmac_sha256_of_timestamp_dot_body() {
        // RFC 4231 test case 2's key and message, framed as "<t>.<body>".
        let header = signature_header(b"Jefe", 1, "what do ya want for nothing?").unwrap();
        let expected =
            orchard_pki::seal::hmac_sha256_of(b"Jefe", b"1.what do ya want for nothing?").unwrap();
        assert_eq!(header, format!("t=1,v1={}", hex::encode(expected)));
        let rfc =
            orchard_pki::seal::hmac_sha256_of(b"Jefe", b"what do ya want for nothing?").unwrap();
        assert_eq!(
            hex::encode(rfc),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}

/// The resolver's refusal: the host has no address a department's webhook may reach.
#[derive(Debug, thiserror::Error)]
#[error("refused: {0} has no public address")]
struct NoPublicAddress(String);

/// Resolves a department's webhook host to public addresses only. A department admin must not make Orchard
/// probe the campus network or the cloud's metadata service (the delivery log would show what answers there):
/// private, loopback, link-local, shared, multicast and reserved addresses are dropped, and a host with no other
/// address fails as if it did not resolve. The connection uses the addresses checked here, so a DNS answer
/// that changes between a check and the connection (rebinding) cannot get past it.
struct PublicOnlyResolver {
    /// Loopback is allowed only with the tests' danger setting.
    allow_loopback: bool,
}

impl reqwest::dns::Resolve for PublicOnlyResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allow_loopback = self.allow_loopback;
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let public: Vec<SocketAddr> = found
                .into_iter()
                .filter(|a| destination_allowed(a.ip(), allow_loopback))
                .collect();
            if public.is_empty() {
                tracing::warn!(%host, "a department's webhook host has no public address; not sent");
                return Err(Box::new(NoPublicAddress(host)) as Box<_>);
            }
            let addrs: reqwest::dns::Addrs = Box::new(public.into_iter());
            Ok(addrs)
        })
    }
}

/// Whether a department's webhook may connect to `ip`: a globally routable unicast address (or loopback,
/// when allowed for tests).
fn destination_allowed(ip: IpAddr, allow_loopback: bool) -> bool {
    if ip.is_loopback() {
        return allow_loopback;
    }
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            !(v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || a == 0
                || (a == 100 && (64..128).contains(&b)) // shared address space (carrier-grade NAT)
                || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
                || (a == 198 && (18..20).contains(&b)) // benchmarking
                || a >= 240) // reserved
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return destination_allowed(IpAddr::V4(v4), allow_loopback);
            }
            let first = v6.segments()[0];
            !(v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00 // unique local
                || (first & 0xffc0) == 0xfe80 // link-local
                || (first == 0x2001 && v6.segments()[1] == 0x0db8) // documentation
                || first == 0x0064) // NAT64 well-known prefix (64:ff9b::/96) and its local use
        }
    }
}

#[cfg(test)]
mod destination_tests {
    use super::destination_allowed;

    #[test]
    fn departments_reach_public_addresses_only() {
        for ip in [
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "127.0.0.1",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:10.0.0.1",
            "::ffff:127.0.0.1",
            "2001:db8::1",
        ] {
            assert!(
                !destination_allowed(ip.parse().unwrap(), false),
                "{ip} is allowed"
            );
        }
        for ip in ["130.237.28.40", "8.8.8.8", "2a00:1450:4001:80b::200e"] {
            assert!(destination_allowed(ip.parse().unwrap(), false), "{ip}");
        }
        assert!(destination_allowed("127.0.0.1".parse().unwrap(), true));
        assert!(destination_allowed("::1".parse().unwrap(), true));
        assert!(!destination_allowed("10.0.0.1".parse().unwrap(), true));
    }
}
