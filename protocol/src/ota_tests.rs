//! Tests of the OTA command and response formats: known answers (computed independently with
//! the AES-CMAC of Python's `cryptography` package, whose engine RFC 4493's example checks
//! below), every check failing closed, and truncations that never panic.

use super::*;
use crate::ids::Imsi;

fn iccid() -> Iccid {
    "89883030000000000015".parse().unwrap()
}

fn imsi() -> Imsi {
    "001010123456789".parse().unwrap()
}

fn activation() -> Activation {
    Activation::new("c-1", "mno-b").unwrap()
}

fn kat_key() -> OtaKey {
    OtaKey::from_hex("000102030405060708090a0b0c0d0e0f").unwrap()
}

fn response(counter: u64) -> Response {
    Response {
        command: OtaCommand::ActivateTre,
        counter,
        status: ResponseStatus::PorOk,
        iccid: iccid(),
        imsi: imsi(),
        activation: Some(activation()),
    }
}

#[test]
fn cmac_matches_rfc4493() {
    // RFC 4493 §4, example 2 (AES-128, 16-byte message): the CMAC engine under the MAC.
    let key = OtaKey::from_hex("2b7e151628aed2a6abf7158809cf4f3c").unwrap();
    let mut m = new_cmac(&key);
    m.update(&hex::decode("6bc1bee22e409f96e93d7e117393172a").unwrap());
    assert_eq!(hex::encode(m.finalize().into_bytes()), "070a16b46b4d4144f79bdd9dd04a287c");
}

#[test]
fn known_answers() {
    // Key 00..0f, ICCID 89883030000000000015, counter 5, campaign "c-1", operator "mno-b";
    // IMSI 001010123456789 in the response; "deactivate TRE" with counter 6.
    let kid = kat_key();
    let command = seal_activate_tre(&kid, &iccid(), 5, &activation()).unwrap();
    assert_eq!(
        hex::encode(&command),
        "80ee00002f01010000000005143839383833303330303030303030303030303135\
         0a03632d31056d6e6f2d622e004cb3d8088fdf"
    );
    let off = seal(&Action::DeactivateTre, &kid, &iccid(), 6).unwrap();
    assert_eq!(
        hex::encode(&off),
        "80ee00002501020000000006143839383833303330303030303030303030303135005434764e11457ee7"
    );
    let answer = seal_response(&kid, &response(5)).unwrap();
    assert_eq!(
        hex::encode(&answer),
        "0101000000000500143839383833303330303030303030303030303135\
         0f30303130313031323334353637383903632d31056d6e6f2d628e450b05ade2f506"
    );
    assert_eq!(
        verify(&command, &kid, &iccid(), 4).unwrap().action,
        Action::ActivateTre(activation())
    );
    assert_eq!(verify_response(&answer, &kid, &response(5)), Ok(()));
}

#[test]
fn sealed_command_verifies_once() {
    let kid = OtaKey::new([7; 16]);
    let apdu = seal_activate_tre(&kid, &iccid(), 5, &activation()).unwrap();
    assert_eq!(&apdu[..4], &[0x80, 0xEE, 0x00, 0x00]);
    assert_eq!(usize::from(apdu[4]), apdu.len() - 5);
    let v = verify(&apdu, &kid, &iccid(), 4).unwrap();
    assert_eq!(v, Verified { action: Action::ActivateTre(activation()), counter: 5 });
    assert_eq!(v.action.command(), OtaCommand::ActivateTre);
    assert_eq!(v.action.activation().map(Activation::operator), Some("mno-b"));
    assert_eq!(verify(&apdu, &kid, &iccid(), 5), Err(OtaError::Replay { counter: 5, last: 5 }));
    // A trailing Le byte is tolerated.
    let mut case4 = apdu.clone();
    case4.push(0);
    assert!(verify(&case4, &kid, &iccid(), 0).is_ok());
}

#[test]
fn each_check_has_its_own_error() {
    let kid = OtaKey::new([7; 16]);
    let apdu = seal(&Action::DeactivateTre, &kid, &iccid(), 9).unwrap();
    let other: Iccid = "89883030000000000023".parse().unwrap();
    assert_eq!(verify(&apdu, &kid, &other, 0), Err(OtaError::WrongIccid));
    assert_eq!(verify(&apdu, &OtaKey::new([8; 16]), &iccid(), 0), Err(OtaError::BadMac));
    let mut flipped = apdu.clone();
    flipped[7] ^= 1; // a counter byte
    assert_eq!(verify(&flipped, &kid, &iccid(), 0), Err(OtaError::BadMac));
    let mut version = apdu.clone();
    version[5] = 9;
    assert_eq!(verify(&version, &kid, &iccid(), 0), Err(OtaError::UnknownVersion(9)));
    let mut code = apdu.clone();
    code[6] = 0x77;
    assert_eq!(verify(&code, &kid, &iccid(), 0), Err(OtaError::UnknownCommand(0x77)));
    let mut cla = apdu.clone();
    cla[0] = 0x00;
    assert_eq!(verify(&cla, &kid, &iccid(), 0), Err(OtaError::NotOta));
    assert!(matches!(
        verify(&apdu[..apdu.len() - 1], &kid, &iccid(), 0),
        Err(OtaError::Malformed(_))
    ));
    assert_eq!(
        seal_activate_tre(&kid, &iccid(), COUNTER_MAX + 1, &activation()),
        Err(OtaError::CounterRange)
    );
}

#[test]
fn the_parameters_are_authenticated_and_checked() {
    let kid = OtaKey::new([7; 16]);
    let apdu = seal_activate_tre(&kid, &iccid(), 5, &activation()).unwrap();
    // Another operator's name in the same place: the MAC no longer verifies.
    let at = apdu.windows(5).position(|w| w == b"mno-b").unwrap();
    let mut renamed = apdu.clone();
    renamed[at..at + 5].copy_from_slice(b"mno-x");
    assert_eq!(verify(&renamed, &kid, &iccid(), 0), Err(OtaError::BadMac));
    // MACed but without parameters, or with parameters where none belong: refused.
    let bare = build(&kid, OtaCommand::ActivateTre, 5, &[]);
    assert!(matches!(verify(&bare, &kid, &iccid(), 0), Err(OtaError::Malformed(_))));
    let extra = build(&kid, OtaCommand::DeactivateTre, 5, &[1, b'x', 1, b'y']);
    assert!(matches!(verify(&extra, &kid, &iccid(), 0), Err(OtaError::Malformed(_))));
    // MACed parameters that are not a campaign id and a role name.
    for params in [
        &b"\x03c/1\x05mno-b"[..],
        b"\x03c-1\x05MNO-B",
        b"\x00\x05mno-b",
        b"\x03c-1\x00",
        b"\x03c-1\x05mno-b\x00",
        b"\x03c-1\x06mno-b",
        b"\x02\xff\xfe\x05mno-b",
    ] {
        let cmd = build(&kid, OtaCommand::ActivateTre, 5, params);
        assert!(
            matches!(
                verify(&cmd, &kid, &iccid(), 0),
                Err(OtaError::BadParameter(_) | OtaError::Malformed(_))
            ),
            "{params:?}"
        );
    }
    assert!(Activation::new("..", "mno-b").is_err());
    assert!(Activation::new("c1", "-mno").is_err());
    assert!(Activation::new(&"c".repeat(65), "mno-b").is_err());
}

/// A command MACed correctly around arbitrary parameter bytes.
fn build(kid: &OtaKey, command: OtaCommand, counter: u64, params: &[u8]) -> Vec<u8> {
    let digits = iccid().as_str().as_bytes().to_vec();
    let mut header = vec![VERSION, command.code()];
    header.extend_from_slice(&counter.to_be_bytes()[3..]);
    header.push(digits.len() as u8);
    header.extend_from_slice(&digits);
    header.push(params.len() as u8);
    header.extend_from_slice(params);
    let apdu_header = [CLA, INS, 0, 0];
    let mac = checksum(kid, &[&apdu_header, &header]);
    let mut apdu = apdu_header.to_vec();
    apdu.push((header.len() + MAC_LEN) as u8);
    apdu.extend_from_slice(&header);
    apdu.extend_from_slice(&mac);
    apdu
}

#[test]
fn truncations_never_panic() {
    let kid = OtaKey::new([1; 16]);
    let apdu = seal_activate_tre(&kid, &iccid(), COUNTER_MAX, &activation()).unwrap();
    for n in 0..apdu.len() {
        assert!(verify(&apdu[..n], &kid, &iccid(), 0).is_err());
    }
    assert!(verify(&apdu, &kid, &iccid(), COUNTER_MAX - 1).is_ok());
    let answer = seal_response(&kid, &response(COUNTER_MAX)).unwrap();
    for n in 0..answer.len() {
        assert!(verify_response(&answer[..n], &kid, &response(COUNTER_MAX)).is_err(), "{n}");
    }
}

#[test]
fn a_response_says_exactly_what_is_expected() {
    let kid = OtaKey::new([7; 16]);
    let answer = seal_response(&kid, &response(5)).unwrap();
    assert_eq!(verify_response(&answer, &kid, &response(5)), Ok(()));
    assert_eq!(
        verify_response(&answer, &OtaKey::new([8; 16]), &response(5)),
        Err(OtaError::ResponseBadMac)
    );
    let mismatch = |edit: fn(&mut Response)| {
        let mut expected = response(5);
        edit(&mut expected);
        verify_response(&answer, &kid, &expected)
    };
    let field = OtaError::ResponseMismatch;
    assert_eq!(mismatch(|r| r.counter = 6), Err(field("counter")));
    assert_eq!(
        mismatch(|r| r.iccid = "89883030000000000023".parse().unwrap()),
        Err(field("ICCID"))
    );
    assert_eq!(mismatch(|r| r.imsi = "001010000000001".parse().unwrap()), Err(field("IMSI")));
    assert_eq!(
        mismatch(|r| r.activation = Some(Activation::new("c-2", "mno-b").unwrap())),
        Err(field("campaign"))
    );
    assert_eq!(
        mismatch(|r| r.activation = Some(Activation::new("c-1", "mno-c").unwrap())),
        Err(field("operator"))
    );
    assert_eq!(
        mismatch(|r| {
            r.command = OtaCommand::DeactivateTre;
            r.activation = None;
        }),
        Err(field("command"))
    );
    // Any changed byte of the response breaks its MAC or its syntax.
    for i in 0..answer.len() {
        let mut flipped = answer.clone();
        flipped[i] ^= 0x01;
        assert!(verify_response(&flipped, &kid, &response(5)).is_err(), "byte {i}");
    }
}

#[test]
fn swapped_fields_do_not_verify() {
    // A response whose ICCID and IMSI fields trade places is another message: its MAC fails.
    let kid = OtaKey::new([7; 16]);
    let answer = seal_response(&kid, &response(5)).unwrap();
    let i = answer.windows(20).position(|w| w == iccid().as_str().as_bytes()).unwrap() - 1;
    let iccid_lv = answer[i..i + 21].to_vec();
    let imsi_lv = answer[i + 21..i + 37].to_vec();
    let mut swapped = answer[..i].to_vec();
    swapped.extend_from_slice(&imsi_lv);
    swapped.extend_from_slice(&iccid_lv);
    swapped.extend_from_slice(&answer[i + 37..]);
    assert_eq!(swapped.len(), answer.len());
    assert_eq!(verify_response(&swapped, &kid, &response(5)), Err(OtaError::ResponseBadMac));
    // Campaign and operator swapped in the command: not a valid MAC either.
    let apdu = seal_activate_tre(&kid, &iccid(), 5, &activation()).unwrap();
    let mut cmd = apdu.clone();
    let p = cmd.windows(3).position(|w| w == b"c-1").unwrap() - 1;
    let mut params = vec![5];
    params.extend_from_slice(b"mno-b");
    params.push(3);
    params.extend_from_slice(b"c-1");
    cmd[p..p + params.len()].copy_from_slice(&params);
    assert_eq!(verify(&cmd, &kid, &iccid(), 0), Err(OtaError::BadMac));
}

#[test]
fn commands_and_responses_never_pass_for_each_other() {
    let kid = OtaKey::new([7; 16]);
    let apdu = seal_activate_tre(&kid, &iccid(), 5, &activation()).unwrap();
    let answer = seal_response(&kid, &response(5)).unwrap();
    // A command replayed as a response, whole or without its APDU header.
    assert!(verify_response(&apdu, &kid, &response(5)).is_err());
    assert!(verify_response(&apdu[5..], &kid, &response(5)).is_err());
    // A response presented as a command, whole or behind an APDU header.
    assert_eq!(verify(&answer, &kid, &iccid(), 0), Err(OtaError::NotOta));
    let mut wrapped = vec![CLA, INS, 0, 0, answer.len() as u8];
    wrapped.extend_from_slice(&answer);
    assert!(verify(&wrapped, &kid, &iccid(), 0).is_err());
    // The same bytes MACed under the command's rule do not pass as a response, nor the
    // other way round: the MAC inputs differ in their first byte.
    let body = &answer[..answer.len() - MAC_LEN];
    let mut as_command_mac = body.to_vec();
    as_command_mac.extend_from_slice(&checksum(&kid, &[&[CLA, INS, 0, 0], body]));
    assert_eq!(verify_response(&as_command_mac, &kid, &response(5)), Err(OtaError::ResponseBadMac));
    let mut plain_mac = body.to_vec();
    plain_mac.extend_from_slice(&checksum(&kid, &[body]));
    assert_eq!(verify_response(&plain_mac, &kid, &response(5)), Err(OtaError::ResponseBadMac));
}

#[test]
fn activations_serialize_only_when_valid() {
    let json = serde_json::to_string(&activation()).unwrap();
    assert_eq!(json, r#"{"campaign":"c-1","operator":"mno-b"}"#);
    assert_eq!(serde_json::from_str::<Activation>(&json).unwrap(), activation());
    for bad in [
        r#"{"campaign":"c 1","operator":"mno-b"}"#,
        r#"{"campaign":"c-1","operator":"Mno"}"#,
        r#"{"campaign":"c-1"}"#,
        r#"{"campaign":"c-1","operator":"mno-b","extra":1}"#,
    ] {
        assert!(serde_json::from_str::<Activation>(bad).is_err(), "{bad}");
    }
}
