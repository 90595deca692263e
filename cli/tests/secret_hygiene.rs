//! Secret hygiene of the whole system (issue 7, "Secret hygiene"): several devices switch
//! from MNO-A to MNO-B (and one tampered device is refused and rolls back), with every log
//! line captured at TRACE level; then every K, OPc, KIc and KID issued — MNO-A's profiles,
//! read from the cards before the campaign, and MNO-B's, read from the cards after it — is
//! searched for, as raw bytes and as lowercase and uppercase hex, in every log line, every
//! error, every report and JSON output, every SQLite file of every role (main, -wal, -shm)
//! and every other file of the deployment's directory. The cards' state files are the only
//! place they may appear; the operators' stores hold them only encrypted.
//!
//! The first test runs the deployment in this process (`tresor::lab`), so that the MNO-A
//! profiles can be read before they are replaced; the second runs `tresor demo --keep DIR
//! --json FILE` with `RUST_LOG=trace` and searches its output for the MNO-B profiles.
//!
//! The third runs every role as its own process (`tresor serve`, `tresor device run`, as
//! `processes.rs` does) and puts a recording relay between the RO and MNO-B: it terminates
//! the RO's TLS with MNO-B's certificate and forwards each request with the RO's, keeping
//! every request and answer. Issue 12 ("Trust boundaries", end to end): the RO relays the
//! new subscription but never holds K, OPc, KIc or KID in the clear — not in what MNO-B
//! answers it, not in its store, not in its TRACE log, not in anything it answers — while
//! MNO-B's store holds them only sealed.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use protocol::SubscriptionProfile;
use protocol::role::Expected;
use provisioning::pki::Role;
use tre::tpm::KeyAlg;
use tresor::lab::{Lab, run_agent, write_sample_image, write_tampered_image};

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A secret in every form it could leak in: (what, bytes).
fn forms(label: &str, profile: &SubscriptionProfile) -> Vec<(String, Vec<u8>)> {
    let raw = [
        ("K", profile.k.expose().to_vec()),
        ("OPc", profile.opc.expose().to_vec()),
        ("KIc", profile.ota.kic.expose().to_vec()),
        ("KID", profile.ota.kid.expose().to_vec()),
    ];
    let mut out = Vec::new();
    for (name, bytes) in raw {
        let what = format!("{name} of {label} profile {}", profile.imsi);
        out.push((format!("{what} (hex)"), hex::encode(&bytes).into_bytes()));
        out.push((format!("{what} (HEX)"), hex::encode_upper(&bytes).into_bytes()));
        out.push((format!("{what} (raw)"), bytes));
    }
    out
}

fn profile_of(card: &Path) -> SubscriptionProfile {
    uicc::state::State::load(card).unwrap().profile
}

/// Every file under `dir` but the cards' state files, with its contents.
fn files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.file_name().is_some_and(|n| n != "uicc.json") {
                // A file may vanish between listing and reading (a WAL checkpoint).
                if let Ok(bytes) = std::fs::read(&path) {
                    out.push((path, bytes));
                }
            }
        }
    }
    out
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Asserts that no secret of `secrets` appears in any of `places`.
fn assert_nowhere(secrets: &[(String, Vec<u8>)], places: &[(String, Vec<u8>)]) {
    for (what, needle) in secrets {
        for (place, bytes) in places {
            assert!(!contains(bytes, needle), "{what} found in {place}");
        }
    }
}

fn named_files(dir: &Path, when: &str) -> Vec<(String, Vec<u8>)> {
    files(dir).into_iter().map(|(p, b)| (format!("{} ({when})", p.display()), b)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_issued_secret_leaves_the_cards_or_the_operators_encrypted_stores() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    tracing::subscriber::set_global_default(subscriber).unwrap();

    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path().join("lab");
    let image = write_sample_image(&scratch.path().join("image")).unwrap();
    let bad_image = write_tampered_image(&scratch.path().join("tampered-image")).unwrap();
    let lab = Lab::start(&dir, &image).await.unwrap();
    let devices: Vec<_> = (0..4).map(|i| lab.manufacture(i, KeyAlg::Ecc).unwrap()).collect();
    let mut secrets = Vec::new();
    for d in &devices {
        secrets.extend(forms("MNO-A", &profile_of(&d.card)));
    }
    let campaign = lab.create_campaign(&devices.iter().collect::<Vec<_>>()).await.unwrap();
    let agents: Vec<_> = devices
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let config = lab.agent_config(d, Duration::from_secs(60)).unwrap();
            run_agent(d, if i == 3 { &bad_image } else { &image }, config)
        })
        .collect();
    let outcomes: Vec<_> = tokio::task::spawn_blocking(move || {
        agents.into_iter().map(|a| a.join().unwrap()).collect::<Vec<_>>()
    })
    .await
    .unwrap();

    // Everything the deployment said: the RO's report, the operators' views, the outcomes.
    let mut outputs: Vec<(String, Vec<u8>)> = Vec::new();
    let status = lab.campaign(&campaign.id).await.unwrap();
    assert_eq!(status.summary.switched, 3, "{status:#?}");
    assert_eq!(status.summary.failed, 1, "{status:#?}");
    outputs.push(("the RO's campaign report".into(), serde_json::to_vec(&status).unwrap()));
    let ro = lab.pki.client(Role::Ro).unwrap();
    let mut imsis = Vec::new();
    for (name, base) in [("MNO-A", &lab.urls.mno_a), ("MNO-B", &lab.urls.mno_b)] {
        let view = ro.get(format!("{base}/v1/campaigns/{}", campaign.id)).send().await.unwrap();
        let view: serde_json::Value = transport::client::json(view).await.unwrap();
        for device in view["devices"].as_array().unwrap() {
            for key in ["old_imsi", "new_imsi"] {
                if let Some(imsi) = device[key].as_str() {
                    imsis.push((base.clone(), imsi.to_owned()));
                }
            }
        }
        outputs.push((format!("{name}'s campaign view"), serde_json::to_vec(&view).unwrap()));
    }
    for (base, imsi) in imsis {
        let response = ro.get(format!("{base}/v1/subscribers/{imsi}")).send().await.unwrap();
        outputs.push((format!("subscriber {imsi}"), response.bytes().await.unwrap().to_vec()));
    }
    for (i, outcome) in outcomes.iter().enumerate() {
        let text = match outcome {
            Ok(o) => format!("{o:?}"),
            Err(e) => format!("{e:#} / {e:?}"),
        };
        outputs.push((format!("outcome of device {i}"), text.into_bytes()));
    }
    for (i, d) in devices.iter().enumerate().take(3) {
        let new = profile_of(&d.card);
        assert_ne!(new.imsi, d.imsi, "device {i} switched");
        let card = std::fs::read(&d.card).unwrap();
        let new_forms = forms("MNO-B", &new);
        // The search finds what is there: the card holds its profile (as hex).
        assert!(contains(&card, &new_forms[0].1), "the card state holds K as hex");
        secrets.extend(new_forms);
    }
    assert_eq!(secrets.len(), (4 + 3) * 4 * 3);

    let running = named_files(&dir, "services running");
    lab.stop().await;
    drop(devices);
    let stopped = named_files(&dir, "services stopped");
    for role in ["pva/pva.sqlite", "ro/ro.sqlite", "mno-a/mno-a.sqlite", "mno-b/mno-b.sqlite"] {
        assert!(
            running.iter().chain(&stopped).any(|(p, _)| p.contains(role)),
            "{role} was searched"
        );
    }
    assert!(
        running.iter().any(|(p, _)| p.ends_with("-wal (services running)")),
        "WAL files were searched"
    );

    let logs = captured.0.lock().unwrap().clone();
    let text = String::from_utf8_lossy(&logs);
    assert!(text.contains("TRACE") || text.contains("DEBUG"), "logs were captured at TRACE level");
    assert!(
        text.contains("profile signed") && text.contains("event-not-in-reference-values"),
        "{text}"
    );
    let mut places = vec![("the logs".to_owned(), logs)];
    places.extend(outputs);
    places.extend(running);
    places.extend(stopped);
    assert!(places.len() > 100, "every file, output and log was searched");
    assert_nowhere(&secrets, &places);
}

#[test]
fn tresor_demo_writes_no_new_secret_to_its_output_logs_or_directory() {
    let scratch = tempfile::tempdir().unwrap();
    let keep = scratch.path().join("demo");
    let json = scratch.path().join("demo.json");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_tresor"))
        .args(["demo", "--devices", "2", "--keep"])
        .arg(&keep)
        .arg("--json")
        .arg(&json)
        .env("RUST_LOG", "trace")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("TRACE") || stderr.contains("DEBUG"), "verbose logs were captured");
    let mut secrets = Vec::new();
    for device in std::fs::read_dir(keep.join("devices")).unwrap() {
        secrets.extend(forms("MNO-B", &profile_of(&device.unwrap().path().join("uicc.json"))));
    }
    assert_eq!(secrets.len(), 2 * 4 * 3);
    let mut places = vec![
        ("stdout".to_owned(), output.stdout.clone()),
        ("stderr".to_owned(), output.stderr.clone()),
        ("the --json report".to_owned(), std::fs::read(&json).unwrap()),
    ];
    places.extend(named_files(&keep, "kept"));
    assert_nowhere(&secrets, &places);
}

/// One request the RO made to MNO-B and MNO-B's answer, as the relay saw them.
#[derive(Clone, Debug)]
struct Exchange {
    method: String,
    path: String,
    request: Vec<u8>,
    status: u16,
    response: Vec<u8>,
}

/// A TLS relay in MNO-B's place: the RO connects to it as to MNO-B (it presents MNO-B's
/// certificate and requires a client certificate under the CI), and it forwards each request
/// to MNO-B with the RO's certificate, keeping what went each way.
struct Recorder {
    upstream: String,
    http: reqwest::Client,
    exchanges: Mutex<Vec<Exchange>>,
}

impl Recorder {
    /// Serves on a loopback port of `rt` until the runtime is dropped; returns its URL.
    fn start(rt: &tokio::runtime::Runtime, pki: &Path, upstream: &str) -> (Arc<Self>, String) {
        let roots = transport::tls::roots_from_pem_file(&pki.join("ci.pem")).unwrap();
        let as_mno_b =
            transport::Identity::from_pem_files(&pki.join("mno-b.pem"), &pki.join("mno-b.key"))
                .unwrap();
        let as_ro =
            transport::Identity::from_pem_files(&pki.join("ro.pem"), &pki.join("ro.key")).unwrap();
        let tls =
            transport::server_config(&as_mno_b, transport::ClientAuth::Required(roots.clone()))
                .unwrap();
        let recorder = Arc::new(Self {
            upstream: upstream.trim_end_matches('/').to_owned(),
            http: transport::client::client(
                &roots,
                Some(&as_ro),
                &transport::ServerRole::Expected(Expected::named(
                    protocol::role::Role::Operator,
                    "mno-b",
                )),
            )
            .unwrap(),
            exchanges: Mutex::new(Vec::new()),
        });
        let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
        let url = format!("https://localhost:{}", listener.local_addr().unwrap().port());
        let router = axum::Router::new().fallback(relay).with_state(Arc::clone(&recorder));
        rt.spawn(transport::serve(listener, tls, router, std::future::pending::<()>()));
        (recorder, url)
    }

    fn exchanges(&self) -> Vec<Exchange> {
        self.exchanges.lock().unwrap().clone()
    }
}

async fn relay(
    axum::extract::State(recorder): axum::extract::State<Arc<Recorder>>,
    request: axum::extract::Request,
) -> axum::response::Response {
    use axum::http::header::CONTENT_TYPE;
    use axum::response::IntoResponse;
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, 4 << 20).await.unwrap();
    let path = parts.uri.path_and_query().map(|p| p.to_string()).unwrap_or_default();
    let mut forward =
        recorder.http.request(parts.method.clone(), format!("{}{path}", recorder.upstream));
    if let Some(media) = parts.headers.get(CONTENT_TYPE) {
        forward = forward.header(CONTENT_TYPE, media);
    }
    let answer = forward.body(body.to_vec()).send().await.unwrap();
    let status = answer.status();
    let media = answer.headers().get(CONTENT_TYPE).cloned();
    let response = answer.bytes().await.unwrap().to_vec();
    recorder.exchanges.lock().unwrap().push(Exchange {
        method: parts.method.to_string(),
        path,
        request: body.to_vec(),
        status: status.as_u16(),
        response: response.clone(),
    });
    let mut out = (status, response).into_response();
    if let Some(media) = media {
        out.headers_mut().insert(CONTENT_TYPE, media);
    }
    out
}

#[test]
fn with_every_role_its_own_process_the_ro_never_holds_the_new_keys() {
    use support::{TRESOR, edit, prepare, serve_logging, tresor};

    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path();
    prepare(dir);
    edit(&dir.join("pva.toml"), &[("127.0.0.1:8440", "127.0.0.1:0")]);
    let (pva_service, pva) = serve_logging(dir, "pva", "pva", "pva.toml", "trace");
    edit(&dir.join("mno-a.toml"), &[("127.0.0.1:8441", "127.0.0.1:0")]);
    let (mno_a_service, mno_a) = serve_logging(dir, "mno-a", "mno", "mno-a.toml", "trace");
    edit(
        &dir.join("mno-b.toml"),
        &[("127.0.0.1:8442", "127.0.0.1:0"), ("https://localhost:8441", &mno_a)],
    );
    let (mno_b_service, mno_b) = serve_logging(dir, "mno-b", "mno", "mno-b.toml", "trace");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (recorder, relay_url) = Recorder::start(&rt, &dir.join("pki"), &mno_b);
    edit(
        &dir.join("ro.toml"),
        &[
            ("127.0.0.1:8443", "127.0.0.1:0"),
            ("https://localhost:8440", &pva),
            ("https://localhost:8441", &mno_a),
            ("https://localhost:8442", &relay_url),
        ],
    );
    let (ro_service, ro) = serve_logging(dir, "ro", "ro", "ro.toml", "trace");

    let mut secrets = Vec::new();
    let mut outputs: Vec<(String, Vec<u8>)> = Vec::new();
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
        secrets.extend(forms("MNO-A", &profile_of(&dir.join(format!("m2me-{n:03}/uicc.json")))));
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
    outputs.push(("the RO's answer to campaign create".into(), created.stdout));

    let runs: Vec<_> = configs
        .iter()
        .map(|config| {
            std::process::Command::new(TRESOR)
                .current_dir(dir)
                .args(["device", "run", "--config", config, "--json"])
                .env("RUST_LOG", "trace")
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for (config, run) in configs.iter().zip(runs) {
        let out = run.wait_with_output().unwrap();
        assert!(out.status.success(), "{config}:\n{}", String::from_utf8_lossy(&out.stderr));
        let outcome: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(outcome["state"], "switched", "{outcome}");
        outputs.push((format!("device run {config} (stdout)"), out.stdout));
        outputs.push((format!("device run {config} (stderr)"), out.stderr));
    }
    let status = tresor(dir, &["campaign", "status", &id, "--ro", &ro, "--json"]);
    let report: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(report["summary"]["switched"], 2, "{report}");
    outputs.push(("the RO's campaign status".into(), status.stdout));

    let mut new_profiles = Vec::new();
    for n in 1..=2 {
        let card = dir.join(format!("m2me-{n:03}/uicc.json"));
        let profile = profile_of(&card);
        assert!(profile.imsi.as_str().starts_with("00102"), "device {n} runs MNO-B's profile");
        let new_forms = forms("MNO-B", &profile);
        // The search finds what is there: the card holds its profile (as hex).
        assert!(contains(&std::fs::read(&card).unwrap(), &new_forms[0].1), "K in the card");
        secrets.extend(new_forms);
        new_profiles.push(profile);
    }
    assert_eq!(secrets.len(), (2 + 2) * 4 * 3);

    // What MNO-B answered the RO: the new subscriptions went through here.
    let exchanges = recorder.exchanges();
    let attestations: Vec<&Exchange> =
        exchanges.iter().filter(|e| e.path.ends_with("/attestation")).collect();
    assert!(attestations.len() >= 2, "the RO asked MNO-B for both profiles: {exchanges:#?}");
    assert!(attestations.iter().all(|e| e.method == "POST" && e.status == 200));
    for e in &attestations {
        // The answer: a bundle bound to the device and the EAR the RO sent, and the facts of
        // the profile the device then installed.
        let answer: provisioning::mno::api::AttestationResponse =
            provisioning::mno::api::from_cbor(&e.response).unwrap();
        protocol::bundle::check_bundle_binding(
            &answer.bundle,
            &answer.device_id,
            &protocol::bundle::ear_hash(&e.request),
        )
        .unwrap();
        assert!(e.path.contains(&answer.device_id.to_hex()), "{}", e.path);
        assert!(
            new_profiles.iter().any(|p| (&p.iccid, &p.imsi) == (&answer.iccid, &answer.imsi)),
            "{answer:?}"
        );
    }
    let mut places: Vec<(String, Vec<u8>)> = Vec::new();
    for e in &exchanges {
        places.push((format!("the RO's request {} {}", e.method, e.path), e.request.clone()));
        places.push((format!("MNO-B's answer to {} {}", e.method, e.path), e.response.clone()));
    }

    let running = named_files(dir, "services running");
    for service in [ro_service, mno_b_service, mno_a_service, pva_service] {
        drop(service);
    }
    drop(rt);
    let stopped = named_files(dir, "services stopped");
    for file in ["ro.sqlite", "ro.log", "mno-b.sqlite", "mno-b.log"] {
        let file = format!("/{file} (");
        assert!(running.iter().chain(&stopped).any(|(p, _)| p.contains(&file)), "{file} searched");
    }
    let ro_log = std::fs::read_to_string(dir.join("ro.log")).unwrap();
    assert!(ro_log.contains("TRACE") || ro_log.contains("DEBUG"), "the RO logged at TRACE");
    places.extend(outputs);
    places.extend(running);
    places.extend(stopped);
    assert_nowhere(&secrets, &places);

    // MNO-B's store holds the new subscriptions, sealed (AES-256-GCM: nonce ‖ ciphertext ‖
    // tag), and nothing of them in the clear (searched above).
    let store = rusqlite::Connection::open_with_flags(
        dir.join("mno-b.sqlite"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    for profile in &new_profiles {
        let (k, opc, kic, kid): (Vec<u8>, Vec<u8>, Vec<u8>, Vec<u8>) = store
            .query_row(
                "SELECT k, opc, kic, kid FROM subscribers WHERE imsi = ?1",
                [profile.imsi.as_str()],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .unwrap();
        for sealed in [k, opc, kic, kid] {
            assert_eq!(sealed.len(), 12 + 16 + 16, "a sealed 16-byte key");
        }
        let sealed_profile: Vec<u8> = store
            .query_row(
                "SELECT d.profile FROM campaign_devices d JOIN allocations a
                 ON a.campaign = d.campaign AND a.device_id = d.device_id WHERE a.imsi = ?1",
                [profile.imsi.as_str()],
                |r| r.get(0),
            )
            .unwrap();
        assert!(sealed_profile.len() > 300, "the signed profile is kept, sealed");
    }
}
