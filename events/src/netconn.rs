//! New listening sockets and new outbound connections (TCP and UDP, IPv4 and IPv6) in the
//! host's network namespace, attributed to the process that owns the socket.
//!
//! Read from `/proc/1/net/{tcp,tcp6,udp,udp6}` (the host's namespace, see
//! [`HostRoot::host_net_file`]) at an interval: connections that open and close between two
//! reads are not seen. Owners come from the `socket:[inode]` links under `/proc/PID/fd`,
//! looked up only when something new appeared.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use super::{Event, EventType};
use vigil_host::host::HostRoot;

/// The four tables.
pub const TABLES: [(&str, Proto); 4] =
    [("tcp", Proto::Tcp), ("tcp6", Proto::Tcp), ("udp", Proto::Udp), ("udp6", Proto::Udp)];

/// Transport protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Proto {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

impl Proto {
    /// `tcp` or `udp`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
        }
    }
}

/// One socket of a /proc/net table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Socket {
    /// Protocol.
    pub proto: Proto,
    /// Local address.
    pub local: SocketAddr,
    /// Remote address (unspecified, port 0, when not connected).
    pub remote: SocketAddr,
    /// Kernel state number (`0A` listen, `01` established, `02` SYN sent, `07` close).
    pub state: u8,
    /// Owner uid.
    pub uid: u32,
    /// Socket inode (0 for sockets in TIME_WAIT).
    pub inode: u64,
}

const TCP_ESTABLISHED: u8 = 0x01;
const TCP_SYN_SENT: u8 = 0x02;
const TCP_CLOSE: u8 = 0x07;
const TCP_LISTEN: u8 = 0x0A;

fn parse_addr(s: &str) -> Option<SocketAddr> {
    let (ip, port) = s.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    // The kernel prints each 32-bit word of the address in host byte order.
    let word = |i: usize| u32::from_str_radix(ip.get(i * 8..i * 8 + 8)?, 16).ok().map(u32::to_ne_bytes);
    let ip = match ip.len() {
        8 => IpAddr::V4(Ipv4Addr::from(word(0)?)),
        32 => {
            let mut b = [0u8; 16];
            for i in 0..4 {
                b[i * 4..i * 4 + 4].copy_from_slice(&word(i)?);
            }
            let v6 = Ipv6Addr::from(b);
            // An IPv4 peer of a dual-stack socket (`::ffff:10.0.0.1`) is an IPv4 address.
            v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4)
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// Parses one /proc/net table. Lines that do not parse are counted in the second value.
pub fn parse_table(text: &str, proto: Proto) -> (Vec<Socket>, usize) {
    let mut out = Vec::new();
    let mut bad = 0;
    for line in text.lines().skip(1) {
        if line.trim().is_empty() {
            continue;
        }
        let f: Vec<&str> = line.split_whitespace().collect();
        let parsed = (|| {
            Some(Socket {
                proto,
                local: parse_addr(f.get(1)?)?,
                remote: parse_addr(f.get(2)?)?,
                state: u8::from_str_radix(f.get(3)?, 16).ok()?,
                uid: f.get(7)?.parse().ok()?,
                inode: f.get(9)?.parse().ok()?,
            })
        })();
        match parsed {
            Some(s) => out.push(s),
            None => bad += 1,
        }
    }
    (out, bad)
}

/// A listening endpoint.
pub type ListenKey = (Proto, SocketAddr);
/// An outbound connection, for the "already reported" memory: protocol, remote, owner uid.
pub type OutboundKey = (Proto, SocketAddr, u32);

/// What changed between two reads.
#[derive(Debug, Default, PartialEq)]
pub struct Changes {
    /// Sockets that started listening.
    pub listening: Vec<Socket>,
    /// Endpoints no longer listening.
    pub closed: Vec<ListenKey>,
    /// New outbound connections (deduplicated).
    pub outbound: Vec<Socket>,
}

/// Remembers what was listening and which outbound connections were reported. Pure.
#[derive(Debug)]
pub struct Tracker {
    listening: Option<HashMap<ListenKey, Socket>>,
    connections: HashSet<(Proto, SocketAddr, SocketAddr)>,
    reported: HashMap<OutboundKey, jiff::Timestamp>,
    reported_order: VecDeque<OutboundKey>,
    /// An outbound connection to the same remote by the same uid is reported once per this.
    pub dedup: Duration,
    /// Most remembered outbound keys.
    pub max_remembered: usize,
}

impl Tracker {
    /// A tracker reporting a repeated outbound connection once per `dedup`.
    pub fn new(dedup: Duration) -> Self {
        Self {
            listening: None,
            connections: HashSet::new(),
            reported: HashMap::new(),
            reported_order: VecDeque::new(),
            dedup,
            max_remembered: 10_000,
        }
    }

    fn is_listening(s: &Socket) -> bool {
        match s.proto {
            Proto::Tcp => s.state == TCP_LISTEN,
            // An unconnected bound UDP socket receives from anyone: it is a listener.
            Proto::Udp => s.state == TCP_CLOSE && s.remote.port() == 0,
        }
    }

    /// Compares `sockets` with the previous read at `now`. The first read learns the baseline
    /// and reports nothing unless `report_existing` (a one-shot scan lists what listens).
    pub fn update(&mut self, sockets: &[Socket], now: jiff::Timestamp, report_existing: bool) -> Changes {
        let listening: HashMap<ListenKey, Socket> =
            sockets.iter().filter(|s| Self::is_listening(s)).map(|s| ((s.proto, s.local), *s)).collect();
        let first = self.listening.is_none();
        let previous = self.listening.replace(listening.clone()).unwrap_or_default();
        let mut changes = Changes::default();
        if !first || report_existing {
            changes.listening = listening.iter().filter(|(k, _)| !previous.contains_key(*k)).map(|(_, s)| *s).collect();
            changes.closed = previous.keys().filter(|k| !listening.contains_key(*k)).copied().collect();
        }
        // Outbound: connected sockets whose local port is not a listening port.
        let listen_ports: HashSet<(Proto, u16)> = listening.keys().map(|(p, a)| (*p, a.port())).collect();
        let current: HashSet<(Proto, SocketAddr, SocketAddr)> = sockets
            .iter()
            .filter(|s| match s.proto {
                Proto::Tcp => matches!(s.state, TCP_ESTABLISHED | TCP_SYN_SENT),
                Proto::Udp => s.state == TCP_ESTABLISHED && s.remote.port() != 0,
            })
            .filter(|s| !listen_ports.contains(&(s.proto, s.local.port())))
            .map(|s| (s.proto, s.local, s.remote))
            .collect();
        if !first {
            for s in sockets {
                let key = (s.proto, s.local, s.remote);
                if !current.contains(&key) || self.connections.contains(&key) {
                    continue;
                }
                let dedup_key = (s.proto, s.remote, s.uid);
                let recent = self.reported.get(&dedup_key).is_some_and(|t| {
                    now.duration_since(*t) < jiff::SignedDuration::try_from(self.dedup).unwrap_or_default()
                });
                if recent {
                    continue;
                }
                if self.reported.insert(dedup_key, now).is_none() {
                    self.reported_order.push_back(dedup_key);
                }
                while self.reported.len() > self.max_remembered {
                    let Some(old) = self.reported_order.pop_front() else { break };
                    self.reported.remove(&old);
                }
                changes.outbound.push(*s);
            }
        }
        self.connections = current;
        changes.listening.sort_by_key(|s| (s.proto, s.local));
        changes.closed.sort();
        changes.outbound.sort_by_key(|s| (s.proto, s.remote, s.local));
        changes
    }
}

/// Reads the four tables of the host's namespace. Unparseable lines are counted in the
/// second value.
pub fn read_sockets(root: &HostRoot) -> (Vec<Socket>, usize) {
    let mut all = Vec::new();
    let mut bad = 0;
    for (file, proto) in TABLES {
        if let Ok(text) = std::fs::read_to_string(root.host_net_file(file)) {
            let (s, b) = parse_table(&text, proto);
            all.extend(s);
            bad += b;
        }
    }
    (all, bad)
}

/// A cheap summary of the socket tables: sockets in use per protocol (`sockstat`,
/// `sockstat6`) and TCP connections opened (`snmp` ActiveOpens, PassiveOpens). A new listener,
/// a closed one, a new connection or a new UDP socket changes it; reading it costs
/// microseconds where the tables cost milliseconds (their size follows the kernel's hash
/// tables, not the number of sockets).
pub fn fingerprint(root: &HostRoot) -> Option<Vec<u64>> {
    let mut out = Vec::new();
    for file in ["sockstat", "sockstat6"] {
        let text = std::fs::read_to_string(root.host_net_file(file)).ok()?;
        for line in text.lines() {
            let mut f = line.split_whitespace();
            let proto = f.next().unwrap_or("");
            if matches!(proto, "TCP:" | "TCP6:" | "UDP:" | "UDP6:") && f.next() == Some("inuse") {
                out.push(f.next()?.parse().ok()?);
            }
        }
    }
    let snmp = std::fs::read_to_string(root.host_net_file("snmp")).ok()?;
    let mut tcp = snmp.lines().filter(|l| l.starts_with("Tcp:"));
    let (names, values) = (tcp.next()?, tcp.next()?);
    for (n, v) in names.split_whitespace().zip(values.split_whitespace()) {
        if n == "ActiveOpens" || n == "PassiveOpens" {
            out.push(v.parse().ok()?);
        }
    }
    Some(out)
}

/// Socket inode → owning pid, for the inodes asked about (one walk of /proc/*/fd).
pub fn owners(root: &HostRoot, inodes: &HashSet<u64>) -> HashMap<u64, i32> {
    let mut out = HashMap::new();
    if inodes.is_empty() {
        return out;
    }
    let Ok(procs) = std::fs::read_dir(root.proc()) else { return out };
    for p in procs.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else { continue };
        let Ok(fds) = std::fs::read_dir(p.path().join("fd")) else { continue };
        for fd in fds.flatten() {
            let Ok(target) = std::fs::read_link(fd.path()) else { continue };
            let Some(inode) = target
                .to_str()
                .and_then(|t| t.strip_prefix("socket:["))
                .and_then(|t| t.strip_suffix(']'))
                .and_then(|t| t.parse::<u64>().ok())
            else {
                continue;
            };
            if inodes.contains(&inode) {
                out.entry(inode).or_insert(pid);
                if out.len() == inodes.len() {
                    return out;
                }
            }
        }
    }
    out
}

/// The event for a new listener or outbound connection.
pub fn socket_event(kind: EventType, s: &Socket, time: jiff::Timestamp) -> Event {
    let text = match kind {
        EventType::NetOutbound => format!("{} connection {} → {}", s.proto.as_str(), s.local, s.remote),
        _ => format!("{} listening on {}", s.proto.as_str(), s.local),
    };
    let e = Event::new(kind, time, text)
        .with("protocol", s.proto.as_str())
        .with("localAddress", s.local.ip().to_string())
        .with("localPort", u32::from(s.local.port()))
        .with("uid", s.uid);
    if kind == EventType::NetOutbound {
        e.with("remoteAddress", s.remote.ip().to_string()).with("remotePort", u32::from(s.remote.port()))
    } else {
        e
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1001 1 0000000000000000 100 0 0 10 0
   1: 0100007F:D431 0100007F:1F90 01 00000000:00000000 00:00000000 00000000  1000        0 1002 1 0000000000000000 20 4 30 10 -1
   2: 0100007F:1F90 0100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 1003 1 0000000000000000 20 4 30 10 -1
   3: 0A00020F:A000 08080808:0035 02 00000001:00000000 01:00000064 00000000  1000        0 1004 1 0000000000000000 100 0 0 10 -1
   bad line
";
    const TCP6: &str = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:0016 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2001 1 0000000000000000 100 0 0 10 0
   1: 0000000000000000FFFF00000100007F:8000 0000000000000000FFFF00000200007F:0050 01 00000000:00000000 00:00000000 00000000  33        0 2002 1 0000000000000000 100 0 0 10 0
   2: 00000000000000000000000001000000:0277 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2003 1 0000000000000000 100 0 0 10 0
";

    fn t(s: i64) -> jiff::Timestamp {
        jiff::Timestamp::from_second(1_700_000_000 + s).unwrap()
    }

    #[test]
    fn parses_v4_v6_and_mapped_addresses() {
        let (v4, bad) = parse_table(TCP, Proto::Tcp);
        assert_eq!((v4.len(), bad), (4, 1));
        assert_eq!(v4[0].local, "127.0.0.1:8080".parse().unwrap());
        assert_eq!((v4[0].state, v4[0].inode), (TCP_LISTEN, 1001));
        assert_eq!(v4[3].remote, "8.8.8.8:53".parse().unwrap());
        assert_eq!(v4[3].local, "15.2.0.10:40960".parse().unwrap());
        let (v6, bad) = parse_table(TCP6, Proto::Tcp);
        assert_eq!(bad, 0);
        assert_eq!(v6[0].local, "[::]:22".parse().unwrap());
        assert_eq!(v6[1].remote, "127.0.0.2:80".parse().unwrap(), "mapped addresses read as IPv4");
        assert_eq!(v6[2].local, "[::1]:631".parse().unwrap());
    }

    #[test]
    fn listeners_and_outbound_after_the_baseline() {
        let (mut socks, _) = parse_table(TCP, Proto::Tcp);
        let mut tr = Tracker::new(Duration::from_secs(3600));
        assert_eq!(tr.update(&socks[..1], t(0), false), Changes::default());
        let ch = tr.update(&socks, t(1), false);
        assert!(ch.listening.is_empty());
        // The client side of 127.0.0.1:54321 → :8080 and the SYN to 8.8.8.8:53; the server
        // side of the accepted connection (local port 8080 listens) is not outbound.
        let remotes: Vec<String> = ch.outbound.iter().map(|s| s.remote.to_string()).collect();
        assert_eq!(remotes, ["8.8.8.8:53", "127.0.0.1:8080"]);
        assert!(tr.update(&socks, t(2), false).outbound.is_empty(), "an open connection is reported once");
        // A new connection to the same remote by the same uid within the dedup window: quiet.
        socks[1].local.set_port(50000);
        assert!(tr.update(&socks, t(3), false).outbound.is_empty());
        socks.remove(0);
        let ch = tr.update(&socks, t(4), false);
        assert_eq!(ch.closed, [(Proto::Tcp, "127.0.0.1:8080".parse().unwrap())]);
    }

    #[test]
    fn a_scan_reports_what_listens_now() {
        let (socks, _) = parse_table(TCP6, Proto::Tcp);
        let mut tr = Tracker::new(Duration::from_secs(60));
        let ch = tr.update(&socks, t(0), true);
        assert_eq!(ch.listening.len(), 2);
        let e = socket_event(EventType::NetListen, &ch.listening[0], t(0));
        assert_eq!((e.detail_str("localAddress"), e.detail_i64("localPort")), (Some("::"), Some(22)));
    }

    #[test]
    fn this_hosts_fingerprint_moves_when_a_socket_listens() {
        let root = HostRoot::new("/");
        let before = fingerprint(&root).expect("sockstat and snmp are readable");
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        // Other processes may open sockets too; the listener alone must change it.
        assert_ne!(fingerprint(&root).unwrap(), before);
        drop(l);
    }

    #[test]
    fn remembered_outbound_keys_are_bounded() {
        let mut tr = Tracker::new(Duration::from_secs(3600));
        tr.max_remembered = 50;
        tr.update(&[], t(0), false);
        for i in 0..1000u16 {
            let s = Socket {
                proto: Proto::Tcp,
                local: SocketAddr::from(([10, 0, 0, 1], 40000)),
                remote: SocketAddr::from(([10, 1, (i >> 8) as u8, i as u8], 443)),
                state: TCP_ESTABLISHED,
                uid: 0,
                inode: u64::from(i),
            };
            tr.update(&[s], t(i64::from(i)), false);
        }
        assert!(tr.reported.len() <= 50);
    }
}
