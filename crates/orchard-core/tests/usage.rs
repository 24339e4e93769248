//! The usage report for billing, on SQLite and PostgreSQL, with a hand-moved clock: over ten days devices
//! enroll, leave and move between tenants, one day has no snapshot; the device-days and prorated amounts are
//! checked against numbers worked out by hand below. Also: a day's snapshot is taken once (the first wins, also
//! with two nodes at once), tenants without devices count 0, and who may see which tenants.

// Tests may unwrap and panic: a failed expectation is exactly what should stop them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use orchard_core::access::bootstrap::LocalBootstrap;
use orchard_core::access::capability::OversightCtx;
use orchard_core::push::PushSettings;
use orchard_core::reporting::usage::{parse_day, UsageSettings, UsageSnapshotter};
use orchard_core::{CoreError, Orchard};
use orchard_store::{
    AuthenticateDevice, DeviceFacts, ScopeAuthority, Store, Tenant, TokenUpdateRecord,
};
use orchard_testkit::service::test_orchard;
use orchard_testkit::{with_store, Backend};
use orchard_types::{
    ChannelId, Clock, DeviceId, ManualClock, Role, TenantId, TokenId, Udid, UnixTime,
};

const DAY: i64 = 86_400;
/// 2026-03-01T00:00:30Z: thirty seconds into the first day of the scenario.
const START: UnixTime = UnixTime(1_772_323_200 + 30);

fn orchard(store: Store, scopes: ScopeAuthority, clock: &ManualClock) -> Arc<Orchard> {
    let clock: Arc<dyn Clock> = Arc::new(clock.clone());
    Arc::new(test_orchard(store, scopes, clock, PushSettings::default()))
}

/// Who may see usage: the handle a principal of `role` gets, or its refusal.
fn overseer(
    bootstrap: &LocalBootstrap,
    role: Role,
    tenant_id: Option<TenantId>,
) -> Result<OversightCtx, CoreError> {
    bootstrap
        .act_as(
            &TokenId::new().to_string(),
            &format!("{}-token", role.as_str()),
            role,
            tenant_id,
        )
        .unwrap()
        .oversight()
}

async fn tenant(store: &Store, code: &str, name: &str, now: UnixTime) -> TenantId {
    let t = Tenant {
        id: TenantId::new(),
        name: name.into(),
        code: code.into(),
        created_at: now,
    };
    store.create_tenant(&t).await.unwrap();
    t.id
}

/// Authenticate: the device exists in the tenant, state pending (not counted).
async fn authenticate(store: &Store, tenant: TenantId, udid: &str, now: UnixTime) -> DeviceId {
    store
        .authenticate_device(&AuthenticateDevice {
            udid: Udid::parse(udid).unwrap(),
            tenant_id: tenant,
            cert_fingerprint: format!("fp-{udid}"),
            topic: "com.apple.mgmt.External.orchard-dev-test".into(),
            facts: DeviceFacts::default(),
            now,
        })
        .await
        .unwrap()
        .id
}

/// TokenUpdate: the device becomes enrolled (counted).
async fn token_update(store: &Store, device: DeviceId, udid: &str, now: UnixTime) {
    store
        .update_token(&TokenUpdateRecord {
            device_id: device,
            channel: ChannelId::device(&Udid::parse(udid).unwrap()),
            user_short_name: None,
            user_id: None,
            push_token: vec![1, 2, 3],
            push_magic: format!("magic-{udid}"),
            unlock_token: None,
            awaiting_configuration: false,
            now,
        })
        .await
        .unwrap();
}

async fn enroll(store: &Store, tenant: TenantId, udid: &str, now: UnixTime) -> DeviceId {
    let id = authenticate(store, tenant, udid, now).await;
    token_update(store, id, udid, now).await;
    id
}

async fn leave(store: &Store, udid: &str, now: UnixTime) {
    store
        .check_out(&Udid::parse(udid).unwrap(), now)
        .await
        .unwrap();
}

async fn count_on(
    store: &Store,
    scopes: &ScopeAuthority,
    day: &str,
    tenant: TenantId,
) -> Option<i64> {
    store
        .usage_snapshots(scopes.tenant(tenant), day, day)
        .await
        .unwrap()
        .first()
        .map(|s| s.enrolled_devices)
}

async fn arithmetic_scenario(store: Store, scopes: ScopeAuthority) {
    let clock = ManualClock::new(START);
    let bootstrap =
        LocalBootstrap::for_opened_database(store.clone(), scopes.clone(), Arc::new(clock.clone()));
    let orchard = orchard(store.clone(), scopes.clone(), &clock);
    let mut snapshotter = UsageSnapshotter::new();
    let hour = 3_600;

    // Day 1, 2026-03-01. Alpha: a1, a2 enrolled, a3 only authenticated. Beta: b1. Gamma: no devices.
    let alpha = tenant(&store, "alpha", "Alpha dept", clock.now()).await;
    let beta = tenant(&store, "beta", "Beta, Dept of \"B\"", clock.now()).await;
    let gamma = tenant(&store, "gamma", "Gamma", clock.now()).await;
    enroll(&store, alpha, "UDID-A1", clock.now()).await;
    enroll(&store, alpha, "UDID-A2", clock.now()).await;
    let a3 = authenticate(&store, alpha, "UDID-A3", clock.now()).await;
    enroll(&store, beta, "UDID-B1", clock.now()).await;
    assert!(snapshotter.tick(&orchard, &orchard.system()).await.unwrap());
    assert_eq!(
        count_on(&store, &scopes, "2026-03-01", alpha).await,
        Some(2)
    );
    assert_eq!(count_on(&store, &scopes, "2026-03-01", beta).await, Some(1));
    assert_eq!(
        count_on(&store, &scopes, "2026-03-01", gamma).await,
        Some(0)
    );
    // Later ticks of the same day take nothing.
    clock.advance(hour);
    assert!(!snapshotter.tick(&orchard, &orchard.system()).await.unwrap());

    // Day 2: snapshot first, then a3 enrolls; snapshotting the day again (another node, a restart) keeps the
    // first count.
    clock.set(START.plus_seconds(DAY));
    assert!(snapshotter.tick(&orchard, &orchard.system()).await.unwrap());
    clock.advance(2 * hour);
    token_update(&store, a3, "UDID-A3", clock.now()).await;
    assert_eq!(
        orchard
            .take_usage_snapshot(&orchard.system())
            .await
            .unwrap(),
        0
    );
    let mut restarted = UsageSnapshotter::new();
    assert!(restarted.tick(&orchard, &orchard.system()).await.unwrap());
    assert_eq!(
        count_on(&store, &scopes, "2026-03-02", alpha).await,
        Some(2)
    );

    // Days 3 and 4: Alpha 3, Beta 1.
    for day in 2..=3 {
        clock.set(START.plus_seconds(day * DAY));
        assert!(snapshotter.tick(&orchard, &orchard.system()).await.unwrap());
    }
    assert_eq!(
        count_on(&store, &scopes, "2026-03-03", alpha).await,
        Some(3)
    );

    // Day 5: a1 checks out, b2 enrolls, before the snapshot: Alpha 2, Beta 2. Day 6 the same.
    clock.set(START.plus_seconds(4 * DAY));
    leave(&store, "UDID-A1", clock.now()).await;
    enroll(&store, beta, "UDID-B2", clock.now()).await;
    assert!(snapshotter.tick(&orchard, &orchard.system()).await.unwrap());
    clock.set(START.plus_seconds(5 * DAY));
    assert!(snapshotter.tick(&orchard, &orchard.system()).await.unwrap());
    assert_eq!(
        count_on(&store, &scopes, "2026-03-05", alpha).await,
        Some(2)
    );
    assert_eq!(count_on(&store, &scopes, "2026-03-05", beta).await, Some(2));

    // Day 7: b1 is re-enrolled into Alpha: Alpha 3, Beta 1. Day 8 the same.
    clock.set(START.plus_seconds(6 * DAY));
    enroll(&store, alpha, "UDID-B1", clock.now()).await;
    assert!(snapshotter.tick(&orchard, &orchard.system()).await.unwrap());
    clock.set(START.plus_seconds(7 * DAY));
    assert!(snapshotter.tick(&orchard, &orchard.system()).await.unwrap());
    assert_eq!(
        count_on(&store, &scopes, "2026-03-07", alpha).await,
        Some(3)
    );
    assert_eq!(count_on(&store, &scopes, "2026-03-07", beta).await, Some(1));

    // Day 9: the server is down all day, no snapshot. Day 10: Alpha 3, Beta 1.
    clock.set(START.plus_seconds(9 * DAY));
    assert!(snapshotter.tick(&orchard, &orchard.system()).await.unwrap());

    // Daily counts:      01 02 03 04 05 06 07 08 09 10
    //   Alpha             2  2  3  3  2  2  3  3  -  3   = 23 device-days
    //   Beta              1  1  1  1  2  2  1  1  -  1   = 11
    //   Gamma             0  0  0  0  0  0  0  0  -  0   =  0
    // At 400.00 SEK a year, Actual/365: Alpha 23 × 40000 öre / 365 = 2520.55 öre → 25.21 SEK;
    // Beta 11 × 40000 / 365 = 1205.48 → 12.05 SEK; total 37.26 SEK.
    let operator = overseer(&bootstrap, Role::Operator, None).unwrap();
    let settings = UsageSettings::default();
    let from = parse_day("2026-03-01").unwrap();
    let to = parse_day("2026-03-10").unwrap();
    let report = orchard
        .usage_report(&operator, from, to, &settings)
        .await
        .unwrap();
    assert_eq!(report.days, 10);
    assert_eq!(report.currency, "SEK");
    assert_eq!(report.price_per_device_year, "400.00");
    assert_eq!(report.missing_days, vec!["2026-03-09".to_string()]);
    let lines: Vec<(&str, i64, i64, &str, i64)> = report
        .tenants
        .iter()
        .map(|t| {
            (
                t.tenant_code.as_str(),
                t.device_days,
                t.days_counted,
                t.amount.as_str(),
                t.amount_minor,
            )
        })
        .collect();
    assert_eq!(
        lines,
        vec![
            ("alpha", 23, 9, "25.21", 2521),
            ("beta", 11, 9, "12.05", 1205),
            ("gamma", 0, 9, "0.00", 0),
        ]
    );
    assert_eq!(report.total_device_days, 34);
    assert_eq!(report.total_amount, "37.26");

    // A part of the period, 03-04..03-06: Alpha 3+2+2 = 7 → 7 × 40000 / 365 = 767.12 öre → 7.67;
    // Beta 1+2+2 = 5 → 547.95 öre → 5.48 (rounded up); total 13.15.
    let part = orchard
        .usage_report(
            &operator,
            parse_day("2026-03-04").unwrap(),
            parse_day("2026-03-06").unwrap(),
            &settings,
        )
        .await
        .unwrap();
    let amounts: Vec<(i64, &str)> = part
        .tenants
        .iter()
        .map(|t| (t.device_days, t.amount.as_str()))
        .collect();
    assert_eq!(amounts, vec![(7, "7.67"), (5, "5.48"), (0, "0.00")]);
    assert_eq!(part.total_amount, "13.15");
    assert!(part.missing_days.is_empty());

    // Another price: 399.99 EUR. Alpha 23 × 39999 / 365 = 2520.48 cents → 25.20; Beta 11 × 39999 / 365 =
    // 1205.45 → 12.05.
    let euros = UsageSettings::new("399.99", "eur").unwrap();
    let priced = orchard
        .usage_report(&operator, from, to, &euros)
        .await
        .unwrap();
    assert_eq!(priced.currency, "EUR");
    assert_eq!(priced.price_per_device_year, "399.99");
    let amounts: Vec<&str> = priced.tenants.iter().map(|t| t.amount.as_str()).collect();
    assert_eq!(amounts, vec!["25.20", "12.05", "0.00"]);
    assert_eq!(priced.total_amount, "37.25");

    // Days that have not come yet are missing too (it is 03-10 now).
    let ahead = orchard
        .usage_report(
            &operator,
            parse_day("2026-03-09").unwrap(),
            parse_day("2026-03-12").unwrap(),
            &settings,
        )
        .await
        .unwrap();
    assert_eq!(
        ahead.missing_days,
        vec!["2026-03-09", "2026-03-11", "2026-03-12"]
    );
    assert_eq!(ahead.tenants[0].device_days, 3);

    // CSV: one line per tenant, the name with a comma and quotes quoted.
    let csv = report.to_csv();
    let csv_lines: Vec<&str> = csv.split("\r\n").collect();
    assert_eq!(
        csv_lines[0],
        "tenant_id,tenant_code,tenant_name,from,to,device_days,price_per_device_year,currency,amount"
    );
    assert_eq!(
        csv_lines[1],
        format!("{alpha},alpha,Alpha dept,2026-03-01,2026-03-10,23,400.00,SEK,25.21")
    );
    assert_eq!(
        csv_lines[2],
        format!(
            "{beta},beta,\"Beta, Dept of \"\"B\"\"\",2026-03-01,2026-03-10,11,400.00,SEK,12.05"
        )
    );
    assert_eq!(
        csv_lines.len(),
        5,
        "header, three tenants, and the final line end"
    );

    // Who sees what: helpdesk every tenant, a tenant admin its own only, viewers nothing.
    let helpdesk = orchard
        .usage_report(
            &overseer(&bootstrap, Role::Helpdesk, None).unwrap(),
            from,
            to,
            &settings,
        )
        .await
        .unwrap();
    assert_eq!(helpdesk.tenants.len(), 3);
    let own = orchard
        .usage_report(
            &overseer(&bootstrap, Role::Admin, Some(beta)).unwrap(),
            from,
            to,
            &settings,
        )
        .await
        .unwrap();
    assert_eq!(own.tenants.len(), 1);
    assert_eq!(own.tenants[0].tenant_id, beta.to_string());
    assert_eq!(own.tenants[0].device_days, 11);
    assert_eq!(own.total_amount, "12.05");
    assert!(matches!(
        overseer(&bootstrap, Role::Viewer, Some(beta)),
        Err(CoreError::Forbidden(_))
    ));
    // Bad periods are refused with a reason.
    assert!(matches!(
        orchard.usage_report(&operator, to, from, &settings).await,
        Err(CoreError::Invalid(_))
    ));
    assert!(matches!(
        orchard
            .usage_report(
                &operator,
                parse_day("2000-01-01").unwrap(),
                parse_day("2026-01-01").unwrap(),
                &settings
            )
            .await,
        Err(CoreError::Invalid(_))
    ));
}

/// Two nodes take the same day's snapshot at the same moment: one row per tenant, no error.
async fn two_nodes_scenario(store: Store, scopes: ScopeAuthority) {
    let clock = ManualClock::new(START);
    // Two nodes: each has PKI of its own, as with two data directories.
    let first = orchard(store.clone(), scopes.clone(), &clock);
    let second = orchard(store.clone(), scopes.clone(), &clock);
    let mut tenants = Vec::new();
    for i in 0..5 {
        let t = tenant(
            &store,
            &format!("t{i}"),
            &format!("Tenant {i}"),
            clock.now(),
        )
        .await;
        for d in 0..i {
            enroll(&store, t, &format!("UDID-{i}-{d}"), clock.now()).await;
        }
        tenants.push(t);
    }
    let (system_a, system_b) = (first.system(), second.system());
    let (a, b) = tokio::join!(
        first.take_usage_snapshot(&system_a),
        second.take_usage_snapshot(&system_b)
    );
    assert_eq!(a.unwrap() + b.unwrap(), 5);
    let rows = store
        .usage_snapshots(scopes.all_tenants(), "2026-03-01", "2026-03-01")
        .await
        .unwrap();
    assert_eq!(rows.len(), 5);
    for (i, t) in tenants.iter().enumerate() {
        assert_eq!(
            count_on(&store, &scopes, "2026-03-01", *t).await,
            Some(i as i64)
        );
    }
}

async fn usage_arithmetic(backend: Backend) {
    with_store(backend, arithmetic_scenario).await;
}

async fn concurrent_snapshots(backend: Backend) {
    with_store(backend, two_nodes_scenario).await;
}

orchard_testkit::backend_tests! {
    usage_arithmetic => usage_arithmetic;
    concurrent_snapshots => concurrent_snapshots;
}
