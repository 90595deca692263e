//! X.509 certification path validation (RFC 5280 §6.1, the subset tresor relies on), with
//! x509-parser for the structure and ring for the signatures.
//!
//! A path is built from a leaf through caller-supplied intermediates to one of a set of
//! trusted roots, and every link is checked: issuer name = subject name of the next
//! certificate, the signature (ECDSA P-256/P-384 with SHA-256/384, RSA PKCS#1 v1.5 and
//! RSASSA-PSS with SHA-256/384/512; SHA-1 is refused), validity of every certificate at the
//! given time, basicConstraints cA=true and keyUsage keyCertSign on every issuer, the issuers'
//! path length constraints, no critical extension the validator does not process (callers
//! declare the ones they process themselves, such as the EK certificate's subject alternative
//! name), an optional extended key usage on the leaf, and a bounded path length.
//!
//! Not covered: revocation (CRL/OCSP), name constraints and certificate policies (a
//! certificate that marks either critical is rejected unless the caller declares it handled).

use std::fmt;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ring::signature::{self, VerificationAlgorithm};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::ParsedExtension;
use x509_parser::oid_registry as oids;
use x509_parser::prelude::FromDer;
use x509_parser::signature_algorithm::RsaSsaPssParams;
use x509_parser::x509::{AlgorithmIdentifier, SubjectPublicKeyInfo};

use crate::der;

/// id-kp-serverAuth (RFC 5280 §4.2.1.12).
pub const EKU_SERVER_AUTH: &str = "1.3.6.1.5.5.7.3.1";
/// id-kp-clientAuth (RFC 5280 §4.2.1.12).
pub const EKU_CLIENT_AUTH: &str = "1.3.6.1.5.5.7.3.2";
/// id-ce-subjectAltName (RFC 5280 §4.2.1.6).
pub const EXT_SUBJECT_ALT_NAME: &str = "2.5.29.17";

/// Largest certificate accepted, in bytes; EK certificates in TPM NV are a few KiB at most.
pub const MAX_CERTIFICATE_LEN: usize = 64 * 1024;
/// Most intermediates a caller may offer for one path.
pub const MAX_INTERMEDIATES: usize = 8;
/// Most trust anchors one [`TrustAnchors`] holds.
pub const MAX_TRUST_ANCHORS: usize = 1024;
/// Largest PEM bundle file read by the loaders.
pub const MAX_PEM_FILE_LEN: u64 = 4 * 1024 * 1024;
/// Default bound on a path, leaf and root included.
pub const DEFAULT_MAX_CHAIN_LEN: usize = 5;

/// Extensions this module processes itself, so they may be critical.
const HANDLED_EXTENSIONS: [&str; 5] = [
    "2.5.29.19", // basicConstraints
    "2.5.29.15", // keyUsage
    "2.5.29.37", // extKeyUsage
    "2.5.29.14", // subjectKeyIdentifier (must not be critical, but carries no constraint)
    "2.5.29.35", // authorityKeyIdentifier (idem)
];

/// Why a certificate path, or a trust-anchor file, was rejected. One variant per check.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    #[error("malformed certificate: {0}")]
    Malformed(String),
    #[error("certificate of {len} bytes exceeds the limit of {MAX_CERTIFICATE_LEN}")]
    TooLarge { len: usize },
    #[error("{count} intermediates offered; at most {MAX_INTERMEDIATES} are considered")]
    TooManyIntermediates { count: usize },
    #[error("more than {MAX_TRUST_ANCHORS} trust anchors")]
    TooManyTrustAnchors,
    #[error("no trust anchors configured")]
    NoTrustAnchors,
    #[error("no trusted or offered certificate issued \"{subject}\" (issuer \"{issuer}\")")]
    UnknownIssuer { subject: String, issuer: String },
    #[error("signature on \"{subject}\" does not verify with the key of its issuer")]
    BadSignature { subject: String },
    #[error("\"{subject}\" is signed with an unsupported algorithm {algorithm}")]
    UnsupportedSignatureAlgorithm { subject: String, algorithm: String },
    #[error("\"{subject}\": outer signature algorithm differs from the one in tbsCertificate")]
    SignatureAlgorithmMismatch { subject: String },
    #[error("\"{subject}\" expired at {}", Timestamp(*not_after))]
    Expired { subject: String, not_after: SystemTime },
    #[error("\"{subject}\" is not valid before {}", Timestamp(*not_before))]
    NotYetValid { subject: String, not_before: SystemTime },
    #[error("\"{subject}\" issued a certificate but is not a CA (basicConstraints cA)")]
    NotACa { subject: String },
    #[error("\"{subject}\" issued a certificate but its keyUsage lacks keyCertSign")]
    MissingKeyCertSign { subject: String },
    #[error("\"{subject}\" allows {allowed} intermediates below it, the path has {actual}")]
    PathLenExceeded { subject: String, allowed: u32, actual: u32 },
    #[error("leaf \"{subject}\" lacks the required extended key usage {required}")]
    MissingExtendedKeyUsage { subject: String, required: String },
    #[error("\"{subject}\" has a critical extension {oid} that is not processed")]
    UnhandledCriticalExtension { subject: String, oid: String },
    #[error("no path within {max} certificates")]
    ChainTooLong { max: usize },
    #[error("PEM: {0}")]
    Pem(String),
    #[error("{path}: {message}")]
    Io { path: String, message: String },
    #[error("trust anchor file {path}: {reason}")]
    TrustAnchorFile { path: String, reason: String },
}

/// Formats a [`SystemTime`] as RFC 3339 UTC for error messages.
struct Timestamp(SystemTime);

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = unix_seconds(self.0);
        match x509_parser::time::ASN1Time::from_timestamp(secs) {
            Ok(t) => write!(f, "{t}"),
            Err(_) => write!(f, "unix time {secs}"),
        }
    }
}

/// The roots a verifier trusts (CI root, TPM manufacturer roots), as DER certificates.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct TrustAnchors {
    roots: Vec<Vec<u8>>,
}

impl fmt::Debug for TrustAnchors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.roots.iter().map(|der| subject_of(der))).finish()
    }
}

impl TrustAnchors {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one root; it must parse as a single X.509 certificate.
    pub fn add_der(&mut self, der: &[u8]) -> Result<(), ChainError> {
        if self.roots.len() >= MAX_TRUST_ANCHORS {
            return Err(ChainError::TooManyTrustAnchors);
        }
        parse(der)?;
        if !self.roots.iter().any(|r| r == der) {
            self.roots.push(der.to_vec());
        }
        Ok(())
    }

    /// All certificates of a PEM bundle (other PEM blocks are ignored).
    pub fn from_pem(pem: &[u8]) -> Result<Self, ChainError> {
        let mut anchors = Self::new();
        for der in certificates_from_pem(pem)? {
            anchors.add_der(&der)?;
        }
        Ok(anchors)
    }

    /// A PEM bundle file, or a single DER certificate file.
    pub fn from_file(path: &Path) -> Result<Self, ChainError> {
        let mut anchors = Self::new();
        anchors.add_file(path)?;
        Ok(anchors)
    }

    /// Every `*.pem`, `*.crt`, `*.cer` and `*.der` file directly in `dir` (sorted by name, not
    /// recursive); each must hold certificates. An empty directory is an error.
    pub fn from_dir(dir: &Path) -> Result<Self, ChainError> {
        let io = |e: std::io::Error| ChainError::Io {
            path: dir.display().to_string(),
            message: e.to_string(),
        };
        let mut files = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(io)? {
            let path = entry.map_err(io)?.path();
            let wanted = path
                .extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| ["pem", "crt", "cer", "der"].contains(&e));
            if wanted && path.is_file() {
                files.push(path);
            }
        }
        files.sort();
        let mut anchors = Self::new();
        for path in files {
            anchors.add_file(&path)?;
        }
        if anchors.is_empty() {
            return Err(ChainError::NoTrustAnchors);
        }
        Ok(anchors)
    }

    fn add_file(&mut self, path: &Path) -> Result<(), ChainError> {
        let bytes = read_bounded(path)?;
        let bad = |e: ChainError| match e {
            ChainError::TooManyTrustAnchors => e,
            other => ChainError::TrustAnchorFile {
                path: path.display().to_string(),
                reason: other.to_string(),
            },
        };
        let ders = if bytes.trim_ascii_start().starts_with(b"-----BEGIN") {
            certificates_from_pem(&bytes).map_err(bad)?
        } else {
            vec![bytes]
        };
        for der in ders {
            self.add_der(&der).map_err(bad)?;
        }
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.roots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.roots.is_empty()
    }

    /// The roots, DER encoded.
    pub fn iter(&self) -> impl Iterator<Item = &[u8]> {
        self.roots.iter().map(Vec::as_slice)
    }
}

/// The DER certificates in a PEM text; blocks with other labels are skipped. No certificate
/// at all is an error.
pub fn certificates_from_pem(pem: &[u8]) -> Result<Vec<Vec<u8>>, ChainError> {
    let mut out = Vec::new();
    for block in x509_parser::pem::Pem::iter_from_buffer(pem) {
        let block = block.map_err(|e| ChainError::Pem(e.to_string()))?;
        if block.label == "CERTIFICATE" {
            out.push(block.contents);
        }
    }
    if out.is_empty() {
        return Err(ChainError::Pem("no CERTIFICATE block".into()));
    }
    Ok(out)
}

fn read_bounded(path: &Path) -> Result<Vec<u8>, ChainError> {
    use std::io::Read;
    let io = |e: std::io::Error| ChainError::Io {
        path: path.display().to_string(),
        message: e.to_string(),
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let mut bytes = Vec::new();
    file.take(MAX_PEM_FILE_LEN + 1).read_to_end(&mut bytes).map_err(io)?;
    if bytes.len() as u64 > MAX_PEM_FILE_LEN {
        return Err(ChainError::Io {
            path: path.display().to_string(),
            message: format!("larger than {MAX_PEM_FILE_LEN} bytes"),
        });
    }
    Ok(bytes)
}

/// What a path must satisfy besides the checks every path gets.
#[derive(Debug, Clone)]
pub struct ChainPolicy {
    at: SystemTime,
    required_leaf_eku: Option<&'static str>,
    handled_critical: Vec<&'static str>,
    max_chain_len: usize,
}

impl ChainPolicy {
    /// Validity is checked at `at`; no EKU required; paths of up to
    /// [`DEFAULT_MAX_CHAIN_LEN`] certificates.
    pub fn at(at: SystemTime) -> Self {
        Self {
            at,
            required_leaf_eku: None,
            handled_critical: Vec::new(),
            max_chain_len: DEFAULT_MAX_CHAIN_LEN,
        }
    }

    /// The leaf must carry this extended key usage (dotted OID). anyExtendedKeyUsage does
    /// not stand in for it.
    pub fn require_leaf_eku(mut self, oid: &'static str) -> Self {
        self.required_leaf_eku = Some(oid);
        self
    }

    /// Critical extensions (dotted OIDs) the caller processes itself.
    pub fn handle_critical(mut self, oid: &'static str) -> Self {
        self.handled_critical.push(oid);
        self
    }

    /// Longest accepted path, leaf and root included (at least 1).
    pub fn max_chain_len(mut self, max: usize) -> Self {
        self.max_chain_len = max.max(1);
        self
    }
}

/// A leaf whose path to a trust anchor verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedLeaf {
    /// The leaf's SubjectPublicKeyInfo, DER.
    pub spki_der: Vec<u8>,
    /// The leaf's subject, RFC 4514 string form (empty for an empty subject).
    pub subject: String,
    /// The leaf's subject Name, DER.
    pub subject_der: Vec<u8>,
    /// The path, leaf first, trust anchor last (DER).
    pub chain: Vec<Vec<u8>>,
}

/// Validates `leaf_der` through `intermediates` (any order, unused ones ignored) to one of
/// `anchors` under `policy`. When several paths exist, the first that verifies wins; when
/// none does, the error of the last candidate tried is returned.
pub fn verify_chain(
    leaf_der: &[u8],
    intermediates: &[&[u8]],
    anchors: &TrustAnchors,
    policy: &ChainPolicy,
) -> Result<VerifiedLeaf, ChainError> {
    if anchors.is_empty() {
        return Err(ChainError::NoTrustAnchors);
    }
    if intermediates.len() > MAX_INTERMEDIATES {
        return Err(ChainError::TooManyIntermediates { count: intermediates.len() });
    }
    let leaf = parse(leaf_der)?;
    let inter = intermediates.iter().map(|d| parse(d)).collect::<Result<Vec<_>, _>>()?;
    let roots = anchors.iter().map(parse).collect::<Result<Vec<_>, _>>()?;
    let ctx = PathContext { intermediates: &inter, roots: &roots, policy };

    check_certificate(&leaf, policy)?;
    if let Some(eku) = policy.required_leaf_eku {
        check_eku(&leaf, eku)?;
    }
    let mut path: Vec<Node> = vec![Node::Leaf];
    ctx.extend(&leaf, &mut path)?;

    let der_of = |n: &Node| -> Vec<u8> {
        match n {
            Node::Leaf => leaf_der.to_vec(),
            Node::Intermediate(i) => inter.get(*i).map(|c| c.as_raw().to_vec()).unwrap_or_default(),
            Node::Root(i) => roots.get(*i).map(|c| c.as_raw().to_vec()).unwrap_or_default(),
        }
    };
    Ok(VerifiedLeaf {
        spki_der: leaf.public_key().raw.to_vec(),
        subject: leaf.subject().to_string(),
        subject_der: leaf.subject().as_raw().to_vec(),
        chain: path.iter().map(der_of).collect(),
    })
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Node {
    Leaf,
    Intermediate(usize),
    Root(usize),
}

struct PathContext<'c, 'a> {
    intermediates: &'c [X509Certificate<'a>],
    roots: &'c [X509Certificate<'a>],
    policy: &'c ChainPolicy,
}

impl PathContext<'_, '_> {
    /// Depth-first search from `child` (the last node of `path`) to a root. The search only
    /// descends through links whose signature verified, so its cost is bounded by genuine
    /// CA signatures, not by what an attacker offers.
    fn extend(&self, child: &X509Certificate<'_>, path: &mut Vec<Node>) -> Result<(), ChainError> {
        let mut last_err = None;
        for (i, root) in self.roots.iter().enumerate() {
            if !issued_by(child, root) {
                continue;
            }
            path.push(Node::Root(i));
            match self.check_link(child, root, path.len()) {
                Ok(()) => return Ok(()),
                Err(e) => last_err = Some(e),
            }
            path.pop();
        }
        for (i, parent) in self.intermediates.iter().enumerate() {
            if !issued_by(child, parent) || path.contains(&Node::Intermediate(i)) {
                continue;
            }
            if path.len() + 1 >= self.policy.max_chain_len {
                // Room is needed for this intermediate and a root above it.
                last_err = Some(ChainError::ChainTooLong { max: self.policy.max_chain_len });
                continue;
            }
            path.push(Node::Intermediate(i));
            let result =
                self.check_link(child, parent, path.len()).and_then(|()| self.extend(parent, path));
            match result {
                Ok(()) => return Ok(()),
                Err(e) => last_err = Some(e),
            }
            path.pop();
        }
        Err(last_err.unwrap_or_else(|| ChainError::UnknownIssuer {
            subject: child.subject().to_string(),
            issuer: child.issuer().to_string(),
        }))
    }

    /// `parent` is the `path_len`-th certificate of the path (the leaf is the first), so
    /// `path_len - 2` intermediates lie between it and the leaf.
    fn check_link(
        &self,
        child: &X509Certificate<'_>,
        parent: &X509Certificate<'_>,
        path_len: usize,
    ) -> Result<(), ChainError> {
        if path_len > self.policy.max_chain_len {
            return Err(ChainError::ChainTooLong { max: self.policy.max_chain_len });
        }
        verify_signature(child, parent.public_key())?;
        check_certificate(parent, self.policy)?;
        check_issuer(parent, u32::try_from(path_len.saturating_sub(2)).unwrap_or(u32::MAX))
    }
}

/// Name chaining, plus the key identifiers when both sides carry them (they pick the right
/// key after a CA re-key under the same name).
fn issued_by(child: &X509Certificate<'_>, parent: &X509Certificate<'_>) -> bool {
    if child.issuer().as_raw() != parent.subject().as_raw() {
        return false;
    }
    let aki = child.iter_extensions().find_map(|e| match e.parsed_extension() {
        ParsedExtension::AuthorityKeyIdentifier(aki) => aki.key_identifier.as_ref().map(|k| k.0),
        _ => None,
    });
    let ski = parent.iter_extensions().find_map(|e| match e.parsed_extension() {
        ParsedExtension::SubjectKeyIdentifier(ski) => Some(ski.0),
        _ => None,
    });
    match (aki, ski) {
        (Some(a), Some(s)) => a == s,
        _ => true,
    }
}

/// Checks every certificate gets: well-formed extensions, no unprocessed critical one,
/// validity at the policy's time.
fn check_certificate(cert: &X509Certificate<'_>, policy: &ChainPolicy) -> Result<(), ChainError> {
    let subject = || cert.subject().to_string();
    cert.extensions_map()
        .map_err(|_| ChainError::Malformed(format!("{}: duplicate extensions", subject())))?;
    for ext in cert.extensions() {
        let oid = ext.oid.to_id_string();
        if let ParsedExtension::ParseError { error } = ext.parsed_extension() {
            return Err(ChainError::Malformed(format!("{}: extension {oid}: {error}", subject())));
        }
        let handled = HANDLED_EXTENSIONS.contains(&oid.as_str())
            || policy.handled_critical.contains(&oid.as_str());
        if ext.critical && !handled {
            return Err(ChainError::UnhandledCriticalExtension { subject: subject(), oid });
        }
    }
    let at = unix_seconds(policy.at);
    let validity = cert.validity();
    if at < validity.not_before.timestamp() {
        return Err(ChainError::NotYetValid {
            subject: subject(),
            not_before: system_time(validity.not_before.timestamp()),
        });
    }
    if at > validity.not_after.timestamp() {
        return Err(ChainError::Expired {
            subject: subject(),
            not_after: system_time(validity.not_after.timestamp()),
        });
    }
    Ok(())
}

/// RFC 5280 §6.1.4 (k), (l), (n): a certificate that signed another must be a CA allowed to
/// sign certificates, and its pathLenConstraint must admit the intermediates below it.
fn check_issuer(cert: &X509Certificate<'_>, below: u32) -> Result<(), ChainError> {
    let subject = || cert.subject().to_string();
    let bc = cert
        .basic_constraints()
        .map_err(|e| ChainError::Malformed(format!("{}: basicConstraints: {e}", subject())))?;
    let Some(bc) = bc.filter(|bc| bc.value.ca) else {
        return Err(ChainError::NotACa { subject: subject() });
    };
    let ku = cert
        .key_usage()
        .map_err(|e| ChainError::Malformed(format!("{}: keyUsage: {e}", subject())))?;
    if !ku.is_some_and(|ku| ku.value.key_cert_sign()) {
        return Err(ChainError::MissingKeyCertSign { subject: subject() });
    }
    if let Some(allowed) = bc.value.path_len_constraint
        && below > allowed
    {
        return Err(ChainError::PathLenExceeded { subject: subject(), allowed, actual: below });
    }
    Ok(())
}

fn check_eku(cert: &X509Certificate<'_>, required: &str) -> Result<(), ChainError> {
    let subject = || cert.subject().to_string();
    let eku = cert
        .extended_key_usage()
        .map_err(|e| ChainError::Malformed(format!("{}: extKeyUsage: {e}", subject())))?;
    let found = eku.is_some_and(|eku| {
        let e = eku.value;
        (e.server_auth && required == EKU_SERVER_AUTH)
            || (e.client_auth && required == EKU_CLIENT_AUTH)
            || e.other.iter().any(|o| o.to_id_string() == required)
    });
    if found {
        Ok(())
    } else {
        Err(ChainError::MissingExtendedKeyUsage { subject: subject(), required: required.into() })
    }
}

/// Verifies `cert`'s signature with `issuer_key` using ring. The algorithm comes from the
/// certificate and must agree with the issuer key's type (RFC 5280 §4.1.1.2, RFC 4055 §3).
pub(crate) fn verify_signature(
    cert: &X509Certificate<'_>,
    issuer_key: &SubjectPublicKeyInfo<'_>,
) -> Result<(), ChainError> {
    let subject = || cert.subject().to_string();
    if cert.signature_algorithm != cert.tbs_certificate.signature {
        return Err(ChainError::SignatureAlgorithmMismatch { subject: subject() });
    }
    let alg = verification_algorithm(&cert.signature_algorithm, issuer_key).ok_or_else(|| {
        ChainError::UnsupportedSignatureAlgorithm {
            subject: subject(),
            algorithm: cert.signature_algorithm.algorithm.to_id_string(),
        }
    })?;
    signature::UnparsedPublicKey::new(alg, &issuer_key.subject_public_key.data)
        .verify(cert.tbs_certificate.as_ref(), &cert.signature_value.data)
        .map_err(|_| ChainError::BadSignature { subject: subject() })
}

fn verification_algorithm(
    sig: &AlgorithmIdentifier<'_>,
    key: &SubjectPublicKeyInfo<'_>,
) -> Option<&'static dyn VerificationAlgorithm> {
    let key_alg = &key.algorithm.algorithm;
    let rsa_key =
        *key_alg == oids::OID_PKCS1_RSAENCRYPTION || *key_alg == oids::OID_PKCS1_RSASSAPSS;
    let alg = &sig.algorithm;
    if *alg == oids::OID_SIG_ECDSA_WITH_SHA256 || *alg == oids::OID_SIG_ECDSA_WITH_SHA384 {
        if *key_alg != oids::OID_KEY_TYPE_EC_PUBLIC_KEY {
            return None;
        }
        let curve = key.algorithm.parameters.as_ref()?.as_oid().ok()?;
        let sha384 = *alg == oids::OID_SIG_ECDSA_WITH_SHA384;
        return match (curve == oids::OID_EC_P256, curve == oids::OID_NIST_EC_P384, sha384) {
            (true, _, false) => Some(&signature::ECDSA_P256_SHA256_ASN1),
            (true, _, true) => Some(&signature::ECDSA_P256_SHA384_ASN1),
            (_, true, false) => Some(&signature::ECDSA_P384_SHA256_ASN1),
            (_, true, true) => Some(&signature::ECDSA_P384_SHA384_ASN1),
            _ => None,
        };
    }
    if !rsa_key {
        return None;
    }
    if *alg == oids::OID_PKCS1_SHA256WITHRSA {
        Some(&signature::RSA_PKCS1_2048_8192_SHA256)
    } else if *alg == oids::OID_PKCS1_SHA384WITHRSA {
        Some(&signature::RSA_PKCS1_2048_8192_SHA384)
    } else if *alg == oids::OID_PKCS1_SHA512WITHRSA {
        Some(&signature::RSA_PKCS1_2048_8192_SHA512)
    } else if *alg == oids::OID_PKCS1_RSASSAPSS {
        pss_algorithm(sig)
    } else {
        None
    }
}

/// ring verifies PSS with MGF1 over the message hash and a salt as long as the hash, the
/// parameter set RFC 4055 §3.1 and RFC 8017 recommend; other parameter sets are refused.
fn pss_algorithm(sig: &AlgorithmIdentifier<'_>) -> Option<&'static dyn VerificationAlgorithm> {
    let params = RsaSsaPssParams::try_from(sig.parameters.as_ref()?).ok()?;
    let hash = params.hash_algorithm_oid();
    let mgf = params.mask_gen_algorithm().ok()?;
    if mgf.mgf.to_id_string() != "1.2.840.113549.1.1.8"
        || mgf.hash != *hash
        || params.trailer_field() != 1
    {
        return None;
    }
    let (alg, salt): (&'static dyn VerificationAlgorithm, u32) =
        if *hash == oids::OID_NIST_HASH_SHA256 {
            (&signature::RSA_PSS_2048_8192_SHA256, 32)
        } else if *hash == oids::OID_NIST_HASH_SHA384 {
            (&signature::RSA_PSS_2048_8192_SHA384, 48)
        } else if *hash == oids::OID_NIST_HASH_SHA512 {
            (&signature::RSA_PSS_2048_8192_SHA512, 64)
        } else {
            return None;
        };
    (params.salt_length() == salt).then_some(alg)
}

/// Parses exactly one DER certificate, nothing after it.
pub(crate) fn parse(der: &[u8]) -> Result<X509Certificate<'_>, ChainError> {
    if der.len() > MAX_CERTIFICATE_LEN {
        return Err(ChainError::TooLarge { len: der.len() });
    }
    let (rest, cert) =
        X509Certificate::from_der(der).map_err(|e| ChainError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(ChainError::Malformed(format!("{} bytes after the certificate", rest.len())));
    }
    check_outer_encoding(der).map_err(|e| ChainError::Malformed(e.into()))?;
    Ok(cert)
}

/// RFC 5280 §4.1.1.2: the outer signatureAlgorithm is the TBS's `signature` field, and the
/// signature BIT STRING has no unused bits. Compared byte for byte because x509-parser reads
/// both leniently (an OID under another tag parses the same), and a certificate must have
/// one encoding: the signature covers only the TBS, so every other byte is checked here.
fn check_outer_encoding(der: &[u8]) -> Result<(), &'static str> {
    let (certificate, _) = der::expect(der, der::SEQUENCE)?;
    let (tbs, rest) = der::expect(certificate, der::SEQUENCE)?;
    let (outer_algorithm, rest) = der::expect_raw(rest, der::SEQUENCE)?;
    let (signature, _) = der::expect(rest, der::BIT_STRING)?;
    if signature.first() != Some(&0) {
        return Err("the signature BIT STRING has unused bits");
    }
    let tbs = der::expect(tbs, der::VERSION).map_or(tbs, |(_, rest)| rest);
    let (_serial, tbs) = der::expect(tbs, der::INTEGER)?;
    let (tbs_algorithm, _) = der::expect_raw(tbs, der::SEQUENCE)?;
    if tbs_algorithm != outer_algorithm {
        return Err("signatureAlgorithm differs from the TBS signature field");
    }
    Ok(())
}

fn subject_of(der: &[u8]) -> String {
    parse(der).map(|c| c.subject().to_string()).unwrap_or_else(|e| e.to_string())
}

fn unix_seconds(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => i64::try_from(e.duration().as_secs()).map(|s| -s).unwrap_or(i64::MIN),
    }
}

fn system_time(secs: i64) -> SystemTime {
    let magnitude = Duration::from_secs(secs.unsigned_abs());
    if secs >= 0 {
        UNIX_EPOCH.checked_add(magnitude).unwrap_or(UNIX_EPOCH)
    } else {
        UNIX_EPOCH.checked_sub(magnitude).unwrap_or(UNIX_EPOCH)
    }
}

#[cfg(test)]
#[path = "x509_tests.rs"]
mod tests;
