//! Break-glass sign-in limits with a hand-moved clock, on SQLite and PostgreSQL: a guessing address waits a
//! doubling time (capped) after its free failures; the account's backoff turns away only addresses that have
//! failed, so the right password from a clean address always gets in; failures are forgotten an hour after the
//! last one (the old lock counter never was) and cleared by a success.

// Tests may unwrap and panic: a failed expectation is exactly what should stop them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::IpAddr;
use std::sync::Arc;

use orchard_core::access::bootstrap::LocalBootstrap;
use orchard_core::access::local_accounts::LocalSignIn;
use orchard_core::limits::{BACKOFF_MAX_SECONDS, FAILURE_WINDOW_SECONDS, FREE_FAILURES};
use orchard_core::push::PushSettings;
use orchard_core::{CoreError, Orchard};
use orchard_store::{ScopeAuthority, Store};
use orchard_testkit::service::test_orchard;
use orchard_testkit::{with_store, Backend};
use orchard_types::{Clock, ManualClock, UnixTime};

const PASSWORD: &str = "correct horse battery staple 42";

/// What a sign-in got: `Ok(None)` a session, `Ok(Some(wait))` throttled, `Err(())` refused like a wrong
/// password.
async fn attempt(orchard: &Orchard, source: &str, password: &str) -> Result<Option<i64>, ()> {
    let source: IpAddr = source.parse().unwrap();
    match orchard
        .local_sign_in("it-oncall", password, None, Some(source))
        .await
    {
        Ok(LocalSignIn::SignedIn(_)) => Ok(None),
        Ok(LocalSignIn::Throttled {
            retry_after_seconds,
        }) => Ok(Some(retry_after_seconds)),
        Err(CoreError::Unauthenticated) => Err(()),
        Err(other) => panic!("{other}"),
    }
}

async fn scenario(store: Store, scopes: ScopeAuthority) {
    let clock = ManualClock::new(UnixTime(1_800_000_000));
    let clock_dyn: Arc<dyn Clock> = Arc::new(clock.clone());
    LocalBootstrap::for_opened_database(store.clone(), scopes.clone(), clock_dyn.clone())
        .set_local_account("it-oncall", PASSWORD)
        .await
        .unwrap();
    let orchard = test_orchard(store.clone(), scopes, clock_dyn, PushSettings::default());
    let (attacker, operator, other) = ("198.51.100.1", "203.0.113.7", "192.0.2.50");

    // The free failures, then the attacker waits 60 s, whatever it sends.
    for _ in 0..FREE_FAILURES {
        assert_eq!(attempt(&orchard, attacker, "guess").await, Err(()));
    }
    assert_eq!(attempt(&orchard, attacker, PASSWORD).await, Ok(Some(60)));
    // After the wait it is heard once more; the next failure doubles the wait.
    clock.advance(60);
    assert_eq!(attempt(&orchard, attacker, "guess").await, Err(()));
    assert_eq!(attempt(&orchard, attacker, "guess").await, Ok(Some(120)));

    // The account is in backoff: an address that guessed twice is refused even with the right password, like
    // a wrong one.
    assert_eq!(attempt(&orchard, other, "guess").await, Err(()));
    assert_eq!(attempt(&orchard, other, "guess").await, Err(()));
    assert_eq!(attempt(&orchard, other, PASSWORD).await, Err(()));
    let account = store.local_account("it-oncall").await.unwrap().unwrap();
    assert!(account.locked_until.is_some_and(|t| t > clock.now()));

    // The operator at a clean address gets in all the same; that clears the account's failures.
    assert_eq!(attempt(&orchard, operator, PASSWORD).await, Ok(None));
    let account = store.local_account("it-oncall").await.unwrap().unwrap();
    assert_eq!((account.failed_attempts, account.locked_until), (0, None));
    // The guessing address still waits.
    assert!(matches!(
        attempt(&orchard, attacker, PASSWORD).await,
        Ok(Some(_))
    ));

    // The wait is capped: a throttle, never a lock for ever.
    for _ in 0..12 {
        clock.advance(BACKOFF_MAX_SECONDS);
        let _ = attempt(&orchard, attacker, "guess").await;
    }
    assert_eq!(
        attempt(&orchard, attacker, "guess").await,
        Ok(Some(BACKOFF_MAX_SECONDS))
    );

    // An hour after the last failure everything is forgotten: the address is heard, the account's count
    // starts again.
    clock.advance(FAILURE_WINDOW_SECONDS);
    assert_eq!(attempt(&orchard, attacker, "guess").await, Err(()));
    let account = store.local_account("it-oncall").await.unwrap().unwrap();
    assert_eq!(account.failed_attempts, 1);
    assert_eq!(account.locked_until, None);
    assert_eq!(attempt(&orchard, attacker, PASSWORD).await, Ok(None));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn break_glass_backoff_sqlite() {
    with_store(Backend::Sqlite, scenario).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn break_glass_backoff_postgres() {
    with_store(Backend::Postgres, scenario).await;
}
