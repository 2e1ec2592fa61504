//! Index schemas: checking a definition, growing one safely, building the
//! Tantivy schema from it, and turning a JSON document into a Tantivy one.
//!
//! Field ids must be the same on every shard (global statistics name terms
//! by field id), so the Tantivy schema is built in definition order, with
//! the document id first; growing a schema only appends.

use omnishard_common::query_text::{excerpt, MAX_TERM_BYTES};
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
/// Earliest and latest epoch milliseconds a date field holds: Tantivy keeps
/// dates as i64 nanoseconds.
pub const MIN_DATE_MILLIS: i64 = i64::MIN / 1_000_000;
pub const MAX_DATE_MILLIS: i64 = i64::MAX / 1_000_000;
/// The instants a date field holds, for messages.
pub const DATE_RANGE: &str = "1677-09-21T00:12:43.145224192Z to 2262-04-11T23:47:16.854775807Z \
                              (epoch milliseconds -9223372036854 to 9223372036854)";
/// Every whole number up to this size is exact in an f64.
const F64_EXACT_INTEGERS: i128 = 1 << 53;

/// Client text quoted for a message, cut short.
pub fn quote(text: &str) -> String {
    format!("{:?}", excerpt(text, 64))
}

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
    Error::InvalidArgument(InputError::invalid("document", format!("{}: {reason}", quote(id))))
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
                doc_error(id, format!("unknown field {}; the schema has {}", quote(name), self.field_names()))
            })?;
            for item in values(value) {
                field.parse(item).map_err(|e| doc_error(id, e.reason().to_string()))?;
            }
        }
        Ok(object)
    }

    /// Builds the Tantivy document of a stored JSON object. Fields missing
    /// from `schema` (an older generation of the index) are skipped, and so
    /// are values the index cannot hold as given: they are refused on write
    /// now, but older versions stored some, and failing here would stop the
    /// index from ever catching up.
    pub fn to_tantivy(&self, schema: &Schema, id: &str, object: &Map<String, Value>) -> Result<TantivyDocument> {
        let mut doc = TantivyDocument::new();
        doc.add_text(id_field(schema)?, id);
        for (name, value) in object {
            let (Some(def), Ok(field)) = (self.field(name), schema.get_field(name)) else { continue };
            for item in values(value) {
                match def.parse(item) {
                    Ok(Parsed::Text(text)) => doc.add_text(field, text),
                    Ok(Parsed::I64(v)) => doc.add_i64(field, v),
                    Ok(Parsed::F64(v)) => doc.add_f64(field, v),
                    Ok(Parsed::Date(v)) => doc.add_date(field, v),
                    Err(ValueError::Unrepresentable(_)) => {
                        tracing::warn!(field = %def.name, "a stored value the index cannot hold was not indexed");
                    }
                    Err(ValueError::WrongType(reason)) => return Err(doc_error(id, reason)),
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

/// Why a field value was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ValueError {
    /// Not a value of the field's type.
    WrongType(String),
    /// Of the right type, but the index would hold another value (a date
    /// past 2262, a term over the length limit, an inexact whole number).
    Unrepresentable(String),
}

impl ValueError {
    /// The message.
    pub fn reason(&self) -> &str {
        match self {
            ValueError::WrongType(reason) | ValueError::Unrepresentable(reason) => reason,
        }
    }
}

/// Why a date was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DateError {
    /// Neither RFC 3339 nor epoch milliseconds.
    NotADate,
    /// Outside [`DATE_RANGE`].
    OutOfRange,
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
    pub fn parse<'a>(&self, value: &'a Value) -> std::result::Result<Parsed<'a>, ValueError> {
        let wrong = |expected: &str| {
            ValueError::WrongType(format!(
                "field {:?} is {expected} but got {}",
                self.name,
                excerpt(&value.to_string(), 64)
            ))
        };
        match self.kind {
            Kind::Text | Kind::Keyword => {
                let text = value.as_str().ok_or_else(|| wrong("a string field"))?;
                self.check_term(text).map_err(ValueError::Unrepresentable)?;
                Ok(Parsed::Text(text))
            }
            Kind::I64 => value.as_i64().map(Parsed::I64).ok_or_else(|| wrong("an i64 (whole number) field")),
            Kind::F64 => {
                let Value::Number(number) = value else { return Err(wrong("an f64 (number) field")) };
                let float = number.as_f64().filter(|f| f.is_finite()).ok_or_else(|| wrong("an f64 (number) field"))?;
                // A decimal is taken as its nearest f64, as every JSON reader takes it;
                // a whole number must be exact.
                let whole = number.as_i64().map(i128::from).or_else(|| number.as_u64().map(i128::from));
                if let Some(whole) = whole {
                    self.check_exact(whole, float).map_err(ValueError::Unrepresentable)?;
                }
                Ok(Parsed::F64(float))
            }
            Kind::Date => {
                let date = match value {
                    Value::String(text) => parse_date(text),
                    Value::Number(n) => match (n.as_i64(), n.as_u64()) {
                        (Some(ms), _) => date_from_millis(ms),
                        (None, Some(_)) => Err(DateError::OutOfRange),
                        (None, None) => Err(DateError::NotADate),
                    },
                    _ => Err(DateError::NotADate),
                };
                date.map(Parsed::Date).map_err(|e| match e {
                    DateError::NotADate => wrong("a date (RFC 3339 or whole epoch milliseconds) field"),
                    DateError::OutOfRange => ValueError::Unrepresentable(self.date_out_of_range(value)),
                })
            }
        }
    }

    /// Refuses a term the index would drop: a keyword, or a text field's
    /// value under the `raw` analyzer (one token). Other analyzers split
    /// text into words; Tantivy drops a single word over the limit (the
    /// `default` and `en_stem` analyzers already drop words over 40 bytes).
    pub fn check_term(&self, text: &str) -> std::result::Result<(), String> {
        let one_term = self.kind == Kind::Keyword || (self.kind == Kind::Text && self.analyzer == "raw");
        if one_term && text.len() > MAX_TERM_BYTES {
            return Err(format!(
                "field {:?}: value is {} bytes; the limit is {MAX_TERM_BYTES} (longer terms are not indexed)",
                self.name,
                text.len()
            ));
        }
        Ok(())
    }

    /// Refuses a whole number an f64 field would store as a neighbour.
    pub fn check_exact(&self, whole: i128, float: f64) -> std::result::Result<(), String> {
        // `as` saturates, so 2^63 reads back as 2^63 and differs from i64::MAX.
        if float as i128 != whole {
            return Err(format!(
                "field {:?}: {whole} is not exact in an f64 (every whole number up to ±{F64_EXACT_INTEGERS} is); \
                 send it as a decimal to accept rounding",
                self.name
            ));
        }
        Ok(())
    }

    /// The message for a date outside [`DATE_RANGE`].
    pub fn date_out_of_range(&self, value: &impl std::fmt::Display) -> String {
        format!(
            "field {:?}: date {} is outside the range of a date field: {DATE_RANGE}",
            self.name,
            excerpt(&value.to_string(), 64)
        )
    }
}

/// Parses RFC 3339 text (`2024-05-01T12:00:00Z`) or epoch milliseconds,
/// refusing instants a date field cannot hold (Tantivy would store another).
pub fn parse_date(text: &str) -> std::result::Result<DateTime, DateError> {
    if let Ok(ms) = text.parse::<i64>() {
        return date_from_millis(ms);
    }
    let digits = text.strip_prefix(['-', '+']).unwrap_or(text);
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        // A whole number beyond i64.
        return Err(DateError::OutOfRange);
    }
    let parsed = OffsetDateTime::parse(text, &Rfc3339).map_err(|_| DateError::NotADate)?;
    DateTime::try_from_utc(parsed).ok_or(DateError::OutOfRange)
}

/// A date from epoch milliseconds, if a date field can hold it.
pub fn date_from_millis(ms: i64) -> std::result::Result<DateTime, DateError> {
    // Checked: unchecked, a debug build panics and a release build wraps to another date.
    ms.checked_mul(1_000_000).map(DateTime::from_timestamp_nanos).ok_or(DateError::OutOfRange)
}

/// Renders epoch milliseconds as RFC 3339.
pub fn format_date(millis: i64) -> String {
    match date_from_millis(millis) {
        Ok(date) => date.into_utc().format(&Rfc3339).unwrap_or_else(|_| millis.to_string()),
        Err(_) => millis.to_string(),
    }
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
        assert_eq!(parse_date("yesterday").unwrap_err(), DateError::NotADate);
    }

    #[test]
    fn test_dates_outside_the_range_are_refused_not_moved() {
        // The range in messages is exactly what Tantivy holds.
        let show = |d: DateTime| d.into_utc().format(&Rfc3339).unwrap();
        assert!(DATE_RANGE.starts_with(&format!("{} to {}", show(DateTime::MIN), show(DateTime::MAX))));
        assert!(DATE_RANGE.contains(&format!("{MIN_DATE_MILLIS} to {MAX_DATE_MILLIS}")));
        for text in [
            "2299-01-01T00:00:00Z",
            "1600-01-01T00:00:00Z",
            "9223372036854775807",
            "-9223372036855",
            "99999999999999999999",
        ] {
            assert_eq!(parse_date(text).unwrap_err(), DateError::OutOfRange, "{text}");
        }
        for ms in [MIN_DATE_MILLIS, MAX_DATE_MILLIS, 0] {
            assert_eq!(parse_date(&ms.to_string()).unwrap().into_timestamp_millis(), ms);
        }
        assert_eq!(date_from_millis(i64::MAX), Err(DateError::OutOfRange));
        assert_eq!(date_from_millis(i64::MIN), Err(DateError::OutOfRange));
        let edge = parse_date("2262-04-11T23:47:16.854Z").unwrap();
        assert_eq!(edge.into_timestamp_millis(), MAX_DATE_MILLIS);

        let schema = IndexSchema::from_proto(&[spec("at", FieldType::Date, "")]).unwrap();
        for json in
            [r#"{"at":"2299-01-01T00:00:00Z"}"#, r#"{"at":9223372036854775807}"#, r#"{"at":18446744073709551615}"#]
        {
            let err = schema.check_document("a", json).unwrap_err().to_string();
            assert!(err.contains("\"at\"") && err.contains("2262-04-11"), "{err}");
        }
        let err = schema.check_document("a", r#"{"at":1.5}"#).unwrap_err().to_string();
        assert!(err.contains("epoch milliseconds"), "{err}");
    }

    #[test]
    fn test_terms_over_the_limit_are_refused() {
        assert_eq!(MAX_TERM_BYTES, tantivy::tokenizer::MAX_TOKEN_LEN);
        let schema = IndexSchema::from_proto(&[
            spec("tag", FieldType::Keyword, ""),
            spec("code", FieldType::Text, "raw"),
            spec("body", FieldType::Text, ""),
        ])
        .unwrap();
        let doc = |field: &str, len: usize| format!(r#"{{"{field}":"{}"}}"#, "x".repeat(len));
        schema.check_document("a", &doc("tag", MAX_TERM_BYTES)).unwrap();
        for field in ["tag", "code"] {
            let err = schema.check_document("a", &doc(field, MAX_TERM_BYTES + 1)).unwrap_err().to_string();
            assert!(err.contains(field) && err.contains("65530") && err.len() < 300, "{err}");
        }
        // Tokenized text keeps its other words.
        schema.check_document("a", &doc("body", 70_000)).unwrap();
    }

    #[test]
    fn test_f64_whole_numbers_must_be_exact() {
        let schema = IndexSchema::from_proto(&[spec("r", FieldType::F64, "")]).unwrap();
        schema.check_document("a", r#"{"r":9007199254740992}"#).unwrap();
        schema.check_document("a", r#"{"r":0.1}"#).unwrap();
        schema.check_document("a", r#"{"r":-5}"#).unwrap();
        for json in [r#"{"r":9007199254740993}"#, r#"{"r":9223372036854775807}"#, r#"{"r":18446744073709551615}"#] {
            let err = schema.check_document("a", json).unwrap_err().to_string();
            assert!(err.contains("not exact in an f64"), "{err}");
        }
        // JSON cannot carry NaN or infinities; out-of-range literals are not JSON either.
        assert!(schema.check_document("a", r#"{"r":NaN}"#).is_err());
        assert!(schema.check_document("a", r#"{"r":1e400}"#).is_err());
    }

    #[test]
    fn test_messages_quote_client_text_briefly() {
        let schema = IndexSchema::from_proto(&[spec("n", FieldType::I64, "")]).unwrap();
        let long = "y".repeat(50_000);
        let err = schema.check_document(&long, &format!(r#"{{"n":"{long}"}}"#)).unwrap_err().to_string();
        assert!(err.len() < 400, "{}", err.len());
        let err = schema.check_document("a", &format!(r#"{{"{long}":1}}"#)).unwrap_err().to_string();
        assert!(err.len() < 400, "{}", err.len());
    }

    #[test]
    fn test_stored_values_the_index_cannot_hold_are_skipped() {
        let schema =
            IndexSchema::from_proto(&[spec("at", FieldType::Date, ""), spec("t", FieldType::Keyword, "")]).unwrap();
        let tantivy_schema = schema.tantivy();
        let object: Map<String, Value> = serde_json::from_str(r#"{"at":9223372036854775807,"t":"kept"}"#).unwrap();
        let doc = schema.to_tantivy(&tantivy_schema, "a", &object).unwrap();
        let at = tantivy_schema.get_field("at").unwrap();
        let t = tantivy_schema.get_field("t").unwrap();
        assert!(doc.get_first(at).is_none());
        assert!(doc.get_first(t).is_some());
        let wrong: Map<String, Value> = serde_json::from_str(r#"{"t":5}"#).unwrap();
        assert!(schema.to_tantivy(&tantivy_schema, "a", &wrong).is_err());
    }
}
