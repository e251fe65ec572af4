//! Hot reload: watch the rules directory, reload it whole after a quiet
//! period, and swap the new set in only if it is valid.
//!
//! Readers hold a [`RulesHandle`] and call `handle.load()` per transfer: an
//! `ArcSwap` read, no lock, so a reload never stalls the hot path. Editors
//! save in several steps (truncate, write, rename, swap files), so events are
//! debounced and the *whole* directory is reloaded; a half-written file fails
//! to load, is logged and counted, and the running set stays in force until
//! the next change produces a valid directory.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use notify::event::{AccessKind, AccessMode};
use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tracing::{info, warn};

use super::{Problem, RuleSet, RulesError};

/// The running rule set, shared between the engine's workers and the watcher.
pub type RulesHandle = Arc<ArcSwap<RuleSet>>;

/// Wrap a rule set in a handle.
pub fn new_handle(set: RuleSet) -> RulesHandle {
    Arc::new(ArcSwap::from_pointee(set))
}

/// Load `dir` now and swap it in if it is valid and differs from the running
/// set. Returns whether a new set was swapped in. On error the running set is
/// untouched and every problem is logged at warn.
///
/// Meant for one reloader at a time (the watcher, or a manual trigger while
/// no watcher runs): two concurrent reloads may finish in either order.
pub fn reload_now(dir: &Path, handle: &RulesHandle) -> Result<bool, RulesError> {
    let running = handle.load().version().to_string();
    match RuleSet::load_dir(dir) {
        Ok(set) if set.version() == running => Ok(false),
        Ok(set) => {
            info!(
                dir = %dir.display(),
                version = set.version(),
                previous = %running,
                rules = set.rules().len(),
                "rules reloaded"
            );
            handle.store(Arc::new(set));
            Ok(true)
        }
        Err(e) => {
            match &e {
                RulesError::Invalid { problems } => {
                    for p in problems {
                        warn!(problem = %p, running = %running, "rules rejected; keeping the running set");
                    }
                }
                other => {
                    warn!(error = %other, running = %running, "rules rejected; keeping the running set")
                }
            }
            Err(e)
        }
    }
}

/// Tuning for [`watch_with`].
#[derive(Debug, Clone)]
pub struct WatchOptions {
    /// Reload once no change has been seen for this long. A burst of changes
    /// that never goes quiet is still reloaded after ten times this.
    pub debounce: Duration,
}

impl Default for WatchOptions {
    fn default() -> Self {
        WatchOptions { debounce: Duration::from_millis(250) }
    }
}

/// What the watcher has done, for operators and tests.
#[derive(Debug, Clone, Default)]
pub struct ReloadStatus {
    /// Loads that succeeded and swapped in a new version.
    pub reloads: u64,
    /// Loads that succeeded with the running version (nothing to swap).
    pub unchanged: u64,
    /// Loads that failed; the running set was kept.
    pub rejected: u64,
    /// Why the last failed load failed.
    pub last_rejection: Option<Arc<RulesError>>,
}

impl ReloadStatus {
    /// The positioned problems of the last rejection, if it was an invalid
    /// directory (rather than an I/O failure).
    pub fn last_problems(&self) -> &[Problem] {
        self.last_rejection.as_deref().map_or(&[], RulesError::problems)
    }
}

enum Msg {
    Changed,
    Stop,
}

/// A running watcher. Dropping it stops the file watch and joins its thread.
pub struct RuleWatcher {
    dir: PathBuf,
    /// Dropped first on shutdown so no event arrives after `Stop`.
    watcher: Option<RecommendedWatcher>,
    tx: Sender<Msg>,
    thread: Option<JoinHandle<()>>,
    status: Arc<Mutex<ReloadStatus>>,
}

impl RuleWatcher {
    pub fn status(&self) -> ReloadStatus {
        self.status.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A reader of the status that outlives borrows of the watcher, for a
    /// metrics scrape running on another thread.
    pub fn status_handle(&self) -> impl Fn() -> ReloadStatus + Send + Sync + 'static {
        let status = self.status.clone();
        move || status.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

impl Drop for RuleWatcher {
    fn drop(&mut self) {
        drop(self.watcher.take());
        let _ = self.tx.send(Msg::Stop);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Watch `dir` (recursively, so `lists/` counts) with the default options.
pub fn watch(dir: &Path, handle: RulesHandle) -> Result<RuleWatcher, RulesError> {
    watch_with(dir, handle, WatchOptions::default())
}

/// Watch `dir` and keep `handle` up to date with it.
///
/// Before returning, the directory is reloaded once, so a change made between
/// the caller's initial load and the start of the watch is not missed.
pub fn watch_with(dir: &Path, handle: RulesHandle, options: WatchOptions) -> Result<RuleWatcher, RulesError> {
    let watch_err = |source| RulesError::Watch { path: dir.to_path_buf(), source };
    let (tx, rx) = mpsc::channel();
    let events = tx.clone();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        // A watcher error may mean lost events: reloading is the safe answer.
        if event.as_ref().map_or(true, is_relevant) {
            let _ = events.send(Msg::Changed);
        }
    })
    .map_err(watch_err)?;
    watcher.watch(dir, RecursiveMode::Recursive).map_err(watch_err)?;

    let status = Arc::new(Mutex::new(ReloadStatus::default()));
    record(&status, reload_now(dir, &handle));

    let thread = {
        let (dir, status) = (dir.to_path_buf(), Arc::clone(&status));
        std::thread::Builder::new()
            .name("fds-rules-watch".into())
            .spawn(move || run(&dir, &handle, &rx, options.debounce, &status))
            .map_err(|source| RulesError::Io { path: PathBuf::from("fds-rules-watch thread"), source })?
    };
    Ok(RuleWatcher { dir: dir.to_path_buf(), watcher: Some(watcher), tx, thread: Some(thread), status })
}

/// The watcher thread: wait for a change, wait for quiet, reload, repeat.
fn run(dir: &Path, handle: &RulesHandle, rx: &Receiver<Msg>, debounce: Duration, status: &Mutex<ReloadStatus>) {
    let max_wait = debounce.saturating_mul(10);
    while let Ok(Msg::Changed) = rx.recv() {
        let first = Instant::now();
        while first.elapsed() < max_wait {
            match rx.recv_timeout(debounce) {
                Ok(Msg::Changed) => continue,
                Err(RecvTimeoutError::Timeout) => break,
                Ok(Msg::Stop) | Err(RecvTimeoutError::Disconnected) => return,
            }
        }
        record(status, reload_now(dir, handle));
    }
}

fn record(status: &Mutex<ReloadStatus>, result: Result<bool, RulesError>) {
    let mut s = status.lock().unwrap_or_else(PoisonError::into_inner);
    match result {
        Ok(true) => s.reloads += 1,
        Ok(false) => s.unchanged += 1,
        Err(e) => {
            s.rejected += 1;
            s.last_rejection = Some(Arc::new(e));
        }
    }
}

/// Reads (which the loader itself causes) and editor scratch files are not
/// changes to the rules.
fn is_relevant(event: &notify::Event) -> bool {
    let kind_counts = match event.kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        _ => true,
    };
    kind_counts && (event.paths.is_empty() || event.paths.iter().any(|p| !is_editor_temp(p)))
}

/// Vim swap files (and its `4913` write test), Emacs backups and lock files.
fn is_editor_temp(path: &Path) -> bool {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return false;
    };
    [".swp", ".swx", ".swo", "~"].iter().any(|s| name.ends_with(s)) || name.starts_with(".#") || name == "4913"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn editor_scratch_files_are_not_changes() {
        for temp in ["rules/.vp.toml.swp", "rules/vp.toml~", "rules/.#vp.toml", "rules/4913", "rules/lists/.m.txt.swx"]
        {
            assert!(is_editor_temp(Path::new(temp)), "{temp}");
        }
        for real in ["rules/vp.toml", "rules/lists/mule_accounts.txt", "rules/ruleset.toml"] {
            assert!(!is_editor_temp(Path::new(real)), "{real}");
        }
    }

    #[test]
    fn relevance_ignores_reads_and_temp_files_only() {
        let ev = |kind, path: &str| notify::Event::new(kind).add_path(PathBuf::from(path));
        let modify = EventKind::Modify(notify::event::ModifyKind::Any);
        assert!(is_relevant(&ev(modify, "r/vp.toml")));
        assert!(!is_relevant(&ev(modify, "r/.vp.toml.swp")));
        assert!(!is_relevant(&ev(EventKind::Access(AccessKind::Open(notify::event::AccessMode::Any)), "r/vp.toml")));
        assert!(is_relevant(&ev(EventKind::Access(AccessKind::Close(AccessMode::Write)), "r/vp.toml")));
        assert!(is_relevant(&notify::Event::new(EventKind::Other)));
    }
}
