//! The detector evaluation harness: any detector configuration, run through the agent's own
//! rule engine exactly as a rule runs it, over labelled series, scored per set (recall,
//! precision, false alarms per 1,000 samples, delay, the windowed early-detection score).
//! The layout and scoring are in `vigil_agent::detect::eval`.
//!
//! ```sh
//! cargo bench -p vigil-agent --bench evaluate                      # generated + aeon sets
//! cargo bench -p vigil-agent --bench evaluate -- --data DIR        # plus a directory of CSVs
//! cargo bench -p vigil-agent --bench evaluate -- \
//!     --detector 'mine={zScore: {window: 120, threshold: 5}}' --no-generated --data DIR
//! cargo bench -p vigil-agent --bench evaluate -- --write-generated DIR  # the generated CSVs
//! ```
//!
//! Options: `--data DIR` (repeatable; each directory is one set, every `*.csv` in it a series,
//! `NAME_TRAIN.csv` fed before `NAME_TEST.csv`), `--detector 'LABEL=YAML'` (repeatable; a
//! rule's `detector` as in an AlertPolicy; replaces the default list), `--no-generated`,
//! `--no-aeon`, `--step SECONDS` (spacing of sample-number timestamps, default 10),
//! `--write-generated DIR`. The aeon sets are read from `VIGIL_AEON_DATA` or the wheel in
//! `.venv` (`make bench-deps`) when present.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use vigil_agent::alert::policy::{PolicySet, load_rules};
use vigil_agent::alert::rules::{Engine, Sample};
use vigil_agent::detect::eval::{self, Labelled, PROFILES, Tally, generate};

/// The shipped detectors with their documented defaults, and never alarming.
const DEFAULTS: [(&str, &str); 7] = [
    ("anomaly (default)", "{anomaly: {}}"),
    ("anomaly, low", "{anomaly: {sensitivity: low}}"),
    ("anomaly, high", "{anomaly: {sensitivity: high}}"),
    ("windowed Gaussian (zScore 60, 4σ)", "{zScore: {window: 60, threshold: 4}}"),
    ("mad (60, 4.5)", "{mad: {window: 60, threshold: 4.5}}"),
    ("ewma (α 0.05, 4σ)", "{ewma: {alpha: 0.05, limit: 4}}"),
    ("never alarm", ""),
];

struct Args {
    data: Vec<PathBuf>,
    detectors: Vec<(String, String)>,
    generated: bool,
    aeon: bool,
    step: Duration,
    write: Option<PathBuf>,
}

fn args() -> Result<Args, String> {
    let mut a = Args {
        data: Vec::new(),
        detectors: Vec::new(),
        generated: true,
        aeon: true,
        step: Duration::from_secs(10),
        write: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().ok_or_else(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--data" => a.data.push(PathBuf::from(value("--data")?)),
            "--detector" => {
                let v = value("--detector")?;
                let (label, yaml) =
                    v.split_once('=').ok_or_else(|| format!("--detector {v:?}: expected LABEL=YAML"))?;
                a.detectors.push((label.to_owned(), yaml.to_owned()));
            }
            "--no-generated" => a.generated = false,
            "--no-aeon" => a.aeon = false,
            "--step" => {
                let v = value("--step")?;
                let secs: f64 = v.parse().map_err(|_| format!("--step {v:?}: expected seconds"))?;
                a.step = Duration::try_from_secs_f64(secs).map_err(|_| format!("--step {v:?}: out of range"))?;
            }
            "--write-generated" => a.write = Some(PathBuf::from(value("--write-generated")?)),
            // cargo bench passes this to every bench target.
            "--bench" => {}
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if a.detectors.is_empty() {
        a.detectors = DEFAULTS.iter().map(|(l, y)| ((*l).to_owned(), (*y).to_owned())).collect();
    }
    Ok(a)
}

/// The one-rule policy running `detector` on one series (named as an exported metric, which rules require) (None: never alarm).
fn policy(dir: &Path, i: usize, detector: &str) -> Result<Option<PolicySet>, String> {
    if detector.trim().is_empty() {
        return Ok(None);
    }
    let file = dir.join(format!("detector-{i}.yaml"));
    let text =
        format!("rules:\n  - name: Evaluated\n    metric: {{name: vigil_node_load1}}\n    detector: {detector}\n");
    std::fs::write(&file, text).map_err(|e| e.to_string())?;
    load_rules(&[file]).map(Some).map_err(|e| format!("detector {detector:?}: {e}"))
}

/// The samples where a condition started.
fn firings(set: &PolicySet, s: &Labelled) -> Vec<usize> {
    let interval = eval::spacing(&s.times).unwrap_or(Duration::from_secs(10)).max(Duration::from_millis(1));
    let mut engine = Engine::new("evaluate", interval);
    engine.set_policies(set, s.times[0]);
    let mut out = Vec::new();
    for (i, (t, v)) in s.times.iter().zip(&s.values).enumerate() {
        let sample = Sample { name: "vigil_node_load1".to_owned(), labels: BTreeMap::new(), value: *v };
        if engine.observe_metrics(*t, &[sample]).iter().any(|r| r.alert.ends_at.is_none()) {
            out.push(i);
        }
    }
    out
}

fn read(path: &Path, step: Duration) -> Result<Labelled, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    eval::parse_csv(&text, &path.display().to_string(), step).map_err(|e| e.to_string())
}

/// A directory's series: every CSV, a `_TRAIN` file fed before its `_TEST` file.
fn read_dir(dir: &Path, step: Duration) -> Result<Vec<Labelled>, String> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "csv"))
        .collect();
    files.sort();
    let mut out = Vec::new();
    for f in &files {
        let name = f.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if name.contains("_TRAIN") {
            continue;
        }
        let test = read(f, step)?;
        let train = name.replace("_TEST", "_TRAIN");
        let paired = f.with_file_name(&train);
        out.push(if train != name && paired.is_file() {
            eval::with_training(read(&paired, step)?, test)
        } else {
            test
        });
    }
    if out.is_empty() {
        return Err(format!("{}: no .csv series", dir.display()));
    }
    Ok(out)
}

/// The labelled series shipped in the aeon wheel, when it is installed.
fn aeon(step: Duration) -> Vec<(String, Vec<Labelled>)> {
    let dir = std::env::var_os("VIGIL_AEON_DATA").map(PathBuf::from).or_else(|| {
        let lib = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.venv/lib");
        std::fs::read_dir(lib)
            .ok()?
            .filter_map(Result::ok)
            .map(|e| e.path().join("site-packages/aeon/datasets/data"))
            .find(|p| p.is_dir())
    });
    let Some(d) = dir else {
        eprintln!("aeon's data not found (make bench-deps): its sets are left out");
        return Vec::new();
    };
    let pair = |train: &str, test: &str| -> Result<Labelled, String> {
        Ok(eval::with_training(read(&d.join(train), step)?, read(&d.join(test), step)?))
    };
    let sets = [
        (
            "aeon: UCR 135 InternalBleeding16",
            pair(
                "KDD-TSAD_135/135_UCR_Anomaly_InternalBleeding16_TRAIN.csv",
                "KDD-TSAD_135/135_UCR_Anomaly_InternalBleeding16_TEST.csv",
            ),
        ),
        (
            "aeon: ECG, 3 anomalies",
            pair("UnitTest/ecg-diff-count-3_TRAIN_NA.csv", "UnitTest/ecg-diff-count-3_TEST.csv"),
        ),
        ("aeon: Daphnet S06R02E0 (first channel)", read(&d.join("Daphnet_S06R02E0/S06R02E0.csv"), step)),
    ];
    sets.into_iter()
        .filter_map(|(name, s)| match s {
            Ok(s) => Some((name.to_owned(), vec![s])),
            Err(e) => {
                eprintln!("{name} left out: {e}");
                None
            }
        })
        .collect()
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "—".to_owned(), |v| format!("{v:.digits$}"))
}

fn row(set: &str, detector: &str, t: &Tally) {
    let scores: Vec<String> = PROFILES.iter().map(|(_, fp, fn_)| opt(t.score(*fp, *fn_), 1)).collect();
    let even = t.break_even();
    println!(
        "| {set} | {detector} | {} | {} | {} | {} | {:.2} | {} | {} | {} | {} |",
        t.series,
        t.windows,
        opt(t.recall(), 3),
        opt(t.precision(), 3),
        t.false_per_thousand(),
        t.median_delay().map_or_else(|| "—".to_owned(), |d| d.to_string()),
        opt(t.within(3), 3),
        scores.join(" | "),
        if even.is_infinite() { "∞".to_owned() } else { format!("{even:.2}") },
    );
}

fn main() -> ExitCode {
    let a = match args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("evaluate: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(dir) = &a.write {
        for (family, series) in generate::all() {
            let slug: String =
                family.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' }).collect();
            let d = dir.join(slug.trim_matches('-'));
            if let Err(e) = std::fs::create_dir_all(&d) {
                eprintln!("evaluate: {}: {e}", d.display());
                return ExitCode::FAILURE;
            }
            for s in &series {
                let file = d.join(format!("{}.csv", s.name));
                if let Err(e) = std::fs::write(&file, generate::to_csv(s)) {
                    eprintln!("evaluate: {}: {e}", file.display());
                    return ExitCode::FAILURE;
                }
            }
        }
        eprintln!("wrote the generated series under {}", dir.display());
        return ExitCode::SUCCESS;
    }

    let mut sets: Vec<(String, Vec<Labelled>)> = Vec::new();
    if a.generated {
        sets.extend(generate::all().into_iter().map(|(n, s)| (n.to_owned(), s)));
    }
    if a.aeon {
        sets.extend(aeon(a.step));
    }
    for d in &a.data {
        match read_dir(d, a.step) {
            Ok(s) => sets.push((d.display().to_string(), s)),
            Err(e) => {
                eprintln!("evaluate: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let mut policies = Vec::new();
    for (i, (label, yaml)) in a.detectors.iter().enumerate() {
        match policy(tmp.path(), i, yaml) {
            Ok(p) => policies.push((label.clone(), p)),
            Err(e) => {
                eprintln!("evaluate: {label}: {e}");
                return ExitCode::from(2);
            }
        }
    }

    let profiles: Vec<String> = PROFILES.iter().map(|(n, fp, fn_)| format!("score {n} (FP {fp}, FN {fn_})")).collect();
    println!(
        "| set | detector | series | windows | recall | precision | false alarms per 1k | median delay | found within 3 | {} | break-even FP weight |",
        profiles.join(" | ")
    );
    println!("|{}", " --- |".repeat(9 + PROFILES.len() + 1));
    let mut totals: Vec<Tally> = vec![Tally::default(); policies.len()];
    for (name, series) in &sets {
        for (k, (label, policy)) in policies.iter().enumerate() {
            let mut t = Tally::default();
            for s in series {
                let f = policy.as_ref().map(|p| firings(p, s)).unwrap_or_default();
                t.add(&eval::tally(s, &f));
            }
            row(name, label, &t);
            totals[k].add(&t);
        }
    }
    for ((label, _), t) in policies.iter().zip(&totals) {
        row("**all sets**", label, t);
    }
    ExitCode::SUCCESS
}
