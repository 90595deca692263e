//! Replaying an event log to PCR values, one bank per computable algorithm (PFP 1.05
//! §10.2: `PCR[n] = H(PCR[n] ‖ digest)` for every record, in log order).
//!
//! - Every PCR starts at zero, as after TPM2_Startup(CLEAR) at locality 0, except that a
//!   StartupLocality event (§10.4.5.3: EV_NO_ACTION in PCR 0 whose data is
//!   "StartupLocality\0" and one byte) sets the last byte of PCR 0 to the locality (3, or 4
//!   for an H-CRTM). It must come before any record extends PCR 0, and only once.
//! - H-CRTM (an EV_EFI_HCRTM_EVENT, §10.4.1, as the log's first measurement): the H-CRTM
//!   hashed the platform with _TPM_Hash_Start/Data/End before TPM2_Startup, and the TPM
//!   then set PCR 0 of each bank to 0…04 and extended it with the sequence's digest
//!   (TPM 2.0 Part 1 §34.3; reference code `PcrDrtm`); TPM2_Startup leaves that PCR 0
//!   alone (`PCRStartup` skips the H-CRTM PCR). So the event's digest is extended into
//!   0…04 whether or not a StartupLocality event says 4 (tpm2-tss's H-CRTM log has none),
//!   and a StartupLocality event after it does not touch PCR 0. Because nothing can be
//!   extended before TPM2_Startup, an EV_EFI_HCRTM_EVENT anywhere else (after another
//!   measurement, a second one, or outside PCR 0) is refused.
//! - EV_NO_ACTION records are never extended (§10.4.1: "not extended into any PCR"); that
//!   includes those naming PCR 0xFFFFFFFF ([`super::NO_ACTION_PCR`]).
//! - A record extends bank B only if it carries a digest for B: a TPM only extends the
//!   banks it is given. Algorithms we cannot compute are not replayed; their digests are
//!   still parsed (with the size the Spec ID event declares) and kept in the events.

use super::types::{Event, EventLog, EventType};
use super::{EventLogError, PCR_COUNT};
use crate::tpm::HashAlg;

/// Signature that starts a StartupLocality event's data (TCG_EfiStartupLocalityEvent).
pub const STARTUP_LOCALITY_SIGNATURE: &[u8; 16] = b"StartupLocality\0";

/// The replayed values of one bank.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct PcrBank {
    alg: HashAlg,
    values: Vec<Vec<u8>>,
    measured: u32,
}

impl PcrBank {
    fn new(alg: HashAlg) -> Self {
        let values = (0..PCR_COUNT).map(|_| vec![0u8; alg.size()]).collect();
        Self { alg, values, measured: 0 }
    }

    pub fn alg(&self) -> HashAlg {
        self.alg
    }

    /// The value of PCR `pcr` (zero if nothing touched it), or `None` past PCR 23.
    pub fn value(&self, pcr: u32) -> Option<&[u8]> {
        self.values.get(usize::try_from(pcr).ok()?).map(Vec::as_slice)
    }

    /// Whether a record extended this PCR, or a StartupLocality event set it.
    pub fn is_measured(&self, pcr: u32) -> bool {
        pcr < PCR_COUNT && self.measured & (1 << pcr) != 0
    }

    /// The measured PCRs and their values, by ascending index: what `tpm2_eventlog`
    /// prints under `pcrs:`.
    pub fn measured(&self) -> impl Iterator<Item = (u32, &[u8])> + '_ {
        (0..PCR_COUNT)
            .zip(&self.values)
            .filter(|(pcr, _)| self.is_measured(*pcr))
            .map(|(pcr, v)| (pcr, v.as_slice()))
    }

    fn mark(&mut self, pcr: u32) {
        if pcr < PCR_COUNT {
            self.measured |= 1 << pcr;
        }
    }

    /// PCR 0 as TPM2_Startup at `locality` (or an H-CRTM, 4) leaves it: zero but for its
    /// last byte.
    fn reset_pcr0(&mut self, locality: u8) {
        if let Some(pcr0) = self.values.first_mut() {
            pcr0.fill(0);
            if let Some(last) = pcr0.last_mut() {
                *last = locality;
            }
        }
        self.mark(0);
    }
}

/// The replayed values of every bank of a log, in Spec ID order.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct PcrBanks {
    banks: Vec<PcrBank>,
}

impl PcrBanks {
    pub fn bank(&self, alg: HashAlg) -> Option<&PcrBank> {
        self.banks.iter().find(|b| b.alg == alg)
    }

    /// PCR `pcr` of bank `alg`.
    pub fn value(&self, alg: HashAlg, pcr: u32) -> Option<&[u8]> {
        self.bank(alg)?.value(pcr)
    }

    pub fn iter(&self) -> impl Iterator<Item = &PcrBank> {
        self.banks.iter()
    }

    /// Every (bank, PCR, value), PCRs 0–23 of each bank, measured or not: what a quote
    /// over any selection of these banks is compared against.
    pub fn values(&self) -> impl Iterator<Item = (HashAlg, u32, &[u8])> {
        self.banks.iter().flat_map(|b| {
            (0..PCR_COUNT).zip(&b.values).map(move |(pcr, v)| (b.alg, pcr, v.as_slice()))
        })
    }
}

impl EventLog {
    /// The PCR values a TPM would hold after the events of this log, per bank.
    pub fn replay(&self) -> Result<PcrBanks, EventLogError> {
        let mut banks: Vec<PcrBank> = self.banks().into_iter().map(PcrBank::new).collect();
        let mut locality_seen = false;
        // PCR 0 extended after TPM2_Startup; the H-CRTM's extension came before it.
        let mut pcr0_extended = false;
        let mut hcrtm = false;
        let mut measured_any = false;
        for event in &self.events {
            if event.event_type == EventType::EV_NO_ACTION {
                if let Some(locality) = startup_locality(event)? {
                    if locality_seen {
                        return Err(EventLogError::DuplicateStartupLocality {
                            offset: event.offset,
                        });
                    }
                    if pcr0_extended {
                        return Err(EventLogError::StartupLocalityAfterMeasurement {
                            offset: event.offset,
                        });
                    }
                    locality_seen = true;
                    if !hcrtm {
                        for bank in &mut banks {
                            bank.reset_pcr0(locality);
                        }
                    }
                }
                continue;
            }
            if event.event_type == EventType::EV_EFI_HCRTM_EVENT {
                let problem = if event.pcr != 0 {
                    Some("not logged to PCR 0")
                } else if measured_any {
                    Some(
                        "not the first measurement of the log (an H-CRTM runs before TPM2_Startup)",
                    )
                } else {
                    None
                };
                if let Some(problem) = problem {
                    return Err(EventLogError::HcrtmEventMisplaced {
                        offset: event.offset,
                        problem,
                    });
                }
                hcrtm = true;
                for bank in &mut banks {
                    if event.digest(bank.alg).is_some() {
                        bank.reset_pcr0(4);
                    }
                }
            } else {
                pcr0_extended |= event.pcr == 0;
            }
            measured_any = true;
            let Ok(index) = usize::try_from(event.pcr) else { continue };
            for bank in &mut banks {
                let Some(digest) = event.digest(bank.alg) else { continue };
                let alg = bank.alg;
                if let Some(value) = bank.values.get_mut(index) {
                    alg.extend(value, digest);
                    bank.mark(event.pcr);
                }
            }
        }
        Ok(PcrBanks { banks })
    }
}

impl EventLog {
    /// The locality the log's StartupLocality event gives, if it has one (checked as
    /// [`EventLog::replay`] checks it).
    pub fn startup_locality(&self) -> Result<Option<u8>, EventLogError> {
        let mut found = None;
        for event in self.events.iter().filter(|e| e.event_type == EventType::EV_NO_ACTION) {
            if let Some(locality) = startup_locality(event)? {
                if found.is_some() {
                    return Err(EventLogError::DuplicateStartupLocality { offset: event.offset });
                }
                found = Some(locality);
            }
        }
        Ok(found)
    }
}

/// The locality of a StartupLocality event, `None` for any other EV_NO_ACTION event.
fn startup_locality(event: &Event) -> Result<Option<u8>, EventLogError> {
    let Some(rest) = event.data.strip_prefix(STARTUP_LOCALITY_SIGNATURE.as_slice()) else {
        return Ok(None);
    };
    let offset = event.offset;
    if event.pcr != 0 {
        return Err(EventLogError::StartupLocalityMalformed {
            offset,
            problem: "not logged to PCR 0",
        });
    }
    let [locality] = rest else {
        return Err(EventLogError::StartupLocalityMalformed {
            offset,
            problem: "data is not 17 bytes",
        });
    };
    match *locality {
        0 | 3 | 4 => Ok(Some(*locality)),
        locality => Err(EventLogError::InvalidStartupLocality { offset, locality }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eventlog::Measurement;

    #[test]
    fn a_built_startup_locality_event_sets_pcr0() {
        let banks = [HashAlg::Sha256, HashAlg::Sm3_256];
        let mut log = EventLog::new(&banks).unwrap();
        assert_eq!(log.startup_locality(), Ok(None));
        log.push_measurement(&Measurement::startup_locality(3, &banks)).unwrap();
        assert_eq!(log.startup_locality(), Ok(Some(3)));
        let parsed = EventLog::parse(&log.to_bytes()).unwrap();
        assert_eq!(parsed.startup_locality(), Ok(Some(3)));
        let replayed = parsed.replay().unwrap();
        for alg in banks {
            let mut expected = vec![0u8; 32];
            expected[31] = 3;
            assert_eq!(replayed.value(alg, 0).unwrap(), expected);
        }
        log.push_measurement(&Measurement::startup_locality(2, &banks)).unwrap();
        assert!(matches!(
            log.startup_locality(),
            Err(EventLogError::InvalidStartupLocality { locality: 2, .. })
        ));
    }
}
