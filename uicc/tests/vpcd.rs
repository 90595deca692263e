//! The vpcd wire protocol against a stand-in for vpcd's side (a TCP listener speaking the
//! framing of vsmartcard's vpcd.c): control frames, ATR, APDUs, reconnection and stop.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use protocol::{Amf, Opc, OtaKey, OtaKeys, SubscriberKey, SubscriptionProfile};
use uicc::{ATR, Card, CardOptions};

fn card(dir: &tempfile::TempDir) -> Card {
    let profile = SubscriptionProfile {
        iccid: "89883030000000000015".parse().unwrap(),
        imsi: "001010123456789".parse().unwrap(),
        k: SubscriberKey::new([1; 16]),
        opc: Opc::new([2; 16]),
        amf: Amf([0x80, 0x00]),
        ota: OtaKeys { kic: OtaKey::new([3; 16]), kid: OtaKey::new([4; 16]), counter: 0 },
    };
    Card::create(&dir.path().join("card.json"), profile, CardOptions::new().unwrap()).unwrap()
}

fn send(stream: &mut TcpStream, payload: &[u8]) {
    let mut frame = (payload.len() as u16).to_be_bytes().to_vec();
    frame.extend_from_slice(payload);
    stream.write_all(&frame).unwrap();
}

fn receive(stream: &mut TcpStream) -> Vec<u8> {
    let mut len = [0u8; 2];
    stream.read_exact(&mut len).unwrap();
    let mut payload = vec![0u8; usize::from(u16::from_be_bytes(len))];
    stream.read_exact(&mut payload).unwrap();
    payload
}

#[test]
fn speaks_vpcd_and_reconnects() {
    let dir = tempfile::tempdir().unwrap();
    let card = Arc::new(Mutex::new(card(&dir)));
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let stop = Arc::new(AtomicBool::new(false));
    let server = {
        let (card, stop, addr) = (card.clone(), stop.clone(), addr.clone());
        thread::spawn(move || uicc::vpcd::serve(&card, &addr, &stop))
    };

    for round in 0..2 {
        let (mut vpcd, _) = listener.accept().unwrap();
        vpcd.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        // Power on, then ATR; controls other than ATR get no answer.
        send(&mut vpcd, &[1]);
        send(&mut vpcd, &[4]);
        assert_eq!(receive(&mut vpcd), ATR, "round {round}");
        send(&mut vpcd, &hex::decode("00a4040c07a0000000871002").unwrap());
        assert_eq!(receive(&mut vpcd), [0x90, 0x00]);
        send(&mut vpcd, &hex::decode("00b0870009").unwrap());
        assert_eq!(hex::encode(receive(&mut vpcd)), "0809101010325476989000");
        // A reset deselects the USIM.
        send(&mut vpcd, &[2]);
        send(&mut vpcd, &hex::decode("00b0870009").unwrap());
        assert_eq!(hex::encode(receive(&mut vpcd)), "6a82");
        // Malformed APDUs get a status word, not a dropped connection.
        send(&mut vpcd, &[0x00, 0xB0]);
        assert_eq!(receive(&mut vpcd), [0x67, 0x00]);
        // vpcd going away (pcscd restarting): the card connects again.
        drop(vpcd);
    }
    stop.store(true, Ordering::Relaxed);
    // Accept a reconnection the server may be attempting, without blocking if it already
    // saw the stop flag and returned.
    listener.set_nonblocking(true).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !server.is_finished() {
        let _ = listener.accept();
        assert!(std::time::Instant::now() < deadline, "the vpcd client did not stop");
        thread::sleep(Duration::from_millis(10));
    }
    server.join().unwrap().unwrap();
    // The card is free again for in-process use.
    assert!(card.lock().unwrap().usim_active());
}

#[test]
fn unresolvable_address_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let card = Mutex::new(card(&dir));
    let stop = AtomicBool::new(false);
    let err = uicc::vpcd::serve(&card, "no-such-host.invalid:35963", &stop).unwrap_err();
    assert!(err.to_string().contains("vpcd at no-such-host.invalid:35963"));
}
