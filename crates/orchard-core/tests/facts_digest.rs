//! A DeviceInformation answer that repeats what the iPad said before (its battery and free space aside) skips
//! the smart-group re-evaluation and the reconciler's mark, on SQLite and PostgreSQL, with requests signed by
//! an identity our SCEP issued and the server's clock in the test's hand:
//! - the first answer is evaluated in full and leaves a digest; a repeat marks nothing; an OS update is
//!   evaluated again (the device leaves "iOS older than 18.2");
//! - a promoted fact changed by another path (a declarative status report) is not mistaken for "unchanged";
//! - a tenant whose smart groups read facts that change without a report (last seen) evaluates every report,
//!   so a device reporting after the filter's time joins its group;
//! - a new smart group makes the tenant's next reports full evaluations.
//! - an answer that changes facts but none the reconciler's plans read (a new name) re-evaluates the groups and
//!   marks the device only when it joins or leaves one; a new OS version, serial number or Shared iPad state
//!   marks it.
//! - a node keeps its tenants' smart-group filters at the revision the database gave them: an answer that moves
//!   the device in no group is decided from that copy (the groups and memberships are not read), one that
//!   moves it is evaluated in full; a filter changed on another node makes every copy stale at once; an OS
//!   version promoted from a declarative status report makes the next answer a full evaluation.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use orchard_core::access::principal::Principal;
use orchard_core::desired::groups::{GroupInput, GroupUpdate};
use orchard_core::webhooks::NewWebhook;
use orchard_protocol::checkin::{CheckinMessage, DeclarativeManagementCheckin};
use orchard_protocol::commands::decode_command;
use orchard_protocol::report::ReportStatus;
use orchard_store::{Device, Page, ScopeAuthority, Store};
use orchard_testkit::service::{DeviceInformationAnswer, DeviceNode, SignedIpad};
use orchard_testkit::{with_store, Backend};
use orchard_types::{Clock, CommandStatus, DeviceId, GroupId, RequestType, UnixTime};
use serde_json::json;

/// The iPad's DeviceInformation answer in most of these tests: only the OS version and the battery level vary.
fn lab_ipad(os_version: &str, battery_level: f64) -> DeviceInformationAnswer<'_> {
    DeviceInformationAnswer {
        serial_number: "F9FX00000001",
        device_name: "Lab iPad",
        os_version,
        shared_ipad: false,
        battery_level,
    }
}

/// One session: every queued command answered, DeviceInformation with `os_version`.
async fn session(node: &DeviceNode, ipad: &SignedIpad, os_version: &str, battery: f64) {
    session_answering(node, ipad, lab_ipad(os_version, battery)).await;
}

/// One session: every queued command answered, DeviceInformation with `answer`.
async fn session_answering(
    node: &DeviceNode,
    ipad: &SignedIpad,
    answer: DeviceInformationAnswer<'_>,
) {
    node.clock.advance(1);
    let mut next = node
        .report(ipad, ReportStatus::Idle, None, plist::Dictionary::new())
        .await;
    while let Some(plist) = next {
        let (uuid, command) = decode_command(&plist).unwrap();
        let body = if command.kind() == RequestType::DeviceInformation {
            answer.body(&ipad.udid)
        } else {
            plist::Dictionary::new()
        };
        next = node
            .report(ipad, ReportStatus::Acknowledged, Some(uuid), body)
            .await;
    }
}

/// The devices the reconciler would visit now (claimed, so the next call sees only new marks).
async fn marked(store: &Store) -> Vec<DeviceId> {
    let mut unit = store.begin_unit().await.unwrap();
    let claimed = unit.claim_dirty_devices(1000).await.unwrap();
    unit.commit().await.unwrap();
    claimed.iter().map(|d| d.id).collect()
}

/// The device as stored now.
async fn stored(store: &Store, ipad: &SignedIpad) -> Device {
    store
        .find_device_by_udid(&ipad.udid)
        .await
        .unwrap()
        .unwrap()
}

async fn smart_group(
    node: &DeviceNode,
    who: &Principal,
    ipad: &SignedIpad,
    filter: serde_json::Value,
) -> GroupId {
    let view = node
        .orchard
        .create_group(
            who,
            ipad.tenant,
            GroupInput {
                name: format!("group {}", uuid::Uuid::new_v4()),
                kind: "smart".into(),
                filter: Some(filter),
            },
        )
        .await
        .unwrap();
    view.id.parse().unwrap()
}

async fn members(
    node: &DeviceNode,
    who: &Principal,
    ipad: &SignedIpad,
    group: GroupId,
) -> Vec<String> {
    let (members, _) = node
        .orchard
        .group_members(who, ipad.tenant, group, 100, 0)
        .await
        .unwrap();
    members.into_iter().map(|m| m.device_id).collect()
}

/// A node with an operator, one enrolled iPad and a smart group of its tenant with `filter`.
async fn enrolled_with_group(
    store: &Store,
    scopes: &ScopeAuthority,
    filter: serde_json::Value,
) -> (DeviceNode, Principal, SignedIpad, GroupId) {
    let node = DeviceNode::new(store.clone(), scopes.clone(), None);
    let operator = node.operator(scopes).await;
    let ipad = node.enroll_ipad().await;
    let group = smart_group(&node, &operator, &ipad, filter).await;
    (node, operator, ipad, group)
}

async fn repeated_answers_skip_the_reevaluation(backend: Backend) {
    with_store(backend, |store, scopes| async move {
        let (node, operator, ipad, older) = enrolled_with_group(
            &store,
            &scopes,
            json!({"match": "all", "conditions": [{"field": "os_version", "op": "lt", "value": "18.2"}]}),
        )
        .await;

        // The enrollment's inventory: evaluated in full, a digest kept, the device in the group.
        session(&node, &ipad, "18.1", 0.50).await;
        assert!(marked(&store).await.contains(&ipad.device_id));
        let first = stored(&store, &ipad).await.facts_digest;
        assert!(first.as_deref().is_some_and(|d| d.starts_with("v1:")), "{first:?}");
        assert_eq!(members(&node, &operator, &ipad, older).await, vec![ipad.device_id.to_string()]);

        // The same facts, another battery level: nothing to re-evaluate, no mark, the same digest.
        node.ask_inventory(&operator, &ipad).await;
        session(&node, &ipad, "18.1", 0.93).await;
        assert_eq!(marked(&store).await, Vec::<DeviceId>::new());
        assert_eq!(stored(&store, &ipad).await.facts_digest, first);
        let device = stored(&store, &ipad).await;
        assert_eq!(device.os_version.as_deref(), Some("18.1"));

        // An update: evaluated again, the device leaves "older than 18.2".
        node.ask_inventory(&operator, &ipad).await;
        session(&node, &ipad, "18.2", 0.93).await;
        assert_eq!(marked(&store).await, vec![ipad.device_id]);
        assert_ne!(stored(&store, &ipad).await.facts_digest, first);
        assert!(members(&node, &operator, &ipad, older).await.is_empty());

        // Another path moves a promoted fact (a declarative status report says 18.3); an answer that repeats
        // the last DeviceInformation (18.2) moves it back, so it is evaluated even though its digest is the same.
        let mut unit = store.begin_unit().await.unwrap();
        unit.update_device_facts(
            ipad.device_id,
            &orchard_store::DeviceFacts {
                os_version: Some("18.3".into()),
                ..orchard_store::DeviceFacts::default()
            },
            node.clock.now(),
        )
        .await
        .unwrap();
        unit.commit().await.unwrap();
        node.ask_inventory(&operator, &ipad).await;
        session(&node, &ipad, "18.2", 0.40).await;
        assert_eq!(marked(&store).await, vec![ipad.device_id]);

        // A smart group over "last seen" (a fact no report repeats): the tenant's digests are forgotten and
        // every report is evaluated, so the device joins once it reports after the filter's time.
        let after = node.clock.now().0 + 3_600;
        let recent = smart_group(
            &node,
            &operator,
            &ipad,
            json!({"match": "all", "conditions": [{"field": "last_seen", "op": "after", "value": after}]}),
        )
        .await;
        assert_eq!(stored(&store, &ipad).await.facts_digest, None);
        assert!(members(&node, &operator, &ipad, recent).await.is_empty());
        // Evaluated, but it joins nothing yet and no plan input changed: no mark (the join below shows the
        // evaluation runs).
        node.ask_inventory(&operator, &ipad).await;
        session(&node, &ipad, "18.2", 0.40).await;
        assert_eq!(marked(&store).await, Vec::<DeviceId>::new());
        assert_eq!(stored(&store, &ipad).await.facts_digest, None);
        node.clock.advance(2 * 3_600);
        node.ask_inventory(&operator, &ipad).await;
        session(&node, &ipad, "18.2", 0.40).await;
        assert_eq!(marked(&store).await, vec![ipad.device_id]);
        assert_eq!(
            members(&node, &operator, &ipad, recent).await,
            vec![ipad.device_id.to_string()]
        );
    })
    .await;
}

/// The usual inventory answer (its facts repeated, no webhook endpoint enabled) is stored whole without the
/// general path's unit: its command acknowledged with the raw answer, the inventory section replaced (the new
/// battery level), the device's time moved on. With an endpoint enabled, the general path stores it and its
/// `command.result` event is written.
async fn a_repeated_answer_is_stored_whole(backend: Backend) {
    with_store(backend, |store, scopes| async move {
        let node = DeviceNode::new(store.clone(), scopes.clone(), None);
        let operator = node.operator(&scopes).await;
        let ipad = node.enroll_ipad().await;
        session(&node, &ipad, "18.1", 0.50).await;
        let digest = stored(&store, &ipad).await.facts_digest;

        let latest_answer = || {
            let (store, scopes) = (store.clone(), scopes.clone());
            let device = ipad.device_id;
            async move {
                let commands = store
                    .list_commands(scopes.all_tenants(), device, Page::default())
                    .await
                    .unwrap();
                let latest = commands.first().unwrap().clone();
                assert_eq!(latest.request_type, RequestType::DeviceInformation);
                let inventory = store
                    .get_inventory(scopes.all_tenants(), device)
                    .await
                    .unwrap();
                let section = inventory
                    .into_iter()
                    .find(|s| s.section == "device_information")
                    .unwrap();
                (latest, section)
            }
        };
        for battery in [0.93, 0.27] {
            node.ask_inventory(&operator, &ipad).await;
            session(&node, &ipad, "18.1", battery).await;
            let now = node.clock.now();
            let (command, section) = latest_answer().await;
            assert_eq!(command.status, CommandStatus::Acknowledged);
            assert_eq!(command.completed_at, Some(now));
            assert_eq!(command.error_chain, None);
            let raw = String::from_utf8(command.result.unwrap()).unwrap();
            assert!(raw.contains(&battery.to_string()), "{raw}");
            assert!(
                section.json.contains(&battery.to_string()),
                "{}",
                section.json
            );
            assert_eq!(section.updated_at, now);
            let device = stored(&store, &ipad).await;
            assert_eq!(device.updated_at, now);
            assert_eq!(device.facts_digest, digest);
        }

        let hook = node
            .orchard
            .create_tenant_webhook(
                &operator,
                ipad.tenant,
                &NewWebhook {
                    url: "https://hooks.example.edu/orchard".into(),
                    event_types: vec!["command.result".into()],
                    enabled: None,
                },
            )
            .await
            .unwrap();
        node.ask_inventory(&operator, &ipad).await;
        session(&node, &ipad, "18.1", 0.61).await;
        let (command, section) = latest_answer().await;
        assert_eq!(command.status, CommandStatus::Acknowledged);
        assert!(section.json.contains("0.61"), "{}", section.json);
        let deliveries = node
            .orchard
            .tenant_webhook_deliveries(&operator, ipad.tenant, hook.webhook.id.parse().unwrap())
            .await
            .unwrap();
        assert_eq!(
            deliveries
                .iter()
                .filter(|d| d.event_type == "command.result")
                .count(),
            1,
            "{deliveries:?}"
        );
    })
    .await;
}

#[tokio::test]
async fn a_repeated_answer_is_stored_whole_on_sqlite() {
    a_repeated_answer_is_stored_whole(Backend::Sqlite).await;
}

#[tokio::test]
async fn a_repeated_answer_is_stored_whole_on_postgres() {
    a_repeated_answer_is_stored_whole(Backend::Postgres).await;
}

/// A Lab iPad on 18.1 named `name`, with `serial_number`, Shared or not.
fn named<'a>(
    name: &'a str,
    serial_number: &'a str,
    shared_ipad: bool,
) -> DeviceInformationAnswer<'a> {
    DeviceInformationAnswer {
        serial_number,
        device_name: name,
        shared_ipad,
        ..lab_ipad("18.1", 0.5)
    }
}

async fn answers_that_change_no_plan_input_mark_only_on_a_group_move(backend: Backend) {
    with_store(backend, |store, scopes| async move {
        let (node, operator, ipad, carts) = enrolled_with_group(
            &store,
            &scopes,
            json!({"match": "all", "conditions": [{"field": "device_name", "op": "matches", "value": "Cart *"}]}),
        )
        .await;

        // The first answer marks the device: nothing was known of what its plans read.
        session_answering(&node, &ipad, named("Lab iPad", "F9FX00000001", false)).await;
        assert!(marked(&store).await.contains(&ipad.device_id));
        let inputs = stored(&store, &ipad).await.plan_inputs_digest;
        assert!(inputs.as_deref().is_some_and(|d| d.starts_with("v1:")), "{inputs:?}");
        let facts = stored(&store, &ipad).await.facts_digest;

        // Renamed, in no group's pattern: its facts changed (a new facts digest, the name stored, the groups
        // re-evaluated), none its plans read did: no mark, so no reconciler pass.
        node.ask_inventory(&operator, &ipad).await;
        session_answering(&node, &ipad, named("Lab iPad 2", "F9FX00000001", false)).await;
        assert_eq!(marked(&store).await, Vec::<DeviceId>::new());
        let device = stored(&store, &ipad).await;
        assert_eq!(device.device_name.as_deref(), Some("Lab iPad 2"));
        assert_ne!(device.facts_digest, facts);
        assert_eq!(device.plan_inputs_digest, inputs);
        assert!(members(&node, &operator, &ipad, carts).await.is_empty());

        // Renamed into the carts' pattern: it joins the group, and is marked so its plans see the group. Renamed
        // out again: it leaves, marked again.
        node.ask_inventory(&operator, &ipad).await;
        session_answering(&node, &ipad, named("Cart 7", "F9FX00000001", false)).await;
        assert_eq!(marked(&store).await, vec![ipad.device_id]);
        assert_eq!(
            members(&node, &operator, &ipad, carts).await,
            vec![ipad.device_id.to_string()]
        );
        node.ask_inventory(&operator, &ipad).await;
        session_answering(&node, &ipad, named("Lab iPad 3", "F9FX00000001", false)).await;
        assert_eq!(marked(&store).await, vec![ipad.device_id]);
        assert!(members(&node, &operator, &ipad, carts).await.is_empty());

        // What the plans read, in no group's range: becoming a Shared iPad (its settings step), a new serial
        // number (app licences go by serial), an OS update (profiles as declarations): marked each time.
        node.ask_inventory(&operator, &ipad).await;
        session_answering(&node, &ipad, named("Lab iPad 3", "F9FX00000001", true)).await;
        assert_eq!(marked(&store).await, vec![ipad.device_id]);
        node.ask_inventory(&operator, &ipad).await;
        session_answering(&node, &ipad, named("Lab iPad 3", "F9FX00000002", true)).await;
        assert_eq!(marked(&store).await, vec![ipad.device_id]);
        node.ask_inventory(&operator, &ipad).await;
        session_answering(
            &node,
            &ipad,
            DeviceInformationAnswer {
                os_version: "18.1.1",
                ..named("Lab iPad 3", "F9FX00000002", true)
            },
        )
        .await;
        assert_eq!(marked(&store).await, vec![ipad.device_id]);
        assert_ne!(stored(&store, &ipad).await.plan_inputs_digest, inputs);
    })
    .await;
}

/// Puts the device in or out of `group` behind Orchard's back (a membership no evaluation wrote), so a test can
/// see whether an answer was evaluated in full (which puts it right) or decided from the node's copy.
async fn tamper(store: &Store, ipad: &SignedIpad, group: GroupId, member: bool, now: UnixTime) {
    let devices = std::collections::BTreeSet::from([ipad.device_id]);
    let mut unit = store.begin_unit().await.unwrap();
    if member {
        unit.add_group_members(group, &devices, now).await.unwrap();
    } else {
        unit.remove_group_members(group, &devices, now)
            .await
            .unwrap();
    }
    unit.commit().await.unwrap();
}

async fn a_node_decides_from_its_copy_of_the_filters(backend: Backend) {
    with_store(backend, |store, scopes| async move {
        let (node, operator, ipad, carts) = enrolled_with_group(
            &store,
            &scopes,
            json!({"conditions": [{"field": "device_name", "op": "matches", "value": "Cart *"}]}),
        )
        .await;
        let older = smart_group(
            &node,
            &operator,
            &ipad,
            json!({"conditions": [{"field": "os_version", "op": "lt", "value": "18.2"}]}),
        )
        .await;
        // Evaluated in full (no digest yet): in "older than 18.2", and the node keeps the tenant's filters.
        session_answering(&node, &ipad, named("Lab iPad", "F9FX00000001", false)).await;
        let me = vec![ipad.device_id.to_string()];
        assert_eq!(members(&node, &operator, &ipad, older).await, me);
        assert!(marked(&store).await.contains(&ipad.device_id));

        // Taken out of "older" behind Orchard's back. A rename that no filter reads differently is decided from
        // the copy: stored, not marked (no plan input changed), and the memberships not read (a full
        // evaluation would have put the device back).
        tamper(&store, &ipad, older, false, node.clock.now()).await;
        node.ask_inventory(&operator, &ipad).await;
        session_answering(&node, &ipad, named("Lab iPad 2", "F9FX00000001", false)).await;
        assert_eq!(
            stored(&store, &ipad).await.device_name.as_deref(),
            Some("Lab iPad 2")
        );
        assert!(members(&node, &operator, &ipad, older).await.is_empty());
        assert_eq!(marked(&store).await, Vec::<DeviceId>::new());

        // An OS update inside the group's range changes a plan input: decided from the copy too, and marked.
        node.ask_inventory(&operator, &ipad).await;
        session_answering(
            &node,
            &ipad,
            DeviceInformationAnswer {
                os_version: "18.1.1",
                ..named("Lab iPad 2", "F9FX00000001", false)
            },
        )
        .await;
        assert_eq!(marked(&store).await, vec![ipad.device_id]);
        assert!(members(&node, &operator, &ipad, older).await.is_empty());

        // A rename into the carts' pattern moves the device: evaluated in full, it joins the carts and is back in
        // "older", and marked.
        node.ask_inventory(&operator, &ipad).await;
        session_answering(
            &node,
            &ipad,
            DeviceInformationAnswer {
                os_version: "18.1.1",
                ..named("Cart 7", "F9FX00000001", false)
            },
        )
        .await;
        assert_eq!(members(&node, &operator, &ipad, carts).await, me);
        assert_eq!(members(&node, &operator, &ipad, older).await, me);
        assert_eq!(marked(&store).await, vec![ipad.device_id]);

        // An OS update out of "older": the copy shows the move, the device leaves.
        node.ask_inventory(&operator, &ipad).await;
        session_answering(
            &node,
            &ipad,
            DeviceInformationAnswer {
                os_version: "18.2",
                ..named("Cart 7", "F9FX00000001", false)
            },
        )
        .await;
        assert!(members(&node, &operator, &ipad, older).await.is_empty());
        assert_eq!(members(&node, &operator, &ipad, carts).await, me);
    })
    .await;
}

async fn a_filter_changed_on_another_node_makes_the_copy_stale(backend: Backend) {
    with_store(backend, |store, scopes| async move {
        let (node, operator, ipad, carts) = enrolled_with_group(
            &store,
            &scopes,
            json!({"conditions": [{"field": "device_name", "op": "matches", "value": "Cart *"}]}),
        )
        .await;
        // This node evaluates the first answer in full and keeps the filter "Cart *".
        session_answering(&node, &ipad, named("Lab iPad", "F9FX00000001", false)).await;
        assert!(members(&node, &operator, &ipad, carts).await.is_empty());

        // Another node refilters the group to "Lab 5*" and evaluates the device's next answer (in full: the
        // change forgot every digest of the tenant), which leaves a digest again.
        let other = node.another_node(scopes.clone());
        other
            .orchard
            .update_group(
                &operator,
                ipad.tenant,
                carts,
                GroupUpdate {
                    name: None,
                    filter: Some(
                        json!({"conditions": [{"field": "device_name", "op": "matches", "value": "Lab 5*"}]}),
                    ),
                },
            )
            .await
            .unwrap();
        other.ask_inventory(&operator, &ipad).await;
        session_answering(&other, &ipad, named("Lab iPad", "F9FX00000001", false)).await;
        assert!(stored(&store, &ipad).await.facts_digest.is_some());
        assert!(members(&node, &operator, &ipad, carts).await.is_empty());

        // Renamed "Lab 5" through the first node, whose copy ("Cart *") says no group moves: its revision is
        // stale, so the answer is evaluated in full and the device joins the refiltered group.
        node.ask_inventory(&operator, &ipad).await;
        session_answering(&node, &ipad, named("Lab 5", "F9FX00000001", false)).await;
        assert_eq!(
            members(&node, &operator, &ipad, carts).await,
            vec![ipad.device_id.to_string()]
        );

        // Deleting a smart group on the other node raises the revision too.
        let before = tenant_revision(&store, &ipad).await;
        let spare = smart_group(
            &other,
            &operator,
            &ipad,
            json!({"conditions": [{"field": "supervised", "op": "is", "value": true}]}),
        )
        .await;
        let created = tenant_revision(&store, &ipad).await;
        assert!(created > before, "{before} then {created}");
        other
            .orchard
            .delete_group(&operator, ipad.tenant, spare)
            .await
            .unwrap();
        assert!(tenant_revision(&store, &ipad).await > created);
    })
    .await;
}

/// The revision of the iPad's tenant's smart groups as the device's standing reads it.
async fn tenant_revision(store: &Store, ipad: &SignedIpad) -> i64 {
    let mut unit = store.begin_unit().await.unwrap();
    let standing = unit
        .read_device_standing(ipad.device_id, ipad.tenant, None)
        .await
        .unwrap();
    unit.rollback().await.unwrap();
    standing
        .smart_groups_revision
        .expect("a group to read it with")
}

async fn a_status_report_os_version_makes_the_next_answer_a_full_evaluation(backend: Backend) {
    with_store(backend, |store, scopes| async move {
        let (node, operator, ipad, older) = enrolled_with_group(
            &store,
            &scopes,
            json!({"conditions": [{"field": "os_version", "op": "lt", "value": "18.2"}]}),
        )
        .await;
        session_answering(&node, &ipad, named("Lab iPad", "F9FX00000001", false)).await;
        let me = vec![ipad.device_id.to_string()];
        assert_eq!(members(&node, &operator, &ipad, older).await, me);

        // The iPad's declarative status says 18.3: the row's OS changes without a group evaluation, and the
        // digest of the last answer is forgotten.
        let status = json!({
            "StatusItems": {"device": {"operating-system": {"version": "18.3", "build-version": "22D60"}}},
            "Errors": []
        });
        let message = CheckinMessage::DeclarativeManagement(DeclarativeManagementCheckin {
            udid: ipad.udid.clone(),
            endpoint: "status".into(),
            data: Some(serde_json::to_vec(&status).unwrap()),
            user: None,
        });
        node.checkin(&ipad.identity, &message.encode()).await.unwrap();
        let device = stored(&store, &ipad).await;
        assert_eq!(device.os_version.as_deref(), Some("18.3"));
        assert_eq!(device.facts_digest, None);

        // An answer saying 18.3 too: the row and the answer agree, so only a full evaluation (not the node's
        // copy) takes the device out of "older".
        node.ask_inventory(&operator, &ipad).await;
        session_answering(
            &node,
            &ipad,
            DeviceInformationAnswer {
                os_version: "18.3",
                ..named("Lab iPad 2", "F9FX00000001", false)
            },
        )
        .await;
        assert!(members(&node, &operator, &ipad, older).await.is_empty());
    })
    .await;
}

#[tokio::test]
async fn a_node_decides_from_its_copy_of_the_filters_on_sqlite() {
    a_node_decides_from_its_copy_of_the_filters(Backend::Sqlite).await;
}

#[tokio::test]
async fn a_node_decides_from_its_copy_of_the_filters_on_postgres() {
    a_node_decides_from_its_copy_of_the_filters(Backend::Postgres).await;
}

#[tokio::test]
async fn a_filter_changed_on_another_node_makes_the_copy_stale_on_sqlite() {
    a_filter_changed_on_another_node_makes_the_copy_stale(Backend::Sqlite).await;
}

#[tokio::test]
async fn a_filter_changed_on_another_node_makes_the_copy_stale_on_postgres() {
    a_filter_changed_on_another_node_makes_the_copy_stale(Backend::Postgres).await;
}

#[tokio::test]
async fn a_status_report_os_version_makes_the_next_answer_a_full_evaluation_on_sqlite() {
    a_status_report_os_version_makes_the_next_answer_a_full_evaluation(Backend::Sqlite).await;
}

#[tokio::test]
async fn a_status_report_os_version_makes_the_next_answer_a_full_evaluation_on_postgres() {
    a_status_report_os_version_makes_the_next_answer_a_full_evaluation(Backend::Postgres).await;
}

#[tokio::test]
async fn answers_that_change_no_plan_input_mark_only_on_a_group_move_on_sqlite() {
    answers_that_change_no_plan_input_mark_only_on_a_group_move(Backend::Sqlite).await;
}

#[tokio::test]
async fn answers_that_change_no_plan_input_mark_only_on_a_group_move_on_postgres() {
    answers_that_change_no_plan_input_mark_only_on_a_group_move(Backend::Postgres).await;
}

#[tokio::test]
async fn repeated_answers_skip_the_reevaluation_on_sqlite() {
    repeated_answers_skip_the_reevaluation(Backend::Sqlite).await;
}

#[tokio::test]
async fn repeated_answers_skip_the_reevaluation_on_postgres() {
    repeated_answers_skip_the_reevaluation(Backend::Postgres).await;
}
