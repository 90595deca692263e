//! How a scenario learns what stopped its attack: the RO's campaign status (each failure
//! says which stage refused and why), the card's state, and HTTP answers (problem
//! documents). Messages of the role crates' errors are mapped back to the names of their
//! checks — `EarError::OtherNonce`, `BundleError::WrongSigner`, an EAR's failed-check slugs,
//! a refused order's `order-wrong-campaign`, a problem type — by the fixed part of each variant's message; the tests below build each
//! variant and check that its message maps to its name, so a reworded message cannot go
//! unnoticed.

use std::path::Path;

use anyhow::{Context, Result};
use protocol::{DeviceId, Imsi};
use provisioning::ro::DeviceReport;
use transport::Problem;
use uicc::{Card, Phase};

use super::{Layer, Stage};
use crate::lab::Lab;

/// The device's row in the RO's status of `campaign`.
pub(crate) async fn ro_device(
    lab: &Lab,
    campaign: &str,
    device: &DeviceId,
) -> Result<DeviceReport> {
    let report = lab.campaign(campaign).await?;
    report
        .devices
        .into_iter()
        .find(|d| &d.device_id == device)
        .with_context(|| format!("device {device} is not in campaign {campaign}"))
}

/// What the RO's status says about the attack: a device that switched got through; a device
/// rolled back (the RO abandoned the change and the device acknowledged, signed, that its
/// old profile runs again) was stopped by the stage its failure names. A device the RO must
/// reconcile by hand got the protocol into a contradiction: that counts as accepted.
pub(crate) fn ro_layer(row: &DeviceReport) -> Result<Layer> {
    match row.state.as_str() {
        "switched" => Ok(Layer::accepted(Stage::Tre, "the device switched to the new operator")),
        "rolled-back" => {
            let text = row.failure.clone().unwrap_or_default();
            Ok(from_ro_failure(&text))
        }
        "reconciling" => Ok(Layer::accepted(
            Stage::RoDeviceApi,
            format!(
                "the RO must reconcile the device: {}",
                row.failure.clone().unwrap_or_default()
            ),
        )),
        other => anyhow::bail!("the device is still {other} at the RO"),
    }
}

/// Maps a failure the RO recorded (`RoError`'s message) to the stage and named checks.
pub(crate) fn from_ro_failure(text: &str) -> Layer {
    let rejected = |stage, checks: Vec<String>| Layer::rejected(stage, checks, text);
    // "device refused": the device's own answer (its USIM refused AUTHENTICATE).
    let peers = [
        ("pva", Stage::Pva),
        ("mno-b", Stage::MnoB),
        ("mno-a", Stage::MnoA),
        ("device", Stage::Uicc),
    ];
    for (peer, stage) in peers {
        if let Some(rest) = text.strip_prefix(&format!("{peer} refused (")) {
            let slug = rest.split(')').next().unwrap_or_default();
            let slug = slug
                .strip_prefix(&format!("{peer}/"))
                .or_else(|| slug.strip_prefix("pva/"))
                .unwrap_or(slug);
            return rejected(stage, vec![slug.to_owned()]);
        }
    }
    if let Some(rest) = text.strip_prefix("DPF refuses to release: attestation result: ") {
        if let Some(failed) = failed_checks(rest) {
            // The PVA's appraisal named the checks; the DPF only enforced its verdict.
            return rejected(Stage::Pva, failed);
        }
        return rejected(Stage::Dpf, vec![ear_check(rest)]);
    }
    if let Some(rest) = text.strip_prefix("DPF refuses to release: profile: ") {
        return rejected(Stage::Dpf, vec![bundle_check(rest)]);
    }
    if let Some(rest) = text.strip_prefix("attach refused: EK certificate: ") {
        return rejected(Stage::Drf, vec![format!("EkCertError::{}", ek_check(rest))]);
    }
    if text.starts_with("the UICC refused MNO-A's activate-TRE command") {
        return rejected(Stage::Uicc, vec!["activate-TRE refused by the card".into()]);
    }
    if let Some(rest) = text.strip_prefix("attach refused: ") {
        return rejected(Stage::Drf, vec![rest.to_owned()]);
    }
    // The device's own (signed) word that it did not install: its TRE refused the bundle.
    if let Some(rest) = text.strip_prefix("the device did not install: bundle refused: ") {
        return tre_layer(rest, text);
    }
    if text.starts_with("the device did not install: ") {
        return rejected(Stage::Tre, vec!["install-failed".into()]);
    }
    if text.starts_with("install receipt: ") {
        return rejected(Stage::Dpf, vec!["receipt".into()]);
    }
    if text.starts_with("AKA with the new operator: the new USIM refused AUTHENTICATE") {
        return rejected(Stage::Uicc, vec!["aka-failed".into()]);
    }
    // The card's fallback (its timer, or the agent's restore) came before the commit order.
    if text.starts_with("the card fell back before the commit: ") {
        return rejected(Stage::Uicc, vec!["fell-back-before-commit".into()]);
    }
    rejected(Stage::Unknown, Vec::new())
}

/// The device's refusal of a bundle (`BundleError`'s message): the TPM's when it would not
/// compute Z, the TRE's checks otherwise.
pub(crate) fn tre_layer(message: &str, detail: &str) -> Layer {
    // The device's own check of the EAR it was handed with the bundle (`tre::Error::Ear`).
    if let Some((_, ear)) = message.split_once("attestation result: ") {
        return Layer::rejected(Stage::Tre, vec![ear_check(ear)], detail);
    }
    let check = bundle_check(message);
    if check == "BundleError::KeyAgreement" {
        return Layer::rejected(
            Stage::Tpm,
            vec!["TPM2_ECDH_ZGen refused (PolicyPCR)".into(), check],
            detail,
        );
    }
    Layer::rejected(Stage::Tre, vec![check], detail)
}

/// The failed checks an EAR's non-affirming status lists (`EarError::NotAffirming`).
fn failed_checks(message: &str) -> Option<Vec<String>> {
    if !message.contains("not affirming") {
        return None;
    }
    let list = message.split("(failed checks: ").nth(1)?.trim_end_matches(')');
    // A check that failed for several PCRs or components is named once, where it first failed.
    let mut names: Vec<String> = Vec::new();
    for name in list.split(", ").filter(|s| !s.is_empty()) {
        if !names.iter().any(|n| n == name) {
            names.push(name.to_owned());
        }
    }
    Some(names)
}

/// The variant of `protocol::ear::EarError` a message comes from.
pub(crate) fn ear_check(message: &str) -> String {
    const TABLE: &[(&str, &str)] = &[
        ("not affirming", "NotAffirming"),
        ("more trusting than its trustworthiness vector", "StatusInconsistent"),
        ("exceeds the limit", "TooLarge"),
        ("EAR is malformed", "Malformed"),
        ("not signed with ES256", "UnsupportedAlgorithm"),
        ("carries no x5chain", "MissingCertificateChain"),
        ("does not chain to a trusted CI root", "UntrustedSigner"),
        ("which may not sign attestation results", "SignerNotAllowed"),
        ("EAR signature does not verify", "BadSignature"),
        ("EAR profile", "WrongProfile"),
        ("EAR expired at", "Expired"),
        ("in the future", "NotYetValid"),
        ("EAR is for device", "OtherDevice"),
        ("EAR is for another nonce", "OtherNonce"),
        ("EAR is for another bundle key", "OtherBundleKey"),
        ("carries no bundle key", "MissingBundleKey"),
        // The DPF's and the device's own words for an attestation-only EAR.
        ("certifies no bundle key", "MissingBundleKey"),
    ];
    named("EarError", TABLE, message)
}

/// The variant of `protocol::bundle::BundleError` a message comes from.
pub(crate) fn bundle_check(message: &str) -> String {
    const TABLE: &[(&str, &str)] = &[
        ("not above the anti-rollback counter", "Replayed"),
        ("bundle is for device", "BundleForAnotherDevice"),
        ("bundle was released on EAR", "BundleForAnotherEar"),
        ("bundle does not decrypt", "DecryptionFailed"),
        ("key agreement (ECDH ZGen) failed", "KeyAgreement"),
        ("signer's certificate path", "SignerChain"),
        ("COSE_Sign1 signature does not verify", "BadSignature"),
        ("profile was made for EAR", "WrongEar"),
        ("profile is for device", "WrongDevice"),
        ("profile expired at", "Expired"),
        ("profile payload names operator", "OperatorMismatch"),
        ("signed by \"", "WrongSigner"),
        ("signer's certificate: ", "SignerRole"),
        ("bundle is not a tagged COSE_Encrypt", "MalformedEncrypt"),
        ("bundle protected header lacks", "MissingHeader"),
        ("not a tagged COSE_Sign1", "MalformedSign1"),
        ("profile payload:", "MalformedPayload"),
    ];
    let name = named("BundleError", TABLE, message);
    if name == "BundleError::SignerRole" {
        let role = message.split_once("signer's certificate: ").map(|(_, r)| r).unwrap_or_default();
        return format!("BundleError::SignerRole({})", role_check(role));
    }
    if name == "BundleError::SignerChain" {
        let chain = message.split_once("certificate path: ").map(|(_, c)| c).unwrap_or_default();
        return format!("BundleError::SignerChain({})", chain_check(chain));
    }
    name
}

/// The variant of `protocol::role::RoleError` a message comes from.
pub(crate) fn role_check(message: &str) -> String {
    const TABLE: &[(&str, &str)] = &[
        ("names no tresor role", "NoRole"),
        ("more than one tresor role", "SeveralRoles"),
        ("unknown role", "UnknownRole"),
        ("no single common name", "NoName"),
        ("is not a lower-case DNS label", "BadName"),
        ("lacks its own DNS name", "NameMismatch"),
        (" role, not ", "WrongRole"),
        ("certificate does not parse", "Certificate"),
        (", not ", "WrongName"),
    ];
    named("", TABLE, message)
}

/// The check of `protocol::order::OrderError` a message comes from — the TRE's refusal of
/// an order (`tre::agent`'s "… order refused: …") — as `order-<check>`; a refused
/// signature names its COSE_Sign1 check: `order-signature(WrongSigner)`.
pub(crate) fn order_check(message: &str) -> String {
    if let Some((_, signature)) = message.split_once("order signature: ") {
        let check = bundle_check(signature);
        let check = check.strip_prefix("BundleError::").unwrap_or(&check);
        return format!("order-signature({check})");
    }
    const TABLE: &[(&str, &str)] = &[
        ("order payload: ", "order-malformed"),
        ("order is a ", "order-wrong-kind"),
        ("order is for device ", "order-wrong-device"),
        ("order is for campaign ", "order-wrong-campaign"),
        ("commit order names sequence ", "order-wrong-sequence"),
        ("s after now", "order-issued-in-future"),
        ("s before now", "order-expired"),
    ];
    named("", TABLE, message)
}

/// The variant of `protocol::ekcert::EkCertError` a message comes from (without the type).
pub(crate) fn ek_check(message: &str) -> String {
    if let Some(chain) = message.strip_prefix("EK certificate chain: ") {
        return format!("Chain({})", chain_check(chain));
    }
    const TABLE: &[(&str, &str)] = &[
        ("malformed EK certificate", "Malformed"),
        ("non-critical subject alternative name", "SubjectAltNameNotCritical"),
        ("has no subject alternative name", "MissingSubjectAltName"),
        ("in its subject alternative name", "MissingTpmAttribute"),
        ("more than once", "DuplicateTpmAttribute"),
        ("extKeyUsage lacks", "WrongExtendedKeyUsage"),
        ("keyUsage lacks", "MissingKeyUsage"),
        ("is a CA certificate", "IsCa"),
        ("neither RSA nor ECC", "UnsupportedKeyType"),
        ("the certified key is not the TPM's EK public key", "PublicKeyMismatch"),
        ("EK public key:", "BadEkPublicKey"),
    ];
    named("", TABLE, message)
}

/// The variant of `protocol::x509::ChainError` a message comes from (without the type).
pub(crate) fn chain_check(message: &str) -> String {
    const TABLE: &[(&str, &str)] = &[
        ("malformed certificate", "Malformed"),
        ("no trusted or offered certificate issued", "UnknownIssuer"),
        ("does not verify with the key of its issuer", "BadSignature"),
        ("is signed with an unsupported algorithm", "UnsupportedSignatureAlgorithm"),
        ("outer signature algorithm differs", "SignatureAlgorithmMismatch"),
        ("\" expired at", "Expired"),
        ("is not valid before", "NotYetValid"),
        ("issued a certificate but is not a CA", "NotACa"),
        ("keyUsage lacks keyCertSign", "MissingKeyCertSign"),
        ("intermediates below it", "PathLenExceeded"),
        ("lacks the required extended key usage", "MissingExtendedKeyUsage"),
        ("has a critical extension", "UnhandledCriticalExtension"),
        ("no path within", "ChainTooLong"),
        ("no trust anchors configured", "NoTrustAnchors"),
    ];
    named("", TABLE, message)
}

fn named(ty: &str, table: &[(&str, &str)], message: &str) -> String {
    let variant = table.iter().find(|(pattern, _)| message.contains(pattern)).map(|(_, v)| *v);
    match (ty, variant) {
        ("", Some(v)) => v.to_owned(),
        (ty, Some(v)) => format!("{ty}::{v}"),
        ("", None) => format!("unrecognised: {message}"),
        (ty, None) => format!("{ty}: unrecognised: {message}"),
    }
}

/// The name of an error of a typed call: `Type::Variant` from its `Debug` form, with the
/// variant of a wrapped error (`Ota(BadMac)` → `OtaError::BadMac`).
pub(crate) fn variant_name<E: std::fmt::Debug>(error: &E) -> String {
    let debug = format!("{error:?}");
    let ident = |s: &str| {
        s.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect::<String>()
    };
    let outer = ident(&debug);
    match debug.strip_prefix(&format!("{outer}(")) {
        Some(inner) if inner.starts_with(|c: char| c.is_ascii_uppercase()) => ident(inner),
        _ => outer,
    }
}

/// An HTTP answer as an attacker sees it.
#[derive(Debug)]
pub(crate) struct Answer {
    pub status: u16,
    /// The problem document, if the answer is one.
    pub problem: Option<Problem>,
}

impl Answer {
    /// The problem type without tresor's prefix (`pva/nonce-reused`), or the status.
    pub fn slug(&self) -> String {
        match &self.problem {
            Some(p) => problem_slug(&p.type_uri).to_owned(),
            None => format!("HTTP {}", self.status),
        }
    }

    /// A 4xx answer carrying a problem document.
    pub fn is_clean_refusal(&self) -> bool {
        (400..500).contains(&self.status) && self.problem.is_some()
    }

    pub fn detail(&self) -> String {
        match &self.problem {
            Some(p) => {
                format!("{} {}: {}", self.status, p.type_uri, p.detail.clone().unwrap_or_default())
            }
            None => format!("HTTP {}", self.status),
        }
    }
}

/// A tresor problem type without its common prefix; other types unchanged.
pub(crate) fn problem_slug(type_uri: &str) -> &str {
    type_uri.strip_prefix(transport::problem::PROBLEM_TYPE_BASE).unwrap_or(type_uri)
}

/// Sends `body` and reads the answer (a problem document when the service refused).
pub(crate) async fn send(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    content_type: Option<&str>,
    body: Vec<u8>,
) -> Result<Answer> {
    let mut request = http.request(method, url).body(body);
    if let Some(ct) = content_type {
        request = request.header("content-type", ct);
    }
    let response = request.send().await.with_context(|| format!("{url}: no answer"))?;
    answer_of(response).await
}

/// Reads a response: its status and, if it is one, its problem document.
pub(crate) async fn answer_of(response: reqwest::Response) -> Result<Answer> {
    let status = response.status().as_u16();
    let is_problem = transport::problem::is_problem_json(response.headers());
    let bytes = transport::client::read_limited(response, 1024 * 1024).await?;
    let problem = if is_problem { serde_json::from_slice::<Problem>(&bytes).ok() } else { None };
    Ok(Answer { status, problem })
}

/// POSTs `body` as `content_type`.
pub(crate) async fn post(
    http: &reqwest::Client,
    url: &str,
    content_type: &str,
    body: Vec<u8>,
) -> Result<Answer> {
    send(http, reqwest::Method::POST, url, Some(content_type), body).await
}

/// What an HTTP answer says about an attack presented to `stage`.
pub(crate) fn answer_layer(stage: Stage, answer: &Answer) -> Layer {
    if (200..300).contains(&answer.status) {
        Layer::accepted(stage, format!("HTTP {}", answer.status))
    } else {
        let slug = answer.slug();
        let check = slug.rsplit('/').next().unwrap_or(&slug).to_owned();
        Layer::rejected(stage, vec![check], answer.detail())
    }
}

/// Opens a card state file. Its lock is an advisory lock on an open file, which a child
/// process that another thread is just spawning (a swtpm) holds too until it execs: a card
/// closed a moment ago may still read as in use, so a few retries.
pub(crate) fn open_card(path: &Path) -> Result<Card> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        match Card::open(path) {
            Err(uicc::UiccError::Locked { .. }) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            other => return Ok(other?),
        }
    }
}

/// Whether the card still runs its MNO-A profile with the USIM active: if not, the attack
/// got a profile onto the card (or left it without a working subscription).
pub(crate) fn card_layer(card: &Path, mno_a_imsi: &Imsi) -> Result<Option<Layer>> {
    let card = open_card(card)?;
    if card.imsi() != mno_a_imsi {
        return Ok(Some(Layer::accepted(
            Stage::Uicc,
            format!("the card runs IMSI {}", card.imsi()),
        )));
    }
    if !card.usim_active() || card.tre_active() {
        return Ok(Some(Layer::accepted(Stage::Uicc, "the card was left with the TRE active")));
    }
    if let Some(change) = card.change().filter(|c| c.on_trial()) {
        return Ok(Some(Layer::accepted(
            Stage::Uicc,
            format!("the card was left with the change of {} on trial", change.campaign),
        )));
    }
    Ok(None)
}

/// Whether the card committed a new profile (the change's commit point passed) and runs it
/// with the USIM active; `Err` says what the card does instead.
pub(crate) fn committed_card(card: &Path, old_imsi: &Imsi) -> Result<Result<(), String>> {
    let card = open_card(card)?;
    let phase = card.change().map(|c| c.phase());
    Ok(if card.imsi() == old_imsi || !card.usim_active() || card.tre_active() {
        Err(format!("the card runs IMSI {} (USIM active: {})", card.imsi(), card.usim_active()))
    } else if phase != Some(Phase::Committed) {
        Err(format!("the card's change is not committed: {phase:?}"))
    } else {
        Ok(())
    })
}

/// Whether `operator`'s AuC and the card at `card` run a real Milenage AKA (3GPP TS 33.102
/// §6.3) for the IMSI the card runs, as `tresor mno aka` does: only a card holding the
/// operator's K and OPc for a subscription in service passes. `Err` says why not.
pub(crate) fn aka_with(
    operator: &provisioning::mno::Operator,
    card: &Path,
) -> Result<Result<(), String>> {
    let mut card = open_card(card)?;
    let imsi = card.imsi().clone();
    let vector = match operator.attach_vector(&imsi) {
        Ok(vector) => vector,
        Err(e) => {
            return Ok(Err(format!("{} has no vector for IMSI {imsi}: {e}", operator.name())));
        }
    };
    Ok(match card.run_aka(&vector.rand, &vector.autn) {
        uicc::auth::Outcome::Success { res, .. } if res == vector.xres => Ok(()),
        other => Err(format!("AKA of IMSI {imsi} with {}: {other:?}", operator.name())),
    })
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use protocol::bundle::BundleError;
    use protocol::ear::{EarError, TrustTier};
    use protocol::ekcert::EkCertError;
    use protocol::order::OrderError;
    use protocol::x509::ChainError;

    use super::*;

    fn id(n: u8) -> DeviceId {
        let mut name = vec![0x00, 0x0B];
        name.extend([n; 32]);
        DeviceId::from_name(&name).unwrap_or_else(|_| unreachable!())
    }

    #[test]
    fn ear_errors_map_to_their_variants() {
        let cases = [
            (EarError::TooLarge { size: 1 }, "TooLarge"),
            (EarError::Malformed("x".into()), "Malformed"),
            (EarError::UnsupportedAlgorithm, "UnsupportedAlgorithm"),
            (EarError::MissingCertificateChain, "MissingCertificateChain"),
            (EarError::UntrustedSigner(ChainError::NoTrustAnchors), "UntrustedSigner"),
            (EarError::SignerNotAllowed { subject: "mno-a".into() }, "SignerNotAllowed"),
            (EarError::BadSignature, "BadSignature"),
            (EarError::WrongProfile("p".into()), "WrongProfile"),
            (
                EarError::StatusInconsistent {
                    status: TrustTier::Affirming,
                    worst: TrustTier::Warning,
                },
                "StatusInconsistent",
            ),
            (EarError::Expired { expired_at: 1, now: 2 }, "Expired"),
            (EarError::NotYetValid { issued_at: 3, now: 2 }, "NotYetValid"),
            (EarError::OtherDevice { expected: id(1), got: id(2) }, "OtherDevice"),
            (EarError::OtherNonce, "OtherNonce"),
            (EarError::OtherBundleKey, "OtherBundleKey"),
            (EarError::MissingBundleKey, "MissingBundleKey"),
            (
                EarError::NotAffirming {
                    status: TrustTier::Warning,
                    failed_checks: vec!["a".into()],
                },
                "NotAffirming",
            ),
        ];
        for (error, name) in cases {
            assert_eq!(ear_check(&error.to_string()), format!("EarError::{name}"), "{error}");
        }
    }

    #[test]
    fn bundle_errors_map_to_their_variants() {
        let cases = [
            (BundleError::Replayed { sequence: 1, counter: 1 }, "Replayed"),
            (
                BundleError::BundleForAnotherDevice { expected: id(1), found: id(2) },
                "BundleForAnotherDevice",
            ),
            (
                BundleError::BundleForAnotherEar { expected: "a".into(), found: "b".into() },
                "BundleForAnotherEar",
            ),
            (BundleError::DecryptionFailed, "DecryptionFailed"),
            (BundleError::KeyAgreement("TPM2_ECDH_ZGen failed".into()), "KeyAgreement"),
            (
                BundleError::WrongSigner { expected: "mno-b".into(), found: "mno-a".into() },
                "WrongSigner",
            ),
            (
                BundleError::SignerChain(ChainError::UnknownIssuer {
                    subject: "s".into(),
                    issuer: "i".into(),
                }),
                "SignerChain(UnknownIssuer)",
            ),
            (BundleError::BadSignature, "BadSignature"),
            (BundleError::WrongEar { expected: "a".into(), found: "b".into() }, "WrongEar"),
            (BundleError::WrongDevice { expected: id(1), found: id(2) }, "WrongDevice"),
            (BundleError::Expired { expires: 1, now: 2 }, "Expired"),
            (
                BundleError::OperatorMismatch { payload: "a".into(), signer: "b".into() },
                "OperatorMismatch",
            ),
            (BundleError::MalformedEncrypt("x".into()), "MalformedEncrypt"),
            (BundleError::MissingHeader("device id"), "MissingHeader"),
            (BundleError::MalformedSign1("x".into()), "MalformedSign1"),
            (BundleError::MalformedPayload("x".into()), "MalformedPayload"),
        ];
        for (error, name) in cases {
            assert_eq!(bundle_check(&error.to_string()), format!("BundleError::{name}"), "{error}");
        }
        // The device's install error wraps it; the TPM's refusal is told apart.
        let zgen = BundleError::KeyAgreement("TPM2_ECDH_ZGen failed: policy".into()).to_string();
        assert_eq!(tre_layer(&zgen, "").stage, Stage::Tpm);
    }

    #[test]
    fn order_errors_map_to_their_checks() {
        let signature = |e: BundleError| OrderError::Signature(e);
        let cases = [
            (
                signature(BundleError::WrongSigner {
                    expected: "ro".into(),
                    found: "mno-b".into(),
                }),
                "order-signature(WrongSigner)",
            ),
            (signature(BundleError::MalformedSign1("x".into())), "order-signature(MalformedSign1)"),
            (signature(BundleError::BadSignature), "order-signature(BadSignature)"),
            (
                signature(BundleError::SignerChain(ChainError::NoTrustAnchors)),
                "order-signature(SignerChain(NoTrustAnchors))",
            ),
            (OrderError::Malformed("x".into()), "order-malformed"),
            (OrderError::WrongKind { expected: "abort", found: "commit" }, "order-wrong-kind"),
            (OrderError::WrongDevice { expected: id(1), found: id(2) }, "order-wrong-device"),
            (
                OrderError::WrongCampaign { expected: "c-1".into(), found: "c-2".into() },
                "order-wrong-campaign",
            ),
            (OrderError::WrongSequence { expected: 3, found: Some(4) }, "order-wrong-sequence"),
            (OrderError::WrongSequence { expected: 3, found: None }, "order-wrong-sequence"),
            (OrderError::IssuedInFuture { issued: 9, now: 1, skew: 300 }, "order-issued-in-future"),
            (OrderError::Expired { issued: 1, now: 9000, max_age: 600 }, "order-expired"),
        ];
        for (error, name) in cases {
            assert_eq!(order_check(&error.to_string()), name, "{error}");
            // As the agent reports it (tre/src/agent.rs, `check_order`).
            let refused = tre::Error::Protocol(format!("abort order refused: {error}"));
            assert_eq!(order_check(&refused.to_string()), name, "{refused}");
        }
    }

    #[test]
    fn certificate_errors_map_to_their_variants() {
        let now = SystemTime::now();
        let s = || "CN=x".to_owned();
        let chains = [
            (ChainError::Malformed("x".into()), "Malformed"),
            (ChainError::UnknownIssuer { subject: s(), issuer: s() }, "UnknownIssuer"),
            (ChainError::BadSignature { subject: s() }, "BadSignature"),
            (ChainError::Expired { subject: s(), not_after: now }, "Expired"),
            (ChainError::NotYetValid { subject: s(), not_before: now }, "NotYetValid"),
            (ChainError::NotACa { subject: s() }, "NotACa"),
            (ChainError::MissingKeyCertSign { subject: s() }, "MissingKeyCertSign"),
            (
                ChainError::PathLenExceeded { subject: s(), allowed: 0, actual: 1 },
                "PathLenExceeded",
            ),
            (ChainError::ChainTooLong { max: 3 }, "ChainTooLong"),
        ];
        for (error, name) in chains {
            assert_eq!(chain_check(&error.to_string()), name, "{error}");
            assert_eq!(
                ek_check(&EkCertError::Chain(error.clone()).to_string()),
                format!("Chain({name})")
            );
        }
        let eks = [
            (EkCertError::Malformed("x".into()), "Malformed"),
            (EkCertError::MissingSubjectAltName, "MissingSubjectAltName"),
            (EkCertError::SubjectAltNameNotCritical, "SubjectAltNameNotCritical"),
            (EkCertError::MissingTpmAttribute { attribute: "tpmModel" }, "MissingTpmAttribute"),
            (EkCertError::DuplicateTpmAttribute { attribute: "tpmModel" }, "DuplicateTpmAttribute"),
            (EkCertError::MissingKeyUsage { required: "keyAgreement" }, "MissingKeyUsage"),
            (EkCertError::WrongExtendedKeyUsage, "WrongExtendedKeyUsage"),
            (EkCertError::IsCa, "IsCa"),
            (EkCertError::UnsupportedKeyType { algorithm: "dsa".into() }, "UnsupportedKeyType"),
            (EkCertError::PublicKeyMismatch, "PublicKeyMismatch"),
            (EkCertError::BadEkPublicKey("x".into()), "BadEkPublicKey"),
        ];
        for (error, name) in eks {
            assert_eq!(ek_check(&error.to_string()), name, "{error}");
        }
    }

    #[test]
    fn ro_failures_name_stage_and_check() {
        let l = from_ro_failure("pva refused (pva/nonce-reused): the nonce was already used");
        assert_eq!((l.stage, l.checks.as_slice()), (Stage::Pva, &["nonce-reused".to_owned()][..]));
        let l = from_ro_failure(&format!(
            "DPF refuses to release: attestation result: {}",
            EarError::NotAffirming {
                status: TrustTier::Contraindicated,
                failed_checks: vec![
                    "event-not-in-reference-values".into(),
                    "pcr-digest-mismatch".into()
                ]
            }
        ));
        assert_eq!(l.stage, Stage::Pva);
        assert_eq!(l.checks, ["event-not-in-reference-values", "pcr-digest-mismatch"]);
        let l = from_ro_failure(&format!(
            "DPF refuses to release: attestation result: {}",
            EarError::OtherNonce
        ));
        assert_eq!((l.stage, l.checks[0].as_str()), (Stage::Dpf, "EarError::OtherNonce"));
        let l = from_ro_failure(&format!(
            "attach refused: EK certificate: {}",
            EkCertError::PublicKeyMismatch
        ));
        assert_eq!((l.stage, l.checks[0].as_str()), (Stage::Drf, "EkCertError::PublicKeyMismatch"));
        // The RO's words (provisioning/src/ro/device.rs) around the device's and the
        // card's own, which come from their error types.
        let l = from_ro_failure(&format!(
            "the device did not install: {}",
            tre::Error::Bundle(BundleError::DecryptionFailed.to_string())
        ));
        assert_eq!((l.stage, l.checks[0].as_str()), (Stage::Tre, "BundleError::DecryptionFailed"));
        let l = from_ro_failure("the device did not install: the scenario declines the install");
        assert_eq!((l.stage, l.checks[0].as_str()), (Stage::Tre, "install-failed"));
        let l = from_ro_failure(
            &provisioning::ro::RoError::Receipt("the receipt's signature does not verify".into())
                .to_string(),
        );
        assert_eq!((l.stage, l.checks[0].as_str()), (Stage::Dpf, "receipt"));
        let l = from_ro_failure(
            &provisioning::ro::RoError::Aka(
                "the new USIM refused AUTHENTICATE (RAND 00): MAC failure (SW 9862)".into(),
            )
            .to_string(),
        );
        assert_eq!((l.stage, l.checks[0].as_str()), (Stage::Uicc, "aka-failed"));
        let l = from_ro_failure("the UICC refused MNO-A's activate-TRE command");
        assert_eq!(l.stage, Stage::Uicc);
        let l = from_ro_failure("the card fell back before the commit: fallback timer expired");
        assert_eq!((l.stage, l.checks[0].as_str()), (Stage::Uicc, "fell-back-before-commit"));
        assert_eq!(from_ro_failure("something new").stage, Stage::Unknown);
    }

    #[test]
    fn variant_names_come_from_debug() {
        let e = uicc::UiccError::Ota(protocol::ota::OtaError::BadMac);
        assert_eq!(variant_name(&e), "BadMac");
        assert_eq!(
            variant_name(&protocol::ota::OtaError::Replay { counter: 1, last: 2 }),
            "Replay"
        );
        assert_eq!(variant_name(&uicc::UiccError::TreNotActive), "TreNotActive");
    }
}
