//! Sending to-device messages
//! ([`/sendToDevice`](https://spec.matrix.org/v1.16/client-server-api/#put_matrixclientv3sendtodeviceeventtypetxnid)):
//! one request per batch of recipients, as the crypto layer needs for key
//! sharing.

use std::collections::BTreeMap;

use rand::Rng;
use reqwest::Method;
use ruma::OwnedUserId;
use serde_json::{Value, json};

use crate::{Client, error::Result, http::Request};

/// Recipients of a to-device message: user → device id (or `*` for all
/// of the user's devices) → content.
pub type ToDeviceMessages = BTreeMap<OwnedUserId, BTreeMap<String, Value>>;

impl Client {
    /// Sends `event_type` to each listed device in one request. The
    /// transaction id is kept across this call's retries, so a retried
    /// request is delivered once.
    ///
    /// # Errors
    ///
    /// Matrix and network errors.
    pub async fn send_to_device(
        &self,
        event_type: &str,
        messages: &ToDeviceMessages,
    ) -> Result<()> {
        let txn_id = format!("d{:016x}", rand::thread_rng().r#gen::<u64>());
        let request = Request::v3(Method::PUT, &["sendToDevice", event_type, &txn_id])
            .json(json!({ "messages": messages }));
        let _: Value = self
            .inner
            .http
            .send_with_retries(&request, &self.inner.request_retry)
            .await?;
        Ok(())
    }
}
