//! Writing Hermes sqlite buses the way the real Hermes server does (schema, pretty-printed JSON
//! with a 4-space indent, one commit per event, journal mode `delete`, purge + `VACUUM`).

use rusqlite::Connection;
use serde::Serialize;
use serde_json::{json, Value};
use std::path::Path;

/// A writer on a Hermes sqlite bus file.
pub struct HermesBusWriter {
    connection: Connection,
}

impl HermesBusWriter {
    /// Opens (creating the file and table if needed) a bus for writing.
    pub fn open(path: &Path) -> rusqlite::Result<HermesBusWriter> {
        let connection = Connection::open(path)?;
        connection.pragma_update(None, "journal_mode", "delete")?;
        connection.execute(
            "CREATE TABLE IF NOT EXISTS hermesmessages (msgid INTEGER PRIMARY KEY AUTOINCREMENT, \
             data TEXT NOT NULL, timestamp REAL NOT NULL)",
            [],
        )?;
        Ok(HermesBusWriter { connection })
    }

    /// Appends one event (one transaction, like the Hermes producer); returns its msgid.
    pub fn append(&self, data: &str, timestamp: f64) -> rusqlite::Result<i64> {
        self.connection.execute(
            "INSERT INTO hermesmessages (data, timestamp) VALUES (?1, ?2)",
            (data, timestamp),
        )?;
        Ok(self.connection.last_insert_rowid())
    }

    /// Appends many events in one transaction (fast, for big generated buses).
    pub fn append_all(
        &mut self,
        events: impl IntoIterator<Item = (String, f64)>,
    ) -> rusqlite::Result<()> {
        let transaction = self.connection.transaction()?;
        {
            let mut insert = transaction
                .prepare("INSERT INTO hermesmessages (data, timestamp) VALUES (?1, ?2)")?;
            for (data, timestamp) in events {
                insert.execute((data, timestamp))?;
            }
        }
        transaction.commit()
    }

    /// Deletes every event with msgid <= `msgid` and runs `VACUUM`, as the producer's retention
    /// purge does.
    pub fn purge_through(&self, msgid: i64) -> rusqlite::Result<usize> {
        let deleted = self
            .connection
            .execute("DELETE FROM hermesmessages WHERE msgid <= ?1", [msgid])?;
        self.connection.execute_batch("VACUUM")?;
        Ok(deleted)
    }
}

/// JSON pretty-printed with a 4-space indent, as Hermes writes event bodies.
pub fn hermes_json(value: &Value) -> String {
    let mut out = Vec::new();
    let formatter = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut serializer = serde_json::Serializer::with_formatter(&mut out, formatter);
    // Serialising a Value into a Vec cannot fail.
    let _ = value.serialize(&mut serializer);
    String::from_utf8(out).unwrap_or_default()
}

fn event(
    evcategory: &str,
    eventtype: &str,
    objtype: Option<&str>,
    objpkey: Value,
    objattrs: Value,
) -> String {
    hermes_json(&json!({
        "evcategory": evcategory,
        "eventtype": eventtype,
        "objtype": objtype,
        "objpkey": objpkey,
        "objattrs": objattrs,
        "step": 0,
        "isPartiallyProcessed": false,
    }))
}

fn schema() -> Value {
    json!({
        "SRVGroups": {
            "HERMES_ATTRIBUTES": ["description", "group_id", "name"],
            "SECRETS_ATTRIBUTES": [],
            "PRIMARYKEY_ATTRIBUTE": "group_id",
            "FOREIGN_KEYS": {}
        },
        "SRVUsers": {
            "HERMES_ATTRIBUTES": ["created", "displayname", "first_name", "last_name", "login", "mail", "phone", "user_id"],
            "SECRETS_ATTRIBUTES": [],
            "PRIMARYKEY_ATTRIBUTE": "user_id",
            "FOREIGN_KEYS": {}
        },
        "SRVGroupsMembers": {
            "HERMES_ATTRIBUTES": ["group_id", "user_id"],
            "SECRETS_ATTRIBUTES": [],
            "PRIMARYKEY_ATTRIBUTE": ["group_id", "user_id"],
            "FOREIGN_KEYS": {"group_id": ["SRVGroups", "group_id"], "user_id": ["SRVUsers", "user_id"]}
        }
    })
}

fn user(id: u64) -> Value {
    json!({
        "user_id": id,
        "login": format!("user{id}"),
        "first_name": "Jean",
        "last_name": format!("Dupont-{id}"),
        "displayname": format!("Jean Dupont {id}"),
        "mail": format!("user{id}@example.org"),
        "phone": format!("+33 3 88 00 {:02} {:02}", id % 100, (id / 100) % 100),
        "created": "HermesDatetime(2024-01-01T08:30:00Z)",
    })
}

/// `count` realistic Hermes events shaped like the fixture bus, with their timestamps: an
/// initsync sequence (init-start with the schema, groups, users, memberships, init-stop), then
/// base events cycling through added / modified / removed of users and memberships.
pub fn hermes_events(count: usize) -> impl Iterator<Item = (String, f64)> {
    let start = 1_795_345_271.0_f64;
    let initsync = {
        let mut events = vec![event("initsync", "init-start", None, Value::Null, schema())];
        for group in 1..=4u64 {
            events.push(event(
                "initsync",
                "added",
                Some("SRVGroups"),
                json!(group),
                json!({"group_id": group, "name": format!("group{group}"), "description": "A group"}),
            ));
        }
        for id in 1001..=1020u64 {
            events.push(event(
                "initsync",
                "added",
                Some("SRVUsers"),
                json!(id),
                user(id),
            ));
        }
        events.push(event("initsync", "init-stop", None, Value::Null, json!({})));
        events
    };
    let base = (0u64..).map(|i| {
        let id = 2000 + i / 3;
        match i % 3 {
            0 => event("base", "added", Some("SRVUsers"), json!(id), user(id)),
            1 => event(
                "base",
                "modified",
                Some("SRVUsers"),
                json!(id),
                json!({"added": {}, "modified": {"mail": format!("new{id}@example.org")}, "removed": {"phone": null}}),
            ),
            _ => event(
                "base",
                "added",
                Some("SRVGroupsMembers"),
                json!([1 + id % 4, id]),
                json!({"group_id": 1 + id % 4, "user_id": id}),
            ),
        }
    });
    initsync
        .into_iter()
        .chain(base)
        .take(count)
        .enumerate()
        .map(move |(i, data)| (data, start + i as f64 * 0.001_25))
}
