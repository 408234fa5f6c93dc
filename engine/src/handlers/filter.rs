//! A handler's `match`: globs on category, eventtype and objtype.

use super::DispatchedEvent;
use crate::config::filter::glob_set;
use crate::config::EventFilter;
use globset::GlobSet;

/// Decides which events a handler gets. A field with no patterns matches every event; a field
/// with patterns matches when the event has that field and one pattern matches it.
#[derive(Clone)]
pub struct EventMatcher {
    category: Option<GlobSet>,
    eventtype: Option<GlobSet>,
    objtype: Option<GlobSet>,
}

impl EventMatcher {
    pub fn new(filter: &EventFilter) -> Result<Self, String> {
        Ok(EventMatcher {
            category: glob_set("category", &filter.category)?,
            eventtype: glob_set("eventtype", &filter.eventtype)?,
            objtype: glob_set("objtype", &filter.objtype)?,
        })
    }

    /// Whether the handler takes this event.
    pub fn matches(&self, event: &DispatchedEvent<'_>) -> bool {
        if let Some(set) = &self.category {
            if !set.is_match(event.event.category) {
                return false;
            }
        }
        let field_matches = |set: &Option<GlobSet>, value: Option<&str>| match set {
            None => true,
            Some(set) => value.is_some_and(|value| set.is_match(value)),
        };
        if self.eventtype.is_none() && self.objtype.is_none() {
            return true;
        }
        let header = event.header();
        field_matches(&self.eventtype, header.eventtype.as_deref())
            && field_matches(&self.objtype, header.objtype.as_deref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use buslink_plugin_api::{Body, Event, OffsetRef};

    fn event<'a>(category: &'a str, body: &'a str) -> DispatchedEvent<'a> {
        DispatchedEvent::new(Event {
            offset: OffsetRef::Int(1),
            timestamp: Default::default(),
            category,
            body: Body::Json(body),
        })
    }

    #[test]
    fn globs_select_by_every_field() {
        let matcher = EventMatcher::new(&EventFilter {
            category: vec!["base".into()],
            eventtype: vec!["added".into(), "modified".into()],
            objtype: vec!["SRV*".into()],
        })
        .unwrap();
        let added = r#"{"eventtype":"added","objtype":"SRVUsers"}"#;
        assert!(matcher.matches(&event("base", added)));
        assert!(!matcher.matches(&event("initsync", added)));
        assert!(!matcher.matches(&event(
            "base",
            r#"{"eventtype":"removed","objtype":"SRVUsers"}"#
        )));
        assert!(!matcher.matches(&event("base", r#"{"eventtype":"added","objtype":"Users"}"#)));
        assert!(!matcher.matches(&event("base", r#"{"eventtype":"added","objtype":null}"#)));
        let all = EventMatcher::new(&EventFilter::default()).unwrap();
        assert!(all.matches(&event("x", "not json")));
    }
}
