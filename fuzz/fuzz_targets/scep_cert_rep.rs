//! SCEP round trip from a fuzzed request: whatever PKIOperation the server decodes, it answers with the CertRep
//! builders (success with the issued certificate, failure, pending), and when the request was signed with the
//! fixture device key, the client half (`decode_cert_rep`) must read back exactly what the server put in.
#![no_main]
use std::sync::OnceLock;

use openssl::x509::X509;
use orchard_fuzz::{ca, device, NOW};
use orchard_pki::scep::{self, CertRepOutcome, FailInfo, MessageType, PendingRequest};
use orchard_pki::Identity;

/// The client's half for a request signed by `signer_der` over the fixture device key: a template
/// PendingRequest (the only public way to one with a given signer costs a signature), with the request's
/// transaction, nonce and type. The fixture's own certificate — what nearly every input carries — is built once,
/// while the seeds load; any other certificate over the same key (a mutation) is built for this input and
/// dropped with it. Nothing else is kept between inputs: memory that grows across inputs makes libFuzzer turn
/// its per-input leak check off ("the target function accumulates allocated memory in a global state"), which
/// an earlier version of this target, with a cache of 64 templates, did.
fn client_state(signer_der: &[u8], request: &scep::PkiRequest) -> Option<PendingRequest> {
    fn template(signer_der: &[u8]) -> Option<PendingRequest> {
        let cert = X509::from_der(signer_der).ok()?;
        if !cert.public_key().ok()?.public_eq(device().private_key()) {
            return None; // signed with a key the client half does not have
        }
        let signer = Identity::from_parts(cert, device().private_key().to_owned()).ok()?;
        scep::build_renewal_req(&ca().cert_der(), device().private_key(), &signer, "x", NOW).ok()
    }
    static FIXTURE: OnceLock<(Vec<u8>, Option<PendingRequest>)> = OnceLock::new();
    let (fixture_der, fixture) = FIXTURE.get_or_init(|| {
        let der = device().cert_der();
        let built = template(&der);
        (der, built)
    });
    let mut pending = if signer_der == fixture_der.as_slice() {
        fixture.clone()?
    } else {
        template(signer_der)?
    };
    pending.transaction_id = request.transaction_id.clone();
    pending.sender_nonce = request.sender_nonce.clone();
    pending.message_type = request.message_type;
    Some(pending)
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _clear = orchard_fuzz::ClearOpensslErrors; // see its doc: keeps libFuzzer's leak check meaningful
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
