//! The systems under test, each behind the same [`crate::kv`] interface.

pub mod omnishard;
pub mod postgres;
pub mod redis;
pub mod rocksdb;
