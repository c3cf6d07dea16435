//! Attack tests: for each promise in spec-notes/threat-model.md, the
//! attacker (an outsider with an account, a room member with or without
//! power, a malicious homeserver, the thief of a device) tries to break it
//! and fails. One module per area.

mod accounts;
mod bounds;
mod outsiders;
mod rate_limits;
mod room_cache;
mod room_writes;
mod to_device;
