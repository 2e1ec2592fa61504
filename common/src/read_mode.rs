//! How a read may be served, as request headers: linearizable by the leader
//! (the default), or by any replica that applied a given sequence (a
//! follower read, for read replicas and read-your-writes).
//!
//! The same two headers travel client → gateway → shard, so a client can
//! ask the gateway for a follower read and the gateway forwards the request.

use tonic::metadata::MetadataMap;

use crate::error::Error;

/// Request header asking for a follower read (`follower`; `leader` is the default).
pub const READ_HEADER: &str = "x-omnishard-read";
/// Request header: the shard sequence a follower read must have applied.
pub const MIN_SEQ_HEADER: &str = "x-omnishard-min-seq";

/// The consistency a read asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReadMode {
    /// Served by the leader after a quorum round.
    #[default]
    Linearizable,
    /// Served by any replica once it applied `min_seq` (0: whatever it has).
    Follower { min_seq: u64 },
}

impl ReadMode {
    /// The mode `headers` ask for; a bad header is an invalid-argument error
    /// naming it.
    pub fn from_headers(headers: &http::HeaderMap) -> Result<ReadMode, Error> {
        ReadMode::parse(|name| headers.get(name).map(|v| v.to_str().unwrap_or("\u{fffd}")))
    }

    /// The mode of a gRPC request's metadata.
    pub fn from_metadata(metadata: &MetadataMap) -> Result<ReadMode, Error> {
        ReadMode::parse(|name| metadata.get(name).map(|v| v.to_str().unwrap_or("\u{fffd}")))
    }

    /// Parses the headers `header` looks up (text; non-text reads as U+FFFD).
    fn parse<'a>(header: impl Fn(&str) -> Option<&'a str>) -> Result<ReadMode, Error> {
        match header(READ_HEADER) {
            None | Some("leader") => Ok(ReadMode::Linearizable),
            Some("follower") => {
                let min_seq = match header(MIN_SEQ_HEADER) {
                    None => 0,
                    Some(raw) => raw.parse().map_err(|_| {
                        Error::invalid(MIN_SEQ_HEADER, format!("is {raw:?}; expected a sequence number (u64)"))
                    })?,
                };
                Ok(ReadMode::Follower { min_seq })
            }
            Some(other) => Err(Error::invalid(READ_HEADER, format!("is {other:?}; use \"leader\" or \"follower\""))),
        }
    }

    /// Writes this mode into `metadata` (nothing for the default).
    pub fn write(&self, metadata: &mut MetadataMap) {
        if let ReadMode::Follower { min_seq } = self {
            metadata.insert(READ_HEADER, tonic::metadata::MetadataValue::from_static("follower"));
            metadata.insert(MIN_SEQ_HEADER, min_seq.to_string().parse().expect("digits are valid header text"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_modes_round_trip_through_metadata() {
        for mode in [ReadMode::Linearizable, ReadMode::Follower { min_seq: 0 }, ReadMode::Follower { min_seq: 42 }] {
            let mut metadata = MetadataMap::new();
            mode.write(&mut metadata);
            assert_eq!(ReadMode::from_metadata(&metadata).unwrap(), mode);
        }
    }

    #[test]
    fn test_bad_headers_name_the_header() {
        let mut metadata = MetadataMap::new();
        metadata.insert(READ_HEADER, "nearest".parse().unwrap());
        let err = ReadMode::from_metadata(&metadata).unwrap_err().to_string();
        assert!(err.contains(READ_HEADER) && err.contains("nearest"), "{err}");
        metadata.insert(READ_HEADER, "follower".parse().unwrap());
        metadata.insert(MIN_SEQ_HEADER, "-1".parse().unwrap());
        let err = ReadMode::from_metadata(&metadata).unwrap_err().to_string();
        assert!(err.contains(MIN_SEQ_HEADER), "{err}");
    }
}
