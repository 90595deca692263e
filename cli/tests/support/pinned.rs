//! A plain swtpm to be attested against pinned PCR values (issue 13): no EK certificate, no
//! event log. Its PCRs 16 and 23 extended as an application would, and the PVA of
//! `examples/` given two attestation-only policies — `swtpm-pinned` (the TPM's values) and
//! `swtpm-wrong` (PCR 23 pinned elsewhere) — and the EK on its allow-list.

use std::path::Path;

use protocol::tpm::{HashAlg, PcrSelection};
use tre::swtpm::{Swtpm, SwtpmConfig};
use tre::tpm::{KeyAlg, Tpm};

use super::{Service, edit, serve};

pub struct PinnedPva {
    pub swtpm: Swtpm,
    pub tcti: String,
    /// The EK name, hex.
    pub device: String,
    pub url: String,
    pub pva: Service,
}

/// A policy of PCRs 0, 16 and 23 pinned to `values`, attestation only.
pub fn policy(id: &str, values: &[(u8, String)]) -> String {
    let mut t = format!(
        "format = 1\nid = \"{id}\"\n\n[pcr_map]\n\"0\" = \"firmware (swtpm: none)\"\n\
         \"16\" = \"debug\"\n\"23\" = \"application support\"\n\n[policy]\n\
         pcr_selection = \"sha256:0,16,23\"\nbanks = [\"sha256\"]\nbundle_key = \"none\"\n\n\
         [pcr_values.sha256]\n"
    );
    for (pcr, value) in values {
        t.push_str(&format!("\"{pcr}\" = \"{value}\"\n"));
    }
    t
}

/// Starts the swtpm and the PVA in `dir` (prepared from `examples/`).
pub fn start(dir: &Path) -> PinnedPva {
    let (swtpm, tcti, device) = setup(dir);
    let (pva, url) = serve(dir, "pva", "pva", "pva.toml");
    PinnedPva { swtpm, tcti, device, url, pva }
}

/// The swtpm and the PVA's configuration (`pva.toml`, policies, allow-list) of [`start`],
/// without starting the PVA: its TCTI and EK name.
pub fn setup(dir: &Path) -> (Swtpm, String, String) {
    let swtpm = Swtpm::start_temp(&SwtpmConfig::load().unwrap()).unwrap();
    let tcti = swtpm.tcti();
    // The known-good state, as an operator reads it from a reference machine.
    let (device, values) = {
        let mut tpm = Tpm::connect(&tcti).unwrap();
        let ek = tpm.ek(KeyAlg::Ecc).unwrap();
        let device = hex::encode(&ek.name);
        tpm.release(ek).unwrap();
        for pcr in [16, 23] {
            tpm.pcr_extend(
                pcr,
                &[(HashAlg::Sha1, vec![pcr; 20]), (HashAlg::Sha256, vec![pcr; 32])],
            )
            .unwrap();
        }
        let selection: PcrSelection = "sha256:0,16,23".parse().unwrap();
        let values = tre::attester::read_pcrs(&mut tpm, &selection).unwrap();
        (device, values.iter().map(|(_, pcr, v)| (pcr, hex::encode(v))).collect::<Vec<_>>())
    };
    let mut wrong = values.clone();
    wrong[2].1 = "ee".repeat(32);
    std::fs::write(dir.join("pinned.toml"), policy("swtpm-pinned", &values)).unwrap();
    std::fs::write(dir.join("wrong.toml"), policy("swtpm-wrong", &wrong)).unwrap();
    std::fs::write(dir.join("ek-allow.txt"), format!("# the lab's swtpm\n{device}\n")).unwrap();
    edit(
        &dir.join("pva.toml"),
        &[
            ("127.0.0.1:8440", "127.0.0.1:0"),
            (
                r#"policies = ["reference-values.toml"]"#,
                "policies = [\"reference-values.toml\", \"pinned.toml\", \"wrong.toml\"]\n\
                 default_policy = \"tresor-sample-m2me-2025.1\"\nek_allow_list = \"ek-allow.txt\"",
            ),
        ],
    );
    (swtpm, tcti, device)
}
