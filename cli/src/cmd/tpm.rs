//! `tresor tpm`: TPM 2.0 credential protection by hand (TPM 2.0 Part 1 §24, Part 3 §12.5
//! TPM2_ActivateCredential and §12.6 TPM2_MakeCredential), in the file formats of
//! tpm2-tools 5.4 so that each half can be checked against the other tool:
//!
//! - `make-credential` is `tpm2_makecredential -T none` (software): the EK public area as
//!   `tpm2_readpublic -o` / `tpm2_createek -u` write it (TPM2B_PUBLIC; a bare TPMT_PUBLIC
//!   is taken too), the object name as `tpm2_readpublic -n` writes it (raw name bytes), the
//!   secret raw; the credential file as `tpm2_makecredential -o` writes it (big-endian
//!   magic 0xBADCC0DE, version 1, TPM2B_ID_OBJECT, TPM2B_ENCRYPTED_SECRET).
//! - `activate-credential` is `tpm2_activatecredential` with the EK and the AK that
//!   `tresor tre quote` uses (or persistent ones named by handle), the EK authorized by
//!   its policy, PolicySecret(TPM_RH_ENDORSEMENT).

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use protocol::tpm::public::{
    EccParms, EccPoint, EccScheme, KdfScheme, RsaParms, RsaScheme, SymAlgorithm, SymDefObject,
    SymMode,
};
use protocol::tpm::wire::{EccParameter, PublicKeyRsa};
use protocol::tpm::{
    Digest, HashAlg, MadeCredential, Name, ObjectAttributes, Public, PublicKey, Spki, Unmarshal,
    WireError, make_credential,
};
use tre::tpm::{AK_HANDLE, Key, KeyAlg, Tpm};

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand)]
enum Command {
    /// TPM2_MakeCredential in software: wrap a secret for the TPM holding an EK, bound to
    /// an object's name (tpm2_makecredential -T none).
    MakeCredential(MakeArgs),
    /// TPM2_ActivateCredential on a TPM: recover the secret with its EK and AK
    /// (tpm2_activatecredential).
    ActivateCredential(ActivateArgs),
}

#[derive(clap::Args)]
struct MakeArgs {
    /// The EK public area: TPM2B_PUBLIC as `tpm2_readpublic -o` or `tpm2_createek -u`
    /// write it (a bare TPMT_PUBLIC is accepted too), or a PEM public key with
    /// --key-algorithm.
    #[arg(long)]
    ek_public: PathBuf,
    /// The --ek-public file is a PEM public key of this algorithm (ecc or rsa), the key of
    /// an EK of the TCG default template (nameAlg SHA-256, AES-128-CFB), as with
    /// `tpm2_makecredential -G`.
    #[arg(long)]
    key_algorithm: Option<KeyAlg>,
    /// The name of the object the credential is for (the AK), raw bytes as
    /// `tpm2_readpublic -n` or `tpm2_createak -n` write them.
    #[arg(long)]
    name: PathBuf,
    /// The secret to wrap, raw bytes: 1 to the EK name algorithm's digest size (32 for
    /// SHA-256).
    #[arg(long)]
    secret: PathBuf,
    /// Where to write the credential file (the format of `tpm2_makecredential -o`).
    #[arg(long)]
    out: PathBuf,
}

#[derive(clap::Args)]
struct ActivateArgs {
    /// tpm2-tss TCTI of the TPM, e.g. swtpm:path=/run/tpm/tpm.sock or swtpm:host=127.0.0.1,port=2321.
    #[arg(long, env = "TPM2TOOLS_TCTI")]
    tcti: String,
    /// The credential file (`tpm2_makecredential -o`, `tresor tpm make-credential`).
    #[arg(long)]
    credential: PathBuf,
    /// EK algorithm: ecc or rsa. The EK is the persistent one at the TCG handle
    /// (0x81010002 ECC, 0x81010001 RSA) or, without one, created from the TCG default
    /// template (the same key `tpm2_createek` makes).
    #[arg(long, default_value = "ecc")]
    ek: KeyAlg,
    /// A persistent EK to use instead, e.g. 0x81010003.
    #[arg(long, value_parser = parse_handle)]
    ek_handle: Option<u32>,
    /// The persistent AK (the object the credential is bound to); by default the one
    /// `tresor tre quote` creates.
    #[arg(long, value_parser = parse_handle, default_value = "0x81005452")]
    ak_handle: u32,
    /// Where to write the recovered secret (created with mode 0600).
    #[arg(long)]
    out: PathBuf,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.command {
        Command::MakeCredential(args) => make(args),
        Command::ActivateCredential(args) => activate(args),
    }
}

fn make(args: MakeArgs) -> anyhow::Result<ExitCode> {
    let ek = read_public(&args.ek_public, args.key_algorithm)?;
    let name_bytes = read(&args.name)?;
    let name = Name::new(name_bytes)
        .map_err(|e| anyhow::anyhow!("{}: not a TPM name: {e}", args.name.display()))?;
    let secret = zeroize::Zeroizing::new(read(&args.secret)?);
    anyhow::ensure!(
        !secret.is_empty(),
        "{} is empty: there is no secret to wrap",
        args.secret.display()
    );
    let made = make_credential(&ek, &name, &secret).with_context(|| {
        format!("cannot make a credential for the EK of {}", args.ek_public.display())
    })?;
    std::fs::write(&args.out, made.to_tpm2_tools())
        .with_context(|| format!("cannot write {}", args.out.display()))?;
    println!(
        "credential for object {} under the {} EK written to {}",
        hex::encode(name.as_bytes()),
        ek.key.type_name(),
        args.out.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn activate(args: ActivateArgs) -> anyhow::Result<ExitCode> {
    let bytes = read(&args.credential)?;
    let made = MadeCredential::from_tpm2_tools(&bytes).map_err(|e| {
        anyhow::anyhow!("{} is not a tpm2-tools credential file: {e}", args.credential.display())
    })?;
    let mut tpm = Tpm::connect(&args.tcti)?;
    let ak = tpm.persistent_key(args.ak_handle)?.with_context(|| {
        format!(
            "no AK at persistent handle {:#010x} (`tresor tre quote` creates one at {AK_HANDLE:#010x})",
            args.ak_handle
        )
    })?;
    let ek = match args.ek_handle {
        Some(handle) => tpm
            .persistent_key(handle)?
            .with_context(|| format!("no EK at persistent handle {handle:#010x}"))?,
        None => tpm.ek(args.ek)?,
    };
    let result = tpm.activate_credential(
        &ak,
        &ek,
        made.id_object.as_bytes(),
        made.encrypted_secret.as_bytes(),
    );
    release(&mut tpm, ek)?;
    // The TPM's error once: its source chain repeats the response code's text.
    let secret = result.map_err(|e| {
        anyhow::anyhow!(
            "the TPM refused the credential: it was made for another EK, or for another \
             object than this AK, or it was altered ({e})"
        )
    })?;
    write_private(&args.out, &secret)?;
    println!("secret of {} bytes written to {}", secret.len(), args.out.display());
    Ok(ExitCode::SUCCESS)
}

fn release(tpm: &mut Tpm, key: Key) -> anyhow::Result<()> {
    if key.transient {
        tpm.release(key)?;
    }
    Ok(())
}

/// TPM2B_PUBLIC first (what tpm2-tools writes); a bare TPMT_PUBLIC otherwise. The error
/// is the TPM2B one: that is the format asked for. PEM only with its algorithm named.
fn read_public(path: &Path, pem_alg: Option<KeyAlg>) -> anyhow::Result<Public> {
    let bytes = read(path)?;
    let is_pem = bytes.starts_with(b"-----BEGIN");
    match (is_pem, pem_alg) {
        (true, Some(alg)) => return ek_from_pem(path, &bytes, alg),
        (true, None) => anyhow::bail!(
            "{} is PEM: name its algorithm with --key-algorithm, or give the EK public area as \
             `tpm2_readpublic -o` writes it (TPM2B_PUBLIC)",
            path.display()
        ),
        (false, Some(_)) => anyhow::bail!(
            "--key-algorithm is for a PEM public key, and {} is not PEM",
            path.display()
        ),
        (false, None) => {}
    }
    match Public::from_tpm2b(&bytes) {
        Ok(public) => Ok(public),
        Err(tpm2b) => Public::from_bytes(&bytes).map_err(|_| {
            anyhow::anyhow!("{} is not a TPM2B_PUBLIC (nor a TPMT_PUBLIC): {tpm2b}", path.display())
        }),
    }
}

/// A PEM key as the EK public area of the TCG default template (EK Credential Profile
/// 2.x, templates L-1 and L-2): what MakeCredential uses of it is the key, the name
/// algorithm (SHA-256) and the symmetric algorithm (AES-128-CFB); the attributes are the
/// template's, the authPolicy is left empty (the EK's name is not part of a credential).
fn ek_from_pem(path: &Path, bytes: &[u8], alg: KeyAlg) -> anyhow::Result<Public> {
    let text = std::str::from_utf8(bytes)
        .map_err(|_| anyhow::anyhow!("{} is not a PEM text file", path.display()))?;
    let spki = Spki::from_pem(text)
        .map_err(|e| anyhow::anyhow!("{}: not a PEM public key: {e}", path.display()))?;
    let symmetric =
        SymDefObject::Cipher { algorithm: SymAlgorithm::Aes, key_bits: 128, mode: SymMode::Cfb };
    let fit = |e: WireError| {
        anyhow::anyhow!("{}: key does not fit a TPM public area: {e}", path.display())
    };
    let key = match (alg, spki) {
        (KeyAlg::Rsa, Spki::Rsa { modulus, exponent }) => PublicKey::Rsa {
            parms: RsaParms {
                symmetric,
                scheme: RsaScheme::Null,
                key_bits: u16::try_from(modulus.len() * 8)
                    .map_err(|_| anyhow::anyhow!("{}: RSA key too large", path.display()))?,
                exponent: if exponent == 65537 { 0 } else { exponent },
            },
            modulus: PublicKeyRsa::new(modulus).map_err(fit)?,
        },
        (KeyAlg::Ecc, Spki::Ecc { curve, x, y }) => PublicKey::Ecc {
            parms: EccParms { symmetric, scheme: EccScheme::Null, curve, kdf: KdfScheme::Null },
            point: EccPoint {
                x: EccParameter::new(x).map_err(fit)?,
                y: EccParameter::new(y).map_err(fit)?,
            },
        },
        (alg, _) => anyhow::bail!("{} is not an {alg} key (--key-algorithm {alg})", path.display()),
    };
    Ok(Public {
        name_alg: HashAlg::Sha256,
        attributes: ObjectAttributes::FIXED_TPM
            | ObjectAttributes::FIXED_PARENT
            | ObjectAttributes::SENSITIVE_DATA_ORIGIN
            | ObjectAttributes::ADMIN_WITH_POLICY
            | ObjectAttributes::RESTRICTED
            | ObjectAttributes::DECRYPT,
        auth_policy: Digest::new(Vec::new()).map_err(fit)?,
        key,
    })
}

fn read(path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
}

/// The recovered secret, in a file only its owner can read.
fn write_private(path: &Path, secret: &[u8]) -> anyhow::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(storage::FILE_MODE)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    // An existing file keeps its mode on open: tighten it before the secret goes in.
    storage::private_file(path)
        .with_context(|| format!("cannot make {} private", path.display()))?;
    file.write_all(secret).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// A TPM handle in hex (`0x81005452`, as tpm2-tools prints them) or decimal.
fn parse_handle(s: &str) -> Result<u32, String> {
    let parsed = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u32::from_str_radix(hex, 16),
        None => s.parse(),
    };
    parsed.map_err(|_| format!("{s:?} is not a TPM handle (e.g. 0x81005452)"))
}

#[cfg(test)]
mod tests {
    use super::parse_handle;

    #[test]
    fn handles_parse_in_hex_and_decimal_and_refuse_the_rest() {
        assert_eq!(parse_handle("0x81005452"), Ok(0x8100_5452));
        assert_eq!(parse_handle("2164282450"), Ok(0x8100_5452));
        assert!(parse_handle("0x1_0000_0000").is_err());
        assert!(parse_handle("ak").is_err());
    }
}
