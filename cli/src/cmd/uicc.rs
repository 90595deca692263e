//! `tresor uicc`: the UICC/USIM emulator (`uicc` crate) — create a card, serve it to pcscd
//! over vpcd, send it APDUs, seal the operator's OTA commands, and run Milenage
//! (3GPP TS 35.206) by hand.
//!
//! Secrets (K, OPc, OP, KIc, KID, PINs) can come from the environment instead of the
//! command line, so they need not appear in the process list; clap never shows their values.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Mutex;
use std::sync::atomic::AtomicBool;

use anyhow::{Context, bail};
use protocol::milenage::{Milenage, Op, Rand, Sqn, opc_from_op};
use protocol::ota;
use protocol::{Amf, Iccid, Imsi, Opc, OtaKey, OtaKeys, SubscriberKey, SubscriptionProfile};
use serde_json::json;
use uicc::{Card, CardOptions, Pin};

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Manufacture a card holding one profile (USIM active) into a new state file.
    New(NewArgs),
    /// Connect the card to vpcd, so pcscd and every PC/SC tool see it; runs until killed.
    Serve {
        #[arg(long)]
        state: PathBuf,
        /// vpcd's address (its reader 0 listens on port 35963).
        #[arg(long, default_value = "127.0.0.1:35963")]
        vpcd: String,
    },
    /// Print the card's ICCID, IMSI, OTA counter and which of USIM and TRE is active.
    Info {
        #[arg(long)]
        state: PathBuf,
    },
    /// Send command APDUs (hex) to the card in process and print each answer (hex).
    Apdu {
        #[arg(long)]
        state: PathBuf,
        #[arg(required = true)]
        apdus: Vec<String>,
    },
    /// Seal an operator OTA command for a card (MNO-A's side) and print the APDU (hex).
    Ota(OtaArgs),
    /// Run Milenage and print opc, mac_a, mac_s, res, ck, ik, ak, ak_star as JSON.
    Milenage(MilenageArgs),
}

#[derive(clap::Args)]
struct NewArgs {
    #[arg(long)]
    state: PathBuf,
    #[arg(long)]
    iccid: Iccid,
    #[arg(long)]
    imsi: Imsi,
    /// K, 32 hex digits.
    #[arg(long, env = "TRESOR_UICC_K", hide_env_values = true)]
    k: String,
    /// OPc, 32 hex digits.
    #[arg(long, env = "TRESOR_UICC_OPC", hide_env_values = true)]
    opc: String,
    /// AMF, 4 hex digits.
    #[arg(long, default_value = "8000")]
    amf: String,
    /// OTA ciphering key KIc, 32 hex digits (random if absent).
    #[arg(long, env = "TRESOR_UICC_KIC", hide_env_values = true)]
    kic: Option<String>,
    /// OTA integrity key KID, 32 hex digits (random if absent; MNO-A needs it to activate
    /// the TRE, so give it for anything but a throw-away card).
    #[arg(long, env = "TRESOR_UICC_KID", hide_env_values = true)]
    kid: Option<String>,
    /// The last OTA counter the card has accepted.
    #[arg(long, default_value_t = 0)]
    ota_counter: u64,
    /// Enable PIN1 with this value (4 to 8 digits); PIN1 is disabled otherwise.
    #[arg(long, env = "TRESOR_UICC_PIN1", hide_env_values = true)]
    pin1: Option<String>,
    /// ADM1 (8 digits or 16 hex digits), needed for UPDATE BINARY; random if absent.
    #[arg(long, env = "TRESOR_UICC_ADM1", hide_env_values = true)]
    adm1: Option<String>,
    /// Length of the MNC in the IMSI (EF_AD): 2 or 3.
    #[arg(long, default_value_t = 2)]
    mnc_len: u8,
}

#[derive(clap::Args)]
struct OtaArgs {
    /// The card's current KID, 32 hex digits.
    #[arg(long, env = "TRESOR_UICC_KID", hide_env_values = true)]
    kid: String,
    #[arg(long)]
    iccid: Iccid,
    /// Must exceed the last counter the card accepted.
    #[arg(long)]
    counter: u64,
    #[arg(long, value_enum, default_value = "activate-tre")]
    command: OtaKind,
    /// activate-tre: the campaign the TRE is activated for (a campaign id of the RO).
    #[arg(long)]
    campaign: Option<String>,
    /// activate-tre: the campaign's new operator, whose signature alone the TRE accepts on
    /// the new profile (a role name such as `mno-b`).
    #[arg(long)]
    operator: Option<String>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum OtaKind {
    ActivateTre,
    DeactivateTre,
}

#[derive(clap::Args)]
struct MilenageArgs {
    #[arg(long, env = "TRESOR_UICC_K", hide_env_values = true)]
    k: String,
    /// OP, from which OPc is derived.
    #[arg(
        long,
        env = "TRESOR_UICC_OP",
        hide_env_values = true,
        conflicts_with = "opc",
        required_unless_present = "opc"
    )]
    op: Option<String>,
    #[arg(long, env = "TRESOR_UICC_OPC", hide_env_values = true)]
    opc: Option<String>,
    /// RAND, 32 hex digits.
    #[arg(long)]
    rand: String,
    /// SQN, 12 hex digits.
    #[arg(long)]
    sqn: String,
    /// AMF, 4 hex digits.
    #[arg(long)]
    amf: String,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.command {
        Command::New(a) => new(a)?,
        Command::Serve { state, vpcd } => {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(
                    tracing_subscriber::EnvFilter::try_from_default_env()
                        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
                )
                .with_writer(std::io::stderr)
                .try_init();
            let card =
                Card::open(&state).with_context(|| format!("opening {}", state.display()))?;
            eprintln!("serving card {} (IMSI {}) to vpcd at {vpcd}", card.iccid(), card.imsi());
            let card = Mutex::new(card);
            uicc::vpcd::serve(&card, &vpcd, &AtomicBool::new(false))?;
        }
        Command::Info { state } => {
            let card =
                Card::open(&state).with_context(|| format!("opening {}", state.display()))?;
            print_json(&card_json(&card, &state));
        }
        Command::Apdu { state, apdus } => {
            let mut card =
                Card::open(&state).with_context(|| format!("opening {}", state.display()))?;
            for apdu in apdus {
                let bytes = hex::decode(apdu.replace([' ', ':'], ""))
                    .with_context(|| format!("APDU {apdu:?} is not hexadecimal"))?;
                println!("{}", hex::encode(card.transmit(&bytes)));
            }
        }
        Command::Ota(a) => {
            let kid = OtaKey::from_hex(&a.kid).context("--kid")?;
            let action = match (a.command, &a.campaign, &a.operator) {
                (OtaKind::ActivateTre, Some(campaign), Some(operator)) => {
                    ota::Action::ActivateTre(ota::Activation::new(campaign, operator)?)
                }
                (OtaKind::ActivateTre, ..) => bail!("activate-tre needs --campaign and --operator"),
                (OtaKind::DeactivateTre, None, None) => ota::Action::DeactivateTre,
                (OtaKind::DeactivateTre, ..) => {
                    bail!("deactivate-tre takes neither --campaign nor --operator")
                }
            };
            println!("{}", hex::encode(ota::seal(&action, &kid, &a.iccid, a.counter)?));
        }
        Command::Milenage(a) => print_json(&milenage(&a)?),
    }
    Ok(ExitCode::SUCCESS)
}

fn new(a: NewArgs) -> anyhow::Result<()> {
    let kic = match &a.kic {
        Some(hex) => OtaKey::from_hex(hex).context("--kic")?,
        None => OtaKey::random().map_err(|_| anyhow::anyhow!("random number generator failed"))?,
    };
    let kid = match &a.kid {
        Some(hex) => OtaKey::from_hex(hex).context("--kid")?,
        None => OtaKey::random().map_err(|_| anyhow::anyhow!("random number generator failed"))?,
    };
    let profile = SubscriptionProfile {
        iccid: a.iccid,
        imsi: a.imsi,
        k: SubscriberKey::from_hex(&a.k).context("--k")?,
        opc: Opc::from_hex(&a.opc).context("--opc")?,
        amf: parse_amf(&a.amf)?,
        ota: OtaKeys { kic, kid, counter: a.ota_counter },
    };
    let mut options = CardOptions::new()?;
    options.mnc_len = a.mnc_len;
    if let Some(pin1) = &a.pin1 {
        options.pin1 = Pin::from_digits(pin1)?;
        options.pin1_enabled = true;
    }
    if let Some(adm1) = &a.adm1 {
        options.adm1 = Pin::parse(adm1)?;
    }
    let card = Card::create(&a.state, profile, options)?;
    print_json(&card_json(&card, &a.state));
    Ok(())
}

fn card_json(card: &Card, state: &std::path::Path) -> serde_json::Value {
    json!({
        "state": state.display().to_string(),
        "iccid": card.iccid().as_str(),
        "imsi": card.imsi().as_str(),
        "active": if card.tre_active() { "tre" } else { "usim" },
        "ota_counter": card.ota_counter(),
    })
}

fn milenage(a: &MilenageArgs) -> anyhow::Result<serde_json::Value> {
    let k = SubscriberKey::from_hex(&a.k).context("--k")?;
    let opc = match (&a.op, &a.opc) {
        (Some(op), None) => opc_from_op(&k, &Op::from_hex(op).context("--op")?),
        (None, Some(opc)) => Opc::from_hex(opc).context("--opc")?,
        _ => bail!("give exactly one of --op and --opc"),
    };
    let rand = Rand(fixed::<16>(&a.rand, "RAND")?);
    let sqn = Sqn::from_bytes(fixed::<6>(&a.sqn, "SQN")?);
    let amf = parse_amf(&a.amf)?;
    let m = Milenage::new(&k, &opc);
    let (mac_a, mac_s) = m.f1_both(&rand, sqn, amf);
    let out = m.f2345(&rand);
    Ok(json!({
        "opc": hex::encode(opc.expose()),
        "mac_a": hex::encode(mac_a),
        "mac_s": hex::encode(mac_s),
        "res": hex::encode(out.res.0),
        "ck": hex::encode(out.ck.expose()),
        "ik": hex::encode(out.ik.expose()),
        "ak": hex::encode(out.ak),
        "ak_star": hex::encode(m.f5_star(&rand)),
    }))
}

fn parse_amf(s: &str) -> anyhow::Result<Amf> {
    Ok(Amf(fixed::<2>(s, "AMF")?))
}

/// Exactly N bytes of hex; the error names the field, not the value.
fn fixed<const N: usize>(s: &str, what: &str) -> anyhow::Result<[u8; N]> {
    let mut out = [0u8; N];
    hex::decode_to_slice(s.trim(), &mut out)
        .map_err(|_| anyhow::anyhow!("{what} must be {} hex digits", 2 * N))?;
    Ok(out)
}

fn print_json(value: &serde_json::Value) {
    println!("{}", serde_json::to_string_pretty(value).unwrap_or_default());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(
        k: &str,
        op: Option<&str>,
        opc: Option<&str>,
        rand: &str,
        sqn: &str,
        amf: &str,
    ) -> MilenageArgs {
        MilenageArgs {
            k: k.into(),
            op: op.map(Into::into),
            opc: opc.map(Into::into),
            rand: rand.into(),
            sqn: sqn.into(),
            amf: amf.into(),
        }
    }

    #[test]
    fn milenage_json_matches_ts_35_207() {
        // 3GPP TS 35.207 test set 1, from OP.
        let out = milenage(&args(
            "465b5ce8b199b49faa5f0a2ee238a6bc",
            Some("cdc202d5123e20f62b6d676ac72cb318"),
            None,
            "23553cbe9637a89d218ae64dae47bf35",
            "ff9bb4d0b607",
            "b9b9",
        ))
        .unwrap();
        let expected = json!({
            "opc": "cd63cb71954a9f4e48a5994e37a02baf", "mac_a": "4a9ffac354dfafb3",
            "mac_s": "01cfaf9ec4e871e9", "res": "a54211d5e3ba50bf",
            "ck": "b40ba9a3c58b2a05bbf0d987b21bf8cb", "ik": "f769bcd751044604127672711c6d3441",
            "ak": "aa689c648370", "ak_star": "451e8beca43b",
        });
        assert_eq!(out, expected);
        // Test set 2, from OPc.
        let out = milenage(&args(
            "0396eb317b6d1c36f19c1c84cd6ffd16",
            None,
            Some("53c15671c60a4b731c55b4a441c0bde2"),
            "c00d603103dcee52c4478119494202e8",
            "fd8eef40df7d",
            "af17",
        ))
        .unwrap();
        assert_eq!(out["mac_a"], "5df5b31807e258b0");
        assert_eq!(out["ak_star"], "30f1197061c1");
    }

    #[test]
    fn bad_input_names_the_field_not_the_value() {
        let err = milenage(&args("465b", None, Some("00"), "00", "00", "00")).unwrap_err();
        assert!(format!("{err:#}").contains("--k") && !format!("{err:#}").contains("465b"));
        let err = milenage(&args(
            "465b5ce8b199b49faa5f0a2ee238a6bc",
            None,
            Some("cd63cb71954a9f4e48a5994e37a02baf"),
            "zz",
            "ff9bb4d0b607",
            "b9b9",
        ))
        .unwrap_err();
        assert_eq!(err.to_string(), "RAND must be 32 hex digits");
    }
}
