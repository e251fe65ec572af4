//! Hot reload: watch what analysts and data scientists edit (the rules
//! directory, a model directory), load it whole after a quiet period, and swap
//! the new version in only if it is valid.
//!
//! Readers hold an `ArcSwap` (rules) or `ArcSwapOption` (the model) and load it
//! per transfer: no lock, so a reload never stalls the hot path. Editors save
//! in several steps (truncate, write, rename, swap files), so events are
//! debounced and the *whole* thing is reloaded; a half-written file fails to
//! load, is logged and counted, and the running version stays in force until
//! the next change produces a valid one.
//!
//! One watcher serves both kinds through [`Reloadable`]; the rules module and
//! the model module each say how to load themselves and how to report a
//! rejection.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use arc_swap::{ArcSwap, ArcSwapOption};
use notify::event::{AccessKind, AccessMode};
use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher as _};
use tracing::{info, warn};

/// Something loaded from disk as a whole and swapped in atomically.
pub trait Reloadable: Sized + Send + Sync + 'static {
    /// Why a load failed.
    type Error: std::error::Error + Send + Sync + 'static;
    /// What it is, in logs and thread names: `rules`, `model`.
    const KIND: &'static str;
    /// Load and check the whole thing at `path`; an error leaves the running version in force.
    fn load(path: &Path) -> Result<Self, Self::Error>;
    /// Two loads with the same key are the same: nothing to swap. Also what
    /// the reload is logged under.
    fn reload_key(&self) -> &str;
    /// Log a new version swapped in for `previous` (`None`: nothing was
    /// loaded before).
    fn log_applied(&self, previous: Option<&Self>, path: &Path) {
        info!(
            kind = Self::KIND,
            path = %path.display(),
            version = self.reload_key(),
            previous = previous.map_or("none", Reloadable::reload_key),
            "{} reloaded",
            Self::KIND
        );
    }
    /// Log why a load was refused (the running version stays).
    fn log_rejection(error: &Self::Error, path: &Path, running: &str) {
        warn!(kind = Self::KIND, path = %path.display(), error = %error, running, "reload rejected; keeping the running version");
    }
}

/// Where the running version lives: read by the hot path, written here.
pub trait Slot<T>: Send + Sync + 'static {
    /// The running version, compared with a new load by its
    /// [`Reloadable::reload_key`] to skip an unchanged one, and named in the
    /// logs (`None`: nothing loaded yet).
    fn running(&self) -> Option<Arc<T>>;
    /// Swap `new` in for every later reader.
    fn put(&self, new: Arc<T>);
}

impl<T: Reloadable> Slot<T> for ArcSwap<T> {
    fn running(&self) -> Option<Arc<T>> {
        Some(self.load_full())
    }
    fn put(&self, new: Arc<T>) {
        self.store(new);
    }
}

impl<T: Reloadable> Slot<T> for ArcSwapOption<T> {
    fn running(&self) -> Option<Arc<T>> {
        self.load_full()
    }
    fn put(&self, new: Arc<T>) {
        self.store(Some(new));
    }
}

/// The file watch could not be set up.
#[allow(missing_docs)] // each variant's #[error] text is its documentation and names its fields
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("cannot watch {path}", path = path.display())]
    Watch {
        path: PathBuf,
        #[source]
        source: notify::Error,
    },
    #[error("cannot start the {kind} watcher thread")]
    Thread {
        kind: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// Load `path` now and swap it in if it is valid and differs from the running
/// version. Returns whether a new version was swapped in. On error the running
/// version is untouched and the rejection is logged.
///
/// Meant for one reloader at a time (the watcher, or a manual trigger while
/// no watcher runs): two concurrent reloads may finish in either order.
pub fn reload_now<T: Reloadable, S: Slot<T> + ?Sized>(path: &Path, slot: &S) -> Result<bool, T::Error> {
    let running = slot.running();
    let running = running.as_deref();
    match T::load(path) {
        Ok(new) if Some(new.reload_key()) == running.map(Reloadable::reload_key) => Ok(false),
        Ok(new) => {
            new.log_applied(running, path);
            slot.put(Arc::new(new));
            Ok(true)
        }
        Err(e) => {
            T::log_rejection(&e, path, running.map_or("none", Reloadable::reload_key));
            Err(e)
        }
    }
}

/// Tuning for [`watch`].
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

/// What a watcher has done, for operators and tests.
#[derive(Debug)]
pub struct ReloadStatus<E> {
    /// Loads that succeeded and swapped in a new version.
    pub reloads: u64,
    /// Loads that succeeded with the running version (nothing to swap).
    pub unchanged: u64,
    /// Loads that failed; the running version was kept.
    pub rejected: u64,
    /// Why the last failed load failed.
    pub last_rejection: Option<Arc<E>>,
}

impl<E> Default for ReloadStatus<E> {
    fn default() -> Self {
        ReloadStatus { reloads: 0, unchanged: 0, rejected: 0, last_rejection: None }
    }
}

impl<E> Clone for ReloadStatus<E> {
    fn clone(&self) -> Self {
        ReloadStatus {
            reloads: self.reloads,
            unchanged: self.unchanged,
            rejected: self.rejected,
            last_rejection: self.last_rejection.clone(),
        }
    }
}

enum Msg {
    Changed,
    Stop,
}

/// A running watcher. Dropping it stops the file watch and joins its thread.
pub struct Watcher<T: Reloadable> {
    path: PathBuf,
    /// Dropped first on shutdown so no event arrives after `Stop`.
    watcher: Option<RecommendedWatcher>,
    tx: Sender<Msg>,
    thread: Option<JoinHandle<()>>,
    status: Arc<Mutex<ReloadStatus<T::Error>>>,
}

impl<T: Reloadable> Watcher<T> {
    /// A copy of the counts so far and the last rejection.
    pub fn status(&self) -> ReloadStatus<T::Error> {
        self.status.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// What is loaded (the rules directory, the model directory).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A reader of the status that outlives borrows of the watcher, for a
    /// metrics scrape running on another thread.
    pub fn status_handle(&self) -> impl Fn() -> ReloadStatus<T::Error> + Send + Sync + 'static {
        let status = self.status.clone();
        move || status.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

/// By hand: the thread and the channel say nothing; what it watches and its
/// status do.
impl<T: Reloadable> std::fmt::Debug for Watcher<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watcher")
            .field("kind", &T::KIND)
            .field("path", &self.path)
            .field("status", &self.status())
            .finish_non_exhaustive()
    }
}

impl<T: Reloadable> Drop for Watcher<T> {
    fn drop(&mut self) {
        drop(self.watcher.take());
        let _ = self.tx.send(Msg::Stop);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Watch `watch_root` recursively and keep `slot` up to date with what
/// [`Reloadable::load`] makes of `path`. The root is the rules directory
/// itself; for a model it is the directory holding the model's directory,
/// because a retrained model is renamed into place as a whole new directory.
///
/// Before returning, `path` is reloaded once, so a change made between the
/// caller's initial load and the start of the watch is not missed.
pub fn watch<T: Reloadable, S: Slot<T>>(
    path: &Path,
    watch_root: &Path,
    slot: Arc<S>,
    options: WatchOptions,
) -> Result<Watcher<T>, WatchError> {
    let watch_err = |source| WatchError::Watch { path: watch_root.to_path_buf(), source };
    let (tx, rx) = mpsc::channel();
    let events = tx.clone();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        // A watcher error may mean lost events: reloading is the safe answer.
        if event.as_ref().map_or(true, is_relevant) {
            let _ = events.send(Msg::Changed);
        }
    })
    .map_err(watch_err)?;
    watcher.watch(watch_root, RecursiveMode::Recursive).map_err(watch_err)?;
    // From here on an edit is seen: operators (and tests) wait for this line
    // before they count on a change being picked up.
    info!(kind = T::KIND, dir = %watch_root.display(), "watching for changes");

    let status = Arc::new(Mutex::new(ReloadStatus::default()));
    record(&status, reload_now::<T, S>(path, &slot));

    let thread = {
        let (path, status) = (path.to_path_buf(), Arc::clone(&status));
        std::thread::Builder::new()
            .name(format!("fds-{}-watch", T::KIND))
            .spawn(move || run::<T, S>(&path, &slot, &rx, options.debounce, &status))
            .map_err(|source| WatchError::Thread { kind: T::KIND, source })?
    };
    Ok(Watcher { path: path.to_path_buf(), watcher: Some(watcher), tx, thread: Some(thread), status })
}

/// The watcher thread: wait for a change, wait for quiet, reload, repeat.
fn run<T: Reloadable, S: Slot<T>>(
    path: &Path,
    slot: &S,
    rx: &Receiver<Msg>,
    debounce: Duration,
    status: &Mutex<ReloadStatus<T::Error>>,
) {
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
        record(status, reload_now::<T, S>(path, slot));
    }
}

fn record<E>(status: &Mutex<ReloadStatus<E>>, result: Result<bool, E>) {
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
/// changes.
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
        for real in ["rules/vp.toml", "rules/lists/mule_accounts.txt", "rules/ruleset.toml", "models/default/card.toml"]
        {
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
