//! KubeHero's cluster agent, and the tunnel both ends share.
//!
//! The agent (`kubehero agent`) makes its own key, joins with a one-time token (trusting the control plane only
//! by its CA's hash), then authenticates only with its 7-day client certificate, renews it at about two thirds
//! of its life, and holds one outbound, multiplexed tunnel to the control plane ([`tunnel`]). Each stream the
//! control plane opens is served as HTTP/1.1 towards the cluster's API server with the agent's own credentials
//! ([`upstream`]); through it the control plane also keeps the cluster's RBAC in step with KubeHero's roles
//! ([`rbac`]). The control plane uses [`tunnel::TunnelClient`], [`proto`] and [`pki`] from here, so both ends
//! are one piece of code.

pub mod client;
pub mod pki;
pub mod proto;
pub mod rbac;
pub mod run;
pub mod state;
pub mod tunnel;
pub mod upstream;
