//! `tresor bench manufacture` and `tresor bench quote`: the device side's latencies on real
//! swtpm processes, reported as medians (and 90th percentiles) over repeated runs.
//!
//! - manufacture: start a swtpm on fresh state, create the EK, issue its certificate under
//!   the manufacturer CA, write it to NV, define the anti-rollback counter — per device, for
//!   ECC P-256 and RSA 2048 EKs.
//! - quote: on one manufactured, booted device: TPM2_Quote by the AK; a bundle key created,
//!   persisted and certified (the part of evidence that depends on the PCR state); the whole
//!   evidence; TPM2_ECDH_ZGen under PolicyPCR; and the size of the evidence.

use std::time::Instant;

use protocol::Nonce;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
use serde::Serialize;
use tre::attester::{Attester, AttesterOptions};
use tre::ekcert::ManufacturerCa;
use tre::manufacture::{ManufactureOptions, manufacture};
use tre::swtpm::{Swtpm, SwtpmConfig};
use tre::tpm::{KeyAlg, Tpm};

/// Milliseconds of a set of runs.
#[derive(Serialize, Debug)]
pub struct Latency {
    pub runs: usize,
    pub median_ms: f64,
    pub p90_ms: f64,
    pub min_ms: f64,
}

impl Latency {
    fn of(mut samples: Vec<f64>) -> Self {
        samples.sort_by(f64::total_cmp);
        let at = |q: f64| {
            samples.get(((samples.len() - 1) as f64 * q).round() as usize).copied().unwrap_or(0.0)
        };
        Self { runs: samples.len(), median_ms: at(0.5), p90_ms: at(0.9), min_ms: at(0.0) }
    }
}

#[derive(Serialize, Debug)]
pub struct ManufactureFigures {
    pub ecc: Latency,
    pub rsa: Latency,
}

#[derive(Serialize, Debug)]
pub struct QuoteFigures {
    pub quote: Latency,
    pub bundle_key_create_certify: Latency,
    pub evidence: Latency,
    pub ecdh_z_gen: Latency,
    pub evidence_bytes: usize,
    pub event_log_bytes: usize,
}

/// A throw-away TPM manufacturer CA.
fn manufacturer_ca() -> anyhow::Result<ManufacturerCa> {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, "tresor bench TPM manufacturer");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    let cert = params.self_signed(&key)?;
    Ok(ManufacturerCa::from_pem(&cert.pem(), &key.serialize_pem())?)
}

fn ms(start: Instant) -> f64 {
    start.elapsed().as_secs_f64() * 1000.0
}

/// Manufactures `runs` devices per EK algorithm, one after the other.
pub fn manufacture_figures(runs: usize) -> anyhow::Result<ManufactureFigures> {
    let ca = manufacturer_ca()?;
    let config = SwtpmConfig::load()?;
    let one = |alg: KeyAlg| -> anyhow::Result<Latency> {
        let mut samples = Vec::with_capacity(runs);
        for _ in 0..runs {
            let start = Instant::now();
            let swtpm = Swtpm::start_temp(&config)?;
            let mut tpm = Tpm::connect(&swtpm.tcti())?;
            manufacture(&mut tpm, &ca, &ManufactureOptions { ek_alg: alg, ..Default::default() })?;
            samples.push(ms(start));
        }
        Ok(Latency::of(samples))
    };
    Ok(ManufactureFigures { ecc: one(KeyAlg::Ecc)?, rsa: one(KeyAlg::Rsa)? })
}

/// Quote, bundle key, evidence and ZGen latencies on one device booted from `image`.
pub fn quote_figures(runs: usize, image: &std::path::Path) -> anyhow::Result<QuoteFigures> {
    let ca = manufacturer_ca()?;
    let swtpm = Swtpm::start_temp(&SwtpmConfig::load()?)?;
    let mut tpm = Tpm::connect(&swtpm.tcti())?;
    manufacture(&mut tpm, &ca, &ManufactureOptions::default())?;
    let mut attester = Attester::boot(tpm, image, AttesterOptions::default())?;
    let selection = attester.selection().clone();
    let nonce = Nonce::random().map_err(|_| anyhow::anyhow!("no randomness"))?;
    let (mut quote, mut bundle, mut evidence, mut zgen) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut evidence_bytes = 0;
    let mut event_log_bytes = 0;
    for _ in 0..runs {
        let tpm = attester.tpm();
        let ak = tpm.ak(KeyAlg::Ecc)?;
        let start = Instant::now();
        tpm.quote(&ak, nonce.as_bytes(), &selection)?;
        quote.push(ms(start));

        let start = Instant::now();
        let key = tpm.create_bundle_key(&[0u8; 32], &[7u8; 32])?;
        let key = tpm.persist_bundle_key(key)?;
        tpm.certify(&key, &ak, nonce.as_bytes())?;
        bundle.push(ms(start));

        let start = Instant::now();
        let made = attester.evidence(&nonce)?;
        evidence.push(ms(start));
        let cbor = made.to_cbor()?;
        evidence_bytes = cbor.len();
        event_log_bytes = made.event_log.len();

        let tpm = attester.tpm();
        let key = tpm.bundle_key()?.ok_or_else(|| anyhow::anyhow!("bundle key missing"))?;
        let rng = ring::rand::SystemRandom::new();
        let peer =
            ring::agreement::EphemeralPrivateKey::generate(&ring::agreement::ECDH_P256, &rng)
                .and_then(|k| k.compute_public_key())
                .map_err(|_| anyhow::anyhow!("ECDH key"))?;
        let (x, y) = peer
            .as_ref()
            .get(1..)
            .and_then(|xy| xy.split_at_checked(32))
            .ok_or_else(|| anyhow::anyhow!("P-256 point"))?;
        let start = Instant::now();
        tpm.ecdh_z_gen(&key, &selection, x, y)?;
        zgen.push(ms(start));
    }
    Ok(QuoteFigures {
        quote: Latency::of(quote),
        bundle_key_create_certify: Latency::of(bundle),
        evidence: Latency::of(evidence),
        ecdh_z_gen: Latency::of(zgen),
        evidence_bytes,
        event_log_bytes,
    })
}
