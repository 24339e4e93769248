//! Conformance suite: every check runs against SQLite (a file in a temp dir) and PostgreSQL (a fresh database
//! per test, created from ORCHARD_TEST_POSTGRES_URL and dropped afterwards), so both backends mean the same.
// Tests may unwrap and panic: a failed expectation is exactly what should stop them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use orchard_dep::{DeviceRecord, OpType, ProfileStatus};
use orchard_store::{
    ApiToken, AuthenticateDevice, Backend, CommandResultRecord, Device, DeviceFacts, DeviceQuery,
    EnrollmentLink, GroupKind, GroupRecord, IdentityGrant, IdlePollClaim, IssuedCertificate,
    JobClaim, LicenceOutcome, LicenceWork, NewCommand, OsPolicyRecord, Page, PlannedAppCommand,
    RecordOutcome, RepeatedFactsAnswer, ScepChallenge, Scope, ScopeAuthority, Store, StoreError,
    Tenant, TokenUpdateRecord, WantedLicence,
};
use orchard_testkit::with_store;
use orchard_types::{
    ChannelId, CommandStatus, CommandUuid, DeviceId, EnrollmentLinkId, EnrollmentState, GroupId,
    QueuedBy, RequestType, Role, SerialNumber, SetupState, TenantId, TokenId, Udid, UnixTime,
};

const T0: UnixTime = UnixTime(1_800_000_000);

/// The scope authority that came with the first opened database: the checks choose scopes themselves, as
/// orchard-core's access module does for its principals.
static SCOPES: std::sync::OnceLock<ScopeAuthority> = std::sync::OnceLock::new();

fn all_tenants() -> Scope {
    SCOPES.get().expect("a database was opened").all_tenants()
}

fn tenant_scope(tenant: TenantId) -> Scope {
    SCOPES.get().expect("a database was opened").tenant(tenant)
}

/// Keeps the scope authority of the check's database for the checks (every database hands out the same right).
fn keep_scopes(scopes: ScopeAuthority) {
    let _ = SCOPES.set(scopes);
}

// ---------------------------------------------------------------------------------------------------------
// harness

/// Generates `#[tokio::test] sqlite_x` and `postgres_x` for each `check_x`.
macro_rules! conformance {
    ($($check:ident => $sqlite:ident, $postgres:ident;)*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $sqlite() {
                with_store(Backend::Sqlite, |store, scopes| {
                    keep_scopes(scopes);
                    $check(store)
                })
                .await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $postgres() {
                with_store(Backend::Postgres, |store, scopes| {
                    keep_scopes(scopes);
                    $check(store)
                })
                .await;
            }
        )*
    };
}

conformance! {
    check_job_runs => sqlite_job_runs, postgres_job_runs;
    check_tenants => sqlite_tenants, postgres_tenants;
    check_api_tokens => sqlite_api_tokens, postgres_api_tokens;
    check_enrollment_links => sqlite_enrollment_links, postgres_enrollment_links;
    check_enrollment_link_uses_are_atomic => sqlite_enrollment_link_uses_are_atomic, postgres_enrollment_link_uses_are_atomic;
    check_scep_challenges => sqlite_scep_challenges, postgres_scep_challenges;
    check_scep_challenge_is_consumed_once_under_concurrency => sqlite_scep_challenge_is_consumed_once_under_concurrency, postgres_scep_challenge_is_consumed_once_under_concurrency;
    check_issued_certificates => sqlite_issued_certificates, postgres_issued_certificates;
    check_authenticate_twice_keeps_one_device => sqlite_authenticate_twice_keeps_one_device, postgres_authenticate_twice_keeps_one_device;
    check_update_token => sqlite_update_token, postgres_update_token;
    check_check_out => sqlite_check_out, postgres_check_out;
    check_device_facts_touch_and_paging => sqlite_device_facts_touch_and_paging, postgres_device_facts_touch_and_paging;
    check_device_counts_by_state => sqlite_device_counts_by_state, postgres_device_counts_by_state;
    check_inventory_sections_replace => sqlite_inventory_sections_replace, postgres_inventory_sections_replace;
    check_facts_and_their_section_go_together => sqlite_facts_and_their_section_go_together, postgres_facts_and_their_section_go_together;
    check_repeated_facts_answer => sqlite_repeated_facts_answer, postgres_repeated_facts_answer;
    check_fifo_order_per_channel => sqlite_fifo_order_per_channel, postgres_fifo_order_per_channel;
    check_shared_command_bodies => sqlite_shared_command_bodies, postgres_shared_command_bodies;
    check_unreported_command_is_resent => sqlite_unreported_command_is_resent, postgres_unreported_command_is_resent;
    check_resend_delay_and_attempt_limit => sqlite_resend_delay_and_attempt_limit, postgres_resend_delay_and_attempt_limit;
    check_channels_are_isolated => sqlite_channels_are_isolated, postgres_channels_are_isolated;
    check_not_now_requeues => sqlite_not_now_requeues, postgres_not_now_requeues;
    check_duplicate_and_unknown_results => sqlite_duplicate_and_unknown_results, postgres_duplicate_and_unknown_results;
    check_expiry => sqlite_expiry, postgres_expiry;
    check_deliver_once_commands_go_out_once => sqlite_deliver_once_commands_go_out_once, postgres_deliver_once_commands_go_out_once;
    check_enqueue_is_one_transaction => sqlite_enqueue_is_one_transaction, postgres_enqueue_is_one_transaction;
    check_unit_of_work_commits_once_or_not_at_all => sqlite_unit_of_work_commits_once_or_not_at_all, postgres_unit_of_work_commits_once_or_not_at_all;
    check_scoped_reads_hide_other_tenants => sqlite_scoped_reads_hide_other_tenants, postgres_scoped_reads_hide_other_tenants;
    check_count_commands_by_status => sqlite_count_commands_by_status, postgres_count_commands_by_status;
    check_concurrent_channels_never_share_commands => sqlite_concurrent_channels_never_share_commands, postgres_concurrent_channels_never_share_commands;
    check_concurrent_next_command_on_one_channel => sqlite_concurrent_next_command_on_one_channel, postgres_concurrent_next_command_on_one_channel;
    check_pushes_coalesce_and_claim_once => sqlite_pushes_coalesce_and_claim_once, postgres_pushes_coalesce_and_claim_once;
    check_a_pass_settles_its_deliveries_together => sqlite_a_pass_settles_its_deliveries_together, postgres_a_pass_settles_its_deliveries_together;
    check_the_device_lookup_says_whether_a_channel_has_work => sqlite_the_device_lookup_says_whether_a_channel_has_work, postgres_the_device_lookup_says_whether_a_channel_has_work;
    check_an_idle_poll_claims_and_is_seen_at_once => sqlite_an_idle_poll_claims_and_is_seen_at_once, postgres_an_idle_poll_claims_and_is_seen_at_once;
    check_an_idle_poll_claims_in_its_lookup => sqlite_an_idle_poll_claims_in_its_lookup, postgres_an_idle_poll_claims_in_its_lookup;
    check_the_device_lookup_says_whether_webhooks_are_enabled => sqlite_the_device_lookup_says_whether_webhooks_are_enabled, postgres_the_device_lookup_says_whether_webhooks_are_enabled;
    check_the_device_lookup_says_whether_os_currency_applies => sqlite_the_device_lookup_says_whether_os_currency_applies, postgres_the_device_lookup_says_whether_os_currency_applies;
    check_a_facts_update_reads_the_standing_it_leaves => sqlite_a_facts_update_reads_the_standing_it_leaves, postgres_a_facts_update_reads_the_standing_it_leaves;
    check_smart_group_changes_raise_the_tenants_revision => sqlite_smart_group_changes_raise_the_tenants_revision, postgres_smart_group_changes_raise_the_tenants_revision;
    check_a_mark_outlives_a_pass_that_claims_beside_its_unit => sqlite_a_mark_outlives_a_pass_that_claims_beside_its_unit, postgres_a_mark_outlives_a_pass_that_claims_beside_its_unit;
    check_a_unit_says_when_it_gave_licences_work => sqlite_a_unit_says_when_it_gave_licences_work, postgres_a_unit_says_when_it_gave_licences_work;
    check_dead_push_tokens_revive_on_token_update => sqlite_dead_push_tokens_revive_on_token_update, postgres_dead_push_tokens_revive_on_token_update;
    check_wake_for_inactive_devices => sqlite_wake_for_inactive_devices, postgres_wake_for_inactive_devices;
    check_push_certificates => sqlite_push_certificates, postgres_push_certificates;
    check_push_csr_keys => sqlite_push_csr_keys, postgres_push_csr_keys;
    check_dep_tokens => sqlite_dep_tokens, postgres_dep_tokens;
    check_dep_devices => sqlite_dep_devices, postgres_dep_devices;
    check_dep_sync_batches => sqlite_dep_sync_batches, postgres_dep_sync_batches;
    check_dep_templates_and_assignments => sqlite_dep_templates_and_assignments, postgres_dep_templates_and_assignments;
    check_backup_support => sqlite_backup_support, postgres_backup_support;
}

// ---------------------------------------------------------------------------------------------------------
// fixtures

fn unique_udid() -> Udid {
    Udid::parse(&uuid::Uuid::new_v4().hyphenated().to_string().to_uppercase()).unwrap()
}

async fn tenant(store: &Store, code: &str) -> Tenant {
    let t = Tenant {
        id: TenantId::new(),
        name: format!("Department of {code}"),
        code: code.to_owned(),
        created_at: T0,
    };
    store.create_tenant(&t).await.unwrap();
    t
}

fn authenticate(udid: &Udid, tenant: TenantId, now: UnixTime) -> AuthenticateDevice {
    AuthenticateDevice {
        udid: udid.clone(),
        tenant_id: tenant,
        cert_fingerprint: format!("fp-{}", now.0),
        topic: "com.apple.mgmt.External.test".to_owned(),
        facts: DeviceFacts {
            serial_number: Some("F9FXK0ABCDEF".to_owned()),
            device_name: Some("iPad".to_owned()),
            model: Some("J181AP".to_owned()),
            model_name: Some("iPad".to_owned()),
            product_name: Some("iPad13,18".to_owned()),
            os_version: Some("17.5".to_owned()),
            build_version: Some("21F79".to_owned()),
            is_supervised: Some(true),
            facts_digest: None,
            plan_inputs_digest: None,
        },
        now,
    }
}

fn token_update(device: &Device, channel: &ChannelId, now: UnixTime) -> TokenUpdateRecord {
    TokenUpdateRecord {
        device_id: device.id,
        channel: channel.clone(),
        user_short_name: None,
        user_id: None,
        push_token: vec![0xAB; 32],
        push_magic: "4D7D2A9C-0000-0000-0000-000000000001".to_owned(),
        unlock_token: None,
        awaiting_configuration: false,
        now,
    }
}

/// An enrolled device (Authenticate + TokenUpdate on the device channel).
async fn enrolled_device(store: &Store, tenant: &Tenant) -> Device {
    let udid = unique_udid();
    let device = store
        .authenticate_device(&authenticate(&udid, tenant.id, T0))
        .await
        .unwrap();
    store
        .update_token(&token_update(&device, &ChannelId::device(&udid), T0))
        .await
        .unwrap();
    device
}

/// Who queues the suite's commands.
fn tester() -> QueuedBy {
    QueuedBy::User {
        id: "tester".to_owned(),
        name: "Tester".to_owned(),
    }
}

/// The request type of a labelled command: the label itself when it names one, else one picked from the
/// label (neighbouring labels such as `C0`, `C1` … get different types).
fn request_type_for(label: &str) -> RequestType {
    RequestType::parse(label).unwrap_or_else(|_| {
        let sum: usize = label.bytes().map(usize::from).sum();
        RequestType::ALL[sum % RequestType::ALL.len()]
    })
}

/// `count` newly enrolled devices of `tenant`, and a command `label` for each one's device channel.
async fn one_command_each(
    store: &Store,
    tenant: &Tenant,
    count: usize,
    label: &str,
) -> Vec<NewCommand> {
    let mut commands = Vec::with_capacity(count);
    for _ in 0..count {
        let device = enrolled_device(store, tenant).await;
        commands.push(command(&device, &ChannelId::device(&device.udid), label));
    }
    commands
}

fn command(device: &Device, channel: &ChannelId, label: &str) -> NewCommand {
    NewCommand {
        uuid: CommandUuid::new_random(),
        device_id: device.id,
        tenant_id: device.tenant_id,
        channel: channel.clone(),
        request_type: request_type_for(label),
        payload: format!("<plist>{label}</plist>").into_bytes(),
        payload_sealed: false,
        body_id: None,
        deliver_once: false,
        queued_by: Some(tester()),
        queued_at: T0,
        expires_at: None,
    }
}

fn report(
    channel: &ChannelId,
    uuid: &CommandUuid,
    status: CommandStatus,
    now: UnixTime,
) -> CommandResultRecord {
    CommandResultRecord {
        channel: channel.clone(),
        uuid: uuid.clone(),
        status,
        result: Some(b"<plist>result</plist>".to_vec()),
        result_sealed: false,
        error_chain: None,
        now,
    }
}

async fn status_of(store: &Store, uuid: &CommandUuid) -> CommandStatus {
    store
        .get_command(all_tenants(), uuid)
        .await
        .unwrap()
        .unwrap()
        .status
}

// ---------------------------------------------------------------------------------------------------------
// checks

/// A cluster-leased job runs on one node at a time and at most once per interval; a node that died mid-run is
/// replaced once its lease ran out; the outcome of each run is kept.
async fn check_job_runs(store: Store) {
    let t0 = UnixTime(1_800_000_000);
    let claim = |owner: &'static str, now: UnixTime| JobClaim {
        name: "nightly",
        owner,
        now,
        lease_until: now.plus_seconds(60),
        due_if_started_before: now.plus_seconds(-3600),
    };
    assert!(store.claim_job_run(&claim("a", t0)).await.unwrap());
    // Held: nobody else gets it, not even when it would be due.
    assert!(!store
        .claim_job_run(&claim("b", t0.plus_seconds(1)))
        .await
        .unwrap());
    assert!(store
        .finish_job_run("nightly", "a", t0.plus_seconds(5), None)
        .await
        .unwrap());
    // Finished, but not due again before the interval has passed since it started.
    assert!(!store
        .claim_job_run(&claim("b", t0.plus_seconds(10)))
        .await
        .unwrap());
    assert!(!store
        .claim_job_run(&claim("a", t0.plus_seconds(3599)))
        .await
        .unwrap());
    // Due again: exactly one of two racing nodes wins.
    let due = t0.plus_seconds(3600);
    let (claim_a, claim_b) = (claim("a", due), claim("b", due));
    let (x, y) = tokio::join!(store.claim_job_run(&claim_a), store.claim_job_run(&claim_b));
    assert_eq!(
        u8::from(x.unwrap()) + u8::from(y.unwrap()),
        1,
        "one node runs the job"
    );
    let winner = if store
        .finish_job_run("nightly", "a", due, Some("apple said no"))
        .await
        .unwrap()
    {
        "a"
    } else {
        "b"
    };
    if winner == "b" {
        assert!(store
            .finish_job_run("nightly", "b", due, Some("apple said no"))
            .await
            .unwrap());
    }
    let runs = store.job_runs().await.unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].runs, 2);
    assert_eq!(runs[0].last_error.as_deref(), Some("apple said no"));
    assert_eq!(runs[0].lease_owner, None);

    // A node dies mid-run: its lease blocks others until it runs out, then the unfinished run is due at once.
    let later = due.plus_seconds(7200);
    assert!(store.claim_job_run(&claim("c", later)).await.unwrap());
    assert!(!store
        .claim_job_run(&claim("a", later.plus_seconds(59)))
        .await
        .unwrap());
    assert!(store
        .claim_job_run(&claim("a", later.plus_seconds(60)))
        .await
        .unwrap());
    // The dead node's late finish records nothing: the run is a's now.
    assert!(!store
        .finish_job_run("nightly", "c", later.plus_seconds(61), None)
        .await
        .unwrap());
    assert!(store
        .finish_job_run("nightly", "a", later.plus_seconds(62), None)
        .await
        .unwrap());
    let runs = store.job_runs().await.unwrap();
    assert_eq!(runs[0].runs, 3);
    assert_eq!(runs[0].last_error, None);
    assert_eq!(runs[0].last_finished_at, Some(later.plus_seconds(62)));
}

async fn check_tenants(store: Store) {
    let physics = tenant(&store, "physics").await;
    let biology = tenant(&store, "biology").await;

    let duplicate = Tenant {
        id: TenantId::new(),
        name: "Physics again".to_owned(),
        code: "physics".to_owned(),
        created_at: T0,
    };
    assert!(matches!(
        store.create_tenant(&duplicate).await,
        Err(StoreError::Conflict(_))
    ));

    assert_eq!(
        store.get_tenant(all_tenants(), physics.id).await.unwrap(),
        Some(physics.clone())
    );
    assert_eq!(
        store
            .get_tenant(tenant_scope(physics.id), physics.id)
            .await
            .unwrap(),
        Some(physics.clone())
    );
    assert_eq!(
        store
            .get_tenant(tenant_scope(biology.id), physics.id)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store
            .get_tenant(all_tenants(), TenantId::new())
            .await
            .unwrap(),
        None
    );

    assert_eq!(
        store.list_tenants(all_tenants()).await.unwrap(),
        vec![biology.clone(), physics.clone()]
    );
    assert_eq!(
        store.list_tenants(tenant_scope(physics.id)).await.unwrap(),
        vec![physics]
    );
}

async fn check_api_tokens(store: Store) {
    let physics = tenant(&store, "physics").await;
    let admin = ApiToken {
        id: TokenId::new(),
        name: "physics automation".to_owned(),
        role: Role::Admin,
        tenant_id: Some(physics.id),
        token_hash: "a".repeat(64),
        created_at: T0,
        expires_at: Some(T0.plus_seconds(3600)),
        revoked_at: None,
        owner_user_id: None,
    };
    store.create_api_token(&admin).await.unwrap();
    let operator = ApiToken {
        id: TokenId::new(),
        name: "central".to_owned(),
        role: Role::Operator,
        tenant_id: None,
        token_hash: "b".repeat(64),
        created_at: T0,
        expires_at: None,
        revoked_at: Some(T0.plus_seconds(5)),
        owner_user_id: None,
    };
    store.create_api_token(&operator).await.unwrap();

    let presented = |token: &ApiToken, owner_active: bool| {
        Some(orchard_store::PresentedToken {
            token: token.clone(),
            owner_active,
        })
    };
    assert_eq!(
        store.find_api_token_by_hash(&"a".repeat(64)).await.unwrap(),
        presented(&admin, true)
    );
    assert_eq!(
        store.find_api_token_by_hash(&"b".repeat(64)).await.unwrap(),
        presented(&operator, true)
    );

    // A token a person minted lives while that person may act: disabled or gone, it is reported inactive.
    let person = store
        .set_local_account("0190c0de-0000-7000-8000-000000000001", "alice", "phc", T0)
        .await
        .unwrap();
    let owned = ApiToken {
        id: TokenId::new(),
        token_hash: "e".repeat(64),
        owner_user_id: Some(person.clone()),
        ..admin.clone()
    };
    store.create_api_token(&owned).await.unwrap();
    let orphan = ApiToken {
        id: TokenId::new(),
        token_hash: "f".repeat(64),
        owner_user_id: Some("no-such-user".to_owned()),
        ..admin.clone()
    };
    store.create_api_token(&orphan).await.unwrap();
    assert_eq!(
        store.find_api_token_by_hash(&"e".repeat(64)).await.unwrap(),
        presented(&owned, true)
    );
    assert_eq!(
        store.find_api_token_by_hash(&"f".repeat(64)).await.unwrap(),
        presented(&orphan, false)
    );
    store
        .set_user_disabled(&person, Some(T0.plus_seconds(60)))
        .await
        .unwrap();
    assert_eq!(
        store.find_api_token_by_hash(&"e".repeat(64)).await.unwrap(),
        presented(&owned, false)
    );
    assert_eq!(
        store.find_api_token_by_hash(&"c".repeat(64)).await.unwrap(),
        None
    );

    let same_hash = ApiToken {
        id: TokenId::new(),
        ..admin.clone()
    };
    assert!(matches!(
        store.create_api_token(&same_hash).await,
        Err(StoreError::Conflict(_))
    ));
    let unknown_tenant = ApiToken {
        id: TokenId::new(),
        tenant_id: Some(TenantId::new()),
        token_hash: "d".repeat(64),
        ..admin
    };
    assert!(matches!(
        store.create_api_token(&unknown_tenant).await,
        Err(StoreError::NotFound)
    ));
}

fn link(
    tenant: &Tenant,
    secret_hash: &str,
    max_uses: Option<i64>,
    expires_at: Option<UnixTime>,
) -> EnrollmentLink {
    EnrollmentLink {
        id: EnrollmentLinkId::new(),
        tenant_id: tenant.id,
        name: format!("link {secret_hash}"),
        secret_hash: secret_hash.to_owned(),
        max_uses,
        uses: 0,
        expires_at,
        created_at: T0,
        created_by: Some("admin@example.edu".to_owned()),
    }
}

async fn check_enrollment_links(store: Store) {
    let physics = tenant(&store, "physics").await;
    let limited = link(&physics, "limited", Some(2), Some(T0.plus_seconds(100)));
    let unlimited = link(&physics, "unlimited", None, None);
    let expired = link(&physics, "expired", None, Some(T0.plus_seconds(-1)));
    for l in [&limited, &unlimited, &expired] {
        store.create_enrollment_link(l).await.unwrap();
    }

    assert_eq!(
        store.find_enrollment_link_by_hash("limited").await.unwrap(),
        Some(limited.clone())
    );
    assert_eq!(
        store.find_enrollment_link_by_hash("nope").await.unwrap(),
        None
    );

    assert!(store.use_enrollment_link(limited.id, T0).await.unwrap());
    assert!(store.use_enrollment_link(limited.id, T0).await.unwrap());
    assert!(!store.use_enrollment_link(limited.id, T0).await.unwrap());
    let counted = store
        .find_enrollment_link_by_hash("limited")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(counted.uses, 2);

    // A link that is still below max_uses stops counting once it has expired.
    let expiring = link(&physics, "expiring", Some(10), Some(T0.plus_seconds(100)));
    store.create_enrollment_link(&expiring).await.unwrap();
    assert!(store
        .use_enrollment_link(expiring.id, T0.plus_seconds(100))
        .await
        .unwrap());
    assert!(!store
        .use_enrollment_link(expiring.id, T0.plus_seconds(101))
        .await
        .unwrap());

    for _ in 0..5 {
        assert!(store.use_enrollment_link(unlimited.id, T0).await.unwrap());
    }
    assert!(!store.use_enrollment_link(expired.id, T0).await.unwrap());
    assert!(!store
        .use_enrollment_link(EnrollmentLinkId::new(), T0)
        .await
        .unwrap());

    let same_secret = EnrollmentLink {
        id: EnrollmentLinkId::new(),
        ..unlimited
    };
    assert!(matches!(
        store.create_enrollment_link(&same_secret).await,
        Err(StoreError::Conflict(_))
    ));
}

async fn check_enrollment_link_uses_are_atomic(store: Store) {
    let physics = tenant(&store, "physics").await;
    let limited = link(&physics, "limited", Some(3), None);
    store.create_enrollment_link(&limited).await.unwrap();
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store.use_enrollment_link(limited.id, T0).await.unwrap()
        }));
    }
    let mut granted = 0;
    for task in tasks {
        if task.await.unwrap() {
            granted += 1;
        }
    }
    assert_eq!(granted, 3);
}

fn challenge(
    tenant: &Tenant,
    link: &EnrollmentLink,
    hash: &str,
    expires_at: UnixTime,
) -> ScepChallenge {
    ScepChallenge {
        challenge_hash: hash.to_owned(),
        link_id: link.id,
        tenant_id: tenant.id,
        grant: IdentityGrant::Ade {
            serial: "F9FXK0000001".into(),
            udid: unique_udid(),
        },
        created_at: T0,
        expires_at,
        used_at: None,
    }
}

async fn check_scep_challenges(store: Store) {
    let physics = tenant(&store, "physics").await;
    let l = link(&physics, "secret", None, None);
    store.create_enrollment_link(&l).await.unwrap();
    let fresh = challenge(&physics, &l, "fresh", T0.plus_seconds(600));
    let stale = challenge(&physics, &l, "stale", T0.plus_seconds(600));
    store.create_scep_challenge(&fresh).await.unwrap();
    store.create_scep_challenge(&stale).await.unwrap();
    assert!(matches!(
        store.create_scep_challenge(&fresh).await,
        Err(StoreError::Conflict(_))
    ));

    let now = T0.plus_seconds(10);
    let consumed = store.consume_scep_challenge("fresh", now).await.unwrap();
    assert_eq!(
        consumed,
        Some(ScepChallenge {
            used_at: Some(now),
            ..fresh
        })
    );
    assert_eq!(
        store.consume_scep_challenge("fresh", now).await.unwrap(),
        None
    );
    assert_eq!(
        store
            .consume_scep_challenge("stale", T0.plus_seconds(601))
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store.consume_scep_challenge("unknown", now).await.unwrap(),
        None
    );

    let orphan = challenge(
        &physics,
        &link(&physics, "never stored", None, None),
        "orphan",
        T0,
    );
    assert!(matches!(
        store.create_scep_challenge(&orphan).await,
        Err(StoreError::NotFound)
    ));
}

async fn check_scep_challenge_is_consumed_once_under_concurrency(store: Store) {
    let physics = tenant(&store, "physics").await;
    let l = link(&physics, "secret", None, None);
    store.create_enrollment_link(&l).await.unwrap();
    store
        .create_scep_challenge(&challenge(&physics, &l, "contended", T0.plus_seconds(600)))
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store.consume_scep_challenge("contended", T0).await.unwrap()
        }));
    }
    let mut winners = 0;
    for task in tasks {
        if task.await.unwrap().is_some() {
            winners += 1;
        }
    }
    assert_eq!(winners, 1);
}

async fn check_issued_certificates(store: Store) {
    let physics = tenant(&store, "physics").await;
    let l = link(&physics, "secret", None, None);
    store.create_enrollment_link(&l).await.unwrap();
    let cert = IssuedCertificate {
        fingerprint: "ab".repeat(32),
        serial_hex: "0f1e2d".to_owned(),
        subject: "CN=iPad".to_owned(),
        tenant_id: physics.id,
        link_id: Some(l.id),
        grant: IdentityGrant::Link,
        issued_at: T0,
        not_after: T0.plus_seconds(365 * 86_400),
        bound_device_id: None,
        bound_at: None,
        revoked_at: None,
        revoked_reason: None,
        renewed_at: None,
    };
    store.record_issued_certificate(&cert).await.unwrap();
    assert_eq!(
        store
            .find_issued_certificate(&"ab".repeat(32))
            .await
            .unwrap(),
        Some(cert.clone())
    );
    assert_eq!(store.find_issued_certificate("cd").await.unwrap(), None);
    assert!(matches!(
        store.record_issued_certificate(&cert).await,
        Err(StoreError::Conflict(_))
    ));
    let without_link = IssuedCertificate {
        fingerprint: "cd".repeat(32),
        link_id: None,
        grant: IdentityGrant::Device {
            device_id: orchard_types::DeviceId::new(),
            purpose: orchard_store::DeviceGrantPurpose::ReturnToService,
        },
        ..cert.clone()
    };
    store
        .record_issued_certificate(&without_link)
        .await
        .unwrap();
    assert_eq!(
        store
            .find_issued_certificate(&"cd".repeat(32))
            .await
            .unwrap(),
        Some(without_link)
    );
    // Revoked once: the reason and time stay as first recorded.
    assert!(store
        .revoke_identity(&cert.fingerprint, "suspected_theft", T0.plus_seconds(5))
        .await
        .unwrap());
    assert!(!store
        .revoke_identity(&cert.fingerprint, "retired", T0.plus_seconds(9))
        .await
        .unwrap());
    assert!(!store.revoke_identity("ef", "retired", T0).await.unwrap());
    let revoked = store
        .find_issued_certificate(&cert.fingerprint)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(revoked.revoked_at, Some(T0.plus_seconds(5)));
    assert_eq!(revoked.revoked_reason.as_deref(), Some("suspected_theft"));
}

async fn check_authenticate_twice_keeps_one_device(store: Store) {
    let physics = tenant(&store, "physics").await;
    let biology = tenant(&store, "biology").await;
    let udid = unique_udid();
    let channel = ChannelId::device(&udid);
    let user_channel = ChannelId::user(&udid, "jane");

    let first = store
        .authenticate_device(&authenticate(&udid, physics.id, T0))
        .await
        .unwrap();
    assert_eq!(first.state, EnrollmentState::Pending);
    assert_eq!(first.udid, udid);
    assert_eq!(first.tenant_id, physics.id);
    assert_eq!(first.enrolled_at, Some(T0));
    assert_eq!(first.last_seen_at, Some(T0));
    assert_eq!(first.is_supervised, Some(true));
    assert_eq!(first.serial_number.as_deref(), Some("F9FXK0ABCDEF"));
    assert_eq!(
        store.find_device_by_udid(&udid).await.unwrap(),
        Some(first.clone())
    );

    store
        .update_token(&token_update(&first, &channel, T0))
        .await
        .unwrap();
    store
        .update_token(&TokenUpdateRecord {
            user_short_name: Some("jane".to_owned()),
            user_id: Some("1234".to_owned()),
            ..token_update(&first, &user_channel, T0)
        })
        .await
        .unwrap();
    let queued = command(&first, &channel, "Queued");
    let sent = command(&first, &channel, "Sent");
    let not_now = command(&first, &channel, "NotNow");
    let acknowledged = command(&first, &channel, "Acknowledged");
    let on_user_channel = command(&first, &user_channel, "UserQueued");
    store
        .enqueue_commands(&[
            acknowledged.clone(),
            not_now.clone(),
            sent.clone(),
            queued.clone(),
            on_user_channel.clone(),
        ])
        .await
        .unwrap();
    let handed = store
        .next_command(&channel, false, T0)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(handed.uuid, acknowledged.uuid);
    store
        .record_result(&report(
            &channel,
            &acknowledged.uuid,
            CommandStatus::Acknowledged,
            T0,
        ))
        .await
        .unwrap();
    let handed = store
        .next_command(&channel, false, T0)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(handed.uuid, not_now.uuid);
    store
        .record_result(&report(&channel, &not_now.uuid, CommandStatus::NotNow, T0))
        .await
        .unwrap();
    let handed = store
        .next_command(&channel, true, T0)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(handed.uuid, sent.uuid);

    // Re-enrollment: another tenant, another identity, fewer facts.
    let later = T0.plus_seconds(60);
    let mut again = authenticate(&udid, biology.id, later);
    again.facts = DeviceFacts {
        os_version: Some("18.1".to_owned()),
        ..DeviceFacts::default()
    };
    let second = store.authenticate_device(&again).await.unwrap();
    assert_eq!(second.id, first.id);
    assert_eq!(second.created_at, first.created_at);
    assert_eq!(second.tenant_id, biology.id);
    assert_eq!(second.cert_fingerprint.as_deref(), Some("fp-1800000060"));
    assert_eq!(second.state, EnrollmentState::Pending);
    assert_eq!(second.enrolled_at, Some(later));
    assert_eq!(second.os_version.as_deref(), Some("18.1"));
    // Facts the new Authenticate did not carry keep their stored value.
    assert_eq!(second.serial_number.as_deref(), Some("F9FXK0ABCDEF"));
    assert_eq!(second.is_supervised, Some(true));
    assert_eq!(store.count_devices(all_tenants()).await.unwrap(), 1);
    assert_eq!(
        store.get_device(all_tenants(), first.id).await.unwrap(),
        Some(second.clone())
    );

    assert!(store.list_channels(first.id).await.unwrap().is_empty());
    assert_eq!(store.get_channel(&channel).await.unwrap(), None);
    assert_eq!(store.get_channel(&user_channel).await.unwrap(), None);
    for unfinished in [&queued, &sent, &not_now, &on_user_channel] {
        let record = store
            .get_command(all_tenants(), &unfinished.uuid)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            record.status,
            CommandStatus::Expired,
            "{}",
            unfinished.request_type
        );
        assert_eq!(record.completed_at, Some(later));
    }
    assert_eq!(
        status_of(&store, &acknowledged.uuid).await,
        CommandStatus::Acknowledged
    );
    assert_eq!(
        store.next_command(&channel, false, later).await.unwrap(),
        None
    );

    // Inventory survives a re-enrollment into the same tenant, but not into another one.
    store
        .put_inventory_section(first.id, "apps", "[]", later)
        .await
        .unwrap();
    store
        .authenticate_device(&authenticate(&udid, biology.id, later.plus_seconds(1)))
        .await
        .unwrap();
    assert_eq!(
        store
            .get_inventory(all_tenants(), first.id)
            .await
            .unwrap()
            .len(),
        1
    );
    let third = store
        .authenticate_device(&authenticate(&udid, physics.id, later.plus_seconds(2)))
        .await
        .unwrap();
    assert_eq!(third.id, first.id);
    assert!(store
        .get_inventory(all_tenants(), first.id)
        .await
        .unwrap()
        .is_empty());
}

async fn check_update_token(store: Store) {
    let physics = tenant(&store, "physics").await;
    let udid = unique_udid();
    let device = store
        .authenticate_device(&authenticate(&udid, physics.id, T0))
        .await
        .unwrap();
    let channel = ChannelId::device(&udid);

    let with_unlock = TokenUpdateRecord {
        unlock_token: Some(vec![1, 2, 3]),
        awaiting_configuration: true,
        ..token_update(&device, &channel, T0.plus_seconds(1))
    };
    assert!(store.update_token(&with_unlock).await.unwrap().first);
    let enrolled = store
        .get_device(all_tenants(), device.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(enrolled.state, EnrollmentState::Enrolled);
    assert_eq!(enrolled.last_seen_at, Some(T0.plus_seconds(1)));

    let refreshed = TokenUpdateRecord {
        push_token: vec![0xCD; 32],
        push_magic: "magic-2".to_owned(),
        unlock_token: None,
        awaiting_configuration: false,
        ..token_update(&device, &channel, T0.plus_seconds(2))
    };
    assert!(!store.update_token(&refreshed).await.unwrap().first);
    let stored = store.get_channel(&channel).await.unwrap().unwrap();
    assert_eq!(stored.id, channel);
    assert_eq!(stored.device_id, device.id);
    assert_eq!(stored.push_token, Some(vec![0xCD; 32]));
    assert_eq!(stored.push_magic.as_deref(), Some("magic-2"));
    // A TokenUpdate without UnlockToken keeps the one we have.
    assert_eq!(
        stored.unlock_token.as_ref().map(|t| t.expose().clone()),
        Some(vec![1, 2, 3])
    );
    assert!(!stored.awaiting_configuration);
    assert_eq!(stored.token_updated_at, Some(T0.plus_seconds(2)));

    let user_channel = ChannelId::user(&udid, "jane");
    let user = TokenUpdateRecord {
        user_short_name: Some("jane".to_owned()),
        user_id: Some("8A3F".to_owned()),
        ..token_update(&device, &user_channel, T0.plus_seconds(3))
    };
    assert!(store.update_token(&user).await.unwrap().first);
    assert!(!store.update_token(&user).await.unwrap().first);
    let channels = store.list_channels(device.id).await.unwrap();
    assert_eq!(
        channels.iter().map(|c| c.id.clone()).collect::<Vec<_>>(),
        vec![channel.clone(), user_channel.clone()]
    );
    assert_eq!(channels[1].user_short_name.as_deref(), Some("jane"));
    assert_eq!(channels[1].user_id.as_deref(), Some("8A3F"));
    assert_eq!(channels[1].unlock_token, None);

    // After a new Authenticate the channels are gone, so the next TokenUpdate is a first one again.
    store
        .authenticate_device(&authenticate(&udid, physics.id, T0.plus_seconds(4)))
        .await
        .unwrap();
    assert!(store.update_token(&refreshed).await.unwrap().first);

    let ghost = Device {
        id: DeviceId::new(),
        ..device
    };
    assert!(matches!(
        store
            .update_token(&token_update(
                &ghost,
                &ChannelId::device(&unique_udid()),
                T0
            ))
            .await,
        Err(StoreError::NotFound)
    ));
}

async fn check_check_out(store: Store) {
    let physics = tenant(&store, "physics").await;
    let device = enrolled_device(&store, &physics).await;
    let channel = ChannelId::device(&device.udid);
    let pending = command(&device, &channel, "DeviceInformation");
    store
        .enqueue_commands(std::slice::from_ref(&pending))
        .await
        .unwrap();

    let later = T0.plus_seconds(30);
    store.check_out(&device.udid, later).await.unwrap();
    let checked_out = store
        .get_device(all_tenants(), device.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(checked_out.state, EnrollmentState::Unenrolled);
    assert!(store.list_channels(device.id).await.unwrap().is_empty());
    assert_eq!(
        status_of(&store, &pending.uuid).await,
        CommandStatus::Expired
    );
    assert!(matches!(
        store.check_out(&unique_udid(), later).await,
        Err(StoreError::NotFound)
    ));
}

/// The dashboard's one-pass counts agree with the searches they replace, inside the scope.
async fn check_device_counts_by_state(store: Store) {
    let physics = tenant(&store, "physics").await;
    let music = tenant(&store, "music").await;
    let recent = enrolled_device(&store, &physics).await;
    let stale = enrolled_device(&store, &physics).await;
    let _never_touched = enrolled_device(&store, &physics).await;
    store
        .authenticate_device(&authenticate(&unique_udid(), physics.id, T0))
        .await
        .unwrap();
    enrolled_device(&store, &music).await;
    store
        .touch_device(recent.id, T0.plus_seconds(100))
        .await
        .unwrap();
    store
        .touch_device(stale.id, T0.plus_seconds(10))
        .await
        .unwrap();
    let since = T0.plus_seconds(50);
    let counts = store
        .count_devices_by_state(tenant_scope(physics.id), &DeviceQuery::default(), since)
        .await
        .unwrap();
    let searched = |q: DeviceQuery| {
        let store = store.clone();
        async move {
            store
                .count_search_devices(tenant_scope(physics.id), &q)
                .await
                .unwrap()
        }
    };
    assert_eq!(counts.total, searched(DeviceQuery::default()).await);
    assert_eq!(
        counts.enrolled,
        searched(DeviceQuery {
            state: Some(EnrollmentState::Enrolled),
            ..DeviceQuery::default()
        })
        .await
    );
    assert_eq!(
        counts.pending,
        searched(DeviceQuery {
            state: Some(EnrollmentState::Pending),
            ..DeviceQuery::default()
        })
        .await
    );
    assert_eq!(
        counts.enrolled_not_seen,
        searched(DeviceQuery {
            state: Some(EnrollmentState::Enrolled),
            last_seen_before: Some(since),
            ..DeviceQuery::default()
        })
        .await
    );
    assert_eq!(
        (counts.total, counts.enrolled, counts.pending),
        (4, 3, 1),
        "physics only: {counts:?}"
    );
    // A page carries the count of every match, also past the end and for a search that finds nothing.
    for (q, offset, rows, total) in [
        (DeviceQuery::default(), 0, 2, 4),
        (DeviceQuery::default(), 2, 2, 4),
        (DeviceQuery::default(), 10, 0, 4),
        (
            DeviceQuery {
                text: Some("no such ipad".into()),
                ..DeviceQuery::default()
            },
            0,
            0,
            0,
        ),
    ] {
        let (found, counted) = store
            .search_devices_counted(tenant_scope(physics.id), &q, Page { limit: 2, offset })
            .await
            .unwrap();
        assert_eq!(
            (found.len(), counted),
            (rows, total),
            "offset {offset}, {q:?}"
        );
        assert_eq!(counted, searched(q).await);
    }
    let everyone = store
        .count_devices_by_state(all_tenants(), &DeviceQuery::default(), since)
        .await
        .unwrap();
    assert_eq!(everyone.total, 5);
    let empty = store
        .count_devices_by_state(
            all_tenants(),
            &DeviceQuery {
                model: Some("no such model".into()),
                ..DeviceQuery::default()
            },
            since,
        )
        .await
        .unwrap();
    assert_eq!(empty, orchard_store::DeviceCounts::default());
}

async fn check_device_facts_touch_and_paging(store: Store) {
    let physics = tenant(&store, "physics").await;
    let device = enrolled_device(&store, &physics).await;

    let facts = DeviceFacts {
        device_name: Some("Lab iPad 7".to_owned()),
        is_supervised: Some(false),
        ..DeviceFacts::default()
    };
    store
        .update_device_facts(device.id, &facts, T0.plus_seconds(5))
        .await
        .unwrap();
    store
        .touch_device(device.id, T0.plus_seconds(9))
        .await
        .unwrap();
    let updated = store
        .get_device(all_tenants(), device.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(updated.device_name.as_deref(), Some("Lab iPad 7"));
    assert_eq!(updated.is_supervised, Some(false));
    assert_eq!(updated.os_version.as_deref(), Some("17.5"));
    assert_eq!(updated.updated_at, T0.plus_seconds(5));
    assert_eq!(updated.last_seen_at, Some(T0.plus_seconds(9)));
    assert!(matches!(
        store.update_device_facts(DeviceId::new(), &facts, T0).await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        store.touch_device(DeviceId::new(), T0).await,
        Err(StoreError::NotFound)
    ));

    // Paging follows enrolled_at, then id.
    let mut expected = vec![device.id];
    for i in 1..5 {
        let d = store
            .authenticate_device(&authenticate(
                &unique_udid(),
                physics.id,
                T0.plus_seconds(i),
            ))
            .await
            .unwrap();
        expected.push(d.id);
    }
    let first_page = store
        .list_devices(
            all_tenants(),
            Page {
                limit: 3,
                offset: 0,
            },
        )
        .await
        .unwrap();
    let second_page = store
        .list_devices(
            all_tenants(),
            Page {
                limit: 3,
                offset: 3,
            },
        )
        .await
        .unwrap();
    let listed: Vec<DeviceId> = first_page
        .iter()
        .chain(&second_page)
        .map(|d| d.id)
        .collect();
    assert_eq!(first_page.len(), 3);
    assert_eq!(listed, expected);
    assert_eq!(
        store
            .list_devices(all_tenants(), Page::default())
            .await
            .unwrap()
            .len(),
        5
    );
}

async fn check_inventory_sections_replace(store: Store) {
    let physics = tenant(&store, "physics").await;
    let device = enrolled_device(&store, &physics).await;
    store
        .put_inventory_section(device.id, "apps", r#"[{"id":"a"}]"#, T0)
        .await
        .unwrap();
    store
        .put_inventory_section(device.id, "security", r#"{"passcode":true}"#, T0)
        .await
        .unwrap();
    store
        .put_inventory_section(device.id, "apps", r#"[{"id":"b"}]"#, T0.plus_seconds(7))
        .await
        .unwrap();
    let inventory = store.get_inventory(all_tenants(), device.id).await.unwrap();
    assert_eq!(inventory.len(), 2);
    assert_eq!(inventory[0].section, "apps");
    assert_eq!(inventory[0].json, r#"[{"id":"b"}]"#);
    assert_eq!(inventory[0].updated_at, T0.plus_seconds(7));
    assert_eq!(inventory[1].section, "security");
    assert!(matches!(
        store
            .put_inventory_section(DeviceId::new(), "apps", "[]", T0)
            .await,
        Err(StoreError::NotFound)
    ));
}

/// The facts and the inventory section of one answer, written together (one statement on PostgreSQL): both
/// land, a section written again is replaced, and an unknown device gets NotFound with nothing written.
async fn check_facts_and_their_section_go_together(store: Store) {
    let physics = tenant(&store, "physics").await;
    let device = enrolled_device(&store, &physics).await;
    let other = enrolled_device(&store, &physics).await;
    store
        .put_inventory_section(
            other.id,
            "device_information",
            r#"{"DeviceName":"theirs"}"#,
            T0,
        )
        .await
        .unwrap();
    let facts = DeviceFacts {
        device_name: Some("Lab iPad 9".to_owned()),
        facts_digest: Some("v1:first".to_owned()),
        ..DeviceFacts::default()
    };
    for (json, at) in [
        (
            r#"{"DeviceName":"Lab iPad 9","BatteryLevel":0.5}"#,
            T0.plus_seconds(5),
        ),
        (
            r#"{"DeviceName":"Lab iPad 9","BatteryLevel":0.4}"#,
            T0.plus_seconds(8),
        ),
    ] {
        let mut unit = store.begin_unit().await.unwrap();
        unit.update_device_facts_and_section(device.id, &facts, "device_information", json, at)
            .await
            .unwrap();
        unit.commit().await.unwrap();
    }
    let updated = store
        .get_device(all_tenants(), device.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(updated.device_name.as_deref(), Some("Lab iPad 9"));
    assert_eq!(updated.facts_digest.as_deref(), Some("v1:first"));
    assert_eq!(
        updated.os_version.as_deref(),
        Some("17.5"),
        "a fact left out is kept"
    );
    assert_eq!(updated.updated_at, T0.plus_seconds(8));
    let inventory = store.get_inventory(all_tenants(), device.id).await.unwrap();
    assert_eq!(inventory.len(), 1);
    assert_eq!(inventory[0].section, "device_information");
    assert_eq!(
        inventory[0].json,
        r#"{"DeviceName":"Lab iPad 9","BatteryLevel":0.4}"#
    );
    assert_eq!(inventory[0].updated_at, T0.plus_seconds(8));
    // The neighbour's section and facts are untouched.
    let theirs = store.get_inventory(all_tenants(), other.id).await.unwrap();
    assert_eq!(theirs.len(), 1);
    assert_eq!(theirs[0].json, r#"{"DeviceName":"theirs"}"#);
    let neighbour = store
        .get_device(all_tenants(), other.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(neighbour.device_name, other.device_name);

    let unknown = DeviceId::new();
    let mut unit = store.begin_unit().await.unwrap();
    assert!(matches!(
        unit.update_device_facts_and_section(unknown, &facts, "device_information", "{}", T0)
            .await,
        Err(StoreError::NotFound)
    ));
    drop(unit);
    assert!(store
        .get_inventory(all_tenants(), unknown)
        .await
        .unwrap()
        .is_empty());
}

/// The usual inventory answer stored in one go (one statement on PostgreSQL): its DeviceInformation command's
/// result, the facts and the section land together; anything the general path must judge (a duplicate, an
/// unknown command, another request type, a setup command, another channel's or device's command) writes
/// nothing and says so.
async fn check_repeated_facts_answer(store: Store) {
    let physics = tenant(&store, "physics").await;
    let device = enrolled_device(&store, &physics).await;
    let neighbour = enrolled_device(&store, &physics).await;
    let channel = ChannelId::device(&device.udid);
    let their_channel = ChannelId::device(&neighbour.udid);
    let first = command(&device, &channel, "DeviceInformation");
    let second = command(&device, &channel, "DeviceInformation");
    let lock = command(&device, &channel, "DeviceLock");
    let setup = NewCommand {
        queued_by: Some(QueuedBy::Setup),
        ..command(&device, &channel, "DeviceInformation")
    };
    let theirs = command(&neighbour, &their_channel, "DeviceInformation");
    store
        .enqueue_commands(&[
            first.clone(),
            second.clone(),
            lock.clone(),
            setup.clone(),
            theirs.clone(),
        ])
        .await
        .unwrap();
    let handed = store.next_command(&channel, false, T0).await.unwrap();
    assert_eq!(handed.map(|c| c.uuid), Some(first.uuid.clone()));
    store
        .put_inventory_section(
            neighbour.id,
            "device_information",
            r#"{"DeviceName":"theirs"}"#,
            T0,
        )
        .await
        .unwrap();
    let facts = DeviceFacts {
        device_name: Some("Lab iPad 9".to_owned()),
        facts_digest: Some("v1:same".to_owned()),
        ..DeviceFacts::default()
    };
    let result = b"<plist>answer</plist>".as_slice();
    let json = r#"{"DeviceName":"Lab iPad 9","BatteryLevel":0.5}"#;
    let answer = |channel, uuid, now| RepeatedFactsAnswer {
        device: device.id,
        channel,
        uuid,
        result: Some(result),
        result_sealed: false,
        facts: &facts,
        section: "device_information",
        json,
        now,
    };

    // The answer to the command handed out: recorded, with its facts and section; others still wait.
    let at = T0.plus_seconds(5);
    assert_eq!(
        store
            .record_repeated_facts_answer(&answer(&channel, &first.uuid, at))
            .await
            .unwrap(),
        Some(true)
    );
    let recorded = store
        .get_command(all_tenants(), &first.uuid)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(recorded.status, CommandStatus::Acknowledged);
    assert_eq!(recorded.result.as_deref(), Some(result));
    assert_eq!(recorded.completed_at, Some(at));
    assert_eq!(recorded.error_chain, None);
    let updated = store
        .get_device(all_tenants(), device.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(updated.device_name.as_deref(), Some("Lab iPad 9"));
    assert_eq!(updated.facts_digest.as_deref(), Some("v1:same"));
    assert_eq!(updated.updated_at, at);
    let section = |id: DeviceId| {
        let store = store.clone();
        async move { store.get_inventory(all_tenants(), id).await.unwrap() }
    };
    let inventory = section(device.id).await;
    assert_eq!(inventory.len(), 1);
    assert_eq!(inventory[0].json, json);
    assert_eq!(inventory[0].updated_at, at);

    // What the general path must judge is left to it, with nothing written: the same answer again (a
    // duplicate), an unknown command, another request type, a setup command, the neighbour's command on
    // either channel.
    let later = T0.plus_seconds(9);
    let unknown = CommandUuid::new_random();
    for (on, uuid) in [
        (&channel, &first.uuid),
        (&channel, &unknown),
        (&channel, &lock.uuid),
        (&channel, &setup.uuid),
        (&channel, &theirs.uuid),
        (&their_channel, &theirs.uuid),
    ] {
        assert_eq!(
            store
                .record_repeated_facts_answer(&answer(on, uuid, later))
                .await
                .unwrap(),
            None,
            "{uuid} on {on}"
        );
    }
    assert_eq!(
        section(device.id).await,
        inventory,
        "the section is untouched"
    );
    assert_eq!(
        store
            .get_device(all_tenants(), device.id)
            .await
            .unwrap()
            .unwrap()
            .updated_at,
        at
    );
    for uuid in [&lock.uuid, &setup.uuid, &theirs.uuid] {
        assert_eq!(status_of(&store, uuid).await, CommandStatus::Queued);
    }
    assert_eq!(
        status_of(&store, &first.uuid).await,
        CommandStatus::Acknowledged
    );
    let theirs_now = section(neighbour.id).await;
    assert_eq!(theirs_now.len(), 1);
    assert_eq!(theirs_now[0].json, r#"{"DeviceName":"theirs"}"#);
    let neighbour_now = store
        .get_device(all_tenants(), neighbour.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(neighbour_now.device_name, neighbour.device_name);
    assert_eq!(neighbour_now.updated_at, neighbour.updated_at);

    // The last unfinished command of the channel says so.
    for uuid in [&lock.uuid, &setup.uuid] {
        store
            .record_result(&report(&channel, uuid, CommandStatus::Acknowledged, later))
            .await
            .unwrap();
    }
    assert_eq!(
        store
            .record_repeated_facts_answer(&answer(&channel, &second.uuid, later))
            .await
            .unwrap(),
        Some(false)
    );
    assert_eq!(
        status_of(&store, &second.uuid).await,
        CommandStatus::Acknowledged
    );
}

async fn check_fifo_order_per_channel(store: Store) {
    let physics = tenant(&store, "physics").await;
    let device = enrolled_device(&store, &physics).await;
    let channel = ChannelId::device(&device.udid);
    let mut queued: Vec<NewCommand> = (0..5)
        .map(|i| command(&device, &channel, &format!("C{i}")))
        .collect();
    store.enqueue_commands(&queued).await.unwrap();
    let later: Vec<NewCommand> = (5..7)
        .map(|i| command(&device, &channel, &format!("C{i}")))
        .collect();
    store.enqueue_commands(&later[..1]).await.unwrap();
    store.enqueue_commands(&later[1..]).await.unwrap();
    queued.extend(later);

    for (n, expected) in queued.iter().enumerate() {
        let handed = store
            .next_command(&channel, false, T0)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(handed.uuid, expected.uuid);
        assert_eq!(handed.request_type, expected.request_type);
        assert_eq!(handed.payload, expected.payload);
        assert_eq!(
            store
                .record_result(&report(
                    &channel,
                    &handed.uuid,
                    CommandStatus::Acknowledged,
                    T0
                ))
                .await
                .unwrap(),
            RecordOutcome::Recorded {
                device_id: device.id,
                request_type: expected.request_type,
                queued_by: Some(tester()),
                // Every answer but the last leaves work behind it.
                more_unfinished: n + 1 < queued.len(),
            }
        );
    }
    assert_eq!(store.next_command(&channel, false, T0).await.unwrap(), None);

    let record = store
        .get_command(all_tenants(), &queued[0].uuid)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(record.status, CommandStatus::Acknowledged);
    assert_eq!(record.sent_at, Some(T0));
    assert_eq!(record.completed_at, Some(T0));
    assert_eq!(record.attempts, 1);
    assert_eq!(record.result, Some(b"<plist>result</plist>".to_vec()));
    assert_eq!(record.queued_by, Some(tester()));
}

/// A body stored once is handed out with every command that names it, found again by its source, and purged
/// only once nothing (queue or history) names it and its grace period is over.
async fn check_shared_command_bodies(store: Store) {
    let physics = tenant(&store, "physics").await;
    let first = enrolled_device(&store, &physics).await;
    let second = enrolled_device(&store, &physics).await;
    let mut unit = store.begin_unit().await.unwrap();
    assert_eq!(
        unit.use_command_body("profile:p:1", T0).await.unwrap(),
        None
    );
    assert!(unit
        .insert_command_body("body-1", "profile:p:1", b"<dict/>", true, T0)
        .await
        .unwrap());
    // A second writer of the same source stores nothing and finds the first.
    assert!(!unit
        .insert_command_body("body-2", "profile:p:1", b"<other/>", false, T0)
        .await
        .unwrap());
    assert_eq!(
        unit.use_command_body("profile:p:1", T0).await.unwrap(),
        Some("body-1".to_owned())
    );
    let commands: Vec<NewCommand> = [&first, &second]
        .iter()
        .map(|d| NewCommand {
            payload: Vec::new(),
            body_id: Some("body-1".to_owned()),
            ..command(d, &ChannelId::device(&d.udid), "InstallProfile")
        })
        .collect();
    unit.enqueue_commands(&commands).await.unwrap();
    unit.commit().await.unwrap();

    let later = T0.plus_seconds(10 * 86_400);
    for (device, queued) in [&first, &second].iter().zip(&commands) {
        let channel = ChannelId::device(&device.udid);
        let handed = store
            .next_command(&channel, false, T0)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(handed.uuid, queued.uuid);
        assert!(handed.payload.is_empty());
        let body = handed.body.expect("the shared body comes with the command");
        assert_eq!(
            (body.id.as_str(), body.body.as_slice(), body.sealed),
            ("body-1", b"<dict/>".as_slice(), true)
        );
        // Named by a queued command: never purged.
        assert_eq!(store.purge_unused_command_bodies(later).await.unwrap(), 0);
        store
            .record_result(&report(
                &channel,
                &handed.uuid,
                CommandStatus::Acknowledged,
                T0,
            ))
            .await
            .unwrap();
    }
    // In the history it is still named.
    assert_eq!(store.archive_finished_commands(100).await.unwrap(), 2);
    assert_eq!(store.purge_unused_command_bodies(later).await.unwrap(), 0);
    assert_eq!(store.prune_command_history(later).await.unwrap(), 2);
    // Named by nothing, but used within the grace period: kept; after it: gone.
    assert_eq!(store.purge_unused_command_bodies(T0).await.unwrap(), 0);
    assert_eq!(store.purge_unused_command_bodies(later).await.unwrap(), 1);
    let mut unit = store.begin_unit().await.unwrap();
    assert_eq!(
        unit.use_command_body("profile:p:1", later).await.unwrap(),
        None
    );
    unit.rollback().await.unwrap();
}

async fn check_unreported_command_is_resent(store: Store) {
    let physics = tenant(&store, "physics").await;
    let device = enrolled_device(&store, &physics).await;
    let channel = ChannelId::device(&device.udid);
    let first = command(&device, &channel, "First");
    let second = command(&device, &channel, "Second");
    store
        .enqueue_commands(&[first.clone(), second.clone()])
        .await
        .unwrap();
    let handed = store
        .next_command(&channel, false, T0)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(handed.uuid, first.uuid);
    // The device asked again without reporting (e.g. a dropped connection): the same command goes out again.
    let again = store
        .next_command(&channel, false, T0.plus_seconds(5))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again.uuid, first.uuid);
    let record = store
        .get_command(all_tenants(), &first.uuid)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(record.status, CommandStatus::Sent);
    assert_eq!(record.attempts, 2);
    assert_eq!(record.sent_at, Some(T0.plus_seconds(5)));
    assert_eq!(status_of(&store, &second.uuid).await, CommandStatus::Queued);
}

/// Under a policy: an unanswered command goes out again only once due (the next command goes first meanwhile),
/// and one handed out max_attempts times unanswered is failed with an ErrorChain the next time it is due, so
/// the channel moves on; a NotNow is an answer and never fails a command. Failed commands move to the history.
async fn check_resend_delay_and_attempt_limit(store: Store) {
    let physics = tenant(&store, "physics").await;
    let device = enrolled_device(&store, &physics).await;
    let channel = ChannelId::device(&device.udid);
    let policy = orchard_store::QueuePolicy {
        max_attempts: 2,
        resend_after_seconds: 60,
    };
    let poison = command(&device, &channel, "First");
    let next = command(&device, &channel, "Second");
    store
        .enqueue_commands(&[poison.clone(), next.clone()])
        .await
        .unwrap();
    let hand_out = |at: i64| {
        let store = store.clone();
        let channel = channel.clone();
        let policy = policy.clone();
        async move {
            store
                .next_command_with(&channel, false, T0.plus_seconds(at), &policy)
                .await
                .unwrap()
                .map(|c| c.uuid)
        }
    };
    assert_eq!(hand_out(0).await, Some(poison.uuid.clone()));
    // Not due yet: the next command goes out instead (and is put off by the device).
    assert_eq!(hand_out(10).await, Some(next.uuid.clone()));
    store
        .record_result(&report(
            &channel,
            &next.uuid,
            CommandStatus::NotNow,
            T0.plus_seconds(11),
        ))
        .await
        .unwrap();
    assert_eq!(hand_out(59).await, Some(next.uuid.clone()));
    store
        .record_result(&report(
            &channel,
            &next.uuid,
            CommandStatus::NotNow,
            T0.plus_seconds(59),
        ))
        .await
        .unwrap();
    // Due: resent (attempt 2).
    assert_eq!(hand_out(60).await, Some(poison.uuid.clone()));
    // Due again with its attempts used up: failed, and the channel moves on (NotNow twice did not fail it).
    assert_eq!(hand_out(120).await, Some(next.uuid.clone()));
    let failed = store
        .get_command(all_tenants(), &poison.uuid)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(failed.status, CommandStatus::Failed);
    assert_eq!(failed.attempts, 2);
    assert_eq!(failed.completed_at, Some(T0.plus_seconds(120)));
    assert!(failed
        .error_chain
        .as_deref()
        .is_some_and(|e| e.contains("sent 2 times without a final answer")));
    assert_eq!(store.archive_finished_commands(100).await.unwrap(), 1);
    assert_eq!(status_of(&store, &poison.uuid).await, CommandStatus::Failed);
    assert_eq!(
        store
            .record_result(&report(
                &channel,
                &poison.uuid,
                CommandStatus::Acknowledged,
                T0.plus_seconds(121),
            ))
            .await
            .unwrap(),
        RecordOutcome::Duplicate
    );
}

async fn check_channels_are_isolated(store: Store) {
    let physics = tenant(&store, "physics").await;
    let device = enrolled_device(&store, &physics).await;
    let other = enrolled_device(&store, &physics).await;
    let channel = ChannelId::device(&device.udid);
    let user_channel = ChannelId::user(&device.udid, "jane");
    let other_channel = ChannelId::device(&other.udid);

    let on_user = command(&device, &user_channel, "UserCommand");
    let on_other = command(&other, &other_channel, "OtherDevice");
    store
        .enqueue_commands(&[on_user.clone(), on_other.clone()])
        .await
        .unwrap();
    assert_eq!(store.next_command(&channel, false, T0).await.unwrap(), None);
    let handed = store
        .next_command(&user_channel, false, T0)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(handed.uuid, on_user.uuid);
    assert_eq!(store.next_command(&channel, false, T0).await.unwrap(), None);

    // A report that names another channel's command changes nothing.
    assert_eq!(
        store
            .record_result(&report(
                &channel,
                &on_user.uuid,
                CommandStatus::Acknowledged,
                T0
            ))
            .await
            .unwrap(),
        RecordOutcome::Unknown
    );
    assert_eq!(
        store
            .record_result(&report(
                &channel,
                &on_other.uuid,
                CommandStatus::Acknowledged,
                T0
            ))
            .await
            .unwrap(),
        RecordOutcome::Unknown
    );
    assert_eq!(status_of(&store, &on_user.uuid).await, CommandStatus::Sent);
    assert_eq!(
        status_of(&store, &on_other.uuid).await,
        CommandStatus::Queued
    );
    let handed = store
        .next_command(&other_channel, false, T0)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(handed.uuid, on_other.uuid);
}

async fn check_not_now_requeues(store: Store) {
    let physics = tenant(&store, "physics").await;
    let device = enrolled_device(&store, &physics).await;
    let channel = ChannelId::device(&device.udid);
    let busy = command(&device, &channel, "InstallApplication");
    let easy = command(&device, &channel, "DeviceInformation");
    store
        .enqueue_commands(&[busy.clone(), easy.clone()])
        .await
        .unwrap();

    let handed = store
        .next_command(&channel, false, T0)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(handed.uuid, busy.uuid);
    assert_eq!(
        store
            .record_result(&report(&channel, &busy.uuid, CommandStatus::NotNow, T0))
            .await
            .unwrap(),
        RecordOutcome::Recorded {
            device_id: device.id,
            request_type: RequestType::InstallApplication,
            queued_by: Some(tester()),
            more_unfinished: true,
        }
    );
    let record = store
        .get_command(all_tenants(), &busy.uuid)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(record.status, CommandStatus::NotNow);
    assert_eq!(record.completed_at, None);

    // In the same session the NotNow command is skipped ...
    let handed = store
        .next_command(&channel, true, T0)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(handed.uuid, easy.uuid);
    // The NotNow command is unfinished work: answering the other one does not empty the channel.
    assert!(matches!(
        store
            .record_result(&report(
                &channel,
                &easy.uuid,
                CommandStatus::Acknowledged,
                T0,
            ))
            .await
            .unwrap(),
        RecordOutcome::Recorded {
            more_unfinished: true,
            ..
        }
    ));
    assert_eq!(store.next_command(&channel, true, T0).await.unwrap(), None);
    // ... and in the next session it comes back, never lost.
    let handed = store
        .next_command(&channel, false, T0.plus_seconds(60))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(handed.uuid, busy.uuid);
    assert!(matches!(
        store
            .record_result(&report(
                &channel,
                &busy.uuid,
                CommandStatus::Acknowledged,
                T0.plus_seconds(61)
            ))
            .await
            .unwrap(),
        RecordOutcome::Recorded {
            more_unfinished: false,
            ..
        }
    ));
    let record = store
        .get_command(all_tenants(), &busy.uuid)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(record.status, CommandStatus::Acknowledged);
    assert_eq!(record.attempts, 2);
}

async fn check_duplicate_and_unknown_results(store: Store) {
    let physics = tenant(&store, "physics").await;
    let device = enrolled_device(&store, &physics).await;
    let channel = ChannelId::device(&device.udid);
    let cmd = command(&device, &channel, "ProfileList");
    store
        .enqueue_commands(std::slice::from_ref(&cmd))
        .await
        .unwrap();
    store
        .next_command(&channel, false, T0)
        .await
        .unwrap()
        .unwrap();

    let failed = CommandResultRecord {
        error_chain: Some(r#"[{"ErrorCode":12021,"ErrorDomain":"MCMDMErrorDomain"}]"#.to_owned()),
        ..report(&channel, &cmd.uuid, CommandStatus::Error, T0)
    };
    assert!(matches!(
        store.record_result(&failed).await.unwrap(),
        RecordOutcome::Recorded { .. }
    ));
    for status in [
        CommandStatus::Error,
        CommandStatus::Acknowledged,
        CommandStatus::NotNow,
        CommandStatus::CommandFormatError,
    ] {
        assert_eq!(
            store
                .record_result(&report(&channel, &cmd.uuid, status, T0.plus_seconds(1)))
                .await
                .unwrap(),
            RecordOutcome::Duplicate
        );
    }
    let record = store
        .get_command(all_tenants(), &cmd.uuid)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(record.status, CommandStatus::Error);
    assert_eq!(record.completed_at, Some(T0));
    assert_eq!(record.error_chain, failed.error_chain);

    assert_eq!(
        store
            .record_result(&report(
                &channel,
                &CommandUuid::new_random(),
                CommandStatus::Acknowledged,
                T0
            ))
            .await
            .unwrap(),
        RecordOutcome::Unknown
    );
    assert!(matches!(
        store
            .record_result(&report(&channel, &cmd.uuid, CommandStatus::Sent, T0))
            .await,
        Err(StoreError::Conflict(_))
    ));
}

async fn check_expiry(store: Store) {
    let physics = tenant(&store, "physics").await;
    let device = enrolled_device(&store, &physics).await;
    let channel = ChannelId::device(&device.udid);
    let other_channel = ChannelId::user(&device.udid, "jane");
    let with_deadline = |label: &str, channel: &ChannelId, seconds: i64| NewCommand {
        expires_at: Some(T0.plus_seconds(seconds)),
        ..command(&device, channel, label)
    };
    let sent_then_late = with_deadline("SentThenLate", &channel, 10);
    let late = with_deadline("Late", &channel, 10);
    let not_now_late = with_deadline("NotNowLate", &channel, 30);
    let on_time = with_deadline("OnTime", &channel, 1000);
    let elsewhere = with_deadline("Elsewhere", &other_channel, 10);
    let forever = command(&device, &channel, "Forever");
    store
        .enqueue_commands(&[
            sent_then_late.clone(),
            not_now_late.clone(),
            late.clone(),
            on_time.clone(),
            forever.clone(),
            elsewhere.clone(),
        ])
        .await
        .unwrap();

    let handed = store
        .next_command(&channel, false, T0)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(handed.uuid, sent_then_late.uuid);
    // The deadline is inclusive: at expires_at the command is still handed out.
    let handed = store
        .next_command(&channel, true, T0.plus_seconds(10))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(handed.uuid, sent_then_late.uuid);
    store
        .record_result(&report(
            &channel,
            &sent_then_late.uuid,
            CommandStatus::Acknowledged,
            T0,
        ))
        .await
        .unwrap();
    let handed = store
        .next_command(&channel, false, T0)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(handed.uuid, not_now_late.uuid);
    store
        .record_result(&report(
            &channel,
            &not_now_late.uuid,
            CommandStatus::NotNow,
            T0,
        ))
        .await
        .unwrap();

    let now = T0.plus_seconds(31);
    let handed = store
        .next_command(&channel, false, now)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(handed.uuid, on_time.uuid);
    for expired in [&late, &not_now_late] {
        let record = store
            .get_command(all_tenants(), &expired.uuid)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            record.status,
            CommandStatus::Expired,
            "{}",
            expired.request_type
        );
        assert_eq!(record.completed_at, Some(now));
    }
    // The sweep is limited to the channel that asked.
    assert_eq!(
        status_of(&store, &elsewhere.uuid).await,
        CommandStatus::Queued
    );
    assert_eq!(
        store
            .record_result(&report(
                &channel,
                &late.uuid,
                CommandStatus::Acknowledged,
                now
            ))
            .await
            .unwrap(),
        RecordOutcome::Duplicate
    );
    store
        .record_result(&report(
            &channel,
            &on_time.uuid,
            CommandStatus::Acknowledged,
            now,
        ))
        .await
        .unwrap();
    let handed = store
        .next_command(&channel, false, now)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(handed.uuid, forever.uuid);
    assert_eq!(
        store
            .next_command(&other_channel, false, now)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        status_of(&store, &elsewhere.uuid).await,
        CommandStatus::Expired
    );
}

/// What a command report's unit of work touches, read from outside the unit.
async fn report_effects(
    store: &Store,
    device: &Device,
    reported: &CommandUuid,
) -> (
    CommandStatus,
    usize,
    Option<Vec<u8>>,
    Option<SetupState>,
    usize,
) {
    let commands = store
        .list_commands(all_tenants(), device.id, Page::default())
        .await
        .unwrap();
    (
        status_of(store, reported).await,
        store
            .get_inventory(all_tenants(), device.id)
            .await
            .unwrap()
            .len(),
        store
            .bypass_code(device.id)
            .await
            .unwrap()
            .map(|(code, _)| code),
        store.device_setup(device.id).await.unwrap().unwrap().state,
        commands.len(),
    )
}

async fn check_unit_of_work_commits_once_or_not_at_all(store: Store) {
    let physics = tenant(&store, "physics").await;
    let device = enrolled_device(&store, &physics).await;
    let channel = ChannelId::device(&device.udid);
    let asked = command(&device, &channel, "ActivationLockBypassCode");
    store
        .enqueue_commands(std::slice::from_ref(&asked))
        .await
        .unwrap();
    store
        .set_device_setup(device.id, None, SetupState::Configuring, None, T0)
        .await
        .unwrap();
    store
        .next_command(&channel, false, T0)
        .await
        .unwrap()
        .unwrap();
    let before = report_effects(&store, &device, &asked.uuid).await;
    assert_eq!(
        before,
        (
            CommandStatus::Sent,
            0,
            None,
            Some(SetupState::Configuring),
            1
        )
    );

    // Everything a report does, in one unit: the unit sees its own writes, nobody else does.
    async fn report_in_unit(
        store: &Store,
        device: &Device,
        channel: &ChannelId,
        asked: &CommandUuid,
    ) -> orchard_store::UnitOfWork {
        let mut unit = store.begin_unit().await.unwrap();
        assert!(matches!(
            unit.record_result(&report(channel, asked, CommandStatus::Acknowledged, T0))
                .await
                .unwrap(),
            RecordOutcome::Recorded { .. }
        ));
        unit.put_inventory_section(device.id, "security_info", "{}", T0)
            .await
            .unwrap();
        unit.store_bypass_code(device.id, &[1, 2, 3], T0)
            .await
            .unwrap();
        assert!(unit
            .advance_device_setup(
                device.id,
                SetupState::Configuring,
                SetupState::Releasing,
                None,
                T0
            )
            .await
            .unwrap());
        unit.enqueue_commands(&[NewCommand {
            request_type: RequestType::DeviceConfigured,
            ..command(device, channel, "DeviceConfigured")
        }])
        .await
        .unwrap();
        assert!(unit.queued_commands());
        assert_eq!(
            unit.device_setup(device.id).await.unwrap().unwrap().state,
            Some(SetupState::Releasing)
        );
        unit
    }

    let unit = report_in_unit(&store, &device, &channel, &asked.uuid).await;
    assert_eq!(report_effects(&store, &device, &asked.uuid).await, before);
    unit.rollback().await.unwrap();
    assert_eq!(report_effects(&store, &device, &asked.uuid).await, before);

    // A unit dropped on an error path (`?`) rolls back too, and does not keep the write lock.
    let unit = report_in_unit(&store, &device, &channel, &asked.uuid).await;
    drop(unit);
    assert_eq!(report_effects(&store, &device, &asked.uuid).await, before);

    let unit = report_in_unit(&store, &device, &channel, &asked.uuid).await;
    unit.commit().await.unwrap();
    assert_eq!(
        report_effects(&store, &device, &asked.uuid).await,
        (
            CommandStatus::Acknowledged,
            1,
            Some(vec![1, 2, 3]),
            Some(SetupState::Releasing),
            2
        )
    );
    // The report is final now: the same report again is a duplicate.
    let mut unit = store.begin_unit().await.unwrap();
    assert_eq!(
        unit.record_result(&report(
            &channel,
            &asked.uuid,
            CommandStatus::Acknowledged,
            T0
        ))
        .await
        .unwrap(),
        RecordOutcome::Duplicate
    );
    assert!(!unit.queued_commands());
    unit.commit().await.unwrap();
}

async fn check_enqueue_is_one_transaction(store: Store) {
    let physics = tenant(&store, "physics").await;
    let device = enrolled_device(&store, &physics).await;
    let channel = ChannelId::device(&device.udid);
    let existing = command(&device, &channel, "Existing");
    store
        .enqueue_commands(std::slice::from_ref(&existing))
        .await
        .unwrap();

    // 1,200 rows span several INSERT statements; the duplicate at the end rolls all of them back.
    let mut batch: Vec<NewCommand> = (0..1200)
        .map(|i| command(&device, &channel, &format!("B{i}")))
        .collect();
    batch.push(existing.clone());
    assert!(matches!(
        store.enqueue_commands(&batch).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(
        store
            .list_commands(
                all_tenants(),
                device.id,
                Page {
                    limit: 5000,
                    offset: 0
                }
            )
            .await
            .unwrap()
            .len(),
        1
    );
    batch.pop();
    store.enqueue_commands(&batch).await.unwrap();
    let listed = store
        .list_commands(
            all_tenants(),
            device.id,
            Page {
                limit: 5000,
                offset: 0,
            },
        )
        .await
        .unwrap();
    assert_eq!(listed.len(), 1201);
    // Newest first.
    assert_eq!(listed[0].uuid, batch[1199].uuid);
    assert_eq!(listed[1200].uuid, existing.uuid);
    assert_eq!(listed[0].status, CommandStatus::Queued);
    assert_eq!(listed[0].attempts, 0);
    let page = store
        .list_commands(
            all_tenants(),
            device.id,
            Page {
                limit: 2,
                offset: 1,
            },
        )
        .await
        .unwrap();
    assert_eq!(
        page.iter().map(|c| c.uuid.clone()).collect::<Vec<_>>(),
        vec![batch[1198].uuid.clone(), batch[1197].uuid.clone()]
    );

    let ghost = Device {
        id: DeviceId::new(),
        ..device.clone()
    };
    assert!(matches!(
        store
            .enqueue_commands(&[command(&ghost, &channel, "Ghost")])
            .await,
        Err(StoreError::NotFound)
    ));
    store.enqueue_commands(&[]).await.unwrap();
}

async fn check_scoped_reads_hide_other_tenants(store: Store) {
    let physics = tenant(&store, "physics").await;
    let biology = tenant(&store, "biology").await;
    let mine = enrolled_device(&store, &physics).await;
    let theirs = enrolled_device(&store, &biology).await;
    let my_command = command(&mine, &ChannelId::device(&mine.udid), "Mine");
    let their_command = command(&theirs, &ChannelId::device(&theirs.udid), "Theirs");
    store
        .enqueue_commands(&[my_command.clone(), their_command.clone()])
        .await
        .unwrap();
    store
        .put_inventory_section(theirs.id, "apps", "[]", T0)
        .await
        .unwrap();
    let scope = tenant_scope(physics.id);

    assert!(store.get_device(scope, mine.id).await.unwrap().is_some());
    assert_eq!(store.get_device(scope, theirs.id).await.unwrap(), None);
    assert!(store
        .get_device(all_tenants(), theirs.id)
        .await
        .unwrap()
        .is_some());
    assert_eq!(
        store
            .list_devices(scope, Page::default())
            .await
            .unwrap()
            .iter()
            .map(|d| d.id)
            .collect::<Vec<_>>(),
        vec![mine.id]
    );
    assert_eq!(store.count_devices(scope).await.unwrap(), 1);
    assert_eq!(store.count_devices(all_tenants()).await.unwrap(), 2);

    assert!(store
        .get_command(scope, &my_command.uuid)
        .await
        .unwrap()
        .is_some());
    assert_eq!(
        store.get_command(scope, &their_command.uuid).await.unwrap(),
        None
    );
    assert!(store
        .list_commands(scope, theirs.id, Page::default())
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        store
            .list_commands(all_tenants(), theirs.id, Page::default())
            .await
            .unwrap()
            .len(),
        1
    );
    assert!(store
        .get_inventory(scope, theirs.id)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        store
            .get_inventory(all_tenants(), theirs.id)
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        store.count_commands_by_status(scope).await.unwrap(),
        vec![(CommandStatus::Queued, 1)]
    );
}

async fn check_count_commands_by_status(store: Store) {
    let physics = tenant(&store, "physics").await;
    let device = enrolled_device(&store, &physics).await;
    let channel = ChannelId::device(&device.udid);
    let cmds: Vec<NewCommand> = (0..4)
        .map(|i| command(&device, &channel, &format!("C{i}")))
        .collect();
    store.enqueue_commands(&cmds).await.unwrap();
    store
        .next_command(&channel, false, T0)
        .await
        .unwrap()
        .unwrap();
    store
        .record_result(&report(
            &channel,
            &cmds[0].uuid,
            CommandStatus::Acknowledged,
            T0,
        ))
        .await
        .unwrap();
    store
        .next_command(&channel, false, T0)
        .await
        .unwrap()
        .unwrap();
    let counts: HashMap<CommandStatus, i64> = store
        .count_commands_by_status(all_tenants())
        .await
        .unwrap()
        .into_iter()
        .collect();
    assert_eq!(
        counts,
        HashMap::from([
            (CommandStatus::Acknowledged, 1),
            (CommandStatus::Sent, 1),
            (CommandStatus::Queued, 2),
        ])
    );
    assert!(store
        .count_commands_by_status(tenant_scope(TenantId::new()))
        .await
        .unwrap()
        .is_empty());
}

/// 8 tasks, one channel each, all writing at once (TokenUpdate, enqueue, claim, report): every command is
/// handed out exactly once, to its own channel's task, in FIFO order, and no writer fails with "database is
/// locked".
async fn check_concurrent_channels_never_share_commands(store: Store) {
    const TASKS: usize = 8;
    const PER_CHANNEL: usize = 25;
    let physics = tenant(&store, "physics").await;
    let device = enrolled_device(&store, &physics).await;

    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let store = store.clone();
        let device = device.clone();
        tasks.push(tokio::spawn(async move {
            let channel = ChannelId::user(&device.udid, &format!("user{t}"));
            store
                .update_token(&TokenUpdateRecord {
                    user_short_name: Some(format!("user{t}")),
                    ..token_update(&device, &channel, T0)
                })
                .await
                .unwrap();
            let mine: Vec<NewCommand> = (0..PER_CHANNEL)
                .map(|i| command(&device, &channel, &format!("T{t}C{i}")))
                .collect();
            // Enqueue in a few transactions so they interleave with the other tasks' claims.
            for chunk in mine.chunks(5) {
                store.enqueue_commands(chunk).await.unwrap();
            }
            let mut received = Vec::new();
            while let Some(handed) = store.next_command(&channel, false, T0).await.unwrap() {
                let outcome = store
                    .record_result(&report(
                        &channel,
                        &handed.uuid,
                        CommandStatus::Acknowledged,
                        T0,
                    ))
                    .await
                    .unwrap();
                assert!(matches!(outcome, RecordOutcome::Recorded { .. }));
                received.push(handed.uuid);
            }
            let expected: Vec<CommandUuid> = mine.into_iter().map(|c| c.uuid).collect();
            assert_eq!(received, expected, "channel {channel} out of order");
            received
        }));
    }
    let mut everything = HashSet::new();
    for task in tasks {
        for uuid in task.await.unwrap() {
            assert!(everything.insert(uuid), "a command was handed out twice");
        }
    }
    assert_eq!(everything.len(), TASKS * PER_CHANNEL);
    assert_eq!(
        store.count_commands_by_status(all_tenants()).await.unwrap(),
        vec![(CommandStatus::Acknowledged, (TASKS * PER_CHANNEL) as i64)]
    );
}

/// 8 tasks race on ONE channel. A command that is sent but not reported is legitimately handed out again
/// (resend), so the invariants are: a command already final when a call starts is never handed out, each
/// command is recorded exactly once, and nothing is lost.
async fn check_concurrent_next_command_on_one_channel(store: Store) {
    const TASKS: usize = 8;
    const COMMANDS: usize = 40;
    let physics = tenant(&store, "physics").await;
    let device = enrolled_device(&store, &physics).await;
    let channel = ChannelId::device(&device.udid);
    let cmds: Vec<NewCommand> = (0..COMMANDS)
        .map(|i| command(&device, &channel, &format!("C{i}")))
        .collect();
    store.enqueue_commands(&cmds).await.unwrap();

    let finished: Arc<Mutex<HashSet<CommandUuid>>> = Arc::default();
    let mut tasks = Vec::new();
    for _ in 0..TASKS {
        let store = store.clone();
        let channel = channel.clone();
        let finished = finished.clone();
        tasks.push(tokio::spawn(async move {
            let mut recorded = Vec::new();
            loop {
                let final_before: HashSet<CommandUuid> = finished.lock().unwrap().clone();
                let Some(handed) = store.next_command(&channel, false, T0).await.unwrap() else {
                    break;
                };
                assert!(
                    !final_before.contains(&handed.uuid),
                    "a command was handed out again after it was acknowledged"
                );
                match store
                    .record_result(&report(
                        &channel,
                        &handed.uuid,
                        CommandStatus::Acknowledged,
                        T0,
                    ))
                    .await
                    .unwrap()
                {
                    RecordOutcome::Recorded { .. } => recorded.push(handed.uuid.clone()),
                    RecordOutcome::Duplicate => {}
                    RecordOutcome::Unknown => panic!("own channel's command reported unknown"),
                }
                finished.lock().unwrap().insert(handed.uuid);
            }
            recorded
        }));
    }
    let mut recorded = HashSet::new();
    for task in tasks {
        for uuid in task.await.unwrap() {
            assert!(recorded.insert(uuid), "a command was recorded twice");
        }
    }
    assert_eq!(recorded.len(), COMMANDS);
    assert_eq!(
        store.count_commands_by_status(all_tenants()).await.unwrap(),
        vec![(CommandStatus::Acknowledged, COMMANDS as i64)]
    );
}

// ---------------------------------------------------------------------------------------------------------
// push bookkeeping

/// APNs took every push of `targets`, which `node` claimed: settled as a dispatcher pass settles them.
async fn deliver(
    store: &Store,
    targets: &[orchard_store::PushTarget],
    node: &str,
    at: orchard_types::UnixTime,
) -> Result<(), orchard_store::StoreError> {
    store
        .complete_pushes(targets, node, &orchard_store::PushResult::Delivered, at)
        .await
}

/// What a dispatcher does when APNs takes every push: lease the due channels, then settle each.
async fn claim_and_send(
    store: &Store,
    limit: i64,
    now: orchard_types::UnixTime,
) -> Result<Vec<orchard_store::PushTarget>, orchard_store::StoreError> {
    let claimed = store
        .claim_push_leases(limit, "dispatcher", now, now.plus_seconds(300))
        .await?;
    deliver(store, &claimed, "dispatcher", now).await?;
    Ok(claimed)
}

/// The claim an idle poll with work makes can record the device as seen too (one statement on PostgreSQL): it
/// hands out the head command as `claim_next_command` does and writes that device's last-seen time, and only
/// that device's, also when nothing is left to claim.
async fn check_an_idle_poll_claims_and_is_seen_at_once(store: Store) {
    let physics = tenant(&store, "physics").await;
    let device = enrolled_device(&store, &physics).await;
    let other = enrolled_device(&store, &physics).await;
    let channel = ChannelId::device(&device.udid);
    let seen = |udid: Udid| {
        let store = store.clone();
        async move {
            store
                .find_device_by_udid(&udid)
                .await
                .unwrap()
                .unwrap()
                .last_seen_at
        }
    };
    let before_other = seen(other.udid.clone()).await;
    let first = command(&device, &channel, "First");
    let second = command(&device, &channel, "Second");
    store
        .enqueue_commands(&[first.clone(), second.clone()])
        .await
        .unwrap();
    let at = T0.plus_seconds(60);
    for (expected, skip_not_now) in [(&first, false), (&second, true)] {
        let handed = store
            .touch_and_claim_next_command(
                device.id,
                &channel,
                skip_not_now,
                at,
                &Default::default(),
            )
            .await
            .unwrap()
            .unwrap();
        assert_eq!(handed.uuid, expected.uuid);
        assert_eq!(handed.payload, expected.payload);
        store
            .record_result(&report(
                &channel,
                &expected.uuid,
                CommandStatus::Acknowledged,
                at,
            ))
            .await
            .unwrap();
    }
    assert_eq!(seen(device.udid.clone()).await, Some(at));
    let later = at.plus_seconds(600);
    assert!(store
        .touch_and_claim_next_command(device.id, &channel, false, later, &Default::default())
        .await
        .unwrap()
        .is_none());
    assert_eq!(seen(device.udid.clone()).await, Some(later));
    assert_eq!(seen(other.udid.clone()).await, before_other);
}

/// An idle poll's lookup claims in the same statement on PostgreSQL, only when the request may claim at once
/// (the signer is the device's bound identity, not revoked, the device is enrolled and does not await the
/// reconciler, the channel has work); anything else writes nothing and leaves the lookup to the caller. On
/// SQLite it is the lookup alone.
async fn check_an_idle_poll_claims_in_its_lookup(store: Store) {
    let physics = tenant(&store, "physics").await;
    let device = enrolled_device(&store, &physics).await;
    // Bound to an identity of its own (the fixture's fingerprint names the enrollment time).
    let neighbour = store
        .authenticate_device(&authenticate(
            &unique_udid(),
            physics.id,
            T0.plus_seconds(1),
        ))
        .await
        .unwrap();
    let channel = ChannelId::device(&device.udid);
    let their_channel = ChannelId::device(&neighbour.udid);
    store
        .update_token(&token_update(&neighbour, &their_channel, T0))
        .await
        .unwrap();
    let bound = device.cert_fingerprint.clone().unwrap();
    assert_ne!(neighbour.cert_fingerprint.as_ref(), Some(&bound));
    let policy = orchard_store::QueuePolicy::default();
    let poll = |udid: &Udid, channel: &ChannelId, signer: &str, now: UnixTime| {
        let store = store.clone();
        let (udid, channel, signer) = (udid.clone(), channel.clone(), signer.to_owned());
        let policy = policy.clone();
        async move {
            store
                .find_device_for_idle_poll(&orchard_store::IdlePoll {
                    udid: &udid,
                    channel: &channel,
                    signer_fingerprint: &signer,
                    now,
                    last_seen_granularity: 60,
                    policy: &policy,
                })
                .await
                .unwrap()
        }
    };
    let seen = |udid: Udid| {
        let store = store.clone();
        async move {
            store
                .find_device_by_udid(&udid)
                .await
                .unwrap()
                .unwrap()
                .last_seen_at
        }
    };
    let postgres = store.backend() == Backend::Postgres;
    let first = command(&device, &channel, "First");
    let second = command(&device, &channel, "Second");
    let theirs = command(&neighbour, &their_channel, "Theirs");
    store
        .enqueue_commands(&[first.clone(), second.clone(), theirs.clone()])
        .await
        .unwrap();
    let before = seen(device.udid.clone()).await;

    // No such device: nothing found, nothing written.
    assert!(poll(&unique_udid(), &channel, &bound, T0.plus_seconds(60))
        .await
        .is_none());

    // Signed by another identity (perhaps a renewed one: the caller judges): the lookup only.
    let at = T0.plus_seconds(60);
    let (found, claim) = poll(&device.udid, &channel, "fp-other", at).await.unwrap();
    assert_eq!(claim, IdlePollClaim::NotTried);
    assert_eq!(found.device.id, device.id);
    assert!(found.channel_has_unfinished);
    assert_eq!(status_of(&store, &first.uuid).await, CommandStatus::Queued);
    assert_eq!(seen(device.udid.clone()).await, before);

    // The device's own identity: the head of its channel, and its last-seen time (stale) with it.
    let (found, claim) = poll(&device.udid, &channel, &bound, at).await.unwrap();
    assert_eq!(found.device.id, device.id);
    if postgres {
        let IdlePollClaim::Tried(Some(handed)) = claim else {
            panic!("{claim:?}");
        };
        assert_eq!(handed.uuid, first.uuid);
        assert_eq!(handed.payload, first.payload);
        assert_eq!(status_of(&store, &first.uuid).await, CommandStatus::Sent);
        assert_eq!(seen(device.udid.clone()).await, Some(at));
        store
            .record_result(&report(
                &channel,
                &first.uuid,
                CommandStatus::Acknowledged,
                at,
            ))
            .await
            .unwrap();
        // Within the last-seen granularity the claim alone.
        let soon = at.plus_seconds(10);
        let (_, claim) = poll(&device.udid, &channel, &bound, soon).await.unwrap();
        assert_eq!(
            claim,
            IdlePollClaim::Tried(Some(
                store
                    .get_command(all_tenants(), &second.uuid)
                    .await
                    .unwrap()
                    .map(|c| orchard_store::QueuedCommand {
                        uuid: c.uuid,
                        request_type: c.request_type,
                        payload: second.payload.clone(),
                        payload_sealed: false,
                        body: None,
                    })
                    .unwrap()
            ))
        );
        assert_eq!(seen(device.udid.clone()).await, Some(at));
        store
            .record_result(&report(
                &channel,
                &second.uuid,
                CommandStatus::Acknowledged,
                soon,
            ))
            .await
            .unwrap();
    } else {
        assert_eq!(claim, IdlePollClaim::NotTried);
        assert_eq!(status_of(&store, &first.uuid).await, CommandStatus::Queued);
        assert_eq!(seen(device.udid.clone()).await, before);
        for done in [&first, &second] {
            store.next_command(&channel, false, at).await.unwrap();
            store
                .record_result(&report(
                    &channel,
                    &done.uuid,
                    CommandStatus::Acknowledged,
                    at,
                ))
                .await
                .unwrap();
        }
    }

    // Nothing unfinished: the lookup says so, and nothing is written.
    let later = at.plus_seconds(600);
    let (found, claim) = poll(&device.udid, &channel, &bound, later).await.unwrap();
    assert!(!found.channel_has_unfinished);
    assert_eq!(claim, IdlePollClaim::NotTried);
    assert_ne!(seen(device.udid.clone()).await, Some(later));

    // A device awaiting the reconciler plans first; a revoked identity and a checked-out device are refused
    // by the caller: none claims here.
    let third = command(&device, &channel, "Third");
    store
        .enqueue_commands(std::slice::from_ref(&third))
        .await
        .unwrap();
    let mut mark = store.begin_unit().await.unwrap();
    mark.mark_devices_dirty(&[device.id], later).await.unwrap();
    mark.commit().await.unwrap();
    let (found, claim) = poll(&device.udid, &channel, &bound, later).await.unwrap();
    assert!(found.awaiting_reconcile);
    assert_eq!(claim, IdlePollClaim::NotTried);

    let (found, claim) = poll(&neighbour.udid, &their_channel, &bound, later)
        .await
        .unwrap();
    assert_eq!(found.device.id, neighbour.id, "another device's identity");
    assert_eq!(claim, IdlePollClaim::NotTried);
    let their_bound = neighbour.cert_fingerprint.clone().unwrap();
    store
        .record_issued_certificate(&IssuedCertificate {
            fingerprint: their_bound.clone(),
            serial_hex: "0a0b".to_owned(),
            subject: "CN=iPad".to_owned(),
            tenant_id: physics.id,
            link_id: None,
            grant: IdentityGrant::Device {
                device_id: neighbour.id,
                purpose: orchard_store::DeviceGrantPurpose::ReturnToService,
            },
            issued_at: T0,
            not_after: T0.plus_seconds(365 * 86_400),
            bound_device_id: Some(neighbour.id),
            bound_at: Some(T0),
            revoked_at: None,
            revoked_reason: None,
            renewed_at: None,
        })
        .await
        .unwrap();
    assert!(store
        .revoke_identity(&their_bound, "lost", later)
        .await
        .unwrap());
    let (found, claim) = poll(&neighbour.udid, &their_channel, &their_bound, later)
        .await
        .unwrap();
    assert!(matches!(
        found.identity,
        orchard_store::IdentityStatus::Revoked(_)
    ));
    assert_eq!(claim, IdlePollClaim::NotTried);
    assert_eq!(status_of(&store, &third.uuid).await, CommandStatus::Queued);
    assert_eq!(status_of(&store, &theirs.uuid).await, CommandStatus::Queued);
    store.check_out(&neighbour.udid, later).await.unwrap();
    let (_, claim) = poll(&neighbour.udid, &their_channel, &their_bound, later)
        .await
        .unwrap();
    assert_eq!(claim, IdlePollClaim::NotTried);
    assert_eq!(
        seen(neighbour.udid.clone()).await,
        Some(later),
        "checked out at"
    );
}

/// The lookup every signed device request makes also says whether any webhook endpoint is enabled (another
/// tenant's counts; a disabled one does not), and a unit told there is none writes no event even for an
/// endpoint that would want it (one made after the lookup), while any other unit writes it.
async fn check_the_device_lookup_says_whether_webhooks_are_enabled(store: Store) {
    let physics = tenant(&store, "physics").await;
    let music = tenant(&store, "music").await;
    let device = enrolled_device(&store, &physics).await;
    let enabled = || {
        let store = store.clone();
        let udid = device.udid.clone();
        async move {
            store
                .find_device_with_identity(&udid, None)
                .await
                .unwrap()
                .unwrap()
                .webhook_endpoints
        }
    };
    assert!(!enabled().await);

    let endpoint = orchard_types::WebhookId::new();
    store
        .create_webhook_endpoint(&orchard_store::WebhookEndpointRecord {
            id: endpoint,
            tenant_id: Some(music.id),
            url: "https://hooks.music.example.edu/".into(),
            event_types: vec!["command.result".into()],
            secret_sealed: vec![1, 2, 3],
            enabled: true,
            consecutive_failures: 0,
            disabled_at: None,
            disabled_reason: None,
            created_at: T0,
            created_by: None,
        })
        .await
        .unwrap();
    assert!(enabled().await);

    let event = |id: &str| orchard_store::WebhookEventRecord {
        id: id.into(),
        tenant_id: Some(music.id),
        event_type: "command.result".into(),
        occurred_at: T0,
        body: "{}".into(),
    };
    let mut unit = store.begin_unit().await.unwrap();
    assert!(unit.writes_webhook_events());
    assert_eq!(
        unit.record_webhook_event(&event("written")).await.unwrap(),
        1
    );
    unit.commit().await.unwrap();
    let mut unit = store.begin_unit().await.unwrap();
    unit.assume_no_webhook_endpoints();
    assert!(!unit.writes_webhook_events());
    assert_eq!(
        unit.record_webhook_event(&event("skipped")).await.unwrap(),
        0
    );
    assert!(!unit.recorded_webhook_events());
    unit.commit().await.unwrap();

    store
        .update_webhook_endpoint(
            all_tenants(),
            Some(music.id),
            endpoint,
            &orchard_store::WebhookEndpointChange {
                url: None,
                event_types: None,
                enabled: Some(false),
            },
        )
        .await
        .unwrap();
    assert!(!enabled().await);
}

/// The lookup also says whether the device's tenant has an OS policy and whether its device channel is
/// declarative (without either, a report that changes its OS skips the OS evaluation): only its own tenant's
/// policy and its own device channel count.
async fn check_the_device_lookup_says_whether_os_currency_applies(store: Store) {
    let physics = tenant(&store, "physics").await;
    let music = tenant(&store, "music").await;
    let device = enrolled_device(&store, &physics).await;
    let neighbour = enrolled_device(&store, &physics).await;
    let applies = |udid: Udid| {
        let store = store.clone();
        async move {
            let found = store
                .find_device_with_identity(&udid, None)
                .await
                .unwrap()
                .unwrap();
            (found.tenant_os_policy, found.declarative_channel)
        }
    };
    assert_eq!(applies(device.udid.clone()).await, (false, false));

    let policy = |tenant: TenantId| OsPolicyRecord {
        tenant_id: tenant,
        target: "latest".into(),
        pinned_version: None,
        pinned_build: None,
        deadline_local: "2027-01-15T18:00:00".into(),
        details_url: None,
        revision: 0,
        updated_at: T0,
        updated_by: None,
    };
    let mut unit = store.begin_unit().await.unwrap();
    unit.put_os_policy(&policy(music.id)).await.unwrap();
    unit.commit().await.unwrap();
    assert_eq!(
        applies(device.udid.clone()).await,
        (false, false),
        "another tenant's policy does not count"
    );

    // A neighbour's declarative channel, then one of the device's user channels: not its device channel.
    let mut unit = store.begin_unit().await.unwrap();
    let neighbour_channel = ChannelId::device(&neighbour.udid);
    let sync = command(&neighbour, &neighbour_channel, "DeclarativeManagement");
    unit.ddm_set_changed(&neighbour_channel, neighbour.id, "token-1", &sync, T0)
        .await
        .unwrap();
    let user_channel = ChannelId::user(&device.udid, "AB12CD34-0000-0000-0000-000000000001");
    let sync = command(&device, &user_channel, "DeclarativeManagement");
    unit.ddm_set_changed(&user_channel, device.id, "token-1", &sync, T0)
        .await
        .unwrap();
    unit.commit().await.unwrap();
    assert_eq!(applies(device.udid.clone()).await, (false, false));
    assert_eq!(applies(neighbour.udid.clone()).await, (false, true));

    let mut unit = store.begin_unit().await.unwrap();
    let channel = ChannelId::device(&device.udid);
    let sync = command(&device, &channel, "DeclarativeManagement");
    unit.ddm_set_changed(&channel, device.id, "token-1", &sync, T0)
        .await
        .unwrap();
    unit.commit().await.unwrap();
    assert_eq!(applies(device.udid.clone()).await, (false, true));

    let mut unit = store.begin_unit().await.unwrap();
    unit.put_os_policy(&policy(physics.id)).await.unwrap();
    unit.commit().await.unwrap();
    assert_eq!(applies(device.udid.clone()).await, (true, true));
    assert_eq!(applies(neighbour.udid.clone()).await, (true, true));
}

/// The lookup every signed device request makes also says whether the request's channel has a queued, sent or
/// NotNow command (an idle poll then needs no read of its own), for that channel only.
async fn check_the_device_lookup_says_whether_a_channel_has_work(store: Store) {
    let physics = tenant(&store, "physics").await;
    let device = enrolled_device(&store, &physics).await;
    let other = enrolled_device(&store, &physics).await;
    let channel = ChannelId::device(&device.udid);
    let user_channel = ChannelId::user(&device.udid, "AB12CD34-0000-0000-0000-000000000001");
    let has_work = |channel: Option<ChannelId>| {
        let store = store.clone();
        let udid = device.udid.clone();
        async move {
            let found = store
                .find_device_with_identity(&udid, channel.as_ref())
                .await
                .unwrap()
                .unwrap();
            assert_eq!(found.device.id, device.id);
            found.channel_has_unfinished
        }
    };
    assert!(!has_work(Some(channel.clone())).await);
    assert!(!has_work(None).await);

    // Another device's command and a user channel's are not this channel's work.
    let elsewhere = ChannelId::device(&other.udid);
    store
        .enqueue_commands(&[
            command(&other, &elsewhere, "Elsewhere"),
            command(&device, &user_channel, "UserQueued"),
        ])
        .await
        .unwrap();
    assert!(!has_work(Some(channel.clone())).await);
    assert!(has_work(Some(user_channel.clone())).await);

    // Queued, then sent, then NotNow: still work; acknowledged: none left.
    let queued = command(&device, &channel, "Queued");
    store
        .enqueue_commands(std::slice::from_ref(&queued))
        .await
        .unwrap();
    assert!(has_work(Some(channel.clone())).await);
    assert!(!has_work(None).await);
    let handed = store
        .next_command(&channel, false, T0)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(handed.uuid, queued.uuid);
    assert!(has_work(Some(channel.clone())).await);
    store
        .record_result(&report(&channel, &queued.uuid, CommandStatus::NotNow, T0))
        .await
        .unwrap();
    assert!(has_work(Some(channel.clone())).await);
    store
        .claim_next_command(&channel, false, T0, &Default::default())
        .await
        .unwrap()
        .unwrap();
    store
        .record_result(&report(
            &channel,
            &queued.uuid,
            CommandStatus::Acknowledged,
            T0,
        ))
        .await
        .unwrap();
    assert!(!has_work(Some(channel.clone())).await);
    assert_eq!(
        store
            .claim_next_command(&channel, false, T0, &Default::default())
            .await
            .unwrap(),
        None
    );
}

/// A dispatcher pass settles its deliveries in chunks (300 = 256 + 32 + 8 + 4 here): every push claimed is
/// done and shows when APNs took it, except for a request made after the claim, which stays owed; a lease
/// another node took since (after this one ran out) stays that node's.
async fn check_a_pass_settles_its_deliveries_together(store: Store) {
    let physics = tenant(&store, "physics").await;
    let commands = one_command_each(&store, &physics, 300, "Batch").await;
    store.enqueue_commands(&commands).await.unwrap();
    let claimed = store
        .claim_push_leases(1_000, "dispatcher", T0, T0.plus_seconds(60))
        .await
        .unwrap();
    assert_eq!(claimed.len(), 300);

    // One lease ran out and a second node claimed that channel; then the channel was asked for again.
    let later = T0.plus_seconds(120);
    let taken_over = store
        .claim_push_leases(1, "other-node", later, later.plus_seconds(60))
        .await
        .unwrap();
    assert_eq!(taken_over.len(), 1);
    let asked_again = taken_over[0].channel.clone();
    store
        .request_push(std::slice::from_ref(&asked_again), later)
        .await
        .unwrap();

    deliver(&store, &claimed, "dispatcher", later)
        .await
        .unwrap();
    for target in &claimed {
        let channel = store.get_channel(&target.channel).await.unwrap().unwrap();
        assert_eq!(
            channel.push.last_delivered_at,
            Some(later),
            "{}",
            target.channel
        );
        assert_eq!(channel.push.last_result.as_deref(), Some("delivered"));
        assert_eq!(
            channel.push.owed,
            target.channel == asked_again,
            "{}",
            target.channel
        );
    }

    // The other node's lease stands: nobody else claims the channel until that node answers.
    assert!(store
        .claim_push_leases(1_000, "dispatcher", later, later.plus_seconds(60))
        .await
        .unwrap()
        .is_empty());
    deliver(&store, &taken_over, "other-node", later)
        .await
        .unwrap();
    let again = store
        .claim_push_leases(1_000, "dispatcher", later, later.plus_seconds(60))
        .await
        .unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].channel, asked_again);
}

async fn check_pushes_coalesce_and_claim_once(store: Store) {
    let physics = tenant(&store, "physics").await;
    let a = enrolled_device(&store, &physics).await;
    let b = enrolled_device(&store, &physics).await;
    let ca = ChannelId::device(&a.udid);
    let cb = ChannelId::device(&b.udid);
    assert!(claim_and_send(&store, 10, T0).await.unwrap().is_empty());

    // Five commands for A in two bursts and one for B owe exactly one push each.
    store
        .enqueue_commands(&[command(&a, &ca, "One"), command(&a, &ca, "Two")])
        .await
        .unwrap();
    store
        .enqueue_commands(&[command(&a, &ca, "Three"), command(&b, &cb, "Four")])
        .await
        .unwrap();
    assert_eq!(store.count_due_pushes().await.unwrap(), 2);
    let first = claim_and_send(&store, 1, T0).await.unwrap();
    assert_eq!(first.len(), 1);
    let rest = claim_and_send(&store, 10, T0).await.unwrap();
    assert_eq!(rest.len(), 1);
    let mut claimed: Vec<_> = first
        .iter()
        .chain(rest.iter())
        .map(|t| t.channel.clone())
        .collect();
    claimed.sort_by(|x, y| x.as_str().cmp(y.as_str()));
    let mut expected = vec![ca.clone(), cb.clone()];
    expected.sort_by(|x, y| x.as_str().cmp(y.as_str()));
    assert_eq!(claimed, expected);
    assert!(first
        .iter()
        .chain(rest.iter())
        .all(|t| t.push_token == vec![0xAB; 32]));
    assert!(claim_and_send(&store, 10, T0).await.unwrap().is_empty());

    // A command queued in the same second as the push still owes its own push.
    store
        .enqueue_commands(&[command(&a, &ca, "Five")])
        .await
        .unwrap();
    let again = claim_and_send(&store, 10, T0).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].channel, ca);

    // A manual push and a requeue after a failed send.
    assert_eq!(store.request_push_for_device(b.id, T0).await.unwrap(), 1);
    assert_eq!(claim_and_send(&store, 10, T0).await.unwrap().len(), 1);
    store.requeue_push(&cb, T0).await.unwrap();
    assert_eq!(
        store
            .request_push(std::slice::from_ref(&ca), T0)
            .await
            .unwrap(),
        1
    );
    assert_eq!(claim_and_send(&store, 10, T0).await.unwrap().len(), 2);

    // Concurrent dispatchers never claim the same request twice.
    let devices = one_command_each(&store, &physics, 40, "Burst").await;
    store.enqueue_commands(&devices).await.unwrap();
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let s = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut got = Vec::new();
            loop {
                let batch = claim_and_send(&s, 3, T0).await.unwrap();
                if batch.is_empty() {
                    break;
                }
                got.extend(batch.into_iter().map(|t| t.channel));
            }
            got
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let total = all.len();
    all.sort_by(|x, y| x.as_str().cmp(y.as_str()));
    all.dedup();
    assert_eq!(total, 40, "every channel pushed");
    assert_eq!(all.len(), 40, "no channel pushed twice");
}

async fn check_dead_push_tokens_revive_on_token_update(store: Store) {
    let physics = tenant(&store, "physics").await;
    let a = enrolled_device(&store, &physics).await;
    let ca = ChannelId::device(&a.udid);
    store
        .mark_push_token_dead(
            &orchard_store::PushTarget {
                channel: ca.clone(),
                device_id: a.id,
                push_token: vec![0xAB; 32],
                push_magic: "4D7D2A9C-0000-0000-0000-000000000001".to_owned(),
                claimed_wanted: 0,
            },
            "dispatcher",
            410,
            "Unregistered",
            T0,
        )
        .await
        .unwrap();
    store
        .enqueue_commands(&[command(&a, &ca, "Lock")])
        .await
        .unwrap();
    assert!(
        claim_and_send(&store, 10, T0).await.unwrap().is_empty(),
        "dead token is not pushed"
    );
    assert_eq!(store.count_due_pushes().await.unwrap(), 0);
    // A new TokenUpdate revives the channel, and the push still owed goes out.
    store
        .update_token(&TokenUpdateRecord {
            push_token: vec![0x11; 32],
            ..token_update(&a, &ca, T0.plus_seconds(5))
        })
        .await
        .unwrap();
    let due = claim_and_send(&store, 10, T0.plus_seconds(6))
        .await
        .unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].push_token, vec![0x11; 32]);
}

async fn check_wake_for_inactive_devices(store: Store) {
    let physics = tenant(&store, "physics").await;
    let quiet = enrolled_device(&store, &physics).await; // last seen T0
    let busy = enrolled_device(&store, &physics).await;
    store
        .touch_device(busy.id, T0.plus_seconds(10_000))
        .await
        .unwrap();
    let now = T0.plus_seconds(10_000);
    let marked = store
        .request_wake_for_inactive(T0.plus_seconds(5_000), T0.plus_seconds(5_000), 100, now)
        .await
        .unwrap();
    assert_eq!(marked, 1);
    let due = claim_and_send(&store, 10, now).await.unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].device_id, quiet.id);
    // Just pushed: not marked again until pushed_before passes.
    let again = store
        .request_wake_for_inactive(T0.plus_seconds(5_000), T0.plus_seconds(5_000), 100, now)
        .await
        .unwrap();
    assert_eq!(again, 0);
}

async fn check_push_certificates(store: Store) {
    assert!(store.active_push_certificate().await.unwrap().is_none());
    let first = orchard_store::PushCertificateRecord {
        id: "one".into(),
        topic: "com.apple.mgmt.External.1".into(),
        cert_pem: "PEM1".into(),
        key_encrypted: vec![1, 2, 3],
        not_before: T0,
        not_after: T0.plus_seconds(100),
        uploaded_at: T0,
        uploaded_by: Some("op".into()),
        active: true,
    };
    store.save_push_certificate(&first).await.unwrap();
    assert_eq!(
        store.active_push_certificate().await.unwrap(),
        Some(first.clone())
    );
    let second = orchard_store::PushCertificateRecord {
        id: "two".into(),
        cert_pem: "PEM2".into(),
        uploaded_at: T0.plus_seconds(1),
        ..first.clone()
    };
    store.save_push_certificate(&second).await.unwrap();
    assert_eq!(store.active_push_certificate().await.unwrap(), Some(second));
}

async fn check_push_csr_keys(store: Store) {
    use orchard_store::PushCsrKeyRecord;
    assert!(store.list_push_csr_keys().await.unwrap().is_empty());
    assert!(store
        .push_csr_key_by_public_key("00ff")
        .await
        .unwrap()
        .is_none());
    let older = PushCsrKeyRecord {
        id: "csr-1".into(),
        public_key_sha256: "aa".repeat(32),
        key_encrypted: vec![0, 1, 2, 255],
        created_at: T0,
    };
    let newer = PushCsrKeyRecord {
        id: "csr-2".into(),
        public_key_sha256: "bb".repeat(32),
        key_encrypted: vec![9; 300],
        created_at: T0.plus_seconds(60),
    };
    store.save_push_csr_key(&older).await.unwrap();
    store.save_push_csr_key(&newer).await.unwrap();
    assert_eq!(
        store
            .push_csr_key_by_public_key(&older.public_key_sha256)
            .await
            .unwrap(),
        Some(older.clone())
    );
    assert_eq!(
        store
            .push_csr_key_by_public_key(&newer.public_key_sha256)
            .await
            .unwrap(),
        Some(newer.clone())
    );
    assert_eq!(
        store.list_push_csr_keys().await.unwrap(),
        vec![newer.clone(), older.clone()]
    );
    // One key per public key: the lookup by certificate is never ambiguous.
    let duplicate = PushCsrKeyRecord {
        id: "csr-3".into(),
        ..older.clone()
    };
    assert!(matches!(
        store.save_push_csr_key(&duplicate).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(
        store
            .delete_push_csr_keys_before(T0.plus_seconds(1))
            .await
            .unwrap(),
        1
    );
    assert!(store
        .push_csr_key_by_public_key(&older.public_key_sha256)
        .await
        .unwrap()
        .is_none());
    assert_eq!(store.list_push_csr_keys().await.unwrap(), vec![newer]);
}

// ---------------------------------------------------------------------------------------------------------
// DEP (automated device enrollment)

fn dep_token_record(id: &str, created_at: UnixTime) -> orchard_store::DepTokenRecord {
    orchard_store::DepTokenRecord {
        id: id.into(),
        name: format!("ASM {id}"),
        certificate_pem: "-----BEGIN CERTIFICATE-----\n...".into(),
        key_encrypted: vec![1, 2, 3, 0, 255],
        token_encrypted: None,
        consumer_key: None,
        access_token_expiry: None,
        server_name: None,
        org_name: None,
        cursor: None,
        cursor_saved_at: None,
        last_sync_at: None,
        last_sync_error: None,
        created_at,
    }
}

fn dep_device(
    token: &str,
    serial: &str,
    op: Option<(&str, i64)>,
) -> orchard_store::DepDeviceRecord {
    orchard_store::DepDeviceRecord {
        token_id: token.into(),
        device: DeviceRecord {
            serial_number: SerialNumber::parse(serial).unwrap(),
            model: Some("iPad (10th generation)".into()),
            description: Some("IPAD 10.9".into()),
            color: Some("BLUE".into()),
            asset_tag: None,
            profile_status: Some(ProfileStatus::Empty),
            profile_uuid: None,
            profile_assign_time: None,
            profile_push_time: Some(T0),
            device_assigned_date: Some(T0),
            device_assigned_by: Some("it@example.edu".into()),
            os: Some("iPadOS".into()),
            device_family: Some("iPad".into()),
            op_type: op.map(|(t, _)| OpType::from(t)),
            op_date: op.map(|(_, d)| UnixTime(d)),
            // Protocol version 8: a migration scheduled in ASM reads back as it came.
            mdm_migration_deadline: Some(UnixTime(T0.0 + 86_400)),
            response_status: Some(orchard_dep::AssignStatus::Success),
        },
        deleted: op.map(|(t, _)| t == "deleted").unwrap_or(false),
        updated_at: T0,
    }
}

async fn check_dep_tokens(store: Store) {
    use orchard_store::DepTokenUpload;
    assert!(store.list_dep_tokens().await.unwrap().is_empty());
    assert!(store.dep_token("nope").await.unwrap().is_none());
    let first = dep_token_record("dep-1", T0);
    let second = dep_token_record("dep-2", UnixTime(T0.0 + 10));
    store.create_dep_token(&second).await.unwrap();
    store.create_dep_token(&first).await.unwrap();
    assert!(matches!(
        store.create_dep_token(&first).await,
        Err(StoreError::Conflict(_))
    ));
    let listed = store.list_dep_tokens().await.unwrap();
    assert_eq!(listed, vec![first.clone(), second.clone()]);

    let upload = DepTokenUpload {
        token_encrypted: vec![7; 500],
        consumer_key: "CK_1".into(),
        access_token_expiry: UnixTime(T0.0 + 365 * 86_400),
        server_name: Some("Orchard MDM".into()),
        org_name: Some("Orchard University".into()),
    };
    store
        .set_dep_token_uploaded("dep-1", &upload)
        .await
        .unwrap();
    assert!(matches!(
        store.set_dep_token_uploaded("nope", &upload).await,
        Err(StoreError::NotFound)
    ));
    store
        .save_dep_cursor("dep-1", Some("cursor-a"), UnixTime(T0.0 + 5))
        .await
        .unwrap();
    store
        .record_dep_sync("dep-1", UnixTime(T0.0 + 6), Some("terms not accepted"))
        .await
        .unwrap();
    let got = store.dep_token("dep-1").await.unwrap().unwrap();
    assert_eq!(got.token_encrypted, Some(vec![7; 500]));
    assert_eq!(got.consumer_key.as_deref(), Some("CK_1"));
    assert_eq!(got.access_token_expiry, Some(upload.access_token_expiry));
    assert_eq!(got.server_name.as_deref(), Some("Orchard MDM"));
    assert_eq!(got.org_name.as_deref(), Some("Orchard University"));
    assert_eq!(got.cursor.as_deref(), Some("cursor-a"));
    assert_eq!(got.cursor_saved_at, Some(UnixTime(T0.0 + 5)));
    assert_eq!(got.last_sync_at, Some(UnixTime(T0.0 + 6)));
    assert_eq!(got.last_sync_error.as_deref(), Some("terms not accepted"));

    // A successful sync clears the error; clearing the cursor forces a full fetch.
    store
        .record_dep_sync("dep-1", UnixTime(T0.0 + 7), None)
        .await
        .unwrap();
    store
        .save_dep_cursor("dep-1", None, UnixTime(T0.0 + 8))
        .await
        .unwrap();
    let got = store.dep_token("dep-1").await.unwrap().unwrap();
    assert_eq!(got.last_sync_error, None);
    assert_eq!(got.cursor, None);
    assert!(matches!(
        store.save_dep_cursor("nope", Some("c"), T0).await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        store.record_dep_sync("nope", T0, None).await,
        Err(StoreError::NotFound)
    ));
    // The other token is untouched.
    assert_eq!(store.dep_token("dep-2").await.unwrap().unwrap(), second);
}

async fn check_dep_devices(store: Store) {
    use orchard_store::DepDeviceFilter;
    store
        .create_dep_token(&dep_token_record("t1", T0))
        .await
        .unwrap();
    store
        .create_dep_token(&dep_token_record("t2", T0))
        .await
        .unwrap();
    let all_t1 = DepDeviceFilter {
        token_id: Some("t1"),
        only_active: false,
    };
    let active_t1 = DepDeviceFilter {
        token_id: Some("t1"),
        only_active: true,
    };

    // A full fetch page of 250 devices (several statements), applied with its cursor.
    let page: Vec<_> = (0..250)
        .map(|i| dep_device("t1", &format!("SER{i:09}"), None))
        .collect();
    store
        .apply_dep_page("t1", &page, "cursor-1", UnixTime(T0.0 + 1))
        .await
        .unwrap();
    assert_eq!(store.count_dep_devices(all_t1).await.unwrap(), 250);
    let token = store.dep_token("t1").await.unwrap().unwrap();
    assert_eq!(token.cursor.as_deref(), Some("cursor-1"));
    // Applying the same page again neither duplicates nor loses anything.
    store
        .apply_dep_page("t1", &page, "cursor-1", UnixTime(T0.0 + 1))
        .await
        .unwrap();
    assert_eq!(store.count_dep_devices(all_t1).await.unwrap(), 250);
    assert_eq!(
        store
            .dep_device("t1", "SER000000007")
            .await
            .unwrap()
            .unwrap(),
        page[7]
    );

    // Another token's devices are kept apart, even with the same serial.
    store
        .upsert_dep_devices(&[dep_device("t2", "SER000000007", None)])
        .await
        .unwrap();
    assert_eq!(store.count_dep_devices(all_t1).await.unwrap(), 250);
    assert_eq!(
        store
            .count_dep_devices(DepDeviceFilter::default())
            .await
            .unwrap(),
        251
    );

    // Changes: the newest op_date wins, whatever the order of arrival, also inside one call.
    let mut modified = dep_device("t1", "SER000000001", Some(("modified", T0.0 + 100)));
    modified.device.asset_tag = Some("PHYS-1".into());
    let mut older = dep_device("t1", "SER000000001", Some(("modified", T0.0 + 50)));
    older.device.asset_tag = Some("STALE".into());
    store
        .upsert_dep_devices(&[modified.clone(), older.clone()])
        .await
        .unwrap();
    store.upsert_dep_devices(&[older.clone()]).await.unwrap();
    let got = store
        .dep_device("t1", "SER000000001")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.device.asset_tag.as_deref(), Some("PHYS-1"));
    assert_eq!(got.device.op_date, Some(UnixTime(T0.0 + 100)));
    // Equal dates: the later record applies.
    let mut same = modified.clone();
    same.device.asset_tag = Some("PHYS-1b".into());
    store.upsert_dep_devices(&[same]).await.unwrap();
    let got = store
        .dep_device("t1", "SER000000001")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.device.asset_tag.as_deref(), Some("PHYS-1b"));

    // Deleted by a sync record; an older "added" does not bring it back, a newer one does.
    store
        .upsert_dep_devices(&[dep_device(
            "t1",
            "SER000000002",
            Some(("deleted", T0.0 + 200)),
        )])
        .await
        .unwrap();
    store
        .upsert_dep_devices(&[dep_device(
            "t1",
            "SER000000002",
            Some(("added", T0.0 + 150)),
        )])
        .await
        .unwrap();
    assert!(
        store
            .dep_device("t1", "SER000000002")
            .await
            .unwrap()
            .unwrap()
            .deleted
    );
    assert_eq!(store.count_dep_devices(active_t1).await.unwrap(), 249);
    store
        .upsert_dep_devices(&[dep_device(
            "t1",
            "SER000000002",
            Some(("added", T0.0 + 300)),
        )])
        .await
        .unwrap();
    assert_eq!(store.count_dep_devices(active_t1).await.unwrap(), 250);

    // Devices a full fetch no longer lists are marked deleted (only once; unknown serials are ignored).
    let gone = vec![
        "SER000000003".to_owned(),
        "SER000000004".to_owned(),
        "NOPE".to_owned(),
    ];
    assert_eq!(
        store
            .mark_dep_devices_deleted("t1", &gone, UnixTime(T0.0 + 400))
            .await
            .unwrap(),
        2
    );
    assert_eq!(
        store
            .mark_dep_devices_deleted("t1", &gone, UnixTime(T0.0 + 401))
            .await
            .unwrap(),
        0
    );
    assert_eq!(store.count_dep_devices(active_t1).await.unwrap(), 248);
    assert_eq!(store.count_dep_devices(all_t1).await.unwrap(), 250);
    let active = store.dep_serials(active_t1).await.unwrap();
    assert_eq!(active.len(), 248);
    assert!(!active.contains(&"SER000000003".to_owned()));
    // A fetch record (current state) revives it.
    store
        .upsert_dep_devices(&[dep_device("t1", "SER000000003", None)])
        .await
        .unwrap();
    assert_eq!(store.count_dep_devices(active_t1).await.unwrap(), 249);

    // Paging is stable and complete.
    let mut seen = Vec::new();
    let mut offset = 0;
    loop {
        let page = store.list_dep_devices(all_t1, 64, offset).await.unwrap();
        if page.is_empty() {
            break;
        }
        offset += page.len() as i64;
        seen.extend(page.into_iter().map(|d| d.device.serial_number.to_string()));
    }
    assert_eq!(seen.len(), 250);
    let unique: HashSet<_> = seen.iter().collect();
    assert_eq!(unique.len(), 250);
    assert!(seen.windows(2).all(|w| w[0] < w[1]));

    // Devices of an unknown token are refused.
    assert!(store
        .upsert_dep_devices(&[dep_device("nope", "X1", None)])
        .await
        .is_err());
}

fn template_record(
    id: &str,
    token: &str,
    tenant: TenantId,
    auto: bool,
) -> (orchard_store::DepTemplateRecord, EnrollmentLink) {
    let link = EnrollmentLink {
        id: EnrollmentLinkId::new(),
        tenant_id: tenant,
        name: format!("template:{id}"),
        secret_hash: format!("hash-{id}"),
        max_uses: None,
        uses: 0,
        expires_at: None,
        created_at: T0,
        created_by: None,
    };
    let t = orchard_store::DepTemplateRecord {
        id: id.into(),
        token_id: token.into(),
        tenant_id: tenant,
        link_id: link.id,
        name: format!("Template {id}"),
        profile_json: "{}".into(),
        setup_json: "{}".into(),
        minimum_os_version: None,
        auto_assign: auto,
        profile_uuid: None,
        defined_at: None,
        define_error: None,
        created_at: T0,
        updated_at: T0,
    };
    (t, link)
}

/// Pages larger than one upsert statement (1,000 rows), with duplicates and stale records inside the batch,
/// unchanged records that write nothing, and releases of more serials than one `IN (…)` list holds.
async fn check_dep_sync_batches(store: Store) {
    use orchard_store::DepDeviceFilter;
    store
        .create_dep_token(&dep_token_record("t1", T0))
        .await
        .unwrap();
    let all = DepDeviceFilter {
        token_id: Some("t1"),
        only_active: false,
    };
    let active = DepDeviceFilter {
        token_id: Some("t1"),
        only_active: true,
    };
    let serial = |i: usize| format!("BAT{i:09}");

    // 2,500 distinct devices in one page (three statements: 1,000 + 1,000 + 500 rows), all new.
    let page: Vec<_> = (0..2_500)
        .map(|i| dep_device("t1", &serial(i), Some(("added", T0.0 + 10))))
        .collect();
    let changed = store
        .apply_dep_page("t1", &page, "cursor-1", UnixTime(T0.0 + 10))
        .await
        .unwrap();
    assert_eq!(changed, 2_500);
    assert_eq!(store.count_dep_devices(all).await.unwrap(), 2_500);

    // The same page again, seen later: nothing changed, so nothing is written (updated_at stays).
    let mut seen_later = page.clone();
    for d in &mut seen_later {
        d.updated_at = UnixTime(T0.0 + 20);
    }
    let changed = store
        .apply_dep_page("t1", &seen_later, "cursor-2", UnixTime(T0.0 + 20))
        .await
        .unwrap();
    assert_eq!(changed, 0);
    assert_eq!(
        store
            .dep_device("t1", &serial(1_234))
            .await
            .unwrap()
            .unwrap(),
        page[1_234]
    );
    assert_eq!(
        store
            .dep_token("t1")
            .await
            .unwrap()
            .unwrap()
            .cursor
            .as_deref(),
        Some("cursor-2"),
        "the cursor is saved even when no device changed"
    );

    // One batch mixing: a newer change (applies), a stale change (ignored) next to it, the same serial three
    // times with the newest in the middle, and a serial only in the second statement's range.
    let mut newer = dep_device("t1", &serial(5), Some(("modified", T0.0 + 30)));
    newer.device.asset_tag = Some("NEW-5".into());
    newer.updated_at = UnixTime(T0.0 + 30);
    let mut stale = dep_device("t1", &serial(6), Some(("modified", T0.0 + 5)));
    stale.device.asset_tag = Some("STALE-6".into());
    let mut first = dep_device("t1", &serial(7), Some(("modified", T0.0 + 31)));
    first.device.asset_tag = Some("FIRST-7".into());
    let mut newest = dep_device("t1", &serial(7), Some(("modified", T0.0 + 33)));
    newest.device.asset_tag = Some("NEWEST-7".into());
    let mut older = dep_device("t1", &serial(7), Some(("modified", T0.0 + 32)));
    older.device.asset_tag = Some("OLDER-7".into());
    let mut far = dep_device("t1", &serial(2_400), Some(("modified", T0.0 + 30)));
    far.device.color = Some("SILVER".into());
    let mut batch: Vec<_> = (100..1_300)
        .map(|i| dep_device("t1", &serial(i), Some(("added", T0.0 + 10))))
        .collect();
    batch.insert(0, newer);
    batch.insert(1, stale);
    batch.insert(500, first);
    batch.insert(900, newest);
    batch.insert(1_100, older);
    batch.push(far);
    let changed = store
        .apply_dep_page("t1", &batch, "cursor-3", UnixTime(T0.0 + 40))
        .await
        .unwrap();
    assert_eq!(
        changed, 3,
        "serials 5, 7 and 2,400 changed; the rest is unchanged or stale"
    );
    let got = |i: usize| {
        let store = store.clone();
        let serial = serial(i);
        async move { store.dep_device("t1", &serial).await.unwrap().unwrap() }
    };
    let five = got(5).await;
    assert_eq!(five.device.asset_tag.as_deref(), Some("NEW-5"));
    assert_eq!(five.device.op_date, Some(UnixTime(T0.0 + 30)));
    assert_eq!(five.updated_at, UnixTime(T0.0 + 30));
    assert_eq!(
        got(6).await,
        page[6],
        "an older record never overwrites a newer one"
    );
    let seven = got(7).await;
    assert_eq!(seven.device.asset_tag.as_deref(), Some("NEWEST-7"));
    assert_eq!(seven.device.op_date, Some(UnixTime(T0.0 + 33)));
    assert_eq!(got(2_400).await.device.color.as_deref(), Some("SILVER"));

    // A fetch record (no op_date) with the same data as stored changes nothing and keeps the op_date; one
    // with different data applies and still keeps it.
    let mut current = dep_device("t1", &serial(7), None);
    current.device.asset_tag = Some("NEWEST-7".into());
    current.device.op_type = Some(OpType::Modified);
    assert_eq!(
        store.upsert_dep_devices(&[current.clone()]).await.unwrap(),
        0
    );
    current.device.asset_tag = Some("FETCHED-7".into());
    assert_eq!(store.upsert_dep_devices(&[current]).await.unwrap(), 1);
    let seven = got(7).await;
    assert_eq!(seven.device.asset_tag.as_deref(), Some("FETCHED-7"));
    assert_eq!(seven.device.op_date, Some(UnixTime(T0.0 + 33)));

    // Releasing 1,500 serials (two `IN` lists) plus unknown ones; only active devices count.
    let mut gone: Vec<String> = (1_000..2_500).map(serial).collect();
    gone.push("UNKNOWN00001".into());
    let released = store
        .mark_dep_devices_deleted("t1", &gone, UnixTime(T0.0 + 50))
        .await
        .unwrap();
    assert_eq!(released, 1_500);
    assert_eq!(store.count_dep_devices(active).await.unwrap(), 1_000);
    assert_eq!(
        store
            .mark_dep_devices_deleted("t1", &gone, UnixTime(T0.0 + 51))
            .await
            .unwrap(),
        0
    );
    // A fetch record listing a released device again brings it back.
    assert_eq!(
        store
            .upsert_dep_devices(&[dep_device("t1", &serial(1_000), None)])
            .await
            .unwrap(),
        1
    );
    assert_eq!(store.count_dep_devices(active).await.unwrap(), 1_001);
}

async fn check_dep_templates_and_assignments(store: Store) {
    use orchard_store::{AssignResult, AssignStatus, DepListingFilter};
    let physics = tenant(&store, "PHYS").await;
    let music = tenant(&store, "MUS").await;
    store
        .create_dep_token(&dep_token_record("t1", T0))
        .await
        .unwrap();
    let page: Vec<_> = (0..20)
        .map(|i| dep_device("t1", &format!("SER{i:09}"), None))
        .collect();
    store.apply_dep_page("t1", &page, "c1", T0).await.unwrap();

    // Templates: unique name per token, at most one auto-assign template per token.
    let (a, link_a) = template_record("tpl-a", "t1", physics.id, true);
    store.create_dep_template(&a, &link_a).await.unwrap();
    let (b, link_b) = template_record("tpl-b", "t1", music.id, false);
    store.create_dep_template(&b, &link_b).await.unwrap();
    let (mut dup, link_dup) = template_record("tpl-c", "t1", music.id, true);
    dup.name = "Template tpl-x".into();
    assert!(matches!(
        store.create_dep_template(&dup, &link_dup).await,
        Err(StoreError::Conflict(_))
    ));
    let (mut same_name, link_same) = template_record("tpl-d", "t1", music.id, false);
    same_name.name = a.name.clone();
    assert!(matches!(
        store.create_dep_template(&same_name, &link_same).await,
        Err(StoreError::Conflict(_))
    ));
    // The failed creations left no link behind (one transaction each).
    assert!(store
        .find_enrollment_link_by_hash("hash-tpl-c")
        .await
        .unwrap()
        .is_none());
    assert_eq!(
        store
            .dep_template_by_link(link_a.id)
            .await
            .unwrap()
            .unwrap()
            .id,
        "tpl-a"
    );

    // Scoped reads: music sees only its template; physics' id looks missing to music.
    let music_scope = tenant_scope(music.id);
    let listed = store.list_dep_templates(music_scope, None).await.unwrap();
    assert_eq!(
        listed.iter().map(|t| t.id.as_str()).collect::<Vec<_>>(),
        vec!["tpl-b"]
    );
    assert!(store
        .dep_template(music_scope, "tpl-a")
        .await
        .unwrap()
        .is_none());
    assert!(store
        .dep_template(all_tenants(), "tpl-a")
        .await
        .unwrap()
        .is_some());

    // Explicit assignment of 5 serials to B (one unknown serial reported, not fatal).
    let to_b: Vec<String> = (0..5)
        .map(|i| format!("SER{i:09}"))
        .chain(["NOPE00000000".to_owned()])
        .collect();
    let outcome = store
        .set_dep_assignment("t1", &to_b, Some(("tpl-b", music.id)))
        .await
        .unwrap();
    assert_eq!(outcome.updated, 5);
    assert_eq!(outcome.unknown, vec!["NOPE00000000".to_owned()]);
    // Unassigning one keeps it out of the rule.
    store
        .set_dep_assignment("t1", &["SER000000019".to_owned()], None)
        .await
        .unwrap();
    // The rule takes the 14 never-assigned serials.
    assert_eq!(store.auto_assign_dep_devices("t1").await.unwrap(), 14);
    assert_eq!(store.auto_assign_dep_devices("t1").await.unwrap(), 0);
    let counts = store.dep_assignment_counts("t1").await.unwrap();
    assert_eq!(
        counts,
        vec![("pending".to_owned(), 19), ("unassigned".to_owned(), 1)]
    );

    // Tenants see the serials assigned to their templates, enrolled or not.
    let filter = DepListingFilter {
        only_active: true,
        ..Default::default()
    };
    assert_eq!(
        store
            .count_dep_device_listings(music_scope, filter)
            .await
            .unwrap(),
        5
    );
    assert_eq!(
        store
            .count_dep_device_listings(tenant_scope(physics.id), filter)
            .await
            .unwrap(),
        14
    );
    assert_eq!(
        store
            .count_dep_device_listings(all_tenants(), filter)
            .await
            .unwrap(),
        20
    );
    let listed = store
        .list_dep_device_listings(music_scope, filter, 100, 0)
        .await
        .unwrap();
    assert!(listed
        .iter()
        .all(|l| l.assignment.tenant_id == Some(music.id)
            && l.assignment.template_id.as_deref() == Some("tpl-b")));

    // Nothing is due for Apple while the template has no profile uuid… it is listed with profile_uuid None.
    let due = store.due_dep_assignments("t1", T0, 100).await.unwrap();
    assert_eq!(due.len(), 19);
    assert!(due.iter().all(|d| d.profile_uuid.is_none()));
    store
        .set_dep_template_definition("tpl-b", Some("PROFILE-B"), None, T0)
        .await
        .unwrap();
    store
        .set_dep_template_definition("tpl-b", None, Some("apple said no"), UnixTime(T0.0 + 5))
        .await
        .unwrap();
    let b_now = store
        .dep_template(all_tenants(), "tpl-b")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        b_now.profile_uuid.as_deref(),
        Some("PROFILE-B"),
        "a failed redefinition keeps the last good uuid"
    );
    assert_eq!(b_now.defined_at, Some(T0));
    assert_eq!(b_now.define_error.as_deref(), Some("apple said no"));

    // Apple's answers: assigned, throttled (due again later), a serial reassigned meanwhile left alone.
    let results = vec![
        AssignResult {
            serial_number: "SER000000000".into(),
            template_id: "tpl-b".into(),
            status: AssignStatus::Assigned,
            profile_uuid: Some("PROFILE-B".into()),
            error: None,
            retry_at: None,
        },
        AssignResult {
            serial_number: "SER000000001".into(),
            template_id: "tpl-b".into(),
            status: AssignStatus::Throttled,
            profile_uuid: Some("PROFILE-B".into()),
            error: Some("THROTTLED".into()),
            retry_at: Some(UnixTime(T0.0 + 300)),
        },
        AssignResult {
            serial_number: "SER000000010".into(),
            template_id: "tpl-b".into(),
            status: AssignStatus::Assigned,
            profile_uuid: Some("PROFILE-B".into()),
            error: None,
            retry_at: None,
        },
    ];
    store
        .record_dep_assignments("t1", &results, UnixTime(T0.0 + 10))
        .await
        .unwrap();
    let listed = store
        .list_dep_device_listings(
            all_tenants(),
            DepListingFilter {
                template_id: Some("tpl-b"),
                ..Default::default()
            },
            100,
            0,
        )
        .await
        .unwrap();
    let by_serial: HashMap<_, _> = listed
        .iter()
        .map(|l| (l.device.device.serial_number.as_str(), l))
        .collect();
    assert_eq!(
        by_serial["SER000000000"].assignment.status.as_deref(),
        Some("assigned")
    );
    assert_eq!(
        by_serial["SER000000000"]
            .device
            .device
            .profile_uuid
            .as_ref()
            .map(|p| p.as_str()),
        Some("PROFILE-B")
    );
    assert_eq!(
        by_serial["SER000000001"].assignment.status.as_deref(),
        Some("throttled")
    );
    let physics_serial = store
        .list_dep_device_listings(
            all_tenants(),
            DepListingFilter {
                token_id: Some("t1"),
                ..Default::default()
            },
            100,
            0,
        )
        .await
        .unwrap()
        .into_iter()
        .find(|l| l.device.device.serial_number.as_str() == "SER000000010")
        .unwrap();
    assert_eq!(
        physics_serial.assignment.status.as_deref(),
        Some("pending"),
        "an answer for another template is ignored"
    );
    let due: Vec<String> = store
        .due_dep_assignments("t1", UnixTime(T0.0 + 10), 100)
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.serial_number)
        .collect();
    assert!(!due.contains(&"SER000000001".to_owned()) && !due.contains(&"SER000000000".to_owned()));
    let due_later: Vec<String> = store
        .due_dep_assignments("t1", UnixTime(T0.0 + 300), 100)
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.serial_number)
        .collect();
    assert!(due_later.contains(&"SER000000001".to_owned()));

    // A sync page never overwrites Orchard's assignment columns.
    let again: Vec<_> = (0..5)
        .map(|i| dep_device("t1", &format!("SER{i:09}"), Some(("modified", T0.0 + 50))))
        .collect();
    store
        .apply_dep_page("t1", &again, "c2", UnixTime(T0.0 + 50))
        .await
        .unwrap();
    assert_eq!(
        store
            .count_dep_device_listings(music_scope, filter)
            .await
            .unwrap(),
        5
    );

    // The zero-touch lookup: an assigned active serial finds its template; a deleted or unknown one nothing.
    let found = store
        .dep_serial_template("SER000000003")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.template.id, "tpl-b");
    assert_eq!(found.template.tenant_id, music.id);
    assert!(
        store
            .dep_serial_template("SER000000019")
            .await
            .unwrap()
            .is_none(),
        "unassigned"
    );
    store
        .mark_dep_devices_deleted("t1", &["SER000000003".to_owned()], UnixTime(T0.0 + 60))
        .await
        .unwrap();
    assert!(
        store
            .dep_serial_template("SER000000003")
            .await
            .unwrap()
            .is_none(),
        "released from the mdm server"
    );

    // Moving a template to another tenant moves its serials.
    let mut a2 = store
        .dep_template(all_tenants(), "tpl-a")
        .await
        .unwrap()
        .unwrap();
    a2.tenant_id = music.id;
    a2.updated_at = UnixTime(T0.0 + 70);
    store.update_dep_template(&a2).await.unwrap();
    assert_eq!(
        store
            .count_dep_device_listings(tenant_scope(physics.id), filter)
            .await
            .unwrap(),
        0
    );
    // Reassignment after a redefinition makes the template's serials pending again.
    assert_eq!(
        store.reassign_dep_template_devices("tpl-b").await.unwrap(),
        4
    );

    // Deleting a template unassigns its serials (they are not taken by the rule again).
    store
        .delete_dep_template("tpl-a", UnixTime(T0.0 + 80))
        .await
        .unwrap();
    assert!(store
        .dep_template(all_tenants(), "tpl-a")
        .await
        .unwrap()
        .is_none());
    assert_eq!(store.auto_assign_dep_devices("t1").await.unwrap(), 0);

    // Setup state and bypass code of a device.
    let device = enrolled_device(&store, &music).await;
    assert_eq!(
        store.device_setup(device.id).await.unwrap().unwrap().state,
        None
    );
    store
        .set_device_setup(device.id, Some("tpl-b"), SetupState::Configuring, None, T0)
        .await
        .unwrap();
    assert!(store
        .advance_device_setup(
            device.id,
            SetupState::Configuring,
            SetupState::Releasing,
            None,
            T0,
        )
        .await
        .unwrap());
    assert!(
        !store
            .advance_device_setup(
                device.id,
                SetupState::Configuring,
                SetupState::Releasing,
                None,
                T0,
            )
            .await
            .unwrap(),
        "moves once"
    );
    let setup = store.device_setup(device.id).await.unwrap().unwrap();
    assert_eq!(
        (setup.template_id.as_deref(), setup.state),
        (Some("tpl-b"), Some(SetupState::Releasing))
    );
    // A move the state machine does not have is refused, whatever the row says.
    assert!(matches!(
        store
            .advance_device_setup(
                device.id,
                SetupState::Configured,
                SetupState::Failed,
                None,
                T0
            )
            .await,
        Err(StoreError::Conflict(_))
    ));
    assert!(store.bypass_code(device.id).await.unwrap().is_none());
    store
        .store_bypass_code(device.id, &[9, 8, 7], UnixTime(T0.0 + 90))
        .await
        .unwrap();
    assert_eq!(
        store.bypass_code(device.id).await.unwrap(),
        Some((vec![9, 8, 7], UnixTime(T0.0 + 90)))
    );

    // The sync lease: one holder at a time; free again after release or expiry.
    assert!(store
        .claim_dep_sync_lease("t1", "node-a", T0, UnixTime(T0.0 + 100))
        .await
        .unwrap());
    assert!(!store
        .claim_dep_sync_lease("t1", "node-b", UnixTime(T0.0 + 50), UnixTime(T0.0 + 150))
        .await
        .unwrap());
    assert!(
        store
            .claim_dep_sync_lease("t1", "node-a", UnixTime(T0.0 + 50), UnixTime(T0.0 + 150))
            .await
            .unwrap(),
        "renewal"
    );
    assert!(
        store
            .claim_dep_sync_lease("t1", "node-b", UnixTime(T0.0 + 150), UnixTime(T0.0 + 250))
            .await
            .unwrap(),
        "expired lease taken over"
    );
    store.release_dep_sync_lease("t1", "node-a").await.unwrap();
    assert!(
        !store
            .claim_dep_sync_lease("t1", "node-a", UnixTime(T0.0 + 160), UnixTime(T0.0 + 260))
            .await
            .unwrap(),
        "only the holder releases"
    );
    store.release_dep_sync_lease("t1", "node-b").await.unwrap();
    assert!(store
        .claim_dep_sync_lease("t1", "node-a", UnixTime(T0.0 + 160), UnixTime(T0.0 + 260))
        .await
        .unwrap());
}

/// A deliver-once command is handed out the first time only (a replayed poll gets the next command), even
/// after NotNow, and the sweep expires it at its deadline although it is `sent`; the sealed flags round-trip.
async fn check_deliver_once_commands_go_out_once(store: Store) {
    let physics = tenant(&store, "physics").await;
    let device = enrolled_device(&store, &physics).await;
    let channel = ChannelId::device(&device.udid);
    let once = NewCommand {
        deliver_once: true,
        payload_sealed: true,
        expires_at: Some(T0.plus_seconds(60)),
        ..command(&device, &channel, "ClearPasscode")
    };
    let once_not_now = NewCommand {
        deliver_once: true,
        expires_at: Some(T0.plus_seconds(60)),
        ..command(&device, &channel, "ClearPasscodeNotNow")
    };
    let after = command(&device, &channel, "After");
    store
        .enqueue_commands(&[once.clone(), once_not_now.clone(), after.clone()])
        .await
        .unwrap();

    let handed = store
        .next_command(&channel, false, T0)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(handed.uuid, once.uuid);
    assert!(handed.payload_sealed);
    // The same poll again (a replay, or a device that lost the answer): the next command, never `once` again.
    let handed = store
        .next_command(&channel, false, T0)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(handed.uuid, once_not_now.uuid);
    assert!(!handed.payload_sealed);
    store
        .record_result(&report(
            &channel,
            &once_not_now.uuid,
            CommandStatus::NotNow,
            T0,
        ))
        .await
        .unwrap();
    for skip_not_now in [false, true] {
        let handed = store
            .next_command(&channel, skip_not_now, T0.plus_seconds(1))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(handed.uuid, after.uuid, "skip_not_now = {skip_not_now}");
    }
    store
        .record_result(&report(
            &channel,
            &after.uuid,
            CommandStatus::Acknowledged,
            T0,
        ))
        .await
        .unwrap();
    assert!(store
        .next_command(&channel, false, T0.plus_seconds(60))
        .await
        .unwrap()
        .is_none());
    assert_eq!(status_of(&store, &once.uuid).await, CommandStatus::Sent);

    // Past the deadline both are swept: the unanswered one and the one the device put off.
    assert!(store
        .next_command(&channel, false, T0.plus_seconds(61))
        .await
        .unwrap()
        .is_none());
    for uuid in [&once.uuid, &once_not_now.uuid] {
        assert_eq!(status_of(&store, uuid).await, CommandStatus::Expired);
    }
    let record = store
        .get_command(all_tenants(), &once.uuid)
        .await
        .unwrap()
        .unwrap();
    assert!(record.deliver_once && record.payload_sealed && !record.result_sealed);

    // A sealed result is recorded as sealed.
    let sealed_result = command(&device, &channel, "ActivationLockBypassCode");
    store
        .enqueue_commands(std::slice::from_ref(&sealed_result))
        .await
        .unwrap();
    store
        .next_command(&channel, false, T0.plus_seconds(62))
        .await
        .unwrap()
        .unwrap();
    store
        .record_result(&CommandResultRecord {
            result_sealed: true,
            ..report(
                &channel,
                &sealed_result.uuid,
                CommandStatus::Acknowledged,
                T0,
            )
        })
        .await
        .unwrap();
    let record = store
        .get_command(all_tenants(), &sealed_result.uuid)
        .await
        .unwrap()
        .unwrap();
    assert!(record.result_sealed && !record.payload_sealed && !record.deliver_once);
}

/// What `orchard backup` needs: the schema version a connected database is at, and on SQLite a consistent copy
/// that is a database of its own with the same rows (PostgreSQL is left to pg_dump).
async fn check_backup_support(store: Store) {
    let backend = store.backend();
    assert_eq!(
        store.schema_version().await.unwrap(),
        Store::known_schema_version(backend)
    );
    assert!(Store::known_schema_version(backend) >= 37);
    let physics = tenant(&store, "physics").await;
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("copy.db");
    if backend == Backend::Postgres {
        assert!(store.copy_sqlite_into(&copy).await.is_err());
        assert!(!copy.exists());
        return;
    }
    store.copy_sqlite_into(&copy).await.unwrap();
    // SQLite refuses to overwrite: a second copy to the same path fails rather than mixing two databases.
    assert!(store.copy_sqlite_into(&copy).await.is_err());
    let url = format!("sqlite://{}", copy.display());
    assert_eq!(
        orchard_store::sqlite_database_file(&url),
        Some(copy.clone())
    );
    assert_eq!(orchard_store::sqlite_database_file("postgres://db/x"), None);
    // Opened as it is, the copy is not migrated (it is current anyway) and answers like the original.
    let as_is = Store::connect_without_migrating(&url).await.unwrap();
    assert_eq!(
        Store::schema_version_without_migrating(&url).await.unwrap(),
        Some(Store::known_schema_version(backend))
    );
    assert_eq!(
        as_is.schema_version().await.unwrap(),
        Store::known_schema_version(backend)
    );
    as_is.close().await;
    let empty = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("empty.db").display()
    );
    assert_eq!(
        Store::schema_version_without_migrating(&empty)
            .await
            .unwrap(),
        None
    );
    let (copied, _) = Store::connect(&url).await.unwrap();
    assert_eq!(
        copied.get_tenant(all_tenants(), physics.id).await.unwrap(),
        Some(physics)
    );
    assert_eq!(
        copied.schema_version().await.unwrap(),
        Store::known_schema_version(backend)
    );
    copied.close().await;
}

/// A DeviceInformation answer's facts update that also reads what the device's group re-evaluation starts from
/// (one statement on PostgreSQL): the facts it returns are the updated ones, its groups are the device's own and
/// its tenant's smart ones, it marks the device for the reconciler only when asked, and an unknown device is
/// NotFound with nothing written.
async fn check_a_facts_update_reads_the_standing_it_leaves(store: Store) {
    let physics = tenant(&store, "physics").await;
    let music = tenant(&store, "music").await;
    let device = enrolled_device(&store, &physics).await;
    let facts = |os: &str, name: &str| DeviceFacts {
        os_version: Some(os.to_owned()),
        device_name: Some(name.to_owned()),
        ..DeviceFacts::default()
    };

    // Without groups: the facts update still lands, and nothing is marked unless asked.
    let mut unit = store.begin_unit().await.unwrap();
    let standing = unit
        .update_device_facts_reading_standing(
            device.id,
            physics.id,
            &facts("18.1", "Lab 1"),
            false,
            T0.plus_seconds(1),
        )
        .await
        .unwrap();
    unit.commit().await.unwrap();
    assert!(standing.groups.is_empty());
    let stored = store
        .get_device(all_tenants(), device.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.os_version.as_deref(), Some("18.1"));
    assert_eq!(stored.device_name.as_deref(), Some("Lab 1"));
    assert_eq!(
        stored.serial_number, device.serial_number,
        "a fact left out stays"
    );
    assert!(claimed_dirty(&store).await.is_empty());

    let joined_smart = group_record(physics.id, GroupKind::Smart, "old iOS");
    let other_smart = group_record(physics.id, GroupKind::Smart, "supervised");
    let joined_static = group_record(physics.id, GroupKind::Static, "lab");
    let unjoined_static = group_record(physics.id, GroupKind::Static, "library");
    let music_smart = group_record(music.id, GroupKind::Smart, "music iPads");
    let mut unit = store.begin_unit().await.unwrap();
    for (g, members) in [
        (&joined_smart, vec![device.id]),
        (&other_smart, vec![]),
        (&joined_static, vec![device.id]),
        (&unjoined_static, vec![]),
        (&music_smart, vec![]),
    ] {
        unit.create_group(g, &members.into_iter().collect(), "test")
            .await
            .unwrap();
    }
    unit.commit().await.unwrap();

    let mut unit = store.begin_unit().await.unwrap();
    let standing = unit
        .update_device_facts_reading_standing(
            device.id,
            physics.id,
            &facts("18.2", "Lab 2"),
            true,
            T0.plus_seconds(2),
        )
        .await
        .unwrap();
    // The same unit reads what the statement wrote.
    let reread = unit
        .read_device_standing(device.id, physics.id, None)
        .await
        .unwrap();
    unit.commit().await.unwrap();
    let read_facts = standing.facts.clone().expect("facts with groups");
    assert_eq!(read_facts.device_id, device.id);
    assert_eq!(read_facts.tenant_id, physics.id);
    assert!(read_facts.enrolled);
    assert_eq!(
        read_facts.os_version.as_deref(),
        Some("18.2"),
        "the updated facts"
    );
    assert_eq!(read_facts.device_name.as_deref(), Some("Lab 2"));
    assert_eq!(read_facts.model, device.model);
    assert_eq!(
        standing, reread,
        "the same standing as a read after the update"
    );
    let mut seen: Vec<(GroupId, bool, bool)> = standing
        .groups
        .iter()
        .map(|g| (g.id, g.smart, g.member))
        .collect();
    seen.sort();
    let mut expected = vec![
        (joined_smart.id, true, true),
        (other_smart.id, true, false),
        (joined_static.id, false, true),
    ];
    expected.sort();
    assert_eq!(
        seen, expected,
        "its groups and its tenant's other smart groups, no one else's"
    );
    assert!(standing
        .groups
        .iter()
        .all(|g| g.tenant_id == physics.id && (g.smart == g.filter_json.is_some())));
    assert_eq!(
        claimed_dirty(&store).await,
        vec![device.id],
        "marked when asked"
    );

    // Unknown device: NotFound, nothing marked.
    let mut unit = store.begin_unit().await.unwrap();
    let unknown = unit
        .update_device_facts_reading_standing(
            DeviceId::new(),
            physics.id,
            &facts("18.3", "Ghost"),
            true,
            T0.plus_seconds(3),
        )
        .await;
    assert!(matches!(unknown, Err(StoreError::NotFound)), "{unknown:?}");
    unit.rollback().await.unwrap();
    assert!(claimed_dirty(&store).await.is_empty());
    let stored = store
        .get_device(all_tenants(), device.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.os_version.as_deref(), Some("18.2"));
}

/// The tenant's smart-groups revision (what a node's copy of its filters is checked against): raised by the unit
/// that creates, refilters or deletes one of its smart groups, and by nothing else (a static group, a rename,
/// another tenant's smart group); a facts update returns it (marking the device only when asked), and the
/// standing reads it with the groups; an unknown device is NotFound with nothing written.
async fn check_smart_group_changes_raise_the_tenants_revision(store: Store) {
    let physics = tenant(&store, "physics").await;
    let music = tenant(&store, "music").await;
    let device = enrolled_device(&store, &physics).await;
    let facts = |name: &str| DeviceFacts {
        device_name: Some(name.to_owned()),
        ..DeviceFacts::default()
    };
    let at = |s: i64| T0.plus_seconds(s);
    let revision = |store: Store, name: &'static str, mark: bool, now: UnixTime| async move {
        let mut unit = store.begin_unit().await.unwrap();
        let revision = unit
            .update_device_facts_reading_revision(device.id, &facts(name), mark, now)
            .await
            .unwrap();
        unit.commit().await.unwrap();
        revision
    };
    let group = |tenant: TenantId, kind: GroupKind| {
        group_record(tenant, kind, &format!("group {}", GroupId::new()))
    };
    let in_unit = |store: Store, change: &'static str, g: GroupRecord| async move {
        let mut unit = store.begin_unit().await.unwrap();
        match change {
            "create" => unit
                .create_group(&g, &BTreeSet::new(), "test")
                .await
                .unwrap(),
            "rename" => {
                unit.update_group(g.id, "renamed", None, None, at(5))
                    .await
                    .unwrap();
            }
            "refilter" => {
                unit.update_group(g.id, &g.name, Some("{\"any\": true}"), None, at(5))
                    .await
                    .unwrap();
            }
            _ => unit.delete_group(g.id, at(5)).await.unwrap(),
        }
        unit.commit().await.unwrap();
    };

    // A new tenant starts at 0; the update lands and marks nothing unless asked.
    assert_eq!(revision(store.clone(), "Lab 1", false, at(1)).await, 0);
    let stored = store
        .get_device(all_tenants(), device.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.device_name.as_deref(), Some("Lab 1"));
    assert!(claimed_dirty(&store).await.is_empty());
    assert_eq!(revision(store.clone(), "Lab 2", true, at(2)).await, 0);
    assert_eq!(
        claimed_dirty(&store).await,
        vec![device.id],
        "marked when asked"
    );

    // What does not change a filter of physics leaves the revision.
    let lab = group(physics.id, GroupKind::Static);
    in_unit(store.clone(), "create", lab.clone()).await;
    in_unit(store.clone(), "rename", lab.clone()).await;
    in_unit(store.clone(), "delete", lab).await;
    in_unit(store.clone(), "create", group(music.id, GroupKind::Smart)).await;
    assert_eq!(revision(store.clone(), "Lab 3", false, at(3)).await, 0);

    // Each change of a smart group of physics raises it, and the standing reads the same revision.
    let old_ios = group(physics.id, GroupKind::Smart);
    let mut seen = vec![0];
    for change in ["create", "rename", "refilter", "delete"] {
        in_unit(store.clone(), change, old_ios.clone()).await;
        seen.push(revision(store.clone(), "Lab 4", false, at(4)).await);
    }
    assert_eq!(
        seen,
        vec![0, 1, 1, 2, 3],
        "create, rename, refilter, delete"
    );
    let witness = group(physics.id, GroupKind::Smart);
    in_unit(store.clone(), "create", witness).await;
    let mut unit = store.begin_unit().await.unwrap();
    let standing = unit
        .read_device_standing(device.id, physics.id, None)
        .await
        .unwrap();
    let folded = unit
        .update_device_facts_reading_standing(device.id, physics.id, &facts("Lab 5"), false, at(6))
        .await
        .unwrap();
    unit.commit().await.unwrap();
    assert_eq!(standing.smart_groups_revision, Some(4));
    assert_eq!(folded.smart_groups_revision, Some(4));

    // Unknown device: NotFound, nothing marked.
    let mut unit = store.begin_unit().await.unwrap();
    let unknown = unit
        .update_device_facts_reading_revision(DeviceId::new(), &facts("Ghost"), true, at(7))
        .await;
    assert!(matches!(unknown, Err(StoreError::NotFound)), "{unknown:?}");
    unit.rollback().await.unwrap();
    assert!(claimed_dirty(&store).await.is_empty());
}

/// A unit that marks a device already in the reconciler's work set keeps its mark from a pass that claims while
/// the unit is open: the pass would read the device without the unit's change, and nothing would look at the
/// change again (a device that left its group kept its app and licence). A claim made before the unit marks
/// makes the mark wait and land after it. PostgreSQL only: on SQLite a unit is the only writer while it is
/// open, so no claim runs beside it.
async fn check_a_mark_outlives_a_pass_that_claims_beside_its_unit(store: Store) {
    if store.backend() == Backend::Sqlite {
        return;
    }
    let physics = tenant(&store, "physics").await;
    let device = enrolled_device(&store, &physics).await;
    claimed_dirty(&store).await;
    store
        .mark_devices_dirty(&[device.id], T0.plus_seconds(1))
        .await
        .unwrap();

    // The mark is there when the unit marks again; passes run before the unit commits and take nothing.
    let mut change = store.begin_unit().await.unwrap();
    change
        .mark_devices_dirty(&[device.id], T0.plus_seconds(2))
        .await
        .unwrap();
    assert!(claimed_dirty(&store).await.is_empty());
    let mut arrival = store.begin_unit().await.unwrap();
    assert!(arrival
        .claim_dirty_device(device.id)
        .await
        .unwrap()
        .is_none());
    arrival.rollback().await.unwrap();
    change.commit().await.unwrap();
    assert_eq!(claimed_dirty(&store).await, vec![device.id]);

    // A pass claimed first: the unit's mark waits for the pass to end and is there after it.
    store
        .mark_devices_dirty(&[device.id], T0.plus_seconds(3))
        .await
        .unwrap();
    let mut pass = store.begin_unit().await.unwrap();
    let claimed = pass.claim_dirty_devices(100).await.unwrap();
    assert_eq!(
        claimed.iter().map(|d| d.id).collect::<Vec<_>>(),
        vec![device.id]
    );
    let marking = tokio::spawn({
        let store = store.clone();
        async move {
            let mut change = store.begin_unit().await.unwrap();
            change
                .mark_devices_dirty(&[device.id], T0.plus_seconds(4))
                .await
                .unwrap();
            change.commit().await.unwrap();
        }
    });
    pass.commit().await.unwrap();
    marking.await.unwrap();
    assert_eq!(claimed_dirty(&store).await, vec![device.id]);
}

/// A unit says whether it gave Apps and Books licences work for Apple, so its caller wakes the licence pass
/// after the commit (a device planning its own apps on arrival made the work and nothing ran the pass until
/// its next interval): a licence newly wanted, one released after Apple was asked for it, a removal that takes
/// its licence back. A row that exists, one never submitted (it just goes), one already on its way out and an
/// install do not.
async fn check_a_unit_says_when_it_gave_licences_work(store: Store) {
    let physics = tenant(&store, "physics").await;
    let device = enrolled_device(&store, &physics).await;
    let channel = ChannelId::device(&device.udid);
    let wanted = |adam: &str| WantedLicence {
        device_id: device.id,
        adam_id: adam.to_owned(),
        tenant_id: physics.id,
        pricing_param: "STDQ".to_owned(),
        serial_number: "F9FXLICENCE1".to_owned(),
    };
    let work = |adam: &str| LicenceWork {
        device_id: device.id,
        adam_id: adam.to_owned(),
        tenant_id: physics.id,
        pricing_param: "STDQ".to_owned(),
        serial_number: "F9FXLICENCE1".to_owned(),
        state: "associating".to_owned(),
        event_id: None,
    };
    let planned = |from: &'static str, to: &'static str| PlannedAppCommand {
        command: command(&device, &channel, "RemoveApplication"),
        adam_id: "100003".to_owned(),
        from,
        to,
    };
    // Runs the statements on `$u`, a unit of their own, and says whether the unit gave licences work.
    macro_rules! gives_work {
        (|$u:ident| $body:expr) => {{
            let mut $u = store.begin_unit().await.unwrap();
            assert!(!$u.made_licence_work());
            $body;
            let made = $u.made_licence_work();
            $u.commit().await.unwrap();
            made
        }};
    }
    let states = || async {
        let mut unit = store.begin_unit().await.unwrap();
        let rows = unit.known_app_licences_of(&[device.id]).await.unwrap();
        unit.rollback().await.unwrap();
        let mut rows: Vec<_> = rows.into_iter().map(|r| (r.adam_id, r.state)).collect();
        rows.sort();
        rows
    };

    assert!(gives_work!(|u| u
        .want_app_licences(&[wanted("100001"), wanted("100002")], T0)
        .await
        .unwrap()));
    assert!(!gives_work!(|u| u
        .want_app_licences(&[wanted("100001")], T0)
        .await
        .unwrap()));
    // Never submitted: the row just goes, Apple has nothing to undo.
    assert!(!gives_work!(|u| u
        .release_app_licence(device.id, "100002", T0)
        .await
        .unwrap()));
    assert_eq!(
        states().await,
        vec![("100001".to_owned(), "associating".to_owned())]
    );

    // Submitted to Apple: released, it goes back through Apple, once.
    store
        .record_licence_outcomes(
            &[(
                work("100001"),
                LicenceOutcome::Submitted {
                    event_id: "e1".to_owned(),
                },
            )],
            T0,
            |_, _| None,
        )
        .await
        .unwrap();
    assert!(gives_work!(|u| u
        .release_app_licence(device.id, "100001", T0)
        .await
        .unwrap()));
    assert!(!gives_work!(|u| u
        .release_app_licence(device.id, "100001", T0)
        .await
        .unwrap()));

    // Associated, installed, then removed with the app: the removal takes the licence back.
    assert!(gives_work!(|u| u
        .want_app_licences(&[wanted("100003")], T0)
        .await
        .unwrap()));
    store
        .record_licence_outcomes(&[(work("100003"), LicenceOutcome::Done)], T0, |_, _| None)
        .await
        .unwrap();
    let install = planned("associated", "installing");
    let install_uuid = install.command.uuid.to_string();
    assert!(!gives_work!(|u| u
        .queue_planned_app_commands(&[install], T0)
        .await
        .unwrap()));
    let mut unit = store.begin_unit().await.unwrap();
    assert!(unit
        .app_command_answered(device.id, &install_uuid, Some("installed"), None, None, T0)
        .await
        .unwrap());
    unit.commit().await.unwrap();
    assert!(gives_work!(|u| u
        .queue_planned_app_commands(&[planned("installed", "disassociating")], T0)
        .await
        .unwrap()));
    // Planned from a state the row has left: nothing queued, no work.
    assert!(!gives_work!(|u| u
        .queue_planned_app_commands(&[planned("installed", "disassociating")], T0)
        .await
        .unwrap()));
    assert_eq!(
        states().await,
        vec![
            ("100001".to_owned(), "disassociating".to_owned()),
            ("100003".to_owned(), "disassociating".to_owned())
        ]
    );
}

/// A new group of `tenant` made at T0 (a smart one with the empty filter), as a check hands it to the store.
fn group_record(tenant: TenantId, kind: GroupKind, name: &str) -> GroupRecord {
    GroupRecord {
        id: GroupId::new(),
        tenant_id: tenant,
        name: name.to_owned(),
        kind,
        filter_json: (kind == GroupKind::Smart).then(|| "{}".to_owned()),
        created_at: T0,
        created_by: None,
        updated_at: T0,
        member_count: 0,
    }
}

/// The devices marked for the reconciler, claimed (so the next call sees only new marks).
async fn claimed_dirty(store: &Store) -> Vec<DeviceId> {
    let mut unit = store.begin_unit().await.unwrap();
    let claimed: Vec<DeviceId> = unit
        .claim_dirty_devices(100)
        .await
        .unwrap()
        .iter()
        .map(|d| d.id)
        .collect();
    unit.commit().await.unwrap();
    claimed
}
