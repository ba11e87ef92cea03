//! The `ciosync` binary: parse the command line, hand over to the library.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let _ = rustls::crypto::ring::default_provider().install_default();
    ciosync::cli::main(ciosync::cli::Cli::parse())
}
