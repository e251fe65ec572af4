//! Configuration: the operator's file (`fds.toml`), read in two stages.
//!
//! Stage one is serde structs that mirror the file and reject unknown keys, so a
//! misspelt setting is an error instead of a silently ignored default. Stage two,
//! [`Config::from_file`], checks every value and reports *every* problem at once,
//! each naming the key, then builds the strict runtime types the engine takes
//! ([`StateConfig`], the skew bound). Nothing downstream re-checks a value.
//!
//! Every key is optional; an absent file or section means the defaults, which
//! are the ones documented in `fds.example.toml` at the top of the repository.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::state::StateConfig;

const DAY_MS: i64 = 86_400_000;

/// Why a configuration file was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}", path = path.display())]
    Io { path: PathBuf, source: std::io::Error },
    /// Not TOML, or an unknown key, or a value of the wrong type.
    #[error("{path}: {message}")]
    Syntax { path: PathBuf, message: String },
    /// Well-formed, but some values make no sense: all of them, one per line.
    #[error("{path}: {} invalid settings:\n{}", problems.len(), problems.join("\n"))]
    Invalid { path: PathBuf, problems: Vec<String> },
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    state: RawState,
    #[serde(default)]
    engine: RawEngine,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawState {
    account_ttl_days: Option<i64>,
    payee_ttl_days: Option<i64>,
    device_ttl_days: Option<i64>,
    max_known_payees: Option<i64>,
    max_known_devices: Option<i64>,
    max_payee_senders: Option<i64>,
    max_device_accounts: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEngine {
    rules_dir: Option<PathBuf>,
    max_skew_minutes: Option<i64>,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub state: StateConfig,
    pub rules_dir: PathBuf,
    /// Refuse events dated more than this far ahead of the wall clock (live
    /// consumption); `None` trusts the recorded times, as replay does.
    pub max_skew_ms: Option<i64>,
}

impl Default for Config {
    fn default() -> Self {
        Config { state: StateConfig::default(), rules_dir: PathBuf::from("rules"), max_skew_ms: None }
    }
}

impl Config {
    /// Read and check a configuration file.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io { path: path.into(), source })?;
        Config::from_toml(&text).map_err(|e| match e {
            Problems::Syntax(message) => ConfigError::Syntax { path: path.into(), message },
            Problems::Invalid(problems) => ConfigError::Invalid { path: path.into(), problems },
        })
    }

    fn from_toml(text: &str) -> Result<Config, Problems> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| Problems::Syntax(e.to_string()))?;
        let mut problems = Vec::new();
        let defaults = StateConfig::default();
        let mut days = |key: &str, value: Option<i64>, default_ms: i64, min: i64| match value {
            None => default_ms,
            Some(d) if (min..=3650).contains(&d) => d * DAY_MS,
            Some(d) => {
                problems.push(format!("state.{key} = {d}: must be between {min} and 3650 days"));
                default_ms
            }
        };
        // Idle entities must outlive the 30-day window, or "first seen" and the
        // 30-day sums would be computed from a half-forgotten history.
        let account_ttl_ms = days("account_ttl_days", raw.state.account_ttl_days, defaults.account_ttl_ms, 31);
        let payee_ttl_ms = days("payee_ttl_days", raw.state.payee_ttl_days, defaults.payee_ttl_ms, 31);
        let device_ttl_ms = days("device_ttl_days", raw.state.device_ttl_days, defaults.device_ttl_ms, 2);
        let mut cap = |key: &str, value: Option<i64>, default: usize| match value {
            None => default,
            Some(n) if (1..=65_535).contains(&n) => n as usize,
            Some(n) => {
                problems.push(format!("state.{key} = {n}: must be between 1 and 65535"));
                default
            }
        };
        let state = StateConfig {
            account_ttl_ms,
            payee_ttl_ms,
            device_ttl_ms,
            max_known_payees: cap("max_known_payees", raw.state.max_known_payees, defaults.max_known_payees),
            max_known_devices: cap("max_known_devices", raw.state.max_known_devices, defaults.max_known_devices),
            max_payee_senders: cap("max_payee_senders", raw.state.max_payee_senders, defaults.max_payee_senders),
            max_device_accounts: cap(
                "max_device_accounts",
                raw.state.max_device_accounts,
                defaults.max_device_accounts,
            ),
        };
        let max_skew_ms = match raw.engine.max_skew_minutes {
            None => None,
            Some(m) if (1..=525_600).contains(&m) => Some(m * 60_000),
            Some(m) => {
                problems.push(format!("engine.max_skew_minutes = {m}: must be between 1 and 525600 (one year)"));
                None
            }
        };
        let rules_dir = raw.engine.rules_dir.unwrap_or_else(|| PathBuf::from("rules"));
        if rules_dir.as_os_str().is_empty() {
            problems.push("engine.rules_dir is empty".to_owned());
        }
        if problems.is_empty() {
            Ok(Config { state, rules_dir, max_skew_ms })
        } else {
            Err(Problems::Invalid(problems))
        }
    }
}

enum Problems {
    Syntax(String),
    Invalid(Vec<String>),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invalid(text: &str) -> Vec<String> {
        match Config::from_toml(text) {
            Err(Problems::Invalid(p)) => p,
            Err(Problems::Syntax(m)) => panic!("syntax error: {m}"),
            Ok(_) => panic!("accepted"),
        }
    }

    #[test]
    fn empty_file_means_defaults() {
        let c = Config::from_toml("").ok().unwrap();
        assert_eq!(c.state.account_ttl_ms, StateConfig::default().account_ttl_ms);
        assert_eq!(c.max_skew_ms, None);
        assert_eq!(c.rules_dir, PathBuf::from("rules"));
    }

    #[test]
    fn values_become_runtime_units() {
        let c = Config::from_toml(
            "[state]\naccount_ttl_days = 120\nmax_known_payees = 512\n[engine]\nmax_skew_minutes = 30\n",
        )
        .ok()
        .unwrap();
        assert_eq!(c.state.account_ttl_ms, 120 * DAY_MS);
        assert_eq!(c.state.max_known_payees, 512);
        assert_eq!(c.max_skew_ms, Some(30 * 60_000));
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let p = invalid("[state]\naccount_ttl_days = 7\nmax_known_devices = 0\n[engine]\nmax_skew_minutes = -1\n");
        assert_eq!(p.len(), 3, "{p:?}");
        assert!(p[0].contains("state.account_ttl_days = 7"));
        assert!(p[1].contains("state.max_known_devices = 0"));
        assert!(p[2].contains("engine.max_skew_minutes = -1"));
    }

    #[test]
    fn unknown_keys_are_errors_not_ignored() {
        match Config::from_toml("[state]\naccount_ttl = 90\n") {
            Err(Problems::Syntax(m)) => assert!(m.contains("unknown field `account_ttl`"), "{m}"),
            _ => panic!("an unknown key was accepted"),
        }
    }
}
