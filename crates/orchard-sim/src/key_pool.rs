//! A pool of pre-generated device keys: RSA key generation is most of a simulated iPad's enrollment (an iPad
//! makes a fresh RSA-2048 key for SCEP), so a fleet of thousands takes its keys from a file made once.
//!
//! The keys are made cheaply from shared primes (see `generate_parallel`), in parallel on every core, and cached (path chosen by the caller, usually under `target/`);
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

use openssl::bn::{BigNum, BigNumContext};
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

/// `count` distinct RSA keys of `bits`, made on every core, cheaply.
///
/// An RSA key is the product of two primes, and finding the primes is all of key generation's cost (80–240 ms
/// a key here, so hours of CPU for a fleet of 50,000). So the primes are found once — the fewest `m` with
/// m·(m−1)/2 ≥ `count`, about 310 for 48,000 keys, in seconds — and each key is one pair of them. Every key is a
/// valid RSA key of exactly `bits` bits (OpenSSL's primes have their top two bits set) with a modulus of its
/// own, so every device still has a public key and a certificate of its own, and a server does the same work
/// with it as with any iPad's key. Only someone factoring the moduli against each other would find the shared
/// primes: fine for a simulator, never for real keys.
fn generate_parallel(bits: u32, count: usize) -> Result<Vec<PKey<Private>>, SimError> {
    if count == 0 {
        return Ok(Vec::new());
    }
    let mut m = 2;
    while m * (m - 1) / 2 < count {
        m += 1;
    }
    let primes = in_parallel(m, |n| {
        let mut primes = Vec::with_capacity(n);
        while primes.len() < n {
            let prime = usable_prime(bits / 2)?;
            primes.push(prime);
        }
        Ok(primes)
    })?;
    let mut primes: Vec<BigNum> = primes;
    primes.sort_by(|a, b| a.ucmp(b));
    primes.dedup_by(|a, b| a.ucmp(b) == std::cmp::Ordering::Equal);
    let pairs: Vec<(usize, usize)> = (0..primes.len())
        .flat_map(|i| (i + 1..primes.len()).map(move |j| (i, j)))
        .take(count)
        .collect();
    if pairs.len() < count {
        // Two equal primes out of OpenSSL's generator: never in practice; one more round fills the gap.
        let mut keys = key_pairs(&primes, &pairs)?;
        keys.extend(generate_parallel(bits, count - pairs.len())?);
        return Ok(keys);
    }
    key_pairs(&primes, &pairs)
}

/// A random prime of `bits` whose p−1 is prime to the public exponent 65537.
fn usable_prime(bits: u32) -> Result<BigNum, SimError> {
    let e = BigNum::from_u32(PUBLIC_EXPONENT)?;
    let mut ctx = BigNumContext::new()?;
    loop {
        let mut prime = BigNum::new()?;
        prime.generate_prime(i32::try_from(bits).unwrap_or(i32::MAX), false, None, None)?;
        let mut p1 = BigNum::new()?;
        p1.checked_sub(&prime, BigNum::from_u32(1)?.as_ref())?;
        let mut rem = BigNum::new()?;
        rem.nnmod(&p1, &e, &mut ctx)?;
        if rem.num_bits() > 0 {
            return Ok(prime);
        }
    }
}

const PUBLIC_EXPONENT: u32 = 65_537;

/// The keys of `pairs` (indexes into `primes`), built on every core.
fn key_pairs(primes: &[BigNum], pairs: &[(usize, usize)]) -> Result<Vec<PKey<Private>>, SimError> {
    let chunks: Vec<&[(usize, usize)]> = pairs
        .chunks(pairs.len().div_ceil(threads(pairs.len())).max(1))
        .collect();
    let parts: Vec<Result<Vec<PKey<Private>>, SimError>> = std::thread::scope(|scope| {
        let workers: Vec<_> = chunks
            .iter()
            .map(|chunk| {
                scope.spawn(move || {
                    chunk
                        .iter()
                        .map(|&(i, j)| key_of(&primes[i], &primes[j]))
                        .collect::<Result<Vec<_>, SimError>>()
                })
            })
            .collect();
        workers.into_iter().map(join_worker).collect()
    });
    let mut keys = Vec::with_capacity(pairs.len());
    for part in parts {
        keys.extend(part?);
    }
    Ok(keys)
}

/// The RSA key with primes `p` and `q` and public exponent 65537: d = e⁻¹ mod lcm(p−1, q−1), and the CRT values.
fn key_of(p: &BigNum, q: &BigNum) -> Result<PKey<Private>, SimError> {
    let mut ctx = BigNumContext::new()?;
    let one = BigNum::from_u32(1)?;
    let e = BigNum::from_u32(PUBLIC_EXPONENT)?;
    let mut n = BigNum::new()?;
    n.checked_mul(p, q, &mut ctx)?;
    let (mut p1, mut q1) = (BigNum::new()?, BigNum::new()?);
    p1.checked_sub(p, &one)?;
    q1.checked_sub(q, &one)?;
    let (mut phi, mut gcd, mut lambda) = (BigNum::new()?, BigNum::new()?, BigNum::new()?);
    phi.checked_mul(&p1, &q1, &mut ctx)?;
    gcd.gcd(&p1, &q1, &mut ctx)?;
    lambda.checked_div(&phi, &gcd, &mut ctx)?;
    let mut d = BigNum::new()?;
    d.mod_inverse(&e, &lambda, &mut ctx)?;
    let (mut dmp1, mut dmq1, mut iqmp) = (BigNum::new()?, BigNum::new()?, BigNum::new()?);
    dmp1.nnmod(&d, &p1, &mut ctx)?;
    dmq1.nnmod(&d, &q1, &mut ctx)?;
    iqmp.mod_inverse(q, p, &mut ctx)?;
    let rsa = Rsa::from_private_components(
        n,
        e,
        d,
        BigNum::from_slice(&p.to_vec())?,
        BigNum::from_slice(&q.to_vec())?,
        dmp1,
        dmq1,
        iqmp,
    )?;
    Ok(PKey::from_rsa(rsa)?)
}

fn threads(work: usize) -> usize {
    std::thread::available_parallelism()
        .map(usize::from)
        .unwrap_or(1)
        .min(work.max(1))
}

/// `count` items made by `make(n)` on every core, `n` per thread.
fn in_parallel<T: Send>(
    count: usize,
    make: impl Fn(usize) -> Result<Vec<T>, SimError> + Sync,
) -> Result<Vec<T>, SimError> {
    let threads = threads(count);
    let per_thread = count.div_ceil(threads);
    let make = &make;
    let parts: Vec<Result<Vec<T>, SimError>> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                let n = per_thread.min(count.saturating_sub(t * per_thread));
                scope.spawn(move || make(n))
            })
            .collect();
        workers.into_iter().map(join_worker).collect()
    });
    let mut out = Vec::with_capacity(count);
    for part in parts {
        out.extend(part?);
    }
    Ok(out)
}

fn join_worker<T>(
    worker: std::thread::ScopedJoinHandle<'_, Result<T, SimError>>,
) -> Result<T, SimError> {
    worker
        .join()
        .unwrap_or_else(|_| Err(SimError::Bench("key generation thread panicked".into())))
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
    fn keys_from_shared_primes_are_valid_distinct_and_full_size() {
        // 12 keys need 6 primes (6·5/2 = 15 pairs).
        let keys = generate_parallel(2048, 12).unwrap();
        assert_eq!(keys.len(), 12);
        let mut moduli: Vec<Vec<u8>> = keys.iter().map(|k| k.rsa().unwrap().n().to_vec()).collect();
        moduli.sort();
        moduli.dedup();
        assert_eq!(moduli.len(), 12, "two keys share a modulus");
        for key in &keys {
            let rsa = key.rsa().unwrap();
            assert_eq!(key.bits(), 2048);
            assert_eq!(rsa.n().num_bits(), 2048);
            assert_eq!(rsa.e().to_dec_str().unwrap().to_string(), "65537");
            assert!(rsa.check_key().unwrap(), "OpenSSL refuses the key");
            // A signature made with it verifies with its public half, as the server will check it.
            let mut signer =
                openssl::sign::Signer::new(openssl::hash::MessageDigest::sha256(), key).unwrap();
            signer.update(b"Idle").unwrap();
            let signature = signer.sign_to_vec().unwrap();
            let public = PKey::public_key_from_der(&key.public_key_to_der().unwrap()).unwrap();
            let mut verifier =
                openssl::sign::Verifier::new(openssl::hash::MessageDigest::sha256(), &public)
                    .unwrap();
            verifier.update(b"Idle").unwrap();
            assert!(verifier.verify(&signature).unwrap());
        }
        assert!(generate_parallel(2048, 0).unwrap().is_empty());
        assert_eq!(generate_parallel(1024, 1).unwrap().len(), 1);
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
