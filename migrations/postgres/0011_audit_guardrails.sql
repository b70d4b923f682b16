-- What the output guardrails found in a call's result: a JSON list of
-- {"rule", "action", "count"}, never the matched text. NULL when nothing matched.
ALTER TABLE audit_records ADD COLUMN guardrails TEXT;
