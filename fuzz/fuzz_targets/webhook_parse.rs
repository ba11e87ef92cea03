//! The webhook receiver's checks on what a sender controls: the body (the
//! reporting-event parser and the signature check) and the header values.
//! Layout: the input splits at its first two NUL bytes into a header value,
//! a signature and the body; without them the whole input is the body.
#![no_main]

use ciosync::webhooks::event::ReportingEvent;
use ciosync::webhooks::verify;
use libfuzzer_sys::fuzz_target;

const KEY: &[u8] = b"fuzz-signing-key";

fuzz_target!(|data: &[u8]| {
    let mut parts = data.splitn(3, |&b| b == 0);
    let (header, signature, body) = match (parts.next(), parts.next(), parts.next()) {
        (Some(h), Some(s), Some(b)) => (h, s, b),
        _ => (&[][..], &[][..], data),
    };
    let header = String::from_utf8_lossy(header);
    let signature = String::from_utf8_lossy(signature);

    if let Ok(event) = ReportingEvent::parse(body) {
        let _ = event.labels();
    }
    let _ = verify::signature_matches(KEY, &header, body, &signature);
    let _ = verify::check_timestamp(Some(&header), 1_700_000_000, 300);
    let _ = verify::check_timestamp(Some(&header), u64::MAX, u64::MAX);
    let _ = verify::is_json_content_type(Some(&header));
    let _ = verify::check_content_length(Some(&header), 1 << 20);
});
