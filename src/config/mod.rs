//! The node configuration: YAML with Nebula's keys, defaults, merging of a config directory and
//! validation with errors that name the file and the field.
//!
//! Loading is pure apart from reading the config files themselves: it does not read the PKI
//! files, resolve names or touch the network (`cos-mesh check` and the daemon do that).
//!
//! ```text
//! Config::load(path) ─┬─ each file: typed parse (unknown keys / bad values → file:line:col)
//!                     ├─ each file: warnings for Nebula keys not implemented here (compat)
//!                     ├─ merge in file-name order (merge: maps deep, lists replace, firewall rules append)
//!                     └─ validate the merged config (validate: errors name file and field)
//! ```

mod allow_list;
mod compat;
mod located;
mod merge;
pub mod schema;
mod validate;
mod values;

use std::fmt;
use std::path::{Path, PathBuf};

use thiserror::Error;

pub use allow_list::LocalAllowList;
pub use schema::*;
pub use validate::{IPV6_MIN_MTU, validate_overlay};

/// Largest config file read; real ones are a few kilobytes.
const MAX_FILE: u64 = 4 << 20;

/// A configuration that loaded and validated, with what the operator should hear about it.
#[derive(Debug)]
pub struct LoadedConfig {
    pub config: Config,
    /// Settings accepted but without effect, or suspicious combinations. Print them at start.
    pub warnings: Vec<Warning>,
    /// The files read, in merge order.
    pub files: Vec<PathBuf>,
    origins: merge::Merged,
}

impl LoadedConfig {
    /// The file that set `field` (dotted, e.g. `pki.key`), for messages about it.
    pub fn origin(&self, field: &str) -> PathBuf {
        self.origins.origin(field)
    }

    /// [`validate_overlay`] against an IPv4-only certificate whose network is `overlay`.
    pub fn check_overlay(&self, overlay: ipnet::Ipv4Net) -> Result<(), ConfigError> {
        self.check_networks(&[ipnet::IpNet::V4(overlay)])
    }

    /// [`validate_overlay`] against every network (IPv4 and IPv6) of this node's certificate,
    /// with the error naming the file.
    pub fn check_networks(&self, networks: &[ipnet::IpNet]) -> Result<(), ConfigError> {
        validate_overlay(&self.config, networks).map_err(|(field, reason)| ConfigError::Invalid {
            file: self.origin(&field),
            field,
            reason,
        })
    }
}

/// A warning about a key, naming the file it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    pub file: PathBuf,
    /// Dotted key path, e.g. `cipher` or `stats.interval`.
    pub key: String,
    pub message: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}: {}", self.file.display(), self.key, self.message)
    }
}

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("reading config {}: {error}", path.display())]
    Read { path: PathBuf, error: std::io::Error },
    #[error("config {} is larger than {MAX_FILE} bytes", path.display())]
    TooLarge { path: PathBuf },
    #[error("config directory {} holds no *.yml or *.yaml file", path.display())]
    EmptyDir { path: PathBuf },
    /// YAML that does not fit the schema: a syntax error, an unknown key, a bad value.
    #[error("{}:{line}:{column}: {message}", file.display())]
    Parse { file: PathBuf, line: usize, column: usize, message: String },
    /// A value that parsed but is not acceptable.
    #[error("{}: {field}: {reason}", file.display())]
    Invalid { file: PathBuf, field: String, reason: String },
}

impl Config {
    /// Loads `path`: a file, or a directory whose `*.yml`/`*.yaml` files merge in name order.
    pub fn load(path: &Path) -> Result<LoadedConfig, ConfigError> {
        let files = config_files(path)?;
        let mut merged = merge::Merged::default();
        let mut warnings = Vec::new();
        for file in &files {
            let text = read_text(file)?;
            // Typed parse of each file alone: every section defaults, so a partial file is
            // complete, and errors carry this file's line numbers.
            let mut at = String::new();
            serde_saphyr::with_deserializer_from_str(&text, |de| {
                serde_path_to_error::deserialize::<_, Config>(de).map_err(|e| {
                    at = located::dotted(e.path());
                    e.into_inner()
                })
            })
            .map_err(|e| parse_error(file, &text, &at, &e))?;
            let doc: serde_json::Value = serde_saphyr::from_str(&text).map_err(|e| parse_error(file, &text, "", &e))?;
            warnings.extend(compat::warnings(file, &doc));
            merged.add(file, doc);
        }
        let value = std::mem::take(&mut merged.value);
        let config: Config = if value.is_null() {
            Config::default()
        } else {
            // The files each parsed alone; what fails here is a value the YAML parser coerced
            // (a quoted "yes" for a boolean): blame the file that set it, at its line.
            serde_path_to_error::deserialize(value).map_err(|e| {
                let path = located::dotted(e.path());
                let file = merged.origin(&path);
                let text = read_text(&file).unwrap_or_default();
                located::type_error(&file, &text, &path, &e.inner().to_string(), None)
            })?
        };
        validate::validate(&config, &|field| merged.origin(field), &mut warnings)?;
        Ok(LoadedConfig { config, warnings, files, origins: merged })
    }
}

/// The control socket of the daemon started with `path`, from `control.socket` and `tun.dev`
/// alone: `status`, `members` and `reload` must find a running daemon even when the file on
/// disk has since been broken (that is often why the operator is asking). Of a file with a
/// YAML syntax error, the part before the error is read; nothing else is validated.
pub fn control_addr_of(path: &Path) -> Result<ControlAddr, ConfigError> {
    let mut merged = merge::Merged::default();
    for file in config_files(path)? {
        let text = read_text(&file)?;
        if let Some(doc) = readable_prefix(&text) {
            merged.add(&file, doc);
        }
    }
    let get = |section: &str, key: &str| merged.value.get(section)?.get(key)?.as_str().map(str::to_string);
    Ok(match (get("control", "socket"), get("tun", "dev")) {
        (Some(socket), _) => ControlAddr::from(PathBuf::from(socket)),
        (None, dev) => ControlAddr::for_tun(dev.as_deref().unwrap_or(&Tun::default().dev)),
    })
}

/// The document of `text`, or of its lines before the first syntax error (a few tries, as the
/// cut itself can leave a dangling key).
fn readable_prefix(text: &str) -> Option<serde_json::Value> {
    let mut lines: Vec<&str> = text.lines().collect();
    for _ in 0..4 {
        match serde_saphyr::from_str::<serde_json::Value>(&lines.join("\n")) {
            Ok(doc) => return Some(doc),
            Err(e) => {
                let bad = e.location().map(|l| l.line() as usize).filter(|l| *l >= 1 && *l <= lines.len())?;
                lines.truncate(bad - 1);
            }
        }
    }
    None
}

/// The files `path` stands for, in merge order.
fn config_files(path: &Path) -> Result<Vec<PathBuf>, ConfigError> {
    let read_err = |error| ConfigError::Read { path: path.to_path_buf(), error };
    if !path.metadata().map_err(read_err)?.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files = Vec::new();
    for entry in std::fs::read_dir(path).map_err(read_err)? {
        let p = entry.map_err(read_err)?.path();
        let yaml = matches!(p.extension().and_then(|e| e.to_str()), Some("yml" | "yaml"));
        if yaml && p.is_file() {
            files.push(p);
        }
    }
    if files.is_empty() {
        return Err(ConfigError::EmptyDir { path: path.to_path_buf() });
    }
    files.sort();
    Ok(files)
}

fn read_text(file: &Path) -> Result<String, ConfigError> {
    use std::io::Read;
    let read_err = |error| ConfigError::Read { path: file.to_path_buf(), error };
    let f = std::fs::File::open(file).map_err(read_err)?;
    let mut text = String::new();
    f.take(MAX_FILE + 1).read_to_string(&mut text).map_err(read_err)?;
    if text.len() as u64 > MAX_FILE {
        return Err(ConfigError::TooLarge { path: file.to_path_buf() });
    }
    Ok(text)
}

fn parse_error(file: &Path, text: &str, path: &str, e: &serde_saphyr::Error) -> ConfigError {
    let (line, column) = e.location().map(|l| (l.line() as usize, l.column() as usize)).unwrap_or((0, 0));
    let full = e.without_snippet().to_string();
    let suffix = format!(" at line {line}, column {column}");
    let message = operator_words(full.strip_suffix(&suffix).unwrap_or(&full));
    if path.is_empty() || message.starts_with("unknown field") {
        // Syntax errors have no key; unknown keys are found at the key itself.
        return ConfigError::Parse { file: file.to_path_buf(), line, column, message };
    }
    located::type_error(file, text, path, &message, Some((line, column)))
}

/// The parser's advice is for programmers (`set DuplicateKeyPolicy in Options`); say what is
/// wrong with the file instead.
fn operator_words(msg: &str) -> String {
    if msg.starts_with("multiple YAML documents") {
        return "a config file holds one YAML document, this one has several (---); split them into files of a config directory".into();
    }
    match msg.split_once(", set DuplicateKeyPolicy") {
        Some((head, _)) => format!("{head} (a key may appear only once per map)"),
        None => msg.to_string(),
    }
}

#[cfg(test)]
mod tests;
