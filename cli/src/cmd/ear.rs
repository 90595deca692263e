//! `tresor ear verify FILE --ca ci.pem`: a relying party's check of an EAR (an EAT
//! Attestation Result, draft-ietf-rats-ear-04, or its Veraison profile) on the command line,
//! with the code MNO-B and the DPF run before they act on one
//! (`protocol::ear::EarVerifier`, `docs/ear.md` §Verification).
//!
//! Exit status: 0 the EAR verifies and is affirming; 1 it verifies but is not affirming
//! (only with `--any-status`, which tools that report failed appraisals use); 2 it is
//! refused, with the check that refused it named on stderr (and in `--json`).

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::SystemTime;

use anyhow::Context;
use coset::{CoseSign1, TaggedCborSerializable};
use protocol::ear::{
    EarClaims, EarError, EarVerifier, FailureDetail, MAX_EAR_SIZE, TrustTier, VerifiedEar,
};
use protocol::x509::TrustAnchors;
use protocol::{DeviceId, Nonce};
use serde::Serialize;

/// Verified, not affirming (`--any-status`).
const EXIT_NOT_AFFIRMING: u8 = 1;
/// Refused, or could not be checked at all.
const EXIT_REFUSED: u8 = 2;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Verify an EAR (COSE_Sign1) as a relying party does.
    Verify(VerifyArgs),
}

#[derive(clap::Args)]
struct VerifyArgs {
    /// The EAR: the COSE_Sign1 bytes as the PVA returned them (a device keeps ear.cbor).
    file: PathBuf,
    /// CI root certificate(s), PEM: the signer's chain must end at one of them.
    #[arg(long)]
    ca: PathBuf,
    /// The device the EAR must be about (hex TPM name of its EK). Without it, the EAR's own
    /// device claim is shown, not checked.
    #[arg(long)]
    device: Option<String>,
    /// The nonce the EAR must answer, hex (32 bytes).
    #[arg(long)]
    nonce: Option<String>,
    /// Accept a warning or contraindicated EAR after every other check (exit status 1).
    #[arg(long)]
    any_status: bool,
    /// Print a JSON document instead of the summary.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.command {
        Command::Verify(args) => Ok(verify(&args)),
    }
}

fn verify(args: &VerifyArgs) -> ExitCode {
    match check(args) {
        Ok(report) => {
            let code = if report.status == TrustTier::Affirming.name() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(EXIT_NOT_AFFIRMING)
            };
            if args.json {
                print_json(&report);
            } else {
                print_summary(&report);
            }
            code
        }
        Err(refusal) => {
            eprintln!("tresor: EAR refused ({}): {:#}", refusal.check, refusal.error);
            if args.json {
                print_json(&Refused {
                    verified: false,
                    check: refusal.check,
                    error: format!("{:#}", refusal.error),
                });
            }
            ExitCode::from(EXIT_REFUSED)
        }
    }
}

/// Why an EAR was refused: the check (a stable name, see [`check_name`]) and the error.
struct Refusal {
    check: &'static str,
    error: anyhow::Error,
}

impl Refusal {
    /// Not an EAR check: the inputs could not be read.
    fn input(error: anyhow::Error) -> Self {
        Self { check: "input", error }
    }
}

impl From<EarError> for Refusal {
    fn from(e: EarError) -> Self {
        Self { check: check_name(&e), error: e.into() }
    }
}

/// The name of the check an [`EarError`] stands for, as `--json` reports it.
pub fn check_name(e: &EarError) -> &'static str {
    match e {
        EarError::TooLarge { .. } => "size",
        EarError::Malformed(_) | EarError::Build(_) => "structure",
        EarError::UnsupportedAlgorithm => "algorithm",
        EarError::MissingCertificateChain => "certificate-chain",
        EarError::UntrustedSigner(_) => "signer-chain",
        EarError::SignerNotAllowed { .. } => "signer-role",
        EarError::BadSignature => "signature",
        EarError::WrongProfile(_) => "profile",
        EarError::StatusInconsistent { .. } => "status-vector",
        EarError::Expired { .. } => "expiry",
        EarError::NotYetValid { .. } => "issued-at",
        EarError::OtherDevice { .. } => "device",
        EarError::OtherNonce => "nonce",
        EarError::OtherBundleKey | EarError::MissingBundleKey => "bundle-key",
        EarError::NotAffirming { .. } => "status",
    }
}

fn check(args: &VerifyArgs) -> Result<Report, Refusal> {
    let bytes = read_bounded(&args.file, MAX_EAR_SIZE).map_err(Refusal::input)?;
    let pem = std::fs::read(&args.ca)
        .with_context(|| format!("cannot read {}", args.ca.display()))
        .map_err(Refusal::input)?;
    let roots = TrustAnchors::from_pem(&pem)
        .with_context(|| format!("{}: not CI root certificates", args.ca.display()))
        .map_err(Refusal::input)?;
    let nonce = args
        .nonce
        .as_deref()
        .map(|n| {
            let bytes = hex::decode(n.trim()).context("--nonce is not hex")?;
            Nonce::from_bytes(&bytes).context("--nonce")
        })
        .transpose()
        .map_err(Refusal::input)?;
    let (device, device_checked) = match &args.device {
        Some(d) => {
            (d.trim().parse::<DeviceId>().context("--device").map_err(Refusal::input)?, true)
        }
        None => (claimed_device(&bytes)?, false),
    };
    let mut verifier = EarVerifier::new(roots);
    if args.any_status {
        verifier = verifier.accept_any_status();
    }
    let ear = verifier.verify(&bytes, SystemTime::now(), &device, nonce.as_ref())?;
    Ok(Report::of(&ear, device_checked, nonce.is_some()))
}

/// The device the EAR names, read before it is verified so that the verifier can be asked
/// for exactly that device when the caller names none. Verification then checks everything
/// but the binding to a device the caller expects. When the claims cannot be read, the
/// verifier refuses the EAR at its own check (the signature, say, for a changed payload)
/// before it compares devices, so the stand-in given then is never compared.
fn claimed_device(bytes: &[u8]) -> Result<DeviceId, Refusal> {
    let claimed = CoseSign1::from_tagged_slice(bytes)
        .ok()
        .and_then(|sign1| sign1.payload)
        .and_then(|payload| EarClaims::decode(&payload).ok())
        .map(|(_, claims)| claims.appraisal.device_id);
    match claimed {
        Some(device) => Ok(device),
        None => {
            let mut name = vec![0x00, 0x0B];
            name.extend([0u8; 32]);
            DeviceId::from_name(&name).map_err(|e| Refusal::input(e.into()))
        }
    }
}

/// Reads at most `max` bytes (one more is read, so that a larger file is refused by the
/// verifier's own size check rather than truncated).
fn read_bounded(path: &Path, max: usize) -> anyhow::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|f| f.take(max as u64 + 1).read_to_end(&mut bytes))
        .with_context(|| format!("cannot read {}", path.display()))?;
    Ok(bytes)
}

/// What `--json` prints for a verified EAR; the summary prints the same.
#[derive(Serialize)]
struct Report {
    verified: bool,
    status: &'static str,
    profile: &'static str,
    eat_profile: &'static str,
    /// The signer certificate's subject (RFC 4514).
    signer: String,
    device: String,
    /// Whether `--device` was given (and so compared).
    device_checked: bool,
    nonce: Option<String>,
    nonce_checked: bool,
    policy_id: String,
    verifier_id: VerifierIdJson,
    issued_at: u64,
    issued_at_utc: String,
    expires_at: u64,
    expires_at_utc: String,
    trust_vector: Vec<VectorClaim>,
    bundle_key: Option<BundleKeyJson>,
    rollback_counter: Option<u64>,
    failed_checks: Vec<String>,
    failure_details: Vec<DetailJson>,
    /// SHA-256 of the EAR bytes: what a bundle's external AAD binds to.
    sha256: String,
}

#[derive(Serialize)]
struct Refused {
    verified: bool,
    check: &'static str,
    error: String,
}

#[derive(Serialize)]
struct VerifierIdJson {
    developer: String,
    build: String,
}

#[derive(Serialize)]
struct VectorClaim {
    claim: &'static str,
    value: i8,
    tier: &'static str,
}

#[derive(Serialize)]
struct BundleKeyJson {
    kty: &'static str,
    crv: &'static str,
    x: String,
    y: String,
    /// The key's TPM name (nameAlg ‖ H(TPMT_PUBLIC)), the COSE_Key's kid.
    tpm_name: String,
}

#[derive(Serialize)]
struct DetailJson {
    check: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pcr: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    bank: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    event: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    event_type: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    component: Option<String>,
}

impl From<&FailureDetail> for DetailJson {
    fn from(d: &FailureDetail) -> Self {
        Self {
            check: d.check.clone(),
            pcr: d.pcr,
            bank: d.bank.clone(),
            event: d.event,
            event_type: d.event_type,
            component: d.component.clone(),
        }
    }
}

impl Report {
    fn of(ear: &VerifiedEar, device_checked: bool, nonce_checked: bool) -> Self {
        let claims = ear.claims();
        let appraisal = &claims.appraisal;
        Self {
            verified: true,
            status: ear.status().name(),
            profile: ear.profile().name(),
            eat_profile: ear.profile().uri(),
            signer: ear.signer().to_owned(),
            device: ear.device_id().to_hex(),
            device_checked,
            nonce: ear.nonce().map(Nonce::to_hex),
            nonce_checked,
            policy_id: ear.policy_id().to_owned(),
            verifier_id: VerifierIdJson {
                developer: claims.verifier_id.developer.clone(),
                build: claims.verifier_id.build.clone(),
            },
            issued_at: claims.issued_at,
            issued_at_utc: utc(claims.issued_at),
            expires_at: claims.expires_at,
            expires_at_utc: utc(claims.expires_at),
            trust_vector: appraisal
                .vector
                .iter()
                .map(|(claim, value)| VectorClaim {
                    claim: claim.name(),
                    value,
                    tier: TrustTier::of_claim(value).name(),
                })
                .collect(),
            bundle_key: appraisal.bundle_key.as_ref().map(|k| BundleKeyJson {
                kty: "EC2",
                crv: "P-256",
                x: hex::encode(k.x()),
                y: hex::encode(k.y()),
                tpm_name: hex::encode(k.tpm_name()),
            }),
            rollback_counter: ear.rollback_counter(),
            failed_checks: ear.failed_checks().to_vec(),
            failure_details: ear.failure_details().iter().map(DetailJson::from).collect(),
            sha256: hex::encode(ear.digest()),
        }
    }
}

/// RFC 3339 UTC time of Unix seconds (the seconds themselves when out of range).
fn utc(secs: u64) -> String {
    i64::try_from(secs)
        .ok()
        .and_then(|s| time::OffsetDateTime::from_unix_timestamp(s).ok())
        .map_or_else(
            || secs.to_string(),
            |t| {
                format!(
                    "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
                    t.year(),
                    u8::from(t.month()),
                    t.day(),
                    t.hour(),
                    t.minute(),
                    t.second()
                )
            },
        )
}

fn print_json<T: Serialize>(doc: &T) {
    match serde_json::to_string_pretty(doc) {
        Ok(text) => println!("{text}"),
        Err(e) => eprintln!("tresor: cannot encode the JSON document: {e}"),
    }
}

fn print_summary(r: &Report) {
    let verdict = if r.status == TrustTier::Affirming.name() {
        "EAR verified".to_owned()
    } else {
        format!("EAR verified, NOT affirming ({})", r.status)
    };
    println!("{verdict}: signed by {}", r.signer);
    println!("  status:        {}", r.status);
    println!("  profile:       {} ({})", r.profile, r.eat_profile);
    let unchecked = if r.device_checked { "" } else { " (not checked: no --device)" };
    println!("  device:        {}{unchecked}", r.device);
    match &r.nonce {
        Some(n) => {
            let checked = if r.nonce_checked { " (checked)" } else { " (not checked: no --nonce)" };
            println!("  nonce:         {n}{checked}");
        }
        None => println!("  nonce:         none"),
    }
    println!("  policy:        {}", r.policy_id);
    println!("  verifier:      {} {}", r.verifier_id.developer, r.verifier_id.build);
    println!("  issued:        {} ({})", r.issued_at_utc, r.issued_at);
    println!("  expires:       {} ({})", r.expires_at_utc, r.expires_at);
    println!("  trust vector:");
    for c in &r.trust_vector {
        println!("    {:<18} {:>4}  {}", c.claim, c.value, c.tier);
    }
    match &r.bundle_key {
        Some(k) => {
            println!("  bundle key:    {} {} x={} y={}", k.kty, k.crv, k.x, k.y);
            println!("                 TPM name {}", k.tpm_name);
        }
        None => println!("  bundle key:    none"),
    }
    if let Some(counter) = r.rollback_counter {
        println!("  rollback counter: {counter}");
    }
    if !r.failed_checks.is_empty() {
        println!("  failed checks: {}", r.failed_checks.join(", "));
        for d in &r.failure_details {
            println!("    {}", describe(d));
        }
    }
    println!("  EAR SHA-256:   {}", r.sha256);
}

/// `check: PCR 9, bank sha256, event 12 (type 0x0000000d), component tre-agent`.
fn describe(d: &DetailJson) -> String {
    let mut parts = Vec::new();
    if let Some(pcr) = d.pcr {
        parts.push(format!("PCR {pcr}"));
    }
    if let Some(bank) = &d.bank {
        parts.push(format!("bank {bank}"));
    }
    match (d.event, d.event_type) {
        (Some(event), Some(t)) => parts.push(format!("event {event} (type {t:#010x})")),
        (Some(event), None) => parts.push(format!("event {event}")),
        (None, Some(t)) => parts.push(format!("event type {t:#010x}")),
        (None, None) => {}
    }
    if let Some(component) = &d.component {
        parts.push(format!("component {component}"));
    }
    if parts.is_empty() { d.check.clone() } else { format!("{}: {}", d.check, parts.join(", ")) }
}
