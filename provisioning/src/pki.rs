//! The certificate infrastructure of a tresor deployment (DESIGN.md §1 "CI", §3 "Transport";
//! modelled on the GSMA eSIM CI of SGP.22 §4.5.2): a CI root (ECDSA P-256) certifying the
//! PVA, the RO and the MNOs for mutual TLS and for signing COSE objects (the PVA signs EARs,
//! MNO-B signs profiles), and a TPM manufacturer CA, a root of its own as TPM vendors have.
//!
//! `tresor pki init DIR` ([`init`]) writes, directly in DIR: `ci.pem`, `pva.pem`, `ro.pem`,
//! one `<operator>.pem` per operator (`mno-a` and `mno-b` unless [`init_with`] names
//! others), `manufacturer.pem` (certificates) and `<name>.key` (PKCS#8 PEM, mode 0600 from
//! creation). [`add_operator`] certifies one more operator under the existing CI. A new DIR appears atomically (written as a temporary sibling,
//! then renamed); in an existing DIR every file is first written under a temporary name, then
//! renamed into place, and an existing PKI is only replaced with `force`. [`Pki::load`]
//! reads a PKI back and checks it: chains, validity, roles, key/certificate pairs, key file
//! modes.
//!
//! Every role certificate is bound to its role (`protocol::role`): a certificatePolicies OID
//! (PVA, RO or operator) and its name as CN and as `<name>.tresor.internal`, as SGP.22 binds
//! each certificate under its CI to one role. Every TLS and signature check names the role it
//! requires, so the PVA's certificate cannot stand in for the RO's, nor MNO-A's for MNO-B's.

use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use protocol::role::{CertifiedRole, Expected, Role as CertRole};
use protocol::x509::{
    self, ChainError, ChainPolicy, EKU_CLIENT_AUTH, EKU_SERVER_AUTH, TrustAnchors,
};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{self as sig, EcdsaKeyPair, KeyPair as _};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use transport::{ClientAuth, Identity};
use zeroize::Zeroizing;

/// Validity of the CI root and the manufacturer root, and of the role certificates.
const CI_VALIDITY: Duration = Duration::from_secs(10 * 365 * 86_400);
const MANUFACTURER_VALIDITY: Duration = Duration::from_secs(25 * 365 * 86_400);
const ROLE_VALIDITY: Duration = Duration::from_secs(825 * 86_400);
/// Backdating of notBefore, so a peer whose clock is a little behind accepts a fresh PKI.
const CLOCK_SKEW: Duration = Duration::from_secs(300);
/// Largest file [`Pki::load`] reads.
const MAX_FILE_LEN: u64 = 256 * 1024;

const CI: &str = "ci";
const MANUFACTURER: &str = "manufacturer";

/// The operators of a PKI made without naming any: the lab's MNO-A and MNO-B.
pub const DEFAULT_OPERATORS: [&str; 2] = ["mno-a", "mno-b"];

/// A network role certified by the CI. Its name is the certificate's subject CN and the stem
/// of its files; operators are told apart by name (any DNS label but the other roles' names).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    Pva,
    Ro,
    Operator(String),
}

impl Role {
    /// The lab's old operator.
    pub fn mno_a() -> Self {
        Role::Operator(DEFAULT_OPERATORS[0].to_owned())
    }

    /// The lab's new operator.
    pub fn mno_b() -> Self {
        Role::Operator(DEFAULT_OPERATORS[1].to_owned())
    }

    /// An operator named `name`: a DNS label (`protocol::role::valid_name`) that is not
    /// the name of another role or of the PKI's own files.
    pub fn operator(name: &str) -> Result<Self, PkiError> {
        if !protocol::role::valid_name(name) || RESERVED.contains(&name) {
            return Err(PkiError::UnknownRole(name.into()));
        }
        Ok(Role::Operator(name.to_owned()))
    }

    pub fn name(&self) -> &str {
        match self {
            Role::Pva => "pva",
            Role::Ro => "ro",
            Role::Operator(name) => name,
        }
    }

    /// The role its certificate certifies (`protocol::role`): every operator is an
    /// operator, told apart by name.
    pub fn certified(&self) -> CertRole {
        match self {
            Role::Pva => CertRole::Pva,
            Role::Ro => CertRole::Ro,
            Role::Operator(_) => CertRole::Operator,
        }
    }

    /// What a peer requires of this role's certificate: its role and its name.
    pub fn expected(&self) -> Expected {
        Expected::named(self.certified(), self.name())
    }
}

/// Names no operator may take: the other roles and the PKI's other files.
const RESERVED: [&str; 4] = ["pva", "ro", CI, MANUFACTURER];

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Role {
    type Err = PkiError;
    fn from_str(s: &str) -> Result<Self, PkiError> {
        match s {
            "pva" => Ok(Role::Pva),
            "ro" => Ok(Role::Ro),
            name => Role::operator(name),
        }
    }
}

/// Every file of a PKI directory with these operators, in the order they are renamed into
/// place (each key before the certificate that needs it, the CI root last).
pub fn file_names(operators: &[&str]) -> Vec<String> {
    let mut stems = vec![MANUFACTURER, "pva", "ro"];
    stems.extend(operators.iter().copied());
    stems.push(CI);
    stems.iter().flat_map(|stem| [format!("{stem}.key"), format!("{stem}.pem")]).collect()
}

/// Why a PKI could not be created or loaded.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("{dir} already holds a PKI ({file} exists); pass --force to replace it")]
    AlreadyExists { dir: PathBuf, file: String },
    #[error("{0} exists and is not a directory")]
    NotADirectory(PathBuf),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("generating the PKI: {0}")]
    Generate(String),
    #[error("{file}: {reason}")]
    Invalid { file: PathBuf, reason: String },
    #[error("{file}: {source}")]
    Chain { file: PathBuf, source: ChainError },
    #[error("{file} is not the private key of its certificate")]
    KeyMismatch { file: PathBuf },
    #[error(
        "{file} has mode {mode:o}; private keys must not be readable by group or others (chmod 600)"
    )]
    InsecureKeyFile { file: PathBuf, mode: u32 },
    #[error(
        "{0:?} is not a role name (pva, ro, or an operator: a DNS label other than ci and manufacturer)"
    )]
    UnknownRole(String),
    #[error("this PKI has no operator {0:?}")]
    NoSuchOperator(String),
    #[error("{dir} already has a certificate for {name}")]
    OperatorExists { dir: PathBuf, name: String },
    #[error(transparent)]
    Transport(#[from] transport::Error),
}

/// Creates a PKI with the [`DEFAULT_OPERATORS`] in `dir`: a fresh directory, or an
/// existing one without a PKI in it (with `force`, an existing PKI is replaced). Returns it
/// loaded and checked.
pub fn init(dir: &Path, force: bool) -> Result<Pki, PkiError> {
    init_with(dir, force, &DEFAULT_OPERATORS)
}

/// [`init`] with these operators (at least one, distinct).
pub fn init_with(dir: &Path, force: bool, operators: &[&str]) -> Result<Pki, PkiError> {
    if operators.is_empty() {
        return Err(PkiError::Generate("a PKI needs at least one operator".into()));
    }
    let mut roles = Vec::new();
    for name in operators {
        let role = Role::operator(name)?;
        if roles.contains(&role) {
            return Err(PkiError::Generate(format!("operator {name} named twice")));
        }
        roles.push(role);
    }
    let files = generate(SystemTime::now(), &roles)?;
    match fs::metadata(dir) {
        Ok(meta) if !meta.is_dir() => return Err(PkiError::NotADirectory(dir.into())),
        Ok(_) => {
            if !force && let Some(file) = existing_pki_file(dir)? {
                return Err(PkiError::AlreadyExists { dir: dir.into(), file });
            }
            replace_in_place(dir, &files)?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => create_fresh(dir, &files)?,
        Err(source) => return Err(PkiError::Io { path: dir.into(), source }),
    }
    tracing::info!(dir = %dir.display(), "PKI created");
    Pki::load(dir)
}

/// A file of a PKI already in `dir`: the CI's, or any role certificate.
fn existing_pki_file(dir: &Path) -> Result<Option<String>, PkiError> {
    let io = |source| PkiError::Io { path: dir.into(), source };
    for entry in fs::read_dir(dir).map_err(io)? {
        let name = entry.map_err(io)?.file_name().to_string_lossy().into_owned();
        let stem = name.strip_suffix(".pem").or_else(|| name.strip_suffix(".key"));
        if stem.is_some_and(|s| s == CI || s.parse::<Role>().is_ok() || s == MANUFACTURER) {
            return Ok(Some(name));
        }
    }
    Ok(None)
}

/// One file to write: its name in the PKI directory, contents, and whether it is secret.
struct PkiFile {
    name: String,
    contents: Zeroizing<Vec<u8>>,
    secret: bool,
}

impl PkiFile {
    fn mode(&self) -> u32 {
        if self.secret { 0o600 } else { 0o644 }
    }
}

fn generate(now: SystemTime, operators: &[Role]) -> Result<Vec<PkiFile>, PkiError> {
    let gen_err = |e: rcgen::Error| PkiError::Generate(e.to_string());
    let mut files = Vec::new();
    // Each key before its certificate: files are renamed into place in this order.
    let mut push = |stem: &str, cert_pem: String, key: &KeyPair| {
        files.push(PkiFile {
            name: format!("{stem}.key"),
            contents: Zeroizing::new(key.serialize_pem().into_bytes()),
            secret: true,
        });
        files.push(PkiFile {
            name: format!("{stem}.pem"),
            contents: Zeroizing::new(cert_pem.into_bytes()),
            secret: false,
        });
    };

    let ci_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(gen_err)?;
    let ci_params = ca_params("tresor CI", "tresor", 0, now, CI_VALIDITY)?;
    let ci_cert = ci_params.self_signed(&ci_key).map_err(gen_err)?;
    let ci = Issuer::from_params(&ci_params, &ci_key);

    let m_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).map_err(gen_err)?;
    let m_params = ca_params(
        "tresor TPM manufacturer root CA",
        "tresor M2M equipment supplier",
        1,
        now,
        MANUFACTURER_VALIDITY,
    )?;
    push(MANUFACTURER, m_params.self_signed(&m_key).map_err(gen_err)?.pem(), &m_key);
    for role in [Role::Pva, Role::Ro].iter().chain(operators) {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(gen_err)?;
        let cert = role_params(role, now)?.signed_by(&key, &ci).map_err(gen_err)?;
        push(role.name(), cert.pem(), &key);
    }
    push(CI, ci_cert.pem(), &ci_key);
    Ok(files)
}

/// Certifies operator `name` under the CI of the PKI in `dir` (whose `ci.key` it reads) and
/// returns the PKI loaded again. The key is written before the certificate, each under a
/// temporary name renamed into place: a crash leaves at most a key without a certificate,
/// which [`Pki::load`] ignores and a second run replaces.
pub fn add_operator(dir: &Path, name: &str) -> Result<Pki, PkiError> {
    let role = Role::operator(name)?;
    let pki = Pki::load(dir)?;
    if pki.operators.contains_key(name) {
        return Err(PkiError::OperatorExists { dir: dir.into(), name: name.into() });
    }
    let gen_err = |e: rcgen::Error| PkiError::Generate(e.to_string());
    let ci_key_pem = Zeroizing::new(read(&dir.join("ci.key"))?);
    let ci_key_text = std::str::from_utf8(&ci_key_pem).map_err(|_| PkiError::Invalid {
        file: dir.join("ci.key"),
        reason: "not UTF-8 PEM".into(),
    })?;
    let ci_key = KeyPair::from_pem(ci_key_text)
        .map_err(|e| PkiError::Invalid { file: dir.join("ci.key"), reason: e.to_string() })?;
    let ci_pem = read(&dir.join("ci.pem"))?;
    let ci_text = std::str::from_utf8(&ci_pem).map_err(|_| PkiError::Invalid {
        file: dir.join("ci.pem"),
        reason: "not UTF-8 PEM".into(),
    })?;
    let ci = Issuer::from_ca_cert_pem(ci_text, ci_key).map_err(gen_err)?;
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(gen_err)?;
    let cert = role_params(&role, SystemTime::now())?.signed_by(&key, &ci).map_err(gen_err)?;
    let key_pem = Zeroizing::new(key.serialize_pem().into_bytes());
    for (file, contents, mode) in [
        (format!("{name}.key"), key_pem.as_slice(), 0o600),
        (format!("{name}.pem"), cert.pem().as_bytes(), 0o644),
    ] {
        let tmp = dir.join(format!(".{file}.tmp"));
        let _ = fs::remove_file(&tmp);
        write_new(&tmp, contents, mode)?;
        fs::rename(&tmp, dir.join(&file))
            .map_err(|source| PkiError::Io { path: dir.join(&file), source })?;
    }
    sync_dir(dir)?;
    tracing::info!(dir = %dir.display(), operator = name, "operator certified");
    Pki::load(dir)
}

fn base_params(
    cn: &str,
    org: &str,
    now: SystemTime,
    validity: Duration,
) -> Result<CertificateParams, PkiError> {
    let mut p = CertificateParams::default();
    p.distinguished_name = DistinguishedName::new();
    p.distinguished_name.push(DnType::OrganizationName, org);
    p.distinguished_name.push(DnType::CommonName, cn);
    p.not_before = (now - CLOCK_SKEW).into();
    p.not_after = (now + validity).into();
    let mut serial = [0u8; 16];
    SystemRandom::new()
        .fill(&mut serial)
        .map_err(|_| PkiError::Generate("no randomness".into()))?;
    serial[0] = (serial[0] & 0x7F) | 0x40;
    p.serial_number = Some(SerialNumber::from_slice(&serial));
    Ok(p)
}

fn ca_params(
    cn: &str,
    org: &str,
    path_len: u8,
    now: SystemTime,
    validity: Duration,
) -> Result<CertificateParams, PkiError> {
    let mut p = base_params(cn, org, now, validity)?;
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(path_len));
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    Ok(p)
}

/// Server and client authentication (mutual TLS) and digitalSignature (TLS and COSE), the
/// role's policy OID and its own DNS name (`protocol::role`); the loopback names let the lab's
/// processes reach each other by address.
fn role_params(role: &Role, now: SystemTime) -> Result<CertificateParams, PkiError> {
    let mut p = base_params(role.name(), "tresor", now, ROLE_VALIDITY)?;
    let dns_name =
        |name: String| name.try_into().map_err(|e: rcgen::Error| PkiError::Generate(e.to_string()));
    p.subject_alt_names = vec![
        SanType::DnsName(dns_name(format!("{}{}", role.name(), protocol::role::DNS_SUFFIX))?),
        SanType::DnsName(dns_name("localhost".into())?),
        SanType::IpAddress([127, 0, 0, 1].into()),
        SanType::IpAddress(std::net::Ipv6Addr::LOCALHOST.into()),
    ];
    p.is_ca = IsCa::ExplicitNoCa;
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages =
        vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    p.use_authority_key_identifier_extension = true;
    p.custom_extensions = vec![rcgen::CustomExtension::from_oid_content(
        &POLICIES_OID,
        role.certified().policies_der(),
    )];
    Ok(p)
}

/// certificatePolicies (2.5.29.32) as rcgen's arcs.
const POLICIES_OID: [u64; 4] = [2, 5, 29, 32];

/// A new directory: written as a hidden sibling, then renamed to `dir` in one step.
fn create_fresh(dir: &Path, files: &[PkiFile]) -> Result<(), PkiError> {
    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| PkiError::Io { path, source }
    };
    fs::create_dir_all(&parent).map_err(io(&parent))?;
    // Mode 0700 from creation; the guard removes the directory again on any error.
    let tmp = tempfile::Builder::new()
        .prefix(".tresor-pki-")
        .permissions(fs::Permissions::from_mode(0o700))
        .tempdir_in(&parent)
        .map_err(io(&parent))?;
    for f in files {
        write_new(&tmp.path().join(&f.name), &f.contents, f.mode())?;
    }
    sync_dir(tmp.path())?;
    fs::rename(tmp.path(), dir).map_err(io(dir))?;
    // Renamed away: nothing left for the guard to clean up.
    let _ = tmp.keep();
    sync_dir(&parent)
}

/// An existing directory: all files first under temporary names, then each renamed over its
/// final name. A failure before the renames leaves the old PKI untouched.
fn replace_in_place(dir: &Path, files: &[PkiFile]) -> Result<(), PkiError> {
    let mut nonce = [0u8; 6];
    SystemRandom::new().fill(&mut nonce).map_err(|_| PkiError::Generate("no randomness".into()))?;
    let suffix: String = nonce.iter().map(|b| format!("{b:02x}")).collect();
    let temp_of = |name: &str| dir.join(format!(".{name}.tmp-{suffix}"));
    let mut written = Vec::new();
    let cleanup = |written: &[PathBuf]| {
        for p in written {
            let _ = fs::remove_file(p);
        }
    };
    for f in files {
        let tmp = temp_of(&f.name);
        if let Err(e) = write_new(&tmp, &f.contents, f.mode()) {
            cleanup(&written);
            return Err(e);
        }
        written.push(tmp);
    }
    for f in files {
        let tmp = temp_of(&f.name);
        if let Err(source) = fs::rename(&tmp, dir.join(&f.name)) {
            cleanup(&written);
            return Err(PkiError::Io { path: dir.join(&f.name), source });
        }
    }
    sync_dir(dir)
}

/// Creates `path` (which must not exist) with `mode` from the first moment, and syncs it.
fn write_new(path: &Path, contents: &[u8], mode: u32) -> Result<(), PkiError> {
    let io = |source| PkiError::Io { path: path.into(), source };
    let mut f =
        OpenOptions::new().write(true).create_new(true).mode(mode).open(path).map_err(io)?;
    f.write_all(contents).map_err(io)?;
    f.sync_all().map_err(io)
}

fn sync_dir(dir: &Path) -> Result<(), PkiError> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| PkiError::Io { path: dir.into(), source })
}

/// A loaded, checked PKI directory.
pub struct Pki {
    dir: PathBuf,
    ci: CertificateDer<'static>,
    pva: RoleCredentials,
    ro: RoleCredentials,
    /// By name.
    operators: std::collections::BTreeMap<String, RoleCredentials>,
    manufacturer_cert_pem: String,
    manufacturer_key_pem: Zeroizing<String>,
}

impl fmt::Debug for Pki {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pki")
            .field("dir", &self.dir)
            .field("pva", &self.pva)
            .field("ro", &self.ro)
            .field("operators", &self.operators)
            .finish_non_exhaustive()
    }
}

/// A role's certificate (chain for TLS, leaf only: peers hold the CI root) and private key.
pub struct RoleCredentials {
    role: Role,
    identity: Identity,
    certificate: CertificateDer<'static>,
    pkcs8: Zeroizing<Vec<u8>>,
}

impl fmt::Debug for RoleCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RoleCredentials")
            .field("role", &self.role)
            .field("key", &"(redacted)")
            .finish()
    }
}

impl RoleCredentials {
    pub fn role(&self) -> &Role {
        &self.role
    }

    /// Certificate chain and key for rustls.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// The role certificate, DER.
    pub fn certificate_der(&self) -> &CertificateDer<'static> {
        &self.certificate
    }

    /// The chain to put in a COSE x5chain header (RFC 9360): the role certificate alone, since
    /// verifiers hold the CI root.
    pub fn x5chain(&self) -> Vec<Vec<u8>> {
        vec![self.certificate.to_vec()]
    }

    /// The role's ES256 signing key (ECDSA P-256, SHA-256, fixed-length r‖s as COSE wants).
    pub fn signing_key(&self) -> Result<EcdsaKeyPair, PkiError> {
        EcdsaKeyPair::from_pkcs8(
            &sig::ECDSA_P256_SHA256_FIXED_SIGNING,
            &self.pkcs8,
            &SystemRandom::new(),
        )
        .map_err(|e| PkiError::Invalid {
            file: format!("{}.key", self.role).into(),
            reason: e.to_string(),
        })
    }
}

/// How a role's server asks for client certificates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerAuth {
    /// Mutual TLS: only clients with a certificate under the CI (MNOs, RO, PVA).
    Mutual,
    /// Clients under the CI are identified, others (devices) admitted without identity.
    Optional,
    /// No client certificates.
    None,
}

impl Pki {
    /// Reads `dir` and checks it: every role certificate chains to `ci.pem`, is valid now, has
    /// serverAuth and clientAuth; every key belongs to its certificate; key files are 0600.
    pub fn load(dir: &Path) -> Result<Self, PkiError> {
        let now = SystemTime::now();
        let ci_pem = read(&dir.join("ci.pem"))?;
        let ci = single_certificate(&dir.join("ci.pem"), &ci_pem)?;
        let mut anchors = TrustAnchors::new();
        anchors
            .add_der(&ci)
            .map_err(|source| PkiError::Chain { file: dir.join("ci.pem"), source })?;
        // The root itself must be a valid CA now: verify it as a path of one.
        let policy = ChainPolicy::at(now);
        x509::verify_chain(&ci, &[], &anchors, &policy)
            .map_err(|source| PkiError::Chain { file: dir.join("ci.pem"), source })?;
        check_key(dir, CI, &ci)?;

        let load_role = |role: Role| -> Result<RoleCredentials, PkiError> {
            let cert_file = dir.join(format!("{role}.pem"));
            let cert = single_certificate(&cert_file, &read(&cert_file)?)?;
            for eku in [EKU_SERVER_AUTH, EKU_CLIENT_AUTH] {
                x509::verify_chain(
                    &cert,
                    &[],
                    &anchors,
                    &ChainPolicy::at(now).require_leaf_eku(eku),
                )
                .map_err(|source| PkiError::Chain { file: cert_file.clone(), source })?;
            }
            CertifiedRole::of_der(&cert).and_then(|c| c.require(&role.expected())).map_err(
                |e| PkiError::Invalid { file: cert_file.clone(), reason: e.to_string() },
            )?;
            let pkcs8 = check_key(dir, role.name(), &cert)?;
            let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pkcs8.to_vec()));
            let identity = Identity::new(vec![CertificateDer::from(cert.clone())], key)?;
            Ok(RoleCredentials { role, identity, certificate: CertificateDer::from(cert), pkcs8 })
        };
        let pva = load_role(Role::Pva)?;
        let ro = load_role(Role::Ro)?;
        let mut operators = std::collections::BTreeMap::new();
        for name in operator_names(dir)? {
            let role = Role::operator(&name).map_err(|e| PkiError::Invalid {
                file: dir.join(format!("{name}.pem")),
                reason: e.to_string(),
            })?;
            operators.insert(name, load_role(role)?);
        }

        let m_file = dir.join("manufacturer.pem");
        let m_pem = read(&m_file)?;
        let m_der = single_certificate(&m_file, &m_pem)?;
        let mut m_anchors = TrustAnchors::new();
        m_anchors
            .add_der(&m_der)
            .map_err(|source| PkiError::Chain { file: m_file.clone(), source })?;
        x509::verify_chain(&m_der, &[], &m_anchors, &policy)
            .map_err(|source| PkiError::Chain { file: m_file.clone(), source })?;
        check_key(dir, MANUFACTURER, &m_der)?;
        let m_key_pem = Zeroizing::new(read(&dir.join("manufacturer.key"))?);
        let utf8 = |file: &str, bytes: Vec<u8>| {
            String::from_utf8(bytes).map_err(|_| PkiError::Invalid {
                file: dir.join(file),
                reason: "not UTF-8 PEM".into(),
            })
        };

        Ok(Self {
            dir: dir.into(),
            ci: CertificateDer::from(ci),
            pva,
            ro,
            operators,
            manufacturer_cert_pem: utf8("manufacturer.pem", m_pem)?,
            manufacturer_key_pem: Zeroizing::new(utf8("manufacturer.key", m_key_pem.to_vec())?),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The CI root certificate, DER.
    pub fn ci_root(&self) -> &CertificateDer<'static> {
        &self.ci
    }

    /// The CI root as trust anchors for [`protocol::x509`] (verifying COSE x5chain signers).
    pub fn ci_trust_anchors(&self) -> Result<TrustAnchors, PkiError> {
        let mut a = TrustAnchors::new();
        a.add_der(&self.ci)
            .map_err(|source| PkiError::Chain { file: self.dir.join("ci.pem"), source })?;
        Ok(a)
    }

    /// The credentials of `role`; an operator this PKI does not certify is an error.
    pub fn role(&self, role: &Role) -> Result<&RoleCredentials, PkiError> {
        match role {
            Role::Pva => Ok(&self.pva),
            Role::Ro => Ok(&self.ro),
            Role::Operator(name) => {
                self.operators.get(name).ok_or_else(|| PkiError::NoSuchOperator(name.clone()))
            }
        }
    }

    /// The operators this PKI certifies, by name.
    pub fn operators(&self) -> impl Iterator<Item = &str> {
        self.operators.keys().map(String::as_str)
    }

    /// Every role this PKI certifies: the PVA, the RO, then the operators by name.
    pub fn roles(&self) -> Vec<Role> {
        let mut roles = vec![Role::Pva, Role::Ro];
        roles.extend(self.operators.keys().map(|n| Role::Operator(n.clone())));
        roles
    }

    /// The TPM manufacturer CA certificate, PEM (for `tre::ekcert::ManufacturerCa::from_pem`).
    pub fn manufacturer_cert_pem(&self) -> &str {
        &self.manufacturer_cert_pem
    }

    /// The TPM manufacturer CA private key, PKCS#8 PEM. Secret: never log it.
    pub fn manufacturer_key_pem(&self) -> &str {
        &self.manufacturer_key_pem
    }

    /// The manufacturer root as trust anchors for EK certificate validation.
    pub fn manufacturer_trust_anchors(&self) -> Result<TrustAnchors, PkiError> {
        TrustAnchors::from_pem(self.manufacturer_cert_pem.as_bytes())
            .map_err(|source| PkiError::Chain { file: self.dir.join("manufacturer.pem"), source })
    }

    /// The TLS server configuration of `role`.
    pub fn server_config(
        &self,
        role: Role,
        peers: PeerAuth,
    ) -> Result<Arc<rustls::ServerConfig>, PkiError> {
        let roots = vec![self.ci.clone()];
        let auth = match peers {
            PeerAuth::Mutual => ClientAuth::Required(roots),
            PeerAuth::Optional => ClientAuth::Optional(roots),
            PeerAuth::None => ClientAuth::None,
        };
        Ok(transport::server_config(self.role(&role)?.identity(), auth)?)
    }

    /// An HTTPS client for `role` calling `server`: trusts the CI, accepts only `server`'s
    /// certificate (role and name), presents its own.
    pub fn client_to(&self, role: Role, server: Role) -> Result<reqwest::Client, PkiError> {
        Ok(transport::client::client(
            std::slice::from_ref(&self.ci),
            Some(self.role(&role)?.identity()),
            &transport::ServerRole::Expected(server.expected()),
        )?)
    }

    /// An HTTPS client for `role` that talks to any role under the CI (lab and test
    /// tooling; the roles themselves use [`Pki::client_to`]).
    pub fn client(&self, role: Role) -> Result<reqwest::Client, PkiError> {
        Ok(transport::client::client(
            std::slice::from_ref(&self.ci),
            Some(self.role(&role)?.identity()),
            &transport::ServerRole::AnyRole,
        )?)
    }

    /// An HTTPS client without a client certificate, accepting any role under the CI (lab
    /// tooling standing in for a device).
    pub fn anonymous_client(&self) -> Result<reqwest::Client, PkiError> {
        Ok(transport::client::client(
            std::slice::from_ref(&self.ci),
            None,
            &transport::ServerRole::AnyRole,
        )?)
    }
}

fn read(path: &Path) -> Result<Vec<u8>, PkiError> {
    let io = |source| PkiError::Io { path: path.into(), source };
    let mut bytes = Vec::new();
    fs::File::open(path).map_err(io)?.take(MAX_FILE_LEN + 1).read_to_end(&mut bytes).map_err(io)?;
    if bytes.len() as u64 > MAX_FILE_LEN {
        return Err(PkiError::Invalid {
            file: path.into(),
            reason: format!("larger than {MAX_FILE_LEN} bytes"),
        });
    }
    Ok(bytes)
}

/// The stems of the operator certificates in `dir`: every `*.pem` but the CI's, the
/// manufacturer's, the PVA's and the RO's, sorted.
fn operator_names(dir: &Path) -> Result<Vec<String>, PkiError> {
    let io = |source| PkiError::Io { path: dir.into(), source };
    let mut names = Vec::new();
    for entry in fs::read_dir(dir).map_err(io)? {
        let name = entry.map_err(io)?.file_name().to_string_lossy().into_owned();
        if let Some(stem) = name.strip_suffix(".pem")
            && !RESERVED.contains(&stem)
            && !stem.starts_with('.')
        {
            names.push(stem.to_owned());
        }
    }
    names.sort();
    Ok(names)
}

fn single_certificate(path: &Path, pem: &[u8]) -> Result<Vec<u8>, PkiError> {
    let mut certs = x509::certificates_from_pem(pem)
        .map_err(|source| PkiError::Chain { file: path.into(), source })?;
    match (certs.pop(), certs.is_empty()) {
        (Some(cert), true) => Ok(cert),
        _ => Err(PkiError::Invalid {
            file: path.into(),
            reason: "expected exactly one certificate".into(),
        }),
    }
}

/// Reads `<stem>.key`: mode 0600 (or stricter), one PKCS#8 PRIVATE KEY block, the private
/// key of `cert_der` (ECDSA P-256 or P-384). Returns the PKCS#8 DER.
fn check_key(dir: &Path, stem: &str, cert_der: &[u8]) -> Result<Zeroizing<Vec<u8>>, PkiError> {
    let file = dir.join(format!("{stem}.key"));
    let meta = fs::metadata(&file).map_err(|source| PkiError::Io { path: file.clone(), source })?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(PkiError::InsecureKeyFile { file, mode });
    }
    let text = Zeroizing::new(read(&file)?);
    let block = pem::parse(&*text)
        .map_err(|e| PkiError::Invalid { file: file.clone(), reason: e.to_string() })?;
    if block.tag() != "PRIVATE KEY" {
        return Err(PkiError::Invalid {
            file,
            reason: format!("expected a PKCS#8 PRIVATE KEY, found {}", block.tag()),
        });
    }
    let pkcs8 = Zeroizing::new(block.into_contents());
    let rng = SystemRandom::new();
    let public = [&sig::ECDSA_P256_SHA256_ASN1_SIGNING, &sig::ECDSA_P384_SHA384_ASN1_SIGNING]
        .into_iter()
        .find_map(|alg| EcdsaKeyPair::from_pkcs8(alg, &pkcs8, &rng).ok())
        .map(|kp| kp.public_key().as_ref().to_vec())
        .ok_or_else(|| PkiError::Invalid {
            file: file.clone(),
            reason: "not an ECDSA P-256/P-384 PKCS#8 key".into(),
        })?;
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der)
        .map_err(|e| PkiError::Invalid { file: file.clone(), reason: e.to_string() })?;
    if cert.public_key().subject_public_key.data.as_ref() != public.as_slice() {
        return Err(PkiError::KeyMismatch { file });
    }
    Ok(pkcs8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_names_round_trip() {
        for role in [
            Role::Pva,
            Role::Ro,
            Role::mno_a(),
            Role::mno_b(),
            Role::operator("acme-mobile").unwrap(),
        ] {
            assert_eq!(role.name().parse::<Role>().unwrap(), role);
        }
        for bad in ["ci", "manufacturer", "", "Mno-A", "-x", "a.b", &"x".repeat(64)] {
            assert!(matches!(bad.parse::<Role>(), Err(PkiError::UnknownRole(_))), "{bad}");
        }
    }

    #[test]
    fn generated_files_cover_the_layout_with_secret_keys() {
        let operators = [Role::mno_a(), Role::mno_b(), Role::operator("mno-c").unwrap()];
        let files = generate(SystemTime::now(), &operators).unwrap();
        let names: Vec<&str> = files.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, file_names(&["mno-a", "mno-b", "mno-c"]), "keys first, the CI last");
        for f in &files {
            assert_eq!(f.secret, f.name.ends_with(".key"), "{}", f.name);
            assert_eq!(f.mode(), if f.secret { 0o600 } else { 0o644 });
        }
    }
}
