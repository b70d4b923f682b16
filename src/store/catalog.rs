//! The catalog's rows: each definition an upstream offered, its pin, findings and decision.

use super::{Store, StoreError, on_pool};
use sqlx::Row;

/// Where a definition stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DefinitionState {
    /// Seen, not yet reviewed: held back.
    Pending,
    /// Approved with its current pin: served.
    Approved,
    /// Approved once, changed since: held back until re-approved.
    Quarantined,
    /// Refused by a reviewer: held back.
    Rejected,
    /// No longer offered by the upstream.
    Removed,
}

impl DefinitionState {
    /// The stored text.
    pub fn as_str(self) -> &'static str {
        match self {
            DefinitionState::Pending => "pending",
            DefinitionState::Approved => "approved",
            DefinitionState::Quarantined => "quarantined",
            DefinitionState::Rejected => "rejected",
            DefinitionState::Removed => "removed",
        }
    }

    fn parse(s: &str) -> Self {
        match s {
            "approved" => DefinitionState::Approved,
            "quarantined" => DefinitionState::Quarantined,
            "rejected" => DefinitionState::Rejected,
            "removed" => DefinitionState::Removed,
            _ => DefinitionState::Pending,
        }
    }
}

/// One definition as the catalog knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogDefinition {
    /// The upstream offering it.
    pub upstream: String,
    /// `tool`, `prompt`, `resource` or `resourceTemplate`.
    pub kind: String,
    /// Its name (or URI) at the upstream.
    pub name: String,
    /// The pin of the definition last seen.
    pub pin: String,
    /// The definition last seen, as JSON.
    pub definition: String,
    /// The scanner's findings for it, as a JSON array.
    pub findings: String,
    /// The worst finding's severity, if any.
    pub worst: Option<String>,
    /// Where it stands.
    pub state: DefinitionState,
    /// The pin that was approved, if any.
    pub approved_pin: Option<String>,
    /// The definition that was approved, if any.
    pub approved_definition: Option<String>,
    /// Who decided last.
    pub decided_by: Option<String>,
    /// When, milliseconds since the epoch.
    pub decided_at_ms: Option<i64>,
    /// When the gateway first saw it.
    pub first_seen_ms: i64,
    /// When the row last changed.
    pub updated_at_ms: i64,
}

macro_rules! definition_columns {
    () => {
        "upstream, kind, name, pin, definition, findings, worst, state, approved_pin, approved_definition, decided_by, decided_at_ms, first_seen_ms, updated_at_ms"
    };
}

macro_rules! definition_from_row {
    ($row:expr) => {{
        let row = $row;
        let state: String = row.try_get("state")?;
        CatalogDefinition {
            upstream: row.try_get("upstream")?,
            kind: row.try_get("kind")?,
            name: row.try_get("name")?,
            pin: row.try_get("pin")?,
            definition: row.try_get("definition")?,
            findings: row.try_get("findings")?,
            worst: row.try_get("worst")?,
            state: DefinitionState::parse(&state),
            approved_pin: row.try_get("approved_pin")?,
            approved_definition: row.try_get("approved_definition")?,
            decided_by: row.try_get("decided_by")?,
            decided_at_ms: row.try_get("decided_at_ms")?,
            first_seen_ms: row.try_get("first_seen_ms")?,
            updated_at_ms: row.try_get("updated_at_ms")?,
        }
    }};
}

impl Store {
    /// Writes a definition row (insert or replace all but `first_seen_ms`).
    pub async fn put_definition(&self, d: &CatalogDefinition) -> Result<(), StoreError> {
        let sql = concat!(
            "INSERT INTO catalog_definitions (",
            definition_columns!(),
            ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
            " ON CONFLICT (upstream, kind, name) DO UPDATE SET",
            " pin = excluded.pin, definition = excluded.definition, findings = excluded.findings,",
            " worst = excluded.worst, state = excluded.state, approved_pin = excluded.approved_pin,",
            " approved_definition = excluded.approved_definition, decided_by = excluded.decided_by,",
            " decided_at_ms = excluded.decided_at_ms, updated_at_ms = excluded.updated_at_ms"
        );
        on_pool!(self, pool => {
            sqlx::query(sql)
                .bind(&d.upstream)
                .bind(&d.kind)
                .bind(&d.name)
                .bind(&d.pin)
                .bind(&d.definition)
                .bind(&d.findings)
                .bind(&d.worst)
                .bind(d.state.as_str())
                .bind(&d.approved_pin)
                .bind(&d.approved_definition)
                .bind(&d.decided_by)
                .bind(d.decided_at_ms)
                .bind(d.first_seen_ms)
                .bind(d.updated_at_ms)
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    /// Writes a definition row only if nobody wrote it since it was read: `read_at` is the
    /// `updated_at_ms` read (`None`: there was no row). `false` when another writer (a
    /// reviewer's decision, another replica) came first; its row stays.
    pub async fn put_definition_if_unchanged(
        &self,
        d: &CatalogDefinition,
        read_at: Option<i64>,
    ) -> Result<bool, StoreError> {
        let Some(read_at) = read_at else {
            let sql = concat!(
                "INSERT INTO catalog_definitions (",
                definition_columns!(),
                ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
                " ON CONFLICT (upstream, kind, name) DO NOTHING"
            );
            let n = on_pool!(self, pool => {
                sqlx::query(sql)
                    .bind(&d.upstream).bind(&d.kind).bind(&d.name).bind(&d.pin)
                    .bind(&d.definition).bind(&d.findings).bind(&d.worst).bind(d.state.as_str())
                    .bind(&d.approved_pin).bind(&d.approved_definition).bind(&d.decided_by)
                    .bind(d.decided_at_ms).bind(d.first_seen_ms).bind(d.updated_at_ms)
                    .execute(pool).await?.rows_affected()
            });
            return Ok(n == 1);
        };
        let sql = "UPDATE catalog_definitions SET pin = $4, definition = $5, findings = $6, \
                   worst = $7, state = $8, approved_pin = $9, approved_definition = $10, \
                   decided_by = $11, decided_at_ms = $12, updated_at_ms = $13 \
                   WHERE upstream = $1 AND kind = $2 AND name = $3 AND updated_at_ms = $14";
        let n = on_pool!(self, pool => {
            sqlx::query(sql)
                .bind(&d.upstream).bind(&d.kind).bind(&d.name).bind(&d.pin)
                .bind(&d.definition).bind(&d.findings).bind(&d.worst).bind(d.state.as_str())
                .bind(&d.approved_pin).bind(&d.approved_definition).bind(&d.decided_by)
                .bind(d.decided_at_ms).bind(d.updated_at_ms).bind(read_at)
                .execute(pool).await?.rows_affected()
        });
        Ok(n == 1)
    }

    /// The definitions of one upstream (all upstreams when `None`), ordered.
    pub async fn definitions(
        &self,
        upstream: Option<&str>,
    ) -> Result<Vec<CatalogDefinition>, StoreError> {
        let sql = concat!(
            "SELECT ",
            definition_columns!(),
            " FROM catalog_definitions WHERE (CAST($1 AS TEXT) IS NULL OR upstream = $1)",
            " ORDER BY upstream, kind, name"
        );
        on_pool!(self, pool => {
            let rows = sqlx::query(sql).bind(upstream).fetch_all(pool).await?;
            let mut out = Vec::with_capacity(rows.len());
            for row in rows {
                out.push(definition_from_row!(row));
            }
            Ok(out)
        })
    }
}

/// Where a whole upstream stands in the catalog. Only an approved upstream is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamState {
    /// Registered, not yet reviewed.
    Pending,
    /// Approved: its approved definitions are served.
    Approved,
    /// Refused by a reviewer.
    Rejected,
    /// Held back as a whole until approved again.
    Quarantined,
    /// Withdrawn from service.
    Retired,
}

impl UpstreamState {
    /// The stored text.
    pub fn as_str(self) -> &'static str {
        match self {
            UpstreamState::Pending => "pending",
            UpstreamState::Approved => "approved",
            UpstreamState::Rejected => "rejected",
            UpstreamState::Quarantined => "quarantined",
            UpstreamState::Retired => "retired",
        }
    }

    fn parse(s: &str) -> Self {
        match s {
            "approved" => UpstreamState::Approved,
            "rejected" => UpstreamState::Rejected,
            "quarantined" => UpstreamState::Quarantined,
            "retired" => UpstreamState::Retired,
            _ => UpstreamState::Pending,
        }
    }
}

/// A whole upstream as the catalog knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogUpstream {
    /// Its name in the configuration.
    pub upstream: String,
    /// Where it stands.
    pub state: UpstreamState,
    /// Who registered it (absent when first seen by a running gateway).
    pub registered_by: Option<String>,
    /// When it was registered, milliseconds since the epoch.
    pub registered_at_ms: i64,
    /// Who decided last.
    pub decided_by: Option<String>,
    /// When.
    pub decided_at_ms: Option<i64>,
    /// Why (free text from the reviewer), if given.
    pub reason: Option<String>,
}

impl Store {
    /// Writes an upstream's row (insert or replace).
    pub async fn put_catalog_upstream(&self, u: &CatalogUpstream) -> Result<(), StoreError> {
        let sql = "INSERT INTO catalog_upstreams (upstream, state, registered_by, registered_at_ms, decided_by, decided_at_ms, reason) \
                   VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (upstream) DO UPDATE SET \
                   state = excluded.state, registered_by = excluded.registered_by, \
                   registered_at_ms = excluded.registered_at_ms, decided_by = excluded.decided_by, \
                   decided_at_ms = excluded.decided_at_ms, reason = excluded.reason";
        on_pool!(self, pool => {
            sqlx::query(sql)
                .bind(&u.upstream)
                .bind(u.state.as_str())
                .bind(&u.registered_by)
                .bind(u.registered_at_ms)
                .bind(&u.decided_by)
                .bind(u.decided_at_ms)
                .bind(&u.reason)
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    /// Every upstream the catalog knows, by name.
    pub async fn catalog_upstreams(&self) -> Result<Vec<CatalogUpstream>, StoreError> {
        let sql = "SELECT upstream, state, registered_by, registered_at_ms, decided_by, decided_at_ms, reason \
                   FROM catalog_upstreams ORDER BY upstream";
        on_pool!(self, pool => {
            let rows = sqlx::query(sql).fetch_all(pool).await?;
            let mut out = Vec::with_capacity(rows.len());
            for row in rows {
                let state: String = row.try_get("state")?;
                out.push(CatalogUpstream {
                    upstream: row.try_get("upstream")?,
                    state: UpstreamState::parse(&state),
                    registered_by: row.try_get("registered_by")?,
                    registered_at_ms: row.try_get("registered_at_ms")?,
                    decided_by: row.try_get("decided_by")?,
                    decided_at_ms: row.try_get("decided_at_ms")?,
                    reason: row.try_get("reason")?,
                });
            }
            Ok(out)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(state: DefinitionState, updated_at_ms: i64) -> CatalogDefinition {
        CatalogDefinition {
            upstream: "u".into(),
            kind: "tool".into(),
            name: "t".into(),
            pin: "p".into(),
            definition: "{}".into(),
            findings: "[]".into(),
            worst: None,
            state,
            approved_pin: None,
            approved_definition: None,
            decided_by: None,
            decided_at_ms: None,
            first_seen_ms: 1,
            updated_at_ms,
        }
    }

    #[tokio::test]
    async fn a_write_judged_on_a_stale_read_does_not_undo_a_decision() {
        let store = Store::open("sqlite::memory:", std::path::Path::new("."), 1)
            .await
            .unwrap();
        assert!(
            store
                .put_definition_if_unchanged(&row(DefinitionState::Pending, 10), None)
                .await
                .unwrap()
        );
        // A second "first" insert loses: the row exists now.
        assert!(
            !store
                .put_definition_if_unchanged(&row(DefinitionState::Pending, 11), None)
                .await
                .unwrap()
        );
        // A reviewer rejects it (at 20); a drift judged on the read at 10 must not overwrite.
        store
            .put_definition(&row(DefinitionState::Rejected, 20))
            .await
            .unwrap();
        assert!(
            !store
                .put_definition_if_unchanged(&row(DefinitionState::Approved, 30), Some(10))
                .await
                .unwrap()
        );
        let now = store.definitions(Some("u")).await.unwrap();
        assert_eq!(now[0].state, DefinitionState::Rejected);
        // Judged on the current row, it is written.
        assert!(
            store
                .put_definition_if_unchanged(&row(DefinitionState::Quarantined, 40), Some(20))
                .await
                .unwrap()
        );
    }
}
