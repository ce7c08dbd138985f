//! The server's config file (`--config FILE`, TOML): every flag has a key of
//! the same name (`max-clients = 500`, `web-origin = ["https://a", ...]`,
//! `plain-public = true`), and a flag given on the command line wins.
//!
//! The file is turned into flag arguments placed before the command line's,
//! and the server's one flag parser reads both: the file can say nothing the
//! command line could not, values are checked the same way, and the last
//! word wins. [`check`] reports every mistake of a file with its line;
//! [`effective`] writes the settings in force back out as TOML
//! (`server print-config`).

use std::ffi::{OsStr, OsString};

use clap::parser::ValueSource;
use clap::{ArgAction, ArgMatches, Command};
use toml::de::{DeTable, DeValue};

/// One key of a config file, as flag arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileArg {
    /// The key, which is the flag's long name.
    pub key: String,
    /// The flag arguments it stands for (`--key value`, `--key` alone for
    /// `true`, nothing for `false`, the flag again for each element of a list).
    pub args: Vec<String>,
    /// Its line in the file, from 1.
    pub line: usize,
}

/// A mistake in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Its line in the file, from 1.
    pub line: usize,
    /// What is wrong, in words.
    pub message: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

/// Keys a config file may not have: they are not settings of the server.
const NOT_SETTINGS: &[&str] = &["config", "help", "version"];

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// Reads a config file's text into flag arguments, key by key, in the file's
/// order. Syntax errors and values no flag could take come back with their
/// lines.
pub fn read(text: &str) -> Result<Vec<FileArg>, Vec<ConfigError>> {
    let (table, errors) = DeTable::parse_recoverable(text);
    if !errors.is_empty() {
        return Err(errors
            .iter()
            .map(|e| ConfigError {
                line: e.span().map_or(1, |s| line_of(text, s.start)),
                message: e.message().trim().to_string(),
            })
            .collect());
    }
    let mut args = Vec::new();
    let mut problems = Vec::new();
    let mut entries: Vec<_> = table.get_ref().iter().collect();
    entries.sort_by_key(|(key, _)| key.span().start);
    for (key, value) in entries {
        let line = line_of(text, key.span().start);
        let name = key.get_ref().to_string();
        let flag = format!("--{name}");
        let one = |value: &DeValue<'_>, out: &mut Vec<String>| -> Result<(), String> {
            match value {
                DeValue::String(s) => out.extend([flag.clone(), s.to_string()]),
                DeValue::Integer(i) if i.radix() == 10 => {
                    out.extend([flag.clone(), i.as_str().replace('_', "")])
                }
                DeValue::Integer(_) => {
                    return Err("write numbers in decimal".into());
                }
                DeValue::Float(f) => out.extend([flag.clone(), f.as_str().replace('_', "")]),
                DeValue::Boolean(true) => out.push(flag.clone()),
                DeValue::Boolean(false) => {}
                DeValue::Datetime(_) => return Err("a date is no setting".into()),
                DeValue::Array(_) | DeValue::Table(_) => {
                    return Err("a list holds strings or numbers, not lists or tables".into());
                }
            }
            Ok(())
        };
        let mut out = Vec::new();
        let done = match value.get_ref() {
            DeValue::Array(items) => items
                .iter()
                .try_for_each(|item| one(item.get_ref(), &mut out)),
            DeValue::Table(_) => Err(format!(
                "[{name}] is a table; every setting is a plain key = value at the top of the file"
            )),
            other => one(other, &mut out),
        };
        match done {
            Ok(()) => args.push(FileArg {
                key: name,
                args: out,
                line,
            }),
            Err(message) => problems.push(ConfigError {
                line,
                message: format!("{name}: {message}"),
            }),
        }
    }
    if problems.is_empty() {
        Ok(args)
    } else {
        Err(problems)
    }
}

/// The long names of the settings `command` takes, as keys.
pub fn keys(command: &Command) -> Vec<String> {
    command
        .get_arguments()
        .filter_map(|a| a.get_long())
        .filter(|long| !NOT_SETTINGS.contains(long))
        .map(str::to_string)
        .collect()
}

/// Every mistake of a read config file: unknown keys, and values the flag
/// refuses (as the command line would), each with its line.
pub fn check(command: &Command, file: &[FileArg]) -> Vec<ConfigError> {
    let known = keys(command);
    let mut problems = Vec::new();
    for arg in file {
        if !known.contains(&arg.key) {
            problems.push(ConfigError {
                line: arg.line,
                message: format!(
                    "{} is no setting of this server (`server --help` lists them; keys are the flags' names, e.g. max-clients)",
                    arg.key
                ),
            });
            continue;
        }
        let argv = std::iter::once("server".to_string()).chain(arg.args.iter().cloned());
        if let Err(e) = command.clone().try_get_matches_from(argv) {
            // clap's first line says what is wrong; the rest is usage.
            let text = e.to_string();
            let first = text
                .lines()
                .next()
                .unwrap_or("a value this setting does not take")
                .trim_start_matches("error: ")
                .to_string();
            problems.push(ConfigError {
                line: arg.line,
                message: format!("{}: {first}", arg.key),
            });
        }
    }
    problems
}

/// The arguments to parse: the file's first, then the command line's, so
/// that a flag given on the command line wins. A list flag given on the
/// command line replaces the file's list instead of adding to it.
pub fn merge(command: &Command, file: &[FileArg], cli: &[OsString]) -> Vec<OsString> {
    let lists: Vec<&str> = command
        .get_arguments()
        .filter(|a| matches!(a.get_action(), ArgAction::Append))
        .filter_map(|a| a.get_long())
        .collect();
    let mut out: Vec<OsString> = Vec::new();
    let mut rest = cli.iter();
    // The program's name stays first.
    if let Some(argv0) = rest.next() {
        out.push(argv0.clone());
    }
    for arg in file {
        if lists.contains(&arg.key.as_str()) && given(cli, &arg.key) {
            continue;
        }
        out.extend(arg.args.iter().map(OsString::from));
    }
    out.extend(rest.cloned());
    out
}

/// True if the command line gives `--key` (or `--key=...`).
pub fn given(cli: &[OsString], key: &str) -> bool {
    let flag = format!("--{key}");
    let with_value = format!("--{key}=");
    cli.iter().any(|a| {
        a.to_str()
            .is_some_and(|a| a == flag || a.starts_with(&with_value))
    })
}

/// Finds `--config FILE` (or `--config=FILE`) among the arguments and takes
/// it out, so that the flag parser never sees it twice.
pub fn take_config(args: &mut Vec<OsString>) -> Option<OsString> {
    let mut found = None;
    let mut i = 1;
    while i < args.len() {
        let arg = args[i].to_str().unwrap_or("");
        if arg == "--" {
            break;
        }
        if arg == "--config" && i + 1 < args.len() {
            found = Some(args.remove(i + 1));
            args.remove(i);
            continue;
        }
        if let Some(path) = arg.strip_prefix("--config=") {
            found = Some(OsStr::new(path).to_os_string());
            args.remove(i);
            continue;
        }
        i += 1;
    }
    found
}

fn toml_string(value: &str) -> String {
    toml::Value::String(value.to_string()).to_string()
}

/// The settings in force, as a config file: every setting with its value,
/// and whether it came from the command line (`cli`), the config file
/// (`file`) or the default.
pub fn effective(
    command: &Command,
    matches: &ArgMatches,
    file: &[FileArg],
    cli: &[OsString],
) -> String {
    let mut out = String::from(
        "# the settings in force: a flag wins over the config file, which wins over the default\n",
    );
    for arg in command.get_arguments() {
        let Some(long) = arg.get_long() else { continue };
        if NOT_SETTINGS.contains(&long) {
            continue;
        }
        let id = arg.get_id().as_str();
        let source = if given(cli, long) {
            "command line"
        } else if file.iter().any(|a| a.key == long) {
            "config file"
        } else {
            match matches.value_source(id) {
                Some(ValueSource::DefaultValue) => "default",
                Some(ValueSource::EnvVariable) => "environment",
                _ => "not set",
            }
        };
        let line = match arg.get_action() {
            ArgAction::SetTrue => format!("{long} = {}", matches.get_flag(id)),
            _ => {
                let values: Vec<String> = matches
                    .get_raw(id)
                    .map(|vals| vals.map(|v| v.to_string_lossy().into_owned()).collect())
                    .unwrap_or_default();
                match (arg.get_action(), values.as_slice()) {
                    (_, []) => format!("# {long} = (not set)"),
                    (ArgAction::Append, values) => format!(
                        "{long} = [{}]",
                        values
                            .iter()
                            .map(|v| toml_value(v))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                    (_, [value, ..]) => format!("{long} = {}", toml_value(value)),
                }
            }
        };
        out.push_str(&format!("{line:<48} # {source}\n"));
    }
    out
}

/// A flag's value as TOML: a number as it is, anything else as a string.
fn toml_value(value: &str) -> String {
    if !value.is_empty() && value.parse::<f64>().is_ok() && !value.starts_with(['+', '.']) {
        value.to_string()
    } else {
        toml_string(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_become_flags_in_file_order_with_their_lines() {
        let text = "# a comment\nmax-clients = 500\nrate = 2.5\n\nplain-public = true\nno-fsync = false\nweb-origin = [\"https://a\", \"https://b\"]\nhost = \"0.0.0.0\"\n";
        let args = read(text).unwrap();
        let flat: Vec<(String, Vec<String>, usize)> =
            args.into_iter().map(|a| (a.key, a.args, a.line)).collect();
        assert_eq!(
            flat,
            vec![
                (
                    "max-clients".into(),
                    vec!["--max-clients".into(), "500".into()],
                    2
                ),
                ("rate".into(), vec!["--rate".into(), "2.5".into()], 3),
                ("plain-public".into(), vec!["--plain-public".into()], 5),
                ("no-fsync".into(), vec![], 6),
                (
                    "web-origin".into(),
                    vec![
                        "--web-origin".into(),
                        "https://a".into(),
                        "--web-origin".into(),
                        "https://b".into()
                    ],
                    7
                ),
                ("host".into(), vec!["--host".into(), "0.0.0.0".into()], 8),
            ]
        );
    }

    #[test]
    fn a_syntax_error_and_a_table_are_reported_with_their_lines() {
        let errors = read("rate = 1\nport = = 3\n").unwrap_err();
        assert_eq!(errors[0].line, 2, "{errors:?}");
        let errors = read("rate = 1\n\n[web]\nport = 3\n").unwrap_err();
        assert_eq!(errors[0].line, 3, "{errors:?}");
    }

    #[test]
    fn the_command_line_wins_and_a_list_given_there_replaces_the_files() {
        let command = Command::new("server")
            .arg(clap::Arg::new("rate").long("rate"))
            .arg(
                clap::Arg::new("web-origin")
                    .long("web-origin")
                    .action(ArgAction::Append),
            );
        let file = read("rate = 1\nweb-origin = [\"https://a\"]\n").unwrap();
        let cli: Vec<OsString> = ["server", "--rate", "3", "--web-origin", "https://c"]
            .into_iter()
            .map(OsString::from)
            .collect();
        let merged: Vec<String> = merge(&command, &file, &cli)
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect();
        assert_eq!(
            merged,
            [
                "server",
                "--rate",
                "1",
                "--rate",
                "3",
                "--web-origin",
                "https://c"
            ]
        );
    }

    #[test]
    fn the_config_flag_is_taken_out_of_the_arguments() {
        let mut args: Vec<OsString> = ["server", "--port", "1", "--config", "a.toml", "--rate=2"]
            .into_iter()
            .map(OsString::from)
            .collect();
        assert_eq!(take_config(&mut args), Some(OsString::from("a.toml")));
        assert_eq!(args, ["server", "--port", "1", "--rate=2"]);
        let mut args: Vec<OsString> = ["server", "--config=b.toml"]
            .into_iter()
            .map(OsString::from)
            .collect();
        assert_eq!(take_config(&mut args), Some(OsString::from("b.toml")));
        assert_eq!(args, ["server"]);
    }
}
