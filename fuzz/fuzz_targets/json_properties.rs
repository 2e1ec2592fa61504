//! JSON from clients, parsed the ways omnishard parses it:
//!
//! * vertex and edge `properties_json` (the shard's `parse_object`: any
//!   value, then an object required; empty text is an empty object);
//! * search documents (`Document.json`, `UpdateDocumentRequest.json`: an
//!   object), re-rendered and parsed again as a merge does;
//! * filter values (`PropertyFilter.value_json`, `FindVerticesRequest
//!   .value_json`: `serde_json::Value`, then a `Predicate`), tested against
//!   properties as traversals and queries do;
//! * stored JSON read back with `from_slice` (bytes, not necessarily UTF-8).
//!
//! serde_json refuses values nested deeper than 128 levels; everything runs
//! on a small stack so that limit is seen to hold, dropping included.
#![no_main]

use libfuzzer_sys::fuzz_target;
use omnishard_common::predicate::{self, Predicate};
use omnishard_fuzz::on_small_stack;
use serde_json::{Map, Value};

const OPS: [&str; 8] = ["", "eq", "neq", "gt", "gte", "lt", "lte", "within"];

fn parse_object(text: &str) -> Option<Map<String, Value>> {
    if text.trim().is_empty() {
        return Some(Map::new());
    }
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(map)) => Some(map),
        _ => None,
    }
}

fuzz_target!(init: omnishard_fuzz::init(), |data: &[u8]| {
    let data = data.to_vec();
    on_small_stack(move || {
        let _ = serde_json::from_slice::<Value>(&data);
        let _ = serde_json::from_slice::<Map<String, Value>>(&data);
        let Ok(text) = std::str::from_utf8(&data) else { return };

        // Properties and documents.
        if let Some(object) = parse_object(text) {
            let rendered = Value::Object(object.clone()).to_string();
            let again: Map<String, Value> =
                serde_json::from_str(&rendered).expect("a rendered object parses again");
            assert_eq!(again.len(), object.len(), "rendering kept every key");
            for key in object.keys().take(4) {
                let _ = predicate::properties_pass(text, key, &Predicate::Eq(Value::Null));
            }
        }
        let _ = serde_json::from_str::<Map<String, Value>>(text);

        // Filter values.
        let Ok(value) = serde_json::from_str::<Value>(text) else { return };
        let props = Value::Object(Map::from_iter([("k".to_string(), value.clone())])).to_string();
        for op in OPS {
            if let Ok(predicate) = Predicate::parse(op, text) {
                let _ = predicate.test(Some(&value));
                let _ = predicate.test(None);
                let _ = predicate::properties_pass(&props, "k", &predicate);
                let _ = predicate::properties_pass(text, "k", &predicate);
            }
        }
    });
});
