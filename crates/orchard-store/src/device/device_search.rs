//! The device list as people search it: filters (tenant, model, OS version, enrollment state, last seen),
//! a text search, a whitelisted sort, and paging — always inside the caller's scope.

use orchard_types::{EnrollmentState, TenantId, UnixTime};

use crate::device::devices::{device_from_row, DEVICE_COLUMNS};
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

/// ` AND …` conditions with `$n` placeholders from `first`, and their values (all bound as text or integers).
enum Bind {
    Text(String),
    Int(i64),
}

/// Appends `cond` with its `{}` replaced by the next placeholder, and the value to bind there.
fn push(sql: &mut String, binds: &mut Vec<Bind>, cond: &str, bind: Bind) {
    binds.push(bind);
    sql.push_str(&cond.replace("{}", &format!("${}", binds.len())));
}

fn conditions(scope: Scope, q: &DeviceQuery) -> (String, Vec<Bind>) {
    let mut sql = String::new();
    let mut binds = Vec::new();
    if let Some(t) = scope.tenant() {
        push(
            &mut sql,
            &mut binds,
            " AND tenant_id = {}",
            Bind::Text(t.to_string()),
        );
    }
    if let Some(t) = q.tenant_id {
        push(
            &mut sql,
            &mut binds,
            " AND tenant_id = {}",
            Bind::Text(t.to_string()),
        );
    }
    if let Some(m) = &q.model {
        let lower = m.to_lowercase();
        binds.push(Bind::Text(lower));
        let n = binds.len();
        sql.push_str(&format!(
            " AND (LOWER(model) = ${n} OR LOWER(model_name) = ${n} OR LOWER(product_name) = ${n})"
        ));
    }
    if let Some(v) = &q.os_version {
        if v.ends_with('.') {
            let mut pattern = v
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_");
            pattern.push('%');
            push(
                &mut sql,
                &mut binds,
                " AND os_version LIKE {} ESCAPE '\\'",
                Bind::Text(pattern),
            );
        } else {
            push(
                &mut sql,
                &mut binds,
                " AND os_version = {}",
                Bind::Text(v.clone()),
            );
        }
    }
    if let Some(s) = q.state {
        push(
            &mut sql,
            &mut binds,
            " AND state = {}",
            Bind::Text(s.as_str().to_owned()),
        );
    }
    if let Some(t) = q.last_seen_before {
        push(
            &mut sql,
            &mut binds,
            " AND last_seen_at < {}",
            Bind::Int(t.0),
        );
    }
    if let Some(t) = q.last_seen_after {
        push(
            &mut sql,
            &mut binds,
            " AND last_seen_at >= {}",
            Bind::Int(t.0),
        );
    }
    if let Some(text) = q.text.as_deref().map(str::trim).filter(|t| !t.is_empty()) {
        binds.push(Bind::Text(like_pattern(text)));
        let n = binds.len();
        sql.push_str(&format!(
            " AND (LOWER(COALESCE(device_name, '')) LIKE ${n} ESCAPE '\\' \
               OR LOWER(COALESCE(serial_number, '')) LIKE ${n} ESCAPE '\\' \
               OR LOWER(udid) LIKE ${n} ESCAPE '\\' \
               OR LOWER(COALESCE(model_name, '')) LIKE ${n} ESCAPE '\\')"
        ));
    }
    (sql, binds)
}

fn bind_all<'q>(
    mut query: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
    binds: &'q [Bind],
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
    for b in binds {
        query = match b {
            Bind::Text(s) => query.bind(s.as_str()),
            Bind::Int(i) => query.bind(*i),
        };
    }
    query
}

impl Store {
    /// One page of the devices in the scope that match `q`, sorted (ties broken by id, so pages are stable).
    pub async fn search_devices(
        &self,
        scope: Scope,
        q: &DeviceQuery,
        page: Page,
    ) -> Result<Vec<Device>, StoreError> {
        let (cond, binds) = conditions(scope, q);
        let direction = if q.descending { "DESC" } else { "ASC" };
        // NULLs (never seen, no name) sort last either way.
        let column = q.sort.column();
        let sql = format!(
            "SELECT {DEVICE_COLUMNS} FROM devices WHERE 1 = 1{cond} \
             ORDER BY CASE WHEN {column} IS NULL THEN 1 ELSE 0 END, {column} {direction}, id {direction} \
             LIMIT {} OFFSET {}",
            page.limit.max(0),
            page.offset.max(0)
        );
        bind_all(sqlx::query(&sql), &binds)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(device_from_row)
            .collect()
    }

    /// How many devices in the scope match `q`.
    pub async fn count_search_devices(
        &self,
        scope: Scope,
        q: &DeviceQuery,
    ) -> Result<i64, StoreError> {
        let (cond, binds) = conditions(scope, q);
        let sql = format!("SELECT COUNT(*) AS n FROM devices WHERE 1 = 1{cond}");
        let row = bind_all(sqlx::query(&sql), &binds)
            .fetch_one(&self.pool)
            .await?;
        rows::int(&row, "n")
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
