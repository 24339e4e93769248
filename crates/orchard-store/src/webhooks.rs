//! Webhooks: endpoints (a tenant's or global), the event outbox written inside the unit of work of the change
//! that caused an event, and the deliveries a node claims with a guarded UPDATE (its lease is the row's
//! `next_attempt_at`, moved to the lease's end) and records under the same `lease_owner`.
//!
//! An endpoint's owner is exact: a tenant's endpoint is read and changed only with that tenant named (and in
//! the caller's scope), a global one only with none. A tenant's event reaches that tenant's endpoints and the
//! global ones; a service-wide event (no tenant) reaches only the global ones.

use orchard_types::{TenantId, UnixTime, WebhookId};
use sqlx::any::AnyRow;

use crate::sql::Sql;
use crate::unit::Db;
use crate::{rows, Scope, Store, StoreError, UnitOfWork};

/// An endpoint as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookEndpointRecord {
    pub id: WebhookId,
    /// `None`: a global endpoint (every tenant's events and the service-wide ones).
    pub tenant_id: Option<TenantId>,
    pub url: String,
    /// The subscribed event types.
    pub event_types: Vec<String>,
    /// The HMAC key, sealed with the data key.
    pub secret_sealed: Vec<u8>,
    pub enabled: bool,
    /// Failed attempts since the last delivered one.
    pub consecutive_failures: i64,
    pub disabled_at: Option<UnixTime>,
    pub disabled_reason: Option<String>,
    pub created_at: UnixTime,
    pub created_by: Option<String>,
}

/// A change to an endpoint; `None` leaves a field as it is. Enabling clears the failure count.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WebhookEndpointChange {
    pub url: Option<String>,
    pub event_types: Option<Vec<String>>,
    pub enabled: Option<bool>,
}

/// An event for the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookEventRecord {
    /// A UUID; receivers deduplicate by it.
    pub id: String,
    /// The tenant the event is about; `None` for service-wide events.
    pub tenant_id: Option<TenantId>,
    pub event_type: String,
    pub occurred_at: UnixTime,
    /// The exact JSON body that is sent and signed.
    pub body: String,
}

/// A delivery claimed by one node, with what it needs to send it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimedWebhookDelivery {
    pub delivery_id: String,
    /// Attempts made before this one.
    pub attempts: i64,
    pub event_id: String,
    pub event_type: String,
    pub body: String,
    pub endpoint_id: WebhookId,
    pub endpoint_tenant_id: Option<TenantId>,
    pub url: String,
    pub secret_sealed: Vec<u8>,
}

/// What one attempt of a claimed delivery came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookAttemptRecord<'a> {
    pub delivery_id: &'a str,
    pub endpoint_id: WebhookId,
    /// The node that claimed it.
    pub lease_owner: &'a str,
    /// This attempt's number (1 for the first).
    pub attempt: i64,
    pub attempted_at: UnixTime,
    /// The receiver's status, if it answered.
    pub status_code: Option<u16>,
    pub error: Option<String>,
    pub delivered: bool,
    /// When to try again; `None` when delivered or out of attempts.
    pub next_attempt_at: Option<UnixTime>,
    /// Consecutive failures at which the endpoint is disabled.
    pub disable_after_failures: i64,
}

/// What recording an attempt did to the endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookAttemptEffect {
    /// The attempt was recorded.
    Recorded,
    /// Recorded, and this failure disabled the endpoint.
    DisabledEndpoint,
    /// The lease was lost (another node took the delivery over): nothing recorded.
    LeaseLost,
}

/// One attempt as the delivery log shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookAttemptLog {
    pub attempt: i64,
    pub attempted_at: UnixTime,
    pub status_code: Option<i64>,
    pub error: Option<String>,
    pub next_attempt_at: Option<UnixTime>,
}

/// A delivery in an endpoint's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookDeliveryRecord {
    pub id: String,
    pub event_id: String,
    pub event_type: String,
    pub state: String,
    pub attempts: i64,
    pub next_attempt_at: Option<UnixTime>,
    pub last_attempt_at: Option<UnixTime>,
    pub last_status: Option<i64>,
    pub last_error: Option<String>,
    pub delivered_at: Option<UnixTime>,
    pub created_at: UnixTime,
    /// Every attempt, first first.
    pub attempt_log: Vec<WebhookAttemptLog>,
}

const ENDPOINT_COLUMNS: &str = "id, tenant_id, url, event_types, secret_sealed, enabled, \
     consecutive_failures, disabled_at, disabled_reason, created_at, created_by";

/// `,a,b,`: one `LIKE '%,type,%'` matches a type.
fn joined_types(types: &[String]) -> String {
    format!(",{},", types.join(","))
}

fn endpoint(r: &AnyRow) -> Result<WebhookEndpointRecord, StoreError> {
    let id = rows::text(r, "id")?;
    Ok(WebhookEndpointRecord {
        id: WebhookId::parse(&id).map_err(|e| StoreError::Corrupt(format!("column id: {e}")))?,
        tenant_id: rows::opt_tenant_id(r, "tenant_id")?,
        url: rows::text(r, "url")?,
        event_types: rows::text(r, "event_types")?
            .split(',')
            .filter(|t| !t.is_empty())
            .map(str::to_owned)
            .collect(),
        secret_sealed: rows::bytes(r, "secret_sealed")?,
        enabled: rows::boolean(r, "enabled")?,
        consecutive_failures: rows::int(r, "consecutive_failures")?,
        disabled_at: rows::opt_time(r, "disabled_at")?,
        disabled_reason: rows::opt_text(r, "disabled_reason")?,
        created_at: rows::time(r, "created_at")?,
        created_by: rows::opt_text(r, "created_by")?,
    })
}

/// ` AND tenant_id = $n` for a tenant's endpoint, ` AND tenant_id IS NULL` for a global one, plus the scope.
fn owned_by(sql: &mut Sql, owner: Option<TenantId>, scope: Scope) {
    match owner {
        Some(tenant) => sql.push(" AND tenant_id = ").bind(tenant),
        None => sql.push(" AND tenant_id IS NULL"),
    };
    sql.in_scope("tenant_id", scope);
}

/// Records an event and one delivery per enabled endpoint that wants it; nothing when none does. Returns how
/// many deliveries were made.
async fn record_event(db: &mut impl Db, e: &WebhookEventRecord) -> Result<u64, StoreError> {
    let wanted = |sql: &mut Sql| {
        sql.push(" FROM webhook_endpoints w WHERE w.enabled = 1 AND w.event_types LIKE ")
            .bind(format!("%,{},%", e.event_type));
        match e.tenant_id {
            Some(tenant) => sql
                .push(" AND (w.tenant_id IS NULL OR w.tenant_id = ")
                .bind(tenant)
                .push(")"),
            None => sql.push(" AND w.tenant_id IS NULL"),
        };
    };
    let mut event = Sql::new(
        "INSERT INTO webhook_events (id, tenant_id, event_type, occurred_at, body) SELECT ",
    );
    event
        .bind(e.id.as_str())
        .push(", ")
        .bind_optional(e.tenant_id.map(|t| t.to_string()).as_deref())
        .push(", ")
        .bind(e.event_type.as_str())
        .push(", ")
        .bind(e.occurred_at.0)
        .push(", ")
        .bind(e.body.as_str())
        .push(" WHERE EXISTS (SELECT 1");
    wanted(&mut event);
    event.push(")");
    if event.query().execute(db.conn()?).await?.rows_affected() == 0 {
        return Ok(0);
    }
    let mut deliveries = Sql::new(
        "INSERT INTO webhook_deliveries (id, endpoint_id, event_id, state, attempts, next_attempt_at, \
         created_at) SELECT ",
    );
    deliveries
        .bind(format!("{}:", e.id))
        .push(" || w.id, w.id, ")
        .bind(e.id.as_str())
        .push(", 'pending', 0, ")
        .bind(e.occurred_at.0)
        .push(", ")
        .bind_same_again();
    wanted(&mut deliveries);
    Ok(deliveries
        .query()
        .execute(db.conn()?)
        .await?
        .rows_affected())
}

impl UnitOfWork {
    /// Puts an event in the outbox with the change that caused it (see [`Store::record_webhook_event`]).
    pub async fn record_webhook_event(
        &mut self,
        e: &WebhookEventRecord,
    ) -> Result<u64, StoreError> {
        if !self.writes_webhook_events() {
            return Ok(0);
        }
        let made = record_event(self, e).await?;
        if made > 0 {
            self.note_webhook_events();
        }
        Ok(made)
    }
}

impl Store {
    /// Puts an event that no other row change goes with (an expiry warning) in the outbox.
    pub async fn record_webhook_event(&self, e: &WebhookEventRecord) -> Result<u64, StoreError> {
        let mut unit = self.begin_unit().await?;
        let made = record_event(&mut unit, e).await?;
        unit.commit().await?;
        Ok(made)
    }

    pub async fn create_webhook_endpoint(
        &self,
        w: &WebhookEndpointRecord,
    ) -> Result<(), StoreError> {
        let mut conn = self.pooled().await?;
        sqlx::query(&format!(
            "INSERT INTO webhook_endpoints ({ENDPOINT_COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
        ))
        .bind(w.id.to_string())
        .bind(w.tenant_id.map(|t| t.to_string()))
        .bind(w.url.as_str())
        .bind(joined_types(&w.event_types))
        .bind(w.secret_sealed.as_slice())
        .bind(i64::from(w.enabled))
        .bind(w.consecutive_failures)
        .bind(w.disabled_at.map(|t| t.0))
        .bind(w.disabled_reason.as_deref())
        .bind(w.created_at.0)
        .bind(w.created_by.as_deref())
        .execute(conn.conn()?)
        .await?;
        Ok(())
    }

    /// The endpoints of `owner` (a tenant, or `None` for the global ones) in the scope, oldest first.
    pub async fn list_webhook_endpoints(
        &self,
        scope: Scope,
        owner: Option<TenantId>,
    ) -> Result<Vec<WebhookEndpointRecord>, StoreError> {
        let mut sql = Sql::new(&format!(
            "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE 1 = 1"
        ));
        owned_by(&mut sql, owner, scope);
        sql.push(" ORDER BY created_at, id");
        sql.query()
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(endpoint)
            .collect()
    }

    /// One endpoint of `owner` in the scope.
    pub async fn webhook_endpoint(
        &self,
        scope: Scope,
        owner: Option<TenantId>,
        id: WebhookId,
    ) -> Result<Option<WebhookEndpointRecord>, StoreError> {
        let mut sql = Sql::new(&format!(
            "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE id = "
        ));
        sql.bind(id.to_string());
        owned_by(&mut sql, owner, scope);
        sql.query()
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(endpoint)
            .transpose()
    }

    /// Changes an endpoint of `owner` in the scope. NotFound when there is none.
    pub async fn update_webhook_endpoint(
        &self,
        scope: Scope,
        owner: Option<TenantId>,
        id: WebhookId,
        change: &WebhookEndpointChange,
    ) -> Result<(), StoreError> {
        let mut sql = Sql::new("UPDATE webhook_endpoints SET id = id");
        if let Some(url) = &change.url {
            sql.push(", url = ").bind(url.as_str());
        }
        if let Some(types) = &change.event_types {
            sql.push(", event_types = ").bind(joined_types(types));
        }
        match change.enabled {
            Some(true) => {
                sql.push(
                    ", enabled = 1, consecutive_failures = 0, disabled_at = NULL, \
                     disabled_reason = NULL",
                );
            }
            Some(false) => {
                sql.push(", enabled = 0");
            }
            None => {}
        }
        sql.push(" WHERE id = ").bind(id.to_string());
        owned_by(&mut sql, owner, scope);
        if sql.query().execute(&self.pool).await?.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    /// Deletes an endpoint of `owner` in the scope with its deliveries. NotFound when there is none.
    pub async fn delete_webhook_endpoint(
        &self,
        scope: Scope,
        owner: Option<TenantId>,
        id: WebhookId,
    ) -> Result<(), StoreError> {
        let mut unit = self.begin_unit().await?;
        let mut sql = Sql::new("DELETE FROM webhook_endpoints WHERE id = ");
        sql.bind(id.to_string());
        owned_by(&mut sql, owner, scope);
        if sql.query().execute(unit.conn()?).await?.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        unit.commit().await
    }

    /// Claims up to `limit` due deliveries of enabled endpoints for `owner` until `lease_until`: each row is
    /// taken by a guarded UPDATE, so two nodes never both claim one.
    pub async fn claim_webhook_deliveries(
        &self,
        owner: &str,
        now: UnixTime,
        lease_until: UnixTime,
        limit: i64,
    ) -> Result<Vec<ClaimedWebhookDelivery>, StoreError> {
        let mut due = Sql::new(
            "SELECT d.id, d.next_attempt_at FROM webhook_deliveries d \
             JOIN webhook_endpoints w ON w.id = d.endpoint_id \
             WHERE d.state = 'pending' AND w.enabled = 1 AND d.next_attempt_at <= ",
        );
        due.bind(now.0)
            .push(" ORDER BY d.next_attempt_at, d.id LIMIT ")
            .bind(limit);
        let candidates = due.query().fetch_all(&self.pool).await?;
        let mut claimed = Vec::new();
        for row in &candidates {
            let id = rows::text(row, "id")?;
            let was_due_at = rows::int(row, "next_attempt_at")?;
            let mut take = Sql::new("UPDATE webhook_deliveries SET next_attempt_at = ");
            take.bind(lease_until.0)
                .push(", lease_owner = ")
                .bind(owner)
                .push(" WHERE id = ")
                .bind(id.as_str())
                .push(" AND state = 'pending' AND next_attempt_at = ")
                .bind(was_due_at);
            if take.query().execute(&self.pool).await?.rows_affected() == 0 {
                continue;
            }
            let mut details = Sql::new(
                "SELECT d.id, d.attempts, e.id AS event_id, e.event_type, e.body, w.id AS endpoint_id, \
                 w.tenant_id, w.url, w.secret_sealed FROM webhook_deliveries d \
                 JOIN webhook_events e ON e.id = d.event_id \
                 JOIN webhook_endpoints w ON w.id = d.endpoint_id WHERE d.id = ",
            );
            details.bind(id.as_str());
            let Some(r) = details.query().fetch_optional(&self.pool).await? else {
                continue;
            };
            let endpoint_id = rows::text(&r, "endpoint_id")?;
            claimed.push(ClaimedWebhookDelivery {
                delivery_id: id,
                attempts: rows::int(&r, "attempts")?,
                event_id: rows::text(&r, "event_id")?,
                event_type: rows::text(&r, "event_type")?,
                body: rows::text(&r, "body")?,
                endpoint_id: WebhookId::parse(&endpoint_id)
                    .map_err(|e| StoreError::Corrupt(format!("column endpoint_id: {e}")))?,
                endpoint_tenant_id: rows::opt_tenant_id(&r, "tenant_id")?,
                url: rows::text(&r, "url")?,
                secret_sealed: rows::bytes(&r, "secret_sealed")?,
            });
        }
        Ok(claimed)
    }

    /// Records one attempt in one unit: the attempt row, the delivery's state, and the endpoint's failure count
    /// (reset by a success; at `disable_after_failures` the endpoint is disabled). Nothing is recorded when
    /// the delivery is no longer leased to this node.
    pub async fn record_webhook_attempt(
        &self,
        a: &WebhookAttemptRecord<'_>,
    ) -> Result<WebhookAttemptEffect, StoreError> {
        let mut unit = self.begin_unit().await?;
        let state = match (a.delivered, a.next_attempt_at) {
            (true, _) => "delivered",
            (false, Some(_)) => "pending",
            (false, None) => "failed",
        };
        let status = a.status_code.map(i64::from);
        let mut delivery = Sql::new("UPDATE webhook_deliveries SET state = ");
        delivery
            .bind(state)
            .push(", attempts = ")
            .bind(a.attempt)
            .push(", next_attempt_at = ");
        match a.next_attempt_at {
            Some(t) => delivery.bind(t.0),
            None => delivery.push("NULL"),
        };
        delivery
            .push(", lease_owner = NULL, last_attempt_at = ")
            .bind(a.attempted_at.0)
            .push(", last_status = ");
        match status {
            Some(s) => delivery.bind(s),
            None => delivery.push("NULL"),
        };
        delivery
            .push(", last_error = ")
            .bind_optional(a.error.as_deref());
        if a.delivered {
            delivery.push(", delivered_at = ").bind(a.attempted_at.0);
        }
        delivery
            .push(" WHERE id = ")
            .bind(a.delivery_id)
            .push(" AND state = 'pending' AND lease_owner = ")
            .bind(a.lease_owner);
        if delivery
            .query()
            .execute(unit.conn()?)
            .await?
            .rows_affected()
            == 0
        {
            unit.rollback().await?;
            return Ok(WebhookAttemptEffect::LeaseLost);
        }
        sqlx::query(
            "INSERT INTO webhook_delivery_attempts (delivery_id, attempt, attempted_at, status_code, \
             error, next_attempt_at) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(a.delivery_id)
        .bind(a.attempt)
        .bind(a.attempted_at.0)
        .bind(status)
        .bind(a.error.as_deref())
        .bind(a.next_attempt_at.map(|t| t.0))
        .execute(unit.conn()?)
        .await?;
        let mut effect = WebhookAttemptEffect::Recorded;
        if a.delivered {
            sqlx::query("UPDATE webhook_endpoints SET consecutive_failures = 0 WHERE id = $1")
                .bind(a.endpoint_id.to_string())
                .execute(unit.conn()?)
                .await?;
        } else {
            sqlx::query(
                "UPDATE webhook_endpoints SET consecutive_failures = consecutive_failures + 1 \
                 WHERE id = $1",
            )
            .bind(a.endpoint_id.to_string())
            .execute(unit.conn()?)
            .await?;
            let disabled = sqlx::query(
                "UPDATE webhook_endpoints SET enabled = 0, disabled_at = $2, disabled_reason = $3 \
                 WHERE id = $1 AND enabled = 1 AND consecutive_failures >= $4",
            )
            .bind(a.endpoint_id.to_string())
            .bind(a.attempted_at.0)
            .bind(format!(
                "{} consecutive failed deliveries",
                a.disable_after_failures
            ))
            .bind(a.disable_after_failures)
            .execute(unit.conn()?)
            .await?
            .rows_affected();
            if disabled > 0 {
                effect = WebhookAttemptEffect::DisabledEndpoint;
            }
        }
        unit.commit().await?;
        Ok(effect)
    }

    /// Deletes finished deliveries (delivered or given up, with their attempts) made before `before`, then the
    /// events made before it that no delivery refers to any more. Returns the deliveries deleted.
    pub async fn prune_webhook_history(&self, before: UnixTime) -> Result<u64, StoreError> {
        let mut unit = self.begin_unit().await?;
        let deleted = sqlx::query(
            "DELETE FROM webhook_deliveries WHERE state <> 'pending' AND created_at < $1",
        )
        .bind(before.0)
        .execute(unit.conn()?)
        .await?
        .rows_affected();
        sqlx::query(
            "DELETE FROM webhook_events WHERE occurred_at < $1 AND NOT EXISTS \
             (SELECT 1 FROM webhook_deliveries d WHERE d.event_id = webhook_events.id)",
        )
        .bind(before.0)
        .execute(unit.conn()?)
        .await?;
        unit.commit().await?;
        Ok(deleted)
    }

    /// The `limit` most recent deliveries of an endpoint of `owner` in the scope, newest first, each with its
    /// attempts. NotFound when the endpoint is not there.
    pub async fn list_webhook_deliveries(
        &self,
        scope: Scope,
        owner: Option<TenantId>,
        id: WebhookId,
        limit: i64,
    ) -> Result<Vec<WebhookDeliveryRecord>, StoreError> {
        if self.webhook_endpoint(scope, owner, id).await?.is_none() {
            return Err(StoreError::NotFound);
        }
        let mut sql = Sql::new(
            "SELECT d.id, d.event_id, e.event_type, d.state, d.attempts, d.next_attempt_at, \
             d.last_attempt_at, d.last_status, d.last_error, d.delivered_at, d.created_at \
             FROM webhook_deliveries d JOIN webhook_events e ON e.id = d.event_id \
             WHERE d.endpoint_id = ",
        );
        sql.bind(id.to_string())
            .push(" ORDER BY d.created_at DESC, d.id DESC LIMIT ")
            .bind(limit);
        let mut deliveries = Vec::new();
        for r in sql.query().fetch_all(&self.pool).await? {
            deliveries.push(WebhookDeliveryRecord {
                id: rows::text(&r, "id")?,
                event_id: rows::text(&r, "event_id")?,
                event_type: rows::text(&r, "event_type")?,
                state: rows::text(&r, "state")?,
                attempts: rows::int(&r, "attempts")?,
                next_attempt_at: rows::opt_time(&r, "next_attempt_at")?,
                last_attempt_at: rows::opt_time(&r, "last_attempt_at")?,
                last_status: rows::opt_int(&r, "last_status")?,
                last_error: rows::opt_text(&r, "last_error")?,
                delivered_at: rows::opt_time(&r, "delivered_at")?,
                created_at: rows::time(&r, "created_at")?,
                attempt_log: Vec::new(),
            });
        }
        for d in &mut deliveries {
            if d.attempts == 0 {
                continue;
            }
            let mut log = Sql::new(
                "SELECT attempt, attempted_at, status_code, error, next_attempt_at \
                 FROM webhook_delivery_attempts WHERE delivery_id = ",
            );
            log.bind(d.id.as_str()).push(" ORDER BY attempt");
            for r in log.query().fetch_all(&self.pool).await? {
                d.attempt_log.push(WebhookAttemptLog {
                    attempt: rows::int(&r, "attempt")?,
                    attempted_at: rows::time(&r, "attempted_at")?,
                    status_code: rows::opt_int(&r, "status_code")?,
                    error: rows::opt_text(&r, "error")?,
                    next_attempt_at: rows::opt_time(&r, "next_attempt_at")?,
                });
            }
        }
        Ok(deliveries)
    }
}
