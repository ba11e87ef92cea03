//! What ciosync's tests, its delivery bench and `ciosync demo` start around
//! the daemon: a [`throwaway`] PostgreSQL cluster (initdb into a temporary
//! directory, removed when dropped), with the options the TLS, password and
//! failover tests need.
//!
//! Its own crate so that another crate's tests can start a cluster without
//! depending on the daemon; it needs neither the daemon nor the emulator.

pub mod throwaway;
