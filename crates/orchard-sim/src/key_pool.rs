//! A pool of pre-generated device keys: RSA key generation is most of a simulated iPad's enrollment (an iPad
//! makes a fresh RSA-2048 key for SCEP), so a fleet of thousands takes its keys from a file made once.
//!
//! The file is made in parallel on every core and cached (path chosen by the caller, usually under `target/`);
//! a file of another format version or key size, or one holding too few keys, is made again (extended, keeping
//! the keys it has). It is written to a temporary file and renamed, so two processes that make it at once
//! both end with a whole file. Each key is handed out once per pool: two devices of one fleet never share a
//! key. The same file serves many runs, each against its own server, which is harmless: a key is only a key,
//! the identity is the certificate the server issues for it.
//!
//! Format: the header line `orchard-sim key pool v1 rsa-<bits> <count>\n`, then `count` keys, each a 4-byte
//! big-endian length and the key's PKCS#8 DER.

use std::collections::VecDeque;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;

use crate::SimError;

const FORMAT: &str = "orchard-sim key pool v1";

/// The pool file `ORCHARD_SIM_KEY_POOL` names, if it is set.
pub fn pool_path_from_env() -> Option<PathBuf> {
    std::env::var_os("ORCHARD_SIM_KEY_POOL")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// Pre-generated RSA keys of one size, each handed out once.
pub struct KeyPool {
    bits: u32,
    keys: Mutex<VecDeque<PKey<Private>>>,
}

impl std::fmt::Debug for KeyPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyPool")
            .field("bits", &self.bits)
            .field("left", &self.left())
            .finish()
    }
}

impl KeyPool {
    /// `count` keys of `bits` from the file at `path`, which is made (or made again, or extended) first when it
    /// is missing, of another version or size, unreadable, or short.
    pub fn load_or_generate(path: &Path, bits: u32, count: usize) -> Result<KeyPool, SimError> {
        let mut keys = match std::fs::read(path) {
            Ok(bytes) => decode(&bytes, bits).unwrap_or_default(),
            Err(_) => Vec::new(),
        };
        if keys.len() < count {
            let started = Instant::now();
            let missing = count - keys.len();
            keys.extend(generate_parallel(bits, missing)?);
            write_atomically(path, &encode(&keys, bits)?)?;
            tracing::info!(
                path = %path.display(),
                generated = missing,
                seconds = started.elapsed().as_secs_f64(),
                "key pool made"
            );
        }
        keys.truncate(count);
        Ok(KeyPool {
            bits,
            keys: Mutex::new(keys.into()),
        })
    }

    /// `count` fresh keys of `bits`, made in parallel and kept in memory only.
    pub fn generate(bits: u32, count: usize) -> Result<KeyPool, SimError> {
        Ok(KeyPool {
            bits,
            keys: Mutex::new(generate_parallel(bits, count)?.into()),
        })
    }

    /// The next key, never handed out before by this pool; `None` when the pool is used up (the device then
    /// makes its own key, as an iPad does).
    pub fn take(&self) -> Option<PKey<Private>> {
        self.keys
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .pop_front()
    }

    /// Keys not handed out yet.
    pub fn left(&self) -> usize {
        self.keys
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len()
    }

    /// The size of the pool's keys.
    pub fn bits(&self) -> u32 {
        self.bits
    }
}

/// `count` keys made on every core.
fn generate_parallel(bits: u32, count: usize) -> Result<Vec<PKey<Private>>, SimError> {
    let threads = std::thread::available_parallelism()
        .map(usize::from)
        .unwrap_or(1)
        .min(count.max(1));
    let per_thread = count.div_ceil(threads);
    let parts: Vec<Result<Vec<PKey<Private>>, SimError>> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                let n = per_thread.min(count.saturating_sub(t * per_thread));
                scope.spawn(move || {
                    (0..n)
                        .map(|_| Ok(PKey::from_rsa(Rsa::generate(bits)?)?))
                        .collect::<Result<Vec<_>, SimError>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| {
                w.join().unwrap_or_else(|_| {
                    Err(SimError::Bench("key generation thread panicked".into()))
                })
            })
            .collect()
    });
    let mut keys = Vec::with_capacity(count);
    for part in parts {
        keys.extend(part?);
    }
    Ok(keys)
}

fn header(bits: u32, count: usize) -> String {
    format!("{FORMAT} rsa-{bits} {count}\n")
}

fn encode(keys: &[PKey<Private>], bits: u32) -> Result<Vec<u8>, SimError> {
    let mut out = header(bits, keys.len()).into_bytes();
    for key in keys {
        let der = key.private_key_to_pkcs8()?;
        let len = u32::try_from(der.len())
            .map_err(|_| SimError::Bench("key pool: key too large".into()))?;
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&der);
    }
    Ok(out)
}

/// The keys of a pool file of this format and key size; `None` for anything else (the file is made again).
fn decode(bytes: &[u8], bits: u32) -> Option<Vec<PKey<Private>>> {
    let newline = bytes.iter().position(|b| *b == b'\n')?;
    let line = std::str::from_utf8(bytes.get(..newline)?).ok()?;
    let count: usize = line
        .strip_prefix(&format!("{FORMAT} rsa-{bits} "))?
        .parse()
        .ok()?;
    let mut rest = bytes.get(newline + 1..)?;
    let mut keys = Vec::with_capacity(count);
    for _ in 0..count {
        let len = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?) as usize;
        let der = rest.get(4..4 + len)?;
        let key = PKey::private_key_from_pkcs8(der).ok()?;
        if key.bits() != bits {
            return None;
        }
        keys.push(key);
        rest = rest.get(4 + len..)?;
    }
    rest.is_empty().then_some(keys)
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), SimError> {
    let failed = |reason: String| SimError::StateFile {
        path: path.display().to_string(),
        reason,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| failed(e.to_string()))?;
    }
    // Unique per writer: two tests of one process may make the same pool at once.
    let temporary = path.with_extension(format!(
        "tmp-{}-{}",
        std::process::id(),
        uuid::Uuid::new_v4().simple()
    ));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&temporary)
        .map_err(|e| failed(e.to_string()))?;
    // Private keys (of test devices, but keys): owner only.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(|e| failed(e.to_string()))?;
    }
    file.write_all(bytes).map_err(|e| failed(e.to_string()))?;
    file.sync_all().map_err(|e| failed(e.to_string()))?;
    std::fs::rename(&temporary, path).map_err(|e| failed(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fingerprint(key: &PKey<Private>) -> Vec<u8> {
        key.public_key_to_der().unwrap()
    }

    #[test]
    fn a_pool_file_is_made_once_then_reused_and_each_key_is_handed_out_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.pool");
        // Small keys keep the test fast; the format is the same.
        let first = KeyPool::load_or_generate(&path, 1024, 4).unwrap();
        let written = std::fs::read(&path).unwrap();
        assert!(written.starts_with(b"orchard-sim key pool v1 rsa-1024 4\n"));
        let handed: Vec<_> = std::iter::from_fn(|| first.take()).collect();
        assert_eq!(handed.len(), 4);
        let mut distinct: Vec<_> = handed.iter().map(fingerprint).collect();
        distinct.sort();
        distinct.dedup();
        assert_eq!(distinct.len(), 4, "a key was handed out twice");
        assert!(first.take().is_none());

        // Read back, not made again: the same keys, the file unchanged.
        let again = KeyPool::load_or_generate(&path, 1024, 3).unwrap();
        assert_eq!(again.left(), 3);
        assert_eq!(std::fs::read(&path).unwrap(), written);
        assert_eq!(fingerprint(&again.take().unwrap()), fingerprint(&handed[0]));

        // More keys than the file has: extended, keeping the old ones.
        let more = KeyPool::load_or_generate(&path, 1024, 6).unwrap();
        assert_eq!(more.left(), 6);
        assert_eq!(fingerprint(&more.take().unwrap()), fingerprint(&handed[0]));
        assert!(std::fs::read(&path)
            .unwrap()
            .starts_with(b"orchard-sim key pool v1 rsa-1024 6\n"));
    }

    #[test]
    fn a_stale_or_damaged_pool_file_is_made_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.pool");
        KeyPool::load_or_generate(&path, 1024, 2).unwrap();
        // Another key size: made again with the size asked for.
        let other = KeyPool::load_or_generate(&path, 2048, 1).unwrap();
        assert_eq!(other.take().unwrap().bits(), 2048);
        assert!(std::fs::read(&path)
            .unwrap()
            .starts_with(b"orchard-sim key pool v1 rsa-2048 1\n"));
        // An older format, and a truncated file.
        std::fs::write(&path, b"orchard-sim key pool v0 rsa-2048 1\n\0\0\0\x01x").unwrap();
        assert_eq!(KeyPool::load_or_generate(&path, 2048, 1).unwrap().left(), 1);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.truncate(bytes.len() - 10);
        std::fs::write(&path, &bytes).unwrap();
        let remade = KeyPool::load_or_generate(&path, 2048, 1).unwrap();
        assert_eq!(remade.take().unwrap().bits(), 2048);
        assert_eq!(
            decode(&std::fs::read(&path).unwrap(), 2048).unwrap().len(),
            1
        );
    }
}
