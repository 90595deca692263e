//! The operator itself (DESIGN.md §1 "MNO-A / MNO-B"): its identity under the CI, its
//! store, its AuC parameters, and the operations every role has — manufacturing support,
//! campaigns, reports, status. Which side of a campaign it is on (old operator = `from`,
//! new operator = `to`) decides which per-device operations it performs
//! ([`super::old_operator`], [`super::new_operator`]); the role name only identifies it.
//!
//! Every operation is synchronous and runs in one store transaction; the HTTP service calls
//! them on a blocking thread.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

use protocol::bundle::ProfileSigner;
use protocol::ear::EarVerifier;
use protocol::milenage::Op;
use protocol::role::{CertifiedRole, Expected, Role};
use protocol::x509::{ChainPolicy, TrustAnchors};
use protocol::{Amf, DeviceId, Iccid, Imsi, SubscriptionProfile};
use rustls::ServerConfig;
use storage::{Row, Tx, args};
use transport::{ClientAuth, Identity};

use super::api::{
    CampaignId, CampaignRequest, CampaignStatus, DeviceStage, DeviceStatus, MAX_REASON_LEN, Party,
    Report, ReportAck, ReportOutcome,
};
use super::config::{ConfigError, MnoConfig, read_bounded, read_secret_file};
use super::error::{MnoError, Result};
use super::old_operator::recorded_activation;
use super::pool::{self, PoolConfig, Purpose};
use super::records::{SubscriberRecord, SubscriberStatus, SubscriberView};
use super::seal::Sealer;
use super::store::{OpenMode, Store, lock_campaigns, locking, now_unix};

/// A running operator: configuration, keys and store.
pub struct Operator {
    pub(crate) name: String,
    pub(crate) store: Store,
    pub(crate) sealer: Sealer,
    pub(crate) pool: PoolConfig,
    pub(crate) op: Op,
    pub(crate) amf: Amf,
    pub(crate) signer: ProfileSigner,
    pub(crate) ear: EarVerifier,
    pub(crate) ear_signers: Vec<String>,
    pub(crate) peers: BTreeMap<String, String>,
    /// HTTPS clients to the peer operators, by name.
    pub(crate) http: BTreeMap<String, reqwest::Client>,
    pub(crate) tls: Arc<ServerConfig>,
    pub(crate) profile_validity: std::time::Duration,
}

impl std::fmt::Debug for Operator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Operator")
            .field("name", &self.name)
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

impl Operator {
    /// Loads the certificate and key (checking the certificate chains to the CI root and
    /// names this role, and the key file is private), opens the store, creating it only
    /// where no file exists.
    pub fn open(config: &MnoConfig) -> Result<Self> {
        Self::open_with(config, OpenMode::CreateIfMissing)
    }

    /// [`Operator::open`] with the store opened in `mode`: [`OpenMode::Init`] also
    /// initialises an existing empty store file (`tresor serve mno --init`).
    pub fn open_with(config: &MnoConfig, mode: OpenMode) -> Result<Self> {
        Self::open_using(config, |sealer| {
            Store::open_with(&config.database, config.name(), &config.pool, sealer, mode)
        })
    }

    /// Loads everything `config` names as a start does, with the store in memory, then
    /// judges the store file without writing to it, its storage key included (`tresor
    /// serve mno --check`).
    pub fn check_config(config: &MnoConfig) -> Result<storage::StoreCheck> {
        Self::open_using(config, |sealer| {
            Store::open_in_memory(config.name(), &config.pool, sealer)
        })?;
        Store::check(&config.database, config.name(), &config.pool, &config.storage_key)
    }

    /// Loads the files `config` names, then opens the store with `open_store`, last.
    fn open_using(
        config: &MnoConfig,
        open_store: impl FnOnce(&Sealer) -> Result<Store>,
    ) -> Result<Self> {
        let name = config.name().to_owned();
        let cert_pem = read_bounded(&config.certificate)?;
        let key_pem = read_secret_file(&config.key)?;
        let identity = Identity::from_pem(&cert_pem, key_pem.as_bytes())?;
        let anchors = TrustAnchors::from_file(&config.ci_root)
            .map_err(|e| ConfigError::Invalid { key: "pki.ci_root", reason: e.to_string() })?;
        let chain: Vec<Vec<u8>> = identity.chain().iter().map(|c| c.to_vec()).collect();
        let (leaf, intermediates) =
            chain.split_first().ok_or(MnoError::Internal("identity without certificate"))?;
        let inter: Vec<&[u8]> = intermediates.iter().map(Vec::as_slice).collect();
        protocol::x509::verify_chain(leaf, &inter, &anchors, &ChainPolicy::at(SystemTime::now()))
            .map_err(|e| ConfigError::Invalid { key: "pki.certificate", reason: e.to_string() })?;
        let cn = common_name(leaf).unwrap_or_default();
        if cn != name {
            return Err(ConfigError::RoleMismatch {
                path: config.certificate.clone(),
                expected: name,
                found: cn,
            }
            .into());
        }
        // The operator role, not merely the name: the certificate signs profiles and OTA
        // commands' campaigns, and peers accept it only as an operator.
        CertifiedRole::of_der(leaf)
            .and_then(|r| r.require(&Expected::named(Role::Operator, &name)))
            .map_err(|e| ConfigError::Invalid { key: "pki.certificate", reason: e.to_string() })?;
        let signer = ProfileSigner::from_pkcs8_pem(&key_pem, chain.clone())
            .map_err(|e| ConfigError::Invalid { key: "pki.key", reason: e.to_string() })?;
        let roots = transport::tls::roots_from_pem_file(&config.ci_root)?;
        // Optional at the TLS layer so that /health, /ready and /metrics answer anyone;
        // every other route refuses a request without a client certificate of its role
        // (401 `client-certificate-required`, `PeerIdentity`).
        let tls = transport::server_config(&identity, ClientAuth::Optional(roots.clone()))?;
        // One client per peer operator, accepting only that operator's certificate.
        let mut http = BTreeMap::new();
        for peer in config.peers.keys() {
            let server = transport::ServerRole::Expected(Expected::named(Role::Operator, peer));
            http.insert(peer.clone(), transport::client::client(&roots, Some(&identity), &server)?);
        }
        let signers: Vec<&str> = config.ear.signers.iter().map(String::as_str).collect();
        let ear = EarVerifier::new(anchors).signers(&signers).leeway(config.ear.leeway);

        let sealer = Sealer::new(&config.storage_key)?;
        let store = open_store(&sealer)?;
        tracing::info!(operator = %name, store = %store.location(), "operator opened");
        Ok(Self {
            name,
            store,
            sealer,
            pool: config.pool.clone(),
            op: config.op.clone(),
            amf: config.amf,
            signer,
            ear,
            ear_signers: config.ear.signers.clone(),
            peers: config.peers.clone(),
            http,
            tls,
            profile_validity: config.profile_validity,
        })
    }

    /// The operator's name (`mno-a`, `mno-b`).
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Manufacturing (TR 33.812 step 1): issues an initial subscription for one card — the
    /// next IMSI and its ICCID, random K, OPc from OP, random KIc and KID, OTA counter 0 —
    /// stores it as `active`, and returns the profile to load into the card.
    pub fn issue_subscription(&self) -> Result<SubscriptionProfile> {
        let profile = self.store.write(|tx| {
            let a = pool::allocate(tx, &self.pool, Purpose::Manufacture)?;
            let record = SubscriberRecord::generate(
                a.imsi,
                a.iccid,
                &self.op,
                self.amf,
                SubscriberStatus::Active,
            )?;
            record.insert(tx, &self.sealer)?;
            Ok(record.profile())
        })?;
        tracing::info!(imsi = %profile.imsi, iccid = %profile.iccid, "subscription issued for manufacture");
        Ok(profile)
    }

    /// Step 2: records a campaign this operator takes part in. Idempotent: the same campaign
    /// again is answered with its status (`created` false); different contents under the
    /// same id are a conflict. As the old operator, every ICCID must be one of its
    /// subscriptions in service and not in a change another open campaign's card proved
    /// (a pairing no card proved holds nothing: see `old_operator`).
    pub fn create_campaign(&self, req: &CampaignRequest) -> Result<(bool, CampaignStatus)> {
        req.validate()?;
        let party = self.party_of(&req.from, &req.to, &req.id)?;
        let digest = req.digest();
        let created = self.store.write(|tx| {
            lock_campaigns(tx)?;
            let existing: Option<Vec<u8>> = tx
                .query_opt("SELECT digest FROM campaigns WHERE id = ?1", args![req.id.as_str()])?
                .map(|r| r.get(0))
                .transpose()?;
            let closed = tx.query_opt(
                "SELECT closed_at FROM closed_campaigns WHERE id = ?1",
                args![req.id.as_str()],
            )?;
            if closed.is_some() {
                return Err(MnoError::CampaignClosed(req.id.to_string()));
            }
            if let Some(existing) = existing {
                return if existing == digest {
                    Ok(false)
                } else {
                    Err(MnoError::CampaignConflict(req.id.to_string()))
                };
            }
            tx.execute(
                "INSERT INTO campaigns (id, from_operator, to_operator, digest, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                args![req.id.as_str(), &req.from, &req.to, &digest, now_unix()?],
            )?;
            for d in &req.devices {
                let old_imsi = match party {
                    Party::OldOperator => Some(self.old_subscription(tx, &req.id, &d.iccid)?),
                    Party::NewOperator => None,
                };
                tx.execute(
                    "INSERT INTO campaign_devices (campaign, device_id, iccid, old_imsi)
                     VALUES (?1, ?2, ?3, ?4)",
                    args![
                        req.id.as_str(),
                        d.device_id.to_hex(),
                        d.iccid.as_str(),
                        old_imsi.as_ref().map(Imsi::as_str)
                    ],
                )?;
            }
            Ok(true)
        })?;
        if created {
            tracing::info!(campaign = %req.id, ?party, devices = req.devices.len(), "campaign recorded");
        }
        Ok((created, self.campaign_status(&req.id)?))
    }

    /// The IMSI of the subscription `iccid` names, which must be in service and not in a
    /// proven change of another open campaign.
    fn old_subscription(
        &self,
        tx: &mut dyn Tx,
        campaign: &CampaignId,
        iccid: &Iccid,
    ) -> Result<Imsi> {
        let row = tx.query_opt(
            "SELECT imsi, status FROM subscribers WHERE iccid = ?1",
            args![iccid.as_str()],
        )?;
        let Some(row) = row else {
            return Err(MnoError::UnknownIccid(iccid.to_string()));
        };
        let (imsi, status): (String, String) = (row.get(0)?, row.get(1)?);
        if status != SubscriberStatus::Active.name() && status != SubscriberStatus::Live.name() {
            return Err(MnoError::UnknownIccid(iccid.to_string()));
        }
        // Only a card's proof holds the ICCID: a campaign pairing a device with someone
        // else's ICCID must not lock that subscription out of its own device's campaigns.
        let proven = tx.query_opt(
            "SELECT ta.campaign, ta.device_id FROM tre_activations ta
             LEFT JOIN reports r ON r.campaign = ta.campaign AND r.device_id = ta.device_id
             WHERE ta.iccid = ?1 AND ta.campaign != ?2 AND r.outcome IS NULL",
            args![iccid.as_str(), campaign.as_str()],
        )?;
        if let Some(r) = proven {
            return Err(MnoError::SubscriptionInChange {
                iccid: iccid.to_string(),
                campaign: r.get(0)?,
                device: r.get(1)?,
            });
        }
        imsi.parse().map_err(|_| MnoError::Corrupt("IMSI"))
    }

    fn party_of(&self, from: &str, to: &str, id: &CampaignId) -> Result<Party> {
        if from == self.name {
            Ok(Party::OldOperator)
        } else if to == self.name {
            Ok(Party::NewOperator)
        } else {
            Err(MnoError::WrongParty {
                operator: self.name.clone(),
                campaign: id.to_string(),
                needed: "from or to",
            })
        }
    }

    /// `GET /v1/campaigns/{id}`: identifiers and stages.
    pub fn campaign_status(&self, id: &CampaignId) -> Result<CampaignStatus> {
        self.store.read(|tx| {
            let c = CampaignRow::load(tx, id)?;
            let party = self.party_of(&c.from, &c.to, id)?;
            let rows = tx.query(
                "SELECT cd.device_id, cd.iccid, cd.old_imsi, il.new_imsi, a.imsi, cd.imsi_list_sent_at,
                        cd.tre_command IS NOT NULL, cd.registered_at, cd.profile IS NOT NULL, s.status,
                        r.outcome, ta.device_id IS NOT NULL
                 FROM campaign_devices cd
                 LEFT JOIN imsi_lists il ON il.campaign = cd.campaign AND il.device_id = cd.device_id
                 LEFT JOIN tre_activations ta
                        ON ta.campaign = cd.campaign AND ta.device_id = cd.device_id
                 LEFT JOIN allocations a ON a.campaign = cd.campaign AND a.device_id = cd.device_id
                 LEFT JOIN subscribers s ON s.imsi = a.imsi
                 LEFT JOIN reports r ON r.campaign = cd.campaign AND r.device_id = cd.device_id
                 WHERE cd.campaign = ?1 ORDER BY cd.device_id",
                args![id.as_str()],
            )?;
            let mut devices = Vec::with_capacity(rows.len());
            for r in &rows {
                devices.push(StatusRow::from_row(r)?.into_status(party)?);
            }
            Ok(CampaignStatus { id: c.id, from: c.from, to: c.to, party, devices })
        })
    }

    /// `GET /v1/subscribers/{imsi}`: status only.
    pub fn subscriber_status(&self, imsi: &Imsi) -> Result<SubscriberView> {
        self.store
            .read(|tx| SubscriberView::load(tx, imsi))?
            .ok_or_else(|| MnoError::SubscriberNotFound(imsi.to_string()))
    }

    /// Step 12: the DPF's report for one device. The old operator retires the device's old
    /// subscription on success only for a device of a known campaign whose IMSI list arrived
    /// and whose card proved the TRE activation for this campaign with that subscription's
    /// ICCID and IMSI (else it refuses, `tre-activation-not-proven`, and the subscription
    /// stays in service); the new operator accepts success only for a subscription that AKA
    /// made live, and retires the new one on failure (a proven rollback). Idempotent; a
    /// contradicting repeat is a conflict.
    pub fn report(&self, report: &Report) -> Result<ReportAck> {
        if report.reason.as_ref().is_some_and(|r| r.len() > MAX_REASON_LEN) {
            return Err(MnoError::BadBody {
                expected: "a report",
                reason: format!("reason longer than {MAX_REASON_LEN} bytes"),
            });
        }
        if report.step.is_some_and(|s| !(1..=12).contains(&s)) {
            return Err(MnoError::BadBody {
                expected: "a report",
                reason: "step is 1 to 12".into(),
            });
        }
        let (ack, changed) = self.store.write(|tx| {
            let c = match CampaignRow::load(tx, &report.campaign) {
                Ok(c) => c,
                // The RO gave the campaign up before this operator heard of it: nothing to
                // release but the campaign itself, which a late announcement must not open.
                // Looked for again under the lock that campaign creation takes, so that
                // another instance is not creating it at this moment.
                Err(MnoError::CampaignNotFound(_)) if report.outcome == ReportOutcome::Failure => {
                    lock_campaigns(tx)?;
                    match CampaignRow::load(tx, &report.campaign) {
                        Ok(c) => c,
                        Err(MnoError::CampaignNotFound(_)) => {
                            tx.execute(
                                "INSERT INTO closed_campaigns (id, closed_at) VALUES (?1, ?2)
                                 ON CONFLICT (id) DO NOTHING",
                                args![report.campaign.as_str(), now_unix()?],
                            )?;
                            return Ok((self.ack(report, None), None));
                        }
                        Err(e) => return Err(e),
                    }
                }
                Err(e) => return Err(e),
            };
            let party = self.party_of(&c.from, &c.to, &c.id)?;
            let device = DeviceRow::load(tx, &c.id, &report.device_id)?;
            let imsi = match party {
                Party::OldOperator => device.old_imsi.clone(),
                Party::NewOperator => {
                    pool::allocation_for(tx, c.id.as_str(), &report.device_id)?.map(|a| a.imsi)
                }
            };
            let current = match &imsi {
                Some(imsi) => SubscriberView::load(tx, imsi)?,
                None => None,
            };
            if let Some(previous) = device.report {
                if previous != report.outcome {
                    return Err(MnoError::ReportConflict {
                        device: report.device_id.to_hex(),
                        previous: previous.name(),
                    });
                }
                return Ok((self.ack(report, current), None));
            }
            let new_status = match (party, report.outcome, &current) {
                (Party::OldOperator, ReportOutcome::Success, _) => {
                    if !device.imsi_listed {
                        return Err(MnoError::ImsiListMissing {
                            device: report.device_id.to_hex(),
                        });
                    }
                    // The ICCID binding: retire only what this device's card proved it ran.
                    let proven = recorded_activation(tx, &c.id, &report.device_id)?;
                    let binds = proven.as_ref().is_some_and(|p| {
                        p.iccid == device.iccid && Some(&p.imsi) == device.old_imsi.as_ref()
                    });
                    if !binds {
                        return Err(MnoError::TreActivationNotProven {
                            device: report.device_id.to_hex(),
                            iccid: device.iccid.to_string(),
                            reason: "no verified answer of the card to activate-TRE: \
                                     IMSI_A stays in service"
                                .into(),
                        });
                    }
                    Some(SubscriberStatus::Retired)
                }
                (Party::NewOperator, ReportOutcome::Success, Some(s))
                    if s.status == SubscriberStatus::Live =>
                {
                    None
                }
                (Party::NewOperator, ReportOutcome::Success, _) => {
                    return Err(MnoError::AkaNotCompleted(report.device_id.to_hex()));
                }
                // The RO reports a failure only once the device proved its old profile
                // runs again (docs/flow.md): the new subscription, even one AKA made live,
                // will never be used by this card and is retired, never issued again.
                (Party::NewOperator, ReportOutcome::Failure, Some(s))
                    if s.status != SubscriberStatus::Retired =>
                {
                    Some(SubscriberStatus::Retired)
                }
                (_, ReportOutcome::Failure, _) => None,
            };
            if let (Some(status), Some(imsi)) = (new_status, &imsi) {
                SubscriberRecord::set_status(tx, imsi, status)?;
            }
            tx.execute(
                "INSERT INTO reports (campaign, device_id, outcome, step, reason, received_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                args![
                    c.id.as_str(),
                    report.device_id.to_hex(),
                    report.outcome.name(),
                    report.step.map(i64::from),
                    report.reason.as_deref(),
                    now_unix()?
                ],
            )?;
            let after = match &imsi {
                Some(imsi) => SubscriberView::load(tx, imsi)?,
                None => None,
            };
            Ok((self.ack(report, after), new_status))
        })?;
        tracing::info!(
            campaign = %report.campaign,
            device = %report.device_id,
            outcome = report.outcome.name(),
            status = ?changed,
            "report received"
        );
        Ok(ack)
    }

    fn ack(&self, report: &Report, subscriber: Option<SubscriberView>) -> ReportAck {
        ReportAck {
            campaign: report.campaign.clone(),
            device_id: report.device_id.clone(),
            outcome: report.outcome,
            subscriber,
        }
    }
}

/// A campaign as stored.
pub(crate) struct CampaignRow {
    pub id: CampaignId,
    pub from: String,
    pub to: String,
}

impl CampaignRow {
    pub fn load(tx: &mut dyn Tx, id: &CampaignId) -> Result<Self> {
        Self::select(tx, id, "")
    }

    /// [`CampaignRow::load`], the row locked until the transaction ends (PostgreSQL).
    pub fn lock(tx: &mut dyn Tx, id: &CampaignId) -> Result<Self> {
        let clause = locking(tx, " FOR UPDATE");
        Self::select(tx, id, clause)
    }

    fn select(tx: &mut dyn Tx, id: &CampaignId, locking: &str) -> Result<Self> {
        let sql =
            format!("SELECT from_operator, to_operator FROM campaigns WHERE id = ?1{locking}");
        let row = tx
            .query_opt(&sql, args![id.as_str()])?
            .ok_or_else(|| MnoError::CampaignNotFound(id.to_string()))?;
        Ok(Self { id: id.clone(), from: row.get(0)?, to: row.get(1)? })
    }

    /// Refuses unless `me` is on side `party` of the campaign.
    pub fn require(&self, me: &str, party: Party) -> Result<()> {
        let (name, needed) = match party {
            Party::OldOperator => (&self.from, "old (from)"),
            Party::NewOperator => (&self.to, "new (to)"),
        };
        if name == me {
            Ok(())
        } else {
            Err(MnoError::WrongParty { operator: me.into(), campaign: self.id.to_string(), needed })
        }
    }
}

/// A device of a campaign as stored.
pub(crate) struct DeviceRow {
    pub iccid: Iccid,
    pub old_imsi: Option<Imsi>,
    pub imsi_listed: bool,
    pub imsi_list_sent: bool,
    pub tre_command: Option<(Vec<u8>, u64)>,
    pub registered: bool,
    pub ear_hash: Option<Vec<u8>>,
    pub profile: Option<Vec<u8>>,
    pub report: Option<ReportOutcome>,
}

impl DeviceRow {
    /// The device's row, locked until the transaction ends (PostgreSQL): every caller is a
    /// write that decides on the device's state, so one device's operations run one at a
    /// time across instances.
    pub fn load(tx: &mut dyn Tx, campaign: &CampaignId, device: &DeviceId) -> Result<Self> {
        let sql = format!(
            "SELECT cd.iccid, cd.old_imsi, il.new_imsi IS NOT NULL, cd.imsi_list_sent_at,
                    cd.tre_command, cd.tre_counter, cd.registered_at, cd.ear_hash, cd.profile,
                    r.outcome
             FROM campaign_devices cd
             LEFT JOIN imsi_lists il ON il.campaign = cd.campaign AND il.device_id = cd.device_id
             LEFT JOIN reports r ON r.campaign = cd.campaign AND r.device_id = cd.device_id
             WHERE cd.campaign = ?1 AND cd.device_id = ?2{}",
            locking(tx, " FOR UPDATE OF cd")
        );
        let Some(r) = tx.query_opt(&sql, args![campaign.as_str(), device.to_hex()])? else {
            return Err(MnoError::DeviceNotInCampaign {
                campaign: campaign.to_string(),
                device: device.to_hex(),
            });
        };
        let iccid: String = r.get(0)?;
        let old_imsi: Option<String> = r.get(1)?;
        let listed: bool = r.get(2)?;
        let sent: Option<i64> = r.get(3)?;
        let command: Option<Vec<u8>> = r.get(4)?;
        let counter: Option<i64> = r.get(5)?;
        let registered: Option<i64> = r.get(6)?;
        let ear_hash: Option<Vec<u8>> = r.get(7)?;
        let profile: Option<Vec<u8>> = r.get(8)?;
        let report: Option<String> = r.get(9)?;
        let tre_command = match (command, counter) {
            (Some(c), Some(n)) => {
                Some((c, u64::try_from(n).map_err(|_| MnoError::Corrupt("OTA counter"))?))
            }
            _ => None,
        };
        Ok(Self {
            iccid: iccid.parse().map_err(|_| MnoError::Corrupt("ICCID"))?,
            old_imsi: old_imsi
                .map(|i| i.parse().map_err(|_| MnoError::Corrupt("IMSI")))
                .transpose()?,
            imsi_listed: listed,
            imsi_list_sent: sent.is_some(),
            tre_command,
            registered: registered.is_some(),
            ear_hash,
            profile,
            report: report.map(|r| parse_outcome(&r)).transpose()?,
        })
    }

    /// Refuses once the device's report arrived: its change is over.
    pub fn require_open(&self, campaign: &CampaignId, device: &DeviceId) -> Result<()> {
        match self.report {
            Some(_) => Err(MnoError::DeviceFinished {
                campaign: campaign.to_string(),
                device: device.to_hex(),
            }),
            None => Ok(()),
        }
    }
}

fn parse_outcome(s: &str) -> Result<ReportOutcome> {
    match s {
        "success" => Ok(ReportOutcome::Success),
        "failure" => Ok(ReportOutcome::Failure),
        _ => Err(MnoError::Corrupt("report outcome")),
    }
}

struct StatusRow {
    device_id: String,
    iccid: String,
    old_imsi: Option<String>,
    listed_imsi: Option<String>,
    allocated_imsi: Option<String>,
    list_sent: bool,
    tre_issued: bool,
    registered: bool,
    profile_issued: bool,
    new_status: Option<String>,
    report: Option<String>,
    tre_proven: bool,
}

impl StatusRow {
    fn from_row(r: &Row) -> Result<Self> {
        Ok(Self {
            device_id: r.get(0)?,
            iccid: r.get(1)?,
            old_imsi: r.get(2)?,
            listed_imsi: r.get(3)?,
            allocated_imsi: r.get(4)?,
            list_sent: r.get::<Option<i64>>(5)?.is_some(),
            tre_issued: r.get(6)?,
            registered: r.get::<Option<i64>>(7)?.is_some(),
            profile_issued: r.get(8)?,
            new_status: r.get(9)?,
            report: r.get(10)?,
            tre_proven: r.get(11)?,
        })
    }

    fn into_status(self, party: Party) -> Result<DeviceStatus> {
        let imsi = |s: Option<String>| {
            s.map(|s| s.parse::<Imsi>().map_err(|_| MnoError::Corrupt("IMSI"))).transpose()
        };
        let report = self.report.as_deref().map(parse_outcome).transpose()?;
        let stage = match (report, party) {
            (Some(ReportOutcome::Success), _) => DeviceStage::Switched,
            (Some(ReportOutcome::Failure), _) => DeviceStage::Failed,
            (None, Party::OldOperator) if self.tre_proven => DeviceStage::TreActivated,
            (None, Party::OldOperator) if self.tre_issued => DeviceStage::TreActivationIssued,
            (None, Party::OldOperator) if self.listed_imsi.is_some() => {
                DeviceStage::ImsiListReceived
            }
            (None, Party::OldOperator) => DeviceStage::AwaitingImsiList,
            (None, Party::NewOperator) if self.new_status.as_deref() == Some("live") => {
                DeviceStage::Live
            }
            (None, Party::NewOperator) if self.profile_issued => DeviceStage::ProfileIssued,
            (None, Party::NewOperator) if self.registered => DeviceStage::Registered,
            (None, Party::NewOperator) if self.list_sent => DeviceStage::ImsiListSent,
            (None, Party::NewOperator) if self.allocated_imsi.is_some() => {
                DeviceStage::ImsiAllocated
            }
            (None, Party::NewOperator) => DeviceStage::AwaitingPrepare,
        };
        let new_imsi = match party {
            Party::OldOperator => imsi(self.listed_imsi)?,
            Party::NewOperator => imsi(self.allocated_imsi)?,
        };
        Ok(DeviceStatus {
            device_id: self.device_id.parse().map_err(|_| MnoError::Corrupt("device id"))?,
            iccid: self.iccid.parse().map_err(|_| MnoError::Corrupt("ICCID"))?,
            old_imsi: imsi(self.old_imsi)?,
            new_imsi,
            stage,
            report,
        })
    }
}

fn common_name(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let cn = cert.subject().iter_common_name().next()?.as_str().ok()?.to_owned();
    Some(cn)
}
