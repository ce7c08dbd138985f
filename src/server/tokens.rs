//! Staying logged in on a device: random tokens, kept in `tokens.csv` only as
//! their SHA-256 hashes.
//!
//! A logged-in client asks for one with `/token`; later, at the name prompt,
//! `/resume TOKEN` logs it in as the same name without the password (the web
//! page keeps the token in the browser's storage). `/logout` forgets the
//! connection's token; `server revoke-tokens NAME` forgets all of a name's.
//! A token is 32 random bytes (hex): guessing one is hopeless, and a stolen
//! `tokens.csv` gives nobody a token back.

use std::fmt::Write as _;
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::names;
use crate::server::table::{Table, TableError};

/// File name of the token table in the data directory.
pub const TOKENS_FILE: &str = "tokens.csv";
/// Its columns.
pub const TOKEN_COLUMNS: &[&str] = &["name", "hash", "created"];
/// Tokens one name may hold at once (one per device); the oldest goes first.
pub const MAX_TOKENS_PER_NAME: usize = 20;

/// One row of `tokens.csv`.
#[derive(Clone, Serialize, Deserialize)]
pub struct TokenRow {
    /// Whose token.
    pub name: String,
    /// SHA-256 of the token, hex.
    pub hash: String,
    /// When it was made (RFC 3339).
    pub created: String,
}

/// The tokens of one data directory.
pub struct Tokens {
    table: Table<TokenRow>,
}

/// A fresh token: 32 bytes from the operating system's random source, hex.
fn fresh() -> Result<String, TableError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| TableError {
        path: TOKENS_FILE.into(),
        reason: format!("no random bytes for a token: {e}"),
    })?;
    Ok(hex(&bytes))
}

fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// The hash kept of a token.
fn hash(token: &str) -> String {
    hex(&Sha256::digest(token.trim().as_bytes()))
}

impl Tokens {
    /// The tokens kept in `dir`.
    pub fn open(dir: &Path) -> Tokens {
        Tokens {
            table: Table::new(dir.join(TOKENS_FILE), TOKEN_COLUMNS),
        }
    }

    /// Makes a token for `name` and returns it; only its hash is kept.
    pub fn issue(&self, name: &str) -> Result<String, TableError> {
        let token = fresh()?;
        let row = TokenRow {
            name: name.to_string(),
            hash: hash(&token),
            created: crate::format::file_time(&chrono::Local::now()),
        };
        self.table.update(|rows| {
            rows.push(row);
            let key = names::fold(name);
            let held = rows.iter().filter(|r| names::fold(&r.name) == key).count();
            if held > MAX_TOKENS_PER_NAME {
                // The oldest of this name's tokens go first.
                let mut extra = held - MAX_TOKENS_PER_NAME;
                rows.retain(|r| {
                    if extra > 0 && names::fold(&r.name) == key {
                        extra -= 1;
                        false
                    } else {
                        true
                    }
                });
            }
            Ok::<_, TableError>(())
        })?;
        Ok(token)
    }

    /// The name a token logs in as, if it is one of ours.
    pub fn name_of(&self, token: &str) -> Result<Option<String>, TableError> {
        let hash = hash(token);
        Ok(self
            .table
            .rows()?
            .iter()
            .find(|r| r.hash == hash)
            .map(|r| r.name.clone()))
    }

    /// Forgets one token; false if it was not known.
    pub fn forget(&self, token: &str) -> Result<bool, TableError> {
        let hash = hash(token);
        self.table.update(|rows| {
            let before = rows.len();
            rows.retain(|r| r.hash != hash);
            Ok::<_, TableError>(rows.len() != before)
        })
    }

    /// Forgets every token of `name`; returns how many there were.
    pub fn revoke(&self, name: &str) -> Result<usize, TableError> {
        let key = names::fold(name);
        self.table.update(|rows| {
            let before = rows.len();
            rows.retain(|r| names::fold(&r.name) != key);
            Ok::<_, TableError>(before - rows.len())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_logs_in_as_its_name_until_forgotten_and_only_its_hash_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let tokens = Tokens::open(dir.path());
        let token = tokens.issue("Alice").unwrap();
        assert_eq!(token.len(), 64);
        assert_eq!(tokens.name_of(&token).unwrap().as_deref(), Some("Alice"));
        assert_eq!(tokens.name_of("not a token").unwrap(), None);
        let file = std::fs::read_to_string(dir.path().join(TOKENS_FILE)).unwrap();
        assert!(!file.contains(&token));
        assert!(tokens.forget(&token).unwrap());
        assert_eq!(tokens.name_of(&token).unwrap(), None);
    }

    #[test]
    fn revoking_forgets_every_token_of_a_name_and_no_other() {
        let dir = tempfile::tempdir().unwrap();
        let tokens = Tokens::open(dir.path());
        let a1 = tokens.issue("alice").unwrap();
        let a2 = tokens.issue("alice").unwrap();
        let b = tokens.issue("bob").unwrap();
        assert_eq!(tokens.revoke("ALICE").unwrap(), 2);
        assert_eq!(tokens.name_of(&a1).unwrap(), None);
        assert_eq!(tokens.name_of(&a2).unwrap(), None);
        assert_eq!(tokens.name_of(&b).unwrap().as_deref(), Some("bob"));
    }

    #[test]
    fn a_name_holds_a_bounded_number_of_tokens() {
        let dir = tempfile::tempdir().unwrap();
        let tokens = Tokens::open(dir.path());
        let first = tokens.issue("alice").unwrap();
        for _ in 0..MAX_TOKENS_PER_NAME {
            tokens.issue("alice").unwrap();
        }
        assert_eq!(tokens.name_of(&first).unwrap(), None, "the oldest went");
    }
}
