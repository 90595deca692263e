//! The event-log data model: event types (PFP 1.05 §10.4.1), digests, events, the Spec ID
//! event (§10.4.5.1) and the log. A verifier walks [`EventLog::events`]; each [`Event`]
//! keeps its PCR, its event type, every digest and its raw event data.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::{EventLogError, MAX_EVENTS, MAX_LOG_SIZE, PCR_COUNT};
use crate::tpm::HashAlg;

/// TCG_EVENTTYPE (PFP 1.05 §10.4.1, Table 9).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct EventType(pub u32);

impl EventType {
    pub const EV_PREBOOT_CERT: Self = Self(0x0000_0000);
    pub const EV_POST_CODE: Self = Self(0x0000_0001);
    pub const EV_UNUSED: Self = Self(0x0000_0002);
    pub const EV_NO_ACTION: Self = Self(0x0000_0003);
    pub const EV_SEPARATOR: Self = Self(0x0000_0004);
    pub const EV_ACTION: Self = Self(0x0000_0005);
    pub const EV_EVENT_TAG: Self = Self(0x0000_0006);
    pub const EV_S_CRTM_CONTENTS: Self = Self(0x0000_0007);
    pub const EV_S_CRTM_VERSION: Self = Self(0x0000_0008);
    pub const EV_CPU_MICROCODE: Self = Self(0x0000_0009);
    pub const EV_PLATFORM_CONFIG_FLAGS: Self = Self(0x0000_000A);
    pub const EV_TABLE_OF_DEVICES: Self = Self(0x0000_000B);
    pub const EV_COMPACT_HASH: Self = Self(0x0000_000C);
    pub const EV_IPL: Self = Self(0x0000_000D);
    pub const EV_IPL_PARTITION_DATA: Self = Self(0x0000_000E);
    pub const EV_NONHOST_CODE: Self = Self(0x0000_000F);
    pub const EV_NONHOST_CONFIG: Self = Self(0x0000_0010);
    pub const EV_NONHOST_INFO: Self = Self(0x0000_0011);
    pub const EV_OMIT_BOOT_DEVICE_EVENTS: Self = Self(0x0000_0012);
    pub const EV_EFI_VARIABLE_DRIVER_CONFIG: Self = Self(0x8000_0001);
    pub const EV_EFI_VARIABLE_BOOT: Self = Self(0x8000_0002);
    pub const EV_EFI_BOOT_SERVICES_APPLICATION: Self = Self(0x8000_0003);
    pub const EV_EFI_BOOT_SERVICES_DRIVER: Self = Self(0x8000_0004);
    pub const EV_EFI_RUNTIME_SERVICES_DRIVER: Self = Self(0x8000_0005);
    pub const EV_EFI_GPT_EVENT: Self = Self(0x8000_0006);
    pub const EV_EFI_ACTION: Self = Self(0x8000_0007);
    pub const EV_EFI_PLATFORM_FIRMWARE_BLOB: Self = Self(0x8000_0008);
    pub const EV_EFI_HANDOFF_TABLES: Self = Self(0x8000_0009);
    pub const EV_EFI_PLATFORM_FIRMWARE_BLOB2: Self = Self(0x8000_000A);
    pub const EV_EFI_HANDOFF_TABLES2: Self = Self(0x8000_000B);
    pub const EV_EFI_VARIABLE_BOOT2: Self = Self(0x8000_000C);
    pub const EV_EFI_HCRTM_EVENT: Self = Self(0x8000_0010);
    pub const EV_EFI_VARIABLE_AUTHORITY: Self = Self(0x8000_00E0);
    pub const EV_EFI_SPDM_FIRMWARE_BLOB: Self = Self(0x8000_00E1);
    pub const EV_EFI_SPDM_FIRMWARE_CONFIG: Self = Self(0x8000_00E2);

    const NAMES: [(Self, &'static str); 35] = [
        (Self::EV_PREBOOT_CERT, "EV_PREBOOT_CERT"),
        (Self::EV_POST_CODE, "EV_POST_CODE"),
        (Self::EV_UNUSED, "EV_UNUSED"),
        (Self::EV_NO_ACTION, "EV_NO_ACTION"),
        (Self::EV_SEPARATOR, "EV_SEPARATOR"),
        (Self::EV_ACTION, "EV_ACTION"),
        (Self::EV_EVENT_TAG, "EV_EVENT_TAG"),
        (Self::EV_S_CRTM_CONTENTS, "EV_S_CRTM_CONTENTS"),
        (Self::EV_S_CRTM_VERSION, "EV_S_CRTM_VERSION"),
        (Self::EV_CPU_MICROCODE, "EV_CPU_MICROCODE"),
        (Self::EV_PLATFORM_CONFIG_FLAGS, "EV_PLATFORM_CONFIG_FLAGS"),
        (Self::EV_TABLE_OF_DEVICES, "EV_TABLE_OF_DEVICES"),
        (Self::EV_COMPACT_HASH, "EV_COMPACT_HASH"),
        (Self::EV_IPL, "EV_IPL"),
        (Self::EV_IPL_PARTITION_DATA, "EV_IPL_PARTITION_DATA"),
        (Self::EV_NONHOST_CODE, "EV_NONHOST_CODE"),
        (Self::EV_NONHOST_CONFIG, "EV_NONHOST_CONFIG"),
        (Self::EV_NONHOST_INFO, "EV_NONHOST_INFO"),
        (Self::EV_OMIT_BOOT_DEVICE_EVENTS, "EV_OMIT_BOOT_DEVICE_EVENTS"),
        (Self::EV_EFI_VARIABLE_DRIVER_CONFIG, "EV_EFI_VARIABLE_DRIVER_CONFIG"),
        (Self::EV_EFI_VARIABLE_BOOT, "EV_EFI_VARIABLE_BOOT"),
        (Self::EV_EFI_BOOT_SERVICES_APPLICATION, "EV_EFI_BOOT_SERVICES_APPLICATION"),
        (Self::EV_EFI_BOOT_SERVICES_DRIVER, "EV_EFI_BOOT_SERVICES_DRIVER"),
        (Self::EV_EFI_RUNTIME_SERVICES_DRIVER, "EV_EFI_RUNTIME_SERVICES_DRIVER"),
        (Self::EV_EFI_GPT_EVENT, "EV_EFI_GPT_EVENT"),
        (Self::EV_EFI_ACTION, "EV_EFI_ACTION"),
        (Self::EV_EFI_PLATFORM_FIRMWARE_BLOB, "EV_EFI_PLATFORM_FIRMWARE_BLOB"),
        (Self::EV_EFI_HANDOFF_TABLES, "EV_EFI_HANDOFF_TABLES"),
        (Self::EV_EFI_PLATFORM_FIRMWARE_BLOB2, "EV_EFI_PLATFORM_FIRMWARE_BLOB2"),
        (Self::EV_EFI_HANDOFF_TABLES2, "EV_EFI_HANDOFF_TABLES2"),
        (Self::EV_EFI_VARIABLE_BOOT2, "EV_EFI_VARIABLE_BOOT2"),
        (Self::EV_EFI_HCRTM_EVENT, "EV_EFI_HCRTM_EVENT"),
        (Self::EV_EFI_VARIABLE_AUTHORITY, "EV_EFI_VARIABLE_AUTHORITY"),
        (Self::EV_EFI_SPDM_FIRMWARE_BLOB, "EV_EFI_SPDM_FIRMWARE_BLOB"),
        (Self::EV_EFI_SPDM_FIRMWARE_CONFIG, "EV_EFI_SPDM_FIRMWARE_CONFIG"),
    ];

    /// The PFP name (`EV_SEPARATOR`, …), if this is a type the PFP defines.
    pub fn name(self) -> Option<&'static str> {
        Self::NAMES.iter().find(|(t, _)| *t == self).map(|(_, n)| *n)
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => f.write_str(name),
            None => write!(f, "0x{:08x}", self.0),
        }
    }
}

impl fmt::Debug for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EventType({self})")
    }
}

/// One (algorithm, digest) pair of a record, as logged (TPMT_HA). The algorithm may be one
/// we cannot compute (its size then came from the Spec ID event), so it is kept as the raw
/// TPM_ALG_ID.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct EventDigest {
    pub alg_id: u16,
    pub digest: Vec<u8>,
}

impl EventDigest {
    /// The algorithm, if it is one of ours.
    pub fn alg(&self) -> Option<HashAlg> {
        HashAlg::from_id(self.alg_id)
    }
}

/// One record of the log (TCG_PCR_EVENT2, or TCG_PCR_EVENT in a SHA-1 log).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Event {
    /// Byte offset of the record from the start of the log.
    pub offset: usize,
    /// PCR index, 0–23; [`super::NO_ACTION_PCR`] on an EV_NO_ACTION record Windows wrote.
    pub pcr: u32,
    pub event_type: EventType,
    /// Digests in log order; at most one per algorithm.
    pub digests: Vec<EventDigest>,
    /// The event data, uninterpreted.
    pub data: Vec<u8>,
}

impl Event {
    /// This record's digest in bank `alg`, if it carries one.
    pub fn digest(&self, alg: HashAlg) -> Option<&[u8]> {
        self.digests.iter().find(|d| d.alg_id == alg.id()).map(|d| d.digest.as_slice())
    }
}

/// One entry of the Spec ID event's digestSizes list (TCG_EfiSpecIdEventAlgorithmSize).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct AlgorithmSize {
    pub alg_id: u16,
    pub digest_size: u16,
}

/// The Spec ID Event03 (TCG_EfiSpecIDEventStruct, PFP 1.05 §10.4.5.1): the header of a
/// crypto-agile log. Fields are private because the parser and [`EventLog::new`] guarantee
/// that the algorithm list is non-empty, has no duplicates and gives known algorithms
/// their true digest size.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct SpecIdEvent {
    pub(crate) platform_class: u32,
    pub(crate) spec_version_minor: u8,
    pub(crate) spec_version_major: u8,
    pub(crate) spec_errata: u8,
    pub(crate) uintn_size: u8,
    pub(crate) algorithms: Vec<AlgorithmSize>,
    pub(crate) vendor_info: Vec<u8>,
}

impl SpecIdEvent {
    /// The signature of a crypto-agile header, NUL included.
    pub const SIGNATURE: &'static [u8; 16] = b"Spec ID Event03\0";

    /// Platform class (TCG ACPI specification: 0 client, 1 server).
    pub fn platform_class(&self) -> u32 {
        self.platform_class
    }

    /// (major, minor, errata) of the PFP the firmware follows.
    pub fn spec_version(&self) -> (u8, u8, u8) {
        (self.spec_version_major, self.spec_version_minor, self.spec_errata)
    }

    /// Size of UINTN in UINT32 units: 1 for 32-bit, 2 for 64-bit firmware.
    pub fn uintn_size(&self) -> u8 {
        self.uintn_size
    }

    /// Every algorithm declared, in header order, including ones we cannot compute.
    pub fn algorithms(&self) -> &[AlgorithmSize] {
        &self.algorithms
    }

    pub fn vendor_info(&self) -> &[u8] {
        &self.vendor_info
    }

    pub(crate) fn digest_size(&self, alg_id: u16) -> Option<usize> {
        self.algorithms.iter().find(|a| a.alg_id == alg_id).map(|a| usize::from(a.digest_size))
    }
}

/// Which of the two binary formats a log uses.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum LogFormat {
    /// Spec ID Event03 header, then TCG_PCR_EVENT2 records.
    CryptoAgile(SpecIdEvent),
    /// TCG_PCR_EVENT records with one SHA-1 digest each, no header.
    Sha1,
}

/// One digest of a [`Measurement`], in a bank we compute.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct BankDigest {
    pub alg: HashAlg,
    pub value: Vec<u8>,
}

/// An event to extend into a PCR and record in the log: what the TRE extends into its TPM
/// and what the PVA derives reference values from ([`crate::image::measure`]).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Measurement {
    pub pcr: u32,
    pub event_type: EventType,
    /// The event data as logged.
    pub data: Vec<u8>,
    /// One digest per bank, in bank order.
    pub digests: Vec<BankDigest>,
}

impl Measurement {
    /// The StartupLocality event (PFP 1.05 §10.4.5.3) as firmware logs it: EV_NO_ACTION in
    /// PCR 0, data "StartupLocality\0" and the locality, a zero digest in every bank. A log
    /// that starts with it replays PCR 0 from that locality ([`EventLog::replay`]).
    pub fn startup_locality(locality: u8, banks: &[HashAlg]) -> Self {
        let mut data = super::replay::STARTUP_LOCALITY_SIGNATURE.to_vec();
        data.push(locality);
        Self {
            pcr: 0,
            event_type: EventType::EV_NO_ACTION,
            data,
            digests: banks
                .iter()
                .map(|&alg| BankDigest { alg, value: vec![0; alg.size()] })
                .collect(),
        }
    }

    /// This measurement's digest in bank `alg`.
    pub fn digest(&self, alg: HashAlg) -> Option<&[u8]> {
        self.digests.iter().find(|d| d.alg == alg).map(|d| d.value.as_slice())
    }
}

/// A parsed (or built) event log. Its records can be walked ([`EventLog::events`]),
/// replayed ([`EventLog::replay`]) and written back ([`EventLog::to_bytes`]).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct EventLog {
    pub(crate) format: LogFormat,
    pub(crate) events: Vec<Event>,
    /// Encoded size so far, kept so that a built log never exceeds [`MAX_LOG_SIZE`].
    pub(crate) encoded_len: usize,
}

impl EventLog {
    /// An empty crypto-agile log whose Spec ID event declares `banks`, in that order
    /// (platform class client, PFP 2.0 errata 0, 64-bit UINTN, no vendor info, as EDK II
    /// writes it).
    pub fn new(banks: &[HashAlg]) -> Result<Self, EventLogError> {
        if banks.is_empty() {
            return Err(EventLogError::NoBanks);
        }
        let mut algorithms: Vec<AlgorithmSize> = Vec::with_capacity(banks.len());
        for &alg in banks {
            if algorithms.iter().any(|a| a.alg_id == alg.id()) {
                return Err(EventLogError::DuplicateBank { alg });
            }
            // HashAlg sizes are at most 64, so the conversion cannot fail.
            let digest_size = u16::try_from(alg.size()).unwrap_or(u16::MAX);
            algorithms.push(AlgorithmSize { alg_id: alg.id(), digest_size });
        }
        let spec_id = SpecIdEvent {
            platform_class: 0,
            spec_version_minor: 0,
            spec_version_major: 2,
            spec_errata: 0,
            uintn_size: 2,
            algorithms,
            vendor_info: Vec::new(),
        };
        let encoded_len = super::write::header_len(&spec_id);
        Ok(Self { format: LogFormat::CryptoAgile(spec_id), events: Vec::new(), encoded_len })
    }

    /// A crypto-agile log declaring `banks` with one record per measurement, in order.
    pub fn from_measurements(
        banks: &[HashAlg],
        measurements: &[Measurement],
    ) -> Result<Self, EventLogError> {
        let mut log = Self::new(banks)?;
        for m in measurements {
            log.push_measurement(m)?;
        }
        Ok(log)
    }

    /// Appends a record for `m`. It must carry exactly one digest, of the right size, for
    /// every bank the log declares, so that the log says what the TPM was told to extend.
    pub fn push_measurement(&mut self, m: &Measurement) -> Result<(), EventLogError> {
        let offset = self.encoded_len;
        if m.pcr >= PCR_COUNT {
            return Err(EventLogError::PcrOutOfRange { offset, pcr: m.pcr });
        }
        if self.events.len() >= MAX_EVENTS {
            return Err(EventLogError::TooManyEvents { max: MAX_EVENTS });
        }
        let banks = self.banks();
        for d in &m.digests {
            if !banks.contains(&d.alg) {
                return Err(EventLogError::UnexpectedDigest { pcr: m.pcr, alg: d.alg });
            }
            if d.value.len() != d.alg.size() {
                return Err(EventLogError::DigestLength {
                    pcr: m.pcr,
                    alg: d.alg,
                    len: d.value.len(),
                });
            }
        }
        let mut digests = Vec::with_capacity(banks.len());
        for alg in banks {
            let mut matching = m.digests.iter().filter(|d| d.alg == alg);
            let Some(d) = matching.next() else {
                return Err(EventLogError::MissingDigest { pcr: m.pcr, alg });
            };
            if matching.next().is_some() {
                return Err(EventLogError::DuplicateBank { alg });
            }
            digests.push(EventDigest { alg_id: alg.id(), digest: d.value.clone() });
        }
        let event =
            Event { offset, pcr: m.pcr, event_type: m.event_type, digests, data: m.data.clone() };
        let len = super::write::event_len(&self.format, &event);
        let total = offset.saturating_add(len);
        if total > MAX_LOG_SIZE {
            return Err(EventLogError::TooLarge { size: total, max: MAX_LOG_SIZE });
        }
        self.events.push(event);
        self.encoded_len = total;
        Ok(())
    }

    /// The measurements of this log, the inverse of [`EventLog::from_measurements`]: one per
    /// record except EV_NO_ACTION, with the digests of the algorithms we know. Tools that
    /// rebuild a log changed (reordered, retyped, truncated) start here.
    pub fn measurements(&self) -> Vec<Measurement> {
        self.events
            .iter()
            .filter(|e| e.event_type != EventType::EV_NO_ACTION)
            .map(|e| Measurement {
                pcr: e.pcr,
                event_type: e.event_type,
                data: e.data.clone(),
                digests: e
                    .digests
                    .iter()
                    .filter_map(|d| d.alg().map(|alg| BankDigest { alg, value: d.digest.clone() }))
                    .collect(),
            })
            .collect()
    }

    pub fn format(&self) -> &LogFormat {
        &self.format
    }

    /// The Spec ID event of a crypto-agile log.
    pub fn spec_id(&self) -> Option<&SpecIdEvent> {
        match &self.format {
            LogFormat::CryptoAgile(spec_id) => Some(spec_id),
            LogFormat::Sha1 => None,
        }
    }

    /// The records after the header, in log order (every record of a SHA-1 log).
    pub fn events(&self) -> &[Event] {
        &self.events
    }

    /// The banks this log can be replayed in: the declared algorithms we can compute, in
    /// header order (SHA-1 alone for a SHA-1 log). Declared algorithms we cannot compute
    /// are parsed and kept in the events but not replayed.
    pub fn banks(&self) -> Vec<HashAlg> {
        match &self.format {
            LogFormat::CryptoAgile(spec_id) => {
                spec_id.algorithms.iter().filter_map(|a| HashAlg::from_id(a.alg_id)).collect()
            }
            LogFormat::Sha1 => vec![HashAlg::Sha1],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(pcr: u32, digests: Vec<BankDigest>) -> Measurement {
        Measurement { pcr, event_type: EventType::EV_IPL, data: b"os 1".to_vec(), digests }
    }

    fn d(alg: HashAlg) -> BankDigest {
        BankDigest { alg, value: alg.digest(b"x") }
    }

    #[test]
    fn event_types_print_their_pfp_names() {
        assert_eq!(EventType::EV_SEPARATOR.to_string(), "EV_SEPARATOR");
        assert_eq!(EventType(0x8000_00E0).to_string(), "EV_EFI_VARIABLE_AUTHORITY");
        assert_eq!(EventType(0x1234).to_string(), "0x00001234");
        assert_eq!(format!("{:?}", EventType::EV_IPL), "EventType(EV_IPL)");
        assert_eq!(EventType::EV_NO_ACTION.name(), Some("EV_NO_ACTION"));
    }

    #[test]
    fn new_log_needs_distinct_banks() {
        assert_eq!(EventLog::new(&[]), Err(EventLogError::NoBanks));
        assert_eq!(
            EventLog::new(&[HashAlg::Sha1, HashAlg::Sha1]),
            Err(EventLogError::DuplicateBank { alg: HashAlg::Sha1 })
        );
        let log = EventLog::new(&[HashAlg::Sha384, HashAlg::Sha1]).unwrap();
        assert_eq!(log.banks(), [HashAlg::Sha384, HashAlg::Sha1]);
        assert_eq!(log.to_bytes().len(), log.encoded_len);
    }

    #[test]
    fn measurements_must_match_the_banks() {
        let mut log = EventLog::new(&[HashAlg::Sha256, HashAlg::Sha1]).unwrap();
        assert_eq!(
            log.push_measurement(&m(0, vec![d(HashAlg::Sha256)])),
            Err(EventLogError::MissingDigest { pcr: 0, alg: HashAlg::Sha1 })
        );
        assert_eq!(
            log.push_measurement(&m(
                0,
                vec![d(HashAlg::Sha256), d(HashAlg::Sha1), d(HashAlg::Sha512)]
            )),
            Err(EventLogError::UnexpectedDigest { pcr: 0, alg: HashAlg::Sha512 })
        );
        let short = BankDigest { alg: HashAlg::Sha1, value: vec![0; 19] };
        assert_eq!(
            log.push_measurement(&m(0, vec![d(HashAlg::Sha256), short])),
            Err(EventLogError::DigestLength { pcr: 0, alg: HashAlg::Sha1, len: 19 })
        );
        assert_eq!(
            log.push_measurement(&m(
                0,
                vec![d(HashAlg::Sha256), d(HashAlg::Sha256), d(HashAlg::Sha1)]
            )),
            Err(EventLogError::DuplicateBank { alg: HashAlg::Sha256 })
        );
        assert!(matches!(
            log.push_measurement(&m(24, vec![d(HashAlg::Sha256), d(HashAlg::Sha1)])),
            Err(EventLogError::PcrOutOfRange { pcr: 24, .. })
        ));
        assert!(log.events().is_empty());

        // Digests are logged in bank order whatever order the measurement gives them in.
        log.push_measurement(&m(4, vec![d(HashAlg::Sha1), d(HashAlg::Sha256)])).unwrap();
        let event = &log.events()[0];
        assert_eq!(event.digests[0].alg(), Some(HashAlg::Sha256));
        assert_eq!(event.digest(HashAlg::Sha1), Some(HashAlg::Sha1.digest(b"x").as_slice()));
        assert_eq!(event.offset, super::super::write::header_len(log.spec_id().unwrap()));
        assert_eq!(log.to_bytes().len(), log.encoded_len);
    }

    #[test]
    fn measurements_rebuild_the_log_they_came_from() {
        let banks = [HashAlg::Sha256, HashAlg::Sha1];
        let measurements = vec![
            m(4, vec![d(HashAlg::Sha256), d(HashAlg::Sha1)]),
            m(9, vec![d(HashAlg::Sha1), d(HashAlg::Sha256)]),
        ];
        let log = EventLog::from_measurements(&banks, &measurements).unwrap();
        let parsed = EventLog::parse(&log.to_bytes()).unwrap();
        let again = EventLog::from_measurements(&parsed.banks(), &parsed.measurements()).unwrap();
        assert_eq!(again.to_bytes(), log.to_bytes());
        assert_eq!(parsed.measurements().len(), 2, "the Spec ID event is not a measurement");
    }
}
