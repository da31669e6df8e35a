//! The `anomaly` detector: one calibrated judgement per sample, built to stay quiet on the
//! series nodes really produce (quantised, heavy-tailed, daily on/off, level-shifting) and to
//! wake someone only for what that series has not done before.
//!
//! Per sample, in order:
//!
//! 1. **Robust baseline.** The median of the last `window` samples, with a scale that does
//!    not collapse: 1.4826 × MAD; when MAD is 0 (more than half the window on one value),
//!    IQR / 1.349; when that is 0 too, 1.2533 × the mean absolute deviation. Never below the
//!    series' resolution step (the smallest change between consecutive samples seen), so a
//!    CPU percentage that moves in steps of 0.1 is never judged in units of 1e-9.
//! 2. **Seasonality.** Two profiles learned online in bounded memory: one per hour of the day
//!    (24 buckets) and one per hour of the week (168), each judging against earlier days
//!    (weeks) only: the hour now running is committed when it is over. Where a profile knows
//!    more than the window (a level two scales away, a spread twice as wide, or a window
//!    still re-learning), a sample is only as unusual as the *less* unusual of "against the
//!    last `window` samples" and "against this hour on earlier days (weeks)": a step that
//!    comes every morning is normal the day after it was first seen. Where it says what the
//!    window says, it is left out, so a series without a daily shape is judged the same at
//!    any cadence.
//! 3. **Level shifts.** A two-sided CUSUM on the deviation from the baseline. When it
//!    crosses, the series has moved: the baseline keeps only the samples since the change
//!    began and re-learns instead of alarming for the half-window a rolling median would
//!    take to follow; meanwhile a sample far from both the old level and the new one fires.
//! 4. **Unusual for its hour.** A profile of how far each hour sits from the recent level
//!    (hour of the day from calm samples, hour of the week from all): once an hour has three
//!    days behind it, a value usual for the window but not for its hour fires; what recurs
//!    weekly is usual for its hour of the week.
//! 5. **Density.** Rises past 3σ in the last 64 samples against their usual rate.
//! 6. **Calibration.** How unusual is unusual is learned from the series itself: the
//!    detector keeps the distribution of each of its scores (a decayed histogram; about the
//!    last 2,000 samples) and fits a generalised Pareto tail over its top 10% (peaks over
//!    threshold, probability-weighted moments, shape up to 0.9), never extrapolated past
//!    3 times the highest score seen lately. A heavy-tailed series raises its
//!    own limits; a quiet one keeps them near 5.5σ (single sample) and 3.2σ (mean of
//!    three) at the default risk of 1e-5.
//! 7. **Bursts.** An excursion that has reached a size 10 times lately is normal
//!    up to 1.25 times that size, at most 4 times the limit; a larger one still fires.
//!
//! [`Detector::score`] is the last judgement relative to the limit it fires at.
//!
//! Memory per series, about 17 KiB: the window (32 bytes a sample, in arrival order and
//! sorted: 4.5 KiB at 144), three 64-bin histograms (1.5 KiB), two sets of 192 hourly
//! buckets of 28 bytes (10.5 KiB) and the last 20 excursions.

use std::collections::VecDeque;

use std::time::Duration;

use super::{Debounce, Detector, Finding, Progress, State, human};

/// Samples the baseline learns before it judges.
pub const WARMUP: usize = 32;
/// Consecutive calm samples before a condition resolves.
pub const CLEAR: usize = 3;
/// The default window, in samples.
pub const WINDOW: usize = 144;

/// CUSUM reference (in scales): shifts of twice this are what it looks for.
const CUSUM_K: f64 = 1.0;
/// CUSUM decision level (in scales).
const CUSUM_H: f64 = 12.0;
/// Largest single-sample contribution to the CUSUM, so one spike is never a shift.
const CUSUM_CAP: f64 = 6.0;
/// Samples of memory of the score distribution.
const TAIL_MEMORY: f64 = 2000.0;
/// Scores a tail learns before scores past its limit stop counting (censored at the limit).
const TAIL_YOUTH: u32 = 500;
/// Samples between recomputations of the tail's limits.
const TAIL_REFRESH: u32 = 32;
/// Weight of the prior (half-normal) score distribution a new series starts from.
const TAIL_PRIOR: f64 = 200.0;
/// Weight of the peaks (samples above the 90th percentile) at which the fitted tail shape
/// counts half.
const TAIL_SHAPE_PRIOR: f64 = 50.0;
/// How far past the highest score seen lately a limit may be extrapolated.
const TAIL_REACH: f64 = 3.0;
/// Excursions past the limit (in the same direction) that make one of that size normal: a
/// burst that has happened this often lately is part of the series.
const BURSTS: usize = 10;
/// Excursions kept, both ways together.
const BURST_KEEP: usize = 2 * BURSTS;
/// How much above the size that many excursions reached one must be to fire (bursts of
/// one size vary a little).
const BURST_MARGIN: f64 = 1.25;
/// The most recurring excursions can raise a limit by: one past this many times the limit
/// always fires, however often such excursions came before.
const BURST_CAP: f64 = 4.0;
/// Samples an excursion is remembered for.
const BURST_MEMORY: u64 = 8000;
/// Days (weeks) of an hour a seasonal bucket needs before a value unusual for its hour fires
/// on that alone.
const CONTEXT_DAYS: f64 = 3.0;
/// A score (in scales) whose rises are counted for the density judgement.
const DENSITY_LEVEL: f64 = 3.0;
/// Samples the usual rate of rises is learned over before it judges.
const DENSITY_YOUTH: u64 = 1000;
/// How much further than the single-sample limit a sample must be, from both levels, to
/// fire while the window re-learns after a level shift.
const RELEARN_MARGIN: f64 = 1.5;
/// Lowest limits, whatever the tail says (a series whose scores are all 0).
const MIN_SINGLE: f64 = 4.0;
const MIN_RUN: f64 = 2.5;
/// Samples in the run score.
const RUN: usize = 3;

/// The last `capacity` values in arrival order and sorted.
#[derive(Clone, Debug)]
struct Recent {
    order: VecDeque<(jiff::Timestamp, f64)>,
    sorted: Vec<f64>,
    capacity: usize,
}

impl Recent {
    fn new(capacity: usize) -> Self {
        let capacity = capacity.max(8);
        Self { order: VecDeque::with_capacity(capacity), sorted: Vec::with_capacity(capacity), capacity }
    }

    fn push(&mut self, at: jiff::Timestamp, v: f64) {
        if self.order.len() == self.capacity {
            self.pop();
        }
        self.order.push_back((at, v));
        let i = self.sorted.partition_point(|x| *x < v);
        self.sorted.insert(i, v);
    }

    fn pop(&mut self) {
        if let Some((_, old)) = self.order.pop_front() {
            let i = self.sorted.partition_point(|x| *x < old);
            if i < self.sorted.len() {
                self.sorted.remove(i);
            }
        }
    }

    fn keep_last(&mut self, n: usize) {
        while self.order.len() > n {
            self.pop();
        }
    }

    fn len(&self) -> usize {
        self.order.len()
    }

    fn span(&self) -> Duration {
        match (self.order.front(), self.order.back()) {
            (Some((a, _)), Some((b, _))) => b.duration_since(*a).unsigned_abs(),
            _ => Duration::ZERO,
        }
    }

    /// Median and a scale that is 0 only when every value is the same.
    fn center_scale(&self) -> (f64, f64) {
        robust_center_scale(&self.sorted)
    }
}

/// Median and robust scale of sorted finite values: 1.4826 × MAD, else IQR / 1.349, else
/// 1.2533 × the mean absolute deviation from the median (each estimates σ on normal data).
pub fn robust_center_scale(sorted: &[f64]) -> (f64, f64) {
    let n = sorted.len();
    if n == 0 {
        return (f64::NAN, 0.0);
    }
    // Halfway without overflowing near f64::MAX.
    let m = if n % 2 == 1 { sorted[n / 2] } else { sorted[n / 2 - 1] + (sorted[n / 2] - sorted[n / 2 - 1]) / 2.0 };
    let mad = median_deviation(sorted, m);
    if mad > 0.0 {
        return (m, 1.4826 * mad);
    }
    let iqr = sorted[(3 * n) / 4] - sorted[n / 4];
    if iqr > 0.0 {
        return (m, iqr / 1.349);
    }
    let mean_abs = sorted.iter().map(|v| (v - m).abs()).sum::<f64>() / n as f64;
    (m, 1.2533 * mean_abs)
}

/// The median of |x − m| over sorted values (the upper one for an even count): the k-th
/// smallest of two sorted runs, the deviations below `m` (walking down) and above it
/// (walking up), found by bisection in O(log n) without a copy.
fn median_deviation(sorted: &[f64], m: f64) -> f64 {
    let n = sorted.len();
    if n == 0 {
        return 0.0;
    }
    let split = sorted.partition_point(|x| *x < m);
    let (nl, nr) = (split, n - split);
    let left = |i: usize| m - sorted[split - 1 - i];
    let right = |j: usize| sorted[split + j] - m;
    // Take `want` deviations in all: `i` from the left run, the rest from the right.
    let want = n / 2 + 1;
    let (mut lo, mut hi) = (want.saturating_sub(nr), want.min(nl));
    loop {
        let i = (lo + hi) / 2;
        let j = want - i;
        if i > 0 && j < nr && left(i - 1) > right(j) {
            hi = i - 1;
        } else if j > 0 && i < nl && right(j - 1) > left(i) {
            lo = i + 1;
        } else {
            let a = if i > 0 { left(i - 1) } else { f64::NEG_INFINITY };
            let b = if j > 0 { right(j - 1) } else { f64::NEG_INFINITY };
            return a.max(b);
        }
    }
}

/// One hour-of-day or hour-of-week bucket: the level and spread of this hour on earlier days
/// (weeks), and what the hour now running has added, kept apart until the hour is over so a
/// change today is judged against earlier days, not absorbed by its own first samples.
#[derive(Clone, Copy, Debug, Default)]
struct Bucket {
    /// Level of this hour on earlier days (the running mean of the first hour until that
    /// is committed).
    mean: f32,
    /// Mean absolute deviation from `mean` on earlier days.
    dev: f32,
    /// Samples committed from earlier days (0: none yet).
    n: u32,
    /// Hour (since the epoch) the samples now collected belong to.
    hour: u32,
    /// Sums of (value − `mean`) and |value − `mean`| over the samples collected.
    sum: f32,
    sum_abs: f32,
    count: u32,
}

impl Bucket {
    /// Commits the collected hour: each of its samples moves the level and spread by at
    /// least `alpha_min` of the way (1/(n+1) while the bucket is young).
    fn commit(&mut self, alpha_min: f64) {
        if self.count == 0 {
            return;
        }
        let c = f64::from(self.count);
        if self.n == 0 {
            // The first hour kept its running mean and the deviations from it.
            self.dev = (f64::from(self.sum_abs) / (c - 1.0).max(1.0)) as f32;
        } else {
            // `count` steps of an exponentially weighted mean with weight a, at once.
            let a = (1.0 / f64::from(self.n + 1)).max(alpha_min);
            let w = 1.0 - (1.0 - a).powf(c);
            let (level, spread) = (f64::from(self.sum) / c, f64::from(self.sum_abs) / c);
            let (mean, dev) = (f64::from(self.mean), f64::from(self.dev));
            (self.mean, self.dev) = ((mean + w * level) as f32, (dev + w * (spread - dev)) as f32);
        }
        self.n = self.n.saturating_add(self.count);
        (self.sum, self.sum_abs, self.count) = (0.0, 0.0, 0);
    }
}

/// Per-hour-of-day and per-hour-of-week level and spread, learned online.
#[derive(Clone, Debug, Default)]
struct Seasonal {
    buckets: Vec<Bucket>,
}

impl Seasonal {
    const DAY: usize = 24;
    const WEEK: usize = 168;

    fn slots(at: jiff::Timestamp) -> (u32, [usize; 2]) {
        let hour = u32::try_from(at.as_second().max(0) / 3600).unwrap_or(u32::MAX);
        (hour, [hour as usize % Self::DAY, Self::DAY + hour as usize % Self::WEEK])
    }

    /// Commits what an earlier hour collected in the buckets of `at`'s hour: once per
    /// sample, before [`Self::score`] and [`Self::learn`].
    fn roll(&mut self, at: jiff::Timestamp, alpha_min: f64) {
        let (hour, slots) = Self::slots(at);
        for s in slots {
            if let Some(b) = self.buckets.get_mut(s)
                && b.hour != hour
            {
                b.commit(alpha_min);
                b.hour = hour;
            }
        }
    }

    fn learn(&mut self, at: jiff::Timestamp, v: f64) {
        self.learn_slots(at, v, &[0, 1]);
    }

    /// Learns `v` in the buckets of `at`'s hour of the day (0) and of the week (1) named.
    fn learn_slots(&mut self, at: jiff::Timestamp, v: f64, which: &[usize]) {
        if self.buckets.is_empty() {
            self.buckets = vec![Bucket::default(); Self::DAY + Self::WEEK];
        }
        let (hour, slots) = Self::slots(at);
        for s in which.iter().map(|i| slots[*i]) {
            let b = &mut self.buckets[s];
            if b.n == 0 && b.count == 0 {
                *b = Bucket { mean: v as f32, hour, ..Bucket::default() };
            }
            let d = v - f64::from(b.mean);
            b.sum_abs += d.abs() as f32;
            b.count = b.count.saturating_add(1);
            if b.n == 0 {
                // Nothing committed to judge against yet: a running mean of this first hour.
                b.mean = (f64::from(b.mean) + d / f64::from(b.count)) as f32;
            } else {
                b.sum += d as f32;
            }
        }
    }

    /// The smallest deviation, in units of at least `floor`, from a bucket of this hour that
    /// has seen an earlier day (week) and knows more than the recent window (median `center`,
    /// scale `scale`, `full` or still re-learning): a level at least two scales away, a spread
    /// at least twice as wide, or any bucket while the window is short. None while no bucket
    /// does. On a series without a daily or weekly shape the profile says what a full window
    /// says and is left out: the smaller of two scores of one sample would only be biased
    /// low. Call [`Self::roll`] first.
    fn score(&self, at: jiff::Timestamp, v: f64, floor: f64, (center, scale, full): (f64, f64, bool)) -> Option<f64> {
        let (_, slots) = Self::slots(at);
        slots
            .iter()
            .filter_map(|s| self.buckets.get(*s))
            .filter(|b| b.n >= 4)
            .filter_map(|b| {
                let (mean, spread) = (f64::from(b.mean), (1.2533 * f64::from(b.dev)).max(floor));
                let differs = (mean - center).abs() > 2.0 * spread.max(scale) || spread > 2.0 * scale;
                (differs || !full).then(|| (v - mean).abs() / spread)
            })
            .min_by(f64::total_cmp)
    }
}

/// How far each hour of the day usually sits from the recent level (the window's median),
/// learned online as [`Seasonal`] learns values: a level shift moves the value and the median
/// together and leaves this profile as it was, while a value usual for the window but not for
/// its hour (traffic at 4 a.m. like noon) stands out.
#[derive(Clone, Debug, Default)]
struct Shape(Seasonal);

impl Shape {
    /// Commits an earlier hour: once per sample, before [`Self::context`] and [`Self::learn`].
    fn roll(&mut self, at: jiff::Timestamp, alpha_min: f64) {
        self.0.roll(at, alpha_min);
    }

    /// Learns a deviation: the hour of the week as it is (so what recurs weekly becomes usual
    /// for its hour of the week), the hour of the day as it is when the sample was calm.
    fn learn(&mut self, at: jiff::Timestamp, deviation: f64, calm: bool) {
        if calm {
            self.0.learn_slots(at, deviation, &[0, 1]);
            return;
        }
        self.0.learn_slots(at, deviation, &[1]);
        // An anomalous sample moves the hour of the day only as far as three of its spreads,
        // so one incident barely moves it.
        let (_, [day, _]) = Seasonal::slots(at);
        if let Some(b) = self.0.buckets.get(day).filter(|b| b.n > 0) {
            let (mean, spread) = (f64::from(b.mean), 3.0 * 1.2533 * f64::from(b.dev));
            self.0.learn_slots(at, deviation.clamp(mean - spread, mean + spread), &[0]);
        }
    }

    /// How unusual a deviation from the recent level is for this hour of the day, signed, in
    /// units of at least `floor`, once the hour has learned `need` samples on earlier days;
    /// the less unusual of that and this hour of the week once it has been seen a week before
    /// (a weekly job is usual for its hour of the week).
    /// Returns the score and the spread it is in units of.
    fn context(&self, at: jiff::Timestamp, deviation: f64, floor: f64, need: u32) -> Option<(f64, f64)> {
        let (_, [day, week]) = Seasonal::slots(at);
        let score = |b: &Bucket| {
            let spread = (1.2533 * f64::from(b.dev)).max(floor);
            ((deviation - f64::from(b.mean)) / spread, spread)
        };
        let d = score(self.0.buckets.get(day).filter(|b| b.n >= need)?);
        Some(match self.0.buckets.get(week).filter(|b| b.n >= 4).map(score) {
            Some(w) if w.0.abs() < d.0.abs() => w,
            _ => d,
        })
    }
}

/// A two-sided CUSUM on the deviation from the baseline that reports a shift: how many
/// samples ago it began and the mean score since.
#[derive(Clone, Debug, Default)]
struct Cusum {
    up: f64,
    down: f64,
    run_up: usize,
    run_down: usize,
    score_up: f64,
    score_down: f64,
}

impl Cusum {
    /// Feeds the deviation `z` and the signed score of the same sample.
    fn update(&mut self, z: f64, score: f64) -> Option<(usize, f64)> {
        let z = z.clamp(-CUSUM_CAP, CUSUM_CAP);
        self.up = (self.up + z - CUSUM_K).max(0.0);
        self.down = (self.down - z - CUSUM_K).max(0.0);
        (self.run_up, self.score_up) = if self.up > 0.0 { (self.run_up + 1, self.score_up + score) } else { (0, 0.0) };
        (self.run_down, self.score_down) =
            if self.down > 0.0 { (self.run_down + 1, self.score_down + score) } else { (0, 0.0) };
        let (run, sum) = if self.up > CUSUM_H {
            (self.run_up, self.score_up)
        } else if self.down > CUSUM_H {
            (self.run_down, self.score_down)
        } else {
            return None;
        };
        *self = Self::default();
        Some((run, sum.abs() / run.max(1) as f64))
    }
}

/// The distribution of a score (≥ 0), decayed, with a peaks-over-threshold tail.
#[derive(Clone, Debug)]
struct Tail {
    bins: [f64; Self::BINS],
    total: f64,
    /// Weight of the next sample (grows instead of every bin decaying).
    weight: f64,
    since_refresh: u32,
    limit: f64,
    /// Scores learned.
    learned: u32,
}

impl Tail {
    const BINS: usize = 64;
    /// Bins up to here are quadratic, geometric after.
    const KNEE: usize = 48;
    /// Growth of the geometric bins.
    const GROWTH: f64 = 1.25;

    /// Bin edges are (i / 8)² up to 36 (fine near 0, 1.5 wide at 36), then grow by a quarter
    /// each (to about 1,000): a heavy tail's far scores are told apart, not piled in one bin.
    fn edge(i: usize) -> f64 {
        if i <= Self::KNEE {
            let x = i as f64 / 8.0;
            x * x
        } else {
            Self::edge(Self::KNEE) * Self::GROWTH.powi((i - Self::KNEE) as i32)
        }
    }

    fn bin(s: f64) -> usize {
        let s = s.max(0.0);
        let knee = Self::edge(Self::KNEE);
        let i = if s < knee {
            (s.sqrt() * 8.0) as usize
        } else {
            Self::KNEE + ((s / knee).ln() / Self::GROWTH.ln()) as usize
        };
        i.min(Self::BINS - 1)
    }

    /// The middle of bin `i` (the last one, open above: a bin's width past its edge).
    fn mid(i: usize) -> f64 {
        if i + 1 == Self::BINS {
            Self::edge(i) * (1.0 + (Self::GROWTH - 1.0) / 2.0)
        } else {
            (Self::edge(i) + Self::edge(i + 1)) / 2.0
        }
    }

    /// A tail that starts from a half-normal of scale `sigma`.
    fn new(sigma: f64) -> Self {
        let mut bins = [0.0; Self::BINS];
        for (i, b) in bins.iter_mut().enumerate() {
            let upper = if i + 1 == Self::BINS { f64::INFINITY } else { Self::edge(i + 1) };
            let p = half_normal_cdf(upper / sigma) - half_normal_cdf(Self::edge(i) / sigma);
            *b = TAIL_PRIOR * p;
        }
        Self { bins, total: TAIL_PRIOR, weight: 1.0, since_refresh: TAIL_REFRESH, limit: f64::NAN, learned: 0 }
    }

    /// Learns a score judged against `limit`: a calm one as it is; one past the limit only
    /// in the first [`TAIL_YOUTH`] scores, and then as the limit.
    fn observe(&mut self, s: f64, limit: f64, anomalous: bool) {
        if !anomalous || self.learned < TAIL_YOUTH {
            self.learn(s.min(limit));
        }
    }

    fn learn(&mut self, s: f64) {
        self.learned = self.learned.saturating_add(1);
        self.weight /= 1.0 - 1.0 / TAIL_MEMORY;
        if self.weight > 1e100 {
            for b in &mut self.bins {
                *b /= self.weight;
            }
            self.total /= self.weight;
            self.weight = 1.0;
        }
        self.bins[Self::bin(s)] += self.weight;
        self.total += self.weight;
        self.since_refresh += 1;
    }

    /// The score exceeded with probability `risk`: the top 10% of the distribution fitted
    /// with a generalised Pareto tail by probability-weighted moments (Hosking and Wallis,
    /// valid for shape ξ < 1; ξ kept in [0, 0.9]: an exponential tail at 0, so light tails
    /// are never extrapolated lighter than that, while a Pareto-like tail raises the limit as
    /// far as it really reaches), limit = u + σ/ξ·((p_u / risk)^ξ − 1). Recomputed every few
    /// samples.
    fn limit(&mut self, risk: f64) -> f64 {
        if self.since_refresh < TAIL_REFRESH && self.limit.is_finite() {
            return self.limit;
        }
        self.since_refresh = 0;
        let target = 0.1 * self.total;
        let mut above = 0.0;
        let mut top = 0;
        for i in (0..Self::BINS).rev() {
            above += self.bins[i];
            top = i;
            if above >= target {
                break;
            }
        }
        let u = Self::edge(top);
        if above <= 0.0 {
            self.limit = u;
            return u;
        }
        // a0 = E[x], a1 = E[x (1 − F(x))] over the excesses x, the survival taken at each
        // bin's middle.
        let (mut a0, mut a1, mut below) = (0.0, 0.0, 0.0);
        for i in top..Self::BINS {
            let (w, x) = (self.bins[i], Self::mid(i) - u);
            let survival = 1.0 - (below + w / 2.0) / above;
            a0 += w * x;
            a1 += w * x * survival;
            below += w;
        }
        a0 /= above;
        a1 /= above;
        // The highest score this series has really shown lately: the top of the highest bin
        // holding at least half a recent sample.
        let seen = (0..Self::BINS).rev().find(|i| self.bins[*i] >= 0.5 * self.weight).map_or(u, |i| Self::edge(i + 1));
        let ratio = (above / self.total / risk).max(1.0);
        let d = a0 - 2.0 * a1;
        self.limit = if a0 > 0.0 && d > 0.0 {
            // Few peaks say little about the shape: shrink towards the exponential.
            let xi = (2.0 - a0 / d).clamp(0.0, 0.9) * above / (above + TAIL_SHAPE_PRIOR);
            // The scale that keeps the excesses' mean σ / (1 − ξ) at what was seen.
            let sigma = a0 * (1.0 - xi);
            if xi < 1e-6 { u + a0 * ratio.ln() } else { u + sigma / xi * (ratio.powf(xi) - 1.0) }
        } else {
            u + a0 * ratio.ln()
        };
        // Extrapolate, but not past TAIL_REACH times what the series has shown: a fit over a
        // few heavy peaks must not put the limit orders of magnitude above any score seen (a
        // limit of 1,000σ on a series that jumps 35σ passes a 50σ failure).
        self.limit = self.limit.min(TAIL_REACH * seen.max(u));
        self.limit
    }
}

/// P(|Z| ≤ x) for a standard normal Z (Abramowitz and Stegun 7.1.26, error < 1.5e-7).
fn half_normal_cdf(x: f64) -> f64 {
    if x.is_infinite() {
        return 1.0;
    }
    let z = x / std::f64::consts::SQRT_2;
    let t = 1.0 / (1.0 + 0.327_591_1 * z);
    let poly =
        t * (0.254_829_592 + t * (-0.284_496_736 + t * (1.421_413_741 + t * (-1.453_152_027 + t * 1.061_405_429))));
    (1.0 - poly * (-z * z).exp()).clamp(0.0, 1.0)
}

/// The `anomaly` detector over one series.
#[derive(Clone, Debug)]
pub struct Anomaly {
    /// Series name for explanations.
    pub name: String,
    /// Probability per sample, on the series' own score distribution, of a score past the
    /// limit (1e-5 by default).
    pub risk: f64,
    recent: Recent,
    warmup: usize,
    quantum: f64,
    last: Option<(jiff::Timestamp, f64)>,
    spacing: f64,
    season: Seasonal,
    shape: Shape,
    cusum: Cusum,
    single: Tail,
    run: Tail,
    /// The distribution of the seasonal score alone.
    context: Tail,
    scores: VecDeque<f64>,
    /// The baseline before a level shift, judged against (with the new one) while re-learning.
    before: Option<(f64, f64)>,
    /// Samples seen.
    count: u64,
    /// The excursion past the limits now running: upward, and its peak (score ÷ limit).
    excursion: Option<(bool, f64)>,
    /// The last excursions: upward, peak, and the sample count when each ended.
    bursts: VecDeque<(bool, f64, u64)>,
    /// The last judgement: score ÷ the limit it fires at (None while learning).
    relative: Option<f64>,
    /// The last 64 samples, a bit set where the score rose past [`DENSITY_LEVEL`].
    rises: u64,
    /// The decayed share of samples where the score rose past it (None until the first).
    rise_rate: f64,
    /// Rises in 64 samples that fire, recomputed every [`TAIL_REFRESH`] samples.
    rise_limit: u32,
    /// Fires after `for`; resolves after `for` and [`CLEAR`] calm samples in a row.
    debounce: Debounce,
}

impl Anomaly {
    /// A detector judging against the last `window` samples at `risk`, holding a condition
    /// for `hold` before it fires (zero: the first anomalous sample fires).
    pub fn new(name: &str, window: usize, risk: f64, hold: Duration) -> Self {
        let window = window.max(16);
        Self {
            name: name.to_owned(),
            risk: risk.clamp(1e-12, 0.01),
            recent: Recent::new(window),
            warmup: WARMUP.min(window),
            quantum: f64::INFINITY,
            last: None,
            spacing: 0.0,
            season: Seasonal::default(),
            shape: Shape::default(),
            cusum: Cusum::default(),
            single: Tail::new(1.0),
            run: Tail::new(1.0 / (RUN as f64).sqrt()),
            context: Tail::new(1.0),
            scores: VecDeque::with_capacity(RUN),
            before: None,
            count: 0,
            excursion: None,
            bursts: VecDeque::with_capacity(BURST_KEEP),
            relative: None,
            rises: 0,
            rise_rate: 0.0,
            rise_limit: 64,
            debounce: Debounce::new(hold).clear_after(CLEAR),
        }
    }

    /// The smallest step between consecutive values seen (∞ before one is seen).
    pub fn resolution(&self) -> f64 {
        self.quantum
    }

    fn learn_spacing(&mut self, at: jiff::Timestamp, v: f64) {
        if let Some((t, prev)) = self.last {
            let d = (v - prev).abs();
            if d > 1e-9 * v.abs().max(prev.abs()) && d < self.quantum {
                self.quantum = d;
            }
            let dt = at.duration_since(t).as_secs_f64();
            if dt > 0.0 {
                self.spacing = if self.spacing == 0.0 { dt } else { self.spacing + 0.05 * (dt - self.spacing) };
            }
        }
        self.last = Some((at, v));
    }
}

/// How a sample was judged.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    /// One sample against the window (and the hour on earlier days where that knows more).
    Single,
    /// The mean of the last [`RUN`] samples.
    Run,
    /// The value against this hour on earlier days and weeks alone.
    Context,
    /// Against both the level before a shift and the few samples since.
    Relearning,
    /// Rises past [`DENSITY_LEVEL`] in the last 64 samples against their usual rate.
    Density,
}

/// The smallest count `k` with P(N ≥ k) < `risk` for N Poisson with mean `lambda`.
fn poisson_limit(lambda: f64, risk: f64) -> u32 {
    let (mut p, mut below) = ((-lambda).exp(), 0.0);
    for k in 0..64 {
        if 1.0 - below < risk {
            return k;
        }
        below += p;
        p *= lambda / f64::from(k + 1);
    }
    64
}

/// One judged sample.
struct Judgement {
    /// How far past the limit: score ÷ limit of the kind that decided (1.0 is at the limit).
    ratio: f64,
    kind: Kind,
    /// Signed score of the deciding kind, and its limit, in scales.
    score: f64,
    limit: f64,
    center: f64,
    scale: f64,
    /// A level shift was found at this sample, as far out as a run that fires.
    shift: bool,
    /// What recurring excursions this way raise the limits by (1: none).
    factor: f64,
    /// The value threshold is `base` ± `reach` × `factor` × `unit`.
    base: f64,
    unit: f64,
    reach: f64,
}

impl Anomaly {
    /// The factor the limits in direction `up` are raised by: 1, or, once [`BURSTS`]
    /// remembered excursions that way (in the last [`BURST_MEMORY`] samples) reached a peak,
    /// the highest peak that many of them reached.
    fn burst_factor(&self, up: bool) -> f64 {
        let mut peaks = [0.0_f64; BURST_KEEP];
        let mut n = 0;
        for (u, p, at) in &self.bursts {
            if *u == up && self.count.saturating_sub(*at) <= BURST_MEMORY && n < BURST_KEEP {
                peaks[n] = *p;
                n += 1;
            }
        }
        if n < BURSTS {
            return 1.0;
        }
        let peaks = &mut peaks[..n];
        peaks.sort_unstable_by(|a, b| b.total_cmp(a));
        (BURST_MARGIN * peaks[BURSTS - 1]).clamp(1.0, BURST_CAP)
    }

    /// Notes an excursion past the limits (ratio > 1, before any burst factor), so one that
    /// recurs becomes normal.
    fn note_excursion(&mut self, ratio: f64, up: bool) {
        if ratio > 1.0 {
            let peak = self.excursion.filter(|(u, _)| *u == up).map_or(ratio, |(_, p)| p.max(ratio));
            self.excursion = Some((up, peak));
        } else if let Some((u, peak)) = self.excursion.take() {
            if self.bursts.len() == BURST_KEEP {
                self.bursts.pop_front();
            }
            self.bursts.push_back((u, peak, self.count));
        }
    }

    /// While re-learning after a level shift: the less unusual of "against the level before"
    /// and "against the samples since" (their spread at least the old one's).
    fn judge_relearning(&mut self, value: f64, (old_center, old_scale): (f64, f64)) -> Judgement {
        // The new level: the median of the last three samples (the change may have begun a
        // little before the CUSUM's start, so the whole re-learning window can still straddle
        // it); its spread, at least the old one's.
        let (center, scale) = if self.recent.len() > 0 {
            let mut last: Vec<f64> = self.recent.order.iter().rev().take(3).map(|(_, v)| *v).collect();
            last.sort_by(f64::total_cmp);
            (last[last.len() / 2], self.recent.center_scale().1.max(old_scale))
        } else {
            (old_center, old_scale)
        };
        let (z_old, z) = ((value - old_center) / old_scale, (value - center) / scale);
        let score = if z_old.signum() == z.signum() { z_old.abs().min(z.abs()) } else { 0.0 };
        let factor = self.burst_factor(z >= 0.0);
        // Few samples of the new level say little about its spread: a wider margin.
        let limit = RELEARN_MARGIN * self.single.limit(self.risk).max(MIN_SINGLE);
        Judgement {
            ratio: score / limit,
            kind: Kind::Relearning,
            score: score.copysign(z),
            limit,
            center,
            scale,
            shift: false,
            factor,
            base: center,
            unit: scale,
            reach: limit,
        }
    }

    /// A sample against the window, the run, and the hour on earlier days; the tails, the
    /// window, the profiles and the CUSUM learn it.
    fn judge(&mut self, at: jiff::Timestamp, value: f64, floor: f64) -> Judgement {
        let (center, raw_scale) = self.recent.center_scale();
        let scale = raw_scale.max(floor).max(center.abs() * 1e-9).max(1e-12);
        let z = (value - center) / scale;
        let baseline = (center, scale, self.recent.len() >= self.recent.capacity);
        let seasonal = self.season.score(at, value, floor.max(0.1 * scale), baseline);
        let score = seasonal.map_or(z.abs(), |s| s.min(z.abs()));
        let signed = score.copysign(z);
        if self.scores.len() == RUN {
            self.scores.pop_front();
        }
        self.scores.push_back(signed);
        let run = (self.scores.len() == RUN).then(|| self.scores.iter().sum::<f64>() / RUN as f64);
        let need = if self.spacing > 0.0 { (CONTEXT_DAYS * 3600.0 / self.spacing).ceil() as u32 } else { u32::MAX };
        // Unusual for the hour: against how far this hour sits from the recent level, and
        // against this hour's values on earlier days and weeks (a weekly job is usual for its
        // hour of the week; a level shift moves the value and the level together).
        let context = self.shape.context(at, value - center, floor.max(0.1 * scale), need.max(8));

        let single_limit = self.single.limit(self.risk).max(MIN_SINGLE);
        let mut j = Judgement {
            ratio: score / single_limit,
            kind: Kind::Single,
            score: signed,
            limit: single_limit,
            center,
            scale,
            shift: false,
            factor: 1.0,
            base: center,
            unit: scale,
            reach: single_limit,
        };
        let run_limit = run.map(|_| self.run.limit(self.risk).max(MIN_RUN));
        if let (Some(r), Some(l)) = (run, run_limit)
            && r.abs() / l > j.ratio
        {
            j = Judgement { ratio: r.abs() / l, kind: Kind::Run, score: r, limit: l, reach: l, ..j };
        }
        let context_limit = context.map(|_| self.context.limit(self.risk).max(MIN_SINGLE));
        // Only where the window finds the value usual: what is unusual for the window too is
        // the window's to judge (with the raw hourly profile), which learns a moved day.
        // Only where the window finds the value usual: what is unusual for the window too is
        // the window's to judge (with the hour on earlier days, which learns a step that comes
        // every day, or a day that moved by an hour).
        if let (Some((c, spread)), Some(l)) = (context, context_limit)
            && z.abs() <= single_limit
            && c.abs() / l > j.ratio
        {
            // Where this hour's value is expected, and its spread: the limit in its units.
            let (base, unit) = (value - c * spread, spread);
            j = Judgement { ratio: c.abs() / l, kind: Kind::Context, score: c, limit: l, base, unit, reach: l, ..j };
        }
        // Density: rises past a moderate level, counted once per rise, against their usual
        // rate: more frequent spikes than this series makes, none of them unusual alone.
        let prev_above = self.scores.len() >= 2 && self.scores[self.scores.len() - 2].abs() > DENSITY_LEVEL;
        let rise = score > DENSITY_LEVEL && !prev_above;
        self.rises = (self.rises << 1) | u64::from(rise);
        if self.count > DENSITY_YOUTH {
            if self.count.is_multiple_of(u64::from(TAIL_REFRESH)) {
                self.rise_limit = poisson_limit(64.0 * self.rise_rate.max(1.0 / TAIL_MEMORY), self.risk).max(3);
            }
            let k = self.rise_limit;
            let ratio = f64::from(self.rises.count_ones()) / f64::from(k);
            if ratio > j.ratio {
                j = Judgement {
                    ratio,
                    kind: Kind::Density,
                    score: f64::from(self.rises.count_ones()).copysign(z),
                    limit: f64::from(k),
                    // A count has no value threshold: the one a single sample would need.
                    reach: single_limit,
                    ..j
                };
            }
        }
        if !j.ratio.is_finite() {
            // Values so far apart that the arithmetic overflowed: past any limit, or nothing.
            j.ratio = if j.ratio.is_nan() { 0.0 } else { f64::MAX };
        }
        let factor = self.burst_factor(j.score >= 0.0);
        j.factor = factor;
        // Past a limit, even when excursions like it recurred: not learned by the tails (the
        // burst factor is what learns the recurrence), so the two never add up.
        let anomalous = j.ratio > 1.0;
        if !anomalous {
            self.rise_rate += (f64::from(u8::from(rise)) - self.rise_rate) / TAIL_MEMORY.min(self.count as f64);
        }
        // The tails learn what this series does when it is not anomalous, so an incident
        // does not blunt the detector for the next one. While a tail is young (the prior still weighs),
        // scores past the limit are learned too, censored at it ("at least the limit"): a
        // heavy-tailed series that keeps reaching the starting limit teaches the fit so in its
        // first hours instead of crying wolf through them.
        self.single.observe(score, single_limit, anomalous);
        if let (Some(r), Some(l)) = (run, run_limit) {
            self.run.observe(r.abs(), l, anomalous);
        }
        if let (Some((c, _)), Some(l)) = (context, context_limit) {
            self.context.observe(c.abs(), l, anomalous);
        }

        self.recent.push(at, value);
        self.season.learn(at, value);
        self.shape.learn(at, value - center, !anomalous);
        if let Some((since, mean_score)) = self.cusum.update(z, signed) {
            // The level moved: keep what came after the change and learn it, judging against
            // both levels meanwhile. A shift whose samples, or this sample, are as far out as a
            // run that fires is a condition even if no run of three showed it yet.
            let l = run_limit.unwrap_or(MIN_RUN).max(MIN_RUN) * factor;
            j.shift = mean_score > l || score > l;
            self.before = Some((center, scale));
            self.recent.keep_last(since);
            self.scores.clear();
        }
        j
    }
}

impl Detector for Anomaly {
    fn observe(&mut self, at: jiff::Timestamp, value: f64) -> Option<Finding> {
        if !value.is_finite() {
            return None;
        }
        self.learn_spacing(at, value);
        self.count += 1;
        let alpha_min = if self.spacing > 0.0 { (self.spacing / (3.0 * 3600.0)).clamp(1e-4, 0.5) } else { 0.5 };
        self.season.roll(at, alpha_min);
        self.shape.roll(at, alpha_min);
        let floor = if self.quantum.is_finite() { self.quantum } else { 0.0 };
        let judged = if self.recent.len() < self.warmup {
            let j = self.before.map(|old| self.judge_relearning(value, old));
            if let Some(j) = &j {
                self.shape.learn(at, value - j.center, false);
            }
            self.recent.push(at, value);
            self.season.learn(at, value);
            if self.recent.len() >= self.warmup {
                self.before = None;
            }
            j
        } else {
            Some(self.judge(at, value, floor))
        };
        let Some(mut j) = judged else {
            self.relative = None;
            return None;
        };
        if !j.ratio.is_finite() {
            j.ratio = if j.ratio.is_nan() { 0.0 } else { f64::MAX };
        }
        let (up, factor) = (j.score >= 0.0, j.factor);
        self.note_excursion(j.ratio, up);
        self.relative = Some(j.ratio / factor);
        let anomalous = j.ratio > factor || j.shift;

        let state = self.debounce.update(at, anomalous)?;
        let window = self.recent.span();
        let (center, scale) = (j.center, j.scale);
        let z = (value - center) / scale;
        let limit = j.limit * factor;
        let explanation = match state {
            State::Firing => {
                let how = match j.kind {
                    Kind::Run => {
                        format!("the last {RUN} samples average {:.1} sigma away (limit {limit:.1})", j.score.abs())
                    }
                    Kind::Context => format!(
                        "{:.1} sigma from this hour on earlier days, usual as it is for the last {} (limit {limit:.1})",
                        j.score.abs(),
                        human(window)
                    ),
                    Kind::Relearning => {
                        format!("as far from the level before the shift as from the one since (limit {limit:.1} sigma)")
                    }
                    Kind::Single => format!("limit {limit:.1} sigma"),
                    Kind::Density => format!(
                        "{} rises past {DENSITY_LEVEL} sigma in the last 64 samples, where this series makes {:.1} (limit {limit:.0})",
                        self.rises.count_ones(),
                        64.0 * self.rise_rate
                    ),
                };
                let bursts = if factor > 1.0 {
                    format!(", raised {factor:.1} times by {BURSTS} excursions this way lately")
                } else {
                    String::new()
                };
                format!(
                    "{} is {value:.4}, {z:+.1} sigma from its median {center:.4} (sigma {scale:.4}) over the last {}; {how}{bursts}, a level this series' own history puts at under 1 in {:.0} samples",
                    self.name,
                    human(window),
                    1.0 / self.risk
                )
            }
            State::Resolved => format!("{} is {value:.4}, back within its usual range around {center:.4}", self.name),
        };
        Some(Finding {
            state,
            detector: "anomaly",
            at,
            value,
            baseline: center,
            threshold: j.base + (j.reach * factor * j.unit).copysign(j.score),
            window,
            explanation,
        })
    }

    fn score(&self) -> Option<f64> {
        self.relative
    }

    fn learning(&self) -> Option<Progress> {
        (self.recent.len() < self.warmup && self.before.is_none())
            .then(|| Progress::samples(self.recent.len() as u64, self.warmup as u64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synth::{Rng, t};
    use crate::zscore::tests::{fired_at, firings, noise, step_detection};

    const TEN_S: Duration = Duration::ZERO;

    fn detector() -> Anomaly {
        Anomaly::new("x", WINDOW, 1e-5, TEN_S)
    }

    fn per_thousand(total: usize, samples: usize) -> f64 {
        total as f64 * 1000.0 / samples as f64
    }

    #[test]
    fn robust_scale_falls_back_instead_of_collapsing() {
        let mut v = vec![5.0; 60];
        v.extend([5.1, 4.9, 5.2, 5.0, 4.8]);
        v.sort_by(f64::total_cmp);
        let (m, s) = robust_center_scale(&v);
        assert_eq!(m, 5.0);
        assert!(s > 0.0, "MAD and IQR are 0, the mean absolute deviation is not: {s}");
        let (_, s) = robust_center_scale(&[1.0, 1.0, 2.0, 2.0, 4.0, 6.0, 9.0]);
        assert!((s - 1.4826).abs() < 1e-12);
        assert_eq!(robust_center_scale(&[3.0; 10]), (3.0, 0.0));
    }

    #[test]
    fn median_deviation_matches_a_sort() {
        let mut r = Rng::new(3);
        for n in 1..80 {
            let mut v: Vec<f64> = (0..n).map(|_| (r.normal() * 4.0).round()).collect();
            v.sort_by(f64::total_cmp);
            for m in [v[n / 2], (v[(n - 1) / 2] + v[n / 2]) / 2.0, v[0] - 1.0, v[n - 1] + 0.5] {
                let mut d: Vec<f64> = v.iter().map(|x| (x - m).abs()).collect();
                d.sort_by(f64::total_cmp);
                assert_eq!(median_deviation(&v, m), d[n / 2], "n {n}, m {m}");
            }
        }
    }

    #[test]
    fn the_tail_limit_follows_the_series() {
        let mut quiet = Tail::new(1.0);
        let l = quiet.limit(1e-5);
        assert!((5.0..6.5).contains(&l), "half-normal prior: {l}");
        let mut r = Rng::new(1);
        let mut heavy = Tail::new(1.0);
        for _ in 0..5000 {
            heavy.learn((r.normal() * 1.5).exp());
        }
        assert!(heavy.limit(1e-5) > 2.0 * l, "log-normal scores raise the limit: {}", heavy.limit(1e-5));
    }

    #[test]
    fn six_sigma_steps_within_three_samples() {
        let (share, worst) = step_detection(200, 6.0, || Box::new(detector()), |seed| noise(seed, 200, 10.0, 1.0));
        assert!(share >= 0.99, "{share}");
        assert!(worst <= 4, "{worst}");
    }

    #[test]
    fn quiet_on_normal_quantised_and_heavy_tailed_noise() {
        let mut r = Rng::new(11);
        let n = 20_000;
        let normal = noise(5, n, 0.0, 1.0);
        let quantised: Vec<f64> = (0..n).map(|_| (2.0 + 0.4 * r.normal()).max(0.0).round() / 10.0).collect();
        let heavy: Vec<f64> = (0..n).map(|_| (3.0 + 0.6 * r.normal()).exp()).collect();
        let pareto: Vec<f64> = (0..n).map(|_| 10.0 / r.uniform().max(1e-9).powf(1.0 / 1.5)).collect();
        // Pareto with shape 1.5 (infinite variance) keeps reaching past anything it has shown
        // within the tail's memory; the limit's bounded reach (TAIL_REACH) costs a little there.
        for (what, s, most) in [
            ("normal", normal, 0.5),
            ("quantised", quantised, 0.5),
            ("log-normal", heavy, 0.5),
            ("pareto", pareto, 0.6),
        ] {
            let f = firings(&mut detector(), &s);
            assert!(per_thousand(f, n) <= most, "{what}: {f} false alarms in {n}");
        }
    }

    #[test]
    fn a_daily_square_wave_is_normal_after_the_first_day() {
        // 5-minute samples: 9 flat hours low, then 15 hours high, every day, plus noise.
        let mut r = Rng::new(8);
        let day = 288;
        let series: Vec<(jiff::Timestamp, f64)> = (0..day * 10)
            .map(|i| {
                let high = (i % day) >= 108;
                (t(i, 300), if high { 60.0 } else { 5.0 } + r.normal())
            })
            .collect();
        let mut d = detector();
        let fired: Vec<usize> = series
            .iter()
            .enumerate()
            .filter_map(|(i, (at, v))| d.observe(*at, *v).filter(|f| f.state == State::Firing).map(|_| i))
            .collect();
        assert!(fired.iter().all(|i| *i < day + 108 + 1), "fired after the first day's step: {fired:?}");
    }

    #[test]
    fn a_weekly_job_is_normal_the_week_after_it_was_first_seen() {
        // 5-minute samples for four weeks: flat, except two hours of a weekly job on one day.
        let mut r = Rng::new(12);
        let day = 288;
        let job = |i: usize| (i / day) % 7 == 3 && (24..48).contains(&(i % day));
        let mut d = detector();
        let fired: Vec<usize> = (0..day * 28)
            .filter(|i| {
                let v = if job(*i) { 80.0 } else { 10.0 } + 0.5 * r.normal();
                d.observe(t(*i, 300), v).is_some_and(|f| f.state == State::Firing)
            })
            .collect();
        assert!(!fired.is_empty() && fired.iter().all(|i| *i < 7 * day), "the first week's job only: {fired:?}");
    }

    #[test]
    fn a_level_shift_fires_once_and_is_relearned_within_a_window() {
        let mut s = noise(9, 1000, 100.0, 2.0);
        for v in &mut s[400..] {
            *v += 40.0;
        }
        let mut d = detector();
        let events: Vec<(usize, State)> =
            s.iter().enumerate().filter_map(|(i, v)| d.observe(t(i, 10), *v).map(|f| (i, f.state))).collect();
        assert_eq!(events.first().map(|e| e.1), Some(State::Firing), "{events:?}");
        assert!(events[0].0 - 400 <= 2, "{events:?}");
        let resolved = events.iter().find(|e| e.1 == State::Resolved).map(|e| e.0);
        assert!(resolved.is_some_and(|r| r - 400 <= WINDOW), "re-learned within one window: {events:?}");
        assert_eq!(events.len(), 2, "one condition: {events:?}");
    }

    #[test]
    fn a_large_spike_fires_alone() {
        let mut s = noise(2, 400, 50.0, 1.0);
        s[300] = 90.0;
        let fired = fired_at(&mut detector(), &s);
        assert_eq!(fired, [300]);
    }

    #[test]
    fn says_it_is_learning_until_it_judges() {
        let mut d = detector();
        assert_eq!(d.learning(), Some(Progress::samples(0, WARMUP as u64)));
        for i in 0..WARMUP {
            d.observe(t(i, 10), 1.0 + (i % 3) as f64);
        }
        assert_eq!(d.learning(), None);
    }

    #[test]
    fn the_same_samples_give_the_same_findings_at_any_cadence() {
        let mut s = noise(4, 190, 20.0, 1.0);
        for v in &mut s[120..150] {
            *v += 8.0;
        }
        let run = |step: i64| -> Vec<(usize, State)> {
            let mut d = detector();
            s.iter().enumerate().filter_map(|(i, v)| d.observe(t(i, step), *v).map(|f| (i, f.state))).collect()
        };
        let ten = run(10);
        assert!(!ten.is_empty());
        assert_eq!(run(60), ten);
        assert_eq!(run(300), ten);
    }

    #[test]
    fn a_bucket_judges_against_earlier_days_not_the_hour_now_running() {
        assert_eq!(std::mem::size_of::<Bucket>(), 28, "the memory docs/agent-detect.md states");
        // Hour 0 of five days at 5-minute samples, around 10; then the same hour at 20.
        let mut s = Seasonal::default();
        let a = 300.0 / (3.0 * 3600.0);
        for day in 0..5 {
            for k in 0..12 {
                let at = t(day * 288 + k, 300);
                s.roll(at, a);
                s.learn(at, 10.0 + if k % 2 == 0 { 1.0 } else { -1.0 });
            }
        }
        let window = (50.0, 1.0, true);
        let mut today = Vec::new();
        for k in 0..12 {
            let at = t(5 * 288 + k, 300);
            s.roll(at, a);
            today.push(s.score(at, 20.0, 0.01, window).unwrap_or(0.0));
            s.learn(at, 20.0);
        }
        assert!(today.iter().all(|z| *z > 7.0), "the hour's own samples are not the baseline: {today:?}");
        let at = t(6 * 288, 300);
        s.roll(at, a);
        let tomorrow = s.score(at, 20.0, 0.01, window).unwrap_or(f64::INFINITY);
        assert!(tomorrow < today[0], "committed once the hour is over: {tomorrow} vs {}", today[0]);
    }

    #[test]
    fn the_same_values_give_the_same_findings_at_10_s_1_min_and_5_min() {
        // 2,000 samples span 5.5 hours at 10 s and a week at 5 min: the daily and weekly
        // profiles take part at 5 min only, and must not change what a shift gives.
        let mut differ = Vec::new();
        for seed in 0..20 {
            let runs: Vec<Vec<(usize, State)>> = [10, 60, 300]
                .iter()
                .map(|step| {
                    let s = crate::eval::generate::level_shift(seed, *step, 2000);
                    let mut d = detector();
                    s.times
                        .iter()
                        .zip(&s.values)
                        .enumerate()
                        .filter_map(|(i, (at, v))| d.observe(*at, *v).map(|f| (i, f.state)))
                        .collect()
                })
                .collect();
            assert!(runs[0].first().is_some_and(|e| e.1 == State::Firing), "seed {seed}: {:?}", runs[0]);
            if runs[1] != runs[0] || runs[2] != runs[0] {
                differ.push((seed, runs));
            }
        }
        assert!(differ.is_empty(), "findings differ by cadence: {differ:?}");
    }

    #[test]
    fn a_pareto_tail_puts_its_limit_near_where_the_tail_really_reaches() {
        // Scores with P(S > x) = x^-1.5 (tail shape 2/3): the 1-in-100,000 level is
        // 100,000^(2/3) ≈ 2,154. A fit capped at shape 0.5, or bins that end at 62, puts it
        // an order of magnitude lower: every far score would be a false alarm.
        let mut r = Rng::new(21);
        let mut tail = Tail::new(1.0);
        for _ in 0..4000 {
            tail.learn(1.0 / r.uniform().max(1e-12).powf(1.0 / 1.5));
        }
        let truth = 1e5_f64.powf(1.0 / 1.5);
        let limit = tail.limit(1e-5);
        assert!(limit > 0.3 * truth && limit < 3.0 * truth, "limit {limit} against {truth}");
        // Light tails keep light limits: half-normal scores, 1e-5 at 4.4.
        let mut light = Tail::new(1.0);
        for _ in 0..4000 {
            light.learn(r.normal().abs());
        }
        let limit = light.limit(1e-5);
        assert!((4.4..7.0).contains(&limit), "half-normal limit {limit}");
    }

    #[test]
    fn an_incident_does_not_blunt_the_detector_for_the_next_one() {
        // Five 20σ spikes, one every ten samples, then a single 9σ spike long after.
        let mut s = noise(4, 3000, 0.0, 1.0);
        for k in 0..5 {
            s[1000 + 10 * k] += 20.0;
        }
        s[2500] += 9.0;
        let fired = fired_at(&mut detector(), &s);
        assert!(fired.contains(&1000), "the burst fires: {fired:?}");
        assert!(fired.contains(&2500), "the next spike fires too: {fired:?}");
    }

    #[test]
    fn a_burst_that_keeps_recurring_becomes_normal_but_a_larger_one_fires() {
        // A 20σ spike every 50 samples, 40 times; then one of 1,000σ, past the most (4
        // times the limit) recurring excursions can raise it by.
        let mut s = noise(6, 4000, 0.0, 1.0);
        let spikes: Vec<usize> = (0..40).map(|k| 600 + 50 * k).collect();
        for i in &spikes {
            s[*i] += 20.0;
        }
        s[3500] += 1000.0;
        let fired = fired_at(&mut detector(), &s);
        let spiked = spikes.iter().filter(|i| fired.contains(i)).count();
        assert!(fired.contains(&600), "the first fires: {fired:?}");
        // Once ten have reached a size, one of that size is normal: the smaller half of the
        // next spikes first, then all.
        assert!((BURSTS..=2 * BURSTS).contains(&spiked), "learned after {BURSTS}: {spiked} fired, {fired:?}");
        assert!(spikes[2 * BURSTS..].iter().all(|i| !fired.contains(i)), "{fired:?}");
        assert!(fired.contains(&3500), "a larger one still fires: {fired:?}");
    }

    #[test]
    fn a_limit_is_not_extrapolated_far_past_what_the_series_showed() {
        // Mostly half-normal scores, one in twenty at 30: a fit over those peaks alone would
        // put the 1-in-100,000 level far above 30.
        let mut r = Rng::new(4);
        let mut tail = Tail::new(1.0);
        for i in 0..4000 {
            tail.learn(if i % 20 == 0 { 30.0 + r.normal().abs() } else { r.normal().abs() });
        }
        let limit = tail.limit(1e-5);
        assert!(limit > 30.0 && limit <= TAIL_REACH * 40.0, "limit {limit}");
    }

    #[test]
    fn a_value_usual_for_the_window_but_not_for_its_hour_fires() {
        // 5-minute samples, a daily cycle from 10 at 4 a.m. to 100 at 4 p.m., for ten days;
        // then at 4 a.m. the value of a usual afternoon.
        let mut r = Rng::new(14);
        let day = 288;
        let cycle = |i: usize| 55.0 - 45.0 * (std::f64::consts::TAU * ((i % day) as f64 - 48.0) / day as f64).cos();
        let mut s: Vec<f64> = (0..day * 11).map(|i| cycle(i) + r.normal()).collect();
        let odd = day * 10 + 48;
        for v in &mut s[odd..odd + 4] {
            *v = 90.0;
        }
        let mut d = detector();
        let mut fired = Vec::new();
        for (i, v) in s.iter().enumerate() {
            if let Some(f) = d.observe(t(i, 300), *v).filter(|f| f.state == State::Firing) {
                if (odd..odd + 4).contains(&i) {
                    // The value threshold: above this hour's usual ~10, below what came.
                    assert!(f.threshold > 12.0 && f.threshold < 90.0, "threshold {}", f.threshold);
                }
                fired.push((i, f.explanation));
            }
        }
        let at_odd: Vec<_> = fired.iter().filter(|(i, _)| (odd..odd + 4).contains(i)).collect();
        assert_eq!(at_odd.len(), 1, "{fired:?}");
        assert!(at_odd[0].1.contains("from this hour on earlier days"), "{at_odd:?}");
        assert!(fired.iter().all(|(i, _)| *i < 3 * day + 48 || (odd..odd + 4).contains(i)), "{fired:?}");
    }

    #[test]
    fn a_day_that_moves_by_an_hour_is_learned_within_days() {
        // 1-minute samples: busy (100) from 08:00 to 20:00 UTC, quiet (10) otherwise; from day
        // 20 the busy hours come an hour earlier (a clock change), for 25 more days.
        let mut r = Rng::new(31);
        let day = 1440;
        let busy = |i: usize| {
            let minute = i % day;
            let shift = if i >= 20 * day { 60 } else { 0 };
            (8 * 60 - shift..20 * 60 - shift).contains(&minute)
        };
        let mut d = detector();
        let fired: Vec<usize> = (0..45 * day)
            .filter(|i| {
                let v = if busy(*i) { 100.0 } else { 10.0 } + r.normal();
                d.observe(t(*i, 60), v).is_some_and(|f| f.state == State::Firing)
            })
            .collect();
        let late: Vec<usize> = fired.iter().filter(|i| **i >= 30 * day).map(|i| i / day).collect();
        assert!(late.is_empty(), "days still firing ten days after the change: {late:?} (all: {fired:?})");
    }

    #[test]
    fn a_dive_while_re_learning_a_new_level_is_judged() {
        // Level 80, shifted to 70 (the window re-learns), then a dive to 2 among the first
        // samples of the new level.
        let mut s = noise(3, 600, 80.0, 1.0);
        for v in &mut s[400..] {
            *v -= 10.0;
        }
        s[405] = 2.0;
        let mut d = detector();
        let mut relearning = Vec::new();
        for (i, v) in s.iter().enumerate() {
            d.observe(t(i, 10), *v);
            if d.before.is_some() {
                relearning.push((i, d.score()));
            }
        }
        let dive = relearning.iter().find(|(i, _)| *i == 405);
        assert!(
            dive.is_some_and(|(_, score)| score.is_some_and(|x| x > 1.0)),
            "judged and past the limit: {relearning:?}"
        );
        assert!(
            relearning.iter().skip(1).filter(|(i, _)| *i != 405).all(|(_, score)| score.is_some_and(|x| x < 1.0)),
            "{relearning:?}"
        );
    }

    #[test]
    fn more_frequent_moderate_spikes_fire_though_none_is_unusual_alone() {
        // 4σ spikes once every 300 samples, then once every 6 for 60 samples.
        let mut s = noise(8, 4000, 0.0, 1.0);
        for i in (1000..3000).step_by(300) {
            s[i] += 4.0;
        }
        for i in (3400..3460).step_by(6) {
            s[i] += 4.0;
        }
        let mut d = detector();
        let mut fired = Vec::new();
        for (i, v) in s.iter().enumerate() {
            if let Some(f) = d.observe(t(i, 10), *v).filter(|f| f.state == State::Firing) {
                fired.push((i, f.explanation));
            }
        }
        assert!(fired.iter().any(|(i, e)| (3400..3470).contains(i) && e.contains("rises past")), "{fired:?}");
        assert!(fired.iter().all(|(i, _)| (3400..3470).contains(i)), "{fired:?}");
    }

    #[test]
    fn the_score_is_relative_to_the_limit_and_absent_while_learning() {
        let mut s = noise(2, 400, 50.0, 1.0);
        s[300] = 90.0;
        let mut d = detector();
        let scores: Vec<Option<f64>> = s
            .iter()
            .enumerate()
            .map(|(i, v)| {
                d.observe(t(i, 10), *v);
                d.score()
            })
            .collect();
        assert!(scores[..WARMUP].iter().all(Option::is_none));
        assert!(scores[WARMUP..300].iter().all(|x| x.is_some_and(|x| (0.0..1.0).contains(&x))), "{scores:?}");
        assert!(scores[300].is_some_and(|x| x > 1.0), "{:?}", scores[300]);
    }
}
