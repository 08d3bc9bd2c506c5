//! One module per primitive: each function is one subcommand.

pub(crate) mod demo;
pub(crate) mod docs;
pub(crate) mod event;
pub(crate) mod kv;
pub(crate) mod mutex;
pub(crate) mod pidfile;
pub(crate) mod queue;
pub(crate) mod sem;
pub(crate) mod stat;

/// An error in what the user asked for, found after parsing (exit status 2).
#[derive(Debug)]
pub(crate) struct Usage(pub(crate) String);

impl std::fmt::Display for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Usage {}
