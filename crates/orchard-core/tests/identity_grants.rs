//! Identity grants at Authenticate, in-process on SQLite and PostgreSQL (issue 10): an ADE identity binds only
//! the UDID its MachineInfo named; a renewed identity (SCEP RenewalReq) may bind only the device its predecessor
//! was bound to, and keeps the device in the tenant it is in now; a revoked or replaced identity cannot renew.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use openssl::rsa::Rsa;
use openssl::x509::X509;
use orchard_core::push::PushSettings;
use orchard_core::{secret_hash, CoreError, DeviceRejection, Orchard};
use orchard_pki::scep::{self, CertRepOutcome};
use orchard_pki::signature::sign_mdm_body;
use orchard_pki::Identity;
use orchard_protocol::checkin::{Authenticate, CheckinMessage};
use orchard_store::{EnrollmentLink, IdentityGrant, ScepChallenge, ScopeAuthority, Store, Tenant};
use orchard_testkit::service::{test_config, test_pki};
use orchard_testkit::{with_store, Backend};
use orchard_types::{Clock, EnrollmentLinkId, ManualClock, SystemClock, TenantId, Udid};

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
    /// A device identity bought through SCEP with a fresh challenge of a new link of a new tenant.
    async fn identity(&self) -> Identity {
        self.identity_with(IdentityGrant::Link).await.0
    }

    /// An identity whose challenge carried `grant`, and its tenant.
    async fn identity_with(&self, grant: IdentityGrant) -> (Identity, TenantId) {
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
                grant,
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
        (
            Identity::from_parts(X509::from_der(&der).unwrap(), key).unwrap(),
            tenant.id,
        )
    }

    /// SCEP RenewalReq signed by `current`: the new identity, or None when refused.
    async fn renew(&self, current: &Identity) -> Option<Identity> {
        let key = Rsa::generate(2048)
            .and_then(openssl::pkey::PKey::from_rsa)
            .unwrap();
        let ca_der = self.orchard.ca().cert_der();
        let pending =
            scep::build_renewal_req(&ca_der, &key, current, "ipad", self.clock.now()).unwrap();
        let reply = self
            .orchard
            .scep_pki_operation(&pending.message_der)
            .await
            .unwrap();
        match scep::decode_cert_rep(&pending, &key, &ca_der, &reply.body).unwrap() {
            CertRepOutcome::Success(der) => {
                Some(Identity::from_parts(X509::from_der(&der).unwrap(), key).unwrap())
            }
            _ => None,
        }
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
}

fn udid() -> Udid {
    Udid::parse(&uuid::Uuid::new_v4().hyphenated().to_string().to_uppercase()).unwrap()
}

fn refused_because(result: &Result<(), CoreError>, why: &str) -> bool {
    matches!(result, Err(CoreError::Device(DeviceRejection::UntrustedIdentity(reason))) if reason.contains(why))
}

async fn ade_identity_binds_only_its_udid(backend: Backend) {
    with_store(backend, |store, scopes| async move {
        let node = node(store, scopes, None);
        let (named, other) = (udid(), udid());
        let (identity, tenant) = node
            .identity_with(IdentityGrant::Ade {
                serial: "F9FXK0000042".into(),
                udid: named.clone(),
            })
            .await;
        let refused = node.send(&identity, node.authenticate(&other)).await;
        assert!(
            refused_because(&refused, "ade identity issued for another udid"),
            "{refused:?}"
        );
        assert!(node
            .store
            .find_device_by_udid(&other)
            .await
            .unwrap()
            .is_none());
        node.send(&identity, node.authenticate(&named))
            .await
            .unwrap();
        let device = node
            .store
            .find_device_by_udid(&named)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(device.tenant_id, tenant);
    })
    .await;
}

async fn renewal_rebinds_only_its_device(backend: Backend) {
    with_store(backend, |store, scopes| async move {
        let node = node(store, scopes, None);
        let ipad = udid();
        let first = node.identity().await;
        node.send(&first, node.authenticate(&ipad)).await.unwrap();
        let device = node
            .store
            .find_device_by_udid(&ipad)
            .await
            .unwrap()
            .unwrap();

        // The device is moved to another tenant; its renewed identity rebinds it there and keeps it there.
        let (_, elsewhere) = node.identity_with(IdentityGrant::Link).await;
        let mut unit = node.store.begin_unit().await.unwrap();
        unit.move_device(device.id, elsewhere, true, node.clock.now())
            .await
            .unwrap();
        unit.commit().await.unwrap();
        let renewed = node.renew(&first).await.expect("renewal");
        let spare = node.renew(&first).await.expect("second renewal");
        node.send(&renewed, node.authenticate(&ipad)).await.unwrap();
        let rebound = node
            .store
            .find_device_by_udid(&ipad)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(rebound.id, device.id);
        assert_eq!(rebound.tenant_id, elsewhere);
        assert_ne!(rebound.cert_fingerprint, device.cert_fingerprint);

        // The replaced identity renews nothing any more.
        assert!(
            node.renew(&first).await.is_none(),
            "a replaced identity was renewed"
        );

        // Another renewal of the same device cannot claim another UDID.
        let stranger = udid();
        let refused = node.send(&spare, node.authenticate(&stranger)).await;
        assert!(
            refused_because(&refused, "identity issued for another device"),
            "{refused:?}"
        );
        assert!(node
            .store
            .find_device_by_udid(&stranger)
            .await
            .unwrap()
            .is_none());

        // A revoked identity renews nothing.
        node.store
            .revoke_identity(
                &rebound.cert_fingerprint.clone().unwrap(),
                "suspected_theft",
                node.clock.now(),
            )
            .await
            .unwrap();
        assert!(
            node.renew(&renewed).await.is_none(),
            "a revoked identity was renewed"
        );
    })
    .await;
}

orchard_testkit::backend_tests! {
    ade_identities_bind_only_their_udid => ade_identity_binds_only_its_udid;
    renewed_identities_rebind_only_their_device => renewal_rebinds_only_its_device;
}
