//! The PostgreSQL backend against a real server (a private one, started here): migrations
//! applied once however many instances start together, every refusal of the open policy,
//! transactions that commit or roll back whole, and the blocking interface called from an
//! async task.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::{Arc, Barrier, OnceLock};

use storage::pg_server::{Durability, PgServer};
use storage::{OpenError, PgSchema, Postgres, SqlError, SqlErrorKind, StoreCheck, Tx, Value, args};

const V1: &str =
    "CREATE TABLE devices (id BYTEA PRIMARY KEY, ek BYTEA NOT NULL, n BIGINT NOT NULL DEFAULT 0)";
const V2: &str = "CREATE TABLE marks (id BYTEA PRIMARY KEY, clock BIGINT NOT NULL);
                  CREATE INDEX marks_by_clock ON marks (clock)";
const PVA_V1: PgSchema = PgSchema { role: "pva", migrations: &[V1] };
const PVA_V2: PgSchema = PgSchema { role: "pva", migrations: &[V1, V2] };
const RO: PgSchema =
    PgSchema { role: "ro", migrations: &["CREATE TABLE campaigns (id TEXT PRIMARY KEY)"] };

/// One server for the whole file; each test takes a database of its own.
fn server() -> &'static PgServer {
    static SERVER: OnceLock<PgServer> = OnceLock::new();
    SERVER.get_or_init(|| PgServer::start_with(Durability::Fast).expect("start PostgreSQL"))
}

fn database(name: &str) -> String {
    server().create_database(name).unwrap()
}

fn none(_: &mut dyn Tx) -> Result<(), SqlError> {
    Ok(())
}

fn count(db: &Postgres, sql: &str) -> i64 {
    db.transaction(|tx| tx.query_one(sql, &[])?.get::<i64>(0)).unwrap()
}

#[test]
fn a_new_database_gets_the_schema_and_later_migrations_are_applied_once() {
    let url = database("migrations");
    assert_eq!(Postgres::check(&url, &PVA_V1).unwrap(), StoreCheck::Missing);
    let created = std::sync::atomic::AtomicU32::new(0);
    let db = Postgres::open(&url, &PVA_V1, |tx| {
        created.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        tx.execute("INSERT INTO devices (id, ek) VALUES (?1, ?2)", args![&[1u8][..], &[2u8][..]])?;
        Ok(())
    })
    .unwrap();
    assert_eq!(count(&db, "SELECT COUNT(*) FROM tresor_migrations"), 1);
    drop(db);
    // Reopening runs nothing again; a build with a second migration applies only that one.
    let db = Postgres::open(&url, &PVA_V2, |_| panic!("init runs only at creation")).unwrap();
    assert_eq!(created.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert_eq!(count(&db, "SELECT CAST(MAX(version) AS BIGINT) FROM tresor_migrations"), 2);
    assert_eq!(count(&db, "SELECT COUNT(*) FROM devices"), 1, "the data survived the migration");
    assert!(matches!(Postgres::check(&url, &PVA_V2).unwrap(), StoreCheck::Ready { .. }));
    // The older build refuses the newer schema, and says so.
    let err = Postgres::open(&url, &PVA_V1, none).unwrap_err();
    assert!(matches!(err, OpenError::PgNewerVersion { found: 2, supported: 1, .. }), "{err}");
    assert!(err.to_string().contains("newer"), "{err}");
}

#[test]
fn instances_starting_together_create_and_migrate_once() {
    let url = database("together");
    let barrier = Arc::new(Barrier::new(6));
    let opened: Vec<_> = (0..6)
        .map(|_| {
            let (url, barrier) = (url.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                Postgres::open(&url, &PVA_V2, |tx| {
                    tx.execute("INSERT INTO devices (id, ek) VALUES (?1, ?1)", args![&[9u8][..]])?;
                    Ok(())
                })
            })
        })
        .collect();
    for handle in opened {
        handle.join().unwrap().unwrap();
    }
    let db = Postgres::open(&url, &PVA_V2, none).unwrap();
    assert_eq!(count(&db, "SELECT COUNT(*) FROM tresor_migrations"), 2);
    assert_eq!(count(&db, "SELECT COUNT(*) FROM devices"), 1, "init ran once");
}

#[test]
fn another_roles_store_and_a_foreign_database_are_refused_untouched() {
    let url = database("roles");
    drop(Postgres::open(&url, &RO, none).unwrap());
    let err = Postgres::open(&url, &PVA_V1, none).unwrap_err();
    assert!(
        matches!(&err, OpenError::PgOtherRole { expected: "pva", found, .. } if found == "ro"),
        "{err}"
    );
    assert!(err.to_string().starts_with("store postgres database roles at /"), "named: {err}");
    assert!(matches!(Postgres::check(&url, &PVA_V1), Err(OpenError::PgOtherRole { .. })));

    let url = database("foreign");
    // A database someone else uses: a store without migrations whose stamp is dropped
    // gives a connection to it.
    let raw = Postgres::open(&url, &PgSchema { role: "other", migrations: &[] }, none).unwrap();
    raw.transaction(|tx| {
        tx.execute("DROP TABLE tresor_store", &[])?;
        tx.execute("CREATE TABLE invoices (id BIGINT)", &[])
    })
    .unwrap();
    drop(raw);
    let err = Postgres::open(&url, &PVA_V1, none).unwrap_err();
    assert!(
        matches!(&err, OpenError::PgNoSchema { tables, .. } if tables.contains(&"invoices".to_owned())),
        "{err}"
    );
    assert!(err.to_string().contains("invoices"), "{err}");
}

#[test]
fn a_transaction_commits_whole_or_not_at_all_and_errors_have_kinds() {
    let db = Postgres::open(&database("transactions"), &PVA_V1, none).unwrap();
    let failed: Result<(), SqlError> = db.transaction(|tx| {
        tx.execute("INSERT INTO devices (id, ek) VALUES (?1, ?2)", args![&[1u8][..], &[1u8][..]])?;
        Err(SqlError::other("the caller changed its mind"))
    });
    assert!(failed.is_err());
    assert_eq!(count(&db, "SELECT COUNT(*) FROM devices"), 0, "rolled back");

    db.transaction(|tx| {
        tx.execute("INSERT INTO devices (id, ek) VALUES (?1, ?2)", args![&[1u8][..], &[1u8][..]])
    })
    .unwrap();
    let err = db
        .transaction(|tx| {
            tx.execute(
                "INSERT INTO devices (id, ek) VALUES (?1, ?2)",
                args![&[1u8][..], &[2u8][..]],
            )
        })
        .unwrap_err();
    assert_eq!(err.kind, SqlErrorKind::Unique);
    assert!(!err.to_string().contains("\\x02"), "bound values never reach the message: {err}");
    let n = db
        .transaction(|tx| {
            tx.execute(
                "INSERT INTO devices (id, ek) VALUES (?1, ?2) ON CONFLICT (id) DO UPDATE SET n = devices.n + 1",
                args![&[1u8][..], &[2u8][..]],
            )
        })
        .unwrap();
    assert_eq!(n, 1);
    let row = db
        .transaction(|tx| {
            tx.query_one(
                "SELECT ek, n, NULL::BIGINT, 'text' FROM devices WHERE id = ?1",
                args![&[1u8][..]],
            )
        })
        .unwrap();
    assert_eq!(
        row.0,
        vec![Value::Bytes(vec![1]), Value::Int(1), Value::Null, Value::Text("text".into())]
    );
    let err = db.transaction(|tx| tx.query("SELECT 1.5::NUMERIC", &[])).unwrap_err();
    assert_eq!(err.kind, SqlErrorKind::Type, "{err}");
}

#[test]
fn concurrent_read_modify_writes_lose_nothing() {
    let db = Arc::new(Postgres::open(&database("counters"), &PVA_V1, none).unwrap());
    db.transaction(|tx| {
        tx.execute("INSERT INTO devices (id, ek) VALUES (?1, ?1)", args![&[7u8][..]])
    })
    .unwrap();
    let workers: Vec<_> = (0..8)
        .map(|_| {
            let db = db.clone();
            std::thread::spawn(move || {
                for _ in 0..25 {
                    db.transaction(|tx| {
                        let n = tx.query_one(
                            "SELECT n FROM devices WHERE id = ?1 FOR UPDATE",
                            args![&[7u8][..]],
                        )?;
                        let n = n.get::<i64>(0)?;
                        tx.execute(
                            "UPDATE devices SET n = ?1 WHERE id = ?2",
                            args![n + 1, &[7u8][..]],
                        )
                    })
                    .unwrap();
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    assert_eq!(count(&db, "SELECT n FROM devices"), 200);
}

#[tokio::test]
async fn the_blocking_interface_works_from_an_async_task_and_a_drop_there() {
    let db = Postgres::open(&database("from_async"), &PVA_V1, none).unwrap();
    assert!(db.healthy());
    assert_eq!(count(&db, "SELECT COUNT(*) FROM devices"), 0);
    drop(db);
}

#[test]
fn an_unreachable_database_is_a_clear_error() {
    let url =
        format!("postgres:///nothing?host={}/absent&user=tresor", server().socket_dir().display());
    let err = Postgres::open(&url, &PVA_V1, none).unwrap_err();
    assert!(matches!(err, OpenError::Postgres { .. }), "{err}");
    assert!(err.to_string().contains("postgres database nothing"), "{err}");
    let err = Postgres::open("postgres://tresor@localhost:port/db", &PVA_V1, none).unwrap_err();
    assert!(err.to_string().contains("URL"), "{err}");
}

/// A task that runs thousands of transactions without an await in between (a campaign report
/// of 1,000 devices) exhausts tokio's cooperative budget; the blocking interface must not
/// wait for a wake-up that tokio defers until the task yields (it hung there once).
#[test]
fn thousands_of_transactions_in_one_poll_of_a_task_finish() {
    let db = std::sync::Arc::new(Postgres::open(&database("one_poll"), &PVA_V1, none).unwrap());
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let n = runtime.block_on(async move {
            tokio::spawn(async move {
                (0..2_000).map(|_| count(&db, "SELECT CAST(1 AS BIGINT)")).sum::<i64>()
            })
            .await
            .unwrap()
        });
        done.send(n).unwrap();
    });
    let n = finished.recv_timeout(std::time::Duration::from_secs(120)).expect("no hang");
    assert_eq!(n, 2_000);
}
