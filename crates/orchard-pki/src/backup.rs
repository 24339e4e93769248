//! The encrypted container of `orchard backup`: a stream of bytes (the backup's manifest with the key-encryption
//! key, then the database) sealed under a key derived from an operator's passphrase. Sans-IO: the caller feeds
//! chunks in and writes what comes out, so a backup of any size needs one chunk of memory.
//!
//! Layout: a fixed [`HEADER_LEN`]-byte header, then chunks of `chunk_size` plaintext bytes (the last one shorter,
//! possibly empty), each sealed with AES-256-GCM and followed by its 16-byte tag.
//!
//! ```text
//! magic "ORCHBKUP" | format u16 | kdf u8 (1 = scrypt) | log2 N u8 | r u32 | p u32 | salt [16]
//! | nonce prefix [7] | chunk size u32 | passphrase check [16]          (all integers big-endian)
//! ```
//!
//! The key is scrypt(passphrase, salt) → 64 bytes: the first 32 seal the chunks, the SHA-256 of the last 32
//! (its first 16 bytes) is the passphrase check, so a wrong passphrase is told apart from a damaged file. Each
//! chunk's nonce is the prefix, the chunk's counter (u32) and a last-chunk flag (the STREAM construction of
//! Hoang, Reyhanitabar, Rogaway and Vizár): chunks cannot be reordered, dropped or cut off at the end without
//! the opening failing; the whole header is every chunk's associated data, so no header field can be changed.

use openssl::symm::{decrypt_aead, encrypt_aead, Cipher};
use orchard_types::Secret;
use sha2::{Digest, Sha256};

use crate::PkiError;

const MAGIC: &[u8; 8] = b"ORCHBKUP";
/// The container format this code writes and the only one it reads.
pub const FORMAT_VERSION: u16 = 1;
const KDF_SCRYPT: u8 = 1;
const SALT_LEN: usize = 16;
const NONCE_PREFIX_LEN: usize = 7;
const CHECK_LEN: usize = 16;
/// The AES-GCM tag after every chunk.
pub const TAG_LEN: usize = 16;
/// Length of the header every backup file starts with.
pub const HEADER_LEN: usize = 8 + 2 + 1 + 1 + 4 + 4 + SALT_LEN + NONCE_PREFIX_LEN + 4 + CHECK_LEN;
/// Plaintext bytes per chunk that [`Sealer::new`] uses.
pub const DEFAULT_CHUNK_SIZE: u32 = 1 << 20;
const MIN_CHUNK_SIZE: u32 = 1 << 12;
const MAX_CHUNK_SIZE: u32 = 1 << 24;

/// scrypt's cost: N = 2^log2_n, r, p. The default (2^17, 8, 1) takes 128 MiB and about half a second, so a
/// stolen backup resists guessing; a file asking for more than `ScryptParams::is_acceptable` allows is
/// refused rather than left to exhaust the machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScryptParams {
    pub log2_n: u8,
    pub r: u32,
    pub p: u32,
}

impl Default for ScryptParams {
    fn default() -> Self {
        ScryptParams {
            log2_n: 17,
            r: 8,
            p: 1,
        }
    }
}

impl ScryptParams {
    /// Cheap parameters for tests of this module only (never for a backup).
    #[cfg(test)]
    fn fast_for_tests() -> Self {
        ScryptParams {
            log2_n: 10,
            r: 8,
            p: 1,
        }
    }

    /// Whether a file's parameters are within what this code derives keys for (at most 1 GiB of memory).
    fn is_acceptable(&self) -> bool {
        (10..=20).contains(&self.log2_n) && (1..=16).contains(&self.r) && (1..=4).contains(&self.p)
    }

    fn memory_bytes(&self) -> u64 {
        128 * u64::from(self.r) * (1u64 << self.log2_n)
    }
}

/// What the passphrase derives: the chunk key and the check stored in the header.
struct DerivedKey {
    key: Secret<[u8; 32]>,
    check: [u8; CHECK_LEN],
}

fn derive(passphrase: &[u8], salt: &[u8], params: ScryptParams) -> Result<DerivedKey, PkiError> {
    if !params.is_acceptable() {
        return Err(PkiError::Unsupported(format!(
            "backup key derivation parameters (scrypt N=2^{}, r={}, p={})",
            params.log2_n, params.r, params.p
        )));
    }
    let mut out = [0u8; 64];
    openssl::pkcs5::scrypt(
        passphrase,
        salt,
        1u64 << params.log2_n,
        u64::from(params.r),
        u64::from(params.p),
        // OpenSSL's own limit (32 MiB) is below the default cost: allow what these parameters need.
        params.memory_bytes() + (1 << 20),
        &mut out,
    )?;
    let mut key = [0u8; 32];
    key.copy_from_slice(&out[..32]);
    let digest = Sha256::digest(&out[32..]);
    let mut check = [0u8; CHECK_LEN];
    check.copy_from_slice(&digest[..CHECK_LEN]);
    out.fill(0);
    Ok(DerivedKey {
        key: Secret::new(key),
        check,
    })
}

/// The parsed header of a backup file.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Header {
    params: ScryptParams,
    salt: [u8; SALT_LEN],
    nonce_prefix: [u8; NONCE_PREFIX_LEN],
    chunk_size: u32,
    check: [u8; CHECK_LEN],
}

impl Header {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&FORMAT_VERSION.to_be_bytes());
        out.push(KDF_SCRYPT);
        out.push(self.params.log2_n);
        out.extend_from_slice(&self.params.r.to_be_bytes());
        out.extend_from_slice(&self.params.p.to_be_bytes());
        out.extend_from_slice(&self.salt);
        out.extend_from_slice(&self.nonce_prefix);
        out.extend_from_slice(&self.chunk_size.to_be_bytes());
        out.extend_from_slice(&self.check);
        out
    }

    fn decode(bytes: &[u8]) -> Result<Header, PkiError> {
        let not_a_backup = || PkiError::Malformed("not an orchard backup file".into());
        if bytes.len() < HEADER_LEN || !bytes.starts_with(MAGIC) {
            return Err(not_a_backup());
        }
        let mut rest = &bytes[MAGIC.len()..HEADER_LEN];
        let mut take = |n: usize| {
            let (part, tail) = rest.split_at(n);
            rest = tail;
            part
        };
        let u32_of = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
        let format_bytes = take(2);
        let format = u16::from_be_bytes([format_bytes[0], format_bytes[1]]);
        if format != FORMAT_VERSION {
            return Err(PkiError::Unsupported(format!(
                "backup format {format} (this orchard reads format {FORMAT_VERSION}; restore it with a newer orchard)"
            )));
        }
        let kdf = take(1)[0];
        if kdf != KDF_SCRYPT {
            return Err(PkiError::Unsupported(format!(
                "backup key derivation {kdf}"
            )));
        }
        let log2_n = take(1)[0];
        let r = u32_of(take(4));
        let p = u32_of(take(4));
        let mut salt = [0u8; SALT_LEN];
        salt.copy_from_slice(take(SALT_LEN));
        let mut nonce_prefix = [0u8; NONCE_PREFIX_LEN];
        nonce_prefix.copy_from_slice(take(NONCE_PREFIX_LEN));
        let chunk_size = u32_of(take(4));
        let mut check = [0u8; CHECK_LEN];
        check.copy_from_slice(take(CHECK_LEN));
        if !(MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&chunk_size) {
            return Err(PkiError::Unsupported(format!(
                "backup chunk size {chunk_size}"
            )));
        }
        Ok(Header {
            params: ScryptParams { log2_n, r, p },
            salt,
            nonce_prefix,
            chunk_size,
            check,
        })
    }
}

/// The nonce of chunk `counter`: prefix, counter, last-chunk flag.
fn nonce(prefix: &[u8; NONCE_PREFIX_LEN], counter: u32, last: bool) -> [u8; 12] {
    let mut n = [0u8; 12];
    n[..NONCE_PREFIX_LEN].copy_from_slice(prefix);
    n[NONCE_PREFIX_LEN..NONCE_PREFIX_LEN + 4].copy_from_slice(&counter.to_be_bytes());
    n[11] = u8::from(last);
    n
}

/// Seals a backup chunk by chunk: write [`header`](Sealer::header) first, then what
/// [`seal_chunk`](Sealer::seal_chunk) returns for each chunk of [`chunk_size`](Sealer::chunk_size) bytes, the
/// last one (shorter or empty) with `last = true`.
pub struct Sealer {
    header: Vec<u8>,
    nonce_prefix: [u8; NONCE_PREFIX_LEN],
    chunk_size: u32,
    key: Secret<[u8; 32]>,
    counter: u32,
    finished: bool,
}

impl Sealer {
    /// A sealer under `passphrase` with a fresh random salt and nonce prefix.
    pub fn new(passphrase: &[u8], params: ScryptParams) -> Result<Sealer, PkiError> {
        let mut salt = [0u8; SALT_LEN];
        openssl::rand::rand_bytes(&mut salt)?;
        let mut nonce_prefix = [0u8; NONCE_PREFIX_LEN];
        openssl::rand::rand_bytes(&mut nonce_prefix)?;
        let derived = derive(passphrase, &salt, params)?;
        let header = Header {
            params,
            salt,
            nonce_prefix,
            chunk_size: DEFAULT_CHUNK_SIZE,
            check: derived.check,
        };
        Ok(Sealer {
            header: header.encode(),
            nonce_prefix,
            chunk_size: DEFAULT_CHUNK_SIZE,
            key: derived.key,
            counter: 0,
            finished: false,
        })
    }

    pub fn header(&self) -> &[u8] {
        &self.header
    }

    /// Plaintext bytes every chunk but the last must hold.
    pub fn chunk_size(&self) -> usize {
        self.chunk_size as usize
    }

    /// The sealed chunk (ciphertext and tag) of `plaintext`, which must be exactly
    /// [`chunk_size`](Sealer::chunk_size) bytes unless `last`.
    pub fn seal_chunk(&mut self, plaintext: &[u8], last: bool) -> Result<Vec<u8>, PkiError> {
        if self.finished {
            return Err(PkiError::Malformed(
                "the backup's last chunk is sealed".into(),
            ));
        }
        if plaintext.len() > self.chunk_size() || (!last && plaintext.len() != self.chunk_size()) {
            return Err(PkiError::Malformed(format!(
                "a backup chunk of {} bytes (every chunk but the last holds {})",
                plaintext.len(),
                self.chunk_size
            )));
        }
        let mut tag = [0u8; TAG_LEN];
        let mut sealed = encrypt_aead(
            Cipher::aes_256_gcm(),
            self.key.expose(),
            Some(&nonce(&self.nonce_prefix, self.counter, last)),
            &self.header,
            plaintext,
            &mut tag,
        )?;
        sealed.extend_from_slice(&tag);
        self.counter = self
            .counter
            .checked_add(1)
            .ok_or_else(|| PkiError::Unsupported("a backup of more than 2^32 chunks".into()))?;
        self.finished = last;
        Ok(sealed)
    }
}

/// Why a backup does not open.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    #[error("the passphrase does not open this backup (wrong passphrase, or the file's header is damaged)")]
    WrongPassphrase,
    #[error("the backup is damaged or was changed: chunk {0} does not authenticate (or the file was cut short)")]
    Damaged(u32),
    #[error("{0}")]
    Unreadable(PkiError),
}

/// Opens a backup chunk by chunk: feed the file's chunks of [`sealed_chunk_len`](Opener::sealed_chunk_len)
/// bytes in order, the final (possibly shorter) one with `last = true`. Nothing a chunk holds should be used
/// before the last chunk opened: only then is the whole stream known to be complete.
pub struct Opener {
    header: Vec<u8>,
    nonce_prefix: [u8; NONCE_PREFIX_LEN],
    chunk_size: u32,
    key: Secret<[u8; 32]>,
    counter: u32,
}

impl Opener {
    /// Parses the header (the first [`HEADER_LEN`] bytes) and derives the key from `passphrase`.
    pub fn new(header: &[u8], passphrase: &[u8]) -> Result<Opener, OpenError> {
        let parsed = Header::decode(header).map_err(OpenError::Unreadable)?;
        let derived =
            derive(passphrase, &parsed.salt, parsed.params).map_err(OpenError::Unreadable)?;
        if !openssl::memcmp::eq(&derived.check, &parsed.check) {
            return Err(OpenError::WrongPassphrase);
        }
        Ok(Opener {
            header: header[..HEADER_LEN].to_vec(),
            nonce_prefix: parsed.nonce_prefix,
            chunk_size: parsed.chunk_size,
            key: derived.key,
            counter: 0,
        })
    }

    /// Bytes of a sealed chunk (all but the last, which may be shorter).
    pub fn sealed_chunk_len(&self) -> usize {
        self.chunk_size as usize + TAG_LEN
    }

    /// The plaintext of the next chunk.
    pub fn open_chunk(&mut self, sealed: &[u8], last: bool) -> Result<Vec<u8>, OpenError> {
        let damaged = OpenError::Damaged(self.counter);
        if sealed.len() < TAG_LEN
            || sealed.len() > self.sealed_chunk_len()
            || (!last && sealed.len() != self.sealed_chunk_len())
        {
            return Err(damaged);
        }
        let (ciphertext, tag) = sealed.split_at(sealed.len() - TAG_LEN);
        let plaintext = decrypt_aead(
            Cipher::aes_256_gcm(),
            self.key.expose(),
            Some(&nonce(&self.nonce_prefix, self.counter, last)),
            &self.header,
            ciphertext,
            tag,
        )
        .map_err(|_| damaged)?;
        self.counter = self
            .counter
            .checked_add(1)
            .ok_or(OpenError::Damaged(u32::MAX))?;
        Ok(plaintext)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Seals `data` whole, as `orchard backup` does chunk by chunk.
    fn seal_all(passphrase: &[u8], data: &[u8]) -> Vec<u8> {
        let mut sealer = Sealer::new(passphrase, ScryptParams::fast_for_tests()).unwrap();
        let mut out = sealer.header().to_vec();
        let size = sealer.chunk_size();
        let mut chunks = data.chunks(size).peekable();
        let mut sealed_last = false;
        while let Some(chunk) = chunks.next() {
            let last = chunks.peek().is_none() && chunk.len() < size;
            out.extend(sealer.seal_chunk(chunk, last).unwrap());
            sealed_last = last;
        }
        if !sealed_last {
            out.extend(sealer.seal_chunk(&[], true).unwrap());
        }
        out
    }

    fn open_all(passphrase: &[u8], file: &[u8]) -> Result<Vec<u8>, OpenError> {
        let mut opener = Opener::new(file.get(..HEADER_LEN).unwrap_or(file), passphrase)?;
        let body = &file[HEADER_LEN..];
        let len = opener.sealed_chunk_len();
        let mut out = Vec::new();
        let mut at = 0;
        loop {
            let end = (at + len).min(body.len());
            let last = end == body.len();
            out.extend(opener.open_chunk(&body[at..end], last)?);
            if last {
                return Ok(out);
            }
            at = end;
        }
    }

    #[test]
    fn what_is_sealed_opens_with_the_passphrase_at_every_size() {
        let size = DEFAULT_CHUNK_SIZE as usize;
        for len in [0, 1, size - 1, size, size + 1, 2 * size] {
            let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let file = seal_all(b"correct horse battery", &data);
            assert_eq!(
                open_all(b"correct horse battery", &file).unwrap(),
                data,
                "{len}"
            );
        }
    }

    #[test]
    fn a_wrong_passphrase_is_named() {
        let file = seal_all(b"correct horse battery", b"kek and database");
        assert_eq!(
            open_all(b"correct horse batterx", &file).err(),
            Some(OpenError::WrongPassphrase)
        );
    }

    #[test]
    fn every_flipped_byte_and_every_cut_is_refused() {
        let data: Vec<u8> = (0..(DEFAULT_CHUNK_SIZE as usize + 100))
            .map(|i| (i % 7) as u8)
            .collect();
        let file = seal_all(b"pass phrase", &data);
        // A byte of each header field, the first chunk's body and tag, and the last chunk.
        for at in [
            0,
            9,
            10,
            11,
            15,
            25,
            40,
            50,
            60,
            HEADER_LEN,
            HEADER_LEN + 5000,
            file.len() - 1,
        ] {
            let mut bad = file.clone();
            bad[at] ^= 0x01;
            assert!(open_all(b"pass phrase", &bad).is_err(), "flipped byte {at}");
        }
        // Cut at the chunk boundary (a whole chunk missing) and inside a chunk.
        let boundary = HEADER_LEN + DEFAULT_CHUNK_SIZE as usize + TAG_LEN;
        for cut in [boundary, boundary + 10, HEADER_LEN + 10, HEADER_LEN, 20] {
            assert!(
                open_all(b"pass phrase", &file[..cut]).is_err(),
                "cut at {cut}"
            );
        }
        // Extra bytes at the end: the last chunk is not the last any more.
        let mut longer = file.clone();
        longer.extend_from_slice(&[0u8; 40]);
        assert!(open_all(b"pass phrase", &longer).is_err());
    }

    #[test]
    fn headers_it_does_not_understand_are_refused_before_any_work() {
        let file = seal_all(b"pass phrase", b"data");
        let mut newer = file.clone();
        newer[9] = 2;
        assert!(matches!(
            Opener::new(&newer, b"pass phrase"),
            Err(OpenError::Unreadable(PkiError::Unsupported(_)))
        ));
        // A cost that would take gigabytes of memory.
        let mut costly = file.clone();
        costly[11] = 30;
        assert!(matches!(
            Opener::new(&costly, b"pass phrase"),
            Err(OpenError::Unreadable(PkiError::Unsupported(_)))
        ));
        assert!(matches!(
            Opener::new(b"SQLite format 3\0", b"pass phrase"),
            Err(OpenError::Unreadable(PkiError::Malformed(_)))
        ));
    }

    #[test]
    fn the_default_cost_is_accepted_by_the_reader() {
        assert!(ScryptParams::default().is_acceptable());
        assert_eq!(ScryptParams::default().memory_bytes(), 128 << 20);
    }
}
