//! SCEP decisions of core (RFC 8894, issue 11) with the server's clock injected, on SQLite and PostgreSQL: a
//! PKCSReq whose signingTime is outside the freshness window is a CertRep FAILURE badTime that neither spends
//! the one-time challenge nor records anything; the same request inside the window is issued, recorded with its
//! transactionID, and answered again with the same certificate when it is repeated. (OpenSSL stamps its wall
//! clock into signingTime, so the injected clock is set relative to it.) The HTTP side, other clients and the
//! other refusals are in the root crate's tests/scep_interop.rs.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use openssl::rsa::Rsa;
use orchard_core::push::PushSettings;
use orchard_core::{secret_hash, Orchard};
use orchard_pki::scep::{self, CertRepOutcome, FailInfo};
use orchard_store::{EnrollmentLink, IdentityGrant, ScepChallenge, ScopeAuthority, Store, Tenant};
use orchard_testkit::service::{test_config, test_pki};
use orchard_testkit::{with_store, Backend};
use orchard_types::{Clock, EnrollmentLinkId, ManualClock, SystemClock, TenantId, UnixTime};

const WINDOW: i64 = 600;

async fn stale_requests_are_refused_with_bad_time(backend: Backend) {
    with_store(backend, |store: Store, scopes: ScopeAuthority| async move {
        let clock = ManualClock::new(SystemClock.now());
        let mut config = test_config();
        config.device_message_max_age_seconds = Some(WINDOW);
        let orchard = Orchard::new(
            store.clone(),
            scopes,
            Arc::new(test_pki(clock.now())),
            config,
            Arc::new(clock.clone()),
            PushSettings::default(),
        );
        let now = clock.now();
        let tenant = Tenant {
            id: TenantId::new(),
            name: "Chemistry".into(),
            code: "chem".into(),
            created_at: now,
        };
        store.create_tenant(&tenant).await.unwrap();
        let link = EnrollmentLink {
            id: EnrollmentLinkId::new(),
            tenant_id: tenant.id,
            name: "cart".into(),
            secret_hash: secret_hash("link"),
            max_uses: None,
            uses: 0,
            expires_at: None,
            created_at: now,
            created_by: None,
        };
        store.create_enrollment_link(&link).await.unwrap();
        let challenge = "one-time-challenge";
        store
            .create_scep_challenge(&ScepChallenge {
                challenge_hash: secret_hash(challenge),
                link_id: link.id,
                tenant_id: tenant.id,
                grant: IdentityGrant::Link,
                created_at: now,
                expires_at: now.plus_seconds(86_400),
                used_at: None,
            })
            .await
            .unwrap();
        let key = Rsa::generate(2048)
            .and_then(openssl::pkey::PKey::from_rsa)
            .unwrap();
        let ca_der = orchard.ca().cert_der();
        let signed_at = SystemClock.now();
        let pending = scep::build_pkcs_req(&ca_der, &key, "ipad", Some(challenge), now).unwrap();
        let outcome =
            |body: Vec<u8>| scep::decode_cert_rep(&pending, &key, &ca_der, &body).unwrap();

        // The server's clock an hour after the signature (a replay) and twenty minutes before it: badTime.
        for server_time in [signed_at.0 + 3600, signed_at.0 - 1200] {
            clock.set(UnixTime(server_time));
            let reply = orchard
                .scep_pki_operation(&pending.message_der)
                .await
                .unwrap();
            assert_eq!(
                outcome(reply.body),
                CertRepOutcome::Failure(FailInfo::BadTime)
            );
            assert!(store
                .find_scep_transactions(&pending.transaction_id, clock.now())
                .await
                .unwrap()
                .is_empty());
        }

        // Inside the window the same request (and so the same challenge) is issued and recorded.
        clock.set(UnixTime(signed_at.0 + WINDOW / 2));
        let reply = orchard
            .scep_pki_operation(&pending.message_der)
            .await
            .unwrap();
        let CertRepOutcome::Success(issued) = outcome(reply.body) else {
            panic!("refused inside the window");
        };
        let (fingerprint, recorded) = store
            .find_scep_transactions(&pending.transaction_id, clock.now())
            .await
            .unwrap()
            .pop()
            .expect("transaction recorded");
        assert_eq!(recorded.certificate_der, issued);
        assert_eq!(fingerprint, orchard_pki::fingerprint_sha256_hex(&issued));
        let record = store
            .find_issued_certificate(&fingerprint)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(record.tenant_id, tenant.id);
        assert_eq!(record.link_id, Some(link.id));

        // Repeated (the answer was lost): the same certificate, nothing new.
        let reply = orchard
            .scep_pki_operation(&pending.message_der)
            .await
            .unwrap();
        assert_eq!(outcome(reply.body), CertRepOutcome::Success(issued));
        // The challenge is spent: another key with it is refused.
        let other = Rsa::generate(2048)
            .and_then(openssl::pkey::PKey::from_rsa)
            .unwrap();
        let late = scep::build_pkcs_req(&ca_der, &other, "ipad", Some(challenge), now).unwrap();
        let reply = orchard.scep_pki_operation(&late.message_der).await.unwrap();
        assert_eq!(
            scep::decode_cert_rep(&late, &other, &ca_der, &reply.body).unwrap(),
            CertRepOutcome::Failure(FailInfo::BadRequest)
        );
    })
    .await;
}

orchard_testkit::backend_tests! {
    a_stale_pkcs_req_is_refused_with_bad_time_and_keeps_the_challenge => stale_requests_are_refused_with_bad_time;
}
