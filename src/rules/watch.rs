//! Hot reload of the rules directory, through the crate's one watcher
//! ([`crate::reload`]): the directory is watched recursively (so `lists/`
//! counts), reloaded whole after a quiet period, and swapped in only if every
//! file in it is valid. A rejected directory is logged problem by problem and
//! counted; the running set stays in force.

use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwap;
use tracing::{info, warn};

use super::{Problem, RuleSet, RulesError};
use crate::reload::{self, Reloadable, WatchError};

pub use crate::reload::WatchOptions;

/// The running rule set, shared between the engine's workers and the watcher.
pub type RulesHandle = Arc<ArcSwap<RuleSet>>;
/// A running watch of the rules directory.
pub type RuleWatcher = reload::Watcher<RuleSet>;
/// What the rules watcher has done.
pub type ReloadStatus = reload::ReloadStatus<RulesError>;

impl Reloadable for RuleSet {
    type Error = RulesError;
    const KIND: &'static str = "rules";

    fn load(path: &Path) -> Result<Self, RulesError> {
        RuleSet::load_dir(path)
    }
    fn reload_key(&self) -> &str {
        RuleSet::version(self)
    }
    /// Names what changed, by rule id, so an analyst's edit is visible in the
    /// log without diffing files.
    fn log_applied(&self, previous: Option<&RuleSet>, path: &Path) {
        let empty = RuleSet::empty();
        let changes = self.changes_since(previous.unwrap_or(&empty));
        info!(
            dir = %path.display(),
            version = self.version(),
            previous = previous.map_or("none", RuleSet::version),
            rules = self.rules().len(),
            %changes,
            "rules reloaded"
        );
    }
    fn log_rejection(error: &RulesError, path: &Path, running: &str) {
        match error {
            RulesError::Invalid { problems } => {
                for p in problems {
                    warn!(problem = %p, running, "rules rejected; keeping the running set");
                }
            }
            other => warn!(dir = %path.display(), error = %other, running, "rules rejected; keeping the running set"),
        }
    }
}

impl reload::ReloadStatus<RulesError> {
    /// The positioned problems of the last rejection, if it was an invalid
    /// directory (rather than an I/O failure).
    pub fn last_problems(&self) -> &[Problem] {
        self.last_rejection.as_deref().map_or(&[], RulesError::problems)
    }
}

/// Wrap a rule set in a handle.
pub fn new_handle(set: RuleSet) -> RulesHandle {
    Arc::new(ArcSwap::from_pointee(set))
}

/// Load `dir` now and swap it in if it is valid and differs from the running
/// set. Returns whether a new set was swapped in; on error the running set is
/// untouched and every problem is logged at warn.
pub fn reload_now(dir: &Path, handle: &RulesHandle) -> Result<bool, RulesError> {
    reload::reload_now::<RuleSet, _>(dir, handle.as_ref())
}

/// Watch `dir` with the default options.
pub fn watch(dir: &Path, handle: RulesHandle) -> Result<RuleWatcher, WatchError> {
    watch_with(dir, handle, WatchOptions::default())
}

/// Watch `dir` and keep `handle` up to date with it. Before returning, the
/// directory is reloaded once, so a change made between the caller's initial
/// load and the start of the watch is not missed.
pub fn watch_with(dir: &Path, handle: RulesHandle, options: WatchOptions) -> Result<RuleWatcher, WatchError> {
    reload::watch(dir, dir, handle, options)
}
