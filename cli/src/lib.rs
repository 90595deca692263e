//! The library half of the `tresor` binary: what the subcommands share and the end-to-end
//! tests call too.
//!
//! Layout:
//! - [`lab`]: a whole deployment on one machine: PKI, PVA, RO, MNO-A, MNO-B, devices.
//! - [`scale_out`]: the lab's PVA and RO as several instances on PostgreSQL, behind fronts.
//! - [`attack`]: the attack matrix: every attack tresor claims to stop, run against a lab.
//! - [`front`]: a round-robin TCP front (TLS passed through) for several instances of a role.
//! - [`webhook_receiver`]: a receiver of the RO's campaign events, as a device-management
//!   stack runs one.

#![forbid(unsafe_code)]

pub mod attack;
pub mod front;
pub mod lab;
pub mod scale_out;
pub mod webhook_receiver;
