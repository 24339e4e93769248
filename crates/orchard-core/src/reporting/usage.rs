//! Usage for billing: a daily snapshot of enrolled devices per tenant, and a report that prices a period.
//!
//! The count of a day is the number of the tenant's devices in state `enrolled` at the first snapshot taken on
//! that UTC day (the background loop takes it at its first tick of each day; with several nodes the first one
//! wins). A period's device-days are the sum of its daily counts, so a device enrolled for ten days of the
//! period counts ten.
//!
//! Pricing uses the Actual/365 (fixed) convention: one device-day costs exactly 1/365 of the yearly price, in
//! leap years too. Amounts are computed exactly in minor units (öre, cents) and rounded once, at the end, per
//! tenant: half away from zero, though with 365 as the only divisor no amount is ever exactly half-way. The
//! report's total is the sum of the rounded tenant amounts, so it equals the sum of the invoices.

use std::collections::BTreeMap;
use std::time::Duration;

use orchard_store::UsageSnapshotRecord;
use orchard_types::{TenantId, UnixTime};
use serde::Serialize;
use time::Date;

use crate::access::capability::OversightCtx;
use crate::access::capability::SystemCtx;
use crate::reporting::audit::{AuditActor, AuditEvent, AuditOutcome};
use crate::{CoreError, Orchard};

/// Days in the billing year of the Actual/365 (fixed) convention.
pub const DAYS_PER_BILLING_YEAR: i64 = 365;

/// The longest period one report covers (ten years): bounds the work and the list of missing days.
pub const MAX_REPORT_DAYS: i64 = 3_660;

/// How often the snapshot loop looks at the clock. The snapshot of a day is taken at the first tick that
/// falls in it.
pub const SNAPSHOT_TICK: Duration = Duration::from_secs(60);

/// Pricing of the usage report. The binary fills it from its flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageSettings {
    /// The price of one device for one year, in minor units (öre, cents): 400 SEK is 40_000.
    pub price_per_device_year_minor: i64,
    /// ISO 4217 code; amounts are shown with two decimals.
    pub currency: String,
}

impl Default for UsageSettings {
    fn default() -> Self {
        UsageSettings {
            price_per_device_year_minor: 40_000,
            currency: "SEK".into(),
        }
    }
}

impl UsageSettings {
    /// From the text of flags: a price like `400`, `400.5` or `399.95` and a three-letter currency code.
    pub fn new(price_per_device_year: &str, currency: &str) -> Result<Self, CoreError> {
        let price = parse_price_minor(price_per_device_year)?;
        let currency = currency.trim().to_ascii_uppercase();
        if currency.len() != 3 || !currency.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(CoreError::Invalid(format!(
                "currency {currency:?} is not a three-letter ISO 4217 code"
            )));
        }
        Ok(UsageSettings {
            price_per_device_year_minor: price,
            currency,
        })
    }
}

/// `400` → 40000, `399.5` → 39950, `0.07` → 7; at most two decimals, not negative, at most 10^12.
pub fn parse_price_minor(text: &str) -> Result<i64, CoreError> {
    let bad = || {
        CoreError::Invalid(format!(
            "price {text:?} must be a non-negative amount with at most two decimals, e.g. 400 or 399.50"
        ))
    };
    let t = text.trim();
    let (whole, fraction) = t.split_once('.').unwrap_or((t, ""));
    if whole.is_empty()
        || whole.len() > 12
        || fraction.len() > 2
        || !whole.bytes().all(|b| b.is_ascii_digit())
        || !fraction.bytes().all(|b| b.is_ascii_digit())
        || (t.contains('.') && fraction.is_empty())
    {
        return Err(bad());
    }
    let whole: i64 = whole.parse().map_err(|_| bad())?;
    let fraction: i64 = match fraction.len() {
        0 => 0,
        1 => fraction.parse::<i64>().map_err(|_| bad())? * 10,
        _ => fraction.parse().map_err(|_| bad())?,
    };
    whole
        .checked_mul(100)
        .and_then(|w| w.checked_add(fraction))
        .ok_or_else(bad)
}

/// Minor units as a decimal with two places: 252_1 → `25.21`.
pub fn format_minor(minor: i64) -> String {
    let sign = if minor < 0 { "-" } else { "" };
    let abs = minor.unsigned_abs();
    format!("{sign}{}.{:02}", abs / 100, abs % 100)
}

/// The amount for `device_days` at `price_per_year_minor`: device_days × price / 365, rounded to a whole
/// minor unit once (half away from zero). Exact integer arithmetic; never overflows for realistic inputs and
/// saturates otherwise.
pub fn prorated_amount_minor(device_days: i64, price_per_year_minor: i64) -> i64 {
    let numerator = i128::from(device_days) * i128::from(price_per_year_minor);
    let divisor = i128::from(DAYS_PER_BILLING_YEAR);
    let quotient = numerator / divisor;
    let remainder = numerator % divisor;
    let rounded = if remainder.abs() * 2 >= divisor {
        quotient + numerator.signum()
    } else {
        quotient
    };
    i64::try_from(rounded).unwrap_or(if rounded < 0 { i64::MIN } else { i64::MAX })
}

const DAY_FORMAT: &[time::format_description::FormatItem<'static>] =
    time::macros::format_description!("[year]-[month]-[day]");

/// `YYYY-MM-DD` → the date; anything else is a clear error.
pub fn parse_day(s: &str) -> Result<Date, CoreError> {
    let s = s.trim();
    if s.len() != 10 {
        return Err(CoreError::Invalid(format!(
            "{s:?} is not a date YYYY-MM-DD"
        )));
    }
    Date::parse(s, DAY_FORMAT)
        .map_err(|_| CoreError::Invalid(format!("{s:?} is not a date YYYY-MM-DD")))
}

/// The date as `YYYY-MM-DD`, the form the store keeps.
pub fn format_day(day: Date) -> String {
    format!(
        "{:04}-{:02}-{:02}",
        day.year(),
        u8::from(day.month()),
        day.day()
    )
}

/// The UTC date of an instant.
pub fn utc_day(t: UnixTime) -> Date {
    t.to_offset_date_time().date()
}

/// One tenant's line of the report.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TenantUsage {
    pub tenant_id: String,
    pub tenant_code: String,
    pub tenant_name: String,
    /// Sum of the daily enrolled-device counts in the period.
    pub device_days: i64,
    /// Days of the period with a snapshot row for this tenant.
    pub days_counted: i64,
    /// Two decimals, e.g. `25.21`.
    pub amount: String,
    pub amount_minor: i64,
    /// Detail, not billed: the tenant's enrolled Shared iPads that answered UserList, now (not over the period).
    pub shared_ipads: i64,
    /// Detail, not billed: the users resident on those Shared iPads by their latest UserList.
    pub resident_users: i64,
}

/// The usage of a period, priced.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UsageReport {
    pub from: String,
    pub to: String,
    /// Days in the period, both ends included.
    pub days: i64,
    pub currency: String,
    pub price_per_device_year: String,
    pub day_count_convention: &'static str,
    pub tenants: Vec<TenantUsage>,
    pub total_device_days: i64,
    pub total_amount: String,
    pub total_amount_minor: i64,
    /// Days of the period without any snapshot (the server was down all day, or the day has not come yet):
    /// their usage is not in the report.
    pub missing_days: Vec<String>,
}

impl UsageReport {
    /// One line per tenant with a header; the period and price are repeated on each line so a line stands on
    /// its own in a spreadsheet or an invoicing import.
    pub fn to_csv(&self) -> String {
        let mut out = crate::reporting::audit::csv_line([
            "tenant_id",
            "tenant_code",
            "tenant_name",
            "from",
            "to",
            "device_days",
            "price_per_device_year",
            "currency",
            "amount",
        ]);
        for t in &self.tenants {
            out.push_str(&crate::reporting::audit::csv_line([
                t.tenant_id.clone(),
                t.tenant_code.clone(),
                t.tenant_name.clone(),
                self.from.clone(),
                self.to.clone(),
                t.device_days.to_string(),
                self.price_per_device_year.clone(),
                self.currency.clone(),
                t.amount.clone(),
            ]));
        }
        out
    }
}

/// Remembers the last UTC day whose snapshot this node took, so the loop takes each day's once, at its first
/// tick in that day.
#[derive(Debug, Default)]
pub struct UsageSnapshotter {
    last_day: Option<Date>,
}

impl UsageSnapshotter {
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes today's snapshot unless this node already did today. Returns whether it tried (a failure is
    /// retried at the next tick).
    pub async fn tick(&mut self, orchard: &Orchard, system: &SystemCtx) -> Result<bool, CoreError> {
        let today = utc_day(orchard.clock.now());
        if self.last_day == Some(today) {
            return Ok(false);
        }
        orchard.take_usage_snapshot(system).await?;
        self.last_day = Some(today);
        Ok(true)
    }
}

impl Orchard {
    /// Takes today's (UTC, by the injected clock) snapshot of enrolled devices for every tenant. Idempotent:
    /// the first snapshot of a day stays, also when several nodes take it at once. Returns the rows added.
    ///
    /// Billing data is written, so the snapshot is audited too (action `usage.snapshot`, actor
    /// `system:usage-snapshot`); a failure to record it is logged and does not undo the snapshot.
    pub async fn take_usage_snapshot(&self, _system: &SystemCtx) -> Result<u64, CoreError> {
        let now = self.clock.now();
        let day = format_day(utc_day(now));
        let added = self.store.take_usage_snapshot(&day, now).await?;
        tracing::info!(%day, tenants = added, "usage snapshot taken");
        let event = AuditEvent {
            actor: AuditActor {
                id: "system:usage-snapshot".into(),
                name: Some("usage snapshot loop".into()),
                role: None,
                tenant_id: None,
            },
            tenant_id: None,
            action: "usage.snapshot".into(),
            target: Some(day.clone()),
            request_id: None,
            outcome: AuditOutcome::Ok,
            http_status: None,
            details: serde_json::json!({ "day": day, "tenants_added": added }),
        };
        if let Err(e) = self.append_audit(event).await {
            tracing::error!(error = %e, %day, tenants_added = added, "the usage snapshot could not be audited");
        }
        Ok(added)
    }

    /// The usage of `from..=to` (UTC days) for the tenants the principal may see, priced by `settings`.
    pub async fn usage_report(
        &self,
        overseer: &OversightCtx,
        from: Date,
        to: Date,
        settings: &UsageSettings,
    ) -> Result<UsageReport, CoreError> {
        let scope = overseer.scope();
        if from > to {
            return Err(CoreError::Invalid("from is after to".into()));
        }
        let days = (to - from).whole_days() + 1;
        if days > MAX_REPORT_DAYS {
            return Err(CoreError::Invalid(format!(
                "a report covers at most {MAX_REPORT_DAYS} days"
            )));
        }
        let (from_s, to_s) = (format_day(from), format_day(to));
        let tenants = self.store.list_tenants(scope).await?;
        let snapshots = self.store.usage_snapshots(scope, &from_s, &to_s).await?;
        let snapshot_days = self.store.usage_snapshot_days(&from_s, &to_s).await?;

        let mut lines: BTreeMap<TenantId, TenantUsage> = BTreeMap::new();
        for t in &tenants {
            lines.insert(t.id, empty_line(t.id, &t.code, &t.name));
        }
        for UsageSnapshotRecord {
            tenant_id,
            enrolled_devices,
            ..
        } in &snapshots
        {
            // A snapshot of a tenant no longer listed still counts; it shows with its id only.
            let line = lines
                .entry(*tenant_id)
                .or_insert_with(|| empty_line(*tenant_id, "", ""));
            line.device_days = line.device_days.saturating_add(*enrolled_devices);
            line.days_counted += 1;
        }
        for (tenant_id, users_json) in self.store.shared_ipad_user_lists(scope).await? {
            if let Some(line) = lines.get_mut(&tenant_id) {
                line.shared_ipads += 1;
                line.resident_users += serde_json::from_str::<serde_json::Value>(&users_json)
                    .ok()
                    .and_then(|v| v["data"].as_array().map(Vec::len))
                    .and_then(|n| i64::try_from(n).ok())
                    .unwrap_or(0);
            }
        }
        let mut tenants: Vec<TenantUsage> = lines.into_values().collect();
        for line in &mut tenants {
            line.amount_minor =
                prorated_amount_minor(line.device_days, settings.price_per_device_year_minor);
            line.amount = format_minor(line.amount_minor);
        }
        tenants.sort_by(|a, b| {
            (a.tenant_code.as_str(), a.tenant_id.as_str())
                .cmp(&(b.tenant_code.as_str(), b.tenant_id.as_str()))
        });
        let total_device_days = tenants.iter().map(|t| t.device_days).sum();
        let total_amount_minor = tenants
            .iter()
            .fold(0i64, |sum, t| sum.saturating_add(t.amount_minor));

        let mut missing_days = Vec::new();
        let mut day = from;
        let mut have = snapshot_days.iter().peekable();
        loop {
            let s = format_day(day);
            while have.peek().is_some_and(|h| h.as_str() < s.as_str()) {
                have.next();
            }
            if have.peek().map(|h| h.as_str()) != Some(s.as_str()) {
                missing_days.push(s);
            }
            if day >= to {
                break;
            }
            match day.next_day() {
                Some(next) => day = next,
                None => break,
            }
        }

        Ok(UsageReport {
            from: from_s,
            to: to_s,
            days,
            currency: settings.currency.clone(),
            price_per_device_year: format_minor(settings.price_per_device_year_minor),
            day_count_convention: "actual/365 fixed",
            tenants,
            total_device_days,
            total_amount: format_minor(total_amount_minor),
            total_amount_minor,
            missing_days,
        })
    }
}

fn empty_line(id: TenantId, code: &str, name: &str) -> TenantUsage {
    TenantUsage {
        tenant_id: id.to_string(),
        tenant_code: code.to_string(),
        tenant_name: name.to_string(),
        device_days: 0,
        days_counted: 0,
        amount: format_minor(0),
        amount_minor: 0,
        shared_ipads: 0,
        resident_users: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prices_parse_to_minor_units() {
        assert_eq!(parse_price_minor("400").ok(), Some(40_000));
        assert_eq!(parse_price_minor("399.5").ok(), Some(39_950));
        assert_eq!(parse_price_minor("0.07").ok(), Some(7));
        for bad in ["", "-1", "1.234", "1.", ".5", "4e2", "abc", "1,5"] {
            assert!(parse_price_minor(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn amounts_round_once_to_the_nearest_minor_unit() {
        // 1 device-day at 400.00: 40000 / 365 = 109.589… öre → 110.
        assert_eq!(prorated_amount_minor(1, 40_000), 110);
        // 365 device-days are exactly one year's price.
        assert_eq!(prorated_amount_minor(365, 40_000), 40_000);
        // 366 device-days (a leap year) are 366/365 of it: 40109.589… → 40110.
        assert_eq!(prorated_amount_minor(366, 40_000), 40_110);
        assert_eq!(prorated_amount_minor(0, 40_000), 0);
        assert_eq!(format_minor(2_521), "25.21");
        assert_eq!(format_minor(7), "0.07");
    }

    #[test]
    fn days_round_trip() {
        let d = parse_day("2024-02-29").ok();
        assert_eq!(d.map(format_day).as_deref(), Some("2024-02-29"));
        assert!(parse_day("2023-02-29").is_err());
        assert!(parse_day("2024-2-9").is_err());
        assert_eq!(
            format_day(utc_day(UnixTime(1_772_323_200 + 86_399))),
            "2026-03-01"
        );
    }
}
