//! Maintenance windows in their time zones.

use std::time::Duration;

use jiff::Timestamp;
use jiff::civil::{Time, Weekday as JWeekday};
use jiff::tz::TimeZone;
use vigil_crds::rollout::{MaintenanceWindow, Weekday};

/// Why a window could not be evaluated.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WindowError {
    /// Unknown time zone.
    #[error("maintenance window time zone {0:?} is not a known IANA zone")]
    Zone(String),
    /// start/end not HH:MM.
    #[error("maintenance window time {0:?} is not HH:MM")]
    Time(String),
}

fn hhmm(s: &str) -> Result<Time, WindowError> {
    let (h, m) = s.split_once(':').ok_or_else(|| WindowError::Time(s.into()))?;
    let (h, m): (i8, i8) =
        (h.parse().map_err(|_| WindowError::Time(s.into()))?, m.parse().map_err(|_| WindowError::Time(s.into()))?);
    Time::new(h, m, 0, 0).map_err(|_| WindowError::Time(s.into()))
}

fn weekday(d: Weekday) -> JWeekday {
    match d {
        Weekday::Mon => JWeekday::Monday,
        Weekday::Tue => JWeekday::Tuesday,
        Weekday::Wed => JWeekday::Wednesday,
        Weekday::Thu => JWeekday::Thursday,
        Weekday::Fri => JWeekday::Friday,
        Weekday::Sat => JWeekday::Saturday,
        Weekday::Sun => JWeekday::Sunday,
    }
}

/// Whether `now` is inside the window; a window crossing midnight belongs to the day it opens.
pub fn is_open(w: &MaintenanceWindow, now: Timestamp) -> Result<bool, WindowError> {
    let tz = TimeZone::get(&w.time_zone).map_err(|_| WindowError::Zone(w.time_zone.clone()))?;
    let (start, end) = (hhmm(&w.start)?, hhmm(&w.end)?);
    let local = now.to_zoned(tz);
    let t = local.time();
    let day_ok = |d: JWeekday| w.days.is_empty() || w.days.iter().any(|x| weekday(*x) == d);
    Ok(if start < end {
        day_ok(local.weekday()) && t >= start && t < end
    } else {
        // Crosses midnight: open from start to 24:00 on an allowed day, and from 00:00 to end
        // on the day after one.
        (t >= start && day_ok(local.weekday())) || (t < end && day_ok(local.weekday().previous()))
    })
}

/// Whether any window is open (no windows: always).
pub fn any_open(windows: &[MaintenanceWindow], now: Timestamp) -> Result<bool, WindowError> {
    if windows.is_empty() {
        return Ok(true);
    }
    for w in windows {
        if is_open(w, now)? {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Time until the next window opens, searched minute by minute over the next 8 days (the
/// windows repeat weekly); `None` when none opens in that span.
pub fn until_next_open(windows: &[MaintenanceWindow], now: Timestamp) -> Result<Option<Duration>, WindowError> {
    let base = now.round(jiff::Unit::Minute).unwrap_or(now);
    for minutes in 1..=(8 * 24 * 60) {
        let at = base + jiff::SignedDuration::from_mins(minutes);
        if any_open(windows, at)? {
            return Ok(Some(at.duration_since(now).try_into().unwrap_or(Duration::ZERO)));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(days: Vec<Weekday>, start: &str, end: &str, tz: &str) -> MaintenanceWindow {
        MaintenanceWindow { days, start: start.into(), end: end.into(), time_zone: tz.into() }
    }

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn a_window_is_judged_in_its_own_time_zone() {
        // 2026-11-21 is a Saturday. 13:30 UTC is 22:30 in Seoul (UTC+9).
        let seoul = w(vec![Weekday::Sat, Weekday::Sun], "22:00", "06:00", "Asia/Seoul");
        assert!(is_open(&seoul, at("2026-11-21T13:30:00Z")).unwrap());
        // Sunday 05:59 in Seoul (Saturday 20:59 UTC): still the window that opened Saturday.
        assert!(is_open(&seoul, at("2026-11-21T20:59:00Z")).unwrap());
        // Monday 05:00 Seoul: opened Sunday night, allowed.
        assert!(is_open(&seoul, at("2026-11-22T20:00:00Z")).unwrap());
        // Tuesday 05:00 Seoul: opened Monday night, Monday is not a window day.
        assert!(!is_open(&seoul, at("2026-11-23T20:00:00Z")).unwrap());
        // Saturday 12:00 Seoul: closed.
        assert!(!is_open(&seoul, at("2026-11-21T03:00:00Z")).unwrap());
    }

    #[test]
    fn daylight_saving_shifts_a_window_in_utc() {
        let berlin = w(vec![], "09:00", "17:00", "Europe/Berlin");
        // 08:30 UTC is 09:30 CET in winter (open) and 10:30 CEST in summer (open); 16:30 UTC
        // is 17:30 CET (closed) but 18:30 CEST (closed); 15:30 UTC: 16:30 CET open, 17:30 CEST closed.
        assert!(is_open(&berlin, at("2026-01-15T15:30:00Z")).unwrap());
        assert!(!is_open(&berlin, at("2026-07-15T15:30:00Z")).unwrap());
    }

    #[test]
    fn next_opening_is_found_and_bad_zones_are_errors() {
        let nightly = w(vec![], "02:00", "04:00", "UTC");
        let d = until_next_open(std::slice::from_ref(&nightly), at("2026-11-22T01:00:00Z")).unwrap().unwrap();
        assert_eq!(d, Duration::from_secs(3600));
        assert_eq!(
            is_open(&w(vec![], "02:00", "04:00", "Mars/Olympus"), at("2026-11-22T01:00:00Z")),
            Err(WindowError::Zone("Mars/Olympus".into()))
        );
        assert!(any_open(&[], at("2026-11-22T01:00:00Z")).unwrap());
    }
}
