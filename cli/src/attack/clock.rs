//! Attacks on the TPM's clock and boot counters (issue 7, item 9; `docs/appraisal.md`
//! "Clock", TPM 2.0 Part 2 §10.11.1 TPMS_CLOCK_INFO): a local attacker restores a copy of the
//! TPM's state taken before the device last attested — a rolled-back TPM whose resetCount or
//! restartCount is below what the PVA already saw — and the device attests again. The
//! evidence is genuine in every other respect, so the PVA's clock checks must catch it.
//!
//! The TPM is powered through swtpm's control channel as a device's firmware would: TPM
//! Reset = TPM2_Shutdown(CLEAR) + _TPM_Init + TPM2_Startup(CLEAR); TPM Restart =
//! TPM2_Shutdown(STATE) + _TPM_Init + TPM2_Startup(CLEAR), which increments restartCount
//! (TPM 2.0 Part 1 §36.3, Part 3 §9.3).

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};

use super::device::{Target, attack_target, attest_once, genuine};
use super::{Attacker, Ctx, Expect, Observed, Scenario, Stage};

pub(super) fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario::new(
            "reset-count-backwards",
            9,
            Attacker::Local,
            "restores a copy of its TPM state taken two resets before its last attestation, then attests again",
            Expect::at(Stage::Pva, "reset-count-went-backwards"),
            reset_count_backwards,
        )
        .slow(),
        Scenario::new(
            "restart-count-backwards",
            9,
            Attacker::Local,
            "restores a copy of its TPM state taken before a TPM Restart that preceded its last attestation, then attests again",
            Expect::at(Stage::Pva, "restart-count-went-backwards"),
            restart_count_backwards,
        )
        .slow(),
        Scenario::new(
            "restored-state-same-counters",
            19,
            Attacker::Local,
            "restores a copy of its TPM state taken in the same TPM Reset and Restart as its last attestation, 4 s before it (the same resetCount and restartCount, a clock that lags the wall time), and is enrolled again on its next campaign (attack 5 of issue 12: re-enrolment once reset the PVA's history)",
            Expect::at(Stage::Pva, "clock-went-backwards"),
            |ctx| restored_same_counters(ctx, Duration::ZERO),
        )
        .slow(),
        Scenario::new(
            "restored-state-waits-out-its-clock",
            19,
            Attacker::Local,
            "as restored-state-same-counters, but waits 6 s before attesting again, until the restored clock has passed the one the PVA last saw (with equal counters only the clocks were once compared)",
            Expect::at(Stage::Pva, "clock-behind-wall-time"),
            |ctx| restored_same_counters(ctx, Duration::from_secs(6)),
        )
        .slow(),
    ]
}

/// The copy is taken 4 s before the attestation; after restoring it the device waits
/// `wait` before it attests again.
fn restored_same_counters(ctx: &Ctx, wait: Duration) -> Result<Observed> {
    let mut target = Target::new(ctx.manufacture()?);
    let snapshot = snapshot(ctx, &mut target)?;
    // The copy comes back in the same TPM Reset as the attestation (power_on from the copy
    // repeats the reset the running TPM went through); its clock is what it was at the copy.
    std::thread::sleep(Duration::from_secs(4));
    attest_once(ctx, &target, &ctx.image)?;
    restore(ctx, &mut target, &snapshot)?;
    std::thread::sleep(wait);
    attack_target(ctx, target, &ctx.image, genuine)?.observed()
}

fn reset_count_backwards(ctx: &Ctx) -> Result<Observed> {
    let mut target = Target::new(ctx.manufacture()?);
    let snapshot = snapshot(ctx, &mut target)?;
    // Two TPM Resets since the copy: the PVA sees resetCount + 2, the copy comes back at + 1.
    tpm_reset(target.tpm_sockets()?)?;
    attest_once(ctx, &target, &ctx.image)?;
    restore(ctx, &mut target, &snapshot)?;
    attack_target(ctx, target, &ctx.image, genuine)?.observed()
}

fn restart_count_backwards(ctx: &Ctx) -> Result<Observed> {
    let mut target = Target::new(ctx.manufacture()?);
    let snapshot = snapshot(ctx, &mut target)?;
    // The same TPM Reset as the copy will come back in, one TPM Restart later.
    tpm_restart(target.tpm_sockets()?)?;
    attest_once(ctx, &target, &ctx.image)?;
    restore(ctx, &mut target, &snapshot)?;
    attack_target(ctx, target, &ctx.image, genuine)?.observed()
}

/// Powers the TPM off in order, copies its state files, powers it on again (a TPM Reset).
fn snapshot(ctx: &Ctx, target: &mut Target) -> Result<PathBuf> {
    target.power_off();
    let copy = target.dir.join("tpm-copy");
    copy_files(target.state_dir(), &copy)?;
    target.power_on(ctx)?;
    Ok(copy)
}

/// Powers the TPM off, puts the copied state back, powers it on (a TPM Reset from the copy).
fn restore(ctx: &Ctx, target: &mut Target, copy: &Path) -> Result<()> {
    target.power_off();
    for entry in std::fs::read_dir(target.state_dir())? {
        let path = entry?.path();
        if path.is_file() {
            std::fs::remove_file(&path)?;
        }
    }
    copy_files(copy, target.state_dir())?;
    target.power_on(ctx)
}

fn copy_files(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let path = entry?.path();
        if let (true, Some(name)) = (path.is_file(), path.file_name()) {
            std::fs::copy(&path, to.join(name))
                .with_context(|| format!("copying {}", path.display()))?;
        }
    }
    Ok(())
}

/// TPM_SU_CLEAR and TPM_SU_STATE (TPM 2.0 Part 2 §6.5).
const SU_CLEAR: u16 = 0x0000;
const SU_STATE: u16 = 0x0001;
/// TPM_CC_Startup, TPM_CC_Shutdown.
const CC_STARTUP: u32 = 0x0000_0144;
const CC_SHUTDOWN: u32 = 0x0000_0145;
/// swtpm's control command CMD_INIT (`tpm_ioctl.h`): _TPM_Init.
const CMD_INIT: u32 = 0x02;

/// TPM Reset: TPM2_Shutdown(CLEAR), _TPM_Init, TPM2_Startup(CLEAR).
fn tpm_reset((tpm, ctrl): (PathBuf, PathBuf)) -> Result<()> {
    power_sequence(&tpm, &ctrl, SU_CLEAR)
}

/// TPM Restart: TPM2_Shutdown(STATE), _TPM_Init, TPM2_Startup(CLEAR).
fn tpm_restart((tpm, ctrl): (PathBuf, PathBuf)) -> Result<()> {
    power_sequence(&tpm, &ctrl, SU_STATE)
}

fn power_sequence(tpm: &Path, ctrl: &Path, shutdown: u16) -> Result<()> {
    tpm_command(tpm, CC_SHUTDOWN, shutdown)?;
    let mut control = connect(ctrl)?;
    let mut frame = CMD_INIT.to_be_bytes().to_vec();
    frame.extend_from_slice(&0u32.to_be_bytes());
    control.write_all(&frame)?;
    let mut result = [0u8; 4];
    control.read_exact(&mut result)?;
    anyhow::ensure!(
        u32::from_be_bytes(result) == 0,
        "swtpm CMD_INIT returned {:#x}",
        u32::from_be_bytes(result)
    );
    tpm_command(tpm, CC_STARTUP, SU_CLEAR)
}

/// Sends a TPM_ST_NO_SESSIONS command with one UINT16 parameter and checks its response
/// code.
fn tpm_command(socket: &Path, code: u32, parameter: u16) -> Result<()> {
    let mut command = 0x8001u16.to_be_bytes().to_vec();
    command.extend_from_slice(&12u32.to_be_bytes());
    command.extend_from_slice(&code.to_be_bytes());
    command.extend_from_slice(&parameter.to_be_bytes());
    let mut stream = connect(socket)?;
    stream.write_all(&command)?;
    let mut header = [0u8; 10];
    stream.read_exact(&mut header)?;
    let rc = u32::from_be_bytes([header[6], header[7], header[8], header[9]]);
    anyhow::ensure!(rc == 0, "TPM command {code:#x} returned {rc:#x}");
    Ok(())
}

fn connect(socket: &Path) -> Result<UnixStream> {
    let stream = UnixStream::connect(socket)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    Ok(stream)
}
