-- KubeHero schema v14: which replica holds a cluster's tunnel. With several control plane replicas, a
-- request for a cluster whose agent is connected to another replica is forwarded to it at this address (its
-- agent listener, KUBEHERO_PEER_URL). A disconnect only overwrites the row of the replica that wrote it, so a
-- late disconnect of an old tunnel never hides the agent's new one on another replica.
ALTER TABLE cluster_status ADD COLUMN replica TEXT;
