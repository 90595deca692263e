//! The command set (ETSI TS 102 221 §10–11): class and instruction dispatch, SELECT, STATUS,
//! READ/UPDATE BINARY, READ/UPDATE RECORD, VERIFY PIN, GET RESPONSE, and the T=0 response
//! rules (61xx, 6Cxx). AUTHENTICATE is in `auth`, the OTA command in [`protocol::ota`].

use protocol::ota;

use crate::apdu::{Command, Sw, respond};
use crate::card::Card;
use crate::fs::{
    self, Access, CURRENT_ADF_FID, Dir, Ef, MF_FID, PinStatus, Source, Structure, USIM_AID,
};

const INS_SELECT: u8 = 0xA4;
const INS_STATUS: u8 = 0xF2;
const INS_READ_BINARY: u8 = 0xB0;
const INS_UPDATE_BINARY: u8 = 0xD6;
const INS_READ_RECORD: u8 = 0xB2;
const INS_UPDATE_RECORD: u8 = 0xDC;
const INS_VERIFY: u8 = 0x20;
const INS_AUTHENTICATE: u8 = 0x88;
const INS_GET_RESPONSE: u8 = 0xC0;
const INS_MANAGE_CHANNEL: u8 = 0x70;
const INS_TERMINAL_PROFILE: u8 = 0x10;

/// Key references of VERIFY (TS 102 221 §9.5.1).
const KEY_PIN1: u8 = 0x01;
const KEY_ADM1: u8 = 0x0A;

/// A command's outcome before the T=0 response rules: data for the terminal, or a bare
/// status word.
pub(crate) enum Reply {
    Sw(Sw),
    /// Data with 9000, delivered directly when Le allows and otherwise through 61xx.
    Data(Vec<u8>),
    /// Data with a status word, delivered as is (READ BINARY, GET RESPONSE).
    Raw(Vec<u8>, Sw),
}

impl From<Sw> for Reply {
    fn from(sw: Sw) -> Self {
        Reply::Sw(sw)
    }
}

impl Card {
    pub(crate) fn process(&mut self, cmd: &Command) -> Vec<u8> {
        if cmd.ins != INS_GET_RESPONSE {
            self.session.pending.clear();
        }
        let reply = match check_class(cmd) {
            Err(sw) => Reply::Sw(sw),
            Ok(proprietary) => self.dispatch(cmd, proprietary),
        };
        match reply {
            Reply::Sw(sw) => respond(&[], sw),
            Reply::Raw(data, sw) => respond(&data, sw),
            Reply::Data(data) => self.deliver(cmd, data),
        }
    }

    fn dispatch(&mut self, cmd: &Command, proprietary: bool) -> Reply {
        let iso = !proprietary;
        match cmd.ins {
            INS_SELECT if iso => self.select(cmd),
            INS_READ_BINARY if iso => self.read_binary(cmd),
            INS_UPDATE_BINARY if iso => self.update_binary(cmd),
            INS_READ_RECORD if iso => self.read_record(cmd),
            INS_UPDATE_RECORD if iso => self.update_record(cmd),
            INS_VERIFY if iso => self.verify(cmd),
            INS_AUTHENTICATE if iso => self.authenticate(cmd),
            INS_GET_RESPONSE if iso => self.get_response(cmd),
            INS_MANAGE_CHANNEL if iso => Sw::LOGICAL_CHANNEL_NOT_SUPPORTED.into(),
            INS_STATUS if proprietary => self.status(cmd),
            // Accepted and ignored: the card runs no proactive commands.
            INS_TERMINAL_PROFILE if proprietary => Sw::OK.into(),
            ota::INS if proprietary => self.ota_apdu(cmd),
            INS_SELECT
            | INS_READ_BINARY
            | INS_UPDATE_BINARY
            | INS_READ_RECORD
            | INS_UPDATE_RECORD
            | INS_VERIFY
            | INS_AUTHENTICATE
            | INS_GET_RESPONSE
            | INS_MANAGE_CHANNEL
            | INS_STATUS
            | INS_TERMINAL_PROFILE
            | ota::INS => Sw::CLA_NOT_SUPPORTED.into(),
            _ => Sw::INS_NOT_SUPPORTED.into(),
        }
    }

    /// T=0 delivery of response data (ISO/IEC 7816-3 §10.3.5, TS 102 221 §7.3.1.1): directly
    /// when the command's Le covers it; 6Cxx for a case 2 command with a short Le; otherwise
    /// kept for GET RESPONSE with 61xx.
    fn deliver(&mut self, cmd: &Command, data: Vec<u8>) -> Vec<u8> {
        match cmd.le {
            _ if data.is_empty() => respond(&[], Sw::OK),
            Some(ne) if ne >= data.len() => respond(&data, Sw::OK),
            Some(_) if cmd.is_case_2() => respond(&[], Sw::wrong_le(data.len())),
            _ => {
                let sw = Sw::bytes_available(data.len());
                self.session.pending = data;
                respond(&[], sw)
            }
        }
    }

    fn pin_status(&self) -> PinStatus {
        PinStatus { pin1_enabled: self.state.pin1.enabled }
    }

    // ---- SELECT (TS 102 221 §11.1.1) ----

    fn select(&mut self, cmd: &Command) -> Reply {
        // P2: 04 return FCP, 0C no data; 00 (FCI, ISO) is answered with the FCP too.
        // b2..b1 = occurrence: only "first or only" exists on this card.
        let want_fcp = match cmd.p2 {
            0x04 | 0x00 => true,
            0x0C => false,
            0x06 | 0x0E | 0x02 | 0x0A if cmd.p1 == 0x04 => return Sw::FILE_NOT_FOUND.into(),
            _ => return Sw::INCORRECT_P1_P2.into(),
        };
        let target = match cmd.p1 {
            0x00 => match cmd.data {
                [] => Ok(Target::Dir(Dir::Mf)),
                [hi, lo] => self.by_fid(u16::from_be_bytes([*hi, *lo])),
                _ => Err(Sw::WRONG_LENGTH),
            },
            // Parent of the current DF: only the ADF has one here.
            0x03 if self.session.df == Dir::Usim => Ok(Target::Dir(Dir::Mf)),
            // Child DF by FID: the card has none.
            0x01 | 0x03 => Err(Sw::FILE_NOT_FOUND),
            0x04 => select_aid(cmd.data),
            0x08 => self.by_path(Dir::Mf, cmd.data),
            0x09 => self.by_path(self.session.df, cmd.data),
            _ => Err(Sw::INCORRECT_P1_P2),
        };
        let target = match target {
            Ok(t) => t,
            Err(sw) => return sw.into(),
        };
        self.session.record = None;
        let fcp = match target {
            Target::Dir(dir) => {
                if dir == Dir::Usim {
                    self.session.usim_selected = true;
                }
                self.session.df = dir;
                self.session.ef = None;
                fs::dir_fcp(dir, self.pin_status())
            }
            Target::Ef(ef) => {
                self.session.df = ef.dir;
                self.session.ef = Some(ef);
                fs::ef_fcp(ef)
            }
        };
        if want_fcp { Reply::Data(fcp) } else { Sw::OK.into() }
    }

    /// Selection by file identifier from the current DF (TS 102 221 §8.4.1): its children,
    /// itself, its parent, the MF, and the current ADF by 7FFF.
    fn by_fid(&self, fid: u16) -> Result<Target, Sw> {
        let current = self.session.df;
        match fid {
            MF_FID => Ok(Target::Dir(Dir::Mf)),
            CURRENT_ADF_FID if self.session.usim_selected => Ok(Target::Dir(Dir::Usim)),
            _ => fs::ef_by_fid(current, fid).map(Target::Ef).ok_or(Sw::FILE_NOT_FOUND),
        }
    }

    /// Selection by path (P1 08 from the MF, 09 from the current DF): a sequence of FIDs, the
    /// last one the target.
    fn by_path(&self, start: Dir, path: &[u8]) -> Result<Target, Sw> {
        if path.is_empty() || !path.len().is_multiple_of(2) {
            return Err(Sw::WRONG_LENGTH);
        }
        let mut here = Target::Dir(start);
        for pair in path.chunks(2) {
            let Target::Dir(dir) = here else { return Err(Sw::FILE_NOT_FOUND) };
            let [hi, lo] = pair else { return Err(Sw::WRONG_LENGTH) };
            let fid = u16::from_be_bytes([*hi, *lo]);
            here = match fid {
                CURRENT_ADF_FID if dir == Dir::Mf && self.session.usim_selected => {
                    Target::Dir(Dir::Usim)
                }
                MF_FID => return Err(Sw::FILE_NOT_FOUND),
                _ => Target::Ef(fs::ef_by_fid(dir, fid).ok_or(Sw::FILE_NOT_FOUND)?),
            };
        }
        Ok(here)
    }

    /// The FCP of the current directory, or the current application's AID (TS 102 221 §11.1.2).
    fn status(&mut self, cmd: &Command) -> Reply {
        if cmd.p1 > 0x02 {
            return Sw::INCORRECT_P1_P2.into();
        }
        match cmd.p2 {
            0x00 => Reply::Data(fs::dir_fcp(self.session.df, self.pin_status())),
            0x01 if self.session.usim_selected => {
                let mut tlv = vec![0x84, 0x10];
                tlv.extend_from_slice(&USIM_AID);
                Reply::Data(tlv)
            }
            0x01 => Sw::REFERENCED_DATA_NOT_FOUND.into(),
            0x0C => Sw::OK.into(),
            _ => Sw::INCORRECT_P1_P2.into(),
        }
    }

    // ---- READ / UPDATE BINARY (TS 102 221 §11.1.3, §11.1.4) ----

    /// The EF and offset that P1 P2 address: an SFI in the current DF (P1 b8 set, offset P2)
    /// or the current EF (15-bit offset).
    fn binary_target(&mut self, cmd: &Command) -> Result<(&'static Ef, usize), Sw> {
        let (ef, offset) = if cmd.p1 & 0x80 != 0 {
            if cmd.p1 & 0x60 != 0 {
                return Err(Sw::INCORRECT_P1_P2);
            }
            let ef = fs::ef_by_sfi(self.session.df, cmd.p1 & 0x1F).ok_or(Sw::FILE_NOT_FOUND)?;
            self.session.ef = Some(ef);
            self.session.record = None;
            (ef, usize::from(cmd.p2))
        } else {
            let ef = self.session.ef.ok_or(Sw::NO_CURRENT_EF)?;
            (ef, usize::from(u16::from_be_bytes([cmd.p1, cmd.p2])))
        };
        if ef.structure != Structure::Transparent {
            return Err(Sw::INCOMPATIBLE_FILE_STRUCTURE);
        }
        Ok((ef, offset))
    }

    fn read_binary(&mut self, cmd: &Command) -> Reply {
        let (ef, offset) = match self.binary_target(cmd) {
            Ok(t) => t,
            Err(sw) => return sw.into(),
        };
        if !self.granted(ef.read) {
            return Sw::SECURITY_NOT_SATISFIED.into();
        }
        let content = self.content(ef);
        let Some(rest) = content.get(offset..).filter(|r| !r.is_empty()) else {
            return Sw::WRONG_P1_P2.into();
        };
        match cmd.le {
            // Le = 00: everything up to the end of the file, at most 256 bytes.
            Some(256) => Reply::Raw(rest.iter().copied().take(256).collect(), Sw::OK),
            Some(ne) if ne <= rest.len() => {
                Reply::Raw(rest.get(..ne).unwrap_or(rest).to_vec(), Sw::OK)
            }
            _ => Sw::wrong_le(rest.len().min(256)).into(),
        }
    }

    fn update_binary(&mut self, cmd: &Command) -> Reply {
        let (ef, offset) = match self.binary_target(cmd) {
            Ok(t) => t,
            Err(sw) => return sw.into(),
        };
        if cmd.data.is_empty() || cmd.le.is_some() {
            return Sw::WRONG_LENGTH.into();
        }
        if !self.granted(ef.update) || ef.source != Source::Stored {
            return Sw::SECURITY_NOT_SATISFIED.into();
        }
        if offset >= ef.size {
            return Sw::WRONG_P1_P2.into();
        }
        if offset + cmd.data.len() > ef.size {
            return Sw::WRONG_LENGTH.into();
        }
        self.write_stored(ef, offset, cmd.data)
    }

    // ---- READ / UPDATE RECORD (TS 102 221 §11.1.5, §11.1.6) ----

    /// The EF and record number that P1 P2 address (modes 02 next, 03 previous, 04 absolute;
    /// P2 b8..b4 an SFI or 0 for the current EF). Moves the record pointer.
    fn record_target(&mut self, cmd: &Command) -> Result<(&'static Ef, usize), Sw> {
        let sfi = cmd.p2 >> 3;
        let ef = if sfi == 0 {
            self.session.ef.ok_or(Sw::NO_CURRENT_EF)?
        } else if sfi == 0x1F {
            return Err(Sw::INCORRECT_P1_P2);
        } else {
            let ef = fs::ef_by_sfi(self.session.df, sfi).ok_or(Sw::FILE_NOT_FOUND)?;
            if self.session.ef != Some(ef) {
                self.session.ef = Some(ef);
                self.session.record = None;
            }
            ef
        };
        if !matches!(ef.structure, Structure::LinearFixed { .. }) {
            return Err(Sw::INCOMPATIBLE_FILE_STRUCTURE);
        }
        let records = ef.records();
        let number = match (cmd.p2 & 0x07, cmd.p1) {
            (0x04, 0) => return Err(Sw::INCORRECT_P1_P2),
            (0x04, n) => usize::from(n),
            (0x02, 0) => self.session.record.map_or(1, |r| r + 1),
            (0x03, 0) => self.session.record.map_or(records, |r| r.saturating_sub(1)),
            _ => return Err(Sw::INCORRECT_P1_P2),
        };
        if number == 0 || number > records {
            return Err(Sw::RECORD_NOT_FOUND);
        }
        if cmd.p2 & 0x07 != 0x04 {
            self.session.record = Some(number);
        }
        Ok((ef, number))
    }

    fn read_record(&mut self, cmd: &Command) -> Reply {
        let (ef, number) = match self.record_target(cmd) {
            Ok(t) => t,
            Err(sw) => return sw.into(),
        };
        if !self.granted(ef.read) {
            return Sw::SECURITY_NOT_SATISFIED.into();
        }
        let Structure::LinearFixed { record_len } = ef.structure else {
            return Sw::INCOMPATIBLE_FILE_STRUCTURE.into();
        };
        let len = usize::from(record_len);
        let content = self.content(ef);
        let record = content.get((number - 1) * len..number * len).unwrap_or_default().to_vec();
        match cmd.le {
            Some(ne) if ne == len || (ne == 256 && len < 256) => Reply::Raw(record, Sw::OK),
            _ => Sw::wrong_le(len).into(),
        }
    }

    fn update_record(&mut self, cmd: &Command) -> Reply {
        let (ef, number) = match self.record_target(cmd) {
            Ok(t) => t,
            Err(sw) => return sw.into(),
        };
        if !self.granted(ef.update) || ef.source != Source::Stored {
            return Sw::SECURITY_NOT_SATISFIED.into();
        }
        let Structure::LinearFixed { record_len } = ef.structure else {
            return Sw::INCOMPATIBLE_FILE_STRUCTURE.into();
        };
        if cmd.data.len() != usize::from(record_len) {
            return Sw::WRONG_LENGTH.into();
        }
        self.write_stored(ef, (number - 1) * usize::from(record_len), cmd.data)
    }

    /// Writes into a stored EF and saves the state; on a save failure memory is left as the
    /// disk has it.
    fn write_stored(&mut self, ef: &Ef, offset: usize, data: &[u8]) -> Reply {
        let Some(file) = self.state.files.get_mut(ef.name) else {
            return Sw::TECHNICAL_PROBLEM.into();
        };
        let old = file.0.clone();
        let Some(dst) = file.0.get_mut(offset..offset + data.len()) else {
            return Sw::WRONG_LENGTH.into();
        };
        dst.copy_from_slice(data);
        match self.persist() {
            Ok(()) => Sw::OK.into(),
            Err(e) => {
                tracing::error!(error = %e, file = ef.name, "UPDATE not saved");
                if let Some(file) = self.state.files.get_mut(ef.name) {
                    file.0 = old;
                }
                Sw::MEMORY_PROBLEM.into()
            }
        }
    }

    // ---- VERIFY PIN (TS 102 221 §11.1.9) ----

    fn verify(&mut self, cmd: &Command) -> Reply {
        if cmd.p1 != 0x00 {
            return Sw::WRONG_P1_P2.into();
        }
        let (pin, verified) = match cmd.p2 {
            KEY_PIN1 => (&mut self.state.pin1, &mut self.session.pin1_verified),
            KEY_ADM1 => (&mut self.state.adm1, &mut self.session.adm1_verified),
            _ => return Sw::REFERENCED_DATA_NOT_FOUND.into(),
        };
        if pin.blocked() {
            return Sw::AUTH_METHOD_BLOCKED.into();
        }
        if cmd.data.is_empty() {
            // No data: a query of the verification status.
            return if *verified { Sw::OK } else { Sw::verify_failed(pin.retries_left) }.into();
        }
        if cmd.data.len() != 8 {
            return Sw::WRONG_LENGTH.into();
        }
        let (sw, changed) = if pin.value.matches(cmd.data) {
            *verified = true;
            let changed = pin.retries_left != pin.max_retries;
            pin.retries_left = pin.max_retries;
            (Sw::OK, changed)
        } else {
            *verified = false;
            pin.retries_left = pin.retries_left.saturating_sub(1);
            (Sw::verify_failed(pin.retries_left), true)
        };
        // The counter must reach the disk before the answer, or a power cut would give the
        // attacker the try back. If it cannot be saved, the try is still spent in memory.
        if changed && let Err(e) = self.persist() {
            tracing::error!(error = %e, "PIN retry counter not saved");
            return Sw::MEMORY_PROBLEM.into();
        }
        sw.into()
    }

    // ---- GET RESPONSE (TS 102 221 §11.1.13) ----

    fn get_response(&mut self, cmd: &Command) -> Reply {
        if cmd.p1 != 0 || cmd.p2 != 0 {
            self.session.pending.clear();
            return Sw::WRONG_P1_P2.into();
        }
        if self.session.pending.is_empty() {
            return Sw::CONDITIONS_NOT_SATISFIED.into();
        }
        let available = self.session.pending.len();
        let ne = cmd.le.unwrap_or(0);
        if ne > available && ne != 256 {
            return Sw::wrong_le(available).into();
        }
        let take = ne.min(available);
        if take == 0 {
            return Sw::wrong_le(available).into();
        }
        let rest = self.session.pending.split_off(take);
        let data = std::mem::replace(&mut self.session.pending, rest);
        let sw = if self.session.pending.is_empty() {
            Sw::OK
        } else {
            Sw::bytes_available(self.session.pending.len())
        };
        Reply::Raw(data, sw)
    }

    // ---- OTA (protocol::ota) ----

    fn ota_apdu(&mut self, cmd: &Command) -> Reply {
        // Re-encode the parsed command so the MAC is checked over exactly what was parsed.
        let Ok(lc) = u8::try_from(cmd.data.len()) else { return Sw::WRONG_LENGTH.into() };
        let mut apdu = vec![cmd.cla, cmd.ins, cmd.p1, cmd.p2, lc];
        apdu.extend_from_slice(cmd.data);
        match self.ota(&apdu) {
            // The response packet: directly with a case 4 command, else through 61xx.
            Ok(response) => Reply::Data(response),
            Err(crate::UiccError::Ota(e)) => {
                tracing::warn!(error = %e, "OTA command rejected");
                ota_status(&e).into()
            }
            Err(e @ crate::UiccError::ChangeOnTrial { .. }) => {
                tracing::warn!(error = %e, "OTA command refused");
                Sw::CONDITIONS_NOT_SATISFIED.into()
            }
            Err(e) => {
                tracing::error!(error = %e, "OTA command not saved");
                Sw::MEMORY_PROBLEM.into()
            }
        }
    }

    // ---- helpers ----

    /// Whether the session satisfies an access condition.
    pub(crate) fn granted(&self, access: Access) -> bool {
        match access {
            Access::Always => true,
            Access::Pin1 => !self.state.pin1.enabled || self.session.pin1_verified,
            Access::Adm1 => self.session.adm1_verified,
            Access::Never => false,
        }
    }

    fn content(&self, ef: &Ef) -> Vec<u8> {
        let profile = &self.state.profile;
        match ef.source {
            Source::Iccid => fs::encode_iccid(&profile.iccid).to_vec(),
            Source::Imsi => fs::encode_imsi(&profile.imsi).to_vec(),
            Source::Dir => fs::dir_content(),
            Source::Arr => fs::arr_content(),
            Source::Stored => self.state.file(ef.name).map(<[u8]>::to_vec).unwrap_or_default(),
        }
    }
}

/// What SELECT found.
#[derive(Clone, Copy, Debug)]
enum Target {
    Dir(Dir),
    Ef(&'static Ef),
}

/// Selection by DF name (P1 04): the full USIM AID or a prefix of at least the RID.
fn select_aid(aid: &[u8]) -> Result<Target, Sw> {
    if aid.len() < 5 || aid.len() > 16 {
        return Err(Sw::FILE_NOT_FOUND);
    }
    if USIM_AID.starts_with(aid) { Ok(Target::Dir(Dir::Usim)) } else { Err(Sw::FILE_NOT_FOUND) }
}

/// Class byte rules (TS 102 221 §10.1.1): 0X for ISO commands and 8X for the UICC's own, on
/// the basic logical channel without secure messaging. Returns whether the class is 8X.
fn check_class(cmd: &Command) -> Result<bool, Sw> {
    match cmd.cla & 0xF0 {
        0x00 | 0x80 => {}
        0x40 | 0x60 | 0xC0 | 0xE0 => return Err(Sw::LOGICAL_CHANNEL_NOT_SUPPORTED),
        0x10 | 0x90 => return Err(Sw::CHAINING_NOT_SUPPORTED),
        _ => return Err(Sw::CLA_NOT_SUPPORTED),
    }
    if cmd.cla & 0x0C != 0 {
        return Err(Sw::SECURE_MESSAGING_NOT_SUPPORTED);
    }
    if cmd.cla & 0x03 != 0 {
        return Err(Sw::LOGICAL_CHANNEL_NOT_SUPPORTED);
    }
    Ok(cmd.cla & 0x80 != 0)
}

/// Status words for rejected OTA commands: one per check.
fn ota_status(e: &ota::OtaError) -> Sw {
    use ota::OtaError as E;
    match e {
        E::Malformed(_) | E::UnknownVersion(_) | E::UnknownCommand(_) | E::NotOta => Sw::WRONG_DATA,
        E::CounterRange | E::BadParameter(_) => Sw::WRONG_DATA,
        // Checks of a response, which a card makes but never reads.
        E::ResponseMalformed(_) | E::ResponseBadMac | E::ResponseStatus(_) => Sw::WRONG_DATA,
        E::ResponseMismatch(_) => Sw::WRONG_DATA,
        E::WrongIccid => Sw::REFERENCED_DATA_NOT_FOUND,
        E::BadMac => Sw::SECURITY_NOT_SATISFIED,
        E::Replay { .. } => Sw::CONDITIONS_NOT_SATISFIED,
    }
}
