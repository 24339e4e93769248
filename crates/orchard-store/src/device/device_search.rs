//! The device list as people search it: filters (tenant, model, OS version, enrollment state, last seen,
//! identity expiry),
//! a text search, a whitelisted sort, and paging — always inside the caller's scope.

use orchard_types::{EnrollmentState, GroupId, TenantId, UnixTime};

use crate::device::devices::{device_from_row, DEVICE_COLUMNS};
use crate::sql::Sql;
use crate::{rows, Device, Page, Scope, Store, StoreError};

/// How a device list is sorted (a closed set: sort keys never come from the caller as SQL).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceSort {
    #[default]
    EnrolledAt,
    LastSeen,
    Name,
    Serial,
    OsVersion,
    Model,
}

impl DeviceSort {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "enrolled_at" => DeviceSort::EnrolledAt,
            "last_seen" | "last_seen_at" => DeviceSort::LastSeen,
            "name" | "device_name" => DeviceSort::Name,
            "serial" | "serial_number" => DeviceSort::Serial,
            "os_version" => DeviceSort::OsVersion,
            "model" => DeviceSort::Model,
            _ => return None,
        })
    }

    fn column(self) -> &'static str {
        match self {
            DeviceSort::EnrolledAt => "enrolled_at",
            DeviceSort::LastSeen => "last_seen_at",
            DeviceSort::Name => "device_name",
            DeviceSort::Serial => "serial_number",
            DeviceSort::OsVersion => "os_version",
            DeviceSort::Model => "model_name",
        }
    }
}

/// Filters of a device list; `None` fields do not filter.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DeviceQuery {
    /// Narrows an operator's (or helpdesk's) list to one tenant; a tenant's own scope wins anyway.
    pub tenant_id: Option<TenantId>,
    /// Matches the model identifier (`iPad13,18`), the model name (`iPad`) or the product name.
    pub model: Option<String>,
    /// Exact (`18.1`) or a prefix ending in a dot (`17.` = every 17.x).
    pub os_version: Option<String>,
    pub state: Option<EnrollmentState>,
    pub last_seen_before: Option<UnixTime>,
    pub last_seen_after: Option<UnixTime>,
    /// Devices whose bound identity certificate expires (not_after) before this time: who needs renewal.
    pub identity_expires_before: Option<UnixTime>,
    /// Members of this device group (the caller checked the group is visible).
    pub group_id: Option<GroupId>,
    /// Case-insensitive substring of name, serial number, UDID or model name.
    pub text: Option<String>,
    pub sort: DeviceSort,
    pub descending: bool,
}

/// `%` and `_` are wildcards in LIKE: a search for them must find them literally.
fn like_pattern(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('%');
    for c in text.to_lowercase().chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('%');
    out
}

/// The ` AND …` conditions of a search, inside the scope.
fn conditions<'s>(sql: &'s mut Sql, scope: Scope, q: &DeviceQuery) -> &'s mut Sql {
    sql.in_scope("tenant_id", scope);
    if let Some(t) = q.tenant_id {
        sql.push(" AND tenant_id = ").bind(t);
    }
    if let Some(m) = &q.model {
        sql.push(" AND (LOWER(model) = ")
            .bind(m.to_lowercase())
            .push(" OR LOWER(model_name) = ")
            .bind_same_again()
            .push(" OR LOWER(product_name) = ")
            .bind_same_again()
            .push(")");
    }
    if let Some(v) = &q.os_version {
        if v.ends_with('.') {
            let mut pattern = v
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_");
            pattern.push('%');
            sql.push(" AND os_version LIKE ")
                .bind(pattern)
                .push(" ESCAPE '\\'");
        } else {
            sql.push(" AND os_version = ").bind(v.as_str());
        }
    }
    if let Some(s) = q.state {
        sql.push(" AND state = ").bind(s.as_str());
    }
    if let Some(t) = q.last_seen_before {
        sql.push(" AND last_seen_at < ").bind(t.0);
    }
    if let Some(t) = q.last_seen_after {
        sql.push(" AND last_seen_at >= ").bind(t.0);
    }
    if let Some(t) = q.identity_expires_before {
        sql.push(
            " AND EXISTS (SELECT 1 FROM issued_certificates ic \
             WHERE ic.fingerprint = devices.cert_fingerprint AND ic.not_after < ",
        )
        .bind(t.0)
        .push(")");
    }
    if let Some(g) = q.group_id {
        sql.push(" AND id IN (SELECT m.device_id FROM device_group_members m WHERE m.group_id = ")
            .bind(g.to_string())
            .push(")");
    }
    if let Some(text) = q.text.as_deref().map(str::trim).filter(|t| !t.is_empty()) {
        sql.push(" AND (LOWER(COALESCE(device_name, '')) LIKE ")
            .bind(like_pattern(text))
            .push(" ESCAPE '\\' OR LOWER(COALESCE(serial_number, '')) LIKE ")
            .bind_same_again()
            .push(" ESCAPE '\\' OR LOWER(udid) LIKE ")
            .bind_same_again()
            .push(" ESCAPE '\\' OR LOWER(COALESCE(model_name, '')) LIKE ")
            .bind_same_again()
            .push(" ESCAPE '\\')");
    }
    sql
}

/// How many devices of a search are in each state: the dashboard's tiles, counted in one pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DeviceCounts {
    pub total: i64,
    pub enrolled: i64,
    pub pending: i64,
    /// Enrolled and last seen before the time asked for.
    pub enrolled_not_seen: i64,
}

impl Store {
    /// How many devices in the scope match `q`, by state, and how many enrolled ones were last seen before
    /// `not_seen_since` — one statement, one scan, where four searches would scan four times.
    pub async fn count_devices_by_state(
        &self,
        scope: Scope,
        q: &DeviceQuery,
        not_seen_since: UnixTime,
    ) -> Result<DeviceCounts, StoreError> {
        let mut sql = Sql::new(
            "SELECT COUNT(*) AS total, \
             COALESCE(SUM(CASE WHEN state = 'enrolled' THEN 1 ELSE 0 END), 0) AS enrolled, \
             COALESCE(SUM(CASE WHEN state = 'pending' THEN 1 ELSE 0 END), 0) AS pending, \
             COALESCE(SUM(CASE WHEN state = 'enrolled' AND last_seen_at < ",
        );
        sql.bind(not_seen_since.0)
            .push(" THEN 1 ELSE 0 END), 0) AS not_seen FROM devices WHERE 1 = 1");
        conditions(&mut sql, scope, q);
        let row = sql.query().fetch_one(&self.pool).await?;
        Ok(DeviceCounts {
            total: rows::int(&row, "total")?,
            enrolled: rows::int(&row, "enrolled")?,
            pending: rows::int(&row, "pending")?,
            enrolled_not_seen: rows::int(&row, "not_seen")?,
        })
    }

    /// One page of the devices in the scope that match `q`, sorted (ties broken by id, so pages are stable), and
    /// how many match in all — counted in the same
    /// statement (`COUNT(*) OVER ()`), so a search scans the table once instead of twice. A page past the end
    /// has no row to carry the count: then it is counted on its own.
    pub async fn search_devices_counted(
        &self,
        scope: Scope,
        q: &DeviceQuery,
        page: Page,
    ) -> Result<(Vec<Device>, i64), StoreError> {
        let direction = if q.descending { "DESC" } else { "ASC" };
        let column = q.sort.column();
        let mut sql = Sql::new(&format!(
            "SELECT {DEVICE_COLUMNS}, COUNT(*) OVER () AS matching FROM devices WHERE 1 = 1"
        ));
        conditions(&mut sql, scope, q).push(&format!(
            " ORDER BY CASE WHEN {column} IS NULL THEN 1 ELSE 0 END, {column} {direction}, id {direction} \
             LIMIT {} OFFSET {}",
            page.limit.max(0),
            page.offset.max(0)
        ));
        let found = sql.query().fetch_all(&self.pool).await?;
        let total = match found.first() {
            Some(row) => rows::int(row, "matching")?,
            // Nothing at all matches: no need to count.
            None if page.offset <= 0 && page.limit > 0 => 0,
            None => self.count_search_devices(scope, q).await?,
        };
        let devices = found
            .iter()
            .map(device_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        Ok((devices, total))
    }

    /// How many devices in the scope match `q`.
    pub async fn count_search_devices(
        &self,
        scope: Scope,
        q: &DeviceQuery,
    ) -> Result<i64, StoreError> {
        let mut sql = Sql::new("SELECT COUNT(*) AS n FROM devices WHERE 1 = 1");
        conditions(&mut sql, scope, q);
        let row = sql.query().fetch_one(&self.pool).await?;
        rows::int(&row, "n")
    }

    /// How many devices in the scope that match `q` run each OS version (most common first; a device that has
    /// not reported one counts under `None`), at most `limit` versions.
    pub async fn count_devices_by_os_version(
        &self,
        scope: Scope,
        q: &DeviceQuery,
        limit: i64,
    ) -> Result<Vec<(Option<String>, i64)>, StoreError> {
        let mut sql = Sql::new("SELECT os_version, COUNT(*) AS n FROM devices WHERE 1 = 1");
        conditions(&mut sql, scope, q).push(&format!(
            " GROUP BY os_version ORDER BY n DESC, os_version LIMIT {}",
            limit.max(0)
        ));
        sql.query()
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|row| Ok((rows::opt_text(row, "os_version")?, rows::int(row, "n")?)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_patterns_escape_wildcards_and_fold_case() {
        assert_eq!(like_pattern("PHYS_1"), "%phys\\_1%");
        assert_eq!(like_pattern("50%"), "%50\\%%");
        assert_eq!(like_pattern("a\\b"), "%a\\\\b%");
    }

    #[test]
    fn sort_keys_are_a_closed_set() {
        assert_eq!(DeviceSort::parse("last_seen"), Some(DeviceSort::LastSeen));
        assert_eq!(DeviceSort::parse("id; DROP TABLE devices"), None);
    }
}
