//! How a command fails: the exit code follows the kind of failure.

use std::process::ExitCode;

#[derive(Debug)]
pub enum Failure {
    /// Bad usage or invalid configuration: exit 2.
    Usage(anyhow::Error),
    /// Anything that went wrong while running: exit 1.
    Runtime(anyhow::Error),
}

impl Failure {
    pub fn usage(e: impl Into<anyhow::Error>) -> Self {
        Failure::Usage(e.into())
    }
    pub fn exit_code(&self) -> ExitCode {
        match self {
            Failure::Usage(_) => ExitCode::from(2),
            Failure::Runtime(_) => ExitCode::from(1),
        }
    }
    pub fn error(&self) -> &anyhow::Error {
        match self {
            Failure::Usage(e) | Failure::Runtime(e) => e,
        }
    }
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Failure::Runtime(e)
    }
}

impl From<relay_core::ConfigError> for Failure {
    fn from(e: relay_core::ConfigError) -> Self {
        Failure::Usage(e.into())
    }
}

pub type CmdResult = Result<(), Failure>;
