//! The operator store on real SQLite files and PostgreSQL databases: durable, unique IMSI
//! allocation under concurrent requests from two processes' (or instances') worth of
//! connections and across restarts, clean pool exhaustion, a wrong storage key refused, and
//! no subscriber secret in the file.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod mno_common;

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use mno_common::*;
use protocol::SubscriptionProfile;
use provisioning::mno::{MnoError, Operator, SubscriberStatus};

fn setup(count: u64) -> (tempfile::TempDir, String) {
    setup_at(count, "mno-a.sqlite")
}

/// A PKI and MNO-A's configuration with its store at `db` (a file name or a URL).
fn setup_at(count: u64, db: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let pki_dir = dir.path().join("pki");
    provisioning::pki::init(&pki_dir, false).unwrap();
    let text = config_text("mno-a", &pki_dir, db, "01", count, "8900101", "");
    (dir, text)
}

/// MNO-A's store as a file and as a PostgreSQL database of its own.
fn stores(count: u64) -> Vec<(tempfile::TempDir, String)> {
    let url = storage::pg_server::scratch_database("mno_it").expect("PostgreSQL");
    vec![setup(count), setup_at(count, &url)]
}

fn open(dir: &Path, text: &str) -> Operator {
    Operator::open(&load(text, dir)).unwrap()
}

#[test]
fn concurrent_allocation_never_issues_a_number_twice() {
    let (dir, text) = setup(120);
    // Two operators on one file: two connections, as two processes would have.
    let first = Arc::new(open(dir.path(), &text));
    let second = Arc::new(open(dir.path(), &text));
    let threads: Vec<_> = (0..6)
        .map(|i| {
            let op = Arc::clone(if i % 2 == 0 { &first } else { &second });
            std::thread::spawn(move || {
                (0..20).map(|_| op.issue_subscription().unwrap()).collect::<Vec<_>>()
            })
        })
        .collect();
    let profiles: Vec<SubscriptionProfile> =
        threads.into_iter().flat_map(|t| t.join().unwrap()).collect();
    assert_eq!(profiles.len(), 120);
    let imsis: BTreeSet<_> = profiles.iter().map(|p| p.imsi.clone()).collect();
    let iccids: BTreeSet<_> = profiles.iter().map(|p| p.iccid.clone()).collect();
    assert_eq!(imsis.len(), 120, "every IMSI once");
    assert_eq!(iccids.len(), 120, "every ICCID once");
    assert!(matches!(first.issue_subscription(), Err(MnoError::PoolExhausted { count: 120 })));
    assert!(matches!(second.issue_subscription(), Err(MnoError::PoolExhausted { count: 120 })));
}

#[test]
fn concurrent_allocation_on_postgres_never_issues_a_number_twice() {
    let url = storage::pg_server::scratch_database("mno_alloc").expect("PostgreSQL");
    let (dir, text) = setup_at(160, &url);
    // Two instances of the operator on one database, as behind a load balancer, whose
    // transactions PostgreSQL runs at the same time.
    let instances = [Arc::new(open(dir.path(), &text)), Arc::new(open(dir.path(), &text))];
    assert!(instances[0].store().is_shared());
    let start = Arc::new(std::sync::Barrier::new(16));
    let threads: Vec<_> = (0..16)
        .map(|i| {
            let op = Arc::clone(&instances[i % 2]);
            let start = Arc::clone(&start);
            std::thread::spawn(move || {
                start.wait();
                (0..10).map(|_| op.issue_subscription().unwrap()).collect::<Vec<_>>()
            })
        })
        .collect();
    let profiles: Vec<SubscriptionProfile> =
        threads.into_iter().flat_map(|t| t.join().unwrap()).collect();
    assert_eq!(profiles.len(), 160);
    let imsis: BTreeSet<_> = profiles.iter().map(|p| p.imsi.clone()).collect();
    let iccids: BTreeSet<_> = profiles.iter().map(|p| p.iccid.clone()).collect();
    assert_eq!(imsis.len(), 160, "every IMSI once");
    assert_eq!(iccids.len(), 160, "every ICCID once");
    for op in &instances {
        assert!(matches!(op.issue_subscription(), Err(MnoError::PoolExhausted { count: 160 })));
        for p in &profiles[..3] {
            assert_eq!(op.subscriber_status(&p.imsi).unwrap().iccid, p.iccid);
        }
    }
}

#[test]
fn allocations_survive_a_restart_and_exhaustion_is_clean() {
    for (dir, text) in stores(3) {
        allocations_survive_a_restart(dir.path(), &text);
    }
}

fn allocations_survive_a_restart(dir: &Path, text: &str) {
    let op = open(dir, text);
    let a = op.issue_subscription().unwrap();
    let b = op.issue_subscription().unwrap();
    drop(op);
    let op = open(dir, text);
    let c = op.issue_subscription().unwrap();
    assert_eq!(
        [a.imsi.as_str(), b.imsi.as_str(), c.imsi.as_str()],
        ["001010000000001", "001010000000002", "001010000000003"]
    );
    for p in [&a, &b, &c] {
        let view = op.subscriber_status(&p.imsi).unwrap();
        assert_eq!(view.status, SubscriberStatus::Active);
        assert_eq!(view.iccid, p.iccid);
    }
    assert!(matches!(op.issue_subscription(), Err(MnoError::PoolExhausted { count: 3 })));
    drop(op);
    assert!(matches!(open(dir, text).issue_subscription(), Err(MnoError::PoolExhausted { .. })));
    // Growing the range continues after the last number.
    let grown = text.replace("count = 3", "count = 4");
    assert_eq!(open(dir, &grown).issue_subscription().unwrap().imsi.as_str(), "001010000000004");
}

#[test]
fn the_store_refuses_another_key_and_another_range() {
    for (dir, text) in stores(3) {
        drop(open(dir.path(), &text));
        let other_key = text.replace(&"a".repeat(64), &"c".repeat(64));
        let config = load(&other_key, dir.path());
        assert!(matches!(Operator::open(&config), Err(MnoError::WrongStorageKey)));
        assert!(matches!(Operator::check_config(&config), Err(MnoError::WrongStorageKey)));
        let other_range =
            text.replace("first_msin = \"0000000001\"", "first_msin = \"0000000500\"");
        assert!(matches!(
            Operator::open(&load(&other_range, dir.path())),
            Err(MnoError::PoolChanged { .. })
        ));
    }
}

#[test]
fn a_certificate_of_another_role_is_refused() {
    let (dir, text) = setup(3);
    let wrong = text.replace("/mno-a.pem", "/mno-b.pem").replace("/mno-a.key", "/mno-b.key");
    let err = Operator::open(&load(&wrong, dir.path())).unwrap_err();
    assert!(err.to_string().contains("mno-b"), "{err}");
}

/// Every encoding of every secret of `profiles` that must not appear in stored bytes.
pub fn needles(profiles: &[SubscriptionProfile]) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for p in profiles {
        for (name, bytes) in [
            ("K", p.k.expose().to_vec()),
            ("OPc", p.opc.expose().to_vec()),
            ("KIc", p.ota.kic.expose().to_vec()),
            ("KID", p.ota.kid.expose().to_vec()),
        ] {
            out.push((format!("{name} of {} (hex)", p.imsi), hex::encode(&bytes).into_bytes()));
            out.push((
                format!("{name} of {} (HEX)", p.imsi),
                hex::encode_upper(&bytes).into_bytes(),
            ));
            out.push((format!("{name} of {} (raw)", p.imsi), bytes));
        }
    }
    out
}

#[test]
fn no_secret_is_stored_in_the_clear() {
    let (dir, text) = setup(10);
    let op = open(dir.path(), &text);
    let profiles: Vec<_> = (0..5).map(|_| op.issue_subscription().unwrap()).collect();
    let db = dir.path().join("mno-a.sqlite");
    let mut files = vec![std::fs::read(&db).unwrap()];
    for suffix in ["-wal", "-shm"] {
        if let Ok(bytes) = std::fs::read(format!("{}{suffix}", db.display())) {
            files.push(bytes);
        }
    }
    assert!(files[0].len() + files.get(1).map_or(0, Vec::len) > 4096, "the store holds data");
    for (what, needle) in needles(&profiles) {
        for file in &files {
            assert!(
                !file.windows(needle.len()).any(|w| w == needle.as_slice()),
                "{what} found in the store"
            );
        }
    }
    // The IMSIs themselves are not secret and are there.
    let all: Vec<u8> = files.concat();
    assert!(all.windows(15).any(|w| w == profiles[0].imsi.as_str().as_bytes()));
}

#[test]
fn the_example_configurations_load() {
    use std::os::unix::fs::OpenOptionsExt;
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let dir = tempfile::tempdir().unwrap();
    for role in ["mno-a", "mno-b"] {
        let text = std::fs::read_to_string(examples.join(format!("{role}.toml"))).unwrap();
        provisioning::mno::StorageKey::generate_file(&dir.path().join(format!("{role}-store.key")))
            .unwrap();
        let mut op = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(dir.path().join(format!("{role}-op.key")))
            .unwrap();
        std::io::Write::write_all(&mut op, format!("{OP_HEX}\n").as_bytes()).unwrap();
        let path = dir.path().join(format!("{role}.toml"));
        std::fs::write(&path, text).unwrap();
        let config = provisioning::mno::MnoConfig::load(&path).unwrap();
        assert_eq!(config.name(), role);
        let file = dir.path().join(format!("{role}.sqlite"));
        assert_eq!(config.database.file(), Some(file.as_path()));
        assert_eq!(config.pool.count(), 100_000);
        assert_eq!(config.peers.len(), 1);
    }
}
