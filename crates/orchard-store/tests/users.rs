//! Users, memberships, role mappings, pending sign-ins and sessions, on SQLite (a temp file) and PostgreSQL (a
//! fresh database from ORCHARD_TEST_POSTGRES_URL).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use orchard_store::{
    Membership, PendingLoginRecord, RoleMappingRecord, SessionRecord, Store, StoreError, Tenant,
    UserLogin,
};
use orchard_testkit::{with_store, Backend};
use orchard_types::{Role, TenantId, UnixTime};

const T0: UnixTime = UnixTime(1_800_000_000);

async fn tenant(store: &Store, code: &str) -> TenantId {
    let t = Tenant {
        id: TenantId::new(),
        name: code.to_uppercase(),
        code: code.into(),
        created_at: T0,
    };
    store.create_tenant(&t).await.unwrap();
    t.id
}

fn login(subject: &str, email: &str) -> UserLogin {
    UserLogin {
        new_id: uuid::Uuid::new_v4().to_string(),
        issuer: "https://idp.example.edu".into(),
        subject: subject.into(),
        email: Some(email.into()),
        display_name: None,
    }
}

fn mapping(value: &str, role: Role, tenant_id: Option<TenantId>) -> RoleMappingRecord {
    RoleMappingRecord {
        id: uuid::Uuid::new_v4().to_string(),
        claim: "groups".into(),
        value: value.into(),
        role,
        tenant_id,
        created_at: T0,
        created_by: Some("token:test".into()),
    }
}

async fn check_users_and_memberships(store: &Store) {
    let physics = tenant(store, "phys").await;
    let chem = tenant(store, "chem").await;
    let admin = Membership {
        role: Role::Admin,
        tenant_id: Some(physics),
    };
    let first = store
        .record_user_login(&login("alice", "a@x.edu"), &[admin, admin], T0)
        .await
        .unwrap();
    assert_eq!(first.created_at, T0);
    assert_eq!(
        store.user_memberships(&first.id).await.unwrap(),
        vec![admin]
    );

    // The same subject later: same user, refreshed details, memberships replaced.
    let viewer = Membership {
        role: Role::Viewer,
        tenant_id: Some(chem),
    };
    let operator = Membership {
        role: Role::Operator,
        tenant_id: None,
    };
    let again = store
        .record_user_login(
            &login("alice", "alice@x.edu"),
            &[viewer, operator],
            T0.plus_seconds(60),
        )
        .await
        .unwrap();
    assert_eq!(again.id, first.id);
    assert_eq!(again.created_at, T0);
    assert_eq!(again.last_login_at, Some(T0.plus_seconds(60)));
    assert_eq!(again.email.as_deref(), Some("alice@x.edu"));
    let got = store.user_memberships(&first.id).await.unwrap();
    assert_eq!(got.len(), 2);
    assert!(got.contains(&viewer) && got.contains(&operator));
    assert_eq!(
        store
            .user_by_subject("https://idp.example.edu", "alice")
            .await
            .unwrap()
            .map(|u| u.id),
        Some(first.id.clone())
    );
    assert!(store
        .user_by_subject("https://other.example.edu", "alice")
        .await
        .unwrap()
        .is_none());

    // A membership on a tenant that does not exist is refused, and the earlier ones stay.
    let ghost = Membership {
        role: Role::Admin,
        tenant_id: Some(TenantId::new()),
    };
    assert!(matches!(
        store
            .record_user_login(&login("alice", "alice@x.edu"), &[ghost], T0)
            .await,
        Err(StoreError::NotFound)
    ));
    assert_eq!(store.user_memberships(&first.id).await.unwrap().len(), 2);

    assert_eq!(
        store
            .clear_memberships_of_subject("https://idp.example.edu", "alice")
            .await
            .unwrap(),
        2
    );
    assert!(store.user_memberships(&first.id).await.unwrap().is_empty());
    assert_eq!(
        store
            .clear_memberships_of_subject("https://idp.example.edu", "nobody")
            .await
            .unwrap(),
        0
    );

    store.set_user_disabled(&first.id, Some(T0)).await.unwrap();
    assert_eq!(
        store.user(&first.id).await.unwrap().unwrap().disabled_at,
        Some(T0)
    );
    assert!(matches!(
        store.set_user_disabled("no-such-user", None).await,
        Err(StoreError::NotFound)
    ));
}

async fn check_role_mappings(store: &Store) {
    let physics = tenant(store, "math").await;
    let m = mapping("physics-it-admins", Role::Admin, Some(physics));
    store.create_role_mapping(&m).await.unwrap();
    let op = mapping("central-it", Role::Operator, None);
    store.create_role_mapping(&op).await.unwrap();
    // The same rule again (also with no tenant, where NULLs would not compare equal) is a conflict.
    let mut dup = m.clone();
    dup.id = uuid::Uuid::new_v4().to_string();
    assert!(matches!(
        store.create_role_mapping(&dup).await,
        Err(StoreError::Conflict(_))
    ));
    let mut dup = op.clone();
    dup.id = uuid::Uuid::new_v4().to_string();
    assert!(matches!(
        store.create_role_mapping(&dup).await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        store
            .create_role_mapping(&mapping("x", Role::Viewer, Some(TenantId::new())))
            .await,
        Err(StoreError::NotFound)
    ));
    // The schema itself refuses a tenant role without a tenant.
    assert!(store
        .create_role_mapping(&mapping("y", Role::Admin, None))
        .await
        .is_err());
    let listed = store.list_role_mappings().await.unwrap();
    assert_eq!(listed.len(), 2);
    assert!(listed.contains(&m) && listed.contains(&op));
    store.delete_role_mapping(&m.id).await.unwrap();
    assert!(matches!(
        store.delete_role_mapping(&m.id).await,
        Err(StoreError::NotFound)
    ));
    assert_eq!(store.list_role_mappings().await.unwrap(), vec![op]);
}

async fn check_pending_logins_and_sessions(store: &Store) {
    let pending = |state: &str, expires: i64| PendingLoginRecord {
        state_hash: state.into(),
        pkce_verifier_sealed: vec![1, 2, 3, 0, 255],
        nonce: format!("nonce-{state}"),
        created_at: T0,
        expires_at: T0.plus_seconds(expires),
    };
    store
        .insert_pending_login(&pending("s1", 600), T0)
        .await
        .unwrap();
    store
        .insert_pending_login(&pending("s2", 10), T0)
        .await
        .unwrap();
    // Taken once only.
    assert_eq!(
        store.take_pending_login("s1", T0).await.unwrap(),
        Some(pending("s1", 600))
    );
    assert_eq!(store.take_pending_login("s1", T0).await.unwrap(), None);
    // Expired: not handed out (and gone).
    assert_eq!(
        store
            .take_pending_login("s2", T0.plus_seconds(10))
            .await
            .unwrap(),
        None
    );
    assert_eq!(store.take_pending_login("s2", T0).await.unwrap(), None);

    let user = store
        .record_user_login(&login("bob", "b@x.edu"), &[], T0)
        .await
        .unwrap();
    let session = SessionRecord {
        id_hash: "h1".into(),
        user_id: user.id.clone(),
        csrf_hash: "c1".into(),
        created_at: T0,
        expires_at: T0.plus_seconds(3600),
        revoked_at: None,
    };
    store.create_session(&session, T0).await.unwrap();
    assert_eq!(store.session("h1").await.unwrap(), Some(session.clone()));
    assert_eq!(store.session("h2").await.unwrap(), None);
    store
        .revoke_session("h1", T0.plus_seconds(5))
        .await
        .unwrap();
    store
        .revoke_session("h1", T0.plus_seconds(9))
        .await
        .unwrap();
    assert_eq!(
        store.session("h1").await.unwrap().unwrap().revoked_at,
        Some(T0.plus_seconds(5))
    );
    assert!(matches!(
        store.revoke_session("h2", T0).await,
        Err(StoreError::NotFound)
    ));
    // A session for a user that does not exist is refused.
    let mut orphan = session.clone();
    orphan.id_hash = "h3".into();
    orphan.user_id = "nobody".into();
    assert!(matches!(
        store.create_session(&orphan, T0).await,
        Err(StoreError::NotFound)
    ));
    // Creating a session later sweeps the expired ones.
    let mut later = session.clone();
    later.id_hash = "h4".into();
    store
        .create_session(&later, T0.plus_seconds(3600))
        .await
        .unwrap();
    assert_eq!(store.session("h1").await.unwrap(), None);
}

async fn check_all(store: Store) {
    check_users_and_memberships(&store).await;
    check_role_mappings(&store).await;
    check_pending_logins_and_sessions(&store).await;
    store.close().await;
}

async fn users(backend: Backend) {
    with_store(backend, |store, _scopes| check_all(store)).await;
}

orchard_testkit::backend_tests! {
    users => users;
}
