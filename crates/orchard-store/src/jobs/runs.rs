//! `job_runs`: a job claims its row with a lease when it is due, and records the outcome when it finishes.

use orchard_types::UnixTime;

use crate::rows::{int, opt_int, opt_text, text};
use crate::{Store, StoreError};

/// What the database knows of a job: its lease and its last run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobRunRecord {
    pub name: String,
    pub lease_owner: Option<String>,
    pub lease_until: Option<UnixTime>,
    pub last_started_at: Option<UnixTime>,
    pub last_finished_at: Option<UnixTime>,
    pub last_error: Option<String>,
    pub runs: i64,
}

/// A claim on a job run: who asks, when, how long the lease lasts, and how long after the last start the job
/// is due again.
#[derive(Debug, Clone)]
pub struct JobClaim<'a> {
    pub name: &'a str,
    pub owner: &'a str,
    pub now: UnixTime,
    pub lease_until: UnixTime,
    /// The job is due when it never started, or started at or before this time (now minus the interval).
    pub due_if_started_before: UnixTime,
}

impl Store {
    /// Claims a due job for `owner`. True when this node may run it now: nobody holds an unexpired lease, and
    /// the job is due (never started, started before `due_if_started_before`, or its last run never finished:
    /// the node died, and its lease has run out). One statement, so two nodes racing for the same run cannot both win.
    pub async fn claim_job_run(&self, claim: &JobClaim<'_>) -> Result<bool, StoreError> {
        // Make sure the row exists; a concurrent insert by another node is fine.
        sqlx::query(
            "INSERT INTO job_runs (name, runs) VALUES ($1, 0) ON CONFLICT (name) DO NOTHING",
        )
        .bind(claim.name)
        .execute(&self.pool)
        .await?;
        let changed = sqlx::query(
            "UPDATE job_runs SET lease_owner = $2, lease_until = $3, last_started_at = $4 \
             WHERE name = $1 \
               AND (lease_until IS NULL OR lease_until <= $4) \
               AND (last_started_at IS NULL OR last_started_at <= $5 \
                    OR last_finished_at IS NULL OR last_finished_at < last_started_at)",
        )
        .bind(claim.name)
        .bind(claim.owner)
        .bind(claim.lease_until.0)
        .bind(claim.now.0)
        .bind(claim.due_if_started_before.0)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(changed > 0)
    }

    /// Ends `owner`'s run of a job: releases the lease and records the outcome. A run whose lease was taken
    /// over by another node (it ran too long) records nothing.
    pub async fn finish_job_run(
        &self,
        name: &str,
        owner: &str,
        now: UnixTime,
        error: Option<&str>,
    ) -> Result<bool, StoreError> {
        let changed = sqlx::query(
            "UPDATE job_runs SET lease_owner = NULL, lease_until = NULL, last_finished_at = $3, \
                                 last_error = $4, runs = runs + 1 \
             WHERE name = $1 AND lease_owner = $2",
        )
        .bind(name)
        .bind(owner)
        .bind(now.0)
        .bind(error)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(changed > 0)
    }

    /// Every job that has run or been claimed, by name.
    pub async fn job_runs(&self) -> Result<Vec<JobRunRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT name, lease_owner, lease_until, last_started_at, last_finished_at, last_error, runs \
             FROM job_runs ORDER BY name",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(JobRunRecord {
                    name: text(row, "name")?,
                    lease_owner: opt_text(row, "lease_owner")?,
                    lease_until: opt_int(row, "lease_until")?.map(UnixTime),
                    last_started_at: opt_int(row, "last_started_at")?.map(UnixTime),
                    last_finished_at: opt_int(row, "last_finished_at")?.map(UnixTime),
                    last_error: opt_text(row, "last_error")?,
                    runs: int(row, "runs")?,
                })
            })
            .collect()
    }
}
