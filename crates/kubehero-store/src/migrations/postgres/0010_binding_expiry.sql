-- KubeHero schema v10: role bindings that end on their own (elevation, shares, temporary access). NULL: the
-- binding lasts until it is deleted. From expires_at (Unix seconds) it grants nothing; a sweep deletes it with
-- an audit row.

ALTER TABLE role_bindings ADD COLUMN expires_at BIGINT;
