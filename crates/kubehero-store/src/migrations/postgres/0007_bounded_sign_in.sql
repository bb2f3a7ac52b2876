-- KubeHero schema v7: nothing is stored for a sign-in before the person is signed in (the pending browser
-- sign-in travels sealed in its cookie), and expired device authorizations are swept by expiry.
DROP TABLE IF EXISTS login_attempts;
CREATE INDEX device_authorizations_expires ON device_authorizations (expires_at);
