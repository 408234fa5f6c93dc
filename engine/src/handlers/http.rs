//! `type = "http"`: POSTs the event line as JSON; any 2xx answer is success. Header values and
//! the URL may hold credentials: they are never printed.

use super::{DispatchedEvent, Handler, HandlerError};
use crate::config::{displayable_url, HttpConfig};
use reqwest::blocking::Client;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE};

pub(super) struct HttpHandler {
    client: Client,
    url: reqwest::Url,
    /// The URL with any password removed, for messages.
    shown_url: String,
}

impl HttpHandler {
    pub(super) fn new(config: &HttpConfig) -> Result<Self, String> {
        let url = reqwest::Url::parse(config.url.expose()).map_err(|e| format!("bad url: {e}"))?;
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        for (name, value) in &config.headers {
            let header_name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| format!("headers: '{name}' is not a valid header name"))?;
            let mut header_value = HeaderValue::from_str(value.expose()).map_err(|_| {
                format!("headers: the value of '{name}' is not a valid header value")
            })?;
            header_value.set_sensitive(true);
            headers.insert(header_name, header_value);
        }
        let mut builder = Client::builder();
        // Extra roots: the handler's `ca_file`, and `SSL_CERT_FILE` as other TLS programs read it.
        let from_env = std::env::var_os("SSL_CERT_FILE").map(std::path::PathBuf::from);
        let read_roots = |what: &str, file: &std::path::Path| {
            let pem = std::fs::read(file)
                .map_err(|e| format!("{what} {}: cannot read it: {e}", file.display()))?;
            let certificates = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| format!("{what} {}: not PEM certificates: {e}", file.display()))?;
            if certificates.is_empty() {
                return Err(format!("{what} {}: holds no certificate", file.display()));
            }
            Ok(certificates)
        };
        if let Some(file) = &config.ca_file {
            for certificate in read_roots("ca_file", file)? {
                builder = builder.add_root_certificate(certificate);
            }
        }
        // Set for every TLS program of the machine: a problem with it is said, not fatal.
        if let Some(file) = &from_env {
            match read_roots("SSL_CERT_FILE", file) {
                Ok(certificates) => {
                    for certificate in certificates {
                        builder = builder.add_root_certificate(certificate);
                    }
                }
                Err(problem) => tracing::warn!("{problem}; not used"),
            }
        }
        let client = builder
            .default_headers(headers)
            .timeout(config.timeout)
            .connect_timeout(config.timeout)
            .pool_idle_timeout(std::time::Duration::from_secs(90))
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        Ok(HttpHandler {
            client,
            shown_url: displayable_url(&url),
            url,
        })
    }
}

/// The most of an answer's body the handler reads (it only needs the status).
const ANSWER_READ_MAX: u64 = 64 * 1024;

impl Handler for HttpHandler {
    fn handle(&mut self, event: &DispatchedEvent<'_>) -> Result<(), HandlerError> {
        let response = self
            .client
            .post(self.url.clone())
            .body(event.line().to_vec())
            .send()
            .map_err(|e| {
                // reqwest's errors name the URL: print ours, without credentials.
                let kind = if e.is_timeout() { "timed out: " } else { "" };
                let e = e.without_url();
                let mut message = format!("POST {}: {kind}{e}", self.shown_url);
                let mut cause = std::error::Error::source(&e);
                while let Some(inner) = cause {
                    message.push_str(&format!(": {inner}"));
                    cause = inner.source();
                }
                HandlerError::new(message)
            })?;
        let status = response.status();
        // Read a small body so the connection can be reused; a larger one (an endpoint that
        // answers megabytes, or without end) is not read: the connection is dropped instead.
        let _ = std::io::copy(
            &mut std::io::Read::take(response, ANSWER_READ_MAX),
            &mut std::io::sink(),
        );
        if status.is_success() {
            Ok(())
        } else {
            Err(HandlerError::new(format!(
                "POST {}: answered {status}",
                self.shown_url
            )))
        }
    }
}
