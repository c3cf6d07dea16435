//! Integration tests against in-process Myelin servers over real HTTP.
//! One binary, one link step.

mod accounts;
mod devices;
mod errors;
mod password;
mod profile;
mod storage;
mod tls;
