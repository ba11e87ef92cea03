//! The pgoutput decoder on arbitrary bytes: it must return a message or an
//! error, never panic, and never allocate beyond what the input can hold.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = ciosync::source::pgoutput::decode(&Bytes::copy_from_slice(data));
});
