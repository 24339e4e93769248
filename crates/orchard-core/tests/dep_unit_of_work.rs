//! DEP use cases as units of work, proved by fault injection on SQLite and PostgreSQL against the local DEP
//! server: a sync (the last fetch page with its removals and cursor; the sync's end with the token's
//! assignment rule), a template change (settings, the new definition, the serials marked for it, the rule) and
//! an assignment of serials to a template. The store fails the 1st, 2nd, 3rd … statement of the use case's
//! units in turn.
//!
//! Each of these calls Apple between two units: what must reach Apple is written first as `pending`
//! assignments (the outbox), Apple's answers are recorded in a unit of their own. So after a fault each unit
//! is all or nothing — the rows read either exactly as before the use case, or as after its committed units
//! with the rest still owed — and the retry (the next sync, saving the template again, assigning again)
//! completes the use case to exactly the state a run without a fault reaches.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use orchard_core::access::bootstrap::LocalBootstrap;
use orchard_core::access::capability::OperatorCtx;
use orchard_core::dep::templates::{TemplateProfile, TemplateSpec};
use orchard_core::dep::DepSettings;
use orchard_core::push::PushSettings;
use orchard_core::{CoreError, Orchard};
use orchard_dep::fake::{encrypt_server_token, FakeDepConfig, FakeDepServer, TokenCipher};
use orchard_dep::RetryPolicy;
use orchard_store::{
    DepAssignment, DepListingFilter, DepTemplateRecord, ScopeAuthority, Store, Tenant,
};
use orchard_testkit::service::{test_node, test_pki};
use orchard_testkit::{with_store, Backend};
use orchard_types::{Clock, SerialNumber, SystemClock, TenantId, UnixTime};

/// Walks stop here at the latest: none of these use cases has anywhere near this many statements.
const MAX_STATEMENTS: u64 = 40;
/// Serials the fake DEP server lists (one page: the last fetch page is the whole fetch).
const DEVICES: usize = 12;

struct Harness {
    orchard: Orchard,
    store: Store,
    scopes: ScopeAuthority,
    fake: FakeDepServer,
    operator: OperatorCtx,
    tenant_id: TenantId,
}

/// What one token's DEP use cases may change, read from outside any unit.
#[derive(Debug, Clone, PartialEq)]
struct Rows {
    cursor: Option<String>,
    /// Serial → (released, assignment, the profile uuid Apple last confirmed).
    devices: BTreeMap<String, (bool, DepAssignment, Option<String>)>,
    templates: Vec<DepTemplateRecord>,
}

async fn harness(store: Store, scopes: ScopeAuthority) -> Harness {
    orchard_testkit::install_crypto_provider();
    let fake = FakeDepServer::start(FakeDepConfig::default())
        .await
        .unwrap();
    fake.add_devices(&FakeDepServer::make_serials("UOW", 0, DEVICES));
    let mut dep = fake.client_config();
    dep.retry = RetryPolicy {
        initial_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(200),
        ..RetryPolicy::default()
    };
    let pki = Arc::new(test_pki(SystemClock.now()));
    let orchard = test_node(
        store.clone(),
        scopes.clone(),
        pki,
        Arc::new(SystemClock),
        PushSettings::default(),
    )
    .with_dep_settings(DepSettings {
        config: dep,
        ..DepSettings::default()
    });
    let operator =
        LocalBootstrap::for_opened_database(store.clone(), scopes.clone(), Arc::new(SystemClock))
            .operator()
            .unwrap();
    let tenant = Tenant {
        id: TenantId::new(),
        name: "Physics".into(),
        code: "physics".into(),
        created_at: UnixTime(1_900_000_000),
    };
    store.create_tenant(&tenant).await.unwrap();
    Harness {
        orchard,
        store,
        scopes,
        fake,
        operator,
        tenant_id: tenant.id,
    }
}

fn spec(h: &Harness, name: &str, auto_assign: bool) -> TemplateSpec {
    TemplateSpec {
        name: name.into(),
        tenant_id: h.tenant_id,
        profile: TemplateProfile {
            profile_name: Some(format!("{name} profile")),
            ..TemplateProfile::default()
        },
        setup: Default::default(),
        minimum_os_version: None,
        auto_assign,
    }
}

impl Harness {
    /// A new token (its own rows, no cursor yet) with its server token uploaded.
    async fn token(&self, n: u64) -> String {
        let created = self
            .orchard
            .create_dep_token(&self.operator, &format!("ASM {n}"))
            .await
            .unwrap();
        let p7m = encrypt_server_token(
            &self.fake.server_token(),
            created.certificate_pem.as_bytes(),
            TokenCipher::Aes256Cbc,
        )
        .unwrap();
        self.orchard
            .upload_dep_token(&self.operator, &created.id, &p7m)
            .await
            .unwrap();
        created.id
    }

    async fn sync(&self, token: &str) -> Result<(), CoreError> {
        self.orchard
            .run_dep_sync(&self.orchard.system(), token)
            .await
            .map(|_| ())
    }

    async fn rows(&self, token: &str) -> Rows {
        let scope = self.scopes.all_tenants();
        let cursor = self.store.dep_token(token).await.unwrap().unwrap().cursor;
        let filter = DepListingFilter {
            token_id: Some(token),
            template_id: None,
            only_active: false,
        };
        let devices = self
            .store
            .list_dep_device_listings(scope, filter, 1_000, 0)
            .await
            .unwrap()
            .into_iter()
            .map(|l| {
                (
                    l.device.device.serial_number.to_string(),
                    (
                        l.device.deleted,
                        l.assignment,
                        l.device.device.profile_uuid.map(|u| u.as_str().to_owned()),
                    ),
                )
            })
            .collect();
        let templates = self
            .store
            .list_dep_templates(scope, Some(token))
            .await
            .unwrap();
        Rows {
            cursor,
            devices,
            templates,
        }
    }

    async fn with_fault<T, Fut>(&self, n: u64, use_case: Fut) -> (Result<T, CoreError>, bool)
    where
        Fut: Future<Output = Result<T, CoreError>>,
    {
        self.store.faults().fail_nth_statement(n);
        let result = use_case.await;
        let fired = self.store.faults().fired().is_some();
        self.store.faults().disarm();
        (result, fired)
    }
}

fn template<'a>(rows: &'a Rows, name: &str) -> &'a DepTemplateRecord {
    rows.templates
        .iter()
        .find(|t| t.name == name)
        .unwrap_or_else(|| panic!("no template {name}: {:?}", rows.templates))
}

/// Every serial of `template` is assigned to it in Orchard and at Apple, under its current profile.
fn assert_all_assigned(h: &Harness, rows: &Rows, name: &str, serials: usize, context: &str) {
    let t = template(rows, name);
    let uuid = t.profile_uuid.clone().expect("template defined");
    assert_eq!(t.define_error, None, "{context}");
    let mine: Vec<_> = rows
        .devices
        .iter()
        .filter(|(_, (deleted, a, _))| !deleted && a.template_id.as_deref() == Some(t.id.as_str()))
        .collect();
    assert_eq!(mine.len(), serials, "{context}: {rows:?}");
    for (serial, (deleted, assignment, confirmed)) in mine {
        assert!(!deleted, "{context}");
        assert_eq!(
            assignment.status.as_deref(),
            Some("assigned"),
            "{context}: {serial}"
        );
        assert_eq!(
            assignment.tenant_id,
            Some(h.tenant_id),
            "{context}: {serial}"
        );
        assert_eq!(
            confirmed.as_deref(),
            Some(uuid.as_str()),
            "{context}: {serial}"
        );
        let at_apple = h
            .fake
            .assigned_profile(&SerialNumber::parse(serial).unwrap())
            .map(|u| u.as_str().to_owned());
        assert_eq!(
            at_apple.as_deref(),
            Some(uuid.as_str()),
            "{context}: {serial} at apple"
        );
    }
}

/// A token's rows after a faulted full fetch that releases `gone` and first lists `fresh`: the page (the new
/// serial), the release and the cursor all or nothing; the rule's assignment only with its page.
fn assert_sync_units_whole(before: &Rows, after: &Rows, gone: &str, fresh: &str, context: &str) {
    let page_committed = after.cursor != before.cursor;
    assert_eq!(
        after.devices[gone].0, page_committed,
        "{context}: release and cursor apart"
    );
    assert_eq!(
        after.devices.contains_key(fresh),
        page_committed,
        "{context}: page and cursor apart"
    );
    if !page_committed {
        assert_eq!(
            after.devices, before.devices,
            "{context}: devices without their cursor"
        );
    }
}

struct Walk {
    failed: u64,
}

/// A full fetch (the cursor cleared) that no longer lists one serial and lists a new one, on a token whose
/// auto-assign template takes new serials: the page, the release and the cursor in one unit, the sync's end and
/// the rule in one, Apple's answers in one. The next sync completes a faulted one.
async fn walk_sync(h: Harness) -> Walk {
    let gone = FakeDepServer::make_serials("UOW", DEVICES - 1, 1).remove(0);
    for n in 1..=MAX_STATEMENTS {
        let token = h.token(n).await;
        h.orchard
            .create_dep_template(&h.operator, &token, spec(&h, "Rule", true))
            .await
            .unwrap();
        h.sync(&token).await.unwrap();
        let fresh = FakeDepServer::make_serials("NEW", n as usize, 1).remove(0);
        h.fake.add_devices(std::slice::from_ref(&fresh));
        assert!(h.fake.delete_device(&gone));
        h.store
            .save_dep_cursor(&token, None, SystemClock.now())
            .await
            .unwrap();
        let before = h.rows(&token).await;
        assert!(!before.devices.contains_key(fresh.as_str()));
        let (result, fired) = h.with_fault(n, h.sync(&token)).await;
        let context = format!("fault at statement {n} of a dep sync");
        let done = |rows: &Rows, context: &str| {
            let active = rows.devices.values().filter(|(d, _, _)| !d).count();
            assert_eq!(
                active,
                before.devices.len(),
                "{context}: one released, one new"
            );
            assert_all_assigned(&h, rows, "Rule", active, context);
            assert!(
                rows.devices[gone.as_str()].0,
                "{context}: {gone} not released"
            );
            assert!(rows.cursor.is_some(), "{context}");
        };
        if !fired {
            result.unwrap();
            done(&h.rows(&token).await, &context);
            return Walk { failed: n - 1 };
        }
        assert!(result.is_err(), "{context}: the sync reported success");
        let after = h.rows(&token).await;
        assert_sync_units_whole(&before, &after, gone.as_str(), fresh.as_str(), &context);
        h.sync(&token).await.unwrap();
        done(&h.rows(&token).await, &format!("{context}, retried"));
        // The next iteration's token sees the serial again.
        h.fake.add_devices(std::slice::from_ref(&gone));
    }
    panic!("the dep sync never ran without a fault");
}

/// Saving a template whose serials are assigned: settings, new definition, serials marked for the new profile
/// in one unit; Apple's answers in another. Saving again completes a faulted save.
async fn walk_template_change(h: Harness) -> Walk {
    let assigned = 5;
    for n in 1..=MAX_STATEMENTS {
        let token = h.token(n).await;
        let created = h
            .orchard
            .create_dep_template(&h.operator, &token, spec(&h, "Lab", false))
            .await
            .unwrap();
        h.sync(&token).await.unwrap();
        let serials: Vec<String> = FakeDepServer::make_serials("UOW", 0, assigned)
            .iter()
            .map(|s| s.to_string())
            .collect();
        h.orchard
            .assign_dep_devices(&h.operator, &token, &serials, Some(&created.id))
            .await
            .unwrap();
        let before = h.rows(&token).await;
        assert_all_assigned(&h, &before, "Lab", assigned, "before");
        let old_uuid = template(&before, "Lab").profile_uuid.clone();
        let (result, fired) = h
            .with_fault(
                n,
                h.orchard
                    .update_dep_template(&h.operator, &created.id, spec(&h, "Lab 2", false)),
            )
            .await;
        let context = format!("fault at statement {n} of a template change");
        if !fired {
            result.unwrap();
            assert_all_assigned(&h, &h.rows(&token).await, "Lab 2", assigned, &context);
            return Walk { failed: n - 1 };
        }
        assert!(result.is_err(), "{context}: the change reported success");
        let after = h.rows(&token).await;
        if after != before {
            // The template's unit committed: new settings with the new profile, every serial owed to Apple
            // under it (pending) or already confirmed — never the new settings with the old profile.
            let t = template(&after, "Lab 2");
            assert_ne!(t.profile_uuid, old_uuid, "{context}");
            for (serial, (_, a, _)) in after
                .devices
                .iter()
                .filter(|(_, (_, a, _))| a.template_id.as_deref() == Some(t.id.as_str()))
            {
                assert!(
                    matches!(a.status.as_deref(), Some("pending") | Some("assigned")),
                    "{context}: {serial} {a:?}"
                );
            }
        }
        h.orchard
            .update_dep_template(&h.operator, &created.id, spec(&h, "Lab 2", false))
            .await
            .unwrap();
        assert_all_assigned(
            &h,
            &h.rows(&token).await,
            "Lab 2",
            assigned,
            &format!("{context}, saved again"),
        );
    }
    panic!("the template change never ran without a fault");
}

/// Assigning serials to a template: the serials marked in one unit, Apple's answers in another. Assigning
/// again completes a faulted assignment.
async fn walk_assignment(h: Harness) -> Walk {
    let wanted = 7;
    for n in 1..=MAX_STATEMENTS {
        let token = h.token(n).await;
        let created = h
            .orchard
            .create_dep_template(&h.operator, &token, spec(&h, "Cart", false))
            .await
            .unwrap();
        h.sync(&token).await.unwrap();
        let serials: Vec<String> = FakeDepServer::make_serials("UOW", 0, wanted)
            .iter()
            .map(|s| s.to_string())
            .collect();
        let before = h.rows(&token).await;
        let assign = || {
            h.orchard
                .assign_dep_devices(&h.operator, &token, &serials, Some(&created.id))
        };
        let (result, fired) = h.with_fault(n, assign()).await;
        let context = format!("fault at statement {n} of an assignment");
        if !fired {
            result.unwrap();
            assert_all_assigned(&h, &h.rows(&token).await, "Cart", wanted, &context);
            return Walk { failed: n - 1 };
        }
        assert!(
            result.is_err(),
            "{context}: the assignment reported success"
        );
        let after = h.rows(&token).await;
        let marked = after
            .devices
            .values()
            .filter(|(_, a, _)| a.template_id.as_deref() == Some(created.id.as_str()))
            .count();
        assert!(
            after == before || marked == wanted,
            "{context}: {marked} of {wanted} serials marked"
        );
        assign().await.unwrap();
        assert_all_assigned(
            &h,
            &h.rows(&token).await,
            "Cart",
            wanted,
            &format!("{context}, assigned again"),
        );
    }
    panic!("the assignment never ran without a fault");
}

async fn walk_on<Fut>(backend: Backend, walk: fn(Harness) -> Fut, min_statements: u64)
where
    Fut: Future<Output = Walk> + Send + 'static,
{
    with_store(backend, |store, scopes| async move {
        let walked = walk(harness(store, scopes).await).await;
        assert!(
            walked.failed >= min_statements,
            "only {} statements were failed",
            walked.failed
        );
    })
    .await;
}

// BEGIN, devices, active serials, release, cursor, COMMIT; BEGIN, sync end, rule, COMMIT; BEGIN, the new
// serial's answer, COMMIT.
const SYNC_STATEMENTS: u64 = 6 + 4 + 3;
// BEGIN, settings, definition, serials marked, COMMIT; BEGIN, answers (one per serial), COMMIT.
const TEMPLATE_CHANGE_STATEMENTS: u64 = 5 + 2 + 5;
// BEGIN, known serials, marking, COMMIT; BEGIN, answers (one per serial), COMMIT.
const ASSIGNMENT_STATEMENTS: u64 = 4 + 2 + 7;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dep_sync_commits_by_units_on_sqlite() {
    walk_on(Backend::Sqlite, walk_sync, SYNC_STATEMENTS).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dep_sync_commits_by_units_on_postgres() {
    walk_on(Backend::Postgres, walk_sync, SYNC_STATEMENTS).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn template_change_commits_once_on_sqlite() {
    walk_on(
        Backend::Sqlite,
        walk_template_change,
        TEMPLATE_CHANGE_STATEMENTS,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn template_change_commits_once_on_postgres() {
    walk_on(
        Backend::Postgres,
        walk_template_change,
        TEMPLATE_CHANGE_STATEMENTS,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn assignment_commits_once_on_sqlite() {
    walk_on(Backend::Sqlite, walk_assignment, ASSIGNMENT_STATEMENTS).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn assignment_commits_once_on_postgres() {
    walk_on(Backend::Postgres, walk_assignment, ASSIGNMENT_STATEMENTS).await;
}
