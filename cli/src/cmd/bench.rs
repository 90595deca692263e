//! `tresor bench`: throughput figures of tresor's parts, each a subcommand.
//!
//! - `appraisal [--json] [--seconds S] [--threads N] [--image DIR]`: the PVA appraising
//!   ECC evidence of a real swtpm device (`verifier::bench`). One evidence is recorded, then
//!   appraised in a loop, its nonce issued again before each appraisal, so every appraisal
//!   does the full work: decode, the two P-256 verifications (quote and certify), the event
//!   log and every check, the nonce consumption in the store, the EAR and its signature.
//!   Reported: the end-to-end rate with the durable SQLite store on one thread
//!   (`appraisals_per_s`), the same with an in-memory store (`core_appraisals_per_s`), the
//!   durable rate with N threads, ring's P-256 verify and sign rates, the ratio of the
//!   durable rate to the floor of two verifications, a per-stage breakdown, and what
//!   writing a risen clock mark behind costs per mark (the repeated evidence raises its
//!   mark once only). The floor, the core and the durable rate are measured in ten
//!   alternating slices. Pin the process to one core (`taskset -c 0`) for per-core figures.
//!   `--postgres` adds the rates on PostgreSQL: one instance, and two sharing its database.
//! - `quote-check --ak PEM --msg FILE --sig FILE --pcrs FILE --nonce HEX [-g ALG] [--json]`:
//!   checks of one `tpm2_quote` output per second in process (`verifier::checkquote`), the
//!   same work as `tpm2_checkquote` and Keylime's `tpm_util.checkquote`: read the AK's PEM,
//!   parse, verify the signature, compare nonce and PCR digest. `bench/quote-check.sh` runs
//!   it side by side with Keylime on the same files.
//! - `fleet --devices N[,N…] [--operators K] [--processes] [--json FILE]`: one campaign
//!   switching N devices on this machine (`bench_fleet`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use protocol::DeviceId;
use protocol::pva_api::{ActivateRequest, ChallengeRequest, CredentialSecret, EnrolRequest};
use protocol::tpm::{HashAlg, Spki};
use provisioning::pki;
use tre::attester::{Attester, AttesterOptions};
use tre::ekcert::ManufacturerCa;
use tre::manufacture::{ManufactureOptions, manufacture};
use tre::swtpm::{Swtpm, SwtpmConfig};
use tre::tpm::Tpm;
use verifier::bench::{self, Recorded};
use verifier::store::Store;
use verifier::{EarSigner, Pva, ReferenceValues, Settings};

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Appraisals per second of the PVA, and ring's P-256 verifications per second.
    Appraisal(AppraisalArgs),
    /// Time to manufacture one device (swtpm start, EK, EK certificate, NV), ECC and RSA.
    Manufacture(ManufactureArgs),
    /// Quote, bundle key create+certify, evidence and ZGen latencies; evidence size.
    Quote(QuoteArgs),
    /// Checks per second of one tpm2_quote output, as tpm2_checkquote does them.
    QuoteCheck(QuoteCheckArgs),
    /// One campaign switching a fleet of N devices: wall time, per-step p50/p90, CPU by
    /// role, peak memory (`--devices 10,100,1000`, `--processes`).
    Fleet(super::bench_fleet::FleetArgs),
}

#[derive(clap::Args)]
struct QuoteCheckArgs {
    /// Print JSON: checks_per_s, us_per_check, and the same with the AK parsed once.
    #[arg(long)]
    json: bool,
    /// Seconds per measured loop.
    #[arg(long, default_value_t = 2.0)]
    seconds: f64,
    #[command(flatten)]
    quote: super::pva::CheckQuoteArgs,
}

#[derive(clap::Args)]
struct ManufactureArgs {
    /// Print JSON: {"ecc": {runs, median_ms, p90_ms, min_ms}, "rsa": {...}}.
    #[arg(long)]
    json: bool,
    /// Devices manufactured per EK algorithm.
    #[arg(long, default_value_t = 20)]
    runs: usize,
}

#[derive(clap::Args)]
struct QuoteArgs {
    /// Print JSON.
    #[arg(long)]
    json: bool,
    /// Repetitions of each operation.
    #[arg(long, default_value_t = 30)]
    runs: usize,
    /// The device image to measure at boot (manifest.toml inside).
    #[arg(long, default_value = "examples/image")]
    image: PathBuf,
}

#[derive(clap::Args)]
struct AppraisalArgs {
    /// Also measure the PVA on PostgreSQL (a private, durable server started here): one
    /// thread, the threads on one instance, and the threads dealt round two instances that
    /// share the database.
    #[arg(long)]
    postgres: bool,
    /// Print JSON: appraisals_per_s, p256_verify_per_s, verifies_per_appraisal, and more.
    #[arg(long)]
    json: bool,
    /// Seconds per measured loop.
    #[arg(long, default_value_t = 2.0)]
    seconds: f64,
    /// Threads of the concurrent durable run.
    #[arg(long, default_value_t = 4)]
    threads: usize,
    /// The device image the evidence measures (manifest.toml inside).
    #[arg(long, default_value = "examples/image")]
    image: PathBuf,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.command {
        Command::Appraisal(args) => appraisal(&args),
        Command::QuoteCheck(args) => quote_check(&args),
        Command::Fleet(args) => super::bench_fleet::run(args),
        Command::Manufacture(args) => {
            anyhow::ensure!((1..=1000).contains(&args.runs), "--runs must be 1 to 1000");
            let figures = super::bench_tpm::manufacture_figures(args.runs)?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&figures)?);
            } else {
                for (name, l) in [("ECC P-256", &figures.ecc), ("RSA 2048", &figures.rsa)] {
                    println!(
                        "manufacture, {name} EK: median {:.1} ms, p90 {:.1} ms, min {:.1} ms ({} devices)",
                        l.median_ms, l.p90_ms, l.min_ms, l.runs
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Quote(args) => {
            anyhow::ensure!((1..=1000).contains(&args.runs), "--runs must be 1 to 1000");
            let figures = super::bench_tpm::quote_figures(args.runs, &args.image)?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&figures)?);
            } else {
                for (name, l) in [
                    ("TPM2_Quote", &figures.quote),
                    ("bundle key create + persist + certify", &figures.bundle_key_create_certify),
                    ("whole evidence", &figures.evidence),
                    ("TPM2_ECDH_ZGen under PolicyPCR", &figures.ecdh_z_gen),
                ] {
                    println!(
                        "{name}: median {:.1} ms, p90 {:.1} ms ({} runs)",
                        l.median_ms, l.p90_ms, l.runs
                    );
                }
                println!(
                    "evidence: {} bytes CBOR, of which event log {} bytes",
                    figures.evidence_bytes, figures.event_log_bytes
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Slices of the alternating measurement of `bench appraisal`.
const SLICES: u32 = 10;

/// Removes the benchmark's scratch directory, also on error.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn appraisal(args: &AppraisalArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(args.seconds > 0.0 && args.seconds <= 600.0, "--seconds must be in (0, 600]");
    anyhow::ensure!((1..=64).contains(&args.threads), "--threads must be 1 to 64");
    let seconds = Duration::from_secs_f64(args.seconds);
    let image = &args.image;
    anyhow::ensure!(
        image.join("manifest.toml").is_file(),
        "{} holds no manifest.toml (run from the repository root or pass --image)",
        image.display()
    );
    let scratch =
        Scratch(std::env::temp_dir().join(format!("tresor-bench-{}", std::process::id())));
    std::fs::create_dir_all(&scratch.0).context("cannot create a scratch directory")?;
    let pki_dir = scratch.0.join("pki");
    let pki = pki::init(&pki_dir, false).context("cannot create a PKI")?;
    let refs = verifier::refvalues::derive(image, &[HashAlg::Sha256])?;
    // Nonces live for an hour: every appraisal of the benchmark answers one recorded nonce.
    let settings = Settings { nonce_ttl: Duration::from_secs(3600), ..Settings::default() };
    let pva_at = |store: Store| -> anyhow::Result<Pva> {
        Ok(Pva::new(
            store,
            pki.manufacturer_trust_anchors()?,
            vec![ReferenceValues::parse(&refs)?],
            EarSigner::load(&pki_dir.join("pva.pem"), &pki_dir.join("pva.key"))?,
            settings.clone(),
        )?)
    };
    let core_pva = pva_at(Store::open_in_memory()?)?;
    let durable_pva = Arc::new(pva_at(Store::open(&scratch.0.join("pva.sqlite"))?)?);

    // On PostgreSQL: two instances on one database; devices enrol once (the enrolment is
    // shared) and answer a nonce of the first, which either instance consumes. The server
    // last in the tuple: the instances' pools and clock-mark flushers close first.
    let mut postgres = if args.postgres {
        let server = storage::pg_server::PgServer::start()
            .context("starting PostgreSQL (make deps installs it)")?;
        let location = storage::Location::Postgres(server.create_database("pva")?);
        let open = || Store::open_at(&location, verifier::store::OpenMode::CreateIfMissing);
        let instances = [Arc::new(pva_at(open()?)?), Arc::new(pva_at(open()?)?)];
        Some((instances, Vec::with_capacity(args.threads), server))
    } else {
        None
    };

    // One device per thread (each has its own TPM clock history): a real swtpm,
    // manufactured, booted with the image, enrolled with every PVA, and evidence for a
    // nonce of each (a lone PVA's nonce is good for the process that issued it only).
    let config = SwtpmConfig::load()?;
    let ca = ManufacturerCa::from_pem(pki.manufacturer_cert_pem(), pki.manufacturer_key_pem())?;
    let mut recorded = Vec::with_capacity(args.threads);
    let mut core_recorded = None;
    for _ in 0..args.threads {
        let swtpm = Swtpm::start_temp(&config)?;
        let mut tpm = Tpm::connect(&swtpm.tcti())?;
        manufacture(&mut tpm, &ca, &ManufactureOptions::default())?;
        let mut attester = Attester::boot(tpm, image, AttesterOptions::default())?;
        let device = attester.device_id()?;
        enrol(&mut attester, &core_pva)?;
        enrol(&mut attester, &durable_pva)?;
        if core_recorded.is_none() {
            core_recorded = Some(record(&mut attester, &device, &core_pva)?);
        }
        recorded.push(record(&mut attester, &device, &durable_pva)?);
        if let Some((instances, pg_recorded, _)) = &mut postgres {
            enrol(&mut attester, &instances[0])?;
            pg_recorded.push(record(&mut attester, &device, &instances[0])?);
        }
    }
    let first = recorded.first().context("no evidence recorded")?;
    let core_first = core_recorded.as_ref().context("no evidence recorded")?;

    // The floor, the core and the durable rate are measured in alternating slices, so that
    // the load of a shared machine weighs on each alike and their ratios hold.
    let zero = bench::Rate { count: 0, seconds: 0.0 };
    let (mut verify, mut core, mut durable) = (zero, zero, zero);
    let slice = seconds / SLICES;
    for _ in 0..SLICES {
        verify = verify.plus(bench::p256_verify(slice)?);
        core = core.plus(bench::appraisals(&core_pva, core_first, slice)?);
        durable = durable.plus(bench::appraisals(&durable_pva, first, slice)?);
    }
    let sign = bench::p256_sign(seconds.min(Duration::from_secs(1)))?;
    let stages = bench::breakdown(&core_pva, core_first, seconds.min(Duration::from_millis(500)))?;
    let concurrent = bench::concurrent_appraisals(&durable_pva, &recorded, seconds)?;
    let write_behind = bench::mark_write_behind(&durable_pva, 500, 10)?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let pg_figures = match &postgres {
        Some((instances, pg_recorded, _server)) => {
            let first = pg_recorded.first().context("no evidence recorded")?;
            let single = bench::appraisals(&instances[0], first, seconds)?;
            let one = bench::concurrent_appraisals_at(&instances[..1], pg_recorded, seconds)?;
            let two = bench::concurrent_appraisals_at(&instances[..], pg_recorded, seconds)?;
            Some((single.per_second(), one.per_second(), two.per_second()))
        }
        None => None,
    };

    let verifies_per_appraisal = 2;
    let floor = verify.per_second() / f64::from(verifies_per_appraisal);
    let ratio = |rate: f64| if floor > 0.0 { rate / floor } else { 0.0 };
    // Every appraisal of a fleet raises one mark: add its write-behind CPU time.
    let mark_us = write_behind.cpu_us.unwrap_or(write_behind.wall_us);
    let with_marks =
        if durable.per_second() > 0.0 { 1e6 / (1e6 / durable.per_second() + mark_us) } else { 0.0 };
    let report = serde_json::json!({
        "appraisals_per_s": durable.per_second().round(),
        "p256_verify_per_s": verify.per_second().round(),
        "verifies_per_appraisal": verifies_per_appraisal,
        "core_appraisals_per_s": core.per_second().round(),
        "concurrent_appraisals_per_s": concurrent.per_second().round(),
        "concurrent_threads": args.threads,
        "p256_sign_per_s": sign.per_second().round(),
        "floor_appraisals_per_s": floor.round(),
        "durable_to_floor": round2(ratio(durable.per_second())),
        "core_to_floor": round2(ratio(core.per_second())),
        "durable_with_mark_writes_per_s": with_marks.round(),
        "durable_with_mark_writes_to_floor": round2(ratio(with_marks)),
        "mark_write_behind_us": {
            "batch": write_behind.batch,
            "wall_per_mark": round2(write_behind.wall_us),
            "cpu_per_mark": write_behind.cpu_us.map(round2),
        },
        "breakdown_us": {
            "decode": round2(stages.decode_us),
            "authenticate": round2(stages.authenticate_us),
            "evaluate": round2(stages.evaluate_us),
            "ear": round2(stages.sign_us),
            "nonce_and_mark": round2(stages.store_us),
        },
        "cpus_available": cores,
        "evidence_bytes": first.evidence.len(),
        "postgres": pg_figures.map(|(single, one, two)| serde_json::json!({
            "appraisals_per_s": single.round(),
            "one_instance_threads_per_s": one.round(),
            "two_instances_threads_per_s": two.round(),
            "threads": args.threads,
        })),
    });
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "PVA appraisal of ECC evidence from swtpm ({} bytes), {} CPUs available",
            first.evidence.len(),
            cores
        );
        println!(
            "  end to end, durable store, 1 thread   {:>8.0} appraisals/s ({:.2} of the floor)",
            durable.per_second(),
            ratio(durable.per_second())
        );
        println!(
            "    with one mark written behind each   {:>8.0} appraisals/s ({:.2} of the floor)",
            with_marks,
            ratio(with_marks)
        );
        println!(
            "  core, in-memory store, 1 thread       {:>8.0} appraisals/s ({:.2} of the floor)",
            core.per_second(),
            ratio(core.per_second())
        );
        println!(
            "  durable store, {} threads              {:>8.0} appraisals/s",
            args.threads,
            concurrent.per_second()
        );
        println!("  ring P-256 verify                      {:>8.0} /s", verify.per_second());
        println!("  ring P-256 sign                        {:>8.0} /s", sign.per_second());
        println!("  floor (2 verifies per appraisal)       {:>8.0} appraisals/s", floor);
        println!(
            "  per stage (µs): decode {:.1}, authenticate {:.1}, evaluate {:.1}, EAR {:.1}, nonce and mark {:.1}",
            stages.decode_us,
            stages.authenticate_us,
            stages.evaluate_us,
            stages.sign_us,
            stages.store_us
        );
        println!(
            "  clock mark written behind: {:.1} µs wall, {} CPU per mark (batches of {})",
            write_behind.wall_us,
            write_behind.cpu_us.map_or("unknown".into(), |c| format!("{c:.1} µs")),
            write_behind.batch
        );
        if let Some((single, one, two)) = pg_figures {
            println!("  PostgreSQL (shared nonces, durable commits):");
            println!("    1 instance, 1 thread                {single:>8.0} appraisals/s");
            println!(
                "    1 instance, {} threads               {one:>8.0} appraisals/s",
                args.threads
            );
            println!(
                "    2 instances, {} threads              {two:>8.0} appraisals/s",
                args.threads
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `tresor bench quote-check`: the whole of `check_quote` per iteration, the AK's PEM
/// included, as `tpm2_checkquote` and Keylime's `checkquote` take it.
fn quote_check(args: &QuoteCheckArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(args.seconds > 0.0 && args.seconds <= 600.0, "--seconds must be in (0, 600]");
    let seconds = Duration::from_secs_f64(args.seconds);
    let files = super::pva::QuoteFiles::read(&args.quote)?;
    // One check first: the benchmark measures quotes that check out.
    let key = files.key()?;
    verifier::checkquote::check_quote(
        &key,
        &files.msg,
        &files.sig,
        &files.pcrs,
        &files.nonce,
        files.hash,
    )
    .map_err(|e| anyhow::anyhow!("the quote does not check out: {e}"))?;
    let check = |key: &Spki| {
        verifier::checkquote::check_quote(
            key,
            &files.msg,
            &files.sig,
            &files.pcrs,
            &files.nonce,
            files.hash,
        )
        .map(|_| ())
        .map_err(|e| verifier::Error::Config(e.to_string()))
    };
    let whole = bench::repeat(seconds, || {
        let key = Spki::from_pem(&files.ak_pem)
            .map_err(|e| verifier::Error::Config(format!("AK: {e}")))?;
        check(&key)
    })?;
    let parsed_once = bench::repeat(seconds, || check(&key))?;
    let report = serde_json::json!({
        "checks_per_s": whole.per_second().round(),
        "us_per_check": round2(whole.micros()),
        "checks_per_s_ak_parsed_once": parsed_once.per_second().round(),
        "us_per_check_ak_parsed_once": round2(parsed_once.micros()),
        "checks": whole.count,
    });
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "tresor check_quote: {:.1} µs per check ({:.0}/s), {:.1} µs with the AK parsed once",
            whole.micros(),
            whole.per_second(),
            parsed_once.micros()
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

fn enrol(attester: &mut Attester, pva: &Pva) -> anyhow::Result<()> {
    let r = attester.enrolment_request()?;
    let req = EnrolRequest::new(r.device_id.clone(), r.ek_certificate, r.ek_public, r.ak_public);
    let resp = pva.enrol(&req, SystemTime::now())?;
    let secret = attester.activate_credential(&resp.credential_blob, &resp.encrypted_secret)?;
    pva.activate(
        &ActivateRequest {
            device_id: r.device_id,
            ak_name: resp.ak_name,
            secret: CredentialSecret::from_slice(&secret)?,
        },
        SystemTime::now(),
    )?;
    Ok(())
}

fn record(attester: &mut Attester, device: &DeviceId, pva: &Pva) -> anyhow::Result<Recorded> {
    let challenge = ChallengeRequest { device_id: device.clone(), policy_id: None };
    let nonce = pva.challenge(&challenge, SystemTime::now())?.nonce;
    let evidence = attester.evidence(&nonce)?.to_cbor()?;
    Ok(Recorded { device: device.clone(), nonce, evidence })
}
