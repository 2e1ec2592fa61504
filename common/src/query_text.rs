//! Checks on a full-text query string that run before any parser sees it: a
//! size limit and a nesting limit, so that Tantivy's recursive query grammar
//! (and everything that walks the tree it builds) stays well within a
//! thread's stack; [`excerpt`], to quote client text in error messages
//! without echoing all of it; and [`MAX_TERM_BYTES`], the longest value the
//! index can match.
//!
//! # What nests
//!
//! Tantivy's grammar (`tantivy-query-grammar`, nom) recurses once per group —
//! `(…)` or `field:(…)` — and once per `NOT` before a leaf; nothing else
//! recurses: long flat chains (`a AND b AND …`, `+a +b …`) are parsed by loops
//! and become one flat boolean clause. Every level of that recursion starts
//! at its own `(` or `NOT`, so their total count bounds the depth whatever
//! the text means. Most queries have fewer than [`MAX_QUERY_DEPTH`] of them
//! and pass at once.
//!
//! Above that, the check follows the lenient grammar (which the shard runs
//! first, on every query) to skip `"…"`/`'…'` phrases and escaped characters,
//! and counts every `(` the strict grammar might read as a group, including
//! those inside words (`a(b` is one word to the lenient grammar but a word
//! and a group to the strict one). Where the two grammars could disagree on
//! where a phrase starts or ends — a quote inside a word, `[`/`{` ranges and
//! sets, `/` regexes, an escaped quote in a `>=` bound — skipping phrases
//! could hide real groups, so such queries fall back to the plain count.

use crate::error::{Error, Result};

/// Longest query string, in bytes.
pub const MAX_QUERY_BYTES: usize = 64 * 1024;
/// Deepest nesting of groups and `NOT`s a query may have.
pub const MAX_QUERY_DEPTH: usize = 32;
/// Longest term the index keeps, in bytes (Tantivy's `MAX_TOKEN_LEN`): a
/// longer keyword would be dropped from the index, so it could never match
/// a filter or show in a facet.
pub const MAX_TERM_BYTES: usize = 65_530;

/// Checks a query string's size and nesting; the error names the limit.
pub fn check(text: &str) -> Result<()> {
    if text.len() > MAX_QUERY_BYTES {
        return Err(invalid(format!("is {} bytes; the limit is {MAX_QUERY_BYTES}", text.len())));
    }
    let openers = count_openers(text);
    if openers <= MAX_QUERY_DEPTH {
        return Ok(());
    }
    match nesting(text) {
        Some(depth) if depth <= MAX_QUERY_DEPTH => Ok(()),
        Some(depth) => Err(invalid(format!("nests {depth} levels deep; the limit is {MAX_QUERY_DEPTH}"))),
        None => Err(invalid(format!(
            "may nest {openers} levels deep (with quotes inside words, brackets, slashes or escaped quotes \
             in ranges every parenthesis and NOT counts); the limit is {MAX_QUERY_DEPTH}"
        ))),
    }
}

/// The first `max_chars` characters of `text`; when that cuts it, `…` and
/// the full length follow, so messages quoting client input stay short.
pub fn excerpt(text: &str, max_chars: usize) -> String {
    match text.char_indices().nth(max_chars) {
        None => text.to_string(),
        Some((cut, _)) => format!("{}… ({} bytes)", &text[..cut], text.len()),
    }
}

fn invalid(reason: String) -> Error {
    Error::invalid("query", reason)
}

/// Characters a field name cannot hold unescaped (Tantivy's `SPECIAL_CHARS`).
const FIELD_SPECIAL: [char; 16] = ['+', '^', '`', ':', '{', '}', '"', '\'', '[', ']', '(', ')', '!', '\\', '*', ' '];
/// Characters after which a lone `*` is the match-all leaf (Tantivy's
/// `ESCAPE_IN_WORD` without `\`; `)` is among them).
const ENDS_STAR: [char; 11] = ['^', '`', ':', '{', '}', '"', '\'', '[', ']', '(', ')'];

/// The whitespace nom's `multispace` parsers skip (Tantivy's separators).
fn is_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n')
}

/// Every `(` and every `NOT` followed by a space: an upper bound on the
/// nesting of any reading of the text.
fn count_openers(text: &str) -> usize {
    let bytes = text.as_bytes();
    let parens = bytes.iter().filter(|&&b| b == b'(').count();
    let nots = bytes.windows(4).filter(|w| &w[..3] == b"NOT" && is_space(char::from(w[3]))).count();
    parens + nots
}

/// Where the scan is in Tantivy's lenient grammar.
#[derive(Clone, Copy)]
enum At {
    /// Start of an operand: spaces, `AND `/`OR `, a `+`/`-` sign.
    Operand,
    /// Start of a leaf: a group, `*`, `NOT`, a field name.
    Leaf,
    /// The value after an optional field name: phrase, range bound or word.
    Value,
    /// After a leaf: a boost, then a separator.
    After,
}

/// Depth bookkeeping: groups on a stack, `NOT`s pending until their leaf.
#[derive(Default)]
struct Depth {
    depth: usize,
    deepest: usize,
    /// The depth outside each open group.
    outside: Vec<usize>,
    /// `NOT`s whose leaf has not started; a group opened now nests inside them.
    pending_nots: usize,
}

impl Depth {
    fn open(&mut self) {
        self.outside.push(self.depth);
        self.depth += 1 + self.pending_nots;
        self.pending_nots = 0;
        self.deepest = self.deepest.max(self.depth);
    }

    fn close(&mut self) {
        // A `)` with no open group ends the lenient parse; counting on only overcounts.
        self.depth = self.outside.pop().unwrap_or(0);
        self.pending_nots = 0;
    }

    fn not(&mut self) {
        self.pending_nots += 1;
        self.deepest = self.deepest.max(self.depth + self.pending_nots);
    }

    fn leaf(&mut self) {
        self.pending_nots = 0;
    }
}

/// The deepest nesting of the text, or `None` when the grammars might
/// disagree on its phrases (see the module documentation).
///
/// The scan never undercounts: where a character could be read either way
/// it counts a `(` as a group and ignores a `)`. Once Tantivy would stop
/// (an unexpected `)` or `^`), scanning on can only overcount.
fn nesting(text: &str) -> Option<usize> {
    let chars: Vec<char> = text.chars().collect();
    let mut scan = Scan { chars: &chars, depth: Depth::default(), field_run: None };
    let mut i = 0;
    let mut at = At::Operand;
    while let Some(&c) = chars.get(i) {
        if matches!(c, '[' | '{' | '/') {
            return None;
        }
        match at {
            At::Operand => {
                if c.is_whitespace() {
                    i += 1;
                    continue;
                }
                if scan.starts_with(i, "AND ") || scan.starts_with(i, "OR ") {
                    i = scan.skip_spaces(i + if c == 'A' { 4 } else { 3 });
                }
                if matches!(chars.get(i), Some('+' | '-')) {
                    i += 1;
                }
                at = At::Leaf;
            }
            At::Leaf => match c {
                '(' => {
                    scan.depth.open();
                    i += 1;
                    at = At::Operand;
                }
                ')' => {
                    scan.depth.close();
                    i += 1;
                    at = At::After;
                }
                '*' if scan.star_alone(i + 1) => {
                    scan.depth.leaf();
                    i += 1;
                    at = At::After;
                }
                'N' if scan.not_keyword(i) => {
                    scan.depth.not();
                    i = scan.skip_spaces(i + 3);
                }
                _ => match scan.field_name(i) {
                    Some(end) if chars.get(end) == Some(&'(') => {
                        scan.depth.open();
                        i = end + 1;
                        at = At::Operand;
                    }
                    Some(end) if chars.get(end) == Some(&'*') && scan.star_alone(end + 1) => {
                        scan.depth.leaf();
                        i = end + 1;
                        at = At::After;
                    }
                    Some(end) => {
                        i = end;
                        at = At::Value;
                    }
                    None => at = At::Value,
                },
            },
            At::Value => match c {
                c if is_space(c) => i += 1,
                ')' => {
                    scan.depth.close();
                    i += 1;
                    at = At::After;
                }
                '"' | '\'' => {
                    scan.depth.leaf();
                    i = scan.slop_or_prefix(scan.phrase(i, c));
                    at = At::After;
                }
                '>' | '<' => {
                    scan.depth.leaf();
                    let bound = if chars.get(i + 1) == Some(&'=') { i + 2 } else { i + 1 };
                    i = scan.word(scan.skip_spaces(bound), true)?;
                    at = At::After;
                }
                // Tantivy stops here; step over it.
                c if c == '^' || c.is_whitespace() => {
                    i += 1;
                    at = At::After;
                }
                _ => {
                    scan.depth.leaf();
                    i = scan.word(i, false)?;
                    at = At::After;
                }
            },
            At::After => match c {
                '^' => i = scan.boost(i + 1),
                ')' => {
                    scan.depth.close();
                    i += 1;
                }
                c if c.is_whitespace() => {
                    i += 1;
                    at = At::Operand;
                }
                // A missing space: Tantivy notes an error and reads a new operand.
                _ => at = At::Operand,
            },
        }
    }
    Some(scan.depth.deepest)
}

/// The text being scanned and what the scan learned.
struct Scan<'a> {
    chars: &'a [char],
    depth: Depth,
    /// The last field-name candidate: (start, end of the name run, index after
    /// `:` and spaces if a colon follows). Positions inside a run share its end,
    /// so each run is scanned once (tab-separated words would otherwise make
    /// the scan quadratic).
    field_run: Option<(usize, usize, Option<usize>)>,
}

impl Scan<'_> {
    fn at(&self, i: usize) -> Option<char> {
        self.chars.get(i).copied()
    }

    fn starts_with(&self, i: usize, word: &str) -> bool {
        word.chars().enumerate().all(|(k, w)| self.at(i + k) == Some(w))
    }

    fn skip_spaces(&self, mut i: usize) -> usize {
        while self.at(i).is_some_and(is_space) {
            i += 1;
        }
        i
    }

    /// `NOT` followed by a space: a `NOT` level to the strict grammar (the
    /// lenient one wants exactly one space; counting more only overcounts).
    fn not_keyword(&self, i: usize) -> bool {
        self.starts_with(i, "NOT") && self.at(i + 3).is_some_and(is_space)
    }

    /// Whether a `*` whose next character is at `i` stands alone (match all, exists).
    fn star_alone(&self, i: usize) -> bool {
        self.at(i).is_none_or(|c| is_space(c) || ENDS_STAR.contains(&c))
    }

    /// A field name and its colon at `i` (Tantivy's `field_name`): the index
    /// after the colon and the spaces around it.
    fn field_name(&mut self, i: usize) -> Option<usize> {
        let special = |c: Option<char>| c.is_some_and(|c| FIELD_SPECIAL.contains(&c));
        match self.at(i) {
            Some('\\') if special(self.at(i + 1)) => {}
            Some(c) if !FIELD_SPECIAL.contains(&c) && c != '-' => {}
            _ => return None,
        }
        if let Some((start, end, colon)) = self.field_run {
            if start <= i && i < end {
                return colon;
            }
        }
        let mut end = i;
        loop {
            match self.at(end) {
                Some('\\') if special(self.at(end + 1)) => end += 2,
                Some('\\') => end += 1,
                Some(c) if !FIELD_SPECIAL.contains(&c) => end += 1,
                _ => break,
            }
        }
        let after = self.skip_spaces(end);
        let colon = (self.at(after) == Some(':')).then(|| self.skip_spaces(after + 1));
        self.field_run = Some((i, end, colon));
        colon
    }

    /// A phrase opened by `quote` at `i`; returns the index after it (or the
    /// end of the text: an unclosed phrase runs to the end in Tantivy too).
    fn phrase(&self, mut i: usize, quote: char) -> usize {
        i += 1;
        while let Some(c) = self.at(i) {
            match c {
                '\\' => i += 2,
                c if c == quote => return i + 1,
                _ => i += 1,
            }
        }
        self.chars.len()
    }

    /// A phrase's `*` (prefix) or `~N` (slop), as the lenient grammar reads them.
    fn slop_or_prefix(&self, i: usize) -> usize {
        match self.at(i) {
            Some('*') => i + 1,
            Some('~') => {
                let digits = self.chars[i + 1..].iter().take_while(|c| c.is_ascii_digit()).count();
                // nom's `u32` fails past u32::MAX and then consumes nothing.
                let text: String = self.chars[i + 1..i + 1 + digits].iter().collect();
                match text.parse::<u32>() {
                    Ok(_) => i + 1 + digits,
                    Err(_) => i,
                }
            }
            _ => i,
        }
    }

    /// A boost's number after `^`.
    fn boost(&self, mut i: usize) -> usize {
        let digits = |mut i: usize| {
            while self.at(i).is_some_and(|c| c.is_ascii_digit()) {
                i += 1;
            }
            i
        };
        i = digits(i);
        if self.at(i) == Some('.') && self.at(i + 1).is_some_and(|c| c.is_ascii_digit()) {
            i = digits(i + 1);
        }
        i
    }

    /// A word of the lenient grammar from `i` (a range bound when `bound`:
    /// it may hold `^`); returns the index after it, or `None` when the strict
    /// grammar might start a phrase inside it.
    ///
    /// The strict grammar ends words at `(` and may read a group there, so
    /// such a `(` counts; after one (and throughout a range bound, where the
    /// strict grammar reads `\` as a plain character) escapes may not hold,
    /// so an escaped `(` counts too.
    fn word(&mut self, mut i: usize, bound: bool) -> Option<usize> {
        let mut split = false;
        while let Some(c) = self.at(i) {
            match c {
                '\\' => {
                    let escaped = self.at(i + 1);
                    if bound || split {
                        match escaped {
                            Some('(') => {
                                self.depth.open();
                                split = true;
                            }
                            Some('"' | '\'') => return None,
                            _ => {}
                        }
                    }
                    i += if escaped.is_some() { 2 } else { 1 };
                }
                '[' | '{' | '/' | '"' => return None,
                '\'' if !bound || split => return None,
                '(' => {
                    self.depth.open();
                    split = true;
                    i += 1;
                    // The strict grammar reads a group here, which may open with a sign and NOT.
                    let sign = usize::from(matches!(self.at(i), Some('+' | '-')));
                    if self.not_keyword(i + sign) {
                        self.depth.not();
                    }
                }
                ')' => break,
                '^' if !bound => break,
                c if c.is_whitespace() => break,
                _ => i += 1,
            }
        }
        Some(i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn depth_of(text: &str) -> Option<usize> {
        nesting(text)
    }

    fn nested(open: &str, levels: usize, inner: &str) -> String {
        format!("{}{inner}{}", open.repeat(levels), ")".repeat(levels))
    }

    #[test]
    fn test_depth_counts_groups_field_groups_and_nots() {
        assert_eq!(depth_of("a b c"), Some(0));
        assert_eq!(depth_of("(a)"), Some(1));
        assert_eq!(depth_of("((a) (b)) (c)"), Some(2));
        assert_eq!(depth_of(&nested("(", 40, "x")), Some(40));
        assert_eq!(depth_of(&nested("body:(", 40, "x")), Some(40));
        assert_eq!(depth_of(&nested("(hello AND ", 40, "x")), Some(40));
        assert_eq!(depth_of("NOT NOT NOT x"), Some(3));
        assert_eq!(depth_of("NOT (NOT (x))"), Some(4));
        assert_eq!(depth_of("NOT x NOT y"), Some(1));
        // A word holding a `(` may be a group to the strict grammar.
        assert_eq!(depth_of("x a(b(c"), Some(2));
        assert_eq!(depth_of("x a(NOT b"), Some(2));
    }

    #[test]
    fn test_phrases_and_escapes_do_not_count() {
        let deep_phrase = format!("\"{}\" x", "(".repeat(100));
        assert_eq!(depth_of(&deep_phrase), Some(0));
        check(&deep_phrase).unwrap();
        let quoted = format!("'{}' x", "(".repeat(100));
        check(&quoted).unwrap();
        let escaped = format!("{} x", "\\(".repeat(100));
        assert_eq!(depth_of(&escaped), Some(0));
        check(&escaped).unwrap();
        // Parentheses closed inside a phrase do not close groups.
        let hidden = format!("{} \"{}\" {}", "(".repeat(20), ")".repeat(20), nested("(", 20, "x"));
        assert_eq!(depth_of(&hidden), Some(40));
    }

    #[test]
    fn test_ambiguous_quotes_fall_back_to_counting_everything() {
        // A quote inside a word opens a phrase to the strict grammar only.
        let text = format!("a\"b \"{}\" ", "(".repeat(40));
        assert_eq!(depth_of(&text), None);
        assert!(check(&text).is_err());
        // An escaped quote in a range bound is a plain quote to the strict grammar.
        let text = format!("x >=a\\\" \"{}\" ", "(".repeat(40));
        assert_eq!(depth_of(&text), None);
        // A sign after a field name is part of the word, not an operator.
        let text = format!("f:+\"x {} \"", "(".repeat(40));
        assert_eq!(depth_of(&text), None);
        for text in [format!("/a/ {}", "(".repeat(40)), format!("[a TO b] {}", "(".repeat(40))] {
            let err = check(&text).unwrap_err().to_string();
            assert!(err.contains("may nest 40 levels") && err.contains("the limit is 32"), "{err}");
        }
    }

    #[test]
    fn test_check_names_the_limits() {
        check("").unwrap();
        check(&nested("(", MAX_QUERY_DEPTH, "x")).unwrap();
        check(&"(a) ".repeat(200)).unwrap();
        let err = check(&nested("(", MAX_QUERY_DEPTH + 1, "x")).unwrap_err().to_string();
        assert_eq!(err, "query: nests 33 levels deep; the limit is 32");
        let err = check(&nested("(", 850, "x")).unwrap_err().to_string();
        assert_eq!(err, "query: nests 850 levels deep; the limit is 32");
        let err = check(&format!("{}x", "NOT ".repeat(40))).unwrap_err().to_string();
        assert!(err.contains("nests 40 levels"), "{err}");
        let long = "a".repeat(MAX_QUERY_BYTES + 1);
        let err = check(&long).unwrap_err().to_string();
        assert_eq!(err, format!("query: is {} bytes; the limit is {MAX_QUERY_BYTES}", MAX_QUERY_BYTES + 1));
        check(&"a".repeat(MAX_QUERY_BYTES)).unwrap();
    }

    #[test]
    fn test_tab_separated_words_scan_in_linear_time() {
        let text = format!("{}{}", "(".repeat(40), "a\t".repeat(20_000));
        let started = std::time::Instant::now();
        assert!(check(&text).is_err());
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
    }

    #[test]
    fn test_excerpt_cuts_on_char_boundaries() {
        assert_eq!(excerpt("short", 10), "short");
        assert_eq!(excerpt("exact", 5), "exact");
        assert_eq!(excerpt("abcdef", 3), "abc… (6 bytes)");
        assert_eq!(excerpt("ééééé", 2), "éé… (10 bytes)");
        assert_eq!(excerpt("", 0), "");
        assert_eq!(excerpt("x", 0), "… (1 bytes)");
    }

    /// Fragments that steer the scanner through every state.
    const FRAGMENTS: &[&str] = &[
        "(", "(", "(", ")", ")", "\"", "'", "\\", " ", " ", "a", "b:", "NOT ", "AND ", "OR ", "+", "-", ">=", "<", "*",
        "^2", "~1", ":", "\t", "é", "\u{3000}", "]", "}", "`", "x(", "NOT", "^", "~", "[", "/",
    ];

    proptest! {
        #[test]
        fn test_check_never_panics(text in ".{0,300}") {
            let _ = check(&text);
            let _ = excerpt(&text, 16);
        }

        #[test]
        fn test_fragments_never_panic_and_never_exceed_the_plain_count(
            parts in prop::collection::vec(prop::sample::select(FRAGMENTS), 0..200)
        ) {
            let text: String = parts.concat();
            let _ = check(&text);
            if let Some(depth) = nesting(&text) {
                prop_assert!(depth <= count_openers(&text), "{text:?}");
            }
        }

        #[test]
        fn test_excerpt_is_a_prefix_and_bounded(text in ".{0,64}", max in 0usize..80) {
            let cut = excerpt(&text, max);
            if text.chars().count() <= max {
                prop_assert_eq!(cut, text);
            } else {
                let kept: String = text.chars().take(max).collect();
                prop_assert!(cut.starts_with(&kept));
                let tail = format!("… ({} bytes)", text.len());
                prop_assert!(cut.ends_with(&tail));
            }
        }
    }
}
