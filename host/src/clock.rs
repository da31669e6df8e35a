//! Clock synchronisation state from the kernel (adjtimex(2) in read-only mode).
//!
//! The kernel clock is shared by every namespace, so the agent's reading is the host's.
//! chrony and ntpd both discipline the kernel clock and keep these fields current; when
//! neither runs, the kernel reports the clock unsynchronised.

use serde::Serialize;

/// The kernel's view of clock synchronisation.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClockState {
    /// A time daemon keeps the clock synchronised (`STA_UNSYNC` clear and state not TIME_ERROR).
    pub synchronized: bool,
    /// Current offset being corrected, seconds (positive: the clock is behind).
    pub offset_seconds: f64,
    /// Estimated error, seconds.
    pub estimated_error_seconds: f64,
    /// Maximum error, seconds (grows while unsynchronised).
    pub max_error_seconds: f64,
    /// Frequency correction, parts per million.
    pub frequency_ppm: f64,
}

const STA_UNSYNC: i32 = 0x0040;
const STA_NANO: i32 = 0x2000;
const TIME_ERROR: i32 = 5;

/// Raw adjtimex fields, decoded apart from the syscall so the decoding is testable.
#[derive(Clone, Copy, Debug)]
pub struct Raw {
    /// Return value of adjtimex (the clock state).
    pub state: i32,
    /// `status` flags.
    pub status: i32,
    /// `offset`: µs, or ns with `STA_NANO`.
    pub offset: i64,
    /// `freq`: ppm with a 16-bit fraction.
    pub freq: i64,
    /// `maxerror`, µs.
    pub maxerror: i64,
    /// `esterror`, µs.
    pub esterror: i64,
}

impl Raw {
    /// Decodes the fields.
    pub fn decode(self) -> ClockState {
        let offset_unit = if self.status & STA_NANO != 0 { 1e-9 } else { 1e-6 };
        ClockState {
            synchronized: self.status & STA_UNSYNC == 0 && self.state != TIME_ERROR,
            offset_seconds: self.offset as f64 * offset_unit,
            estimated_error_seconds: self.esterror as f64 * 1e-6,
            max_error_seconds: self.maxerror as f64 * 1e-6,
            frequency_ppm: self.freq as f64 / 65536.0,
        }
    }
}

/// Reads the kernel clock state; `None` when the call fails (it needs no privilege).
pub fn read() -> Option<ClockState> {
    read_raw().map(Raw::decode)
}

#[allow(unsafe_code, clippy::useless_conversion)]
fn read_raw() -> Option<Raw> {
    // SAFETY: `timex` is plain old data, so all-zeroes is a valid value; with `modes == 0`
    // adjtimex only reads the kernel's state into the struct we own and changes nothing.
    let (state, tx) = unsafe {
        let mut tx: libc::timex = std::mem::zeroed();
        tx.modes = 0;
        (libc::adjtimex(&mut tx), tx)
    };
    // `c_long` is i32 on 32-bit targets; `From` widens it there and is the identity here.
    (state >= 0).then_some(Raw {
        state,
        status: tx.status,
        offset: i64::from(tx.offset),
        freq: i64::from(tx.freq),
        maxerror: i64::from(tx.maxerror),
        esterror: i64::from(tx.esterror),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_disciplined_clock_reads_synchronised_with_its_offset() {
        let c =
            Raw { state: 0, status: 0x0001, offset: -1500, freq: 65536 * 12, maxerror: 20_000, esterror: 500 }.decode();
        assert!(c.synchronized);
        assert!((c.offset_seconds + 0.0015).abs() < 1e-12);
        assert!((c.frequency_ppm - 12.0).abs() < 1e-12);
        assert!((c.estimated_error_seconds - 0.0005).abs() < 1e-12);
    }

    #[test]
    fn unsync_flag_or_time_error_means_unsynchronised() {
        assert!(
            !Raw { state: 0, status: STA_UNSYNC, offset: 0, freq: 0, maxerror: 16_000_000, esterror: 16_000_000 }
                .decode()
                .synchronized
        );
        assert!(
            !Raw { state: TIME_ERROR, status: 0, offset: 0, freq: 0, maxerror: 0, esterror: 0 }.decode().synchronized
        );
    }

    #[test]
    fn nanosecond_mode_scales_the_offset() {
        let c = Raw { state: 0, status: STA_NANO, offset: 2_000_000, freq: 0, maxerror: 0, esterror: 0 }.decode();
        assert!((c.offset_seconds - 0.002).abs() < 1e-12);
    }

    #[test]
    fn this_kernel_answers_the_read_only_call() {
        let c = read().expect("adjtimex(2) with modes=0 needs no privilege");
        assert!(c.max_error_seconds >= 0.0);
    }
}
