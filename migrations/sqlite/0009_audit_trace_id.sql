-- The W3C trace id of the HTTP request behind each audit record, as the access log names it,
-- so that a record leads to the request's log lines and spans. Older rows have none.
ALTER TABLE audit_records ADD COLUMN trace_id TEXT;
