//! No OpenSSL memory may be left behind by a refused input (issue 19: a crafted `Mdm-Signature` leaked ~340 bytes
//! per request before any authentication). Every allocation OpenSSL makes goes through counting hooks installed
//! with `CRYPTO_set_mem_functions` before OpenSSL allocates anything, so this is its own test binary
//! (`harness = false`: no test threads, the hooks are installed first thing in `main`). Each input is verified a
//! few times to warm OpenSSL's caches, then many more times; the number of live OpenSSL allocations must not grow.
//! Deterministic: counts, not timing or resident memory.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
// A `harness = false` binary: `main` is the test, and it ends the process with its verdict.
#![allow(clippy::exit)]

use std::ffi::{c_char, c_int, c_void};
use std::sync::atomic::{AtomicI64, Ordering};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use orchard_pki::signature::{
    sign_mdm_body, verify_mdm_signature, verify_signed_profile, SignerCache,
};
use orchard_pki::{scep, CertificateAuthority};
use orchard_types::UnixTime;

/// The input found by the `mdm_signature` fuzz target (`../shared/fuzz-findings/mdm-signature-leak.der`): a
/// SignedData whose digest algorithm OID and certificate notAfter are corrupted.
const LEAK_INPUT: &[u8] = include_bytes!("data/mdm-signature-leak.der");

const NOW: UnixTime = UnixTime(1_800_000_100);
const WARM_UP_CALLS: usize = 20;
const MEASURED_CALLS: usize = 500;
/// For the many single-byte variants: a leak of even one allocation per call shows as 10.
const MEASURED_CALLS_PER_VARIANT: usize = 10;
/// Inputs that differ in what OpenSSL might cache by name (algorithm identifiers).
const DISTINCT_INPUTS: usize = 2000;
/// Devices the signer cache remembers in its check.
const CACHED_DEVICES: usize = 8;
/// Live bytes move a little without any new allocation: the thread's error queue is a ring of 16 slots whose
/// message buffers are reallocated in place, so which message sits where differs between two snapshots.
const BYTE_DRIFT_ALLOWED: i64 = 4096;

static LIVE_ALLOCATIONS: AtomicI64 = AtomicI64::new(0);
static LIVE_BYTES: AtomicI64 = AtomicI64::new(0);

/// Every block carries its size in a 16-byte header (keeps malloc's alignment) so `free` can count bytes.
const HEADER: usize = 16;

extern "C" {
    fn malloc(size: usize) -> *mut c_void;
    fn realloc(ptr: *mut c_void, size: usize) -> *mut c_void;
    fn free(ptr: *mut c_void);
    // OpenSSL 3: int CRYPTO_set_mem_functions(CRYPTO_malloc_fn, CRYPTO_realloc_fn, CRYPTO_free_fn);
    fn CRYPTO_set_mem_functions(
        m: unsafe extern "C" fn(usize, *const c_char, c_int) -> *mut c_void,
        r: unsafe extern "C" fn(*mut c_void, usize, *const c_char, c_int) -> *mut c_void,
        f: unsafe extern "C" fn(*mut c_void, *const c_char, c_int),
    ) -> c_int;
}

unsafe extern "C" fn counting_malloc(size: usize, _: *const c_char, _: c_int) -> *mut c_void {
    // SAFETY: plain libc allocation; the header is written inside the block just allocated.
    unsafe {
        let block = malloc(size + HEADER).cast::<u8>();
        if block.is_null() {
            return std::ptr::null_mut();
        }
        block.cast::<usize>().write(size);
        LIVE_ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        LIVE_BYTES.fetch_add(size as i64, Ordering::Relaxed);
        block.add(HEADER).cast()
    }
}

unsafe extern "C" fn counting_free(ptr: *mut c_void, _: *const c_char, _: c_int) {
    if ptr.is_null() {
        return;
    }
    // SAFETY: `ptr` came from counting_malloc/counting_realloc, so the header precedes it.
    unsafe {
        let block = ptr.cast::<u8>().sub(HEADER);
        let size = block.cast::<usize>().read();
        LIVE_ALLOCATIONS.fetch_sub(1, Ordering::Relaxed);
        LIVE_BYTES.fetch_sub(size as i64, Ordering::Relaxed);
        free(block.cast());
    }
}

unsafe extern "C" fn counting_realloc(
    ptr: *mut c_void,
    size: usize,
    file: *const c_char,
    line: c_int,
) -> *mut c_void {
    // SAFETY: same contract as the two functions above.
    unsafe {
        if ptr.is_null() {
            return counting_malloc(size, file, line);
        }
        if size == 0 {
            counting_free(ptr, file, line);
            return std::ptr::null_mut();
        }
        let block = ptr.cast::<u8>().sub(HEADER);
        let old_size = block.cast::<usize>().read();
        let moved = realloc(block.cast(), size + HEADER).cast::<u8>();
        if moved.is_null() {
            return std::ptr::null_mut();
        }
        moved.cast::<usize>().write(size);
        LIVE_BYTES.fetch_add(size as i64 - old_size as i64, Ordering::Relaxed);
        moved.add(HEADER).cast()
    }
}

fn live() -> (i64, i64) {
    (
        LIVE_ALLOCATIONS.load(Ordering::Relaxed),
        LIVE_BYTES.load(Ordering::Relaxed),
    )
}

/// Runs `call` to warm up, then `calls` times more; returns the growth in live OpenSSL allocations and bytes.
fn growth(calls: usize, mut call: impl FnMut()) -> (i64, i64) {
    for _ in 0..WARM_UP_CALLS {
        call();
    }
    let (allocations, bytes) = live();
    for _ in 0..calls {
        call();
    }
    let (allocations_after, bytes_after) = live();
    (allocations_after - allocations, bytes_after - bytes)
}

/// One DER element: (tag, contents, what follows). Test inputs only (single-byte tags, definite lengths).
fn tlv(bytes: &[u8]) -> (u8, &[u8], &[u8]) {
    let tag = bytes[0];
    let (len, header) = match bytes[1] {
        short @ 0..=0x7f => (usize::from(short), 2),
        long => {
            let count = usize::from(long & 0x7f);
            let len = bytes[2..2 + count]
                .iter()
                .fold(0, |acc, &b| (acc << 8) | usize::from(b));
            (len, 2 + count)
        }
    };
    (tag, &bytes[header..header + len], &bytes[header + len..])
}

fn der(tag: u8, contents: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    match contents.len() {
        len @ 0..=0x7f => out.push(len as u8),
        len @ 0x80..=0xff => out.extend_from_slice(&[0x81, len as u8]),
        len => out.extend_from_slice(&[0x82, (len >> 8) as u8, len as u8]),
    }
    out.extend_from_slice(contents);
    out
}

/// The same SignedData with SHA-1 added to its digestAlgorithms (OpenSSL then chains two digest BIOs).
fn with_second_digest_algorithm(message: &[u8]) -> Vec<u8> {
    const SHA1: &[u8] = &[
        0x30, 0x09, 0x06, 0x05, 0x2b, 0x0e, 0x03, 0x02, 0x1a, 0x05, 0x00,
    ];
    let (_, content_info, _) = tlv(message);
    let (_, oid, rest) = tlv(content_info);
    let (_, explicit, _) = tlv(rest);
    let (_, signed_data, _) = tlv(explicit);
    let (_, version, rest) = tlv(signed_data);
    let (_, digest_algorithms, rest) = tlv(rest);
    let mut signed_data = der(0x02, version);
    signed_data.extend(der(0x31, &[digest_algorithms, SHA1].concat()));
    signed_data.extend_from_slice(rest);
    let mut content_info = der(0x06, oid);
    content_info.extend(der(0xa0, &der(0x30, &signed_data)));
    der(0x30, &content_info)
}

/// The outer SEQUENCE re-encoded with an indefinite length (BER): the fast path leaves it to OpenSSL.
fn as_ber(message: &[u8]) -> Vec<u8> {
    let (_, contents, _) = tlv(message);
    [&[0x30, 0x80][..], contents, &[0, 0]].concat()
}

fn main() {
    // SAFETY: called before anything in this process touched OpenSSL; the hooks are thread-safe.
    let installed =
        unsafe { CRYPTO_set_mem_functions(counting_malloc, counting_realloc, counting_free) };
    assert_eq!(
        installed, 1,
        "CRYPTO_set_mem_functions refused: OpenSSL allocated before main"
    );

    let ca =
        CertificateAuthority::generate("Orchard Test CA", UnixTime(1_800_000_000), 30).unwrap();
    let device = ca
        .issue_signing_identity("device", UnixTime(1_800_000_000), 30)
        .unwrap();
    let body = b"body";
    let valid = BASE64
        .decode(sign_mdm_body(body, &device).unwrap())
        .unwrap();
    let stranger_ca =
        CertificateAuthority::generate("Orchard Test CA", UnixTime(1_800_000_000), 30).unwrap();
    let stranger = stranger_ca
        .issue_signing_identity("device", UnixTime(1_800_000_000), 30)
        .unwrap();
    let untrusted = BASE64
        .decode(sign_mdm_body(body, &stranger).unwrap())
        .unwrap();

    let empty_body_two_digests = as_ber(&with_second_digest_algorithm(
        &BASE64.decode(sign_mdm_body(b"", &device).unwrap()).unwrap(),
    ));
    assert!(verify_mdm_signature(&BASE64.encode(&empty_body_two_digests), b"", &ca, NOW).is_ok());

    let mut cases: Vec<(String, Vec<u8>, usize)> = vec![
        (
            "the fuzz finding (issue 19)".into(),
            LEAK_INPUT.to_vec(),
            MEASURED_CALLS,
        ),
        ("a valid signature".into(), valid.clone(), MEASURED_CALLS),
        ("a signer from another ca".into(), untrusted, MEASURED_CALLS),
        ("junk".into(), b"hello".to_vec(), MEASURED_CALLS),
    ];
    // Every single-byte change of a valid message: each reaches a different refusal in either path.
    for position in 0..valid.len() {
        let mut changed = valid.clone();
        changed[position] ^= 0x5a;
        cases.push((
            format!("valid message with byte {position} changed"),
            changed,
            MEASURED_CALLS_PER_VARIANT,
        ));
    }

    let mut failures = Vec::new();
    let (allocations, bytes) = growth(MEASURED_CALLS, || {
        let header = BASE64.encode(&empty_body_two_digests);
        let _ = verify_mdm_signature(&header, b"", &ca, NOW);
    });
    if allocations != 0 || bytes.abs() > BYTE_DRIFT_ALLOWED {
        failures.push(format!(
            "mdm-signature, empty body and two digest algorithms (BER): {allocations} allocations / \
             {bytes} bytes still live after {MEASURED_CALLS} calls"
        ));
    }
    for (name, der, calls) in &cases {
        let header = BASE64.encode(der);
        let (allocations, bytes) = growth(*calls, || {
            let _ = verify_mdm_signature(&header, body, &ca, NOW);
        });
        if allocations != 0 || bytes.abs() > BYTE_DRIFT_ALLOWED {
            failures.push(format!(
                "mdm-signature, {name}: {allocations} allocations / {bytes} bytes still live after \
                 {calls} calls"
            ));
        }
    }
    let (allocations, bytes) = growth(MEASURED_CALLS, || {
        let _ = verify_signed_profile(LEAK_INPUT, &ca.cert_der());
        let _ = scep::decode_pki_message(&ca, LEAK_INPUT);
    });
    if allocations != 0 || bytes.abs() > BYTE_DRIFT_ALLOWED {
        failures.push(format!(
            "profile / scep decoders on the fuzz finding: {allocations} allocations / {bytes} bytes \
             still live after {MEASURED_CALLS} calls"
        ));
    }

    // Distinct inputs must not grow OpenSSL's global state either (a per-name cache would leak as surely as a
    // lost object): every message below names another unknown digest algorithm.
    let sha256_oid = [0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01];
    let at = valid
        .windows(sha256_oid.len())
        .position(|w| w == sha256_oid)
        .unwrap();
    let unknown_digest = |n: usize| {
        let mut message = valid.clone();
        // The last arc becomes a two-byte arc (0x80 | high, low): 16,256 distinct unknown OIDs of the same length.
        message[at + 7] = 0x81 + (n / 128 % 127) as u8;
        message[at + 8] = (n % 128) as u8;
        BASE64.encode(message)
    };
    for n in 0..WARM_UP_CALLS {
        let _ = verify_mdm_signature(&unknown_digest(n), body, &ca, NOW);
    }
    let (allocations, bytes) = live();
    for n in WARM_UP_CALLS..WARM_UP_CALLS + DISTINCT_INPUTS {
        assert!(verify_mdm_signature(&unknown_digest(n), body, &ca, NOW).is_err());
    }
    let (allocations, bytes) = (live().0 - allocations, live().1 - bytes);
    if allocations != 0 || bytes.abs() > BYTE_DRIFT_ALLOWED {
        failures.push(format!(
            "mdm-signature, {DISTINCT_INPUTS} distinct unknown digest algorithms: {allocations} allocations / \
             {bytes} bytes still live"
        ));
    }

    // The client half of SCEP: a PENDING CertRep carries no content, its signature covers the empty string.
    let key = openssl::pkey::PKey::from_rsa(openssl::rsa::Rsa::generate(2048).unwrap()).unwrap();
    let pending = scep::build_pkcs_req(&ca.cert_der(), &key, "device", Some("pw"), NOW).unwrap();
    let request = scep::decode_pki_message(&ca, &pending.message_der).unwrap();
    let reply = with_second_digest_algorithm(&scep::cert_rep_pending(&ca, &request).unwrap());
    assert!(matches!(
        scep::decode_cert_rep(&pending, &key, &ca.cert_der(), &reply),
        Ok(scep::CertRepOutcome::Pending)
    ));
    let (allocations, bytes) = growth(MEASURED_CALLS, || {
        let _ = scep::decode_cert_rep(&pending, &key, &ca.cert_der(), &reply);
    });
    if allocations != 0 || bytes.abs() > BYTE_DRIFT_ALLOWED {
        failures.push(format!(
            "pending certrep with two digest algorithms: {allocations} allocations / {bytes} bytes \
             still live after {MEASURED_CALLS} calls"
        ));
    }

    // The signer cache keeps what it proved about each device as bytes, no OpenSSL object: a verified key kept
    // per device costs ~2.6 KB of OpenSSL memory (its provider copy, its Montgomery context), 130 MB for the
    // 50,000 devices the server's cache holds (issue 16). Remembering devices and answering their requests from
    // the cache leaves no OpenSSL allocation live.
    let devices: Vec<String> = (0..CACHED_DEVICES)
        .map(|i| {
            let identity = ca
                .issue_signing_identity(&format!("device {i}"), UnixTime(1_800_000_000), 30)
                .unwrap();
            sign_mdm_body(body, &identity).unwrap()
        })
        .collect();
    let warm_up = SignerCache::new(&ca, 100);
    for _ in 0..WARM_UP_CALLS {
        warm_up
            .verify_mdm_signature(&devices[0], body, &ca, NOW)
            .unwrap();
    }
    drop(warm_up);
    let cache = SignerCache::new(&ca, 100);
    let (allocations, bytes) = live();
    for _ in 0..10 {
        for header in &devices {
            cache.verify_mdm_signature(header, body, &ca, NOW).unwrap();
        }
    }
    assert_eq!(cache.len(), CACHED_DEVICES);
    let (allocations, bytes) = (live().0 - allocations, live().1 - bytes);
    if allocations != 0 || bytes.abs() > BYTE_DRIFT_ALLOWED {
        failures.push(format!(
            "signer cache holding {CACHED_DEVICES} devices: {allocations} allocations / {bytes} bytes of \
             OpenSSL memory live"
        ));
    }

    // Summed by scripts/test.sh like the libtest binaries' lines.
    if !failures.is_empty() {
        for failure in &failures {
            eprintln!("LEAK {failure}");
        }
        println!("test result: FAILED. 0 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out");
        eprintln!("{} inputs leak OpenSSL memory", failures.len());
        std::process::exit(1);
    }
    println!(
        "openssl_leaks: {} inputs, no OpenSSL allocation left behind",
        cases.len() + 4 + DISTINCT_INPUTS
    );
    println!("test result: ok. 1 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out");
}
