//! Console output of the binaries: `log` records on stderr, one line each,
//! filtered by `RUST_LOG` (default: `info`), as text for people or as JSON
//! for log shippers.

use std::io::Write;

use log::LevelFilter;

/// How log lines look.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// `2026-11-25 12:00:01 connect ...`: local time, the level when not
    /// info, the text.
    #[default]
    Text,
    /// One JSON object a line: `{"time":"...","level":"INFO","target":"...","message":"..."}`.
    Json,
}

/// Sets up `env_logger` with a short text line, at `info` unless `RUST_LOG`
/// says otherwise.
pub fn init() {
    init_with(Format::Text, None);
}

/// Sets up logging as `format`. `RUST_LOG` (per-module filters and all)
/// decides what is logged when set; otherwise `level` (default `info`), which
/// [`set_level`] may change later.
pub fn init_with(format: Format, level: Option<LevelFilter>) {
    let from_env = std::env::var_os("RUST_LOG").is_some_and(|v| !v.is_empty());
    let mut builder = if from_env {
        env_logger::Builder::from_env(env_logger::Env::default())
    } else {
        let mut builder = env_logger::Builder::new();
        // Everything passes the builder's filter; the global maximum level
        // decides, so that a reload can change it.
        builder.filter_level(LevelFilter::Trace);
        builder
    };
    match format {
        Format::Text => builder.format(|buf, record| {
            let time = chrono::Local::now().format("%Y-%m-%d %H:%M:%S");
            match record.level() {
                log::Level::Info => writeln!(buf, "{time} {}", record.args()),
                level => writeln!(buf, "{time} {level}: {}", record.args()),
            }
        }),
        Format::Json => builder.format(|buf, record| {
            let line = serde_json::json!({
                "time": crate::format::file_time(&chrono::Local::now()),
                "level": record.level().as_str(),
                "target": record.target(),
                "message": record.args().to_string(),
            });
            writeln!(buf, "{line}")
        }),
    };
    if builder.try_init().is_ok() && !from_env {
        log::set_max_level(level.unwrap_or(LevelFilter::Info));
    }
}

/// Changes what is logged from now on (a reload), unless `RUST_LOG` decides.
pub fn set_level(level: LevelFilter) {
    if std::env::var_os("RUST_LOG").is_none_or(|v| v.is_empty()) {
        log::set_max_level(level);
    }
}
