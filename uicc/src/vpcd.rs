//! The vsmartcard vpcd protocol, card side: the card connects as a TCP client to the vpcd
//! reader driver that pcscd loaded (port 35963 for reader 0), so any PC/SC application sees
//! it as a card in a reader.
//!
//! Frames are a 2-byte big-endian length followed by that many bytes. From vpcd, a 1-byte
//! frame is a control — 0 power off, 1 power on, 2 reset, 4 get ATR (answered with the ATR)
//! — and anything longer is a command APDU, answered with response ‖ SW1 SW2
//! (vsmartcard virtualsmartcard/src/vpcd/vpcd.c).

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use crate::card::Card;
use crate::error::UiccError;

/// vpcd's port for its first reader.
pub const DEFAULT_PORT: u16 = 35963;

const CTRL_OFF: u8 = 0;
const CTRL_ON: u8 = 1;
const CTRL_RESET: u8 = 2;
const CTRL_ATR: u8 = 4;

/// How often a blocked read wakes up to look at the stop flag.
const POLL: Duration = Duration::from_millis(200);
const RECONNECT: Duration = Duration::from_millis(250);

/// Connects `card` to vpcd at `addr` and serves it until `stop` is set, reconnecting when
/// vpcd goes away (pcscd restarts) or is not there yet. Fails only if `addr` does not
/// resolve.
pub fn serve(card: &Mutex<Card>, addr: &str, stop: &AtomicBool) -> Result<(), UiccError> {
    let addrs: Vec<_> = addr
        .to_socket_addrs()
        .map_err(|source| UiccError::Vpcd { addr: addr.to_owned(), source })?
        .collect();
    let mut waiting_logged = false;
    while !stop.load(Ordering::Relaxed) {
        match TcpStream::connect(&addrs[..]) {
            Ok(stream) => {
                waiting_logged = false;
                tracing::info!(%addr, "connected to vpcd");
                match run_connection(card, stream, stop) {
                    Ok(()) => tracing::info!(%addr, "vpcd closed the connection"),
                    Err(e) => tracing::warn!(%addr, error = %e, "vpcd connection failed"),
                }
            }
            Err(e) => {
                if !waiting_logged {
                    tracing::info!(%addr, error = %e, "waiting for vpcd");
                    waiting_logged = true;
                }
                std::thread::sleep(RECONNECT);
            }
        }
    }
    Ok(())
}

/// Serves one vpcd connection until vpcd closes it or `stop` is set.
pub fn run_connection(
    card: &Mutex<Card>,
    mut stream: TcpStream,
    stop: &AtomicBool,
) -> io::Result<()> {
    stream.set_read_timeout(Some(POLL))?;
    stream.set_nodelay(true)?;
    let mut reader = FrameReader::default();
    while let Some(frame) = reader.next(&mut stream, stop)? {
        let mut card = card.lock().unwrap_or_else(PoisonError::into_inner);
        let answer = match frame.as_slice() {
            [] => None,
            [CTRL_OFF] | [CTRL_ON] | [CTRL_RESET] => {
                card.reset();
                None
            }
            [CTRL_ATR] => Some(card.atr().to_vec()),
            [other] => {
                tracing::warn!(control = other, "unknown vpcd control byte");
                None
            }
            apdu => Some(card.transmit(apdu)),
        };
        drop(card);
        if let Some(answer) = answer {
            let len =
                u16::try_from(answer.len()).map_err(|_| io::Error::other("answer too long"))?;
            let mut out = Vec::with_capacity(answer.len() + 2);
            out.extend_from_slice(&len.to_be_bytes());
            out.extend_from_slice(&answer);
            stream.write_all(&out)?;
        }
    }
    Ok(())
}

/// Reassembles length-prefixed frames; never holds more than one frame and one read.
#[derive(Default)]
struct FrameReader {
    buf: Vec<u8>,
}

impl FrameReader {
    fn next(&mut self, stream: &mut impl Read, stop: &AtomicBool) -> io::Result<Option<Vec<u8>>> {
        let mut chunk = [0u8; 4096];
        loop {
            if let Some((&[hi, lo], rest)) = self.buf.split_first_chunk::<2>() {
                let len = usize::from(u16::from_be_bytes([hi, lo]));
                if let Some(frame) = rest.get(..len) {
                    let frame = frame.to_vec();
                    self.buf.drain(..2 + len);
                    return Ok(Some(frame));
                }
            }
            if stop.load(Ordering::Relaxed) {
                return Ok(None);
            }
            match stream.read(&mut chunk) {
                Ok(0) => return Ok(None),
                Ok(n) => self.buf.extend_from_slice(chunk.get(..n).unwrap_or_default()),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock
                            | io::ErrorKind::TimedOut
                            | io::ErrorKind::Interrupted
                    ) => {}
                Err(e) => return Err(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_reassemble_across_reads() {
        let bytes = [0u8, 1, 4, 0, 3, 0xAA, 0xBB, 0xCC, 0, 1];
        let mut r = FrameReader::default();
        let stop = AtomicBool::new(false);
        let mut input = &bytes[..];
        assert_eq!(r.next(&mut input, &stop).unwrap(), Some(vec![4]));
        assert_eq!(r.next(&mut input, &stop).unwrap(), Some(vec![0xAA, 0xBB, 0xCC]));
        // A truncated frame at end of stream is dropped, not returned.
        assert_eq!(r.next(&mut input, &stop).unwrap(), None);
    }
}
