//! Bulk jobs: an action on many devices that a person can follow. Starting one is a bulk request (the same
//! checks as `POST /commands/bulk`: scope, role, destructive commands confirmed by the count shown in the dry run)
//! whose commands are queued together with a job row that links them, in one transaction; its progress is then
//! read from the queue (how many iPads answered, failed, expired, still wait), so it survives a reload, a restart
//! and another node. A department sees the jobs its people started; central IT sees every job.

use orchard_protocol::commands::Command;
use orchard_store::{BulkJobProgress, BulkJobRecord};
use serde::Serialize;

use crate::access::principal::Principal;
use crate::commands::policy::{BulkOutcome, BulkTarget};
use crate::{CoreError, Orchard};

/// Jobs a list shows at most.
pub const RECENT_JOBS: i64 = 20;

/// A bulk job with its progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BulkJobView {
    pub id: String,
    /// The UI's name of the action (`lock`, `restart` …).
    pub action: String,
    pub request_types: Vec<String>,
    pub devices: i64,
    pub skipped: i64,
    pub commands: i64,
    pub created_by: String,
    pub created_at: String,
    pub waiting: i64,
    pub done: i64,
    pub failed: i64,
    pub expired: i64,
}

impl BulkJobView {
    /// Every command has a final answer (done, failed or expired).
    pub fn finished(&self) -> bool {
        self.waiting == 0
    }

    /// Commands with a final answer, in percent (rounded down).
    pub fn percent(&self) -> i64 {
        if self.commands <= 0 {
            return 100;
        }
        (self.commands - self.waiting).clamp(0, self.commands) * 100 / self.commands
    }
}

fn view(job: BulkJobRecord, progress: BulkJobProgress) -> BulkJobView {
    // Commands no longer found anywhere were pruned from the history long after they finished.
    let found = progress.waiting + progress.done + progress.failed + progress.expired;
    let pruned = (job.commands - found).max(0);
    BulkJobView {
        id: job.id,
        action: job.action,
        request_types: job
            .request_types
            .split(',')
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect(),
        devices: job.devices,
        skipped: job.skipped,
        commands: job.commands,
        created_by: job.created_by_name.unwrap_or(job.created_by),
        created_at: job.created_at.to_rfc3339(),
        waiting: progress.waiting,
        done: progress.done + pruned,
        failed: progress.failed,
        expired: progress.expired,
    }
}

impl Orchard {
    /// What a bulk action would reach, before anything is queued: the dry run of every command of the action
    /// (all checks but the confirmation).
    pub async fn bulk_job_dry_run(
        &self,
        who: &Principal,
        target: &BulkTarget,
        commands: &[Command],
    ) -> Result<BulkOutcome, CoreError> {
        let prepared = self.prepare_bulk(who, target, commands, true, None).await?;
        Ok(BulkOutcome {
            dry_run: true,
            affected: prepared.devices.len(),
            skipped: prepared.skipped,
            queued: 0,
        })
    }

    /// Queues `commands` for every device of `target` and the job that follows them, in one transaction.
    /// `action` is the caller's name for it (kept for the job's page). Nothing to reach is Invalid.
    pub async fn start_bulk_job(
        &self,
        who: &Principal,
        target: &BulkTarget,
        action: &str,
        commands: &[Command],
        confirm_count: Option<usize>,
    ) -> Result<BulkJobView, CoreError> {
        if commands.is_empty() {
            return Err(CoreError::Invalid("a bulk job needs a command".into()));
        }
        let prepared = self
            .prepare_bulk(who, target, commands, false, confirm_count)
            .await?;
        if prepared.devices.is_empty() {
            return Err(CoreError::Invalid(
                "none of the chosen devices is enrolled: nothing to queue".into(),
            ));
        }
        let mut unit = self.store.begin_unit().await?;
        let queued = self
            .bulk_commands(&mut unit, who, &prepared.devices, commands)
            .await?;
        let record = BulkJobRecord {
            id: uuid::Uuid::now_v7().hyphenated().to_string(),
            tenant_id: who.tenant_id(),
            action: action.to_string(),
            request_types: commands
                .iter()
                .map(|c| c.request_type())
                .collect::<Vec<_>>()
                .join(","),
            devices: prepared.devices.len() as i64,
            skipped: prepared.skipped as i64,
            commands: queued.len() as i64,
            created_by: who.actor(),
            created_by_name: Some(who.name().to_string()),
            created_at: self.clock.now(),
        };
        unit.enqueue_bulk_job(&record, &queued).await?;
        unit.commit().await?;
        self.wake_dispatcher();
        tracing::info!(job = %record.id, devices = record.devices, commands = record.commands, actor = %record.created_by, "bulk job queued");
        let waiting = record.commands;
        Ok(view(
            record,
            BulkJobProgress {
                waiting,
                ..BulkJobProgress::default()
            },
        ))
    }

    /// A job in the caller's scope with its progress now; another department's job is NotFound.
    pub async fn bulk_job(&self, who: &Principal, id: &str) -> Result<BulkJobView, CoreError> {
        if uuid::Uuid::parse_str(id).is_err() {
            return Err(CoreError::NotFound);
        }
        let job = self
            .store
            .bulk_job(who.scope(), id)
            .await?
            .ok_or(CoreError::NotFound)?;
        let progress = self.store.bulk_job_progress(&job.id).await?;
        Ok(view(job, progress))
    }

    /// The newest jobs of the caller's scope (at most [`RECENT_JOBS`]) with their progress.
    pub async fn recent_bulk_jobs(&self, who: &Principal) -> Result<Vec<BulkJobView>, CoreError> {
        let jobs = self
            .store
            .recent_bulk_jobs(who.scope(), RECENT_JOBS)
            .await?;
        let mut views = Vec::with_capacity(jobs.len());
        for job in jobs {
            let progress = self.store.bulk_job_progress(&job.id).await?;
            views.push(view(job, progress));
        }
        Ok(views)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use orchard_types::UnixTime;

    fn job(commands: i64) -> BulkJobRecord {
        BulkJobRecord {
            id: "j".into(),
            tenant_id: None,
            action: "lock".into(),
            request_types: "DeviceLock".into(),
            devices: commands,
            skipped: 0,
            commands,
            created_by: "user:x".into(),
            created_by_name: None,
            created_at: UnixTime(0),
        }
    }

    #[test]
    fn progress_counts_final_answers_and_pruned_history_as_done() {
        let v = view(
            job(10),
            BulkJobProgress {
                waiting: 4,
                done: 3,
                failed: 1,
                expired: 0,
            },
        );
        assert_eq!(v.done, 5, "two commands pruned from the history");
        assert_eq!(v.percent(), 60);
        assert!(!v.finished());
        let all = view(
            job(2),
            BulkJobProgress {
                done: 2,
                ..BulkJobProgress::default()
            },
        );
        assert!(all.finished());
        assert_eq!(all.percent(), 100);
        assert_eq!(view(job(0), BulkJobProgress::default()).percent(), 100);
    }
}
