//! The errors a command ends with, and the exit code each gives (2: config or plugin, 1: run
//! time). Every command and the supervisor return them; nothing here depends on a command.

use crate::config::ConfigErrors;
use crate::pipeline::PipelineError;
use crate::plugin::LoadError;

/// What `check` found wrong.
#[derive(Debug, thiserror::Error)]
#[error("{}", .problems.join("\n"))]
pub struct Problems {
    pub problems: Vec<String>,
}

/// Why `buslink run` (or another command) could not do its job; the exit code follows from it.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("{0}")]
    Config(#[from] ConfigErrors),
    #[error("{0}")]
    Load(#[from] LoadError),
    #[error("{0}")]
    Runtime(String),
    #[error("{0}")]
    Check(#[from] Problems),
    #[error("{0}")]
    Usage(String),
}

impl From<PipelineError> for AppError {
    fn from(error: PipelineError) -> Self {
        AppError::Runtime(error.to_string())
    }
}

impl AppError {
    /// 2 for config and plugin errors, 1 for failures at run time.
    pub fn exit_code(&self) -> u8 {
        match self {
            AppError::Config(_) | AppError::Load(_) | AppError::Check(_) | AppError::Usage(_) => 2,
            AppError::Runtime(_) => 1,
        }
    }
}
