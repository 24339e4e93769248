//! The client against the local Apps and Books server over TLS: claims, paging, batching within the announced
//! limits, events completing after status polls, licence shortage, per-serial failures, token errors and
//! 429/503 with Retry-After.
#![cfg(feature = "fake")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use orchard_vpp::fake::{FakeVppConfig, FakeVppServer};
use orchard_vpp::types::{AssetRef, EventStatusKind, Limits, MdmInfo, PricingParam};
use orchard_vpp::{AdamId, AssignmentFilter, ContentToken, VppClient, VppError};

async fn setup(config: FakeVppConfig) -> (FakeVppServer, String, VppClient) {
    let server = FakeVppServer::start(config).await.unwrap();
    let token = server.add_location("Department of Physics");
    let client =
        VppClient::new(server.client_config(), ContentToken::parse(&token).unwrap()).unwrap();
    (server, token, client)
}

fn orchard() -> MdmInfo {
    MdmInfo {
        id: "orchard-test-1".into(),
        metadata: Some("orchard.example.edu".into()),
        name: "Orchard".into(),
    }
}

fn app(id: &str) -> AssetRef {
    AssetRef {
        adam_id: AdamId::parse(id).unwrap(),
        pricing_param: PricingParam::Stdq,
    }
}

fn serials(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i:06}")).collect()
}

#[tokio::test]
async fn service_config_and_claims() {
    let (server, token, client) = setup(FakeVppConfig::default()).await;
    let service = client.service_config().await.unwrap();
    assert_eq!(service.limits.max_serial_numbers, 1000);
    assert!(service.error_codes.iter().any(|e| e.error_number == 9625));

    let config = client.client_config().await.unwrap();
    assert_eq!(
        config.location_name.as_deref(),
        Some("Department of Physics")
    );
    assert_eq!(config.mdm_info, None);
    assert_eq!(config.expires_at(), Some(client.token().expires_at));

    let claimed = client.claim(&orchard()).await.unwrap();
    assert_eq!(claimed.mdm_info, Some(orchard()));
    assert_eq!(server.mdm_info(&token), Some(orchard()));

    let other = MdmInfo {
        id: "jamf-1".into(),
        metadata: None,
        name: "Jamf Pro".into(),
    };
    server.claim_by_other(&token, other.clone());
    assert_eq!(client.client_config().await.unwrap().mdm_info, Some(other));
}

#[tokio::test]
async fn assets_are_paged_with_counts() {
    let (server, token, client) = setup(FakeVppConfig {
        page_size: 2,
        ..FakeVppConfig::default()
    })
    .await;
    for (i, id) in ["100", "200", "300", "400", "500"].iter().enumerate() {
        server.add_asset(&token, id, 10 + i as i64, i != 4);
    }
    let first = client.assets_page(0).await.unwrap();
    assert_eq!(first.assets.len(), 2);
    assert_eq!(first.paging.total_pages, 3);
    assert_eq!(first.paging.next_page_index, Some(1));
    let all = client.assets().await.unwrap();
    assert_eq!(all.len(), 5);
    let last = all.iter().find(|a| a.adam_id.as_str() == "500").unwrap();
    assert_eq!(
        (last.total_count, last.assigned_count, last.available_count),
        (14, 0, 14)
    );
    assert!(!last.device_assignable);
}

#[tokio::test]
async fn associations_are_batched_within_limits_and_complete_after_polls() {
    let limits = Limits {
        max_serial_numbers: 3,
        max_assets: 1,
        ..Limits::default()
    };
    let (server, token, client) = setup(FakeVppConfig {
        pending_polls: 2,
        limits: limits.clone(),
        page_size: 4,
        ..FakeVppConfig::default()
    })
    .await;
    server.add_asset(&token, "361309726", 100, true);
    server.add_asset(&token, "408709785", 100, true);
    let announced = client.service_config().await.unwrap().limits;
    assert_eq!(announced.max_serial_numbers, 3);
    let devices = serials("DMP", 7);
    let mut with_duplicate = devices.clone();
    with_duplicate.push(devices[0].clone());
    let submission = client
        .associate_batched(
            &[app("361309726"), app("408709785")],
            &with_duplicate,
            &announced,
        )
        .await;
    assert!(submission.error.is_none(), "{:?}", submission.error);
    // 3 serial batches × 2 asset batches.
    assert_eq!(submission.submitted.len(), 6);
    assert_eq!(server.stats().max_serials_in_request, 3);
    assert_eq!(server.stats().max_assets_in_request, 1);
    // Nothing happens until the events complete.
    assert!(server.associations(&token).is_empty());
    let first = client
        .event_status(&submission.submitted[0].event.event_id)
        .await
        .unwrap();
    assert_eq!(first.event_status, EventStatusKind::Pending);
    for batch in &submission.submitted {
        let status = client.wait_for_event(&batch.event.event_id).await.unwrap();
        assert_eq!(status.event_status, EventStatusKind::Complete, "{status:?}");
    }
    assert_eq!(server.associations(&token).len(), 14);
    assert_eq!(server.counts(&token, "361309726"), Some((100, 7, 93)));
    let (assignments, version) = client
        .assignments(&AssignmentFilter {
            adam_id: Some(AdamId::parse("361309726").unwrap()),
            serial_number: None,
        })
        .await
        .unwrap();
    assert_eq!(assignments.len(), 7);
    assert!(version.is_some());

    // Disassociate one serial, then revoke another's licences altogether.
    let event = client
        .disassociate(&[app("361309726")], &devices[..1], &announced)
        .await
        .unwrap();
    client.wait_for_event(&event.event_id).await.unwrap();
    let event = client.revoke(&devices[1..2], &announced).await.unwrap();
    client.wait_for_event(&event.event_id).await.unwrap();
    assert_eq!(server.counts(&token, "361309726"), Some((100, 5, 95)));
    assert_eq!(server.counts(&token, "408709785"), Some((100, 6, 94)));
    assert!(!server.is_associated(&devices[1], "408709785"));
    assert!(server.is_associated(&devices[0], "408709785"));

    // Too many serials in one request is refused before it is sent.
    let err = client
        .associate(&[app("361309726")], &devices, &announced)
        .await
        .unwrap_err();
    assert!(matches!(err, VppError::InvalidRequest(_)), "{err}");
}

#[tokio::test]
async fn shortage_and_per_serial_failures_are_reported_per_serial() {
    let (server, token, client) = setup(FakeVppConfig::default()).await;
    server.add_asset(&token, "361309726", 2, true);
    server.add_asset(&token, "999", 5, false);
    let limits = Limits::default();
    let devices = serials("SHT", 4);
    server.fail_serial(&devices[3], 9603);
    let event = client
        .associate(&[app("361309726")], &devices, &limits)
        .await
        .unwrap();
    let status = client.wait_for_event(&event.event_id).await.unwrap();
    assert_eq!(status.event_status, EventStatusKind::Failed);
    let failed = status.failed_serials();
    assert_eq!(failed.len(), 2, "{failed:?}");
    assert_eq!(failed[&devices[2]].error_number, 9610);
    assert_eq!(failed[&devices[3]].error_number, 9603);
    assert_eq!(status.num_completed, Some(2));
    assert_eq!(server.counts(&token, "361309726"), Some((2, 2, 0)));

    // More licences bought; the shortfall completes, and repeating a done association changes nothing.
    server.set_total(&token, "361309726", 3);
    server.heal_serial(&devices[3]);
    let event = client
        .associate(&[app("361309726")], &devices[..3], &limits)
        .await
        .unwrap();
    let status = client.wait_for_event(&event.event_id).await.unwrap();
    assert_eq!(status.event_status, EventStatusKind::Complete, "{status:?}");
    assert_eq!(server.counts(&token, "361309726"), Some((3, 3, 0)));

    let event = client
        .associate(&[app("999")], &devices[..1], &limits)
        .await
        .unwrap();
    let status = client.wait_for_event(&event.event_id).await.unwrap();
    assert_eq!(status.failed_serials()[&devices[0]].error_number, 9628);
}

#[tokio::test]
async fn token_problems_are_typed() {
    let (server, token, client) = setup(FakeVppConfig::default()).await;
    server.expire_token(&token);
    assert!(matches!(
        client.client_config().await,
        Err(VppError::TokenExpired { .. })
    ));
    server.revoke_token(&token);
    assert!(matches!(client.assets().await, Err(VppError::TokenRevoked)));
    let stranger = ContentToken::parse(&ContentToken::encode(
        "not-issued",
        orchard_types::UnixTime(4_000_000_000),
        "Nobody",
    ))
    .unwrap();
    let client = VppClient::new(server.client_config(), stranger).unwrap();
    let err = client.client_config().await.unwrap_err();
    assert!(
        matches!(err, VppError::InvalidToken { number: 9622, .. }),
        "{err}"
    );
    assert!(err.is_token_problem());
}

#[tokio::test]
async fn retry_after_is_honoured_within_bounds() {
    let (server, token, client) = setup(FakeVppConfig::default()).await;
    server.add_asset(&token, "361309726", 10, true);
    server.inject_fault(429, Some(1), 1);
    let started = std::time::Instant::now();
    assert_eq!(client.assets().await.unwrap().len(), 1);
    assert!(started.elapsed() >= std::time::Duration::from_secs(1));
    assert_eq!(client.retries(), 1);

    server.inject_fault(429, Some(3600), 1);
    let err = client.assets().await.unwrap_err();
    assert!(
        matches!(
            err,
            VppError::RateLimited {
                retry_after_seconds: 3600
            }
        ),
        "{err}"
    );

    server.inject_fault(503, None, 10);
    let err = client.assets().await.unwrap_err();
    assert!(
        matches!(err, VppError::RetriesExhausted { attempts: 4, .. }),
        "{err}"
    );
}

#[tokio::test]
async fn a_refused_batch_leaves_earlier_batches_and_names_what_was_not_sent() {
    let limits = Limits {
        max_serial_numbers: 2,
        ..Limits::default()
    };
    let (server, token, client) = setup(FakeVppConfig {
        limits: limits.clone(),
        ..FakeVppConfig::default()
    })
    .await;
    server.add_asset(&token, "361309726", 10, true);
    let devices = serials("BAT", 5);
    server.inject_fault_after(1, 429, Some(3600));
    let submission = client
        .associate_batched(&[app("361309726")], &devices, &limits)
        .await;
    assert_eq!(submission.submitted.len(), 1);
    assert_eq!(
        submission.submitted[0].serial_numbers,
        devices[..2].to_vec()
    );
    assert!(matches!(
        submission.error,
        Some(VppError::RateLimited { .. })
    ));
    assert_eq!(submission.not_sent, devices[2..].to_vec());
    // Sending the rest later associates each serial exactly once.
    let rest = client
        .associate_batched(&[app("361309726")], &submission.not_sent, &limits)
        .await;
    assert!(rest.error.is_none());
    for batch in submission.submitted.iter().chain(&rest.submitted) {
        client.wait_for_event(&batch.event.event_id).await.unwrap();
    }
    assert_eq!(server.counts(&token, "361309726"), Some((10, 5, 5)));
}

#[tokio::test]
async fn an_event_still_pending_is_reported_not_waited_forever() {
    let (server, token, _) = setup(FakeVppConfig {
        pending_polls: 50,
        ..FakeVppConfig::default()
    })
    .await;
    server.add_asset(&token, "361309726", 10, true);
    let mut config = server.client_config();
    config.max_status_polls = 3;
    let client = VppClient::new(config, ContentToken::parse(&token).unwrap()).unwrap();
    let event = client
        .associate(&[app("361309726")], &serials("PND", 1), &Limits::default())
        .await
        .unwrap();
    let err = client.wait_for_event(&event.event_id).await.unwrap_err();
    assert!(
        matches!(err, VppError::EventPending { polls: 3, .. }),
        "{err}"
    );
}
