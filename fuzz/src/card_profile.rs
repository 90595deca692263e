//! The subscription the `apdu` target's card is manufactured with. Shared, by `#[path]`,
//! with the seed generator (`seeds/`), which MACs OTA commands and computes AUTHENTICATE
//! vectors for exactly this card so that seeds reach past the MAC and AUTN checks.

use protocol::{Amf, Opc, OtaKey, OtaKeys, SubscriberKey, SubscriptionProfile};

pub const ICCID: &str = "89883030000000000015";
pub const IMSI: &str = "001010123456789";
/// 3GPP TS 35.207 test set 1: K and OPc.
pub const K: [u8; 16] = [
    0x46, 0x5b, 0x5c, 0xe8, 0xb1, 0x99, 0xb4, 0x9f, 0xaa, 0x5f, 0x0a, 0x2e, 0xe2, 0x38, 0xa6, 0xbc,
];
pub const OPC: [u8; 16] = [
    0xcd, 0x63, 0xcb, 0x71, 0x95, 0x4a, 0x9f, 0x4e, 0x48, 0xa5, 0x99, 0x4e, 0x37, 0xa0, 0x2b, 0xaf,
];
pub const AMF: [u8; 2] = [0xb9, 0xb9];
pub const KIC: [u8; 16] = [0x33; 16];
pub const KID: [u8; 16] = [0x44; 16];
/// PIN1 (enabled, so VERIFY and the PIN-gated commands are reachable) and ADM1.
pub const PIN1: &str = "1234";
pub const ADM1: &str = "12345678";

pub fn profile() -> SubscriptionProfile {
    SubscriptionProfile {
        iccid: ICCID.parse().unwrap_or_else(|_| unreachable!("constant ICCID")),
        imsi: IMSI.parse().unwrap_or_else(|_| unreachable!("constant IMSI")),
        k: SubscriberKey::new(K),
        opc: Opc::new(OPC),
        amf: Amf(AMF),
        ota: OtaKeys { kic: OtaKey::new(KIC), kid: OtaKey::new(KID), counter: 0 },
    }
}
