//! Shared fixtures: a throwaway Postgres per test binary (one database per
//! test), the emulator in-process, and the daemon in-process or as the built
//! binary.

#![allow(dead_code)]

pub mod daemon;
pub mod emulator;
pub mod postgres;
pub mod spec;

use std::time::Duration;

/// How long a test waits for the daemon to converge before failing.
pub const CONVERGE: Duration = Duration::from_secs(30);
