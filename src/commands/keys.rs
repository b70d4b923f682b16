//! `gatehouse keys create|list|revoke`: API keys for headless agents.

use crate::auth::generate_api_key;
use crate::config::{Config, HumanDuration};
use crate::store::{NewApiKey, Store, now_secs};

/// What `keys create` was asked for.
#[derive(Debug, Clone, Default)]
pub struct CreateKey {
    /// The principal's subject (e.g. the agent's or its owner's name).
    pub subject: String,
    /// Granted scopes.
    pub scopes: Vec<String>,
    /// Groups, for policy.
    pub groups: Vec<String>,
    /// Virtual server paths it may be used on (empty: any that accepts keys).
    pub servers: Vec<String>,
    /// `90d`, `12h`, … or `never`.
    pub expires: String,
    /// Free text.
    pub description: String,
}

/// Splits `a,b c` into its items.
pub fn split_list(items: &[String]) -> Vec<String> {
    items
        .iter()
        .flat_map(|s| s.split([',', ' ']))
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Validates the request against the configuration, stores the key and returns it: the
/// only time the whole key exists outside the agent that will hold it.
pub async fn create(config: &Config, store: &Store, req: &CreateKey) -> Result<String, String> {
    if req.subject.trim().is_empty() {
        return Err("--subject is required (who the key acts as)".into());
    }
    for path in &req.servers {
        match config.servers.iter().find(|s| &s.path == path) {
            None => {
                let known: Vec<_> = config.servers.iter().map(|s| s.path.as_str()).collect();
                return Err(format!(
                    "--server {path}: no virtual server has this path (known: {})",
                    known.join(", ")
                ));
            }
            Some(s) if !s.auth.as_ref().is_some_and(|a| a.api_keys) => {
                return Err(format!(
                    "--server {path}: this server does not accept API keys (set servers[].auth.api_keys: true)"
                ));
            }
            Some(_) => {}
        }
    }
    let expires_at = match req.expires.as_str() {
        "never" => None,
        e => {
            let d = HumanDuration::parse(e).map_err(|m| format!("--expires: {m}, or \"never\""))?;
            Some(now_secs() + d.0.as_secs() as i64)
        }
    };
    let generated = generate_api_key();
    let key = NewApiKey {
        id: generated.id.clone(),
        digest: generated.digest,
        subject: req.subject.trim().to_owned(),
        scopes: req.scopes.clone(),
        groups: req.groups.clone(),
        servers: req.servers.clone(),
        description: req.description.clone(),
        expires_at,
    };
    store
        .insert_api_key(&key)
        .await
        .map_err(|e| e.to_string())?;
    Ok(generated.key)
}

/// A table of every key (never a secret).
pub async fn list(store: &Store, as_json: bool) -> Result<String, String> {
    let keys = store.list_api_keys().await.map_err(|e| e.to_string())?;
    if as_json {
        return serde_json::to_string_pretty(&keys).map_err(|e| e.to_string());
    }
    let now = now_secs();
    let mut out = format!(
        "{:<14} {:<20} {:<9} {:<20} {}\n",
        "ID", "SUBJECT", "STATE", "EXPIRES", "SCOPES"
    );
    for k in keys {
        let state = match (k.revoked_at, k.expires_at) {
            (Some(_), _) => "revoked",
            (None, Some(e)) if e <= now => "expired",
            _ => "active",
        };
        let expires = k
            .expires_at
            .map(format_time)
            .unwrap_or_else(|| "never".into());
        out.push_str(&format!(
            "{:<14} {:<20} {:<9} {:<20} {}\n",
            k.id,
            k.subject,
            state,
            expires,
            k.scopes.join(" ")
        ));
    }
    Ok(out)
}

/// Revokes a key by id.
pub async fn revoke(store: &Store, id: &str) -> Result<(), String> {
    if store.revoke_api_key(id).await.map_err(|e| e.to_string())? {
        Ok(())
    } else {
        Err(format!(
            "no active key with id {id:?} (see `gatehouse keys list`)"
        ))
    }
}

/// `YYYY-MM-DD HH:MM:SS.mmm` UTC, from milliseconds since the epoch.
pub fn format_time_ms(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    format!(
        "{}:{:02}.{:03}",
        format_time(secs),
        secs.rem_euclid(60),
        ms.rem_euclid(1000)
    )
}

/// `YYYY-MM-DD HH:MM` UTC, from seconds since the epoch.
fn format_time(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil-from-days (Howard Hinnant's algorithm), to avoid a date crate for one column.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_civil_utc() {
        assert_eq!(format_time(0), "1970-01-01 00:00");
        assert_eq!(format_time(1_795_614_785), "2026-11-25 13:53");
        assert_eq!(format_time(951_782_400), "2000-02-29 00:00");
    }

    #[test]
    fn lists_split_on_commas_and_spaces() {
        assert_eq!(
            split_list(&["a,b".into(), "c d".into()]),
            ["a", "b", "c", "d"]
        );
    }
}
