//! Fuzzes the SCIM PATCH path parser (RFC 7644 §3.5.2) with arbitrary bytes: it must never panic, and its
//! `Display` must parse back to the same path.
#![no_main]

use kubehero_scim::PatchPath;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    let Ok(path) = PatchPath::parse(s) else { return };
    let canonical = path.to_string();
    match PatchPath::parse(&canonical) {
        Ok(again) => assert_eq!(again, path, "round trip of {s:?} through {canonical:?} changed the path"),
        Err(e) => panic!("canonical form {canonical:?} of {s:?} does not parse: {e}"),
    }
});
