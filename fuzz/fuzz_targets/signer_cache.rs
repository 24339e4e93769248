//! Differential fuzzing of the signer cache (`SignerCache`): the server's path for a device it has seen before,
//! which skips parsing and checking the device certificate and verifies only the message. Its answer must be the
//! full verification's (`verify_mdm_signature`): both refuse, or both accept with the same signer. A cached
//! acceptance the full verification refuses is a forged device request from anyone holding a known device's
//! certificate — and every signed request carries it. Each input is checked at a time inside the fixture
//! certificates' validity and, when either side accepts it there, also before and after the validity (the cache
//! keeps the validity and checks it per request; a message neither side accepts at a valid time is refused for
//! its own sake at any time).
//!
//! The cache knows the fixture device and profile signer before the first input, remembered as the server
//! remembers them (a request of theirs that verified), so mutated messages that keep a known certificate take
//! the cached path. Should an input make it remember a third certificate, the cache is made afresh: a cache that
//! grows across inputs would turn libFuzzer's per-input leak check off.
#![no_main]
use std::cell::RefCell;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use orchard_fuzz::{ca, device, profile_signer, BODY, ISSUED_AT, NOW, VALIDITY_DAYS};
use orchard_pki::signature::{sign_mdm_body, verify_mdm_signature, SignerCache};
use orchard_types::UnixTime;

const KNOWN: usize = 2;

fn warm_cache() -> SignerCache {
    let cache = SignerCache::new(ca(), 64);
    for identity in [device(), profile_signer()] {
        let header = sign_mdm_body(BODY, identity).expect("a fixture signs");
        cache
            .verify_mdm_signature(&header, BODY, ca(), NOW)
            .expect("a fixture's signature verifies");
    }
    assert_eq!(cache.len(), KNOWN, "the fixtures are remembered");
    cache
}

thread_local! {
    static CACHE: RefCell<SignerCache> = RefCell::new(warm_cache());
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let header = BASE64.encode(data);
    let times = [
        NOW,
        // Before the fixtures' notBefore (an hour before ISSUED_AT), and after their notAfter.
        UnixTime(ISSUED_AT.0 - 2 * 3600),
        UnixTime(ISSUED_AT.0 + i64::from(VALIDITY_DAYS + 1) * 86_400),
    ];
    CACHE.with(|cache| {
        for (i, now) in times.into_iter().enumerate() {
            let cached = cache.borrow().verify_mdm_signature(&header, BODY, ca(), now);
            let full = verify_mdm_signature(&header, BODY, ca(), now);
            match (&cached, &full) {
                (Ok(cached), Ok(full)) => {
                    assert_eq!(cached, full, "the cache names another signer")
                }
                (Ok(signer), Err(error)) => panic!(
                    "FORGERY: the signer cache accepted a message the full verification refuses at {now:?} \
                     ({error}); signer {:?}",
                    signer.subject_common_name
                ),
                (Err(error), Ok(_)) => panic!(
                    "the signer cache refused a message the full verification accepts at {now:?}: {error}"
                ),
                (Err(_), Err(_)) => {
                    if i == 0 {
                        break;
                    }
                }
            }
        }
        if cache.borrow().len() > KNOWN {
            *cache.borrow_mut() = warm_cache();
        }
    });
});
