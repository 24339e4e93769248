//! The replay window of state-changing check-ins (issue 10, finding 4), on SQLite and PostgreSQL, with the
//! server's clock injected: an Authenticate or CheckOut whose Mdm-Signature carries a signing time outside the
//! configured window is refused and changes nothing; inside the window it is accepted; with the check off, any
//! signing time is accepted. (The signer stamps its own clock into signingTime, here OpenSSL's wall clock, so
//! the server's injected clock is set relative to it.)

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use openssl::rsa::Rsa;
use openssl::x509::X509;
use orchard_core::push::PushSettings;
use orchard_core::{secret_hash, CoreError, DeviceRejection, Orchard};
use orchard_pki::scep::{self, CertRepOutcome};
use orchard_pki::signature::sign_mdm_body;
use orchard_pki::Identity;
use orchard_protocol::checkin::{Authenticate, CheckOut, CheckinMessage};
use orchard_store::{EnrollmentLink, IdentityGrant, ScepChallenge, ScopeAuthority, Store, Tenant};
use orchard_testkit::service::{test_config, test_pki};
use orchard_testkit::{with_store, Backend};
use orchard_types::{Clock, EnrollmentLinkId, ManualClock, SystemClock, TenantId, Udid, UnixTime};

const WINDOW: i64 = 600;

struct Node {
    orchard: Orchard,
    clock: ManualClock,
    store: Store,
}

fn node(store: Store, scopes: ScopeAuthority, max_age: Option<i64>) -> Node {
    let clock = ManualClock::new(SystemClock.now());
    let mut config = test_config();
    config.device_message_max_age_seconds = max_age;
    let orchard = Orchard::new(
        store.clone(),
        scopes,
        Arc::new(test_pki(clock.now())),
        config,
        Arc::new(clock.clone()),
        PushSettings::default(),
    );
    Node {
        orchard,
        clock,
        store,
    }
}

impl Node {
    /// A device identity bought through SCEP with a fresh challenge of a new link.
    async fn identity(&self) -> Identity {
        let now = self.clock.now();
        let tenant = Tenant {
            id: TenantId::new(),
            name: "Physics".into(),
            code: format!("p{}", uuid::Uuid::new_v4().simple())
                .chars()
                .take(30)
                .collect(),
            created_at: now,
        };
        self.store.create_tenant(&tenant).await.unwrap();
        let link = EnrollmentLink {
            id: EnrollmentLinkId::new(),
            tenant_id: tenant.id,
            name: "cart".into(),
            secret_hash: secret_hash(&uuid::Uuid::new_v4().to_string()),
            max_uses: None,
            uses: 0,
            expires_at: None,
            created_at: now,
            created_by: None,
        };
        self.store.create_enrollment_link(&link).await.unwrap();
        let challenge = uuid::Uuid::new_v4().to_string();
        self.store
            .create_scep_challenge(&ScepChallenge {
                challenge_hash: secret_hash(&challenge),
                link_id: link.id,
                tenant_id: tenant.id,
                grant: IdentityGrant::Link,
                created_at: now,
                expires_at: now.plus_seconds(3600),
                used_at: None,
            })
            .await
            .unwrap();
        let key = Rsa::generate(2048)
            .and_then(openssl::pkey::PKey::from_rsa)
            .unwrap();
        let ca_der = self.orchard.ca().cert_der();
        let pending = scep::build_pkcs_req(&ca_der, &key, "ipad", Some(&challenge), now).unwrap();
        let reply = self
            .orchard
            .scep_pki_operation(&pending.message_der)
            .await
            .unwrap();
        let CertRepOutcome::Success(der) =
            scep::decode_cert_rep(&pending, &key, &ca_der, &reply.body).unwrap()
        else {
            panic!("scep refused");
        };
        Identity::from_parts(X509::from_der(&der).unwrap(), key).unwrap()
    }

    async fn send(&self, identity: &Identity, message: CheckinMessage) -> Result<(), CoreError> {
        let body = message.encode();
        let signature = sign_mdm_body(&body, identity).unwrap();
        self.orchard
            .checkin(Some(&signature), &body)
            .await
            .map(|_| ())
    }

    fn authenticate(&self, udid: &Udid) -> CheckinMessage {
        CheckinMessage::Authenticate(Authenticate {
            topic: self.orchard.current_topic(),
            udid: udid.clone(),
            serial_number: None,
            os_version: None,
            build_version: None,
            product_name: None,
            model: None,
            model_name: None,
            device_name: None,
            imei: None,
            meid: None,
        })
    }

    fn check_out(&self, udid: &Udid) -> CheckinMessage {
        CheckinMessage::CheckOut(CheckOut {
            topic: self.orchard.current_topic(),
            udid: udid.clone(),
            user: None,
        })
    }
}

fn udid() -> Udid {
    Udid::parse(&uuid::Uuid::new_v4().hyphenated().to_string().to_uppercase()).unwrap()
}

fn is_stale_refusal(result: &Result<(), CoreError>) -> bool {
    matches!(result, Err(CoreError::Device(DeviceRejection::UntrustedIdentity(reason))) if reason.contains("freshness"))
}

async fn stale_messages_are_refused(backend: Backend) {
    with_store(backend, |store, scopes| async move {
        let node = node(store, scopes, Some(WINDOW));
        let identity = node.identity().await;
        let ipad = udid();
        let signed_at = SystemClock.now();

        // The server's clock an hour after the signature (a replay): refused, no device.
        node.clock.set(UnixTime(signed_at.0 + 3600));
        let replayed = node.send(&identity, node.authenticate(&ipad)).await;
        assert!(is_stale_refusal(&replayed), "{replayed:?}");
        assert!(node
            .store
            .find_device_by_udid(&ipad)
            .await
            .unwrap()
            .is_none());
        // Twenty minutes before it (a signing time in the server's future): refused too.
        node.clock.set(UnixTime(signed_at.0 - 1200));
        let early = node.send(&identity, node.authenticate(&ipad)).await;
        assert!(is_stale_refusal(&early), "{early:?}");

        // Inside the window: accepted.
        node.clock.set(UnixTime(signed_at.0 + WINDOW / 2));
        node.send(&identity, node.authenticate(&ipad))
            .await
            .unwrap();
        let device = node
            .store
            .find_device_by_udid(&ipad)
            .await
            .unwrap()
            .unwrap();

        // A CheckOut replayed outside the window changes nothing.
        node.clock.set(UnixTime(signed_at.0 + 3600));
        let checkout = node.send(&identity, node.check_out(&ipad)).await;
        assert!(is_stale_refusal(&checkout), "{checkout:?}");
        assert_eq!(
            node.store
                .find_device_by_udid(&ipad)
                .await
                .unwrap()
                .unwrap(),
            device
        );
    })
    .await;
}

async fn the_window_can_be_turned_off(backend: Backend) {
    with_store(backend, |store, scopes| async move {
        let node = node(store, scopes, None);
        let identity = node.identity().await;
        let ipad = udid();
        node.clock.set(UnixTime(SystemClock.now().0 + 3600));
        node.send(&identity, node.authenticate(&ipad))
            .await
            .unwrap();
        assert!(node
            .store
            .find_device_by_udid(&ipad)
            .await
            .unwrap()
            .is_some());
    })
    .await;
}

orchard_testkit::backend_tests! {
    stale_state_changing_checkins_are_refused => stale_messages_are_refused;
    the_replay_window_can_be_turned_off => the_window_can_be_turned_off;
}
