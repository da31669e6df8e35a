//! The detector evaluation harness: any detector configuration, run through the agent's own
//! rule engine exactly as a rule runs it, over labelled series, scored per set (recall,
//! precision, false alarms per 1,000 samples, delay, the windowed early-detection score).
//! The layout and scoring are in `vigil_detect::eval`.
//!
//! ```sh
//! cargo bench -p vigil-agent --bench evaluate                      # generated + aeon sets
//! cargo bench -p vigil-agent --bench evaluate -- --data DIR        # plus a directory of CSVs
//! cargo bench -p vigil-agent --bench evaluate -- \
//!     --detector 'mine={zScore: {window: 120, threshold: 5}}' --no-generated --data DIR
//! cargo bench -p vigil-agent --bench evaluate -- --write-generated DIR  # the generated CSVs
//! ```
//!
//! The real sets (`--real DIR`, or `VIGIL_REAL_DATA`) are four public collections of labelled
//! production series, laid out under DIR as their repositories hold them (docs/benchmarks.md
//! says where to get them): `cloud-monitoring/data/<domain>/*.csv` (Microsoft's Cloud
//! Monitoring Dataset), `wsd/real-world/*.csv` (the WSD web-service KPIs),
//! `aiops/UTS/AIOPS/<kpi>/{train,test}{,_label,_timestamp}.npy` (the 2018 AIOps challenge
//! KPIs, training part fed first) and `interfusion/data/{processed,interpretation_label}/`
//! (server metrics: one series per server and metric, labelled where the interpretation
//! labels name that metric, training part fed first; pickled arrays read by
//! [`vigil_detect::pickle`], which runs nothing). The first three are split by name
//! ([`eval::held_out`]) into a tuning part and a held-out part, reported apart; the server
//! metrics are held out whole (no tuning has looked at them). `--part tuning` runs only the
//! tuning parts, as used while tuning. Labelled runs are widened to the windowed score's
//! windows ([`eval::nab_windows`]).
//!
//! Options: `--data DIR` (repeatable; each directory is one set, every `*.csv` in it a series,
//! `NAME_TRAIN.csv` fed before `NAME_TEST.csv`), `--detector 'LABEL=YAML'` (repeatable; a
//! rule's `detector` as in an AlertPolicy; replaces the default list), `--no-generated`,
//! `--no-aeon`, `--step SECONDS` (spacing of sample-number timestamps, default 10),
//! `--write-generated DIR`, `--real DIR`, `--part tuning|held-out|all`, `--threads N`. The aeon sets are read from `VIGIL_AEON_DATA` or the wheel in
//! `.venv` (`make bench-deps`) when present.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use vigil_agent::alert::policy::{PolicySet, load_rules};
use vigil_agent::alert::rules::{Engine, Sample};
use vigil_detect::eval::{self, Labelled, PROFILES, Tally, generate};
use vigil_detect::pickle as eval_pickle;

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
    real: Option<PathBuf>,
    part: Part,
    threads: usize,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Part {
    Tuning,
    HeldOut,
    All,
}

fn args() -> Result<Args, String> {
    let mut a = Args {
        data: Vec::new(),
        detectors: Vec::new(),
        generated: true,
        aeon: true,
        step: Duration::from_secs(10),
        write: None,
        real: std::env::var_os("VIGIL_REAL_DATA").map(PathBuf::from),
        part: Part::All,
        threads: std::thread::available_parallelism().map_or(1, usize::from),
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
            "--real" => a.real = Some(PathBuf::from(value("--real")?)),
            "--part" => {
                a.part = match value("--part")?.as_str() {
                    "tuning" => Part::Tuning,
                    "held-out" => Part::HeldOut,
                    "all" => Part::All,
                    other => return Err(format!("--part {other:?}: expected tuning, held-out or all")),
                }
            }
            "--threads" => {
                let v = value("--threads")?;
                a.threads =
                    v.parse().ok().filter(|n| *n > 0).ok_or_else(|| format!("--threads {v:?}: expected a count"))?;
            }
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
    let mut out = Vec::new();
    for f in &csv_files(dir)? {
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

/// A series' labelled runs widened to the windowed score's windows (over its scored part).
fn nab(mut s: Labelled) -> Labelled {
    let from = s.scored_from.min(s.labels.len());
    let scored = eval::nab_windows(&s.labels[from..], 0.1);
    s.labels[from..].copy_from_slice(&scored);
    s
}

/// One real set: (group, series) pairs.
type Real = Vec<(String, Labelled)>;

/// Reads one real set from its directory.
type Reader = fn(&Path, Duration) -> Result<Real, String>;

/// The entries of `dir` that `keep` keeps, sorted.
fn entries(dir: &Path, keep: impl Fn(&Path) -> bool) -> Result<Vec<PathBuf>, String> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| keep(p))
        .collect();
    out.sort();
    Ok(out)
}

fn csv_files(dir: &Path) -> Result<Vec<PathBuf>, String> {
    entries(dir, |p| p.extension().is_some_and(|x| x == "csv"))
}

fn file_name(p: &Path) -> String {
    p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

/// Microsoft's Cloud Monitoring Dataset: one group per domain directory, except the 23
/// latency series of one service, grouped one by one so that domain does not decide a part.
fn cloud_monitoring(root: &Path, step: Duration) -> Result<Real, String> {
    let mut out = Vec::new();
    for d in entries(root, Path::is_dir)? {
        let domain = file_name(&d);
        for f in csv_files(&d)? {
            let group = if domain == "middle-tier-api-dependency-latency" {
                format!("cloud-monitoring/{domain}/{}", file_name(&f))
            } else {
                format!("cloud-monitoring/{domain}")
            };
            out.push((group, nab(read(&f, step)?)));
        }
    }
    Ok(out)
}

/// The WSD web-service KPIs: one group per series.
fn wsd(root: &Path, step: Duration) -> Result<Real, String> {
    csv_files(root)?.iter().map(|f| Ok((format!("wsd/{}", file_name(f)), nab(read(f, step)?)))).collect()
}

/// The AIOps challenge KPIs: the training part fed, the test part scored; one group per KPI.
fn aiops(root: &Path, step: Duration) -> Result<Real, String> {
    let kpis = entries(root, Path::is_dir)?;
    let array = |p: PathBuf| -> Result<Vec<f64>, String> {
        let bytes = std::fs::read(&p).map_err(|e| format!("{}: {e}", p.display()))?;
        eval::parse_npy(&bytes, &p.display().to_string()).map_err(|e| e.to_string())
    };
    let mut out = Vec::new();
    for k in kpis {
        let part = |name: &str| -> Result<Labelled, String> {
            let times = k.join(format!("{name}_timestamp.npy"));
            let times = if times.is_file() { Some(array(times)?) } else { None };
            let origin = k.join(format!("{name}.npy")).display().to_string();
            eval::from_arrays(
                &origin,
                &array(k.join(format!("{name}.npy")))?,
                &array(k.join(format!("{name}_label.npy")))?,
                times.as_deref(),
                step,
            )
            .map_err(|e| e.to_string())
        };
        let mut test = part("test")?;
        test.scored_from = 0;
        out.push((format!("aiops/{}", file_name(&k)), eval::with_training(part("train")?, nab(test))));
    }
    Ok(out)
}

/// The interpretation labels of one entity (`start-end:d1,d2,...` per line: a segment of the
/// test part and the 1-based metrics it shows in; segments may nest) as one label row per
/// metric. Whether `end` is inclusive (as the application servers' files write it) or
/// exclusive (as the server machines' do) is read off the entity's own labels (`entity`, one
/// per test sample): the segments that start a labelled run must all end it one way. Every
/// segment must lie inside a labelled run.
fn interpretation(path: &Path, metrics: usize, entity: &[bool]) -> Result<Vec<Vec<f64>>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let runs = eval::windows(entity);
    let mut segments = Vec::new();
    for (n, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let bad = |what: &str| format!("{}:{}: {what} in {line:?}", path.display(), n + 1);
        let (span, dims) = line.trim().split_once(':').ok_or_else(|| bad("no `:` after the segment"))?;
        let (a, b) = span.split_once('-').ok_or_else(|| bad("a segment that is not start-end"))?;
        let (a, b): (usize, usize) = (
            a.parse().map_err(|_| bad("a segment start that is not an index"))?,
            b.parse().map_err(|_| bad("a segment end that is not an index"))?,
        );
        let dims: Vec<usize> = dims
            .split(',')
            .map(|d| d.trim().parse::<usize>().ok().filter(|d| (1..=metrics).contains(d)))
            .collect::<Option<_>>()
            .ok_or_else(|| bad(&format!("a metric that is not one of 1 to {metrics}")))?;
        let run = runs.iter().copied().find(|(s, e)| (*s..*e).contains(&a));
        segments.push((n + 1, a, b, dims, run));
    }
    let ending = |inclusive: bool| {
        segments
            .iter()
            .filter(|(_, a, b, _, run)| run.is_some_and(|(s, e)| s == *a && b + usize::from(inclusive) == e))
            .count()
    };
    let inclusive = match (ending(true), ending(false)) {
        (i, 0) if i > 0 => true,
        (0, x) if x > 0 => false,
        (i, x) => {
            return Err(format!(
                "{}: cannot tell whether segment ends are inclusive: {i} segments end their labelled run inclusively, {x} exclusively",
                path.display()
            ));
        }
    };
    let mut out = vec![vec![0.0; entity.len()]; metrics];
    for (line, a, b, dims, run) in segments {
        let end = b + usize::from(inclusive);
        if !run.is_some_and(|(s, e)| s <= a && a < end && end <= e) {
            return Err(format!(
                "{}:{line}: segment {a}-{b} is not inside a labelled run of the test part",
                path.display()
            ));
        }
        for d in dims {
            for l in &mut out[d - 1][a..end] {
                *l = 1.0;
            }
        }
    }
    Ok(out)
}

/// The server metrics of InterFusion's data (the Application Server Dataset, `omi-*`, 19
/// metrics every 5 minutes, and its part of the Server Machine Dataset, `machine-*`, 38 metrics
/// every minute): one series per server and metric, its training part fed and its test part
/// labelled where the interpretation labels name that metric. One group per server. Every
/// server whose test array is present is read; its training array, its labels and its
/// interpretation labels must be there too.
fn servers(root: &Path) -> Result<Real, String> {
    let processed = root.join("processed");
    let array = |p: PathBuf| -> Result<eval_pickle::Array, String> {
        let bytes = std::fs::read(&p).map_err(|e| format!("{}: {e}", p.display()))?;
        eval_pickle::parse_array(&bytes, &p.display().to_string()).map_err(|e| e.to_string())
    };
    let tests = entries(&processed, |p| file_name(p).ends_with("_test.pkl"))?;
    if tests.is_empty() {
        return Err(format!("{}: no *_test.pkl arrays", processed.display()));
    }
    let mut out = Vec::new();
    for t in tests {
        let name = file_name(&t);
        let entity = name.trim_end_matches("_test.pkl");
        let step = match entity {
            e if e.starts_with("omi-") => Duration::from_secs(300),
            e if e.starts_with("machine-") => Duration::from_secs(60),
            _ => return Err(format!("{}: neither omi-* nor machine-*: its sample interval is unknown", t.display())),
        };
        let train_file = processed.join(format!("{entity}_train.pkl"));
        let (train, test) = (array(train_file.clone())?, array(t.clone())?);
        let two = |a: &eval_pickle::Array, f: &Path| match a.shape[..] {
            [rows, cols] if rows > 0 && cols > 0 => Ok((rows, cols)),
            _ => Err(format!("{}: shape {:?}, expected samples × metrics", f.display(), a.shape)),
        };
        let ((rows, cols), (train_rows, train_cols)) = (two(&test, &t)?, two(&train, &train_file)?);
        if cols != train_cols {
            return Err(format!("{}: {cols} metrics, its training part {train_cols}", t.display()));
        }
        let label_file = processed.join(format!("{entity}_test_label.pkl"));
        let entity_labels = array(label_file.clone())?;
        if entity_labels.shape != [rows] {
            return Err(format!("{}: shape {:?}, expected [{rows}]", label_file.display(), entity_labels.shape));
        }
        let entity_labels: Vec<bool> = entity_labels.values.iter().map(|v| *v > 0.0).collect();
        let labels = interpretation(&root.join(format!("interpretation_label/{entity}.txt")), cols, &entity_labels)?;
        for (m, labels) in labels.iter().enumerate() {
            let column =
                |a: &eval_pickle::Array, n: usize| -> Vec<f64> { (0..n).map(|i| a.values[i * cols + m]).collect() };
            let origin = format!("{}#metric-{}", t.display(), m + 1);
            let part = |values: Vec<f64>, labels: &[f64]| {
                eval::from_arrays(&origin, &values, labels, None, step).map_err(|e| e.to_string())
            };
            let mut scored = part(column(&test, rows), labels)?;
            scored.scored_from = 0;
            let fed = part(column(&train, train_rows), &vec![0.0; train_rows])?;
            out.push((format!("servers/{entity}"), eval::with_training(fed, nab(scored))));
        }
    }
    Ok(out)
}

/// The real sets under `root`, each split into its tuning and held-out parts, as
/// (part, set, series).
fn real(root: &Path, step: Duration, part: Part) -> Result<Vec<(String, String, Vec<Labelled>)>, String> {
    let readers: [(&str, &str, Reader); 3] = [
        ("Cloud Monitoring (Microsoft)", "cloud-monitoring/data", cloud_monitoring),
        ("WSD web-service KPIs", "wsd/real-world", wsd),
        ("AIOps challenge KPIs", "aiops/UTS/AIOPS", aiops),
    ];
    let mut out = Vec::new();
    for (name, dir, read) in readers {
        let series = read(&root.join(dir), step)?;
        for (label, held) in [("real, tuning", false), ("real, held-out", true)] {
            if (held && part == Part::Tuning) || (!held && part == Part::HeldOut) {
                continue;
            }
            let chosen: Vec<Labelled> =
                series.iter().filter(|(g, _)| eval::held_out(g) == held).map(|(_, s)| s.clone()).collect();
            out.push((label.to_owned(), format!("{name} ({})", &label[6..]), chosen));
        }
    }
    // Held out whole: no tuning has looked at it.
    let servers_dir = root.join("interfusion/data");
    if part != Part::Tuning && !servers_dir.exists() {
        eprintln!("the server metrics are left out: {} does not exist", servers_dir.display());
    } else if part != Part::Tuning {
        let series = servers(&servers_dir)?;
        for (name, prefix) in
            [("Application servers (ASD)", "servers/omi-"), ("Server machines (SMD)", "servers/machine-")]
        {
            out.push((
                "real, fresh held-out".to_owned(),
                format!("{name} (fresh held-out)"),
                series.iter().filter(|(g, _)| g.starts_with(prefix)).map(|(_, s)| s.clone()).collect(),
            ));
        }
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

    let mut sets: Vec<(String, String, Vec<Labelled>)> = Vec::new();
    if a.generated {
        sets.extend(generate::all().into_iter().map(|(n, s)| ("generated".to_owned(), n.to_owned(), s)));
    }
    if a.aeon {
        sets.extend(aeon(a.step).into_iter().map(|(n, s)| ("aeon".to_owned(), n, s)));
    }
    for d in &a.data {
        match read_dir(d, a.step) {
            Ok(s) => sets.push(("data".to_owned(), d.display().to_string(), s)),
            Err(e) => {
                eprintln!("evaluate: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    match &a.real {
        Some(root) => match real(root, a.step, a.part) {
            Ok(r) => sets.extend(r),
            Err(e) => {
                eprintln!("evaluate: {e}");
                return ExitCode::FAILURE;
            }
        },
        None => eprintln!("the real sets are left out: pass --real DIR (docs/benchmarks.md says how to get them)"),
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
    // Every (set, detector, series) judged on `threads` threads; each tally kept in its place.
    let jobs: Vec<(usize, usize, &Labelled)> = sets
        .iter()
        .enumerate()
        .flat_map(|(i, (_, _, series))| (0..policies.len()).flat_map(move |k| series.iter().map(move |s| (i, k, s))))
        .collect();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results = std::sync::Mutex::new(vec![Tally::default(); sets.len() * policies.len()]);
    std::thread::scope(|scope| {
        for _ in 0..a.threads {
            scope.spawn(|| {
                loop {
                    let j = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some((i, k, s)) = jobs.get(j) else { break };
                    let f = policies[*k].1.as_ref().map(|p| firings(p, s)).unwrap_or_default();
                    let t = eval::tally(s, &f);
                    results.lock().expect("no thread panicked holding it")[i * policies.len() + k].add(&t);
                }
            });
        }
    });
    let results = results.into_inner().expect("no thread panicked holding it");
    let mut totals: BTreeMap<&str, Vec<Tally>> = BTreeMap::new();
    for (i, (part, name, _)) in sets.iter().enumerate() {
        for (k, (label, _)) in policies.iter().enumerate() {
            let t = &results[i * policies.len() + k];
            row(name, label, t);
            totals.entry(part.as_str()).or_insert_with(|| vec![Tally::default(); policies.len()])[k].add(t);
        }
    }
    for (part, ts) in &totals {
        for ((label, _), t) in policies.iter().zip(ts) {
            row(&format!("**{part}, all**"), label, t);
        }
    }
    ExitCode::SUCCESS
}
