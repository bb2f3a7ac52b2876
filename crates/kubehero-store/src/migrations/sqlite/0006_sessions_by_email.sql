-- KubeHero schema v6: deprovisioning finds a person's sessions and CLI tokens by the email of their sign-in
-- too (an index, instead of reading every session).
CREATE INDEX sessions_email ON sessions (lower(email));
