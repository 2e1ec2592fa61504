//! Index schemas: checking a definition, growing one safely, building the
//! Tantivy schema from it, and turning a JSON document into a Tantivy one.
//!
//! Field ids must be the same on every shard (global statistics name terms
//! by field id), so the Tantivy schema is built in definition order, with
//! the document id first; growing a schema only appends.

use omnishard_common::Error as InputError;
use omnishard_proto::v1::{FieldSpec, FieldType};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tantivy::schema::{
    DateOptions, DateTimePrecision, Field, IndexRecordOption, NumericOptions, Schema, TextFieldIndexing, TextOptions,
    FAST, STRING,
};
use tantivy::time::format_description::well_known::Rfc3339;
use tantivy::time::OffsetDateTime;
use tantivy::{DateTime, TantivyDocument};

use crate::error::{Error, Result};

/// The Tantivy field holding the document id (raw, fast): deletes, tie-breaks.
pub const ID_FIELD: &str = "_id";
/// Most fields an index may have.
pub const MAX_FIELDS: usize = 256;
/// Longest field name, in bytes.
pub const MAX_FIELD_NAME: usize = 64;
/// Analyzers a text field may use (all built into Tantivy).
pub const ANALYZERS: [&str; 4] = ["default", "en_stem", "raw", "whitespace"];

/// The type of one field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Text,
    Keyword,
    I64,
    F64,
    Date,
}

impl Kind {
    fn from_proto(raw: i32, name: &str) -> Result<Kind> {
        match FieldType::try_from(raw) {
            Ok(FieldType::Text) => Ok(Kind::Text),
            Ok(FieldType::Keyword) => Ok(Kind::Keyword),
            Ok(FieldType::I64) => Ok(Kind::I64),
            Ok(FieldType::F64) => Ok(Kind::F64),
            Ok(FieldType::Date) => Ok(Kind::Date),
            _ => Err(invalid(format!("field {name:?} has no type; use text, keyword, i64, f64 or date"))),
        }
    }

    fn to_proto(self) -> FieldType {
        match self {
            Kind::Text => FieldType::Text,
            Kind::Keyword => FieldType::Keyword,
            Kind::I64 => FieldType::I64,
            Kind::F64 => FieldType::F64,
            Kind::Date => FieldType::Date,
        }
    }

    /// Whether the field has a sortable, range-filterable fast column.
    pub fn is_numeric(self) -> bool {
        matches!(self, Kind::I64 | Kind::F64 | Kind::Date)
    }
}

/// One field of an index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldDef {
    pub name: String,
    pub kind: Kind,
    /// Text fields only.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub analyzer: String,
}

/// The fields of an index, in definition order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexSchema {
    pub fields: Vec<FieldDef>,
}

fn invalid(reason: String) -> Error {
    Error::InvalidArgument(InputError::invalid("fields", reason))
}

fn doc_error(id: &str, reason: String) -> Error {
    Error::InvalidArgument(InputError::invalid("document", format!("{id:?}: {reason}")))
}

impl IndexSchema {
    /// Checks a definition from the wire: names, types, analyzers, duplicates.
    pub fn from_proto(specs: &[FieldSpec]) -> Result<IndexSchema> {
        if specs.is_empty() {
            return Err(invalid("an index needs at least one field".into()));
        }
        if specs.len() > MAX_FIELDS {
            return Err(invalid(format!("{} fields; the limit is {MAX_FIELDS}", specs.len())));
        }
        let mut fields: Vec<FieldDef> = Vec::with_capacity(specs.len());
        for spec in specs {
            check_field_name(&spec.name)?;
            if fields.iter().any(|f| f.name == spec.name) {
                return Err(invalid(format!("field {:?} is defined twice", spec.name)));
            }
            let kind = Kind::from_proto(spec.r#type, &spec.name)?;
            let analyzer = match kind {
                Kind::Text if spec.analyzer.is_empty() => "default".to_string(),
                Kind::Text if ANALYZERS.contains(&spec.analyzer.as_str()) => spec.analyzer.clone(),
                Kind::Text => {
                    return Err(invalid(format!(
                        "field {:?}: unknown analyzer {:?}; use one of {}",
                        spec.name,
                        spec.analyzer,
                        ANALYZERS.join(", ")
                    )))
                }
                _ if spec.analyzer.is_empty() => String::new(),
                _ => return Err(invalid(format!("field {:?}: only text fields take an analyzer", spec.name))),
            };
            fields.push(FieldDef { name: spec.name.clone(), kind, analyzer });
        }
        Ok(IndexSchema { fields })
    }

    /// The definition as sent on the wire.
    pub fn to_proto(&self) -> Vec<FieldSpec> {
        self.fields
            .iter()
            .map(|f| FieldSpec { name: f.name.clone(), r#type: f.kind.to_proto() as i32, analyzer: f.analyzer.clone() })
            .collect()
    }

    /// Checks that `next` only appends fields to `self` (the one safe change).
    pub fn check_growth(&self, next: &IndexSchema) -> Result<()> {
        for old in &self.fields {
            match next.fields.iter().position(|f| f.name == old.name) {
                None => {
                    return Err(Error::FailedPrecondition(format!(
                        "field {:?} cannot be removed online (unsafe change); create a new index",
                        old.name
                    )))
                }
                Some(at) if next.fields[at] != *old => {
                    return Err(Error::FailedPrecondition(format!(
                        "field {:?} cannot change from {} to {} (unsafe change: indexed data would not match); only adding fields is supported",
                        old.name,
                        old.describe(),
                        next.fields[at].describe()
                    )))
                }
                Some(_) => {}
            }
        }
        // Appending keeps field ids stable; anything else would renumber them.
        if next.fields[..self.fields.len()] != self.fields[..] {
            return Err(Error::FailedPrecondition(
                "existing fields must keep their order; list new fields after them".into(),
            ));
        }
        Ok(())
    }

    /// The field called `name`.
    pub fn field(&self, name: &str) -> Option<&FieldDef> {
        self.fields.iter().find(|f| f.name == name)
    }

    /// The Tantivy schema: `_id` first, then every field in order.
    pub fn tantivy(&self) -> Schema {
        let mut builder = Schema::builder();
        builder.add_text_field(ID_FIELD, STRING | FAST);
        for field in &self.fields {
            match field.kind {
                Kind::Text => {
                    let indexing = TextFieldIndexing::default()
                        .set_tokenizer(&field.analyzer)
                        .set_index_option(IndexRecordOption::WithFreqsAndPositions);
                    builder.add_text_field(&field.name, TextOptions::default().set_indexing_options(indexing));
                }
                Kind::Keyword => {
                    builder.add_text_field(&field.name, STRING | FAST);
                }
                Kind::I64 => {
                    builder.add_i64_field(&field.name, NumericOptions::default().set_indexed().set_fast());
                }
                Kind::F64 => {
                    builder.add_f64_field(&field.name, NumericOptions::default().set_indexed().set_fast());
                }
                Kind::Date => {
                    let options =
                        DateOptions::default().set_indexed().set_fast().set_precision(DateTimePrecision::Milliseconds);
                    builder.add_date_field(&field.name, options);
                }
            }
        }
        builder.build()
    }

    /// Checks a JSON document against the schema and returns it as an object.
    pub fn check_document(&self, id: &str, json: &str) -> Result<Map<String, Value>> {
        let value: Value = serde_json::from_str(json).map_err(|e| doc_error(id, format!("is not valid JSON: {e}")))?;
        let Value::Object(object) = value else {
            return Err(doc_error(id, "must be a JSON object".into()));
        };
        for (name, value) in &object {
            let field = self.field(name).ok_or_else(|| {
                doc_error(id, format!("unknown field {name:?}; the schema has {}", self.field_names()))
            })?;
            for item in values(value) {
                field.parse(item).map_err(|reason| doc_error(id, reason))?;
            }
        }
        Ok(object)
    }

    /// Builds the Tantivy document of a stored JSON object. Fields missing
    /// from `schema` (an older generation of the index) are skipped.
    pub fn to_tantivy(&self, schema: &Schema, id: &str, object: &Map<String, Value>) -> Result<TantivyDocument> {
        let mut doc = TantivyDocument::new();
        doc.add_text(id_field(schema)?, id);
        for (name, value) in object {
            let (Some(def), Ok(field)) = (self.field(name), schema.get_field(name)) else { continue };
            for item in values(value) {
                match def.parse(item).map_err(|reason| doc_error(id, reason))? {
                    Parsed::Text(text) => doc.add_text(field, text),
                    Parsed::I64(v) => doc.add_i64(field, v),
                    Parsed::F64(v) => doc.add_f64(field, v),
                    Parsed::Date(v) => doc.add_date(field, v),
                }
            }
        }
        Ok(doc)
    }

    fn field_names(&self) -> String {
        self.fields.iter().map(|f| f.name.as_str()).collect::<Vec<_>>().join(", ")
    }
}

/// The `_id` field of a Tantivy schema built by [`IndexSchema::tantivy`].
pub fn id_field(schema: &Schema) -> Result<Field> {
    schema.get_field(ID_FIELD).map_err(|e| Error::Internal(format!("index without {ID_FIELD}: {e}")))
}

/// A JSON value as a list of field values: arrays hold many, null none.
fn values(value: &Value) -> Vec<&Value> {
    match value {
        Value::Array(items) => items.iter().collect(),
        Value::Null => Vec::new(),
        one => vec![one],
    }
}

/// One field value converted to its Tantivy type.
pub enum Parsed<'a> {
    Text(&'a str),
    I64(i64),
    F64(f64),
    Date(DateTime),
}

impl FieldDef {
    fn describe(&self) -> String {
        match self.kind {
            Kind::Text => format!("text:{}", self.analyzer),
            other => serde_json::to_value(other).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default(),
        }
    }

    /// Converts one JSON value of this field; the error says why not.
    pub fn parse<'a>(&self, value: &'a Value) -> std::result::Result<Parsed<'a>, String> {
        let wrong = |expected: &str| format!("field {:?} is {expected} but got {value}", self.name);
        match self.kind {
            Kind::Text | Kind::Keyword => value.as_str().map(Parsed::Text).ok_or_else(|| wrong("a string field")),
            Kind::I64 => value.as_i64().map(Parsed::I64).ok_or_else(|| wrong("an i64 (whole number) field")),
            Kind::F64 => value.as_f64().map(Parsed::F64).ok_or_else(|| wrong("an f64 (number) field")),
            Kind::Date => match value {
                Value::String(text) => {
                    parse_date(text).map(Parsed::Date).ok_or_else(|| wrong("a date (RFC 3339) field"))
                }
                Value::Number(n) => n
                    .as_i64()
                    .map(|ms| Parsed::Date(DateTime::from_timestamp_millis(ms)))
                    .ok_or_else(|| wrong("a date (RFC 3339 or epoch milliseconds) field")),
                _ => Err(wrong("a date (RFC 3339 or epoch milliseconds) field")),
            },
        }
    }
}

/// Parses RFC 3339 text (`2024-05-01T12:00:00Z`) or epoch milliseconds.
pub fn parse_date(text: &str) -> Option<DateTime> {
    if let Ok(ms) = text.parse::<i64>() {
        return Some(DateTime::from_timestamp_millis(ms));
    }
    OffsetDateTime::parse(text, &Rfc3339).ok().map(DateTime::from_utc)
}

/// Renders epoch milliseconds as RFC 3339.
pub fn format_date(millis: i64) -> String {
    let date = DateTime::from_timestamp_millis(millis).into_utc();
    date.format(&Rfc3339).unwrap_or_else(|_| millis.to_string())
}

fn check_field_name(name: &str) -> Result<()> {
    let valid_start = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic());
    let valid_rest = name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if name.is_empty() || name.len() > MAX_FIELD_NAME || !valid_start || !valid_rest {
        return Err(invalid(format!(
            "field name {name:?} must be 1-{MAX_FIELD_NAME} characters of a-z, A-Z, 0-9 and '_', starting with a letter"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, kind: FieldType, analyzer: &str) -> FieldSpec {
        FieldSpec { name: name.into(), r#type: kind as i32, analyzer: analyzer.into() }
    }

    #[test]
    fn test_growth_allows_appending_only() {
        let v1 = IndexSchema::from_proto(&[spec("body", FieldType::Text, "en_stem")]).unwrap();
        let v2 = IndexSchema::from_proto(&[spec("body", FieldType::Text, "en_stem"), spec("n", FieldType::I64, "")])
            .unwrap();
        v1.check_growth(&v2).unwrap();
        let changed = IndexSchema::from_proto(&[spec("body", FieldType::Text, "raw")]).unwrap();
        let err = v1.check_growth(&changed).unwrap_err().to_string();
        assert!(err.contains("text:en_stem") && err.contains("text:raw"), "{err}");
        assert!(v2.check_growth(&v1).unwrap_err().to_string().contains("cannot be removed"));
    }

    #[test]
    fn test_documents_are_checked_against_the_schema() {
        let schema = IndexSchema::from_proto(&[
            spec("title", FieldType::Text, ""),
            spec("year", FieldType::I64, ""),
            spec("at", FieldType::Date, ""),
        ])
        .unwrap();
        schema.check_document("a", r#"{"title":"x","year":[1,2],"at":"2024-05-01T12:00:00Z"}"#).unwrap();
        let err = schema.check_document("a", r#"{"year":"abc"}"#).unwrap_err().to_string();
        assert!(err.contains("\"year\"") && err.contains("i64"), "{err}");
        let err = schema.check_document("a", r#"{"nope":1}"#).unwrap_err().to_string();
        assert!(err.contains("unknown field \"nope\""), "{err}");
        assert!(schema.check_document("a", "[1]").is_err());
        assert!(schema.check_document("a", "{").is_err());
    }

    #[test]
    fn test_bad_definitions_name_the_problem() {
        assert!(IndexSchema::from_proto(&[spec("a", FieldType::Text, "klingon")]).is_err());
        assert!(IndexSchema::from_proto(&[spec("a", FieldType::I64, "en_stem")]).is_err());
        assert!(IndexSchema::from_proto(&[spec("a", FieldType::Unspecified, "")]).is_err());
        assert!(IndexSchema::from_proto(&[spec("_id", FieldType::Keyword, "")]).is_err());
        assert!(IndexSchema::from_proto(&[spec("a", FieldType::Text, ""), spec("a", FieldType::I64, "")]).is_err());
        assert!(IndexSchema::from_proto(&[]).is_err());
    }

    #[test]
    fn test_dates_round_trip_as_rfc3339() {
        let date = parse_date("2024-05-01T12:00:00Z").unwrap();
        assert_eq!(format_date(date.into_timestamp_millis()), "2024-05-01T12:00:00Z");
        assert!(parse_date("yesterday").is_none());
    }
}
