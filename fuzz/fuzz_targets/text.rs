//! Fuzzes the one rule for stored text (`kubehero_core::names`): the raw-JSON scan the API and SCIM run on
//! every body must find every odd character that walking the parsed JSON's strings (keys included) finds, and
//! agree with that walk exactly on the parsed value written back out. (The raw scan may refuse more: a body
//! with a duplicate key parses to its last value, but the scan also saw the earlier ones.) Neither may panic
//! on any bytes.
#![no_main]

use kubehero_core::names::{json_has_odd_char, odd_char};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fn any_odd(v: &Value) -> bool {
    match v {
        Value::String(s) => odd_char(s).is_some(),
        Value::Array(items) => items.iter().any(any_odd),
        Value::Object(map) => map.iter().any(|(k, v)| odd_char(k).is_some() || any_odd(v)),
        _ => false,
    }
}

fuzz_target!(|data: &[u8]| {
    let scanned = json_has_odd_char(data);
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = odd_char(text);
        if let Ok(value) = serde_json::from_str::<Value>(text) {
            let walked = any_odd(&value);
            assert!(scanned || !walked, "the scan missed an odd character in {text:?}");
            let written = serde_json::to_string(&value).unwrap_or_default();
            assert_eq!(json_has_odd_char(written.as_bytes()), walked, "scan and walk disagree on {written:?}");
        }
    }
});
