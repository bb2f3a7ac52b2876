-- KubeHero schema v15: the audit log filtered by cluster (`GET /api/v1/audit?cluster=…`, the dashboard's Audit
-- page) reads an index instead of scanning the table. Partial: only rows that name a cluster (Kubernetes
-- requests, agent and cluster events) pay for it; `cluster = $1` implies `cluster IS NOT NULL`, so both backends
-- use it. On an existing large log this migration builds the index once, at start-up.
CREATE INDEX audit_log_cluster ON audit_log (cluster, seq) WHERE cluster IS NOT NULL;
