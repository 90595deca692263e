//! Fault points for the crash-safety tests (docs/flow.md, "Crash safety"): every role names
//! the places where it is about to make, or has just made, a durable write or a call to a
//! peer, and the environment variable `TRESOR_FAULT` can make one of them misbehave, so a
//! test kills a real process at exactly that instruction and then checks the invariants.
//!
//! `TRESOR_FAULT` is a comma-separated list of `POINT:ACTION[@N]`: at the `N`th time (default
//! the first) the process reaches `POINT`, it performs `ACTION`:
//! - `kill`: SIGKILL to itself, as `kill -9` would: no destructor, no flush, no goodbye;
//! - `stop`: SIGSTOP to itself, frozen until someone sends SIGCONT;
//! - `error`: the point returns [`Injected`], which its caller treats as a failed write
//!   (what a full disk does);
//! - `sleep=MS`: waits MS milliseconds (a slow disk or peer), then carries on.
//!
//! Without the variable every point is one relaxed atomic load. The point names are listed
//! in docs/flow.md; [`point`] accepts any name, so a misspelt one in a test simply never
//! fires — the tests therefore assert that the process they meant to kill died.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// The environment variable read once per process.
pub const FAULT_ENV: &str = "TRESOR_FAULT";

/// What a fault point does when it fires.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    Kill,
    Stop,
    Error,
    Sleep(Duration),
}

/// A planned fault: the point, its action, and on which hit it fires.
#[derive(Debug)]
struct Plan {
    point: String,
    action: Action,
    nth: u32,
    hits: AtomicU32,
}

/// The failure an `error` fault injects; callers turn it into their own error type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("injected fault at {0}")]
pub struct Injected(pub String);

fn plans() -> &'static [Plan] {
    static PLANS: OnceLock<Vec<Plan>> = OnceLock::new();
    PLANS.get_or_init(|| match std::env::var(FAULT_ENV) {
        Ok(spec) => parse(&spec).unwrap_or_else(|e| {
            // A test that sets a broken plan must notice: refuse loudly rather than run
            // without the fault it asked for.
            eprintln!("{FAULT_ENV}={spec:?}: {e}");
            std::process::exit(2)
        }),
        Err(_) => Vec::new(),
    })
}

/// Parses a `TRESOR_FAULT` value.
fn parse(spec: &str) -> Result<Vec<Plan>, String> {
    spec.split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|item| {
            let (point, rest) =
                item.trim().split_once(':').ok_or_else(|| format!("{item:?} has no ':'"))?;
            let (action, nth) = match rest.split_once('@') {
                Some((a, n)) => {
                    (a, n.parse::<u32>().map_err(|_| format!("{item:?}: bad hit count"))?)
                }
                None => (rest, 1),
            };
            let action = match action {
                "kill" => Action::Kill,
                "stop" => Action::Stop,
                "error" => Action::Error,
                other => match other.strip_prefix("sleep=").map(str::parse::<u64>) {
                    Some(Ok(ms)) => Action::Sleep(Duration::from_millis(ms)),
                    _ => return Err(format!("{item:?}: unknown action {other:?}")),
                },
            };
            if point.is_empty() || nth == 0 {
                return Err(format!("{item:?}: empty point or hit 0"));
            }
            Ok(Plan { point: point.to_owned(), action, nth, hits: AtomicU32::new(0) })
        })
        .collect()
}

/// Reaches fault point `name`. Returns `Err` only for an `error` fault planned here.
pub fn point(name: &str) -> Result<(), Injected> {
    let plans = plans();
    if plans.is_empty() {
        return Ok(());
    }
    for plan in plans.iter().filter(|p| p.point == name) {
        if plan.hits.fetch_add(1, Ordering::SeqCst) + 1 != plan.nth {
            continue;
        }
        eprintln!("{FAULT_ENV}: {name}: {:?}", plan.action);
        match &plan.action {
            Action::Kill => signal_self("-KILL"),
            Action::Stop => signal_self("-STOP"),
            Action::Sleep(d) => std::thread::sleep(*d),
            Action::Error => return Err(Injected(name.to_owned())),
        }
    }
    Ok(())
}

/// Sends a signal to this process with kill(1), which needs no unsafe code; for SIGKILL it
/// waits for the end.
fn signal_self(signal: &str) {
    let pid = std::process::id().to_string();
    let _ = std::process::Command::new("kill").arg(signal).arg(&pid).status();
    if signal == "-KILL" {
        loop {
            std::thread::sleep(Duration::from_secs(1));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_parse() {
        let plans = parse("ro.install.after:kill@3, mno.report.before:error,x:sleep=20").unwrap();
        assert_eq!(plans.len(), 3);
        assert_eq!(
            (plans[0].point.as_str(), &plans[0].action, plans[0].nth),
            ("ro.install.after", &Action::Kill, 3)
        );
        assert_eq!(plans[1].action, Action::Error);
        assert_eq!(plans[2].action, Action::Sleep(Duration::from_millis(20)));
        for bad in ["nocolon", "p:explode", "p:kill@0", ":kill", "p:kill@x", "p:sleep=z"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        assert!(parse("").unwrap().is_empty());
    }

    #[test]
    fn without_a_plan_every_point_passes() {
        // The test process has no TRESOR_FAULT.
        assert_eq!(point("anything"), Ok(()));
    }
}
