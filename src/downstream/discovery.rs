//! `GET /v0/servers`: the virtual servers a caller may use, as entries in the shape of the
//! official MCP registry's API (`{ servers: [{ server: server.json, _meta }], metadata }`), so
//! that registry-aware clients can read it. A protected server is listed only for a bearer
//! token it accepts; with a catalog, each entry carries the approved tools the caller's policy
//! lets them see.

use super::Caller;
use super::access::Access;
use crate::catalog::pin::DefinitionKind;
use crate::federation::ListKind;
use crate::web::AppState;
use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::HeaderMap;
use serde_json::{Value, json};

/// `GET /v0/servers`.
pub async fn servers(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: http::Uri,
) -> Response {
    let rt = state.gateway.runtime();
    let public = rt
        .config
        .public_url
        .clone()
        .unwrap_or_default()
        .trim_end_matches('/')
        .to_owned();
    let namespace = namespace(&public);
    let mut entries = Vec::new();
    for cfg in &rt.config.servers {
        // With tenants resolved by host, a host lists its own tenant's servers only.
        let Some(route) = rt
            .route(super::authority(&headers, &uri), &cfg.path)
            .filter(|r| r.server.name == cfg.name)
        else {
            continue;
        };
        let server = &route.server;
        let caller = match &route.guard {
            None => None,
            Some(guard) => match guard.authenticate(&headers).await {
                Ok(principal) => Some(Caller {
                    guard: guard.clone(),
                    principal,
                }),
                Err(_) => continue,
            },
        };
        let protected = caller.is_some();
        let access = Access::new(route, caller, &headers, state.gateway.sealer(), None);
        let mut meta = json!({ "io.gatehouse/protected": protected });
        if let Some(catalog) = &server.catalog {
            let mut tools = Vec::new();
            for (i, member) in server.members.iter().enumerate() {
                let approved = catalog
                    .approved(&member.upstream, DefinitionKind::Tool)
                    .await
                    .unwrap_or_default();
                for tool in approved {
                    let Some(name) = tool.get("name").and_then(Value::as_str) else {
                        continue;
                    };
                    let outward = server.outward_name(i, name);
                    if access.visible(server, ListKind::Tools, i, &outward) {
                        tools.push(json!({
                            "name": outward,
                            "title": tool.get("title"),
                            "description": tool.get("description"),
                        }));
                    }
                }
            }
            meta["io.gatehouse/tools"] = Value::Array(tools);
        }
        let description = cfg
            .instructions
            .clone()
            .unwrap_or_else(|| format!("Gatehouse virtual server {}", cfg.name));
        entries.push(json!({
            "server": {
                "name": format!("{namespace}/{}", cfg.name),
                "title": cfg.name,
                "description": description,
                "version": env!("CARGO_PKG_VERSION"),
                "remotes": [{ "type": "streamable-http", "url": format!("{public}{}", cfg.path) }],
            },
            "_meta": meta,
        }));
    }
    let count = entries.len();
    Json(json!({ "servers": entries, "metadata": { "count": count } })).into_response()
}

/// A reverse-DNS namespace from the public URL's host (`gw.example.com` → `com.example.gw`);
/// `local.gatehouse` for addresses.
fn namespace(public: &str) -> String {
    let host = reqwest::Url::parse(public)
        .ok()
        .and_then(|u| u.host_str().map(str::to_owned))
        .unwrap_or_default();
    let is_name =
        host.contains('.') && host.chars().any(|c| c.is_ascii_alphabetic()) && !host.contains(':');
    if is_name {
        host.split('.').rev().collect::<Vec<_>>().join(".")
    } else {
        "local.gatehouse".into()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn namespaces_are_reverse_dns() {
        assert_eq!(
            super::namespace("https://mcp.corp.example/"),
            "example.corp.mcp"
        );
        assert_eq!(super::namespace("http://127.0.0.1:8080"), "local.gatehouse");
    }
}
