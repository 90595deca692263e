//! Reference values from a golden event log (`tresor eventlog refvalues`), as Keylime's
//! `create_mb_refstate` makes them from a machine's `binary_bios_measurements`: the log of
//! a boot known to be good, of any TPM and firmware, becomes a reference-values file
//! (`docs/reference-values.md`) that a PVA loads like one derived from an image.
//!
//! Every record that extends a PCR (TCG PFP 1.05 §10.4.1: all but EV_NO_ACTION) becomes an
//! `[[event]]` with its PCR, event type and digests; the StartupLocality of the log
//! (§10.4.5.3) becomes `startup_locality`; the PCR values the log replays to (§10.2, with
//! the H-CRTM rule of `protocol::eventlog::replay`) become `[pcr_values.BANK]`, which the
//! loader checks the events replay to. The policy quotes every measured PCR and requires no
//! component: firmware events do not name tresor components, so the allow-list and the
//! replayed values are the whole check.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use protocol::eventlog::{Event, EventLog, EventType};
use protocol::tpm::HashAlg;

use super::{FORMAT, MAX_FILE_SIZE, RefValuesError, ReferenceValues, event_type_text};

/// Reference values and a starting policy for the boot `log` records, as TOML text, with
/// policy id `id`; `source` names the log in the file's comments. What it writes loads
/// ([`ReferenceValues::parse`]) or it is an error.
pub fn derive_from_log(log: &EventLog, id: &str, source: &str) -> Result<String, RefValuesError> {
    let log_err = |e: protocol::eventlog::EventLogError| RefValuesError::EventLog(e.to_string());
    let replayed = log.replay().map_err(log_err)?;
    let startup_locality = log.startup_locality().map_err(log_err)?.filter(|l| *l != 0);
    let events: Vec<&Event> =
        log.events().iter().filter(|e| e.event_type != EventType::EV_NO_ACTION).collect();
    if events.is_empty() {
        return Err(RefValuesError::NoEvents);
    }
    // Only a bank every measurement has a digest in can be predicted.
    let banks: Vec<HashAlg> =
        log.banks().into_iter().filter(|b| events.iter().all(|e| e.digest(*b).is_some())).collect();
    let Some(first) = banks.first().copied() else {
        return Err(RefValuesError::Policy(
            "no bank the log declares has a digest in every measurement".into(),
        ));
    };
    let quote_bank = banks.iter().copied().find(|b| *b != HashAlg::Sha1).unwrap_or(first);
    // SHA-1 quotes are allowed only when SHA-1 is the only bank (as `derive` does).
    let non_sha1: Vec<HashAlg> = banks.iter().copied().filter(|b| *b != HashAlg::Sha1).collect();
    let allowed = if non_sha1.is_empty() { banks.clone() } else { non_sha1 };
    let pcrs: BTreeSet<u32> = events.iter().map(|e| e.pcr).collect();
    let q = |s: &str| toml::Value::String(s.to_owned()).to_string();

    let mut out = String::new();
    let w = &mut out;
    let _ =
        writeln!(w, "# tresor reference values and appraisal policy (docs/reference-values.md)");
    let _ = writeln!(w, "# derived by `tresor eventlog refvalues` from the golden event log");
    let _ = writeln!(w, "# {}", printable(source.as_bytes()).unwrap_or_else(|| "(unnamed)".into()));
    let _ = writeln!(w, "format = {FORMAT}");
    let _ = writeln!(w, "id = {}", q(id));
    let bank_list: Vec<&str> = banks.iter().map(|b| b.name()).collect();
    let _ = writeln!(
        w,
        "description = {}",
        q(&format!(
            "golden event log: {} measurements, banks {}",
            events.len(),
            bank_list.join(", ")
        ))
    );
    if let Some(locality) = startup_locality {
        let _ = writeln!(w, "# PCR 0 starts at {locality} (the log's StartupLocality event).");
        let _ = writeln!(w, "startup_locality = {locality}");
    }
    let _ =
        writeln!(w, "\n# What each measured PCR holds (TCG PC Client PFP 1.05 §3.3.4).\n[pcr_map]");
    for pcr in &pcrs {
        let _ = writeln!(w, "{} = {}", q(&pcr.to_string()), q(pcr_usage(*pcr)));
    }
    let selection: Vec<String> = pcrs.iter().map(u32::to_string).collect();
    let allowed_names: Vec<String> = allowed.iter().map(|b| q(b.name())).collect();
    let _ = writeln!(w, "\n[policy]");
    let _ = writeln!(w, "# Every PCR the golden log measures, quoted in one bank.");
    let _ = writeln!(w, "pcr_selection = {}", q(&format!("{quote_bank}:{}", selection.join(","))));
    let _ = writeln!(w, "# PCR banks a quote may select; SHA-1 only if listed here.");
    let _ = writeln!(w, "banks = [{}]", allowed_names.join(", "));
    let _ = writeln!(w, "# Firmware events name no tresor component.");
    let _ = writeln!(w, "required_components = []");
    let _ = writeln!(w, "below_minimum_version = \"contraindicated\"");
    let _ = writeln!(w, "ear_validity_seconds = {}", crate::policy::DEFAULT_EAR_VALIDITY.as_secs());
    let _ = writeln!(w, "\n# What the golden log replays to; loading checks the events do.");
    for (i, bank) in banks.iter().enumerate() {
        let _ = writeln!(w, "{}[pcr_values.{}]", if i == 0 { "" } else { "\n" }, bank.name());
        let Some(values) = replayed.bank(*bank) else { continue };
        for (pcr, value) in values.measured().filter(|(p, _)| pcrs.contains(p)) {
            let _ = writeln!(w, "{} = {}", q(&pcr.to_string()), q(&hex::encode(value)));
        }
    }
    for e in &events {
        let _ = writeln!(w, "\n[[event]]");
        let what = variable_name(e)
            .map(|name| format!("EFI variable {name}"))
            .or_else(|| printable(&e.data).map(|t| format!("{t:?}")))
            .unwrap_or_else(|| format!("{} bytes of event data", e.data.len()));
        let _ = writeln!(w, "# record at offset {}: {what}", e.offset);
        let _ = writeln!(w, "pcr = {}\ntype = {}", e.pcr, q(&event_type_text(e.event_type)));
        for bank in &banks {
            if let Some(d) = e.digest(*bank) {
                let _ = writeln!(w, "{} = {}", bank.name(), q(&hex::encode(d)));
            }
        }
    }
    if out.len() as u64 > MAX_FILE_SIZE {
        return Err(RefValuesError::TooLarge { size: out.len() });
    }
    // What we wrote must load.
    ReferenceValues::parse(&out)?;
    Ok(out)
}

/// A policy id from a log's file name: `eventlog-` and the name's letters, digits and
/// `._:-`, others replaced by `-`, at most 128 characters.
pub fn policy_id_for_log(name: &str) -> String {
    let cleaned: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || "._:-".contains(c) { c } else { '-' })
        .collect();
    format!("eventlog-{cleaned}").chars().take(128).collect()
}

/// PCR usage in the PC Client PFP 1.05 §3.3.4, Table 1.
fn pcr_usage(pcr: u32) -> &'static str {
    match pcr {
        0 => "SRTM, BIOS, host platform extensions, embedded option ROMs and PI drivers",
        1 => "host platform configuration",
        2 => "UEFI driver and application code",
        3 => "UEFI driver and application configuration and data",
        4 => "UEFI boot manager code and boot attempts",
        5 => "boot manager configuration and data, GPT/partition table",
        6 => "host platform manufacturer specific",
        7 => "Secure Boot policy",
        8..=15 => "defined for use by the static OS",
        16 => "debug",
        17..=22 => "dynamic RTM",
        _ => "application support",
    }
}

/// The variable an EV_EFI_VARIABLE_* event measures: UEFI_VARIABLE_DATA (PFP 1.05 §10.4.4)
/// is the vendor GUID, UnicodeNameLength and VariableDataLength (UINT64 each), then the
/// name in UTF-16.
fn variable_name(e: &Event) -> Option<String> {
    let variable_event = [
        EventType::EV_EFI_VARIABLE_DRIVER_CONFIG,
        EventType::EV_EFI_VARIABLE_BOOT,
        EventType::EV_EFI_VARIABLE_BOOT2,
        EventType::EV_EFI_VARIABLE_AUTHORITY,
    ];
    if !variable_event.contains(&e.event_type) {
        return None;
    }
    let len: [u8; 8] = e.data.get(16..24)?.try_into().ok()?;
    let chars = usize::try_from(u64::from_le_bytes(len)).ok().filter(|n| *n <= 64)?;
    printable(e.data.get(32..32 + 2 * chars)?)
}

/// Event data as text for a comment, if it is short printable ASCII or UTF-16LE (as
/// firmware writes version strings and EV_EFI_ACTION texts), trailing NULs dropped.
fn printable(data: &[u8]) -> Option<String> {
    const MAX: usize = 96;
    let ok =
        |t: &str| !t.is_empty() && t.len() <= MAX && t.chars().all(|c| (' '..='~').contains(&c));
    let ascii = std::str::from_utf8(data).ok().map(|t| t.trim_end_matches('\0'));
    if let Some(t) = ascii.filter(|t| ok(t)) {
        return Some(t.to_owned());
    }
    if !data.len().is_multiple_of(2) {
        return None;
    }
    let units: Vec<u16> =
        data.chunks_exact(2).filter_map(|c| c.try_into().ok().map(u16::from_le_bytes)).collect();
    let text = String::from_utf16(&units).ok()?;
    let text = text.trim_end_matches('\0');
    ok(text).then(|| text.to_owned())
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use protocol::eventlog::{EventLogError, Measurement};

    use super::*;
    use crate::appraisal::evaluate_event_log;
    use crate::error::AppraisalError;

    fn testdata(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/eventlogs").join(name)
    }

    fn log(name: &str) -> EventLog {
        EventLog::parse(&std::fs::read(testdata(name)).unwrap()).unwrap()
    }

    fn refs_of(log: &EventLog) -> ReferenceValues {
        ReferenceValues::parse(&derive_from_log(log, "golden", "test").unwrap()).unwrap()
    }

    /// Every log of testdata/eventlogs (tpm2-tools, tpm2-tss, go-attestation).
    fn all_logs() -> Vec<String> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(testdata("")).unwrap() {
            let path = entry.unwrap().path();
            let mut add = |p: &Path| {
                if p.extension().is_some_and(|e| e == "bin") {
                    names.push(p.strip_prefix(testdata("")).unwrap().display().to_string());
                }
            };
            if path.is_dir() {
                std::fs::read_dir(&path).unwrap().for_each(|e| add(&e.unwrap().path()));
            } else {
                add(&path);
            }
        }
        names.sort();
        assert!(names.len() >= 13, "{names:?}");
        names
    }

    #[test]
    fn every_testdata_log_gives_reference_values_it_passes() {
        for name in all_logs() {
            let golden = log(&name);
            let refs = refs_of(&golden);
            let failures = evaluate_event_log(&golden, &refs).unwrap();
            assert!(failures.is_empty(), "{name}: {failures:?}");
            // The prediction is the log's own replay.
            let replayed = golden.replay().unwrap();
            for (bank, pcr) in refs.policy().selection.iter() {
                assert_eq!(
                    refs.predicted(bank, pcr),
                    replayed.value(bank, u32::from(pcr)),
                    "{name} {bank}:{pcr}"
                );
            }
        }
    }

    fn hcrtm() -> EventLog {
        log("tpm2-tss/binary_measurements_hcrtm.bin")
    }

    fn rebuilt(golden: &EventLog, measurements: &[Measurement]) -> EventLog {
        EventLog::from_measurements(&golden.banks(), measurements).unwrap()
    }

    #[test]
    fn the_hcrtm_log_gives_sm3_reference_values_with_the_machines_pcr0() {
        let golden = hcrtm();
        let text = derive_from_log(&golden, "hygon-dhyana-golden", "hcrtm").unwrap();
        let refs = ReferenceValues::parse(&text).unwrap();
        assert_eq!(refs.id(), "hygon-dhyana-golden");
        assert_eq!(refs.policy().selection.to_string(), "sha256:0,1,2,3,4,5,6,7,8,9");
        assert_eq!(refs.policy().banks, [HashAlg::Sha256, HashAlg::Sm3_256]);
        assert_eq!(refs.events().len(), 203, "no EV_NO_ACTION after the header");
        assert_eq!(refs.events()[0].event_type, EventType::EV_EFI_HCRTM_EVENT);
        assert_eq!(refs.startup_locality(), 0);
        // The SHA-1 PCR 0 tpm2-tss read on the machine, checked at load.
        assert!(
            text.contains(
                "[pcr_values.sha1]\n\"0\" = \"15f4e6ca457d1af6bc49511a93ba3500ad69acc5\""
            )
        );
        assert!(text.contains("sm3_256 = \""));
        assert!(text.contains("type = \"EV_EFI_BOOT_SERVICES_APPLICATION\""));
        assert!(text.contains("# record at offset 578: EFI variable SecureBoot\n"));
        assert!(text.contains("# record at offset 184: \"Dhyana2.05.43.29.0003\"\n"));
        // The rebuilt log (same measurements, no EV_NO_ACTION) passes as well.
        let same = rebuilt(&golden, &golden.measurements());
        assert_eq!(evaluate_event_log(&same, &refs).unwrap(), []);
    }

    #[test]
    fn a_modified_log_fails() {
        let golden = hcrtm();
        let refs = refs_of(&golden);
        let ms = golden.measurements();
        let app = ms
            .iter()
            .position(|m| m.event_type == EventType::EV_EFI_BOOT_SERVICES_APPLICATION)
            .unwrap();
        let failures = |ms: &[Measurement]| evaluate_event_log(&rebuilt(&golden, ms), &refs);

        // Another boot application (its digest changed in every bank).
        let mut other = ms.clone();
        for d in &mut other[app].digests {
            d.value[0] ^= 1;
        }
        let found = failures(&other).unwrap();
        assert!(
            found.iter().any(|f| matches!(
                f,
                AppraisalError::EventNotInReferenceValues {
                    pcr: 4,
                    event_type: EventType::EV_EFI_BOOT_SERVICES_APPLICATION,
                    ..
                }
            )),
            "{found:?}"
        );
        assert!(
            found.contains(&AppraisalError::PcrNotReferenceValue { bank: HashAlg::Sha256, pcr: 4 })
        );
        // The prediction covers the policy selection (SHA-256); SM3_256 is checked by digest.

        // Only its SM3_256 digest changed: the SM3 bank is checked too.
        let mut sm3 = ms.clone();
        sm3[app].digests.iter_mut().find(|d| d.alg == HashAlg::Sm3_256).unwrap().value[0] ^= 1;
        let found = failures(&sm3).unwrap();
        assert!(
            found.iter().any(|f| matches!(
                f,
                AppraisalError::EventNotInReferenceValues { bank: HashAlg::Sm3_256, .. }
            )),
            "{found:?}"
        );
        assert!(
            !found
                .contains(&AppraisalError::PcrNotReferenceValue { bank: HashAlg::Sha256, pcr: 4 })
        );

        // An event left out: every event is known, the replay is not.
        let mut fewer = ms.clone();
        fewer.remove(app);
        assert_eq!(
            failures(&fewer).unwrap(),
            [AppraisalError::PcrNotReferenceValue { bank: HashAlg::Sha256, pcr: 4 }]
        );

        // Two PCR 0 events swapped (after the H-CRTM): known events, another order.
        let mut swapped = ms.clone();
        swapped.swap(1, 2);
        assert_eq!(
            failures(&swapped).unwrap(),
            [AppraisalError::PcrNotReferenceValue { bank: HashAlg::Sha256, pcr: 0 }]
        );

        // Retyped: the digest is known, as another type.
        let mut retyped = ms.clone();
        retyped[1].event_type = EventType::EV_POST_CODE;
        let found = failures(&retyped).unwrap();
        assert!(
            found.iter().any(|f| matches!(
                f,
                AppraisalError::EventNotInReferenceValues {
                    pcr: 0,
                    event_type: EventType::EV_POST_CODE,
                    ..
                }
            )),
            "{found:?}"
        );

        // Without its H-CRTM event PCR 0 replays from zero; with it moved, it does not replay.
        assert_eq!(
            failures(&ms[1..]).unwrap(),
            [AppraisalError::PcrNotReferenceValue { bank: HashAlg::Sha256, pcr: 0 }]
        );
        let mut moved = ms.clone();
        moved.swap(0, 1);
        assert!(matches!(
            failures(&moved),
            Err(AppraisalError::EventLogMalformed(EventLogError::HcrtmEventMisplaced { .. }))
        ));
    }

    #[test]
    fn the_startup_locality_of_the_golden_log_is_part_of_the_reference() {
        let gce = log("event-gce-ubuntu-2104-log.bin");
        let banks = gce.banks();
        let mut ms = vec![Measurement::startup_locality(3, &banks)];
        ms.extend(gce.measurements());
        let golden = rebuilt(&gce, &ms);
        let text = derive_from_log(&golden, "locality-3", "test").unwrap();
        assert!(text.contains("\nstartup_locality = 3\n"), "{text}");
        let refs = ReferenceValues::parse(&text).unwrap();
        assert_eq!(refs.startup_locality(), 3);
        assert_eq!(evaluate_event_log(&golden, &refs).unwrap(), []);
        // The same events from locality 0: PCR 0 differs.
        assert_eq!(
            evaluate_event_log(&gce, &refs).unwrap(),
            [AppraisalError::PcrNotReferenceValue { bank: HashAlg::Sha256, pcr: 0 }]
        );
        // A file whose startup_locality was dropped no longer replays to its pcr_values.
        let dropped = text.replacen("startup_locality = 3\n", "", 1);
        assert!(matches!(ReferenceValues::parse(&dropped), Err(RefValuesError::PcrValues(_))));
        let bad = text.replacen("startup_locality = 3", "startup_locality = 2", 1);
        assert_eq!(
            ReferenceValues::parse(&bad).unwrap_err(),
            RefValuesError::BadStartupLocality(2)
        );
    }

    #[test]
    fn pcr_values_are_checked_at_load() {
        let text = derive_from_log(&hcrtm(), "golden", "test").unwrap();
        let pcr0 = "\"0\" = \"15f4e6ca457d1af6bc49511a93ba3500ad69acc5\"";
        let cases = [
            (
                pcr0,
                "\"0\" = \"2162942d20f3d5fbe8121fe462f5b7a5568bccd2\"",
                "a value the events do not replay to",
            ),
            (pcr0, "\"0\" = \"15f4e6ca\"", "a short value"),
            (pcr0, "\"0\" = \"not hex\"", "not hex"),
            (
                pcr0,
                "\"17\" = \"15f4e6ca457d1af6bc49511a93ba3500ad69acc5\"",
                "a PCR outside the pcr_map",
            ),
            ("[pcr_values.sha1]", "[pcr_values.md5]", "an unknown bank"),
        ];
        for (from, to, why) in cases {
            assert!(text.contains(from), "{why}");
            let bad = text.replacen(from, to, 1);
            assert!(
                matches!(ReferenceValues::parse(&bad), Err(RefValuesError::PcrValues(_))),
                "{why}"
            );
        }
    }

    #[test]
    fn logs_that_cannot_give_reference_values() {
        let empty = EventLog::new(&[HashAlg::Sha256]).unwrap();
        assert_eq!(derive_from_log(&empty, "x", "test"), Err(RefValuesError::NoEvents));
        // event-uefiaction.bin declares four banks; its record carries two, so two are used.
        let partial = log("event-uefiaction.bin");
        let refs = refs_of(&partial);
        assert_eq!(refs.policy().banks, [HashAlg::Sha256]);
        assert_eq!(
            derive_from_log(&hcrtm(), "has space", "test").map(drop),
            Err(RefValuesError::BadId("has space".into()))
        );
    }

    #[test]
    fn printable_reads_ascii_and_utf16_and_nothing_else() {
        assert_eq!(
            printable(b"Calling EFI Application from Boot Option"),
            Some("Calling EFI Application from Boot Option".into())
        );
        assert_eq!(printable(b"HCRTM\0"), Some("HCRTM".into()));
        let utf16: Vec<u8> = "Dhyana2.05\0".encode_utf16().flat_map(u16::to_le_bytes).collect();
        assert_eq!(printable(&utf16), Some("Dhyana2.05".into()));
        assert_eq!(printable(&[0, 0, 0, 0]), None);
        assert_eq!(printable(b"two\nlines"), None, "a comment stays on one line");
        assert_eq!(printable(&[0xff; 7]), None);
        assert_eq!(printable(&b"x".repeat(97)), None);
    }

    #[test]
    fn policy_ids_from_file_names() {
        assert_eq!(
            policy_id_for_log("binary_bios_measurements"),
            "eventlog-binary_bios_measurements"
        );
        assert_eq!(policy_id_for_log("my log.bin"), "eventlog-my-log.bin");
        assert_eq!(policy_id_for_log(&"a".repeat(300)).len(), 128);
    }
}
