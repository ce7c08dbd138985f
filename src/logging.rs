//! Console output of the binaries: `log` records on stderr, one line each,
//! filtered by `RUST_LOG` (default: `info`).

use std::io::Write;

/// Sets up `env_logger` with a short line: local time, level (when not info), text.
pub fn init() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format(|buf, record| {
            let time = chrono::Local::now().format("%Y-%m-%d %H:%M:%S");
            match record.level() {
                log::Level::Info => writeln!(buf, "{time} {}", record.args()),
                level => writeln!(buf, "{time} {level}: {}", record.args()),
            }
        })
        .init();
}
