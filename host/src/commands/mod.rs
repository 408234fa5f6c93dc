//! The subcommands of `buslink`, one module each, and the error that decides the exit code.

pub mod check;
pub mod errors;
pub mod offsets;
pub mod plugins;
pub mod query;
pub mod run;

use crate::config::ConfigErrors;
use crate::pipeline::PipelineError;
use crate::plugin::LoadError;

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
    Check(#[from] check::Problems),
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
