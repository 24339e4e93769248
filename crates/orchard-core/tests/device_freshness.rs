//! The replay window of state-changing check-ins (issue 10, finding 4), on SQLite and PostgreSQL, with the
//! server's clock injected: an Authenticate or CheckOut whose Mdm-Signature carries a signing time outside the
//! configured window is refused and changes nothing; inside the window it is accepted; with the check off, any
//! signing time is accepted. (The signer stamps its own clock into signingTime, here OpenSSL's wall clock, so
//! the server's injected clock is set relative to it.)

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use orchard_core::{CoreError, DeviceRejection};
use orchard_pki::Identity;
use orchard_protocol::checkin::{Authenticate, CheckOut, CheckinMessage};
use orchard_store::{ScopeAuthority, Store};
use orchard_testkit::service::{random_udid as udid, DeviceNode as Node};
use orchard_testkit::{with_store, Backend};
use orchard_types::{Clock, SystemClock, Udid, UnixTime};

const WINDOW: i64 = 600;

fn node(store: Store, scopes: ScopeAuthority, max_age: Option<i64>) -> Node {
    Node::new(store, scopes, max_age)
}

/// The messages these tests send, on the kit's node.
trait Messages {
    async fn send(&self, identity: &Identity, message: CheckinMessage) -> Result<(), CoreError>;
    fn authenticate(&self, udid: &Udid) -> CheckinMessage;
    fn check_out(&self, udid: &Udid) -> CheckinMessage;
}

impl Messages for Node {
    async fn send(&self, identity: &Identity, message: CheckinMessage) -> Result<(), CoreError> {
        self.checkin(identity, &message.encode()).await
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
