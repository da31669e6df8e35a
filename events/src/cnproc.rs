//! The kernel's process connector (`NETLINK_CONNECTOR`, `CN_IDX_PROC`): a message per fork,
//! exec and exit, as they happen, so a process that lives a millisecond is still seen.
//!
//! Listening needs `CAP_NET_ADMIN` in the initial user namespace on kernels before 6.6 (the
//! DaemonSet grants it; 6.6 opened the connector to unprivileged listeners); where it is
//! refused, [`Listener::open`] fails and the agent polls /proc instead. The message layout
//! is `struct nlmsghdr` + `struct cn_msg` + `struct proc_event` (`<linux/cn_proc.h>`);
//! [`decode`] is pure and property-tested.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::time::Duration;

const NLMSG_HDR: usize = 16;
const CN_MSG_HDR: usize = 20;
const NLMSG_DONE: u16 = 3;
const NLMSG_ERROR: u16 = 2;
const NLMSG_OVERRUN: u16 = 4;
const CN_IDX_PROC: u32 = 1;
const CN_VAL_PROC: u32 = 1;
const PROC_CN_MCAST_LISTEN: u32 = 1;
const PROC_CN_MCAST_IGNORE: u32 = 2;

const PROC_EVENT_FORK: u32 = 0x0000_0001;
const PROC_EVENT_EXEC: u32 = 0x0000_0002;
const PROC_EVENT_EXIT: u32 = 0x8000_0000;

/// Which message an event came in: the CPU that sent it, that CPU's number for it, and the
/// kernel's monotonic clock (`CLOCK_MONOTONIC`, in ns) when it was sent. The kernel sends one
/// message to every listener, so two agents listening at once see the same stamp on the same
/// event: that is how an agent taking over a node tells which events the other one reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct Stamp {
    /// The kernel's monotonic clock at sending, in ns (`ktime_get_ns`).
    pub ns: u64,
    /// The sending CPU.
    pub cpu: u32,
    /// That CPU's number for the message.
    pub seq: u32,
}

/// One process event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProcEvent {
    /// A task forked; threads have `child_pid != child_tgid`.
    Fork {
        /// The parent process.
        parent_tgid: i32,
        /// The new task.
        child_pid: i32,
        /// The new task's process.
        child_tgid: i32,
    },
    /// A process executed a program.
    Exec {
        /// The task.
        pid: i32,
        /// Its process.
        tgid: i32,
    },
    /// A task ended.
    Exit {
        /// The task.
        pid: i32,
        /// Its process.
        tgid: i32,
        /// `wait(2)` status: exit code in bits 8-15, signal in bits 0-6.
        exit_code: u32,
        /// Signal sent to the parent.
        exit_signal: u32,
    },
    /// The kernel could not deliver messages: the socket buffer overflowed (how many were
    /// lost comes with [`ProcEvent::Lost`], from the sequence numbers).
    Overrun,
    /// This many messages never arrived: a gap in a CPU's sequence numbers.
    Lost(u64),
    /// Anything else (uid, gid, sid, comm, ptrace, coredump changes, acks).
    Other,
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn i32_at(b: &[u8], at: usize) -> Option<i32> {
    Some(i32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// Decodes every netlink message in one datagram. Malformed messages end the walk; what was
/// decoded before them is kept.
pub fn decode(datagram: &[u8]) -> Vec<ProcEvent> {
    decode_numbered(datagram).into_iter().map(|(_, e)| e).collect()
}

/// [`decode`], with each process event's [`Stamp`]: the kernel numbers the messages it sends
/// from each CPU one by one, so a gap is a count of lost messages.
pub fn decode_numbered(datagram: &[u8]) -> Vec<(Option<Stamp>, ProcEvent)> {
    let mut out = Vec::new();
    let mut at = 0;
    while datagram.len() - at >= NLMSG_HDR {
        let Some(len) = u32_at(datagram, at).map(|l| l as usize) else { break };
        let kind = u16::from_ne_bytes([datagram[at + 4], datagram[at + 5]]);
        if len < NLMSG_HDR || at + len > datagram.len() {
            break;
        }
        let msg = &datagram[at..at + len];
        match kind {
            NLMSG_OVERRUN => out.push((None, ProcEvent::Overrun)),
            NLMSG_ERROR => out.push((None, ProcEvent::Other)),
            _ => {
                let cn = &msg[NLMSG_HDR..];
                let event = decode_cn(cn).unwrap_or(ProcEvent::Other);
                // cn_msg's seq at 8; proc_event's cpu at 4 of its data, its time at 8.
                // Every message the kernel sends through its per-CPU counter is numbered, acks
                // too (they take a number, so skipping them would read as a loss). Older
                // kernels sent acks outside the counter, with CPU -1 and the number whoever
                // asked chose (any user may ask): those do not count.
                let numbered = (u32_at(cn, 0) == Some(CN_IDX_PROC) && u32_at(cn, 4) == Some(CN_VAL_PROC))
                    .then(|| {
                        Some(Stamp {
                            cpu: u32_at(cn, CN_MSG_HDR + 4)?,
                            seq: u32_at(cn, 8)?,
                            ns: u64::from_ne_bytes(cn.get(CN_MSG_HDR + 8..CN_MSG_HDR + 16)?.try_into().ok()?),
                        })
                    })
                    .flatten()
                    .filter(|s| s.cpu != u32::MAX);
                out.push((numbered, event));
            }
        }
        // Messages are 4-byte aligned.
        at += (len + 3) & !3;
    }
    out
}

fn decode_cn(cn: &[u8]) -> Option<ProcEvent> {
    if u32_at(cn, 0)? != CN_IDX_PROC || u32_at(cn, 4)? != CN_VAL_PROC {
        return Some(ProcEvent::Other);
    }
    let ev = cn.get(CN_MSG_HDR..)?;
    // proc_event: what u32, cpu u32, timestamp_ns u64, then the union at 16.
    let what = u32_at(ev, 0)?;
    let data = 16;
    Some(match what {
        PROC_EVENT_FORK => ProcEvent::Fork {
            parent_tgid: i32_at(ev, data + 4)?,
            child_pid: i32_at(ev, data + 8)?,
            child_tgid: i32_at(ev, data + 12)?,
        },
        PROC_EVENT_EXEC => ProcEvent::Exec { pid: i32_at(ev, data)?, tgid: i32_at(ev, data + 4)? },
        PROC_EVENT_EXIT => ProcEvent::Exit {
            pid: i32_at(ev, data)?,
            tgid: i32_at(ev, data + 4)?,
            exit_code: u32_at(ev, data + 8)?,
            exit_signal: u32_at(ev, data + 12)?,
        },
        _ => ProcEvent::Other,
    })
}

/// The last sequence number seen from each CPU; a jump forward is that many lost messages.
/// Pure.
#[derive(Debug, Default)]
pub struct Sequence {
    last: std::collections::HashMap<u32, u32>,
}

impl Sequence {
    /// Notes message `seq` from `cpu`; returns how many of that CPU's messages before it never
    /// arrived. The first message of a CPU sets its baseline. Numbers compare as serial numbers
    /// (a gap across the 2^32 wrap counts); one that is not ahead of the last by less than half
    /// the space (a counter reset, a message out of order) sets a new baseline and counts
    /// nothing.
    pub fn observe(&mut self, cpu: u32, seq: u32) -> u64 {
        let lost = match self.last.get(&cpu) {
            Some(&last) => match seq.wrapping_sub(last) {
                d @ 1..0x8000_0000 => u64::from(d - 1),
                _ => 0,
            },
            None => 0,
        };
        // At most as many entries as CPUs the kernel numbers; a hostile datagram cannot grow it
        // past that bound.
        if self.last.len() < 4096 || self.last.contains_key(&cpu) {
            self.last.insert(cpu, seq);
        }
        lost
    }
}

/// Encodes a message as the kernel sends it (tests, fuzzing, the subscription request).
pub fn encode(what: u32, payload: &[u8]) -> Vec<u8> {
    let mut ev = Vec::with_capacity(16 + payload.len());
    ev.extend_from_slice(&what.to_ne_bytes());
    ev.extend_from_slice(&0u32.to_ne_bytes()); // cpu
    ev.extend_from_slice(&0u64.to_ne_bytes()); // timestamp
    ev.extend_from_slice(payload);
    cn_message(&ev)
}

fn cn_message(data: &[u8]) -> Vec<u8> {
    let len = NLMSG_HDR + CN_MSG_HDR + data.len();
    let mut m = Vec::with_capacity(len);
    m.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_ne_bytes());
    m.extend_from_slice(&NLMSG_DONE.to_ne_bytes());
    m.extend_from_slice(&0u16.to_ne_bytes()); // flags
    m.extend_from_slice(&0u32.to_ne_bytes()); // seq
    m.extend_from_slice(&0u32.to_ne_bytes()); // port id
    m.extend_from_slice(&CN_IDX_PROC.to_ne_bytes());
    m.extend_from_slice(&CN_VAL_PROC.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes()); // seq
    m.extend_from_slice(&0u32.to_ne_bytes()); // ack
    m.extend_from_slice(&u16::try_from(data.len()).unwrap_or(u16::MAX).to_ne_bytes());
    m.extend_from_slice(&0u16.to_ne_bytes()); // flags
    m.extend_from_slice(data);
    m
}

/// A subscribed process-connector socket.
#[derive(Debug)]
pub struct Listener {
    fd: OwnedFd,
    buf: Vec<u8>,
    sequence: Sequence,
    /// The receive buffer the kernel granted, in bytes.
    pub receive_buffer: usize,
}

impl Listener {
    /// Opens the socket, joins the process-event group and subscribes. Fails without
    /// `CAP_NET_ADMIN` on kernels before 6.6.
    pub fn open() -> io::Result<Self> {
        use rustix::net::{AddressFamily, SocketFlags, SocketType, netlink};
        let fd = rustix::net::socket_with(
            AddressFamily::NETLINK,
            SocketType::DGRAM,
            SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
            Some(netlink::CONNECTOR),
        )?;
        // A large receive buffer rides out bursts (a fork storm) without overruns. With
        // CAP_NET_ADMIN the agent may go past net.core.rmem_max (SO_RCVBUFFORCE); without it
        // the kernel caps the size at rmem_max.
        if rustix::net::sockopt::set_socket_recv_buffer_size_force(&fd, 8 << 20).is_err() {
            let _ = rustix::net::sockopt::set_socket_recv_buffer_size(&fd, 8 << 20);
        }
        rustix::net::bind(&fd, &netlink::SocketAddrNetlink::new(0, CN_IDX_PROC))?;
        let receive_buffer = rustix::net::sockopt::socket_recv_buffer_size(&fd).unwrap_or(0);
        let listener = Self { fd, buf: vec![0u8; 64 * 1024], sequence: Sequence::default(), receive_buffer };
        listener.send_op(PROC_CN_MCAST_LISTEN)?;
        Ok(listener)
    }

    fn send_op(&self, op: u32) -> io::Result<()> {
        let msg = cn_message(&op.to_ne_bytes());
        rustix::net::send(&self.fd, &msg, rustix::net::SendFlags::empty())?;
        Ok(())
    }

    /// Waits up to `timeout` for messages and decodes what arrived, each with its stamp. An
    /// overrun (ENOBUFS) is reported as [`ProcEvent::Overrun`], and the messages lost as
    /// [`ProcEvent::Lost`] once the gap in their sequence numbers shows (stamped with the
    /// message that showed it).
    pub fn recv(&mut self, timeout: Duration) -> io::Result<Vec<(Option<Stamp>, ProcEvent)>> {
        let mut out = Vec::new();
        if !super::process::wait_readable(self.fd.as_fd(), timeout)? {
            return Ok(out);
        }
        loop {
            match rustix::net::recv(&self.fd, &mut self.buf[..], rustix::net::RecvFlags::empty()) {
                Ok((n, _)) => {
                    for (stamp, event) in decode_numbered(&self.buf[..n]) {
                        if let Some(s) = stamp {
                            let lost = self.sequence.observe(s.cpu, s.seq);
                            if lost > 0 {
                                // Stamped with the message that showed the gap.
                                out.push((stamp, ProcEvent::Lost(lost)));
                            }
                        }
                        out.push((stamp, event));
                    }
                }
                Err(rustix::io::Errno::AGAIN) => break,
                Err(rustix::io::Errno::NOBUFS) => out.push((None, ProcEvent::Overrun)),
                Err(e) => return Err(e.into()),
            }
            if out.len() > 4096 {
                break;
            }
        }
        Ok(out)
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        let _ = self.send_op(PROC_CN_MCAST_IGNORE);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ints(v: &[i32]) -> Vec<u8> {
        v.iter().flat_map(|i| i.to_ne_bytes()).collect()
    }

    #[test]
    fn decodes_fork_exec_exit_in_one_datagram() {
        let mut d = encode(PROC_EVENT_FORK, &ints(&[100, 100, 101, 101]));
        d.extend(encode(PROC_EVENT_EXEC, &ints(&[101, 101])));
        d.extend(encode(PROC_EVENT_EXIT, &ints(&[101, 101, 256, 17, 100, 100])));
        d.extend(encode(0x0000_0004, &ints(&[101, 101, 0, 0]))); // uid change
        assert_eq!(
            decode(&d),
            [
                ProcEvent::Fork { parent_tgid: 100, child_pid: 101, child_tgid: 101 },
                ProcEvent::Exec { pid: 101, tgid: 101 },
                ProcEvent::Exit { pid: 101, tgid: 101, exit_code: 256, exit_signal: 17 },
                ProcEvent::Other,
            ]
        );
    }

    #[test]
    fn messages_carry_their_cpu_and_number_and_gaps_count_lost_messages() {
        let d = encode(PROC_EVENT_EXEC, &ints(&[7, 7]));
        let mut d = d;
        d[NLMSG_HDR + CN_MSG_HDR + 8..NLMSG_HDR + CN_MSG_HDR + 16].copy_from_slice(&123_456_789u64.to_ne_bytes());
        assert_eq!(
            decode_numbered(&d),
            [(Some(Stamp { ns: 123_456_789, cpu: 0, seq: 0 }), ProcEvent::Exec { pid: 7, tgid: 7 })]
        );
        let mut s = Sequence::default();
        assert_eq!(s.observe(0, 10), 0, "the first sets the baseline");
        assert_eq!(s.observe(0, 11), 0);
        assert_eq!(s.observe(1, 500), 0, "each CPU counts on its own");
        assert_eq!(s.observe(0, 15), 3, "12, 13 and 14 never came");
        assert_eq!(s.observe(1, 501), 0);
        assert_eq!(s.observe(0, 2), 0, "a reset sets a new baseline");
        assert_eq!(s.observe(0, 4), 1);
        assert_eq!(s.observe(0, 4), 0, "a repeat is no loss");
        assert_eq!(s.observe(2, u32::MAX - 1), 0);
        assert_eq!(s.observe(2, 1), 2, "u32::MAX and 0 never came, across the wrap");
        assert_eq!(s.observe(2, 0xF000_0000), 0, "a jump of more than half the space is a reset");
        // An ack of an older kernel (CPU -1) carries a number anyone may choose; one of the
        // per-CPU counter is numbered like any message.
        let mut ack = encode(0, &ints(&[0, 0]));
        ack[NLMSG_HDR + 8..NLMSG_HDR + 12].copy_from_slice(&0xFFFF_FFFEu32.to_ne_bytes());
        assert_eq!(decode_numbered(&ack)[0].0, Some(Stamp { ns: 0, cpu: 0, seq: 0xFFFF_FFFE }));
        ack[NLMSG_HDR + CN_MSG_HDR + 4..NLMSG_HDR + CN_MSG_HDR + 8].copy_from_slice(&u32::MAX.to_ne_bytes());
        assert_eq!(decode_numbered(&ack)[0].0, None);
        let mut nocpu = encode(PROC_EVENT_EXEC, &ints(&[5, 5]));
        nocpu[NLMSG_HDR + CN_MSG_HDR + 4..NLMSG_HDR + CN_MSG_HDR + 8].copy_from_slice(&u32::MAX.to_ne_bytes());
        assert_eq!(decode_numbered(&nocpu)[0].0, None);
    }

    #[test]
    fn truncated_and_garbage_input_decode_to_what_is_whole() {
        let d = encode(PROC_EVENT_EXEC, &ints(&[5, 5]));
        for cut in 0..d.len() {
            let _ = decode(&d[..cut]);
        }
        assert!(decode(&[0xff; 64]).len() <= 4);
        assert!(decode(&[]).is_empty());
    }
}
