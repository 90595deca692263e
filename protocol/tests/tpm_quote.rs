//! Cross-implementation tests of `protocol::tpm` against a real software TPM (swtpm) driven
//! by tpm2-tools 5.4: the structures the TPM makes parse, names and PCR digests agree with
//! what tpm2-tools computes, signatures verify, and what we write, tpm2-tools accepts.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod tpm_support;

use protocol::tpm::HashAlg;
use protocol::tpm::attest::{Attest, TPM_ST_ATTEST_CERTIFY, TPM_ST_ATTEST_QUOTE};
use protocol::tpm::error::SignatureError;
use protocol::tpm::pcr::PcrSelection;
use protocol::tpm::policy::policy_pcr;
use protocol::tpm::public::{ObjectAttributes, Public};
use protocol::tpm::signature::Signature;
use protocol::tpm::spki::Spki;
use protocol::tpm::tools::{QuotePcrs, read_pcr_values, write_pcr_values};
use protocol::tpm::wire::Unmarshal;
use tpm_support::Tpm;

const NONCE: &str = "5d0b1a2c3e4f5061728394a5b6c7d8e9f00112233445566778899aabbccddeef";

/// EK and AK as `tresor`'s TRE and the tpm2-tools tutorials make them.
fn enrol(tpm: &Tpm, ek_alg: &str, ak_alg: &str, hash: &str, scheme: &str) -> Public {
    tpm.run("tpm2_createek", &["-c", "ek.ctx", "-G", ek_alg, "-u", "ek.pub"]);
    tpm.run(
        "tpm2_createak",
        &[
            "-C", "ek.ctx", "-c", "ak.ctx", "-G", ak_alg, "-g", hash, "-s", scheme, "-u", "ak.pub",
            "-n", "ak.name",
        ],
    );
    let ak = Public::from_tpm2b(&tpm.read("ak.pub")).unwrap();
    // The name tpm2_createak wrote is the name we compute.
    assert_eq!(ak.name().as_bytes(), tpm.read("ak.name"));
    ak
}

fn extend_some_pcrs(tpm: &Tpm) {
    for (pcr, byte) in [(0, "11"), (7, "77"), (10, "aa"), (16, "16")] {
        let sha256 = byte.repeat(32);
        let sha1 = byte.repeat(20);
        tpm.run("tpm2_pcrextend", &[&format!("{pcr}:sha256={sha256},sha1={sha1}")]);
    }
}

/// Quotes with tpm2_quote and checks everything we can check about the result.
fn quote_round_trip(ek_alg: &str, ak_alg: &str, hash: &str, scheme: &str) {
    let tpm = Tpm::start();
    let ak = enrol(&tpm, ek_alg, ak_alg, hash, scheme);
    extend_some_pcrs(&tpm);
    // More than 8 values, so tpm2_quote writes several TPML_DIGEST lists.
    let selection = "sha256:0,1,2,3,4,5,6,7,8,9,10+sha1:0,7,16";
    tpm.run(
        "tpm2_quote",
        &[
            "-c",
            "ak.ctx",
            "-l",
            selection,
            "-q",
            NONCE,
            "-m",
            "quote.msg",
            "-s",
            "quote.sig",
            "-o",
            "quote.pcrs",
            "-g",
            hash,
        ],
    );
    let msg = tpm.read("quote.msg");
    let attest = Attest::from_bytes(&msg).unwrap();
    let signature = Signature::from_bytes(&tpm.read("quote.sig")).unwrap();

    assert!(attest.is_tpm_generated());
    assert_eq!(attest.tag(), TPM_ST_ATTEST_QUOTE);
    assert_eq!(hex::encode(attest.extra_data.as_bytes()), NONCE);
    assert_eq!(signature.hash_alg().name(), hash);
    signature.verify(&ak, &msg).unwrap();
    signature.verify_spki(&Spki::from_public(&ak).unwrap(), &msg).unwrap();

    // PCR digest: the quoted one equals the one over tpm2_quote's PCR file and over
    // tpm2_pcrread's values.
    let quote = attest.quote().unwrap();
    let expected: PcrSelection = selection.parse().unwrap();
    assert_eq!(quote.pcr_select, expected);
    let pcrs = QuotePcrs::from_bytes(&tpm.read("quote.pcrs")).unwrap();
    assert_eq!(pcrs.selection, expected);
    let hash_alg: HashAlg = hash.parse().unwrap();
    assert_eq!(pcrs.selection.pcr_digest(hash_alg, &pcrs.values).unwrap(), quote.pcr_digest);
    tpm.run("tpm2_pcrread", &[selection, "-o", "pcrread.bin"]);
    let values = read_pcr_values(&expected, &tpm.read("pcrread.bin")).unwrap();
    assert_eq!(values, pcrs.values);
    assert_eq!(write_pcr_values(&expected, &values).unwrap(), tpm.read("pcrread.bin"));
    // What we write is byte-identical to what tpm2_quote wrote.
    assert_eq!(pcrs.to_bytes().unwrap(), tpm.read("quote.pcrs"));

    // Our ak.pem is the one tpm2_readpublic writes, and tpm2_checkquote accepts our files.
    tpm.run("tpm2_readpublic", &["-c", "ak.ctx", "-f", "pem", "-o", "ak.pem"]);
    assert_eq!(ak.to_pem().unwrap().as_bytes(), tpm.read("ak.pem"));
    tpm.write("our-ak.pem", ak.to_pem().unwrap().as_bytes());
    tpm.write("our.pcrs", &pcrs.to_bytes().unwrap());
    let check = |pcrs_file: &str, nonce: &str| {
        tpm.try_run(
            "tpm2_checkquote",
            &[
                "-u",
                "our-ak.pem",
                "-m",
                "quote.msg",
                "-s",
                "quote.sig",
                "-f",
                pcrs_file,
                "-g",
                hash,
                "-q",
                nonce,
            ],
        )
        .status
        .success()
    };
    assert!(check("our.pcrs", NONCE));
    assert!(!check("our.pcrs", "00"));
    let mut tampered = pcrs.clone();
    tampered.values.insert(HashAlg::Sha256, 3, vec![0xEE; 32]).unwrap();
    tpm.write("tampered.pcrs", &tampered.to_bytes().unwrap());
    assert!(!check("tampered.pcrs", NONCE));
    assert_ne!(
        tampered.selection.pcr_digest(hash_alg, &tampered.values).unwrap(),
        quote.pcr_digest
    );

    // A modified message or another key fails.
    let mut forged = msg.clone();
    let last = forged.len() - 1;
    forged[last] ^= 0x01;
    assert_eq!(signature.verify(&ak, &forged), Err(SignatureError::BadSignature));
    let ek = Public::from_tpm2b(&tpm.read("ek.pub")).unwrap();
    assert_eq!(signature.verify(&ek, &msg), Err(SignatureError::KeyCannotSign));
}

#[test]
fn ecc_p256_quote() {
    quote_round_trip("ecc", "ecc", "sha256", "ecdsa");
}

#[test]
fn ecc_p384_quote() {
    quote_round_trip("ecc", "ecc384", "sha384", "ecdsa");
}

#[test]
fn rsa_rsassa_quote() {
    quote_round_trip("rsa", "rsa", "sha256", "rsassa");
}

/// tpm2_quote 5.4 cannot quote with an RSA-PSS key (it always asks for RSASSA), so sign a
/// message with the restricted PSS AK through TPM2_Hash's ticket and TPM2_Sign.
#[test]
fn rsa_pss_signature_of_a_restricted_ak() {
    let tpm = Tpm::start();
    let ak = enrol(&tpm, "rsa", "rsa", "sha256", "rsapss");
    let message = b"a receipt: device, iccid, H(imsi), sequence".to_vec();
    tpm.write("msg.bin", &message);
    tpm.run(
        "tpm2_hash",
        &["-C", "e", "-g", "sha256", "-o", "digest.bin", "-t", "ticket.bin", "msg.bin"],
    );
    tpm.run(
        "tpm2_sign",
        &[
            "-c",
            "ak.ctx",
            "-g",
            "sha256",
            "-s",
            "rsapss",
            "-d",
            "-t",
            "ticket.bin",
            "-o",
            "sig.bin",
            "digest.bin",
        ],
    );
    let signature = Signature::from_bytes(&tpm.read("sig.bin")).unwrap();
    assert!(matches!(signature, Signature::Rsapss { hash: HashAlg::Sha256, .. }));
    signature.verify(&ak, &message).unwrap();
    assert_eq!(signature.verify(&ak, b"another message"), Err(SignatureError::BadSignature));
}

/// TPM2_Certify of a PolicyPCR-bound ECDH key (the bundle key of DESIGN.md §3) by the AK.
#[test]
fn certify_of_a_pcr_bound_key() {
    let tpm = Tpm::start();
    let ak = enrol(&tpm, "ecc", "ecc", "sha256", "ecdsa");
    extend_some_pcrs(&tpm);
    let selection = "sha256:0,7,10";
    tpm.run("tpm2_createpolicy", &["--policy-pcr", "-l", selection, "-L", "policy.digest"]);
    tpm.run("tpm2_createprimary", &["-C", "o", "-g", "sha256", "-G", "ecc", "-c", "primary.ctx"]);
    tpm.run(
        "tpm2_create",
        &[
            "-C",
            "primary.ctx",
            "-G",
            "ecc256:ecdh-sha256",
            "-L",
            "policy.digest",
            "-a",
            "fixedtpm|fixedparent|sensitivedataorigin|decrypt",
            "-u",
            "key.pub",
            "-r",
            "key.priv",
        ],
    );
    tpm.run(
        "tpm2_load",
        &[
            "-C",
            "primary.ctx",
            "-u",
            "key.pub",
            "-r",
            "key.priv",
            "-c",
            "key.ctx",
            "-n",
            "key.name",
        ],
    );
    tpm.run(
        "tpm2_certify",
        &[
            "-c",
            "key.ctx",
            "-C",
            "ak.ctx",
            "-g",
            "sha256",
            "-o",
            "certify.attest",
            "-s",
            "certify.sig",
        ],
    );

    let key = Public::from_tpm2b(&tpm.read("key.pub")).unwrap();
    assert_eq!(key.name().as_bytes(), tpm.read("key.name"));
    let wanted = ObjectAttributes::FIXED_TPM
        | ObjectAttributes::FIXED_PARENT
        | ObjectAttributes::SENSITIVE_DATA_ORIGIN
        | ObjectAttributes::DECRYPT;
    assert_eq!(key.attributes, wanted);
    // authPolicy = PolicyPCR over the PCR values, computed in software.
    assert_eq!(key.auth_policy.as_bytes(), tpm.read("policy.digest"));
    let sel: PcrSelection = selection.parse().unwrap();
    tpm.run("tpm2_pcrread", &[selection, "-o", "pcrs.bin"]);
    let values = read_pcr_values(&sel, &tpm.read("pcrs.bin")).unwrap();
    assert_eq!(policy_pcr(HashAlg::Sha256, &sel, &values).unwrap(), key.auth_policy);

    let msg = tpm.read("certify.attest");
    let attest = Attest::from_bytes(&msg).unwrap();
    assert!(attest.is_tpm_generated());
    assert_eq!(attest.tag(), TPM_ST_ATTEST_CERTIFY);
    // tpm2_certify 5.4 has no qualifying-data option and always sends 00 ff 55 aa.
    assert_eq!(attest.extra_data.as_bytes(), [0x00, 0xFF, 0x55, 0xAA]);
    assert_eq!(attest.certify().unwrap().name, key.name());
    Signature::from_bytes(&tpm.read("certify.sig")).unwrap().verify(&ak, &msg).unwrap();
}
