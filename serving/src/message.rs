//! Bounded error messages. A status message travels as the `grpc-message`
//! header or trailer; one that echoes a large request can exceed a peer's
//! HTTP/2 header limit, which breaks the stream as if the server had failed
//! (and counts against that server in circuit breakers). Every response a
//! server sends passes through [`bound_headers`].

use http::{HeaderMap, HeaderValue};
use percent_encoding::{percent_decode, utf8_percent_encode, AsciiSet, CONTROLS};

/// Longest `grpc-message` a server sends, in bytes as encoded on the wire.
pub const MAX_MESSAGE_BYTES: usize = 1024;

/// The characters tonic percent-encodes in `grpc-message` (its `ENCODING_SET`).
const ENCODING_SET: &AsciiSet =
    &CONTROLS.add(b' ').add(b'"').add(b'#').add(b'%').add(b'<').add(b'>').add(b'`').add(b'?').add(b'{').add(b'}');

/// Marks a cut message.
const CUT_MARK: &str = "… (message cut)";

/// Cuts an encoded `grpc-message` value to at most `max` encoded bytes, on a
/// character boundary (a peer that decodes invalid UTF-8 reports `UNKNOWN`
/// instead of the code), and marks the cut. `None` when it already fits.
pub fn bound_encoded(value: &[u8], max: usize) -> Option<String> {
    if value.len() <= max {
        return None;
    }
    let text = percent_decode(value).decode_utf8_lossy();
    let budget = max.saturating_sub(encoded_len(CUT_MARK));
    let mut out = String::new();
    let mut used = 0;
    for c in text.chars() {
        let mut buf = [0u8; 4];
        let len = encoded_len(c.encode_utf8(&mut buf));
        if used + len > budget {
            break;
        }
        used += len;
        out.push(c);
    }
    out.push_str(CUT_MARK);
    Some(utf8_percent_encode(&out, ENCODING_SET).to_string())
}

fn encoded_len(text: &str) -> usize {
    utf8_percent_encode(text, ENCODING_SET).map(str::len).sum()
}

/// Bounds the `grpc-message` entry of `headers` (response headers of a
/// trailers-only answer, or trailers).
pub fn bound_headers(headers: &mut HeaderMap) {
    let Some(value) = headers.get("grpc-message") else { return };
    if let Some(cut) = bound_encoded(value.as_bytes(), MAX_MESSAGE_BYTES) {
        if let Ok(value) = HeaderValue::from_str(&cut) {
            headers.insert("grpc-message", value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn encode(text: &str) -> String {
        utf8_percent_encode(text, ENCODING_SET).to_string()
    }

    #[test]
    fn test_long_messages_are_cut_and_marked() {
        let long = encode(&format!("query: syntax error in {}", "(".repeat(20_000)));
        let cut = bound_encoded(long.as_bytes(), 1024).unwrap();
        assert!(cut.len() <= 1024, "{}", cut.len());
        let text = percent_decode(cut.as_bytes()).decode_utf8().unwrap();
        assert!(text.starts_with("query: syntax error in (("), "{text}");
        assert!(text.ends_with(CUT_MARK), "{text}");
        assert_eq!(bound_encoded(b"short", 1024), None);
    }

    #[test]
    fn test_headers_keep_short_messages_and_cut_long_ones() {
        let mut headers = HeaderMap::new();
        headers.insert("grpc-message", HeaderValue::from_static("query: bad"));
        bound_headers(&mut headers);
        assert_eq!(headers["grpc-message"], "query: bad");
        headers.insert("grpc-message", HeaderValue::from_str(&"%28".repeat(10_000)).unwrap());
        bound_headers(&mut headers);
        assert!(headers["grpc-message"].len() <= MAX_MESSAGE_BYTES);
    }

    proptest! {
        /// Whatever the message, the cut one fits and still decodes as UTF-8
        /// (so the peer keeps the status code).
        #[test]
        fn test_cut_messages_fit_and_decode(text in "\\PC{0,2000}", max in 32usize..2048) {
            let encoded = encode(&text);
            match bound_encoded(encoded.as_bytes(), max) {
                None => prop_assert!(encoded.len() <= max),
                Some(cut) => {
                    prop_assert!(cut.len() <= max);
                    prop_assert!(percent_decode(cut.as_bytes()).decode_utf8().is_ok());
                    prop_assert!(HeaderValue::from_str(&cut).is_ok());
                }
            }
        }
    }
}
