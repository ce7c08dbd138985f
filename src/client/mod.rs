//! The client side of the wire: the `client` binary a person types into.
//!
//! - [`link`]: the connection to the server that both front ends share
//!   (options, connecting, reading the server's lines in bounded pieces, the
//!   errors a person is told about).
//! - [`plain`]: the line client, for pipes and `--plain` (rustyline on a
//!   terminal).
//! - [`tui`]: the full-screen client over the server's JSON mode, chosen
//!   when stdin and stdout are terminals.
//! - [`trust`]: whom the client trusts over TLS (system roots, a CA file, a
//!   pinned fingerprint, and certificates a person trusted, remembered like
//!   ssh's known_hosts).
//!
//! The two front ends build on [`link`] and never on each other; [`run`]
//! picks one.

use std::io::{self, IsTerminal};

pub mod link;
pub mod plain;
pub mod trust;
pub mod tui;

pub use link::{ClientError, LostReason, Options, Stream, TlsProblem};

/// Runs the client until the session ends: `Ok` when the user left (or the
/// input ended and the server closed), an error when the server could not be
/// reached or the connection was lost. Full screen on a terminal unless
/// `--plain`; the line client otherwise.
pub fn run(options: &Options) -> Result<(), ClientError> {
    let terminal = io::stdin().is_terminal() && io::stdout().is_terminal();
    if terminal && !options.plain {
        return tui::run(options);
    }
    plain::run(options, terminal)
}
