//! A failed command-driven OS update (an iPad older than iOS 17) is tried again by the retry job once its
//! backoff has passed, not by every inventory that repeats the iPad's facts, on SQLite and PostgreSQL, with
//! requests signed by an identity our SCEP issued and the server's clock in the test's hand:
//! - the policy queues AvailableOSUpdates; the iPad answers it with an error: the update is failed;
//! - a DeviceInformation answer that repeats the facts, or changes only the name, queues nothing (it no longer
//!   re-evaluates the OS);
//! - the retry job does nothing before the backoff, queues AvailableOSUpdates once after it, and claims
//!   nothing again while that one waits;
//! - an answer that changes the OS version is evaluated as before (the iPad now on target: nothing queued,
//!   and the compliance view says current).
//!
//! And an answer that changes the OS of an iPad whose tenant has no OS policy (and whose device channel is not
//! declarative) skips the evaluation's reads, which would find nothing to do; the policy, once saved, evaluates
//! the iPad itself, and from then on an OS change is evaluated again.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use orchard_core::access::principal::Principal;
use orchard_core::jobs::{OsUpdateRetryJob, Step, StepOutcome, Worker};
use orchard_core::osupdate::OsPolicyInput;
use orchard_protocol::commands::decode_command;
use orchard_protocol::report::ReportStatus;
use orchard_store::Page;
use orchard_testkit::service::{DeviceInformationAnswer, DeviceNode, SignedIpad};
use orchard_testkit::{with_store, Backend};
use orchard_types::RequestType;

/// The backoff of a failed update (`osupdate::legacy::RETRY_FAILED_AFTER_SECONDS`).
const BACKOFF: i64 = 6 * 3600;

fn old_ipad(os_version: &str) -> DeviceInformationAnswer<'_> {
    DeviceInformationAnswer {
        serial_number: "F9FX00000016",
        device_name: "Library iPad",
        os_version,
        shared_ipad: false,
        battery_level: 0.5,
    }
}

/// One session: DeviceInformation answered with `answer`, AvailableOSUpdates refused with an error, anything
/// else acknowledged empty.
async fn session(node: &DeviceNode, ipad: &SignedIpad, answer: DeviceInformationAnswer<'_>) {
    node.clock.advance(1);
    let mut next = node
        .report(ipad, ReportStatus::Idle, None, plist::Dictionary::new())
        .await;
    while let Some(plist) = next {
        let (uuid, command) = decode_command(&plist).unwrap();
        let (status, body) = match command.kind() {
            RequestType::DeviceInformation => (ReportStatus::Acknowledged, answer.body(&ipad.udid)),
            RequestType::AvailableOSUpdates => (ReportStatus::Error, plist::Dictionary::new()),
            _ => (ReportStatus::Acknowledged, plist::Dictionary::new()),
        };
        next = node.report(ipad, status, Some(uuid), body).await;
    }
}

/// The statuses of the device's AvailableOSUpdates commands, oldest first.
async fn availability_checks(node: &DeviceNode, who: &Principal, ipad: &SignedIpad) -> Vec<String> {
    let mut statuses: Vec<(String, String)> = node
        .orchard
        .command_history(who, ipad.device_id, Page::default())
        .await
        .unwrap()
        .into_iter()
        .filter(|c| c.request_type == "AvailableOSUpdates")
        .map(|c| (c.queued_at, c.status.to_owned()))
        .collect();
    statuses.sort();
    statuses.into_iter().map(|(_, s)| s).collect()
}

/// One step of the retry job as the worker runs it (cluster lease in `job_runs`).
/// The iPad's tenant pins iPadOS 18.2 (a deadline far away).
async fn pin_ios_18_2(node: &DeviceNode, operator: &Principal, ipad: &SignedIpad) {
    node.orchard
        .put_os_policy(
            operator,
            ipad.tenant,
            OsPolicyInput {
                target: "pinned".into(),
                version: Some("18.2".into()),
                build: None,
                deadline: "2099-01-01T09:00:00".into(),
                details_url: None,
            },
        )
        .await
        .unwrap();
}

async fn retry_step(node: &DeviceNode, worker: &Worker) -> Step {
    let job = OsUpdateRetryJob::new(node.orchard.clone(), node.orchard.system());
    match worker.step(&job).await {
        StepOutcome::Ran(step) => step,
        other => panic!("retry job: {other:?}"),
    }
}

async fn the_retry_job_retries_failed_updates(backend: Backend) {
    with_store(backend, |store, scopes| async move {
        let node = DeviceNode::new(store.clone(), scopes.clone(), None);
        let operator = node.operator(&scopes).await;
        let (_stop, shutdown) = tokio::sync::watch::channel(());
        let worker = Worker::new(node.orchard.clone(), node.orchard.system(), shutdown);
        let ipad = node.enroll_ipad().await;
        // The enrollment's inventory: an iPad on iOS 16.
        session(&node, &ipad, old_ipad("16.7")).await;

        pin_ios_18_2(&node, &operator, &ipad).await;
        assert_eq!(
            availability_checks(&node, &operator, &ipad).await,
            ["queued"]
        );
        session(&node, &ipad, old_ipad("16.7")).await;
        assert_eq!(
            availability_checks(&node, &operator, &ipad).await,
            ["error"]
        );
        let compliance = node
            .orchard
            .os_compliance(&operator, ipad.tenant)
            .await
            .unwrap();
        assert_eq!(compliance.devices[0].state, "failed", "{compliance:?}");

        // An inventory that repeats the facts is not a retry, nor one that renames the iPad (its OS version and
        // model, what the evaluation reads, are the same).
        node.ask_inventory(&operator, &ipad).await;
        session(&node, &ipad, old_ipad("16.7")).await;
        assert_eq!(
            availability_checks(&node, &operator, &ipad).await,
            ["error"]
        );
        node.ask_inventory(&operator, &ipad).await;
        let renamed = DeviceInformationAnswer {
            device_name: "Library iPad 2",
            ..old_ipad("16.7")
        };
        session(&node, &ipad, renamed).await;
        assert_eq!(
            availability_checks(&node, &operator, &ipad).await,
            ["error"]
        );

        // The job: nothing before the backoff, one AvailableOSUpdates after it, nothing again while it waits.
        assert!(matches!(retry_step(&node, &worker).await, Step::Idle));
        assert_eq!(
            availability_checks(&node, &operator, &ipad).await,
            ["error"]
        );
        node.clock.advance(BACKOFF);
        // The job's own interval has passed too (a cluster job runs once per interval).
        retry_step(&node, &worker).await;
        assert_eq!(
            availability_checks(&node, &operator, &ipad).await,
            ["error", "queued"]
        );
        node.clock.advance(BACKOFF);
        retry_step(&node, &worker).await;
        assert_eq!(
            availability_checks(&node, &operator, &ipad).await,
            ["error", "queued"]
        );
        let compliance = node
            .orchard
            .os_compliance(&operator, ipad.tenant)
            .await
            .unwrap();
        assert_eq!(compliance.devices[0].state, "behind", "{compliance:?}");

        // The iPad updated by itself: its inventory says so and is evaluated (nothing more to queue).
        session(&node, &ipad, old_ipad("16.7")).await;
        node.ask_inventory(&operator, &ipad).await;
        session(&node, &ipad, old_ipad("18.2")).await;
        let compliance = node
            .orchard
            .os_compliance(&operator, ipad.tenant)
            .await
            .unwrap();
        assert_eq!(compliance.devices[0].state, "current", "{compliance:?}");
        node.clock.advance(BACKOFF);
        retry_step(&node, &worker).await;
        assert_eq!(
            availability_checks(&node, &operator, &ipad).await,
            ["error", "error"]
        );
    })
    .await;
}

#[tokio::test]
async fn sqlite_the_retry_job_retries_failed_updates() {
    the_retry_job_retries_failed_updates(Backend::Sqlite).await;
}

#[tokio::test]
async fn postgres_the_retry_job_retries_failed_updates() {
    the_retry_job_retries_failed_updates(Backend::Postgres).await;
}

async fn an_os_change_is_evaluated_once_the_tenant_has_a_policy(backend: Backend) {
    with_store(backend, |store, scopes| async move {
        let node = DeviceNode::new(store.clone(), scopes.clone(), None);
        let operator = node.operator(&scopes).await;
        let ipad = node.enroll_ipad().await;
        // No policy: the enrollment's inventory and an OS change queue nothing.
        session(&node, &ipad, old_ipad("16.6")).await;
        node.ask_inventory(&operator, &ipad).await;
        session(&node, &ipad, old_ipad("16.7")).await;
        assert!(availability_checks(&node, &operator, &ipad)
            .await
            .is_empty());

        // The policy evaluates the iPad itself; its AvailableOSUpdates is refused.
        pin_ios_18_2(&node, &operator, &ipad).await;
        session(&node, &ipad, old_ipad("16.7")).await;
        assert_eq!(
            availability_checks(&node, &operator, &ipad).await,
            ["error"]
        );
        // With the policy, an answer that changes the OS is evaluated again: the iPad, still behind, is asked
        // what it is offered.
        node.ask_inventory(&operator, &ipad).await;
        session(&node, &ipad, old_ipad("16.7.1")).await;
        assert_eq!(
            availability_checks(&node, &operator, &ipad).await,
            ["error", "error"]
        );
        let compliance = node
            .orchard
            .os_compliance(&operator, ipad.tenant)
            .await
            .unwrap();
        assert_eq!(compliance.devices[0].state, "failed", "{compliance:?}");
    })
    .await;
}

#[tokio::test]
async fn sqlite_an_os_change_is_evaluated_once_the_tenant_has_a_policy() {
    an_os_change_is_evaluated_once_the_tenant_has_a_policy(Backend::Sqlite).await;
}

#[tokio::test]
async fn postgres_an_os_change_is_evaluated_once_the_tenant_has_a_policy() {
    an_os_change_is_evaluated_once_the_tenant_has_a_policy(Backend::Postgres).await;
}
