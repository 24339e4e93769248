//! A device in the reconciler's work set plans its own commands when it connects, on SQLite and PostgreSQL,
//! with requests signed by an identity our SCEP issued and no reconciler pass run:
//! - an assignment's device gets its InstallProfile in the answer to its first Idle, and the pass that later
//!   reaches the work set finds nothing left to queue (one install in the device's history);
//! - a device's arrival plans only that device: another marked device stays in the work set;
//! - (PostgreSQL) while a pass holds the device's mark, the device's request is answered without waiting for
//!   that pass, and plans nothing; once the pass is gone (rolled back), the next request plans it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use orchard_core::access::bootstrap::LocalBootstrap;
use orchard_core::access::principal::Principal;
use orchard_core::desired::assignments::AssignmentInput;
use orchard_core::desired::profiles::ProfileInput;
use orchard_protocol::commands::{decode_command, Command};
use orchard_protocol::report::ReportStatus;
use orchard_store::{Page, Store};
use orchard_testkit::service::{DeviceNode, SignedIpad};
use orchard_testkit::{with_store, Backend};
use orchard_types::{CommandUuid, RequestType};
use serde_json::json;

const IDENTIFIER: &str = "edu.example.arrival";

async fn report(
    node: &DeviceNode,
    ipad: &SignedIpad,
    status: ReportStatus,
    uuid: Option<CommandUuid>,
) -> Option<(CommandUuid, Command)> {
    node.report(ipad, status, uuid, plist::Dictionary::new())
        .await
        .map(|plist| decode_command(&plist).unwrap())
}

/// One session: every command answered Acknowledged; returns the commands in the order they came.
async fn session(node: &DeviceNode, ipad: &SignedIpad) -> Vec<Command> {
    let mut seen = Vec::new();
    let mut next = report(node, ipad, ReportStatus::Idle, None).await;
    while let Some((uuid, command)) = next {
        seen.push(command);
        next = report(node, ipad, ReportStatus::Acknowledged, Some(uuid)).await;
    }
    seen
}

fn installs_of(commands: &[Command]) -> usize {
    commands
        .iter()
        .filter(|c| c.kind() == RequestType::InstallProfile)
        .count()
}

/// Whether the device is in the work set (read, not claimed).
async fn is_marked(store: &Store, ipad: &SignedIpad) -> bool {
    let mut unit = store.begin_unit().await.unwrap();
    let found = unit
        .claim_dirty_devices(1_000)
        .await
        .unwrap()
        .iter()
        .any(|d| d.id == ipad.device_id);
    unit.rollback().await.unwrap();
    found
}

async fn install_history(node: &DeviceNode, who: &Principal, ipad: &SignedIpad) -> usize {
    node.orchard
        .command_history(
            who,
            ipad.device_id,
            Page {
                limit: 100,
                offset: 0,
            },
        )
        .await
        .unwrap()
        .iter()
        .filter(|c| c.request_type == RequestType::InstallProfile.as_str())
        .count()
}

async fn planned_on_arrival(backend: Backend) {
    with_store(backend, |store, scopes| async move {
        let node = DeviceNode::new(store.clone(), scopes.clone(), None);
        let bootstrap = LocalBootstrap::for_opened_database(
            store.clone(),
            scopes.clone(),
            Arc::new(node.clock.clone()),
        );
        let operator = bootstrap.operator().unwrap();
        let who = operator.principal().clone();
        let first = node.enroll_ipad().await;
        let second = node.enroll_ipad().await;
        // Whatever enrollment queued is delivered and the work set is empty before the assignment.
        session(&node, &first).await;
        session(&node, &second).await;
        let system = node.orchard.system();
        while node.orchard.reconcile_once(&system).await.unwrap().devices > 0 {}

        let profile = node
            .orchard
            .create_global_profile(
                &operator,
                ProfileInput::Json(
                    serde_json::from_value(json!({
                        "name": "Lab Wi-Fi", "identifier": IDENTIFIER,
                        "payloads": [{"PayloadType": "com.apple.wifi.managed", "SSID_STR": "lab"}]
                    }))
                    .unwrap(),
                ),
            )
            .await
            .unwrap();
        for ipad in [&first, &second] {
            node.orchard
                .create_assignment(
                    &who,
                    ipad.tenant,
                    serde_json::from_value::<AssignmentInput>(json!({
                        "object_kind": "profile", "object_id": profile.profile.id, "all_devices": true
                    }))
                    .unwrap(),
                )
                .await
                .unwrap();
        }
        assert!(is_marked(&store, &first).await);
        assert!(is_marked(&store, &second).await);

        // The first iPad connects before any pass: its Idle is answered with the install.
        let delivered = session(&node, &first).await;
        assert_eq!(installs_of(&delivered), 1, "{delivered:?}");
        let Some(Command::InstallProfile { .. }) = delivered.first() else {
            panic!("the first answer is the install: {delivered:?}");
        };
        // Its arrival planned only itself.
        assert!(is_marked(&store, &second).await);

        // The pass reaches the work set (the first iPad is in it again: its acknowledgement marked it): the
        // second iPad gets its install, the first nothing more.
        let stats = node.orchard.reconcile_once(&system).await.unwrap();
        assert_eq!(stats.queued, 1, "{stats:?}");
        assert_eq!(installs_of(&session(&node, &second).await), 1);
        assert_eq!(install_history(&node, &who, &first).await, 1);
        assert_eq!(install_history(&node, &who, &second).await, 1);
        assert!(session(&node, &first).await.is_empty());

        if backend == Backend::Postgres {
            // A new version marks both again. A pass holds the first iPad's mark: its request is answered
            // without waiting for that pass and plans nothing.
            node.orchard
                .add_global_profile_version(
                    &operator,
                    profile.profile.id.parse().unwrap(),
                    ProfileInput::Json(
                        serde_json::from_value(json!({
                            "name": "Lab Wi-Fi", "identifier": IDENTIFIER,
                            "payloads": [{"PayloadType": "com.apple.wifi.managed", "SSID_STR": "lab-2"}]
                        }))
                        .unwrap(),
                    ),
                )
                .await
                .unwrap();
            let mut pass = store.begin_unit().await.unwrap();
            let held = pass.claim_dirty_devices(1_000).await.unwrap();
            assert!(held.iter().any(|d| d.id == first.device_id));
            let answered = tokio::time::timeout(
                Duration::from_secs(60),
                report(&node, &first, ReportStatus::Idle, None),
            )
            .await
            .expect("the request waited for the pass holding its mark");
            assert!(answered.is_none(), "{answered:?}");
            // The pass goes away without queueing: the mark is back, and the next request plans it.
            pass.rollback().await.unwrap();
            let delivered = session(&node, &first).await;
            assert_eq!(installs_of(&delivered), 1, "{delivered:?}");
            assert_eq!(install_history(&node, &who, &first).await, 2);
        }
    })
    .await;
}

#[tokio::test]
async fn planned_on_arrival_on_sqlite() {
    planned_on_arrival(Backend::Sqlite).await;
}

#[tokio::test]
async fn planned_on_arrival_on_postgres() {
    planned_on_arrival(Backend::Postgres).await;
}
