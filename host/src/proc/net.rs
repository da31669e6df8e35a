//! Network interfaces, TCP connection states and socket counts of the host's network
//! namespace (read through the host's PID 1, see [`HostRoot::host_net_file`]).

use std::collections::BTreeMap;

use procfs::FromRead;
use procfs::net::InterfaceDeviceStatus;
use serde::Serialize;

use super::{ErrorKind, HostRoot, ReadErrors, read_optional};
use vigil_agent_config::filter::NameFilter;

/// Counters of one interface since it came up.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Interface {
    /// Interface name.
    pub name: String,
    /// Bytes received.
    pub rx_bytes: u64,
    /// Packets received.
    pub rx_packets: u64,
    /// Receive errors.
    pub rx_errors: u64,
    /// Received packets dropped.
    pub rx_drops: u64,
    /// Bytes sent.
    pub tx_bytes: u64,
    /// Packets sent.
    pub tx_packets: u64,
    /// Send errors.
    pub tx_errors: u64,
    /// Packets dropped on send.
    pub tx_drops: u64,
}

/// The host's network view.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Network {
    /// Interfaces, sorted by name.
    pub interfaces: Vec<Interface>,
    /// TCP sockets (v4 and v6) by state (`established`, `listen`, `time_wait`…); only with
    /// the `tcpStates` collector, which reads the whole connection tables.
    pub tcp_states: BTreeMap<&'static str, u64>,
    /// TCP counters of `/proc/net/snmp` (`CurrEstab`, `ActiveOpens`, `RetransSegs`…): cheap
    /// to read at any connection count.
    pub tcp: BTreeMap<String, i64>,
    /// `/proc/net/sockstat` and `sockstat6`: protocol → field → value.
    pub sockstat: BTreeMap<String, BTreeMap<String, u64>>,
    /// TCP extension counters of `/proc/net/netstat` (`SyncookiesSent`, `ListenOverflows`,
    /// `ListenDrops`…): what a SYN flood or a listener too slow to accept leaves.
    pub tcp_ext: BTreeMap<String, i64>,
    /// Connection tracking entries and the table's size (`nf_conntrack_count`,
    /// `nf_conntrack_max`), when the conntrack module is loaded: a full table drops new
    /// connections.
    pub conntrack: Option<(u64, u64)>,
}

/// Reads the host's interfaces, TCP states and socket counts.
pub fn read(root: &HostRoot, filter: &NameFilter, with_tcp_states: bool, errors: &mut ReadErrors) -> Network {
    let mut net = Network::default();
    match InterfaceDeviceStatus::from_file(root.host_net_file("dev")) {
        Ok(devs) => {
            net.interfaces = devs
                .0
                .into_values()
                .filter(|d| filter.allows(&d.name))
                .map(|d| Interface {
                    name: d.name,
                    rx_bytes: d.recv_bytes,
                    rx_packets: d.recv_packets,
                    rx_errors: d.recv_errs,
                    rx_drops: d.recv_drop,
                    tx_bytes: d.sent_bytes,
                    tx_packets: d.sent_packets,
                    tx_errors: d.sent_errs,
                    tx_drops: d.sent_drop,
                })
                .collect();
            net.interfaces.sort_by(|a, b| a.name.cmp(&b.name));
        }
        Err(e) => errors.count("net_dev", ErrorKind::of_procfs(&e)),
    }
    if with_tcp_states {
        for file in ["tcp", "tcp6"] {
            if let Some(text) = read_optional(&root.host_net_file(file), "tcp", errors) {
                let bad = count_tcp_states(&text, &mut net.tcp_states);
                for _ in 0..bad {
                    errors.count("tcp", ErrorKind::Parse);
                }
            }
        }
    }
    if let Some(text) = read_optional(&root.host_net_file("snmp"), "snmp", errors) {
        match parse_snmp_section(&text, "Tcp") {
            Some(tcp) => net.tcp = tcp,
            None => errors.count("snmp", ErrorKind::Parse),
        }
    }
    if let Some(text) = read_optional(&root.host_net_file("netstat"), "netstat", errors) {
        match parse_snmp_section(&text, "TcpExt") {
            Some(ext) => net.tcp_ext = ext,
            None => errors.count("netstat", ErrorKind::Parse),
        }
    }
    // Per network namespace: the agent reads the host's (its own, with hostNetwork).
    let sysctl = |name: &str, errors: &mut ReadErrors| {
        read_optional(&root.proc_file(&format!("sys/net/netfilter/{name}")), "conntrack", errors)
            .and_then(|t| t.trim().parse::<u64>().ok())
    };
    if let (Some(count), Some(max)) = (sysctl("nf_conntrack_count", errors), sysctl("nf_conntrack_max", errors)) {
        net.conntrack = Some((count, max));
    }
    for file in ["sockstat", "sockstat6"] {
        if let Some(text) = read_optional(&root.host_net_file(file), "sockstat", errors) {
            for (proto, fields) in parse_sockstat(&text) {
                net.sockstat.entry(proto).or_default().extend(fields);
            }
        }
    }
    net
}

/// TCP state names by the kernel's numbering (include/net/tcp_states.h).
pub fn tcp_state_name(code: u8) -> Option<&'static str> {
    Some(match code {
        0x01 => "established",
        0x02 => "syn_sent",
        0x03 => "syn_recv",
        0x04 => "fin_wait1",
        0x05 => "fin_wait2",
        0x06 => "time_wait",
        0x07 => "close",
        0x08 => "close_wait",
        0x09 => "last_ack",
        0x0A => "listen",
        0x0B => "closing",
        0x0C => "new_syn_recv",
        _ => return None,
    })
}

/// Counts the state column of a `/proc/net/tcp{,6}` table; returns the malformed lines.
pub fn count_tcp_states(text: &str, into: &mut BTreeMap<&'static str, u64>) -> u64 {
    let mut bad = 0;
    for line in text.lines().skip(1).filter(|l| !l.trim().is_empty()) {
        let state =
            line.split_whitespace().nth(3).and_then(|s| u8::from_str_radix(s, 16).ok()).and_then(tcp_state_name);
        match state {
            Some(s) => *into.entry(s).or_default() += 1,
            None => bad += 1,
        }
    }
    bad
}

/// One protocol's counters from `/proc/net/snmp`: a header line of names followed by a line
/// of values, both starting with `Proto:`. `None` when the section is missing or its two lines
/// disagree.
pub fn parse_snmp_section(text: &str, proto: &str) -> Option<BTreeMap<String, i64>> {
    let prefix = format!("{proto}:");
    let mut lines = text.lines().filter(|l| l.starts_with(&prefix));
    let names: Vec<&str> = lines.next()?.split_whitespace().skip(1).collect();
    let values: Vec<i64> = lines.next()?.split_whitespace().skip(1).map(str::parse).collect::<Result<_, _>>().ok()?;
    (names.len() == values.len() && !names.is_empty())
        .then(|| names.into_iter().map(str::to_owned).zip(values).collect())
}

/// Parses `PROTO: key value key value…` lines.
pub fn parse_sockstat(text: &str) -> BTreeMap<String, BTreeMap<String, u64>> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let Some((proto, rest)) = line.split_once(':') else { continue };
        let words: Vec<&str> = rest.split_whitespace().collect();
        let fields: BTreeMap<String, u64> =
            words.chunks_exact(2).filter_map(|kv| Some((kv[0].to_owned(), kv[1].parse().ok()?))).collect();
        if !fields.is_empty() {
            out.insert(proto.trim().to_lowercase(), fields);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tcp_states_are_counted_by_name() {
        let text = "  sl  local_address rem_address   st tx_queue\n   0: 00000000:07E8 00000000:0000 0A 0:0\n   1: 0100007F:1F90 0100007F:D2A4 01 0:0\n   2: 0100007F:1F90 0100007F:D2A6 01 0:0\n   3: junk\n";
        let mut m = BTreeMap::new();
        assert_eq!(count_tcp_states(text, &mut m), 1);
        assert_eq!(m.get("listen"), Some(&1));
        assert_eq!(m.get("established"), Some(&2));
    }

    #[test]
    fn snmp_tcp_counters_pair_names_with_values() {
        let text = "Ip: Forwarding\nIp: 1\nTcp: RtoMin MaxConn CurrEstab RetransSegs\nTcp: 200 -1 7 42\nUdp: InDatagrams\nUdp: 3\n";
        let t = parse_snmp_section(text, "Tcp").unwrap();
        assert_eq!(t["CurrEstab"], 7);
        assert_eq!(t["MaxConn"], -1);
        assert_eq!(parse_snmp_section("Tcp: A B\nTcp: 1\n", "Tcp"), None);
        // /proc/net/netstat has the same layout: the TcpExt section, not the IpExt one.
        let netstat = "TcpExt: SyncookiesSent SyncookiesRecv ListenOverflows ListenDrops\nTcpExt: 12 3 7 9\nIpExt: InNoRoutes\nIpExt: 0\n";
        let ext = parse_snmp_section(netstat, "TcpExt").unwrap();
        assert_eq!((ext["SyncookiesSent"], ext["ListenOverflows"], ext["ListenDrops"]), (12, 7, 9));
        assert_eq!(parse_snmp_section("Udp: A\nUdp: 1\n", "Tcp"), None);
    }

    #[test]
    fn sockstat_fields_are_read_per_protocol() {
        let s = parse_sockstat(
            "sockets: used 8\nTCP: inuse 1 orphan 0 tw 3 alloc 1 mem 199\nUDP: inuse 0 mem 0\nFRAG: inuse 0 memory 0\n",
        );
        assert_eq!(s["tcp"]["tw"], 3);
        assert_eq!(s["sockets"]["used"], 8);
        assert_eq!(s["frag"]["memory"], 0);
    }
}
