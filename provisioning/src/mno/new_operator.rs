//! The new operator's part of a campaign (MNO-B, the campaign's `to`; TR 33.812 alternative
//! 3d steps 3, 6–7, 9–10 and 12): allocating one IMSI per device and sending the list to
//! the old operator, accepting the DRF's registration, turning a verified EAR into a signed
//! profile, and proving the new USIM with an AKA run against its AuC.
//!
//! The EAR is verified here, independently of the DPF (`protocol::ear`: PVA signature, chain
//! to the CI root, signer role, fresh, affirming, this device, with a bundle key). The
//! profile's sequence is the EAR's rollback counter + 1 and its `ear_hash` the SHA-256 of
//! the EAR as received. The signed profile leaves this operator only encrypted to the EAR's
//! bundle key (`protocol::bundle::encrypt_bundle`): end to end to the attested TPM, so the
//! RO that relays it, or anyone replaying the EAR with the RO's certificate, never reads K,
//! OPc, KIc or KID (issue 12, "Trust boundaries").
//!
//! A repeat with the same EAR re-opens the same signed profile (kept sealed in the store,
//! since its payload holds K and OPc) and encrypts it again, with a fresh ephemeral key and
//! IV as ECDH-ES wants for every message (RFC 9053 §6.3.1): the envelope differs, what it
//! carries — profile, sequence, validity, and so the device's install and receipt — does
//! not. Storing the bundle instead would keep a second copy of the subscription, under a key
//! this operator does not hold, for no gain: the RO records the first bundle it received,
//! and asks again only when it lost that answer. Another valid EAR for the same device gets
//! the same subscription signed anew for it.
//!
//! A subscription becomes `live` only when the card's RES equals XRES (compared in constant
//! time): a report cannot make it live.

use std::sync::Arc;
use std::time::SystemTime;

use protocol::DeviceId;
use protocol::bundle::{self, BundleError, ProfilePayload};
use protocol::device_api::AkaResult;
use protocol::ear::{EarError, unix};
use protocol::milenage::{Auts, Rand, Res};
use serde_bytes::ByteBuf;
use storage::{Tx, args};
use zeroize::Zeroizing;

use super::api::{
    AkaChallenge, AkaVerdict, AttestationResponse, CampaignId, ImsiList, ImsiListEntry,
    MAX_REASON_LEN, Party, PrepareResponse, RegisterResponse,
};
use super::auc;
use super::client::MnoClient;
use super::error::{MnoError, Result};
use super::operator::{CampaignRow, DeviceRow, Operator};
use super::pool::{self, Allocation, Purpose};
use super::records::{SubscriberRecord, SubscriberStatus};
use super::seal::Field;
use super::store::{now_unix, to_sql_u64};

/// The card's answer to AUTHENTICATE, checked for shape.
enum AkaAnswer {
    Res(Res),
    Auts(Auts),
    Refused(String),
}

/// What an AKA response did to the outstanding challenge (committed either way).
enum AkaStep {
    Live,
    Challenge(AkaChallenge),
    Failed(MnoError),
}

impl Operator {
    /// Step 3, new operator: one IMSI per device from the pool (all in one transaction;
    /// already allocated devices keep theirs), then the list to the old operator over
    /// mutual TLS. Repeatable: the same list is sent again.
    pub async fn prepare(self: &Arc<Self>, id: &CampaignId) -> Result<PrepareResponse> {
        let me = Arc::clone(self);
        let campaign = id.clone();
        let (from, entries) = blocking(move || me.allocate_campaign(&campaign)).await?;
        let base =
            self.peers.get(&from).ok_or_else(|| MnoError::PeerNotConfigured(from.clone()))?;
        let http = self.http.get(&from).ok_or_else(|| MnoError::PeerNotConfigured(from.clone()))?;
        let client = MnoClient::new(http.clone(), base);
        let list = ImsiList { entries: entries.clone() };
        client.send_imsi_list(id, &list).await.map_err(|e| {
            let reason = match &e {
                transport::Error::Problem(p) => format!("{} {}", p.status, p.type_uri),
                other => other.to_string(),
            };
            tracing::warn!(campaign = %id, peer = %from, %reason, "IMSI list not accepted");
            MnoError::PeerFailed { peer: from.clone(), reason }
        })?;
        let me = Arc::clone(self);
        let campaign = id.clone();
        blocking(move || {
            me.store.write(|tx| {
                tx.execute(
                    "UPDATE campaign_devices SET imsi_list_sent_at = ?2
                     WHERE campaign = ?1 AND imsi_list_sent_at IS NULL",
                    args![campaign.as_str(), now_unix()?],
                )?;
                Ok(())
            })
        })
        .await?;
        tracing::info!(campaign = %id, peer = %from, devices = entries.len(), "IMSI list delivered");
        Ok(PrepareResponse { campaign: id.clone(), entries })
    }

    fn allocate_campaign(&self, id: &CampaignId) -> Result<(String, Vec<ImsiListEntry>)> {
        self.store.write(|tx| {
            // Locked: a second instance preparing the same campaign waits, then finds the
            // allocations made.
            let c = CampaignRow::lock(tx, id)?;
            c.require(&self.name, Party::NewOperator)?;
            let devices = tx.query(
                "SELECT device_id, iccid FROM campaign_devices WHERE campaign = ?1 ORDER BY device_id",
                args![id.as_str()],
            )?;
            let mut entries = Vec::with_capacity(devices.len());
            for row in devices {
                let (device, iccid): (String, String) = (row.get(0)?, row.get(1)?);
                let device: DeviceId = device.parse().map_err(|_| MnoError::Corrupt("device id"))?;
                let allocation = match pool::allocation_for(tx, id.as_str(), &device)? {
                    Some(a) => a,
                    None => pool::allocate(
                        tx,
                        &self.pool,
                        Purpose::Campaign { campaign: id.as_str(), device: &device },
                    )?,
                };
                entries.push(ImsiListEntry {
                    device_id: device,
                    iccid: iccid.parse().map_err(|_| MnoError::Corrupt("ICCID"))?,
                    imsi: allocation.imsi,
                });
            }
            Ok((c.from, entries))
        })
    }

    /// Steps 6–7, new operator: the DRF registers a prepared device; the answer asks for
    /// validation. Idempotent.
    pub fn register(&self, id: &CampaignId, device_id: &DeviceId) -> Result<RegisterResponse> {
        self.store.write(|tx| {
            let (device, _) = self.new_side(tx, id, device_id)?;
            if !device.imsi_list_sent {
                return Err(MnoError::ImsiListNotDelivered(device_id.to_hex()));
            }
            tx.execute(
                "UPDATE campaign_devices SET registered_at = ?3
                 WHERE campaign = ?1 AND device_id = ?2 AND registered_at IS NULL",
                args![id.as_str(), device_id.to_hex(), now_unix()?],
            )?;
            Ok(())
        })?;
        tracing::info!(campaign = %id, device = %device_id, "device registered; validation requested");
        Ok(RegisterResponse { validation_required: true, ear_signers: self.ear_signers.clone() })
    }

    /// Steps 9–11, new operator: verifies the EAR, creates the subscriber record (once),
    /// signs the profile and encrypts it to the EAR's bundle key. The answer carries the
    /// bundle and the profile's non-secret facts; the plaintext never leaves this call.
    pub fn attestation(
        &self,
        id: &CampaignId,
        device_id: &DeviceId,
        ear: &[u8],
        now: SystemTime,
    ) -> Result<AttestationResponse> {
        let verified = self.ear.verify(ear, now, device_id, None)?;
        let bundle_key = verified.bundle_key()?.clone();
        let counter = verified.rollback_counter().ok_or(MnoError::EarWithoutRollbackCounter)?;
        let sequence = counter
            .checked_add(1)
            .ok_or_else(|| EarError::Malformed("rollback counter at its maximum".into()))?;
        let ear_hash = bundle::ear_hash(ear);
        let issued = unix(now);
        // Encrypted inside the transaction: a key the bundle cannot be encrypted to leaves
        // nothing behind (no record, no profile).
        let encrypt = |signed: &[u8]| {
            bundle::encrypt_bundle(signed, bundle_key.x(), bundle_key.y(), device_id, &ear_hash)
                .map_err(|e| match e {
                    BundleError::InvalidRecipientKey => MnoError::EarBundleKeyInvalid,
                    other => MnoError::BundleEncryption(other.to_string()),
                })
        };
        let (answer, fresh) = self.store.write(|tx| {
            let (device, allocation) = self.new_side(tx, id, device_id)?;
            if !device.registered {
                return Err(MnoError::NotRegistered(device_id.to_hex()));
            }
            let owner = allocation.imsi.as_str();
            let answer = |bundle: Vec<u8>| AttestationResponse {
                bundle: ByteBuf::from(bundle),
                device_id: device_id.clone(),
                campaign_iccid: device.iccid.clone(),
                iccid: allocation.iccid.clone(),
                imsi: allocation.imsi.clone(),
                sequence,
            };
            if let (Some(hash), Some(stored)) = (&device.ear_hash, &device.profile)
                && hash.as_slice() == ear_hash.as_slice()
            {
                // The same EAR: the same rollback counter, so the same sequence.
                let signed = self.sealer.open(owner, Field::Profile, stored)?;
                return Ok((answer(encrypt(&signed)?), false));
            }
            let record = match SubscriberRecord::load(tx, &self.sealer, &allocation.imsi)? {
                Some(r) => r,
                None => {
                    let mut r = SubscriberRecord::generate(
                        allocation.imsi.clone(),
                        allocation.iccid.clone(),
                        &self.op,
                        self.amf,
                        SubscriberStatus::Pending,
                    )?;
                    r.device_id = Some(device_id.clone());
                    r.campaign = Some(id.to_string());
                    r.insert(tx, &self.sealer)?;
                    r
                }
            };
            if record.status == SubscriberStatus::Retired {
                return Err(MnoError::SubscriberState {
                    imsi: owner.into(),
                    status: "retired",
                    needed: "pending",
                });
            }
            let payload = ProfilePayload {
                device_id: device_id.clone(),
                operator: self.name.clone(),
                campaign: id.to_string(),
                profile: record.profile(),
                sequence,
                issued,
                expires: issued.saturating_add(self.profile_validity.as_secs()),
                ear_hash,
            };
            let signed = Zeroizing::new(
                self.signer.sign(&payload).map_err(|e| MnoError::ProfileSigning(e.to_string()))?,
            );
            tx.execute(
                "UPDATE campaign_devices SET ear_hash = ?3, profile = ?4, profile_issued_at = ?5
                 WHERE campaign = ?1 AND device_id = ?2",
                args![
                    id.as_str(),
                    device_id.to_hex(),
                    &ear_hash[..],
                    self.sealer.seal(owner, Field::Profile, &signed)?,
                    now_unix()?
                ],
            )?;
            Ok((answer(encrypt(&signed)?), true))
        })?;
        if fresh {
            tracing::info!(
                campaign = %id, device = %device_id, imsi = %answer.imsi, sequence,
                "profile signed, encrypted to the attested bundle key"
            );
        }
        Ok(answer)
    }

    /// Step 12, new operator: RAND and AUTN for the new USIM. An outstanding challenge is
    /// returned again; otherwise a fresh vector with the next SQN (stored first).
    pub fn aka_challenge(&self, id: &CampaignId, device_id: &DeviceId) -> Result<AkaChallenge> {
        self.store.write(|tx| {
            let record = self.issued_record(tx, id, device_id)?;
            let outstanding = tx.query_opt(
                "SELECT rand, autn FROM aka_challenges WHERE imsi = ?1",
                args![record.imsi.as_str()],
            )?;
            if let Some(r) = outstanding {
                return Ok(AkaChallenge {
                    rand: ByteBuf::from(r.get::<Vec<u8>>(0)?),
                    autn: ByteBuf::from(r.get::<Vec<u8>>(1)?),
                });
            }
            self.new_challenge(tx, &record)
        })
    }

    /// Step 12, new operator: the card's answer to the outstanding challenge, which it
    /// consumes. RES = XRES makes the subscription live; a verified AUTS resynchronises the
    /// AuC and yields a new challenge; anything else fails. Idempotent: once live, the same
    /// RES again (its first verdict lost on the way back) is answered live again.
    pub fn aka_response(
        &self,
        id: &CampaignId,
        device_id: &DeviceId,
        result: &AkaResult,
    ) -> Result<AkaVerdict> {
        let answer = match result {
            AkaResult::Res { res } => AkaAnswer::Res(Res(fixed(res, "RES of 8 bytes")?)),
            AkaResult::Auts { auts } => AkaAnswer::Auts(Auts(fixed(auts, "AUTS of 14 bytes")?)),
            AkaResult::Failed { reason } => {
                AkaAnswer::Refused(reason.chars().take(MAX_REASON_LEN).collect())
            }
        };
        let step = self.store.write(|tx| {
            let mut record = self.issued_record(tx, id, device_id)?;
            let imsi = record.imsi.clone();
            let challenge = tx
                .query_opt("SELECT rand, xres FROM aka_challenges WHERE imsi = ?1", args![imsi.as_str()])?
                .map(|r| Ok::<_, MnoError>((r.get::<Vec<u8>>(0)?, r.get::<Vec<u8>>(1)?)))
                .transpose()?;
            let Some((rand, xres)) = challenge else {
                // The answer that made it live was taken and its verdict lost on the way
                // back: the RO asks again with the same RES, and the fact stands.
                if let AkaAnswer::Res(res) = &answer
                    && record.status == SubscriberStatus::Live
                    && self.accepted_res(tx, &imsi)?.as_ref() == Some(res)
                {
                    return Ok(AkaStep::Live);
                }
                return Err(MnoError::AkaNoChallenge(device_id.to_hex()));
            };
            tx.execute("DELETE FROM aka_challenges WHERE imsi = ?1", args![imsi.as_str()])?;
            let rand = Rand(rand.as_slice().try_into().map_err(|_| MnoError::Corrupt("RAND"))?);
            Ok(match &answer {
                AkaAnswer::Res(res) => {
                    let xres = Res(*self.sealer.open_array::<8>(imsi.as_str(), Field::Xres, &xres)?);
                    if *res == xres {
                        if record.status == SubscriberStatus::Pending {
                            SubscriberRecord::set_status(tx, &imsi, SubscriberStatus::Live)?;
                        }
                        tx.execute(
                            "INSERT INTO aka_accepted (imsi, res, accepted_at) VALUES (?1, ?2, ?3)
                             ON CONFLICT (imsi) DO UPDATE SET
                                res = excluded.res, accepted_at = excluded.accepted_at",
                            args![
                                imsi.as_str(),
                                self.sealer.seal(imsi.as_str(), Field::Xres, &res.0)?,
                                now_unix()?
                            ],
                        )?;
                        AkaStep::Live
                    } else {
                        AkaStep::Failed(MnoError::AkaResMismatch)
                    }
                }
                AkaAnswer::Auts(auts) => match auc::resync(&record, &rand, auts) {
                    Ok(sqn_ms) => {
                        tracing::info!(%imsi, seq = sqn_ms.seq(), ind = sqn_ms.ind(), "AuC resynchronised");
                        record.sqn = sqn_ms;
                        AkaStep::Challenge(self.new_challenge(tx, &record)?)
                    }
                    Err(e) => AkaStep::Failed(e),
                },
                AkaAnswer::Refused(reason) => {
                    AkaStep::Failed(MnoError::AkaRefusedByCard(reason.clone()))
                }
            })
        })?;
        match step {
            AkaStep::Live => {
                tracing::info!(campaign = %id, device = %device_id, "AKA succeeded; subscription live");
                Ok(AkaVerdict::Live)
            }
            AkaStep::Challenge(c) => Ok(AkaVerdict::Challenge { rand: c.rand, autn: c.autn }),
            AkaStep::Failed(e) => {
                tracing::warn!(campaign = %id, device = %device_id, error = %e, "AKA failed");
                Err(e)
            }
        }
    }

    /// The RES that made `imsi` live, if any.
    fn accepted_res(&self, tx: &mut dyn Tx, imsi: &protocol::Imsi) -> Result<Option<Res>> {
        let sealed: Option<Vec<u8>> = tx
            .query_opt("SELECT res FROM aka_accepted WHERE imsi = ?1", args![imsi.as_str()])?
            .map(|r| r.get(0))
            .transpose()?;
        sealed
            .map(|s| Ok(Res(*self.sealer.open_array::<8>(imsi.as_str(), Field::Xres, &s)?)))
            .transpose()
    }

    /// A fresh vector for `record`: SQN_HE advanced and the challenge stored (XRES sealed).
    fn new_challenge(&self, tx: &mut dyn Tx, record: &SubscriberRecord) -> Result<AkaChallenge> {
        let (vector, sqn) = auc::vector(record, auc::random_rand()?)?;
        let owner = record.imsi.as_str();
        SubscriberRecord::set_sqn(tx, &record.imsi, sqn)?;
        tx.execute(
            "INSERT INTO aka_challenges (imsi, rand, autn, xres, sqn, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            args![
                owner,
                &vector.rand.0[..],
                &vector.autn.0[..],
                self.sealer.seal(owner, Field::Xres, &vector.xres.0)?,
                to_sql_u64(sqn.value())?,
                now_unix()?
            ],
        )?;
        Ok(AkaChallenge {
            rand: ByteBuf::from(vector.rand.0.to_vec()),
            autn: ByteBuf::from(vector.autn.0.to_vec()),
        })
    }

    /// The device as the new operator sees it: open, with its allocation.
    fn new_side(
        &self,
        tx: &mut dyn Tx,
        id: &CampaignId,
        device_id: &DeviceId,
    ) -> Result<(DeviceRow, Allocation)> {
        let c = CampaignRow::load(tx, id)?;
        c.require(&self.name, Party::NewOperator)?;
        let device = DeviceRow::load(tx, id, device_id)?;
        device.require_open(id, device_id)?;
        let allocation = pool::allocation_for(tx, id.as_str(), device_id)?
            .ok_or_else(|| MnoError::NotPrepared(device_id.to_hex()))?;
        Ok((device, allocation))
    }

    /// The subscription issued to the device (profile signed), not retired.
    fn issued_record(
        &self,
        tx: &mut dyn Tx,
        id: &CampaignId,
        device_id: &DeviceId,
    ) -> Result<SubscriberRecord> {
        let (_, allocation) = self.new_side(tx, id, device_id)?;
        let record = SubscriberRecord::load(tx, &self.sealer, &allocation.imsi)?
            .ok_or_else(|| MnoError::ProfileNotIssued(device_id.to_hex()))?;
        if record.status == SubscriberStatus::Retired {
            return Err(MnoError::SubscriberState {
                imsi: record.imsi.to_string(),
                status: "retired",
                needed: "pending or live",
            });
        }
        Ok(record)
    }
}

fn fixed<const N: usize>(bytes: &ByteBuf, expected: &'static str) -> Result<[u8; N]> {
    bytes
        .as_slice()
        .try_into()
        .map_err(|_| MnoError::BadBody { expected, reason: format!("{} bytes", bytes.len()) })
}

/// Runs blocking store work off the async executor.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f).await.map_err(|_| MnoError::Internal("blocking task failed"))?
}
