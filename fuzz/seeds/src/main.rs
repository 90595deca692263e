//! Writes `fuzz/fixtures/` and the seed corpora `fuzz/corpus/<target>/` from real outputs:
//! one lab run (`tresor::lab`, the same deployment the end-to-end tests use: PKI, PVA, RO,
//! MNO-A and MNO-B on loopback HTTPS) switches two swtpm devices, one with an ECC and one
//! with an RSA EK, from MNO-A to MNO-B and keeps their artifacts (`evidence.cbor`,
//! `ear.cbor`, `bundle.cose`, `receipt.cbor`, `ek.pem`). The real event logs of
//! `testdata/eventlogs` of the repository (or `$TRESOR_EVENTLOGS`) are copied as they are.
//!
//! Not part of any test suite: run it by hand when a wire format changes, then rebuild
//! the fuzz targets (they embed `fixtures/`):
//!
//! ```text
//! cargo run --manifest-path fuzz/seeds/Cargo.toml
//! ```

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use ciborium::Value;
use coset::{CoseSign1, TaggedCborSerializable};
use protocol::bundle::{self, ProfilePayload, ProfileSigner, SoftwareRecipient};
use protocol::device_api::{self, AbortAck, AkaResult, AttachRequest, DeviceTask, InstallResult};
use protocol::ear::{EarClaims, TrustTier};
use protocol::eventlog::EventLog;
use protocol::evidence::Evidence;
use protocol::milenage::{Milenage, Rand, Sqn};
use protocol::pva_api::{
    ActivateRequest, AppraiseRequest, AppraiseResponse, ChallengeRequest, ChallengeResponse,
    CredentialSecret, EnrolRequest, Message,
};
use protocol::receipt::SignedReceipt;
use protocol::tpm::tools::QuotePcrs;
use protocol::tpm::{Attest, Marshal, PcrValues, Public, Unmarshal, make_credential};
use protocol::{Nonce, OtaKey};
use provisioning::mno::api::{self as mno_api, ImsiList, ImsiListAck, ImsiListEntry};
use provisioning::pki::Role;
use serde_bytes::ByteBuf;
use tre::agent::AgentState;
use tre::tpm::{KeyAlg, Tpm};
use tresor::lab::{Lab, run_agent};

#[path = "../../src/card_profile.rs"]
mod card_profile;

const DEFAULT_EVENTLOGS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../testdata/eventlogs");

/// One lab device's artifacts.
struct Device {
    evidence_cbor: Vec<u8>,
    evidence: Evidence,
    ear: Vec<u8>,
    bundle: Vec<u8>,
    receipt: Vec<u8>,
    ek_cert: Vec<u8>,
    ek_public: Vec<u8>,
    tag: &'static str,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let fuzz = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").canonicalize()?;
    let image = fuzz.join("../examples/image").canonicalize()?;
    let work = tempfile::tempdir()?;

    let lab = Lab::start(work.path(), &image).await?;
    let made = [lab.manufacture(0, KeyAlg::Ecc)?, lab.manufacture(1, KeyAlg::Rsa)?];
    // One campaign per device, one after the other: the seeds need one complete run of
    // each EK type, not a concurrency test.
    for d in &made {
        let report = lab.create_campaign(&[d]).await?;
        ensure!(report.state == "ready", "campaign not ready: {report:?}");
        let agent = run_agent(d, &image, lab.agent_config(d, Duration::from_secs(90))?);
        let outcome =
            tokio::task::spawn_blocking(move || agent.join().expect("agent thread")).await??;
        ensure!(outcome.state == AgentState::Switched, "device {} did not switch", d.index);
    }

    let mut devices = Vec::new();
    let mut eks = Vec::new();
    for (d, tag) in made.iter().zip(["ecc-ek", "rsa-ek"]) {
        let read = |name: &str| std::fs::read(d.dir.join(name)).with_context(|| name.to_owned());
        let ek_pem = pem::parse(read("ek.pem")?)?;
        let ek_public = {
            let mut tpm = Tpm::connect(&d.swtpm.tcti())?;
            let ek = tpm.ek(d.ek_alg)?;
            let bytes = ek.public_bytes()?;
            tpm.release(ek)?;
            bytes
        };
        eks.push((tag, ek_pem.contents().to_vec(), ek_public.clone()));
        let evidence_cbor = read("evidence.cbor")?;
        devices.push(Device {
            evidence: Evidence::from_cbor(&evidence_cbor)?,
            evidence_cbor,
            ear: read("ear.cbor")?,
            bundle: read("bundle.cose")?,
            receipt: read("receipt.cbor")?,
            ek_cert: ek_pem.into_contents(),
            ek_public,
            tag,
        });
    }
    let pki_dir = lab.dir.join("pki");
    let key_der = |stem: &str| -> Result<Vec<u8>> {
        let block = pem::parse(std::fs::read(pki_dir.join(format!("{stem}.key")))?)?;
        ensure!(block.tag() == "PRIVATE KEY", "{stem}.key is not PKCS#8");
        Ok(block.into_contents())
    };
    let pva_key = key_der("pva")?;
    let mno_b_key = key_der("mno-b")?;
    let pva_cert = lab.pki.role(Role::Pva).certificate_der().to_vec();
    let mno_b_cert = lab.pki.role(Role::mno_b()).certificate_der().to_vec();
    let mno_b_pem = std::fs::read_to_string(pki_dir.join("mno-b.key"))?;
    let manufacturer_root = pem::parse(lab.pki.manufacturer_cert_pem())?.into_contents();
    let ci_root = lab.pki.ci_root().to_vec();
    lab.stop().await;

    let first = &devices[0];
    let device_id = first.evidence.device_id.clone();
    let ear_hash = bundle::ear_hash(&first.ear);
    let ear_payload = CoseSign1::from_tagged_slice(&first.ear)
        .map_err(|e| anyhow::anyhow!("EAR: {e}"))?
        .payload
        .context("EAR payload")?;
    let claims = EarClaims::from_cbor(&ear_payload)?;
    let now = claims.issued_at + 2;
    ensure!(now < claims.expires_at, "EAR lifetime too short for a fixed clock");
    let signed_receipt = SignedReceipt::from_cbor(&first.receipt)?;

    // ---- fixtures ----
    let fixtures = fuzz.join("fixtures");
    let put = |name: &str, bytes: &[u8]| std::fs::write(fixtures.join(name), bytes);
    put("ci.der", &ci_root)?;
    put("manufacturer.der", &manufacturer_root)?;
    put("pva.der", &pva_cert)?;
    put("pva.pk8", &pva_key)?;
    put("mno-b.der", &mno_b_cert)?;
    put("mno-b.pk8", &mno_b_key)?;
    put("device-id.bin", device_id.as_bytes())?;
    put("ear-hash.bin", &ear_hash)?;
    put("ak-public.tpmt", &first.evidence.ak_public)?;
    put("receipt.cbor", &signed_receipt.receipt)?;
    put("now.txt", format!("{now}\n").as_bytes())?;

    // The seeds must get past every binding with the fixtures, or the targets would only
    // ever fuzz the first checks.
    let clock = std::time::UNIX_EPOCH + Duration::from_secs(now);
    let mut ci = protocol::x509::TrustAnchors::new();
    ci.add_der(&ci_root)?;
    protocol::ear::EarVerifier::new(ci.clone()).verify(&first.ear, clock, &device_id, None)?;
    let ak_public = Public::from_bytes(&first.evidence.ak_public)?;
    let expected_receipt = protocol::receipt::Receipt::from_cbor(&signed_receipt.receipt)?;
    signed_receipt.verify(&ak_public, &expected_receipt)?;

    let corpus = Corpus::new(fuzz.join("corpus"))?;

    // ---- eventlog ----
    let logs = std::env::var_os("TRESOR_EVENTLOGS").map_or(DEFAULT_EVENTLOGS.into(), PathBuf::from);
    // The tpm2-tools fixtures at the top, other projects' logs one directory down.
    let mut found = Vec::new();
    for entry in std::fs::read_dir(&logs).with_context(|| logs.display().to_string())? {
        let path = entry?.path();
        if path.is_dir() {
            let source = path.file_name().unwrap().to_string_lossy().into_owned();
            for inner in std::fs::read_dir(&path)? {
                found.push((format!("{source}-"), inner?.path()));
            }
        } else {
            found.push((String::new(), path));
        }
    }
    for (prefix, path) in found {
        if path.extension().is_some_and(|e| e == "bin") {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            corpus.put("eventlog", &format!("testdata-{prefix}{name}"), &std::fs::read(&path)?)?;
        }
    }
    corpus.put("eventlog", "lab-device.bin", &first.evidence.event_log)?;
    let log = EventLog::parse(&first.evidence.event_log)?;

    // ---- evidence ----
    for d in &devices {
        corpus.put("evidence", &format!("lab-{}.cbor", d.tag), &d.evidence_cbor)?;
    }

    // ---- tpm_structures (first byte selects the parser, see fuzz_targets/tpm_structures.rs)
    let tpm2b = |b: &[u8]| [&(b.len() as u16).to_be_bytes()[..], b].concat();
    for d in &devices {
        let e = &d.evidence;
        let t = d.tag;
        let bundle_key = e.bundle_key.as_ref().context("the TRE's evidence has a bundle key")?;
        corpus.put(
            "tpm_structures",
            &format!("attest-quote-{t}"),
            &[&[0][..], &e.quote.attest].concat(),
        )?;
        corpus.put(
            "tpm_structures",
            &format!("attest-certify-{t}"),
            &[&[0][..], &bundle_key.certify.attest].concat(),
        )?;
        corpus.put(
            "tpm_structures",
            &format!("attest-tpm2b-{t}"),
            &[&[1][..], &tpm2b(&e.quote.attest)].concat(),
        )?;
        corpus.put(
            "tpm_structures",
            &format!("public-ak-{t}"),
            &[&[2][..], &e.ak_public].concat(),
        )?;
        corpus.put(
            "tpm_structures",
            &format!("public-bundle-key-{t}"),
            &[&[2][..], &bundle_key.public].concat(),
        )?;
        corpus.put(
            "tpm_structures",
            &format!("signature-quote-{t}"),
            &[&[4][..], &e.quote.signature].concat(),
        )?;
        corpus.put(
            "tpm_structures",
            &format!("signature-receipt-{t}"),
            &[&[4][..], &SignedReceipt::from_cbor(&d.receipt)?.signature].concat(),
        )?;
    }
    let ak = Public::from_bytes(&first.evidence.ak_public)?;
    for (t, _, ek_public) in &eks {
        corpus.put("tpm_structures", &format!("public-ek-{t}"), &[&[2][..], ek_public].concat())?;
        corpus.put(
            "tpm_structures",
            &format!("public-tpm2b-ek-{t}"),
            &[&[3][..], &tpm2b(ek_public)].concat(),
        )?;
        let made = make_credential(&Public::from_bytes(ek_public)?, &ak.name(), &[0x5a; 32])?;
        corpus.put(
            "tpm_structures",
            &format!("credential-{t}"),
            &[&[7][..], &made.to_tpm2_tools()].concat(),
        )?;
    }
    let quote = Attest::from_bytes(&first.evidence.quote.attest)?;
    let selection = quote.quote().context("quote info")?.pcr_select.clone();
    corpus.put("tpm_structures", "pcr-selection", &[&[5][..], &selection.to_bytes()].concat())?;
    let banks = log.replay()?;
    let mut values = PcrValues::new();
    for (bank, pcr) in selection.iter() {
        let value =
            banks.value(bank, u32::from(pcr)).map(<[u8]>::to_vec).unwrap_or(vec![0; bank.size()]);
        values.insert(bank, pcr, value)?;
    }
    let quote_pcrs = QuotePcrs { selection: selection.clone(), values }.to_bytes()?;
    corpus.put("tpm_structures", "quote-pcrs", &[&[6][..], &quote_pcrs].concat())?;

    // ---- ear (0: as received, 1: claims re-signed by the fixture PVA, 2: claims alone)
    for d in &devices {
        corpus.put("ear", &format!("lab-{}", d.tag), &[&[0][..], &d.ear].concat())?;
    }
    corpus.put("ear", "claims-resigned", &[&[1][..], &ear_payload].concat())?;
    corpus.put("ear", "claims", &[&[2][..], &ear_payload].concat())?;

    // ---- bundle (0: Z ‖ COSE_Encrypt, 1: signed profile, 2: profile payload re-signed,
    // 3: signed receipt)
    let payload = ProfilePayload {
        device_id: device_id.clone(),
        operator: "mno-b".into(),
        campaign: "fuzz-seed".into(),
        profile: card_profile::profile(),
        sequence: 7,
        issued: now - 10,
        expires: now + 3600,
        ear_hash,
    };
    let signer = ProfileSigner::from_pkcs8_pem(&mno_b_pem, vec![mno_b_cert.clone()])?;
    let signed_profile = signer.sign(&payload)?;
    let recipient = SoftwareRecipient::generate()?;
    let sealed = bundle::encrypt_bundle(
        &signed_profile,
        recipient.x(),
        recipient.y(),
        &device_id,
        &ear_hash,
    )?;
    let mut z = Vec::new();
    let opened = bundle::decrypt_bundle(&sealed, &device_id, &ear_hash, |x, y| {
        let shared = recipient.zgen(x, y)?;
        z = shared.to_vec();
        Ok::<_, bundle::BundleError>(shared)
    })?;
    ensure!(opened.as_slice() == signed_profile.as_slice() && z.len() == 32, "bundle round trip");
    bundle::verify_profile(&signed_profile, &ci, clock, "mno-b", &device_id)?;
    corpus.put("bundle", "software-recipient", &[&[0][..], &z, &sealed].concat())?;
    for d in &devices {
        corpus.put(
            "bundle",
            &format!("lab-{}", d.tag),
            &[&[0][..], &[0; 32], &d.bundle].concat(),
        )?;
        corpus.put("bundle", &format!("receipt-{}", d.tag), &[&[3][..], &d.receipt].concat())?;
    }
    corpus.put("bundle", "signed-profile", &[&[1][..], &signed_profile].concat())?;
    let mut payload_cbor = Vec::new();
    ciborium::into_writer(&payload, &mut payload_cbor)?;
    corpus.put("bundle", "profile-payload", &[&[2][..], &payload_cbor].concat())?;

    // ---- ekcert (0: one certificate, 1: frames = leaf, intermediates...)
    for (t, cert, _) in &eks {
        corpus.put("ekcert", &format!("lab-{t}"), &[&[0][..], cert].concat())?;
        corpus.put(
            "ekcert",
            &format!("chain-{t}"),
            &[&[1][..], &frames(&[cert, &manufacturer_root])].concat(),
        )?;
    }
    corpus.put("ekcert", "not-an-ek-pva", &[&[0][..], &pva_cert].concat())?;

    // ---- apdu (vpcd frames; one-byte frames are vpcd control bytes)
    apdu_seeds(&corpus)?;

    // ---- api_messages (first byte selects the type, see fuzz_targets/api_messages.rs)
    let nonce = Nonce::from_bytes(&[0x42; 32])?;
    let activation = protocol::ota::Activation::new("c1", "mno-b")?;
    let ota = protocol::ota::seal_activate_tre(
        &OtaKey::new(card_profile::KID),
        &card_profile::ICCID.parse()?,
        1,
        &activation,
    )?;
    let tasks = [
        ("idle", DeviceTask::Idle),
        ("enrol", DeviceTask::Enrol),
        ("done", DeviceTask::Done { campaign: "c1".into(), switched: true, reason: None }),
        (
            "activate-tre",
            DeviceTask::ActivateTre { campaign: "c1".into(), command: ByteBuf::from(ota) },
        ),
        ("attest", DeviceTask::Attest { nonce, pcr_selection: "sha256:0,2,4,8,9".into() }),
        (
            "install",
            DeviceTask::Install {
                campaign: "c1".into(),
                bundle: ByteBuf::from(first.bundle.clone()),
                ear: ByteBuf::from(first.ear.clone()),
            },
        ),
        (
            "aka",
            DeviceTask::Aka { rand: ByteBuf::from(vec![1; 16]), autn: ByteBuf::from(vec![2; 16]) },
        ),
        (
            "commit",
            DeviceTask::Commit {
                campaign: "c1".into(),
                sequence: 2,
                order: ByteBuf::from(vec![0xd2, 0x84]),
            },
        ),
        (
            "abort",
            DeviceTask::Abort {
                campaign: "c1".into(),
                reason: "campaign cancelled".into(),
                order: ByteBuf::from(vec![0xd2, 0x84]),
            },
        ),
    ];
    for (name, task) in &tasks {
        corpus.put(
            "api_messages",
            &format!("00-device-task-{name}"),
            &tagged(0, &device_api::to_cbor(task)?),
        )?;
    }
    let attach = AttachRequest {
        device_id: device_id.clone(),
        ek_certificate: ByteBuf::from(first.ek_cert.clone()),
        ek_public: ByteBuf::from(first.ek_public.clone()),
        tre_active: true,
        activation_proof: ByteBuf::from(vec![0x01, 0x01, 0, 0, 0, 0, 1, 0x00]),
    };
    corpus.put("api_messages", "01-attach", &tagged(1, &device_api::to_cbor(&attach)?))?;
    let installed = InstallResult::Installed { receipt: ByteBuf::from(first.receipt.clone()) };
    corpus.put(
        "api_messages",
        "02-install-result",
        &tagged(2, &device_api::to_cbor(&installed)?),
    )?;
    let aka = AkaResult::Res { res: ByteBuf::from(vec![3; 8]) };
    corpus.put("api_messages", "03-aka-result", &tagged(3, &device_api::to_cbor(&aka)?))?;
    let ack = AbortAck {
        usim_active: true,
        tre_active: false,
        imsi: card_profile::IMSI.into(),
        committed: false,
    };
    corpus.put("api_messages", "04-abort-ack", &tagged(4, &device_api::to_cbor(&ack)?))?;
    let enrol = EnrolRequest::new(
        device_id.clone(),
        first.ek_cert.clone(),
        first.ek_public.clone(),
        first.evidence.ak_public.to_vec(),
    );
    corpus.put("api_messages", "05-enrol", &tagged(5, &enrol.to_cbor()?))?;
    let activate = ActivateRequest {
        device_id: device_id.clone(),
        ak_name: ByteBuf::from(Public::from_bytes(&first.evidence.ak_public)?.name().to_vec()),
        secret: CredentialSecret::new([7; 32]),
    };
    corpus.put("api_messages", "07-activate", &tagged(7, &activate.to_cbor()?))?;
    let challenge =
        ChallengeRequest { device_id: device_id.clone(), policy_id: Some("default".into()) };
    corpus.put("api_messages", "09-challenge", &tagged(9, &challenge.to_cbor()?))?;
    let challenged = ChallengeResponse {
        device_id: device_id.clone(),
        nonce,
        expires_at: now + 60,
        policy_id: "default".into(),
        pcr_selection: "sha256:0,2,4,8,9".into(),
    };
    corpus.put("api_messages", "10-challenge-response", &tagged(10, &challenged.to_cbor()?))?;
    let appraise = AppraiseRequest::new(first.evidence_cbor.clone());
    corpus.put("api_messages", "11-appraise", &tagged(11, &appraise.to_cbor()?))?;
    let appraised = AppraiseResponse {
        ear: ByteBuf::from(first.ear.clone()),
        status: TrustTier::Affirming,
        failed_checks: vec![],
    };
    corpus.put("api_messages", "12-appraise-response", &tagged(12, &appraised.to_cbor()?))?;
    let list = ImsiList {
        entries: devices
            .iter()
            .enumerate()
            .map(|(i, d)| {
                Ok(ImsiListEntry {
                    device_id: d.evidence.device_id.clone(),
                    iccid: format!("8988303000000000{:03}{}", i, 7).parse()?,
                    imsi: format!("0010200000000{i:02}").parse()?,
                })
            })
            .collect::<Result<_>>()?,
    };
    corpus.put("api_messages", "14-imsi-list", &tagged(14, &mno_api::to_cbor(&list)?))?;
    corpus.put(
        "api_messages",
        "15-imsi-list-ack",
        &tagged(15, &mno_api::to_cbor(&ImsiListAck { accepted: 2 })?),
    )?;

    // ---- CBOR dictionary: every text string of every CBOR seed (map keys, enum tags)
    let mut words = BTreeSet::new();
    for target in ["evidence", "ear", "bundle", "api_messages"] {
        for entry in std::fs::read_dir(corpus.dir(target))? {
            let bytes = std::fs::read(entry?.path())?;
            // The seed itself, or the seed after its selector byte.
            for skip in 0..2.min(bytes.len()) {
                if let Ok(v) = ciborium::from_reader::<Value, _>(&bytes[skip..]) {
                    collect_text(&v, &mut words);
                }
            }
        }
    }
    let mut dict =
        String::from("# CBOR text strings of the seed corpora (written by fuzz/seeds)\n");
    for w in &words {
        let mut item = Vec::new();
        ciborium::into_writer(&Value::Text(w.clone()), &mut item)?;
        let escaped: String = item.iter().map(|b| format!("\\x{b:02x}")).collect();
        dict.push_str(&format!("\"{escaped}\"\n"));
    }
    std::fs::write(fuzz.join("dict/cbor.dict"), dict)?;

    println!("fixtures and corpora written under {}", fuzz.display());
    Ok(())
}

/// The seed corpora, recreated from scratch on every run.
struct Corpus {
    root: PathBuf,
}

impl Corpus {
    fn new(root: PathBuf) -> Result<Self> {
        for t in [
            "evidence",
            "tpm_structures",
            "ear",
            "bundle",
            "apdu",
            "ekcert",
            "api_messages",
            "eventlog",
        ] {
            let dir = root.join(t);
            if dir.exists() {
                std::fs::remove_dir_all(&dir)?;
            }
            std::fs::create_dir_all(&dir)?;
        }
        Ok(Self { root })
    }

    fn dir(&self, target: &str) -> PathBuf {
        self.root.join(target)
    }

    fn put(&self, target: &str, name: &str, bytes: &[u8]) -> Result<()> {
        if bytes.len() > 64 * 1024 {
            bail!("seed {target}/{name} is {} bytes: too large to commit", bytes.len());
        }
        std::fs::write(self.dir(target).join(name), bytes)?;
        Ok(())
    }
}

fn tagged(selector: u8, body: &[u8]) -> Vec<u8> {
    [&[selector][..], body].concat()
}

/// vpcd framing, as `tresor_fuzz::frames` reads it.
fn frames(items: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for f in items {
        out.extend_from_slice(&(f.len() as u16).to_be_bytes());
        out.extend_from_slice(f);
    }
    out
}

fn collect_text(v: &Value, out: &mut BTreeSet<String>) {
    match v {
        Value::Text(t) if t.len() <= 40 && t.bytes().all(|b| b.is_ascii_graphic() || b == b' ') => {
            out.insert(t.clone());
        }
        Value::Array(items) => items.iter().for_each(|i| collect_text(i, out)),
        Value::Map(entries) => entries.iter().for_each(|(k, v)| {
            collect_text(k, out);
            collect_text(v, out);
        }),
        Value::Tag(_, inner) => collect_text(inner, out),
        Value::Bytes(b) if b.len() < 16 * 1024 => {
            // Nested CBOR (COSE payloads, signed receipts).
            if let Ok(inner) = ciborium::from_reader::<Value, _>(b.as_slice()) {
                collect_text(&inner, out);
            }
        }
        _ => {}
    }
}

/// Command sequences from the card tests (`uicc/src/card_tests.rs`), and the two that need
/// the card's keys: AUTHENTICATE with a valid AUTN and MNO-A's OTA "activate TRE".
fn apdu_seeds(corpus: &Corpus) -> Result<()> {
    let h = |s: &str| hex::decode(s.replace(' ', "")).unwrap();
    let adm = hex::encode(card_profile::ADM1);
    let pin = hex::encode(card_profile::PIN1);
    let select_usim = "00a4040c07 a0000000871002";
    let sequences: Vec<(&str, Vec<String>)> = vec![
        (
            "read-iccid-imsi",
            vec![
                "00a4000c02 2fe2".into(),
                "00b000000a".into(),
                select_usim.into(),
                format!("0020000104 {pin}"),
                "00a4000c02 6f07".into(),
                "00b0000009".into(),
                "00b0870000".into(),
                "00b000000a".into(),
                "00b0000900".into(),
            ],
        ),
        (
            "select-fcp-get-response",
            vec![
                "00a4000402 3f00".into(),
                "00c0000010".into(),
                "00a4040407 a0000000871002 00".into(),
                "00a4000402 6f07".into(),
                "00c0000005".into(),
                "00c0000000".into(),
            ],
        ),
        (
            "paths-and-status",
            vec![
                "00a4000c02 7fff".into(),
                "00a4080c04 7fff6f07".into(),
                select_usim.into(),
                "00a4080c04 7fff6f07".into(),
                "00a4090c02 6fad".into(),
                "00a4030c".into(),
                "00a4040c05 a000000088".into(),
                "00a4000c03 2fe200".into(),
                "80f2000112".into(),
                "80f2000000".into(),
            ],
        ),
        (
            "records-ef-dir",
            vec![
                "00a4000c02 2f00".into(),
                "00b2010420".into(),
                "00b2030420".into(),
                "00b2010410".into(),
                "00b2000220".into(),
                "00b2000220".into(),
                "00b0000001".into(),
            ],
        ),
        (
            "bad-classes",
            vec![
                "a0a4000002 3f00".into(),
                "01a4000002 3f00".into(),
                "0ca4000002 3f00".into(),
                "00ee000000".into(),
                "0012000000".into(),
                "00b0".into(),
            ],
        ),
        (
            "adm-update",
            vec![
                select_usim.into(),
                "00a4000c02 6f46".into(),
                "00d6000003 016869".into(),
                format!("0020000a08 {adm}"),
                "00d6000003 016869".into(),
                "00d6001003 010203".into(),
                "00a4000c02 6f07".into(),
                "00d6000009 0809101010325476f8".into(),
                "00dc010400".into(),
            ],
        ),
        (
            "pin-verify-change",
            vec![
                "0020000100".into(),
                format!("0020000104 {pin}"),
                "0020000204 31323334".into(),
                "002c000108 3131313131313131".into(),
                "0026000104 31323334".into(),
            ],
        ),
    ];
    for (name, apdus) in &sequences {
        let apdus: Vec<Vec<u8>> = apdus.iter().map(|a| h(a)).collect();
        let refs: Vec<&[u8]> =
            std::iter::once(&[4u8][..]).chain(apdus.iter().map(Vec::as_slice)).collect();
        corpus.put("apdu", name, &frames(&refs))?;
    }

    let p = card_profile::profile();
    let m = Milenage::new(&p.k, &p.opc);
    let v = m.vector(Rand([0x23; 16]), Sqn::from_parts(1, 1)?, p.amf);
    let auth = uicc::auth::command(&v.rand, &v.autn);
    let gsm = uicc::auth::gsm_command(&Rand([0x24; 16]));
    let pin_apdu = h(&format!("0020000104 {pin}"));
    corpus.put(
        "apdu",
        "authenticate",
        &frames(&[&h(select_usim), &pin_apdu, &auth, &h("00c0000000"), &gsm, &h("00c0000000")]),
    )?;

    let kid = OtaKey::new(card_profile::KID);
    let activation = protocol::ota::Activation::new("c1", "mno-b")?;
    let ota = protocol::ota::seal_activate_tre(&kid, &p.iccid, 1, &activation)?;
    let again = protocol::ota::seal_activate_tre(&kid, &p.iccid, 2, &activation)?;
    let off = protocol::ota::seal(
        &protocol::ota::Action::DeactivateTre,
        &OtaKey::new(card_profile::KID),
        &p.iccid,
        3,
    )?;
    corpus.put(
        "apdu",
        "ota-activate-tre",
        &frames(&[&ota, &[2], &h(select_usim), &pin_apdu, &auth, &again, &off, &auth]),
    )?;
    Ok(())
}
