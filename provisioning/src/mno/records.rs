//! Subscriber records (3GPP TS 33.102 §6.3 AuC data, ETSI TS 102 225 OTA keys): IMSI, ICCID,
//! K, OPc, AMF, SQN, KIc, KID, the OTA counter and the subscription's status. K, OPc, KIc and
//! KID are stored encrypted ([`super::seal`]) with the IMSI as owner; the rest is plain.
//!
//! Status: `active` (a card runs it, as after manufacture), `pending` (issued to a device in
//! a campaign, not yet proven by AKA), `live` (AKA between the AuC and the new USIM
//! succeeded), `retired` (never to be used again; the IMSI stays allocated).

use std::fmt;

use protocol::milenage::{Op, Sqn, opc_from_op};
use protocol::{
    Amf, DeviceId, Iccid, Imsi, Opc, OtaKey, OtaKeys, SubscriberKey, SubscriptionProfile,
};
use serde::{Deserialize, Serialize};
use storage::{Row, Tx, args};

use super::error::{MnoError, Result};
use super::seal::{Field, Sealer};
use super::store::{from_sql_u64, locking, now_unix, to_sql_u64};

/// Where a subscription stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum SubscriberStatus {
    Active,
    Pending,
    Live,
    Retired,
}

impl SubscriberStatus {
    pub fn name(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Pending => "pending",
            Self::Live => "live",
            Self::Retired => "retired",
        }
    }

    fn parse(s: &str) -> Result<Self> {
        [Self::Active, Self::Pending, Self::Live, Self::Retired]
            .into_iter()
            .find(|v| v.name() == s)
            .ok_or(MnoError::Corrupt("subscriber status"))
    }
}

impl fmt::Display for SubscriberStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A subscriber record with its secrets decrypted. Secrets zeroize on drop and print
/// redacted.
#[derive(Clone, Debug)]
pub(crate) struct SubscriberRecord {
    pub imsi: Imsi,
    pub iccid: Iccid,
    pub k: SubscriberKey,
    pub opc: Opc,
    pub amf: Amf,
    /// The last SQN the AuC put in a vector (SEQ ‖ IND).
    pub sqn: Sqn,
    /// KIc, KID and the last OTA counter this operator used.
    pub ota: OtaKeys,
    pub status: SubscriberStatus,
    pub device_id: Option<DeviceId>,
    pub campaign: Option<String>,
}

impl SubscriberRecord {
    /// A new subscription for `imsi`/`iccid`: random K, OPc = f(K, OP), random KIc and KID,
    /// SQN 0, OTA counter 0.
    pub fn generate(
        imsi: Imsi,
        iccid: Iccid,
        op: &Op,
        amf: Amf,
        status: SubscriberStatus,
    ) -> Result<Self> {
        let k = SubscriberKey::random().map_err(|_| MnoError::Rng)?;
        let opc = opc_from_op(&k, op);
        let kic = OtaKey::random().map_err(|_| MnoError::Rng)?;
        let kid = OtaKey::random().map_err(|_| MnoError::Rng)?;
        Ok(Self {
            imsi,
            iccid,
            k,
            opc,
            amf,
            sqn: Sqn::default(),
            ota: OtaKeys { kic, kid, counter: 0 },
            status,
            device_id: None,
            campaign: None,
        })
    }

    /// The profile a card holds for this subscription.
    pub fn profile(&self) -> SubscriptionProfile {
        SubscriptionProfile {
            iccid: self.iccid.clone(),
            imsi: self.imsi.clone(),
            k: self.k.clone(),
            opc: self.opc.clone(),
            amf: self.amf,
            ota: self.ota.clone(),
        }
    }

    pub fn insert(&self, tx: &mut dyn Tx, sealer: &Sealer) -> Result<()> {
        let owner = self.imsi.as_str();
        let now = now_unix()?;
        tx.execute(
            "INSERT INTO subscribers (imsi, iccid, k, opc, kic, kid, amf, sqn, ota_counter, status,
                                      device_id, campaign, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?13)",
            args![
                owner,
                self.iccid.as_str(),
                sealer.seal(owner, Field::K, self.k.expose())?,
                sealer.seal(owner, Field::Opc, self.opc.expose())?,
                sealer.seal(owner, Field::Kic, self.ota.kic.expose())?,
                sealer.seal(owner, Field::Kid, self.ota.kid.expose())?,
                &self.amf.0[..],
                to_sql_u64(self.sqn.value())?,
                to_sql_u64(self.ota.counter)?,
                self.status.name(),
                self.device_id.as_ref().map(DeviceId::to_hex),
                self.campaign.as_deref(),
                now,
            ],
        )?;
        Ok(())
    }

    /// The record of `imsi`, locked until the transaction ends (PostgreSQL): every caller
    /// reads it to change it (SQN, OTA counter, status) or to decide on the card it names.
    pub fn load(tx: &mut dyn Tx, sealer: &Sealer, imsi: &Imsi) -> Result<Option<Self>> {
        let sql = format!(
            "SELECT imsi, iccid, k, opc, kic, kid, amf, sqn, ota_counter, status, device_id, campaign
             FROM subscribers WHERE imsi = ?1{}",
            locking(tx, " FOR UPDATE")
        );
        let raw = tx.query_opt(&sql, args![imsi.as_str()])?;
        raw.map(|r| RawRecord::from_row(&r)?.decrypt(sealer)).transpose()
    }

    pub fn set_status(tx: &mut dyn Tx, imsi: &Imsi, status: SubscriberStatus) -> Result<()> {
        tx.execute(
            "UPDATE subscribers SET status = ?2, updated_at = ?3 WHERE imsi = ?1",
            args![imsi.as_str(), status.name(), now_unix()?],
        )?;
        Ok(())
    }

    pub fn set_sqn(tx: &mut dyn Tx, imsi: &Imsi, sqn: Sqn) -> Result<()> {
        tx.execute(
            "UPDATE subscribers SET sqn = ?2, updated_at = ?3 WHERE imsi = ?1",
            args![imsi.as_str(), to_sql_u64(sqn.value())?, now_unix()?],
        )?;
        Ok(())
    }

    pub fn set_ota_counter(tx: &mut dyn Tx, imsi: &Imsi, counter: u64) -> Result<()> {
        tx.execute(
            "UPDATE subscribers SET ota_counter = ?2, updated_at = ?3 WHERE imsi = ?1",
            args![imsi.as_str(), to_sql_u64(counter)?, now_unix()?],
        )?;
        Ok(())
    }
}

/// A row as stored, secrets still encrypted.
struct RawRecord {
    imsi: String,
    iccid: String,
    k: Vec<u8>,
    opc: Vec<u8>,
    kic: Vec<u8>,
    kid: Vec<u8>,
    amf: Vec<u8>,
    sqn: i64,
    ota_counter: i64,
    status: String,
    device_id: Option<String>,
    campaign: Option<String>,
}

impl RawRecord {
    fn from_row(r: &Row) -> Result<Self> {
        Ok(Self {
            imsi: r.get(0)?,
            iccid: r.get(1)?,
            k: r.get(2)?,
            opc: r.get(3)?,
            kic: r.get(4)?,
            kid: r.get(5)?,
            amf: r.get(6)?,
            sqn: r.get(7)?,
            ota_counter: r.get(8)?,
            status: r.get(9)?,
            device_id: r.get(10)?,
            campaign: r.get(11)?,
        })
    }

    fn decrypt(self, sealer: &Sealer) -> Result<SubscriberRecord> {
        let owner = self.imsi.as_str();
        let k = SubscriberKey::new(*sealer.open_array::<16>(owner, Field::K, &self.k)?);
        let opc = Opc::new(*sealer.open_array::<16>(owner, Field::Opc, &self.opc)?);
        let kic = OtaKey::new(*sealer.open_array::<16>(owner, Field::Kic, &self.kic)?);
        let kid = OtaKey::new(*sealer.open_array::<16>(owner, Field::Kid, &self.kid)?);
        let amf: [u8; 2] = self.amf.as_slice().try_into().map_err(|_| MnoError::Corrupt("AMF"))?;
        Ok(SubscriberRecord {
            imsi: self.imsi.parse().map_err(|_| MnoError::Corrupt("IMSI"))?,
            iccid: self.iccid.parse().map_err(|_| MnoError::Corrupt("ICCID"))?,
            k,
            opc,
            amf: Amf(amf),
            sqn: Sqn::new(from_sql_u64(self.sqn)?).map_err(|_| MnoError::Corrupt("SQN"))?,
            ota: OtaKeys { kic, kid, counter: from_sql_u64(self.ota_counter)? },
            status: SubscriberStatus::parse(&self.status)?,
            device_id: self
                .device_id
                .map(|d| d.parse().map_err(|_| MnoError::Corrupt("device id")))
                .transpose()?,
            campaign: self.campaign,
        })
    }
}

/// What anyone may see of a subscription: identifiers and status, never a secret.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubscriberView {
    pub imsi: Imsi,
    pub iccid: Iccid,
    pub status: SubscriberStatus,
    pub device_id: Option<DeviceId>,
    pub campaign: Option<String>,
    /// Unix seconds.
    pub created_at: i64,
    pub updated_at: i64,
}

impl SubscriberView {
    pub(crate) fn load(tx: &mut dyn Tx, imsi: &Imsi) -> Result<Option<Self>> {
        let Some(r) = tx.query_opt(
            "SELECT imsi, iccid, status, device_id, campaign, created_at, updated_at
             FROM subscribers WHERE imsi = ?1",
            args![imsi.as_str()],
        )?
        else {
            return Ok(None);
        };
        let (imsi, iccid, status): (String, String, String) = (r.get(0)?, r.get(1)?, r.get(2)?);
        let (device, campaign): (Option<String>, Option<String>) = (r.get(3)?, r.get(4)?);
        let (created_at, updated_at): (i64, i64) = (r.get(5)?, r.get(6)?);
        Ok(Some(Self {
            imsi: imsi.parse().map_err(|_| MnoError::Corrupt("IMSI"))?,
            iccid: iccid.parse().map_err(|_| MnoError::Corrupt("ICCID"))?,
            status: SubscriberStatus::parse(&status)?,
            device_id: device
                .map(|d| d.parse().map_err(|_| MnoError::Corrupt("device id")))
                .transpose()?,
            campaign,
            created_at,
            updated_at,
        }))
    }
}
