//! The old operator's part of a campaign (MNO-A, the campaign's `from`; TR 33.812
//! alternative 3d steps 3–4): receiving the new operator's IMSI list, issuing each device's
//! "activate TRE" OTA command ([`protocol::ota`], ETSI TS 102 225 §5.1 security: AES-CMAC
//! with the card's KID, counter above the card's last), which names the campaign and its new
//! operator, and verifying the card's MACed response to it.
//!
//! The response is the ICCID binding (docs/flow.md, "MNO-A"): the campaign pairs a device
//! with an ICCID on the RO's word, but only the card that holds that subscription's KID can
//! answer the command, naming its ICCID, its IMSI, the counter and the campaign. MNO-A
//! records the verified answer and retires the old subscription on the final report only
//! for a device whose card proved it ([`Operator::report`]). An unproven pairing holds
//! nothing: it does not keep the ICCID from another campaign, and the first campaign whose
//! card proves the activation holds the ICCID until its report.
//!
//! The IMSI list is accepted only from the operator the campaign names as `to` (the common
//! name of the verified TLS client certificate): anyone else — the RO, another operator —
//! is refused before the body is read, and nothing is stored (attack 15). The OTA counter
//! is persisted in the same transaction that records the command, before the command is
//! returned, so no counter value is ever used twice; a repeated request returns the stored
//! command.

use std::collections::BTreeSet;

use protocol::DeviceId;
use protocol::ota::{
    self, Activation, COUNTER_MAX, OtaCommand, OtaError, Response, ResponseStatus,
};
use protocol::{Iccid, Imsi};
use serde_bytes::ByteBuf;
use storage::{Tx, args};

use super::api::{
    ActivateTreResponse, CampaignId, ImsiList, ImsiListAck, MAX_DEVICES, Party, TreActivatedAck,
};
use super::error::{MnoError, Result};
use super::operator::{CampaignRow, DeviceRow, Operator};
use super::records::{SubscriberRecord, SubscriberStatus};
use super::store::{now_unix, to_sql_u64};

impl Operator {
    /// Refuses unless `sender` (the client certificate's common name) is the campaign's
    /// `to` operator. Checked before the body is decoded.
    pub fn check_imsi_list_sender(&self, sender: Option<&str>, id: &CampaignId) -> Result<()> {
        let c = self.store.read(|tx| CampaignRow::load(tx, id))?;
        let sender = sender.unwrap_or("");
        if sender != c.to {
            tracing::warn!(campaign = %id, sender, expected = %c.to, "IMSI list from the wrong party refused");
            return Err(MnoError::ImsiListSenderNotCampaignOperator {
                campaign: id.to_string(),
                expected: c.to,
                sender: sender.into(),
            });
        }
        Ok(())
    }

    /// Step 3, old operator: stores the new IMSI of each listed device. All entries or none;
    /// an entry already received with the same IMSI is accepted again, with another IMSI it
    /// is a conflict.
    pub fn receive_imsi_list(
        &self,
        sender: Option<&str>,
        id: &CampaignId,
        list: &ImsiList,
    ) -> Result<ImsiListAck> {
        let mismatch = |reason: &str| MnoError::ImsiListMismatch {
            campaign: id.to_string(),
            reason: reason.into(),
        };
        if list.entries.is_empty() || list.entries.len() > MAX_DEVICES {
            return Err(mismatch("the list must have 1 to 10000 entries"));
        }
        let devices: BTreeSet<&DeviceId> = list.entries.iter().map(|e| &e.device_id).collect();
        let imsis: BTreeSet<&str> = list.entries.iter().map(|e| e.imsi.as_str()).collect();
        if devices.len() != list.entries.len() || imsis.len() != list.entries.len() {
            return Err(mismatch("a device or an IMSI is listed twice"));
        }
        let sender = sender.unwrap_or("");
        let accepted = self.store.write(|tx| {
            let c = CampaignRow::load(tx, id)?;
            // Checked again inside the transaction that stores the list.
            if sender != c.to {
                return Err(MnoError::ImsiListSenderNotCampaignOperator {
                    campaign: id.to_string(),
                    expected: c.to,
                    sender: sender.into(),
                });
            }
            c.require(&self.name, Party::OldOperator)?;
            let mut accepted = 0u64;
            for entry in &list.entries {
                let device = DeviceRow::load(tx, id, &entry.device_id).map_err(|e| match e {
                    MnoError::DeviceNotInCampaign { .. } => mismatch("a listed device is not in the campaign"),
                    other => other,
                })?;
                if device.iccid != entry.iccid {
                    return Err(mismatch("a listed ICCID is not the device's ICCID in the campaign"));
                }
                device.require_open(id, &entry.device_id)?;
                let existing: Option<String> = tx
                    .query_opt(
                        "SELECT new_imsi FROM imsi_lists WHERE campaign = ?1 AND device_id = ?2",
                        args![id.as_str(), entry.device_id.to_hex()],
                    )?
                    .map(|r| r.get(0))
                    .transpose()?;
                match existing {
                    Some(imsi) if imsi == entry.imsi.as_str() => {}
                    Some(_) => return Err(MnoError::ImsiListConflict { device: entry.device_id.to_hex() }),
                    None => {
                        tx.execute(
                            "INSERT INTO imsi_lists (campaign, device_id, iccid, new_imsi, sender, received_at)
                             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                            args![
                                id.as_str(),
                                entry.device_id.to_hex(),
                                entry.iccid.as_str(),
                                entry.imsi.as_str(),
                                sender,
                                now_unix()?
                            ],
                        )?;
                    }
                }
                accepted += 1;
            }
            Ok(accepted)
        })?;
        tracing::info!(campaign = %id, sender, accepted, "IMSI list accepted");
        Ok(ImsiListAck { accepted })
    }

    /// Step 4, old operator: the device's "activate TRE" OTA command for this campaign and its
    /// new operator, sealed with its card's KID and the next OTA counter. Only after the new
    /// operator listed a new IMSI for the device, and while no other open campaign holds a
    /// proven activation of the card; idempotent.
    pub fn activate_tre(
        &self,
        id: &CampaignId,
        device_id: &DeviceId,
    ) -> Result<ActivateTreResponse> {
        let (response, fresh) = self.store.write(|tx| {
            let c = CampaignRow::load(tx, id)?;
            c.require(&self.name, Party::OldOperator)?;
            let device = DeviceRow::load(tx, id, device_id)?;
            device.require_open(id, device_id)?;
            if let Some((command, counter)) = device.tre_command {
                return Ok((
                    ActivateTreResponse { command: ByteBuf::from(command), counter },
                    false,
                ));
            }
            if !device.imsi_listed {
                return Err(MnoError::ImsiListMissing { device: device_id.to_hex() });
            }
            if let Some(other) = proven_elsewhere(tx, &device.iccid, id, device_id)? {
                return Err(other);
            }
            let activation = Activation::new(id.as_str(), &c.to)?;
            let imsi =
                device.old_imsi.ok_or(MnoError::Corrupt("campaign device without old IMSI"))?;
            let record = SubscriberRecord::load(tx, &self.sealer, &imsi)?
                .ok_or(MnoError::Corrupt("campaign device without subscriber"))?;
            if !matches!(record.status, SubscriberStatus::Active | SubscriberStatus::Live) {
                return Err(MnoError::SubscriberState {
                    imsi: imsi.to_string(),
                    status: record.status.name(),
                    needed: "active",
                });
            }
            let counter = record
                .ota
                .counter
                .checked_add(1)
                .filter(|c| *c <= COUNTER_MAX)
                .ok_or(MnoError::Ota(OtaError::CounterRange))?;
            let command =
                ota::seal_activate_tre(&record.ota.kid, &record.iccid, counter, &activation)?;
            SubscriberRecord::set_ota_counter(tx, &imsi, counter)?;
            tx.execute(
                "UPDATE campaign_devices SET tre_command = ?3, tre_counter = ?4, tre_issued_at = ?5
                 WHERE campaign = ?1 AND device_id = ?2",
                args![id.as_str(), device_id.to_hex(), &command, to_sql_u64(counter)?, now_unix()?],
            )?;
            Ok((ActivateTreResponse { command: ByteBuf::from(command), counter }, true))
        })?;
        if fresh {
            tracing::info!(campaign = %id, device = %device_id, counter = response.counter, "activate-TRE command issued");
        }
        Ok(response)
    }

    /// Step 4 confirmed, old operator: the card's MACed response to the device's
    /// activate-TRE command, as the device attached with it. It must verify with the KID of
    /// the subscription the campaign pairs with the device and name its ICCID and IMSI, the
    /// counter of the command issued, this campaign and its new operator; then it is
    /// recorded, and the ICCID is held by this campaign until its report (refused,
    /// `subscription-in-change`, if another open campaign's card proved it first). The same
    /// response again is accepted again.
    pub fn tre_activated(
        &self,
        id: &CampaignId,
        device_id: &DeviceId,
        response: &[u8],
    ) -> Result<TreActivatedAck> {
        let (ack, fresh) = self.store.write(|tx| {
            let c = CampaignRow::load(tx, id)?;
            c.require(&self.name, Party::OldOperator)?;
            let device = DeviceRow::load(tx, id, device_id)?;
            device.require_open(id, device_id)?;
            let (_, counter) = device
                .tre_command
                .as_ref()
                .ok_or_else(|| MnoError::TreActivationNotIssued(device_id.to_hex()))?;
            let imsi = device
                .old_imsi
                .clone()
                .ok_or(MnoError::Corrupt("campaign device without old IMSI"))?;
            let record = SubscriberRecord::load(tx, &self.sealer, &imsi)?
                .ok_or(MnoError::Corrupt("campaign device without subscriber"))?;
            let expected = Response {
                command: OtaCommand::ActivateTre,
                counter: *counter,
                status: ResponseStatus::PorOk,
                iccid: device.iccid.clone(),
                imsi: imsi.clone(),
                activation: Some(Activation::new(id.as_str(), &c.to)?),
            };
            ota::verify_response(response, &record.ota.kid, &expected).map_err(|e| {
                MnoError::TreActivationNotProven {
                    device: device_id.to_hex(),
                    iccid: device.iccid.to_string(),
                    reason: e.to_string(),
                }
            })?;
            let ack = TreActivatedAck { iccid: device.iccid.clone(), imsi, counter: *counter };
            // A response that verified says exactly what was expected: it is the one
            // recorded, if any.
            if recorded_activation(tx, id, device_id)?.is_some() {
                return Ok((ack, false));
            }
            if let Some(other) = proven_elsewhere(tx, &device.iccid, id, device_id)? {
                return Err(other);
            }
            tx.execute(
                "INSERT INTO tre_activations
                     (campaign, device_id, iccid, imsi, counter, response, verified_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                args![
                    id.as_str(),
                    device_id.to_hex(),
                    ack.iccid.as_str(),
                    ack.imsi.as_str(),
                    to_sql_u64(ack.counter)?,
                    response,
                    now_unix()?
                ],
            )?;
            Ok((ack, true))
        })?;
        if fresh {
            tracing::info!(campaign = %id, device = %device_id, iccid = %ack.iccid, counter = ack.counter, "TRE activation proven by the card");
        }
        Ok(ack)
    }
}

/// A card's verified answer to activate-TRE, as recorded.
pub(crate) struct RecordedActivation {
    pub iccid: Iccid,
    pub imsi: Imsi,
}

/// The verified activation of `device` in `campaign`, if its card proved one.
pub(crate) fn recorded_activation(
    tx: &mut dyn Tx,
    campaign: &CampaignId,
    device: &DeviceId,
) -> Result<Option<RecordedActivation>> {
    let row = tx.query_opt(
        "SELECT iccid, imsi FROM tre_activations WHERE campaign = ?1 AND device_id = ?2",
        args![campaign.as_str(), device.to_hex()],
    )?;
    row.map(|r| {
        Ok(RecordedActivation {
            iccid: r.get::<String>(0)?.parse().map_err(|_| MnoError::Corrupt("ICCID"))?,
            imsi: r.get::<String>(1)?.parse().map_err(|_| MnoError::Corrupt("IMSI"))?,
        })
    })
    .transpose()
}

/// The refusal, if another open campaign (another campaign, or another device of this one)
/// holds a proven activation of the card `iccid`: the card is in that change. Decisive when
/// the caller holds the card's subscriber row ([`SubscriberRecord::load`] locks it on
/// PostgreSQL): two instances then never record proven activations of one card at once.
pub(crate) fn proven_elsewhere(
    tx: &mut dyn Tx,
    iccid: &Iccid,
    campaign: &CampaignId,
    device: &DeviceId,
) -> Result<Option<MnoError>> {
    let other = tx.query_opt(
        "SELECT ta.campaign, ta.device_id FROM tre_activations ta
         LEFT JOIN reports r ON r.campaign = ta.campaign AND r.device_id = ta.device_id
         WHERE ta.iccid = ?1 AND r.outcome IS NULL
           AND NOT (ta.campaign = ?2 AND ta.device_id = ?3)",
        args![iccid.as_str(), campaign.as_str(), device.to_hex()],
    )?;
    other
        .map(|r| {
            Ok(MnoError::SubscriptionInChange {
                iccid: iccid.to_string(),
                campaign: r.get(0)?,
                device: r.get(1)?,
            })
        })
        .transpose()
}
