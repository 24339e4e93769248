//! The per-channel command queue: FIFO by an ever-growing `seq`, claimed and settled in one statement each,
//! because next_command and record_result run on every device round trip. A command sent but never answered is
//! sent again once it is due ([`QueuePolicy::resend_after_seconds`]); one handed out
//! [`QueuePolicy::max_attempts`] times without a final answer is `failed` and no longer holds the channel up.
//! Finished commands move to `command_history` (kept for a configured time), so the hot table holds live work.

use sqlx::any::AnyRow;

use orchard_types::{ChannelId, CommandStatus, CommandUuid, DeviceId, QueuedBy, Udid};

use crate::device::devices::{
    requesting_device_from_row, requesting_device_sql, RequestingDevice, UNFINISHED_STATUSES,
};
use crate::rows;
use crate::sql::Sql;
use crate::unit::Db;
use crate::{
    Backend, CommandBody, CommandRecord, CommandResultRecord, NewCommand, Page, QueuedCommand,
    RecordOutcome, Scope, Store, StoreError, UnitOfWork,
};

const COMMAND_COLUMNS: &str = "command_uuid, device_id, tenant_id, channel_id, request_type, status, \
     payload, payload_sealed, result, result_sealed, deliver_once, error_chain, queued_by, queued_at, sent_at, \
     completed_at, expires_at, attempts, body_id";

/// Commands moved to the history per statement.
const ARCHIVE_CHUNK: usize = 200;

/// Values bound per row by enqueue_commands.
const ENQUEUE_BINDS_PER_ROW: usize = 12;
/// Rows per INSERT. Measured: per-row cost grows with statement size in sqlx-sqlite (500-row statements were
/// ~5x slower per row than 50-100), and one fixed size lets full chunks reuse one cached prepared statement.
const ENQUEUE_ROWS_PER_STATEMENT: usize = 100;

/// Which unfinished rows of the channel the sweep expires: queued or not_now ones past their deadline, and a
/// deliver-once command that went out and was never answered (it is never sent again, so it only waits for
/// its deadline).
macro_rules! expired_row {
    () => {
        "(status IN ('queued', 'not_now') OR (status = 'sent' AND deliver_once = 1)) AND expires_at < $2"
    };
}

/// Which unfinished rows of the channel fail for good: handed out `$3` times, last time without any answer,
/// and due again (`$4` is the resend cutoff), when attempts are limited (`$3 > 0`). A NotNow is an answer (the
/// device will take the command later; it waits for its deadline and does not hold up the session), and
/// deliver-once commands only wait for their deadline.
macro_rules! failed_row {
    () => {
        "($3 > 0 AND deliver_once = 0 AND attempts >= $3 AND status = 'sent' AND sent_at <= $4)"
    };
}

/// Rows the claim statement finishes instead of handing out.
macro_rules! finished_row {
    () => {
        concat!("(", expired_row!(), " OR ", failed_row!(), ")")
    };
}

/// Which rows may be claimed besides their status: a sent command is resent until answered once it is due
/// (sent at or before the resend cutoff `$4`), anything else only before its deadline; a deliver-once command
/// only if it never went out (a replayed request must not get its credential again); no unanswered command
/// that has used up its attempts (the sweep fails it instead).
macro_rules! claimable_row {
    () => {
        " AND (status = 'sent' OR expires_at IS NULL OR expires_at >= $2) \
         AND (deliver_once = 0 OR sent_at IS NULL) \
         AND (status <> 'sent' OR (sent_at <= $4 AND ($3 <= 0 OR attempts < $3)))"
    };
}

/// The shared body of a handed-out command (`command_bodies`), as two scalar subqueries on its `body_id`:
/// SQLite's RETURNING may not join, and both backends accept a subquery there.
macro_rules! shared_body_columns {
    ($body_id:literal) => {
        concat!(
            "(SELECT b.body FROM command_bodies b WHERE b.id = ",
            $body_id,
            ") AS shared_body, (SELECT b.body_sealed FROM command_bodies b WHERE b.id = ",
            $body_id,
            ") AS shared_body_sealed"
        )
    };
}

/// SQLite serialises writers, so one UPDATE can both sweep the channel's expired commands and claim the head:
/// the CASE tells the two kinds of matched rows apart. The scalar subquery is uncorrelated, hence evaluated
/// once, before any row changes. It takes the head as `MIN(seq)`, not `ORDER BY seq LIMIT 1`: the status list
/// splits the channel's index range in several, and SQLite would sort their rows in a temporary b-tree on
/// every claim to order them.
macro_rules! sqlite_next_command {
    ($claimable:literal) => {
        concat!(
            "UPDATE commands SET ",
            "status = CASE WHEN ",
            expired_row!(),
            " THEN 'expired' WHEN ",
            failed_row!(),
            " THEN 'failed' ELSE 'sent' END, ",
            "error_chain = CASE WHEN ",
            expired_row!(),
            " THEN error_chain WHEN ",
            failed_row!(),
            " THEN COALESCE(error_chain, $5) ELSE error_chain END, ",
            "sent_at = CASE WHEN ",
            finished_row!(),
            " THEN sent_at ELSE $2 END, ",
            "completed_at = CASE WHEN ",
            finished_row!(),
            " THEN $2 ELSE completed_at END, ",
            "attempts = CASE WHEN ",
            finished_row!(),
            " THEN attempts ELSE attempts + 1 END ",
            "WHERE (channel_id = $1 AND ",
            finished_row!(),
            ") ",
            "OR seq = (SELECT MIN(seq) FROM commands WHERE channel_id = $1 AND status IN ",
            $claimable,
            claimable_row!(),
            ") ",
            "RETURNING status, command_uuid, request_type, payload, payload_sealed, body_id, ",
            shared_body_columns!("commands.body_id")
        )
    };
}

/// PostgreSQL runs concurrent writers, so rows are locked explicitly. The sweep skips rows another session
/// holds (that session sweeps them), so it never waits and cannot deadlock against a claim; the claim waits
/// for the head's lock and then re-checks it, moving on to the next command if the head was just settled.
/// `$gate`: a condition both run under (nothing is locked or written when it is false).
macro_rules! postgres_claim_ctes {
    ($claimable:literal, $gate:literal) => {
        concat!(
            "swept AS (",
            "UPDATE commands SET status = CASE WHEN ",
            expired_row!(),
            " THEN 'expired' ELSE 'failed' END, ",
            "error_chain = CASE WHEN ",
            expired_row!(),
            " THEN error_chain ELSE COALESCE(error_chain, $5) END, ",
            "completed_at = $2 ",
            "WHERE seq IN (SELECT seq FROM commands WHERE channel_id = $1 AND ",
            finished_row!(),
            $gate,
            " ",
            "FOR UPDATE SKIP LOCKED) RETURNING seq), ",
            "claimed AS (",
            "UPDATE commands SET status = 'sent', sent_at = $2, attempts = attempts + 1 ",
            "WHERE seq = (SELECT seq FROM commands WHERE channel_id = $1 AND status IN ",
            $claimable,
            claimable_row!(),
            $gate,
            " ORDER BY seq LIMIT 1 FOR UPDATE) ",
            "RETURNING command_uuid, request_type, payload, payload_sealed, body_id)"
        )
    };
}

/// The command [`postgres_claim_ctes`] handed out, as [`handed_out`] reads it.
macro_rules! postgres_claimed {
    () => {
        concat!(
            "SELECT 'sent' AS status, command_uuid, request_type, payload, payload_sealed, body_id, ",
            shared_body_columns!("claimed.body_id"),
            " FROM claimed"
        )
    };
}

macro_rules! postgres_next_command {
    ($claimable:literal) => {
        postgres_next_command!($claimable, "")
    };
    // `$seen`: CTEs run before the sweep, e.g. the device's last-seen time (see POSTGRES_TOUCH).
    ($claimable:literal, $seen:expr) => {
        concat!(
            "WITH ",
            $seen,
            postgres_claim_ctes!($claimable, ""),
            " ",
            postgres_claimed!()
        )
    };
}

/// Whether the channel has anything next_command could claim or sweep (a superset of both variants).
const HAS_UNFINISHED: &str = "SELECT 1 AS one FROM commands WHERE channel_id = $1 \
     AND status IN ('queued', 'sent', 'not_now') LIMIT 1";

const SQLITE_NEXT_COMMAND: &str = sqlite_next_command!("('queued', 'sent', 'not_now')");
const SQLITE_NEXT_COMMAND_SKIP_NOT_NOW: &str = sqlite_next_command!("('queued', 'sent')");
const POSTGRES_NEXT_COMMAND: &str = postgres_next_command!("('queued', 'sent', 'not_now')");
const POSTGRES_NEXT_COMMAND_SKIP_NOT_NOW: &str = postgres_next_command!("('queued', 'sent')");
/// The device's last-seen time written by the claim itself (`$6`: the device), so an idle poll with work makes
/// one statement and one commit on PostgreSQL. A data-modifying CTE runs whether or not the query reads it.
macro_rules! postgres_touch {
    () => {
        "seen AS (UPDATE devices SET last_seen_at = $2 WHERE id = $6), "
    };
}
const POSTGRES_TOUCH_NEXT_COMMAND: &str =
    postgres_next_command!("('queued', 'sent', 'not_now')", postgres_touch!());
const POSTGRES_TOUCH_NEXT_COMMAND_SKIP_NOT_NOW: &str =
    postgres_next_command!("('queued', 'sent')", postgres_touch!());

/// The command a claim's row hands out (`status` sent), if any: the claim's rows also report what it swept,
/// and the idle poll's row has no command when nothing was claimed.
fn handed_out(row: &AnyRow) -> Result<Option<QueuedCommand>, StoreError> {
    if rows::opt_text(row, "status")?.as_deref() != Some(CommandStatus::Sent.as_str()) {
        return Ok(None);
    }
    Ok(Some(QueuedCommand {
        uuid: rows::command_uuid(row, "command_uuid")?,
        request_type: rows::request_type(row, "request_type")?,
        payload: rows::bytes(row, "payload")?,
        payload_sealed: rows::boolean(row, "payload_sealed")?,
        body: match rows::opt_text(row, "body_id")? {
            None => None,
            Some(id) => Some(CommandBody {
                // A body is deleted only when no command names it (and the foreign key holds).
                body: rows::opt_bytes(row, "shared_body")?
                    .ok_or_else(|| StoreError::Corrupt(format!("command body {id} is missing")))?,
                sealed: rows::boolean(row, "shared_body_sealed")?,
                id,
            }),
        },
    }))
}

/// An idle poll's request to [`Store::find_device_for_idle_poll`].
#[derive(Debug, Clone, Copy)]
pub struct IdlePoll<'a> {
    /// The UDID the request speaks for.
    pub udid: &'a Udid,
    /// The channel it polls (the device's or a Shared iPad user's).
    pub channel: &'a ChannelId,
    /// The fingerprint of the identity that signed the request (verified by the caller).
    pub signer_fingerprint: &'a str,
    pub now: orchard_types::UnixTime,
    /// The device's last-seen time is written again once it is at least this many seconds old.
    pub last_seen_granularity: i64,
    pub policy: &'a QueuePolicy,
}

/// What [`Store::find_device_for_idle_poll`] did with the channel's queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdlePollClaim {
    /// Nothing was written: the caller goes on as after [`Store::find_device_with_identity`].
    NotTried,
    /// The claim ran, with the last-seen time when it was stale: the command handed out, if any.
    Tried(Option<QueuedCommand>),
}

/// How the queue treats commands that do not finish. The default (no limit, resend at once) is what the store
/// did before policies existed; the server configures its own.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueuePolicy {
    /// A command handed out this many times (NotNows included) whose last hand-out went unanswered is
    /// `failed` the next time it would be handed out; 0 = no limit.
    pub max_attempts: i64,
    /// A command sent but not answered is handed out again only this long after it was last sent (another
    /// command of the channel may go first meanwhile).
    pub resend_after_seconds: i64,
}

/// The statuses that move to `command_history`: nothing changes them any more.
const FINISHED_STATUSES: &str =
    "('acknowledged', 'error', 'command_format_error', 'expired', 'failed')";

/// The ErrorChain stored with a command that failed without the device ever giving an error.
fn failure_chain(max_attempts: i64) -> String {
    // The same JSON the device's own ErrorChain is stored as (orchard-protocol's ErrorChainItem).
    format!(
        "[{{\"ErrorCode\":0,\"ErrorDomain\":\"Orchard\",\"LocalizedDescription\":\"sent {max_attempts} \
         times without a final answer\"}}]"
    )
}

fn command_from_row(row: &AnyRow) -> Result<CommandRecord, StoreError> {
    Ok(CommandRecord {
        uuid: rows::command_uuid(row, "command_uuid")?,
        device_id: rows::device_id(row, "device_id")?,
        tenant_id: rows::tenant_id(row, "tenant_id")?,
        channel: rows::channel_id(row, "channel_id")?,
        request_type: rows::request_type(row, "request_type")?,
        status: rows::command_status(row, "status")?,
        payload: rows::bytes(row, "payload")?,
        payload_sealed: rows::boolean(row, "payload_sealed")?,
        result: rows::opt_bytes(row, "result")?,
        result_sealed: rows::boolean(row, "result_sealed")?,
        deliver_once: rows::boolean(row, "deliver_once")?,
        error_chain: rows::opt_text(row, "error_chain")?,
        queued_by: rows::opt_queued_by(row, "queued_by")?,
        queued_at: rows::time(row, "queued_at")?,
        sent_at: rows::opt_time(row, "sent_at")?,
        completed_at: rows::opt_time(row, "completed_at")?,
        expires_at: rows::opt_time(row, "expires_at")?,
        attempts: rows::int(row, "attempts")?,
    })
}

/// The insert for `rows` commands (anonymous `?` placeholders on SQLite: see `dep::placeholders`).
fn enqueue_sql(backend: crate::Backend, rows: usize) -> String {
    let mut sql = String::from(
        "INSERT INTO commands (command_uuid, device_id, tenant_id, channel_id, request_type, status, \
         payload, payload_sealed, deliver_once, queued_by, queued_at, expires_at, body_id) VALUES ",
    );
    for row in 0..rows {
        let p = row * ENQUEUE_BINDS_PER_ROW;
        if row > 0 {
            sql.push_str(", ");
        }
        sql.push('(');
        sql.push_str(&crate::dep::sync::placeholders(backend, p + 1, 5));
        sql.push_str(", 'queued', ");
        sql.push_str(&crate::dep::sync::placeholders(backend, p + 6, 7));
        sql.push(')');
    }
    sql
}

/// Queues the commands in slice order, and owes each channel that got work one push, on `db`.
async fn enqueue_commands(db: &mut impl Db, cmds: &[NewCommand]) -> Result<(), StoreError> {
    if cmds.is_empty() {
        return Ok(());
    }
    let backend = db.backend();
    for chunk in cmds.chunks(ENQUEUE_ROWS_PER_STATEMENT) {
        let sql = enqueue_sql(backend, chunk.len());
        // Only the full-size and single-row statements recur; a remainder size is not worth a cache slot.
        let mut query = sqlx::query(&sql)
            .persistent(chunk.len() == 1 || chunk.len() == ENQUEUE_ROWS_PER_STATEMENT);
        for c in chunk {
            query = query
                .bind(c.uuid.as_str())
                .bind(c.device_id.to_string())
                .bind(c.tenant_id.to_string())
                .bind(c.channel.as_str())
                .bind(c.request_type.as_str())
                .bind(c.payload.as_slice())
                .bind(i64::from(c.payload_sealed))
                .bind(i64::from(c.deliver_once))
                .bind(c.queued_by.as_ref().map(QueuedBy::to_stored))
                .bind(c.queued_at.0)
                .bind(c.expires_at.map(|v| v.0))
                .bind(c.body_id.as_deref());
        }
        query.execute(db.conn()?).await?;
    }
    // Every channel that got work owes one push (coalesced), recorded in the same transaction so a
    // crash cannot leave queued commands without their push.
    let mut channels: Vec<&str> = cmds.iter().map(|c| c.channel.as_str()).collect();
    channels.sort_unstable();
    channels.dedup();
    let now = cmds.iter().map(|c| c.queued_at.0).max().unwrap_or_default();
    crate::push::queue_state::mark_push_wanted(db, &channels, now).await?;
    db.note_queued_commands();
    Ok(())
}

/// Which unfinished commands [`record_result_sql`]'s statement records a result on.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum ResultsTaken {
    /// Any unfinished command of the channel.
    Any,
    /// Only an unfinished DeviceInformation command of the answering device that zero-touch setup did not
    /// queue (its answers move the setup on): a repeated inventory answer stored without the general path
    /// (see `Store::record_repeated_facts_answer`).
    RepeatedFactsAnswer,
}

/// The statement that records a device's result on its unfinished command. It returns the command's device,
/// request type and `queued_by`, and whether another command of the channel is unfinished, so a device that
/// has answered its last command gets its empty answer without another read. Its parameters are numbered from
/// `$(b+1)`: the command uuid, the channel, the status, the result, the error chain, the completion time and
/// whether the result is sealed; [`ResultsTaken::RepeatedFactsAnswer`] adds the device and the setup's
/// `queued_by`.
pub(crate) fn record_result_sql(b: usize, taken: ResultsTaken) -> String {
    let [uuid, channel, status, result, error_chain, completed_at, sealed, device, setup] =
        std::array::from_fn(|i| b + i + 1);
    let only = match taken {
        ResultsTaken::Any => String::new(),
        ResultsTaken::RepeatedFactsAnswer => format!(
            " AND device_id = ${device} AND request_type = 'DeviceInformation' \
             AND (queued_by IS NULL OR queued_by <> ${setup})"
        ),
    };
    format!(
        "UPDATE commands SET status = ${status}, result = ${result}, result_sealed = ${sealed}, \
           error_chain = ${error_chain}, completed_at = ${completed_at} \
         WHERE command_uuid = ${uuid} AND channel_id = ${channel} AND status IN {UNFINISHED_STATUSES}{only} \
         RETURNING device_id, request_type, queued_by, \
           CAST(CASE WHEN EXISTS (SELECT 1 FROM commands other WHERE other.channel_id = ${channel} \
             AND other.status IN {UNFINISHED_STATUSES} AND other.command_uuid <> ${uuid}) \
           THEN 1 ELSE 0 END AS BIGINT) AS more_unfinished"
    )
}

/// See [`Store::record_result`].
async fn record_result(
    db: &mut impl Db,
    r: &CommandResultRecord,
) -> Result<RecordOutcome, StoreError> {
    let completed_at = match r.status {
        CommandStatus::Acknowledged | CommandStatus::Error | CommandStatus::CommandFormatError => {
            Some(r.now.0)
        }
        CommandStatus::NotNow => None,
        CommandStatus::Queued
        | CommandStatus::Sent
        | CommandStatus::Expired
        | CommandStatus::Failed => {
            return Err(StoreError::Conflict(format!(
                "a device cannot report status {}",
                r.status.as_str()
            )))
        }
    };
    static SQL: std::sync::LazyLock<String> =
        std::sync::LazyLock::new(|| record_result_sql(0, ResultsTaken::Any));
    let row = sqlx::query(SQL.as_str())
        .bind(r.uuid.as_str())
        .bind(r.channel.as_str())
        .bind(r.status.as_str())
        .bind(r.result.as_deref())
        .bind(r.error_chain.as_deref())
        .bind(completed_at)
        .bind(i64::from(r.result_sealed))
        .fetch_optional(db.conn()?)
        .await?;
    if let Some(row) = row {
        return Ok(RecordOutcome::Recorded {
            device_id: rows::device_id(&row, "device_id")?,
            request_type: rows::request_type(&row, "request_type")?,
            queued_by: rows::opt_queued_by(&row, "queued_by")?,
            more_unfinished: rows::boolean(&row, "more_unfinished")?,
        });
    }
    let existing = sqlx::query(
        "SELECT status FROM commands WHERE command_uuid = $1 AND channel_id = $2 \
         UNION ALL SELECT status FROM command_history WHERE command_uuid = $1 AND channel_id = $2",
    )
    .bind(r.uuid.as_str())
    .bind(r.channel.as_str())
    .fetch_optional(db.conn()?)
    .await?;
    Ok(match existing {
        None => RecordOutcome::Unknown,
        // Not updated although it exists on this channel: it is final (or became final concurrently).
        Some(_) => RecordOutcome::Duplicate,
    })
}

impl UnitOfWork {
    /// [`Store::enqueue_commands`] inside this unit.
    pub async fn enqueue_commands(&mut self, cmds: &[NewCommand]) -> Result<(), StoreError> {
        enqueue_commands(self, cmds).await
    }

    /// [`Store::record_result`] inside this unit: the report and everything it causes commit together.
    pub async fn record_result(
        &mut self,
        r: &CommandResultRecord,
    ) -> Result<RecordOutcome, StoreError> {
        record_result(self, r).await
    }
}

impl Store {
    /// Queues the commands in one transaction, in slice order. Conflict on a duplicate uuid (nothing is
    /// queued then); NotFound when a device or tenant does not exist.
    pub async fn enqueue_commands(&self, cmds: &[NewCommand]) -> Result<(), StoreError> {
        if cmds.is_empty() {
            return Ok(());
        }
        let mut unit = self.begin_unit().await?;
        unit.enqueue_commands(cmds).await?;
        unit.commit().await
    }

    /// The oldest command of the channel whose status is queued or sent (or not_now unless skip_not_now),
    /// after marking the channel's queued/not_now commands whose expires_at < now as expired (and its
    /// deliver-once commands that went out unanswered). Marks it sent (sent_at = now, attempts + 1) and returns
    /// it. A deliver-once command is returned only the first time. Never returns a command of another channel.
    ///
    /// One statement, one round trip; the sweep only touches the channel's unfinished rows by index.
    pub async fn next_command(
        &self,
        channel: &ChannelId,
        skip_not_now: bool,
        now: orchard_types::UnixTime,
    ) -> Result<Option<QueuedCommand>, StoreError> {
        self.next_command_with(channel, skip_not_now, now, &QueuePolicy::default())
            .await
    }

    /// [`Store::next_command`] under `policy`: a sent command is handed out again only once it is due, and an
    /// unfinished command that used up its attempts is marked `failed` (with its last ErrorChain, or one saying
    /// it was never answered) in the same statement, so the channel moves on to the next command.
    pub async fn next_command_with(
        &self,
        channel: &ChannelId,
        skip_not_now: bool,
        now: orchard_types::UnixTime,
        policy: &QueuePolicy,
    ) -> Result<Option<QueuedCommand>, StoreError> {
        // Fast path for the common idle poll: a plain indexed read, so a channel with nothing unfinished costs
        // no write (on SQLite an UPDATE takes the database-wide write lock even when it matches nothing).
        let unfinished = sqlx::query(HAS_UNFINISHED)
            .bind(channel.as_str())
            .fetch_optional(&self.pool)
            .await?;
        if unfinished.is_none() {
            return Ok(None);
        }
        self.claim_next_command(channel, skip_not_now, now, policy)
            .await
    }

    /// [`Store::next_command_with`] for a caller that already knows the channel has unfinished commands (the
    /// device lookup said so): the claiming `UPDATE` alone.
    pub async fn claim_next_command(
        &self,
        channel: &ChannelId,
        skip_not_now: bool,
        now: orchard_types::UnixTime,
        policy: &QueuePolicy,
    ) -> Result<Option<QueuedCommand>, StoreError> {
        self.claim(channel, None, skip_not_now, now, policy).await
    }

    /// [`Store::claim_next_command`] that also records `device` as seen at `now` (its `last_seen_at`, as
    /// [`Store::touch_device`]): in the claiming statement itself on PostgreSQL, before it on SQLite.
    pub async fn touch_and_claim_next_command(
        &self,
        device: DeviceId,
        channel: &ChannelId,
        skip_not_now: bool,
        now: orchard_types::UnixTime,
        policy: &QueuePolicy,
    ) -> Result<Option<QueuedCommand>, StoreError> {
        if self.backend == Backend::Sqlite {
            self.touch_device(device, now).await?;
            return self.claim(channel, None, skip_not_now, now, policy).await;
        }
        self.claim(channel, Some(device), skip_not_now, now, policy)
            .await
    }

    async fn claim(
        &self,
        channel: &ChannelId,
        seen: Option<DeviceId>,
        skip_not_now: bool,
        now: orchard_types::UnixTime,
        policy: &QueuePolicy,
    ) -> Result<Option<QueuedCommand>, StoreError> {
        let sql = match (self.backend, skip_not_now, seen.is_some()) {
            (Backend::Sqlite, false, _) => SQLITE_NEXT_COMMAND,
            (Backend::Sqlite, true, _) => SQLITE_NEXT_COMMAND_SKIP_NOT_NOW,
            (Backend::Postgres, false, false) => POSTGRES_NEXT_COMMAND,
            (Backend::Postgres, true, false) => POSTGRES_NEXT_COMMAND_SKIP_NOT_NOW,
            (Backend::Postgres, false, true) => POSTGRES_TOUCH_NEXT_COMMAND,
            (Backend::Postgres, true, true) => POSTGRES_TOUCH_NEXT_COMMAND_SKIP_NOT_NOW,
        };
        let max_attempts = policy.max_attempts.max(0);
        let mut query = sqlx::query(sql)
            .bind(channel.as_str())
            .bind(now.0)
            .bind(max_attempts)
            .bind(now.0.saturating_sub(policy.resend_after_seconds.max(0)))
            .bind(failure_chain(max_attempts));
        if let Some(device) = seen {
            query = query.bind(device.to_string());
        }
        for row in &query.fetch_all(&self.pool).await? {
            if let Some(handed) = handed_out(row)? {
                return Ok(Some(handed));
            }
        }
        Ok(None)
    }

    /// The idle poll's device lookup ([`Store::find_device_with_identity`] for its channel) and, on
    /// PostgreSQL, its claim in the same statement: the claim (with the last-seen time when it is stale, as
    /// [`Store::touch_and_claim_next_command`]) runs only when the request may claim at once, as the caller
    /// would decide from the lookup alone: the device is not unenrolled, `signer_fingerprint` is its bound
    /// identity and that identity is not revoked, it does not await the reconciler, and the channel has
    /// unfinished commands. Anything else writes nothing and comes back [`IdlePollClaim::NotTried`] with the
    /// lookup, for the caller to judge (a renewed identity, a rejection, the reconciler's plan). `None`: no
    /// device has the UDID. On SQLite (no round trips to save) it is the lookup alone.
    pub async fn find_device_for_idle_poll(
        &self,
        poll: &IdlePoll<'_>,
    ) -> Result<Option<(RequestingDevice, IdlePollClaim)>, StoreError> {
        if self.backend == Backend::Sqlite {
            let found = self
                .find_device_with_identity(poll.udid, Some(poll.channel))
                .await?;
            return Ok(found.map(|requesting| (requesting, IdlePollClaim::NotTried)));
        }
        // `$1`…`$5` are the claim's (see `claim`), `$6` the UDID, `$7` the signer's fingerprint, `$8` the
        // last-seen time older than which it is written again.
        static SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
            format!(
                "WITH d AS ({lookup}), \
                 ok AS (SELECT id FROM d WHERE d.state <> 'unenrolled' AND d.cert_fingerprint = $7 \
                   AND d.identity_revoked_at IS NULL AND d.awaiting_reconcile = 0 \
                   AND d.channel_has_unfinished = 1), \
                 seen AS (UPDATE devices SET last_seen_at = $2 WHERE id = (SELECT id FROM ok) \
                   AND (last_seen_at IS NULL OR last_seen_at <= $8)), \
                 {claim} \
                 SELECT d.*, CAST(CASE WHEN EXISTS (SELECT 1 FROM ok) THEN 1 ELSE 0 END AS BIGINT) \
                   AS claim_tried, c.* \
                 FROM d LEFT JOIN ({claimed}) c ON TRUE",
                lookup = requesting_device_sql(6, 1),
                claim = postgres_claim_ctes!(
                    "('queued', 'sent', 'not_now')",
                    " AND EXISTS (SELECT 1 FROM ok)"
                ),
                claimed = postgres_claimed!(),
            )
        });
        let max_attempts = poll.policy.max_attempts.max(0);
        let row = sqlx::query(SQL.as_str())
            .bind(poll.channel.as_str())
            .bind(poll.now.0)
            .bind(max_attempts)
            .bind(
                poll.now
                    .0
                    .saturating_sub(poll.policy.resend_after_seconds.max(0)),
            )
            .bind(failure_chain(max_attempts))
            .bind(poll.udid.as_str())
            .bind(poll.signer_fingerprint)
            .bind(poll.now.0.saturating_sub(poll.last_seen_granularity))
            .fetch_optional(&self.pool)
            .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let claim = if rows::boolean(&row, "claim_tried")? {
            IdlePollClaim::Tried(handed_out(&row)?)
        } else {
            IdlePollClaim::NotTried
        };
        Ok(Some((requesting_device_from_row(&row)?, claim)))
    }

    /// Stores a device report for a command of THIS channel. status ∈ acknowledged | error |
    /// command_format_error | not_now (anything else is a Conflict: devices cannot report it).
    /// A final command (acknowledged/error/command_format_error/expired) is never changed again → Duplicate.
    /// not_now keeps it in the queue (status not_now). Unknown uuid or another channel's command → Unknown.
    ///
    /// The accepted report is one `UPDATE … RETURNING`; only a rejected one costs a second lookup.
    pub async fn record_result(
        &self,
        r: &CommandResultRecord,
    ) -> Result<RecordOutcome, StoreError> {
        record_result(&mut self.pooled().await?, r).await
    }

    /// The device's commands, newest first.
    pub async fn list_commands(
        &self,
        scope: Scope,
        device: DeviceId,
        page: Page,
    ) -> Result<Vec<CommandRecord>, StoreError> {
        // Live work and history together, as one list in queue order.
        let mut sql = Sql::new(&format!(
            "SELECT {COMMAND_COLUMNS}, seq FROM commands WHERE device_id = "
        ));
        sql.bind(device.to_string())
            .in_scope("tenant_id", scope)
            .push(&format!(
                " UNION ALL SELECT {COMMAND_COLUMNS}, seq FROM command_history WHERE device_id = "
            ))
            .bind(device.to_string())
            .in_scope("tenant_id", scope)
            .push(" ORDER BY seq DESC LIMIT ")
            .bind(page.limit.max(0))
            .push(" OFFSET ")
            .bind(page.offset.max(0));
        sql.query()
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(command_from_row)
            .collect()
    }

    pub async fn get_command(
        &self,
        scope: Scope,
        uuid: &CommandUuid,
    ) -> Result<Option<CommandRecord>, StoreError> {
        let mut sql = Sql::new(&format!(
            "SELECT {COMMAND_COLUMNS} FROM commands WHERE command_uuid = "
        ));
        sql.bind(uuid.as_str())
            .in_scope("tenant_id", scope)
            .push(&format!(
                " UNION ALL SELECT {COMMAND_COLUMNS} FROM command_history WHERE command_uuid = "
            ))
            .bind(uuid.as_str())
            .in_scope("tenant_id", scope);
        sql.query()
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(command_from_row)
            .transpose()
    }

    /// How many commands are in each status (statuses with none are left out), ordered by status name.
    pub async fn count_commands_by_status(
        &self,
        scope: Scope,
    ) -> Result<Vec<(CommandStatus, i64)>, StoreError> {
        let mut sql = Sql::new(
            "SELECT status, COUNT(*) AS n FROM (SELECT status, tenant_id FROM commands \
             UNION ALL SELECT status, tenant_id FROM command_history) AS c WHERE 1 = 1",
        );
        sql.in_scope("tenant_id", scope)
            .push(" GROUP BY status ORDER BY status");
        sql.query()
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|row| Ok((rows::command_status(row, "status")?, rows::int(row, "n")?)))
            .collect()
    }

    /// Moves up to `limit` finished commands (oldest first) from the hot queue to `command_history`, in one unit
    /// of work: each command is in exactly one of the two tables at any time. Rows still waiting to be resealed
    /// (`legacy_plaintext_commands`) stay until they are. Returns how many moved.
    pub async fn archive_finished_commands(&self, limit: i64) -> Result<u64, StoreError> {
        let mut unit = self.begin_unit().await?;
        let seqs: Vec<i64> = sqlx::query(&format!(
            "SELECT seq FROM commands WHERE status IN {FINISHED_STATUSES} \
             AND NOT EXISTS (SELECT 1 FROM legacy_plaintext_commands l \
                             WHERE l.command_uuid = commands.command_uuid) \
             ORDER BY seq LIMIT $1"
        ))
        .bind(limit.max(0))
        .fetch_all(unit.conn()?)
        .await?
        .iter()
        .map(|r| rows::int(r, "seq"))
        .collect::<Result<_, _>>()?;
        if seqs.is_empty() {
            return Ok(0);
        }
        let mut moved = 0;
        for chunk in seqs.chunks(ARCHIVE_CHUNK) {
            let placeholders = (1..=chunk.len())
                .map(|i| format!("${i}"))
                .collect::<Vec<_>>()
                .join(", ");
            let insert = format!(
                "INSERT INTO command_history ({COMMAND_COLUMNS}, seq) \
                 SELECT {COMMAND_COLUMNS}, seq FROM commands WHERE seq IN ({placeholders}) \
                 ON CONFLICT (seq) DO NOTHING"
            );
            let mut q = sqlx::query(&insert);
            for seq in chunk {
                q = q.bind(*seq);
            }
            q.execute(unit.conn()?).await?;
            let delete = format!("DELETE FROM commands WHERE seq IN ({placeholders})");
            let mut q = sqlx::query(&delete);
            for seq in chunk {
                q = q.bind(*seq);
            }
            moved += q.execute(unit.conn()?).await?.rows_affected();
        }
        unit.commit().await?;
        Ok(moved)
    }

    /// Deletes history of commands finished before `finished_before`. Returns how many went.
    pub async fn prune_command_history(
        &self,
        finished_before: orchard_types::UnixTime,
    ) -> Result<u64, StoreError> {
        Ok(
            sqlx::query("DELETE FROM command_history WHERE completed_at < $1")
                .bind(finished_before.0)
                .execute(&self.pool)
                .await?
                .rows_affected(),
        )
    }

    /// Channels with a command sent but unanswered since before `sent_before` owe a push, once per hand-out
    /// (only if the channel was not pushed since the command was last sent, and owes none already): the device
    /// may never come back by itself (Apple resends nothing), and the session the push starts hands the command
    /// out again. A device that never answers gets no more than one push per attempt. Returns how many channels
    /// were marked.
    pub async fn request_push_for_unanswered(
        &self,
        sent_before: orchard_types::UnixTime,
        now: orchard_types::UnixTime,
        limit: i64,
    ) -> Result<u64, StoreError> {
        Ok(sqlx::query(
            "UPDATE channels SET push_wanted = push_wanted + 1, push_requested_at = $1 \
             WHERE id IN (SELECT c.channel_id FROM commands c JOIN channels ch ON ch.id = c.channel_id \
                          WHERE c.status = 'sent' AND c.sent_at <= $2 AND c.deliver_once = 0 \
                            AND COALESCE(ch.pushed_at, 0) <= c.sent_at LIMIT $3) \
               AND push_wanted <= push_done AND push_token_dead_at IS NULL",
        )
        .bind(now.0)
        .bind(sent_before.0)
        .bind(limit.max(0))
        .execute(&self.pool)
        .await?
        .rows_affected())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Store;
    use sqlx::Row;

    /// SQLite's query plan of `sql` (its `$n` parameters bound to NULL), one line per step.
    async fn sqlite_plan(store: &Store, sql: &str) -> Vec<String> {
        let params = (1..=9).filter(|n| sql.contains(&format!("${n}"))).count();
        let explain = format!("EXPLAIN QUERY PLAN {sql}");
        let mut query = sqlx::query(&explain);
        for _ in 0..params {
            query = query.bind(None::<String>);
        }
        query
            .fetch_all(&store.pool)
            .await
            .unwrap()
            .iter()
            .map(|row| row.try_get::<String, _>("detail").unwrap())
            .collect()
    }

    /// A claim runs on every command a device is handed: on SQLite it must find its rows through indexes,
    /// never read a whole table (its cost would grow with the queue or the shared bodies), and sort nothing.
    #[tokio::test]
    async fn the_sqlite_claim_searches_and_never_scans() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("orchard.db").display());
        let (store, _) = Store::connect(&url).await.unwrap();
        for sql in [SQLITE_NEXT_COMMAND, SQLITE_NEXT_COMMAND_SKIP_NOT_NOW] {
            let plan = sqlite_plan(&store, sql).await;
            assert!(
                plan.iter()
                    .all(|step| !step.starts_with("SCAN") && !step.contains("TEMP B-TREE")),
                "{plan:#?}"
            );
        }
    }
}
