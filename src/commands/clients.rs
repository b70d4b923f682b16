//! `gatehouse clients list|revoke`: OAuth clients registered dynamically with the
//! authorization-server façade.

use super::keys::format_time_ms;
use crate::oauth::metadata::ClientMetadata;
use crate::store::{OAuthClientRecord, Store};

/// What to do with registered clients.
#[derive(Debug, Clone, PartialEq, Eq, clap::Subcommand)]
pub enum ClientsAction {
    /// Lists registered clients (never a secret).
    List,
    /// Revokes a client: it can no longer be authorized or get tokens.
    Revoke {
        /// The client's id (`gh_…`).
        client_id: String,
    },
}

/// Runs `action` and returns what to print.
pub async fn run(store: &Store, action: ClientsAction) -> Result<String, String> {
    match action {
        ClientsAction::List => {
            let clients = store.oauth_clients().await.map_err(|e| e.to_string())?;
            Ok(table(&clients))
        }
        ClientsAction::Revoke { client_id } => {
            let now = crate::audit::now_ms();
            if store
                .revoke_oauth_client(&client_id, now)
                .await
                .map_err(|e| e.to_string())?
            {
                Ok(format!("revoked client {client_id}\n"))
            } else {
                Err(format!(
                    "no active client with id {client_id:?} (see `gatehouse clients list`)"
                ))
            }
        }
    }
}

fn table(clients: &[OAuthClientRecord]) -> String {
    if clients.is_empty() {
        return "no registered clients\n".into();
    }
    let mut out = format!(
        "{:<26} {:<24} {:<8} {:<19} {:<16} {:<16} {}\n",
        "CLIENT_ID", "NAME", "STATE", "AUTH", "CREATED", "LAST USED", "REDIRECT URIS"
    );
    for c in clients {
        // Metadata came from anyone who could reach the endpoint: show it, never trust it.
        let meta: Option<ClientMetadata> = serde_json::from_str(&c.metadata).ok();
        let name = meta
            .as_ref()
            .and_then(|m| m.client_name.as_deref())
            .unwrap_or("-");
        let auth = meta
            .as_ref()
            .map_or("?", |m| m.token_endpoint_auth_method.as_str());
        let redirects = meta.as_ref().map_or_else(
            || "(unreadable metadata)".into(),
            |m| m.redirect_uris.join(" "),
        );
        let state = if c.revoked_at_ms.is_some() {
            "revoked"
        } else {
            "active"
        };
        out.push_str(&format!(
            "{:<26} {:<24} {:<8} {:<19} {:<16} {:<16} {}\n",
            printable(&c.client_id, 40),
            printable(name, 24),
            state,
            auth,
            minutes(Some(c.created_at_ms)),
            minutes(c.last_used_ms),
            printable(&redirects, 200),
        ));
    }
    out
}

/// At most `max` characters, with control characters (terminal escapes) replaced.
fn printable(s: &str, max: usize) -> String {
    let mut out: String = s
        .chars()
        .take(max)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if s.chars().count() > max {
        out.pop();
        out.push('…');
    }
    out
}

/// `YYYY-MM-DD HH:MM` UTC, or `never`.
fn minutes(ms: Option<i64>) -> String {
    ms.map_or_else(
        || "never".into(),
        |ms| format_time_ms(ms).chars().take(16).collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, metadata: &str) -> OAuthClientRecord {
        OAuthClientRecord {
            client_id: id.into(),
            metadata: metadata.into(),
            secret_hash: None,
            registered_ip: None,
            created_at_ms: 1_795_614_785_000,
            last_used_ms: None,
            revoked_at_ms: None,
        }
    }

    #[tokio::test]
    async fn oauth_clients_command_lists_and_revokes() {
        let store = Store::open("sqlite::memory:", std::path::Path::new("."), 1)
            .await
            .unwrap();
        assert_eq!(
            run(&store, ClientsAction::List).await.unwrap(),
            "no registered clients\n"
        );
        let meta = r#"{"client_id":"gh_a","redirect_uris":["http://127.0.0.1/cb"],"client_name":"Agent\u001b[31m","grant_types":["authorization_code"],"response_types":["code"],"token_endpoint_auth_method":"none"}"#;
        store
            .insert_oauth_client(&record("gh_a", meta))
            .await
            .unwrap();
        store
            .insert_oauth_client(&record("gh_b", "garbage"))
            .await
            .unwrap();
        let out = run(&store, ClientsAction::List).await.unwrap();
        let lines: Vec<&str> = out.lines().collect();
        assert!(lines[0].starts_with("CLIENT_ID"), "{out}");
        let a = lines.iter().find(|l| l.starts_with("gh_a")).unwrap();
        assert!(
            a.contains("Agent?[31m") && a.contains("active") && a.contains("none"),
            "{a}"
        );
        assert!(
            a.contains("2026-11-25 13:53")
                && a.contains("never")
                && a.contains("http://127.0.0.1/cb"),
            "{a}"
        );
        assert!(!out.contains('\u{1b}'));
        assert!(out.contains("(unreadable metadata)"));

        let action = ClientsAction::Revoke {
            client_id: "gh_a".into(),
        };
        assert_eq!(
            run(&store, action.clone()).await.unwrap(),
            "revoked client gh_a\n"
        );
        let e = run(&store, action).await.unwrap_err();
        assert!(e.contains("no active client with id \"gh_a\""), "{e}");
        let out = run(&store, ClientsAction::List).await.unwrap();
        assert!(
            out.lines()
                .any(|l| l.starts_with("gh_a") && l.contains("revoked")),
            "{out}"
        );
    }
}
