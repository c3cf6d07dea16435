//! Push rules: the spec's predefined rules plus each user's changes, kept as
//! the user's `m.push_rules` account data, which sync delivers to every
//! device when it changes.
//!
//! The rule set and its editing operations are ruma's, which follows the
//! spec's "Predefined rules" and the ordering rules of `PUT
//! /pushrules/global/{kind}/{ruleId}` to the letter; this module stores,
//! upgrades and serialises them.

use std::sync::Arc;

use ruma::{
    RoomId, UserId,
    push::{
        ConditionalPushRule, NewConditionalPushRule, NewPushRule, NewSimplePushRule, PushCondition,
        RuleKind, Ruleset,
    },
};
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

impl PushRules {
    /// Gives `new_room` the user's rules for `old_room`, which it replaces
    /// (room upgrades; spec-notes/push.md, "Room upgrades"). Rules the user
    /// already has for the new room stay as they are.
    ///
    /// # Errors
    /// Storage failures; `TooLarge` when the copies would pass the rule
    /// set's size limit.
    pub async fn copy_room_rules(
        &self,
        user_id: &UserId,
        old_room: &RoomId,
        new_room: &RoomId,
    ) -> Result<(), ServiceError> {
        // Most joins are to rooms the user has no rules for: read, not write.
        let mut rules = self.ruleset(user_id).await?;
        if !copy_room_rules(&mut rules, old_room, new_room) {
            return Ok(());
        }
        self.change(user_id, |rules| {
            copy_room_rules(rules, old_room, new_room);
            Ok(())
        })
        .await
    }
}

/// Copies into `rules` what applies to `old_room` only, for `new_room`: the
/// room rule named after it, and the user's override and underride rules
/// whose room conditions all read `room_id == old_room` (with those
/// conditions rewritten). A copied override or underride rule takes the
/// old rule's id with the room id replaced, or, when the id does not name
/// the room, the new room's id (as Synapse names them). Enabled or not, a
/// copy is as the original was. Returns whether anything was copied.
fn copy_room_rules(rules: &mut Ruleset, old_room: &RoomId, new_room: &RoomId) -> bool {
    let mut copies: Vec<(NewPushRule, RuleKind, bool)> = Vec::new();
    if let Some(rule) = rules.room.get(old_room.as_str())
        && rules.room.get(new_room.as_str()).is_none()
    {
        let copy = NewSimplePushRule::new(new_room.to_owned(), rule.actions.clone());
        copies.push((NewPushRule::Room(copy), RuleKind::Room, rule.enabled));
    }
    for (kind, set) in [
        (RuleKind::Override, &rules.override_),
        (RuleKind::Underride, &rules.underride),
    ] {
        for rule in set.iter().filter(|rule| !rule.default) {
            let Some(copy) = conditional_copy(rule, old_room, new_room) else {
                continue;
            };
            if set.get(copy.rule_id.as_str()).is_some() {
                continue;
            }
            let new = match kind {
                RuleKind::Override => NewPushRule::Override(copy),
                _ => NewPushRule::Underride(copy),
            };
            copies.push((new, kind.clone(), rule.enabled));
        }
    }
    let copied = !copies.is_empty();
    for (copy, kind, enabled) in copies {
        let rule_id = copy.rule_id().to_owned();
        // Neither call can fail: the ids are not server-default ones
        // (those start with `.`, room ids with `!`, and a rule id taken
        // from a user rule is a user rule's), and the rule was just added.
        if rules.insert(copy, None, None).is_ok() {
            let _ = rules.set_enabled(kind, &rule_id, enabled);
        }
    }
    copied
}

/// `rule` for `new_room`, when its room conditions all name `old_room`.
fn conditional_copy(
    rule: &ConditionalPushRule,
    old_room: &RoomId,
    new_room: &RoomId,
) -> Option<NewConditionalPushRule> {
    let is_room_condition = |condition: &PushCondition| matches!(condition, PushCondition::EventMatch(data) if data.key == "room_id");
    let mut room_conditions = rule
        .conditions
        .iter()
        .filter(|condition| is_room_condition(condition))
        .peekable();
    room_conditions.peek()?;
    let names_old_room = room_conditions.all(|condition| {
        matches!(condition, PushCondition::EventMatch(data) if data.pattern == old_room.as_str())
    });
    if !names_old_room {
        return None;
    }
    let conditions = rule
        .conditions
        .iter()
        .map(|condition| match condition {
            PushCondition::EventMatch(data) if data.key == "room_id" => {
                let mut data = data.clone();
                data.pattern = new_room.to_string();
                PushCondition::EventMatch(data)
            }
            other => other.clone(),
        })
        .collect();
    let rule_id = if rule.rule_id.contains(old_room.as_str()) {
        rule.rule_id.replace(old_room.as_str(), new_room.as_str())
    } else {
        new_room.to_string()
    };
    Some(NewConditionalPushRule::new(
        rule_id,
        conditions,
        rule.actions.clone(),
    ))
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

#[cfg(test)]
mod tests {
    use ruma::{owned_room_id, owned_user_id, push::Action};
    use serde_json::json;

    use super::*;

    fn user_rules(extra: serde_json::Value) -> Ruleset {
        let mut rules = Ruleset::server_default(&owned_user_id!("@a:x"));
        let extra: Ruleset = serde_json::from_value(extra).unwrap();
        rules.override_.extend(extra.override_);
        rules.underride.extend(extra.underride);
        rules.room.extend(extra.room);
        rules
    }

    fn event_match(key: &str, pattern: &str) -> serde_json::Value {
        json!({ "kind": "event_match", "key": key, "pattern": pattern })
    }

    #[test]
    fn rules_for_the_old_room_only_are_copied() {
        let (old, new) = (owned_room_id!("!old:x"), owned_room_id!("!new:x"));
        let mut rules = user_rules(json!({
            "room": [{ "rule_id": "!old:x", "actions": [], "enabled": false, "default": false }],
            "override": [
                { "rule_id": "mute !old:x", "actions": [], "enabled": true, "default": false,
                  "conditions": [event_match("room_id", "!old:x"), event_match("sender", "@b:x")] },
                { "rule_id": "two rooms", "actions": [], "enabled": true, "default": false,
                  "conditions": [event_match("room_id", "!old:x"), event_match("room_id", "!other:x")] },
                { "rule_id": "anywhere", "actions": [], "enabled": true, "default": false,
                  "conditions": [event_match("sender", "@b:x")] },
            ],
            "underride": [
                { "rule_id": "loud", "actions": ["notify"], "enabled": true, "default": false,
                  "conditions": [event_match("room_id", "!old:x")] },
            ],
        }));
        assert!(copy_room_rules(&mut rules, &old, &new));

        let room = rules.room.get("!new:x").expect("room rule copied");
        assert!(!room.enabled && room.actions.is_empty());
        let muted = rules.override_.get("mute !new:x").expect("override copied");
        let conditions = serde_json::to_value(&muted.conditions).unwrap();
        assert_eq!(
            conditions,
            json!([
                event_match("room_id", "!new:x"),
                event_match("sender", "@b:x")
            ])
        );
        let loud = rules
            .underride
            .get("!new:x")
            .expect("underride copied, named for the room");
        assert!(loud.actions.iter().any(Action::should_notify));
        // Nothing else: not the rule for two rooms, not the one for anywhere.
        assert_eq!(rules.override_.iter().filter(|r| !r.default).count(), 4);
        // The originals stay.
        assert!(rules.room.get("!old:x").is_some());

        // A second copy finds everything there and changes nothing.
        let before = serde_json::to_value(&rules).unwrap();
        assert!(!copy_room_rules(&mut rules, &old, &new));
        assert_eq!(serde_json::to_value(&rules).unwrap(), before);
    }

    #[test]
    fn rules_already_set_for_the_new_room_stay() {
        let (old, new) = (owned_room_id!("!old:x"), owned_room_id!("!new:x"));
        let mut rules = user_rules(json!({
            "room": [
                { "rule_id": "!old:x", "actions": [], "enabled": true, "default": false },
                { "rule_id": "!new:x", "actions": ["notify"], "enabled": true, "default": false },
            ],
        }));
        assert!(!copy_room_rules(&mut rules, &old, &new));
        let kept = rules.room.get("!new:x").unwrap();
        assert!(kept.actions.iter().any(Action::should_notify));
        assert!(!copy_room_rules(&mut user_rules(json!({})), &old, &new));
    }
}
