//! The PostgreSQL backend (issue 15): a role's store in a database that several instances
//! of the role share. tokio-postgres over a deadpool pool, driven by a small runtime of the
//! store's own, behind the same blocking interface the SQLite stores have: a caller runs a
//! closure of statements ([`Tx`]) in a transaction and gets its result once PostgreSQL
//! committed it (synchronous commit: on disk before the answer).
//!
//! Concurrency: transactions run at PostgreSQL's default isolation, READ COMMITTED, and the
//! roles' statements are written for it (single-statement read-modify-writes, conditional
//! updates that re-check what they claim); a serialization failure or a deadlock, which a
//! SERIALIZABLE backend such as CockroachDB reports where PostgreSQL waits, runs the whole
//! transaction again, a few times.
//!
//! Schema: the database is stamped with its role, like an SQLite store (`tresor_store`),
//! and its migrations are versioned in `tresor_migrations`: at every start the missing ones
//! are applied, each in the transaction that records it, under a lock on the stamp so that
//! instances starting together apply each once. A database that holds other tables, another
//! role's store, or a newer schema is refused.

use std::future::Future;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{IsNull, ToSql, Type, to_sql_checked};
use tokio_postgres::{Config, NoTls};

use crate::sql::{Dialect, Row, SqlError, SqlErrorKind, Tx, Value, to_postgres};
use crate::{OpenError, STAMP_TABLE, StoreCheck};

/// Connections one instance holds at most.
pub const DEFAULT_POOL_SIZE: usize = 16;
/// How often a transaction that conflicted is run again before its error is returned.
const CONFLICT_RETRIES: u32 = 8;
/// The wait before the first retry; each next one waits one step longer.
const CONFLICT_STEP: Duration = Duration::from_millis(5);
/// How long a caller waits for a pooled connection, or for a new one.
const POOL_WAIT: Duration = Duration::from_secs(10);

/// A role's schema on PostgreSQL: its migrations, oldest first. Version `n` is the schema
/// after `migrations[n - 1]`; a migration, once released, is never edited.
#[derive(Debug, Clone, Copy)]
pub struct PgSchema {
    pub role: &'static str,
    pub migrations: &'static [&'static str],
}

impl PgSchema {
    pub fn version(&self) -> i64 {
        self.migrations.len() as i64
    }
}

/// A store's database: the pool and the runtime that drives its connections.
pub struct Postgres {
    pool: Pool,
    runtime: Option<tokio::runtime::Runtime>,
    handle: tokio::runtime::Handle,
    database: Arc<str>,
}

impl std::fmt::Debug for Postgres {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Postgres").field("database", &self.database).finish_non_exhaustive()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // The store may be dropped on an async task, where a blocking shutdown panics.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Whether `database` names a PostgreSQL database (`postgres://…` or `postgresql://…`).
pub fn is_postgres_url(database: &str) -> bool {
    database.starts_with("postgres://") || database.starts_with("postgresql://")
}

impl Postgres {
    /// Connects to `url`, checks that the database is `schema`'s store (or empty), and
    /// applies the migrations it lacks; `init` runs in the transaction that creates the
    /// store, as with [`crate::open_sqlite_with`].
    pub fn open(
        url: &str,
        schema: &PgSchema,
        init: impl Fn(&mut dyn Tx) -> Result<(), SqlError>,
    ) -> Result<Self, OpenError> {
        Self::open_sized(url, schema, DEFAULT_POOL_SIZE, init)
    }

    /// [`Postgres::open`] with at most `pool_size` connections.
    pub fn open_sized(
        url: &str,
        schema: &PgSchema,
        pool_size: usize,
        init: impl Fn(&mut dyn Tx) -> Result<(), SqlError>,
    ) -> Result<Self, OpenError> {
        let db = Self::connect(url, pool_size)?;
        // Instances creating the store at the same instant: every one but the first fails
        // on a catalog or stamp key, and finds the store when it runs again.
        let migrated = retrying(Duration::from_millis(10), || {
            db.transaction(|tx| migrate(tx, schema, &init, &db.database)).map_err(|e| match e {
                Migrate::Sql(e)
                    if matches!(e.kind, SqlErrorKind::Unique | SqlErrorKind::Conflict) =>
                {
                    Attempt::Sql(SqlError { kind: SqlErrorKind::Conflict, ..e })
                }
                other => Attempt::Caller(other),
            })
        });
        match migrated {
            Ok(()) => Ok(db),
            Err(Migrate::Refused(e)) => Err(e),
            Err(Migrate::Sql(e)) => Err(db.error(&e)),
        }
    }

    /// What a start would find in `url`'s database, without writing to it.
    pub fn check(url: &str, schema: &PgSchema) -> Result<StoreCheck, OpenError> {
        let db = Self::connect(url, 1)?;
        db.transaction(|tx| judge(tx, schema, &db.database)).map_err(|e| match e {
            Migrate::Refused(e) => e,
            Migrate::Sql(e) => db.error(&e),
        })
    }

    fn connect(url: &str, pool_size: usize) -> Result<Self, OpenError> {
        let config = Config::from_str(url).map_err(|e| OpenError::Postgres {
            database: "(unparsable URL)".into(),
            detail: format!("the database URL: {e}"),
        })?;
        let database: Arc<str> = describe(&config).into();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("tresor-postgres")
            .enable_all()
            .build()
            .map_err(|e| OpenError::Postgres {
                database: database.to_string(),
                detail: format!("runtime: {e}"),
            })?;
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig { recycling_method: RecyclingMethod::Fast },
        );
        let pool = {
            let _entered = runtime.enter();
            Pool::builder(manager)
                .max_size(pool_size.max(1))
                .runtime(deadpool_postgres::Runtime::Tokio1)
                .wait_timeout(Some(POOL_WAIT))
                .create_timeout(Some(POOL_WAIT))
                .build()
        }
        .map_err(|e| OpenError::Postgres {
            database: database.to_string(),
            detail: e.to_string(),
        })?;
        let handle = runtime.handle().clone();
        Ok(Self { pool, runtime: Some(runtime), handle, database })
    }

    fn error(&self, e: &SqlError) -> OpenError {
        OpenError::Postgres { database: self.database.to_string(), detail: e.detail.clone() }
    }

    /// The database, as messages name it (host and name; never the password).
    pub fn database(&self) -> &str {
        &self.database
    }

    /// Runs `f` in a transaction and commits it; an `Err` from `f` rolls it back. A
    /// conflict with another transaction runs `f` again (so `f` must not act outside the
    /// database before it returns).
    pub fn transaction<R, E: From<SqlError>>(
        &self,
        mut f: impl FnMut(&mut dyn Tx) -> Result<R, E>,
    ) -> Result<R, E> {
        retrying(CONFLICT_STEP, || self.attempt(&mut f))
    }

    /// Runs `f` with each of its statements committed on its own, no transaction around
    /// them: for reads (at READ COMMITTED a transaction gives several reads no common
    /// snapshot anyway) and writes of one statement, one round trip each instead of three.
    /// A conflict runs `f` again, as [`Postgres::transaction`] does.
    pub fn autocommit<R, E: From<SqlError>>(
        &self,
        mut f: impl FnMut(&mut dyn Tx) -> Result<R, E>,
    ) -> Result<R, E> {
        retrying(CONFLICT_STEP, || {
            let client = self.block_on(self.pool.get()).map_err(|e| {
                Attempt::Sql(SqlError { kind: SqlErrorKind::Unavailable, detail: e.to_string() })
            })?;
            let mut pg = PgTx { conn: Conn::Client(&client), store: self, failed: None };
            let result = f(&mut pg);
            match (result, pg.failed.take()) {
                (Err(_), Some(e)) if e.kind == SqlErrorKind::Conflict => Err(Attempt::Sql(e)),
                (result, _) => result.map_err(Attempt::Caller),
            }
        })
    }

    fn attempt<R, E>(
        &self,
        f: &mut impl FnMut(&mut dyn Tx) -> Result<R, E>,
    ) -> Result<R, Attempt<E>> {
        let mut client = self.block_on(self.pool.get()).map_err(|e| {
            Attempt::Sql(SqlError { kind: SqlErrorKind::Unavailable, detail: e.to_string() })
        })?;
        let tx = self.block_on(client.transaction()).map_err(|e| Attempt::Sql(pg_error(&e)))?;
        let mut pg = PgTx { conn: Conn::Tx(&tx), store: self, failed: None };
        let result = f(&mut pg);
        // A statement that failed aborted the transaction in PostgreSQL, whatever `f` made
        // of the error: a conflict is retried even if `f` turned it into its own error.
        let failed = pg.failed.take();
        match result {
            Ok(r) => {
                if let Some(e) = failed {
                    return Err(Attempt::Sql(e));
                }
                self.block_on(tx.commit()).map_err(|e| Attempt::Sql(pg_error(&e)))?;
                Ok(r)
            }
            Err(e) => {
                drop(tx);
                match failed {
                    Some(sql) if sql.kind == SqlErrorKind::Conflict => Err(Attempt::Sql(sql)),
                    _ => Err(Attempt::Caller(e)),
                }
            }
        }
    }

    /// Drives `fut` on this store's runtime from any thread, an async task's included
    /// (the thread waits, as it does on an SQLite commit).
    ///
    /// Unconstrained by tokio's cooperative budget: called from inside a task's poll (a
    /// handler running a few hundred statements without an await), an exhausted budget
    /// makes the pool's semaphore answer "not yet" and defers the wake-up until the task
    /// yields to its scheduler — which a thread waiting here never does: it would wait
    /// forever (seen at 1,000 devices: a campaign report of 2,000 transactions).
    fn block_on<F: Future>(&self, fut: F) -> F::Output {
        let _entered = self.handle.enter();
        futures_executor::block_on(tokio::task::unconstrained(fut))
    }

    /// Whether the database answers a trivial query.
    pub fn healthy(&self) -> bool {
        self.autocommit(|tx| tx.query("SELECT 1", &[])).is_ok()
    }
}

/// How one try of a transaction failed: in the database (a conflict is tried again), or in
/// the caller's closure.
enum Attempt<E> {
    Sql(SqlError),
    Caller(E),
}

/// Runs `attempt` again while it fails with a conflict, up to [`CONFLICT_RETRIES`] times,
/// waiting one `step` longer each time.
fn retrying<R, E: From<SqlError>>(
    step: Duration,
    mut attempt: impl FnMut() -> Result<R, Attempt<E>>,
) -> Result<R, E> {
    let mut tried = 0;
    loop {
        match attempt() {
            Ok(r) => return Ok(r),
            Err(Attempt::Sql(e))
                if e.kind == SqlErrorKind::Conflict && tried < CONFLICT_RETRIES =>
            {
                tried += 1;
                std::thread::sleep(step * tried);
            }
            Err(Attempt::Sql(e)) => return Err(e.into()),
            Err(Attempt::Caller(e)) => return Err(e),
        }
    }
}

/// Why migrating stopped: the database is not this role's store, or a statement failed.
enum Migrate {
    Refused(OpenError),
    Sql(SqlError),
}

impl From<SqlError> for Migrate {
    fn from(e: SqlError) -> Self {
        Self::Sql(e)
    }
}

const MIGRATIONS_TABLE: &str = "tresor_migrations";
/// Who applied a migration or created the store.
const CREATED_BY: &str = concat!("tresor ", env!("CARGO_PKG_VERSION"));

fn unix_seconds() -> i64 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    now.map_or(0, |d| d.as_secs() as i64)
}

/// The tables of the database's current schema, sorted.
fn tables(tx: &mut dyn Tx) -> Result<Vec<String>, SqlError> {
    tx.query(
        "SELECT table_name FROM information_schema.tables \
         WHERE table_schema = current_schema() AND table_type = 'BASE TABLE' ORDER BY table_name",
        &[],
    )?
    .iter()
    .map(|r| r.get::<String>(0))
    .collect()
}

fn stamp(tx: &mut dyn Tx, lock: bool) -> Result<Option<String>, SqlError> {
    let sql = format!(
        "SELECT value FROM {STAMP_TABLE} WHERE key = 'role'{}",
        if lock { " FOR UPDATE" } else { "" }
    );
    tx.query_opt(&sql, &[])?.map(|r| r.get::<String>(0)).transpose()
}

fn applied_version(tx: &mut dyn Tx) -> Result<i64, SqlError> {
    let row = tx.query_one(
        &format!("SELECT CAST(COALESCE(MAX(version), 0) AS BIGINT) FROM {MIGRATIONS_TABLE}"),
        &[],
    )?;
    row.get::<i64>(0)
}

fn judge(tx: &mut dyn Tx, schema: &PgSchema, database: &str) -> Result<StoreCheck, Migrate> {
    let tables = tables(tx)?;
    if tables.is_empty() {
        return Ok(StoreCheck::Missing);
    }
    let refused = |e| Err(Migrate::Refused(e));
    if !tables.iter().any(|t| t == STAMP_TABLE) || !tables.iter().any(|t| t == MIGRATIONS_TABLE) {
        return refused(OpenError::PgNoSchema {
            database: database.into(),
            role: schema.role,
            tables,
        });
    }
    match stamp(tx, false)? {
        Some(role) if role == schema.role => {}
        found => {
            return refused(OpenError::PgOtherRole {
                database: database.into(),
                expected: schema.role,
                found: found.unwrap_or_else(|| "unstamped".into()),
            });
        }
    }
    let found = applied_version(tx)?;
    if found > schema.version() {
        return refused(OpenError::PgNewerVersion {
            database: database.into(),
            role: schema.role,
            found,
            supported: schema.version(),
        });
    }
    Ok(StoreCheck::Ready { unstamped: false, too_open: Vec::new() })
}

fn migrate(
    tx: &mut dyn Tx,
    schema: &PgSchema,
    init: &dyn Fn(&mut dyn Tx) -> Result<(), SqlError>,
    database: &str,
) -> Result<(), Migrate> {
    let tables = tables(tx)?;
    let created = tables.is_empty();
    if created {
        tx.execute(
            &format!("CREATE TABLE {STAMP_TABLE} (key TEXT PRIMARY KEY, value TEXT NOT NULL)"),
            &[],
        )?;
        tx.execute(
            &format!(
                "CREATE TABLE {MIGRATIONS_TABLE} (version BIGINT PRIMARY KEY, \
                 applied_at BIGINT NOT NULL, applied_by TEXT NOT NULL)"
            ),
            &[],
        )?;
        for (key, value) in [
            ("role", schema.role.to_owned()),
            ("created_at", unix_seconds().to_string()),
            ("created_by", CREATED_BY.to_owned()),
        ] {
            tx.execute(
                &format!("INSERT INTO {STAMP_TABLE} (key, value) VALUES (?1, ?2)"),
                &[Value::from(key), Value::from(value)],
            )?;
        }
    } else {
        judge(tx, schema, database)?;
        // Serialises the instances that start together: each migration is applied once.
        stamp(tx, true)?;
    }
    let from = applied_version(tx)?;
    for (i, ddl) in schema.migrations.iter().enumerate().skip(from as usize) {
        for statement in ddl.split(';').map(str::trim).filter(|s| !s.is_empty()) {
            tx.execute(statement, &[])?;
        }
        tx.execute(
            &format!("INSERT INTO {MIGRATIONS_TABLE} (version, applied_at, applied_by) VALUES (?1, ?2, ?3)"),
            &[
                Value::Int(i as i64 + 1),
                Value::Int(unix_seconds()),
                Value::from(CREATED_BY),
            ],
        )?;
        tracing::info!(role = schema.role, version = i + 1, "schema migration applied");
    }
    if created {
        init(tx)?;
    }
    Ok(())
}

/// The database a URL names, as messages name it (never the password).
pub(crate) fn describe_url(url: &str) -> String {
    Config::from_str(url)
        .map_or_else(|_| "postgres database (unparsable URL)".into(), |c| describe(&c))
}

/// The database as messages name it: `name` at host(s), never the password.
fn describe(config: &Config) -> String {
    let name = config.get_dbname().or(config.get_user()).unwrap_or("postgres");
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .map(|h| match h {
            tokio_postgres::config::Host::Tcp(h) => h.clone(),
            tokio_postgres::config::Host::Unix(p) => p.display().to_string(),
        })
        .collect();
    if hosts.is_empty() {
        format!("postgres database {name}")
    } else {
        format!("postgres database {name} at {}", hosts.join(","))
    }
}

/// [`Tx`] over an open PostgreSQL transaction.
struct PgTx<'a, 't> {
    conn: Conn<'a, 't>,
    store: &'a Postgres,
    /// The first statement that failed: PostgreSQL refuses every later one in the
    /// transaction, and a conflict must reach the retry loop.
    failed: Option<SqlError>,
}

/// Where a [`PgTx`]'s statements go.
enum Conn<'a, 't> {
    Tx(&'a deadpool_postgres::Transaction<'t>),
    /// Each statement its own transaction.
    Client(&'a deadpool_postgres::Client),
}

impl Conn<'_, '_> {
    async fn prepare(&self, sql: &str) -> Result<tokio_postgres::Statement, tokio_postgres::Error> {
        match self {
            Conn::Tx(tx) => tx.prepare_cached(sql).await,
            Conn::Client(client) => client.prepare_cached(sql).await,
        }
    }

    async fn execute(
        &self,
        statement: &tokio_postgres::Statement,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<u64, tokio_postgres::Error> {
        match self {
            Conn::Tx(tx) => tx.execute(statement, params).await,
            Conn::Client(client) => client.execute(statement, params).await,
        }
    }

    async fn query(
        &self,
        statement: &tokio_postgres::Statement,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<tokio_postgres::Row>, tokio_postgres::Error> {
        match self {
            Conn::Tx(tx) => tx.query(statement, params).await,
            Conn::Client(client) => client.query(statement, params).await,
        }
    }
}

impl PgTx<'_, '_> {
    fn note(&mut self, e: SqlError) -> SqlError {
        self.failed.get_or_insert_with(|| e.clone());
        e
    }
}

impl Tx for PgTx<'_, '_> {
    fn execute(&mut self, sql: &str, args: &[Value]) -> Result<u64, SqlError> {
        let sql = to_postgres(sql);
        let params: Vec<&(dyn ToSql + Sync)> = args.iter().map(|v| v as _).collect();
        let result = self.store.block_on(async {
            let statement = self.conn.prepare(&sql).await?;
            self.conn.execute(&statement, &params).await
        });
        result.map_err(|e| self.note(pg_error(&e)))
    }

    fn query(&mut self, sql: &str, args: &[Value]) -> Result<Vec<Row>, SqlError> {
        let sql = to_postgres(sql);
        let params: Vec<&(dyn ToSql + Sync)> = args.iter().map(|v| v as _).collect();
        let result = self.store.block_on(async {
            let statement = self.conn.prepare(&sql).await?;
            self.conn.query(&statement, &params).await
        });
        let rows = result.map_err(|e| self.note(pg_error(&e)))?;
        rows.iter().map(from_pg_row).collect()
    }

    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }
}

fn from_pg_row(row: &tokio_postgres::Row) -> Result<Row, SqlError> {
    let mut values = Vec::with_capacity(row.len());
    for (i, column) in row.columns().iter().enumerate() {
        let ty = column.type_();
        let get = |e: tokio_postgres::Error| SqlError {
            kind: SqlErrorKind::Type,
            detail: format!("column {}: {e}", column.name()),
        };
        let value = match *ty {
            Type::INT8 => row.try_get::<_, Option<i64>>(i).map_err(get)?.map(Value::Int),
            Type::INT4 => {
                row.try_get::<_, Option<i32>>(i).map_err(get)?.map(|v| Value::Int(v.into()))
            }
            Type::INT2 => {
                row.try_get::<_, Option<i16>>(i).map_err(get)?.map(|v| Value::Int(v.into()))
            }
            Type::BOOL => row.try_get::<_, Option<bool>>(i).map_err(get)?.map(Value::from),
            Type::BYTEA => row.try_get::<_, Option<Vec<u8>>>(i).map_err(get)?.map(Value::Bytes),
            Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME => {
                row.try_get::<_, Option<String>>(i).map_err(get)?.map(Value::Text)
            }
            ref other => {
                return Err(SqlError {
                    kind: SqlErrorKind::Type,
                    detail: format!(
                        "column {}: type {other} is not one a store reads",
                        column.name()
                    ),
                });
            }
        };
        values.push(value.unwrap_or(Value::Null));
    }
    Ok(Row(values))
}

/// A value bound as the type PostgreSQL inferred for its placeholder.
impl ToSql for Value {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut bytes::BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match (self, ty) {
            (Value::Null, _) => Ok(IsNull::Yes),
            (Value::Int(v), &Type::INT8) => v.to_sql(ty, out),
            (Value::Int(v), &Type::INT4) => i32::try_from(*v)?.to_sql(ty, out),
            (Value::Int(v), &Type::INT2) => i16::try_from(*v)?.to_sql(ty, out),
            (Value::Int(v), &Type::BOOL) => (*v != 0).to_sql(ty, out),
            (Value::Text(v), _) => v.as_str().to_sql(ty, out),
            (Value::Bytes(v), &Type::BYTEA) => v.as_slice().to_sql(ty, out),
            (v, ty) => Err(format!("{v:?} cannot be bound as {ty}").into()),
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

/// A tokio-postgres error as a [`SqlError`] of the kind a caller acts on.
fn pg_error(e: &tokio_postgres::Error) -> SqlError {
    let kind = match e.code() {
        Some(c) if *c == SqlState::UNIQUE_VIOLATION => SqlErrorKind::Unique,
        // A table another instance created at the same instant is a conflict like any other.
        Some(c)
            if *c == SqlState::T_R_SERIALIZATION_FAILURE
                || *c == SqlState::T_R_DEADLOCK_DETECTED
                || *c == SqlState::DUPLICATE_TABLE =>
        {
            SqlErrorKind::Conflict
        }
        Some(c) if c.code().starts_with("08") || *c == SqlState::ADMIN_SHUTDOWN => {
            SqlErrorKind::Unavailable
        }
        Some(_) => SqlErrorKind::Other,
        None if e.is_closed() => SqlErrorKind::Unavailable,
        None => SqlErrorKind::Unavailable,
    };
    let detail = match e.as_db_error() {
        Some(db) => format!("PostgreSQL: {}", db.message()),
        None => format!("PostgreSQL: {e}"),
    };
    SqlError { kind, detail }
}
