//! The CBOR API messages of the RO's device API (`protocol::device_api`), the PVA's API
//! (`protocol::pva_api`) and the MNO API (`provisioning::mno::api`), decoded with the same
//! functions the services use; the first byte selects the type (table below). A message
//! that decodes must encode and decode back to itself.

#![no_main]

use std::fmt::Debug;

use libfuzzer_sys::fuzz_target;
use protocol::device_api::{self, AbortAck, AkaResult, AttachRequest, DeviceTask, InstallResult};
use protocol::pva_api::{
    ActivateRequest, ActivateResponse, AppraiseRequest, AppraiseResponse, ChallengeRequest,
    ChallengeResponse, EnrolRequest, EnrolResponse, Message,
};
use provisioning::mno::api::{
    self as mno, ActivateTreResponse, AkaChallenge, AkaVerdict, CampaignRequest, CampaignStatus,
    ImsiList, ImsiListAck, PrepareResponse, RegisterResponse, Report, ReportAck,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

fn device<T: Serialize + DeserializeOwned + PartialEq + Debug>(body: &[u8]) {
    let Ok(message) = device_api::from_cbor::<T>(body) else { return };
    let encoded = device_api::to_cbor(&message).expect("decoded message encodes");
    assert_eq!(device_api::from_cbor::<T>(&encoded).expect("re-encoded decodes"), message);
}

fn pva<T: Message + PartialEq + Debug>(body: &[u8]) {
    let Ok(message) = T::from_cbor(body) else { return };
    let encoded = message.to_cbor().expect("decoded message encodes");
    assert_eq!(T::from_cbor(&encoded).expect("re-encoded decodes"), message);
}

fn mno<T: Serialize + DeserializeOwned + PartialEq + Debug>(body: &[u8]) {
    if body.len() > mno::MAX_BULK_BODY {
        return; // the service's body limit, applied before decoding
    }
    let Ok(message) = mno::from_cbor::<T>(body) else { return };
    let encoded = mno::to_cbor(&message).expect("decoded message encodes");
    assert_eq!(mno::from_cbor::<T>(&encoded).expect("re-encoded decodes"), message);
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else { return };
    match selector % 24 {
        0 => device::<DeviceTask>(body),
        1 => device::<AttachRequest>(body),
        2 => device::<InstallResult>(body),
        3 => device::<AkaResult>(body),
        4 => device::<AbortAck>(body),
        5 => pva::<EnrolRequest>(body),
        6 => pva::<EnrolResponse>(body),
        7 => pva::<ActivateRequest>(body),
        8 => pva::<ActivateResponse>(body),
        9 => pva::<ChallengeRequest>(body),
        10 => pva::<ChallengeResponse>(body),
        11 => pva::<AppraiseRequest>(body),
        12 => pva::<AppraiseResponse>(body),
        13 => mno::<CampaignRequest>(body),
        14 => mno::<ImsiList>(body),
        15 => mno::<ImsiListAck>(body),
        16 => mno::<ActivateTreResponse>(body),
        17 => mno::<RegisterResponse>(body),
        18 => mno::<AkaChallenge>(body),
        19 => mno::<AkaVerdict>(body),
        20 => mno::<Report>(body),
        21 => mno::<ReportAck>(body),
        22 => mno::<CampaignStatus>(body),
        _ => mno::<PrepareResponse>(body),
    }
});
