//! Queue hygiene: a command sent but never answered is pushed for and handed out again later, one that keeps
//! going unanswered is given up after a configured number of attempts (so it cannot hold its channel up), and
//! finished commands leave the hot queue for the history table, which keeps them for a configured time.

use orchard_store::QueuePolicy;

use crate::access::capability::SystemCtx;
use crate::{CoreError, Orchard};

/// Finished commands moved to the history per step of the hygiene job.
const ARCHIVE_BATCH: i64 = 2_000;
/// Channels pushed again for unanswered commands per step.
const RESEND_PUSH_BATCH: i64 = 10_000;

/// How the command queue treats unfinished and finished commands (`--command-*` flags).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandQueueSettings {
    /// Resend-after and attempts; see [`QueuePolicy`].
    pub policy: QueuePolicy,
    /// Finished commands are kept this many days in the history (0 keeps them for ever).
    pub history_days: i64,
}

/// Default of `--command-max-attempts`.
pub const DEFAULT_MAX_ATTEMPTS: i64 = 5;
/// Default of `--command-resend-after-minutes`.
pub const DEFAULT_RESEND_AFTER_MINUTES: i64 = 5;
/// Default of `--command-history-days`.
pub const DEFAULT_HISTORY_DAYS: i64 = 90;

impl Default for CommandQueueSettings {
    fn default() -> Self {
        Self {
            policy: QueuePolicy {
                max_attempts: DEFAULT_MAX_ATTEMPTS,
                resend_after_seconds: DEFAULT_RESEND_AFTER_MINUTES * 60,
            },
            history_days: DEFAULT_HISTORY_DAYS,
        }
    }
}

/// How long a shared command body nothing names is kept after its last use: a reconciler pass that has just
/// found it (on any node) writes its commands well within this.
const UNUSED_BODY_GRACE_SECONDS: i64 = 86_400;

/// What one hygiene step did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct HygieneStats {
    pub archived: u64,
    pub pruned: u64,
    pub resend_pushes: u64,
    /// Shared command bodies deleted: no command names them any more.
    pub bodies_purged: u64,
}

impl Orchard {
    /// The command queue's resend, attempts and history settings (default: [`CommandQueueSettings::default`]).
    pub fn with_command_queue_settings(mut self, settings: CommandQueueSettings) -> Self {
        self.command_queue = settings;
        self
    }

    pub fn command_queue_settings(&self) -> &CommandQueueSettings {
        &self.command_queue
    }

    /// One hygiene step (from [`crate::jobs::CommandHygieneJob`]; tests call it directly): channels with a
    /// command unanswered for the resend time owe a push, finished commands move to the history, and history
    /// past its retention is deleted. Safe on several nodes at once.
    pub async fn command_queue_hygiene(
        &self,
        _system: &SystemCtx,
    ) -> Result<HygieneStats, CoreError> {
        let now = self.clock.now();
        let settings = &self.command_queue;
        let mut stats = HygieneStats::default();
        let resend_after = settings.policy.resend_after_seconds.max(0);
        stats.resend_pushes = self
            .store
            .request_push_for_unanswered(
                orchard_types::UnixTime(now.0 - resend_after),
                now,
                RESEND_PUSH_BATCH,
            )
            .await?;
        if stats.resend_pushes > 0 {
            tracing::info!(
                channels = stats.resend_pushes,
                "pushing devices again for commands they were sent but never answered"
            );
            self.wake_dispatcher();
        }
        loop {
            let moved = self.store.archive_finished_commands(ARCHIVE_BATCH).await?;
            stats.archived += moved;
            if moved < u64::try_from(ARCHIVE_BATCH).unwrap_or(u64::MAX) {
                break;
            }
        }
        if settings.history_days > 0 {
            let cutoff = orchard_types::UnixTime(now.0 - settings.history_days * 86_400);
            stats.pruned = self.store.prune_command_history(cutoff).await?;
        }
        stats.bodies_purged = self
            .store
            .purge_unused_command_bodies(orchard_types::UnixTime(now.0 - UNUSED_BODY_GRACE_SECONDS))
            .await?;
        Ok(stats)
    }
}
