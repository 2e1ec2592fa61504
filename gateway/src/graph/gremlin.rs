//! A Gremlin-style text query, parsed into steps for the traversal engine.
//!
//! Supported: `g.V(ids…)`, `g.V()`, `hasLabel(l…)`, `has(k, v)` and
//! `has(k, eq|neq|gt|gte|lt|lte(v))`, `has(k, within(v…))`,
//! `out/in/both(labels…)`, `outE/inE/bothE(labels…)`, `repeat(out(…)).times(n)`,
//! `dedup()`, `limit(n)`, `count()`, `values(k…)`, `path()`.
//! Strings take single or double quotes; numbers, `true`, `false` and
//! `null` are JSON values. Errors give the byte position and a short excerpt
//! of the text there, never the whole query.
//!
//! The text comes from clients, so every size is bounded before work is
//! done on it: the length first ([`MAX_QUERY_BYTES`]), then the nesting of
//! calls inside arguments ([`MAX_NESTING`], checked before descending, so the
//! recursion depth is bounded by the limit and not by the input), the number
//! of steps ([`MAX_STEPS`]) and the arguments of one call ([`MAX_ARGS`]).

use serde_json::Value;

use super::excerpt;
pub use omnishard_common::predicate::Predicate;

/// Longest query text, in bytes.
pub const MAX_QUERY_BYTES: usize = 64 * 1024;
/// Deepest nesting of calls inside arguments: `has('k', eq(1))` nests 1 deep.
pub const MAX_NESTING: usize = 32;
/// Most steps in one query, those inside `repeat(...)` included.
pub const MAX_STEPS: usize = 1_000;
/// Most arguments of one call.
pub const MAX_ARGS: usize = 1_000;
/// Characters of client text quoted in an error message.
const EXCERPT_CHARS: usize = 24;

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

impl Step {
    /// The step as written, for messages.
    pub fn name(&self) -> &'static str {
        match self {
            Step::V(_) => "g.V()",
            Step::HasLabel(_) => "hasLabel()",
            Step::Has(..) => "has()",
            Step::Vertices(Direction::Out, _) => "out()",
            Step::Vertices(Direction::In, _) => "in()",
            Step::Vertices(Direction::Both, _) => "both()",
            Step::Edges(Direction::Out, _) => "outE()",
            Step::Edges(Direction::In, _) => "inE()",
            Step::Edges(Direction::Both, _) => "bothE()",
            Step::Repeat(..) => "repeat()",
            Step::Dedup => "dedup()",
            Step::Limit(_) => "limit()",
            Step::Count => "count()",
            Step::Values(_) => "values()",
            Step::Path => "path()",
        }
    }
}

/// A syntax error or an exceeded limit, with the byte offset it was found at
/// and a short excerpt of the text there (`None` for the length limit, which
/// is about the whole query).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}{}", at(.position, .near))]
pub struct ParseError {
    pub position: usize,
    pub message: String,
    pub near: Option<String>,
}

fn at(position: &usize, near: &Option<String>) -> String {
    match near {
        None => String::new(),
        Some(near) if near.is_empty() => format!(" at position {position} (the end of the query)"),
        Some(near) => format!(" at position {position} near {near:?}"),
    }
}

/// Parses a whole query such as `g.V('a').out('knows').count()`.
pub fn parse(query: &str) -> Result<Vec<Step>, ParseError> {
    // First, before any other work: everything below is linear in the length.
    if query.len() > MAX_QUERY_BYTES {
        return Err(ParseError {
            position: 0,
            message: format!("is {} bytes; the limit is {MAX_QUERY_BYTES}", query.len()),
            near: None,
        });
    }
    let mut p = Parser { src: query, pos: 0, depth: 0, steps: 0 };
    p.skip_ws();
    p.expect_word("g")?;
    p.expect_char('.')?;
    let start = p.pos;
    let name = p.ident()?;
    if name != "V" {
        return Err(p.error_at(start, format!("a query starts with g.V(...), not g.{}", excerpt(&name, EXCERPT_CHARS))));
    }
    let args = p.args()?;
    p.count_step(start)?;
    let mut steps = vec![Step::V(p.strings(args)?)];
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
}

struct Parser<'a> {
    src: &'a str,
    pos: usize,
    /// Calls open around the current argument.
    depth: usize,
    /// Steps parsed so far.
    steps: usize,
}

impl Parser<'_> {
    fn step(&mut self) -> Result<Step, ParseError> {
        let start = self.pos;
        let name = self.ident()?;
        let args = self.args()?;
        self.build(&name, args, start, false)
    }

    /// The step `name(args)` written at `start`; `in_repeat` for the steps of `repeat(...)`.
    fn build(&mut self, name: &str, args: Vec<Arg>, start: usize, in_repeat: bool) -> Result<Step, ParseError> {
        self.count_step(start)?;
        let no_args = |p: &Parser, args: &[Arg], step: Step| match args.first() {
            None => Ok(step),
            Some(first) => Err(p.error_at(first.position(), format!("{name}() takes no arguments"))),
        };
        match name {
            "hasLabel" => Ok(Step::HasLabel(self.strings(args)?)),
            "has" => self.has(start, args),
            "out" => Ok(Step::Vertices(Direction::Out, self.strings(args)?)),
            "in" => Ok(Step::Vertices(Direction::In, self.strings(args)?)),
            "both" => Ok(Step::Vertices(Direction::Both, self.strings(args)?)),
            "outE" => Ok(Step::Edges(Direction::Out, self.strings(args)?)),
            "inE" => Ok(Step::Edges(Direction::In, self.strings(args)?)),
            "bothE" => Ok(Step::Edges(Direction::Both, self.strings(args)?)),
            "dedup" => no_args(self, &args, Step::Dedup),
            "count" => no_args(self, &args, Step::Count),
            "path" => no_args(self, &args, Step::Path),
            "values" => Ok(Step::Values(self.strings(args)?)),
            "limit" => Ok(Step::Limit(self.count_arg(start, args, "limit")?)),
            "repeat" if in_repeat => Err(self.error_at(start, "repeat() cannot be nested in repeat()".into())),
            "repeat" => self.repeat(start, args),
            other => Err(self.error_at(start, format!("unknown step {}()", excerpt(other, EXCERPT_CHARS)))),
        }
    }

    fn count_step(&mut self, start: usize) -> Result<(), ParseError> {
        self.steps += 1;
        if self.steps > MAX_STEPS {
            return Err(self.error_at(start, format!("has more than {MAX_STEPS} steps; the limit is {MAX_STEPS}")));
        }
        Ok(())
    }

    fn has(&self, start: usize, args: Vec<Arg>) -> Result<Step, ParseError> {
        let mut args = args.into_iter();
        let (Some(key), Some(pred), None) = (args.next(), args.next(), args.next()) else {
            return Err(self.error_at(start, "has() takes a key and a value or predicate".into()));
        };
        let key = self.string_of(key)?;
        let predicate = match pred {
            Arg::Literal(v, _) => Predicate::Eq(v),
            Arg::Call(name, inner, pos) => {
                if name == "within" {
                    Predicate::Within(inner.into_iter().map(|a| self.value_of(a)).collect::<Result<_, _>>()?)
                } else {
                    let mut inner = inner.into_iter();
                    let (Some(v), None) = (inner.next(), inner.next()) else {
                        return Err(self.error_at(pos, format!("{}() takes one value", excerpt(&name, EXCERPT_CHARS))));
                    };
                    let v = self.value_of(v)?;
                    match name.as_str() {
                        "eq" => Predicate::Eq(v),
                        "neq" => Predicate::Neq(v),
                        "gt" => Predicate::Gt(v),
                        "gte" => Predicate::Gte(v),
                        "lt" => Predicate::Lt(v),
                        "lte" => Predicate::Lte(v),
                        other => {
                            return Err(
                                self.error_at(pos, format!("unknown predicate {}()", excerpt(other, EXCERPT_CHARS)))
                            )
                        }
                    }
                }
            }
        };
        Ok(Step::Has(key, predicate))
    }

    /// `repeat(out('x'))` must be followed by `.times(n)`. Its steps are
    /// built straight from the parsed calls (no text is written back and
    /// parsed again), so they obey the same limits as the rest.
    fn repeat(&mut self, start: usize, args: Vec<Arg>) -> Result<Step, ParseError> {
        let mut inner = Vec::new();
        for arg in args {
            match arg {
                Arg::Call(name, call_args, pos) => inner.push(self.build(&name, call_args, pos, true)?),
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
        let n = u32::try_from(n)
            .map_err(|_| self.error_at(name_at, format!("times() is {n}; the limit is {}", u32::MAX)))?;
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

    fn strings(&self, args: Vec<Arg>) -> Result<Vec<String>, ParseError> {
        args.into_iter().map(|a| self.string_of(a)).collect()
    }

    fn string_of(&self, arg: Arg) -> Result<String, ParseError> {
        match arg {
            Arg::Literal(Value::String(s), _) => Ok(s),
            Arg::Literal(Value::Number(n), _) => Ok(n.to_string()),
            other => Err(self.error_at(other.position(), "expected a string".into())),
        }
    }

    fn value_of(&self, arg: Arg) -> Result<Value, ParseError> {
        match arg {
            Arg::Literal(v, _) => Ok(v),
            Arg::Call(name, _, pos) => {
                Err(self.error_at(pos, format!("expected a value, found {}(...)", excerpt(&name, EXCERPT_CHARS))))
            }
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
            if args.len() == MAX_ARGS {
                return Err(self.error_at(
                    self.pos,
                    format!("a call has more than {MAX_ARGS} arguments; the limit is {MAX_ARGS}"),
                ));
            }
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
                        // Checked before descending: the client must not choose how deep we recurse.
                        if self.depth >= MAX_NESTING {
                            return Err(self.error_at(
                                start,
                                format!("calls nest more than {MAX_NESTING} deep; the limit is {MAX_NESTING}"),
                            ));
                        }
                        self.depth += 1;
                        let args = self.args();
                        self.depth -= 1;
                        Ok(Arg::Call(name, args?, start))
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
            .ok_or_else(|| self.error_at(start, "expected a number".into()))
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
        let near = excerpt(self.src.get(position..).unwrap_or_default(), EXCERPT_CHARS);
        ParseError { position, message, near: Some(near) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    /// Runs `parse` on a thread with a small stack: a recursion whose depth
    /// the input chooses would overflow it (and abort the test binary).
    fn parse_on_small_stack(query: String) -> Result<Vec<Step>, ParseError> {
        std::thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(move || parse(&query))
            .expect("spawn a parser thread")
            .join()
            .expect("the parser does not panic")
    }

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
    fn test_repeat_steps_keep_their_arguments_exactly() {
        // Built from the parsed calls, not from text written back: quotes and escapes survive.
        let steps = parse(r#"g.V('a').repeat(has('k', eq('it\'s')), out("x,y")).times(3)"#).unwrap();
        assert_eq!(
            steps[1],
            Step::Repeat(
                vec![
                    Step::Has("k".into(), Predicate::Eq(json!("it's"))),
                    Step::Vertices(Direction::Out, vec!["x,y".into()]),
                ],
                3
            )
        );
        let err = parse("g.V('a').repeat(repeat(out())).times(2)").unwrap_err();
        assert!(err.message.contains("nested"), "{err}");
        let err = parse("g.V('a').repeat(out('x'), oot()).times(2)").unwrap_err();
        assert_eq!((err.position, err.message.as_str()), (26, "unknown step oot()"));
    }

    #[test]
    fn test_errors_give_positions() {
        let err = parse("g.V('a').oot('x')").unwrap_err();
        assert_eq!((err.position, err.message.as_str()), (9, "unknown step oot()"));
        assert_eq!(err.to_string(), "unknown step oot() at position 9 near \"oot('x')\"");
        let err = parse("g.V('a').out('x'").unwrap_err();
        assert_eq!(err.position, 16);
        assert!(err.to_string().ends_with("(the end of the query)"), "{err}");
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

    #[test]
    fn test_length_is_checked_first() {
        let at_limit = format!("g.V('{}')", "a".repeat(MAX_QUERY_BYTES - 7));
        assert_eq!(at_limit.len(), MAX_QUERY_BYTES);
        assert!(parse(&at_limit).is_ok());
        // Over the limit by one byte: refused by length whatever follows, even unbalanced nesting.
        let over = format!("{at_limit} ");
        let err = parse(&over).unwrap_err();
        assert_eq!(err.to_string(), format!("is {} bytes; the limit is {MAX_QUERY_BYTES}", MAX_QUERY_BYTES + 1));
        let err = parse(&"(".repeat(1 << 20)).unwrap_err();
        assert!(err.message.contains("the limit is 65536"), "{err}");
    }

    #[test]
    fn test_nesting_is_limited_before_recursing() {
        let nested = |depth: usize, inner: &str| {
            format!("g.V('a').has('k', {}{inner}{})", "eq(".repeat(depth), ")".repeat(depth))
        };
        assert!(parse(&nested(1, "1")).is_ok());
        // 32 nested calls parse (and fail later, as values); 33 are refused by the limit.
        let err = parse(&nested(MAX_NESTING, "1")).unwrap_err();
        assert!(!err.message.contains("nest"), "{err}");
        let err = parse(&nested(MAX_NESTING + 1, "1")).unwrap_err();
        assert_eq!(err.message, "calls nest more than 32 deep; the limit is 32");
        assert_eq!(err.position, 18 + 3 * MAX_NESTING);
        // The probes that crashed the gateway: 7,000 levels, on a small stack.
        for query in [
            format!("g.V('a').out({}{})", "x(".repeat(7_000), ")".repeat(7_000)),
            nested(7_000, "1"),
            format!("g.V('a').repeat({}", "out(".repeat(7_000)),
        ] {
            let err = parse_on_small_stack(query).unwrap_err();
            assert!(err.message.contains("the limit is 32"), "{err}");
            assert!(err.to_string().len() < 200, "{err}");
        }
    }

    #[test]
    fn test_steps_and_arguments_are_counted() {
        let steps = |n: usize| format!("g.V('a'){}", ".dedup()".repeat(n));
        assert!(parse(&steps(MAX_STEPS - 1)).is_ok());
        let err = parse(&steps(MAX_STEPS)).unwrap_err();
        assert_eq!(err.message, "has more than 1000 steps; the limit is 1000");
        let inside_repeat = format!("g.V('a').repeat({}).times(1)", vec!["out()"; MAX_STEPS].join(","));
        assert!(parse(&inside_repeat).unwrap_err().message.contains("1000 steps"));
        let args = |n: usize| format!("g.V({})", vec!["'a'"; n].join(","));
        assert_eq!(parse(&args(MAX_ARGS)).unwrap()[0], Step::V(vec!["a".into(); MAX_ARGS]));
        let err = parse(&args(MAX_ARGS + 1)).unwrap_err();
        assert_eq!(err.message, "a call has more than 1000 arguments; the limit is 1000");
    }

    #[test]
    fn test_messages_quote_only_an_excerpt() {
        let long = "x".repeat(50_000);
        for query in [
            format!("g.V('a').{long}()"),
            format!("g.{long}()"),
            format!("g.V('a').has('k', {long}(1))"),
            format!("g.V('a').has('k', eq({long}()))"),
            format!("g.V('a').limit(1{})", "0".repeat(50_000)),
            format!("g.V('{long}'"),
            format!("g.V('a').out('{long}') {long}"),
        ] {
            let err = parse(&query).unwrap_err();
            assert!(err.to_string().len() < 200, "{} bytes: {}", err.to_string().len(), excerpt(&err.to_string(), 80));
        }
        let err = parse(&format!("g.V('a').{long}()")).unwrap_err();
        assert_eq!(err.message, format!("unknown step {}… (50000 bytes)()", "x".repeat(24)));
    }

    /// Calls nested `depth` deep with arbitrary names and arguments.
    fn nested_calls() -> impl Strategy<Value = String> {
        (0usize..200, "[a-z_]{0,6}", "('x'|1|-2.5e3|true|null|\"q\"|)", 0usize..3).prop_map(
            |(depth, name, leaf, close_missing)| {
                let mut s = String::from("g.V('a').");
                for _ in 0..depth {
                    s.push_str(&name);
                    s.push('(');
                }
                s.push_str(&leaf);
                s.push_str(&")".repeat(depth.saturating_sub(close_missing)));
                s
            },
        )
    }

    proptest! {
        #[test]
        fn test_arbitrary_text_never_panics(query in "\\PC{0,300}") {
            let _ = parse_on_small_stack(query);
        }

        #[test]
        fn test_arbitrary_query_like_text_never_panics(
            query in "g\\.V\\(('[a-z]{0,3}'|,|\\s)*\\)(\\.(out|in|both|outE|has|hasLabel|eq|within|repeat|times|limit|values|count|path|dedup|__|x)?(\\(|\\)|,|'k'|\"v\"|1|-|\\.|e|\\s){0,12}){0,12}"
        ) {
            let _ = parse_on_small_stack(query);
        }

        #[test]
        fn test_nested_calls_never_recurse_past_the_limit(query in nested_calls()) {
            let result = parse_on_small_stack(query.clone());
            let depth = query.matches('(').count().saturating_sub(1);
            if let Err(err) = result {
                prop_assert!(err.to_string().len() < 200, "{}", err);
            } else {
                prop_assert!(depth <= MAX_NESTING + 1, "parsed {} levels", depth);
            }
        }
    }
}
