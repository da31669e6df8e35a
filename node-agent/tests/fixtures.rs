//! Readers against captured and synthetic host trees under tests/fixtures:
//! - debian12-vm: captured from a Debian 12 VM (kernel 6.18, cgroup v2), plus synthetic
//!   processes: a name with spaces, parentheses and a newline, and a containerised process
//!   (a PID whose files vanish mid-scan is made by its test: git keeps no empty directory);
//! - centos7-cgroup-v1: a 3.10 kernel layout (no PSI, no MemAvailable, cgroup v1, xfs);
//! - broken: empty, truncated and garbled files.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails loudly on the first surprise

mod common;

use common::copy_tree;

use vigil_agent::config::{Collectors, CompiledFilters};
use vigil_agent::host::HostRoot;
use vigil_agent::proc::ErrorKind;
use vigil_agent::snapshot::{Collector, Snapshot};

fn fixture(name: &str) -> HostRoot {
    HostRoot::new(common::fixture_dir(name))
}

/// Every collector on, TCP states included.
fn all_collectors() -> Collectors {
    Collectors { tcp_states: true, ..Collectors::default() }
}

fn collect(name: &str) -> Snapshot {
    let mut c = Collector::new(fixture(name), all_collectors(), CompiledFilters::default(), 5);
    c.collect(jiff::Timestamp::UNIX_EPOCH)
}

const KIB: u64 = 1024;

#[test]
fn debian_vm_host_identity_and_counters() {
    let s = collect("debian12-vm");
    assert_eq!(s.host.identity.hostname.as_deref(), Some("vm"));
    assert_eq!(s.host.identity.kernel.as_deref(), Some("6.18.44-fc-v445"));
    assert_eq!(s.host.identity.os_image.as_deref(), Some("Debian GNU/Linux 12 (bookworm)"));
    assert_eq!(s.host.uptime_seconds, Some(1581.16));

    let cpu = s.cpu.as_ref().unwrap();
    assert_eq!(cpu.cores, 2);
    let tps = procfs::ticks_per_second() as f64;
    assert_eq!(cpu.counters.total.user, 128_363.0 / tps);
    assert_eq!(cpu.counters.total.steal, 342.0 / tps);
    assert_eq!(cpu.counters.per_cpu[1].iowait, 547.0 / tps);
    assert_eq!(cpu.counters.context_switches, 788_035);
    assert_eq!(cpu.counters.forks, 26_860);
    assert_eq!(cpu.counters.procs_running, 4);
    assert_eq!(cpu.counters.boot_time, 1_795_333_119);
    assert_eq!(cpu.utilization, None, "one read gives no utilisation");
    let load = cpu.load.unwrap();
    assert_eq!((load.one, load.five, load.fifteen), (3.72, 2.42, 1.36));

    let m = s.memory.as_ref().unwrap();
    assert_eq!(m.total_bytes, 24_682_416 * KIB);
    assert_eq!(m.available_bytes, 23_748_856 * KIB);
    assert_eq!(m.used_bytes, (24_682_416 - 23_748_856) * KIB);
    assert_eq!(m.cached_bytes, (5_996_668 + 238_480) * KIB);
    assert_eq!(m.swap_total_bytes, 0);

    let p = s.pressure.unwrap();
    assert!(p.cpu.unwrap().full.is_some());
    assert_eq!(p.memory.unwrap().some.total_micros, 0);

    let fd = s.file_descriptors.unwrap();
    assert_eq!((fd.allocated, fd.max), (801, 2_465_620));

    let disks = s.disks.as_ref().unwrap();
    assert_eq!(disks.len(), 1, "loop and zram devices are left out: {disks:?}");
    assert_eq!(disks[0].device, "vda");
    assert_eq!(disks[0].read_bytes, 9_439_698 * 512);
    assert_eq!(disks[0].written_bytes, 22_952_216 * 512);
    assert_eq!(disks[0].io_seconds, 19.548);

    let net = s.network.as_ref().unwrap();
    let names: Vec<&str> = net.interfaces.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(names, ["eth0", "ifb0", "ifb1", "lo"]);
    assert_eq!(net.interfaces[0].rx_bytes, 350_536_683);
    assert_eq!(net.interfaces[0].tx_packets, 12_903);
    assert_eq!(net.tcp_states.get("time_wait"), Some(&5));
    assert_eq!(net.tcp_states.get("listen"), Some(&1));
    assert_eq!(net.sockstat["tcp"]["tw"], 5);
    assert_eq!(net.tcp["ActiveOpens"], 133);
    assert_eq!(net.tcp["RetransSegs"], 0);

    // The fixture's mount table names / and /run; statvfs reads the fixture's own filesystem.
    let fs = s.filesystems.as_ref().unwrap();
    assert_eq!(fs.iter().map(|f| f.mount_point.as_str()).collect::<Vec<_>>(), ["/"], "/run is not under the fixture");
    assert!(fs[0].size_bytes > 0 && fs[0].utilization > 0.0 && fs[0].utilization < 1.0);
}

#[test]
fn odd_processes_are_read_and_a_vanished_one_is_counted_not_fatal() {
    // PID 700 is listed but its files are gone, as when a process exits between the listing
    // of /proc and the read of its stat. (Made here: git keeps no empty directory.)
    let dir = tempfile::tempdir().unwrap();
    copy_tree(fixture("debian12-vm").root(), dir.path());
    std::fs::create_dir(dir.path().join("proc/700")).unwrap();
    let mut c = Collector::new(HostRoot::new(dir.path()), all_collectors(), CompiledFilters::default(), 5);
    let s = c.collect(jiff::Timestamp::UNIX_EPOCH);
    let p = s.processes.as_ref().unwrap();
    // 1, 4242, 500, 600 read; 700 vanished (its directory is empty).
    assert_eq!(p.total, 4);
    assert_eq!(s.read_errors.get("processes", ErrorKind::Vanished), 1);
    let by_rss = &p.top_rss;
    let evil = by_rss.iter().find(|t| t.pid == 500).expect("pid 500 read");
    assert_eq!(evil.command, "evil) (na\nme", "the name is everything between the first '(' and the last ')'");
    assert_eq!(evil.cmdline, "sleep 3600");
    assert_eq!(evil.cgroup.as_deref(), Some("/user.slice"));
    let nginx = by_rss.iter().find(|t| t.pid == 600).unwrap();
    assert_eq!(nginx.container_id.as_deref(), Some("4f0c7e2b9a1d3c5e7f9a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e"));
    assert_eq!(nginx.cmdline, "nginx: master process /usr/sbin/nginx");
    assert!(p.top_cpu.is_empty(), "CPU use needs two scans");
}

#[test]
fn process_cpu_use_comes_from_the_change_between_two_scans() {
    let dir = tempfile::tempdir().unwrap();
    copy_tree(fixture("debian12-vm").root(), dir.path());
    let root = HostRoot::new(dir.path());
    let mut c = Collector::new(root.clone(), Collectors::default(), CompiledFilters::default(), 3);
    c.collect(jiff::Timestamp::UNIX_EPOCH);
    // 10 s later on the host's clock, pid 600 used 5 s more user time (tps ticks each).
    let tps = procfs::ticks_per_second();
    let stat_path = root.proc_file("600/stat");
    let stat = std::fs::read_to_string(&stat_path).unwrap();
    let fields: Vec<&str> = stat.rsplit_once(") ").unwrap().1.split(' ').collect();
    let utime: u64 = fields[11].parse().unwrap();
    let new_rest = fields
        .iter()
        .enumerate()
        .map(|(i, f)| if i == 11 { (utime + 5 * tps).to_string() } else { (*f).to_owned() })
        .collect::<Vec<_>>()
        .join(" ");
    std::fs::write(&stat_path, format!("600 (nginx) {new_rest}")).unwrap();
    std::fs::write(root.proc_file("uptime"), "1591.16 1600.00\n").unwrap();
    let s = c.collect(jiff::Timestamp::UNIX_EPOCH);
    let top = &s.processes.as_ref().unwrap().top_cpu;
    assert_eq!(top[0].pid, 600);
    assert!((top[0].cpu.unwrap() - 0.5).abs() < 1e-9, "{:?}", top[0].cpu);
}

#[test]
fn old_kernel_without_psi_or_memavailable_and_with_cgroup_v1() {
    let s = collect("centos7-cgroup-v1");
    assert_eq!(s.host.identity.os_image.as_deref(), Some("CentOS Linux 7 (Core)"));
    assert_eq!(s.host.identity.kernel.as_deref(), Some("3.10.0-1160.el7.x86_64"));
    let p = s.pressure.unwrap();
    assert_eq!((p.cpu, p.memory, p.io), (None, None, None), "no PSI is no data");
    assert_eq!(s.read_errors.get("pressure", ErrorKind::Parse), 0);

    let m = s.memory.unwrap();
    // Without MemAvailable: free + buffers + cached + reclaimable slab.
    assert_eq!(m.available_bytes, (523_456 + 102_400 + 1_024_000 + 150_000) * KIB);
    assert_eq!(m.swap_used_bytes, (2_097_148 - 2_000_000) * KIB);

    let cpu = s.cpu.unwrap();
    assert_eq!(cpu.cores, 2);
    assert_eq!(cpu.counters.procs_blocked, 1);

    // sda1 is a partition (absent from /sys/block), loop0 a loop device.
    let disks = s.disks.unwrap();
    assert_eq!(disks.iter().map(|d| d.device.as_str()).collect::<Vec<_>>(), ["sda"]);

    let procs = s.processes.unwrap();
    let java = &procs.top_rss[0];
    assert_eq!(java.pid, 300);
    assert_eq!(java.cmdline, "java -Xmx1g -jar app.jar");
    assert_eq!(java.threads, 42);
    assert_eq!(java.container_id.as_deref(), Some("4f0c7e2b9a1d3c5e7f9a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e"));
    assert_eq!(
        java.cgroup.as_deref(),
        Some("/system.slice/docker-4f0c7e2b9a1d3c5e7f9a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e.scope")
    );

    let net = s.network.unwrap();
    assert_eq!(net.interfaces.iter().find(|i| i.name == "eth0").unwrap().rx_errors, 2);
    assert_eq!(net.tcp_states.get("established"), Some(&1));
    assert_eq!(net.sockstat["sockets"]["used"], 150);
}

#[test]
fn broken_files_are_counted_and_the_snapshot_still_goes_out() {
    let s = collect("broken");
    assert!(s.memory.is_none());
    assert!(s.cpu.is_none());
    assert!(s.file_descriptors.is_none());
    assert_eq!(s.pressure.unwrap().cpu, None);
    assert!(s.read_errors.get("memory", ErrorKind::Parse) >= 1, "{:?}", s.read_errors);
    assert!(s.read_errors.get("cpu", ErrorKind::Parse) >= 1, "{:?}", s.read_errors);
    assert_eq!(s.read_errors.get("fd", ErrorKind::Parse), 1);
    assert_eq!(s.read_errors.get("pressure", ErrorKind::Parse), 1);
    assert_eq!(s.read_errors.get("filesystems", ErrorKind::Parse), 1);
    assert_eq!(s.read_errors.get("tcp", ErrorKind::Parse), 2);
    assert!(s.network.as_ref().unwrap().tcp.is_empty(), "no snmp file is no data");
    assert!(s.read_errors.get("uptime", ErrorKind::Parse) >= 1);
    assert!(s.host.identity.hostname.is_none(), "a missing hostname file is no data");
    // And it still encodes.
    assert!(serde_json::to_string(&s).unwrap().contains("\"readErrors\""));
}
