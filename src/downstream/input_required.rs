//! Multi round-trip requests for 2026-07-28 clients (`InputRequiredResult`): when an upstream
//! asks the client something mid-call (elicitation, sampling, roots) the call is parked, the
//! client gets the questions as `inputRequests` with an unguessable `requestState`, and its
//! retry carrying `inputResponses` delivers the answers upstream and resumes the same call.

use super::error::HttpError;
use super::limits::Holder;
use crate::protocol::jsonrpc::to_raw;
use crate::protocol::{Message, RequestId};
use crate::upstream::{CallStream, ReplyRoute};
use rand::RngCore;
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A call waiting for the client's answers.
pub struct Parked {
    /// The upstream call, still open.
    pub stream: CallStream,
    /// Which member serves it.
    pub member: usize,
    /// Where each answer goes, by input-request key.
    pub routes: HashMap<String, ReplyRoute>,
    parked_at: Instant,
    /// The binding of the principal whose call this is; only it may resume the call.
    owner: Option<String>,
    /// Whom the call counts against (`limits.parked_calls_per_principal`).
    holder: Holder,
}

/// Where a stateless client's calls are parked, and on whose behalf.
#[derive(Clone)]
pub struct ParkingLot {
    /// The process's parked calls.
    pub calls: std::sync::Arc<ParkedCalls>,
    /// The caller's principal binding (`None` on an open server).
    pub owner: Option<String>,
    /// Whom the caller's parked calls count against.
    pub holder: Holder,
    /// Most calls `holder` may have parked (`limits.parked_calls_per_principal`).
    pub max: usize,
}

impl ParkingLot {
    /// Parks a call for this caller (see [`ParkedCalls::park`]); refused when the caller
    /// already has `max` calls parked, which drops (and so cancels) the upstream call.
    pub fn park(
        &self,
        stream: CallStream,
        member: usize,
        question: Message,
        route: ReplyRoute,
    ) -> Result<Box<serde_json::value::RawValue>, HttpError> {
        self.calls.park(stream, member, question, route, self)
    }
}

/// Calls parked in this process.
#[derive(Default)]
pub struct ParkedCalls {
    calls: Mutex<HashMap<String, Parked>>,
}

/// Marks the request states the gateway issues; other states belong to a stateless upstream
/// that returned its own InputRequiredResult, and retries carrying them pass through.
const STATE_PREFIX: &str = "gatehouse.";

/// How long a parked call waits for the client's retry.
const PARK_LIMIT: Duration = Duration::from_secs(600);

impl ParkedCalls {
    /// Parks a call whose upstream asked `question`; returns the InputRequiredResult to send.
    fn park(
        &self,
        stream: CallStream,
        member: usize,
        question: Message,
        route: ReplyRoute,
        lot: &ParkingLot,
    ) -> Result<Box<serde_json::value::RawValue>, HttpError> {
        let mut calls = self.calls.lock().expect("lock");
        calls.retain(|_, p| p.parked_at.elapsed() < PARK_LIMIT);
        let mine = calls.values().filter(|p| p.holder == lot.holder);
        let (count, oldest) = mine.fold((0, None::<Instant>), |(n, o), p| {
            (n + 1, Some(o.map_or(p.parked_at, |o| o.min(p.parked_at))))
        });
        if count >= lot.max {
            // A slot frees up when the caller answers one, or when the oldest expires.
            let wait = oldest.map_or(PARK_LIMIT, |o| PARK_LIMIT.saturating_sub(o.elapsed()));
            return Err(HttpError::LimitExceeded {
                limit: "limits.parked_calls_per_principal",
                max: lot.max,
                retry_after_secs: wait.as_secs().max(1),
            });
        }
        let mut token = [0u8; 16];
        rand::rng().fill_bytes(&mut token);
        let hex = crate::hex::encode(&token);
        let state = format!("{STATE_PREFIX}{hex}");
        let key = "input-1".to_owned();
        let request = serde_json::json!({
            "method": question.method(),
            "params": question.params.as_ref().and_then(|p| serde_json::from_str::<Value>(p.get()).ok()).unwrap_or(Value::Object(Map::new())),
        });
        let result = serde_json::json!({
            "resultType": "input_required",
            "inputRequests": { key.clone(): request },
            "requestState": state,
        });
        calls.insert(
            state,
            Parked {
                stream,
                member,
                routes: HashMap::from([(key, route)]),
                parked_at: Instant::now(),
                owner: lot.owner.clone(),
                holder: lot.holder.clone(),
            },
        );
        Ok(to_raw(&result))
    }

    /// Takes the call a retry refers to, if `owner` is the principal that started it; to
    /// anyone else the state is unknown (and stays parked for its owner).
    pub fn resume(&self, state: &str, owner: Option<&str>) -> Option<Parked> {
        let mut calls = self.calls.lock().expect("lock");
        if calls.get(state)?.owner.as_deref() != owner {
            return None;
        }
        calls.remove(state)
    }
}

/// What a retry carries: the state token and the answers by key.
pub struct Retry {
    /// The `requestState` from the InputRequiredResult.
    pub state: String,
    /// The client's results, by input-request key.
    pub responses: Map<String, Value>,
}

impl Retry {
    /// Reads `requestState` and `inputResponses` from a request, if it is a retry.
    pub fn from_request(message: &Message) -> Option<Retry> {
        let params: Map<String, Value> = message.params_as().ok()?;
        let state = params.get("requestState")?.as_str()?.to_owned();
        if !state.starts_with(STATE_PREFIX) {
            return None;
        }
        let responses = params
            .get("inputResponses")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        Some(Retry { state, responses })
    }

    /// The answer to send upstream for `key`, as a JSON-RPC response to the upstream's request.
    pub fn answer(&self, key: &str, upstream_id: &RequestId) -> Message {
        match self.responses.get(key) {
            Some(result) => Message::response(upstream_id.clone(), to_raw(result)),
            None => Message::error_response(
                Some(upstream_id.clone()),
                crate::protocol::ErrorCode::INVALID_PARAMS,
                "the client did not answer this input request",
                None,
            ),
        }
    }
}
