//! OTLP metrics push (HTTP/protobuf or gRPC) with OpenTelemetry semantic-convention names.
//!
//! Instruments are observable: the SDK's periodic reader calls them at its own interval and
//! they read the latest snapshot, so the push costs no extra read of the host. Names and
//! attributes follow the `system.*` semantic conventions where one exists; what has none
//! (clock state, system-wide file handles, the agent itself) is under `vigil.*`.

use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::metrics::{AsyncInstrument, Meter, MeterProvider as _};
use opentelemetry_otlp::{MetricExporter, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};

use super::prometheus::Latest;
use crate::config::{Config, OtlpProtocol};
use crate::selfmon::SelfUsage;
use crate::snapshot::Snapshot;

/// Why the OTLP exporter could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum OtlpError {
    /// The exporter rejected its configuration.
    #[error("building the {protocol} exporter for {endpoint}")]
    Build {
        /// `http` or `grpc`.
        protocol: &'static str,
        /// The endpoint.
        endpoint: String,
        /// Why.
        #[source]
        source: opentelemetry_otlp::ExporterBuildError,
    },
    /// The thread building the HTTP client died.
    #[error("the thread building the HTTP exporter panicked")]
    Thread,
}

/// A running OTLP pipeline; [`Otlp::shutdown`] flushes what is pending.
pub struct Otlp {
    provider: SdkMeterProvider,
}

impl Otlp {
    /// Flushes and stops the pipeline.
    pub fn shutdown(self) {
        // A failed final flush is not worth failing the shutdown over; the next agent
        // instance pushes fresh values anyway.
        let _ = self.provider.shutdown();
    }
}

/// The resource describing this node and agent.
pub fn resource(s: Option<&Snapshot>, node_name: Option<&str>, version: &'static str) -> Resource {
    let mut attrs = vec![KeyValue::new("service.version", version), KeyValue::new("os.type", "linux")];
    if let Some(s) = s {
        if let Some(h) = &s.host.identity.hostname {
            attrs.push(KeyValue::new("host.name", h.clone()));
        }
        attrs.push(KeyValue::new("host.arch", s.host.identity.architecture.clone()));
        if let Some(os) = &s.host.identity.os_image {
            attrs.push(KeyValue::new("os.description", os.clone()));
        }
        if let Some(k) = &s.host.identity.kernel {
            attrs.push(KeyValue::new("os.version", k.clone()));
        }
    }
    if let Some(n) = node_name {
        attrs.push(KeyValue::new("k8s.node.name", n.to_owned()));
    }
    Resource::builder().with_service_name("vigil-agent").with_attributes(attrs).build()
}

/// Starts the pipeline. Must be called inside the agent's Tokio runtime (the gRPC client
/// spawns its connection there).
pub fn start(config: &Config, latest: Latest, self_usage: SelfUsage, version: &'static str) -> Result<Otlp, OtlpError> {
    let otlp = &config.exporters.otlp;
    let exporter = build_exporter(otlp.protocol, &otlp.endpoint)?;
    let reader = PeriodicReader::builder(exporter).with_interval(otlp.interval).build();
    // The identity is read once here so the resource is complete from the first push.
    let identity = crate::snapshot::identity_snapshot(&crate::host::HostRoot::new(config.host_root.clone()));
    let node_name = config.node_name.clone().or_else(|| std::env::var("NODE_NAME").ok().filter(|s| !s.is_empty()));
    let provider = SdkMeterProvider::builder()
        .with_resource(resource(Some(&identity), node_name.as_deref(), version))
        .with_reader(reader)
        .build();
    register(&provider.meter("vigil-agent"), latest, self_usage);
    Ok(Otlp { provider })
}

fn build_exporter(protocol: OtlpProtocol, endpoint: &str) -> Result<MetricExporter, OtlpError> {
    let timeout = Duration::from_secs(10);
    match protocol {
        OtlpProtocol::Grpc => MetricExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint)
            .with_timeout(timeout)
            .build()
            .map_err(|source| OtlpError::Build { protocol: "grpc", endpoint: endpoint.to_owned(), source }),
        OtlpProtocol::Http => {
            // The blocking HTTP client owns a runtime of its own, which must not be created
            // from inside ours: build it on a plain thread.
            let url = format!("{}/v1/metrics", endpoint.trim_end_matches('/'));
            let endpoint = endpoint.to_owned();
            std::thread::spawn(move || {
                MetricExporter::builder()
                    .with_http()
                    .with_endpoint(url)
                    .with_timeout(timeout)
                    .build()
                    .map_err(|source| OtlpError::Build { protocol: "http", endpoint, source })
            })
            .join()
            .map_err(|_| OtlpError::Thread)?
        }
    }
}

fn with_latest(latest: &Latest, f: impl FnOnce(&Snapshot)) {
    if let Some(s) = latest.read().ok().and_then(|g| g.clone()) {
        f(&s);
    }
}

fn kv(k: &'static str, v: impl Into<opentelemetry::Value>) -> KeyValue {
    KeyValue::new(k, v)
}

/// Registers every instrument on `meter`.
pub fn register(meter: &Meter, latest: Latest, self_usage: SelfUsage) {
    let l = latest.clone();
    meter
        .f64_observable_counter("system.cpu.time")
        .with_unit("s")
        .with_description("CPU time per logical CPU and mode")
        .with_callback(move |o| {
            with_latest(&l, |s| {
                let Some(c) = &s.cpu else { return };
                for (i, pc) in c.counters.per_cpu.iter().enumerate() {
                    let cpu = i64::try_from(i).unwrap_or(i64::MAX);
                    for (mode, v) in [
                        ("user", pc.user),
                        ("nice", pc.nice),
                        ("system", pc.system),
                        ("idle", pc.idle),
                        ("iowait", pc.iowait),
                        ("interrupt", pc.irq + pc.softirq),
                        ("steal", pc.steal),
                    ] {
                        o.observe(v, &[kv("cpu.mode", mode), kv("cpu.logical_number", cpu)]);
                    }
                }
            });
        })
        .build();
    let l = latest.clone();
    gauge(
        meter,
        "system.cpu.utilization",
        "1",
        "Share of CPU time per mode since the previous scan, all CPUs",
        move |o: &dyn AsyncInstrument<f64>| {
            with_latest(&l, |s| {
                if let Some(u) = s.cpu.as_ref().and_then(|c| c.utilization) {
                    for (mode, v) in [("user", u.user), ("system", u.system), ("iowait", u.iowait), ("steal", u.steal)]
                    {
                        o.observe(v, &[kv("cpu.mode", mode)]);
                    }
                }
            });
        },
    );
    let l = latest.clone();
    gauge(
        meter,
        "system.cpu.load_average.1m",
        "{thread}",
        "Load average over 1 minute",
        move |o: &dyn AsyncInstrument<f64>| {
            with_latest(&l, |s| {
                if let Some(load) = s.cpu.as_ref().and_then(|c| c.load) {
                    o.observe(load.one, &[]);
                }
            });
        },
    );
    let l = latest.clone();
    updown(meter, "system.memory.usage", "By", "Memory in use by state", move |o| {
        with_latest(&l, |s| {
            if let Some(m) = &s.memory {
                for (state, v) in [
                    ("used", m.used_bytes),
                    ("free", m.free_bytes),
                    ("buffers", m.buffers_bytes),
                    ("cached", m.cached_bytes),
                ] {
                    o.observe(clamp(v), &[kv("system.memory.state", state)]);
                }
            }
        });
    });
    let l = latest.clone();
    updown(meter, "system.memory.limit", "By", "Usable RAM", move |o| {
        with_latest(&l, |s| {
            if let Some(m) = &s.memory {
                o.observe(clamp(m.total_bytes), &[]);
            }
        })
    });
    let l = latest.clone();
    updown(meter, "system.linux.memory.available", "By", "RAM available without swapping (MemAvailable)", move |o| {
        with_latest(&l, |s| {
            if let Some(m) = &s.memory {
                o.observe(clamp(m.available_bytes), &[]);
            }
        })
    });
    let l = latest.clone();
    gauge(meter, "system.memory.utilization", "1", "Used over total RAM", move |o: &dyn AsyncInstrument<f64>| {
        with_latest(&l, |s| {
            if let Some(m) = &s.memory {
                o.observe(m.utilization, &[kv("system.memory.state", "used")]);
            }
        })
    });
    let l = latest.clone();
    updown(meter, "system.paging.usage", "By", "Swap by state", move |o| {
        with_latest(&l, |s| {
            if let Some(m) = &s.memory {
                o.observe(clamp(m.swap_used_bytes), &[kv("system.paging.state", "used")]);
                o.observe(
                    clamp(m.swap_total_bytes.saturating_sub(m.swap_used_bytes)),
                    &[kv("system.paging.state", "free")],
                );
            }
        })
    });
    let l = latest.clone();
    updown(meter, "system.filesystem.usage", "By", "Filesystem space by state", move |o| {
        with_latest(&l, |s| {
            for f in s.filesystems.iter().flatten() {
                let base = fs_attrs(f);
                let reserved = f.size_bytes.saturating_sub(f.used_bytes + f.available_bytes);
                for (state, v) in [("used", f.used_bytes), ("free", f.available_bytes), ("reserved", reserved)] {
                    let mut a = base.clone();
                    a.push(kv("system.filesystem.state", state));
                    o.observe(clamp(v), &a);
                }
            }
        })
    });
    let l = latest.clone();
    gauge(
        meter,
        "system.filesystem.utilization",
        "1",
        "Used over used plus available, as df shows",
        move |o: &dyn AsyncInstrument<f64>| {
            with_latest(&l, |s| {
                for f in s.filesystems.iter().flatten() {
                    o.observe(f.utilization, &fs_attrs(f));
                }
            })
        },
    );
    let l = latest.clone();
    counter(meter, "system.disk.io", "By", "Bytes read and written per device", move |o| {
        with_latest(&l, |s| {
            for d in s.disks.iter().flatten() {
                o.observe(d.read_bytes, &[kv("system.device", d.device.clone()), kv("disk.io.direction", "read")]);
                o.observe(d.written_bytes, &[kv("system.device", d.device.clone()), kv("disk.io.direction", "write")]);
            }
        })
    });
    let l = latest.clone();
    counter(meter, "system.disk.operations", "{operation}", "Reads and writes completed per device", move |o| {
        with_latest(&l, |s| {
            for d in s.disks.iter().flatten() {
                o.observe(d.reads, &[kv("system.device", d.device.clone()), kv("disk.io.direction", "read")]);
                o.observe(d.writes, &[kv("system.device", d.device.clone()), kv("disk.io.direction", "write")]);
            }
        })
    });
    let l = latest.clone();
    counter(meter, "system.network.io", "By", "Bytes received and sent per interface", move |o| {
        with_latest(&l, |s| {
            for i in s.network.iter().flat_map(|n| &n.interfaces) {
                o.observe(
                    i.rx_bytes,
                    &[kv("network.interface.name", i.name.clone()), kv("network.io.direction", "receive")],
                );
                o.observe(
                    i.tx_bytes,
                    &[kv("network.interface.name", i.name.clone()), kv("network.io.direction", "transmit")],
                );
            }
        })
    });
    let l = latest.clone();
    counter(meter, "system.network.packets", "{packet}", "Packets received and sent per interface", move |o| {
        with_latest(&l, |s| {
            for i in s.network.iter().flat_map(|n| &n.interfaces) {
                o.observe(
                    i.rx_packets,
                    &[kv("network.interface.name", i.name.clone()), kv("network.io.direction", "receive")],
                );
                o.observe(
                    i.tx_packets,
                    &[kv("network.interface.name", i.name.clone()), kv("network.io.direction", "transmit")],
                );
            }
        })
    });
    let l = latest.clone();
    counter(meter, "system.network.errors", "{error}", "Errors per interface and direction", move |o| {
        with_latest(&l, |s| {
            for i in s.network.iter().flat_map(|n| &n.interfaces) {
                o.observe(
                    i.rx_errors,
                    &[kv("network.interface.name", i.name.clone()), kv("network.io.direction", "receive")],
                );
                o.observe(
                    i.tx_errors,
                    &[kv("network.interface.name", i.name.clone()), kv("network.io.direction", "transmit")],
                );
            }
        })
    });
    let l = latest.clone();
    counter(meter, "system.network.dropped", "{packet}", "Packets dropped per interface and direction", move |o| {
        with_latest(&l, |s| {
            for i in s.network.iter().flat_map(|n| &n.interfaces) {
                o.observe(
                    i.rx_drops,
                    &[kv("network.interface.name", i.name.clone()), kv("network.io.direction", "receive")],
                );
                o.observe(
                    i.tx_drops,
                    &[kv("network.interface.name", i.name.clone()), kv("network.io.direction", "transmit")],
                );
            }
        })
    });
    let l = latest.clone();
    updown(meter, "system.network.connection.count", "{connection}", "TCP connections by state", move |o| {
        with_latest(&l, |s| {
            for (state, v) in s.network.iter().flat_map(|n| &n.tcp_states) {
                o.observe(clamp(*v), &[kv("network.transport", "tcp"), kv("network.connection.state", *state)]);
            }
        })
    });
    let l = latest.clone();
    counter(
        meter,
        "system.network.tcp.retransmitted_segments",
        "{segment}",
        "TCP segments retransmitted (/proc/net/snmp RetransSegs)",
        move |o| {
            with_latest(&l, |s| {
                if let Some(v) = s.network.as_ref().and_then(|n| n.tcp.get("RetransSegs")) {
                    o.observe(u64::try_from(*v).unwrap_or(0), &[]);
                }
            })
        },
    );
    let l = latest.clone();
    updown(meter, "system.process.count", "{process}", "Processes by status", move |o| {
        with_latest(&l, |s| {
            for (state, v) in s.processes.iter().flat_map(|p| &p.by_state) {
                o.observe(clamp(*v), &[kv("process.status", *state)]);
            }
        })
    });
    let l = latest.clone();
    updown(
        meter,
        "system.linux.file_descriptor.count",
        "{file_descriptor}",
        "Allocated file handles, system-wide",
        move |o| {
            with_latest(&l, |s| {
                if let Some(f) = &s.file_descriptors {
                    o.observe(clamp(f.allocated), &[]);
                }
            })
        },
    );
    let l = latest.clone();
    gauge(
        meter,
        "vigil.clock.offset",
        "s",
        "Offset the time daemon is correcting",
        move |o: &dyn AsyncInstrument<f64>| {
            with_latest(&l, |s| {
                if let Some(c) = &s.clock {
                    o.observe(c.offset_seconds, &[kv("vigil.clock.synchronized", c.synchronized)]);
                }
            })
        },
    );
    let l = latest.clone();
    gauge(meter, "system.uptime", "s", "Time since the host booted", move |o: &dyn AsyncInstrument<f64>| {
        with_latest(&l, |s| {
            if let Some(u) = s.host.uptime_seconds {
                o.observe(u, &[]);
            }
        })
    });
    updown(meter, "vigil.agent.memory.usage", "By", "The agent's resident memory", move |o| {
        if let Some(u) = self_usage.read() {
            o.observe(clamp(u.rss_bytes), &[]);
        }
    });
    meter
        .f64_observable_counter("vigil.agent.cpu.time")
        .with_unit("s")
        .with_description("CPU time the agent used")
        .with_callback(move |o| {
            if let Some(u) = self_usage.read() {
                o.observe(u.cpu_seconds, &[]);
            }
        })
        .build();
    let l = latest;
    gauge(
        meter,
        "vigil.agent.scan.duration",
        "s",
        "Time the latest snapshot took",
        move |o: &dyn AsyncInstrument<f64>| {
            with_latest(&l, |s| {
                o.observe(s.scan_seconds, &[]);
            })
        },
    );
}

fn fs_attrs(f: &crate::proc::disks::Filesystem) -> Vec<KeyValue> {
    vec![
        kv("system.device", f.device.clone()),
        kv("system.filesystem.mountpoint", f.mount_point.clone()),
        kv("system.filesystem.type", f.fs_type.clone()),
        kv("system.filesystem.mode", if f.read_only { "ro" } else { "rw" }),
    ]
}

fn clamp(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn gauge(
    meter: &Meter,
    name: &'static str,
    unit: &'static str,
    help: &'static str,
    f: impl Fn(&dyn AsyncInstrument<f64>) + Send + Sync + 'static,
) {
    meter.f64_observable_gauge(name).with_unit(unit).with_description(help).with_callback(f).build();
}

fn updown(
    meter: &Meter,
    name: &'static str,
    unit: &'static str,
    help: &'static str,
    f: impl Fn(&dyn AsyncInstrument<i64>) + Send + Sync + 'static,
) {
    meter.i64_observable_up_down_counter(name).with_unit(unit).with_description(help).with_callback(f).build();
}

fn counter(
    meter: &Meter,
    name: &'static str,
    unit: &'static str,
    help: &'static str,
    f: impl Fn(&dyn AsyncInstrument<u64>) + Send + Sync + 'static,
) {
    meter.u64_observable_counter(name).with_unit(unit).with_description(help).with_callback(f).build();
}
