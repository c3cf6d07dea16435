//! Push rules: the spec's predefined rules plus each user's changes, kept as
//! the user's `m.push_rules` account data, which sync delivers to every
//! device when it changes.
//!
//! The rule set and its editing operations are ruma's, which follows the
//! spec's "Predefined rules" and the ordering rules of `PUT
//! /pushrules/global/{kind}/{ruleId}` to the letter; this module stores,
//! upgrades and serialises them.

use std::sync::Arc;

use ruma::{UserId, push::Ruleset};
use serde_json::{Value, json};

use super::{ServiceError, account_data::AccountData};
use crate::storage::Storage;

/// The account data type the rules are stored and synced as.
pub const PUSH_RULES_TYPE: &str = "m.push_rules";

/// Reading and changing users' push rules.
#[derive(Debug)]
pub struct PushRules {
    storage: Arc<dyn Storage>,
    account_data: Arc<AccountData>,
    /// Largest rule set an account may keep, in bytes of JSON.
    max_bytes: usize,
}

impl PushRules {
    /// Builds the service; a rule set may take `max_bytes` of JSON.
    pub fn new(
        storage: Arc<dyn Storage>,
        account_data: Arc<AccountData>,
        max_bytes: usize,
    ) -> Self {
        Self {
            storage,
            account_data,
            max_bytes,
        }
    }

    /// The user's rule set: the predefined rules (as this server version
    /// defines them) with the user's changes applied.
    ///
    /// # Errors
    /// Storage failures; a stored rule set that no longer parses.
    pub async fn ruleset(&self, user_id: &UserId) -> Result<Ruleset, ServiceError> {
        let defaults = Ruleset::server_default(user_id);
        let Some(stored) = self
            .storage
            .account_data(user_id, None, PUSH_RULES_TYPE)
            .await?
        else {
            return Ok(defaults);
        };
        #[derive(serde::Deserialize)]
        struct Stored {
            global: Ruleset,
        }
        let mut rules = serde_json::from_str::<Stored>(&stored)
            .map_err(|e| ServiceError::Internal(format!("stored push rules do not parse: {e}")))?
            .global;
        // Predefined rules added since the user last changed something
        // appear, and the user's enabled/actions choices on the old ones stay.
        rules.update_with_server_default(defaults);
        Ok(rules)
    }

    /// Applies `change` to the user's rule set and stores the result, unless
    /// `change` fails.
    ///
    /// # Errors
    /// What `change` returns; storage failures.
    pub async fn change<T>(
        &self,
        user_id: &UserId,
        change: impl FnOnce(&mut Ruleset) -> Result<T, ServiceError>,
    ) -> Result<T, ServiceError> {
        let _serialised = self.account_data.lock_account(user_id).await;
        let mut rules = self.ruleset(user_id).await?;
        let outcome = change(&mut rules)?;
        let content = json!({ "global": ruleset_json(&rules) }).to_string();
        if content.len() > self.max_bytes {
            return Err(ServiceError::TooLarge(format!(
                "push rules are limited to {} bytes per account",
                self.max_bytes
            )));
        }
        self.account_data
            .write(user_id, None, PUSH_RULES_TYPE, &content)
            .await?;
        Ok(outcome)
    }
}

/// A rule set as clients get it: every kind present, empty ones as `[]`
/// (ruma leaves empty kinds out; clients written against other servers
/// expect all five).
pub fn ruleset_json(rules: &Ruleset) -> Value {
    let mut value = json!(rules);
    if let Some(kinds) = value.as_object_mut() {
        for kind in ["override", "content", "room", "sender", "underride"] {
            kinds.entry(kind).or_insert_with(|| json!([]));
        }
    }
    value
}
