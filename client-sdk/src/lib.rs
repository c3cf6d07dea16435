//! Myelin's client SDK.
//!
//! This crate will hold the async `Client` (login, sync loop, rooms,
//! timelines), its persistent store, and the sans-I/O end-to-end encryption
//! state machine (see `ARCHITECTURE.md` and issues 6 and 7).
//!
//! Nothing is implemented yet: the crate exists so the workspace has its
//! final shape. Until then, [`myelin_crypto`] is the SDK's cryptographic base.

pub mod machine;

pub use myelin_crypto;
