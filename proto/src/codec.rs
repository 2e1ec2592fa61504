//! The gRPC codec of every omnishard service: prost, except that a request
//! that does not decode is the caller's fault and says so.
//!
//! tonic-prost maps a protobuf decode failure to `INTERNAL`, which tells a
//! client the server broke and tells the gateway's retry and breaker logic
//! the same. Malformed bytes are bad input: `INVALID_ARGUMENT`, with the
//! decoder's (bounded) reason.

use std::marker::PhantomData;

use prost::Message;
use tonic::codec::{BufferSettings, Codec as TonicCodec, DecodeBuf, Decoder as TonicDecoder};
use tonic::Status;
use tonic_prost::{ProstCodec, ProstDecoder, ProstEncoder};

/// The codec the generated services use (`codec_path` in `build.rs`).
#[derive(Debug, Clone)]
pub struct Codec<T, U> {
    _pd: PhantomData<(T, U)>,
}

impl<T, U> Default for Codec<T, U> {
    fn default() -> Self {
        Codec { _pd: PhantomData }
    }
}

impl<T, U> TonicCodec for Codec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = Decoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstCodec::<T, U>::default().encoder()
    }

    fn decoder(&mut self) -> Self::Decoder {
        Decoder { inner: ProstCodec::<T, U>::default().decoder() }
    }
}

/// Prost's decoder with decode failures as `INVALID_ARGUMENT`.
#[derive(Debug, Clone)]
pub struct Decoder<U> {
    inner: ProstDecoder<U>,
}

impl<U: Message + Default> TonicDecoder for Decoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        self.inner.decode(buf).map_err(|status| Status::invalid_argument(format!("message: {}", status.message())))
    }

    fn buffer_settings(&self) -> BufferSettings {
        self.inner.buffer_settings()
    }
}
