//! The trait a handler plugin implements: typed calls for Hermes events, in the spirit of
//! hermes-client's `on_<objtype>_<eventtype>` methods.

use crate::consumer::Context;
use crate::error::PluginResult;
use crate::event::{Body, Event};
use crate::hermes::HermesEvent;
use crate::hermes_value::Change;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// A handler of events, written as a plugin (`type = "plugin"` in a config's `[[handlers]]`).
///
/// The host calls [`handle`](Self::handle) for each event the handler's `match` selects, in bus
/// order. The default `handle` parses Hermes events and routes them to the typed methods below,
/// whose defaults do nothing: implement only what you need. An `Err` (or a panic, which the
/// host contains) is a failure: the host retries and then applies the handler's `on_failure`
/// policy (`stop`, `dead-letter` or `error-queue`).
pub trait EventHandler: Send + 'static {
    /// Takes one event. The default routes Hermes events to the typed methods and other events
    /// to [`on_other`](Self::on_other).
    fn handle(&mut self, event: &Event<'_>) -> PluginResult<()> {
        route(self, event)
    }

    /// An object was added (a base event, or one of an initsync sequence: see
    /// [`Change::initsync`]).
    fn on_added(&mut self, change: &Change) -> PluginResult<()> {
        let _ = change;
        Ok(())
    }

    /// An object's attributes changed ([`Attributes::Diff`](crate::hermes_value::Attributes)).
    fn on_modified(&mut self, change: &Change) -> PluginResult<()> {
        let _ = change;
        Ok(())
    }

    /// An object was removed.
    fn on_removed(&mut self, change: &Change) -> PluginResult<()> {
        let _ = change;
        Ok(())
    }

    /// An initsync sequence begins; `schema` is the data schema it carries. What follows, up
    /// to [`on_initsync_stop`](Self::on_initsync_stop), is the whole state of the source.
    fn on_initsync_start(&mut self, schema: &Value) -> PluginResult<()> {
        let _ = schema;
        Ok(())
    }

    /// The initsync sequence is complete.
    fn on_initsync_stop(&mut self) -> PluginResult<()> {
        Ok(())
    }

    /// The data schema changed (a `dataschema` event).
    fn on_schema(&mut self, schema: &Value) -> PluginResult<()> {
        let _ = schema;
        Ok(())
    }

    /// An event that is not a Hermes event.
    fn on_other(&mut self, event: &Event<'_>) -> PluginResult<()> {
        let _ = event;
        Ok(())
    }

    /// Persist your state now: the host commits the offset of the events handled so far right
    /// after this returns `Ok` (so a crash never leaves a committed event unsaved).
    fn on_save(&mut self) -> PluginResult<()> {
        Ok(())
    }
}

/// The default routing of [`EventHandler::handle`].
pub fn route<H: EventHandler + ?Sized>(handler: &mut H, event: &Event<'_>) -> PluginResult<()> {
    let Body::Json(text) = event.body else {
        return handler.on_other(event);
    };
    let Ok(hermes) = HermesEvent::from_json(text) else {
        return handler.on_other(event);
    };
    match hermes.eventtype.as_str() {
        "init-start" => handler.on_initsync_start(&hermes.objattrs),
        "init-stop" => handler.on_initsync_stop(),
        "dataschema" => handler.on_schema(&hermes.objattrs),
        "added" | "modified" | "removed" => match Change::from_event(&hermes) {
            Some(change) => match hermes.eventtype.as_str() {
                "added" => handler.on_added(&change),
                "modified" => handler.on_modified(&change),
                _ => handler.on_removed(&change),
            },
            None => handler.on_other(event),
        },
        _ => handler.on_other(event),
    }
}

/// A handler class: how the host finds, documents, validates and builds an [`EventHandler`].
/// List it under `handlers:` in [`export_plugin!`](crate::export_plugin).
pub trait HandlerClass: EventHandler + Sized {
    /// The class name used in configs (`class = "..."`).
    const NAME: &'static str;
    /// One line saying what the handler does.
    const DESCRIPTION: &'static str;
    /// Documentation of every setting (Markdown).
    const SETTINGS_DOC: &'static str;
    /// The handler's settings (`#[serde(deny_unknown_fields)]` recommended).
    type Settings: DeserializeOwned;

    /// Checks the settings without side effects (`buslink check` calls it).
    fn validate(settings: &Self::Settings) -> PluginResult<()> {
        let _ = settings;
        Ok(())
    }

    /// Builds the handler.
    fn new(settings: Self::Settings, context: &Context) -> PluginResult<Self>;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hermes_value::Attributes;

    #[derive(Default)]
    struct Recorder(Vec<String>);

    impl EventHandler for Recorder {
        fn on_added(&mut self, change: &Change) -> PluginResult<()> {
            self.0
                .push(format!("added {} {}", change.objtype, change.objpkey));
            Ok(())
        }
        fn on_modified(&mut self, change: &Change) -> PluginResult<()> {
            let Attributes::Diff { modified, .. } = &change.attributes else {
                return Ok(());
            };
            self.0
                .push(format!("modified {} {}", change.objpkey, modified.len()));
            Ok(())
        }
        fn on_schema(&mut self, schema: &Value) -> PluginResult<()> {
            self.0.push(format!(
                "schema {}",
                schema["SRVUsers"]["PRIMARYKEY_ATTRIBUTE"]
            ));
            Ok(())
        }
        fn on_initsync_start(&mut self, _schema: &Value) -> PluginResult<()> {
            self.0.push("initsync start".into());
            Ok(())
        }
        fn on_other(&mut self, _event: &Event<'_>) -> PluginResult<()> {
            self.0.push("other".into());
            Ok(())
        }
    }

    fn event(body: &str) -> Event<'_> {
        Event {
            offset: crate::OffsetRef::Int(1),
            timestamp: Default::default(),
            category: "base",
            body: Body::Json(body),
        }
    }

    #[test]
    fn hermes_events_are_routed_to_typed_calls() {
        let mut handler = Recorder::default();
        let e = |t: &str, rest: &str| {
            format!(
                r#"{{"evcategory":"base","eventtype":"{t}",{rest},"step":0,"isPartiallyProcessed":false}}"#
            )
        };
        for body in [
            e(
                "init-start",
                r#""objtype":null,"objpkey":null,"objattrs":{}"#,
            ),
            e(
                "added",
                r#""objtype":"SRVGroupsMembers","objpkey":[1,1001],"objattrs":{"group_id":1}"#,
            ),
            e(
                "modified",
                r#""objtype":"SRVUsers","objpkey":1001,"objattrs":{"added":{},"modified":{"a":1},"removed":{}}"#,
            ),
            e(
                "dataschema",
                r#""objtype":null,"objpkey":null,"objattrs":{"SRVUsers":{"PRIMARYKEY_ATTRIBUTE":"user_id"}}"#,
            ),
            "not a hermes event".to_owned(),
        ] {
            handler.handle(&event(&body)).unwrap();
        }
        assert_eq!(
            handler.0,
            [
                "initsync start",
                "added SRVGroupsMembers [1,1001]",
                "modified 1001 1",
                "schema \"user_id\"",
                "other"
            ]
        );
    }
}
