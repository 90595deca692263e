//! AUTHENTICATE (3GPP TS 31.102 §7.1.2): the 3G security context (P2 81) with Milenage AUTN
//! verification, SQN freshness per TS 33.102 Annex C and resynchronisation (DC ‖ AUTS), and
//! the GSM security context (P2 80) through the conversion functions c2 and c3.
//!
//! While the TRE is active the USIM refuses both contexts (TR 33.812 §5.4.4.3).
//!
//! The terminal side is here too — [`command`] builds the APDU and [`Outcome::parse`] reads
//! the answer — so that a network-side test can run AKA against the card with the AuC of
//! [`protocol::milenage`].

use protocol::milenage::{self, Autn, Auts, Ck, Ik, Kc, Milenage, Rand, Res, Sres};

use crate::apdu::{Command, Sw};
use crate::card::Card;
use crate::commands::Reply;
use crate::fs::{self, Access};

const P2_GSM: u8 = 0x80;
const P2_3G: u8 = 0x81;
const TAG_SUCCESS: u8 = 0xDB;
const TAG_SYNC_FAILURE: u8 = 0xDC;

impl Card {
    pub(crate) fn authenticate(&mut self, cmd: &Command) -> Reply {
        if cmd.p1 != 0x00 {
            return Sw::WRONG_P1_P2.into();
        }
        if cmd.p2 != P2_3G && cmd.p2 != P2_GSM {
            return Sw::INCORRECT_P1_P2.into();
        }
        if !self.session.usim_selected {
            return Sw::CONDITIONS_NOT_SATISFIED.into();
        }
        if self.tre_active() {
            tracing::info!("AUTHENTICATE refused: the TRE is active, the USIM is not");
            return Sw::CONDITIONS_NOT_SATISFIED.into();
        }
        if !self.granted(Access::Pin1) {
            return Sw::SECURITY_NOT_SATISFIED.into();
        }
        let ust = self.state.file("EF_UST").unwrap_or_default();
        if cmd.p2 == P2_GSM {
            if !fs::service_available(ust, fs::SERVICE_GSM_SECURITY_CONTEXT) {
                return Sw::INCORRECT_P1_P2.into();
            }
            return match cmd.data {
                [0x10, rand @ ..] => match <[u8; 16]>::try_from(rand) {
                    Ok(rand) => Reply::Data(self.gsm_context(&Rand(rand))),
                    Err(_) => Sw::WRONG_LENGTH.into(),
                },
                _ => Sw::WRONG_DATA.into(),
            };
        }
        let with_kc = fs::service_available(ust, fs::SERVICE_GSM_ACCESS);
        let [0x10, rest @ ..] = cmd.data else { return Sw::WRONG_DATA.into() };
        let Some((rand, rest)) = rest.split_first_chunk::<16>() else {
            return Sw::WRONG_LENGTH.into();
        };
        let [0x10, autn @ ..] = rest else { return Sw::WRONG_DATA.into() };
        let Ok(autn) = <[u8; 16]>::try_from(autn) else { return Sw::WRONG_LENGTH.into() };
        self.umts_context(&Rand(*rand), &Autn(autn), with_kc)
    }

    fn milenage(&self) -> Milenage {
        Milenage::new(&self.state.profile.k, &self.state.profile.opc)
    }

    /// TS 33.102 §6.3.3: MAC first (a forged AUTN learns nothing about SQN), then freshness.
    fn umts_context(&mut self, rand: &Rand, autn: &Autn, with_kc: bool) -> Reply {
        let m = self.milenage();
        let sqn = match m.verify_autn(rand, autn) {
            Ok((sqn, _amf)) => sqn,
            Err(_) => return Sw::AUTH_MAC_FAILURE.into(),
        };
        if !self.state.sqn.is_fresh(sqn) {
            let auts = m.auts(rand, self.state.sqn.sqn_ms());
            let mut out = vec![TAG_SYNC_FAILURE, 14];
            out.extend_from_slice(&auts.0);
            return Reply::Data(out);
        }
        // Accepted in memory first: even if saving fails, this SQN is not accepted twice.
        self.state.sqn.accept(sqn);
        if let Err(e) = self.persist() {
            tracing::error!(error = %e, "SQN not saved; AUTHENTICATE answered with a memory problem");
            return Sw::MEMORY_PROBLEM.into();
        }
        let out = m.f2345(rand);
        let mut data = Vec::with_capacity(53);
        data.extend_from_slice(&[TAG_SUCCESS, 8]);
        data.extend_from_slice(&out.res.0);
        data.push(16);
        data.extend_from_slice(out.ck.expose());
        data.push(16);
        data.extend_from_slice(out.ik.expose());
        if with_kc {
            data.push(8);
            data.extend_from_slice(milenage::c3(&out.ck, &out.ik).expose());
        }
        Reply::Data(data)
    }

    /// TS 31.102 §7.1.2.1, GSM context: SRES = c2(RES), Kc = c3(CK, IK); no SQN.
    fn gsm_context(&self, rand: &Rand) -> Vec<u8> {
        let out = self.milenage().f2345(rand);
        let mut data = vec![4];
        data.extend_from_slice(&milenage::c2(&out.res).0);
        data.push(8);
        data.extend_from_slice(milenage::c3(&out.ck, &out.ik).expose());
        data
    }

    /// Runs one AKA as a terminal would: selects the USIM, sends AUTHENTICATE (3G context) and
    /// fetches the answer. For network-side tests and the DPF's attach check.
    pub fn run_aka(&mut self, rand: &Rand, autn: &Autn) -> Outcome {
        let select = [&[0x00, 0xA4, 0x04, 0x0C, 0x07][..], &fs::USIM_AID[..7]].concat();
        let answer = self.transmit(&select);
        if answer != [0x90, 0x00] {
            return Outcome::Refused(sw_of(&answer));
        }
        let answer = self.transmit(&command(rand, autn));
        Outcome::parse(&answer)
    }
}

/// AUTHENTICATE in the 3G context: 00 88 00 81 22 10 RAND 10 AUTN 00.
pub fn command(rand: &Rand, autn: &Autn) -> Vec<u8> {
    let mut apdu = vec![0x00, 0x88, 0x00, P2_3G, 0x22, 0x10];
    apdu.extend_from_slice(&rand.0);
    apdu.push(0x10);
    apdu.extend_from_slice(&autn.0);
    apdu.push(0x00);
    apdu
}

/// AUTHENTICATE in the GSM context: 00 88 00 80 11 10 RAND 00.
pub fn gsm_command(rand: &Rand) -> Vec<u8> {
    let mut apdu = vec![0x00, 0x88, 0x00, P2_GSM, 0x11, 0x10];
    apdu.extend_from_slice(&rand.0);
    apdu.push(0x00);
    apdu
}

/// The card's answer to a 3G AUTHENTICATE.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Success {
        res: Res,
        ck: Ck,
        ik: Ik,
        kc: Option<Kc>,
    },
    /// Synchronisation failure: the AuC resynchronises with the AUTS (TS 33.102 §6.3.5).
    SyncFailure(Auts),
    /// SW 9862: the AUTN's MAC did not verify.
    MacFailure,
    /// Any other status word (e.g. 6985 while the TRE is active).
    Refused(Sw),
    /// Not a well-formed answer.
    Malformed,
}

impl Outcome {
    /// Reads response data ‖ SW as [`Card::transmit`] returns it (after GET RESPONSE, if T=0
    /// made one necessary).
    pub fn parse(answer: &[u8]) -> Self {
        let Some((data, [sw1, sw2])) = answer.split_last_chunk::<2>() else {
            return Self::Malformed;
        };
        match (u16::from_be_bytes([*sw1, *sw2]), data) {
            (0x9000, [TAG_SUCCESS, 8, rest @ ..]) => parse_success(rest).unwrap_or(Self::Malformed),
            (0x9000, [TAG_SYNC_FAILURE, 14, auts @ ..]) => {
                <[u8; 14]>::try_from(auts).map_or(Self::Malformed, |a| Self::SyncFailure(Auts(a)))
            }
            (0x9862, []) => Self::MacFailure,
            (0x9000, _) => Self::Malformed,
            (sw, _) => Self::Refused(Sw(sw)),
        }
    }
}

fn parse_success(rest: &[u8]) -> Option<Outcome> {
    let (res, rest) = rest.split_first_chunk::<8>()?;
    let [16, rest @ ..] = rest else { return None };
    let (ck, rest) = rest.split_first_chunk::<16>()?;
    let [16, rest @ ..] = rest else { return None };
    let (ik, rest) = rest.split_first_chunk::<16>()?;
    let kc = match rest {
        [] => None,
        [8, kc @ ..] => Some(Kc::new(<[u8; 8]>::try_from(kc).ok()?)),
        _ => return None,
    };
    Some(Outcome::Success { res: Res(*res), ck: Ck::new(*ck), ik: Ik::new(*ik), kc })
}

/// The SRES and Kc of a GSM-context answer.
pub fn parse_gsm(answer: &[u8]) -> Option<(Sres, Kc)> {
    match answer {
        [4, s0, s1, s2, s3, 8, kc @ .., 0x90, 0x00] => {
            Some((Sres([*s0, *s1, *s2, *s3]), Kc::new(<[u8; 8]>::try_from(kc).ok()?)))
        }
        _ => None,
    }
}

/// The status word at the end of an answer.
pub fn sw_of(answer: &[u8]) -> Sw {
    match answer.split_last_chunk::<2>() {
        Some((_, sw)) => Sw(u16::from_be_bytes(*sw)),
        None => Sw::TECHNICAL_PROBLEM,
    }
}
