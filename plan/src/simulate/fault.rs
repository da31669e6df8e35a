//! Fault models of a target revision.

use crate::NodeAttributes;

/// What goes wrong.
#[derive(Clone, Debug, PartialEq)]
pub enum FaultKind {
    /// The agent crash-loops.
    CrashLoop,
    /// The agent takes this many seconds to become ready.
    SlowStart(u64),
    /// The agent runs but never renews its heartbeat Lease.
    MissingHeartbeat,
    /// This share of nodes goes NotReady 30 s into the run, whatever revision they run.
    NotReady {
        /// 0–1.
        share: f64,
    },
}

/// A fault, optionally limited to nodes with one attribute value.
#[derive(Clone, Debug, PartialEq)]
pub struct Fault {
    /// What goes wrong.
    pub kind: FaultKind,
    /// Only on nodes whose attribute (`os-image`, `kernel`, `zone`, `instance-type`) has this value.
    pub only: Option<(String, String)>,
}

impl Fault {
    fn applies(&self, a: &NodeAttributes) -> bool {
        match &self.only {
            None => true,
            Some((k, v)) => {
                let key = match k.as_str() {
                    "os-image" => "osImage",
                    "instance-type" => "instanceType",
                    other => other,
                };
                a.get(key) == Some(v.as_str())
            }
        }
    }

    /// Whether the target crash-loops on a node with these attributes.
    pub fn crashes(&self, a: &NodeAttributes) -> bool {
        self.kind == FaultKind::CrashLoop && self.applies(a)
    }

    /// Whether the target's heartbeat stays silent on such a node.
    pub fn silent(&self, a: &NodeAttributes) -> bool {
        self.kind == FaultKind::MissingHeartbeat && self.applies(a)
    }

    /// The start delay this fault imposes.
    pub fn slow_start(&self) -> Option<u64> {
        if let FaultKind::SlowStart(s) = self.kind { Some(s) } else { None }
    }
}

/// Parses `crashloop`, `crashloop:os-image=legacy`, `slow-start:120`, `missing-heartbeat`,
/// `missing-heartbeat:zone=zone-1`, `not-ready:0.02`.
pub fn parse_fault(s: &str) -> Result<Fault, String> {
    let (kind, arg) = s.split_once(':').map_or((s, None), |(k, a)| (k, Some(a)));
    let only = |arg: Option<&str>| -> Result<Option<(String, String)>, String> {
        match arg {
            None => Ok(None),
            Some(a) => {
                let (k, v) = a.split_once('=').ok_or_else(|| format!("{s:?}: expected ATTRIBUTE=VALUE after ':'"))?;
                if !["os-image", "kernel", "zone", "instance-type", "arch"].contains(&k) {
                    return Err(format!(
                        "{s:?}: unknown attribute {k:?} (os-image, kernel, zone, instance-type, arch)"
                    ));
                }
                Ok(Some((k.to_owned(), v.to_owned())))
            }
        }
    };
    match kind {
        "crashloop" => Ok(Fault { kind: FaultKind::CrashLoop, only: only(arg)? }),
        "missing-heartbeat" => Ok(Fault { kind: FaultKind::MissingHeartbeat, only: only(arg)? }),
        "slow-start" => {
            let secs = arg
                .ok_or_else(|| format!("{s:?}: slow-start needs seconds, e.g. slow-start:120"))?
                .parse()
                .map_err(|_| format!("{s:?}: seconds must be a number"))?;
            Ok(Fault { kind: FaultKind::SlowStart(secs), only: None })
        }
        "not-ready" => {
            let share: f64 = arg
                .ok_or_else(|| format!("{s:?}: not-ready needs a share, e.g. not-ready:0.02"))?
                .parse()
                .map_err(|_| format!("{s:?}: share must be a number"))?;
            if !(0.0..=1.0).contains(&share) {
                return Err(format!("{s:?}: share must be between 0 and 1"));
            }
            Ok(Fault { kind: FaultKind::NotReady { share }, only: None })
        }
        other => Err(format!("unknown fault {other:?} (crashloop, slow-start, missing-heartbeat, not-ready)")),
    }
}
