//! The invariants of a settled campaign (docs/flow.md, "Crash safety"), checked on the
//! operators' stores, the cards, and with a real Milenage AKA of each card against each
//! operator's AuC (`tresor mno aka`); with several instances also on their shared RO store.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use serde_json::Value;

use super::{Deployment, Device};
use crate::support::TRESOR;

impl Deployment {
    /// Checks the invariants of a settled campaign on the stores, the cards and by AKA with
    /// each operator's AuC (the roles must be stopped). Returns (switched, rolled back).
    pub fn check_invariants(&mut self, id: &str, status: &Value) -> (usize, usize) {
        self.stop();
        if let Some(pg) = &self.pg {
            super::scale_out::check_shared_store(pg);
        }
        let a = operator_store(&self.store_path("mno-a"));
        let b = operator_store(&self.store_path("mno-b"));
        // No IMSI is issued twice, no device gets two new IMSIs.
        let b_allocations = query(
            &b,
            "SELECT imsi, COALESCE(campaign, ''), COALESCE(device_id, '') FROM allocations",
        );
        let imsis: BTreeSet<&String> = b_allocations.iter().map(|r| &r[0]).collect();
        assert_eq!(imsis.len(), b_allocations.len(), "an IMSI was allocated twice at MNO-B");
        let per_device: BTreeSet<(&String, &String)> =
            b_allocations.iter().filter(|r| !r[1].is_empty()).map(|r| (&r[1], &r[2])).collect();
        assert_eq!(
            per_device.len(),
            b_allocations.iter().filter(|r| !r[1].is_empty()).count(),
            "a device got two IMSIs in one campaign"
        );
        let (mut switched, mut rolled_back) = (0, 0);
        for device in &self.devices {
            let row = status["devices"]
                .as_array()
                .unwrap()
                .iter()
                .find(|d| d["device_id"] == device.device_id.as_str())
                .unwrap_or_else(|| {
                    panic!("device {} not in the campaign: {status:#}", device.device_id)
                });
            let state = row["state"].as_str().unwrap();
            let card = uicc::Card::open(&device.card).unwrap_or_else(|e| {
                panic!("device-{}: card does not open after the run: {e}", device.index)
            });
            assert!(
                card.usim_active() && !card.tre_active(),
                "device-{}: USIM must be active, TRE not",
                device.index
            );
            assert!(
                card.change().is_none_or(|c| !c.on_trial()),
                "device-{}: still on trial",
                device.index
            );
            let imsi = card.imsi().to_string();
            drop(card);
            let report = |store: &rusqlite::Connection| {
                query(
                    store,
                    &format!(
                        "SELECT outcome FROM reports WHERE campaign = '{id}' AND device_id = '{}'",
                        device.device_id
                    ),
                )
            };
            let new_imsi = query(
                &b,
                &format!(
                    "SELECT imsi FROM allocations WHERE campaign = '{id}' AND device_id = '{}'",
                    device.device_id
                ),
            )
            .first()
            .map(|r| r[0].clone());
            match state {
                "switched" => {
                    switched += 1;
                    assert_eq!(
                        Some(&imsi),
                        new_imsi.as_ref(),
                        "device-{}: the card runs MNO-B's IMSI",
                        device.index
                    );
                    assert_eq!(
                        subscriber_status(&b, &imsi).as_deref(),
                        Some("live"),
                        "device-{}: IMSI_B live",
                        device.index
                    );
                    assert_eq!(
                        subscriber_status(&a, &device.old_imsi).as_deref(),
                        Some("retired"),
                        "device-{}: IMSI_A retired",
                        device.index
                    );
                    assert_eq!(
                        report(&a),
                        vec![vec!["success".to_owned()]],
                        "device-{}: MNO-A's report",
                        device.index
                    );
                    assert_eq!(
                        report(&b),
                        vec![vec!["success".to_owned()]],
                        "device-{}: MNO-B's report",
                        device.index
                    );
                    self.assert_aka(device, "mno-b.toml", true);
                }
                "rolled-back" => {
                    rolled_back += 1;
                    assert_eq!(
                        imsi, device.old_imsi,
                        "device-{}: the card runs its old IMSI again",
                        device.index
                    );
                    let old = subscriber_status(&a, &device.old_imsi);
                    assert!(
                        matches!(old.as_deref(), Some("active" | "live")),
                        "device-{}: IMSI_A in service, not {old:?}",
                        device.index
                    );
                    if let Some(new) = &new_imsi {
                        let status_b = subscriber_status(&b, new);
                        assert!(
                            matches!(status_b.as_deref(), None | Some("retired")),
                            "device-{}: IMSI_B {new} must not be live: {status_b:?}",
                            device.index
                        );
                    }
                    // The operator that never heard of the campaign has no row to report to.
                    for (name, store) in [("mno-a", &a), ("mno-b", &b)] {
                        let r = report(store);
                        assert!(
                            r.is_empty() || r == vec![vec!["failure".to_owned()]],
                            "device-{}: {name}'s report {r:?}",
                            device.index
                        );
                    }
                    self.assert_aka(device, "mno-a.toml", true);
                }
                other => panic!("device-{} ended {other}: {row:#}", device.index),
            }
            assert_eq!(row["reported"], true, "device-{}: reports acknowledged", device.index);
        }
        (switched, rolled_back)
    }

    /// A real Milenage AKA between the operator's AuC and the device's card.
    pub(super) fn assert_aka(&self, device: &Device, operator: &str, ok: bool) {
        let out = Command::new(TRESOR)
            .current_dir(&self.dir)
            .args([
                "mno",
                "aka",
                "--config",
                operator,
                "--card",
                device.card.to_str().unwrap(),
                "--json",
            ])
            .output()
            .unwrap();
        let result: Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|_| panic!("mno aka: {}", String::from_utf8_lossy(&out.stderr)));
        assert_eq!(result["ok"], ok, "device-{}: AKA with {operator}: {result}", device.index);
    }
}

fn operator_store(path: &Path) -> rusqlite::Connection {
    rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap()
}

fn query(conn: &rusqlite::Connection, sql: &str) -> Vec<Vec<String>> {
    let mut stmt = conn.prepare(sql).unwrap();
    let n = stmt.column_count();
    stmt.query_map([], |r| {
        (0..n)
            .map(|i| {
                r.get::<_, rusqlite::types::Value>(i).map(|v| match v {
                    rusqlite::types::Value::Text(t) => t,
                    rusqlite::types::Value::Integer(i) => i.to_string(),
                    rusqlite::types::Value::Null => String::new(),
                    other => format!("{other:?}"),
                })
            })
            .collect::<Result<Vec<_>, _>>()
    })
    .unwrap()
    .collect::<Result<Vec<_>, _>>()
    .unwrap()
}

fn subscriber_status(conn: &rusqlite::Connection, imsi: &str) -> Option<String> {
    query(conn, &format!("SELECT status FROM subscribers WHERE imsi = '{imsi}'"))
        .first()
        .map(|r| r[0].clone())
}
