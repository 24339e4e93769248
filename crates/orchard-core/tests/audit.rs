//! The audit log on SQLite and PostgreSQL: events are recorded with actor, tenant, action, target, request id
//! and outcome; the database itself refuses to change or delete them (and usage snapshots); operators and
//! helpdesk read everything, a tenant admin only its own tenant's events, viewers nothing; filters, paging,
//! and the CSV export's quoting.

// Tests may unwrap and panic: a failed expectation is exactly what should stop them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use orchard_core::access::bootstrap::LocalBootstrap;
use orchard_core::access::principal::Principal;
use orchard_core::push::PushSettings;
use orchard_core::reporting::audit::{
    audit_csv, AuditActor, AuditEvent, AuditEventView, AuditOutcome, AuditQuery,
};
use orchard_core::{CoreError, Orchard};
use orchard_store::{Page, ScopeAuthority, Store, Tenant};
use orchard_testkit::service::test_orchard;
use orchard_testkit::{with_database, Backend};
use orchard_types::{Clock, ManualClock, Role, TenantId, TokenId, UnixTime};
use serde_json::json;
use sqlx::{AnyConnection, Connection, Executor};

const START: UnixTime = UnixTime(1_772_323_200);

fn orchard(store: Store, scopes: ScopeAuthority, clock: &ManualClock) -> Arc<Orchard> {
    let clock: Arc<dyn Clock> = Arc::new(clock.clone());
    Arc::new(test_orchard(store, scopes, clock, PushSettings::default()))
}

/// A principal with a fresh actor id, as a new token's would be.
fn principal(
    bootstrap: &LocalBootstrap,
    name: &str,
    role: Role,
    tenant_id: Option<TenantId>,
) -> Principal {
    bootstrap
        .act_as(&TokenId::new().to_string(), name, role, tenant_id)
        .unwrap()
}

fn event(
    who: &Principal,
    tenant: Option<TenantId>,
    action: &str,
    target: &str,
    request_id: &str,
    status: u16,
) -> AuditEvent {
    AuditEvent {
        actor: AuditActor::of(who),
        tenant_id: tenant,
        action: action.into(),
        target: Some(target.into()),
        request_id: Some(request_id.into()),
        outcome: AuditOutcome::from_http_status(status),
        http_status: Some(status),
        details: json!({"method": "POST"}),
    }
}

fn all() -> Page {
    Page {
        limit: 1000,
        offset: 0,
    }
}

async fn scenario(store: Store, scopes: ScopeAuthority, url: String) {
    let clock = ManualClock::new(START);
    let bootstrap =
        LocalBootstrap::for_opened_database(store.clone(), scopes.clone(), Arc::new(clock.clone()));
    let orchard = orchard(store.clone(), scopes, &clock);
    let mut tenants = Vec::new();
    for code in ["physics", "chemistry"] {
        let t = Tenant {
            id: TenantId::new(),
            name: code.into(),
            code: code.into(),
            created_at: clock.now(),
        };
        store.create_tenant(&t).await.unwrap();
        tenants.push(t.id);
    }
    let (physics, chemistry) = (tenants[0], tenants[1]);
    let operator = principal(&bootstrap, "central-it", Role::Operator, None);
    let helpdesk = principal(&bootstrap, "helpdesk", Role::Helpdesk, None);
    let physics_admin = principal(&bootstrap, "physics-admin", Role::Admin, Some(physics));
    let chemistry_admin = principal(
        &bootstrap,
        "chem, \"lab\"\nadmin",
        Role::Admin,
        Some(chemistry),
    );
    let physics_viewer = principal(&bootstrap, "physics-viewer", Role::Viewer, Some(physics));

    // Five events a minute apart.
    let recorded = [
        event(&operator, None, "tenant.create", "t-1", "req-1", 201),
        event(
            &physics_admin,
            Some(physics),
            "device.command.queue",
            "dev-p",
            "req-2",
            201,
        ),
        event(
            &chemistry_admin,
            Some(chemistry),
            "device.command.queue",
            "dev-c",
            "req-3",
            201,
        ),
        // A refused attempt of the physics admin on something it may not touch: filed under its own tenant.
        event(
            &physics_admin,
            Some(physics),
            "tenant.create",
            "",
            "req-4",
            403,
        ),
        event(
            &chemistry_admin,
            Some(chemistry),
            "device.push",
            "=cmd|' /C calc'!A0",
            "req-5",
            500,
        ),
    ];
    let mut stored = Vec::new();
    for e in recorded {
        stored.push(orchard.record_audit(&orchard.system(), e).await.unwrap());
        clock.advance(60);
    }
    assert_eq!(stored[1].at, START.plus_seconds(60));
    assert_eq!(stored[1].actor, physics_admin.actor_id());
    assert_eq!(stored[1].actor_role.as_deref(), Some("admin"));
    assert_eq!(stored[1].request_id.as_deref(), Some("req-2"));
    assert_eq!(stored[3].outcome, "denied");
    assert_eq!(stored[3].status, Some(403));
    assert_eq!(stored[4].outcome, "error");

    // Operators and helpdesk see every event, newest first.
    for who in [&operator, &helpdesk] {
        let (events, total) = orchard
            .list_audit(&who.oversight().unwrap(), &AuditQuery::default(), all())
            .await
            .unwrap();
        assert_eq!(total, 5);
        let ids: Vec<&str> = events
            .iter()
            .filter_map(|e| e.request_id.as_deref())
            .collect();
        assert_eq!(ids, vec!["req-5", "req-4", "req-3", "req-2", "req-1"]);
    }
    // A tenant admin sees its tenant's events only, even when it asks for another tenant's.
    let (events, total) = orchard
        .list_audit(
            &physics_admin.oversight().unwrap(),
            &AuditQuery::default(),
            all(),
        )
        .await
        .unwrap();
    assert_eq!(total, 2);
    assert!(events.iter().all(|e| e.tenant_id == Some(physics)));
    let (events, total) = orchard
        .list_audit(
            &physics_admin.oversight().unwrap(),
            &AuditQuery {
                tenant_id: Some(chemistry),
                ..AuditQuery::default()
            },
            all(),
        )
        .await
        .unwrap();
    assert_eq!((events.len(), total), (0, 0));
    // Viewers are refused.
    assert!(matches!(
        physics_viewer.oversight(),
        Err(CoreError::Forbidden(_))
    ));

    // Filters.
    let count = |q: AuditQuery| {
        let orchard = orchard.clone();
        let operator = operator.clone();
        async move {
            orchard
                .list_audit(&operator.oversight().unwrap(), &q, all())
                .await
                .unwrap()
                .1
        }
    };
    assert_eq!(
        count(AuditQuery {
            action: Some("device.command.queue".into()),
            ..AuditQuery::default()
        })
        .await,
        2
    );
    assert_eq!(
        count(AuditQuery {
            action: Some("device.*".into()),
            ..AuditQuery::default()
        })
        .await,
        3
    );
    assert_eq!(
        count(AuditQuery {
            actor: Some(physics_admin.actor_id()),
            ..AuditQuery::default()
        })
        .await,
        2
    );
    assert_eq!(
        count(AuditQuery {
            actor: Some("central-it".into()),
            ..AuditQuery::default()
        })
        .await,
        1
    );
    assert_eq!(
        count(AuditQuery {
            tenant_id: Some(chemistry),
            ..AuditQuery::default()
        })
        .await,
        2
    );
    assert_eq!(
        count(AuditQuery {
            from: Some(START.plus_seconds(60)),
            to: Some(START.plus_seconds(180)),
            ..AuditQuery::default()
        })
        .await,
        3
    );
    assert!(matches!(
        orchard
            .list_audit(
                &operator.oversight().unwrap(),
                &AuditQuery {
                    from: Some(START.plus_seconds(10)),
                    to: Some(START),
                    ..AuditQuery::default()
                },
                all()
            )
            .await,
        Err(CoreError::Invalid(_))
    ));

    // Paging: the total stays, the pages do not overlap.
    let page = |offset| Page { limit: 2, offset };
    let (first, total) = orchard
        .list_audit(
            &operator.oversight().unwrap(),
            &AuditQuery::default(),
            page(0),
        )
        .await
        .unwrap();
    let (second, _) = orchard
        .list_audit(
            &operator.oversight().unwrap(),
            &AuditQuery::default(),
            page(2),
        )
        .await
        .unwrap();
    assert_eq!(total, 5);
    assert_eq!(first.len(), 2);
    assert_eq!(second.len(), 2);
    assert!(first.iter().all(|a| second.iter().all(|b| a.id != b.id)));

    // The JSON view keeps details as JSON.
    let view = AuditEventView::from(&stored[0]);
    assert_eq!(view.details, json!({"method": "POST"}));
    assert_eq!(view.at, "2026-03-01T00:00:00Z");

    // CSV: a name with a comma, quotes and a newline stays one field; a formula-looking target is defused.
    let csv = audit_csv(&[stored[4].clone()]);
    let expected = format!(
        "id,at,actor,actor_name,actor_role,tenant_id,action,target,outcome,status,request_id,details\r\n\
         {},2026-03-01T00:04:00Z,{},\"chem, \"\"lab\"\"\nadmin\",admin,{chemistry},device.push,\
         '=cmd|' /C calc'!A0,error,500,req-5,\"{{\"\"method\"\":\"\"POST\"\"}}\"\r\n",
        stored[4].id, chemistry_admin.actor_id()
    );
    assert_eq!(csv, expected);

    // Append-only: the database refuses UPDATE and DELETE (and TRUNCATE on PostgreSQL), whoever asks.
    orchard_store::install_sqlx_drivers();
    let mut raw = AnyConnection::connect(&url).await.unwrap();
    let refused = [
        "UPDATE audit_events SET outcome = 'ok' WHERE outcome = 'denied'".to_string(),
        format!(
            "UPDATE audit_events SET actor = 'someone-else' WHERE id = '{}'",
            stored[0].id
        ),
        "DELETE FROM audit_events".to_string(),
        format!("DELETE FROM audit_events WHERE id = '{}'", stored[1].id),
    ];
    for sql in &refused {
        let err = raw.execute(sql.as_str()).await;
        assert!(err.is_err(), "{sql} was allowed");
        let message = err.unwrap_err().to_string();
        assert!(message.contains("append-only"), "{sql}: {message}");
    }
    if url.starts_with("postgres") {
        assert!(raw.execute("TRUNCATE audit_events").await.is_err());
    }
    // Usage snapshots cannot be rewritten either. Taking one is itself audited (a sixth event, global).
    orchard
        .take_usage_snapshot(&orchard.system())
        .await
        .unwrap();
    assert!(raw
        .execute("UPDATE usage_snapshots SET enrolled_devices = 0")
        .await
        .is_err());
    raw.close().await.unwrap();
    let (after, total) = orchard
        .list_audit(
            &operator.oversight().unwrap(),
            &AuditQuery::default(),
            all(),
        )
        .await
        .unwrap();
    assert_eq!(total, 6);
    assert_eq!(after[0].action, "usage.snapshot");
    assert_eq!(after[0].actor, "system:usage-snapshot");
    assert_eq!(after[0].tenant_id, None);
    let mut after_sorted = after[1..].to_vec();
    after_sorted.sort_by(|a, b| a.id.cmp(&b.id));
    let mut before_sorted = stored.clone();
    before_sorted.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(after_sorted, before_sorted, "nothing changed");
}

async fn run_scenario(backend: Backend) {
    with_database(backend, |database| async move {
        let (store, scopes) = database.store().await.unwrap();
        scenario(store.clone(), scopes, database.url().to_owned()).await;
        store.close().await;
    })
    .await;
}

orchard_testkit::backend_tests! {
    audit_log => run_scenario;
}
