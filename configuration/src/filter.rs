//! A handler's `match` table: glob patterns on category, eventtype and objtype (the
//! `globset` crate's syntax). Compiled here, where the config is checked, and by the handlers'
//! matcher from the same function, so the two never disagree on what a pattern means.

use crate::EventFilter;
use globset::{Glob, GlobSet, GlobSetBuilder};

/// The patterns of field `field` (`category`, `eventtype`, `objtype`) as one set; `None` for
/// no patterns (every event matches). `Err` names the field and the pattern at fault.
pub fn glob_set(field: &str, patterns: &[String]) -> Result<Option<GlobSet>, String> {
    if patterns.is_empty() {
        return Ok(None);
    }
    let mut builder = GlobSetBuilder::new();
    for pattern in patterns {
        builder.add(
            Glob::new(pattern)
                .map_err(|e| format!("match.{field}: bad pattern '{pattern}': {e}"))?,
        );
    }
    builder
        .build()
        .map(Some)
        .map_err(|e| format!("match.{field}: {e}"))
}

/// Checks every pattern of `filter`.
pub fn check(filter: &EventFilter) -> Result<(), String> {
    glob_set("category", &filter.category)?;
    glob_set("eventtype", &filter.eventtype)?;
    glob_set("objtype", &filter.objtype)?;
    Ok(())
}
