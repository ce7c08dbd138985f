//! The viewers: `list_messages` shows `messages.csv` as a chat, `message_logs`
//! shows `data.csv` as a live log. Both read through [`crate::tail`].
//!
//! - [`row`] turns raw rows into typed [`row::Message`]s and [`row::Event`]s,
//!   or [`row::Malformed`] reports.
//! - [`text`] cleans, measures and wraps text for the terminal.
//! - [`plain`] formats rows as plain lines for pipes and scripts.

pub mod filter;
pub mod plain;
pub mod row;
pub mod screen;
pub mod text;
