//! An attach as the operator's network would run it (3GPP TS 33.102 §6.3.2, "distribution
//! of authentication data from HE to SN"): a fresh authentication vector for a subscription
//! in service, its SQN_HE stored first. `tresor mno aka` and the crash-safety tests use it
//! to prove, with a real Milenage run against the card, that a card works with this
//! operator — and that a retired or never-activated subscription does not.

use protocol::Imsi;
use protocol::milenage::AuthVector;

use super::auc;
use super::error::{MnoError, Result};
use super::operator::Operator;
use super::records::{SubscriberRecord, SubscriberStatus};

impl Operator {
    /// A vector for `imsi`, which must be active (issued at manufacture) or live (made live
    /// by a campaign's AKA). The vector holds XRES and the keys: it never leaves the caller.
    pub fn attach_vector(&self, imsi: &Imsi) -> Result<AuthVector> {
        self.store.write(|tx| {
            let record = SubscriberRecord::load(tx, &self.sealer, imsi)?
                .ok_or_else(|| MnoError::SubscriberNotFound(imsi.to_string()))?;
            if !matches!(record.status, SubscriberStatus::Active | SubscriberStatus::Live) {
                return Err(MnoError::SubscriberState {
                    imsi: imsi.to_string(),
                    status: record.status.name(),
                    needed: "active or live",
                });
            }
            let (vector, sqn) = auc::vector(&record, auc::random_rand()?)?;
            SubscriberRecord::set_sqn(tx, imsi, sqn)?;
            Ok(vector)
        })
    }
}
