//! The file-integrity source: inotify over the watched trees, else periodic rescans.

use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use std::collections::HashMap;
use std::os::fd::AsFd;

use super::{SourceStates, set_state, stopped};
use crate::fim::{Fim, FimSettings};
use crate::process::wait_readable;
use crate::queue::POLL_SLICE;
use crate::{Emitter, Source};
use vigil_agent_config::EventsConfig;
use vigil_crds::SourceState;
use vigil_host::host::HostRoot;

pub(super) fn file_source(
    cfg: &EventsConfig,
    settings: FimSettings,
    root: &HostRoot,
    state_dir: Option<&Path>,
    mut emitter: Emitter,
    stop: &AtomicBool,
    states: &Mutex<SourceStates>,
) {
    use inotify::{Inotify, WatchMask};
    let baseline_file = state_dir.map(|d| d.join("fim-baseline.json"));
    let mut fim = Fim::new(root.clone(), settings);
    let had_baseline = baseline_file.as_deref().is_some_and(|f| fim.load(f));
    // The first comparison with the saved baseline: what changed while no agent watched (its
    // last check is in the baseline it saved), reported once.
    let first_compare = |fim: &mut Fim, emitter: &mut Emitter| {
        for e in fim.rescan(jiff::Timestamp::now(), had_baseline) {
            emitter.emit(e);
        }
        if fim.overflowed > 0 {
            emitter.count_lost(fim.overflowed);
        }
        if let Some(f) = &baseline_file {
            let _ = fim.save(f);
        }
    };
    let mut inotify = match Inotify::init() {
        Ok(i) => i,
        Err(e) => {
            first_compare(&mut fim, &mut emitter);
            set_state(
                states,
                Source::File,
                SourceState::Degraded,
                "rescan",
                format!("rescanning every {:?} (inotify: {e})", cfg.files.rescan_interval),
            );
            return rescan_only(&mut fim, cfg, baseline_file.as_deref(), emitter, stop);
        }
    };
    let mask = WatchMask::CREATE
        | WatchMask::CLOSE_WRITE
        | WatchMask::MODIFY
        | WatchMask::ATTRIB
        | WatchMask::DELETE
        | WatchMask::MOVED_FROM
        | WatchMask::MOVED_TO
        | WatchMask::DONT_FOLLOW
        | WatchMask::ONLYDIR;
    let mut dirs: HashMap<inotify::WatchDescriptor, String> = HashMap::new();
    let mut watch_failures = 0u64;
    let add_watch = |inotify: &mut Inotify, dirs: &mut HashMap<_, _>, host_path: &str, failures: &mut u64| {
        match inotify.watches().add(root.host_path(host_path), mask) {
            Ok(wd) => {
                dirs.insert(wd, host_path.to_owned());
            }
            // Beyond fs.inotify.max_user_watches: the periodic rescan covers the directory.
            Err(_) => *failures += 1,
        }
    };
    // Watches first, then the comparison: a change after a directory's watch is placed is an
    // inotify event, one before is found by the comparison, so none falls between the two (a
    // change both see is reported once: the second look finds it in the baseline).
    for d in fim.directories() {
        add_watch(&mut inotify, &mut dirs, &d, &mut watch_failures);
    }
    first_compare(&mut fim, &mut emitter);
    // Directories the comparison found new are watched now; what changed in them between the
    // comparison and their watch is found by looking at their entries once more.
    let watched: std::collections::HashSet<String> = dirs.values().cloned().collect();
    let mut again = Vec::new();
    for d in fim.directories() {
        if !watched.contains(&d) {
            add_watch(&mut inotify, &mut dirs, &d, &mut watch_failures);
            if let Ok(entries) = std::fs::read_dir(root.host_path(&d)) {
                again.extend(
                    entries
                        .flatten()
                        .map(|e| format!("{}/{}", d.trim_end_matches('/'), e.file_name().to_string_lossy())),
                );
            }
        }
    }
    set_state(
        states,
        Source::File,
        if watch_failures == 0 { SourceState::On } else { SourceState::Degraded },
        "inotify",
        format!(
            "watching {} directories, {} paths in the baseline{}{}",
            dirs.len(),
            fim.entries.len(),
            if watch_failures > 0 {
                format!(
                    " ({watch_failures} directories could not be watched: fs.inotify.max_user_watches; they are compared every {:?})",
                    cfg.files.rescan_interval
                )
            } else {
                String::new()
            },
            if state_dir.is_none() { " (no state directory: the baseline is not kept)" } else { "" }
        ),
    );
    const MAX_PENDING: usize = 100_000;
    let mut pending: HashMap<String, Instant> = HashMap::new();
    for p in again.into_iter().take(MAX_PENDING) {
        pending.insert(p, Instant::now());
    }
    let mut buf = vec![0u8; 64 * 1024];
    let mut next_rescan = Instant::now() + cfg.files.rescan_interval;
    let mut next_save = Instant::now();
    let mut rescan_now = false;
    while !stopped(stop, &emitter) {
        // Short waits only while paths are settling.
        let wait = if pending.is_empty() { POLL_SLICE } else { Duration::from_millis(50) };
        if wait_readable(inotify.as_fd(), wait).unwrap_or(false) {
            while let Ok(events) = inotify.read_events(&mut buf) {
                let mut any = false;
                for e in events {
                    any = true;
                    if e.mask.contains(inotify::EventMask::Q_OVERFLOW) {
                        emitter.count_lost(1);
                        rescan_now = true;
                        continue;
                    }
                    let Some(dir) = dirs.get(&e.wd) else { continue };
                    let path = match e.name {
                        Some(n) => format!("{}/{}", dir.trim_end_matches('/'), n.to_string_lossy()),
                        None => dir.clone(),
                    };
                    if pending.len() >= MAX_PENDING && !pending.contains_key(&path) {
                        emitter.count_lost(1);
                        rescan_now = true;
                        continue;
                    }
                    pending.entry(path).or_insert_with(Instant::now);
                }
                if !any {
                    break;
                }
            }
        }
        // Settle: a path is checked once nothing touched it for 50 ms or it waited 500 ms.
        let now = Instant::now();
        let due: Vec<String> = pending
            .iter()
            .filter(|(_, since)| now.duration_since(**since) >= Duration::from_millis(50))
            .map(|(p, _)| p.clone())
            .collect();
        if !due.is_empty() {
            for p in &due {
                pending.remove(p);
            }
            let checked = fim.check_paths(due, jiff::Timestamp::now());
            for e in checked.events {
                emitter.emit(e);
            }
            for d in checked.new_dirs {
                add_watch(&mut inotify, &mut dirs, &d, &mut watch_failures);
            }
            for p in checked.later {
                pending.entry(p).or_insert_with(Instant::now);
            }
        }
        if rescan_now || now >= next_rescan {
            rescan_now = false;
            next_rescan = now + cfg.files.rescan_interval;
            for e in fim.rescan(jiff::Timestamp::now(), true) {
                emitter.emit(e);
            }
            let watched: std::collections::HashSet<String> = dirs.values().cloned().collect();
            for d in fim.directories() {
                if !watched.contains(&d) {
                    add_watch(&mut inotify, &mut dirs, &d, &mut watch_failures);
                }
            }
        }
        if fim.dirty
            && now >= next_save
            && let Some(f) = &baseline_file
        {
            let _ = fim.save(f);
            next_save = now + Duration::from_secs(10);
        }
    }
    if fim.dirty
        && let Some(f) = &baseline_file
    {
        let _ = fim.save(f);
    }
}

fn rescan_only(fim: &mut Fim, cfg: &EventsConfig, baseline: Option<&Path>, mut emitter: Emitter, stop: &AtomicBool) {
    let mut next = Instant::now() + cfg.files.rescan_interval;
    while !stopped(stop, &emitter) {
        std::thread::sleep(POLL_SLICE);
        if Instant::now() >= next {
            next = Instant::now() + cfg.files.rescan_interval;
            for e in fim.rescan(jiff::Timestamp::now(), true) {
                emitter.emit(e);
            }
            if let Some(f) = baseline {
                let _ = fim.save(f);
            }
        }
    }
}
