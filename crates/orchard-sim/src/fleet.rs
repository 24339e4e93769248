//! Many simulated iPads, persisted in one JSON state file so a fleet can be enrolled once and reused.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

use futures::stream::{self, StreamExt};
use serde::{Deserialize, Serialize};

use crate::ade::{Activation, DepActivation};
use crate::apple_ca::AppleDeviceCa;
use crate::device::{trust_of, SessionSummary, SimDevice};
use crate::key_pool::KeyPool;
use crate::net::{build_client, ClientOptions};
use crate::state::DeviceState;
use crate::{SimConfig, SimError};

/// Version of the state file layout; bumped when a change is not backwards compatible.
const STATE_FILE_FORMAT: u32 = 1;

/// One HTTP client per distinct trust.
struct ClientCache {
    keep_alive: bool,
    clients: HashMap<Option<String>, reqwest::Client>,
}

impl ClientCache {
    fn new(keep_alive: bool) -> Self {
        ClientCache {
            keep_alive,
            clients: HashMap::new(),
        }
    }

    fn client_for(&mut self, trust: &Option<String>) -> Result<reqwest::Client, SimError> {
        if let Some(client) = self.clients.get(trust) {
            return Ok(client.clone());
        }
        let client = build_client(&ClientOptions {
            ca_pem: trust.as_ref().map(|t| t.as_bytes().to_vec()),
            keep_alive: self.keep_alive,
            ..ClientOptions::default()
        })?;
        self.clients.insert(trust.clone(), client.clone());
        Ok(client)
    }
}

/// What [`Fleet::activate_all`] did for one device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActivationSummary {
    pub udid: String,
    pub serial_number: String,
    /// The activation, or why it failed.
    pub outcome: Result<Activation, String>,
}

#[derive(Serialize, Deserialize)]
struct StateFile {
    format: u32,
    devices: Vec<DeviceState>,
}

/// A set of simulated iPads.
#[derive(Debug, Default)]
pub struct Fleet {
    pub devices: Vec<SimDevice>,
}

impl Fleet {
    pub fn new() -> Self {
        Fleet::default()
    }

    /// Adds `count` factory-fresh iPads (sharing HTTP clients with the devices that trust the same roots).
    pub fn add_random(&mut self, config: &SimConfig, count: usize) -> Result<(), SimError> {
        let mut clients = ClientCache::new(true);
        for _ in 0..count {
            let state = DeviceState::new_random(config);
            let trust = trust_of(&state);
            let client = clients.client_for(&trust)?;
            self.devices
                .push(SimDevice::from_state_with_client(state, client, trust));
        }
        Ok(())
    }

    /// Adds factory-fresh iPads with these serial numbers (the ones registered in Apple School Manager, or
    /// the local DEP server).
    pub fn add_with_serials(
        &mut self,
        config: &SimConfig,
        serials: &[String],
    ) -> Result<(), SimError> {
        let mut clients = ClientCache::new(true);
        for serial in serials {
            let serial = orchard_types::SerialNumber::parse(serial.trim())
                .map_err(|e| SimError::InvalidArgument(format!("serial {serial:?}: {e}")))?;
            let mut state = DeviceState::new_random(config);
            state.serial_number = serial.as_str().to_owned();
            let trust = trust_of(&state);
            let client = clients.client_for(&trust)?;
            self.devices
                .push(SimDevice::from_state_with_client(state, client, trust));
        }
        Ok(())
    }

    /// Gives every device without one an Apple device identity from `ca`; returns how many got one.
    pub fn provision_apple_identities(&mut self, ca: &AppleDeviceCa) -> Result<usize, SimError> {
        let mut issued = 0;
        for device in self
            .devices
            .iter_mut()
            .filter(|d| d.state.apple_identity.is_none())
        {
            let identity = ca.issue(&device.state.serial_number, &device.state.udid)?;
            device.set_apple_identity(&identity)?;
            issued += 1;
        }
        Ok(issued)
    }

    /// Activates every device that is not enrolled (Automated Device Enrollment), `concurrency` at a time,
    /// installing up to `max_os_updates` required OS updates per device. One summary per device, in fleet
    /// order.
    pub async fn activate_all(
        &mut self,
        dep: &DepActivation,
        concurrency: usize,
        max_os_updates: u32,
    ) -> Vec<ActivationSummary> {
        let summaries = stream::iter(self.devices.iter_mut().filter(|d| !d.state.enrolled).map(
            |d| async move {
                let outcome = d
                    .activate_updating(dep, max_os_updates)
                    .await
                    .map_err(|e| e.to_string());
                ActivationSummary {
                    udid: d.state.udid.clone(),
                    serial_number: d.state.serial_number.clone(),
                    outcome,
                }
            },
        ))
        .buffered(concurrency.max(1))
        .collect()
        .await;
        // Enrolled devices trust new roots now: pool their clients again. A device whose trust cannot be
        // built keeps the client it enrolled with.
        let _ = self.share_clients(true);
        summaries
    }

    pub fn len(&self) -> usize {
        self.devices.len()
    }

    pub fn is_empty(&self) -> bool {
        self.devices.is_empty()
    }

    /// Reads a fleet from its JSON state file.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, SimError> {
        let path = path.as_ref();
        let state_error = |reason: String| SimError::StateFile {
            path: path.display().to_string(),
            reason,
        };
        let text = std::fs::read(path).map_err(|e| state_error(e.to_string()))?;
        let file: StateFile =
            serde_json::from_slice(&text).map_err(|e| state_error(e.to_string()))?;
        if file.format != STATE_FILE_FORMAT {
            return Err(state_error(format!(
                "format {} is not {STATE_FILE_FORMAT}",
                file.format
            )));
        }
        let mut fleet = Fleet {
            devices: file
                .devices
                .into_iter()
                .map(SimDevice::from_state)
                .collect(),
        };
        fleet.share_clients(true)?;
        Ok(fleet)
    }

    /// [`Fleet::load`], or an empty fleet if the file does not exist yet.
    pub fn load_or_new(path: impl AsRef<Path>) -> Result<Self, SimError> {
        if path.as_ref().exists() {
            Self::load(path)
        } else {
            Ok(Fleet::new())
        }
    }

    /// Writes the state file atomically (temporary file, then rename), readable by the owner only: it
    /// holds the devices' private keys.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<(), SimError> {
        let states: Vec<DeviceState> = self.devices.iter().map(|d| d.state.clone()).collect();
        save_states(states, path)
    }

    /// Gives devices that trust the same roots one shared client (one connection pool). `keep_alive` false
    /// makes every request open a new connection (benchmarks of connection set-up).
    pub fn share_clients(&mut self, keep_alive: bool) -> Result<(), SimError> {
        let mut clients = ClientCache::new(keep_alive);
        for device in &mut self.devices {
            let trust = device.trust_pem();
            let client = clients.client_for(&trust)?;
            device.set_client(client, trust);
        }
        Ok(())
    }

    /// How many devices are not enrolled yet (how many keys [`Fleet::enroll_all`] needs).
    pub fn unenrolled(&self) -> usize {
        self.devices.iter().filter(|d| !d.state.enrolled).count()
    }

    /// Enrolls every device that is not enrolled yet, `concurrency` at a time, each with its own key from
    /// `keys` (a device the pool has no key left for makes its own). Devices that fail stay unenrolled; the
    /// error counts them and names the first failure.
    pub async fn enroll_all(
        &mut self,
        enrollment_url: &str,
        concurrency: usize,
        keys: &KeyPool,
    ) -> Result<(), SimError> {
        let results: Vec<Result<(), SimError>> = stream::iter(
            self.devices
                .iter_mut()
                .filter(|d| !d.state.enrolled)
                .map(|d| {
                    if let Some(key) = keys.take() {
                        d.set_scep_key(key);
                    }
                    d.enroll(enrollment_url)
                }),
        )
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
        // Trust-on-first-use devices built their own clients while enrolling: pool them again.
        self.share_clients(true)?;
        let total = results.len();
        let mut failures = results.into_iter().filter_map(Result::err);
        match failures.next() {
            None => Ok(()),
            Some(first) => Err(SimError::Fleet {
                failed: 1 + failures.count(),
                total,
                first: first.to_string(),
            }),
        }
    }

    /// One command session for every enrolled device, `concurrency` at a time, in fleet order. A failed
    /// session is reported in its summary's `error`.
    pub async fn poll_all(&mut self, concurrency: usize) -> Vec<SessionSummary> {
        stream::iter(
            self.devices
                .iter_mut()
                .filter(|d| d.state.enrolled)
                .map(|d| async move {
                    let udid = d.state.udid.clone();
                    d.poll().await.unwrap_or_else(|e| SessionSummary {
                        udid,
                        handled: Vec::new(),
                        error: Some(e.to_string()),
                    })
                }),
        )
        .buffered(concurrency.max(1))
        .collect()
        .await
    }

    /// CheckOut for every enrolled device; returns how many failed.
    pub async fn check_out_all(&mut self, concurrency: usize) -> usize {
        let results: Vec<Result<(), SimError>> = stream::iter(
            self.devices
                .iter_mut()
                .filter(|d| d.state.enrolled)
                .map(|d| d.check_out()),
        )
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
        results.iter().filter(|r| r.is_err()).count()
    }
}

/// Writes device states as a fleet state file, atomically (temporary file, then rename), readable by the
/// owner only: it holds the devices' private keys. For callers that keep devices outside a [`Fleet`].
pub fn save_states(devices: Vec<DeviceState>, path: impl AsRef<Path>) -> Result<(), SimError> {
    let path = path.as_ref();
    let state_error = |reason: String| SimError::StateFile {
        path: path.display().to_string(),
        reason,
    };
    let file = StateFile {
        format: STATE_FILE_FORMAT,
        devices,
    };
    let json = serde_json::to_vec_pretty(&file).map_err(|e| state_error(e.to_string()))?;
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".tmp");
    let temporary = std::path::PathBuf::from(temporary);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut out = options
        .open(&temporary)
        .map_err(|e| state_error(e.to_string()))?;
    out.write_all(&json)
        .and_then(|()| out.sync_all())
        .map_err(|e| state_error(e.to_string()))?;
    std::fs::rename(&temporary, path).map_err(|e| state_error(e.to_string()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_file_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fleet.json");
        let mut fleet = Fleet::new();
        fleet.add_random(&SimConfig::default(), 3).unwrap();
        fleet.devices[0].state.enrolled = true;
        fleet.devices[0].state.push_token = vec![7; 32];
        fleet.devices[0].answer_not_now(2);
        fleet.save(&path).unwrap();

        let loaded = Fleet::load(&path).unwrap();
        assert_eq!(loaded.len(), 3);
        for (a, b) in fleet.devices.iter().zip(&loaded.devices) {
            assert_eq!(a.state, b.state);
        }
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.contains("\"push_token\": \"BwcH"),
            "binary fields are base64"
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn missing_or_broken_state_files_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fleet.json");
        assert!(matches!(
            Fleet::load(&path),
            Err(SimError::StateFile { .. })
        ));
        assert!(Fleet::load_or_new(&path).unwrap().is_empty());
        std::fs::write(&path, b"{\"format\": 99, \"devices\": []}").unwrap();
        assert!(matches!(
            Fleet::load(&path),
            Err(SimError::StateFile { .. })
        ));
        std::fs::write(&path, b"not json").unwrap();
        assert!(Fleet::load(&path).is_err());
    }
}
