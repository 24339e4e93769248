//! The troubleshooting checklist of a device: what a department goes through before it calls the service desk,
//! computed from what Orchard already knows (last check-in, push token, the command queue and Apple's errors,
//! the identity certificate, the setup state). Each check is green, amber or red with the facts that decided
//! it; the web UI words them (and what to do) in the reader's language.
//!
//! Pure functions of a device's detail, its recent command history and the time, so every threshold is a
//! data-driven unit test.

use std::collections::BTreeMap;

use orchard_types::UnixTime;
use serde::Serialize;

use crate::commands::queue::CommandView;
use crate::device::views::DeviceDetail;

/// A device seen within this many seconds is fine; within [`STALE_AFTER`] it is worth a look.
pub const FRESH_WITHIN: i64 = 86_400;
/// Not seen for this long: it is off, out of Wi-Fi or no longer managed.
pub const STALE_AFTER: i64 = 7 * 86_400;
/// An identity certificate running out within this many seconds needs attention (renewal normally starts 60
/// days before; still not renewed this close means renewal is not getting through).
pub const IDENTITY_WARN_WITHIN: i64 = 30 * 86_400;
/// A command waiting longer than this means the device is not fetching its commands.
pub const PENDING_TOO_LONG: i64 = 86_400;

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Green,
    Amber,
    Red,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Green => "green",
            Level::Amber => "amber",
            Level::Red => "red",
        }
    }
}

/// One check: its name (`last_checkin`, `push_token`, `pending_commands`, `failed_commands`, `identity`,
/// `setup`), its level, and the facts its wording needs (`days`, `count`, `request_type`, `error`, `date`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckItem {
    pub check: &'static str,
    pub level: Level,
    pub facts: BTreeMap<&'static str, String>,
}

impl CheckItem {
    fn new(check: &'static str, level: Level) -> Self {
        CheckItem {
            check,
            level,
            facts: BTreeMap::new(),
        }
    }

    fn fact(mut self, key: &'static str, value: impl ToString) -> Self {
        self.facts.insert(key, value.to_string());
        self
    }
}

/// Statuses of a command still waiting for the device.
fn is_pending(status: &str) -> bool {
    matches!(status, "queued" | "sent" | "not_now")
}

/// Statuses of a command that did not do what was asked.
fn is_failure(status: &str) -> bool {
    matches!(
        status,
        "error" | "command_format_error" | "failed" | "expired"
    )
}

fn time_of(s: Option<&str>) -> Option<UnixTime> {
    s.and_then(UnixTime::parse_rfc3339)
}

fn whole_days(seconds: i64) -> i64 {
    seconds.max(0) / 86_400
}

/// Apple's own words for a failed command: the first description of its ErrorChain (the English one when the
/// device sent both), with domain and code; `None` when the report carried no chain.
pub fn apple_error_text(error_chain: Option<&serde_json::Value>) -> Option<String> {
    let items = error_chain?.as_array()?;
    let texts: Vec<String> = items
        .iter()
        .filter_map(|item| {
            let description = item
                .get("USEnglishDescription")
                .or_else(|| item.get("LocalizedDescription"))
                .and_then(|d| d.as_str())
                .unwrap_or("");
            let domain = item.get("ErrorDomain").and_then(|d| d.as_str());
            let code = item.get("ErrorCode").and_then(|c| c.as_i64());
            let origin = match (domain, code) {
                (Some(d), Some(c)) => format!(" ({d} {c})"),
                (Some(d), None) => format!(" ({d})"),
                (None, Some(c)) => format!(" ({c})"),
                (None, None) => String::new(),
            };
            let text = format!("{description}{origin}");
            (!text.trim().is_empty()).then(|| text.trim().to_string())
        })
        .collect();
    (!texts.is_empty()).then(|| texts.join("; "))
}

/// The checklist of `device`, given its newest commands first (`history`) and the time `now`.
pub fn checklist(device: &DeviceDetail, history: &[CommandView], now: UnixTime) -> Vec<CheckItem> {
    vec![
        last_checkin(device, now),
        push_token(device),
        pending_commands(history, now),
        failed_commands(history),
        identity(device, now),
        setup(device),
    ]
}

fn last_checkin(device: &DeviceDetail, now: UnixTime) -> CheckItem {
    let Some(seen) = time_of(device.device.last_seen_at.as_deref()) else {
        return CheckItem::new("last_checkin", Level::Red);
    };
    let age = now.0 - seen.0;
    let level = if age <= FRESH_WITHIN {
        Level::Green
    } else if age <= STALE_AFTER {
        Level::Amber
    } else {
        Level::Red
    };
    CheckItem::new("last_checkin", level)
        .fact("days", whole_days(age))
        .fact("date", seen.to_rfc3339())
}

fn push_token(device: &DeviceDetail) -> CheckItem {
    let device_channel = device.channels.iter().find(|c| c.user_short_name.is_none());
    match device_channel {
        // APNs said the token is dead: a new one comes with the iPad's next TokenUpdate (a restart on Wi-Fi).
        Some(c) if c.has_push_token && c.push.token_dead_at.is_some() => {
            let item = CheckItem::new("push_token", Level::Amber);
            match &c.push.token_dead_reason {
                Some(reason) => item.fact("reason", reason.clone()),
                None => item,
            }
        }
        Some(c) if c.has_push_token => CheckItem::new("push_token", Level::Green),
        _ => CheckItem::new("push_token", Level::Red),
    }
}

fn pending_commands(history: &[CommandView], now: UnixTime) -> CheckItem {
    let pending: Vec<&CommandView> = history.iter().filter(|c| is_pending(c.status)).collect();
    let Some(oldest) = pending
        .iter()
        .filter_map(|c| time_of(Some(&c.queued_at)))
        .min()
    else {
        return CheckItem::new("pending_commands", Level::Green).fact("count", 0);
    };
    let waited = now.0 - oldest.0;
    let level = if waited > PENDING_TOO_LONG {
        Level::Red
    } else {
        Level::Amber
    };
    CheckItem::new("pending_commands", level)
        .fact("count", pending.len())
        .fact("days", whole_days(waited))
}

fn failed_commands(history: &[CommandView]) -> CheckItem {
    let failures: Vec<&CommandView> = history.iter().filter(|c| is_failure(c.status)).collect();
    let Some(latest) = failures.first() else {
        return CheckItem::new("failed_commands", Level::Green).fact("count", 0);
    };
    // The newest command failing is worse than an old failure the device has since got past.
    let newest_failed = history.first().is_some_and(|c| is_failure(c.status));
    let level = if newest_failed || failures.len() >= 3 {
        Level::Red
    } else {
        Level::Amber
    };
    let error =
        apple_error_text(latest.error_chain.as_ref()).unwrap_or_else(|| latest.status.to_string());
    CheckItem::new("failed_commands", level)
        .fact("count", failures.len())
        .fact("request_type", &latest.request_type)
        .fact("error", error)
}

fn identity(device: &DeviceDetail, now: UnixTime) -> CheckItem {
    let identity = &device.identity;
    if identity.renewal_state == "failed" {
        return CheckItem::new("identity", Level::Red)
            .fact("state", "renewal_failed")
            .fact(
                "error",
                identity.last_renewal_error.clone().unwrap_or_default(),
            );
    }
    let Some(not_after) = time_of(identity.not_after.as_deref()) else {
        return CheckItem::new("identity", Level::Red).fact("state", "none");
    };
    let left = not_after.0 - now.0;
    let (level, state) = if left <= 0 {
        (Level::Red, "expired")
    } else if left <= IDENTITY_WARN_WITHIN {
        (Level::Amber, "expiring")
    } else {
        (Level::Green, "valid")
    };
    CheckItem::new("identity", level)
        .fact("state", state)
        .fact("days", whole_days(left))
        .fact("date", not_after.to_rfc3339())
}

fn setup(device: &DeviceDetail) -> CheckItem {
    let state = device.device.enrollment_state;
    if state != "enrolled" {
        return CheckItem::new("setup", Level::Red).fact("state", state);
    }
    let waiting = device
        .channels
        .iter()
        .any(|c| c.user_short_name.is_none() && c.awaiting_configuration);
    if waiting {
        CheckItem::new("setup", Level::Amber).fact("state", "awaiting_configuration")
    } else {
        CheckItem::new("setup", Level::Green).fact("state", state)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::device::views::{ChannelView, DeviceView};
    use crate::enrollment::renewal::IdentityStatusView;
    use orchard_types::{DeviceId, TenantId};

    const NOW: UnixTime = UnixTime(1_800_000_000);

    fn at(seconds_ago: i64) -> String {
        UnixTime(NOW.0 - seconds_ago).to_rfc3339()
    }

    fn device(last_seen_ago: Option<i64>, push: bool, identity_left: Option<i64>) -> DeviceDetail {
        DeviceDetail {
            device: DeviceView {
                id: DeviceId::new(),
                udid: "u".into(),
                tenant_id: TenantId::new(),
                serial_number: Some("S".into()),
                enrollment_state: "enrolled",
                device_name: None,
                model: None,
                model_name: None,
                product_name: None,
                os_version: None,
                build_version: None,
                is_supervised: None,
                enrolled_at: None,
                last_seen_at: last_seen_ago.map(at),
            },
            channels: vec![ChannelView {
                id: "u".into(),
                user_short_name: None,
                has_push_token: push,
                has_unlock_token: false,
                awaiting_configuration: false,
                token_updated_at: None,
                push: Default::default(),
            }],
            identity: IdentityStatusView {
                not_after: identity_left.map(|l| at(-l)),
                renewal_state: "none",
                renewal_requested_at: None,
                renewed_at: None,
                last_renewal_error: None,
                last_renewal_failed_at: None,
                renewal_failures: 0,
            },
            inventory: BTreeMap::new(),
        }
    }

    fn command(
        status: &'static str,
        queued_ago: i64,
        chain: Option<serde_json::Value>,
    ) -> CommandView {
        CommandView {
            command_uuid: "c".into(),
            request_type: "DeviceLock".into(),
            status,
            channel: "u".into(),
            queued_by: None,
            queued_at: at(queued_ago),
            sent_at: None,
            completed_at: None,
            expires_at: None,
            error_chain: chain,
            result: None,
            result_redacted: false,
        }
    }

    fn levels(items: &[CheckItem]) -> Vec<(&'static str, &'static str)> {
        items.iter().map(|i| (i.check, i.level.as_str())).collect()
    }

    #[test]
    fn a_healthy_device_is_all_green() {
        let d = device(Some(600), true, Some(200 * 86_400));
        let items = checklist(&d, &[command("acknowledged", 700, None)], NOW);
        assert!(items.iter().all(|i| i.level == Level::Green), "{items:?}");
    }

    #[test]
    fn a_token_apns_declared_dead_is_amber() {
        let mut d = device(Some(600), true, Some(200 * 86_400));
        d.channels[0].push.token_dead_at = Some(at(60));
        d.channels[0].push.token_dead_reason = Some("Unregistered".into());
        let items = checklist(&d, &[], NOW);
        assert_eq!(items[1].check, "push_token");
        assert_eq!(items[1].level, Level::Amber, "{items:?}");
    }

    #[test]
    fn thresholds_of_each_check() {
        for (seen, level) in [
            (Some(FRESH_WITHIN), "green"),
            (Some(FRESH_WITHIN + 1), "amber"),
            (Some(STALE_AFTER + 1), "red"),
            (None, "red"),
        ] {
            let items = checklist(&device(seen, true, Some(STALE_AFTER * 10)), &[], NOW);
            assert_eq!(items[0].level.as_str(), level, "seen {seen:?}");
        }
        let items = checklist(
            &device(Some(0), false, Some(IDENTITY_WARN_WITHIN)),
            &[],
            NOW,
        );
        assert_eq!(
            levels(&items)[1..],
            [
                ("push_token", "red"),
                ("pending_commands", "green"),
                ("failed_commands", "green"),
                ("identity", "amber"),
                ("setup", "green"),
            ]
        );
        let expired = checklist(&device(Some(0), true, Some(-1)), &[], NOW);
        assert_eq!(expired[4].level, Level::Red);
        assert_eq!(expired[4].facts["state"], "expired");
    }

    #[test]
    fn the_queue_and_apples_errors() {
        let chain = serde_json::json!([{"ErrorCode": 12021, "ErrorDomain": "MCMDMErrorDomain",
            "LocalizedDescription": "Låst", "USEnglishDescription": "Device is locked"}]);
        let history = [
            command("queued", 100, None),
            command("error", 200, Some(chain)),
            command("acknowledged", 300, None),
        ];
        let items = checklist(
            &device(Some(0), true, Some(STALE_AFTER * 10)),
            &history,
            NOW,
        );
        assert_eq!(items[2].level, Level::Amber);
        assert_eq!(items[2].facts["count"], "1");
        assert_eq!(items[3].level, Level::Amber, "an older failure");
        assert_eq!(
            items[3].facts["error"],
            "Device is locked (MCMDMErrorDomain 12021)"
        );
        let stuck = [
            command("sent", PENDING_TOO_LONG + 1, None),
            command("failed", 10, None),
        ];
        let items = checklist(&device(Some(0), true, Some(STALE_AFTER * 10)), &stuck, NOW);
        assert_eq!(items[2].level, Level::Red, "waiting more than a day");
        assert_eq!(items[3].facts["error"], "failed", "no chain: the status");
        let newest_failed = [command("expired", 1, None)];
        let items = checklist(
            &device(Some(0), true, Some(STALE_AFTER * 10)),
            &newest_failed,
            NOW,
        );
        assert_eq!(items[3].level, Level::Red);
    }

    #[test]
    fn apple_error_text_reads_the_chain() {
        assert_eq!(apple_error_text(None), None);
        assert_eq!(apple_error_text(Some(&serde_json::json!([]))), None);
        assert_eq!(
            apple_error_text(Some(
                &serde_json::json!([{"LocalizedDescription": "x"}, {"ErrorCode": 4}])
            )),
            Some("x; (4)".into())
        );
    }
}
