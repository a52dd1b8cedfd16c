//! Errors of the command line: core errors plus the few only a host can have.

use ias_core::Error;

use crate::exit::Exit;

/// Why a command failed.
#[derive(Debug)]
pub enum CliError {
    /// An error from ias itself (bad input, not found, store failure…).
    Core(Error),
    /// A value was rejected in a way that must not repeat the value (a key).
    Secret {
        /// The rejected field.
        field: &'static str,
        /// What is wrong, without the value.
        reason: &'static str,
    },
    /// Reading standard input or writing the result failed.
    Io(String),
    /// A GitOps file with errors: every one of them.
    Manifest {
        /// The file's name as given.
        file: String,
        /// Every error, in file order.
        errors: ias_core::gitops::manifest::ManifestErrors,
    },
    /// An error reported with exit code 1 whatever its kind (`gitops plan`, `gitops drift`).
    Failed(Box<CliError>),
}

impl CliError {
    /// The exit code for this error.
    pub fn exit(&self) -> Exit {
        match self {
            CliError::Core(err) if err.is_invalid_input() => Exit::Usage,
            CliError::Core(_) | CliError::Io(_) => Exit::Failure,
            CliError::Secret { .. } | CliError::Manifest { .. } => Exit::Usage,
            CliError::Failed(_) => Exit::Failure,
        }
    }

    /// The error itself, without the exit-code wrapper of [`CliError::Failed`].
    pub fn inner(&self) -> &CliError {
        match self {
            CliError::Failed(inner) => inner.inner(),
            other => other,
        }
    }

    /// A stable machine-readable name for the kind of error.
    pub fn kind(&self) -> &'static str {
        match self {
            CliError::Core(err) => err.kind(),
            CliError::Secret { .. } => "invalid_input",
            CliError::Io(_) => "io",
            CliError::Manifest { .. } => "invalid_input",
            CliError::Failed(inner) => inner.kind(),
        }
    }
}

impl std::fmt::Display for CliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CliError::Core(err) => err.fmt(f),
            CliError::Secret { field, reason } => write!(f, "invalid {field}: {reason}"),
            CliError::Io(message) => f.write_str(message),
            CliError::Manifest { file, errors } => {
                write!(
                    f,
                    "{file}: {} error(s): {}",
                    errors.0.len(),
                    errors.one_line()
                )
            }
            CliError::Failed(inner) => inner.fmt(f),
        }
    }
}

impl From<Error> for CliError {
    fn from(err: Error) -> Self {
        CliError::Core(err)
    }
}

/// A shorthand for results of commands.
pub type CliResult<T> = Result<T, CliError>;
