//! The fetch-then-sync loop. A first run (no cursor) fetches every device; later runs continue from the saved
//! cursor: an unfinished fetch resumes, a finished one is answered EXHAUSTED_CURSOR and the loop switches to
//! sync; an expired cursor (older than 7 days) restarts a full fetch. Each page goes to the caller's
//! [`DeviceSink`] after duplicate records are resolved per serial by the latest `op_date`, so the caller
//! stores the records and then the page's cursor, and a crash resumes from the last stored page.

use std::collections::HashMap;
use std::future::Future;

use orchard_types::{SerialNumber, UnixTime};

use crate::client::DepClient;
use crate::types::{DepCursor, DeviceRecord};
use crate::{DepError, SinkError};

/// Which endpoint a page came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SyncPhase {
    /// `POST /server/devices`: the current state of every device assigned to this MDM server.
    Fetch,
    /// `POST /devices/sync`: changes (`op_type` added / modified / deleted) since the cursor.
    Sync,
}

/// One page of devices and the cursor to store once the page is applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DevicePage {
    pub phase: SyncPhase,
    pub devices: Vec<DeviceRecord>,
    pub cursor: DepCursor,
    pub more_to_follow: bool,
    pub fetched_until: Option<UnixTime>,
    /// Records that did not parse (logged and left out).
    pub skipped_invalid: usize,
}

/// Receives pages as the loop goes. Implemented by the caller (the store lives there).
pub trait DeviceSink: Send {
    /// A full fetch starts from the beginning (first run, or the saved cursor expired). The fetch pages that
    /// follow list every device currently assigned: a device the caller knows that none of them lists is no
    /// longer assigned to this MDM server.
    fn on_full_fetch_start(&mut self) -> impl Future<Output = Result<(), SinkError>> + Send {
        std::future::ready(Ok(()))
    }

    /// Apply `page.devices`, then store `page.cursor`.
    fn on_page(&mut self, page: &DevicePage) -> impl Future<Output = Result<(), SinkError>> + Send;
}

/// A sink from a synchronous closure (benchmarks, simple callers).
pub struct FnSink<F>(pub F);

impl<F> DeviceSink for FnSink<F>
where
    F: FnMut(&DevicePage) -> Result<(), SinkError> + Send,
{
    fn on_page(&mut self, page: &DevicePage) -> impl Future<Output = Result<(), SinkError>> + Send {
        std::future::ready((self.0)(page))
    }
}

/// What one [`DepClient::sync`] run did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SyncOutcome {
    pub pages: u32,
    /// Records handed to the sink.
    pub records: u64,
    /// Older records of a serial dropped in favour of a newer one.
    pub duplicates_dropped: u64,
    pub skipped_invalid: u64,
    /// A full fetch started in this run.
    pub full_fetch: bool,
    /// The saved cursor had expired and a full fetch was run instead.
    pub restarted_after_expired_cursor: bool,
    /// The cursor of the last page (the one the caller stored last).
    pub cursor: Option<DepCursor>,
}

/// Resolves duplicate serials within one page: the record with the latest `op_date` wins (a record without
/// one counts as oldest; on equal dates the later record wins). Order of the winners is kept. Returns the
/// winners and how many records were dropped.
pub fn latest_per_serial(records: Vec<DeviceRecord>) -> (Vec<DeviceRecord>, usize) {
    let mut best: HashMap<&SerialNumber, (usize, Option<UnixTime>)> =
        HashMap::with_capacity(records.len());
    for (index, record) in records.iter().enumerate() {
        let entry = best
            .entry(&record.serial_number)
            .or_insert((index, record.op_date));
        if record.op_date >= entry.1 {
            *entry = (index, record.op_date);
        }
    }
    if best.len() == records.len() {
        return (records, 0);
    }
    let winners: std::collections::HashSet<usize> = best.values().map(|(i, _)| *i).collect();
    let total = records.len();
    let kept: Vec<DeviceRecord> = records
        .into_iter()
        .enumerate()
        .filter(|(i, _)| winners.contains(i))
        .map(|(_, r)| r)
        .collect();
    let dropped = total - kept.len();
    (kept, dropped)
}

/// Remembers, across the pages of one run, the newest `op_date` delivered per serial, so an older record
/// arriving on a later page does not overwrite a newer one.
#[derive(Default)]
struct Delivered(HashMap<SerialNumber, Option<UnixTime>>);

impl Delivered {
    fn filter(&mut self, records: Vec<DeviceRecord>) -> (Vec<DeviceRecord>, usize) {
        let (records, mut dropped) = latest_per_serial(records);
        let mut kept = Vec::with_capacity(records.len());
        for record in records {
            match self.0.get_mut(&record.serial_number) {
                Some(newest) if *newest > record.op_date => dropped += 1,
                Some(newest) => {
                    *newest = record.op_date;
                    kept.push(record);
                }
                None => {
                    self.0.insert(record.serial_number.clone(), record.op_date);
                    kept.push(record);
                }
            }
        }
        (kept, dropped)
    }
}

impl DepClient {
    /// Runs fetch and/or sync until Apple has nothing more to follow, handing every page to `sink`.
    ///
    /// `saved`: the cursor the sink stored last (`None` on the very first run). The run ends after the fetch
    /// completes or after the last sync page; the next run continues from the stored cursor.
    /// INVALID_CURSOR and CURSOR_REQUIRED are returned as errors (the caller clears its cursor to refetch).
    pub async fn sync<S: DeviceSink>(
        &self,
        saved: Option<DepCursor>,
        sink: &mut S,
    ) -> Result<SyncOutcome, DepError> {
        let mut outcome = SyncOutcome::default();
        let mut delivered = Delivered::default();
        let mut phase = SyncPhase::Fetch;
        let mut cursor = saved;
        if cursor.is_none() {
            outcome.full_fetch = true;
            sink.on_full_fetch_start().await.map_err(DepError::Sink)?;
        }
        loop {
            let result = match (phase, &cursor) {
                (SyncPhase::Fetch, cursor) => self.fetch_devices(cursor.as_ref(), None).await,
                (SyncPhase::Sync, Some(cursor)) => self.sync_devices(cursor, None).await,
                (SyncPhase::Sync, None) => Err(DepError::CursorRequired),
            };
            let page = match result {
                Ok(page) => page,
                Err(DepError::ExhaustedCursor) if phase == SyncPhase::Fetch => {
                    tracing::debug!("fetch cursor exhausted; switching to sync");
                    phase = SyncPhase::Sync;
                    continue;
                }
                Err(DepError::ExpiredCursor) if !outcome.restarted_after_expired_cursor => {
                    tracing::warn!("dep cursor expired; restarting with a full fetch");
                    outcome.restarted_after_expired_cursor = true;
                    outcome.full_fetch = true;
                    phase = SyncPhase::Fetch;
                    cursor = None;
                    delivered = Delivered::default();
                    sink.on_full_fetch_start().await.map_err(DepError::Sink)?;
                    continue;
                }
                Err(e) => return Err(e),
            };
            let stalled = page.more_to_follow
                && page.devices.is_empty()
                && cursor.as_ref() == Some(&page.cursor);
            if stalled {
                return Err(DepError::Malformed(
                    "more_to_follow without devices or a new cursor".into(),
                ));
            }
            let mut page = page;
            let (devices, dropped) = delivered.filter(std::mem::take(&mut page.devices));
            page.devices = devices;
            outcome.pages += 1;
            outcome.records += page.devices.len() as u64;
            outcome.duplicates_dropped += dropped as u64;
            outcome.skipped_invalid += page.skipped_invalid as u64;
            sink.on_page(&page).await.map_err(DepError::Sink)?;
            cursor = Some(page.cursor.clone());
            outcome.cursor = Some(page.cursor);
            if !page.more_to_follow {
                return Ok(outcome);
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::types::OpType;

    fn rec(serial: &str, op: OpType, date: i64) -> DeviceRecord {
        let mut r = DeviceRecord::new(SerialNumber::parse(serial).unwrap());
        r.op_type = Some(op);
        r.op_date = Some(UnixTime(date));
        r
    }

    #[test]
    fn latest_op_date_wins_within_a_page() {
        let page = vec![
            rec("A", OpType::Added, 10),
            rec("B", OpType::Added, 10),
            rec("A", OpType::Deleted, 30),
            rec("A", OpType::Modified, 20),
            rec("B", OpType::Modified, 10),
        ];
        let (kept, dropped) = latest_per_serial(page);
        assert_eq!(dropped, 3);
        assert_eq!(
            kept,
            vec![
                rec("A", OpType::Deleted, 30),
                rec("B", OpType::Modified, 10)
            ]
        );
    }

    #[test]
    fn older_records_on_later_pages_are_dropped() {
        let mut delivered = Delivered::default();
        let (first, _) = delivered.filter(vec![rec("A", OpType::Modified, 20)]);
        assert_eq!(first.len(), 1);
        let (second, dropped) = delivered.filter(vec![
            rec("A", OpType::Added, 10),
            rec("C", OpType::Added, 5),
        ]);
        assert_eq!(dropped, 1);
        assert_eq!(second, vec![rec("C", OpType::Added, 5)]);
        let (third, _) = delivered.filter(vec![rec("A", OpType::Deleted, 20)]);
        assert_eq!(third.len(), 1, "equal dates: the later record wins");
    }
}
