//! chatroom: a self-hosted chat server on classic threads and CSV files.
//!
//! # A tour
//! A byte from a client travels like this:
//!
//! 1. [`server`] accepts the connection and starts its thread (one per client).
//! 2. [`session`] greets it, reads its name (and, on a private server, its
//!    password, checked against [`accounts`]), then reads its lines through a
//!    [`wire::LineReader`] (bounded, UTF-8 checked) and cleans them with
//!    [`wire::sanitize`]. [`command`] turns each line into a command;
//!    [`moderation`] holds bans, mutes and flood control.
//! 3. Commands about rooms and people ask the [`registry`]: who is online, who
//!    is in which room, each room's recent history, behind one `Mutex`.
//! 4. A message or whisper goes to the [`store`] thread, which appends it to
//!    `messages.csv`, flushes, and only then hands it to the registry for
//!    delivery. So nothing is shown before it is written.
//! 5. Delivery puts one shared line ([`format`]) into each recipient's
//!    [`outbox::Outbox`], a queue bounded in bytes that never blocks. A few
//!    shared flusher threads ([`outbox::Flushers`]) drain the queues into the
//!    sockets in batches, without ever blocking on a slow client; so a client
//!    costs one thread and one descriptor.
//!
//! [`limits`] names every bound; [`config`] holds what the flags set.
//! [`names`] has the rules for user and room names. [`table`] keeps the small
//! CSV tables (`accounts.csv`, `bans.csv`) that are rewritten atomically.
//!
//! The other side of the wire: [`client`] is the client a person types into
//! (`client` binary). On a terminal it hands over to [`tui`], the full-screen
//! client: the server's JSON events and the keys become inputs of one plain
//! state struct, which answers with actions (send, reconnect, ring, exit) and
//! is drawn with ratatui. With `--plain`, or on a pipe, [`client`] itself
//! runs: a reader thread shows the server's lines, an input thread sends
//! typed lines, and the caller's thread decides when the session ends.
//!
//! The files are read back by the two viewers:
//!
//! - [`tail`] follows a CSV file by byte offset (half-written rows wait for
//!   their line end; truncation, replacement and a late file are handled) and
//!   finds the last N rows of a big file by scanning back from its end.
//! - [`view`] turns the rows into a chat (`list_messages`: plain lines, or a
//!   full-screen ratatui view) and a log (`message_logs`, with `--stats`).

pub mod accounts;
pub mod client;
pub mod command;
pub mod config;
pub mod format;
pub mod limits;
pub mod logging;
pub mod moderation;
pub mod names;
pub mod outbox;
pub mod registry;
pub mod server;
mod session;
pub mod store;
pub mod table;
pub mod tail;
pub mod tui;
pub mod view;
pub mod wire;
