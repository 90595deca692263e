//! The lab the PVA's integration tests run in: a CI with a PVA certificate and a TPM
//! manufacturer CA made with rcgen, reference values derived from `examples/image`, and
//! devices that are real swtpm instances, manufactured (EK certificate in NV) and booted by
//! `tre::attester` (image measured into the PCRs, event log kept).

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use protocol::evidence::Evidence;
use protocol::pva_api::{ActivateRequest, ChallengeRequest, CredentialSecret, EnrolRequest};
use protocol::tpm::HashAlg;
use protocol::x509::TrustAnchors;
use protocol::{DeviceId, Nonce};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use serde_bytes::ByteBuf;
use tre::attester::{Attester, AttesterOptions};
use tre::ekcert::ManufacturerCa;
use tre::manufacture::{ManufactureOptions, manufacture};
use tre::swtpm::{Swtpm, SwtpmConfig};
use tre::tpm::Tpm;
use verifier::store::Store;
use verifier::{EarSigner, Pva, ReferenceValues, Settings};

pub fn example_image() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/image")
}

/// A CA (certificate PEM, key PEM, DER).
pub struct Ca {
    pub cert_pem: String,
    pub key_pem: String,
    pub der: Vec<u8>,
    params: CertificateParams,
    key: KeyPair,
}

impl Ca {
    pub fn new(name: &str) -> Self {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key).unwrap();
        Self {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().to_vec(),
            params,
            key,
        }
    }

    pub fn anchors(&self) -> TrustAnchors {
        let mut a = TrustAnchors::new();
        a.add_der(&self.der).unwrap();
        a
    }

    /// A role certificate under this CA, as `tresor pki init` issues them: (chain PEM, key PEM).
    pub fn role(&self, cn: &str) -> (String, String) {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut p = CertificateParams::default();
        p.distinguished_name.push(DnType::CommonName, cn);
        p.subject_alt_names = vec![
            SanType::DnsName(protocol::role::dns_name(cn).try_into().unwrap()),
            SanType::DnsName("localhost".try_into().unwrap()),
            SanType::IpAddress([127, 0, 0, 1].into()),
        ];
        p.custom_extensions = vec![rcgen::CustomExtension::from_oid_content(
            &[2, 5, 29, 32],
            protocol::role::Role::of_lab_name(cn).policies_der(),
        )];

        p.is_ca = IsCa::ExplicitNoCa;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages =
            vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        let issuer = Issuer::from_params(&self.params, &self.key);
        let cert = p.signed_by(&key, &issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

/// The lab's swtpm settings (`swtpm-config/swtpm.toml`: SHA-1 and SHA-256 banks).
pub fn swtpm_config() -> SwtpmConfig {
    SwtpmConfig::load().unwrap()
}

/// The lab's settings with every PCR bank allocated (SHA-384 and SHA-512 too).
pub fn swtpm_config_all_banks() -> SwtpmConfig {
    let mut config = SwtpmConfig::load().unwrap();
    config.pcr_banks = HashAlg::ALL.to_vec();
    config
}

pub struct Lab {
    pub ci: Ca,
    pub manufacturer: Ca,
    pub pva_cert_pem: String,
    pub pva_key_pem: String,
    pub refvalues: String,
}

impl Lab {
    pub fn new() -> Self {
        let ci = Ca::new("tresor test CI");
        let (pva_cert_pem, pva_key_pem) = ci.role("pva");
        let refvalues = verifier::refvalues::derive(&example_image(), &[HashAlg::Sha256]).unwrap();
        Self {
            ci,
            manufacturer: Ca::new("tresor test TPM manufacturer"),
            pva_cert_pem,
            pva_key_pem,
            refvalues,
        }
    }

    pub fn signer(&self) -> EarSigner {
        EarSigner::from_pem(self.pva_cert_pem.as_bytes(), self.pva_key_pem.as_bytes()).unwrap()
    }

    /// A PVA with an in-memory store and the lab's reference values.
    pub fn pva(&self) -> Pva {
        self.pva_with(&self.refvalues, Store::open_in_memory().unwrap())
    }

    pub fn pva_with(&self, refvalues: &str, store: Store) -> Pva {
        Pva::new(
            store,
            self.manufacturer.anchors(),
            vec![ReferenceValues::parse(refvalues).unwrap()],
            self.signer(),
            Settings::default(),
        )
        .unwrap()
    }

    /// A manufactured, booted device with the example image, ECC EK and AK.
    pub fn device(&self) -> Device {
        self.device_with(
            &example_image(),
            AttesterOptions::default(),
            ManufactureOptions::default(),
        )
    }

    pub fn device_with(
        &self,
        image: &Path,
        options: AttesterOptions,
        make: ManufactureOptions,
    ) -> Device {
        self.device_on(&swtpm_config(), image, options, make)
    }

    pub fn device_on(
        &self,
        config: &SwtpmConfig,
        image: &Path,
        options: AttesterOptions,
        make: ManufactureOptions,
    ) -> Device {
        let swtpm = Swtpm::start_temp(config).unwrap();
        let mut tpm = Tpm::connect(&swtpm.tcti()).unwrap();
        let ca = ManufacturerCa::from_pem(&self.manufacturer.cert_pem, &self.manufacturer.key_pem)
            .unwrap();
        manufacture(&mut tpm, &ca, &make).unwrap();
        let mut attester = Attester::boot(tpm, image, options).unwrap();
        let id = attester.device_id().unwrap();
        Device { attester: Some(attester), swtpm, id }
    }
}

pub struct Device {
    // Drop order: the TPM connection closes before the swtpm process is killed.
    pub attester: Option<Attester>,
    pub swtpm: Swtpm,
    pub id: DeviceId,
}

impl Device {
    pub fn attester(&mut self) -> &mut Attester {
        self.attester.as_mut().expect("attester")
    }

    pub fn enrol_request(&mut self) -> EnrolRequest {
        let r = self.attester().enrolment_request().unwrap();
        EnrolRequest {
            device_id: r.device_id,
            ek_certificate: ByteBuf::from(r.ek_certificate),
            ek_intermediates: vec![],
            ek_public: ByteBuf::from(r.ek_public),
            ak_public: ByteBuf::from(r.ak_public),
        }
    }

    /// Enrolment and credential activation with `pva`.
    pub fn enrol(&mut self, pva: &Pva) {
        let req = self.enrol_request();
        let resp = pva.enrol(&req, SystemTime::now()).unwrap();
        let secret = self
            .attester()
            .activate_credential(&resp.credential_blob, &resp.encrypted_secret)
            .unwrap();
        pva.activate(
            &ActivateRequest {
                device_id: self.id.clone(),
                ak_name: resp.ak_name,
                secret: CredentialSecret::from_slice(&secret).unwrap(),
            },
            SystemTime::now(),
        )
        .unwrap();
    }

    pub fn challenge(&self, pva: &Pva) -> Nonce {
        let req = ChallengeRequest { device_id: self.id.clone(), policy_id: None };
        pva.challenge(&req, SystemTime::now()).unwrap().nonce
    }

    /// Evidence answering a fresh challenge of `pva`.
    pub fn evidence(&mut self, pva: &Pva) -> Evidence {
        let nonce = self.challenge(pva);
        self.attester().evidence(&nonce).unwrap()
    }
}

/// A copy of the example image in a temporary directory, for tests that change it.
pub fn image_copy() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(example_image()).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.path().join(entry.file_name())).unwrap();
    }
    dir
}

/// The names of the checks an appraisal's failures name.
pub fn slugs(failures: &[verifier::AppraisalError]) -> Vec<&'static str> {
    failures.iter().map(|f| f.slug()).collect()
}

/// The banks and measurements of a crypto-agile event log, to rebuild it changed.
pub fn measurements_of(log: &[u8]) -> (Vec<HashAlg>, Vec<protocol::eventlog::Measurement>) {
    let log = protocol::eventlog::EventLog::parse(log).unwrap();
    (log.banks(), log.measurements())
}

pub fn log_of(banks: &[HashAlg], measurements: &[protocol::eventlog::Measurement]) -> Vec<u8> {
    protocol::eventlog::EventLog::from_measurements(banks, measurements).unwrap().to_bytes()
}

/// (PCR, event type, digests, event data) of a hand-written record.
pub type RawRecord = (u32, u32, Vec<(HashAlg, Vec<u8>)>, Vec<u8>);

/// A log with `original`'s Spec ID header and records written byte by byte (TCG_PCR_EVENT2,
/// PFP 1.05 §10.2.2), so that a record may carry fewer digests than the header declares.
pub fn raw_log(original: &[u8], records: &[RawRecord]) -> Vec<u8> {
    let event_size = u32::from_le_bytes(original[28..32].try_into().unwrap()) as usize;
    let mut out = original[..32 + event_size].to_vec();
    for (pcr, event_type, digests, data) in records {
        out.extend(pcr.to_le_bytes());
        out.extend(event_type.to_le_bytes());
        out.extend((digests.len() as u32).to_le_bytes());
        for (alg, digest) in digests {
            out.extend(alg.id().to_le_bytes());
            out.extend(digest);
        }
        out.extend((data.len() as u32).to_le_bytes());
        out.extend(data);
    }
    out
}

/// A device whose TPM state lives in a directory of the test's, so that a local attacker can
/// copy it and put it back later: the restore attacks of `docs/appraisal.md` "Clock".
pub struct Restorable {
    pub dir: tempfile::TempDir,
    /// `None` while the TPM is powered off.
    pub device: Option<Device>,
}

impl Restorable {
    /// Manufactured and booted with the example image.
    pub fn new(lab: &Lab) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let swtpm = Swtpm::start(&dir.path().join("tpm"), &swtpm_config()).unwrap();
        let mut tpm = Tpm::connect(&swtpm.tcti()).unwrap();
        let ca = ManufacturerCa::from_pem(&lab.manufacturer.cert_pem, &lab.manufacturer.key_pem)
            .unwrap();
        manufacture(&mut tpm, &ca, &ManufactureOptions::default()).unwrap();
        let mut attester =
            Attester::boot(tpm, &example_image(), AttesterOptions::default()).unwrap();
        let id = attester.device_id().unwrap();
        Self { dir, device: Some(Device { attester: Some(attester), swtpm, id }) }
    }

    pub fn device(&mut self) -> &mut Device {
        self.device.as_mut().expect("the TPM is powered on")
    }

    fn state(&self) -> PathBuf {
        self.dir.path().join("tpm")
    }

    /// TPM2_Shutdown(CLEAR) and the swtpm process stops.
    pub fn power_off(&mut self) {
        self.device = None;
    }

    /// swtpm starts on the state (TPM2_Startup(CLEAR): a TPM Reset); the image is measured.
    pub fn power_on(&mut self) {
        let swtpm = Swtpm::start(&self.state(), &swtpm_config()).unwrap();
        let tpm = Tpm::connect(&swtpm.tcti()).unwrap();
        let mut attester =
            Attester::boot(tpm, &example_image(), AttesterOptions::default()).unwrap();
        let id = attester.device_id().unwrap();
        self.device = Some(Device { attester: Some(attester), swtpm, id });
    }

    /// A TPM Reset of the running TPM, then the image is measured again.
    pub fn reset(&mut self) {
        let device = self.device();
        device.attester = None;
        device.swtpm.power_cycle().unwrap();
        let tpm = Tpm::connect(&device.swtpm.tcti()).unwrap();
        device.attester =
            Some(Attester::boot(tpm, &example_image(), AttesterOptions::default()).unwrap());
    }

    /// Powers off, copies the TPM's state files, powers on again (a TPM Reset).
    pub fn copy_state(&mut self) -> PathBuf {
        self.power_off();
        let copies = std::fs::read_dir(self.dir.path()).unwrap().count();
        let copy = self.dir.path().join(format!("copy-{copies}"));
        copy_files(&self.state(), &copy);
        self.power_on();
        copy
    }

    /// Powers off, puts a copy back in place of the state, powers on (a TPM Reset from the
    /// copy).
    pub fn restore(&mut self, copy: &Path) {
        self.power_off();
        for entry in std::fs::read_dir(self.state()).unwrap() {
            let path = entry.unwrap().path();
            if path.is_file() {
                std::fs::remove_file(&path).unwrap();
            }
        }
        copy_files(copy, &self.state());
        self.power_on();
    }
}

fn copy_files(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_owned();
        // swtpm's own lock and pid files belong to the process, not to the TPM's state.
        let own = name.to_string_lossy().ends_with(".lock") || name == "swtpm.pid";
        if path.is_file() && !own {
            std::fs::copy(&path, to.join(name)).unwrap();
        }
    }
}

/// Everything the PVA logs at info level and above while `f` runs, as text.
pub fn logged<T>(f: impl FnOnce() -> T) -> (T, String) {
    use std::io::Write;
    use std::sync::{Arc, Mutex};
    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);
    impl Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buffer = Buffer::default();
    let writer = buffer.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let out = tracing::subscriber::with_default(subscriber, f);
    let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
    (out, text)
}

/// The TPM clock state a quote reports.
pub fn clock_of(e: &Evidence) -> protocol::tpm::ClockInfo {
    use protocol::tpm::{Attest, Unmarshal};
    Attest::from_bytes(&e.quote.attest).unwrap().clock_info
}
