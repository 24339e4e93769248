//! Queue hygiene with an injected clock, on SQLite and PostgreSQL, pushing to a local APNs over real TLS +
//! HTTP/2: a command sent but never answered is not handed out again before the resend time, then its device is
//! pushed and it is handed out again; finished commands leave the hot queue for the history (still shown by the
//! API's command history, still recognised as answered) and are deleted after the retention time. The
//! attempt limit against a real iPad simulator is in tests/queue_hygiene_e2e.rs.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use orchard_apns::DeviceToken;
use orchard_store::{CommandResultRecord, Page, RecordOutcome};
use orchard_testkit::service::PushSetup as Setup;
use orchard_testkit::Backend;
use orchard_types::{ChannelId, Clock, CommandStatus, CommandUuid, RequestType};

const DAY: i64 = 86_400;

/// What the device's session asks the queue for, under the server's policy.
async fn hand_out(s: &Setup, channel: &ChannelId) -> Option<CommandUuid> {
    let policy = s.orchard.command_queue_settings().policy.clone();
    s.store
        .next_command_with(channel, false, s.clock.now(), &policy)
        .await
        .unwrap()
        .map(|c| c.uuid)
}

async fn acknowledge(s: &Setup, channel: &ChannelId, uuid: &CommandUuid) -> RecordOutcome {
    s.store
        .record_result(&CommandResultRecord {
            channel: channel.clone(),
            uuid: uuid.clone(),
            status: CommandStatus::Acknowledged,
            result: None,
            result_sealed: false,
            error_chain: None,
            now: s.clock.now(),
        })
        .await
        .unwrap()
}

async fn an_unanswered_command_is_pushed_and_resent_after_the_resend_time(backend: Backend) {
    let Some(s) = Setup::start(backend).await else {
        return;
    };
    s.upload_push_certificate().await;
    let resend_after = s
        .orchard
        .command_queue_settings()
        .policy
        .resend_after_seconds;
    assert!(resend_after > 0);
    let token = [0x71u8; 32];
    let device_token = DeviceToken::from_bytes(&token).unwrap();
    let (channel, device) = s.enrolled(&token).await;
    let uuid = s
        .queue(&device, &channel, RequestType::DeviceInformation)
        .await;
    assert_eq!(s.dispatch().await.delivered, 1);

    // The session the push started gets the command; the device never answers it.
    assert_eq!(hand_out(&s, &channel).await, Some(uuid.clone()));
    // Not again right away (another session now gets nothing), and nobody pushes for it yet.
    assert_eq!(hand_out(&s, &channel).await, None);
    s.clock.advance(resend_after - 1);
    assert_eq!(
        s.orchard
            .command_queue_hygiene(&s.orchard.system())
            .await
            .unwrap()
            .resend_pushes,
        0
    );
    assert_eq!(hand_out(&s, &channel).await, None);

    // Due: the device is pushed (it would not come back by itself) and the session gets the command again.
    s.clock.advance(1);
    assert_eq!(
        s.orchard
            .command_queue_hygiene(&s.orchard.system())
            .await
            .unwrap()
            .resend_pushes,
        1
    );
    assert_eq!(s.dispatch().await.delivered, 1);
    assert_eq!(s.push.apns.pushes_for(&device_token).len(), 2);
    assert_eq!(hand_out(&s, &channel).await, Some(uuid.clone()));
    // Pushed once per resend period, not on every hygiene step.
    assert_eq!(
        s.orchard
            .command_queue_hygiene(&s.orchard.system())
            .await
            .unwrap()
            .resend_pushes,
        0
    );

    let history = s
        .orchard
        .command_history(s.operator.principal(), device.id, Page::default())
        .await
        .unwrap();
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].status, "sent");
    assert!(matches!(
        acknowledge(&s, &channel, &uuid).await,
        RecordOutcome::Recorded { .. }
    ));
}

async fn finished_commands_move_to_the_history_and_expire(backend: Backend) {
    let Some(s) = Setup::start(backend).await else {
        return;
    };
    let days = s.orchard.command_queue_settings().history_days;
    assert!(days > 0);
    let (channel, device) = s.enrolled(&[0x72u8; 32]).await;
    let done = s
        .queue(&device, &channel, RequestType::DeviceInformation)
        .await;
    let live = s
        .queue(&device, &channel, RequestType::DeviceInformation)
        .await;
    assert_eq!(hand_out(&s, &channel).await, Some(done.clone()));
    assert!(matches!(
        acknowledge(&s, &channel, &done).await,
        RecordOutcome::Recorded { .. }
    ));

    let stats = s
        .orchard
        .command_queue_hygiene(&s.orchard.system())
        .await
        .unwrap();
    assert_eq!(stats.archived, 1, "{stats:?}");
    assert_eq!(
        s.orchard
            .command_queue_hygiene(&s.orchard.system())
            .await
            .unwrap()
            .archived,
        0
    );
    // The API's history still shows both, newest first; the hot queue goes on with the live one.
    let history = s
        .orchard
        .command_history(s.operator.principal(), device.id, Page::default())
        .await
        .unwrap();
    let shown: Vec<(&str, &str)> = history
        .iter()
        .map(|c| (c.command_uuid.as_str(), c.status))
        .collect();
    assert_eq!(
        shown,
        vec![(live.as_str(), "queued"), (done.as_str(), "acknowledged")]
    );
    // A late repeat of the report is a duplicate, not an unknown command.
    assert_eq!(
        acknowledge(&s, &channel, &done).await,
        RecordOutcome::Duplicate
    );
    assert_eq!(hand_out(&s, &channel).await, Some(live.clone()));

    // Kept for the retention time, then deleted.
    s.clock.advance(days * DAY - 1);
    assert_eq!(
        s.orchard
            .command_queue_hygiene(&s.orchard.system())
            .await
            .unwrap()
            .pruned,
        0
    );
    s.clock.advance(2);
    assert_eq!(
        s.orchard
            .command_queue_hygiene(&s.orchard.system())
            .await
            .unwrap()
            .pruned,
        1
    );
    let history = s
        .orchard
        .command_history(s.operator.principal(), device.id, Page::default())
        .await
        .unwrap();
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].command_uuid, live.as_str());
}

orchard_testkit::backend_tests! {
    an_unanswered_command_is_pushed_and_resent_after_the_resend_time => an_unanswered_command_is_pushed_and_resent_after_the_resend_time;
    finished_commands_move_to_the_history_and_expire => finished_commands_move_to_the_history_and_expire;
}
