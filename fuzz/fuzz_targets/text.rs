//! Fuzzes the one rule for stored text (`kubehero_core::names`): the raw-JSON scan the API and SCIM run on
//! every body must agree with walking the parsed JSON's strings (keys included) for odd characters, and
//! neither may panic on any bytes.
#![no_main]

use kubehero_core::names::{check_text, json_has_odd_char, odd_char};
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
        let _ = check_text("field", text, 64);
        if let Ok(value) = serde_json::from_str::<Value>(text) {
            assert_eq!(scanned, any_odd(&value), "scan and parse disagree on {text:?}");
        }
    }
});
