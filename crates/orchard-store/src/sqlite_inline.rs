//! SQLite run on the caller's thread: the `sqlite:` driver behind Orchard's `AnyPool`.
//!
//! sqlx's own SQLite driver gives each connection a worker thread and sends it every statement over a
//! channel, so a statement costs two thread wake-ups. Measured on the 2-core benchmark machine: 55 µs of CPU
//! per indexed one-row SELECT through it, 3 µs for the same statement stepped directly (session 17,
//! docs/benchmarks.md). A device's session runs a dozen statements, so the hand-offs were the largest part of
//! the server's CPU per device. This driver steps statements where the query is awaited. Statements here are
//! short (index seeks and small writes); SQLite's own busy handler would block the thread, so it is off and a
//! statement that meets another writer's lock waits asynchronously instead ([`BUSY_TIMEOUT`], as sqlx's 5 s).
//!
//! The driver plugs into sqlx's `Any` layer (`drivers::install_drivers`), so every store statement, pool and
//! transaction is unchanged. The `Database` type sqlx requires of a driver is a shell (`drivers`).
//! Migrations run on sqlx's own SQLite connection (`Store::connect`).

use std::borrow::Cow;
use std::collections::HashMap;
use std::ffi::{CStr, CString};
use std::fmt;
use std::os::raw::c_int;
use std::ptr::NonNull;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use futures::stream::BoxStream;
use futures::StreamExt;
use libsqlite3_sys as ffi;
use sqlx::error::{DatabaseError, ErrorKind};
use sqlx::Error;
use sqlx_core::any::driver::AnyDriver;
use sqlx_core::any::{
    Any, AnyArguments, AnyColumn, AnyConnectOptions, AnyConnectionBackend, AnyQueryResult, AnyRow,
    AnyStatement, AnyTypeInfo, AnyTypeInfoKind, AnyValue, AnyValueKind,
};
use sqlx_core::connection::{ConnectOptions, Connection, LogSettings};
use sqlx_core::database::Database;
use sqlx_core::describe::Describe;
use sqlx_core::ext::ustr::UStr;
use sqlx_core::transaction::Transaction;
use sqlx_core::Either;

/// How long a statement waits for another connection's write lock before it fails with SQLITE_BUSY.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Prepared statements kept per connection (sqlx's default capacity).
const STATEMENT_CACHE_CAPACITY: usize = 100;
/// Statements slower than this are logged at WARN, as sqlx does.
const SLOW_STATEMENT: Duration = Duration::from_secs(1);

/// The driver for `sqlite:` URLs (installed by `drivers::install_drivers`).
pub(crate) const DRIVER: AnyDriver = AnyDriver::without_migrate::<InlineSqlite>();

// ---------------------------------------------------------------------------------------------------------
// The connection.

/// A connection as sqlx's pool sees it. It holds a SQLite [`Handle`] only while it runs a statement, or a
/// transaction from its `BEGIN` to its end, and otherwise leaves the handle with the other idle handles of its
/// database ([`Handles`]), to be taken most recently used first.
///
/// Why not a handle per pooled connection: in WAL mode a handle that starts a read after another handle wrote
/// drops its whole page cache and reads its pages again. sqlx's pool hands out the least recently used idle
/// connection, so with a handle each nearly every statement ran on a cold cache: 2.4 page reads per page
/// written in a report-heavy run against 0.15 with a single connection (session 20, docs/benchmarks.md). The
/// handle used last is the one whose cache is warm, so statements take that one.
pub struct InlineConnection {
    handles: Arc<Handles>,
    /// The handle this connection runs on: during a statement, or from `BEGIN` to the transaction's end.
    held: Option<Handle>,
    depth: usize,
}

impl fmt::Debug for InlineConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InlineConnection")
            .field("holds_handle", &self.held.is_some())
            .field("depth", &self.depth)
            .field("broken", &self.broken())
            .finish_non_exhaustive()
    }
}

impl Drop for InlineConnection {
    fn drop(&mut self) {
        // A handle inside a transaction is closed with it (closing rolls back); an idle one goes back.
        self.settle();
    }
}

impl InlineConnection {
    fn connect(options: &InlineConnectOptions) -> Result<Self, Error> {
        let mut conn = InlineConnection {
            handles: Handles::of(options),
            held: None,
            depth: 0,
        };
        // Opens (or takes) a handle now, so a bad path or mode fails the connect as with one handle each.
        conn.handle()?;
        conn.settle();
        Ok(conn)
    }

    /// Whether a transaction is open without its handle: a rollback failed, and closing the handle rolled it
    /// back. Until the levels still open are ended they fail instead of running their statements outside a
    /// transaction.
    fn broken(&self) -> bool {
        self.depth > 0 && self.held.is_none()
    }

    /// The handle to run on: the one held, or the most recently used idle one.
    fn handle(&mut self) -> Result<&mut Handle, Error> {
        if self.broken() {
            return Err(Error::Protocol(
                "a rollback on this SQLite connection failed; its transaction is gone".into(),
            ));
        }
        let handle = match self.held.take() {
            Some(handle) => handle,
            None => self.handles.take()?,
        };
        Ok(self.held.insert(handle))
    }

    /// Gives the handle back unless a transaction is open on it.
    fn settle(&mut self) {
        if self.depth == 0 {
            if let Some(handle) = self.held.take() {
                self.handles.give_back(handle);
            }
        }
    }

    /// Runs `sql` on a handle and gives it back if no transaction holds it.
    async fn execute(
        &mut self,
        sql: &str,
        persistent: bool,
        args: &[AnyValueKind<'_>],
        limit: Option<usize>,
    ) -> Result<Vec<Either<AnyQueryResult, AnyRow>>, Error> {
        let outcome = self.handle()?.execute(sql, persistent, args, limit).await;
        self.settle();
        outcome
    }

    fn rollback_now(&mut self) -> Result<(), Error> {
        if self.broken() {
            // The handle and its transaction are gone already; this ends one more level of it.
            self.depth -= 1;
            return Ok(());
        }
        let sql = if self.depth <= 1 {
            "ROLLBACK".to_owned()
        } else {
            format!("ROLLBACK TO SAVEPOINT _sqlx_savepoint_{}", self.depth - 1)
        };
        let outcome = match self.held.as_mut() {
            Some(handle) => handle
                .execute_now(&sql, &[], None)
                .map_err(Failure::into_error),
            // No transaction is open (depth 0): nothing to roll back.
            None => Err(Error::Protocol("a rollback without a transaction".into())),
        };
        if let Err(error) = outcome {
            // Closing the handle rolls its transaction back; the levels still open fail until they end.
            self.held = None;
            return Err(error);
        }
        self.depth -= 1;
        self.settle();
        Ok(())
    }
}

/// The idle handles of one database file (and open mode), most recently used last. Every pooled connection to
/// the file shares them, found through [`REGISTRY`]; they are closed when the last of those connections is.
/// An in-memory database is a database per handle, so its connection has a `Handles` of its own.
struct Handles {
    options: InlineConnectOptions,
    idle: std::sync::Mutex<Vec<Handle>>,
    registered: bool,
}

type HandlesKey = (String, OpenMode);

/// The [`Handles`] of each database file some connection of this process has open.
static REGISTRY: std::sync::Mutex<Option<HashMap<HandlesKey, std::sync::Weak<Handles>>>> =
    std::sync::Mutex::new(None);

fn registry(
) -> std::sync::MutexGuard<'static, Option<HashMap<HandlesKey, std::sync::Weak<Handles>>>> {
    REGISTRY
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Handles {
    fn of(options: &InlineConnectOptions) -> Arc<Handles> {
        let new = |registered| {
            Arc::new(Handles {
                options: options.clone(),
                idle: std::sync::Mutex::new(Vec::new()),
                registered,
            })
        };
        if options.mode == OpenMode::Memory {
            return new(false);
        }
        let key = (options.filename.clone(), options.mode);
        let mut registry = registry();
        let map = registry.get_or_insert_with(HashMap::new);
        if let Some(handles) = map.get(&key).and_then(std::sync::Weak::upgrade) {
            return handles;
        }
        let handles = new(true);
        map.insert(key, Arc::downgrade(&handles));
        handles
    }

    fn idle(&self) -> std::sync::MutexGuard<'_, Vec<Handle>> {
        self.idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The most recently used idle handle, or a new one.
    fn take(&self) -> Result<Handle, Error> {
        let idle = self.idle().pop();
        match idle {
            Some(handle) => Ok(handle),
            None => Handle::open(&self.options),
        }
    }

    fn give_back(&self, handle: Handle) {
        self.idle().push(handle);
    }
}

impl Drop for Handles {
    fn drop(&mut self) {
        if !self.registered {
            return;
        }
        let key = (self.options.filename.clone(), self.options.mode);
        let mut registry = registry();
        if let Some(map) = registry.as_mut() {
            // A connection opened since this one's last went away has registered handles of its own.
            if map.get(&key).is_some_and(|weak| weak.strong_count() == 0) {
                map.remove(&key);
            }
        }
    }
}

/// One SQLite connection handle and its prepared statements, used by one connection at a time.
struct Handle {
    db: NonNull<ffi::sqlite3>,
    statements: StatementCache,
    /// Whether the per-handle settings ([`HANDLE_SETTINGS`]) have run on it: they run before its first
    /// statement, waiting for locks like any statement, not when the handle is opened.
    configured: bool,
}

/// Settings made on every handle. sqlx's SQLite driver turns foreign keys on for every connection; so does this
/// one. Orchard's databases are in WAL mode, where synchronous NORMAL survives a crash of the process (a power
/// loss may lose the last commits, not corrupt the file). They are made on every handle, because a handle is
/// opened whenever a pooled connection finds none idle: a setting made per pooled connection would miss it.
///
/// Setting `synchronous` reads the schema, which needs a read lock; opening it may meet SQLite's brief
/// exclusive locks of another process's connection opening or closing (WAL recovery, the last connection's
/// checkpoint), so these wait like any statement ([`Handle::execute`]). Run at once when the handle was
/// opened, they failed the open with "database is locked" when another node started beside it (CI: two
/// `orchard serve` started together on one SQLite file).
const HANDLE_SETTINGS: &str = "PRAGMA foreign_keys = ON; PRAGMA synchronous = NORMAL";

// SAFETY: the handle is opened with SQLITE_OPEN_NOMUTEX and used by one connection at a time (through `&mut`
// there, or inside the idle list's mutex); SQLite allows a connection to move between threads.
unsafe impl Send for Handle {}

impl Drop for Handle {
    fn drop(&mut self) {
        self.statements.clear();
        // SAFETY: every statement of the handle is finalized above; the handle is not used after this. Closing
        // rolls back a transaction still open on it.
        unsafe {
            ffi::sqlite3_close(self.db.as_ptr());
        }
    }
}

impl Handle {
    fn open(options: &InlineConnectOptions) -> Result<Self, Error> {
        let filename = CString::new(options.filename.as_str())
            .map_err(|_| Error::Configuration("a NUL byte in the SQLite file name".into()))?;
        let mut flags = ffi::SQLITE_OPEN_NOMUTEX | ffi::SQLITE_OPEN_PRIVATECACHE;
        flags |= match options.mode {
            OpenMode::ReadOnly => ffi::SQLITE_OPEN_READONLY,
            OpenMode::ReadWrite => ffi::SQLITE_OPEN_READWRITE,
            OpenMode::ReadWriteCreate => ffi::SQLITE_OPEN_READWRITE | ffi::SQLITE_OPEN_CREATE,
            OpenMode::Memory => {
                ffi::SQLITE_OPEN_READWRITE | ffi::SQLITE_OPEN_CREATE | ffi::SQLITE_OPEN_MEMORY
            }
        };
        let mut handle = std::ptr::null_mut();
        // SAFETY: `filename` is a NUL-terminated string and `handle` a valid out pointer.
        let rc = unsafe {
            ffi::sqlite3_open_v2(filename.as_ptr(), &mut handle, flags, std::ptr::null())
        };
        let Some(db) = NonNull::new(handle) else {
            return Err(Error::Io(std::io::Error::other(
                "SQLite could not allocate a connection",
            )));
        };
        let conn = Handle {
            db,
            statements: StatementCache::default(),
            configured: false,
        };
        if rc != ffi::SQLITE_OK {
            return Err(conn.error(rc));
        }
        // SAFETY: a valid, open handle.
        unsafe {
            ffi::sqlite3_extended_result_codes(db.as_ptr(), 1);
            // No blocking busy handler: a statement that meets a lock returns SQLITE_BUSY at once and
            // `Run::execute` waits for it asynchronously.
            ffi::sqlite3_busy_timeout(db.as_ptr(), 0);
        }
        Ok(conn)
    }

    fn error(&self, rc: c_int) -> Error {
        // SAFETY: a valid handle; the message is copied before any other call on it.
        let message = unsafe { CStr::from_ptr(ffi::sqlite3_errmsg(self.db.as_ptr())) }
            .to_string_lossy()
            .into_owned();
        let code = unsafe { ffi::sqlite3_extended_errcode(self.db.as_ptr()) };
        Error::Database(Box::new(SqliteError {
            code: if code == 0 { rc } else { code },
            message,
        }))
    }

    /// Runs `sql` (one or more statements) with `args`, waiting for other connections' locks asynchronously.
    async fn execute(
        &mut self,
        sql: &str,
        persistent: bool,
        args: &[AnyValueKind<'_>],
        limit: Option<usize>,
    ) -> Result<Vec<Either<AnyQueryResult, AnyRow>>, Error> {
        if !self.configured {
            let mut settings = Run::new(HANDLE_SETTINGS, false);
            self.run_waiting(&mut settings, &[], None).await?;
            self.configured = true;
        }
        let started = Instant::now();
        let mut run = Run::new(sql, persistent);
        self.run_waiting(&mut run, args, limit).await?;
        log_statement(sql, &run, started.elapsed());
        Ok(run.out)
    }

    /// Steps `run` to its end, waiting asynchronously (up to [`BUSY_TIMEOUT`]) while another connection holds
    /// a lock it needs.
    async fn run_waiting(
        &mut self,
        run: &mut Run<'_>,
        args: &[AnyValueKind<'_>],
        limit: Option<usize>,
    ) -> Result<(), Error> {
        // Tokio's clock for the deadline, so it follows the runtime's time (paused in tests).
        let deadline = tokio::time::Instant::now() + BUSY_TIMEOUT;
        let mut pause = Duration::from_millis(1);
        loop {
            match self.step_run(run, args, limit) {
                Ok(()) => return Ok(()),
                Err(Failure::Busy(error)) => {
                    if tokio::time::Instant::now() >= deadline {
                        return Err(error);
                    }
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(50));
                }
                Err(Failure::Other(error)) => return Err(error),
            }
        }
    }

    /// Runs `sql` without waiting for locks: a rollback, which gives locks up rather than waits for them.
    fn execute_now(
        &mut self,
        sql: &str,
        args: &[AnyValueKind<'_>],
        limit: Option<usize>,
    ) -> Result<Vec<Either<AnyQueryResult, AnyRow>>, Failure> {
        let mut run = Run::new(sql, false);
        self.step_run(&mut run, args, limit)?;
        Ok(run.out)
    }

    /// Steps the statements of `run` from where it stands. On SQLITE_BUSY before a statement produced anything
    /// the run stays at that statement, so calling again retries it.
    fn step_run(
        &mut self,
        run: &mut Run<'_>,
        args: &[AnyValueKind<'_>],
        limit: Option<usize>,
    ) -> Result<(), Failure> {
        while run.offset < run.sql.len() {
            if limit.is_some_and(|limit| run.rows >= limit) {
                return Ok(());
            }
            let rest = &run.sql[run.offset..];
            if rest.trim().is_empty() {
                break;
            }
            let (statement, consumed) = self.prepare(rest, run.persistent && run.offset == 0)?;
            let Some(statement) = statement else {
                // Only whitespace or a comment was left.
                run.offset += consumed;
                continue;
            };
            let outcome = self.step_statement(&statement, run, args, limit);
            statement.release(self);
            match outcome {
                Ok(()) => {
                    run.offset += consumed;
                    run.anonymous_base = run.anonymous_next;
                }
                Err(failure) => {
                    run.anonymous_next = run.anonymous_base;
                    return Err(failure);
                }
            }
        }
        Ok(())
    }

    /// Prepares the first statement of `sql`: from the cache when `cacheable` and `sql` is that one
    /// statement. Returns how many bytes of `sql` it took.
    fn prepare(
        &mut self,
        sql: &str,
        cacheable: bool,
    ) -> Result<(Option<Prepared>, usize), Failure> {
        if cacheable {
            if let Some(cached) = self.statements.take(sql) {
                return Ok((Some(cached), sql.len()));
            }
        }
        let mut raw = std::ptr::null_mut();
        let mut tail: *const std::os::raw::c_char = std::ptr::null();
        let flags = if cacheable {
            ffi::SQLITE_PREPARE_PERSISTENT
        } else {
            0
        };
        let len = c_int::try_from(sql.len())
            .map_err(|_| Failure::Other(Error::Protocol("an SQL text over 2 GiB".into())))?;
        // SAFETY: `sql` is valid for `len` bytes, `raw` and `tail` are valid out pointers.
        let rc = unsafe {
            ffi::sqlite3_prepare_v3(
                self.db.as_ptr(),
                sql.as_ptr().cast(),
                len,
                flags,
                &mut raw,
                &mut tail,
            )
        };
        if rc != ffi::SQLITE_OK {
            return Err(self.failure(rc));
        }
        let consumed = if tail.is_null() {
            sql.len()
        } else {
            // SAFETY: SQLite sets `tail` inside (or at the end of) the text it was given.
            usize::try_from(unsafe { tail.offset_from(sql.as_ptr().cast()) }).unwrap_or(sql.len())
        };
        let Some(raw) = NonNull::new(raw) else {
            return Ok((None, consumed));
        };
        let whole = sql[consumed..].trim().is_empty();
        let columns = Columns::of(raw);
        let parameters = Parameters::of(raw);
        Ok((
            Some(Prepared {
                raw,
                columns,
                parameters,
                cache_as: (cacheable && whole).then(|| sql.to_owned()),
            }),
            consumed,
        ))
    }

    fn step_statement(
        &mut self,
        statement: &Prepared,
        run: &mut Run<'_>,
        args: &[AnyValueKind<'_>],
        limit: Option<usize>,
    ) -> Result<(), Failure> {
        let raw = statement.raw.as_ptr();
        statement.bind(self, args, run)?;
        let mut produced = false;
        loop {
            if limit.is_some_and(|limit| run.rows >= limit) {
                return Ok(());
            }
            // SAFETY: a prepared statement of this connection with every parameter bound.
            let rc = unsafe { ffi::sqlite3_step(raw) };
            match rc {
                ffi::SQLITE_ROW => {
                    produced = true;
                    run.rows += 1;
                    run.out.push(Either::Right(
                        statement.columns.row(raw).map_err(Failure::Other)?,
                    ));
                }
                ffi::SQLITE_DONE => {
                    // SAFETY: as above.
                    let writes = unsafe { ffi::sqlite3_stmt_readonly(raw) } == 0;
                    let rows_affected = if writes {
                        // SAFETY: a valid handle.
                        u64::try_from(unsafe { ffi::sqlite3_changes64(self.db.as_ptr()) })
                            .unwrap_or(0)
                    } else {
                        0
                    };
                    run.affected += rows_affected;
                    run.out.push(Either::Left(AnyQueryResult {
                        rows_affected,
                        last_insert_id: None,
                    }));
                    return Ok(());
                }
                rc => {
                    return match self.failure(rc) {
                        // Rows already handed out cannot be taken back, so a lock met mid-statement fails.
                        Failure::Busy(error) if produced => Err(Failure::Other(error)),
                        failure => Err(failure),
                    };
                }
            }
        }
    }

    fn failure(&self, rc: c_int) -> Failure {
        let error = self.error(rc);
        if rc & 0xff == ffi::SQLITE_BUSY {
            // SQLITE_BUSY_SNAPSHOT means this transaction read a version another writer has since replaced:
            // waiting cannot help, and SQLite's own busy handler does not wait for it either.
            // SAFETY: a valid handle.
            let extended = unsafe { ffi::sqlite3_extended_errcode(self.db.as_ptr()) };
            if extended != ffi::SQLITE_BUSY_SNAPSHOT {
                return Failure::Busy(error);
            }
        }
        Failure::Other(error)
    }
}

/// Why a run stopped.
enum Failure {
    /// Another connection holds a lock this statement needs: try again later.
    Busy(Error),
    Other(Error),
}

impl Failure {
    fn into_error(self) -> Error {
        match self {
            Failure::Busy(e) | Failure::Other(e) => e,
        }
    }
}

/// One call's statements, and how far they got.
struct Run<'s> {
    sql: &'s str,
    persistent: bool,
    /// Where the next statement starts in `sql`.
    offset: usize,
    /// Anonymous `?` parameters are numbered across the statements of one call; the first one of the
    /// current statement, and of the next.
    anonymous_base: usize,
    anonymous_next: usize,
    rows: usize,
    affected: u64,
    out: Vec<Either<AnyQueryResult, AnyRow>>,
}

impl<'s> Run<'s> {
    fn new(sql: &'s str, persistent: bool) -> Self {
        Run {
            sql,
            persistent,
            offset: 0,
            anonymous_base: 0,
            anonymous_next: 0,
            rows: 0,
            affected: 0,
            out: Vec::new(),
        }
    }
}

/// A prepared statement and what was learned of it when it was prepared.
struct Prepared {
    raw: NonNull<ffi::sqlite3_stmt>,
    columns: Columns,
    parameters: Parameters,
    /// The SQL text it is kept under once used, if cacheable.
    cache_as: Option<String>,
}

impl Prepared {
    fn bind(
        &self,
        conn: &Handle,
        args: &[AnyValueKind<'_>],
        run: &mut Run<'_>,
    ) -> Result<(), Failure> {
        let raw = self.raw.as_ptr();
        for (position, parameter) in self.parameters.0.iter().enumerate() {
            let index = match parameter {
                Parameter::Numbered(n) => *n,
                Parameter::Anonymous => {
                    run.anonymous_next += 1;
                    run.anonymous_next - 1
                }
            };
            let Some(value) = args.get(index) else {
                return Err(Failure::Other(Error::Protocol(format!(
                    "the statement wants argument {} of {} given",
                    index + 1,
                    args.len()
                ))));
            };
            let at = c_int::try_from(position + 1).unwrap_or(c_int::MAX);
            // SAFETY: `raw` is a prepared statement and `at` one of its parameters; text and blobs are
            // copied by SQLite (SQLITE_TRANSIENT).
            let rc = unsafe {
                match value {
                    AnyValueKind::Null(_) => ffi::sqlite3_bind_null(raw, at),
                    AnyValueKind::Bool(b) => ffi::sqlite3_bind_int(raw, at, c_int::from(*b)),
                    AnyValueKind::SmallInt(i) => ffi::sqlite3_bind_int(raw, at, c_int::from(*i)),
                    AnyValueKind::Integer(i) => ffi::sqlite3_bind_int(raw, at, *i),
                    AnyValueKind::BigInt(i) => ffi::sqlite3_bind_int64(raw, at, *i),
                    AnyValueKind::Real(r) => ffi::sqlite3_bind_double(raw, at, f64::from(*r)),
                    AnyValueKind::Double(d) => ffi::sqlite3_bind_double(raw, at, *d),
                    AnyValueKind::Text(t) => ffi::sqlite3_bind_text64(
                        raw,
                        at,
                        t.as_ptr().cast(),
                        t.len() as u64,
                        ffi::SQLITE_TRANSIENT(),
                        ffi::SQLITE_UTF8 as u8,
                    ),
                    AnyValueKind::Blob(b) => ffi::sqlite3_bind_blob64(
                        raw,
                        at,
                        b.as_ptr().cast(),
                        b.len() as u64,
                        ffi::SQLITE_TRANSIENT(),
                    ),
                    other => {
                        return Err(Failure::Other(Error::Protocol(format!(
                            "SQLite cannot bind {other:?}"
                        ))))
                    }
                }
            };
            if rc != ffi::SQLITE_OK {
                return Err(conn.failure(rc));
            }
        }
        Ok(())
    }

    /// Back to the cache, reset, or finalized.
    fn release(mut self, conn: &mut Handle) {
        // SAFETY: a statement of this connection; reset keeps it for the next use.
        unsafe {
            ffi::sqlite3_reset(self.raw.as_ptr());
        }
        match self.cache_as.take() {
            Some(sql) => conn.statements.put(sql, self),
            None => finalize(self.raw),
        }
    }
}

fn finalize(raw: NonNull<ffi::sqlite3_stmt>) {
    // SAFETY: finalized once; nothing refers to it afterwards.
    unsafe {
        ffi::sqlite3_finalize(raw.as_ptr());
    }
}

/// Which argument each parameter of a statement binds: `$N` and `?N` the Nth, `?` the next one.
struct Parameters(Vec<Parameter>);

enum Parameter {
    Numbered(usize),
    Anonymous,
}

impl Parameters {
    fn of(raw: NonNull<ffi::sqlite3_stmt>) -> Self {
        // SAFETY: a prepared statement; parameter names live as long as it does and are copied here.
        let count = unsafe { ffi::sqlite3_bind_parameter_count(raw.as_ptr()) };
        let parameters = (1..=count)
            .map(|i| {
                let name = unsafe { ffi::sqlite3_bind_parameter_name(raw.as_ptr(), i) };
                if name.is_null() {
                    return Parameter::Anonymous;
                }
                let name = unsafe { CStr::from_ptr(name) }.to_string_lossy();
                match name.get(1..).and_then(|n| n.parse::<usize>().ok()) {
                    Some(n) if n > 0 => Parameter::Numbered(n - 1),
                    _ => Parameter::Anonymous,
                }
            })
            .collect();
        Parameters(parameters)
    }
}

/// The columns of a statement's rows, shared by every row it returns.
struct Columns {
    names: Arc<sqlx_core::HashMap<UStr, usize>>,
    columns: Vec<AnyColumn>,
}

impl Columns {
    fn of(raw: NonNull<ffi::sqlite3_stmt>) -> Self {
        let raw = raw.as_ptr();
        // SAFETY: a prepared statement; names and declared types are copied before it is stepped.
        let count = usize::try_from(unsafe { ffi::sqlite3_column_count(raw) }).unwrap_or(0);
        let mut names = sqlx_core::HashMap::default();
        let mut columns = Vec::with_capacity(count);
        for ordinal in 0..count {
            let i = ordinal as c_int;
            let name = unsafe { ffi::sqlite3_column_name(raw, i) };
            let name = if name.is_null() {
                ordinal.to_string()
            } else {
                unsafe { CStr::from_ptr(name) }
                    .to_string_lossy()
                    .into_owned()
            };
            let declared = unsafe { ffi::sqlite3_column_decltype(raw, i) };
            let kind = if declared.is_null() {
                AnyTypeInfoKind::Null
            } else {
                declared_kind(&unsafe { CStr::from_ptr(declared) }.to_string_lossy())
            };
            let name = UStr::from(name);
            names.insert(name.clone(), ordinal);
            columns.push(AnyColumn {
                ordinal,
                name,
                type_info: AnyTypeInfo { kind },
            });
        }
        Columns {
            names: Arc::new(names),
            columns,
        }
    }

    /// The current row of `raw`, typed by each value's storage class as sqlx's driver does.
    fn row(&self, raw: *mut ffi::sqlite3_stmt) -> Result<AnyRow, Error> {
        let mut values = Vec::with_capacity(self.columns.len());
        for column in &self.columns {
            let i = column.ordinal as c_int;
            // SAFETY: `raw` stands on a row; the text and blob pointers are read before the next call on it.
            let kind = unsafe {
                match ffi::sqlite3_column_type(raw, i) {
                    ffi::SQLITE_INTEGER => AnyValueKind::BigInt(ffi::sqlite3_column_int64(raw, i)),
                    ffi::SQLITE_FLOAT => AnyValueKind::Double(ffi::sqlite3_column_double(raw, i)),
                    ffi::SQLITE_TEXT => {
                        let bytes = column_bytes(raw, i, ffi::sqlite3_column_text(raw, i));
                        let text = String::from_utf8(bytes).map_err(|e| Error::ColumnDecode {
                            index: column.name.to_string(),
                            source: Box::new(e),
                        })?;
                        AnyValueKind::Text(Cow::Owned(text))
                    }
                    ffi::SQLITE_BLOB => {
                        let blob = ffi::sqlite3_column_blob(raw, i);
                        AnyValueKind::Blob(Cow::Owned(column_bytes(raw, i, blob.cast())))
                    }
                    _ => AnyValueKind::Null(column.type_info.kind),
                }
            };
            values.push(AnyValue { kind });
        }
        Ok(AnyRow {
            column_names: self.names.clone(),
            columns: self.columns.clone(),
            values,
        })
    }
}

/// Copies a text or blob value of the current row.
///
/// # Safety
/// `data` is what `sqlite3_column_text`/`blob` just returned for column `i` of `raw`.
unsafe fn column_bytes(raw: *mut ffi::sqlite3_stmt, i: c_int, data: *const u8) -> Vec<u8> {
    // SAFETY: per the contract, the size is read after the pointer, as SQLite asks.
    let len = usize::try_from(unsafe { ffi::sqlite3_column_bytes(raw, i) }).unwrap_or(0);
    if data.is_null() || len == 0 {
        return Vec::new();
    }
    // SAFETY: SQLite guarantees `len` readable bytes at `data` until the statement moves.
    unsafe { std::slice::from_raw_parts(data, len) }.to_vec()
}

/// The `Any` type of a declared column type, by SQLite's affinity rules (for NULL values and column info).
fn declared_kind(declared: &str) -> AnyTypeInfoKind {
    let declared = declared.to_ascii_uppercase();
    if declared.contains("INT") {
        AnyTypeInfoKind::BigInt
    } else if declared.contains("CHAR") || declared.contains("CLOB") || declared.contains("TEXT") {
        AnyTypeInfoKind::Text
    } else if declared.contains("BLOB") || declared.is_empty() {
        AnyTypeInfoKind::Blob
    } else if declared.contains("REAL") || declared.contains("FLOA") || declared.contains("DOUB") {
        AnyTypeInfoKind::Double
    } else {
        AnyTypeInfoKind::BigInt
    }
}

/// Prepared statements by SQL text, least recently used dropped first.
#[derive(Default)]
struct StatementCache {
    entries: HashMap<String, (Prepared, u64)>,
    clock: u64,
}

impl StatementCache {
    fn take(&mut self, sql: &str) -> Option<Prepared> {
        self.entries
            .remove_entry(sql)
            .map(|(sql, (mut prepared, _))| {
                prepared.cache_as = Some(sql);
                prepared
            })
    }

    fn put(&mut self, sql: String, prepared: Prepared) {
        self.clock += 1;
        if self.entries.len() >= STATEMENT_CACHE_CAPACITY {
            let oldest = self
                .entries
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(sql, _)| sql.clone());
            if let Some((evicted, _)) = oldest.and_then(|sql| self.entries.remove(&sql)) {
                finalize(evicted.raw);
            }
        }
        if let Some((replaced, _)) = self.entries.insert(sql, (prepared, self.clock)) {
            finalize(replaced.raw);
        }
    }

    fn clear(&mut self) {
        for (_, (prepared, _)) in self.entries.drain() {
            finalize(prepared.raw);
        }
    }
}

fn summary(sql: &str) -> String {
    sql.split_whitespace().take(6).collect::<Vec<_>>().join(" ")
}

/// Logged like sqlx's own statements (target `sqlx::query`), so `sqlx::query=debug` still counts them.
fn log_statement(sql: &str, run: &Run<'_>, elapsed: Duration) {
    if elapsed >= SLOW_STATEMENT {
        tracing::warn!(
            target: "sqlx::query",
            summary = %summary(sql),
            db.statement = sql,
            rows_affected = run.affected,
            rows_returned = run.rows,
            ?elapsed,
            "slow statement"
        );
    } else {
        tracing::debug!(
            target: "sqlx::query",
            summary = %summary(sql),
            db.statement = sql,
            rows_affected = run.affected,
            rows_returned = run.rows,
            ?elapsed
        );
    }
}

impl AnyConnectionBackend for InlineConnection {
    fn name(&self) -> &str {
        InlineSqlite::NAME
    }

    fn close(self: Box<Self>) -> BoxFuture<'static, Result<(), Error>> {
        drop(self);
        Box::pin(async { Ok(()) })
    }

    fn close_hard(self: Box<Self>) -> BoxFuture<'static, Result<(), Error>> {
        drop(self);
        Box::pin(async { Ok(()) })
    }

    fn ping(&mut self) -> BoxFuture<'_, Result<(), Error>> {
        let broken = self.broken();
        Box::pin(async move {
            if broken {
                Err(Error::Protocol(
                    "a rollback of this SQLite connection failed".into(),
                ))
            } else {
                Ok(())
            }
        })
    }

    fn begin(&mut self, statement: Option<Cow<'static, str>>) -> BoxFuture<'_, Result<(), Error>> {
        Box::pin(async move {
            let sql = match (self.depth, statement) {
                (0, Some(statement)) => statement.into_owned(),
                (0, None) => "BEGIN".to_owned(),
                (_, Some(_)) => return Err(Error::InvalidSavePointStatement),
                (depth, None) => format!("SAVEPOINT _sqlx_savepoint_{depth}"),
            };
            let outcome = self.handle()?.execute(&sql, false, &[], None).await;
            if outcome.is_ok() {
                self.depth += 1;
            }
            self.settle();
            outcome.map(|_| ())
        })
    }

    fn commit(&mut self) -> BoxFuture<'_, Result<(), Error>> {
        Box::pin(async move {
            let sql = match self.depth {
                0 => return Ok(()),
                1 => "COMMIT".to_owned(),
                depth => format!("RELEASE SAVEPOINT _sqlx_savepoint_{}", depth - 1),
            };
            // A failed commit leaves the transaction open on its handle, for the rollback that follows.
            self.handle()?.execute(&sql, false, &[], None).await?;
            self.depth -= 1;
            self.settle();
            Ok(())
        })
    }

    fn rollback(&mut self) -> BoxFuture<'_, Result<(), Error>> {
        Box::pin(async move {
            if self.depth > 0 {
                self.rollback_now()?;
            }
            Ok(())
        })
    }

    fn start_rollback(&mut self) {
        // A dropped transaction: roll back now (no lock to wait for). A failure closes the handle
        // (`rollback_now`), which rolls back too.
        if self.depth > 0 {
            let _ = self.rollback_now();
        }
    }

    fn get_transaction_depth(&self) -> usize {
        self.depth
    }

    fn cached_statements_size(&self) -> usize {
        self.held
            .as_ref()
            .map_or(0, |handle| handle.statements.entries.len())
    }

    fn clear_cached_statements(&mut self) -> BoxFuture<'_, Result<(), Error>> {
        if let Some(handle) = self.held.as_mut() {
            handle.statements.clear();
        }
        Box::pin(async { Ok(()) })
    }

    fn shrink_buffers(&mut self) {}

    fn flush(&mut self) -> BoxFuture<'_, Result<(), Error>> {
        Box::pin(async { Ok(()) })
    }

    fn should_flush(&self) -> bool {
        false
    }

    fn fetch_many<'q>(
        &'q mut self,
        query: &'q str,
        persistent: bool,
        arguments: Option<AnyArguments<'q>>,
    ) -> BoxStream<'q, Result<Either<AnyQueryResult, AnyRow>, Error>> {
        let persistent = persistent && arguments.is_some();
        let args = arguments.map(|a| a.values.0).unwrap_or_default();
        futures::stream::once(async move { self.execute(query, persistent, &args, None).await })
            .flat_map(|outcome| {
                let items: Vec<Result<_, Error>> = match outcome {
                    Ok(items) => items.into_iter().map(Ok).collect(),
                    Err(error) => vec![Err(error)],
                };
                futures::stream::iter(items)
            })
            .boxed()
    }

    fn fetch_optional<'q>(
        &'q mut self,
        query: &'q str,
        persistent: bool,
        arguments: Option<AnyArguments<'q>>,
    ) -> BoxFuture<'q, Result<Option<AnyRow>, Error>> {
        let persistent = persistent && arguments.is_some();
        let args = arguments.map(|a| a.values.0).unwrap_or_default();
        Box::pin(async move {
            let out = self.execute(query, persistent, &args, Some(1)).await?;
            Ok(out.into_iter().find_map(|e| e.right()))
        })
    }

    fn prepare_with<'c, 'q: 'c>(
        &'c mut self,
        _sql: &'q str,
        _parameters: &[AnyTypeInfo],
    ) -> BoxFuture<'c, Result<AnyStatement<'q>, Error>> {
        Box::pin(async { Err(unsupported("prepare")) })
    }

    fn describe<'q>(&'q mut self, _sql: &'q str) -> BoxFuture<'q, Result<Describe<Any>, Error>> {
        Box::pin(async { Err(unsupported("describe")) })
    }
}

fn unsupported(what: &str) -> Error {
    Error::AnyDriverError(format!("Orchard's SQLite driver does not {what} statements").into())
}

// ---------------------------------------------------------------------------------------------------------
// Errors.

/// An error SQLite returned, with its extended result code.
#[derive(Debug)]
pub struct SqliteError {
    code: c_int,
    message: String,
}

impl fmt::Display for SqliteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "(code: {}) {}", self.code, self.message)
    }
}

impl std::error::Error for SqliteError {}

impl DatabaseError for SqliteError {
    fn message(&self) -> &str {
        &self.message
    }

    fn code(&self) -> Option<Cow<'_, str>> {
        Some(Cow::Owned(self.code.to_string()))
    }

    fn as_error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        self
    }

    fn as_error_mut(&mut self) -> &mut (dyn std::error::Error + Send + Sync + 'static) {
        self
    }

    fn into_error(self: Box<Self>) -> Box<dyn std::error::Error + Send + Sync + 'static> {
        self
    }

    fn kind(&self) -> ErrorKind {
        match self.code {
            ffi::SQLITE_CONSTRAINT_UNIQUE | ffi::SQLITE_CONSTRAINT_PRIMARYKEY => {
                ErrorKind::UniqueViolation
            }
            ffi::SQLITE_CONSTRAINT_FOREIGNKEY => ErrorKind::ForeignKeyViolation,
            ffi::SQLITE_CONSTRAINT_NOTNULL => ErrorKind::NotNullViolation,
            ffi::SQLITE_CONSTRAINT_CHECK => ErrorKind::CheckViolation,
            _ => ErrorKind::Other,
        }
    }
}

// ---------------------------------------------------------------------------------------------------------
// Connect options: `sqlite://path`, `sqlite:path`, `sqlite::memory:`, with `?mode=ro|rw|rwc|memory`.

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum OpenMode {
    ReadOnly,
    ReadWrite,
    ReadWriteCreate,
    Memory,
}

#[derive(Debug, Clone)]
pub struct InlineConnectOptions {
    filename: String,
    mode: OpenMode,
    log_settings: LogSettings,
}

impl FromStr for InlineConnectOptions {
    type Err = Error;

    fn from_str(url: &str) -> Result<Self, Error> {
        let rest = url
            .strip_prefix("sqlite:")
            .ok_or_else(|| Error::Configuration(format!("not a sqlite: URL: {url}").into()))?;
        let rest = rest.strip_prefix("//").unwrap_or(rest);
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        let mut mode = OpenMode::ReadWrite;
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            match pair.split_once('=') {
                Some(("mode", "ro")) => mode = OpenMode::ReadOnly,
                Some(("mode", "rw")) => mode = OpenMode::ReadWrite,
                Some(("mode", "rwc")) => mode = OpenMode::ReadWriteCreate,
                Some(("mode", "memory")) => mode = OpenMode::Memory,
                // Shared cache and the rest of sqlx's options are not used by Orchard.
                _ => {
                    return Err(Error::Configuration(
                        format!("unsupported SQLite URL option {pair:?}").into(),
                    ))
                }
            }
        }
        let path = percent_decode(path)?;
        let (filename, mode) = if path == ":memory:" || mode == OpenMode::Memory {
            (":memory:".to_owned(), OpenMode::Memory)
        } else {
            (path, mode)
        };
        Ok(InlineConnectOptions {
            filename,
            mode,
            log_settings: LogSettings::default(),
        })
    }
}

fn percent_decode(path: &str) -> Result<String, Error> {
    sqlx_core::percent_encoding::percent_decode_str(path)
        .decode_utf8()
        .map(|p| p.into_owned())
        .map_err(|_| Error::Configuration("a SQLite path that is not UTF-8".into()))
}

impl<'a> TryFrom<&'a AnyConnectOptions> for InlineConnectOptions {
    type Error = Error;

    fn try_from(options: &'a AnyConnectOptions) -> Result<Self, Error> {
        let mut parsed: InlineConnectOptions = options.database_url.as_str().parse()?;
        parsed.log_settings = options.log_settings.clone();
        Ok(parsed)
    }
}

impl ConnectOptions for InlineConnectOptions {
    type Connection = InlineConnection;

    fn from_url(url: &sqlx_core::Url) -> Result<Self, Error> {
        url.as_str().parse()
    }

    fn connect(&self) -> BoxFuture<'_, Result<InlineConnection, Error>> {
        Box::pin(async move { InlineConnection::connect(self) })
    }

    fn log_statements(mut self, level: log::LevelFilter) -> Self {
        self.log_settings.log_statements(level);
        self
    }

    fn log_slow_statements(mut self, level: log::LevelFilter, duration: Duration) -> Self {
        self.log_settings.log_slow_statements(level, duration);
        self
    }
}

// ---------------------------------------------------------------------------------------------------------
// The `Database` shell sqlx requires of a driver (see `drivers`).

crate::drivers::database_shell!(
    InlineSqlite,
    InlineConnection,
    InlineTransactionManager,
    "SQLite",
    &["sqlite"]
);

impl Connection for InlineConnection {
    type Database = InlineSqlite;
    type Options = InlineConnectOptions;

    fn close(self) -> BoxFuture<'static, Result<(), Error>> {
        drop(self);
        Box::pin(async { Ok(()) })
    }

    fn close_hard(self) -> BoxFuture<'static, Result<(), Error>> {
        drop(self);
        Box::pin(async { Ok(()) })
    }

    fn ping(&mut self) -> BoxFuture<'_, Result<(), Error>> {
        AnyConnectionBackend::ping(self)
    }

    fn begin(&mut self) -> BoxFuture<'_, Result<Transaction<'_, InlineSqlite>, Error>> {
        Transaction::begin(self, None)
    }

    fn shrink_buffers(&mut self) {}

    fn flush(&mut self) -> BoxFuture<'_, Result<(), Error>> {
        Box::pin(async { Ok(()) })
    }

    fn should_flush(&self) -> bool {
        false
    }
}
