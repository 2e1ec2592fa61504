//! Property predicates shared by traversals (evaluated on shards) and
//! queries (evaluated at the gateway): `eq/neq/gt/gte/lt/lte/within` on JSON
//! values. Numbers compare as numbers, strings and booleans as themselves;
//! values of different kinds are never equal or ordered.

use std::cmp::Ordering;

use serde_json::Value;

use crate::error::{Error, Result};

/// A comparison with a JSON value.
#[derive(Debug, Clone, PartialEq)]
pub enum Predicate {
    Eq(Value),
    Neq(Value),
    Gt(Value),
    Gte(Value),
    Lt(Value),
    Lte(Value),
    Within(Vec<Value>),
}

impl Predicate {
    /// Builds a predicate from an operator name and a JSON value text.
    pub fn parse(op: &str, value_json: &str) -> Result<Predicate> {
        let value: Value = serde_json::from_str(value_json).map_err(|e| {
            Error::invalid(
                "value_json",
                format!("{:?} is not valid JSON: {e}", crate::query_text::excerpt(value_json, 64)),
            )
        })?;
        Ok(match op {
            "eq" | "" => Predicate::Eq(value),
            "neq" => Predicate::Neq(value),
            "gt" => Predicate::Gt(value),
            "gte" => Predicate::Gte(value),
            "lt" => Predicate::Lt(value),
            "lte" => Predicate::Lte(value),
            "within" => match value {
                Value::Array(items) => Predicate::Within(items),
                _ => return Err(Error::invalid("value_json", "within needs a JSON array")),
            },
            other => {
                return Err(Error::invalid(
                    "op",
                    format!("{:?} is not eq, neq, gt, gte, lt, lte or within", crate::query_text::excerpt(other, 32)),
                ))
            }
        })
    }

    /// Whether `value` (absent = `None`) passes. An absent property passes nothing.
    pub fn test(&self, value: Option<&Value>) -> bool {
        let Some(value) = value else { return false };
        let cmp = |other: &Value| compare(value, other);
        match self {
            Predicate::Eq(v) => cmp(v) == Some(Ordering::Equal),
            Predicate::Neq(v) => cmp(v) != Some(Ordering::Equal),
            Predicate::Gt(v) => cmp(v) == Some(Ordering::Greater),
            Predicate::Gte(v) => matches!(cmp(v), Some(Ordering::Greater | Ordering::Equal)),
            Predicate::Lt(v) => cmp(v) == Some(Ordering::Less),
            Predicate::Lte(v) => matches!(cmp(v), Some(Ordering::Less | Ordering::Equal)),
            Predicate::Within(vs) => vs.iter().any(|v| cmp(v) == Some(Ordering::Equal)),
        }
    }
}

/// Whether the JSON object text `properties` has `key` passing `predicate`.
pub fn properties_pass(properties: &str, key: &str, predicate: &Predicate) -> bool {
    let props: Value = serde_json::from_str(properties).unwrap_or(Value::Null);
    predicate.test(props.get(key))
}

fn compare(a: &Value, b: &Value) -> Option<Ordering> {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64()?.partial_cmp(&y.as_f64()?),
        (Value::String(x), Value::String(y)) => Some(x.cmp(y)),
        (Value::Bool(x), Value::Bool(y)) => Some(x.cmp(y)),
        (x, y) if x == y => Some(Ordering::Equal),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn test_predicates_compare_numbers_and_strings() {
        let props = r#"{"age": 30, "name": "ann"}"#;
        assert!(properties_pass(props, "age", &Predicate::Gt(json!(29.5))));
        assert!(properties_pass(props, "age", &Predicate::Lte(json!(30))));
        assert!(!properties_pass(props, "age", &Predicate::Lt(json!(30))));
        assert!(properties_pass(props, "name", &Predicate::Within(vec![json!("bob"), json!("ann")])));
        assert!(properties_pass(props, "name", &Predicate::Neq(json!("bob"))));
        assert!(!properties_pass(props, "missing", &Predicate::Neq(json!(1))));
        assert!(!properties_pass(props, "age", &Predicate::Gt(json!("x"))));
        assert!(Predicate::parse("within", "3").is_err());
        assert!(Predicate::parse("like", "3").unwrap_err().to_string().starts_with("op:"));
        assert_eq!(Predicate::parse("gte", "2").unwrap(), Predicate::Gte(json!(2)));
    }
}
