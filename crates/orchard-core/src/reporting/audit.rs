//! The audit log: who did what to which tenant's data, when, through which request, and how it ended.
//!
//! Events are appended and never changed (the database refuses UPDATE and DELETE on the table). The HTTP layer
//! records every mutating API request through [`Orchard::record_audit`]; other surfaces (sign-in, background
//! jobs) call it the same way. Reading is scoped like every other tenant read: operators and helpdesk see all
//! events, a tenant admin only the events of its own tenant, viewers none.

use orchard_store::{AuditEventRecord, AuditFilter, Page};
use orchard_types::{Role, TenantId, UnixTime};
use serde::Serialize;

use crate::access::capability::OversightCtx;
use crate::access::capability::SystemCtx;
use crate::access::principal::Principal;
use crate::{CoreError, Orchard};

/// How a recorded action ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AuditOutcome {
    /// It was done.
    Ok,
    /// Refused: no valid credential, not allowed, or the target is not visible to the caller (401/403/404).
    Denied,
    /// It failed: invalid request, conflict, or a server fault.
    Error,
}

impl AuditOutcome {
    pub fn as_str(&self) -> &'static str {
        match self {
            AuditOutcome::Ok => "ok",
            AuditOutcome::Denied => "denied",
            AuditOutcome::Error => "error",
        }
    }

    /// The outcome an HTTP status stands for. 404 counts as denied: for another tenant's object it is exactly
    /// the refusal, and the caller cannot tell the two apart (by design), so neither can the log's reader.
    pub fn from_http_status(status: u16) -> Self {
        match status {
            100..=399 => AuditOutcome::Ok,
            401 | 403 | 404 => AuditOutcome::Denied,
            _ => AuditOutcome::Error,
        }
    }
}

/// Who acted, as the audit log names them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditActor {
    /// Stable identity: `token:<uuid>` or `user:<id>`, or `anonymous` when no credential was accepted.
    pub id: String,
    pub name: Option<String>,
    pub role: Option<Role>,
    /// The actor's own tenant (tenant roles); the default tenant of its events.
    pub tenant_id: Option<TenantId>,
}

impl AuditActor {
    pub fn of(principal: &Principal) -> Self {
        AuditActor {
            id: principal.actor_id(),
            name: Some(principal.name().to_owned()),
            role: Some(principal.role()),
            tenant_id: principal.tenant_id(),
        }
    }

    /// A caller whose credential was missing or refused.
    pub fn anonymous() -> Self {
        AuditActor {
            id: "anonymous".into(),
            name: None,
            role: None,
            tenant_id: None,
        }
    }
}

/// An event to record; [`Orchard::record_audit`] adds the id and the time.
#[derive(Debug, Clone)]
pub struct AuditEvent {
    pub actor: AuditActor,
    /// The tenant the target belongs to; None for global actions.
    pub tenant_id: Option<TenantId>,
    /// Stable dotted name, e.g. `device.command.queue`.
    pub action: String,
    pub target: Option<String>,
    pub request_id: Option<String>,
    pub outcome: AuditOutcome,
    pub http_status: Option<u16>,
    /// A JSON object with details; never put secrets here.
    pub details: serde_json::Value,
}

/// The longest text kept in one field; longer values (a hostile path, say) are cut.
const MAX_FIELD_CHARS: usize = 512;

fn bounded(s: &str) -> String {
    if s.chars().count() <= MAX_FIELD_CHARS {
        s.to_string()
    } else {
        s.chars().take(MAX_FIELD_CHARS).collect()
    }
}

/// A filter as the API takes it; `action` ending in `.*` matches every action under that prefix.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    pub tenant_id: Option<TenantId>,
    pub actor: Option<String>,
    pub action: Option<String>,
    pub from: Option<UnixTime>,
    pub to: Option<UnixTime>,
}

impl AuditQuery {
    fn to_filter(&self) -> Result<AuditFilter, CoreError> {
        if let (Some(from), Some(to)) = (self.from, self.to) {
            if from > to {
                return Err(CoreError::Invalid("from is after to".into()));
            }
        }
        let (action, action_prefix) = match self.action.as_deref().map(str::trim) {
            None | Some("") => (None, None),
            Some(a) => match a.strip_suffix('*') {
                Some(prefix) if !prefix.is_empty() => (None, Some(prefix.to_string())),
                Some(_) => (None, None),
                None => (Some(a.to_string()), None),
            },
        };
        Ok(AuditFilter {
            tenant_id: self.tenant_id,
            actor: self
                .actor
                .as_deref()
                .map(str::trim)
                .filter(|a| !a.is_empty())
                .map(str::to_string),
            action,
            action_prefix,
            from: self.from,
            to: self.to,
        })
    }
}

/// An event as the API shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuditEventView {
    pub id: String,
    pub at: String,
    pub actor: String,
    pub actor_name: Option<String>,
    pub actor_role: Option<String>,
    pub tenant_id: Option<String>,
    pub action: String,
    pub target: Option<String>,
    pub request_id: Option<String>,
    pub outcome: String,
    pub status: Option<i64>,
    pub details: serde_json::Value,
}

impl From<&AuditEventRecord> for AuditEventView {
    fn from(e: &AuditEventRecord) -> Self {
        AuditEventView {
            id: e.id.clone(),
            at: e.at.to_rfc3339(),
            actor: e.actor.clone(),
            actor_name: e.actor_name.clone(),
            actor_role: e.actor_role.clone(),
            tenant_id: e.tenant_id.map(|t| t.to_string()),
            action: e.action.clone(),
            target: e.target.clone(),
            request_id: e.request_id.clone(),
            outcome: e.outcome.clone(),
            status: e.status,
            details: serde_json::from_str(&e.details)
                .unwrap_or(serde_json::Value::String(e.details.clone())),
        }
    }
}

impl Orchard {
    /// Appends one event to the audit log and returns it as stored (the server recording what happened, for
    /// no caller: sign-ins, refusals and background steps are recorded from inside core).
    pub async fn record_audit(
        &self,
        _system: &SystemCtx,
        event: AuditEvent,
    ) -> Result<AuditEventRecord, CoreError> {
        self.append_audit(event).await
    }

    /// [`Orchard::record_audit`] for core's own use cases.
    pub(crate) async fn append_audit(
        &self,
        event: AuditEvent,
    ) -> Result<AuditEventRecord, CoreError> {
        let details = match event.details {
            serde_json::Value::Null => "{}".to_string(),
            v @ serde_json::Value::Object(_) => v.to_string(),
            other => serde_json::json!({ "value": other }).to_string(),
        };
        let record = AuditEventRecord {
            id: uuid::Uuid::now_v7().hyphenated().to_string(),
            at: self.clock.now(),
            actor: bounded(&event.actor.id),
            actor_name: event.actor.name.as_deref().map(bounded),
            actor_role: event.actor.role.map(|r| r.as_str().to_string()),
            tenant_id: event.tenant_id,
            action: bounded(&event.action),
            target: event.target.as_deref().map(bounded),
            request_id: event.request_id.as_deref().map(bounded),
            outcome: event.outcome.as_str().to_string(),
            status: event.http_status.map(i64::from),
            details,
        };
        self.store.insert_audit_event(&record).await?;
        Ok(record)
    }

    /// Events the principal may see that match the query, newest first, and how many match in all.
    pub async fn list_audit(
        &self,
        overseer: &OversightCtx,
        query: &AuditQuery,
        page: Page,
    ) -> Result<(Vec<AuditEventRecord>, i64), CoreError> {
        let scope = overseer.scope();
        let filter = query.to_filter()?;
        let events = self.store.list_audit_events(scope, &filter, page).await?;
        let total = self.store.count_audit_events(scope, &filter).await?;
        Ok((events, total))
    }
}

/// Parses a time bound of a query: unix seconds, RFC 3339, or a UTC date `YYYY-MM-DD` (its first second, or
/// its last when `end_of_day`, so `to=2026-03-31` includes that whole day).
pub fn parse_time_bound(s: &str, end_of_day: bool) -> Result<UnixTime, CoreError> {
    let s = s.trim();
    if let Ok(secs) = s.parse::<i64>() {
        return Ok(UnixTime(secs));
    }
    if let Ok(t) = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339) {
        return Ok(UnixTime(t.unix_timestamp()));
    }
    let day = crate::reporting::usage::parse_day(s).map_err(|_| {
        CoreError::Invalid(format!(
            "{s:?} is not a time: use unix seconds, RFC 3339 or YYYY-MM-DD"
        ))
    })?;
    let start = day.midnight().assume_utc().unix_timestamp();
    Ok(UnixTime(if end_of_day { start + 86_399 } else { start }))
}

/// One CSV field (RFC 4180): quoted when it holds a comma, quote, CR or LF, quotes doubled. A field a
/// spreadsheet would run as a formula (starting with `=`, `+`, `-`, `@`, tab or CR) gets a leading `'`, because
/// names in the log are chosen by users and the export is opened in spreadsheets.
pub fn csv_field(value: &str) -> String {
    let value = if value.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{value}")
    } else {
        value.to_string()
    };
    if value.contains([',', '"', '\r', '\n']) {
        format!("\"{}\"", value.replace('"', "\"\""))
    } else {
        value
    }
}

/// One CSV record with its CRLF line end.
pub fn csv_line<I, S>(fields: I) -> String
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    let mut line = fields
        .into_iter()
        .map(|f| csv_field(f.as_ref()))
        .collect::<Vec<_>>()
        .join(",");
    line.push_str("\r\n");
    line
}

/// The audit events as CSV with a header line.
pub fn audit_csv(events: &[AuditEventRecord]) -> String {
    let mut out = csv_line([
        "id",
        "at",
        "actor",
        "actor_name",
        "actor_role",
        "tenant_id",
        "action",
        "target",
        "outcome",
        "status",
        "request_id",
        "details",
    ]);
    for e in events {
        out.push_str(&csv_line([
            e.id.clone(),
            e.at.to_rfc3339(),
            e.actor.clone(),
            e.actor_name.clone().unwrap_or_default(),
            e.actor_role.clone().unwrap_or_default(),
            e.tenant_id.map(|t| t.to_string()).unwrap_or_default(),
            e.action.clone(),
            e.target.clone().unwrap_or_default(),
            e.outcome.clone(),
            e.status.map(|s| s.to_string()).unwrap_or_default(),
            e.request_id.clone().unwrap_or_default(),
            e.details.clone(),
        ]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_are_quoted_only_when_needed() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("two\nlines"), "\"two\nlines\"");
        assert_eq!(csv_field("=1+1"), "'=1+1");
        assert_eq!(csv_field("-x,y"), "\"'-x,y\"");
        assert_eq!(csv_line(["a", "b,c", ""]), "a,\"b,c\",\r\n");
    }

    #[test]
    fn statuses_map_to_outcomes() {
        assert_eq!(AuditOutcome::from_http_status(201), AuditOutcome::Ok);
        assert_eq!(AuditOutcome::from_http_status(401), AuditOutcome::Denied);
        assert_eq!(AuditOutcome::from_http_status(403), AuditOutcome::Denied);
        assert_eq!(AuditOutcome::from_http_status(404), AuditOutcome::Denied);
        assert_eq!(AuditOutcome::from_http_status(400), AuditOutcome::Error);
        assert_eq!(AuditOutcome::from_http_status(500), AuditOutcome::Error);
    }

    #[test]
    fn time_bounds_accept_three_forms() {
        assert_eq!(
            parse_time_bound("1700000000", false).ok(),
            Some(UnixTime(1_700_000_000))
        );
        assert_eq!(
            parse_time_bound("2026-03-01T00:00:00Z", false).ok(),
            Some(UnixTime(1_772_323_200))
        );
        assert_eq!(
            parse_time_bound("2026-03-01", false).ok(),
            Some(UnixTime(1_772_323_200))
        );
        assert_eq!(
            parse_time_bound("2026-03-01", true).ok(),
            Some(UnixTime(1_772_323_200 + 86_399))
        );
        assert!(parse_time_bound("yesterday", false).is_err());
    }

    #[test]
    fn action_wildcards_become_prefixes() {
        let q = AuditQuery {
            action: Some("device.*".into()),
            ..AuditQuery::default()
        };
        let f = q.to_filter().ok();
        assert_eq!(
            f.as_ref().and_then(|f| f.action_prefix.as_deref()),
            Some("device.")
        );
        assert_eq!(f.and_then(|f| f.action), None);
    }
}
