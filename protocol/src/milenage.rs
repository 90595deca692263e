//! Milenage, the 3GPP example algorithm set for AKA (3GPP TS 35.206 §4): OPc from OP, the
//! functions f1, f1*, f2, f3, f4, f5 and f5*, the GSM conversion functions c2 and c3
//! (3GPP TS 33.102 §6.8.1.2), and both ends of UMTS AKA built on them (TS 33.102 §6.3):
//!
//! - the network side (AuC): an authentication vector (RAND, XRES, CK, IK, AUTN) from K, OPc,
//!   SQN, AMF and RAND, and the recovery of SQN_MS from an AUTS for resynchronisation
//!   (§6.3.5);
//! - the card side: AUTN verification (MAC-A, SQN concealed by AK) and the making of AUTS
//!   (§6.3.3). Sequence number freshness (Annex C) is the card's business, not Milenage's.
//!
//! Keys derived here (CK, IK, Kc) zeroize on drop and print as `Ck(…)` etc., like the
//! subscriber secrets in [`crate::secret`]. RES and MAC values are compared in constant time.

use std::fmt;

use aes::Aes128;
use aes::cipher::{BlockEncrypt, KeyInit};
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::secret::{Amf, Opc, SecretError, SubscriberKey, secret_bytes};

/// Why an AKA message did not verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MilenageError {
    /// The AUTN's MAC-A is not f1(K, SQN, RAND, AMF): the network is not the subscriber's
    /// home network, or the challenge was altered (TS 33.102 §6.3.3, "MAC failure").
    #[error("AUTN MAC-A does not verify")]
    MacFailure,
    /// The AUTS's MAC-S is not f1*(K, SQN_MS, RAND, AMF*): the resynchronisation request does
    /// not come from the subscriber's card or belongs to another RAND (TS 33.102 §6.3.5).
    #[error("AUTS MAC-S does not verify")]
    AutsMacFailure,
    #[error("SQN must fit in 48 bits")]
    SqnRange,
}

secret_bytes!(
    /// CK: the cipher key of UMTS AKA, f3 (TS 33.102 §6.3.2).
    Ck, 16
);
secret_bytes!(
    /// IK: the integrity key of UMTS AKA, f4 (TS 33.102 §6.3.2).
    Ik, 16
);
secret_bytes!(
    /// Kc: the GSM cipher key, c3(CK, IK) (TS 33.102 §6.8.1.2).
    Kc, 8
);
secret_bytes!(
    /// OP: the operator variant configuration field from which OPc is derived
    /// (TS 35.206 §4.1). Secret to the operator.
    Op, 16
);

/// RAND: the 128-bit network challenge (TS 33.102 §6.3.2). Not secret.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Rand(pub [u8; 16]);

impl Rand {
    /// A fresh challenge from the operating system's CSPRNG.
    pub fn random() -> Result<Self, ring::error::Unspecified> {
        use ring::rand::SecureRandom;
        let mut bytes = [0u8; 16];
        ring::rand::SystemRandom::new().fill(&mut bytes)?;
        Ok(Self(bytes))
    }
}

/// SQN: the 48-bit sequence number, split SEQ ‖ IND as TS 33.102 Annex C.1.1 suggests, with
/// IND the low [`Sqn::IND_BITS`] bits (Annex C.3.2: a = 32 array entries).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default)]
pub struct Sqn(u64);

impl Sqn {
    pub const IND_BITS: u32 = 5;
    pub const MAX: u64 = (1 << 48) - 1;

    pub fn new(value: u64) -> Result<Self, MilenageError> {
        if value > Self::MAX {
            return Err(MilenageError::SqnRange);
        }
        Ok(Self(value))
    }

    /// SQN = SEQ ‖ IND; IND is taken modulo 2^IND_BITS.
    pub fn from_parts(seq: u64, ind: u8) -> Result<Self, MilenageError> {
        let ind_mask = (1u64 << Self::IND_BITS) - 1;
        let seq = seq.checked_shl(Self::IND_BITS).ok_or(MilenageError::SqnRange)?;
        Self::new(seq | (u64::from(ind) & ind_mask))
    }

    pub fn from_bytes(bytes: [u8; 6]) -> Self {
        let mut wide = [0u8; 8];
        wide[2..].copy_from_slice(&bytes);
        Self(u64::from_be_bytes(wide))
    }

    pub fn to_bytes(self) -> [u8; 6] {
        let wide = self.0.to_be_bytes();
        [wide[2], wide[3], wide[4], wide[5], wide[6], wide[7]]
    }

    pub fn value(self) -> u64 {
        self.0
    }

    /// SEQ: the high 43 bits.
    pub fn seq(self) -> u64 {
        self.0 >> Self::IND_BITS
    }

    /// IND: the array index, the low 5 bits.
    pub fn ind(self) -> u8 {
        // Masked to 5 bits, so the cast cannot truncate.
        (self.0 & ((1 << Self::IND_BITS) - 1)) as u8
    }
}

/// AUTN = (SQN ⊕ AK) ‖ AMF ‖ MAC-A (TS 33.102 §6.3.2).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Autn(pub [u8; 16]);

/// AUTS = (SQN_MS ⊕ AK*) ‖ MAC-S (TS 33.102 §6.3.3).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Auts(pub [u8; 14]);

/// RES / XRES: the 64-bit response f2 (TS 35.206 §4.1 produces 64 bits).
#[derive(Clone, Copy, Eq, Debug)]
pub struct Res(pub [u8; 8]);

/// Constant time: a RES comparison must not tell a forger how many bytes matched.
impl PartialEq for Res {
    fn eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

/// SRES: the GSM response, c2(RES) (TS 33.102 §6.8.1.2).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Sres(pub [u8; 4]);

/// The outputs of f2, f3, f4 and f5 for one RAND (TS 35.206 §4.1, OUT2..OUT4).
#[derive(Clone, Debug)]
pub struct F2345 {
    pub res: Res,
    pub ck: Ck,
    pub ik: Ik,
    pub ak: [u8; 6],
}

/// An authentication vector (quintet) as the AuC hands it to the serving network
/// (TS 33.102 §6.3.2).
#[derive(Clone, Debug)]
pub struct AuthVector {
    pub rand: Rand,
    pub xres: Res,
    pub ck: Ck,
    pub ik: Ik,
    pub autn: Autn,
}

/// Milenage keyed with one subscriber's K and OPc. The AES key schedule zeroizes on drop.
pub struct Milenage {
    cipher: Aes128,
    opc: [u8; 16],
}

impl Drop for Milenage {
    fn drop(&mut self) {
        self.opc.zeroize();
    }
}

impl fmt::Debug for Milenage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Milenage(…)")
    }
}

/// The rotation amounts r1..r5 (bits) and constants c1..c5 (last byte) of TS 35.206 §4.1.
const R: [usize; 5] = [64, 0, 32, 64, 96];
const C: [u8; 5] = [0x00, 0x01, 0x02, 0x04, 0x08];

/// OPc = OP ⊕ E_K(OP) (TS 35.206 §4.1).
pub fn opc_from_op(k: &SubscriberKey, op: &Op) -> Opc {
    let cipher = Aes128::new(k.expose().into());
    let mut block = *op.expose();
    cipher.encrypt_block((&mut block).into());
    xor_into(&mut block, op.expose());
    let opc = Opc::new(block);
    block.zeroize();
    opc
}

impl Milenage {
    pub fn new(k: &SubscriberKey, opc: &Opc) -> Self {
        Self { cipher: Aes128::new(k.expose().into()), opc: *opc.expose() }
    }

    /// f1 and f1*: MAC-A and MAC-S over SQN ‖ AMF for RAND (OUT1 of TS 35.206 §4.1).
    pub fn f1_both(&self, rand: &Rand, sqn: Sqn, amf: Amf) -> ([u8; 8], [u8; 8]) {
        let temp = self.temp(rand);
        let sqn = sqn.to_bytes();
        let mut in1 = [0u8; 16];
        in1[..6].copy_from_slice(&sqn);
        in1[6..8].copy_from_slice(&amf.0);
        in1[8..14].copy_from_slice(&sqn);
        in1[14..].copy_from_slice(&amf.0);
        xor_into(&mut in1, &self.opc);
        let mut block = rotate(&in1, R[0]);
        xor_into(&mut block, &temp);
        block[15] ^= C[0];
        let out1 = self.finish(block);
        let mut mac_a = [0u8; 8];
        let mut mac_s = [0u8; 8];
        mac_a.copy_from_slice(&out1[..8]);
        mac_s.copy_from_slice(&out1[8..]);
        (mac_a, mac_s)
    }

    /// f1: the network authentication code MAC-A.
    pub fn f1(&self, rand: &Rand, sqn: Sqn, amf: Amf) -> [u8; 8] {
        self.f1_both(rand, sqn, amf).0
    }

    /// f1*: the resynchronisation authentication code MAC-S.
    pub fn f1_star(&self, rand: &Rand, sqn: Sqn, amf: Amf) -> [u8; 8] {
        self.f1_both(rand, sqn, amf).1
    }

    /// f2 (RES), f3 (CK), f4 (IK) and f5 (AK) for RAND (OUT2..OUT4 of TS 35.206 §4.1).
    pub fn f2345(&self, rand: &Rand) -> F2345 {
        let temp = self.temp(rand);
        let out2 = self.out(&temp, 1);
        let out3 = self.out(&temp, 2);
        let out4 = self.out(&temp, 3);
        let mut res = [0u8; 8];
        let mut ak = [0u8; 6];
        res.copy_from_slice(&out2[8..]);
        ak.copy_from_slice(&out2[..6]);
        F2345 { res: Res(res), ck: Ck(out3), ik: Ik(out4), ak }
    }

    /// f5*: the anonymity key AK* that conceals SQN_MS in AUTS (OUT5 of TS 35.206 §4.1).
    pub fn f5_star(&self, rand: &Rand) -> [u8; 6] {
        let temp = self.temp(rand);
        let out5 = self.out(&temp, 4);
        let mut ak = [0u8; 6];
        ak.copy_from_slice(&out5[..6]);
        ak
    }

    /// The AuC's authentication vector for SQN and AMF under RAND (TS 33.102 §6.3.2).
    pub fn vector(&self, rand: Rand, sqn: Sqn, amf: Amf) -> AuthVector {
        let F2345 { res, ck, ik, ak } = self.f2345(&rand);
        let mac_a = self.f1(&rand, sqn, amf);
        let mut autn = [0u8; 16];
        autn[..6].copy_from_slice(&sqn.to_bytes());
        xor_into(&mut autn[..6], &ak);
        autn[6..8].copy_from_slice(&amf.0);
        autn[8..].copy_from_slice(&mac_a);
        AuthVector { rand, xres: res, ck, ik, autn: Autn(autn) }
    }

    /// The card's check of AUTN (TS 33.102 §6.3.3): removes AK, recomputes MAC-A, and returns
    /// SQN and AMF for the freshness check that the caller must still do.
    pub fn verify_autn(&self, rand: &Rand, autn: &Autn) -> Result<(Sqn, Amf), MilenageError> {
        let ak = self.f2345(rand).ak;
        let mut sqn = [0u8; 6];
        sqn.copy_from_slice(&autn.0[..6]);
        xor_into(&mut sqn, &ak);
        let sqn = Sqn::from_bytes(sqn);
        let amf = Amf([autn.0[6], autn.0[7]]);
        let xmac = self.f1(rand, sqn, amf);
        if bool::from(xmac.ct_eq(&autn.0[8..])) {
            Ok((sqn, amf))
        } else {
            Err(MilenageError::MacFailure)
        }
    }

    /// The card's resynchronisation token for its highest accepted SQN_MS
    /// (TS 33.102 §6.3.3): the AMF in MAC-S is the dummy all-zero AMF*.
    pub fn auts(&self, rand: &Rand, sqn_ms: Sqn) -> Auts {
        let ak_star = self.f5_star(rand);
        let mac_s = self.f1_star(rand, sqn_ms, Amf([0, 0]));
        let mut auts = [0u8; 14];
        auts[..6].copy_from_slice(&sqn_ms.to_bytes());
        xor_into(&mut auts[..6], &ak_star);
        auts[6..].copy_from_slice(&mac_s);
        Auts(auts)
    }

    /// The AuC's side of resynchronisation (TS 33.102 §6.3.5): recovers SQN_MS from AUTS and
    /// verifies MAC-S. The AuC then sets SQN_HE to SQN_MS and issues fresh vectors above it.
    pub fn resync(&self, rand: &Rand, auts: &Auts) -> Result<Sqn, MilenageError> {
        let ak_star = self.f5_star(rand);
        let mut sqn = [0u8; 6];
        sqn.copy_from_slice(&auts.0[..6]);
        xor_into(&mut sqn, &ak_star);
        let sqn_ms = Sqn::from_bytes(sqn);
        let xmac_s = self.f1_star(rand, sqn_ms, Amf([0, 0]));
        if bool::from(xmac_s.ct_eq(&auts.0[6..])) {
            Ok(sqn_ms)
        } else {
            Err(MilenageError::AutsMacFailure)
        }
    }

    /// TEMP = E_K(RAND ⊕ OPc).
    fn temp(&self, rand: &Rand) -> [u8; 16] {
        let mut block = rand.0;
        xor_into(&mut block, &self.opc);
        self.cipher.encrypt_block((&mut block).into());
        block
    }

    /// OUTi = E_K(rot(TEMP ⊕ OPc, ri) ⊕ ci) ⊕ OPc, for i = 2..5 (index 1..4).
    fn out(&self, temp: &[u8; 16], index: usize) -> [u8; 16] {
        let mut x = *temp;
        xor_into(&mut x, &self.opc);
        let mut block = rotate(&x, R[index]);
        block[15] ^= C[index];
        self.finish(block)
    }

    /// E_K(block) ⊕ OPc.
    fn finish(&self, mut block: [u8; 16]) -> [u8; 16] {
        self.cipher.encrypt_block((&mut block).into());
        xor_into(&mut block, &self.opc);
        block
    }
}

/// c2: SRES = RES₁ ⊕ RES₂ for a 64-bit RES (TS 33.102 §6.8.1.2, XRES padded to 128 bits
/// with zeros, so the last two words contribute nothing).
pub fn c2(res: &Res) -> Sres {
    let mut sres = [0u8; 4];
    for (i, b) in sres.iter_mut().enumerate() {
        *b = res.0[i] ^ res.0[i + 4];
    }
    Sres(sres)
}

/// c3: Kc = CK₁ ⊕ CK₂ ⊕ IK₁ ⊕ IK₂, the 64-bit halves of CK and IK (TS 33.102 §6.8.1.2).
pub fn c3(ck: &Ck, ik: &Ik) -> Kc {
    let mut kc = [0u8; 8];
    for (i, b) in kc.iter_mut().enumerate() {
        *b = ck.0[i] ^ ck.0[i + 8] ^ ik.0[i] ^ ik.0[i + 8];
    }
    Kc(kc)
}

/// Cyclic left rotation of a 128-bit block by `bits` (a multiple of 8 in Milenage).
fn rotate(x: &[u8; 16], bits: usize) -> [u8; 16] {
    let shift = bits / 8;
    let mut out = [0u8; 16];
    for (i, b) in out.iter_mut().enumerate() {
        *b = x[(i + shift) % 16];
    }
    out
}

fn xor_into(dst: &mut [u8], src: &[u8]) {
    for (d, s) in dst.iter_mut().zip(src) {
        *d ^= s;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One Milenage conformance test set: inputs and every output (hex).
    struct TestSet {
        k: &'static str,
        rand: &'static str,
        sqn: &'static str,
        amf: &'static str,
        op: Option<&'static str>,
        opc: &'static str,
        f1: &'static str,
        f1_star: &'static str,
        f2: &'static str,
        f3: &'static str,
        f4: &'static str,
        f5: &'static str,
        f5_star: &'static str,
    }

    /// 3GPP TS 35.207 §4 test sets 1 and 2 (identical to TS 35.208 §4.3 sets 1 and 2), as
    /// quoted in issue 5. Sets 3 to 6 of TS 35.208 §4.3: inputs, OPc and outputs as tabled by
    /// an independent published Milenage test (which lists OPc, not OP); each OP is the
    /// TS 35.208 value and is confirmed by deriving that OPc.
    const SETS: [TestSet; 6] = [
        TestSet {
            k: "465b5ce8b199b49faa5f0a2ee238a6bc",
            rand: "23553cbe9637a89d218ae64dae47bf35",
            sqn: "ff9bb4d0b607",
            amf: "b9b9",
            op: Some("cdc202d5123e20f62b6d676ac72cb318"),
            opc: "cd63cb71954a9f4e48a5994e37a02baf",
            f1: "4a9ffac354dfafb3",
            f1_star: "01cfaf9ec4e871e9",
            f2: "a54211d5e3ba50bf",
            f3: "b40ba9a3c58b2a05bbf0d987b21bf8cb",
            f4: "f769bcd751044604127672711c6d3441",
            f5: "aa689c648370",
            f5_star: "451e8beca43b",
        },
        TestSet {
            k: "0396eb317b6d1c36f19c1c84cd6ffd16",
            rand: "c00d603103dcee52c4478119494202e8",
            sqn: "fd8eef40df7d",
            amf: "af17",
            op: Some("ff53bade17df5d4e793073ce9d7579fa"),
            opc: "53c15671c60a4b731c55b4a441c0bde2",
            f1: "5df5b31807e258b0",
            f1_star: "a8c016e51ef4a343",
            f2: "d3a628ed988620f0",
            f3: "58c433ff7a7082acd424220f2b67c556",
            f4: "21a8c1f929702adb3e738488b9f5c5da",
            f5: "c47783995f72",
            f5_star: "30f1197061c1",
        },
        TestSet {
            k: "fec86ba6eb707ed08905757b1bb44b8f",
            rand: "9f7c8d021accf4db213ccff0c7f71a6a",
            sqn: "9d0277595ffc",
            amf: "725c",
            op: Some("dbc59adcb6f9a0ef735477b7fadf8374"),
            opc: "1006020f0a478bf6b699f15c062e42b3",
            f1: "9cabc3e99baf7281",
            f1_star: "95814ba2b3044324",
            f2: "8011c48c0c214ed2",
            f3: "5dbdbb2954e8f3cde665b046179a5098",
            f4: "59a92d3b476a0443487055cf88b2307b",
            f5: "33484dc2136b",
            f5_star: "deacdd848cc6",
        },
        TestSet {
            k: "9e5944aea94b81165c82fbf9f32db751",
            rand: "ce83dbc54ac0274a157c17f80d017bd6",
            sqn: "0b604a81eca8",
            amf: "9e09",
            op: Some("223014c5806694c007ca1eeef57f004f"),
            opc: "a64a507ae1a2a98bb88eb4210135dc87",
            f1: "74a58220cba84c49",
            f1_star: "ac2cc74a96871837",
            f2: "f365cd683cd92e96",
            f3: "e203edb3971574f5a94b0d61b816345d",
            f4: "0c4524adeac041c4dd830d20854fc46b",
            f5: "f0b9c08ad02e",
            f5_star: "6085a86c6f63",
        },
        TestSet {
            k: "4ab1deb05ca6ceb051fc98e77d026a84",
            rand: "74b0cd6031a1c8339b2b6ce2b8c4a186",
            sqn: "e880a1b580b6",
            amf: "9f07",
            op: Some("2d16c5cd1fdf6b22383584e3bef2a8d8"),
            opc: "dcf07cbd51855290b92a07a9891e523e",
            f1: "49e785dd12626ef2",
            f1_star: "9e85790336bb3fa2",
            f2: "5860fc1bce351e7e",
            f3: "7657766b373d1c2138f307e3de9242f9",
            f4: "1c42e960d89b8fa99f2744e0708ccb53",
            f5: "31e11a609118",
            f5_star: "fe2555e54aa9",
        },
        TestSet {
            k: "6c38a116ac280c454f59332ee35c8c4f",
            rand: "ee6466bc96202c5a557abbeff8babf63",
            sqn: "414b98222181",
            amf: "4464",
            op: Some("1ba00a1a7c6700ac8c3ff3e96ad08725"),
            opc: "3803ef5363b947c6aaa225e58fae3934",
            f1: "078adfb488241a57",
            f1_star: "80246b8d0186bcf1",
            f2: "16c8233f05a0ac28",
            f3: "3f8c7587fe8e4b233af676aede30ba3b",
            f4: "a7466cc1e6b2a1337d49d3b66e95d7b4",
            f5: "45b0f69ab06c",
            f5_star: "1f53cd2b1113",
        },
    ];

    fn arr<const N: usize>(s: &str) -> [u8; N] {
        hex::decode(s).unwrap().try_into().unwrap()
    }

    #[test]
    fn conformance_test_sets() {
        for (n, set) in SETS.iter().enumerate() {
            let k = SubscriberKey::from_hex(set.k).unwrap();
            if let Some(op) = set.op {
                let opc = opc_from_op(&k, &Op::from_hex(op).unwrap());
                assert_eq!(hex::encode(opc.expose()), set.opc, "set {} OPc", n + 1);
            }
            let m = Milenage::new(&k, &Opc::from_hex(set.opc).unwrap());
            let rand = Rand(arr(set.rand));
            let sqn = Sqn::from_bytes(arr(set.sqn));
            let amf = Amf(arr(set.amf));
            let (mac_a, mac_s) = m.f1_both(&rand, sqn, amf);
            assert_eq!(hex::encode(mac_a), set.f1, "set {} f1", n + 1);
            assert_eq!(hex::encode(mac_s), set.f1_star, "set {} f1*", n + 1);
            let out = m.f2345(&rand);
            assert_eq!(hex::encode(out.res.0), set.f2, "set {} f2", n + 1);
            assert_eq!(hex::encode(out.ck.expose()), set.f3, "set {} f3", n + 1);
            assert_eq!(hex::encode(out.ik.expose()), set.f4, "set {} f4", n + 1);
            assert_eq!(hex::encode(out.ak), set.f5, "set {} f5", n + 1);
            assert_eq!(hex::encode(m.f5_star(&rand)), set.f5_star, "set {} f5*", n + 1);
        }
    }

    #[test]
    fn gsm_conversion_of_test_set_1() {
        // TS 35.208 §4.3 test set 1 lists SRES#1 = c2(RES) and Kc = c3(CK, IK); checked by
        // hand: a54211d5 ⊕ e3ba50bf = 46f8416a.
        let set = &SETS[0];
        let m = Milenage::new(
            &SubscriberKey::from_hex(set.k).unwrap(),
            &Opc::from_hex(set.opc).unwrap(),
        );
        let out = m.f2345(&Rand(arr(set.rand)));
        assert_eq!(hex::encode(c2(&out.res).0), "46f8416a");
        assert_eq!(hex::encode(c3(&out.ck, &out.ik).expose()), "eae4be823af9a08b");
    }

    #[test]
    fn vector_verifies_on_the_card_side() {
        let k = SubscriberKey::new([0x11; 16]);
        let opc = Opc::new([0x22; 16]);
        let m = Milenage::new(&k, &opc);
        let sqn = Sqn::from_parts(12345, 7).unwrap();
        let v = m.vector(Rand([0x33; 16]), sqn, Amf([0x80, 0x00]));
        assert_eq!(m.verify_autn(&v.rand, &v.autn), Ok((sqn, Amf([0x80, 0x00]))));
        assert_eq!(m.f2345(&v.rand).res, v.xres);
        let mut forged = v.autn;
        forged.0[15] ^= 1;
        assert_eq!(m.verify_autn(&v.rand, &forged), Err(MilenageError::MacFailure));
        // A different subscriber key cannot verify the vector.
        let other = Milenage::new(&SubscriberKey::new([0x12; 16]), &opc);
        assert_eq!(other.verify_autn(&v.rand, &v.autn), Err(MilenageError::MacFailure));
    }

    #[test]
    fn auts_round_trips_and_rejects_tampering() {
        let m = Milenage::new(&SubscriberKey::new([0x44; 16]), &Opc::new([0x55; 16]));
        let rand = Rand([0x66; 16]);
        let sqn_ms = Sqn::from_parts(999, 3).unwrap();
        let auts = m.auts(&rand, sqn_ms);
        assert_eq!(m.resync(&rand, &auts), Ok(sqn_ms));
        let mut bad = auts;
        bad.0[0] ^= 0x80;
        assert_eq!(m.resync(&rand, &bad), Err(MilenageError::AutsMacFailure));
        assert_eq!(m.resync(&Rand([0x67; 16]), &auts), Err(MilenageError::AutsMacFailure));
    }

    #[test]
    fn sqn_parts_and_range() {
        let sqn = Sqn::from_parts(0x123, 0x1F).unwrap();
        assert_eq!((sqn.seq(), sqn.ind()), (0x123, 0x1F));
        assert_eq!(Sqn::from_bytes(sqn.to_bytes()), sqn);
        assert_eq!(Sqn::new(1 << 48), Err(MilenageError::SqnRange));
        assert_eq!(Sqn::from_parts(1 << 43, 0), Err(MilenageError::SqnRange));
        assert_eq!(Sqn::from_parts(5, 33).unwrap().ind(), 1);
    }

    #[test]
    fn derived_keys_never_print() {
        let m = Milenage::new(&SubscriberKey::new([0xAB; 16]), &Opc::new([0xCD; 16]));
        let out = m.f2345(&Rand([0; 16]));
        let kc = c3(&out.ck, &out.ik);
        let shown = format!("{:?} {:?} {m:?} {kc:?}", out.ck, out.ik);
        assert_eq!(shown, "Ck(…) Ik(…) Milenage(…) Kc(…)");
    }
}
