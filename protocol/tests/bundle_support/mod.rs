//! Shared fixtures of the `bundle_*` tests: a CI like `tresor pki init` makes (rcgen, ECDSA
//! P-256, role certificates with CN = role name, digitalSignature, serverAuth + clientAuth),
//! devices, payloads, and a raw COSE_Sign1 signer for building malformed profiles.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use coset::{CborSerializable, CoseSign1, Header, ProtectedHeader, TaggedCborSerializable};
use protocol::DeviceId;
use protocol::bundle::{ProfilePayload, ProfileSigner};
use protocol::secret::{Amf, Opc, OtaKey, OtaKeys, SubscriberKey, SubscriptionProfile};
use protocol::x509::TrustAnchors;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SignatureAlgorithm,
};
use ring::rand::SystemRandom;
use ring::signature::{self as sig, EcdsaKeyPair};

/// The secrets of [`profile`], to search for in outputs.
pub const K: [u8; 16] = [0xA1; 16];
pub const OPC: [u8; 16] = [0xB2; 16];
pub const KIC: [u8; 16] = [0xC3; 16];
pub const KID: [u8; 16] = [0xD4; 16];

/// A CI root and the ability to issue role certificates under it.
pub struct Ci {
    params: CertificateParams,
    key: KeyPair,
    pub der: Vec<u8>,
}

/// A role's certificate and PKCS#8 PEM key.
pub struct RoleCert {
    pub der: Vec<u8>,
    pub key_pem: String,
}

impl RoleCert {
    pub fn signer(&self) -> ProfileSigner {
        ProfileSigner::from_pkcs8_pem(&self.key_pem, vec![self.der.clone()]).unwrap()
    }
}

impl Ci {
    pub fn new(cn: &str) -> Ci {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = base(cn, Duration::from_secs(3650 * 86_400));
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(1));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let der = params.self_signed(&key).unwrap().der().to_vec();
        Ci { params, key, der }
    }

    /// An intermediate CA under this one (pathLen 0).
    pub fn intermediate(&self, cn: &str) -> Ci {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = base(cn, Duration::from_secs(365 * 86_400));
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let issuer = Issuer::from_params(&self.params, &self.key);
        let der = params.signed_by(&key, &issuer).unwrap().der().to_vec();
        Ci { params, key, der }
    }

    /// This CA's own certificate and key as a role (for self-signed forgeries).
    pub fn as_role(&self) -> RoleCert {
        RoleCert { der: self.der.clone(), key_pem: self.key.serialize_pem() }
    }

    pub fn anchors(&self) -> TrustAnchors {
        let mut a = TrustAnchors::new();
        a.add_der(&self.der).unwrap();
        a
    }

    /// A role certificate as `tresor pki init` issues it.
    pub fn role(&self, cn: &str) -> RoleCert {
        self.role_with(cn, &rcgen::PKCS_ECDSA_P256_SHA256, |_| {})
    }

    /// A role certificate with a key of `alg` and `tweak` applied to its parameters.
    pub fn role_with(
        &self,
        cn: &str,
        alg: &'static SignatureAlgorithm,
        tweak: impl FnOnce(&mut CertificateParams),
    ) -> RoleCert {
        let key = KeyPair::generate_for(alg).unwrap();
        let mut p = base(cn, Duration::from_secs(825 * 86_400));
        p.is_ca = IsCa::ExplicitNoCa;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages =
            vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        p.use_authority_key_identifier_extension = true;
        // The role, as `tresor pki init` gives it (`protocol::role`).
        p.subject_alt_names =
            vec![rcgen::SanType::DnsName(protocol::role::dns_name(cn).try_into().unwrap())];
        p.custom_extensions.push(rcgen::CustomExtension::from_oid_content(
            &[2, 5, 29, 32],
            protocol::role::Role::of_lab_name(cn).policies_der(),
        ));
        tweak(&mut p);
        let issuer = Issuer::from_params(&self.params, &self.key);
        let der = p.signed_by(&key, &issuer).unwrap().der().to_vec();
        RoleCert { der, key_pem: key.serialize_pem() }
    }
}

fn base(cn: &str, validity: Duration) -> CertificateParams {
    let now = SystemTime::now();
    let mut p = CertificateParams::default();
    p.distinguished_name = DistinguishedName::new();
    p.distinguished_name.push(DnType::OrganizationName, "tresor");
    p.distinguished_name.push(DnType::CommonName, cn);
    p.not_before = (now - Duration::from_secs(300)).into();
    p.not_after = (now + validity).into();
    p
}

/// A device id: SHA-256 name whose digest is `n` repeated.
pub fn device(n: u8) -> DeviceId {
    let mut name = vec![0x00, 0x0B];
    name.extend([n; 32]);
    DeviceId::from_name(&name).unwrap()
}

pub fn profile() -> SubscriptionProfile {
    SubscriptionProfile {
        iccid: "89883030000000000015".parse().unwrap(),
        imsi: "001010000000042".parse().unwrap(),
        k: SubscriberKey::new(K),
        opc: Opc::new(OPC),
        amf: Amf([0x80, 0x00]),
        ota: OtaKeys { kic: OtaKey::new(KIC), kid: OtaKey::new(KID), counter: 5 },
    }
}

pub fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// The EAR the tests pretend the release was based on.
pub const EAR: &[u8] = b"\xd2\x84 an EAR COSE_Sign1 stands here";

/// A payload for `device` by `operator`, valid for an hour from now.
pub fn payload(device: &DeviceId, operator: &str) -> ProfilePayload {
    let now = now_secs();
    ProfilePayload {
        device_id: device.clone(),
        operator: operator.into(),
        campaign: "campaign-1".into(),
        profile: profile(),
        sequence: 8,
        issued: now - 10,
        expires: now + 3600,
        ear_hash: protocol::bundle::ear_hash(EAR),
    }
}

/// Signs arbitrary headers and payload with ES256 (fixed r ‖ s, low S as every tresor
/// signer makes it), bypassing [`ProfileSigner`]'s checks, to build profiles a
/// well-behaved signer would not.
pub fn sign_raw(
    key_pem: &str,
    protected: Header,
    unprotected: Header,
    payload: Option<Vec<u8>>,
    detached: Option<&[u8]>,
) -> Vec<u8> {
    let der = pem::parse(key_pem).unwrap().into_contents();
    let rng = SystemRandom::new();
    let key = EcdsaKeyPair::from_pkcs8(&sig::ECDSA_P256_SHA256_FIXED_SIGNING, &der, &rng).unwrap();
    let mut s = CoseSign1 {
        protected: ProtectedHeader { original_data: None, header: protected },
        unprotected,
        payload,
        signature: Vec::new(),
    };
    let tbs = match detached {
        Some(p) => s.tbs_detached_data(p, &[]),
        None => s.tbs_data(&[]),
    };
    s.signature = protocol::es256::to_low_s(key.sign(&rng, &tbs).unwrap().as_ref());
    s.to_tagged_vec().unwrap()
}

/// ES256 protected header with a single-certificate x5chain.
pub fn es256_x5chain(cert: &[u8]) -> Header {
    coset::HeaderBuilder::new()
        .algorithm(coset::iana::Algorithm::ES256)
        .value(33, coset::cbor::value::Value::Bytes(cert.to_vec()))
        .build()
}

/// CBOR of any serde value (ciborium).
pub fn cbor<T: serde::Serialize>(v: &T) -> Vec<u8> {
    let mut out = Vec::new();
    ciborium::ser::into_writer(v, &mut out).unwrap();
    out
}

/// Whether `haystack` contains any secret of [`profile`], raw or as hex.
pub fn leaks_a_secret(haystack: &[u8]) -> bool {
    let text = String::from_utf8_lossy(haystack).to_lowercase();
    [K, OPC, KIC, KID]
        .iter()
        .any(|s| haystack.windows(s.len()).any(|w| w == s) || text.contains(&hex::encode(&s[..4])))
}

/// Re-parses a COSE_Sign1, lets `edit` change it, and re-encodes it (signature untouched).
pub fn edit_sign1(bytes: &[u8], edit: impl FnOnce(&mut CoseSign1)) -> Vec<u8> {
    let mut s = CoseSign1::from_tagged_slice(bytes).unwrap();
    edit(&mut s);
    s.to_tagged_vec().unwrap()
}

/// The untagged encoding, for the "tag required" check.
pub fn untagged_sign1(bytes: &[u8]) -> Vec<u8> {
    CoseSign1::from_tagged_slice(bytes).unwrap().to_vec().unwrap()
}
