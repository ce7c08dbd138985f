//! The lines the server sends, built once and shared by every recipient.
//!
//! Every function returns an `Arc<str>` that ends in `\n`: one buffer per
//! message, handed to each recipient's outbox without a copy.

use std::fmt::Display;
use std::sync::Arc;

use chrono::{DateTime, Local, SecondsFormat, TimeZone};

/// The clock shown in chat lines: the server's local time of day.
pub fn clock<Tz: TimeZone>(time: &DateTime<Tz>) -> impl Display + use<Tz>
where
    Tz::Offset: Display,
{
    time.with_timezone(&Local).format("%H:%M:%S")
}

/// The timestamp kept in the CSV files: RFC 3339 with milliseconds and offset.
pub fn file_time(time: &DateTime<Local>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Millis, false)
}

/// A room message as everyone in the room sees it: `[12:00:01] alice: hi`.
pub fn chat<Tz: TimeZone>(time: &DateTime<Tz>, sender: &str, text: &str) -> Arc<str>
where
    Tz::Offset: Display,
{
    format!("[{}] {sender}: {text}\n", clock(time)).into()
}

/// A whisper as its recipient sees it: `[12:00:01] (whisper) alice: psst`.
pub fn whisper_received<Tz: TimeZone>(time: &DateTime<Tz>, sender: &str, text: &str) -> Arc<str>
where
    Tz::Offset: Display,
{
    format!("[{}] (whisper) {sender}: {text}\n", clock(time)).into()
}

/// A whisper as its sender sees it: `[12:00:01] (whisper to bob) alice: psst`.
pub fn whisper_sent<Tz: TimeZone>(
    time: &DateTime<Tz>,
    sender: &str,
    recipient: &str,
    text: &str,
) -> Arc<str>
where
    Tz::Offset: Display,
{
    format!(
        "[{}] (whisper to {recipient}) {sender}: {text}\n",
        clock(time)
    )
    .into()
}

/// A line about state: `* alice joined #general`.
pub fn notice(text: impl Display) -> Arc<str> {
    format!("* {text}\n").into()
}

/// An error line: `! unknown command /x`.
pub fn error(text: impl Display) -> Arc<str> {
    format!("! {text}\n").into()
}

/// The prompt for a name.
pub const NAME_PROMPT: &str = "Name:\n";
/// The prompt for a password, on a private server.
pub const PASSWORD_PROMPT: &str = "Password:\n";

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::FixedOffset;

    fn noon() -> DateTime<FixedOffset> {
        DateTime::parse_from_rfc3339("2026-11-21T12:00:01.500+00:00").unwrap()
    }

    #[test]
    fn a_chat_line_holds_name_colon_text_and_ends_in_newline() {
        let line = chat(&noon(), "alice", "hi, all");
        assert!(line.starts_with('['));
        assert!(line.ends_with("] alice: hi, all\n"));
        assert_eq!(line.matches('\n').count(), 1);
    }

    #[test]
    fn whispers_say_whisper_and_name_both_sides() {
        let got = whisper_received(&noon(), "alice", "psst");
        assert!(got.contains("whisper") && got.contains("alice: psst"));
        let sent = whisper_sent(&noon(), "alice", "bob", "psst");
        assert!(sent.contains("whisper to bob") && sent.contains("alice: psst"));
    }

    #[test]
    fn notices_and_errors_are_marked() {
        assert_eq!(
            &*notice("alice joined #general"),
            "* alice joined #general\n"
        );
        assert_eq!(&*error("no such room"), "! no such room\n");
    }

    #[test]
    fn file_times_are_rfc3339_with_millis_and_offset() {
        let t = Local::now();
        let s = file_time(&t);
        let back = DateTime::parse_from_rfc3339(&s).unwrap();
        assert_eq!(back.timestamp_millis(), t.timestamp_millis());
        assert_eq!(s.len(), "2026-11-21T18:05:09.123+00:00".len());
    }
}
