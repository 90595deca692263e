//! The authentication centre (3GPP TS 33.102 §6.3): authentication vectors from a subscriber
//! record with Milenage ([`protocol::milenage`]) and the sequence number management of
//! TS 33.102 Annex C, and resynchronisation from an AUTS (§6.3.5).
//!
//! SQN management (Annex C.1.1, C.3): SQN = SEQ ‖ IND with IND the low 5 bits
//! ([`Sqn::IND_BITS`]). The store keeps SQN_HE, the last SQN put in a vector. Each new
//! vector takes SEQ_HE + 1 and the next IND in round robin (IND + 1 mod 32, Annex C.3.2
//! leaves the choice to the operator): consecutive vectors land in different slots of the
//! card's SQN array, so up to 32 vectors issued but not yet used stay acceptable in any
//! order, while SEQ grows by exactly one per vector — far below the card's Δ of 2²⁸
//! (Annex C.2.2). On an AUTS the AuC verifies MAC-S, recovers SQN_MS and sets SQN_HE to it
//! (Annex C.3.4), so the next vector is fresh for the card.

use protocol::milenage::{AuthVector, Auts, Milenage, Rand, Sqn};

use super::error::{MnoError, Result};
use super::records::SubscriberRecord;

/// The SQN after `last`: SEQ + 1, IND + 1 (mod 2^IND_BITS).
pub fn next_sqn(last: Sqn) -> Option<Sqn> {
    let ind_values = 1u16 << Sqn::IND_BITS;
    let ind = u8::try_from((u16::from(last.ind()) + 1) % ind_values).ok()?;
    Sqn::from_parts(last.seq().checked_add(1)?, ind).ok()
}

/// A fresh vector for `record` and the SQN it used (the new SQN_HE, to be stored with it).
pub(crate) fn vector(record: &SubscriberRecord, rand: Rand) -> Result<(AuthVector, Sqn)> {
    let sqn =
        next_sqn(record.sqn).ok_or_else(|| MnoError::SqnExhausted(record.imsi.to_string()))?;
    let v = Milenage::new(&record.k, &record.opc).vector(rand, sqn, record.amf);
    Ok((v, sqn))
}

/// Resynchronisation (TS 33.102 §6.3.5): the card's SQN_MS from an AUTS answering the
/// challenge `rand`, after MAC-S verified. The caller stores it as SQN_HE.
pub(crate) fn resync(record: &SubscriberRecord, rand: &Rand, auts: &Auts) -> Result<Sqn> {
    Milenage::new(&record.k, &record.opc).resync(rand, auts).map_err(|_| MnoError::AkaAutsInvalid)
}

/// A fresh RAND from the operating system's CSPRNG.
pub(crate) fn random_rand() -> Result<Rand> {
    Rand::random().map_err(|_| MnoError::Rng)
}

#[cfg(test)]
mod tests {
    use protocol::Amf;
    use protocol::milenage::Op;
    use uicc::auth::Outcome;
    use uicc::{Card, CardOptions};

    use super::*;
    use crate::mno::records::SubscriberStatus;

    fn record() -> SubscriberRecord {
        let op = Op::from_hex("cdc202d5123e20f62b6d676ac72cb318").unwrap();
        SubscriberRecord::generate(
            "001010000000001".parse().unwrap(),
            "89001010000000000018".parse().unwrap(),
            &op,
            Amf([0x80, 0x00]),
            SubscriberStatus::Pending,
        )
        .unwrap()
    }

    fn card(dir: &tempfile::TempDir, record: &SubscriberRecord) -> Card {
        Card::create(&dir.path().join("card.json"), record.profile(), CardOptions::new().unwrap())
            .unwrap()
    }

    #[test]
    fn vectors_authenticate_on_the_card_emulator() {
        let dir = tempfile::tempdir().unwrap();
        let mut record = record();
        let mut card = card(&dir, &record);
        for _ in 0..3 {
            let (v, sqn) = vector(&record, random_rand().unwrap()).unwrap();
            match card.run_aka(&v.rand, &v.autn) {
                Outcome::Success { res, .. } => assert_eq!(res, v.xres),
                other => panic!("card refused a fresh vector: {other:?}"),
            }
            record.sqn = sqn;
        }
        // The same vector again is a replay: the card asks to resynchronise.
        let (v, _) = vector(&record, random_rand().unwrap()).unwrap();
        assert!(matches!(card.run_aka(&v.rand, &v.autn), Outcome::Success { .. }));
        assert!(matches!(card.run_aka(&v.rand, &v.autn), Outcome::SyncFailure(_)));
    }

    #[test]
    fn a_card_ahead_of_the_auc_resynchronises() {
        let dir = tempfile::tempdir().unwrap();
        let mut record = record();
        let mut card = card(&dir, &record);
        // Another AuC (or a restored backup of this one) took the card to SEQ 1000 in the
        // IND slot the AuC uses next; other slots would still accept lower SEQs (Annex C.2.2).
        let ahead = Sqn::from_parts(1000, 1).unwrap();
        let v =
            Milenage::new(&record.k, &record.opc).vector(random_rand().unwrap(), ahead, record.amf);
        assert!(matches!(card.run_aka(&v.rand, &v.autn), Outcome::Success { .. }));

        let (v, _) = vector(&record, random_rand().unwrap()).unwrap();
        let Outcome::SyncFailure(auts) = card.run_aka(&v.rand, &v.autn) else {
            panic!("a stale SQN must make the card send AUTS");
        };
        let sqn_ms = resync(&record, &v.rand, &auts).unwrap();
        assert_eq!(sqn_ms, ahead);
        // A forged AUTS, or one for another RAND, does not verify.
        let mut forged = auts;
        forged.0[13] ^= 1;
        assert!(matches!(resync(&record, &v.rand, &forged), Err(MnoError::AkaAutsInvalid)));
        assert!(resync(&record, &random_rand().unwrap(), &auts).is_err());

        record.sqn = sqn_ms;
        let (v, sqn) = vector(&record, random_rand().unwrap()).unwrap();
        assert_eq!(sqn.seq(), 1001);
        match card.run_aka(&v.rand, &v.autn) {
            Outcome::Success { res, .. } => assert_eq!(res, v.xres),
            other => panic!("card refused the vector after resynchronisation: {other:?}"),
        }
    }

    #[test]
    fn sqn_advances_seq_and_rotates_ind() {
        let s0 = Sqn::default();
        let s1 = next_sqn(s0).unwrap();
        assert_eq!((s1.seq(), s1.ind()), (1, 1));
        let s31 = Sqn::from_parts(40, 31).unwrap();
        let s = next_sqn(s31).unwrap();
        assert_eq!((s.seq(), s.ind()), (41, 0));
        assert!(next_sqn(Sqn::new(Sqn::MAX).unwrap()).is_none());
    }
}
