//! End-to-end encryption on the server: device keys, one-time and fallback
//! keys, cross-signing, and the device lists that tell clients whose keys
//! to fetch again. The server stores and routes public keys and signatures
//! only; it checks every signature it is handed but holds no secret.
//! Decisions and threats: spec-notes/device-keys.md.

pub mod cross_signing;
pub mod device_lists;
pub mod keys;
pub mod query;
pub mod validate;

pub use device_lists::{DeviceListUpdate, DeviceLists};
pub use keys::E2eeKeys;
