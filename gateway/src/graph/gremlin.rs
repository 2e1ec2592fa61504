//! A Gremlin-style text query, parsed into steps for the traversal engine.
//!
//! Supported: `g.V(ids…)`, `g.V()`, `hasLabel(l…)`, `has(k, v)` and
//! `has(k, eq|neq|gt|gte|lt|lte(v))`, `has(k, within(v…))`,
//! `out/in/both(labels…)`, `outE/inE/bothE(labels…)`, `repeat(out(…)).times(n)`,
//! `dedup()`, `limit(n)`, `count()`, `values(k…)`, `path()`.
//! Strings take single or double quotes; numbers, `true`, `false` and
//! `null` are JSON values. Errors give the byte position.

use serde_json::Value;

pub use omnishard_common::predicate::Predicate;

/// Which way an expansion step walks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Out,
    In,
    Both,
}

/// One step of a parsed query.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// `g.V(ids…)`; an empty list means every vertex (needs a following `hasLabel`).
    V(Vec<String>),
    HasLabel(Vec<String>),
    Has(String, Predicate),
    /// `out/in/both(labels…)`: move to neighbouring vertices.
    Vertices(Direction, Vec<String>),
    /// `outE/inE/bothE(labels…)`: move to edges.
    Edges(Direction, Vec<String>),
    /// `repeat(steps).times(n)`.
    Repeat(Vec<Step>, u32),
    Dedup,
    Limit(u64),
    Count,
    Values(Vec<String>),
    Path,
}

/// A syntax error with the byte offset it was found at.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("query: {message} at position {position}")]
pub struct ParseError {
    pub position: usize,
    pub message: String,
}

/// Parses a whole query such as `g.V('a').out('knows').count()`.
pub fn parse(query: &str) -> Result<Vec<Step>, ParseError> {
    let mut p = Parser { src: query, pos: 0 };
    p.skip_ws();
    p.expect_word("g")?;
    p.expect_char('.')?;
    let mut steps = Vec::new();
    let start = p.pos;
    let name = p.ident()?;
    if name != "V" {
        return Err(p.error_at(start, format!("a query starts with g.V(...), not g.{name}")));
    }
    let args = p.args()?;
    steps.push(Step::V(args.into_iter().map(|a| a.into_string(&p)).collect::<Result<_, _>>()?));
    while p.peek() == Some('.') {
        p.pos += 1;
        steps.push(p.step()?);
    }
    p.skip_ws();
    if p.pos < p.src.len() {
        return Err(p.error_at(p.pos, "unexpected text after the query".into()));
    }
    Ok(steps)
}

/// An argument as written: a JSON-like literal or a nested call.
#[derive(Debug, Clone)]
enum Arg {
    Literal(Value, usize),
    Call(String, Vec<Arg>, usize),
}

impl Arg {
    fn position(&self) -> usize {
        match self {
            Arg::Literal(_, p) | Arg::Call(_, _, p) => *p,
        }
    }

    fn into_string(self, p: &Parser) -> Result<String, ParseError> {
        match self {
            Arg::Literal(Value::String(s), _) => Ok(s),
            Arg::Literal(Value::Number(n), _) => Ok(n.to_string()),
            other => Err(p.error_at(other.position(), "expected a string".into())),
        }
    }

    fn into_value(self, p: &Parser) -> Result<Value, ParseError> {
        match self {
            Arg::Literal(v, _) => Ok(v),
            Arg::Call(name, _, pos) => Err(p.error_at(pos, format!("expected a value, found {name}(...)"))),
        }
    }
}

struct Parser<'a> {
    src: &'a str,
    pos: usize,
}

impl Parser<'_> {
    fn step(&mut self) -> Result<Step, ParseError> {
        let start = self.pos;
        let name = self.ident()?;
        let args = self.args()?;
        let strings =
            |p: &Parser, args: Vec<Arg>| args.into_iter().map(|a| a.into_string(p)).collect::<Result<Vec<_>, _>>();
        let no_args = |p: &Parser, args: &[Arg], step: Step| {
            if args.is_empty() {
                Ok(step)
            } else {
                Err(p.error_at(args[0].position(), format!("{name}() takes no arguments")))
            }
        };
        match name.as_str() {
            "hasLabel" => Ok(Step::HasLabel(strings(self, args)?)),
            "has" => self.has(start, args),
            "out" => Ok(Step::Vertices(Direction::Out, strings(self, args)?)),
            "in" => Ok(Step::Vertices(Direction::In, strings(self, args)?)),
            "both" => Ok(Step::Vertices(Direction::Both, strings(self, args)?)),
            "outE" => Ok(Step::Edges(Direction::Out, strings(self, args)?)),
            "inE" => Ok(Step::Edges(Direction::In, strings(self, args)?)),
            "bothE" => Ok(Step::Edges(Direction::Both, strings(self, args)?)),
            "dedup" => no_args(self, &args, Step::Dedup),
            "count" => no_args(self, &args, Step::Count),
            "path" => no_args(self, &args, Step::Path),
            "values" => Ok(Step::Values(strings(self, args)?)),
            "limit" => Ok(Step::Limit(self.count_arg(start, args, "limit")?)),
            "repeat" => self.repeat(start, args),
            other => Err(self.error_at(start, format!("unknown step {other}()"))),
        }
    }

    fn has(&self, start: usize, args: Vec<Arg>) -> Result<Step, ParseError> {
        let mut args = args.into_iter();
        let (Some(key), Some(pred), None) = (args.next(), args.next(), args.next()) else {
            return Err(self.error_at(start, "has() takes a key and a value or predicate".into()));
        };
        let key = key.into_string(self)?;
        let predicate = match pred {
            Arg::Literal(v, _) => Predicate::Eq(v),
            Arg::Call(name, inner, pos) => {
                if name == "within" {
                    Predicate::Within(inner.into_iter().map(|a| a.into_value(self)).collect::<Result<_, _>>()?)
                } else {
                    let mut inner = inner.into_iter();
                    let (Some(v), None) = (inner.next(), inner.next()) else {
                        return Err(self.error_at(pos, format!("{name}() takes one value")));
                    };
                    let v = v.into_value(self)?;
                    match name.as_str() {
                        "eq" => Predicate::Eq(v),
                        "neq" => Predicate::Neq(v),
                        "gt" => Predicate::Gt(v),
                        "gte" => Predicate::Gte(v),
                        "lt" => Predicate::Lt(v),
                        "lte" => Predicate::Lte(v),
                        other => return Err(self.error_at(pos, format!("unknown predicate {other}()"))),
                    }
                }
            }
        };
        Ok(Step::Has(key, predicate))
    }

    /// `repeat(out('x'))` must be followed by `.times(n)`.
    fn repeat(&mut self, start: usize, args: Vec<Arg>) -> Result<Step, ParseError> {
        let mut inner = Vec::new();
        for arg in args {
            match arg {
                Arg::Call(name, call_args, pos) => {
                    let text = format!("{name}({})", render_args(&call_args));
                    let mut sub = Parser { src: &text, pos: 0 };
                    let step = sub.step().map_err(|e| self.error_at(pos + e.position, e.message))?;
                    inner.push(step);
                }
                other => return Err(self.error_at(other.position(), "repeat() takes steps such as out('x')".into())),
            }
        }
        if inner.is_empty() {
            return Err(self.error_at(start, "repeat() needs at least one step".into()));
        }
        let times_at = self.pos;
        if self.peek() != Some('.') {
            return Err(self.error_at(times_at, "repeat(...) must be followed by .times(n)".into()));
        }
        self.pos += 1;
        let name_at = self.pos;
        if self.ident()? != "times" {
            return Err(self.error_at(name_at, "repeat(...) must be followed by .times(n)".into()));
        }
        let times_args = self.args()?;
        let n = self.count_arg(name_at, times_args, "times")?;
        let n = u32::try_from(n).map_err(|_| self.error_at(name_at, "times(n) is too large".into()))?;
        Ok(Step::Repeat(inner, n))
    }

    fn count_arg(&self, start: usize, args: Vec<Arg>, step: &str) -> Result<u64, ParseError> {
        match args.as_slice() {
            [Arg::Literal(Value::Number(n), pos)] => {
                n.as_u64().ok_or_else(|| self.error_at(*pos, format!("{step}() takes a non-negative integer")))
            }
            _ => Err(self.error_at(start, format!("{step}() takes one non-negative integer"))),
        }
    }

    /// `( arg, arg, … )`
    fn args(&mut self) -> Result<Vec<Arg>, ParseError> {
        self.skip_ws();
        self.expect_char('(')?;
        let mut args = Vec::new();
        self.skip_ws();
        if self.peek() == Some(')') {
            self.pos += 1;
            return Ok(args);
        }
        loop {
            args.push(self.arg()?);
            self.skip_ws();
            match self.peek() {
                Some(',') => self.pos += 1,
                Some(')') => {
                    self.pos += 1;
                    return Ok(args);
                }
                _ => return Err(self.error_at(self.pos, "expected ',' or ')'".into())),
            }
        }
    }

    fn arg(&mut self) -> Result<Arg, ParseError> {
        self.skip_ws();
        let start = self.pos;
        match self.peek() {
            Some(q @ ('\'' | '"')) => self.string(q).map(|s| Arg::Literal(Value::String(s), start)),
            Some(c) if c == '-' || c.is_ascii_digit() => self.number().map(|n| Arg::Literal(n, start)),
            Some(c) if c.is_alphabetic() || c == '_' => {
                let name = self.ident()?;
                match name.as_str() {
                    "true" => Ok(Arg::Literal(Value::Bool(true), start)),
                    "false" => Ok(Arg::Literal(Value::Bool(false), start)),
                    "null" => Ok(Arg::Literal(Value::Null, start)),
                    _ => {
                        // Anonymous traversals may be written `__.out('x')`.
                        let name = if name == "__" && self.peek() == Some('.') {
                            self.pos += 1;
                            self.ident()?
                        } else {
                            name
                        };
                        Ok(Arg::Call(name, self.args()?, start))
                    }
                }
            }
            _ => Err(self.error_at(start, "expected a value".into())),
        }
    }

    fn string(&mut self, quote: char) -> Result<String, ParseError> {
        let start = self.pos;
        self.pos += 1;
        let mut out = String::new();
        let mut chars = self.src[self.pos..].char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some((_, e)) => out.push(e),
                    None => break,
                },
                c if c == quote => {
                    self.pos += i + 1;
                    return Ok(out);
                }
                c => out.push(c),
            }
        }
        Err(self.error_at(start, "unterminated string".into()))
    }

    fn number(&mut self) -> Result<Value, ParseError> {
        let start = self.pos;
        let len = self.src[start..]
            .find(|c: char| !(c.is_ascii_digit() || matches!(c, '-' | '+' | '.' | 'e' | 'E')))
            .unwrap_or(self.src.len() - start);
        self.pos += len;
        serde_json::from_str::<Value>(&self.src[start..self.pos])
            .ok()
            .filter(Value::is_number)
            .ok_or_else(|| self.error_at(start, format!("{:?} is not a number", &self.src[start..self.pos])))
    }

    fn ident(&mut self) -> Result<String, ParseError> {
        self.skip_ws();
        let start = self.pos;
        let len =
            self.src[start..].find(|c: char| !(c.is_alphanumeric() || c == '_')).unwrap_or(self.src.len() - start);
        if len == 0 {
            return Err(self.error_at(start, "expected a step name".into()));
        }
        self.pos += len;
        Ok(self.src[start..self.pos].to_string())
    }

    fn expect_word(&mut self, word: &str) -> Result<(), ParseError> {
        let start = self.pos;
        if self.ident().ok().as_deref() == Some(word) {
            Ok(())
        } else {
            Err(self.error_at(start, format!("expected {word:?}")))
        }
    }

    fn expect_char(&mut self, c: char) -> Result<(), ParseError> {
        self.skip_ws();
        if self.peek() == Some(c) {
            self.pos += c.len_utf8();
            Ok(())
        } else {
            Err(self.error_at(self.pos, format!("expected {c:?}")))
        }
    }

    fn peek(&self) -> Option<char> {
        self.src[self.pos..].chars().next()
    }

    fn skip_ws(&mut self) {
        let len = self.src[self.pos..].find(|c: char| !c.is_whitespace()).unwrap_or(self.src.len() - self.pos);
        self.pos += len;
    }

    fn error_at(&self, position: usize, message: String) -> ParseError {
        ParseError { position, message }
    }
}

/// Writes call arguments back as text, for parsing steps nested in `repeat`.
fn render_args(args: &[Arg]) -> String {
    args.iter()
        .map(|a| match a {
            Arg::Literal(v, _) => v.to_string(),
            Arg::Call(name, inner, _) => format!("{name}({})", render_args(inner)),
        })
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn test_parse_full_query() {
        let steps = parse(
            "g.V('a', \"b\").hasLabel('person').has('age', gt(30)).has('city', within('x','y')).out('knows').repeat(__.out('follows')).times(2).dedup().limit(10).values('name')",
        )
        .unwrap();
        assert_eq!(
            steps,
            vec![
                Step::V(vec!["a".into(), "b".into()]),
                Step::HasLabel(vec!["person".into()]),
                Step::Has("age".into(), Predicate::Gt(json!(30))),
                Step::Has("city".into(), Predicate::Within(vec![json!("x"), json!("y")])),
                Step::Vertices(Direction::Out, vec!["knows".into()]),
                Step::Repeat(vec![Step::Vertices(Direction::Out, vec!["follows".into()])], 2),
                Step::Dedup,
                Step::Limit(10),
                Step::Values(vec!["name".into()]),
            ]
        );
        assert_eq!(parse("g.V().hasLabel('x').count()").unwrap().last(), Some(&Step::Count));
        assert_eq!(parse("g.V('v').outE().path()").unwrap()[1], Step::Edges(Direction::Out, vec![]));
        assert_eq!(parse("g.V('v').has('ok', true)").unwrap()[1], Step::Has("ok".into(), Predicate::Eq(json!(true))));
    }

    #[test]
    fn test_errors_give_positions() {
        let err = parse("g.V('a').oot('x')").unwrap_err();
        assert_eq!((err.position, err.message.as_str()), (9, "unknown step oot()"));
        let err = parse("g.V('a').out('x'").unwrap_err();
        assert_eq!(err.position, 16);
        let err = parse("g.V('a).out()").unwrap_err();
        assert!(err.message.contains("unterminated"), "{err}");
        let err = parse("g.V('a').repeat(out('x'))").unwrap_err();
        assert!(err.message.contains("times"), "{err}");
        let err = parse("g.V('a').has('k', between(1, 2))").unwrap_err();
        assert_eq!(err.position, 18);
        assert!(parse("g.E()").is_err());
        assert!(parse("g.V() extra").is_err());
        assert!(parse("g.V().limit(-1)").is_err());
    }
}
