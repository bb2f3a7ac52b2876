//! KubeHero server integration tests: the real server on port 0, over real HTTP, with the real npm
//! `oidc-provider` as IdP and a throwaway PostgreSQL where a test says so.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod agents;
mod api;
mod audit;
mod browser;
mod direct;
mod hostile;
mod idp;
mod kube;
mod login;
mod routes;
mod scim;
mod shares;
mod support;
mod ui;
mod workos;
