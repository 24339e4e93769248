//! The audit log: append-only rows, one per recorded action. Nothing here updates or deletes, and the schema's
//! triggers refuse it anyway.

use sqlx::any::AnyRow;

use orchard_types::{TenantId, UnixTime};

use crate::rows;
use crate::{Page, Scope, Store, StoreError};

const AUDIT_COLUMNS: &str = "id, at, actor, actor_name, actor_role, tenant_id, action, target, \
                             request_id, outcome, status, details";

/// One audit event as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEventRecord {
    /// Time-ordered unique id (UUID v7 text).
    pub id: String,
    pub at: UnixTime,
    /// Stable identity of who acted, e.g. `token:<uuid>`, or `anonymous` when no credential was accepted.
    pub actor: String,
    /// Human-readable name of the actor at the time (token name, user name).
    pub actor_name: Option<String>,
    pub actor_role: Option<String>,
    /// The tenant the target belongs to; None for global actions.
    pub tenant_id: Option<TenantId>,
    /// Stable dotted name, e.g. `device.command.queue`.
    pub action: String,
    pub target: Option<String>,
    pub request_id: Option<String>,
    /// `ok`, `denied` or `error`.
    pub outcome: String,
    /// The HTTP status answered, when the action came through HTTP.
    pub status: Option<i64>,
    /// A JSON object with action-specific details (never secrets).
    pub details: String,
}

/// Which events a query wants; every field narrows, None means any.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    pub tenant_id: Option<TenantId>,
    /// Matches `actor` or `actor_name` exactly.
    pub actor: Option<String>,
    /// The action exactly.
    pub action: Option<String>,
    /// Actions starting with this text (e.g. `device.` for every device action).
    pub action_prefix: Option<String>,
    /// Inclusive bounds on `at`.
    pub from: Option<UnixTime>,
    pub to: Option<UnixTime>,
}

enum Arg {
    Text(String),
    Int(i64),
}

/// The WHERE clause (starting with `WHERE 1 = 1`) and its arguments, numbered from `$1`.
fn where_clause(scope: Scope, filter: &AuditFilter) -> (String, Vec<Arg>) {
    let mut sql = String::from(" WHERE 1 = 1");
    let mut args: Vec<Arg> = Vec::new();
    let mut push = |sql: &mut String, template: &str, arg: Arg| {
        args.push(arg);
        sql.push_str(&template.replace('?', &format!("${}", args.len())));
    };
    if let Some(tenant) = scope.tenant() {
        push(
            &mut sql,
            " AND tenant_id = ?",
            Arg::Text(tenant.to_string()),
        );
    }
    if let Some(tenant) = filter.tenant_id {
        push(
            &mut sql,
            " AND tenant_id = ?",
            Arg::Text(tenant.to_string()),
        );
    }
    if let Some(actor) = &filter.actor {
        push(&mut sql, " AND (actor = ?", Arg::Text(actor.clone()));
        push(&mut sql, " OR actor_name = ?)", Arg::Text(actor.clone()));
    }
    if let Some(action) = &filter.action {
        push(&mut sql, " AND action = ?", Arg::Text(action.clone()));
    }
    if let Some(prefix) = &filter.action_prefix {
        // substr instead of LIKE: no wildcard escaping, and the same case rules on both databases.
        let len = i64::try_from(prefix.chars().count()).unwrap_or(i64::MAX);
        // The length is cast because PostgreSQL's substr takes an integer, not the bigint sqlx binds.
        push(
            &mut sql,
            " AND substr(action, 1, CAST(? AS INTEGER",
            Arg::Int(len),
        );
        push(&mut sql, ")) = ?", Arg::Text(prefix.clone()));
    }
    if let Some(from) = filter.from {
        push(&mut sql, " AND at >= ?", Arg::Int(from.0));
    }
    if let Some(to) = filter.to {
        push(&mut sql, " AND at <= ?", Arg::Int(to.0));
    }
    (sql, args)
}

fn bind_all<'q>(
    mut query: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
    args: Vec<Arg>,
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
    for arg in args {
        query = match arg {
            Arg::Text(s) => query.bind(s),
            Arg::Int(i) => query.bind(i),
        };
    }
    query
}

fn audit_from_row(row: &AnyRow) -> Result<AuditEventRecord, StoreError> {
    Ok(AuditEventRecord {
        id: rows::text(row, "id")?,
        at: rows::time(row, "at")?,
        actor: rows::text(row, "actor")?,
        actor_name: rows::opt_text(row, "actor_name")?,
        actor_role: rows::opt_text(row, "actor_role")?,
        tenant_id: rows::opt_tenant_id(row, "tenant_id")?,
        action: rows::text(row, "action")?,
        target: rows::opt_text(row, "target")?,
        request_id: rows::opt_text(row, "request_id")?,
        outcome: rows::text(row, "outcome")?,
        status: rows::opt_int(row, "status")?,
        details: rows::text(row, "details")?,
    })
}

impl Store {
    /// Appends one event. Conflict when the id is taken (ids are fresh UUIDs, so only on a caller bug).
    pub async fn insert_audit_event(&self, e: &AuditEventRecord) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO audit_events (id, at, actor, actor_name, actor_role, tenant_id, action, target, \
               request_id, outcome, status, details) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        )
        .bind(&e.id)
        .bind(e.at.0)
        .bind(&e.actor)
        .bind(e.actor_name.as_deref())
        .bind(e.actor_role.as_deref())
        .bind(e.tenant_id.map(|t| t.to_string()))
        .bind(&e.action)
        .bind(e.target.as_deref())
        .bind(e.request_id.as_deref())
        .bind(&e.outcome)
        .bind(e.status)
        .bind(&e.details)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Events the scope may see that match the filter, newest first. A tenant scope sees only events whose
    /// tenant is that tenant (never global events).
    pub async fn list_audit_events(
        &self,
        scope: Scope,
        filter: &AuditFilter,
        page: Page,
    ) -> Result<Vec<AuditEventRecord>, StoreError> {
        let (clause, mut args) = where_clause(scope, filter);
        let n = args.len();
        let sql = format!(
            "SELECT {AUDIT_COLUMNS} FROM audit_events{clause} ORDER BY at DESC, id DESC LIMIT ${} OFFSET ${}",
            n + 1,
            n + 2
        );
        args.push(Arg::Int(page.limit.max(0)));
        args.push(Arg::Int(page.offset.max(0)));
        bind_all(sqlx::query(&sql), args)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(audit_from_row)
            .collect()
    }

    /// How many events [`Store::list_audit_events`] would list without paging.
    pub async fn count_audit_events(
        &self,
        scope: Scope,
        filter: &AuditFilter,
    ) -> Result<i64, StoreError> {
        let (clause, args) = where_clause(scope, filter);
        let sql = format!("SELECT COUNT(*) AS n FROM audit_events{clause}");
        let row = bind_all(sqlx::query(&sql), args)
            .fetch_one(&self.pool)
            .await?;
        rows::int(&row, "n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_numbered_in_bind_order() {
        let tenant = TenantId::new();
        let filter = AuditFilter {
            tenant_id: None,
            actor: Some("token:x".into()),
            action: None,
            action_prefix: Some("device.".into()),
            from: Some(UnixTime(10)),
            to: None,
        };
        let (sql, args) = where_clause(Scope::Tenant(tenant), &filter);
        assert_eq!(
            sql,
            " WHERE 1 = 1 AND tenant_id = $1 AND (actor = $2 OR actor_name = $3) \
             AND substr(action, 1, CAST($4 AS INTEGER)) = $5 AND at >= $6"
        );
        assert_eq!(args.len(), 6);
        assert!(matches!(&args[3], Arg::Int(7)));
    }
}
