//! `tresor evidence show FILE [--json]`: the TRE's evidence (`protocol::evidence::Evidence`,
//! `docs/evidence.md`; what a device's agent sends the PVA and keeps as `evidence.cbor`)
//! decoded field by field: the AK's public area (TPM 2.0 Part 2 §12.2.4), the quote's TPMS_ATTEST (§10.12.12) with TPMS_CLOCK_INFO and TPMS_QUOTE_INFO, a summary
//! of the event log (TCG PC Client PFP 1.05 §10), and the bundle key's public area and
//! certification (TPMS_CERTIFY_INFO, §10.12.3).
//!
//! Nothing here is verified: `show` says what the bytes claim, the PVA decides what they
//! prove. Every structure is parsed with the codec the PVA appraises with, so input the PVA
//! would refuse as malformed is refused here too, with the field that is wrong named.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use protocol::eventlog::{EventLog, LogFormat, NO_ACTION_PCR};
use protocol::evidence::{Evidence, MAX_EVIDENCE_SIZE};
use protocol::tpm::attest::{TPM_GENERATED_VALUE, TPM_ST_ATTEST_CERTIFY, TPM_ST_ATTEST_QUOTE};
use protocol::tpm::{Attest, Attested, Public, PublicKey, Signature, Unmarshal};
use serde::Serialize;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Decode evidence (CBOR) and print what it carries; nothing is verified.
    Show {
        /// The evidence, CBOR (a device's evidence.cbor).
        file: PathBuf,
        /// Print a JSON document instead of the summary.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.command {
        Command::Show { file, json } => show(&file, json),
    }
}

fn show(file: &Path, json: bool) -> anyhow::Result<ExitCode> {
    let mut bytes = Vec::new();
    File::open(file)
        .and_then(|f| f.take(MAX_EVIDENCE_SIZE as u64 + 1).read_to_end(&mut bytes))
        .with_context(|| format!("cannot read {}", file.display()))?;
    let evidence = Evidence::from_cbor(&bytes)
        .with_context(|| format!("{}: not tresor evidence", file.display()))?;
    let report = Report::of(&evidence).with_context(|| format!("{}", file.display()))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_summary(&report);
    }
    Ok(ExitCode::SUCCESS)
}

/// What `--json` prints; the summary prints the same.
#[derive(Serialize)]
struct Report {
    version: u32,
    device_id: String,
    ek_certificate: Blob,
    ak: KeyJson,
    quote: AttestJson,
    /// `null`: the evidence has no event log (a TPM without one).
    event_log: Option<LogJson>,
    /// The PCR values presented with the quote (TPM2_PCR_Read), bank → PCR → hex.
    #[serde(skip_serializing_if = "Option::is_none")]
    pcr_values: Option<std::collections::BTreeMap<String, std::collections::BTreeMap<u8, String>>>,
    /// `null`: no bundle key (evidence for an attestation-only policy).
    bundle_key: Option<BundleKeyJson>,
    rollback_counter: u64,
}

/// A field shown by size and digest only (a certificate: `tresor pki`'s tools read it).
#[derive(Serialize)]
struct Blob {
    size: usize,
    sha256: String,
}

impl Blob {
    fn of(bytes: &[u8]) -> Self {
        Self {
            size: bytes.len(),
            sha256: hex::encode(ring::digest::digest(&ring::digest::SHA256, bytes)),
        }
    }
}

/// A TPMT_PUBLIC.
#[derive(Serialize)]
struct KeyJson {
    /// `ECC NIST P-256` or `RSA 2048`.
    alg: String,
    name_alg: &'static str,
    /// nameAlg ‖ H_nameAlg(TPMT_PUBLIC), hex.
    name: String,
    attributes: Vec<&'static str>,
    scheme: &'static str,
    auth_policy: String,
}

impl KeyJson {
    fn of(public: &Public) -> Self {
        let (alg, scheme) = match &public.key {
            PublicKey::Ecc { parms, .. } => {
                (format!("ECC {}", parms.curve.name()), parms.scheme.name())
            }
            PublicKey::Rsa { parms, .. } => {
                (format!("RSA {}", parms.key_bits), parms.scheme.name())
            }
        };
        Self {
            alg,
            name_alg: public.name_alg.name(),
            name: hex::encode(public.name().as_bytes()),
            attributes: public.attributes.names().collect(),
            scheme,
            auth_policy: hex::encode(public.auth_policy.as_bytes()),
        }
    }
}

/// A TPMS_ATTEST and its signature.
#[derive(Serialize)]
struct AttestJson {
    magic: String,
    /// Whether the magic is TPM_GENERATED_VALUE.
    tpm_generated: bool,
    #[serde(rename = "type")]
    kind: String,
    qualified_signer: String,
    /// extraData: the verifier's nonce.
    extra_data: String,
    clock_info: ClockJson,
    firmware_version: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pcr_selection: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pcr_digest: Option<String>,
    /// TPMS_CERTIFY_INFO.name: the certified object's name.
    #[serde(skip_serializing_if = "Option::is_none")]
    certified_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    certified_qualified_name: Option<String>,
    signature: SignatureJson,
}

#[derive(Serialize)]
struct ClockJson {
    clock: u64,
    reset_count: u32,
    restart_count: u32,
    safe: bool,
}

#[derive(Serialize)]
struct SignatureJson {
    scheme: &'static str,
    hash: &'static str,
    size: usize,
}

impl AttestJson {
    fn of(attest_bytes: &[u8], signature_bytes: &[u8], what: &str) -> anyhow::Result<Self> {
        let attest = Attest::from_bytes(attest_bytes).with_context(|| format!("{what}.attest"))?;
        let signature =
            Signature::from_bytes(signature_bytes).with_context(|| format!("{what}.signature"))?;
        let kind = match attest.tag() {
            TPM_ST_ATTEST_QUOTE => "TPM_ST_ATTEST_QUOTE".to_owned(),
            TPM_ST_ATTEST_CERTIFY => "TPM_ST_ATTEST_CERTIFY".to_owned(),
            other => format!("{other:#06x}"),
        };
        let (mut selection, mut digest, mut certified, mut qualified) = (None, None, None, None);
        match &attest.attested {
            Attested::Quote(q) => {
                selection = Some(q.pcr_select.to_string());
                digest = Some(hex::encode(q.pcr_digest.as_bytes()));
            }
            Attested::Certify(c) => {
                certified = Some(hex::encode(c.name.as_bytes()));
                qualified = Some(hex::encode(c.qualified_name.as_bytes()));
            }
            Attested::Other { .. } => {}
        }
        Ok(Self {
            magic: format!("{:#010x}", attest.magic),
            tpm_generated: attest.magic == TPM_GENERATED_VALUE,
            kind,
            qualified_signer: hex::encode(attest.qualified_signer.as_bytes()),
            extra_data: hex::encode(attest.extra_data.as_bytes()),
            clock_info: ClockJson {
                clock: attest.clock_info.clock,
                reset_count: attest.clock_info.reset_count,
                restart_count: attest.clock_info.restart_count,
                safe: attest.clock_info.safe,
            },
            firmware_version: format!("{:#018x}", attest.firmware_version),
            pcr_selection: selection,
            pcr_digest: digest,
            certified_name: certified,
            certified_qualified_name: qualified,
            signature: SignatureJson {
                scheme: signature.scheme_name(),
                hash: signature.hash_alg().name(),
                size: signature_bytes.len(),
            },
        })
    }
}

/// The event log in numbers: its format, banks, and records per PCR.
#[derive(Serialize)]
struct LogJson {
    size: usize,
    format: &'static str,
    /// The banks the log can be replayed in (declared and computable).
    banks: Vec<&'static str>,
    /// Records after the Spec ID header (EV_NO_ACTION ones included).
    events: usize,
    /// PCR index (decimal string) → records naming it, ascending.
    events_per_pcr: std::collections::BTreeMap<u32, usize>,
    /// EV_NO_ACTION records for PCR 0xFFFFFFFF (Windows' own): they extend nothing.
    #[serde(skip_serializing_if = "is_zero")]
    no_action_records: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

impl LogJson {
    fn of(bytes: &[u8]) -> anyhow::Result<Self> {
        let log = EventLog::parse(bytes).context("event_log")?;
        let mut per_pcr = std::collections::BTreeMap::new();
        let mut no_action = 0;
        for event in log.events() {
            if event.pcr == NO_ACTION_PCR {
                no_action += 1;
            } else {
                *per_pcr.entry(event.pcr).or_insert(0) += 1;
            }
        }
        Ok(Self {
            size: bytes.len(),
            format: match log.format() {
                LogFormat::CryptoAgile(_) => "crypto-agile",
                LogFormat::Sha1 => "sha1",
            },
            banks: log.banks().into_iter().map(|b| b.name()).collect(),
            events: log.events().len(),
            events_per_pcr: per_pcr,
            no_action_records: no_action,
        })
    }
}

#[derive(Serialize)]
struct BundleKeyJson {
    public: KeyJson,
    certify: AttestJson,
    /// Whether the certification names this public area (its name is the certified name).
    certifies_this_key: bool,
}

impl Report {
    fn of(e: &Evidence) -> anyhow::Result<Self> {
        let ak = Public::from_bytes(&e.ak_public).context("ak_public")?;
        let bundle_key = match &e.bundle_key {
            None => None,
            Some(b) => {
                let bundle = Public::from_bytes(&b.public).context("bundle_key.public")?;
                let certify =
                    AttestJson::of(&b.certify.attest, &b.certify.signature, "bundle_key.certify")?;
                let public = KeyJson::of(&bundle);
                let certifies_this_key =
                    certify.certified_name.as_deref() == Some(public.name.as_str());
                Some(BundleKeyJson { public, certify, certifies_this_key })
            }
        };
        let pcr_values = e.pcr_values.as_ref().map(|banks| {
            banks
                .iter()
                .map(|(bank, pcrs)| {
                    let pcrs = pcrs.iter().map(|(pcr, v)| (*pcr, hex::encode(v))).collect();
                    (bank.name().to_owned(), pcrs)
                })
                .collect()
        });
        Ok(Self {
            version: e.version,
            device_id: e.device_id.to_hex(),
            ek_certificate: Blob::of(&e.ek_certificate),
            ak: KeyJson::of(&ak),
            quote: AttestJson::of(&e.quote.attest, &e.quote.signature, "quote")?,
            event_log: if e.event_log.is_empty() { None } else { Some(LogJson::of(&e.event_log)?) },
            pcr_values,
            bundle_key,
            rollback_counter: e.rollback_counter,
        })
    }
}

fn print_summary(r: &Report) {
    println!("evidence version {} (decoded, not verified)", r.version);
    println!("  device id:        {}", r.device_id);
    println!(
        "  EK certificate:   {} bytes, SHA-256 {}",
        r.ek_certificate.size, r.ek_certificate.sha256
    );
    println!("  AK:               {}", describe_key(&r.ak));
    println!("  quote:");
    print_attest(&r.quote);
    match &r.event_log {
        None => println!("  event log:        none"),
        Some(l) => {
            println!(
                "  event log:        {} bytes, {} format, {} events, banks {}",
                l.size,
                l.format,
                l.events,
                l.banks.join(", ")
            );
            let per_pcr: Vec<String> =
                l.events_per_pcr.iter().map(|(pcr, n)| format!("{pcr}:{n}")).collect();
            println!("    events per PCR: {}", per_pcr.join(" "));
            if l.no_action_records > 0 {
                println!("    EV_NO_ACTION records for PCR 0xffffffff: {}", l.no_action_records);
            }
        }
    }
    if let Some(banks) = &r.pcr_values {
        println!("  PCR values (TPM2_PCR_Read, as presented):");
        for (bank, pcrs) in banks {
            for (pcr, value) in pcrs {
                println!("    {bank}:{pcr:<2} {value}");
            }
        }
    }
    match &r.bundle_key {
        None => println!("  bundle key:       none (attestation only)"),
        Some(b) => {
            println!("  bundle key:       {}", describe_key(&b.public));
            println!("    certification (TPM2_Certify by the AK):");
            print_attest(&b.certify);
            let verdict = if b.certifies_this_key { "yes" } else { "NO" };
            println!("      names this bundle key: {verdict}");
        }
    }
    println!("  rollback counter: {}", r.rollback_counter);
}

fn describe_key(k: &KeyJson) -> String {
    let policy = if k.auth_policy.is_empty() {
        String::new()
    } else {
        format!(", authPolicy {}", k.auth_policy)
    };
    format!(
        "{} ({}), name {} ({}), attributes {}{policy}",
        k.alg,
        k.scheme,
        k.name,
        k.name_alg,
        k.attributes.join("|")
    )
}

fn print_attest(a: &AttestJson) {
    let generated = if a.tpm_generated { "TPM_GENERATED_VALUE" } else { "NOT TPM_GENERATED_VALUE" };
    println!("      magic:            {} ({generated})", a.magic);
    println!("      type:             {}", a.kind);
    println!("      qualifiedSigner:  {}", a.qualified_signer);
    println!("      extraData:        {}", a.extra_data);
    let c = &a.clock_info;
    println!(
        "      clockInfo:        clock {} ms, resetCount {}, restartCount {}, safe {}",
        c.clock, c.reset_count, c.restart_count, c.safe
    );
    println!("      firmwareVersion:  {}", a.firmware_version);
    if let (Some(selection), Some(digest)) = (&a.pcr_selection, &a.pcr_digest) {
        println!("      PCR selection:    {selection}");
        println!("      PCR digest:       {digest}");
    }
    if let Some(name) = &a.certified_name {
        println!("      certified name:   {name}");
    }
    if let Some(name) = &a.certified_qualified_name {
        println!("      qualified name:   {name}");
    }
    let s = &a.signature;
    println!("      signature:        {} with {}, {} bytes", s.scheme, s.hash, s.size);
}
