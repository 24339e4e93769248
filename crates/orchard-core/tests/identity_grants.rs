//! Identity grants at Authenticate, in-process on SQLite and PostgreSQL (issue 10): an ADE identity binds only
//! the UDID its MachineInfo named; a renewed identity (SCEP RenewalReq) may bind only the device its predecessor
//! was bound to, and keeps the device in the tenant it is in now; a revoked or replaced identity cannot renew.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use openssl::rsa::Rsa;
use openssl::x509::X509;
use orchard_core::{CoreError, DeviceRejection};
use orchard_pki::scep::{self, CertRepOutcome};
use orchard_pki::Identity;
use orchard_protocol::checkin::{Authenticate, CheckinMessage};
use orchard_store::{IdentityGrant, ScopeAuthority, Store};
use orchard_testkit::service::{random_udid as udid, DeviceNode as Node};
use orchard_testkit::{with_store, Backend};
use orchard_types::{Clock, Udid};

fn node(store: Store, scopes: ScopeAuthority, max_age: Option<i64>) -> Node {
    Node::new(store, scopes, max_age)
}

/// The messages these tests send, on the kit's node.
trait Messages {
    async fn send(&self, identity: &Identity, message: CheckinMessage) -> Result<(), CoreError>;
    async fn renew(&self, current: &Identity) -> Option<Identity>;
    fn authenticate(&self, udid: &Udid) -> CheckinMessage;
}

impl Messages for Node {
    async fn send(&self, identity: &Identity, message: CheckinMessage) -> Result<(), CoreError> {
        self.checkin(identity, &message.encode()).await
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
