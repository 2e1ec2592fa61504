//! The Gremlin-style query parser (`GraphService.Query`): never panics, never
//! recurses past its nesting limit (it runs on a small stack), and its errors
//! quote at most an excerpt of the query.
#![no_main]

use libfuzzer_sys::fuzz_target;
use omnishard_fuzz::{on_small_stack, text};
use omnishard_gateway::graph::gremlin::{self, Step, MAX_NESTING};

/// Longest error message accepted: a position, a fixed reason and short
/// excerpts, never the query itself (which may be 64 KiB).
const MAX_MESSAGE_BYTES: usize = 1024;

/// Nesting of `repeat(…)` steps in a parsed query.
fn depth(steps: &[Step]) -> usize {
    steps
        .iter()
        .map(|step| match step {
            Step::Repeat(inner, _) => 1 + depth(inner),
            _ => 0,
        })
        .max()
        .unwrap_or(0)
}

fuzz_target!(init: omnishard_fuzz::init(), |data: &[u8]| {
    let Some(query) = text(data) else { return };
    let query = query.to_owned();
    on_small_stack(move || match gremlin::parse(&query) {
        Ok(steps) => {
            assert!(!steps.is_empty(), "a parsed query has at least g.V()");
            let depth = depth(&steps);
            assert!(depth <= MAX_NESTING + 1, "parsed {depth} nested repeat() levels");
            // Walks the whole tree, as the query runner does.
            let _ = format!("{steps:?}");
        }
        Err(err) => {
            let message = err.to_string();
            assert!(message.len() <= MAX_MESSAGE_BYTES, "error of {} bytes: {message:.200}", message.len());
            assert!(err.position <= query.len(), "error position {} past the end", err.position);
        }
    });
});
