//! Policy digests computed in software, as a trial session would (TPM 2.0 Part 1 §19.7
//! "Policy Session"): TPM2_PolicyPCR (Part 3 §23.7),
//! policyDigest_new = H(policyDigest_old ‖ TPM_CC_PolicyPCR ‖ TPML_PCR_SELECTION ‖ pcrDigest),
//! where pcrDigest = H(selected PCR values in TPM order) with the policy's hash.
//!
//! The PVA uses this to compute the authPolicy a bundle key must carry for the reference
//! PCR values, and compares it with the certified public area.

use super::alg::HashAlg;
use super::error::PcrError;
use super::pcr::{PcrSelection, PcrValues};
use super::wire::{Digest, Marshal};

/// TPM_CC_PolicyPCR (TPM 2.0 Part 2 §6.5.2).
pub const TPM_CC_POLICY_PCR: u32 = 0x0000_017F;

/// A policy digest being extended, starting from the all-zero digest of its hash.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct PolicyDigest {
    alg: HashAlg,
    digest: Vec<u8>,
}

impl PolicyDigest {
    /// The initial policyDigest of a session with hash `alg`: `alg.size()` zero bytes.
    pub fn new(alg: HashAlg) -> Self {
        Self { alg, digest: vec![0; alg.size()] }
    }

    pub fn alg(&self) -> HashAlg {
        self.alg
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.digest
    }

    pub fn to_digest(&self) -> Digest {
        Digest::from_bounded(self.digest.clone())
    }

    /// TPM2_PolicyPCR with an explicit pcrDigest (which must have the policy hash's size).
    pub fn policy_pcr_digest(
        &mut self,
        selection: &PcrSelection,
        pcr_digest: &[u8],
    ) -> Result<&mut Self, PcrError> {
        if pcr_digest.len() != self.alg.size() {
            return Err(PcrError::DigestSize {
                alg: self.alg,
                expected: self.alg.size(),
                got: pcr_digest.len(),
            });
        }
        let selection = selection.to_bytes();
        self.digest = self.alg.digest_parts(&[
            &self.digest,
            &TPM_CC_POLICY_PCR.to_be_bytes(),
            &selection,
            pcr_digest,
        ]);
        Ok(self)
    }

    /// TPM2_PolicyPCR over the selected `values`.
    pub fn policy_pcr(
        &mut self,
        selection: &PcrSelection,
        values: &PcrValues,
    ) -> Result<&mut Self, PcrError> {
        let pcr_digest = selection.pcr_digest(self.alg, values)?;
        self.policy_pcr_digest(selection, &pcr_digest)
    }
}

/// The authPolicy of an object whose policy is a single TPM2_PolicyPCR over `values`.
pub fn policy_pcr(
    alg: HashAlg,
    selection: &PcrSelection,
    values: &PcrValues,
) -> Result<Digest, PcrError> {
    Ok(PolicyDigest::new(alg).policy_pcr(selection, values)?.to_digest())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_definition() {
        let sel: PcrSelection = "sha256:0,7".parse().unwrap();
        let mut values = PcrValues::new();
        values.insert(HashAlg::Sha256, 0, vec![0xAA; 32]).unwrap();
        values.insert(HashAlg::Sha256, 7, vec![0xBB; 32]).unwrap();
        let pcr_digest = HashAlg::Sha256.digest(&[[0xAA; 32], [0xBB; 32]].concat());
        let mut expected = vec![0u8; 32];
        expected.extend([0x00, 0x00, 0x01, 0x7F]);
        expected.extend(hex::decode("00000001000b03810000").unwrap());
        expected.extend(&pcr_digest);
        let digest = policy_pcr(HashAlg::Sha256, &sel, &values).unwrap();
        assert_eq!(digest.as_bytes(), HashAlg::Sha256.digest(&expected));
    }

    /// `tpm2_createpolicy --policy-pcr -l sha256:0 -L policy.digest` on a fresh swtpm 0.7.1
    /// (PCR 0 all zero), tpm2-tools 5.4.
    #[test]
    fn matches_tpm2_createpolicy_on_swtpm() {
        let sel: PcrSelection = "sha256:0".parse().unwrap();
        let mut values = PcrValues::new();
        values.insert(HashAlg::Sha256, 0, vec![0; 32]).unwrap();
        let digest = policy_pcr(HashAlg::Sha256, &sel, &values).unwrap();
        assert_eq!(
            hex::encode(digest.as_bytes()),
            "093ceb41181d47808862d7946268ee6a17a10e3d1b79b32351bc56e4beaceff0"
        );
        // `tpm2_createpolicy --policy-pcr -l sha1:0,1+sha256:3 -g sha384` on the same TPM.
        let sel: PcrSelection = "sha1:0,1+sha256:3".parse().unwrap();
        let mut values = PcrValues::new();
        values.insert(HashAlg::Sha1, 0, vec![0; 20]).unwrap();
        values.insert(HashAlg::Sha1, 1, vec![0; 20]).unwrap();
        values.insert(HashAlg::Sha256, 3, vec![0; 32]).unwrap();
        let digest = policy_pcr(HashAlg::Sha384, &sel, &values).unwrap();
        assert_eq!(
            hex::encode(digest.as_bytes()),
            "a3c85f5c48c1eb0b130f7a7af0c9f4e626516672b832ad793b9a9fdc611212bbfdb710c560bd2cd89aeba99c281f8b36"
        );
    }

    #[test]
    fn refuses_a_digest_of_the_wrong_size() {
        let sel: PcrSelection = "sha256:0".parse().unwrap();
        let mut p = PolicyDigest::new(HashAlg::Sha256);
        assert_eq!(
            p.policy_pcr_digest(&sel, &[0; 20]).map(|_| ()),
            Err(PcrError::DigestSize { alg: HashAlg::Sha256, expected: 32, got: 20 })
        );
        assert_eq!(p.as_bytes(), &[0; 32]);
    }
}
