//! Server-side push (spec-notes/push.md): every committed event is run
//! through the push rules of each local member who can see it, the events
//! that notify are stored for sync's counts and `GET /notifications`, and
//! the member's pushers hear of them through their push gateways.
//!
//! Evaluation happens beside the send, in one task reading the
//! [`CommittedFeed`](super::committed::CommittedFeed): its cost is not part
//! of a send's latency. A sync that reports counts first waits (briefly)
//! for the evaluation of every event it can see, so the counts it gives
//! match its timeline.

mod context;
mod delivery;
pub mod gateway;
mod prune;

use std::{collections::HashMap, sync::Arc};

use ruma::{
    OwnedServerName, OwnedUserId, UserId,
    push::{Action, Ruleset},
    serde::Raw,
};
use serde_json::{Value, value::RawValue};
use tracing::warn;

use self::{context::RoomPushContext, delivery::Delivery};
pub use self::{delivery::RetryPolicy, prune::PrunePolicy};
use super::{
    ServiceError,
    committed::{CommittedEvents, CommittedReader},
    push_rules::PushRules,
    room_events::RoomEvents,
    rooms::pdu::Pdu,
};
use crate::storage::{Millis, NewPushAction, Notification, Storage, StreamPosition};

/// Most notifications `GET /notifications` returns in one page.
pub const MAX_NOTIFICATIONS_PAGE: usize = 100;

/// Evaluates push rules and reads their results back.
#[derive(Debug)]
pub struct Push {
    storage: Arc<dyn Storage>,
}

/// What one evaluation task needs.
struct Evaluator {
    storage: Arc<dyn Storage>,
    events: Arc<RoomEvents>,
    push_rules: Arc<PushRules>,
    server_name: OwnedServerName,
    delivery: Delivery,
}

/// Who [`Push::start`] needs.
#[derive(Debug)]
pub struct PushServices {
    /// Where the committed events come from.
    pub events: Arc<RoomEvents>,
    /// Whose rules are evaluated.
    pub push_rules: Arc<PushRules>,
}

impl Push {
    /// Starts evaluating what `committed` brings (on the current tokio
    /// runtime), and pruning what was stored as `prune` says; gateways on
    /// loopback or private addresses are reached only when
    /// `allow_private_gateways`.
    pub fn start(
        storage: Arc<dyn Storage>,
        services: PushServices,
        server_name: OwnedServerName,
        committed: CommittedReader,
        allow_private_gateways: bool,
        retry: RetryPolicy,
        prune: PrunePolicy,
    ) -> Self {
        let evaluator = Evaluator {
            delivery: Delivery::new(storage.clone(), allow_private_gateways, retry),
            storage: storage.clone(),
            events: services.events,
            push_rules: services.push_rules,
            server_name,
        };
        tokio::spawn(evaluator.run(committed));
        tokio::spawn(prune::run(storage.clone(), prune));
        Self { storage }
    }

    /// A page of `GET /notifications`: the events that notified the user,
    /// newest first, before `from`; only highlights when `only_highlights`.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn notifications(
        &self,
        user_id: &UserId,
        from: Option<StreamPosition>,
        limit: usize,
        only_highlights: bool,
    ) -> Result<Vec<Notification>, ServiceError> {
        Ok(self
            .storage
            .notifications(
                user_id,
                from,
                limit.clamp(1, MAX_NOTIFICATIONS_PAGE),
                only_highlights,
            )
            .await?)
    }
}

/// One member's notifying actions for one event.
struct Notified {
    user_id: OwnedUserId,
    event: Pdu,
    position: StreamPosition,
    actions: Vec<Action>,
}

impl Evaluator {
    async fn run(self, mut committed: CommittedReader) {
        while let Some(chain) = committed.next().await {
            let room_id = chain.room_id.clone();
            if let Err(error) = self.evaluate(chain).await {
                warn!(%room_id, %error, "push rules could not be evaluated");
            }
            committed.handled();
        }
    }

    /// Evaluates one committed chain for the room's local members, stores
    /// what notifies, and hands it to the gateways.
    async fn evaluate(&self, chain: CommittedEvents) -> Result<(), ServiceError> {
        let server_name = &self.server_name;
        let room_id = chain.room_id.clone();
        let Some(room) = self
            .events
            .read_state(&room_id, |state| {
                RoomPushContext::of(room_id.clone(), state, server_name)
            })
            .await?
        else {
            return Ok(());
        };
        let mut rulesets: HashMap<OwnedUserId, Ruleset> = HashMap::new();
        let mut notified = Vec::new();
        for (position, event) in &chain.events {
            let raw = RawValue::from_string(event.canonical_json().to_owned())
                .map_err(|e| ServiceError::Internal(format!("event json: {e}")))?;
            let raw = Raw::<Value>::from_json(raw);
            for (user_id, display_name) in room.recipients(event, server_name) {
                // The sender's own events never notify them (ruma also
                // skips them; this spares loading their rules).
                if user_id == event.sender() {
                    continue;
                }
                if !rulesets.contains_key(&user_id) {
                    let rules = self.push_rules.ruleset(&user_id).await?;
                    rulesets.insert(user_id.clone(), rules);
                }
                let context = room.for_member(user_id.clone(), display_name);
                let actions = rulesets[&user_id].get_actions(&raw, &context).await;
                if actions.iter().any(Action::should_notify) {
                    notified.push(Notified {
                        user_id,
                        event: event.clone(),
                        position: *position,
                        actions: actions.to_vec(),
                    });
                }
            }
        }
        if notified.is_empty() {
            return Ok(());
        }
        self.store(&notified).await?;
        for notice in notified {
            self.delivery
                .notify(
                    &notice.user_id,
                    &notice.event,
                    &notice.actions,
                    room.is_e2e_only,
                )
                .await;
        }
        Ok(())
    }

    /// Stores the notifying actions, for counts and `GET /notifications`.
    async fn store(&self, notified: &[Notified]) -> Result<(), ServiceError> {
        let ts = Millis::now().0;
        let actions: Vec<String> = notified
            .iter()
            .map(|notice| {
                serde_json::to_string(&notice.actions).unwrap_or_else(|_| "[]".to_owned())
            })
            .collect();
        let rows: Vec<NewPushAction<'_>> = notified
            .iter()
            .zip(&actions)
            .map(|(notice, json)| NewPushAction {
                user_id: &notice.user_id,
                room_id: notice.event.room_id(),
                event_id: notice.event.event_id(),
                position: notice.position,
                actions: json,
                is_highlight: notice.actions.iter().any(Action::is_highlight),
                ts,
            })
            .collect();
        self.storage.add_push_actions(&rows).await?;
        Ok(())
    }
}
