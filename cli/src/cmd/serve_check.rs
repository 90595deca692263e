//! `tresor serve ROLE --config FILE --check`: everything a start would load, checked, and
//! nothing started. The role is assembled as at a start (keys, certificates, policies, peers)
//! with its store in memory; the store file is then judged without being written
//! (`storage::check_sqlite`: this role's stamp and schema version, SQLite's quick_check, and
//! for an operator its owner, pool and storage key). Each certificate the role presents must
//! chain to the CI root now, certify this role, and not expire within [`EXPIRY_WARNING`]
//! (a warning). The exit status is 0 when every check passed (warnings allowed), 1 otherwise.

use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use protocol::role::{CertifiedRole, Expected, Role};
use protocol::x509::{ChainPolicy, TrustAnchors, verify_chain};
use provisioning::{mno, ro};
use storage::StoreCheck;

use super::serve::Role as ServedRole;

/// A certificate that expires sooner than this is reported as a warning.
const EXPIRY_WARNING: Duration = Duration::from_secs(30 * 24 * 3600);

enum Verdict {
    Ok(String),
    Warn(String),
    Fail(String),
}

struct Report(Vec<(String, Verdict)>);

impl Report {
    fn add(&mut self, item: impl Into<String>, verdict: Verdict) {
        self.0.push((item.into(), verdict));
    }

    fn print(&self) -> ExitCode {
        let mut failed = false;
        for (item, verdict) in &self.0 {
            let (tag, text) = match verdict {
                Verdict::Ok(t) => ("ok  ", t),
                Verdict::Warn(t) => ("warn", t),
                Verdict::Fail(t) => {
                    failed = true;
                    ("FAIL", t)
                }
            };
            println!("{tag}  {item}: {text}");
        }
        if failed {
            println!("configuration refused");
            ExitCode::FAILURE
        } else {
            println!("configuration ready");
            ExitCode::SUCCESS
        }
    }
}

pub fn check(role: ServedRole, config: &Path) -> ExitCode {
    let mut report = Report(Vec::new());
    let shown = config.display().to_string();
    match role {
        ServedRole::Pva => match verifier::Config::load(config) {
            Err(e) => report.add(shown, Verdict::Fail(e.to_string())),
            Ok(pva) => {
                report.add(shown, Verdict::Ok("loaded".into()));
                let roots = pva.client_ca.as_deref();
                let expected = Expected::role(Role::Pva);
                certificate(&mut report, "TLS certificate", &pva.tls_certificate, roots, &expected);
                certificate(
                    &mut report,
                    "EAR signing certificate",
                    &pva.signing_certificate,
                    roots,
                    &expected,
                );
                if let Err(e) = pva.tls() {
                    report.add("TLS", Verdict::Fail(e.to_string()));
                }
                let store = pva.database.clone();
                let found = verifier::Pva::check_config(&pva).map_err(|e| e.to_string());
                judge_store(&mut report, &store, found);
            }
        },
        ServedRole::Ro => match ro::RoConfig::load(config) {
            Err(e) => report.add(shown, Verdict::Fail(e.to_string())),
            Ok(ro) => {
                report.add(shown, Verdict::Ok("loaded".into()));
                let expected = Expected::named(Role::Ro, "ro");
                let ci = Some(ro.pki.ci_root.as_path());
                certificate(&mut report, "certificate", &ro.pki.certificate, ci, &expected);
                let store = ro.store.location();
                let found = ro::Ro::check_config(ro).map_err(|e| e.to_string());
                judge_store(&mut report, &store, found);
            }
        },
        ServedRole::Mno => match mno::MnoConfig::load(config) {
            Err(e) => report.add(shown, Verdict::Fail(e.to_string())),
            Ok(mno) => {
                report.add(shown, Verdict::Ok(format!("loaded, operator {}", mno.name())));
                let expected = Expected::named(Role::Operator, mno.name());
                let ci = Some(mno.ci_root.as_path());
                certificate(&mut report, "certificate", &mno.certificate, ci, &expected);
                let found = mno::Operator::check_config(&mno).map_err(|e| e.to_string());
                judge_store(&mut report, &mno.database, found);
            }
        },
    }
    report.print()
}

fn judge_store(report: &mut Report, store: &storage::Location, found: Result<StoreCheck, String>) {
    let item = format!("store {store}");
    match found {
        Err(e) => report.add(item, Verdict::Fail(e)),
        Ok(StoreCheck::Missing) => {
            let none = match store {
                storage::Location::File(_) => "no file yet: a start creates the store",
                storage::Location::Postgres(_) => "no tables yet: a start creates the store",
            };
            report.add(item, Verdict::Ok(none.into()));
        }
        Ok(StoreCheck::Ready { unstamped, too_open }) => {
            report.add(item.clone(), Verdict::Ok("this role's store, intact".into()));
            if unstamped {
                report.add(
                    item.clone(),
                    Verdict::Warn("predates the stamp; a start stamps it".into()),
                );
            }
            for file in too_open {
                report.add(
                    item.clone(),
                    Verdict::Warn(format!(
                        "{} is readable by others; a start makes it 0600",
                        file.display()
                    )),
                );
            }
        }
    }
}

/// The leaf of the PEM chain at `path`: chains to the CI root at `ci` now, certifies
/// `expected`, and does not expire soon.
fn certificate(
    report: &mut Report,
    what: &str,
    path: &Path,
    ci: Option<&Path>,
    expected: &Expected,
) {
    let item = format!("{what} {}", path.display());
    let now = SystemTime::now();
    let verdict = (|| -> Result<Verdict, String> {
        let pem = std::fs::read(path).map_err(|e| e.to_string())?;
        let chain = protocol::x509::certificates_from_pem(&pem).map_err(|e| e.to_string())?;
        let (leaf, intermediates) = chain.split_first().ok_or("no certificate in the file")?;
        let Some(ci) = ci else {
            return Ok(Verdict::Warn(
                "no CI root configured (client_ca): chain not checked".into(),
            ));
        };
        let anchors = TrustAnchors::from_file(ci).map_err(|e| format!("CI root: {e}"))?;
        let inter: Vec<&[u8]> = intermediates.iter().map(Vec::as_slice).collect();
        verify_chain(leaf, &inter, &anchors, &ChainPolicy::at(now)).map_err(|e| e.to_string())?;
        let role = CertifiedRole::of_der(leaf).map_err(|e| e.to_string())?;
        role.require(expected).map_err(|e| e.to_string())?;
        let (_, cert) = x509_parser::parse_x509_certificate(leaf).map_err(|e| e.to_string())?;
        let not_after = cert.validity().not_after;
        let left = not_after.timestamp() - unix(now);
        let days = left / 86_400;
        let text = format!("{role}, valid until {not_after} ({days} days)");
        Ok(if left < EXPIRY_WARNING.as_secs() as i64 {
            Verdict::Warn(format!("{text}: renew it soon"))
        } else {
            Verdict::Ok(text)
        })
    })()
    .unwrap_or_else(Verdict::Fail);
    report.add(item, verdict);
}

fn unix(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}
