//! Tests of the real `kubehero` binary: `kill -9` under write load, two `serve` processes on one
//! PostgreSQL, and the `audit` commands.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod agents;
mod cli;
mod crash;
mod faults;
mod ha;
mod helm;
mod login_cli;
mod support;
