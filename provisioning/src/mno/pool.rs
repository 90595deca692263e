//! The operator's number pool: a configured IMSI range (3GPP TS 23.003 §2.2: MCC ‖ MNC ‖
//! MSIN) and, in step, ICCIDs under the operator's issuer prefix (ITU-T E.118, Luhn check
//! digit). Allocation is durable: the next free index lives in the store and moves forward
//! in the same transaction that records the allocation, by one conditional statement (so
//! instances sharing a PostgreSQL store, whose transactions run at once, each take another
//! index), and IMSI and ICCID columns are UNIQUE, so no number is issued twice, across
//! restarts, concurrent requests, processes and instances.

use protocol::{DeviceId, Iccid, Imsi};
use storage::{Tx, args};

use super::config::ConfigError;
use super::error::{MnoError, Result};
use super::store::{from_sql_u64, now_unix, to_sql_u64};

/// An ICCID body is 19 digits; the Luhn digit makes 20 (ITU-T E.118 §4.2).
const ICCID_BODY_LEN: usize = 19;

/// The configured range: `count` IMSIs from `mcc ‖ mnc ‖ first_msin`, and ICCIDs
/// `iccid_prefix ‖ serial ‖ check digit`, the serial being the allocation index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolConfig {
    mcc: String,
    mnc: String,
    first_msin: u64,
    msin_len: usize,
    count: u64,
    iccid_prefix: String,
}

impl PoolConfig {
    pub fn new(
        mcc: &str,
        mnc: &str,
        first_msin: &str,
        count: u64,
        iccid_prefix: &str,
    ) -> Result<Self, ConfigError> {
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        let invalid = |key, reason: &str| ConfigError::Invalid { key, reason: reason.into() };
        if mcc.len() != 3 || !digits(mcc) {
            return Err(invalid("subscribers.mcc", "the MCC is 3 digits"));
        }
        if !(2..=3).contains(&mnc.len()) || !digits(mnc) {
            return Err(invalid("subscribers.mnc", "the MNC is 2 or 3 digits"));
        }
        let msin_len = first_msin.len();
        if !digits(first_msin) || 3 + mnc.len() + msin_len > 15 {
            return Err(invalid(
                "subscribers.first_msin",
                "the MSIN is digits, and MCC ‖ MNC ‖ MSIN at most 15 digits",
            ));
        }
        let first: u64 =
            first_msin.parse().map_err(|_| invalid("subscribers.first_msin", "not a number"))?;
        let capacity = 10u64.pow(u32::try_from(msin_len).unwrap_or(u32::MAX).min(19));
        if count == 0 || first.checked_add(count).is_none_or(|end| end > capacity) {
            return Err(invalid(
                "subscribers.count",
                "must be positive, and the range must fit in the MSIN's digits",
            ));
        }
        if !digits(iccid_prefix) || !iccid_prefix.starts_with("89") || iccid_prefix.len() > 17 {
            return Err(invalid(
                "subscribers.iccid_prefix",
                "2 to 17 digits starting with 89 (ITU-T E.118, telecommunications)",
            ));
        }
        let serial_len = u32::try_from(ICCID_BODY_LEN - iccid_prefix.len()).unwrap_or(0);
        if 10u64.checked_pow(serial_len).is_some_and(|cap| count > cap) {
            return Err(invalid(
                "subscribers.iccid_prefix",
                "too long for the IMSI count: the ICCID serial must fit in the remaining digits",
            ));
        }
        Ok(Self {
            mcc: mcc.into(),
            mnc: mnc.into(),
            first_msin: first,
            msin_len,
            count,
            iccid_prefix: iccid_prefix.into(),
        })
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    /// The IMSI at `index` (0-based) of the range.
    pub fn imsi(&self, index: u64) -> Result<Imsi> {
        if index >= self.count {
            return Err(MnoError::PoolExhausted { count: self.count });
        }
        let msin = self.first_msin + index;
        let imsi = format!("{}{}{:0width$}", self.mcc, self.mnc, msin, width = self.msin_len);
        imsi.parse().map_err(|_| MnoError::Internal("IMSI out of range"))
    }

    /// The ICCID of the card or profile that gets the IMSI at `index`.
    pub fn iccid(&self, index: u64) -> Result<Iccid> {
        let width = ICCID_BODY_LEN - self.iccid_prefix.len();
        let body = format!("{}{:0width$}", self.iccid_prefix, index, width = width);
        Iccid::with_check_digit(&body).map_err(|_| MnoError::Internal("ICCID out of range"))
    }

    /// What must not change once numbers were issued from a store (the count may grow).
    pub(crate) fn fingerprint(&self) -> String {
        format!(
            "mcc={} mnc={} first_msin={:0w$} iccid_prefix={}",
            self.mcc,
            self.mnc,
            self.first_msin,
            self.iccid_prefix,
            w = self.msin_len
        )
    }
}

/// An IMSI with its ICCID, taken from the pool.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Allocation {
    pub index: u64,
    pub imsi: Imsi,
    pub iccid: Iccid,
}

/// What an allocation is for.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Purpose<'a> {
    /// A card's initial subscription (manufacturing).
    Manufacture,
    /// The new subscription of one device of a campaign (step 3).
    Campaign { campaign: &'a str, device: &'a DeviceId },
}

/// Takes the next free IMSI inside the caller's write transaction.
pub(crate) fn allocate(
    tx: &mut dyn Tx,
    pool: &PoolConfig,
    purpose: Purpose<'_>,
) -> Result<Allocation> {
    // Read and moved in one statement: a concurrent transaction waits for this row and
    // then takes the index after (PostgreSQL re-checks the condition on the row it waited
    // for), never the same one.
    let taken = tx.query_opt(
        "UPDATE pool SET next_index = next_index + 1 WHERE id = 0 AND next_index < ?1
         RETURNING next_index - 1",
        args![to_sql_u64(pool.count)?],
    )?;
    let Some(taken) = taken else {
        return Err(MnoError::PoolExhausted { count: pool.count });
    };
    let index = from_sql_u64(taken.get(0)?)?;
    let imsi = pool.imsi(index)?;
    let iccid = pool.iccid(index)?;
    let (kind, campaign, device) = match purpose {
        Purpose::Manufacture => ("manufacture", None, None),
        Purpose::Campaign { campaign, device } => {
            ("campaign", Some(campaign), Some(device.to_hex()))
        }
    };
    tx.execute(
        "INSERT INTO allocations (pool_index, imsi, iccid, purpose, campaign, device_id, allocated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        args![to_sql_u64(index)?, imsi.as_str(), iccid.as_str(), kind, campaign, device, now_unix()?],
    )?;
    Ok(Allocation { index, imsi, iccid })
}

/// The allocation made for `device` in `campaign`, if any.
pub(crate) fn allocation_for(
    tx: &mut dyn Tx,
    campaign: &str,
    device: &DeviceId,
) -> Result<Option<Allocation>> {
    let row = tx.query_opt(
        "SELECT pool_index, imsi, iccid FROM allocations WHERE campaign = ?1 AND device_id = ?2",
        args![campaign, device.to_hex()],
    )?;
    row.map(|r| {
        Ok(Allocation {
            index: from_sql_u64(r.get(0)?)?,
            imsi: r.get::<String>(1)?.parse().map_err(|_| MnoError::Corrupt("allocation IMSI"))?,
            iccid: r
                .get::<String>(2)?
                .parse()
                .map_err(|_| MnoError::Corrupt("allocation ICCID"))?,
        })
    })
    .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_follow_the_range() {
        let p = PoolConfig::new("001", "01", "0000000001", 10, "8900101").unwrap();
        assert_eq!(p.imsi(0).unwrap().as_str(), "001010000000001");
        assert_eq!(p.imsi(9).unwrap().as_str(), "001010000000010");
        assert!(matches!(p.imsi(10), Err(MnoError::PoolExhausted { count: 10 })));
        let iccid = p.iccid(3).unwrap();
        assert_eq!(iccid.as_str().len(), 20);
        assert!(iccid.as_str().starts_with("8900101000000000003"));
    }

    #[test]
    fn bad_ranges_are_refused() {
        assert!(PoolConfig::new("01", "01", "1", 1, "89").is_err());
        assert!(PoolConfig::new("001", "1", "1", 1, "89").is_err());
        assert!(PoolConfig::new("001", "01", "0000000000001", 1, "89").is_err(), "16 digits");
        assert!(PoolConfig::new("001", "01", "99", 2, "89").is_err(), "range overflows");
        assert!(PoolConfig::new("001", "01", "10", 0, "89").is_err());
        assert!(PoolConfig::new("001", "01", "10", 5, "12").is_err(), "not 89");
        assert!(PoolConfig::new("001", "01", "0000000000", 1000, "89123456789012345").is_err());
        assert!(PoolConfig::new("001", "01", "98", 2, "89").is_ok());
    }
}
