//! Rooms: the event model, the authorization rules and state resolution.
//!
//! This module tree is pure: no storage, no I/O, no clock. Callers hand in
//! events and lookups (closures over whatever store or cache they keep) and
//! get typed answers back.
//!
//! - [`version`]: the supported room versions (10, 11, 12) and ruma's rules
//!   for each.
//! - [`pdu`]: [`pdu::Pdu`], one event of a room's DAG parsed from its
//!   canonical JSON, kept with exactly those bytes.
//! - [`auth`]: the authorization rules (ruma's), which events a new event
//!   must cite, and errors that name the failed rule.
//! - [`resolve`]: state resolution (v2, and v2.1 from room version 12) when
//!   the DAG forks.
//!
//! Signatures and content hashes are checked by `myelin_crypto`, not here:
//! callers verify received PDUs before they reach the authorization rules.

pub mod auth;
pub mod pdu;
pub mod resolve;
pub mod version;

#[cfg(test)]
mod testing;
