-- KubeHero schema v9: KubeHero's own OIDC issuer. Its signing keys (private key sealed under a key derived from
-- AUDIT_HMAC_KEY, never in the clear; the public key as a JWK). A key is published from created_at, signs once
-- it has been published for the configured lead time, and stays published for a while after a newer key took
-- over, so API servers with a cached JWKS never see a token signed by a key they cannot find. Times are Unix
-- seconds.

CREATE TABLE issuer_keys (
    id          TEXT    NOT NULL PRIMARY KEY,
    alg         TEXT    NOT NULL,
    public_jwk  TEXT    NOT NULL,
    sealed_key  TEXT    NOT NULL,
    created_at  BIGINT  NOT NULL
);
