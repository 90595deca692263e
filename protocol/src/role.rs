//! Role-bound certificates: every certificate under the CI names the one role its holder
//! plays, so that a party checks the role it expects and nothing a peer sends at run time
//! decides whom it trusts (modelled on GSMA SGP.22 §4.5.2.0, where a certificatePolicies
//! OID under id-rspRole says whether a certificate belongs to an SM-DP+, an eUICC, an EUM…).
//!
//! A role certificate carries, besides its chain to the CI root:
//! - exactly one policy OID of [`ROLE_ARC`] in its certificatePolicies extension (RFC 5280
//!   §4.2.1.4) — `ROLE_ARC.1` PVA, `.2` RO, `.3` operator;
//! - its name as the subject common name and as the DNS name `<name>.tresor.internal`
//!   (`.internal` is reserved for private use), so a TLS peer and a COSE verifier see the
//!   same name. The PVA and the RO are named `pva` and `ro`; an operator by its own name
//!   (`mno-a`, `acme-mobile`, …).
//!
//! [`ROLE_ARC`] is a UUID-derived OID (ITU-T X.667, `2.25.<UUID as integer>`), which needs
//! no registration and collides with no one's.
//!
//! A certificate without a role, with two, with an unknown one, or whose name is missing
//! or disagrees between CN and DNS name, has no role ([`RoleError`]): every check that
//! names a role refuses it.

use std::fmt;
use std::str::FromStr;

use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::{GeneralName, ParsedExtension};

/// The arc under which tresor's role OIDs live: `2.25.` and the UUID
/// fd9251be-ce9b-41c3-a801-f50e761b5ed2 as an integer.
pub const ROLE_ARC: &str = "2.25.337054416267400180262237180511192309458";

/// The DNS suffix of every role's own name.
pub const DNS_SUFFIX: &str = ".tresor.internal";

/// The role a certificate's holder plays in a deployment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// The platform validation authority: signs EARs, enrols AKs.
    Pva,
    /// The registration operator (with its DRF and DPF): serves devices, signs orders.
    Ro,
    /// A mobile network operator: signs profiles, issues OTA commands, runs an AuC.
    Operator,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Pva, Role::Ro, Role::Operator];

    /// The role's policy OID (dotted).
    pub fn oid(self) -> String {
        format!("{ROLE_ARC}.{}", self.arc())
    }

    fn arc(self) -> u8 {
        match self {
            Role::Pva => 1,
            Role::Ro => 2,
            Role::Operator => 3,
        }
    }

    /// The role the lab PKI (`tresor pki init`, test fixtures) gives a name: `pva` and `ro`
    /// are themselves, every other name an operator.
    pub fn of_lab_name(name: &str) -> Role {
        match name {
            "pva" => Role::Pva,
            "ro" => Role::Ro,
            _ => Role::Operator,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Pva => "pva",
            Role::Ro => "ro",
            Role::Operator => "operator",
        }
    }

    /// The DER of a certificatePolicies extension value (`SEQUENCE OF PolicyInformation`)
    /// holding this role's policy and nothing else (rcgen takes OIDs as u64 arcs, which a
    /// UUID arc does not fit, so certificate issuers add it as a custom extension).
    pub fn policies_der(self) -> Vec<u8> {
        let oid = encode_oid(&self.oid());
        let oid_tlv = tlv(0x06, &oid);
        let info = tlv(0x30, &oid_tlv);
        tlv(0x30, &info)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = RoleError;
    fn from_str(s: &str) -> Result<Self, RoleError> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| RoleError::UnknownRole(s.into()))
    }
}

/// The dotted OID of certificatePolicies (RFC 5280 §4.2.1.4).
pub const CERTIFICATE_POLICIES: &str = "2.5.29.32";

/// A certificate's role and name, as its extensions state them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertifiedRole {
    pub role: Role,
    pub name: String,
}

impl CertifiedRole {
    /// Reads the role of a certificate. Does not validate the chain: callers do that first.
    pub fn of(cert: &X509Certificate<'_>) -> Result<Self, RoleError> {
        let mut roles = Vec::new();
        for ext in cert.extensions() {
            if let ParsedExtension::CertificatePolicies(policies) = ext.parsed_extension() {
                for policy in policies.iter() {
                    // Compared as DER: a UUID arc does not fit the u64 arcs of
                    // `Oid::to_id_string`, which then prints hex.
                    let oid = policy.policy_id.as_bytes();
                    if !oid.starts_with(&encode_oid(ROLE_ARC)) {
                        continue;
                    }
                    let role = Role::ALL
                        .into_iter()
                        .find(|r| encode_oid(&r.oid()) == oid)
                        .ok_or_else(|| RoleError::UnknownRole(hex_oid(oid)))?;
                    roles.push(role);
                }
            }
        }
        let role = match roles.as_slice() {
            [] => return Err(RoleError::NoRole),
            [one] => *one,
            _ => return Err(RoleError::SeveralRoles),
        };
        let mut cns = cert.subject().iter_common_name();
        let name = match (cns.next().map(|cn| cn.as_str()), cns.next()) {
            (Some(Ok(cn)), None) => cn.to_owned(),
            _ => return Err(RoleError::NoName),
        };
        if !valid_name(&name) {
            return Err(RoleError::BadName(name));
        }
        let dns = format!("{name}{DNS_SUFFIX}");
        let has_dns = cert.subject_alternative_name().ok().flatten().is_some_and(|san| {
            san.value
                .general_names
                .iter()
                .any(|n| matches!(n, GeneralName::DNSName(d) if d.eq_ignore_ascii_case(&dns)))
        });
        if !has_dns {
            return Err(RoleError::NameMismatch { name, dns });
        }
        Ok(Self { role, name })
    }

    /// [`CertifiedRole::of`] a DER certificate.
    pub fn of_der(der: &[u8]) -> Result<Self, RoleError> {
        let (_, cert) = x509_parser::parse_x509_certificate(der)
            .map_err(|e| RoleError::Certificate(e.to_string()))?;
        Self::of(&cert)
    }

    /// Admits the certificate if it plays `expected` (and, when given, is named `name`).
    pub fn require(&self, expected: &Expected) -> Result<(), RoleError> {
        if self.role != expected.role {
            return Err(RoleError::WrongRole {
                expected: expected.role,
                found: self.role,
                name: self.name.clone(),
            });
        }
        match &expected.name {
            Some(name) if *name != self.name => Err(RoleError::WrongName {
                role: self.role,
                expected: name.clone(),
                found: self.name.clone(),
            }),
            _ => Ok(()),
        }
    }
}

impl fmt::Display for CertifiedRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.role, self.name)
    }
}

/// What a check requires of a certificate: a role, and optionally the holder's name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expected {
    pub role: Role,
    pub name: Option<String>,
}

impl Expected {
    /// Any holder of `role`.
    pub fn role(role: Role) -> Self {
        Self { role, name: None }
    }

    /// The holder of `role` named `name`.
    pub fn named(role: Role, name: impl Into<String>) -> Self {
        Self { role, name: Some(name.into()) }
    }
}

impl fmt::Display for Expected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.name {
            Some(name) => write!(f, "{} {name}", self.role),
            None => write!(f, "any {}", self.role),
        }
    }
}

/// The DNS name of the role named `name`: `<name>.tresor.internal`.
pub fn dns_name(name: &str) -> String {
    format!("{name}{DNS_SUFFIX}")
}

/// A role name: a DNS label (RFC 1123: letters, digits, hyphens; no leading or trailing
/// hyphen; 1–63 characters), lower case.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && !name.starts_with('-')
        && !name.ends_with('-')
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// Why a certificate does not have the role a check requires.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RoleError {
    #[error("the certificate names no tresor role (certificatePolicies {ROLE_ARC}.*)")]
    NoRole,
    #[error("the certificate names more than one tresor role")]
    SeveralRoles,
    #[error("unknown role {0}")]
    UnknownRole(String),
    #[error("the certificate has no single common name")]
    NoName,
    #[error("role name {0:?} is not a lower-case DNS label")]
    BadName(String),
    #[error("the certificate of {name} lacks its own DNS name {dns}")]
    NameMismatch { name: String, dns: String },
    #[error("{name} holds the {found} role, not {expected}")]
    WrongRole { expected: Role, found: Role, name: String },
    #[error("the {role} is {found}, not {expected}")]
    WrongName { role: Role, expected: String, found: String },
    #[error("certificate does not parse: {0}")]
    Certificate(String),
}

/// DER content octets of a dotted OID (X.690 §8.19).
fn encode_oid(dotted: &str) -> Vec<u8> {
    let arcs: Vec<u128> = dotted.split('.').filter_map(|a| a.parse().ok()).collect();
    let mut out = Vec::new();
    let (first, rest) = match arcs.as_slice() {
        [a, b, rest @ ..] => (a * 40 + b, rest),
        _ => return out,
    };
    for arc in std::iter::once(first).chain(rest.iter().copied()) {
        let mut bytes = vec![(arc & 0x7f) as u8];
        let mut v = arc >> 7;
        while v > 0 {
            bytes.push(((v & 0x7f) as u8) | 0x80);
            v >>= 7;
        }
        bytes.reverse();
        out.extend(bytes);
    }
    out
}

fn hex_oid(der: &[u8]) -> String {
    der.iter().map(|b| format!("{b:02x}")).collect()
}

fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else if len <= 0xff {
        out.extend([0x81, len as u8]);
    } else {
        out.extend([0x82, (len >> 8) as u8, len as u8]);
    }
    out.extend_from_slice(content);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_arc_encodes_as_x690_says() {
        // Base-128 of the UUID integer, computed independently (Python's int).
        assert_eq!(hex_oid(&encode_oid(ROLE_ARC)), "6983fb92a8efd9e9da8787a880fda1e7b0edbd52");
    }

    #[test]
    fn the_oid_encodes_as_x690_says() {
        // 2.25 → first octet 2*40+25 = 105 = 0x69 (X.690 §8.19.4).
        for role in Role::ALL {
            let der = encode_oid(&role.oid());
            assert_eq!(der[0], 0x69);
            assert!(der.starts_with(&encode_oid(ROLE_ARC)));
            assert_eq!(der.last(), Some(&role.arc()));
        }
    }

    #[test]
    fn names_are_dns_labels() {
        for good in ["pva", "ro", "mno-a", "acme-mobile", "op7"] {
            assert!(valid_name(good), "{good}");
        }
        for bad in ["", "-a", "a-", "MNO", "a.b", "a b", &"x".repeat(64)] {
            assert!(!valid_name(bad), "{bad}");
        }
    }

    #[test]
    fn roles_parse_from_their_names() {
        for role in Role::ALL {
            assert_eq!(role.as_str().parse::<Role>(), Ok(role));
        }
        assert!("mno".parse::<Role>().is_err());
    }
}
