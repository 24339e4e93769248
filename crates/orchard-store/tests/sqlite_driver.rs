//! Orchard's SQLite driver (src/sqlite_inline.rs) through sqlx's `Any` layer, the way the store uses it:
//! values and NULLs come back as sqlx's own driver gave them, constraint errors keep their kind, a dropped
//! transaction rolls back, and a statement that meets another connection's write lock waits for it without
//! blocking the thread it runs on.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Connection, Row};

async fn pool(dir: &tempfile::TempDir, connections: u32) -> AnyPool {
    orchard_store::install_sqlx_drivers();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
    let pool = AnyPoolOptions::new()
        .max_connections(connections)
        .connect(&url)
        .await
        .unwrap();
    sqlx::query("PRAGMA journal_mode = WAL")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query(
        "CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, n BIGINT, data BLOB, \
         parent INTEGER REFERENCES t (id))",
    )
    .execute(&pool)
    .await
    .unwrap();
    pool
}

/// The first column of every row `sql` returns.
async fn column<T>(pool: &AnyPool, sql: &str) -> Vec<T>
where
    T: for<'r> sqlx::Decode<'r, sqlx::Any> + sqlx::Type<sqlx::Any>,
{
    sqlx::query(sql)
        .fetch_all(pool)
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

#[tokio::test]
async fn values_nulls_parameters_and_results_come_back_as_sqlx_gave_them() {
    let dir = tempfile::tempdir().unwrap();
    let pool = pool(&dir, 2).await;

    // `$n` numbered, one of them used twice; a NULL; a blob with a NUL byte; text with non-ASCII.
    let inserted = sqlx::query(
        "INSERT INTO t (name, n, data) VALUES ($1, $2, $3), ($4 || '-copy', $2, NULL), ($5, NULL, NULL)",
    )
    .bind("Musik ♪")
    .bind(42_i64)
    .bind(vec![0_u8, 1, 2, 255])
    .bind("Musik ♪")
    .bind("third")
    .execute(&pool)
    .await
    .unwrap();
    assert_eq!(inserted.rows_affected(), 3);

    let row: AnyRow = sqlx::query("SELECT id, name, n, data FROM t WHERE name = $1")
        .bind("Musik ♪")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(row.get::<String, _>("name"), "Musik ♪");
    assert_eq!(row.get::<i64, _>("n"), 42);
    assert_eq!(row.get::<Vec<u8>, _>("data"), vec![0, 1, 2, 255]);
    assert_eq!(row.get::<i64, _>(0), 1);

    let third: AnyRow =
        sqlx::query("SELECT n, data, (SELECT COUNT(*) FROM t) AS total FROM t WHERE name = $1")
            .bind("third")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(third.get::<Option<i64>, _>("n"), None);
    assert_eq!(third.get::<Option<Vec<u8>>, _>("data"), None);
    assert_eq!(third.get::<i64, _>("total"), 3);
    assert!(
        third.try_get::<i64, _>("n").is_err(),
        "a NULL is not an integer"
    );

    // Anonymous `?` placeholders bind in order.
    let names: Vec<String> = sqlx::query("SELECT name FROM t WHERE n = ? AND id >= ? ORDER BY id")
        .bind(42_i64)
        .bind(1_i64)
        .fetch_all(&pool)
        .await
        .unwrap()
        .iter()
        .map(|r| r.get("name"))
        .collect();
    assert_eq!(names, ["Musik ♪", "Musik ♪-copy"]);

    // fetch_optional takes the first row only, and nothing is no row.
    let first = sqlx::query("SELECT name FROM t ORDER BY id")
        .fetch_optional(&pool)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.get::<String, _>("name"), "Musik ♪");
    assert!(sqlx::query("SELECT name FROM t WHERE id = 99")
        .fetch_optional(&pool)
        .await
        .unwrap()
        .is_none());

    // UPDATE … RETURNING through fetch_optional still updates every matching row.
    let returned = sqlx::query("UPDATE t SET n = 7 WHERE n = $1 RETURNING id")
        .bind(42_i64)
        .fetch_optional(&pool)
        .await
        .unwrap();
    assert!(returned.is_some());
    let sevens: i64 = sqlx::query("SELECT COUNT(*) AS c FROM t WHERE n = 7")
        .fetch_one(&pool)
        .await
        .unwrap()
        .get("c");
    assert_eq!(sevens, 2);

    // Several statements in one text run in order.
    sqlx::query("UPDATE t SET n = 1 WHERE id = 1; UPDATE t SET n = 2 WHERE id = 2;")
        .execute(&pool)
        .await
        .unwrap();
    let ns: Vec<i64> = column(&pool, "SELECT n FROM t WHERE id IN (1, 2) ORDER BY id").await;
    assert_eq!(ns, [1, 2]);

    // More distinct statements than the cache keeps, each run twice: evicted ones are prepared again.
    for round in 0..2 {
        for k in 0..150_i64 {
            let sql = format!("SELECT $1 + {k} AS v");
            let v: i64 = sqlx::query(&sql)
                .bind(round)
                .fetch_one(&pool)
                .await
                .unwrap()
                .get("v");
            assert_eq!(v, round + k);
        }
    }
}

#[tokio::test]
async fn constraint_errors_keep_their_kind_and_a_syntax_error_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let pool = pool(&dir, 1).await;
    sqlx::query("INSERT INTO t (name) VALUES ('a')")
        .execute(&pool)
        .await
        .unwrap();

    let duplicate = sqlx::query("INSERT INTO t (name) VALUES ('a')")
        .execute(&pool)
        .await
        .unwrap_err();
    assert!(
        duplicate.as_database_error().unwrap().is_unique_violation(),
        "{duplicate}"
    );

    let orphan = sqlx::query("INSERT INTO t (name, parent) VALUES ('b', 99)")
        .execute(&pool)
        .await
        .unwrap_err();
    assert!(
        orphan
            .as_database_error()
            .unwrap()
            .is_foreign_key_violation(),
        "{orphan}"
    );

    let missing = sqlx::query("INSERT INTO t (n) VALUES (1)")
        .execute(&pool)
        .await
        .unwrap_err();
    assert!(missing.to_string().contains("NOT NULL"), "{missing}");

    let bad = sqlx::query("SELEC name FROM t")
        .execute(&pool)
        .await
        .unwrap_err();
    assert!(bad.to_string().contains("syntax error"), "{bad}");

    // A statement that wants more values than it got is refused, not run with NULLs.
    let short = sqlx::query("SELECT $1 AS a, $2 AS b")
        .bind(1_i64)
        .execute(&pool)
        .await
        .unwrap_err();
    assert!(short.to_string().contains("argument 2"), "{short}");

    // The one connection is still good after every error.
    let count: i64 = sqlx::query("SELECT COUNT(*) AS c FROM t")
        .fetch_one(&pool)
        .await
        .unwrap()
        .get("c");
    assert_eq!(count, 1);
}

#[tokio::test]
async fn a_dropped_transaction_rolls_back_and_a_committed_one_stays() {
    let dir = tempfile::tempdir().unwrap();
    let pool = pool(&dir, 1).await;

    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await.unwrap();
    sqlx::query("INSERT INTO t (name) VALUES ('dropped')")
        .execute(&mut *tx)
        .await
        .unwrap();
    drop(tx);

    let mut tx = pool.begin().await.unwrap();
    sqlx::query("INSERT INTO t (name) VALUES ('kept')")
        .execute(&mut *tx)
        .await
        .unwrap();
    // A nested transaction is a savepoint: rolling it back keeps the outer one's row.
    let mut inner = tx.begin().await.unwrap();
    sqlx::query("INSERT INTO t (name) VALUES ('inner')")
        .execute(&mut *inner)
        .await
        .unwrap();
    inner.rollback().await.unwrap();
    tx.commit().await.unwrap();

    let names: Vec<String> = column(&pool, "SELECT name FROM t ORDER BY id").await;
    assert_eq!(names, ["kept"]);
}

/// On a runtime with one thread, a write that meets another connection's open write transaction waits for it
/// while that transaction's task runs and commits on the same thread. SQLite's own busy handler would sleep
/// the thread, the transaction could never commit, and the write would fail with "database is locked".
#[tokio::test(flavor = "current_thread")]
async fn a_write_waits_for_another_connections_lock_without_blocking_the_thread() {
    let dir = tempfile::tempdir().unwrap();
    let pool = pool(&dir, 2).await;

    let mut holder = pool.begin_with("BEGIN IMMEDIATE").await.unwrap();
    sqlx::query("INSERT INTO t (name) VALUES ('first')")
        .execute(&mut *holder)
        .await
        .unwrap();

    let (waiting_tx, waiting) = tokio::sync::oneshot::channel();
    let writer = {
        let pool = pool.clone();
        tokio::spawn(async move {
            let mut conn = pool.acquire().await.unwrap();
            waiting_tx.send(()).unwrap();
            sqlx::query("INSERT INTO t (name) VALUES ('second')")
                .execute(&mut *conn)
                .await
        })
    };
    // On this one thread the writer ran from its signal to its first await, which is the wait for the lock:
    // it is waiting now. Commit on the same thread.
    waiting.await.unwrap();
    holder.commit().await.unwrap();
    writer
        .await
        .unwrap()
        .expect("the write went through once the lock was free");

    let count: i64 = sqlx::query("SELECT COUNT(*) AS c FROM t")
        .fetch_one(&pool)
        .await
        .unwrap()
        .get("c");
    assert_eq!(count, 2);
}

/// A lock held longer than the busy timeout fails the waiting statement with SQLite's own "database is locked",
/// and the connection stays usable.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_lock_held_past_the_timeout_fails_the_waiting_statement() {
    let dir = tempfile::tempdir().unwrap();
    let pool = pool(&dir, 2).await;
    let holder = pool.begin_with("BEGIN IMMEDIATE").await.unwrap();
    let mut waiter = pool.acquire().await.unwrap();
    let started = std::time::Instant::now();
    let refused = sqlx::query("INSERT INTO t (name) VALUES ('late')")
        .execute(&mut *waiter)
        .await
        .unwrap_err();
    assert!(
        refused.to_string().contains("database is locked"),
        "{refused}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "the timeout is waited in paused time"
    );
    holder.rollback().await.unwrap();
    sqlx::query("INSERT INTO t (name) VALUES ('now')")
        .execute(&mut *waiter)
        .await
        .unwrap();
    waiter.close().await.unwrap();
}

/// A handle opened while another connection holds the database's lock (another node starting or stopping on the
/// same file: WAL recovery, the last connection's checkpoint) waits for it before its first statement, like any
/// statement, instead of failing the connection with "database is locked". The per-handle settings used to run
/// without waiting when the handle opened, and two `orchard serve` started together on one file failed so.
#[tokio::test(flavor = "current_thread")]
async fn a_new_handle_waits_for_another_connections_lock_before_its_first_statement() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("t.db").display());
    // Made, then closed: no idle handle of this file is left for the next connection to take.
    pool(&dir, 1).await.close().await;

    // sqlx's own SQLite connection in exclusive locking mode keeps the file's lock after its first read.
    let mut holder = sqlx::SqliteConnection::connect(&url).await.unwrap();
    sqlx::query("PRAGMA locking_mode = EXCLUSIVE")
        .execute(&mut holder)
        .await
        .unwrap();
    sqlx::query("SELECT COUNT(*) FROM t")
        .fetch_one(&mut holder)
        .await
        .unwrap();

    let (waiting_tx, waiting) = tokio::sync::oneshot::channel();
    let reader = tokio::spawn(async move {
        let mut conn = sqlx::AnyConnection::connect(&url).await?;
        waiting_tx.send(()).unwrap();
        let count: i64 = sqlx::query("SELECT COUNT(*) FROM t")
            .fetch_one(&mut conn)
            .await?
            .get(0);
        let foreign_keys: i64 = sqlx::query("PRAGMA foreign_keys")
            .fetch_one(&mut conn)
            .await?
            .get(0);
        Ok::<_, sqlx::Error>((count, foreign_keys))
    });
    // On this one thread the reader ran from its signal to its first await, the wait for the lock.
    waiting.await.unwrap();
    holder.close().await.unwrap();
    let (count, foreign_keys) = reader
        .await
        .unwrap()
        .expect("the new handle waited for the lock");
    assert_eq!(count, 0);
    assert_eq!(
        foreign_keys, 1,
        "the handle's settings ran once the lock was free"
    );
}

/// `PRAGMA data_version` on one SQLite handle changes when another handle committed since its last call: the
/// same event that makes a handle drop its page cache in WAL mode.
async fn data_version(conn: &mut sqlx::AnyConnection) -> i64 {
    sqlx::query("PRAGMA data_version")
        .fetch_one(&mut *conn)
        .await
        .unwrap()
        .get(0)
}

/// Statements run one after another through different pooled connections run on one SQLite handle, the one
/// used last, so none of them finds its page cache stale from another handle's write. With a handle per pooled
/// connection, each write through one connection made the next statement on another read its pages again.
#[tokio::test]
async fn statements_in_turn_through_pooled_connections_share_the_warm_handle() {
    let dir = tempfile::tempdir().unwrap();
    let pool = pool(&dir, 4).await;
    let mut conns = Vec::new();
    for _ in 0..4 {
        conns.push(pool.acquire().await.unwrap());
    }
    let first = data_version(&mut conns[0]).await;
    for round in 0..8_usize {
        let writer = round % 4;
        sqlx::query("INSERT INTO t (name) VALUES ($1)")
            .bind(format!("row-{round}"))
            .execute(&mut *conns[writer])
            .await
            .unwrap();
        let reader = (round + 1) % 4;
        assert_eq!(
            data_version(&mut conns[reader]).await,
            first,
            "round {round}: the reading connection saw another handle's commit"
        );
    }
    let count: i64 = sqlx::query("SELECT COUNT(*) FROM t")
        .fetch_one(&mut *conns[2])
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, 8);
}

/// A transaction keeps its handle from BEGIN to its end: another pooled connection meanwhile runs on another
/// handle, sees only committed rows, and sees the transaction's rows once it commits.
#[tokio::test]
async fn a_transaction_keeps_its_handle_and_others_see_only_what_it_committed() {
    let dir = tempfile::tempdir().unwrap();
    let pool = pool(&dir, 2).await;
    let mut tx = pool.begin().await.unwrap();
    sqlx::query("INSERT INTO t (name) VALUES ('pending')")
        .execute(&mut *tx)
        .await
        .unwrap();
    let count = |pool: AnyPool| async move {
        sqlx::query("SELECT COUNT(*) FROM t")
            .fetch_one(&pool)
            .await
            .unwrap()
            .get::<i64, _>(0)
    };
    assert_eq!(
        count(pool.clone()).await,
        0,
        "an uncommitted row is not seen"
    );
    // The transaction's own statements still see its row.
    let own: i64 = sqlx::query("SELECT COUNT(*) FROM t")
        .fetch_one(&mut *tx)
        .await
        .unwrap()
        .get(0);
    assert_eq!(own, 1);
    tx.commit().await.unwrap();
    assert_eq!(count(pool.clone()).await, 1);
}

/// Many tasks on two threads share a pool smaller than their number: transactions that commit, transactions
/// dropped half-way (rolled back), and single statements, interleaved. Every committed row is there, no dropped
/// one is, and no statement fails: a handle goes back to the idle ones only outside a transaction, and one
/// left inside a dropped transaction is rolled back before anyone else runs on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interleaved_transactions_and_statements_keep_their_rows_apart() {
    let dir = tempfile::tempdir().unwrap();
    let pool = pool(&dir, 3).await;
    let mut tasks = Vec::new();
    for task in 0..8_usize {
        let pool = pool.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..25_usize {
                let name = format!("t{task}-{i}");
                if i % 3 < 2 {
                    // i % 3 == 0 commits, 1 is dropped half-way.
                    let keep = i % 3 == 0;
                    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await.unwrap();
                    sqlx::query("INSERT INTO t (name) VALUES ($1)")
                        .bind(format!("{name}-{}", if keep { "kept" } else { "dropped" }))
                        .execute(&mut *tx)
                        .await
                        .unwrap();
                    tokio::task::yield_now().await;
                    if keep {
                        tx.commit().await.unwrap();
                    } else {
                        drop(tx);
                    }
                } else {
                    sqlx::query("INSERT INTO t (name) VALUES ($1)")
                        .bind(format!("{name}-single"))
                        .execute(&pool)
                        .await
                        .unwrap();
                }
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let names: Vec<String> = column(&pool, "SELECT name FROM t").await;
    assert!(
        names.iter().all(|n| !n.ends_with("-dropped")),
        "a dropped transaction's row survived"
    );
    let kept = names.iter().filter(|n| n.ends_with("-kept")).count();
    let single = names.iter().filter(|n| n.ends_with("-single")).count();
    // Per task, i in 0..25: i % 3 == 0 → 9 kept, i % 3 == 2 → 8 single.
    assert_eq!((kept, single), (8 * 9, 8 * 8));
}

/// The files a process has open (its descriptors) that are `path`.
fn open_descriptors_of(path: &std::path::Path) -> usize {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
        .filter(|target| target == path)
        .count()
}

/// The handles of a database file are closed with the last pooled connection to it, so a closed store leaves
/// the file free (a backup restore replaces it); an in-memory database stays one per connection.
#[tokio::test]
async fn handles_close_with_the_last_connection_and_memory_databases_are_not_shared() {
    let dir = tempfile::tempdir().unwrap();
    let pool = pool(&dir, 3).await;
    let path = dir.path().join("t.db").canonicalize().unwrap();
    // Three transactions at once need three handles.
    let mut open = Vec::new();
    for _ in 0..3 {
        let mut tx = pool.begin().await.unwrap();
        sqlx::query("SELECT COUNT(*) FROM t")
            .fetch_one(&mut *tx)
            .await
            .unwrap();
        open.push(tx);
    }
    assert!(open_descriptors_of(&path) >= 3);
    drop(open);
    pool.close().await;
    assert_eq!(open_descriptors_of(&path), 0, "every handle is closed");

    let memory = AnyPoolOptions::new()
        .max_connections(2)
        .connect("sqlite::memory:")
        .await
        .unwrap();
    let mut one = memory.acquire().await.unwrap();
    let mut other = memory.acquire().await.unwrap();
    sqlx::query("CREATE TABLE mine (x INTEGER)")
        .execute(&mut *one)
        .await
        .unwrap();
    let seen: i64 = sqlx::query("SELECT COUNT(*) FROM sqlite_master WHERE name = 'mine'")
        .fetch_one(&mut *other)
        .await
        .unwrap()
        .get(0);
    assert_eq!(seen, 0, "each in-memory connection is its own database");
    let own: i64 = sqlx::query("SELECT COUNT(*) FROM sqlite_master WHERE name = 'mine'")
        .fetch_one(&mut *one)
        .await
        .unwrap()
        .get(0);
    assert_eq!(own, 1);
}

/// The CPU one indexed one-row SELECT costs through this driver and through sqlx's own SQLite driver, on a
/// multi-threaded runtime as the server runs (process CPU, user + system, from /proc/self/stat). Run with
/// `cargo test --release -p orchard-store --test sqlite_driver statement_cost -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark: prints figures"]
async fn statement_cost() {
    use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
    use std::str::FromStr;

    fn cpu_seconds() -> f64 {
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
        let fields: Vec<&str> = stat
            .rsplit(')')
            .next()
            .unwrap()
            .split_whitespace()
            .collect();
        let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
        ticks / 100.0
    }

    let dir = tempfile::tempdir().unwrap();
    let pool = pool(&dir, 4).await;
    for i in 0..1000 {
        sqlx::query("INSERT INTO t (name, n) VALUES ($1, $2)")
            .bind(format!("device-{i}"))
            .bind(i as i64)
            .execute(&pool)
            .await
            .unwrap();
    }
    let url = format!("sqlite://{}", dir.path().join("t.db").display());
    let native = SqlitePoolOptions::new()
        .max_connections(4)
        .test_before_acquire(false)
        .connect_with(SqliteConnectOptions::from_str(&url).unwrap())
        .await
        .unwrap();
    const N: usize = 20_000;
    // The same statement N times on one pooled connection of `pool`, timed.
    macro_rules! time_statements {
        ($label:expr, $round:expr, $pool:expr) => {{
            let (wall, cpu) = (std::time::Instant::now(), cpu_seconds());
            let mut conn = $pool.acquire().await.unwrap();
            for i in 0..N {
                let row = sqlx::query("SELECT id, n FROM t WHERE name = $1")
                    .bind(format!("device-{}", i % 1000))
                    .fetch_optional(&mut *conn)
                    .await
                    .unwrap();
                assert!(row.is_some());
            }
            drop(conn);
            println!(
                "{}, round {}: {:.1} µs wall, {:.1} µs CPU per statement",
                $label,
                $round,
                wall.elapsed().as_secs_f64() * 1e6 / N as f64,
                (cpu_seconds() - cpu) * 1e6 / N as f64
            );
        }};
    }
    for round in 0..2 {
        time_statements!("Orchard's driver (Any)", round, pool);
        time_statements!("sqlx's SQLite driver", round, native);
    }
}
