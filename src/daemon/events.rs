//! Logs the mesh core's events at the level each one carries, in the words it carries.

use tracing::{debug, info, warn};

use crate::mesh::{Event, Level};

pub(super) fn log_event(e: &Event) {
    match e.level() {
        Level::Debug => debug!("{e}"),
        Level::Info => info!("{e}"),
        Level::Warn => warn!("{e}"),
    }
}
