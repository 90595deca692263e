//! The RO's orders that end a device's change (docs/flow.md, "The change as a
//! transaction"): *commit* — the new operator's AuC accepted the new USIM, make the profile
//! permanent — and *abort* — restore the old profile. Each is signed by the RO
//! (COSE_Sign1, ES256, x5chain with the RO's certificate under the CI root,
//! [`crate::bundle::CoseSigner`]) and names the device and the campaign, so the card acts
//! only on the registration operator's own word for its own change, whatever channel
//! carried it and whoever relayed it.

use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::bundle::{self, BundleError, CoseSigner};
use crate::ids::DeviceId;
use crate::role::{Expected, Role};
use crate::x509::TrustAnchors;

/// Largest order accepted or produced: a small payload and an x5chain.
pub const MAX_ORDER_LEN: usize = 16 * 1024;
/// How far an order's `issued` may lie in the future, for clocks that disagree a little.
pub const MAX_ORDER_SKEW_SECS: u64 = 300;
/// How old an order may be. The RO signs a fresh one with every task it hands out, so an
/// older one is a replay.
pub const MAX_ORDER_AGE_SECS: u64 = 600;

/// What the RO orders.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OrderKind {
    Commit,
    Abort,
}

impl OrderKind {
    pub fn name(self) -> &'static str {
        match self {
            Self::Commit => "commit",
            Self::Abort => "abort",
        }
    }
}

/// The signed payload of an order. CBOR map with text keys.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Order {
    pub kind: OrderKind,
    pub device_id: DeviceId,
    pub campaign: String,
    /// Commit: the sequence of the profile to keep.
    pub sequence: Option<u64>,
    /// Abort: why.
    pub reason: Option<String>,
    /// Unix seconds.
    pub issued: u64,
}

/// Why an order was refused. One variant per check; the signature checks are
/// [`BundleError`]'s COSE_Sign1 checks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OrderError {
    #[error("order signature: {0}")]
    Signature(BundleError),
    #[error("order payload: {0}")]
    Malformed(String),
    #[error("order is a {found}, expected a {expected}")]
    WrongKind { expected: &'static str, found: &'static str },
    #[error("order is for device {found}, this is {expected}")]
    WrongDevice { expected: DeviceId, found: DeviceId },
    #[error("order is for campaign {found:?}, expected {expected:?}")]
    WrongCampaign { expected: String, found: String },
    #[error("commit order names sequence {found:?}, the card's change is {expected}")]
    WrongSequence { expected: u64, found: Option<u64> },
    #[error("order issued at {issued}, more than {skew} s after now ({now}, Unix seconds)")]
    IssuedInFuture { issued: u64, now: u64, skew: u64 },
    #[error("order issued at {issued}, more than {max_age} s before now ({now}, Unix seconds)")]
    Expired { issued: u64, now: u64, max_age: u64 },
}

/// Signs `order` with the RO's identity.
pub fn sign_order(signer: &CoseSigner, order: &Order) -> Result<Vec<u8>, OrderError> {
    let body = bundle::encode(order).map_err(|e| OrderError::Signature(BundleError::Encode(e)))?;
    signer.sign(&body, MAX_ORDER_LEN).map(|out| out.to_vec()).map_err(OrderError::Signature)
}

/// What an order must say to be obeyed.
#[derive(Debug, Clone, Copy)]
pub struct OrderExpectations<'a> {
    pub ci_roots: &'a TrustAnchors,
    pub now: SystemTime,
    /// The RO's name (its certificate's common name, of the RO role), `ro`.
    pub signer: &'a str,
    pub kind: OrderKind,
    pub device_id: &'a DeviceId,
    pub campaign: &'a str,
    /// For a commit: the sequence of the change on trial.
    pub sequence: Option<u64>,
}

/// Verifies an order: the COSE_Sign1 checks (signer `expected.signer` under the CI), then
/// kind, device, campaign, for a commit the sequence, and an issue time neither in the
/// future nor older than [`MAX_ORDER_AGE_SECS`].
pub fn verify_order(bytes: &[u8], expected: &OrderExpectations<'_>) -> Result<Order, OrderError> {
    let signed = bundle::verify_sign1(
        bytes,
        "order",
        MAX_ORDER_LEN,
        expected.ci_roots,
        expected.now,
        &Expected::named(Role::Ro, expected.signer),
    )
    .map_err(OrderError::Signature)?;
    let order: Order = bundle::decode_exact(&signed.payload).map_err(OrderError::Malformed)?;
    if order.kind != expected.kind {
        return Err(OrderError::WrongKind {
            expected: expected.kind.name(),
            found: order.kind.name(),
        });
    }
    if &order.device_id != expected.device_id {
        return Err(OrderError::WrongDevice {
            expected: expected.device_id.clone(),
            found: order.device_id,
        });
    }
    if order.campaign != expected.campaign {
        return Err(OrderError::WrongCampaign {
            expected: expected.campaign.to_owned(),
            found: order.campaign,
        });
    }
    if let Some(sequence) = expected.sequence
        && order.sequence != Some(sequence)
    {
        return Err(OrderError::WrongSequence { expected: sequence, found: order.sequence });
    }
    let now = crate::ear::unix(expected.now);
    if order.issued > now.saturating_add(MAX_ORDER_SKEW_SECS) {
        return Err(OrderError::IssuedInFuture {
            issued: order.issued,
            now,
            skew: MAX_ORDER_SKEW_SECS,
        });
    }
    if order.issued.saturating_add(MAX_ORDER_AGE_SECS) < now {
        return Err(OrderError::Expired { issued: order.issued, now, max_age: MAX_ORDER_AGE_SECS });
    }
    Ok(order)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};

    /// A CI root and a leaf named `cn` under it: (signer, roots).
    fn pki(cn: &str) -> (CoseSigner, TrustAnchors) {
        let ca_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.distinguished_name.push(DnType::CommonName, "ci");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign];
        let (now, hour) = (SystemTime::now(), std::time::Duration::from_secs(3600));
        ca.not_before = (now - hour).into();
        ca.not_after = (now + hour).into();
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut leaf = CertificateParams::new(Vec::<String>::new()).unwrap();
        leaf.distinguished_name.push(DnType::CommonName, cn);
        leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        leaf.subject_alt_names =
            vec![rcgen::SanType::DnsName(crate::role::dns_name(cn).try_into().unwrap())];
        leaf.custom_extensions.push(rcgen::CustomExtension::from_oid_content(
            &[2, 5, 29, 32],
            crate::role::Role::of_lab_name(cn).policies_der(),
        ));
        let now = SystemTime::now();
        let hour = std::time::Duration::from_secs(3600);
        leaf.not_before = (now - hour).into();
        leaf.not_after = (now + hour).into();
        let issuer = rcgen::Issuer::from_params(&ca, &ca_key);
        let cert = leaf.signed_by(&key, &issuer).unwrap();
        let signer =
            CoseSigner::from_pkcs8_der(&key.serialize_der(), vec![cert.der().to_vec()]).unwrap();
        let mut roots = TrustAnchors::new();
        roots.add_der(ca_cert.der()).unwrap();
        (signer, roots)
    }

    fn device(n: u8) -> DeviceId {
        let mut name = vec![0x00, 0x0B];
        name.extend([n; 32]);
        DeviceId::from_name(&name).unwrap()
    }

    fn commit(now: u64) -> Order {
        Order {
            kind: OrderKind::Commit,
            device_id: device(1),
            campaign: "c-1".into(),
            sequence: Some(3),
            reason: None,
            issued: now,
        }
    }

    #[test]
    fn an_order_is_obeyed_only_as_signed_for_its_device_campaign_and_change() {
        let (ro, roots) = pki("ro");
        let now = SystemTime::now();
        let t = crate::ear::unix(now);
        let id = device(1);
        let expect = OrderExpectations {
            ci_roots: &roots,
            now,
            signer: "ro",
            kind: OrderKind::Commit,
            device_id: &id,
            campaign: "c-1",
            sequence: Some(3),
        };
        let signed = sign_order(&ro, &commit(t)).unwrap();
        assert_eq!(verify_order(&signed, &expect).unwrap(), commit(t));

        let other = device(2);
        type Check = fn(&OrderError) -> bool;
        let cases: [(OrderExpectations<'_>, Check); 4] = [
            (OrderExpectations { kind: OrderKind::Abort, ..expect }, |e| {
                matches!(e, OrderError::WrongKind { .. })
            }),
            (OrderExpectations { device_id: &other, ..expect }, |e| {
                matches!(e, OrderError::WrongDevice { .. })
            }),
            (OrderExpectations { campaign: "c-2", ..expect }, |e| {
                matches!(e, OrderError::WrongCampaign { .. })
            }),
            (OrderExpectations { sequence: Some(4), ..expect }, |e| {
                matches!(e, OrderError::WrongSequence { .. })
            }),
        ];
        for (expectation, check) in cases {
            let e = verify_order(&signed, &expectation).unwrap_err();
            assert!(check(&e), "{e}");
        }
        // Signed by another role of the same CI: refused by name.
        let (mno, _) = pki("mno-b");
        let forged = sign_order(&mno, &commit(t)).unwrap();
        assert!(matches!(
            verify_order(&forged, &expect),
            Err(OrderError::Signature(
                BundleError::SignerChain(_) | BundleError::WrongSigner { .. }
            ))
        ));
        // Tampered bytes, garbage, far-future issue time.
        let mut tampered = signed.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        assert!(matches!(
            verify_order(&tampered, &expect),
            Err(OrderError::Signature(BundleError::BadSignature))
        ));
        assert!(matches!(verify_order(b"\x00", &expect), Err(OrderError::Signature(_))));
        let future = sign_order(&ro, &commit(t + 3600)).unwrap();
        assert!(matches!(verify_order(&future, &expect), Err(OrderError::IssuedInFuture { .. })));
        let old = sign_order(&ro, &commit(t - MAX_ORDER_AGE_SECS - 1)).unwrap();
        assert!(matches!(verify_order(&old, &expect), Err(OrderError::Expired { .. })));
    }
}
