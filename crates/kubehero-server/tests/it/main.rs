//! KubeHero server integration tests: the real server on port 0, over real HTTP, with the real npm
//! `oidc-provider` as IdP and a throwaway PostgreSQL where a test says so.

mod api;
mod idp;
mod routes;
mod support;
