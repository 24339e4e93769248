//! Bulk jobs: one action on many devices (started from the web UI), the commands it queued, and its progress read
//! from the queue itself (`commands` and `command_history`), so a reload, a restart or another node shows the same.

use orchard_types::{TenantId, UnixTime};
use sqlx::any::AnyRow;

use crate::sql::Sql;
use crate::unit::Db;
use crate::{rows, NewCommand, Scope, Store, StoreError, UnitOfWork};

/// Links inserted per statement (two values each; far below SQLite's bound on bound values).
const LINKS_PER_STATEMENT: usize = 400;

/// A bulk job as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BulkJobRecord {
    /// A UUID.
    pub id: String,
    /// The department of the person who started it; `None` for central IT (then only central IT sees it).
    pub tenant_id: Option<TenantId>,
    /// The UI's name of the action (`lock`, `restart` …).
    pub action: String,
    /// The command types queued for each device, comma-separated.
    pub request_types: String,
    /// Devices the commands went to.
    pub devices: i64,
    /// Selected devices left out (not enrolled, or not visible to the caller).
    pub skipped: i64,
    /// Commands queued (devices × commands per device).
    pub commands: i64,
    /// The actor (`user:…`, `token:…`).
    pub created_by: String,
    pub created_by_name: Option<String>,
    pub created_at: UnixTime,
}

/// How a job's commands stand, by queue status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BulkJobProgress {
    /// Queued, sent or put off with NotNow: the iPad has not answered for good yet.
    pub waiting: i64,
    /// Acknowledged.
    pub done: i64,
    /// Error, CommandFormatError, or given up after too many attempts.
    pub failed: i64,
    /// Expired before the iPad fetched it.
    pub expired: i64,
}

const COLUMNS: &str =
    "id, tenant_id, action, request_types, devices, skipped, commands, created_by, \
                       created_by_name, created_at";

fn record(row: &AnyRow) -> Result<BulkJobRecord, StoreError> {
    Ok(BulkJobRecord {
        id: rows::text(row, "id")?,
        tenant_id: rows::opt_tenant_id(row, "tenant_id")?,
        action: rows::text(row, "action")?,
        request_types: rows::text(row, "request_types")?,
        devices: rows::int(row, "devices")?,
        skipped: rows::int(row, "skipped")?,
        commands: rows::int(row, "commands")?,
        created_by: rows::text(row, "created_by")?,
        created_by_name: rows::opt_text(row, "created_by_name")?,
        created_at: rows::time(row, "created_at")?,
    })
}

impl UnitOfWork {
    /// Stores the job, queues its commands and links them to it, within this unit: either the whole action is
    /// queued and can be followed, or nothing is.
    pub async fn enqueue_bulk_job(
        &mut self,
        job: &BulkJobRecord,
        commands: &[NewCommand],
    ) -> Result<(), StoreError> {
        let unit = self;
        let mut insert = Sql::new(&format!("INSERT INTO bulk_jobs ({COLUMNS}) VALUES ("));
        insert
            .bind(job.id.as_str())
            .push(", ")
            .bind_optional(job.tenant_id.map(|t| t.to_string()).as_deref())
            .push(", ")
            .bind(job.action.as_str())
            .push(", ")
            .bind(job.request_types.as_str())
            .push(", ")
            .bind(job.devices)
            .push(", ")
            .bind(job.skipped)
            .push(", ")
            .bind(job.commands)
            .push(", ")
            .bind(job.created_by.as_str())
            .push(", ")
            .bind_optional(job.created_by_name.as_deref())
            .push(", ")
            .bind(job.created_at.0)
            .push(")");
        insert.query().execute(unit.conn()?).await?;
        unit.enqueue_commands(commands).await?;
        for chunk in commands.chunks(LINKS_PER_STATEMENT) {
            let mut links =
                Sql::new("INSERT INTO bulk_job_commands (job_id, command_uuid) VALUES ");
            for (i, c) in chunk.iter().enumerate() {
                if i > 0 {
                    links.push(", ");
                }
                links
                    .push("(")
                    .bind(job.id.as_str())
                    .push(", ")
                    .bind(c.uuid.as_str())
                    .push(")");
            }
            links.query().execute(unit.conn()?).await?;
        }
        Ok(())
    }
}

impl Store {
    /// A job the scope sees (a department sees its own; central IT every job).
    pub async fn bulk_job(
        &self,
        scope: Scope,
        id: &str,
    ) -> Result<Option<BulkJobRecord>, StoreError> {
        let mut sql = Sql::new(&format!("SELECT {COLUMNS} FROM bulk_jobs WHERE id = "));
        sql.bind(id).in_scope("tenant_id", scope);
        sql.query()
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(record)
            .transpose()
    }

    /// The newest jobs the scope sees.
    pub async fn recent_bulk_jobs(
        &self,
        scope: Scope,
        limit: i64,
    ) -> Result<Vec<BulkJobRecord>, StoreError> {
        let mut sql = Sql::new(&format!("SELECT {COLUMNS} FROM bulk_jobs WHERE 1 = 1"));
        sql.in_scope("tenant_id", scope).push(&format!(
            " ORDER BY created_at DESC, id DESC LIMIT {}",
            limit.clamp(1, 1000)
        ));
        sql.query()
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(record)
            .collect()
    }

    /// How the job's commands stand now: live ones in the queue, finished ones in the history (each found by its
    /// unique uuid, so neither table is scanned).
    pub async fn bulk_job_progress(&self, job_id: &str) -> Result<BulkJobProgress, StoreError> {
        let mut progress = BulkJobProgress::default();
        for table in ["commands", "command_history"] {
            let rows = sqlx::query(&format!(
                "SELECT c.status AS status, COUNT(*) AS n FROM bulk_job_commands j \
                 JOIN {table} c ON c.command_uuid = j.command_uuid \
                 WHERE j.job_id = $1 GROUP BY c.status"
            ))
            .bind(job_id)
            .fetch_all(&self.pool)
            .await?;
            for row in &rows {
                let n = rows::int(row, "n")?;
                match rows::text(row, "status")?.as_str() {
                    "acknowledged" => progress.done += n,
                    "error" | "command_format_error" | "failed" => progress.failed += n,
                    "expired" => progress.expired += n,
                    _ => progress.waiting += n,
                }
            }
        }
        Ok(progress)
    }
}
