//! Every role as its own process, configured from `examples/`: `tresor serve pva|mno|ro`,
//! `tresor device manufacture|run` and `tresor campaign create|status`, exactly as a
//! newcomer would run them by hand (examples/README.md), on loopback HTTPS.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::process::{Command, Stdio};

use support::{TRESOR, edit, prepare, serve, tresor};

#[test]
fn every_role_as_its_own_process() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path();
    prepare(dir);

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
    // The final reports leave the RO's outbox in the background, after the device heard
    // it switched: wait for them (bounded), then every device must have been reported.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let status = loop {
        let status = tresor(dir, &["campaign", "status", &id, "--ro", &ro, "--json"]);
        let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
        let reported = status["devices"].as_array().unwrap().iter().all(|d| d["reported"] == true);
        if reported || std::time::Instant::now() > deadline {
            break status;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert_eq!(status["summary"]["switched"], 2, "{status}");
    for device in status["devices"].as_array().unwrap() {
        assert_eq!(device["reported"], true, "both operators got the report: {device}");
    }
    // The artifacts a device keeps
    for name in ["evidence.cbor", "ear.cbor", "bundle.cose", "receipt.cbor"] {
        assert!(dir.join("m2me-001").join(name).exists(), "{name}");
    }
}
