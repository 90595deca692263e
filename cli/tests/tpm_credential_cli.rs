//! `tresor tpm make-credential` and `tresor tpm activate-credential` against tpm2-tools 5.4
//! as the oracle, on a bare swtpm: each tresor half is paired with the other tool's half.
//!
//! Keys: the AK is the persistent one `tresor tre quote` creates (0x81005452); the EK is
//! made by `tpm2_createek` from the TCG default template, which is the key tresor derives
//! too, so `activate-credential` finds it either at its TCG persistent handle or by
//! recreating it. tpm2_activatecredential authorizes the EK with PolicySecret(TPM_RH_ENDORSEMENT)
//! in a policy session, as the EK's policy demands.
//!
//! Without tpm2-tools the tests say so on stderr and pass, unless `TRESOR_REQUIRE_INTEROP=1`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::{Command, Output};

use tre::swtpm::{Swtpm, SwtpmConfig};

const TRESOR: &str = env!("CARGO_BIN_EXE_tresor");
const AK: &str = "0x81005452";

/// Whether tpm2-tools is installed; missing, it fails only under TRESOR_REQUIRE_INTEROP=1.
fn tpm2_tools() -> bool {
    if Command::new("tpm2_makecredential").arg("--version").output().is_ok() {
        return true;
    }
    let required = std::env::var("TRESOR_REQUIRE_INTEROP").is_ok_and(|v| v == "1");
    assert!(!required, "tpm2-tools is required (TRESOR_REQUIRE_INTEROP=1) but is not installed");
    eprintln!("SKIPPED: tpm2-tools is not installed (Debian package tpm2-tools)");
    false
}

/// One swtpm and a directory for the files of a test.
struct Lab {
    swtpm: Swtpm,
    dir: tempfile::TempDir,
}

impl Lab {
    /// A fresh swtpm with tresor's AK (ECC) at 0x81005452 and `ak.name` of it.
    fn start() -> Self {
        let lab = Self {
            swtpm: Swtpm::start_temp(&SwtpmConfig::load().unwrap()).unwrap(),
            dir: tempfile::tempdir().unwrap(),
        };
        let quote = ["tre", "quote", "--nonce", "00", "--out", "quote"];
        lab.ok(&lab.tresor(&quote));
        lab.tool("tpm2_readpublic", &["-c", AK, "-n", "ak.name", "-o", "ak.pub"]);
        lab
    }

    fn path(&self, name: &str) -> std::path::PathBuf {
        self.dir.path().join(name)
    }

    fn read(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.path(name)).unwrap()
    }

    fn write(&self, name: &str, bytes: &[u8]) {
        std::fs::write(self.path(name), bytes).unwrap();
    }

    fn command(&self, program: &str) -> Command {
        let mut command = Command::new(program);
        command.current_dir(self.dir.path()).env("TPM2TOOLS_TCTI", self.swtpm.tcti());
        command
    }

    fn tresor(&self, args: &[&str]) -> Output {
        self.command(TRESOR).args(args).output().unwrap()
    }

    fn ok(&self, out: &Output) {
        assert!(out.status.success(), "failed:\n{}", String::from_utf8_lossy(&out.stderr));
    }

    fn tool(&self, program: &str, args: &[&str]) -> Output {
        let out = self.command(program).args(args).output().unwrap();
        assert!(
            out.status.success(),
            "{program} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// `tpm2_createek -G ALG` to `ek.pub`, the EK persisted at `handle` or left transient
    /// (then flushed: swtpm has no resource manager).
    fn create_ek(&self, alg: &str, handle: Option<&str>) {
        let context = handle.unwrap_or("ek.ctx");
        self.tool("tpm2_createek", &["-c", context, "-G", alg, "-u", "ek.pub"]);
        if handle.is_none() {
            self.tool("tpm2_flushcontext", &["-t"]);
        }
    }

    /// tpm2_activatecredential of `cred` with the AK and the EK at `ek`, in the EK's policy
    /// session; the recovered secret, or None if the TPM refused.
    fn tpm2_activate(&self, cred: &str, ek: &str) -> Option<Vec<u8>> {
        let _ = std::fs::remove_file(self.path("got.bin"));
        self.tool("tpm2_startauthsession", &["--policy-session", "-S", "session.ctx"]);
        self.tool("tpm2_policysecret", &["-S", "session.ctx", "-c", "e"]);
        let out = self
            .command("tpm2_activatecredential")
            .args(["-c", AK, "-C", ek, "-i", cred, "-o", "got.bin", "-P", "session:session.ctx"])
            .output()
            .unwrap();
        self.tool("tpm2_flushcontext", &["session.ctx"]);
        out.status.success().then(|| self.read("got.bin"))
    }

    fn stderr_of_failure(&self, args: &[&str]) -> String {
        let out = self.tresor(args);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!out.status.success(), "tresor {args:?} succeeded");
        assert!(!stderr.contains("panicked"), "tresor {args:?} panicked: {stderr}");
        stderr
    }
}

fn make(lab: &Lab, name: &str, out: &str) -> Output {
    lab.tresor(&[
        "tpm",
        "make-credential",
        "--ek-public",
        "ek.pub",
        "--name",
        name,
        "--secret",
        "secret.bin",
        "--out",
        out,
    ])
}

const SECRET: &[u8] = b"the PVA's enrolment challenge 32";

/// (a) tresor make-credential, then tpm2_activatecredential recovers the secret; bound to
/// the AK's name, a credential for another name is refused.
#[test]
fn tresor_credential_activates_with_tpm2_activatecredential() {
    if !tpm2_tools() {
        return;
    }
    for (alg, handle) in [("ecc", "0x81010002"), ("rsa", "0x81010001")] {
        let lab = Lab::start();
        lab.create_ek(alg, Some(handle));
        for secret in [SECRET, b"x", &[0xA5; 16]] {
            lab.write("secret.bin", secret);
            lab.ok(&make(&lab, "ak.name", "cred.out"));
            assert_eq!(&lab.read("cred.out")[..8], [0xBA, 0xDC, 0xC0, 0xDE, 0, 0, 0, 1]);
            assert_eq!(lab.tpm2_activate("cred.out", handle).as_deref(), Some(secret), "{alg}");
        }
        let mut other = lab.read("ak.name");
        other[10] ^= 1;
        lab.write("other.name", &other);
        lab.ok(&make(&lab, "other.name", "other.out"));
        assert_eq!(lab.tpm2_activate("other.out", handle), None, "{alg}: another name");
    }
}

/// (b) tpm2_makecredential in software, then tresor activate-credential recovers the
/// secret, with the EK at its TCG handle or recreated from the template.
#[test]
fn tpm2_makecredential_activates_with_tresor() {
    if !tpm2_tools() {
        return;
    }
    for (alg, handle) in [("ecc", None), ("rsa", Some("0x81010001")), ("ecc", Some("0x81010002"))] {
        let lab = Lab::start();
        lab.create_ek(alg, handle);
        lab.write("secret.bin", SECRET);
        let name = hex::encode(lab.read("ak.name"));
        lab.tool(
            "tpm2_makecredential",
            &["-T", "none", "-u", "ek.pub", "-s", "secret.bin", "-n", &name, "-o", "theirs.out"],
        );
        let activate = ["tpm", "activate-credential", "--credential", "theirs.out"];
        let out = lab.tresor(&[&activate[..], &["--ek", alg, "--out", "got.bin"]].concat());
        lab.ok(&out);
        assert_eq!(lab.read("got.bin"), SECRET, "{alg} {handle:?}");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(lab.path("got.bin")).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "the recovered secret is readable by others");
    }
}

/// The EK as a PEM key (`tpm2_readpublic -f pem`) with `--key-algorithm`, as
/// `tpm2_makecredential -G` takes it, in both directions.
#[test]
fn pem_eks_work_both_ways() {
    if !tpm2_tools() {
        return;
    }
    for (alg, handle) in [("ecc", "0x81010002"), ("rsa", "0x81010001")] {
        let lab = Lab::start();
        lab.create_ek(alg, Some(handle));
        lab.tool("tpm2_readpublic", &["-c", handle, "-f", "pem", "-o", "ek.pem"]);
        lab.write("secret.bin", SECRET);
        let made = lab.tresor(&[
            "tpm",
            "make-credential",
            "--ek-public",
            "ek.pem",
            "--key-algorithm",
            alg,
            "--name",
            "ak.name",
            "--secret",
            "secret.bin",
            "--out",
            "cred.out",
        ]);
        lab.ok(&made);
        assert_eq!(lab.tpm2_activate("cred.out", handle).as_deref(), Some(SECRET), "{alg}");

        let name = hex::encode(lab.read("ak.name"));
        lab.tool(
            "tpm2_makecredential",
            &[
                "-T",
                "none",
                "-u",
                "ek.pem",
                "-G",
                alg,
                "-s",
                "secret.bin",
                "-n",
                &name,
                "-o",
                "t.out",
            ],
        );
        let activate = ["tpm", "activate-credential", "--credential", "t.out", "--ek", alg];
        lab.ok(&lab.tresor(&[&activate[..], &["--out", "got.bin"]].concat()));
        assert_eq!(lab.read("got.bin"), SECRET, "{alg}");
    }
}

/// (c) Malformed credential files are clear errors; a credential for another TPM's EK,
/// or activated with the wrong EK, is refused by the TPM, and tresor says so.
#[test]
fn bad_credentials_and_wrong_eks_fail_clearly() {
    if !tpm2_tools() {
        return;
    }
    let lab = Lab::start();
    lab.create_ek("ecc", Some("0x81010002"));
    lab.write("secret.bin", SECRET);
    lab.ok(&make(&lab, "ak.name", "cred.out"));
    let good = lab.read("cred.out");
    let activate = |file: &str| {
        lab.stderr_of_failure(&["tpm", "activate-credential", "--credential", file, "--out", "o"])
    };

    let mut magic = good.clone();
    magic[0] ^= 0xFF;
    let mut version = good.clone();
    version[7] = 2;
    let mut longer = good.clone();
    longer.push(0);
    for (what, bytes) in [
        ("wrong magic", magic),
        ("version 2", version),
        ("truncated", good[..good.len() - 1].to_vec()),
        ("header only", good[..8].to_vec()),
        ("trailing byte", longer),
        ("empty", Vec::new()),
    ] {
        lab.write("bad.out", &bytes);
        let stderr = activate("bad.out");
        assert!(stderr.contains("is not a tpm2-tools credential file"), "{what}: {stderr}");
    }
    assert!(!lab.path("o").exists());

    // Altered in the ID object: the TPM's integrity check refuses it.
    let mut altered = good.clone();
    // Byte 15 lies in the outer HMAC (after magic, version, two size fields).
    altered[15] ^= 1;
    lab.write("altered.out", &altered);
    assert!(activate("altered.out").contains("the TPM refused the credential"));

    // Made for the EK of another TPM.
    let other = Lab::start();
    other.create_ek("ecc", Some("0x81010002"));
    std::fs::copy(other.path("ek.pub"), lab.path("other-ek.pub")).unwrap();
    let made = lab.tresor(&[
        "tpm",
        "make-credential",
        "--ek-public",
        "other-ek.pub",
        "--name",
        "ak.name",
        "--secret",
        "secret.bin",
        "--out",
        "foreign.out",
    ]);
    lab.ok(&made);
    assert!(activate("foreign.out").contains("the TPM refused the credential"));

    // Made for the ECC EK, activated with the RSA one.
    let wrong_ek = lab.stderr_of_failure(&[
        "tpm",
        "activate-credential",
        "--credential",
        "cred.out",
        "--ek",
        "rsa",
        "--out",
        "o",
    ]);
    assert!(wrong_ek.contains("the TPM refused the credential"), "{wrong_ek}");
    assert!(!lab.path("o").exists());

    // No AK at the handle given.
    let no_ak = lab.stderr_of_failure(&[
        "tpm",
        "activate-credential",
        "--credential",
        "cred.out",
        "--ak-handle",
        "0x81000099",
        "--out",
        "o",
    ]);
    assert!(no_ak.contains("no AK at persistent handle 0x81000099"), "{no_ak}");

    // The secret still comes back from the good file.
    let out = lab.tresor(&["tpm", "activate-credential", "--credential", "cred.out", "--out", "o"]);
    lab.ok(&out);
    assert_eq!(lab.read("o"), SECRET);
}

/// make-credential refuses what TPM2_MakeCredential refuses, with the reason.
#[test]
fn make_credential_refuses_bad_inputs() {
    if !tpm2_tools() {
        return;
    }
    let lab = Lab::start();
    lab.create_ek("ecc", None);
    lab.write("secret.bin", &[7; 33]);
    let fails = |ek: &str, name: &str| {
        lab.stderr_of_failure(&[
            "tpm",
            "make-credential",
            "--ek-public",
            ek,
            "--name",
            name,
            "--secret",
            "secret.bin",
            "--out",
            "x.out",
        ])
    };
    assert!(fails("ek.pub", "ak.name").contains("33"), "a 33-byte secret for a SHA-256 EK");
    lab.write("secret.bin", b"");
    assert!(fails("ek.pub", "ak.name").contains("is empty"));
    lab.write("secret.bin", SECRET);
    // The AK is not a storage key: no credential can be made under it.
    assert!(fails("ak.pub", "ak.name").contains("cannot make a credential"));
    lab.write("short.name", &[0x00, 0x0B, 1, 2, 3]);
    assert!(fails("ek.pub", "short.name").contains("cannot make a credential"));
    lab.write("garbage.pub", b"\x00\x10not a public area");
    assert!(fails("garbage.pub", "ak.name").contains("is not a TPM2B_PUBLIC"));
    std::fs::copy(lab.path("quote/ak.pem"), lab.path("ek.pem")).unwrap();
    assert!(fails("ek.pem", "ak.name").contains("is PEM"));
    let pem_as = |alg: &str, file: &str| {
        lab.stderr_of_failure(&[
            "tpm",
            "make-credential",
            "--ek-public",
            file,
            "--key-algorithm",
            alg,
            "--name",
            "ak.name",
            "--secret",
            "secret.bin",
            "--out",
            "x.out",
        ])
    };
    assert!(pem_as("rsa", "ek.pem").contains("is not an rsa key"));
    assert!(pem_as("ecc", "ek.pub").contains("is not PEM"));
    lab.write("bad.pem", b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n");
    assert!(pem_as("ecc", "bad.pem").contains("not a PEM public key"));
    assert!(fails("missing.pub", "ak.name").contains("cannot read missing.pub"));
    assert!(!Path::new(&lab.path("x.out")).exists());
}
