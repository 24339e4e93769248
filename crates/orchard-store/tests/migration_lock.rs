//! Several nodes starting at once on a fresh database (issue 16: "migrations run by exactly one node at start,
//! others wait"): every one comes up, and each migration is applied exactly once. On SQLite the same holds for
//! a server and a CLI command (`orchard token create`, say) opening one database file together.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use orchard_store::Store;
use orchard_testkit::{Backend, TestDatabase};
use sqlx::{Connection, Row};

const NODES: usize = 4;

async fn nodes_starting_together_migrate_once(backend: Backend) {
    let Some(database) = TestDatabase::create(backend).await.unwrap() else {
        return;
    };
    let url = database.url().to_owned();
    let starts: Vec<_> = (0..NODES)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { Store::connect(&url).await.map(|(store, _)| store) })
        })
        .collect();
    let mut stores = Vec::new();
    for start in starts {
        let store = start.await.unwrap();
        stores.push(store.unwrap_or_else(|e| panic!("a node failed to start: {e}")));
    }
    let migrations = std::fs::read_dir(format!(
        "{}/../../migrations/{}",
        env!("CARGO_MANIFEST_DIR"),
        match backend {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    ))
    .unwrap()
    .filter(|e| {
        e.as_ref()
            .unwrap()
            .file_name()
            .to_string_lossy()
            .ends_with(".sql")
    })
    .count();
    orchard_store::install_sqlx_drivers();
    let mut db = sqlx::AnyConnection::connect(&url).await.unwrap();
    let row = sqlx::query(
        "SELECT COUNT(*) AS applied, COUNT(DISTINCT version) AS versions, \
         SUM(CASE WHEN success THEN 1 ELSE 0 END) AS succeeded FROM _sqlx_migrations",
    )
    .fetch_one(&mut db)
    .await
    .unwrap();
    let (applied, versions, succeeded): (i64, i64, i64) = (
        row.try_get("applied").unwrap(),
        row.try_get("versions").unwrap(),
        row.try_get("succeeded").unwrap(),
    );
    assert_eq!(applied as usize, migrations, "every migration applied once");
    assert_eq!(versions, applied, "no migration applied twice");
    assert_eq!(succeeded, applied, "no migration left failed");
    // Every node works on the schema it found.
    for store in &stores {
        store.ping().await.unwrap();
        assert_eq!(store.reconcile_backlog().await.unwrap(), 0);
    }
    db.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_nodes_starting_together_migrate_once() {
    nodes_starting_together_migrate_once(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_nodes_starting_together_migrate_once() {
    nodes_starting_together_migrate_once(Backend::Postgres).await;
}
