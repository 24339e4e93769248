//! SCEP round trip from a fuzzed request: whatever PKIOperation the server decodes, it answers with the CertRep
//! builders (success with the issued certificate, failure, pending), and when the request was signed with the
//! fixture device key, the client half (`decode_cert_rep`) must read back exactly what the server put in.
#![no_main]
use std::collections::HashMap;
use std::sync::Mutex;

use openssl::x509::X509;
use orchard_fuzz::{ca, device, NOW};
use orchard_pki::scep::{self, CertRepOutcome, FailInfo, MessageType, PendingRequest};
use orchard_pki::Identity;

/// The client's state for a request, by the DER of the certificate that signed it (a mutated request may carry
/// another certificate over the same key). Bounded: building one costs a signature.
fn client_state(signer_der: &[u8], request: &scep::PkiRequest) -> Option<PendingRequest> {
    static CACHE: Mutex<Option<HashMap<Vec<u8>, PendingRequest>>> = Mutex::new(None);
    let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    let cache = cache.get_or_insert_with(HashMap::new);
    if !cache.contains_key(signer_der) {
        let cert = X509::from_der(signer_der).ok()?;
        if !cert.public_key().ok()?.public_eq(device().private_key()) {
            return None; // signed with a key the client half does not have
        }
        let signer = Identity::from_parts(cert, device().private_key().to_owned()).ok()?;
        // The only public way to a PendingRequest with a given signer; its other fields are set below.
        let template =
            scep::build_renewal_req(&ca().cert_der(), device().private_key(), &signer, "x", NOW)
                .ok()?;
        if cache.len() >= 64 {
            cache.clear();
        }
        cache.insert(signer_der.to_vec(), template);
    }
    let mut pending = cache.get(signer_der)?.clone();
    pending.transaction_id = request.transaction_id.clone();
    pending.sender_nonce = request.sender_nonce.clone();
    pending.message_type = request.message_type;
    Some(pending)
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(request) = scep::decode_pki_message(ca(), data) else {
        return;
    };
    let issued = match request.message_type {
        MessageType::PkcsReq | MessageType::RenewalReq => {
            scep::issue_certificate(ca(), &request, NOW, 365).ok()
        }
        _ => None,
    };
    let success = issued.as_ref().map(|der| {
        scep::cert_rep_success(ca(), &request, der).expect("certrep success for a decoded request")
    });
    let failure = scep::cert_rep_failure(ca(), &request, FailInfo::BadRequest)
        .expect("certrep failure for a decoded request");
    let pending_reply =
        scep::cert_rep_pending(ca(), &request).expect("certrep pending for a decoded request");

    let Some(pending) = client_state(&request.signer_cert_der, &request) else {
        return;
    };
    let key = device().private_key();
    let ca_der = ca().cert_der();
    // The client holds one key: it can read the certificate only if the request asked for that key (a
    // RenewalReq may ask for another).
    let for_our_key = issued.as_ref().is_some_and(|der| {
        X509::from_der(der)
            .and_then(|cert| cert.public_key())
            .is_ok_and(|public| public.public_eq(key))
    });
    if let (Some(issued), Some(success), true) = (&issued, &success, for_our_key) {
        match scep::decode_cert_rep(&pending, key, &ca_der, success) {
            Ok(CertRepOutcome::Success(cert)) => {
                assert_eq!(&cert, issued, "another certificate came back")
            }
            other => panic!("success certrep read back as {other:?}"),
        }
    }
    match scep::decode_cert_rep(&pending, key, &ca_der, &failure) {
        Ok(CertRepOutcome::Failure(FailInfo::BadRequest)) => {}
        other => panic!("failure certrep read back as {other:?}"),
    }
    match scep::decode_cert_rep(&pending, key, &ca_der, &pending_reply) {
        Ok(CertRepOutcome::Pending) => {}
        other => panic!("pending certrep read back as {other:?}"),
    }
});
