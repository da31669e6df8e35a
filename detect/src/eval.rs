//! Judging detectors on labelled series: the CSV layout the evaluation harness reads
//! (`cargo bench -p vigil-agent --bench evaluate`), generators for the failure modes node
//! metrics show, and the scores. Pure: text in, numbers out.
//!
//! **Layout.** One series per `.csv` file, a header line, then one sample per line:
//! `timestamp,value,label`. Columns are found by name (`timestamp`/`time`/`ts`,
//! `value`, `label`/`is_anomaly`/`anomaly`), else by position (first, second, last).
//! Timestamps are RFC 3339 (`2014-04-01T00:05:00Z`), `YYYY-MM-DD HH:MM:SS` (UTC), Unix
//! seconds or milliseconds, or sample numbers (under 10⁹), which are spaced by a given step.
//! A label is `1`/`true` inside an anomaly window, `0`/`false` outside: a window is a run of
//! labelled rows. A file `NAME_TRAIN.csv` next to `NAME_TEST.csv` is fed first and not
//! scored.
//!
//! **Scores.** A condition that starts (fires) inside a window detects it (the first one
//! counts; more inside the same window cost nothing); one outside every window is a false
//! alarm. Samples before the scored part (the training file, else the first 15%: the
//! probation every detector gets to learn) are not scored. Recall, precision, false alarms
//! per 1,000 scored samples and the delay from window start are reported, and the windowed
//! early-detection score of the Numenta Anomaly Benchmark: a detection earns
//! σ(y) = 2 / (1 + e^(5y)) − 1 where y ∈ [−1, 0) is its position in the window (early is
//! worth almost 1, late almost 0), a missed window costs `a_fn`, a false alarm costs `a_fp`
//! times −σ of its distance after the last window (almost nothing just after a window, a
//! full `a_fp` elsewhere); normalised so that never alarming scores 0 and detecting every
//! window at its start scores 100.

use std::time::Duration;

use super::synth::Rng;

/// A labelled series.
#[derive(Clone, Debug, PartialEq)]
pub struct Labelled {
    /// Where it came from (file or generator and seed).
    pub name: String,
    /// Sample times, increasing.
    pub times: Vec<jiff::Timestamp>,
    /// Values.
    pub values: Vec<f64>,
    /// Inside an anomaly window.
    pub labels: Vec<bool>,
    /// Samples before this one are not scored (training, probation).
    pub scored_from: usize,
}

/// A CSV that cannot be read, and where.
#[derive(Debug, PartialEq, Eq)]
pub struct EvalError {
    /// `file:line`.
    pub at: String,
    /// What is wrong.
    pub message: String,
}

impl std::fmt::Display for EvalError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.at, self.message)
    }
}

impl std::error::Error for EvalError {}

/// The share of a series the detectors learn on, unscored, when it has no training part.
pub const PROBATION: f64 = 0.15;

fn timestamp(text: &str, step: Duration) -> Result<jiff::Timestamp, String> {
    if let Ok(n) = text.parse::<f64>() {
        let secs = if n >= 1e12 {
            n / 1000.0
        } else if n >= 1e9 {
            n
        } else {
            // A sample number: spaced by `step` from a fixed origin.
            1_800_000_000.0 + n * step.as_secs_f64()
        };
        let out_of_range = |_| format!("timestamp {text} is out of range");
        let d = jiff::SignedDuration::try_from_secs_f64(secs).map_err(out_of_range)?;
        return jiff::Timestamp::from_duration(d).map_err(out_of_range);
    }
    if let Ok(t) = text.parse::<jiff::Timestamp>() {
        return Ok(t);
    }
    text.parse::<jiff::civil::DateTime>()
        .and_then(|d| d.to_zoned(jiff::tz::TimeZone::UTC))
        .map(|z| z.timestamp())
        .map_err(|_| {
            format!("timestamp {text:?} is neither RFC 3339, `YYYY-MM-DD HH:MM:SS`, Unix time nor a sample number")
        })
}

fn label(text: &str) -> Result<bool, String> {
    match text {
        "true" | "True" | "TRUE" => Ok(true),
        "false" | "False" | "FALSE" | "" => Ok(false),
        _ => text.parse::<f64>().map(|v| v > 0.0).map_err(|_| format!("label {text:?} is not 0, 1, true or false")),
    }
}

/// Reads one series in the layout above; `origin` names it in errors, `step` spaces sample
/// numbers.
pub fn parse_csv(text: &str, origin: &str, step: Duration) -> Result<Labelled, EvalError> {
    let mut lines = text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty());
    let err = |line: usize, message: String| EvalError { at: format!("{origin}:{}", line + 1), message };
    let Some((hline, header)) = lines.next() else {
        return Err(err(0, "empty file: expected a header `timestamp,value,label`".into()));
    };
    let names: Vec<String> = header.split(',').map(|c| c.trim().trim_matches('"').to_ascii_lowercase()).collect();
    if names.len() < 2 {
        return Err(err(
            hline,
            format!("header {header:?} has {} column; expected timestamp,value[,label]", names.len()),
        ));
    }
    let find = |wanted: &[&str]| names.iter().position(|n| wanted.contains(&n.as_str()));
    let t_col = find(&["timestamp", "time", "ts"]).unwrap_or(0);
    let v_col = find(&["value"]).unwrap_or(1);
    let l_col = find(&["label", "is_anomaly", "anomaly"]).or((names.len() >= 3).then_some(names.len() - 1));
    let mut out =
        Labelled { name: origin.to_owned(), times: Vec::new(), values: Vec::new(), labels: Vec::new(), scored_from: 0 };
    for (line, row) in lines {
        let cols: Vec<&str> = row.split(',').map(|c| c.trim().trim_matches('"')).collect();
        if cols.len() != names.len() {
            return Err(err(line, format!("{} columns, the header has {}", cols.len(), names.len())));
        }
        let at = timestamp(cols[t_col], step).map_err(|m| err(line, m))?;
        if out.times.last() == Some(&at) {
            continue; // a repeated row: the first one stands
        }
        if out.times.last().is_some_and(|last| at < *last) {
            return Err(err(line, format!("timestamp {} is before the previous row's", cols[t_col])));
        }
        if cols[v_col].is_empty() || cols[v_col].eq_ignore_ascii_case("nan") {
            continue; // a missing sample: a gap, as an agent sees one
        }
        let value =
            cols[v_col].parse::<f64>().map_err(|_| err(line, format!("value {:?} is not a number", cols[v_col])))?;
        let l = l_col.map(|c| label(cols[c])).transpose().map_err(|m| err(line, m))?.unwrap_or(false);
        out.times.push(at);
        out.values.push(value);
        out.labels.push(l);
    }
    if out.values.is_empty() {
        return Err(err(hline, "no samples after the header".into()));
    }
    out.scored_from = (out.values.len() as f64 * PROBATION) as usize;
    Ok(out)
}

/// A training series followed by its test series: the training part is fed, not scored,
/// and the test part's times follow on at the training part's spacing when they are sample
/// numbers.
pub fn with_training(train: Labelled, test: Labelled) -> Labelled {
    let step = spacing(&train.times).unwrap_or(Duration::from_secs(10));
    let end = train.times.last().copied().unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    let offset = test.times.first().map_or(jiff::SignedDuration::ZERO, |first| {
        if *first <= end {
            end.duration_since(*first) + jiff::SignedDuration::try_from(step).unwrap_or_default()
        } else {
            jiff::SignedDuration::ZERO
        }
    });
    let scored_from = train.values.len();
    let mut times = train.times;
    times.extend(test.times.iter().map(|t| t.checked_add(offset).unwrap_or(*t)));
    let mut values = train.values;
    values.extend(test.values);
    let mut labels = vec![false; scored_from];
    labels.extend(test.labels);
    Labelled { name: test.name, times, values, labels, scored_from }
}

/// The median spacing of a series' samples.
pub fn spacing(times: &[jiff::Timestamp]) -> Option<Duration> {
    let mut d: Vec<Duration> = times.windows(2).map(|w| w[1].duration_since(w[0]).unsigned_abs()).collect();
    if d.is_empty() {
        return None;
    }
    d.sort();
    Some(d[d.len() / 2])
}

/// The anomaly windows: runs of labelled samples, `[start, end)`.
pub fn windows(labels: &[bool]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut start = None;
    for (i, l) in labels.iter().enumerate() {
        match (l, start) {
            (true, None) => start = Some(i),
            (false, Some(s)) => {
                out.push((s, i));
                start = None;
            }
            _ => {}
        }
    }
    if let Some(s) = start {
        out.push((s, labels.len()));
    }
    out
}

/// The windows of the Numenta Anomaly Benchmark's convention, made from labelled runs: the
/// windows together span `share` of the series (10% there), each of the same width, centred on
/// its run's start (where the labelled anomaly begins) and stretched to the run's end when the
/// run is longer; windows that meet are merged. A detection early in a window is worth almost
/// a full point, so firing up to half a window before the labelled start is credited, as it is
/// on that benchmark.
pub fn nab_windows(labels: &[bool], share: f64) -> Vec<bool> {
    let runs = windows(labels);
    let n = labels.len();
    let mut out = vec![false; n];
    if runs.is_empty() {
        return out;
    }
    let width = (share * n as f64 / runs.len() as f64).round() as usize;
    for (a, b) in runs {
        let start = a.saturating_sub(width / 2);
        let end = b.max(a + width - width / 2).min(n);
        for l in &mut out[start..end] {
            *l = true;
        }
    }
    out
}

/// Whether a series (or a group of related series) belongs to the held-out part of a real
/// data set: a stable hash (FNV-1a) of its group's name, odd. The split depends on names only,
/// never on what the series hold.
pub fn held_out(group: &str) -> bool {
    let hash = group.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
    hash % 2 == 1
}

/// A one-dimensional NumPy array (`.npy`, format 1 to 3, little-endian `f8`, `f4`, `i8`, `i4`,
/// `u1` or `b1`) as numbers; `origin` names the file in errors.
pub fn parse_npy(bytes: &[u8], origin: &str) -> Result<Vec<f64>, EvalError> {
    let err = |message: String| EvalError { at: origin.to_owned(), message };
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err(err("not a NumPy array file (no \\x93NUMPY magic)".into()));
    }
    let (len, start): (usize, usize) = match bytes[6] {
        1 => (usize::from(u16::from_le_bytes([bytes[8], bytes[9]])), 10),
        2 | 3 if bytes.len() >= 12 => (u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize, 12),
        v => return Err(err(format!("NumPy format version {v} is not supported"))),
    };
    let header = bytes
        .get(start..start.saturating_add(len))
        .and_then(|h| std::str::from_utf8(h).ok())
        .ok_or_else(|| err("the header is cut short or not text".into()))?;
    let field = |key: &str| -> Option<&str> {
        let at = header.find(&format!("'{key}':"))? + key.len() + 3;
        Some(header[at..].trim_start())
    };
    let descr = field("descr").and_then(|d| d.strip_prefix('\'')).and_then(|d| d.split('\'').next());
    let (size, read): (usize, fn(&[u8]) -> f64) = match descr {
        Some("<f8") => (8, |b| f64::from_le_bytes(b.try_into().unwrap_or_default())),
        Some("<f4") => (4, |b| f64::from(f32::from_le_bytes(b.try_into().unwrap_or_default()))),
        Some("<i8") => (8, |b| i64::from_le_bytes(b.try_into().unwrap_or_default()) as f64),
        Some("<i4") => (4, |b| f64::from(i32::from_le_bytes(b.try_into().unwrap_or_default()))),
        Some("|u1" | "|b1") => (1, |b| f64::from(b[0])),
        other => {
            return Err(err(format!("element type {other:?} is not supported (little-endian f8, f4, i8, i4, u1, b1)")));
        }
    };
    if field("fortran_order").is_some_and(|f| f.starts_with("True")) {
        return Err(err("a Fortran-ordered array is not supported".into()));
    }
    let shape = field("shape").and_then(|s| s.strip_prefix('(')).and_then(|s| s.split(')').next()).unwrap_or("");
    let dims: Vec<&str> = shape.split(',').map(str::trim).filter(|d| !d.is_empty()).collect();
    let [count] = dims.as_slice() else {
        return Err(err(format!("shape ({shape}) is not one-dimensional")));
    };
    let count: usize = count.parse().map_err(|_| err(format!("shape ({shape}) is not a length")))?;
    let data = &bytes[start + len..];
    if data.len() != count.saturating_mul(size) {
        return Err(err(format!("{count} elements of {size} bytes announced, {} bytes of data", data.len())));
    }
    Ok(data.chunks_exact(size).map(read).collect())
}

/// A series from arrays (values, labels as numbers > 0, and Unix-second times or none, then
/// spaced by `step`): missing (non-finite) values are left out as gaps.
pub fn from_arrays(
    origin: &str,
    values: &[f64],
    labels: &[f64],
    times: Option<&[f64]>,
    step: Duration,
) -> Result<Labelled, EvalError> {
    let err = |message: String| EvalError { at: origin.to_owned(), message };
    if labels.len() != values.len() || times.is_some_and(|t| t.len() != values.len()) {
        return Err(err(format!(
            "{} values, {} labels and {} times do not match",
            values.len(),
            labels.len(),
            times.map_or(values.len(), <[f64]>::len)
        )));
    }
    let mut out =
        Labelled { name: origin.to_owned(), times: Vec::new(), values: Vec::new(), labels: Vec::new(), scored_from: 0 };
    for (i, (v, l)) in values.iter().zip(labels).enumerate() {
        let secs = times.map_or(1_800_000_000.0 + i as f64 * step.as_secs_f64(), |t| t[i]);
        let at = timestamp(&secs.to_string(), step).map_err(|m| err(format!("element {i}: {m}")))?;
        if out.times.last() == Some(&at) {
            continue; // a repeated element: the first one stands
        }
        if out.times.last().is_some_and(|last| at < *last) {
            return Err(err(format!("element {i}: time {secs} is before the previous one")));
        }
        if v.is_finite() {
            out.times.push(at);
            out.values.push(*v);
            out.labels.push(*l > 0.0);
        }
    }
    if out.values.is_empty() {
        return Err(err("no samples".into()));
    }
    out.scored_from = (out.values.len() as f64 * PROBATION) as usize;
    Ok(out)
}

/// The benchmark's scaled sigmoid.
fn sigma(y: f64) -> f64 {
    2.0 / (1.0 + (5.0 * y).exp()) - 1.0
}

/// What a detector did on one or more series.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Tally {
    /// Series.
    pub series: usize,
    /// Scored samples.
    pub samples: usize,
    /// Anomaly windows.
    pub windows: usize,
    /// Windows detected.
    pub found: usize,
    /// Firings outside every window.
    pub false_alarms: usize,
    /// Samples from window start to detection, per detected window.
    pub delays: Vec<usize>,
    /// Σ σ(y) over detections.
    pub early: f64,
    /// Σ −σ(y) over false alarms (each in (0, 1]).
    pub penalty: f64,
}

/// Scores the firings (sample indices where a condition started) of one series.
pub fn tally(s: &Labelled, firings: &[usize]) -> Tally {
    let all = windows(&s.labels);
    let scored: Vec<(usize, usize)> = all.iter().copied().filter(|(start, _)| *start >= s.scored_from).collect();
    let mut first: Vec<Option<usize>> = vec![None; scored.len()];
    let mut t = Tally {
        series: 1,
        samples: s.values.len().saturating_sub(s.scored_from),
        windows: scored.len(),
        ..Tally::default()
    };
    for &i in firings.iter().filter(|i| **i >= s.scored_from) {
        if let Some(w) = scored.iter().position(|(a, b)| (*a..*b).contains(&i)) {
            first[w].get_or_insert(i);
            continue;
        }
        if all.iter().any(|(a, b)| (*a..*b).contains(&i)) {
            continue; // inside a window of the probation
        }
        t.false_alarms += 1;
        let after = all.iter().filter(|(_, b)| *b <= i).max_by_key(|(_, b)| *b);
        t.penalty += after.map_or(1.0, |(a, b)| -sigma((i - b) as f64 / (b - a) as f64));
    }
    for ((a, b), d) in scored.iter().zip(first) {
        if let Some(i) = d {
            t.found += 1;
            t.delays.push(i - a);
            t.early += sigma(-((b - i) as f64) / (b - a) as f64);
        }
    }
    t
}

impl Tally {
    /// Adds another series' tally.
    pub fn add(&mut self, o: &Tally) {
        self.series += o.series;
        self.samples += o.samples;
        self.windows += o.windows;
        self.found += o.found;
        self.false_alarms += o.false_alarms;
        self.delays.extend(&o.delays);
        self.early += o.early;
        self.penalty += o.penalty;
    }

    /// Windows detected, of all (None without windows).
    pub fn recall(&self) -> Option<f64> {
        (self.windows > 0).then(|| self.found as f64 / self.windows as f64)
    }

    /// Detections of all firings that count (None without any).
    pub fn precision(&self) -> Option<f64> {
        let n = self.found + self.false_alarms;
        (n > 0).then(|| self.found as f64 / n as f64)
    }

    /// False alarms per 1,000 scored samples.
    pub fn false_per_thousand(&self) -> f64 {
        if self.samples == 0 { 0.0 } else { self.false_alarms as f64 * 1000.0 / self.samples as f64 }
    }

    /// Median delay in samples.
    pub fn median_delay(&self) -> Option<usize> {
        let mut d = self.delays.clone();
        d.sort_unstable();
        d.get(d.len() / 2).copied()
    }

    /// Share of windows found within `n` samples of their start.
    pub fn within(&self, n: usize) -> Option<f64> {
        (self.windows > 0).then(|| self.delays.iter().filter(|d| **d < n).count() as f64 / self.windows as f64)
    }

    /// The normalised windowed score with false-alarm weight `a_fp` and missed-window weight
    /// `a_fn`: 0 is never alarming, 100 every window at its start (None without windows).
    pub fn score(&self, a_fp: f64, a_fn: f64) -> Option<f64> {
        if self.windows == 0 {
            return None;
        }
        let raw = self.early - a_fp * self.penalty - a_fn * (self.windows - self.found) as f64;
        let null = -a_fn * self.windows as f64;
        let perfect = self.windows as f64 * sigma(-1.0);
        Some(100.0 * (raw - null) / (perfect - null))
    }

    /// The false-alarm weight (missed windows weighing 1) above which never alarming scores
    /// better: infinite without false alarms.
    pub fn break_even(&self) -> f64 {
        if self.penalty == 0.0 { f64::INFINITY } else { (self.early + self.found as f64) / self.penalty }
    }
}

/// The standard, low-false-alarm and low-miss weightings (`a_fp`, `a_fn`) of the benchmark.
pub const PROFILES: [(&str, f64, f64); 3] = [("standard", 0.11, 1.0), ("low FP", 0.22, 1.0), ("low FN", 0.11, 2.0)];

/// Generated series for the failure modes of node metrics, from fixed seeds (the same
/// series every run), grouped by family.
pub mod generate {
    use super::*;

    fn series(name: String, step: i64, values: Vec<f64>, windows: &[(usize, usize)]) -> Labelled {
        let n = values.len();
        let mut labels = vec![false; n];
        for (a, b) in windows {
            for l in &mut labels[*a..(*b).min(n)] {
                *l = true;
            }
        }
        let times = (0..n).map(|i| super::super::synth::t(i, step)).collect();
        Labelled { name, times, values, labels, scored_from: (n as f64 * PROBATION) as usize }
    }

    /// A window after an anomaly at `at`: a tenth of the series (at least 10 samples).
    fn window(at: usize, n: usize, anomalies: usize) -> (usize, usize) {
        (at, at + (n / 10 / anomalies.max(1)).max(10))
    }

    /// Gaussian noise, nothing to find.
    pub fn stationary(seed: u64, step: i64, n: usize) -> Labelled {
        let mut r = Rng::new(seed);
        series(format!("stationary-{seed}"), step, (0..n).map(|_| 50.0 + 3.0 * r.normal()).collect(), &[])
    }

    /// A CPU percentage reported to 0.1 that sits on one value most of the time (MAD 0 in
    /// most windows), nothing to find.
    pub fn quantised(seed: u64, step: i64, n: usize) -> Labelled {
        let mut r = Rng::new(seed);
        let base = 1.0 + (seed % 5) as f64 * 0.3;
        let values = (0..n)
            .map(|_| {
                let jitter = if r.uniform() < 0.2 { (1.5 * r.normal()).round() } else { 0.0 };
                ((base + 0.1 * jitter).max(0.0) * 10.0).round() / 10.0
            })
            .collect();
        series(format!("quantised-{seed}"), step, values, &[])
    }

    /// Autocorrelated noise (AR(1), φ 0.95: each sample 95% of the last plus noise), as a
    /// temperature or a queue length wanders; nothing to find.
    pub fn wandering(seed: u64, step: i64, n: usize) -> Labelled {
        let mut r = Rng::new(seed);
        let mut x = 0.0;
        let values = (0..n)
            .map(|_| {
                x = 0.95 * x + r.normal();
                40.0 + x
            })
            .collect();
        series(format!("wandering-{seed}"), step, values, &[])
    }

    /// Log-normal (even seeds) or Pareto (odd seeds, tail index 1.5) noise, nothing to find.
    pub fn heavy(seed: u64, step: i64, n: usize) -> Labelled {
        let mut r = Rng::new(seed);
        let values = (0..n)
            .map(|_| {
                if seed.is_multiple_of(2) {
                    (3.0 + 0.6 * r.normal()).exp()
                } else {
                    10.0 / r.uniform().max(1e-12).powf(1.0 / 1.5)
                }
            })
            .collect();
        series(format!("heavy-{seed}"), step, values, &[])
    }

    /// Days of 5-minute samples: low for 9 hours from a seed-chosen hour, then high, with
    /// 2% noise; with `shift`, the high level moves by half on a random day after the tenth
    /// (the window).
    pub fn daily_square(seed: u64, days: usize, shift: bool) -> Labelled {
        let mut r = Rng::new(seed);
        let per_day = 288;
        let n = days * per_day;
        let low_from = (seed as usize * 7) % 24 * 12;
        let at = (10 * per_day + (r.uniform() * ((days - 10) * per_day - 300) as f64) as usize).min(n - 1);
        let values = (0..n)
            .map(|i| {
                let low = (i + per_day - low_from) % per_day < 108;
                let mut level = if low { 5.0 } else { 60.0 };
                if shift && i >= at && !low {
                    level *= 1.5;
                }
                level * (1.0 + 0.02 * r.normal())
            })
            .collect();
        // The shift shows at the first high sample from `at`.
        let first_high = (at..n).find(|i| (i + per_day - low_from) % per_day >= 108).unwrap_or(at);
        let windows = if shift { vec![window(first_high, n, 1)] } else { Vec::new() };
        series(format!("daily-square{}-{seed}", if shift { "-shift" } else { "" }), 300, values, &windows)
    }

    /// Noise with one level shift of 4–10σ (either way) between 30% and 80% of the series.
    pub fn level_shift(seed: u64, step: i64, n: usize) -> Labelled {
        let mut r = Rng::new(seed);
        let at = ((0.3 + 0.5 * r.uniform()) * n as f64) as usize;
        let size = (4.0 + 6.0 * r.uniform()) * if r.uniform() < 0.5 { -1.0 } else { 1.0 };
        let values = (0..n).map(|i| 100.0 + 2.0 * (r.normal() + if i >= at { size } else { 0.0 })).collect();
        series(format!("level-shift-{seed}"), step, values, &[window(at, n, 1)])
    }

    /// Log-normal noise whose level triples between 30% and 80% of the series.
    pub fn heavy_shift(seed: u64, step: i64, n: usize) -> Labelled {
        let mut r = Rng::new(seed);
        let at = ((0.3 + 0.5 * r.uniform()) * n as f64) as usize;
        let values = (0..n).map(|i| (3.0 + 0.4 * r.normal()).exp() * if i >= at { 3.0 } else { 1.0 }).collect();
        series(format!("heavy-shift-{seed}"), step, values, &[window(at, n, 1)])
    }

    /// Noise with three single-sample spikes of 8–15σ after the first 20%.
    pub fn spikes(seed: u64, step: i64, n: usize) -> Labelled {
        let mut r = Rng::new(seed);
        let mut values: Vec<f64> = (0..n).map(|_| 20.0 + r.normal()).collect();
        let mut at: Vec<usize> =
            (0..3).map(|k| n / 5 + (k * n / 4) + (r.uniform() * (n / 5) as f64) as usize).collect();
        at.sort_unstable();
        for a in &at {
            values[*a] += 8.0 + 7.0 * r.uniform();
        }
        let windows: Vec<_> = at.iter().map(|a| window(*a, n, 3)).collect();
        series(format!("spikes-{seed}"), step, values, &windows)
    }

    /// A step of `size`σ at sample 120 of 200 (10 s apart), window to the end.
    pub fn step(seed: u64, size: f64) -> Labelled {
        let mut r = Rng::new(seed);
        let values = (0..200).map(|i| 10.0 + r.normal() + if i >= 120 { size } else { 0.0 }).collect();
        let mut s = series(format!("step-{seed}"), 10, values, &[(120, 200)]);
        s.scored_from = 100;
        s
    }

    /// Every family: its name and series.
    pub fn all() -> Vec<(&'static str, Vec<Labelled>)> {
        let seeds = |n: u64| 0..n;
        vec![
            ("stationary noise, 10 s", seeds(10).map(|s| stationary(s, 10, 5000)).collect()),
            ("quantised CPU (MAD 0), 5 min", seeds(10).map(|s| quantised(s, 300, 5000)).collect()),
            ("heavy tails (log-normal, Pareto), 1 min", seeds(10).map(|s| heavy(s, 60, 5000)).collect()),
            ("autocorrelated AR(1) 0.95, 1 min", seeds(10).map(|s| wandering(s, 60, 5000)).collect()),
            ("daily square wave, 5 min, 14 days", seeds(6).map(|s| daily_square(s, 14, false)).collect()),
            (
                "daily square wave with a level shift, 5 min",
                seeds(10).map(|s| daily_square(100 + s, 14, true)).collect(),
            ),
            ("level shift 4–10σ, 10 s", seeds(20).map(|s| level_shift(s, 10, 2000)).collect()),
            ("level shift 4–10σ, 1 min", seeds(20).map(|s| level_shift(s, 60, 2000)).collect()),
            ("level shift 4–10σ, 5 min", seeds(20).map(|s| level_shift(s, 300, 2000)).collect()),
            ("heavy-tailed level ×3, 1 min", seeds(20).map(|s| heavy_shift(s, 60, 2000)).collect()),
            ("single spikes 8–15σ, 1 min", seeds(20).map(|s| spikes(s, 60, 2000)).collect()),
            ("6σ steps, 10 s", seeds(200).map(|s| step(s, 6.0)).collect()),
        ]
    }

    /// A series in the CSV layout the harness reads.
    pub fn to_csv(s: &Labelled) -> String {
        let mut out = String::from("timestamp,value,label\n");
        for ((t, v), l) in s.times.iter().zip(&s.values).zip(&s.labels) {
            out.push_str(&format!("{t},{v},{}\n", u8::from(*l)));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STEP: Duration = Duration::from_secs(10);

    #[test]
    fn reads_every_timestamp_form_and_finds_columns_by_name() {
        let rfc =
            parse_csv("timestamp,value,label\n2014-04-01T00:00:00Z,1.5,0\n2014-04-01T00:05:00Z,2,1\n", "a.csv", STEP)
                .unwrap();
        let nab =
            parse_csv("timestamp,value\n2014-04-01 00:00:00,1.5\n2014-04-01 00:05:00,2\n", "b.csv", STEP).unwrap();
        assert_eq!(rfc.times, nab.times);
        assert_eq!(rfc.labels, [false, true]);
        assert_eq!(nab.labels, [false, false]);
        let unix =
            parse_csv("value,is_anomaly,timestamp\n1.5,0,1396310400\n2,1,1396310700000\n", "c.csv", STEP).unwrap();
        assert_eq!(unix.times, rfc.times);
        assert_eq!(unix.labels, rfc.labels);
        let index = parse_csv("timestamp,value,is_anomaly\n0,1,0\n1,2,0\n2,3,1\n", "d.csv", STEP).unwrap();
        assert_eq!(spacing(&index.times), Some(STEP));
    }

    #[test]
    fn bad_input_is_named_with_its_line() {
        let e = |text: &str| parse_csv(text, "x.csv", STEP).unwrap_err().to_string();
        assert_eq!(e(""), "x.csv:1: empty file: expected a header `timestamp,value,label`");
        assert_eq!(e("timestamp,value\n0,1\n1,abc\n"), "x.csv:3: value \"abc\" is not a number");
        assert_eq!(e("timestamp,value\n5,1\n3,2\n"), "x.csv:3: timestamp 3 is before the previous row's");
        let repeated = parse_csv("timestamp,value\n5,1\n5,2\n6,3\n", "r.csv", STEP).unwrap();
        assert_eq!(repeated.values, [1.0, 3.0], "a repeated timestamp keeps its first row");
        assert!(e("timestamp,value,label\n0,1,maybe\n").starts_with("x.csv:2: label \"maybe\""));
        assert_eq!(e("timestamp,value\n0,1,2\n"), "x.csv:2: 3 columns, the header has 2");
        assert!(e("timestamp,value\nyesterday,1\n").starts_with("x.csv:2: timestamp \"yesterday\""));
        assert_eq!(e("timestamp,value\n1e400,1\n"), "x.csv:2: timestamp 1e400 is out of range");
        assert_eq!(e("timestamp,value\nNaN,1\n"), "x.csv:2: timestamp NaN is out of range");
        assert_eq!(e("timestamp,value\n"), "x.csv:1: no samples after the header");
    }

    #[test]
    fn hostile_bytes_never_panic() {
        let mut r = Rng::new(5);
        let alphabet = b"0123456789,.-:TZ \n\"eE+truefals\xff\x00";
        for _ in 0..2000 {
            let n = (r.uniform() * 80.0) as usize;
            let bytes: Vec<u8> = (0..n).map(|_| alphabet[(r.uniform() * alphabet.len() as f64) as usize]).collect();
            let text = String::from_utf8_lossy(&bytes);
            let _ = parse_csv(&format!("timestamp,value,label\n{text}"), "fuzz", STEP);
            let _ = parse_csv(&text, "fuzz", STEP);
        }
    }

    fn npy(descr: &str, shape: &str, data: &[u8]) -> Vec<u8> {
        let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
        while (header.len() + 11) % 64 != 0 {
            header.push(' ');
        }
        header.push('\n');
        let mut out = b"\x93NUMPY\x01\x00".to_vec();
        out.extend(u16::try_from(header.len()).unwrap().to_le_bytes());
        out.extend(header.as_bytes());
        out.extend(data);
        out
    }

    #[test]
    fn numpy_arrays_read_as_written_and_bad_ones_are_named() {
        let f8: Vec<u8> = [1.5_f64, -2.0, 3.25].iter().flat_map(|v| v.to_le_bytes()).collect();
        assert_eq!(parse_npy(&npy("<f8", "(3,)", &f8), "a.npy").unwrap(), [1.5, -2.0, 3.25]);
        let i4: Vec<u8> = [7_i32, -1].iter().flat_map(|v| v.to_le_bytes()).collect();
        assert_eq!(parse_npy(&npy("<i4", "(2,)", &i4), "b.npy").unwrap(), [7.0, -1.0]);
        assert_eq!(parse_npy(&npy("|b1", "(3,)", &[0, 1, 1]), "c.npy").unwrap(), [0.0, 1.0, 1.0]);
        let e = |b: &[u8]| parse_npy(b, "x.npy").unwrap_err().to_string();
        assert_eq!(e(b"timestamp,value"), "x.npy: not a NumPy array file (no \\x93NUMPY magic)");
        assert_eq!(e(&npy("<f8", "(2,)", &f8)), "x.npy: 2 elements of 8 bytes announced, 24 bytes of data");
        assert_eq!(e(&npy("<f8", "(3, 1)", &f8)), "x.npy: shape (3, 1) is not one-dimensional");
        assert!(e(&npy(">f8", "(3,)", &f8)).starts_with("x.npy: element type Some(\">f8\")"));
        let mut r = Rng::new(9);
        let good = npy("<f8", "(3,)", &f8);
        for _ in 0..3000 {
            let mut b = good.clone();
            b.truncate((r.uniform() * good.len() as f64) as usize + 1);
            if let Some(x) = b.get_mut((r.uniform() * 80.0) as usize) {
                *x = (r.uniform() * 256.0) as u8;
            }
            let _ = parse_npy(&b, "fuzz");
        }
    }

    #[test]
    fn arrays_become_a_series_with_gaps_for_missing_values() {
        let s = from_arrays(
            "k",
            &[1.0, f64::NAN, 3.0],
            &[0.0, 1.0, 1.0],
            Some(&[1.5e9, 1.5e9 + 60.0, 1.5e9 + 120.0]),
            STEP,
        )
        .unwrap();
        assert_eq!(s.values, [1.0, 3.0]);
        assert_eq!(s.labels, [false, true]);
        assert_eq!(spacing(&s.times), Some(Duration::from_secs(120)));
        let e = from_arrays("k", &[1.0, 2.0], &[0.0], None, STEP).unwrap_err().to_string();
        assert_eq!(e, "k: 2 values, 1 labels and 2 times do not match");
        let e = from_arrays("k", &[1.0, 2.0], &[0.0, 0.0], Some(&[1.5e9, 1.4e9]), STEP).unwrap_err().to_string();
        assert_eq!(e, "k: element 1: time 1400000000 is before the previous one");
        let csv = parse_csv(
            "timestamp,value,label\n1500000000,1,0\n1500000060,,1\n1500000120,nan,0\n1500000180,2,0\n",
            "w",
            STEP,
        )
        .unwrap();
        assert_eq!(csv.values, [1.0, 2.0], "empty and NaN values are gaps");
    }

    #[test]
    fn nab_windows_span_a_tenth_centred_on_each_labelled_start() {
        let mut labels = vec![false; 1000];
        labels[300] = true;
        labels[700..760].iter_mut().for_each(|l| *l = true);
        let w = windows(&nab_windows(&labels, 0.1));
        assert_eq!(w, [(275, 325), (675, 760)], "50 samples each, the long run kept whole");
        let mut close = vec![false; 100];
        close[10] = true;
        close[12] = true;
        assert_eq!(windows(&nab_windows(&close, 0.1)), [(8, 15)], "windows that meet merge");
        assert_eq!(nab_windows(&[false; 5], 0.1), [false; 5]);
        assert_eq!(windows(&nab_windows(&[true, false, false, false], 1.0)), [(0, 2)], "clipped at the start");
    }

    #[test]
    fn the_held_out_split_is_by_name_and_roughly_half() {
        let out = (0..200).filter(|i| held_out(&format!("wsd/{i}.csv"))).count();
        assert!((70..130).contains(&out), "{out} of 200");
        assert_eq!(held_out("wsd/7.csv"), held_out("wsd/7.csv"));
    }

    #[test]
    fn generated_series_read_back_as_they_were_written() {
        for (_, family) in generate::all() {
            let s = &family[0];
            let back = parse_csv(&generate::to_csv(s), &s.name, STEP).unwrap();
            assert_eq!(back.times, s.times);
            assert_eq!(back.labels, s.labels);
            assert_eq!(back.values, s.values, "{}", s.name);
        }
    }

    #[test]
    fn training_comes_first_and_is_not_scored() {
        let train = parse_csv("timestamp,value\n0,1\n1,1\n2,1\n", "t", STEP).unwrap();
        let test = parse_csv("timestamp,value,label\n0,1,0\n1,9,1\n", "x", STEP).unwrap();
        let s = with_training(train, test);
        assert_eq!(s.scored_from, 3);
        assert_eq!(s.labels, [false, false, false, false, true]);
        assert!(s.times.windows(2).all(|w| w[1].duration_since(w[0]) == jiff::SignedDuration::from_secs(10)));
    }

    fn labelled(n: usize, windows: &[(usize, usize)], scored_from: usize) -> Labelled {
        let mut labels = vec![false; n];
        for (a, b) in windows {
            labels[*a..*b].iter_mut().for_each(|l| *l = true);
        }
        Labelled { name: "s".into(), times: Vec::new(), values: vec![0.0; n], labels, scored_from }
    }

    #[test]
    fn early_detection_earns_more_and_false_alarms_cost() {
        let s = labelled(1000, &[(100, 200), (600, 700)], 50);
        assert_eq!(windows(&s.labels), [(100, 200), (600, 700)]);
        let early = tally(&s, &[100, 150, 610]);
        assert_eq!((early.found, early.false_alarms, early.delays.clone()), (2, 0, vec![0, 10]));
        let late = tally(&s, &[190, 690]);
        assert!(early.score(0.11, 1.0).unwrap() > late.score(0.11, 1.0).unwrap());
        assert!((early.score(0.11, 1.0).unwrap() - 100.0).abs() < 2.0);
        assert_eq!(tally(&s, &[]).score(0.11, 1.0), Some(0.0), "never alarming scores 0");
        assert_eq!(tally(&s, &[10]).false_alarms, 0, "probation is not scored");
        let noisy = tally(&s, &[100, 610, 900, 950]);
        assert_eq!(noisy.false_alarms, 2);
        assert!(noisy.score(0.11, 1.0).unwrap() < early.score(0.11, 1.0).unwrap());
        let just_after = tally(&s, &[100, 610, 205]);
        assert!(just_after.penalty < 0.2 && just_after.penalty > 0.0, "{}", just_after.penalty);
        assert!(noisy.break_even() > 0.11 && noisy.break_even().is_finite());
        assert_eq!(early.break_even(), f64::INFINITY);
        let mut all = early.clone();
        all.add(&noisy);
        assert_eq!((all.series, all.windows, all.found, all.false_alarms), (2, 4, 4, 2));
        assert_eq!(all.within(3), Some(0.5));
    }
}
