//! Every role as its own process, configured from `examples/`: `tresor serve pva|mno|ro`,
//! `tresor device manufacture|run` and `tresor campaign create|status`, exactly as a
//! newcomer would run them by hand (examples/README.md), on loopback HTTPS.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const TRESOR: &str = env!("CARGO_BIN_EXE_tresor");

fn examples() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples")
}

/// A served role; stopped with SIGTERM (then killed) when dropped, also on panic.
struct Service {
    name: &'static str,
    child: Child,
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg(self.child.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!("{} did not stop on SIGTERM; killing it", self.name);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn tresor(dir: &Path, args: &[&str]) -> Output {
    let out = Command::new(TRESOR).current_dir(dir).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "tresor {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Starts `tresor serve ROLE` and waits for the URL it reports.
fn serve(dir: &Path, name: &'static str, role: &str, config: &str) -> (Service, String) {
    let ready = dir.join(format!("{name}.url"));
    let log = std::fs::File::create(dir.join(format!("{name}.log"))).unwrap();
    let child = Command::new(TRESOR)
        .current_dir(dir)
        .args(["serve", role, "--config", config, "--ready-file"])
        .arg(&ready)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let mut service = Service { name, child };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(url) = std::fs::read_to_string(&ready) {
            return (service, url.trim().to_owned());
        }
        if let Ok(Some(status)) = service.child.try_wait() {
            let log = std::fs::read_to_string(dir.join(format!("{name}.log"))).unwrap_or_default();
            panic!("{name} exited with {status}:\n{log}");
        }
        assert!(Instant::now() < deadline, "{name} did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn edit(path: &Path, edits: &[(&str, &str)]) {
    let mut text = std::fs::read_to_string(path).unwrap();
    for (from, to) in edits {
        assert!(text.contains(from), "{} has no {from:?}", path.display());
        text = text.replace(from, to);
    }
    std::fs::write(path, text).unwrap();
}

fn secret_file(path: &Path, bytes: usize) {
    use std::os::unix::fs::OpenOptionsExt;
    let mut value = vec![0u8; bytes];
    for (i, b) in value.iter_mut().enumerate() {
        *b = (i as u8).wrapping_mul(37).wrapping_add(bytes as u8);
    }
    let hex: String = value.iter().map(|b| format!("{b:02x}")).collect();
    let mut f =
        std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path).unwrap();
    std::io::Write::write_all(&mut f, hex.as_bytes()).unwrap();
}

#[test]
fn every_role_as_its_own_process() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path();
    for entry in std::fs::read_dir(examples()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            std::fs::copy(&path, dir.join(path.file_name().unwrap())).unwrap();
        }
    }
    std::fs::create_dir(dir.join("image")).unwrap();
    for entry in std::fs::read_dir(examples().join("image")).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, dir.join("image").join(path.file_name().unwrap())).unwrap();
    }
    tresor(dir, &["pki", "init", "pki"]);
    std::fs::create_dir(dir.join("manufacturers")).unwrap();
    std::fs::copy(dir.join("pki/manufacturer.pem"), dir.join("manufacturers/manufacturer.pem"))
        .unwrap();
    for mno in ["mno-a", "mno-b"] {
        secret_file(&dir.join(format!("{mno}-store.key")), 32);
        secret_file(&dir.join(format!("{mno}-op.key")), 16);
    }

    // Ports of the system's choosing, each learned from its service's ready file.
    edit(&dir.join("pva.toml"), &[("127.0.0.1:8440", "127.0.0.1:0")]);
    let (_pva, pva) = serve(dir, "pva", "pva", "pva.toml");
    edit(&dir.join("mno-a.toml"), &[("127.0.0.1:8441", "127.0.0.1:0")]);
    let (_mno_a, mno_a) = serve(dir, "mno-a", "mno", "mno-a.toml");
    edit(
        &dir.join("mno-b.toml"),
        &[("127.0.0.1:8442", "127.0.0.1:0"), ("https://localhost:8441", &mno_a)],
    );
    let (_mno_b, mno_b) = serve(dir, "mno-b", "mno", "mno-b.toml");
    edit(
        &dir.join("ro.toml"),
        &[
            ("127.0.0.1:8443", "127.0.0.1:0"),
            ("https://localhost:8440", &pva),
            ("https://localhost:8441", &mno_a),
            ("https://localhost:8442", &mno_b),
        ],
    );
    let (_ro, ro) = serve(dir, "ro", "ro", "ro.toml");

    let mut configs = Vec::new();
    for n in 1..=2 {
        let name = format!("device-{n}.toml");
        let text = std::fs::read_to_string(dir.join("device.toml"))
            .unwrap()
            .replace("https://localhost:8443", &ro)
            .replace("m2me-001", &format!("m2me-{n:03}"));
        std::fs::write(dir.join(&name), text).unwrap();
        tresor(
            dir,
            &[
                "device",
                "manufacture",
                "--config",
                &name,
                "--mno",
                "mno-a.toml",
                "--manufacturer-cert",
                "pki/manufacturer.pem",
                "--manufacturer-key",
                "pki/manufacturer.key",
                "--devices-file",
                "devices.txt",
            ],
        );
        configs.push(name);
    }

    let created = tresor(
        dir,
        &[
            "campaign",
            "create",
            "--from",
            "mno-a",
            "--to",
            "mno-b",
            "--devices",
            "devices.txt",
            "--ro",
            &ro,
            "--json",
        ],
    );
    let campaign: serde_json::Value = serde_json::from_slice(&created.stdout).unwrap();
    assert_eq!(campaign["state"], "ready", "{campaign}");
    let id = campaign["id"].as_str().unwrap().to_owned();

    let runs: Vec<_> = configs
        .iter()
        .map(|config| {
            Command::new(TRESOR)
                .current_dir(dir)
                .args(["device", "run", "--config", config, "--json"])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for run in runs {
        let out = run.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "device run failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let outcome: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(outcome["state"], "switched", "{outcome}");
        assert_eq!(outcome["usim_active"], true);
        assert_eq!(outcome["tre_active"], false);
        assert!(outcome["imsi"].as_str().unwrap().starts_with("00102"), "{outcome}");
    }
    let status = tresor(dir, &["campaign", "status", &id, "--ro", &ro, "--json"]);
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status["summary"]["switched"], 2, "{status}");
    for device in status["devices"].as_array().unwrap() {
        assert_eq!(device["reported"], true, "both operators got the report: {device}");
    }
    // The artifacts a device keeps
    for name in ["evidence.cbor", "ear.cbor", "bundle.cose", "receipt.cbor"] {
        assert!(dir.join("m2me-001").join(name).exists(), "{name}");
    }
}
