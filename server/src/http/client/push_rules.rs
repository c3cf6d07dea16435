//! `/pushrules/`: reading and editing the user's push rules.

use axum::{Json as Reply, extract::State};
use ruma::{
    OwnedRoomId, OwnedUserId, UserId,
    push::{
        Action, AnyPushRuleRef, InsertPushRuleError, NewConditionalPushRule, NewPatternedPushRule,
        NewPushRule, NewSimplePushRule, PushCondition, RemovePushRuleError, RuleKind,
        RuleNotFoundError, Ruleset,
    },
};
use serde::Deserialize;
use serde_json::{Value, json};

use super::empty_object;
use crate::{
    http::{
        AppState,
        error::MatrixError,
        extract::{Authed, Json, Path, Query},
    },
    service::{ServiceError, push_rules::ruleset_json},
};

/// `GET /pushrules/`.
pub async fn get_all(
    State(state): State<AppState>,
    Authed(session): Authed,
) -> Result<Reply<Value>, MatrixError> {
    let rules = state.push_rules.ruleset(&session.user_id).await?;
    Ok(Reply(json!({ "global": ruleset_json(&rules) })))
}

/// `GET /pushrules/global/`.
pub async fn get_global(
    State(state): State<AppState>,
    Authed(session): Authed,
) -> Result<Reply<Value>, MatrixError> {
    let rules = state.push_rules.ruleset(&session.user_id).await?;
    Ok(Reply(ruleset_json(&rules)))
}

/// `GET /pushrules/global/{kind}/`: the rules of one kind, in order.
pub async fn get_kind(
    State(state): State<AppState>,
    Authed(session): Authed,
    Path(kind): Path<String>,
) -> Result<Reply<Value>, MatrixError> {
    rule_kind(&kind)?;
    let rules = state.push_rules.ruleset(&session.user_id).await?;
    Ok(Reply(ruleset_json(&rules)[kind.as_str()].clone()))
}

/// `GET /pushrules/global/{kind}/{ruleId}`.
pub async fn get_rule(
    State(state): State<AppState>,
    Authed(session): Authed,
    Path((kind, rule_id)): Path<(String, String)>,
) -> Result<Reply<Value>, MatrixError> {
    read_rule(&state, &session.user_id, &kind, &rule_id, rule_json).await
}

#[derive(Debug, Deserialize)]
pub struct Placement {
    before: Option<String>,
    after: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct RuleBody {
    actions: Vec<Action>,
    #[serde(default)]
    conditions: Vec<PushCondition>,
    pattern: Option<String>,
}

/// `PUT /pushrules/global/{kind}/{ruleId}`: creates or replaces a user rule.
pub async fn put_rule(
    State(state): State<AppState>,
    Authed(session): Authed,
    Path((kind, rule_id)): Path<(String, String)>,
    Query(placement): Query<Placement>,
    Json(body): Json<RuleBody>,
) -> Result<Reply<Value>, MatrixError> {
    let rule = new_rule(rule_kind(&kind)?, rule_id, body)?;
    state
        .push_rules
        .change(&session.user_id, |rules| {
            rules
                .insert(
                    rule,
                    placement.after.as_deref(),
                    placement.before.as_deref(),
                )
                .map_err(|error| match error {
                    InsertPushRuleError::UnknownRuleId => ServiceError::NotFound(error.to_string()),
                    other => ServiceError::InvalidParam(other.to_string()),
                })
        })
        .await?;
    Ok(empty_object())
}

/// `DELETE /pushrules/global/{kind}/{ruleId}`: removes a user rule.
pub async fn delete_rule(
    State(state): State<AppState>,
    Authed(session): Authed,
    Path((kind, rule_id)): Path<(String, String)>,
) -> Result<Reply<Value>, MatrixError> {
    let kind = rule_kind(&kind)?;
    state
        .push_rules
        .change(&session.user_id, |rules| {
            rules.remove(kind, &rule_id).map_err(|error| match error {
                RemovePushRuleError::NotFound => no_such_rule(),
                other => ServiceError::InvalidParam(format!("{other}; disable it instead")),
            })
        })
        .await?;
    Ok(empty_object())
}

/// `GET /pushrules/global/{kind}/{ruleId}/enabled`.
pub async fn get_enabled(
    State(state): State<AppState>,
    Authed(session): Authed,
    Path((kind, rule_id)): Path<(String, String)>,
) -> Result<Reply<Value>, MatrixError> {
    read_rule(&state, &session.user_id, &kind, &rule_id, |rule| {
        Ok(json!({ "enabled": rule.enabled() }))
    })
    .await
}

#[derive(Debug, Deserialize)]
pub struct EnabledBody {
    enabled: bool,
}

/// `PUT /pushrules/global/{kind}/{ruleId}/enabled`.
pub async fn put_enabled(
    State(state): State<AppState>,
    Authed(session): Authed,
    Path((kind, rule_id)): Path<(String, String)>,
    Json(body): Json<EnabledBody>,
) -> Result<Reply<Value>, MatrixError> {
    edit_rule(&state, &session.user_id, &kind, |rules, kind| {
        rules.set_enabled(kind, &rule_id, body.enabled)
    })
    .await
}

/// `GET /pushrules/global/{kind}/{ruleId}/actions`.
pub async fn get_actions(
    State(state): State<AppState>,
    Authed(session): Authed,
    Path((kind, rule_id)): Path<(String, String)>,
) -> Result<Reply<Value>, MatrixError> {
    read_rule(&state, &session.user_id, &kind, &rule_id, |rule| {
        Ok(json!({ "actions": rule.actions() }))
    })
    .await
}

#[derive(Debug, Deserialize)]
pub struct ActionsBody {
    actions: Vec<Action>,
}

/// `PUT /pushrules/global/{kind}/{ruleId}/actions`.
pub async fn put_actions(
    State(state): State<AppState>,
    Authed(session): Authed,
    Path((kind, rule_id)): Path<(String, String)>,
    Json(body): Json<ActionsBody>,
) -> Result<Reply<Value>, MatrixError> {
    edit_rule(&state, &session.user_id, &kind, |rules, kind| {
        rules.set_actions(kind, &rule_id, body.actions)
    })
    .await
}

/// Shows one rule of the user's, or 404.
async fn read_rule(
    state: &AppState,
    user_id: &UserId,
    kind: &str,
    rule_id: &str,
    show: impl FnOnce(AnyPushRuleRef<'_>) -> Result<Value, MatrixError>,
) -> Result<Reply<Value>, MatrixError> {
    let kind = rule_kind(kind)?;
    let rules = state.push_rules.ruleset(user_id).await?;
    let rule = rules.get(kind, rule_id).ok_or_else(no_such_rule)?;
    Ok(Reply(show(rule)?))
}

/// Changes one existing rule of the user's, or 404.
async fn edit_rule(
    state: &AppState,
    user_id: &UserId,
    kind: &str,
    edit: impl FnOnce(&mut Ruleset, RuleKind) -> Result<(), RuleNotFoundError>,
) -> Result<Reply<Value>, MatrixError> {
    let kind = rule_kind(kind)?;
    state
        .push_rules
        .change(user_id, |rules| {
            edit(rules, kind).map_err(|_| no_such_rule())
        })
        .await?;
    Ok(empty_object())
}

/// The five kinds the spec defines; anything else is a bad parameter.
fn rule_kind(kind: &str) -> Result<RuleKind, MatrixError> {
    match kind {
        "override" => Ok(RuleKind::Override),
        "underride" => Ok(RuleKind::Underride),
        "sender" => Ok(RuleKind::Sender),
        "room" => Ok(RuleKind::Room),
        "content" => Ok(RuleKind::Content),
        other => Err(MatrixError::invalid_param(format!(
            "unknown push rule kind {other:?}"
        ))),
    }
}

/// A rule of `kind` from a PUT body: conditions for override and underride
/// rules, a pattern for content rules, and an ID that names the room or the
/// sender for room and sender rules.
fn new_rule(kind: RuleKind, rule_id: String, body: RuleBody) -> Result<NewPushRule, MatrixError> {
    let RuleBody {
        actions,
        conditions,
        pattern,
    } = body;
    Ok(match kind {
        RuleKind::Override => {
            NewPushRule::Override(NewConditionalPushRule::new(rule_id, conditions, actions))
        }
        RuleKind::Underride => {
            NewPushRule::Underride(NewConditionalPushRule::new(rule_id, conditions, actions))
        }
        RuleKind::Content => {
            let pattern = pattern
                .ok_or_else(|| MatrixError::invalid_param("a content rule needs a pattern"))?;
            NewPushRule::Content(NewPatternedPushRule::new(rule_id, pattern, actions))
        }
        RuleKind::Room => {
            let room_id = OwnedRoomId::try_from(rule_id)
                .map_err(|_| MatrixError::invalid_param("a room rule's ID must be a room ID"))?;
            NewPushRule::Room(NewSimplePushRule::new(room_id, actions))
        }
        RuleKind::Sender => {
            let user_id = OwnedUserId::try_from(rule_id)
                .map_err(|_| MatrixError::invalid_param("a sender rule's ID must be a user ID"))?;
            NewPushRule::Sender(NewSimplePushRule::new(user_id, actions))
        }
        _ => return Err(MatrixError::invalid_param("unknown push rule kind")),
    })
}

/// One rule in the spec's `PushRule` shape.
fn rule_json(rule: AnyPushRuleRef<'_>) -> Result<Value, MatrixError> {
    let value = match rule {
        AnyPushRuleRef::Override(r) | AnyPushRuleRef::Underride(r) => serde_json::to_value(r),
        AnyPushRuleRef::Content(r) => serde_json::to_value(r),
        AnyPushRuleRef::Room(r) => serde_json::to_value(r),
        AnyPushRuleRef::Sender(r) => serde_json::to_value(r),
        _ => return Err(no_such_rule().into()),
    };
    value.map_err(|e| ServiceError::Internal(e.to_string()).into())
}

fn no_such_rule() -> ServiceError {
    ServiceError::NotFound("no such push rule".to_owned())
}
