//! Orchard's PostgreSQL driver (src/postgres_driver.rs) through sqlx's `Any` layer, and the store's pool on it:
//! a connection goes back to the pool without a round trip, yet a dropped transaction is rolled back and a
//! statement abandoned mid-answer is drained before the connection serves anyone else; a connection the
//! database dropped while it sat idle is replaced before use.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use orchard_store::Store;
use orchard_testkit::{Backend, TestDatabase};
use sqlx::any::AnyPoolOptions;
use sqlx::{AnyConnection, AnyPool, Connection, Executor, Row};

/// A fresh PostgreSQL database with a one-connection pool on it (`None` where PostgreSQL is not configured).
async fn one_connection_pool() -> Option<(TestDatabase, AnyPool)> {
    let database = TestDatabase::create(Backend::Postgres).await.unwrap()?;
    orchard_store::install_sqlx_drivers();
    let pool = AnyPoolOptions::new()
        .max_connections(1)
        .connect(database.url())
        .await
        .unwrap();
    Some((database, pool))
}

async fn backend_pid(conn: &mut AnyConnection) -> i32 {
    sqlx::query("SELECT pg_backend_pid() AS pid")
        .fetch_one(conn)
        .await
        .unwrap()
        .get("pid")
}

/// Ends every other session on `url`'s database (as a database restart or a proxy dropping idle connections
/// would) and waits until they are gone.
async fn terminate_other_sessions(url: &str) {
    let mut admin = AnyConnection::connect(url).await.unwrap();
    admin
        .execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = current_database() AND pid <> pg_backend_pid()",
        )
        .await
        .unwrap();
    for _ in 0..500 {
        let left: i64 = sqlx::query(
            "SELECT COUNT(*) AS n FROM pg_stat_activity \
             WHERE datname = current_database() AND pid <> pg_backend_pid()",
        )
        .fetch_one(&mut admin)
        .await
        .unwrap()
        .get("n");
        if left == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the other sessions did not end");
}

#[tokio::test]
async fn a_connection_goes_back_to_the_pool_without_a_round_trip() {
    let Some((database, pool)) = one_connection_pool().await else {
        return;
    };
    let mut conn = pool.acquire().await.unwrap();
    let pid = backend_pid(&mut conn).await;
    // The database drops the session while the connection is out: sqlx's ping on its return would fail and the
    // pool close it. Orchard's driver sends nothing when nothing is owed, so the same connection comes back.
    terminate_other_sessions(database.url()).await;
    drop(conn);
    let mut again = pool.acquire().await.unwrap();
    assert!(
        again.execute("SELECT 1").await.is_err(),
        "the connection {pid} came back unchecked, so its next statement meets the dropped session"
    );
    drop(again);
    // The failed statement left its answer owed: settling the connection on its return fails, so the pool
    // closes it, and the next one is a new session.
    let mut fresh = pool.acquire().await.unwrap();
    assert_ne!(backend_pid(&mut fresh).await, pid);
}

#[tokio::test]
async fn a_dropped_transaction_is_rolled_back_before_the_connection_is_reused() {
    let Some((_database, pool)) = one_connection_pool().await else {
        return;
    };
    pool.execute("CREATE TABLE t (n BIGINT NOT NULL)")
        .await
        .unwrap();
    let mut tx = pool.begin().await.unwrap();
    tx.execute("INSERT INTO t (n) VALUES (1)").await.unwrap();
    drop(tx);

    let mut conn = pool.acquire().await.unwrap();
    let (count, in_transaction): (i64, bool) = {
        let row = sqlx::query(
            "SELECT (SELECT COUNT(*) FROM t) AS n, txid_current_if_assigned() IS NOT NULL AS open",
        )
        .fetch_one(&mut *conn)
        .await
        .unwrap();
        (row.get("n"), row.get("open"))
    };
    assert_eq!(count, 0, "the dropped transaction's insert was rolled back");
    assert!(
        !in_transaction,
        "the next user starts outside any transaction"
    );
    drop(conn);

    let mut tx = pool.begin().await.unwrap();
    tx.execute("INSERT INTO t (n) VALUES (2)").await.unwrap();
    tx.commit().await.unwrap();
    let ns: Vec<i64> = sqlx::query("SELECT n FROM t")
        .fetch_all(&pool)
        .await
        .unwrap()
        .iter()
        .map(|r| r.get("n"))
        .collect();
    assert_eq!(ns, vec![2]);
}

#[tokio::test]
async fn a_statement_abandoned_mid_answer_is_drained_before_the_connection_is_reused() {
    let Some((_database, pool)) = one_connection_pool().await else {
        return;
    };
    let mut conn = pool.acquire().await.unwrap();
    // Abandoned while the database still works on it (a request cancelled by its client, say).
    let abandoned = tokio::time::timeout(
        Duration::from_millis(20),
        sqlx::query("SELECT 1 AS v FROM pg_sleep(0.3)").fetch_one(&mut *conn),
    )
    .await;
    assert!(abandoned.is_err(), "the statement was abandoned");
    drop(conn);

    // The next statement gets its own answer, not the abandoned one's.
    let v: i64 = sqlx::query("SELECT CAST(2 AS BIGINT) AS v")
        .fetch_one(&pool)
        .await
        .unwrap()
        .get("v");
    assert_eq!(v, 2);
}

#[tokio::test]
async fn the_store_replaces_a_connection_dropped_while_idle() {
    let Some(database) = TestDatabase::create(Backend::Postgres).await.unwrap() else {
        return;
    };
    let (store, _) = Store::connect_with_pool_size(database.url(), 1)
        .await
        .unwrap();
    store.ping().await.unwrap();
    terminate_other_sessions(database.url()).await;
    // Past the idle time after which the pool checks a connection before handing it out (1 s).
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    store
        .ping()
        .await
        .expect("the dropped connection is found idle and replaced");
}
