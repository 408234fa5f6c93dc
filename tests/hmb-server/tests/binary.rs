//! The binary as a child process, driven through `/_admin`.

mod support;

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};
use support::*;

/// Kills the child if the test fails before it stopped.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn spawn(args: &[&str]) -> (Guard, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_buslink-hmb-server"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("binary starts");
    let stdout = child.stdout.take().expect("piped stdout");
    let guard = Guard(child);
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("first line");
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_owned();
    (guard, format!("http://{addr}"))
}

#[test]
fn binary_prints_address_and_obeys_admin_endpoints() {
    let (mut child, base) = spawn(&["--port", "0", "-b", "2", "-c", "5"]);
    let agent = agent();
    assert_eq!(get(&agent, &format!("{base}/_admin/health")).status, 200);

    for i in 0..3 {
        let a = post_json(
            &agent,
            &format!("{base}/_admin/publish/t"),
            &json!({"type":"N","queue":"Q","data":{"i":i}}).to_string(),
        );
        assert_eq!(a.json(), json!({ "seq": i }));
    }
    let info = get(&agent, &format!("{base}/t/info")).json();
    assert_eq!(info["queue"]["Q"]["startseq"], 1, "buffer of 2: {info}");

    let a = post_json(
        &agent,
        &format!("{base}/_admin/faults"),
        r#"{"endpoint":"open","action":{"kind":"status","code":503}}"#,
    );
    let id = a.json()["id"].as_u64().expect("fault id");
    let listed = get(&agent, &format!("{base}/_admin/faults")).json();
    assert_eq!(listed[0]["id"], id);
    let a = post_json(&agent, &format!("{base}/t/open"), "{}");
    assert_eq!(a.status, 503);
    let listed = get(&agent, &format!("{base}/_admin/faults")).json();
    assert_eq!(listed[0]["hits"], 1);
    let bad = post_json(&agent, &format!("{base}/_admin/faults"), r#"{"action":{}}"#);
    assert_eq!(bad.status, 400);

    let a = post_json(
        &agent,
        &format!("{base}/t/open"),
        r#"{"queue":{"Q":{"seq":0}}}"#,
    );
    let sid = a.json()["sid"].as_str().expect("sid").to_owned();
    let sessions = get(&agent, &format!("{base}/_admin/sessions/t")).json();
    assert_eq!(sessions[0]["sid"], Value::String(sid.clone()));
    assert_eq!(sessions[0]["active"], false);

    let a = request(
        &agent,
        "POST",
        &format!("{base}/_admin/restart?keep_queues=true"),
        &[],
        Some(b""),
    )
    .expect("restart");
    assert_eq!(a.status, 204);
    assert_eq!(get(&agent, &format!("{base}/t/recv/{sid}")).status, 400);
    assert_eq!(
        get(&agent, &format!("{base}/t/info")).json()["queue"]["Q"]["endseq"],
        3
    );

    let a = request(
        &agent,
        "POST",
        &format!("{base}/_admin/shutdown"),
        &[],
        Some(b""),
    )
    .expect("shutdown");
    assert_eq!(a.status, 204);
    let mut status = None;
    wait_until(Duration::from_secs(10), "the process to exit", || {
        status = child.0.try_wait().expect("try_wait");
        status.is_some()
    });
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
}
