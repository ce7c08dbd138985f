//! Accounts: who may log in to a private server, with what password and role.
//!
//! `accounts.csv` holds `name,password_hash,role,created`; the hash is an
//! argon2id PHC string with its own salt. A server with at least one account
//! is private: every user logs in with name and password, and there are no
//! guests. Passwords never leave this module except as hashes.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use argon2::Argon2;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use serde::{Deserialize, Serialize};

use crate::names::{self, NameError};
use crate::server::table::{Table, TableError};

/// File name of the accounts table in the data directory.
pub const ACCOUNTS_FILE: &str = "accounts.csv";
/// Its columns.
pub const ACCOUNT_COLUMNS: &[&str] = &["name", "password_hash", "role", "created"];

/// What an account may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// May kick, ban and mute.
    Admin,
    /// May chat.
    Member,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Admin => "admin",
            Role::Member => "member",
        })
    }
}

/// One row of `accounts.csv`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    /// The login name, unique without regard to case.
    pub name: String,
    /// argon2id PHC string.
    pub password_hash: String,
    /// What the account may do.
    pub role: Role,
    /// When it was made (RFC 3339).
    pub created: String,
}

impl fmt::Debug for Account {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the hash, not even in a debug dump.
        f.debug_struct("Account")
            .field("name", &self.name)
            .field("role", &self.role)
            .field("created", &self.created)
            .finish_non_exhaustive()
    }
}

/// Why an account operation failed.
#[derive(Debug)]
pub enum AccountError {
    /// The name breaks the name rules.
    BadName(NameError),
    /// An account with this name exists.
    Exists(String),
    /// No account has this name.
    NoSuchAccount(String),
    /// The password is empty.
    EmptyPassword,
    /// Hashing failed.
    Hash(String),
    /// The file could not be read or written.
    Table(TableError),
}

impl fmt::Display for AccountError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AccountError::BadName(e) => write!(f, "{e}"),
            AccountError::Exists(name) => write!(f, "an account named {name} exists already"),
            AccountError::NoSuchAccount(name) => write!(f, "there is no account named {name}"),
            AccountError::EmptyPassword => write!(f, "the password is empty"),
            AccountError::Hash(e) => write!(f, "cannot hash the password: {e}"),
            AccountError::Table(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for AccountError {}

impl From<TableError> for AccountError {
    fn from(e: TableError) -> Self {
        AccountError::Table(e)
    }
}

/// Hashes a password with argon2id and a fresh random salt.
pub fn hash_password(password: &str) -> Result<String, AccountError> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|hash| hash.to_string())
        .map_err(|e| AccountError::Hash(e.to_string()))
}

/// True if `password` matches the PHC string `hash`.
pub fn verify_password(hash: &str, password: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|parsed| {
        Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok()
    })
}

/// The accounts of one data directory.
pub struct Accounts {
    table: Table<Account>,
    /// A hash to check against when the name is unknown, so that a wrong name
    /// takes as long as a wrong password.
    decoy: String,
}

impl Accounts {
    /// The accounts kept in `dir`.
    pub fn open(dir: &Path) -> Accounts {
        Accounts {
            table: Table::new(dir.join(ACCOUNTS_FILE), ACCOUNT_COLUMNS),
            decoy: hash_password("decoy password for unknown names").unwrap_or_default(),
        }
    }

    /// Every account, as the file holds them now.
    pub fn list(&self) -> Result<Arc<Vec<Account>>, AccountError> {
        Ok(self.table.rows()?)
    }

    /// True when the server is private: at least one account exists.
    pub fn is_private(&self) -> Result<bool, AccountError> {
        Ok(!self.list()?.is_empty())
    }

    /// The account if `name` and `password` match one, with its exact name.
    /// Takes about as long whether the name exists or not.
    pub fn check(&self, name: &str, password: &str) -> Result<Option<Account>, AccountError> {
        let accounts = self.list()?;
        let key = names::fold(name);
        match accounts.iter().find(|a| names::fold(&a.name) == key) {
            Some(account) if verify_password(&account.password_hash, password) => {
                Ok(Some(account.clone()))
            }
            Some(_) => Ok(None),
            None => {
                verify_password(&self.decoy, password);
                Ok(None)
            }
        }
    }

    /// The account named `name` (any case), if there is one.
    pub fn find(&self, name: &str) -> Result<Option<Account>, AccountError> {
        let key = names::fold(name);
        Ok(self
            .list()?
            .iter()
            .find(|a| names::fold(&a.name) == key)
            .cloned())
    }

    /// Adds an account.
    pub fn add(&self, name: &str, password: &str, role: Role) -> Result<(), AccountError> {
        names::check_name(name).map_err(AccountError::BadName)?;
        if password.is_empty() {
            return Err(AccountError::EmptyPassword);
        }
        let hash = hash_password(password)?;
        let created = crate::format::file_time(&chrono::Local::now());
        self.table.update(|rows| {
            if rows
                .iter()
                .any(|a| names::fold(&a.name) == names::fold(name))
            {
                return Err(AccountError::Exists(name.to_string()));
            }
            rows.push(Account {
                name: name.to_string(),
                password_hash: hash,
                role,
                created,
            });
            Ok(())
        })
    }

    /// Removes an account.
    pub fn remove(&self, name: &str) -> Result<(), AccountError> {
        self.table.update(|rows| {
            let before = rows.len();
            rows.retain(|a| names::fold(&a.name) != names::fold(name));
            if rows.len() == before {
                return Err(AccountError::NoSuchAccount(name.to_string()));
            }
            Ok(())
        })
    }

    /// Sets a new password.
    pub fn set_password(&self, name: &str, password: &str) -> Result<(), AccountError> {
        if password.is_empty() {
            return Err(AccountError::EmptyPassword);
        }
        let hash = hash_password(password)?;
        self.table.update(|rows| {
            let account = rows
                .iter_mut()
                .find(|a| names::fold(&a.name) == names::fold(name))
                .ok_or_else(|| AccountError::NoSuchAccount(name.to_string()))?;
            account.password_hash = hash;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_is_an_argon2id_phc_string_with_its_own_salt() {
        let one = hash_password("hunter2").unwrap();
        let two = hash_password("hunter2").unwrap();
        assert!(one.starts_with("$argon2id$"), "{one}");
        assert_ne!(one, two, "each hash has its own salt");
        assert!(verify_password(&one, "hunter2"));
        assert!(!verify_password(&one, "hunter3"));
        assert!(!verify_password("not a hash", "hunter2"));
    }

    #[test]
    fn accounts_are_added_checked_changed_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let accounts = Accounts::open(dir.path());
        assert!(!accounts.is_private().unwrap());
        accounts.add("Alice", "wonderland", Role::Admin).unwrap();
        accounts.add("bob", "builder", Role::Member).unwrap();
        assert!(accounts.is_private().unwrap());
        assert!(matches!(
            accounts.add("ALICE", "x", Role::Member),
            Err(AccountError::Exists(_))
        ));
        let alice = accounts.check("alice", "wonderland").unwrap().unwrap();
        assert_eq!((alice.name.as_str(), alice.role), ("Alice", Role::Admin));
        assert!(accounts.check("alice", "builder").unwrap().is_none());
        assert!(accounts.check("nobody", "wonderland").unwrap().is_none());
        accounts.set_password("bob", "new one").unwrap();
        assert!(accounts.check("bob", "builder").unwrap().is_none());
        assert!(accounts.check("bob", "new one").unwrap().is_some());
        accounts.remove("BOB").unwrap();
        assert!(accounts.find("bob").unwrap().is_none());
        assert!(matches!(
            accounts.remove("bob"),
            Err(AccountError::NoSuchAccount(_))
        ));
    }

    #[test]
    fn the_file_holds_hashes_never_passwords() {
        let dir = tempfile::tempdir().unwrap();
        let accounts = Accounts::open(dir.path());
        accounts.add("carol", "s3cret-pass", Role::Member).unwrap();
        let text = std::fs::read_to_string(dir.path().join(ACCOUNTS_FILE)).unwrap();
        assert!(text.starts_with("name,password_hash,role,created\n"));
        assert!(!text.contains("s3cret-pass"));
        assert!(text.contains("$argon2id$") && text.contains(",member,"));
    }

    #[test]
    fn bad_names_and_empty_passwords_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let accounts = Accounts::open(dir.path());
        assert!(matches!(
            accounts.add("two words", "pw", Role::Member),
            Err(AccountError::BadName(_))
        ));
        assert!(matches!(
            accounts.add("dave", "", Role::Member),
            Err(AccountError::EmptyPassword)
        ));
    }

    #[test]
    fn debug_output_never_shows_the_hash() {
        let account = Account {
            name: "x".into(),
            password_hash: "$argon2id$secret".into(),
            role: Role::Member,
            created: String::new(),
        };
        assert!(!format!("{account:?}").contains("argon2id"));
    }
}
