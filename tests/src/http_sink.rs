//! A local HTTP server that records what handlers POST to it and answers as a test says.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// One request received.
#[derive(Clone, Debug)]
pub struct Received {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Received {
    /// A header's value (case-insensitive name).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// How the sink answers one request.
#[derive(Clone, Copy, Debug)]
pub enum Answer {
    Status(u16),
    /// Wait this long, then answer 200 (to make a client time out).
    Delay(Duration),
    /// Answer 200 with a body that never ends (until the client goes away).
    Endless,
}

/// A recording HTTP server on 127.0.0.1; stops when dropped.
pub struct HttpSink {
    server: Arc<tiny_http::Server>,
    url: String,
    received: Arc<Mutex<Vec<Received>>>,
    script: Arc<Mutex<VecDeque<Answer>>>,
    thread: Option<JoinHandle<()>>,
}

impl HttpSink {
    /// Starts a sink that answers 200 unless [`script`](Self::script) says otherwise.
    pub fn start() -> HttpSink {
        let server = Arc::new(tiny_http::Server::http("127.0.0.1:0").expect("sink binds"));
        let port = server
            .server_addr()
            .to_ip()
            .map(|addr| addr.port())
            .expect("an IP address");
        let received = Arc::new(Mutex::new(Vec::new()));
        let script = Arc::new(Mutex::new(VecDeque::new()));
        let thread = {
            let (server, received, script) = (server.clone(), received.clone(), script.clone());
            std::thread::spawn(move || {
                for mut request in server.incoming_requests() {
                    let mut body = String::new();
                    let _ = request.as_reader().read_to_string(&mut body);
                    let answer = script
                        .lock()
                        .ok()
                        .and_then(|mut script| script.pop_front())
                        .unwrap_or(Answer::Status(200));
                    if let Ok(mut received) = received.lock() {
                        received.push(Received {
                            method: request.method().to_string(),
                            path: request.url().to_owned(),
                            headers: request
                                .headers()
                                .iter()
                                .map(|h| (h.field.to_string(), h.value.to_string()))
                                .collect(),
                            body,
                        });
                    }
                    let status = match answer {
                        Answer::Status(code) => code,
                        Answer::Delay(pause) => {
                            std::thread::sleep(pause);
                            200
                        }
                        Answer::Endless => {
                            let endless = tiny_http::Response::new(
                                tiny_http::StatusCode(200),
                                Vec::new(),
                                std::io::repeat(b'x'),
                                None,
                                None,
                            );
                            // Ends when the client closes the connection.
                            let _ = request.respond(endless);
                            continue;
                        }
                    };
                    let _ = request.respond(tiny_http::Response::empty(status));
                }
            })
        };
        HttpSink {
            server,
            url: format!("http://127.0.0.1:{port}"),
            received,
            script,
            thread: Some(thread),
        }
    }

    /// The base URL (`http://127.0.0.1:PORT`).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Queues answers for the next requests (then 200 again).
    pub fn script(&self, answers: impl IntoIterator<Item = Answer>) {
        if let Ok(mut script) = self.script.lock() {
            script.extend(answers);
        }
    }

    /// Every request so far.
    pub fn received(&self) -> Vec<Received> {
        self.received.lock().map(|r| r.clone()).unwrap_or_default()
    }
}

impl Drop for HttpSink {
    fn drop(&mut self) {
        self.server.unblock();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
