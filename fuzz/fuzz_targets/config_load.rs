//! Config parsing and validation on arbitrary text, with no environment
//! overrides: any TOML, however odd, must give a config or an error.
#![no_main]

use ciosync::config::Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = Config::from_toml(text, std::iter::empty());
});
