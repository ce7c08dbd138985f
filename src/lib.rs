//! chatroom: a self-hosted chat server on classic threads and CSV files.
//!
//! - [`client`]: the terminal client a person types into (`client` binary):
//!   a reader thread shows the server's lines, an input thread sends typed
//!   lines, and the caller's thread decides when the session ends.

pub mod client;
