//! The local DEP server's memory: devices and their change log, cursors, sessions, profiles and assignments,
//! and the failures tests inject. Pure data and rules; the HTTP side lives in `fake/mod.rs`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::Bound;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use orchard_types::{SerialNumber, UnixTime};

use crate::profile::AdeProfile;
use crate::types::{AssignStatus, DeviceRecord, OpType, ProfileStatus, ProfileUuid};

/// Counters tests read to see what the server went through.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FakeStats {
    pub sessions_issued: u64,
    pub oauth_rejected: u64,
    pub session_rejections: u64,
    pub fetch_requests: u64,
    pub sync_requests: u64,
    pub rate_limited: u64,
    pub server_errors: u64,
    pub throttled_answers: u64,
    pub profile_requests: u64,
    /// The `X-Server-Protocol-Version` of the last API request.
    pub last_protocol_version: Option<u32>,
}

/// How an expired session is answered (Apple: 401; some answers seen in the field: 403 FORBIDDEN).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SessionExpiryAnswer {
    #[default]
    Unauthorized,
    Forbidden,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CursorKind {
    /// A fetch with more pages to come (`after` = last serial sent).
    Fetching,
    /// A fetch that returned everything: fetch answers EXHAUSTED_CURSOR, sync continues from `seq`.
    FetchDone,
    Sync,
}

/// What a cursor encodes: the server instance that issued it, the change-log position it covers, where a fetch
/// stands, and when it was issued. Apple's cursors belong to one MDM server: one shown to another is
/// INVALID_CURSOR (a token re-pointed to another ASM "MDM server" must fetch everything again).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Cursor {
    pub instance: String,
    pub epoch: u64,
    pub kind: CursorKind,
    /// Change-log entries before this index are covered.
    pub seq: usize,
    pub issued: i64,
    pub after: Option<String>,
}

pub(crate) enum CursorError {
    Invalid,
    Expired,
}

impl Cursor {
    pub fn encode(&self) -> String {
        let kind = match self.kind {
            CursorKind::Fetching => "f",
            CursorKind::FetchDone => "x",
            CursorKind::Sync => "s",
        };
        let after = self.after.as_deref().map(hex::encode).unwrap_or_default();
        URL_SAFE_NO_PAD.encode(format!(
            "v2:{}:{}:{kind}:{}:{}:{after}",
            self.instance, self.epoch, self.seq, self.issued
        ))
    }

    pub fn decode(
        s: &str,
        instance: &str,
        epoch: u64,
        now: UnixTime,
        lifetime: i64,
    ) -> Result<Self, CursorError> {
        let raw = URL_SAFE_NO_PAD
            .decode(s.trim())
            .map_err(|_| CursorError::Invalid)?;
        let text = String::from_utf8(raw).map_err(|_| CursorError::Invalid)?;
        let parts: Vec<&str> = text.split(':').collect();
        let [version, cursor_instance, cursor_epoch, kind, seq, issued, after] = parts.as_slice()
        else {
            return Err(CursorError::Invalid);
        };
        if *version != "v2" || *cursor_instance != instance {
            return Err(CursorError::Invalid);
        }
        let kind = match *kind {
            "f" => CursorKind::Fetching,
            "x" => CursorKind::FetchDone,
            "s" => CursorKind::Sync,
            _ => return Err(CursorError::Invalid),
        };
        let cursor = Cursor {
            instance: instance.to_owned(),
            epoch: cursor_epoch.parse().map_err(|_| CursorError::Invalid)?,
            kind,
            seq: seq.parse().map_err(|_| CursorError::Invalid)?,
            issued: issued.parse().map_err(|_| CursorError::Invalid)?,
            after: if after.is_empty() {
                None
            } else {
                let bytes = hex::decode(after).map_err(|_| CursorError::Invalid)?;
                Some(String::from_utf8(bytes).map_err(|_| CursorError::Invalid)?)
            },
        };
        if cursor.epoch > epoch {
            return Err(CursorError::Invalid);
        }
        if cursor.epoch < epoch || now.0.saturating_sub(cursor.issued) > lifetime {
            return Err(CursorError::Expired);
        }
        Ok(cursor)
    }
}

/// One fetch or sync page the server answers.
pub(crate) struct Page {
    pub devices: Vec<DeviceRecord>,
    pub cursor: String,
    pub more_to_follow: bool,
}

#[derive(Default)]
pub(crate) struct FakeState {
    /// This server's identity in its cursors.
    pub instance: String,
    /// Current device set, ordered by serial (fetch pages walk it).
    pub devices: BTreeMap<String, DeviceRecord>,
    /// Change log (sync pages walk it).
    pub events: Vec<DeviceRecord>,
    pub cursor_epoch: u64,
    pub profiles: HashMap<String, AdeProfile>,
    pub assignments: HashMap<String, ProfileUuid>,
    pub activation_locks: HashMap<String, Option<String>>,
    pub sessions: HashMap<String, i64>,
    pub seen_nonces: HashSet<String>,
    pub terms_not_signed: bool,
    pub rate_limit_remaining: u32,
    pub rate_limit_retry_after: u64,
    pub server_errors_remaining: u32,
    pub throttled: HashMap<String, u32>,
    pub throttle_retry_after: u64,
    pub stats: FakeStats,
}

impl FakeState {
    fn log(&mut self, record: &DeviceRecord, op: OpType, now: UnixTime) {
        let mut event = record.clone();
        event.op_type = Some(op);
        event.op_date = Some(now);
        self.events.push(event);
    }

    pub fn add(&mut self, mut record: DeviceRecord, now: UnixTime) {
        record.op_type = None;
        record.op_date = None;
        if record.device_assigned_date.is_none() {
            record.device_assigned_date = Some(now);
        }
        let op = if self.devices.contains_key(record.serial_number.as_str()) {
            OpType::Modified
        } else {
            OpType::Added
        };
        self.log(&record, op, now);
        self.devices
            .insert(record.serial_number.to_string(), record);
    }

    pub fn modify(
        &mut self,
        serial: &SerialNumber,
        change: impl FnOnce(&mut DeviceRecord),
        now: UnixTime,
    ) -> bool {
        let Some(record) = self.devices.get_mut(serial.as_str()) else {
            return false;
        };
        change(record);
        // The serial is the key: a change may not move the record.
        record.serial_number = serial.clone();
        let snapshot = record.clone();
        self.log(&snapshot, OpType::Modified, now);
        true
    }

    pub fn delete(&mut self, serial: &SerialNumber, now: UnixTime) -> bool {
        let Some(record) = self.devices.remove(serial.as_str()) else {
            return false;
        };
        self.assignments.remove(serial.as_str());
        self.log(&record, OpType::Deleted, now);
        true
    }

    pub fn fetch(
        &mut self,
        cursor: Option<&Cursor>,
        limit: usize,
        now: UnixTime,
    ) -> Result<Page, &'static str> {
        let (snapshot_seq, after) = match cursor {
            None => (self.events.len(), None),
            Some(c) if c.kind == CursorKind::Fetching => (c.seq, c.after.clone()),
            Some(_) => return Err("EXHAUSTED_CURSOR"),
        };
        let lower = match &after {
            Some(serial) => Bound::Excluded(serial.clone()),
            None => Bound::Unbounded,
        };
        let mut range = self.devices.range((lower, Bound::Unbounded));
        let devices: Vec<DeviceRecord> =
            range.by_ref().take(limit).map(|(_, r)| r.clone()).collect();
        let more_to_follow = range.next().is_some();
        let last = devices.last().map(|r| r.serial_number.to_string());
        let cursor = Cursor {
            instance: self.instance.clone(),
            epoch: self.cursor_epoch,
            kind: if more_to_follow {
                CursorKind::Fetching
            } else {
                CursorKind::FetchDone
            },
            seq: snapshot_seq,
            issued: now.0,
            after: if more_to_follow { last } else { None },
        };
        Ok(Page {
            devices,
            cursor: cursor.encode(),
            more_to_follow,
        })
    }

    pub fn sync(&mut self, cursor: &Cursor, limit: usize, now: UnixTime) -> Page {
        let start = cursor.seq.min(self.events.len());
        let end = start.saturating_add(limit).min(self.events.len());
        let devices = self.events.get(start..end).unwrap_or_default().to_vec();
        let next = Cursor {
            instance: self.instance.clone(),
            epoch: self.cursor_epoch,
            kind: CursorKind::Sync,
            seq: end,
            issued: now.0,
            after: None,
        };
        Page {
            devices,
            cursor: next.encode(),
            more_to_follow: end < self.events.len(),
        }
    }

    /// Per-serial assignment; THROTTLED injections are consumed here. Like Apple, a change of assignment is a
    /// `modified` record in the sync feed (the MDM server learns of assignments made elsewhere, e.g. in ASM).
    pub fn assign(
        &mut self,
        profile_uuid: &ProfileUuid,
        serial: &str,
        now: UnixTime,
    ) -> AssignStatus {
        if let Some(status) = self.take_throttle(serial) {
            return status;
        }
        let Some(record) = self.devices.get_mut(serial) else {
            return AssignStatus::NotAccessible;
        };
        record.profile_uuid = Some(profile_uuid.clone());
        record.profile_status = Some(ProfileStatus::Assigned);
        record.profile_assign_time = Some(now);
        let snapshot = record.clone();
        self.log(&snapshot, OpType::Modified, now);
        self.assignments
            .insert(serial.to_owned(), profile_uuid.clone());
        AssignStatus::Success
    }

    /// Removes a serial's assignment (a `modified` record with status `removed` in the sync feed).
    pub fn unassign(&mut self, serial: &str, now: UnixTime) -> AssignStatus {
        if let Some(status) = self.take_throttle(serial) {
            return status;
        }
        let Some(record) = self.devices.get_mut(serial) else {
            return AssignStatus::NotAccessible;
        };
        record.profile_uuid = None;
        record.profile_status = Some(ProfileStatus::Removed);
        let snapshot = record.clone();
        self.log(&snapshot, OpType::Modified, now);
        self.assignments.remove(serial);
        AssignStatus::Success
    }

    /// `POST /devices/disown`: the device leaves this MDM server for good (a `deleted` record).
    pub fn disown(&mut self, serial: &str, now: UnixTime) -> AssignStatus {
        match SerialNumber::parse(serial) {
            Ok(serial) if self.delete(&serial, now) => AssignStatus::Success,
            _ => AssignStatus::NotAccessible,
        }
    }

    fn take_throttle(&mut self, serial: &str) -> Option<AssignStatus> {
        let remaining = self.throttled.get_mut(serial)?;
        if *remaining == 0 {
            return None;
        }
        *remaining -= 1;
        self.stats.throttled_answers += 1;
        Some(AssignStatus::Throttled)
    }
}
