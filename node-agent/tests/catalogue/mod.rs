//! The catalogue of node problems in `docs/agent-events.md`, read for the tests.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

/// One row: its problem, event type, severity, condition, key fields and test line.
#[derive(Debug)]
pub struct Row {
    pub problem: String,
    pub event: String,
    pub severity: String,
    pub condition: String,
    pub fields: String,
    pub test: String,
}

/// The cells of a Markdown table row, `\|` kept as a `|` inside a cell.
pub fn cells(line: &str) -> Vec<String> {
    let inner = line.trim().trim_start_matches('|').trim_end_matches('|');
    let mut out = vec![String::new()];
    let mut chars = inner.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&'|') => {
                chars.next();
                out.last_mut().unwrap().push('|');
            }
            '|' => out.push(String::new()),
            c => out.last_mut().unwrap().push(c),
        }
    }
    out.into_iter().map(|c| c.trim().to_owned()).collect()
}

/// The code spans of a cell.
pub fn spans(cell: &str) -> Vec<&str> {
    cell.split('`').skip(1).step_by(2).collect()
}

pub fn catalogue() -> Vec<Row> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/agent-events.md");
    let text = std::fs::read_to_string(&path).unwrap();
    let start = text.find("## node-problem-detector's catalogue, and beyond").expect("the catalogue section");
    let section = &text[start..];
    let end = section[3..].find("\n## ").map_or(section.len(), |e| e + 3);
    let mut rows = Vec::new();
    for line in section[..end].lines().filter(|l| l.starts_with("| ")) {
        let c = cells(line);
        if c.iter().all(|x| x.chars().all(|ch| ch == '-' || ch == ' '))
            || c[0].starts_with("NPD problem")
            || c[0] == "problem"
        {
            continue;
        }
        let n = c.len();
        assert!(n == 6 || n == 7, "a catalogue row of {n} cells: {line}");
        rows.push(Row {
            problem: c[0].clone(),
            event: c[n - 5].clone(),
            severity: c[n - 4].clone(),
            condition: c[n - 3].clone(),
            fields: c[n - 2].clone(),
            test: c[n - 1].clone(),
        });
    }
    rows
}

impl Row {
    /// The row's test line, when it has one.
    pub fn line(&self) -> Option<&str> {
        spans(&self.test).first().copied().filter(|_| self.test.starts_with('`'))
    }

    /// Whether the test line is a syslog line (systemd's, read with the journal by the auth
    /// source) rather than a kernel record.
    pub fn is_syslog(&self) -> bool {
        self.line().is_some_and(|l| l.contains(" systemd[1]: "))
    }

    /// The event type the row names first.
    pub fn kind(&self) -> &str {
        spans(&self.event).first().copied().unwrap_or("")
    }
}

/// Every test line of the catalogue as one `/dev/kmsg` log, a record a second from sequence
/// number `first`, and the event types the rows name, in order.
pub fn kmsg_log(first: u64) -> (String, Vec<String>) {
    let mut log = String::new();
    let mut kinds = Vec::new();
    for (i, row) in catalogue().iter().filter(|r| r.line().is_some() && !r.is_syslog()).enumerate() {
        let seq = first + i as u64;
        // 20 s apart: each row alone (a crash's second line within 10 s of its first is the
        // same crash, one event).
        log.push_str(&format!("3,{seq},{},-;{}\n", (seq + 1) * 20_000_000, row.line().unwrap()));
        kinds.push(row.kind().to_owned());
    }
    (log, kinds)
}
