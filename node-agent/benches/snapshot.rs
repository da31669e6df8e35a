//! One full snapshot of this host against the floor: the bare procfs reads of the same
//! sources with no processing (/proc/stat, meminfo, loadavg, net/dev, diskstats, mounts with
//! statvfs, and every /proc/PID/stat and status).
//!
//! `VIGIL_BENCH_EXTRA_PROCS=500 cargo bench -p vigil-agent --bench snapshot` adds that many
//! sleeping processes for the run (all killed at the end) to measure a busier host.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;

use common::Children;
use criterion::{Criterion, criterion_group, criterion_main};
use procfs::prelude::*;
use vigil_agent::config::{Collectors, CompiledFilters};
use vigil_agent::host::HostRoot;
use vigil_agent::snapshot::Collector;

fn floor() -> usize {
    let si = procfs::current_system_info();
    let mut n = 0;
    n += procfs::KernelStats::from_file("/proc/stat", si).map(|k| k.cpu_time.len()).unwrap_or(0);
    n += procfs::Meminfo::from_file("/proc/meminfo").map(|m| m.mem_total as usize & 1).unwrap_or(0);
    n += procfs::LoadAverage::from_file("/proc/loadavg").map(|l| l.cur as usize).unwrap_or(0);
    n += procfs::net::InterfaceDeviceStatus::from_file("/proc/net/dev").map(|d| d.0.len()).unwrap_or(0);
    n += procfs::DiskStats::from_file("/proc/diskstats").map(|d| d.0.len()).unwrap_or(0);
    for m in procfs::mounts().unwrap_or_default() {
        if let Ok(s) = rustix::fs::statvfs(m.fs_file.as_str()) {
            n += (s.f_blocks & 1) as usize;
        }
    }
    for p in procfs::process::all_processes().unwrap().flatten() {
        if let Ok(s) = p.stat() {
            n += s.num_threads as usize;
        }
        if let Ok(s) = p.status() {
            n += s.pid as usize & 1;
        }
    }
    n
}

fn bench(c: &mut Criterion) {
    let extra: usize = std::env::var("VIGIL_BENCH_EXTRA_PROCS").ok().and_then(|v| v.parse().ok()).unwrap_or(0);
    let _sleepers = Children((0..extra).map(|_| Command::new("sleep").arg("600").spawn().unwrap()).collect());
    let procs = procfs::process::all_processes().unwrap().count();
    eprintln!("processes on this host during the run: {procs}");

    let mut g = c.benchmark_group(format!("snapshot_{procs}_processes"));
    g.bench_function("floor_bare_procfs_reads", |b| b.iter(floor));
    let mut collector = Collector::new(HostRoot::new("/"), Collectors::default(), CompiledFilters::default(), 5);
    collector.collect(jiff::Timestamp::now());
    g.bench_function("vigil_full_snapshot", |b| b.iter(|| collector.collect(jiff::Timestamp::UNIX_EPOCH)));
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
