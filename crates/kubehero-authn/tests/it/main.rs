//! Integration tests of kubehero-authn: the RFC 8725 attack corpus, positive cases per algorithm, JWK Set
//! parsing, the Wycheproof vectors, the JWKS fetcher against a hand-made fake IdP, API keys and the cache.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod apikeys;
mod corpus;
mod fetch;
mod jwks;
mod positive;
mod support;
mod wycheproof;
