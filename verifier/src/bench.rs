//! Throughput of the appraisal, for `tresor bench appraisal` and `docs/appraisal.md`. The
//! caller supplies evidence a real TPM made for a nonce of the PVA under test; before every
//! appraisal that nonce is made outstanding again ([`Pva::reissue_nonce_for_benchmark`]), so
//! each appraisal does the whole work a fresh one does: decode, both signature
//! verifications, the event log, every check, the nonce consumption, the clock mark, the
//! EAR and its signature. The evidence repeats, so its clock mark rises only once:
//! [`mark_write_behind`] measures separately what writing a risen mark behind costs.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use protocol::ear::TrustTier;
use protocol::evidence::Evidence;
use protocol::{DeviceId, Nonce};
use ring::rand::SystemRandom;
use ring::signature::{
    ECDSA_P256_SHA256_ASN1, ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair as _,
    UnparsedPublicKey,
};

use crate::appraisal;
use crate::error::Error;
use crate::pva::Pva;
use crate::store;

/// Operations counted over a wall-clock time.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rate {
    pub count: u64,
    pub seconds: f64,
}

impl Rate {
    pub fn per_second(&self) -> f64 {
        if self.seconds > 0.0 { self.count as f64 / self.seconds } else { 0.0 }
    }

    /// Both measurements together.
    pub fn plus(self, other: Rate) -> Rate {
        Rate { count: self.count + other.count, seconds: self.seconds + other.seconds }
    }

    /// Mean microseconds per operation.
    pub fn micros(&self) -> f64 {
        if self.count > 0 { self.seconds * 1e6 / self.count as f64 } else { 0.0 }
    }
}

/// Runs `op` until `duration` has passed (checking the clock every 16 calls).
fn measure(duration: Duration, mut op: impl FnMut() -> Result<(), Error>) -> Result<Rate, Error> {
    let start = Instant::now();
    let mut count = 0u64;
    loop {
        for _ in 0..16 {
            op()?;
            count += 1;
        }
        let elapsed = start.elapsed();
        if elapsed >= duration {
            return Ok(Rate { count, seconds: elapsed.as_secs_f64() });
        }
    }
}

/// Runs `op` until `duration` has passed: the loop of every figure here, for benchmarks of
/// other parts (`tresor bench quote-check`).
pub fn repeat(duration: Duration, op: impl FnMut() -> Result<(), Error>) -> Result<Rate, Error> {
    measure(duration, op)
}

/// ring ECDSA P-256 SHA-256 verifications of a 150-byte message (a quote's size) per second.
pub fn p256_verify(duration: Duration) -> Result<Rate, Error> {
    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng)
        .map_err(|_| Error::Random)?;
    let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref(), &rng)
        .map_err(|_| Error::Random)?;
    let message = [0x5Au8; 150];
    let sig = key.sign(&rng, &message).map_err(|_| Error::Random)?;
    let public =
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, key.public_key().as_ref().to_vec());
    measure(duration, || {
        public.verify(&message, sig.as_ref()).map_err(|_| Error::Signing("P-256 verify".into()))
    })
}

/// ring ECDSA P-256 signatures (the EAR's) per second.
pub fn p256_sign(duration: Duration) -> Result<Rate, Error> {
    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng)
        .map_err(|_| Error::Random)?;
    let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref(), &rng)
        .map_err(|_| Error::Random)?;
    measure(duration, || key.sign(&rng, &[0x5Au8; 300]).map(|_| ()).map_err(|_| Error::Random))
}

/// One recorded evidence: whose it is, the nonce it answers, its CBOR.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub device: DeviceId,
    pub nonce: Nonce,
    pub evidence: Vec<u8>,
}

/// Full appraisals of `recorded` on the calling thread, per second. The first one must be
/// affirming (the benchmark measures the path that releases subscriptions).
pub fn appraisals(pva: &Pva, recorded: &Recorded, duration: Duration) -> Result<Rate, Error> {
    let mut first = true;
    measure(duration, || {
        pva.reissue_nonce_for_benchmark(&recorded.device, recorded.nonce)?;
        let appraised = pva.appraise(&recorded.evidence, SystemTime::now())?;
        if first && appraised.status() != TrustTier::Affirming {
            return Err(Error::Config(format!(
                "benchmark evidence is not affirming: {:?}",
                appraised.failures
            )));
        }
        first = false;
        Ok(())
    })
}

/// Full appraisals on one thread per recorded evidence, all sharing the store's group
/// commits, per second in total.
pub fn concurrent_appraisals(
    pva: &Arc<Pva>,
    recorded: &[Recorded],
    duration: Duration,
) -> Result<Rate, Error> {
    concurrent_appraisals_at(std::slice::from_ref(pva), recorded, duration)
}

/// [`concurrent_appraisals`] with the threads dealt round the PVA instances `pvas` (which
/// share one store: a nonce one issued, another consumes), per second in total.
pub fn concurrent_appraisals_at(
    pvas: &[Arc<Pva>],
    recorded: &[Recorded],
    duration: Duration,
) -> Result<Rate, Error> {
    let start = Instant::now();
    let threads: Vec<_> = recorded
        .iter()
        .cloned()
        .zip(pvas.iter().cycle())
        .map(|(r, pva)| {
            let pva = pva.clone();
            std::thread::spawn(move || appraisals(&pva, &r, duration))
        })
        .collect();
    let mut count = 0;
    for t in threads {
        let rate = t.join().map_err(|_| Error::Config("benchmark thread panicked".into()))??;
        count += rate.count;
    }
    Ok(Rate { count, seconds: start.elapsed().as_secs_f64() })
}

/// Mean microseconds of each stage of one appraisal.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Breakdown {
    /// CBOR decoding of the evidence.
    pub decode_us: f64,
    /// Both signature verifications, parsing, event-log parsing and replay.
    pub authenticate_us: f64,
    /// Every integrity and policy check.
    pub evaluate_us: f64,
    /// EAR claims, CBOR and the ES256 signature.
    pub sign_us: f64,
    /// Making the nonce outstanding again, consuming it, reading and raising the clock
    /// mark: all in memory.
    pub store_us: f64,
}

/// Times each stage of the appraisal of `recorded` separately.
pub fn breakdown(pva: &Pva, recorded: &Recorded, duration: Duration) -> Result<Breakdown, Error> {
    let bad = |e: protocol::evidence::EvidenceError| Error::Config(e.to_string());
    let evidence = Evidence::from_cbor(&recorded.evidence).map_err(bad)?;
    let device = pva.device(&recorded.device)?;
    let refs = pva
        .policy(&pva.default_policy())
        .ok_or_else(|| Error::Config("no default policy".into()))?;
    let refs = refs.as_ref();
    let auth = appraisal::authenticate(&evidence, &device)?;
    let findings = appraisal::evaluate(&auth, refs, None);
    let decode =
        measure(duration, || Evidence::from_cbor(&recorded.evidence).map(|_| ()).map_err(bad))?;
    let authenticate = measure(duration, || {
        appraisal::authenticate(&evidence, &device).map(|_| ()).map_err(Error::from)
    })?;
    let evaluate = measure(duration, || {
        appraisal::evaluate(&auth, refs, None);
        Ok(())
    })?;
    let sign = measure(duration, || {
        let claims = crate::ear::claims(
            &auth,
            &findings,
            refs,
            &pva.settings().verifier_id,
            SystemTime::now(),
        )?;
        pva.signer().sign(&claims).map(|_| ())
    })?;
    let store = measure(duration, || {
        let now = SystemTime::now();
        pva.reissue_nonce_for_benchmark(&recorded.device, recorded.nonce)?;
        let consumed = pva.nonces().consume(&recorded.device, &recorded.nonce, now)??;
        pva.observe_clock(&auth, consumed.issued_at_ms, now).map(|_| ())
    })?;
    Ok(Breakdown {
        decode_us: decode.micros(),
        authenticate_us: authenticate.micros(),
        evaluate_us: evaluate.micros(),
        sign_us: sign.micros(),
        store_us: store.micros(),
    })
}

/// What writing risen clock marks behind costs, per mark.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct WriteBehind {
    /// Marks per flush (one transaction, one fsync).
    pub batch: usize,
    /// Wall time per mark: the transaction and its fsync, divided by the batch.
    pub wall_us: f64,
    /// CPU time per mark of the thread that wrote (user and system, from
    /// `/proc/thread-self/schedstat`; `None` where that file is missing).
    pub cpu_us: Option<f64>,
}

/// Flushes of `batch` risen marks of distinct devices, as the PVA's flusher writes them, into
/// `pva`'s store: `batch` synthetic devices are enrolled in it first. Only for a scratch
/// store.
pub fn mark_write_behind(pva: &Pva, batch: usize, rounds: u32) -> Result<WriteBehind, Error> {
    let store = pva.store().clone();
    let devices: Vec<DeviceId> = (0..batch)
        .map(|i| {
            let mut name = vec![0x00, 0x0B];
            name.extend(ring::digest::digest(&ring::digest::SHA256, &i.to_be_bytes()).as_ref());
            DeviceId::from_name(&name).map_err(|e| Error::Config(e.to_string()))
        })
        .collect::<Result<_, _>>()?;
    let records = devices.clone();
    store.call(move |c| {
        for id in &records {
            let record = store::DeviceRecord {
                device_id: id.clone(),
                ek_public: vec![0],
                ek_certificate: vec![0],
                ak_public: vec![0],
                ak_name: vec![0],
                enrolled_at: 0,
            };
            store::put_device(c, &record, Some("bench"))?;
        }
        Ok(())
    })?;
    let (cpu_before, start) = (thread_cpu_ns(), Instant::now());
    for round in 1..=rounds.max(1) {
        let ids = devices.clone();
        store.call(move |c| {
            for id in &ids {
                let mark =
                    store::ClockMark { reset_count: 1, restart_count: 0, clock: u64::from(round) };
                store::raise_clock_mark(
                    c,
                    id,
                    store::SeenClock { mark, seen_at_ms: u64::from(round) },
                )?;
            }
            Ok(())
        })?;
    }
    let marks = (batch as f64) * f64::from(rounds.max(1));
    let wall_us = start.elapsed().as_secs_f64() * 1e6 / marks;
    let cpu_us = cpu_before
        .zip(thread_cpu_ns())
        .map(|(before, after)| after.saturating_sub(before) as f64 / 1e3 / marks);
    Ok(WriteBehind { batch, wall_us, cpu_us })
}

/// Nanoseconds the calling thread ran on a CPU (Linux `schedstat`, first field).
fn thread_cpu_ns() -> Option<u64> {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}
