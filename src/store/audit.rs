//! The audit trail in the store: batched inserts, filtered queries, retention.

use super::{Store, StoreError, on_pool};
use sqlx::Row;

/// One audit record: a decision, and for calls what happened.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AuditRecord {
    /// Milliseconds since the epoch.
    pub at_ms: i64,
    /// The gateway's id for the request.
    pub request_id: String,
    /// The virtual server.
    pub server: String,
    /// The upstream that served the call, if any.
    pub upstream: Option<String>,
    /// The JSON-RPC method (or `http` for a refusal before the body was read).
    pub method: String,
    /// Tool or prompt name or resource URI.
    pub target: Option<String>,
    /// The principal's subject.
    pub subject: Option<String>,
    /// The principal's issuer.
    pub issuer: Option<String>,
    /// The principal's OAuth client.
    pub client_id: Option<String>,
    /// `allow`, `deny`, `unauthenticated`, `insufficient_scope` or `unavailable`.
    pub decision: String,
    /// The policy rule that decided, or why authentication failed.
    pub rule: Option<String>,
    /// `ok`, `error`, `upstream_failure`, `timeout`, `refused` or `cancelled`.
    pub outcome: String,
    /// The JSON-RPC error code, when the outcome is an error.
    pub error_code: Option<i64>,
    /// Time from request to last byte, in microseconds.
    pub latency_us: i64,
    /// Request body bytes.
    pub bytes_in: i64,
    /// Response bytes.
    pub bytes_out: i64,
    /// The arguments, redacted (JSON), or `sha256:…` when only a digest is kept.
    pub arguments: Option<String>,
    /// The W3C trace id of the HTTP request (the one its access log line names).
    #[serde(default)]
    pub trace_id: Option<String>,
    /// The tenant of the server (or of the administrator, for an administrative event).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// What the output guardrails found in the result: JSON `[{"rule","action","count"}]`
    /// (never the matched text).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guardrails: Option<String>,
}

impl AuditRecord {
    /// A record of an administrative event (no request, no upstream call): `method` says what
    /// (`catalog/approve`, `console/create_key`), `subject` who.
    pub fn event(
        method: &str,
        target: &str,
        subject: Option<&str>,
        decision: &str,
        outcome: &str,
    ) -> AuditRecord {
        AuditRecord {
            at_ms: crate::audit::now_ms(),
            request_id: String::new(),
            server: String::new(),
            upstream: None,
            method: method.to_owned(),
            target: Some(target.to_owned()),
            subject: subject.map(str::to_owned),
            issuer: None,
            client_id: None,
            decision: decision.to_owned(),
            rule: None,
            outcome: outcome.to_owned(),
            error_code: None,
            latency_us: 0,
            bytes_in: 0,
            bytes_out: 0,
            arguments: None,
            trace_id: None,
            tenant: None,
            guardrails: None,
        }
    }
}

/// Which records a query wants.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    /// At or after this time (ms since the epoch).
    pub since_ms: i64,
    /// Exactly this subject.
    pub subject: Option<String>,
    /// Exactly this tool/prompt/resource.
    pub target: Option<String>,
    /// Exactly this outcome.
    pub outcome: Option<String>,
    /// Exactly this server.
    pub server: Option<String>,
    /// Exactly this tenant (a tenant administrator's queries always carry theirs).
    pub tenant: Option<String>,
    /// Before this time (ms since the epoch), if set.
    pub until_ms: Option<i64>,
    /// At most this many, newest first.
    pub limit: i64,
    /// Skipping this many of the newest (pagination).
    pub offset: i64,
}

macro_rules! audit_columns {
    () => {
        "at_ms, request_id, server, upstream, method, target, subject, issuer, client_id, decision, rule, outcome, error_code, latency_us, bytes_in, bytes_out, arguments, trace_id, tenant, guardrails"
    };
}

macro_rules! audit_from_row {
    ($row:expr) => {{
        let row = $row;
        AuditRecord {
            at_ms: row.try_get("at_ms")?,
            request_id: row.try_get("request_id")?,
            server: row.try_get("server")?,
            upstream: row.try_get("upstream")?,
            method: row.try_get("method")?,
            target: row.try_get("target")?,
            subject: row.try_get("subject")?,
            issuer: row.try_get("issuer")?,
            client_id: row.try_get("client_id")?,
            decision: row.try_get("decision")?,
            rule: row.try_get("rule")?,
            outcome: row.try_get("outcome")?,
            error_code: row.try_get("error_code")?,
            latency_us: row.try_get("latency_us")?,
            bytes_in: row.try_get("bytes_in")?,
            bytes_out: row.try_get("bytes_out")?,
            arguments: row.try_get("arguments")?,
            trace_id: row.try_get("trace_id")?,
            tenant: row.try_get("tenant")?,
            guardrails: row.try_get("guardrails")?,
        }
    }};
}

/// Most rows one INSERT writes: 20 parameters a row; SQLite allows 32766 per statement,
/// PostgreSQL 65535.
const ROWS_PER_STATEMENT: usize = 500;

/// `records` in chunks of [`ROWS_PER_STATEMENT`] rows, then of powers of two: a batch's
/// statements then come from a dozen texts, which the connection's statement cache keeps
/// prepared. With a chunk of whatever was left, nearly every batch had a statement text of its
/// own, and preparing it cost more than writing the rows (issue 16).
fn statement_chunks(records: &[AuditRecord]) -> impl Iterator<Item = &[AuditRecord]> {
    let mut rest = records;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let n = if rest.len() >= ROWS_PER_STATEMENT {
            ROWS_PER_STATEMENT
        } else {
            1 << rest.len().ilog2()
        };
        let (chunk, tail) = rest.split_at(n);
        rest = tail;
        Some(chunk)
    })
}

impl Store {
    /// Writes records with one multi-row statement per chunk, all in one transaction.
    pub async fn insert_audit(&self, records: &[AuditRecord]) -> Result<(), StoreError> {
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            for chunk in statement_chunks(records) {
                let mut q = sqlx::QueryBuilder::new(concat!("INSERT INTO audit_records (", audit_columns!(), ") "));
                q.push_values(chunk, |mut b, r| {
                    b.push_bind(r.at_ms)
                        .push_bind(&r.request_id)
                        .push_bind(&r.server)
                        .push_bind(&r.upstream)
                        .push_bind(&r.method)
                        .push_bind(&r.target)
                        .push_bind(&r.subject)
                        .push_bind(&r.issuer)
                        .push_bind(&r.client_id)
                        .push_bind(&r.decision)
                        .push_bind(&r.rule)
                        .push_bind(&r.outcome)
                        .push_bind(r.error_code)
                        .push_bind(r.latency_us)
                        .push_bind(r.bytes_in)
                        .push_bind(r.bytes_out)
                        .push_bind(&r.arguments)
                        .push_bind(&r.trace_id)
                        .push_bind(&r.tenant)
                        .push_bind(&r.guardrails);
                });
                q.build().execute(&mut *tx).await?;
            }
            tx.commit().await?;
        });
        Ok(())
    }

    /// Records matching `filter`, newest first.
    pub async fn query_audit(&self, f: &AuditFilter) -> Result<Vec<AuditRecord>, StoreError> {
        let sql = concat!(
            "SELECT ",
            audit_columns!(),
            " FROM audit_records WHERE at_ms >= $1",
            " AND (CAST($2 AS TEXT) IS NULL OR subject = $2)",
            " AND (CAST($3 AS TEXT) IS NULL OR target = $3)",
            " AND (CAST($4 AS TEXT) IS NULL OR outcome = $4)",
            " AND (CAST($5 AS TEXT) IS NULL OR server = $5)",
            " AND at_ms < $6",
            " AND (CAST($9 AS TEXT) IS NULL OR tenant = $9)",
            " ORDER BY at_ms DESC, id DESC LIMIT $7 OFFSET $8"
        );
        on_pool!(self, pool => {
            let rows = sqlx::query(sql)
                .bind(f.since_ms)
                .bind(&f.subject)
                .bind(&f.target)
                .bind(&f.outcome)
                .bind(&f.server)
                .bind(f.until_ms.unwrap_or(i64::MAX))
                .bind(f.limit)
                .bind(f.offset.max(0))
                .bind(&f.tenant)
                .fetch_all(pool)
                .await?;
            let mut out = Vec::with_capacity(rows.len());
            for row in rows {
                out.push(audit_from_row!(row));
            }
            Ok(out)
        })
    }

    /// Deletes records older than `before_ms`; returns how many.
    pub async fn delete_audit_before(&self, before_ms: i64) -> Result<u64, StoreError> {
        let sql = "DELETE FROM audit_records WHERE at_ms < $1";
        Ok(on_pool!(self, pool => {
            sqlx::query(sql).bind(before_ms).execute(pool).await?.rows_affected()
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_split_into_few_statement_sizes() {
        let records = vec![AuditRecord::default(); 1234];
        let sizes: Vec<usize> = statement_chunks(&records).map(<[_]>::len).collect();
        assert_eq!(sizes, [500, 500, 128, 64, 32, 8, 2]);
        assert_eq!(sizes.iter().sum::<usize>(), 1234);
        assert_eq!(statement_chunks(&[]).count(), 0);
    }
}
