//! Logs to stderr (journald captures it), as text or JSON; the level is reloadable.

use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::prelude::*;
use tracing_subscriber::{Registry, reload};

use crate::config::{LogFormat, LogLevel, Logging};

pub struct LogHandle(reload::Handle<LevelFilter, Registry>);

pub fn level(l: LogLevel) -> LevelFilter {
    match l {
        LogLevel::Panic | LogLevel::Fatal | LogLevel::Error => LevelFilter::ERROR,
        LogLevel::Warning => LevelFilter::WARN,
        LogLevel::Info => LevelFilter::INFO,
        LogLevel::Debug => LevelFilter::DEBUG,
        LogLevel::Trace => LevelFilter::TRACE,
    }
}

/// Installs the global subscriber. Under systemd (`JOURNAL_STREAM` set) timestamps are left
/// to the journal.
pub fn init(cfg: &Logging) -> LogHandle {
    let (filter, handle) = reload::Layer::new(level(cfg.level));
    let journald = std::env::var_os("JOURNAL_STREAM").is_some();
    let registry = tracing_subscriber::registry().with(filter);
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let base = tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_target(false).with_ansi(ansi);
    let result = match (cfg.format, journald) {
        (LogFormat::Json, _) => registry.with(base.json()).try_init(),
        (LogFormat::Text, true) => registry.with(base.without_time()).try_init(),
        (LogFormat::Text, false) => registry.with(base).try_init(),
    };
    let _ = result; // already installed (tests run several daemons in one process): keep it
    LogHandle(handle)
}

impl LogHandle {
    pub fn set(&self, l: LogLevel) {
        let _ = self.0.modify(|f| *f = level(l));
    }
}
