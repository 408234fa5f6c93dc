//! The error a plugin returns to the host.

use std::fmt;

/// What kind of failure a [`PluginError`] reports; the host decides from it whether to retry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The settings are wrong: fixing the configuration is the only cure. Never retried.
    Config,
    /// The bus could not be reached or the link broke. Retried with backoff.
    Connect,
    /// The offset asked for is not on the bus (purged, never written, wrong type).
    OffsetNotFound,
    /// The bus did not answer in time. Retried with backoff.
    Timeout,
    /// The bus answered something the plugin does not understand. Retried with backoff.
    Protocol,
    /// A bug or an unexpected state inside the plugin (a contained panic is reported as this).
    Internal,
    /// An event on the bus cannot be delivered faithfully (its offset is in the message): the
    /// events before it were delivered, the run stops there, and a restart stops there again
    /// until the bus is fixed. A plugin uses it only where no lossless fallback exists: a body
    /// it cannot decode is delivered as bytes instead ([`Body::Bytes`](crate::Body::Bytes)).
    Data,
}

impl ErrorKind {
    /// A short lowercase name, as shown in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Config => "config",
            ErrorKind::Connect => "connect",
            ErrorKind::OffsetNotFound => "offset-not-found",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Protocol => "protocol",
            ErrorKind::Internal => "internal",
            ErrorKind::Data => "data",
        }
    }

    /// Whether the host should try the operation again after a pause.
    pub fn is_transient(self) -> bool {
        matches!(
            self,
            ErrorKind::Connect | ErrorKind::Timeout | ErrorKind::Protocol
        )
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error from a plugin: a [kind](ErrorKind), a message for people, and optionally the
/// settings key it is about (the host then points at that key's line in the config file).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PluginError {
    kind: ErrorKind,
    message: String,
    key: Option<String>,
}

impl PluginError {
    /// An error of any kind.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        PluginError {
            kind,
            message: message.into(),
            key: None,
        }
    }

    /// A settings problem ([`ErrorKind::Config`]).
    pub fn config(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Config, message)
    }

    /// The bus cannot be reached ([`ErrorKind::Connect`]).
    pub fn connect(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Connect, message)
    }

    /// The offset is not on the bus ([`ErrorKind::OffsetNotFound`]).
    pub fn offset_not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::OffsetNotFound, message)
    }

    /// The bus did not answer in time ([`ErrorKind::Timeout`]).
    pub fn timeout(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Timeout, message)
    }

    /// The bus answered something unexpected ([`ErrorKind::Protocol`]).
    pub fn protocol(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Protocol, message)
    }

    /// An event that cannot be delivered faithfully ([`ErrorKind::Data`]); name its offset.
    pub fn data(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Data, message)
    }

    /// An unexpected state in the plugin ([`ErrorKind::Internal`]).
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, message)
    }

    /// Names the settings key this error is about.
    pub fn with_key(mut self, key: impl Into<String>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// The kind of failure.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The message, for people.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The settings key the error is about, if any.
    pub fn key(&self) -> Option<&str> {
        self.key.as_deref()
    }
}

impl fmt::Display for PluginError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.key {
            Some(key) => write!(f, "{} (key `{key}`)", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for PluginError {}

/// The result type of every plugin method.
pub type PluginResult<T> = Result<T, PluginError>;
