//! Tests of [`super`], the operator's store, each on SQLite and on PostgreSQL (a database of
//! its own on the tests' private server, `storage::pg_server`).

use std::sync::Arc;

use protocol::Amf;
use protocol::milenage::{Op, Sqn};

use super::*;
use crate::mno::config::StorageKey;
use crate::mno::pool::{self, Purpose};
use crate::mno::records::{SubscriberRecord, SubscriberStatus};

fn pool() -> PoolConfig {
    PoolConfig::new("001", "01", "0000000001", 5, "8900101").unwrap()
}

fn sealer(byte: u8) -> Sealer {
    Sealer::new(&StorageKey::new([byte; 32])).unwrap()
}

/// A store location on each backend: an SQLite file in `dir` and a PostgreSQL database
/// of its own.
fn locations(dir: &tempfile::TempDir) -> Vec<Location> {
    let url = storage::pg_server::scratch_database("mno_store").expect("PostgreSQL");
    vec![Location::File(dir.path().join("mno.sqlite")), Location::Postgres(url)]
}

fn open(at: &Location, owner: &str, pool: &PoolConfig, sealer: &Sealer) -> Result<Store> {
    Store::open_with(at, owner, pool, sealer, OpenMode::CreateIfMissing)
}

#[test]
fn reopening_checks_owner_range_and_key() {
    let dir = tempfile::tempdir().unwrap();
    for at in locations(&dir) {
        let sealer = sealer(1);
        drop(open(&at, "mno-a", &pool(), &sealer).unwrap());
        if let Some(path) = at.file() {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        drop(open(&at, "mno-a", &pool(), &sealer).unwrap());
        assert!(
            matches!(open(&at, "mno-b", &pool(), &sealer), Err(MnoError::StoreOwner { .. })),
            "{at}"
        );
        let other = PoolConfig::new("001", "01", "0000000100", 5, "8900101").unwrap();
        assert!(matches!(open(&at, "mno-a", &other, &sealer), Err(MnoError::PoolChanged { .. })));
        let grown = PoolConfig::new("001", "01", "0000000001", 50, "8900101").unwrap();
        assert!(open(&at, "mno-a", &grown, &sealer).is_ok(), "the range may grow");
        assert!(matches!(
            open(&at, "mno-a", &pool(), &self::sealer(2)),
            Err(MnoError::WrongStorageKey)
        ));
    }
}

#[test]
fn the_check_judges_like_a_start_without_creating_anything() {
    let dir = tempfile::tempdir().unwrap();
    let key = StorageKey::new([1; 32]);
    for at in locations(&dir) {
        let found = Store::check(&at, "mno-a", &pool(), &key).unwrap();
        assert_eq!(found, storage::StoreCheck::Missing, "{at}");
        assert_eq!(Store::check(&at, "mno-a", &pool(), &key).unwrap(), found, "still none");
        drop(open(&at, "mno-a", &pool(), &sealer(1)).unwrap());
        let found = Store::check(&at, "mno-a", &pool(), &key).unwrap();
        assert!(matches!(found, storage::StoreCheck::Ready { .. }), "{at}: {found:?}");
        let other = StorageKey::new([2; 32]);
        assert!(matches!(
            Store::check(&at, "mno-a", &pool(), &other),
            Err(MnoError::WrongStorageKey)
        ));
        assert!(matches!(
            Store::check(&at, "mno-b", &pool(), &key),
            Err(MnoError::StoreOwner { .. })
        ));
    }
}

#[test]
fn a_future_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mno.sqlite");
    let c = Connection::open(&path).unwrap();
    c.pragma_update(None, "user_version", 7).unwrap();
    drop(c);
    assert!(matches!(
        Store::open(&path, "mno-a", &pool(), &sealer(1)),
        Err(MnoError::SchemaVersion { found: 7, .. })
    ));
    // PostgreSQL: a migration this build does not know was applied.
    let at = Location::Postgres(storage::pg_server::scratch_database("mno_future").unwrap());
    let store = open(&at, "mno-a", &pool(), &sealer(1)).unwrap();
    store
        .write(|tx| {
            tx.execute(
                "INSERT INTO tresor_migrations (version, applied_at, applied_by)
                 VALUES (7, 0, 'a newer tresor')",
                &[],
            )?;
            Ok(())
        })
        .unwrap();
    drop(store);
    assert!(matches!(
        open(&at, "mno-a", &pool(), &sealer(1)),
        Err(MnoError::SchemaVersion { found: 7, .. })
    ));
}

#[test]
fn another_roles_store_is_refused_and_left_alone() {
    // Stand-ins for the PVA's and the RO's stores: their role's stamp over a table of theirs.
    const PVA: (&str, &str, &[&str]) = (
        "pva",
        "CREATE TABLE devices (device_id BLOB PRIMARY KEY);",
        &["CREATE TABLE devices (device_id BYTEA PRIMARY KEY)"],
    );
    const RO: (&str, &str, &[&str]) = (
        "ro",
        "CREATE TABLE campaigns (id TEXT PRIMARY KEY);",
        &["CREATE TABLE campaigns (id TEXT PRIMARY KEY)"],
    );
    let dir = tempfile::tempdir().unwrap();
    for (role, ddl, migrations) in [PVA, RO] {
        // SQLite: a file stamped for another role.
        let path = dir.path().join(format!("{role}.sqlite"));
        let schema = Schema { role, version: 1, ddl };
        drop(storage::open_sqlite(&path, &schema, OpenMode::CreateIfMissing).unwrap());
        let before = std::fs::read(&path).unwrap();
        let got = Store::open(&path, "mno-a", &pool(), &sealer(1));
        assert!(
            matches!(got, Err(MnoError::StoreOpen(OpenError::OtherRole { found: ref f, .. })) if f == role),
            "{got:?}"
        );
        assert_eq!(std::fs::read(&path).unwrap(), before, "the file is left as it was");
        // PostgreSQL: a database stamped for another role, then one of foreign tables.
        let url = storage::pg_server::scratch_database(&format!("mno_{role}")).unwrap();
        let theirs = Postgres::open(&url, &PgSchema { role, migrations }, |_| Ok(())).unwrap();
        let at = Location::Postgres(url.clone());
        for got in [
            open(&at, "mno-a", &pool(), &sealer(1)).map(drop),
            Store::check(&at, "mno-a", &pool(), &StorageKey::new([1; 32])).map(drop),
        ] {
            assert!(
                matches!(&got, Err(MnoError::StoreOpen(OpenError::PgOtherRole { found, .. })) if found == role),
                "{got:?}"
            );
        }
        let tables: i64 = Database::Postgres(theirs)
            .transaction(|tx| {
                tx.query_one(
                    "SELECT COUNT(*) FROM information_schema.tables
                     WHERE table_schema = current_schema() AND table_name = 'meta'",
                    &[],
                )?
                .get(0)
            })
            .unwrap();
        assert_eq!(tables, 0, "nothing of the operator's was created");
    }
    let url = storage::pg_server::scratch_database("mno_foreign").unwrap();
    let foreign = PgSchema { role: "x", migrations: &[] };
    let db = Database::Postgres(Postgres::open(&url, &foreign, |_| Ok(())).unwrap());
    db.transaction(|tx| {
        tx.execute("DROP TABLE tresor_store", &[])?;
        tx.execute("CREATE TABLE accounts (id BIGINT PRIMARY KEY)", &[])
    })
    .unwrap();
    let got = open(&Location::Postgres(url), "mno-a", &pool(), &sealer(1));
    assert!(matches!(got, Err(MnoError::StoreOpen(OpenError::PgNoSchema { .. }))), "{got:?}");
}

#[test]
fn a_failed_write_leaves_nothing_and_the_pool_counts_on() {
    let dir = tempfile::tempdir().unwrap();
    for at in locations(&dir) {
        let store = open(&at, "mno-a", &pool(), &sealer(1)).unwrap();
        let failed: Result<()> = store.write(|tx| {
            pool::allocate(tx, &pool(), Purpose::Manufacture)?;
            Err(MnoError::Internal("on purpose"))
        });
        assert!(failed.is_err());
        let taken: Vec<u64> = (0..5)
            .map(|_| store.write(|tx| pool::allocate(tx, &pool(), Purpose::Manufacture)))
            .map(|a| a.unwrap().index)
            .collect();
        assert_eq!(taken, [0, 1, 2, 3, 4], "{at}");
        let exhausted = store.write(|tx| pool::allocate(tx, &pool(), Purpose::Manufacture));
        assert!(matches!(exhausted, Err(MnoError::PoolExhausted { count: 5 })), "{at}");
        let counted: i64 = store
            .read(|tx| Ok(tx.query_one("SELECT COUNT(*) FROM allocations", &[])?.get(0)?))
            .unwrap();
        assert_eq!(counted, 5);
    }
}

#[test]
fn records_round_trip_sealed_on_either_backend() {
    let dir = tempfile::tempdir().unwrap();
    let op = Op::from_hex("cdc202d5123e20f62b6d676ac72cb318").unwrap();
    for at in locations(&dir) {
        let sealer = sealer(1);
        let store = open(&at, "mno-a", &pool(), &sealer).unwrap();
        let made = store
            .write(|tx| {
                let a = pool::allocate(tx, &pool(), Purpose::Manufacture)?;
                let r = SubscriberRecord::generate(
                    a.imsi,
                    a.iccid,
                    &op,
                    Amf([0x80, 0]),
                    SubscriberStatus::Active,
                )?;
                r.insert(tx, &sealer)?;
                Ok(r)
            })
            .unwrap();
        let imsi = made.imsi.clone();
        let got = store.write(|tx| SubscriberRecord::load(tx, &sealer, &imsi)).unwrap().unwrap();
        assert_eq!(got.profile(), made.profile(), "{at}");
        let stored: Vec<u8> =
            store.read(|tx| Ok(tx.query_one("SELECT k FROM subscribers", &[])?.get(0)?)).unwrap();
        let k = made.k.expose();
        assert!(!stored.windows(k.len()).any(|w| w == k.as_slice()), "K is sealed");
    }
}

/// Instances sharing a PostgreSQL store, each with several threads, moving one
/// subscriber's SQN by read-modify-write: none of the increments is lost.
#[test]
fn concurrent_updates_of_one_subscriber_are_not_lost_on_postgres() {
    let url = storage::pg_server::scratch_database("mno_sqn").unwrap();
    let at = Location::Postgres(url);
    let op = Op::from_hex("cdc202d5123e20f62b6d676ac72cb318").unwrap();
    let sealer = Arc::new(self::sealer(1));
    let stores: Vec<Arc<Store>> =
        (0..2).map(|_| Arc::new(open(&at, "mno-a", &pool(), &sealer).unwrap())).collect();
    let imsi = stores[0]
        .write(|tx| {
            let a = pool::allocate(tx, &pool(), Purpose::Manufacture)?;
            let r = SubscriberRecord::generate(
                a.imsi,
                a.iccid,
                &op,
                Amf([0x80, 0]),
                SubscriberStatus::Active,
            )?;
            r.insert(tx, &sealer)?;
            Ok(r.imsi)
        })
        .unwrap();
    let threads: Vec<_> = (0..8)
        .map(|i| {
            let (store, sealer, imsi) = (stores[i % 2].clone(), sealer.clone(), imsi.clone());
            std::thread::spawn(move || {
                for _ in 0..25 {
                    store
                        .write(|tx| {
                            let r = SubscriberRecord::load(tx, &sealer, &imsi)?.unwrap();
                            let next = Sqn::new(r.sqn.value() + 1).unwrap();
                            SubscriberRecord::set_sqn(tx, &imsi, next)
                        })
                        .unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let r = stores[1].write(|tx| SubscriberRecord::load(tx, &sealer, &imsi)).unwrap();
    assert_eq!(r.unwrap().sqn.value(), 200);
}
