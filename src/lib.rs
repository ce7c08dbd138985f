//! chatroom: a self-hosted chat server on classic threads and CSV files.
//!
//! # The house
//! The source tree shows the sides of the wire:
//!
//! - [`server`]: everything the `server` binary runs. A line from a socket
//!   goes: [`server::accept`] (the accept loop, one thread per client) →
//!   [`server::transport`] (the seam: plain TCP and TLS, WebSocket
//!   next; it opens the connection on the client's own thread and splits it
//!   into an input and an output) → [`server::session`] thread
//!   reads lines from the input (flood control waits here) → commands ask
//!   [`server::registry`] (who is where) → messages go to [`server::store`],
//!   which appends to `messages.csv` and syncs it *before* it delivers (and
//!   then tells [`server::index`], which `/history` and `/search` ask) → one
//!   shared [`format::Line`] per event goes into each recipient's
//!   [`server::outbox::Outbox`] → a few flusher threads write the queues
//!   through each connection's transport output, never blocking. A new kind
//!   of connection is a new file in `src/server/transport/`; sessions,
//!   registry and store do not change. With `--cluster`, several servers
//!   share one chat through one Redis stream ([`server::cluster`]). The
//!   module doc of [`server`] has the longer tour.
//! - [`client`]: the `client` binary a person types into. [`client::link`]
//!   is the connection both front ends share; [`client::plain`] is the line
//!   client (pipes, `--plain`); [`client::tui`] the full-screen client over
//!   the server's JSON mode.
//! - [`viewer`]: the two viewer binaries. [`viewer::tail`] follows a CSV file
//!   by byte offset; the rest turns rows into a chat view (`list_messages`)
//!   and a log (`message_logs`).
//!
//! What both sides share, and what imports none of the three:
//!
//! - [`wire`]: reading bounded lines, sanitising text;
//! - [`format`](mod@format): the text and JSON renderings of every event the server
//!   sends, built once and shared by every recipient;
//! - [`names`]: the rules for user and room names;
//! - [`rows`]: the data files, their columns and row shapes;
//! - [`tls`](mod@tls): the TLS crypto provider and certificate fingerprints;
//! - [`logging`]: the binaries' log lines.
//!
//! The three sides never import one another. Only [`server::stack`] holds
//! `unsafe` code (giving idle stack pages back); the rest of the crate denies
//! it, and system calls go through `rustix`.
#![deny(unsafe_code)]

pub mod client;
pub mod format;
pub mod logging;
pub mod names;
pub mod rows;
pub mod server;
pub mod tls;
pub mod viewer;
pub mod wire;
