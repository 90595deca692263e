//! MakeCredential in software against the real TPM2_ActivateCredential: a credential made by
//! `protocol::tpm::credential::make_credential` for the EK of a swtpm, bound to the name of
//! an AK on that swtpm, is recovered by `tpm2_activatecredential` (tpm2-tools 5.4); one made
//! for another TPM's EK, or bound to another name, is not.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod tpm_support;

use protocol::tpm::credential::{MadeCredential, make_credential};
use protocol::tpm::public::Public;
use protocol::tpm::wire::Name;
use tpm_support::Tpm;

const SECRET: &[u8] = b"the PVA's enrolment challenge 32";

/// Creates the EK (`-G ek_alg`) and an ECC AK on `tpm`; returns the EK public area and
/// the AK name.
fn enrol(tpm: &Tpm, ek_alg: &str) -> (Public, Name) {
    tpm.run("tpm2_createek", &["-c", "ek.ctx", "-G", ek_alg, "-u", "ek.pub"]);
    tpm.run(
        "tpm2_createak",
        &[
            "-C", "ek.ctx", "-c", "ak.ctx", "-G", "ecc", "-g", "sha256", "-s", "ecdsa", "-u",
            "ak.pub", "-n", "ak.name",
        ],
    );
    let ek = Public::from_tpm2b(&tpm.read("ek.pub")).unwrap();
    let ak_name = Name::new(tpm.read("ak.name")).unwrap();
    (ek, ak_name)
}

/// Runs TPM2_ActivateCredential with the EK's policy (PolicySecret(TPM_RH_ENDORSEMENT)) in
/// a session of the EK's name algorithm; returns the recovered credential, or None if the
/// TPM refused.
fn activate(tpm: &Tpm, made: &MadeCredential) -> Option<Vec<u8>> {
    tpm.write("cred.blob", &made.to_tpm2_tools());
    let _ = std::fs::remove_file(tpm.path("cred.out"));
    let ek = Public::from_tpm2b(&tpm.read("ek.pub")).unwrap();
    let hash = ek.name_alg.name();
    tpm.run("tpm2_startauthsession", &["--policy-session", "-g", hash, "-S", "session.ctx"]);
    tpm.run("tpm2_policysecret", &["-S", "session.ctx", "-c", "e"]);
    let out = tpm.try_run(
        "tpm2_activatecredential",
        &[
            "-c",
            "ak.ctx",
            "-C",
            "ek.ctx",
            "-i",
            "cred.blob",
            "-o",
            "cred.out",
            "-P",
            "session:session.ctx",
        ],
    );
    tpm.run("tpm2_flushcontext", &["session.ctx"]);
    out.status.success().then(|| tpm.read("cred.out"))
}

fn activates(ek_alg: &str) {
    let tpm = Tpm::start();
    let (ek, ak_name) = enrol(&tpm, ek_alg);
    let made = make_credential(&ek, &ak_name, SECRET).unwrap();
    assert_eq!(activate(&tpm, &made).as_deref(), Some(SECRET));

    // Bound to the AK's name: the same credential made for another name is refused.
    let mut other_name = ak_name.to_vec();
    other_name[10] ^= 0x01;
    let made = make_credential(&ek, &Name::new(other_name).unwrap(), SECRET).unwrap();
    assert_eq!(activate(&tpm, &made), None);

    // Credentials of other sizes, up to the EK name algorithm's digest size.
    for len in [1, 16, 31, ek.name_alg.size()] {
        let secret = vec![0xA5; len];
        let made = make_credential(&ek, &ak_name, &secret).unwrap();
        assert_eq!(activate(&tpm, &made), Some(secret));
    }
}

#[test]
fn ecc_ek_activates_our_credential() {
    activates("ecc");
}

#[test]
fn rsa_ek_activates_our_credential() {
    activates("rsa");
}

/// A P-384 restricted decryption key in the endorsement hierarchy with nameAlg SHA-384 and
/// AES-256-CFB, the shape of the high-range EK templates, but authorised by its (empty)
/// password: the templates' PolicyOR is beyond what tpm2-tools 5.4 can satisfy.
#[test]
fn ecc_p384_storage_key_activates_our_credential() {
    let tpm = Tpm::start();
    let attrs = "restricted|decrypt|fixedtpm|fixedparent|sensitivedataorigin|userwithauth|noda";
    tpm.run(
        "tpm2_createprimary",
        &["-C", "e", "-g", "sha384", "-G", "ecc384:aes256cfb", "-a", attrs, "-c", "ek.ctx"],
    );
    tpm.run("tpm2_readpublic", &["-c", "ek.ctx", "-o", "ek.pub"]);
    tpm.run("tpm2_createprimary", &["-C", "o", "-c", "owner.ctx"]);
    tpm.run("tpm2_create", &["-C", "owner.ctx", "-G", "ecc", "-u", "obj.pub", "-r", "obj.priv"]);
    tpm.run(
        "tpm2_load",
        &["-C", "owner.ctx", "-u", "obj.pub", "-r", "obj.priv", "-c", "obj.ctx", "-n", "obj.name"],
    );
    let ek = Public::from_tpm2b(&tpm.read("ek.pub")).unwrap();
    assert_eq!(ek.name_alg.name(), "sha384");
    let name = Name::new(tpm.read("obj.name")).unwrap();
    let activate = |made: &MadeCredential| {
        tpm.write("cred.blob", &made.to_tpm2_tools());
        let out = tpm.try_run(
            "tpm2_activatecredential",
            &["-c", "obj.ctx", "-C", "ek.ctx", "-i", "cred.blob", "-o", "cred.out"],
        );
        out.status.success().then(|| tpm.read("cred.out"))
    };
    for secret in [SECRET.to_vec(), vec![7; 48]] {
        let made = make_credential(&ek, &name, &secret).unwrap();
        assert_eq!(activate(&made), Some(secret));
    }
    let mut other_name = name.to_vec();
    other_name[3] ^= 0x80;
    let made = make_credential(&ek, &Name::new(other_name).unwrap(), SECRET).unwrap();
    assert_eq!(activate(&made), None);
}

#[test]
fn credential_for_another_tpms_ek_fails() {
    let tpm = Tpm::start();
    let other = Tpm::start();
    let (_, ak_name) = enrol(&tpm, "ecc");
    for alg in ["ecc", "rsa"] {
        let (other_ek, _) = enrol(&other, alg);
        let made = make_credential(&other_ek, &ak_name, SECRET).unwrap();
        assert_eq!(activate(&tpm, &made), None, "{alg}");
    }
}

/// The credential file tpm2_makecredential writes parses, and what it wraps activates.
#[test]
fn reads_tpm2_makecredential_output() {
    let tpm = Tpm::start();
    let (_, ak_name) = enrol(&tpm, "rsa");
    tpm.write("secret.bin", SECRET);
    tpm.run(
        "tpm2_makecredential",
        &[
            "-T",
            "none",
            "-u",
            "ek.pub",
            "-s",
            "secret.bin",
            "-n",
            &hex::encode(ak_name.as_bytes()),
            "-o",
            "theirs.blob",
        ],
    );
    let made = MadeCredential::from_tpm2_tools(&tpm.read("theirs.blob")).unwrap();
    assert_eq!(made.to_tpm2_tools(), tpm.read("theirs.blob"));
    assert_eq!(activate(&tpm, &made).as_deref(), Some(SECRET));
}
