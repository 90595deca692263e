//! What a local account other than the roles' own can read on the host (issue 12,
//! "Hygiene"; `storage::private_dir`): after a genuine device switched, every state
//! directory of the lab must be 0700 and every store, key, TPM state, card and artifact
//! 0600 — only certificates, configuration, reference values and the device image may be
//! readable by others. The evaluation found swtpm state 0640 in 0755 directories and the
//! PVA's and RO's SQLite files 0644.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::{Context, Result};

use super::{Attacker, Ctx, Expect, Layer, Observed, Scenario, Stage};

pub(super) fn scenarios() -> Vec<Scenario> {
    vec![Scenario::new(
        "state-readable-by-others",
        19,
        Attacker::Local,
        "another local account reads the lab's stores, keys, TPM state, cards and device artifacts after a genuine device switched",
        Expect::at(Stage::Host, "state-private"),
        private_state,
    )]
}

/// Public by design: certificates, configuration, reference values, device images (the
/// lab's and the attack's own); and not the roles': the copies other scenarios' attackers
/// made of a TPM state.
fn public(path: &Path) -> bool {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    name.ends_with(".pem")
        || name.ends_with(".toml")
        || path.components().any(|c| {
            let c = c.as_os_str().to_string_lossy();
            c.starts_with("image") || c == "tpm-copy"
        })
}

fn private_state(ctx: &Ctx) -> Result<Observed> {
    ctx.baseline().context("the baseline device did not switch; nothing to look at")?;
    let (mut open, mut seen, mut tpm_states) = (Vec::new(), 0usize, 0usize);
    walk(&ctx.lab.dir, &mut |path, dir| {
        if public(path) {
            return;
        }
        let Ok(meta) = std::fs::symlink_metadata(path) else { return };
        let mode = meta.permissions().mode() & 0o777;
        seen += 1;
        tpm_states += usize::from(path.ends_with("tpm2-00.permall"));
        let wanted = if dir { 0o700 } else { 0o600 };
        if mode & 0o077 != 0 {
            open.push(format!("{} {mode:o} (want {wanted:o})", path.display()));
        }
    })?;
    anyhow::ensure!(tpm_states > 0, "no TPM state under {}", ctx.lab.dir.display());
    let detail = format!(
        "{seen} state files and directories ({tpm_states} TPM states), none readable by others"
    );
    Ok(Observed::new(if open.is_empty() {
        Layer::rejected(Stage::Host, vec!["state-private".into()], detail)
    } else {
        Layer::accepted(Stage::Host, format!("readable by others: {}", open.join(", ")))
    }))
}

fn walk(dir: &Path, visit: &mut impl FnMut(&Path, bool)) -> Result<()> {
    visit(dir, true);
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let meta = std::fs::symlink_metadata(&path)?;
        if meta.is_dir() {
            walk(&path, visit)?;
        } else if meta.is_file() {
            visit(&path, false);
        }
    }
    Ok(())
}
