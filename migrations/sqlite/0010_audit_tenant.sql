-- The tenant (tenancy.tenants) of each audit record: a tenant's administrators query only
-- their own partition. Records of a gateway without tenants, and older rows, have none.
ALTER TABLE audit_records ADD COLUMN tenant TEXT;
CREATE INDEX audit_records_tenant_at ON audit_records (tenant, at_ms);
