//! How replication data is encoded: postcard (compact serde) for openraft's
//! messages, log entries and votes, and serde adapters for the few fields of
//! a proposal that are protobuf messages or JSON maps.

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{Error, Result};

/// Encodes a value for the log, the vote record or the wire.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    postcard::to_stdvec(value).map_err(|e| Error::Internal(format!("cannot encode a replication record: {e}")))
}

/// Decodes what [`encode`] wrote; `what` names the record in the error.
pub fn decode<T: DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T> {
    postcard::from_bytes(bytes).map_err(|e| Error::Corrupt { key: what.to_string(), reason: e.to_string() })
}

/// A protobuf message as its encoded bytes.
pub mod proto {
    use prost::Message;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<M: Message, S: Serializer>(message: &M, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(&message.encode_to_vec())
    }

    pub fn deserialize<'de, M: Message + Default, D: Deserializer<'de>>(deserializer: D) -> Result<M, D::Error> {
        let bytes: serde_bytes::ByteBuf = Deserialize::deserialize(deserializer)?;
        M::decode(bytes.as_slice()).map_err(serde::de::Error::custom)
    }
}

/// A list of protobuf messages, each as its encoded bytes.
pub mod protos {
    use prost::Message;
    use serde::ser::SerializeSeq;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<M: Message, S: Serializer>(messages: &[M], serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(messages.len()))?;
        for message in messages {
            seq.serialize_element(serde_bytes::Bytes::new(&message.encode_to_vec()))?;
        }
        seq.end()
    }

    pub fn deserialize<'de, M: Message + Default, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<M>, D::Error> {
        let encoded: Vec<serde_bytes::ByteBuf> = Deserialize::deserialize(deserializer)?;
        encoded.iter().map(|bytes| M::decode(bytes.as_slice()).map_err(serde::de::Error::custom)).collect()
    }
}

/// A value as JSON text: for types postcard cannot carry (self-describing
/// JSON values, optional fields skipped when serializing).
pub mod json {
    use serde::de::DeserializeOwned;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<T: Serialize, S: Serializer>(value: &T, serializer: S) -> Result<S::Ok, S::Error> {
        let text = serde_json::to_string(value).map_err(serde::ser::Error::custom)?;
        serializer.serialize_str(&text)
    }

    pub fn deserialize<'de, T: DeserializeOwned, D: Deserializer<'de>>(deserializer: D) -> Result<T, D::Error> {
        let text: String = Deserialize::deserialize(deserializer)?;
        serde_json::from_str(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use omnishard_proto::v1::{graph_op, GraphOp, VertexWrite};
    use serde::{Deserialize, Serialize};
    use serde_json::{json, Map, Value};

    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Sample {
        #[serde(with = "protos")]
        ops: Vec<GraphOp>,
        #[serde(with = "json")]
        fields: Map<String, Value>,
        #[serde(with = "serde_bytes")]
        raw: Vec<u8>,
    }

    #[test]
    fn test_protobuf_and_json_fields_round_trip() {
        let op = GraphOp {
            op: Some(graph_op::Op::PutVertex(VertexWrite {
                id: "v1".into(),
                label: "pkg".into(),
                ..Default::default()
            })),
        };
        let Value::Object(fields) = json!({"a": 1, "b": [true, null, "x"]}) else { unreachable!() };
        let sample = Sample { ops: vec![op, GraphOp::default()], fields, raw: vec![0, 255, 7] };
        let bytes = encode(&sample).unwrap();
        assert_eq!(decode::<Sample>("sample", &bytes).unwrap(), sample);
        let err = decode::<Sample>("sample", &bytes[..3]).unwrap_err();
        assert!(err.to_string().contains("sample"), "{err}");
    }
}
