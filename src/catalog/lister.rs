//! Reading everything an upstream offers: every page of its tools, prompts, resources and
//! templates, for registration and for the gateway's periodic re-check.

use super::pin::DefinitionKind;
use crate::context::CallContext;
use crate::protocol::{ListKind, Message, RequestId};
use crate::upstream::{ClientIdentity, Delivery, Frame, UpstreamClient};
use serde_json::{Map, Value};
use std::sync::Arc;

/// Most pages read from one list, so that an upstream handing out cursors forever cannot
/// keep the gateway listing.
const MAX_PAGES: usize = 1000;
/// Most definitions kept from one list.
const MAX_ITEMS: usize = 10_000;

/// Every definition `client` offers, by kind (kinds its capabilities do not announce are
/// left out), on a session opened as the gateway itself. A kind whose listing fails is left out
/// too, with the reason in the second list: one broken list does not hide the others.
pub async fn list_everything(
    client: &Arc<UpstreamClient>,
) -> Result<(Vec<(DefinitionKind, Vec<Value>)>, Vec<String>), String> {
    let (session, info) = client
        .open(&CallContext::gateway(), &ClientIdentity::gateway())
        .await
        .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    let mut failures = Vec::new();
    // Every list, each only when the upstream's capabilities announce it.
    for list in ListKind::ALL {
        if info.capabilities.get(list.capability()).is_none() {
            continue;
        }
        let method = list.method();
        match list_one(client, &session, method, list.items_key()).await {
            Ok(items) => out.push((list.definition(), items)),
            Err(e) => failures.push(format!("{method}: {e}")),
        }
    }
    client.close(&CallContext::gateway(), &session).await;
    Ok((out, failures))
}

/// Every page of one list.
async fn list_one(
    client: &Arc<UpstreamClient>,
    session: &crate::upstream::UpstreamSession,
    method: &str,
    key: &str,
) -> Result<Vec<Value>, String> {
    let mut items = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..MAX_PAGES {
        let mut result = page(client, session, method, cursor.as_deref()).await?;
        if let Some(Value::Array(page)) = result.remove(key) {
            items.extend(page);
            if items.len() > MAX_ITEMS {
                return Err(format!("more than {MAX_ITEMS} definitions"));
            }
        }
        cursor = match result.remove("nextCursor") {
            Some(Value::String(c)) => Some(c),
            _ => None,
        };
        if cursor.is_none() {
            return Ok(items);
        }
    }
    Err(format!("more than {MAX_PAGES} pages"))
}

async fn page(
    client: &Arc<UpstreamClient>,
    session: &crate::upstream::UpstreamSession,
    method: &str,
    cursor: Option<&str>,
) -> Result<Map<String, Value>, String> {
    let params =
        cursor.map(|c| crate::protocol::jsonrpc::to_raw(&serde_json::json!({ "cursor": c })));
    let request = Message::request(RequestId::Number(1), method, params);
    let mut stream = client
        .call(&CallContext::gateway(), session, request, Delivery::Whole)
        .await
        .map_err(|e| e.to_string())?;
    while let Some(frame) = stream.next().await {
        match frame {
            Frame::Response(m) => {
                if let Some(e) = m.error_code() {
                    return Err(format!("the upstream answered with error {e}"));
                }
                return m
                    .result
                    .and_then(|r| serde_json::from_str(r.get()).ok())
                    .ok_or_else(|| "the result is not an object".to_owned());
            }
            Frame::Failed(e) => return Err(e.to_string()),
            _ => {}
        }
    }
    Err("no answer".into())
}
