//! Full-text query strings (`SearchRequest.query`), as the gateway and the
//! shards handle them: first `omnishard_common::query_text::check` (size and
//! nesting); only text it accepts reaches Tantivy's recursive grammar, both
//! the lenient parse the shard runs first and the strict one of its query
//! parser. Those run on a small stack, and the trees they build must be no
//! deeper than the check allows (the bound the shard's own tests use).
#![no_main]

use libfuzzer_sys::fuzz_target;
use omnishard_common::query_text::{self, MAX_QUERY_DEPTH};
use omnishard_fuzz::{on_small_stack, text};
use tantivy_query_grammar::{parse_query, parse_query_lenient, UserInputAst};

/// Deepest tree an accepted query may build: each group or `NOT` level may
/// add a clause, a boost and a unary clause.
const MAX_AST_DEPTH: usize = 3 * (MAX_QUERY_DEPTH + 1);

fn ast_depth(ast: &UserInputAst) -> usize {
    match ast {
        UserInputAst::Clause(clauses) => 1 + clauses.iter().map(|(_, c)| ast_depth(c)).max().unwrap_or(0),
        UserInputAst::Boost(inner, _) => 1 + ast_depth(inner),
        UserInputAst::Leaf(_) => 0,
    }
}

fuzz_target!(init: omnishard_fuzz::init(), |data: &[u8]| {
    let Some(query) = text(data) else { return };
    let _ = query_text::excerpt(query, 16);
    if query_text::check(query).is_err() {
        return;
    }
    let query = query.to_owned();
    on_small_stack(move || {
        let (lenient, errors) = parse_query_lenient(&query);
        let depth = ast_depth(&lenient);
        assert!(depth <= MAX_AST_DEPTH, "the check accepted a query whose lenient tree nests {depth} levels");
        // Walks the tree (as the shard's query builder does) and bounds the messages it would quote.
        let _ = format!("{lenient:?}");
        for error in &errors {
            let _ = query_text::excerpt(&error.message, 120);
        }
        if let Ok(strict) = parse_query(&query) {
            let depth = ast_depth(&strict);
            assert!(depth <= MAX_AST_DEPTH, "the check accepted a query whose strict tree nests {depth} levels");
            let _ = format!("{strict:?}");
        }
    });
});
