//! The anomaly detectors on real labelled series: the UCR Time Series Anomaly Archive's
//! series 135 (InternalBleeding16, a physiological signal with one labelled anomaly) and the
//! labelled ECG series with three anomalies, both as shipped in the `aeon` wheel on PyPI
//! (`make bench-deps` installs it into .venv without its numeric dependencies: only the data
//! files are read).
//!
//! `cargo bench -p vigil-detect --bench detect_real` prints a Markdown table for
//! docs/benchmarks.md. The UCR archive's scoring is used: a firing counts as a detection
//! when it falls within the labelled region widened by 100 samples on both sides; any other
//! firing is a false alarm. Each detector warms up on the series' anomaly-free training part
//! where the archive provides one.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use vigil_detect::eval::windows as regions;
use vigil_detect::ewma::ewma;
use vigil_detect::mad::mad;
use vigil_detect::synth::t;
use vigil_detect::zscore::zscore;
use vigil_detect::{Detector, State};

const STEP: Duration = Duration::from_secs(10);
const MARGIN: usize = 100;

/// The aeon data directory: `VIGIL_AEON_DATA`, or the one in .venv.
fn data_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("VIGIL_AEON_DATA") {
        return PathBuf::from(d);
    }
    let lib = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.venv/lib");
    std::fs::read_dir(&lib)
        .ok()
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .map(|e| e.path().join("site-packages/aeon/datasets/data"))
        .find(|p| p.is_dir())
        .unwrap_or_else(|| panic!("aeon's data not found under {}: run `make bench-deps`", lib.display()))
}

/// (values, labels) of a `timestamp,value...,is_anomaly` CSV, the first value column.
fn read(path: &Path) -> (Vec<f64>, Vec<bool>) {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut values = Vec::new();
    let mut labels = Vec::new();
    for line in text.lines().skip(1) {
        let cols: Vec<&str> = line.split(',').collect();
        values.push(cols[1].trim().parse().unwrap());
        labels.push(cols.last().unwrap().trim().parse::<f64>().unwrap() > 0.0);
    }
    (values, labels)
}

struct Row {
    found: usize,
    regions: usize,
    delays: Vec<usize>,
    false_alarms: usize,
    samples: usize,
}

fn score(d: &mut dyn Detector, train: &[f64], test: &[f64], labels: &[bool]) -> Row {
    for (i, v) in train.iter().enumerate() {
        d.observe(t(i, 10), *v);
    }
    let off = train.len();
    let regions = regions(labels);
    let mut first: Vec<Option<usize>> = vec![None; regions.len()];
    let mut false_alarms = 0;
    for (i, v) in test.iter().enumerate() {
        let Some(f) = d.observe(t(off + i, 10), *v) else { continue };
        if f.state != State::Firing {
            continue;
        }
        let hit = regions.iter().position(|(s, e)| i + MARGIN >= *s && i < e + MARGIN);
        match hit {
            Some(r) => {
                first[r].get_or_insert(i.saturating_sub(regions[r].0));
            }
            None => false_alarms += 1,
        }
    }
    Row {
        found: first.iter().flatten().count(),
        regions: regions.len(),
        delays: first.into_iter().flatten().collect(),
        false_alarms,
        samples: test.len(),
    }
}

fn main() {
    let data = data_dir();
    let series: [(&str, PathBuf, Option<PathBuf>); 2] = [
        (
            "UCR 135 InternalBleeding16",
            data.join("KDD-TSAD_135/135_UCR_Anomaly_InternalBleeding16_TEST.csv"),
            Some(data.join("KDD-TSAD_135/135_UCR_Anomaly_InternalBleeding16_TRAIN.csv")),
        ),
        ("ECG, 3 anomalies", data.join("UnitTest/ecg-diff-count-3_TEST.csv"), None),
    ];
    println!(
        "| series | detector | anomalies found | delay from region start (samples) | false alarms | per 10k samples |"
    );
    println!("| --- | --- | --- | --- | --- | --- |");
    for (name, test, train) in &series {
        let (values, labels) = read(test);
        let train = train.as_ref().map(|p| read(p).0).unwrap_or_default();
        let detectors: [(&str, Box<dyn Detector>); 3] = [
            ("zscore (60, 4σ)", Box::new(zscore("x", STEP))),
            ("ewma (α 0.05, 4σ)", Box::new(ewma("x", STEP))),
            ("mad (60, 4.5)", Box::new(mad("x", STEP))),
        ];
        for (label, mut d) in detectors {
            let r = score(d.as_mut(), &train, &values, &labels);
            let delays = if r.delays.is_empty() {
                "-".to_owned()
            } else {
                r.delays.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
            };
            println!(
                "| {name} | {label} | {}/{} | {delays} | {} | {:.1} |",
                r.found,
                r.regions,
                r.false_alarms,
                r.false_alarms as f64 * 10_000.0 / r.samples as f64
            );
        }
    }
}
