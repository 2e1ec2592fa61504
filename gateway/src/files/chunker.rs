//! Cuts an upload stream into chunks as it arrives, holding at most one
//! largest chunk plus one incoming message.
//!
//! Content-defined chunking uses FastCDC (the `fastcdc` crate). Its cut point
//! depends only on the bytes from the chunk start to the largest chunk size,
//! so once that many bytes are buffered the next cut is final: streaming
//! gives exactly the chunks a whole-file pass would.
//!
//! Chunks are copied out of the buffer rather than split off it: a split
//! would share the buffer's allocation, and every later append would then
//! copy the whole pending window (up to the largest chunk) to a new one.

use bytes::{Buf, Bytes, BytesMut};
use fastcdc::v2020::FastCDC;

use crate::config::{Chunking, FileSettings};

/// Streaming chunker of one upload.
pub struct Chunker {
    mode: Chunking,
    min: usize,
    avg: usize,
    max: usize,
    buf: BytesMut,
}

impl Chunker {
    /// A chunker with the gateway's settings (validated at start-up).
    pub fn new(settings: &FileSettings) -> Chunker {
        let avg = settings.chunk_size.as_u64() as usize;
        let (min, max) = match settings.chunking {
            Chunking::Fixed => (avg, avg),
            Chunking::ContentDefined => ((avg / 4) & !1, avg * 4),
        };
        Chunker { mode: settings.chunking, min, avg, max, buf: BytesMut::new() }
    }

    /// Adds `data`; returns the chunks it completed.
    pub fn push(&mut self, data: &[u8]) -> Vec<Bytes> {
        self.buf.extend_from_slice(data);
        let mut out = Vec::new();
        while self.buf.len() >= self.max {
            let cut = self.cut();
            out.push(self.take(cut));
        }
        out
    }

    /// The chunks left at the end of the stream.
    pub fn finish(&mut self) -> Vec<Bytes> {
        let mut out = Vec::new();
        while !self.buf.is_empty() {
            let cut = self.cut();
            out.push(self.take(cut));
        }
        out
    }

    /// The next `len` bytes as a chunk of their own.
    fn take(&mut self, len: usize) -> Bytes {
        let chunk = Bytes::copy_from_slice(&self.buf[..len]);
        self.buf.advance(len);
        chunk
    }

    /// Length of the next chunk of the buffer.
    fn cut(&self) -> usize {
        let len = self.buf.len().min(self.max);
        match self.mode {
            Chunking::Fixed => len,
            Chunking::ContentDefined if len <= self.min => len,
            Chunking::ContentDefined => {
                let window = &self.buf[..len];
                let (_, end) = FastCDC::new(window, self.min, self.avg, self.max).cut(0, len);
                end.clamp(1, len)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(chunking: Chunking, size: u64) -> FileSettings {
        FileSettings { chunking, chunk_size: bytesize::ByteSize::b(size), ..FileSettings::default() }
    }

    fn noise(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    fn chunk_all(settings: &FileSettings, data: &[u8], message: usize) -> Vec<Bytes> {
        let mut chunker = Chunker::new(settings);
        let mut out = Vec::new();
        for part in data.chunks(message.max(1)) {
            out.extend(chunker.push(part));
        }
        out.extend(chunker.finish());
        out
    }

    #[test]
    fn test_fixed_chunks_cut_at_exact_sizes() {
        let s = settings(Chunking::Fixed, 1024);
        let data = noise(4096 + 10, 1);
        let sizes: Vec<usize> = chunk_all(&s, &data, 333).iter().map(Bytes::len).collect();
        assert_eq!(sizes, vec![1024, 1024, 1024, 1024, 10]);
        assert!(chunk_all(&s, &[], 10).is_empty());
    }

    #[test]
    fn test_content_defined_chunks_do_not_depend_on_message_sizes() {
        let s = settings(Chunking::ContentDefined, 4096);
        let data = noise(200_000, 7);
        let whole = chunk_all(&s, &data, data.len());
        assert_eq!(whole.concat(), data);
        for message in [1, 100, 4096, 65_536] {
            assert_eq!(chunk_all(&s, &data, message), whole, "message size {message}");
        }
        assert!(whole.iter().all(|c| c.len() <= 4 * 4096));
        assert!(whole.len() > 10, "{} chunks", whole.len());
    }

    #[test]
    fn test_insertion_shifts_only_nearby_chunks() {
        let s = settings(Chunking::ContentDefined, 4096);
        let data = noise(300_000, 3);
        let mut edited = data[..1000].to_vec();
        edited.extend_from_slice(b"inserted");
        edited.extend_from_slice(&data[1000..]);
        let before = chunk_all(&s, &data, 10_000);
        let after = chunk_all(&s, &edited, 10_000);
        let shared = after.iter().filter(|c| before.contains(c)).count();
        assert!(shared + 3 >= before.len(), "{shared} of {} chunks survive", before.len());
    }
}
