//! wtmp and btmp records (glibc's `struct utmp`, 384 bytes on 64-bit Linux): logins, logouts,
//! boots and shutdowns from wtmp, failed logins from btmp. Pure.
//!
//! Layout (`<bits/utmp.h>`): type i16 (+2 padding), pid i32, line[32], id[4], user[32],
//! host[256], exit (2×i16), session i32, tv (2×i32), addr_v6 (4×i32), reserved[20].

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::{Event, EventType};

/// Size of one record.
pub const RECORD_SIZE: usize = 384;

/// `ut_type` values that matter here.
const BOOT_TIME: i16 = 2;
const RUN_LVL: i16 = 1;
const USER_PROCESS: i16 = 7;
const DEAD_PROCESS: i16 = 8;

/// One decoded record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Utmp {
    /// `ut_type`.
    pub kind: i16,
    /// Process id.
    pub pid: i32,
    /// Terminal (`pts/0`, `ssh:notty`).
    pub line: String,
    /// User name (`reboot`, `shutdown` for those records).
    pub user: String,
    /// Remote host as the login program wrote it.
    pub host: String,
    /// Remote address, if one was recorded.
    pub addr: Option<IpAddr>,
    /// Record time.
    pub time: jiff::Timestamp,
}

fn text(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    super::utf8_escaped(&b[..end]).into_owned()
}

fn i32_at(b: &[u8], at: usize) -> i32 {
    i32::from_ne_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Decodes one record; `None` unless exactly [`RECORD_SIZE`] bytes with a plausible type and
/// time.
pub fn parse(b: &[u8]) -> Option<Utmp> {
    if b.len() != RECORD_SIZE {
        return None;
    }
    let kind = i16::from_ne_bytes([b[0], b[1]]);
    if !(0..=9).contains(&kind) {
        return None;
    }
    let secs = i32_at(b, 340);
    let usecs = i32_at(b, 344);
    let time = jiff::Timestamp::new(i64::from(secs), usecs.clamp(0, 999_999) * 1000).ok()?;
    let a = [i32_at(b, 348), i32_at(b, 352), i32_at(b, 356), i32_at(b, 360)];
    let addr = if a == [0; 4] {
        None
    } else if a[1..] == [0; 3] {
        Some(IpAddr::V4(Ipv4Addr::from(a[0].to_ne_bytes())))
    } else {
        let mut bytes = [0u8; 16];
        for (i, w) in a.iter().enumerate() {
            bytes[i * 4..i * 4 + 4].copy_from_slice(&w.to_ne_bytes());
        }
        Some(IpAddr::V6(Ipv6Addr::from(bytes)))
    };
    Some(Utmp {
        kind,
        pid: i32_at(b, 4),
        line: text(&b[8..40]),
        user: text(&b[44..76]),
        host: text(&b[76..332]),
        addr,
        time,
    })
}

/// Encodes a record (the inverse of [`parse`], for tests and fixtures).
pub fn encode(u: &Utmp) -> [u8; RECORD_SIZE] {
    let mut b = [0u8; RECORD_SIZE];
    b[0..2].copy_from_slice(&u.kind.to_ne_bytes());
    b[4..8].copy_from_slice(&u.pid.to_ne_bytes());
    let put = |b: &mut [u8], s: &str| {
        let n = s.len().min(b.len());
        b[..n].copy_from_slice(&s.as_bytes()[..n]);
    };
    put(&mut b[8..40], &u.line);
    put(&mut b[44..76], &u.user);
    put(&mut b[76..332], &u.host);
    let secs = i32::try_from(u.time.as_second()).unwrap_or(i32::MAX);
    b[340..344].copy_from_slice(&secs.to_ne_bytes());
    b[344..348].copy_from_slice(&(u.time.subsec_microsecond()).to_ne_bytes());
    match u.addr {
        Some(IpAddr::V4(v4)) => b[348..352].copy_from_slice(&v4.octets()),
        Some(IpAddr::V6(v6)) => b[348..364].copy_from_slice(&v6.octets()),
        None => {}
    }
    b
}

/// Which file a record came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Log {
    /// wtmp: logins, logouts, boots.
    Wtmp,
    /// btmp: failed logins.
    Btmp,
}

/// The event a record means, if any.
pub fn to_event(u: &Utmp, log: Log) -> Option<Event> {
    let from = u.addr.map(|a| a.to_string()).or_else(|| Some(u.host.clone()).filter(|h| !h.is_empty()));
    let e = match (log, u.kind) {
        (Log::Btmp, _) => Event::new(
            EventType::LoginFailed,
            u.time,
            format!("failed login of {} on {} from {}", u.user, u.line, from.as_deref().unwrap_or("local")),
        ),
        (Log::Wtmp, USER_PROCESS) => Event::new(
            EventType::Login,
            u.time,
            format!("{} logged in on {} from {}", u.user, u.line, from.as_deref().unwrap_or("local")),
        ),
        (Log::Wtmp, DEAD_PROCESS) if !u.line.is_empty() => {
            Event::new(EventType::Logout, u.time, format!("logout on {}", u.line))
        }
        (Log::Wtmp, BOOT_TIME) => {
            Event::new(EventType::SystemBoot, u.time, "system booted".to_owned()).with("action", "boot")
        }
        (Log::Wtmp, RUN_LVL) if u.user == "shutdown" => {
            Event::new(EventType::SystemBoot, u.time, "system shut down".to_owned()).with("action", "shutdown")
        }
        _ => return None,
    };
    let user = Some(u.user.as_str()).filter(|s| !s.is_empty() && u.kind != DEAD_PROCESS && u.kind != BOOT_TIME);
    Some(
        e.with("user", user)
            .with("tty", Some(u.line.as_str()).filter(|s| !s.is_empty()))
            .with("host", Some(u.host.as_str()).filter(|s| !s.is_empty()))
            .with("sourceAddress", u.addr.map(|a| a.to_string()))
            .with("pid", (u.pid > 0).then_some(u.pid)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(kind: i16, user: &str, addr: Option<IpAddr>) -> Utmp {
        Utmp {
            kind,
            pid: 4242,
            line: "ssh:notty".into(),
            user: user.into(),
            host: "192.0.2.1".into(),
            addr,
            time: jiff::Timestamp::new(1_763_800_000, 250_000_000).unwrap(),
        }
    }

    #[test]
    fn records_round_trip_v4_and_v6() {
        for addr in [None, Some("192.0.2.1".parse().unwrap()), Some("2001:db8::1".parse().unwrap())] {
            let r = rec(USER_PROCESS, "alice", addr);
            assert_eq!(parse(&encode(&r)).unwrap(), r);
        }
        assert!(parse(&[0u8; 100]).is_none());
        let mut bad = encode(&rec(USER_PROCESS, "a", None));
        bad[0] = 99;
        assert!(parse(&bad).is_none());
    }

    #[test]
    fn events_per_log() {
        let e = to_event(&rec(USER_PROCESS, "alice", Some("192.0.2.1".parse().unwrap())), Log::Wtmp).unwrap();
        assert_eq!(
            (e.kind, e.detail_str("user"), e.detail_str("sourceAddress")),
            (EventType::Login, Some("alice"), Some("192.0.2.1"))
        );
        let e = to_event(&rec(6, "root", None), Log::Btmp).unwrap();
        assert_eq!(
            (e.kind, e.detail_str("user"), e.detail_str("host")),
            (EventType::LoginFailed, Some("root"), Some("192.0.2.1"))
        );
        let e = to_event(&rec(BOOT_TIME, "reboot", None), Log::Wtmp).unwrap();
        assert_eq!((e.kind, e.detail_str("action")), (EventType::SystemBoot, Some("boot")));
        assert_eq!(to_event(&rec(DEAD_PROCESS, "", None), Log::Wtmp).unwrap().kind, EventType::Logout);
        assert!(to_event(&rec(5, "", None), Log::Wtmp).is_none());
    }

    #[test]
    fn this_hosts_wtmp_and_btmp_parse_if_present() {
        for (path, log) in [("/var/log/wtmp", Log::Wtmp), ("/var/log/btmp", Log::Btmp)] {
            let Ok(bytes) = std::fs::read(path) else { continue };
            for chunk in bytes.chunks_exact(RECORD_SIZE) {
                let u = parse(chunk).unwrap_or_else(|| panic!("a record of {path} did not parse"));
                let _ = to_event(&u, log);
            }
        }
    }
}
