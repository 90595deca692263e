//! The open policy on real files: every kind of file a role may find where its store should
//! be, and what [`storage::open_sqlite`] does with it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use rusqlite::Connection;
use storage::{
    OpenError, OpenMode, STAMP_TABLE, Schema, StoreCheck, check_sqlite, open_sqlite,
    open_sqlite_with,
};

const PVA: Schema = Schema {
    role: "pva",
    version: 2,
    ddl: "CREATE TABLE devices (id BLOB PRIMARY KEY, ek BLOB NOT NULL);
          CREATE TABLE nonces (hash BLOB PRIMARY KEY);",
};

const MNO: Schema = Schema {
    role: "mno",
    version: 1,
    ddl: "CREATE TABLE meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
          CREATE TABLE subscribers (imsi TEXT PRIMARY KEY);",
};

use OpenMode::{CreateIfMissing, Init};

fn scratch() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.sqlite");
    (dir, path)
}

/// Every file in the directory, with its bytes: a refusal must leave all of them alone
/// (and create no journal next to the store).
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let path = e.unwrap().path();
            let bytes = std::fs::read(&path).unwrap();
            (path, bytes)
        })
        .collect();
    files.sort();
    files
}

fn refused(path: &Path, schema: &Schema, mode: OpenMode) -> OpenError {
    let dir = path.parent().unwrap();
    let before = snapshot(dir);
    let err = open_sqlite(path, schema, mode).expect_err("must be refused");
    assert_eq!(snapshot(dir), before, "a refused store is left as it was: {err}");
    let shown = err.to_string();
    assert!(shown.contains(&path.display().to_string()), "the error names the file: {shown}");
    err
}

fn stamp_of(conn: &Connection) -> (String, i64) {
    let role = conn
        .query_row(&format!("SELECT value FROM {STAMP_TABLE} WHERE key = 'role'"), [], |r| r.get(0))
        .unwrap();
    let version = conn.pragma_query_value(None, "user_version", |r| r.get(0)).unwrap();
    (role, version)
}

#[test]
fn a_missing_file_is_created_private_stamped_and_in_wal_mode() {
    let (_dir, path) = scratch();
    let conn = open_sqlite(&path, &PVA, CreateIfMissing).unwrap();
    assert_eq!(stamp_of(&conn), ("pva".into(), 2));
    let journal: String = conn.pragma_query_value(None, "journal_mode", |r| r.get(0)).unwrap();
    assert_eq!(journal, "wal");
    let sync: i64 = conn.pragma_query_value(None, "synchronous", |r| r.get(0)).unwrap();
    assert_eq!(sync, 2, "synchronous=FULL");
    conn.execute("INSERT INTO devices (id, ek) VALUES (x'01', x'02')", []).unwrap();
    drop(conn);
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    // No scratch file is left beside it.
    let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|n| !n.contains(".new-")), "{names:?}");

    let conn = open_sqlite(&path, &PVA, CreateIfMissing).unwrap();
    let n: i64 = conn.query_row("SELECT count(*) FROM devices", [], |r| r.get(0)).unwrap();
    assert_eq!(n, 1, "reopening keeps the data");
}

#[test]
fn journals_are_private_and_a_store_left_readable_is_made_private() {
    let (_dir, path) = scratch();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let journal = |suffix: &str| PathBuf::from(format!("{}{suffix}", path.display()));
    let conn = open_sqlite(&path, &PVA, CreateIfMissing).unwrap();
    conn.execute("INSERT INTO devices (id, ek) VALUES (x'01', x'02')", []).unwrap();
    // While the connection is open the WAL and its index exist, with the store's mode.
    assert_eq!((mode(&journal("-wal")), mode(&journal("-shm"))), (0o600, 0o600));
    drop(conn);
    // An older version (or a copy) left the store and a journal readable by everyone.
    for p in [path.clone(), journal("-wal")] {
        if p.exists() {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
    }
    let conn = open_sqlite(&path, &PVA, CreateIfMissing).unwrap();
    assert_eq!(mode(&path), 0o600);
    if journal("-wal").exists() {
        assert_eq!(mode(&journal("-wal")), 0o600);
    }
    drop(conn);
}

#[test]
fn a_zero_byte_file_is_refused_and_left_alone() {
    let (_dir, path) = scratch();
    std::fs::write(&path, b"").unwrap();
    let err = refused(&path, &MNO, CreateIfMissing);
    assert!(matches!(&err, OpenError::Empty { role: "mno", .. }), "{err:?}");
    assert!(err.to_string().contains("--init"), "the error says the way out: {err}");
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
}

#[test]
fn init_initialises_an_empty_file_and_opens_an_existing_store() {
    let (_dir, path) = scratch();
    std::fs::write(&path, b"").unwrap();
    let conn = open_sqlite(&path, &MNO, Init).unwrap();
    assert_eq!(stamp_of(&conn), ("mno".into(), 1));
    conn.execute("INSERT INTO subscribers (imsi) VALUES ('001010000000001')", []).unwrap();
    drop(conn);
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    // --init on a store that is already there opens it: nothing is lost.
    let conn = open_sqlite(&path, &MNO, Init).unwrap();
    let n: i64 = conn.query_row("SELECT count(*) FROM subscribers", [], |r| r.get(0)).unwrap();
    assert_eq!(n, 1);
}

#[test]
fn random_bytes_are_not_an_sqlite_database_even_with_init() {
    let (_dir, path) = scratch();
    let garbage: Vec<u8> =
        (0..4096u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    std::fs::write(&path, &garbage).unwrap();
    for mode in [CreateIfMissing, Init] {
        let err = refused(&path, &PVA, mode);
        assert!(matches!(err, OpenError::NotSqlite { role: "pva", .. }), "{err:?}");
    }
    assert_eq!(std::fs::read(&path).unwrap(), garbage);
}

#[test]
fn an_sqlite_header_over_garbage_is_not_a_database() {
    let (_dir, path) = scratch();
    let mut bytes = b"SQLite format 3\0".to_vec();
    bytes.extend(std::iter::repeat_n(0xA5u8, 1000));
    std::fs::write(&path, &bytes).unwrap();
    let err = refused(&path, &PVA, CreateIfMissing);
    assert!(matches!(err, OpenError::NotSqlite { .. }), "{err:?}");
}

#[test]
fn a_database_with_other_tables_is_refused_even_with_init() {
    let (_dir, path) = scratch();
    let c = Connection::open(&path).unwrap();
    c.execute_batch(
        "CREATE TABLE photos (id INTEGER PRIMARY KEY); CREATE TABLE albums (id INTEGER);",
    )
    .unwrap();
    drop(c);
    for mode in [CreateIfMissing, Init] {
        let err = refused(&path, &PVA, mode);
        match &err {
            OpenError::NoSchema { role: "pva", tables, .. } => {
                assert_eq!(tables, &["albums", "photos"]);
            }
            other => panic!("{other:?}"),
        }
        assert!(err.to_string().contains("albums, photos"), "{err}");
    }
}

#[test]
fn an_sqlite_database_with_no_tables_is_refused() {
    let (_dir, path) = scratch();
    let c = Connection::open(&path).unwrap();
    c.pragma_update(None, "application_id", 42).unwrap();
    drop(c);
    let err = refused(&path, &PVA, Init);
    assert!(matches!(&err, OpenError::NoSchema { tables, .. } if tables.is_empty()), "{err:?}");
    assert!(err.to_string().contains("tables: none"), "{err}");
}

#[test]
fn another_roles_store_is_refused() {
    let (_dir, path) = scratch();
    drop(open_sqlite(&path, &PVA, CreateIfMissing).unwrap());
    let err = refused(&path, &MNO, Init);
    assert_eq!(
        err,
        OpenError::OtherRole { path: path.clone(), expected: "mno", found: "pva".into() }
    );
    assert!(err.to_string().contains("a pva store, not a mno store"), "{err}");
}

#[test]
fn a_newer_or_older_schema_version_is_refused() {
    let (_dir, path) = scratch();
    drop(open_sqlite(&path, &PVA, CreateIfMissing).unwrap());
    for (version, newer) in [(3, true), (1, false)] {
        let c = Connection::open(&path).unwrap();
        c.pragma_update(None, "user_version", version).unwrap();
        drop(c);
        let err = refused(&path, &PVA, Init);
        let expected = if newer {
            OpenError::NewerVersion { path: path.clone(), role: "pva", found: 3, supported: 2 }
        } else {
            OpenError::OlderVersion { path: path.clone(), role: "pva", found: 1, supported: 2 }
        };
        assert_eq!(err, expected);
    }
}

#[test]
fn an_unstamped_store_of_this_schema_is_adopted() {
    // What tresor 0.1 wrote: the tables and `user_version`, no stamp.
    let (_dir, path) = scratch();
    let c = Connection::open(&path).unwrap();
    c.execute_batch(MNO.ddl).unwrap();
    c.execute("INSERT INTO subscribers (imsi) VALUES ('001010000000009')", []).unwrap();
    c.pragma_update(None, "user_version", 1).unwrap();
    drop(c);
    let conn = open_sqlite(&path, &MNO, CreateIfMissing).unwrap();
    assert_eq!(stamp_of(&conn), ("mno".into(), 1));
    let n: i64 = conn.query_row("SELECT count(*) FROM subscribers", [], |r| r.get(0)).unwrap();
    assert_eq!(n, 1, "adopted, not replaced");
    drop(conn);
    // Once adopted, it is an mno store: another role refuses it.
    assert!(matches!(refused(&path, &PVA, Init), OpenError::OtherRole { .. }));
    // An unstamped database with only some of the tables is not adopted.
    let (_dir2, partial) = scratch();
    let c = Connection::open(&partial).unwrap();
    c.execute_batch("CREATE TABLE subscribers (imsi TEXT PRIMARY KEY);").unwrap();
    drop(c);
    assert!(matches!(refused(&partial, &MNO, CreateIfMissing), OpenError::NoSchema { .. }));
}

#[test]
fn an_unstamped_database_of_a_newer_version_is_refused_as_newer() {
    let (_dir, path) = scratch();
    let c = Connection::open(&path).unwrap();
    c.pragma_update(None, "user_version", 7).unwrap();
    drop(c);
    let err = refused(&path, &MNO, CreateIfMissing);
    assert!(matches!(err, OpenError::NewerVersion { found: 7, supported: 1, .. }), "{err:?}");
}

#[test]
fn a_leftover_journal_of_a_lost_store_blocks_creation() {
    let (dir, path) = scratch();
    std::fs::write(dir.path().join("store.sqlite-wal"), b"frames of a lost store").unwrap();
    let err = refused(&path, &PVA, Init);
    assert!(matches!(err, OpenError::Leftover { .. }), "{err:?}");
    assert!(!path.exists());
    // An empty store file with a non-empty journal: refused as empty without --init, and as
    // a leftover with it.
    std::fs::write(&path, b"").unwrap();
    assert!(matches!(refused(&path, &PVA, CreateIfMissing), OpenError::Empty { .. }));
    assert!(matches!(refused(&path, &PVA, Init), OpenError::Leftover { .. }));
}

#[test]
fn init_rows_are_written_with_the_schema_and_only_on_creation() {
    let (dir, path) = scratch();
    let owner = |c: &Connection| {
        c.execute("INSERT INTO meta (key, value) VALUES ('owner', 'mno-b')", []).map(|_| ())
    };
    let conn = open_sqlite_with(&path, &MNO, CreateIfMissing, owner).unwrap();
    let found: String =
        conn.query_row("SELECT value FROM meta WHERE key = 'owner'", [], |r| r.get(0)).unwrap();
    assert_eq!(found, "mno-b");
    drop(conn);
    // Reopening does not run it again (it would fail on the primary key).
    drop(open_sqlite_with(&path, &MNO, CreateIfMissing, owner).unwrap());

    // A failing init leaves no store behind, so the next start creates it afresh.
    let failing = dir.path().join("failing.sqlite");
    let err = open_sqlite_with(&failing, &MNO, CreateIfMissing, |c| {
        c.execute("INSERT INTO no_such_table VALUES (1)", []).map(|_| ())
    })
    .unwrap_err();
    assert!(matches!(err, OpenError::Sqlite { .. }), "{err:?}");
    assert!(!failing.exists());
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|n| !n.contains("failing")), "{names:?}");
}

#[test]
fn concurrent_first_starts_end_with_one_store() {
    let (_dir, path) = scratch();
    let handles: Vec<_> = (0..4)
        .map(|i| {
            let path = path.clone();
            std::thread::spawn(move || {
                let conn = open_sqlite(&path, &PVA, CreateIfMissing).unwrap();
                conn.execute("INSERT INTO nonces (hash) VALUES (?1)", [vec![i as u8]]).unwrap();
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let conn = open_sqlite(&path, &PVA, CreateIfMissing).unwrap();
    let n: i64 = conn.query_row("SELECT count(*) FROM nonces", [], |r| r.get(0)).unwrap();
    assert_eq!(n, 4, "every thread wrote into the same store");
}

#[test]
fn in_memory_stores_have_the_schema() {
    let conn = storage::open_sqlite_in_memory(&PVA).unwrap();
    assert_eq!(stamp_of(&conn), ("pva".into(), 2));
    conn.execute("INSERT INTO nonces (hash) VALUES (x'00')", []).unwrap();
}

/// `check_sqlite` judges like a start and writes nothing the store holds.
#[test]
fn check_reports_what_a_start_would_do_and_changes_nothing() {
    let (dir, path) = scratch();
    assert_eq!(check_sqlite(&path, &PVA).unwrap(), StoreCheck::Missing);
    assert!(!path.exists(), "a check creates no store");

    std::fs::write(&path, b"").unwrap();
    assert!(matches!(check_sqlite(&path, &PVA), Err(OpenError::Empty { .. })));
    std::fs::remove_file(&path).unwrap();

    let conn = open_sqlite(&path, &PVA, CreateIfMissing).unwrap();
    conn.execute("INSERT INTO devices (id, ek) VALUES (x'01', x'02')", []).unwrap();
    drop(conn);
    let store = std::fs::read(&path).unwrap();
    assert_eq!(
        check_sqlite(&path, &PVA).unwrap(),
        StoreCheck::Ready { unstamped: false, too_open: vec![] }
    );
    assert!(matches!(check_sqlite(&path, &MNO), Err(OpenError::OtherRole { .. })));
    let newer = Schema { version: 3, ..PVA };
    assert!(matches!(check_sqlite(&path, &newer), Err(OpenError::OlderVersion { .. })));
    assert_eq!(std::fs::read(&path).unwrap(), store, "the store's bytes are unchanged");

    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let StoreCheck::Ready { too_open, .. } = check_sqlite(&path, &PVA).unwrap() else {
        panic!("an intact store");
    };
    assert_eq!(too_open, vec![path.clone()]);
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o644);

    // A page of the store overwritten: SQLite's quick_check finds it.
    let mut bytes = std::fs::read(&path).unwrap();
    let page = 4096;
    if bytes.len() >= 2 * page {
        for b in &mut bytes[page + 8..2 * page] {
            *b = 0xA5;
        }
        std::fs::write(&path, &bytes).unwrap();
        let err = check_sqlite(&path, &PVA).expect_err("a damaged store");
        assert!(err.to_string().contains(&path.display().to_string()), "{err}");
    }
    drop(dir);
}
