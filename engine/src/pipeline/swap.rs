//! A reload's handler swap, between two batches.

use super::commit::Committer;
use super::PipelineError;
use crate::error_queue::ErrorQueue;
use crate::handlers::ConfiguredHandler;

/// Replaces the handlers by those of a reload, between two batches: what was handled is
/// committed first (the old handlers synced), the new ones are built with the output positions
/// just committed (an exactly-once file they keep is not cut), and their positions are
/// committed before the next event. New handlers that cannot be built leave the old ones.
pub(super) fn swap_handlers(
    control: Option<&crate::steering::Shared>,
    swap: crate::steering::HandlerSwap,
    handlers: &mut Vec<ConfiguredHandler>,
    queue: &mut ErrorQueue,
    committer: &mut Committer<'_>,
) -> Result<(), PipelineError> {
    committer.commit(handlers, queue)?;
    let committed = committer
        .last_record
        .as_ref()
        .map(|record| record.outputs.clone())
        .unwrap_or_default();
    match crate::handlers::build(
        &swap.handlers,
        &swap.base_dir,
        &swap.plugin_dirs,
        &committed,
    ) {
        Ok(new) => {
            let names: Vec<&str> = new.iter().map(|h| h.name.as_str()).collect();
            tracing::info!(
                "reload: handlers swapped at a batch boundary: {}",
                names.join(", ")
            );
            *handlers = new;
            committer.commit_outputs(handlers)?;
            crate::error_queue::warn_orphans(queue, &swap.handlers);
        }
        Err(problems) => {
            tracing::error!(
                "reload: the new handlers could not be built; the old ones stay (the next \
                 reload tries again): {}",
                problems.join("; ")
            );
            if let Some(control) = control {
                control.note_swap_failure();
            }
        }
    }
    Ok(())
}
