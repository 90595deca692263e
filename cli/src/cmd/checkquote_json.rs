//! `tresor pva check-quote … --json`: the result of `verifier::checkquote::check_quote`
//! (tpm2_checkquote's checks, tpm2-tools 5.4) as a JSON document: every check in the order
//! it runs with `passed`, `failed` or `not-run`, the quote's TPMS_ATTEST fields (TPM 2.0
//! Part 2 §10.12.12) and the PCR values of the PCR file (bank, index, hex digest).
//!
//! The checks stop at the first failure, so the one failed check is the error's, the ones
//! before it passed and the rest did not run. The PCR values are those of the file; they are
//! what the TPM quoted only when `valid` is true.

use std::process::ExitCode;

use protocol::tpm::tools::QuotePcrs;
use protocol::tpm::{Attest, Signature, Unmarshal};
use serde::Serialize;
use verifier::checkquote::{CheckQuoteError, check_quote};

use super::pva::{CheckQuoteArgs, QuoteFiles};

/// The checks of `check_quote`, in the order it runs them.
const CHECKS: [&str; 11] = [
    "message-format",
    "signature-format",
    "pcr-file-format",
    "signature",
    "magic",
    "type",
    "hash",
    "nonce",
    "selection",
    "pcr-values-present",
    "pcr-digest",
];

/// The check a [`CheckQuoteError`] is the failure of.
fn failed_check(e: &CheckQuoteError) -> &'static str {
    match e {
        CheckQuoteError::MessageMalformed(_) => "message-format",
        CheckQuoteError::SignatureMalformed(_) => "signature-format",
        CheckQuoteError::PcrFileMalformed(_) => "pcr-file-format",
        CheckQuoteError::BadSignature(_) => "signature",
        CheckQuoteError::NotTpmGenerated => "magic",
        CheckQuoteError::NotAQuote(_) => "type",
        CheckQuoteError::HashMismatch { .. } => "hash",
        CheckQuoteError::NonceMismatch => "nonce",
        CheckQuoteError::SelectionMismatch { .. } => "selection",
        CheckQuoteError::PcrFileIncomplete(_) => "pcr-values-present",
        CheckQuoteError::PcrDigestMismatch => "pcr-digest",
    }
}

#[derive(Serialize)]
struct Report {
    valid: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    failed_check: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    checks: Vec<CheckJson>,
    hash: &'static str,
    nonce: String,
    /// Present when the message parses.
    #[serde(skip_serializing_if = "Option::is_none")]
    quote: Option<QuoteJson>,
    #[serde(skip_serializing_if = "Option::is_none")]
    signature: Option<SignatureJson>,
    /// The PCR file's selection, when it parses.
    #[serde(skip_serializing_if = "Option::is_none")]
    selection: Option<String>,
    /// The PCR file's values in selection order (empty when it does not parse).
    pcrs: Vec<PcrJson>,
}

#[derive(Serialize)]
struct CheckJson {
    check: &'static str,
    result: &'static str,
}

#[derive(Serialize)]
struct QuoteJson {
    magic: String,
    #[serde(rename = "type")]
    kind: String,
    qualified_signer: String,
    extra_data: String,
    clock: u64,
    reset_count: u32,
    restart_count: u32,
    safe: bool,
    firmware_version: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pcr_selection: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pcr_digest: Option<String>,
}

#[derive(Serialize)]
struct SignatureJson {
    scheme: &'static str,
    hash: &'static str,
}

#[derive(Serialize)]
struct PcrJson {
    bank: &'static str,
    index: u8,
    digest: String,
}

pub(super) fn run(args: &CheckQuoteArgs) -> anyhow::Result<ExitCode> {
    let f = QuoteFiles::read(args)?;
    let key = f.key()?;
    let result = check_quote(&key, &f.msg, &f.sig, &f.pcrs, &f.nonce, f.hash);
    let failed = result.as_ref().err().map(failed_check);
    let mut reached_failure = false;
    let checks = CHECKS
        .into_iter()
        .map(|check| {
            let result = if reached_failure {
                "not-run"
            } else if Some(check) == failed {
                reached_failure = true;
                "failed"
            } else {
                "passed"
            };
            CheckJson { check, result }
        })
        .collect();

    let quote = Attest::from_bytes(&f.msg).ok().map(|a| QuoteJson {
        magic: format!("{:#010x}", a.magic),
        kind: format!("{:#06x}", a.tag()),
        qualified_signer: hex::encode(a.qualified_signer.as_bytes()),
        extra_data: hex::encode(a.extra_data.as_bytes()),
        clock: a.clock_info.clock,
        reset_count: a.clock_info.reset_count,
        restart_count: a.clock_info.restart_count,
        safe: a.clock_info.safe,
        firmware_version: format!("{:#018x}", a.firmware_version),
        pcr_selection: a.quote().map(|q| q.pcr_select.to_string()),
        pcr_digest: a.quote().map(|q| hex::encode(q.pcr_digest.as_bytes())),
    });
    let signature = Signature::from_bytes(&f.sig)
        .ok()
        .map(|s| SignatureJson { scheme: s.scheme_name(), hash: s.hash_alg().name() });
    let file = QuotePcrs::from_bytes(&f.pcrs).ok();
    let pcrs = file
        .as_ref()
        .map(|file| {
            file.selection
                .iter()
                .filter_map(|(bank, index)| {
                    file.values.get(bank, index).map(|value| PcrJson {
                        bank: bank.name(),
                        index,
                        digest: hex::encode(value),
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    let report = Report {
        valid: result.is_ok(),
        failed_check: failed,
        error: result.as_ref().err().map(ToString::to_string),
        checks,
        hash: f.hash.name(),
        nonce: hex::encode(&f.nonce),
        quote,
        signature,
        selection: file.as_ref().map(|file| file.selection.to_string()),
        pcrs,
    };
    println!("{}", serde_json::to_string_pretty(&report)?);
    if let Err(reason) = &result {
        eprintln!("tresor: quote is not valid: {reason}");
    }
    Ok(if result.is_ok() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
