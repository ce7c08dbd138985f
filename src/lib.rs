//! chatroom: a self-hosted chat server on classic threads and CSV files.
