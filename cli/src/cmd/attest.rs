//! `tresor attest --tcti T --pva URL --ca ci.pem`: one attestation of any TPM by a PVA
//! (issue 13), the client side of `docs/pva-api.md`'s flow: enrolment (the EK certificate
//! from its TCG NV index if the TPM has one, else none, for a PVA whose `ek_allow_list`
//! names the EK), credential activation (TPM2_ActivateCredential), a challenge for the
//! policy asked, a quote of the PCRs it names with its nonce and the PCR values read
//! (`tre::plain`), and the appraisal. The EAR is verified as a relying party verifies it
//! (`protocol::ear::EarVerifier`: signed by a PVA under the CI, for this device and this
//! nonce), its status and failed checks printed, and it is saved.
//!
//! The EK and the AK are created if the TPM has none (the AK persisted at 0x81005452, as
//! `tresor tre quote` does). A bundle key is certified only with `--bundle-key`: the client
//! cannot know whether the policy requires one. The event log sent is `--event-log FILE`,
//! or none (a plain TPM such as swtpm has none; the policy then pins the PCR values).
//!
//! Several instances of a PVA (issue 15): `--appraise-at` sends the evidence to another
//! instance than the one that issued the nonce, `--replay-to` presents it again to any, which
//! must refuse it.
//!
//! Exit status as `tresor ear verify`: 0 affirming, 1 appraised but not affirming, 2 any
//! error (refused by the PVA, unreachable, the EAR does not verify).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::SystemTime;

use anyhow::{Context, bail};
use protocol::ear::{EarVerifier, FailureDetail, TrustTier, VerifiedEar};
use protocol::pva_api::{
    ActivateRequest, ActivateResponse, AppraiseRequest, AppraiseResponse, CBOR_MEDIA_TYPE,
    ChallengeRequest, ChallengeResponse, CredentialSecret, EnrolRequest, EnrolResponse, Message,
    path,
};
use protocol::role::{Expected, Role};
use protocol::tpm::PcrSelection;
use protocol::x509::TrustAnchors;
use serde::Serialize;
use serde_bytes::ByteBuf;
use tre::plain::{EvidenceRequest, PlainAttester};
use tre::tpm::{KeyAlg, Tpm};

/// Appraised, not affirming.
const EXIT_NOT_AFFIRMING: u8 = 1;
/// Any error.
const EXIT_ERROR: u8 = 2;
/// Largest event log read from `--event-log` (evidence is at most 256 KiB).
const MAX_EVENT_LOG: u64 = 240 * 1024;

#[derive(clap::Args)]
pub struct Args {
    /// tpm2-tss TCTI of the TPM, e.g. swtpm:host=127.0.0.1,port=2321.
    #[arg(long, env = "TPM2TOOLS_TCTI")]
    tcti: String,
    /// Base URL of the PVA, e.g. https://127.0.0.1:8440.
    #[arg(long)]
    pva: String,
    /// CI root certificate(s), PEM: the PVA's TLS certificate and the EAR's signer must
    /// chain to one of them.
    #[arg(long)]
    ca: PathBuf,
    /// The appraisal policy (its id); the PVA's default policy otherwise.
    #[arg(long)]
    policy: Option<String>,
    /// Client certificate (PEM chain) for enrolment: a role the PVA lets enrol (`ro`, or an
    /// operator's), unless the PVA has open enrolment.
    #[arg(long, requires = "client_key")]
    client_cert: Option<PathBuf>,
    /// The client certificate's PKCS#8 key, PEM.
    #[arg(long, requires = "client_cert")]
    client_key: Option<PathBuf>,
    /// Skip enrolment and activation: the PVA enrolled this TPM's AK before.
    #[arg(long)]
    no_enrol: bool,
    /// Certify a bundle key with the nonce (for a policy with bundle_key = "required").
    #[arg(long)]
    bundle_key: bool,
    /// The TCG event log to send (e.g. /sys/kernel/security/tpm0/binary_bios_measurements);
    /// none by default.
    #[arg(long)]
    event_log: Option<PathBuf>,
    /// EK algorithm: ecc or rsa.
    #[arg(long, default_value = "ecc")]
    ek: KeyAlg,
    /// AK algorithm, if the TPM has no AK yet: ecc or rsa.
    #[arg(long, default_value = "ecc")]
    ak: KeyAlg,
    /// Save the EAR (COSE_Sign1, CBOR) here; `tresor ear verify` reads it.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Save the evidence sent (CBOR) here; `tresor evidence show` reads it.
    #[arg(long)]
    evidence_out: Option<PathBuf>,
    /// Send the evidence to this PVA instead (another instance behind the same address,
    /// sharing the first one's store: it must accept the nonce the first one issued).
    #[arg(long)]
    appraise_at: Option<String>,
    /// After the appraisal, present the same evidence again to this PVA (repeatable): it
    /// must refuse the replay (`pva/nonce-reused`); exit 2 if one accepts it.
    #[arg(long)]
    replay_to: Vec<String>,
    /// Print a JSON document instead of the summary.
    #[arg(long)]
    json: bool,
}

/// What `--json` prints.
#[derive(Serialize)]
struct Report {
    device_id: String,
    policy_id: String,
    pcr_selection: String,
    status: &'static str,
    failed_checks: Vec<String>,
    /// Each failure with where it happened, as `check (bank PCR n, event …)`.
    failure_details: Vec<String>,
    /// Whether the EAR names a bundle key (only under a policy that requires one).
    bundle_key: bool,
    ear: Option<String>,
    /// The PVAs that refused the replayed evidence (`--replay-to`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    replays_refused: Vec<String>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    match runtime.block_on(attest(&args)) {
        Ok(report) => {
            if args.json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print_summary(&report);
            }
            Ok(if report.status == TrustTier::Affirming.name() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(EXIT_NOT_AFFIRMING)
            })
        }
        Err(e) => {
            eprintln!("tresor attest: {e:#}");
            Ok(ExitCode::from(EXIT_ERROR))
        }
    }
}

async fn attest(args: &Args) -> anyhow::Result<Report> {
    let event_log = match &args.event_log {
        Some(path) => read_bounded(path, MAX_EVENT_LOG)?,
        None => Vec::new(),
    };
    let ca_pem =
        std::fs::read(&args.ca).with_context(|| format!("cannot read {}", args.ca.display()))?;
    let anchors = TrustAnchors::from_pem(&ca_pem)
        .with_context(|| format!("{}: not CI root certificates", args.ca.display()))?;
    let pva = Pva::connect(args)?;
    let tpm = Tpm::connect(&args.tcti).context("cannot reach the TPM")?;
    let mut attester = PlainAttester::new(tpm, args.ek, args.ak);
    let device_id = attester.device_id()?;

    if !args.no_enrol {
        let r = attester.enrolment_request()?;
        if r.ek_certificate.is_empty() {
            eprintln!(
                "note: the TPM has no EK certificate; the PVA must list EK {} in its ek_allow_list",
                r.device_id
            );
        }
        let request = EnrolRequest {
            device_id: r.device_id,
            ek_certificate: ByteBuf::from(r.ek_certificate),
            ek_intermediates: vec![],
            ek_public: ByteBuf::from(r.ek_public),
            ak_public: ByteBuf::from(r.ak_public),
        };
        let enrolled: EnrolResponse = pva.call(path::ENROL, &request).await.context("enrolment")?;
        let secret = attester
            .activate_credential(&enrolled.credential_blob, &enrolled.encrypted_secret)
            .context("TPM2_ActivateCredential of the PVA's credential")?;
        let activate = ActivateRequest {
            device_id: device_id.clone(),
            ak_name: enrolled.ak_name,
            secret: CredentialSecret::from_slice(&secret)?,
        };
        let _: ActivateResponse =
            pva.call(path::ACTIVATE, &activate).await.context("credential activation")?;
    }

    let challenge =
        ChallengeRequest { device_id: device_id.clone(), policy_id: args.policy.clone() };
    let challenge: ChallengeResponse =
        pva.call(path::CHALLENGE, &challenge).await.context("challenge")?;
    let selection: PcrSelection = challenge
        .pcr_selection
        .parse()
        .with_context(|| format!("the PVA's PCR selection {:?}", challenge.pcr_selection))?;
    let evidence = attester.evidence(EvidenceRequest {
        nonce: &challenge.nonce,
        selection: &selection,
        event_log,
        bundle_key: args.bundle_key,
    })?;
    let evidence = evidence.to_cbor()?;
    if let Some(path) = &args.evidence_out {
        write(path, &evidence)?;
    }
    let appraiser = match &args.appraise_at {
        Some(url) => pva.at(url),
        None => pva.at(&pva.base),
    };
    let request = AppraiseRequest { evidence: ByteBuf::from(evidence) };
    let appraised: AppraiseResponse =
        appraiser.call(path::APPRAISE, &request).await.context("appraisal")?;
    let mut replays_refused = Vec::new();
    for url in &args.replay_to {
        match pva.at(url).call::<_, AppraiseResponse>(path::APPRAISE, &request).await {
            Ok(_) => bail!("{url} accepted the replayed evidence: its nonce was used before"),
            Err(e) if e.to_string().contains("nonce-reused") => replays_refused.push(url.clone()),
            Err(e) => return Err(e.context(format!("the replay to {url}"))),
        }
    }
    let verified = EarVerifier::new(anchors)
        .accept_any_status()
        .verify(&appraised.ear, SystemTime::now(), &device_id, Some(&challenge.nonce))
        .context("the PVA's EAR does not verify")?;
    if let Some(path) = &args.out {
        write(path, &appraised.ear)?;
    }
    let mut report = report(&verified, &challenge, args.out.as_deref());
    report.replays_refused = replays_refused;
    Ok(report)
}

fn report(ear: &VerifiedEar, challenge: &ChallengeResponse, out: Option<&Path>) -> Report {
    let a = &ear.claims().appraisal;
    Report {
        device_id: a.device_id.to_hex(),
        policy_id: a.policy_id.clone(),
        pcr_selection: challenge.pcr_selection.clone(),
        status: a.status().name(),
        failed_checks: a.failed_checks.clone(),
        failure_details: a.failure_details.iter().map(FailureDetail::to_string).collect(),
        bundle_key: a.bundle_key.is_some(),
        ear: out.map(|p| p.display().to_string()),
        replays_refused: Vec::new(),
    }
}

fn print_summary(r: &Report) {
    println!("device {}", r.device_id);
    println!("policy {} (quoted {})", r.policy_id, r.pcr_selection);
    println!("status {}", r.status);
    if r.failure_details.is_empty() {
        for check in &r.failed_checks {
            println!("  failed: {check}");
        }
    } else {
        for detail in &r.failure_details {
            println!("  failed: {detail}");
        }
        for check in r.failed_checks.iter().skip(r.failure_details.len()) {
            println!("  failed: {check}");
        }
    }
    println!("bundle key certified: {}", if r.bundle_key { "yes" } else { "no" });
    if let Some(path) = &r.ear {
        println!("EAR written to {path}");
    }
    for url in &r.replays_refused {
        println!("replay refused by {url} (nonce-reused)");
    }
}

/// The PVA over HTTPS: CBOR bodies, a problem document turned into an error naming its type.
struct Pva {
    base: String,
    http: reqwest::Client,
}

impl Pva {
    fn connect(args: &Args) -> anyhow::Result<Self> {
        let roots = transport::tls::roots_from_pem_file(&args.ca)?;
        let identity = match (&args.client_cert, &args.client_key) {
            (Some(cert), Some(key)) => Some(
                transport::Identity::from_pem_files(cert, key)
                    .context("the client certificate and key")?,
            ),
            _ => None,
        };
        let server = transport::ServerRole::Expected(Expected::role(Role::Pva));
        let http = transport::client::client(&roots, identity.as_ref(), &server)?;
        Ok(Self { base: args.pva.trim_end_matches('/').to_owned(), http })
    }

    /// The same client for the PVA at `base`.
    fn at(&self, base: &str) -> Self {
        Self { base: base.trim_end_matches('/').to_owned(), http: self.http.clone() }
    }

    async fn call<Req: Message, Resp: Message>(
        &self,
        route: &str,
        request: &Req,
    ) -> anyhow::Result<Resp> {
        let response = self
            .http
            .post(format!("{}{route}", self.base))
            .header("content-type", CBOR_MEDIA_TYPE)
            .body(request.to_cbor()?)
            .send()
            .await
            .with_context(|| format!("cannot reach the PVA at {}", self.base))?;
        let response = match transport::client::check(response).await {
            Ok(response) => response,
            Err(transport::Error::Problem(p)) => {
                let slug = p.type_uri.rsplit('/').next().unwrap_or_default().to_owned();
                bail!("the PVA refused ({} {slug}): {}", p.status, p.detail.unwrap_or(p.title));
            }
            Err(e) => return Err(e.into()),
        };
        let body = transport::client::read_limited(response, Resp::MAX_SIZE).await?;
        Ok(Resp::from_cbor(&body)?)
    }
}

fn read_bounded(path: &Path, max: u64) -> anyhow::Result<Vec<u8>> {
    use std::io::Read;
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(max + 1).read_to_end(&mut bytes))
        .with_context(|| format!("cannot read {}", path.display()))?;
    if bytes.len() as u64 > max {
        bail!("{} is larger than {max} bytes", path.display());
    }
    Ok(bytes)
}

fn write(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    std::fs::write(path, bytes).with_context(|| format!("cannot write {}", path.display()))
}
