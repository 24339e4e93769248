//! DEP server tokens and device sync against the local DEP server over TLS with real OAuth: the token key pair,
//! the `.p7m` produced the way ASM produces it, a full fetch of 2,500 devices, incremental syncs with added,
//! modified and deleted devices, out-of-order records, an expired cursor and 429s (no device lost or
//! duplicated), and terms-not-accepted shown as the token's actionable error. On SQLite and PostgreSQL.

// Tests may unwrap and panic: a failed expectation is exactly what should stop them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use orchard_core::access::bootstrap::LocalBootstrap;
use orchard_core::access::capability::OperatorCtx;
use orchard_core::access::principal::Principal;
use orchard_core::dep::DepSettings;
use orchard_core::push::PushSettings;
use orchard_core::{CoreError, Orchard, PkiMaterial};
use orchard_dep::fake::{encrypt_server_token, FakeDepConfig, FakeDepServer, TokenCipher};
use orchard_dep::RetryPolicy;
use orchard_store::{DepDeviceFilter, ScopeAuthority, Store};
use orchard_testkit::service::{test_node, test_pki};
use orchard_testkit::{with_store, Backend};
use orchard_types::{Clock, Role, SystemClock, TenantId, TokenId, UnixTime};

fn principal(scopes: &Scopes, name: &str, role: Role, tenant: Option<TenantId>) -> Principal {
    LocalBootstrap::for_opened_database(scopes.0.clone(), scopes.1.clone(), Arc::new(SystemClock))
        .act_as(&TokenId::new().to_string(), name, role, tenant)
        .unwrap()
}

fn operator(scopes: &Scopes) -> OperatorCtx {
    principal(scopes, "central-it", Role::Operator, None)
        .operator()
        .unwrap()
}

fn viewer(scopes: &Scopes) -> Principal {
    principal(scopes, "dept", Role::Viewer, Some(TenantId::new()))
}

/// The database the test opened and its scope authority.
type Scopes = (Store, ScopeAuthority);

fn orchard(scopes: &Scopes, pki: &Arc<PkiMaterial>, fake: &FakeDepServer) -> Orchard {
    orchard_on(scopes, pki, fake, Arc::new(SystemClock))
}

/// A node of the installation: all share `pki`, so each opens the tokens the others sealed.
fn orchard_on(
    scopes: &Scopes,
    pki: &Arc<PkiMaterial>,
    fake: &FakeDepServer,
    clock: Arc<dyn Clock>,
) -> Orchard {
    let mut dep = fake.client_config();
    dep.retry = RetryPolicy {
        initial_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(200),
        ..RetryPolicy::default()
    };
    test_node(
        scopes.0.clone(),
        scopes.1.clone(),
        pki.clone(),
        clock,
        PushSettings::default(),
    )
    .with_dep_settings(DepSettings {
        config: dep,
        ..DepSettings::default()
    })
}

async fn active_serials(store: &Store, token: &str) -> Vec<String> {
    store
        .dep_serials(DepDeviceFilter {
            token_id: Some(token),
            only_active: true,
        })
        .await
        .unwrap()
}

fn fake_serials(fake: &FakeDepServer) -> Vec<String> {
    let mut serials: Vec<String> = fake.serials().iter().map(|s| s.to_string()).collect();
    serials.sort();
    serials
}

async fn sync_scenario(store: Store, scopes: ScopeAuthority) {
    let opened: Scopes = (store.clone(), scopes);
    orchard_testkit::install_crypto_provider();
    let fake = FakeDepServer::start(FakeDepConfig::default())
        .await
        .unwrap();
    fake.add_devices(&FakeDepServer::make_serials("DEPT", 0, 2_500));
    let pki = Arc::new(test_pki(SystemClock.now()));
    let orchard = orchard(&opened, &pki, &fake);
    let op = operator(&opened);

    // Operators only.
    assert!(matches!(
        viewer(&opened).operator(),
        Err(CoreError::Forbidden(_))
    ));
    let created = orchard.create_dep_token(&op, "ASM Physics").await.unwrap();
    assert!(created
        .certificate_pem
        .starts_with("-----BEGIN CERTIFICATE-----"));
    let id = created.id.clone();

    // Sync before upload is refused with what to do.
    assert!(matches!(
        orchard.sync_dep_token(&op, &id).await,
        Err(CoreError::Conflict(_))
    ));

    // A token encrypted to another certificate is refused.
    let other = orchard.create_dep_token(&op, "other").await.unwrap();
    let foreign = encrypt_server_token(
        &fake.server_token(),
        other.certificate_pem.as_bytes(),
        TokenCipher::TripleDes,
    )
    .unwrap();
    assert!(matches!(
        orchard.upload_dep_token(&op, &id, &foreign).await,
        Err(CoreError::Invalid(_))
    ));

    // The .p7m as ASM makes it, for our certificate.
    let p7m = encrypt_server_token(
        &fake.server_token(),
        created.certificate_pem.as_bytes(),
        TokenCipher::Aes256Cbc,
    )
    .unwrap();
    let uploaded = orchard.upload_dep_token(&op, &id, &p7m).await.unwrap();
    assert!(uploaded.uploaded);
    assert!(!uploaded.token_expired);
    assert!(uploaded.server_name.is_some(), "{uploaded:?}");
    assert!(uploaded.org_name.is_some(), "{uploaded:?}");
    assert_eq!(uploaded.last_sync_error, None);
    // Secrets are sealed, not stored in the clear.
    let row = store.dep_token(&id).await.unwrap().unwrap();
    let sealed = row.token_encrypted.unwrap();
    let secret = fake.server_token().consumer_secret.expose().clone();
    assert!(!String::from_utf8_lossy(&sealed).contains(&secret));
    assert!(!String::from_utf8_lossy(&row.key_encrypted).contains("PRIVATE KEY"));

    // First sync: a full fetch of every device.
    let first = orchard.sync_dep_token(&op, &id).await.unwrap();
    assert!(first.full_fetch);
    assert_eq!(first.records, 2_500);
    assert_eq!(first.pages, 3);
    assert_eq!(first.active_devices, 2_500);
    assert_eq!(active_serials(&store, &id).await, fake_serials(&fake));
    let saved = store.dep_token(&id).await.unwrap().unwrap();
    assert!(saved.cursor.is_some());
    assert!(saved.last_sync_at.is_some());

    // Changes: 10 added, 5 modified, 3 deleted; an incremental sync applies them.
    fake.add_devices(&FakeDepServer::make_serials("DEPT", 2_500, 10));
    let serials = FakeDepServer::make_serials("DEPT", 0, 20);
    for (i, serial) in serials.iter().take(5).enumerate() {
        assert!(fake.modify_device(serial, |r| r.asset_tag = Some(format!("PHYS-{i}"))));
    }
    for serial in serials.iter().skip(10).take(3) {
        assert!(fake.delete_device(serial));
    }
    let second = orchard.sync_dep_token(&op, &id).await.unwrap();
    assert!(!second.full_fetch);
    assert_eq!(second.records, 18);
    assert_eq!(second.active_devices, 2_507);
    assert_eq!(active_serials(&store, &id).await, fake_serials(&fake));
    let tagged = store
        .dep_device(&id, serials[3].as_str())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(tagged.device.asset_tag.as_deref(), Some("PHYS-3"));
    assert_eq!(tagged.device.op_type, Some(orchard_dep::OpType::Modified));
    let gone = store
        .dep_device(&id, serials[11].as_str())
        .await
        .unwrap()
        .unwrap();
    assert!(gone.deleted);
    assert_eq!(gone.device.op_type, Some(orchard_dep::OpType::Deleted));

    // An older record arriving late never overwrites a newer one.
    let mut stale = fake.device(&serials[3]).unwrap();
    stale.asset_tag = Some("STALE".into());
    stale.op_type = Some(orchard_dep::OpType::Modified);
    stale.op_date = Some(UnixTime(tagged.device.op_date.unwrap().0 - 3_600));
    fake.inject_sync_record(stale);
    let third = orchard.sync_dep_token(&op, &id).await.unwrap();
    assert_eq!(third.records, 1);
    let still = store
        .dep_device(&id, serials[3].as_str())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(still.device.asset_tag.as_deref(), Some("PHYS-3"));

    // The cursor expires while devices change, and Apple rate-limits: a full fetch restarts, the devices it no
    // longer lists are marked deleted, nothing is lost or duplicated.
    fake.expire_cursors();
    assert!(fake.delete_device(&serials[0]));
    assert!(fake.delete_device(&serials[1]));
    fake.add_devices(&FakeDepServer::make_serials("DEPT", 2_510, 1));
    fake.inject_rate_limit(2, 1);
    let fourth = orchard.sync_dep_token(&op, &id).await.unwrap();
    assert!(fourth.restarted_after_expired_cursor);
    assert!(fourth.full_fetch);
    assert_eq!(fourth.removed, 2);
    assert_eq!(fourth.active_devices, 2_506);
    assert!(fake.stats().rate_limited >= 2);
    assert_eq!(active_serials(&store, &id).await, fake_serials(&fake));
    let all = store
        .dep_serials(DepDeviceFilter {
            token_id: Some(&id),
            only_active: false,
        })
        .await
        .unwrap();
    assert_eq!(all.len(), 2_511);
    assert_eq!(all.iter().collect::<HashSet<_>>().len(), 2_511);

    // Terms not accepted: the sync fails and the token shows what the operator must do.
    fake.set_terms_not_signed(true);
    let err = orchard.sync_dep_token(&op, &id).await.unwrap_err();
    assert!(matches!(err, CoreError::Conflict(_)), "{err}");
    let tokens = orchard.list_dep_tokens(&op).await.unwrap();
    let shown = tokens.iter().find(|t| t.id == id).unwrap();
    let message = shown.last_sync_error.clone().unwrap();
    assert!(message.contains("T_C_NOT_SIGNED"), "{message}");
    assert!(message.contains("accept the new terms"), "{message}");
    fake.set_terms_not_signed(false);
    orchard.sync_dep_token(&op, &id).await.unwrap();
    let tokens = orchard.list_dep_tokens(&op).await.unwrap();
    assert_eq!(
        tokens.iter().find(|t| t.id == id).unwrap().last_sync_error,
        None
    );

    // Listing devices (operators only).
    let listed = orchard
        .list_dep_devices(&op, Some(&id), true, 1000, 0)
        .await
        .unwrap();
    assert_eq!(listed.len(), 1000);
    assert!(listed.iter().all(|d| !d.deleted && d.token_id == id));
    assert!(matches!(
        viewer(&opened).operator(),
        Err(CoreError::Forbidden(_))
    ));

    // The scheduler: a token whose sync lease another node holds is left alone; a free one is synced once,
    // and the lease is released afterwards. The second node shares the data directory (and so the data key),
    // as several PostgreSQL nodes must.
    let other_node = orchard_on(&opened, &pki, &fake, Arc::new(SystemClock));
    let now = SystemClock.now();
    assert!(store
        .claim_dep_sync_lease(&id, "node-elsewhere", now, now.plus_seconds(3600))
        .await
        .unwrap());
    let before = fake.stats().sync_requests + fake.stats().fetch_requests;
    other_node
        .dep_scheduler_tick(&other_node.system(), "node-b", 60)
        .await;
    orchard
        .dep_scheduler_tick(&orchard.system(), "node-a", 60)
        .await;
    let after = fake.stats().sync_requests + fake.stats().fetch_requests;
    // Only the other token ("other", never uploaded) could have been synced, and it has no server token.
    assert_eq!(before, after, "a held lease keeps both nodes from syncing");
    store
        .release_dep_sync_lease(&id, "node-elsewhere")
        .await
        .unwrap();
    other_node
        .dep_scheduler_tick(&other_node.system(), "node-b", 60)
        .await;
    assert!(
        fake.stats().sync_requests + fake.stats().fetch_requests > after,
        "the free token was synced"
    );
    assert!(
        store
            .claim_dep_sync_lease(
                &id,
                "node-c",
                SystemClock.now(),
                SystemClock.now().plus_seconds(10)
            )
            .await
            .unwrap(),
        "the scheduler released its lease"
    );

    // Expiry: days left per uploaded token, warned from 30 days before (as /metrics shows it).
    let expiry = store
        .dep_token(&id)
        .await
        .unwrap()
        .unwrap()
        .access_token_expiry
        .unwrap();
    let manual = Arc::new(orchard_types::ManualClock::new(
        expiry.plus_seconds(-29 * 86_400 - 10),
    ));
    let later = orchard_on(&opened, &pki, &fake, manual.clone());
    let days = later.dep_token_days_left(&later.system()).await.unwrap();
    let (_, _, left) = days.iter().find(|(t, _, _)| t == &id).unwrap();
    assert_eq!(*left, 29);
    assert!(*left <= orchard_core::dep::DEP_TOKEN_WARNING_DAYS);
    manual.set(expiry.plus_seconds(86_400));
    let days = later.dep_token_days_left(&later.system()).await.unwrap();
    assert_eq!(days.iter().find(|(t, _, _)| t == &id).unwrap().2, -1);
    let shown = later.list_dep_tokens(&op).await.unwrap();
    let token = shown.iter().find(|t| t.id == id).unwrap();
    assert!(token.token_expired);
    assert_eq!(token.days_left, Some(-1));
    // An expired token is not synced by the scheduler (it would only fail at Apple).
    let before = fake.stats().sync_requests + fake.stats().fetch_requests;
    later
        .dep_scheduler_tick(&later.system(), "node-d", 60)
        .await;
    assert_eq!(
        fake.stats().sync_requests + fake.stats().fetch_requests,
        before
    );
}

async fn dep_sync(backend: Backend) {
    with_store(backend, sync_scenario).await;
}

orchard_testkit::backend_tests! {
    dep_sync => dep_sync [workers = 4];
}
