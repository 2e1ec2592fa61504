//! What every omnishard gRPC server does before a request reaches its
//! service, so that no client can hold a server hostage: dead or silent
//! connections are closed, each class of request has capacity of its own,
//! and no error message carries an unbounded piece of client input.
//!
//! Layout:
//! * [`connection`] — accepted connections with a handshake deadline and an
//!   idle timeout, plus the HTTP/2 settings (keep-alive pings, stream limits).
//! * [`admission`] — the tower layer that admits a request into its class
//!   (point, heavy, stream, …) or sheds it at once, counts a connection's
//!   open requests, and bounds `grpc-message` on the way out.
//! * [`message`] — cutting a `grpc-message` to a bounded length.

#![forbid(unsafe_code)]

pub mod admission;
pub mod connection;
pub mod message;

pub use admission::{AdmissionLayer, Class};
pub use connection::{incoming, ConnectionSettings};
