//! A role refuses to start on a store file that exists but is not its store — empty, not
//! SQLite, another role's — exits non-zero with a message naming the file and what is wrong,
//! never announces itself (no ready file), and leaves the file as it was. With `--init` an
//! empty file becomes a fresh store and the role starts; a file with content is refused all
//! the same. The real binary, configured from `examples/`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::path::Path;
use std::time::Duration;

use support::{edit, log, prepare, serve_with, spawn_serve, wait_exit};

/// A directory prepared from `examples/` with every role on a port of the system's choosing.
fn lab() -> tempfile::TempDir {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path();
    prepare(dir);
    edit(&dir.join("pva.toml"), &[("127.0.0.1:8440", "127.0.0.1:0")]);
    edit(&dir.join("mno-a.toml"), &[("127.0.0.1:8441", "127.0.0.1:0")]);
    edit(&dir.join("ro.toml"), &[("127.0.0.1:8443", "127.0.0.1:0")]);
    temp
}

/// Runs `tresor serve ROLE --config CONFIG [EXTRA…]`, which must refuse to start: a non-zero
/// exit, no ready file, the store file and its directory untouched. Returns its stderr.
fn refused(dir: &Path, role: &str, config: &str, store: &str, extra: &[&str]) -> String {
    let before = std::fs::read(dir.join(store)).ok();
    let mut service = spawn_serve(dir, "refused", role, config, extra);
    let status = wait_exit(&mut service.child, Duration::from_secs(60))
        .unwrap_or_else(|| panic!("{role} did not exit:\n{}", log(dir, "refused")));
    let stderr = log(dir, "refused");
    assert!(!status.success(), "{role} started on {store}:\n{stderr}");
    assert!(!dir.join("refused.url").exists(), "a refusing {role} announced itself");
    assert_eq!(std::fs::read(dir.join(store)).ok(), before, "{store} was changed");
    for sidecar in ["-wal", "-shm", "-journal"] {
        assert!(!dir.join(format!("{store}{sidecar}")).exists(), "{store}{sidecar} appeared");
    }
    let path = dir.join(store).display().to_string();
    assert!(stderr.contains(&path), "the error names {path}:\n{stderr}");
    stderr
}

/// 4 KiB that are not an SQLite database.
fn garbage() -> Vec<u8> {
    (0..4096u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8).collect()
}

/// `--init` on an empty store file: the role starts, and the file is now a store.
fn starts_with_init(dir: &Path, role: &str, config: &str, store: &str) {
    let (service, url) = serve_with(dir, "init", role, config, &["--init"]);
    assert!(url.starts_with("https://localhost:"), "{url}");
    drop(service);
    let bytes = std::fs::read(dir.join(store)).unwrap();
    assert!(bytes.starts_with(b"SQLite format 3\0"), "{store} is a store now");
}

#[test]
fn mno_refuses_an_empty_store_and_starts_on_it_with_init() {
    let lab = lab();
    let dir = lab.path();
    std::fs::write(dir.join("mno-a.sqlite"), b"").unwrap();
    let stderr = refused(dir, "mno", "mno-a.toml", "mno-a.sqlite", &[]);
    assert!(stderr.contains("the file is empty (0 bytes), not a mno store"), "{stderr}");
    assert!(stderr.contains("--init"), "the error names the way out:\n{stderr}");
    starts_with_init(dir, "mno", "mno-a.toml", "mno-a.sqlite");
    // And once it is a store, a plain start opens it.
    let (service, _) = serve_with(dir, "again", "mno", "mno-a.toml", &[]);
    drop(service);
}

#[test]
fn mno_refuses_a_garbage_store_even_with_init() {
    let lab = lab();
    let dir = lab.path();
    std::fs::write(dir.join("mno-a.sqlite"), garbage()).unwrap();
    for extra in [&[][..], &["--init"][..]] {
        let stderr = refused(dir, "mno", "mno-a.toml", "mno-a.sqlite", extra);
        assert!(stderr.contains("not an SQLite database, so not a mno store"), "{stderr}");
    }
}

#[test]
fn pva_refuses_an_empty_store_and_starts_on_it_with_init() {
    let lab = lab();
    let dir = lab.path();
    std::fs::write(dir.join("pva.sqlite"), b"").unwrap();
    let stderr = refused(dir, "pva", "pva.toml", "pva.sqlite", &[]);
    assert!(stderr.contains("the file is empty (0 bytes), not a pva store"), "{stderr}");
    starts_with_init(dir, "pva", "pva.toml", "pva.sqlite");
}

#[test]
fn pva_refuses_a_garbage_store_even_with_init() {
    let lab = lab();
    let dir = lab.path();
    std::fs::write(dir.join("pva.sqlite"), garbage()).unwrap();
    for extra in [&[][..], &["--init"][..]] {
        let stderr = refused(dir, "pva", "pva.toml", "pva.sqlite", extra);
        assert!(stderr.contains("not an SQLite database, so not a pva store"), "{stderr}");
    }
}

#[test]
fn an_operator_refuses_the_pva_store() {
    let lab = lab();
    let dir = lab.path();
    // The PVA creates its store on a first start (no file there).
    let (pva, _) = serve_with(dir, "pva", "pva", "pva.toml", &[]);
    drop(pva);
    edit(&dir.join("mno-a.toml"), &[("path = \"mno-a.sqlite\"", "path = \"pva.sqlite\"")]);
    let stderr = refused(dir, "mno", "mno-a.toml", "pva.sqlite", &["--init"]);
    assert!(stderr.contains("a pva store, not a mno store"), "{stderr}");
}

#[test]
fn ro_refuses_an_empty_store_and_starts_on_it_with_init() {
    let lab = lab();
    let dir = lab.path();
    std::fs::write(dir.join("ro.sqlite"), b"").unwrap();
    let stderr = refused(dir, "ro", "ro.toml", "ro.sqlite", &[]);
    assert!(stderr.contains("the file is empty (0 bytes), not a ro store"), "{stderr}");
    starts_with_init(dir, "ro", "ro.toml", "ro.sqlite");
}
