//! The audit log: append-only rows, one per recorded action. Nothing here updates or deletes, and the schema's
//! triggers refuse it anyway.

use sqlx::any::AnyRow;

use orchard_types::{TenantId, UnixTime};

use crate::rows;
use crate::sql::Sql;
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

/// The ` WHERE …` of a listing: inside the scope, then the filter.
fn where_clause<'s>(sql: &'s mut Sql, scope: Scope, filter: &AuditFilter) -> &'s mut Sql {
    sql.push(" WHERE 1 = 1").in_scope("tenant_id", scope);
    if let Some(tenant) = filter.tenant_id {
        sql.push(" AND tenant_id = ").bind(tenant);
    }
    if let Some(actor) = &filter.actor {
        sql.push(" AND (actor = ")
            .bind(actor.as_str())
            .push(" OR actor_name = ")
            .bind(actor.as_str())
            .push(")");
    }
    if let Some(action) = &filter.action {
        sql.push(" AND action = ").bind(action.as_str());
    }
    if let Some(prefix) = &filter.action_prefix {
        // substr instead of LIKE: no wildcard escaping, and the same case rules on both databases.
        let len = i64::try_from(prefix.chars().count()).unwrap_or(i64::MAX);
        // The length is cast because PostgreSQL's substr takes an integer, not the bigint sqlx binds.
        sql.push(" AND substr(action, 1, CAST(")
            .bind(len)
            .push(" AS INTEGER)) = ")
            .bind(prefix.as_str());
    }
    if let Some(from) = filter.from {
        sql.push(" AND at >= ").bind(from.0);
    }
    if let Some(to) = filter.to {
        sql.push(" AND at <= ").bind(to.0);
    }
    sql
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
        let mut sql = Sql::new(&format!("SELECT {AUDIT_COLUMNS} FROM audit_events"));
        where_clause(&mut sql, scope, filter)
            .push(" ORDER BY at DESC, id DESC LIMIT ")
            .bind(page.limit.max(0))
            .push(" OFFSET ")
            .bind(page.offset.max(0));
        sql.query()
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
        let mut sql = Sql::new("SELECT COUNT(*) AS n FROM audit_events");
        where_clause(&mut sql, scope, filter);
        let row = sql.query().fetch_one(&self.pool).await?;
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
        let scope = crate::ScopeAuthority::of_opened_database().tenant(tenant);
        let mut sql = Sql::new("");
        where_clause(&mut sql, scope, &filter);
        let (text, args) = sql.parts();
        assert_eq!(
            text,
            " WHERE 1 = 1 AND tenant_id = $1 AND (actor = $2 OR actor_name = $3) \
             AND substr(action, 1, CAST($4 AS INTEGER)) = $5 AND at >= $6"
        );
        assert_eq!(args.len(), 6);
        assert_eq!(args[3], crate::sql::Arg::Int(7));
    }
}
