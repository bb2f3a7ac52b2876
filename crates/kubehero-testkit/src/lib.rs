//! Test fixtures that start real programs: a throwaway PostgreSQL cluster (`initdb`/`pg_ctl`), the npm
//! `oidc-provider`, headless Chromium (`browser`), rsyslog, s3s-fs, the PyPI `scim2-tester` SCIM compliance
//! checker (`scim`), a real kube-apiserver with its etcd (`kubeapi`), and HAProxy in front of several replicas
//! (`haproxy`), and what a process costs (`process`). Every fixture binds port 0 or a free
//! port it picked, and stops its process on drop.
//! Peers are installed into `$KUBEHERO_PEERS_DIR` (default `~/.cache/kubehero-peers`), outside the repo.

pub mod browser;
pub mod gooidc;
pub mod haproxy;
pub mod kubeapi;
pub mod kubectl;
pub mod oidc;
pub mod postgres;
pub mod process;
pub mod rsyslog;
pub mod s3;
pub mod scim;
