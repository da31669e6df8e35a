//! `agents`: the AgentStatus inventory with filters. Pure.

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;
use serde::Serialize;
use vigil_crds::{AgentHealth, AgentStatus};

/// Which agents to list.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Filter {
    /// Running this revision (or agent version).
    pub revision: Option<String>,
    /// Reporting this health.
    pub health: Option<AgentHealth>,
    /// Last report older than this, or none.
    pub stale: Option<Duration>,
}

/// Reads a health word, whatever its case.
pub fn parse_health(s: &str) -> Result<AgentHealth, String> {
    match s.to_ascii_lowercase().as_str() {
        "healthy" => Ok(AgentHealth::Healthy),
        "degraded" => Ok(AgentHealth::Degraded),
        "unhealthy" => Ok(AgentHealth::Unhealthy),
        "unknown" => Ok(AgentHealth::Unknown),
        _ => Err(format!("--health {s:?}: write Healthy, Degraded, Unhealthy or Unknown")),
    }
}

/// One agent.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentRow {
    /// The node.
    pub node: String,
    /// Agent version.
    pub version: Option<String>,
    /// Revision it runs.
    pub revision: Option<String>,
    /// Its verdict on itself.
    pub health: AgentHealth,
    /// Why not Healthy.
    pub health_reason: Option<String>,
    /// Event sources, in one line.
    pub sources: Option<String>,
    /// Alerts firing on the node.
    pub active_alerts: u32,
    /// Dropped events and samples since start.
    pub dropped: u64,
    /// Dead-lettered deliveries.
    pub dead_lettered: u64,
    /// When it last reported.
    pub last_report: Option<Timestamp>,
    /// The operator's AgentReporting condition: True while the heartbeat is renewed.
    pub reporting: Option<String>,
}

/// The agents `filter` keeps, by node name.
pub fn rows(statuses: &[AgentStatus], filter: &Filter, now: Timestamp) -> Vec<AgentRow> {
    let mut out: Vec<AgentRow> = statuses
        .iter()
        .map(|s| {
            let st = s.status.clone().unwrap_or_default();
            AgentRow {
                node: s.metadata.name.clone().unwrap_or_else(|| s.spec.node_name.clone()),
                version: st.agent_version,
                revision: st.revision,
                health: st.health,
                health_reason: st.health_reason,
                sources: st.sources_summary,
                active_alerts: st.active_alerts,
                dropped: st.dropped_total,
                dead_lettered: st.dead_lettered,
                last_report: st.last_report_time.map(|t| t.0),
                reporting: st
                    .conditions
                    .iter()
                    .find(|c| c.type_ == vigil_crds::agentstatus::REPORTING_CONDITION)
                    .map(|c| c.status.clone()),
            }
        })
        .filter(|r| {
            filter
                .revision
                .as_ref()
                .is_none_or(|want| r.revision.as_ref() == Some(want) || r.version.as_ref() == Some(want))
        })
        .filter(|r| filter.health.is_none_or(|h| r.health == h))
        .filter(|r| {
            filter.stale.is_none_or(|d| {
                r.last_report
                    .is_none_or(|t| now.duration_since(t) > jiff::SignedDuration::try_from(d).unwrap_or_default())
            })
        })
        .collect();
    out.sort_by(|a, b| a.node.cmp(&b.node));
    out
}

/// `12 agents: 10 Healthy, 2 Degraded; r-aaaa 8, r-bbbb 4`.
pub fn summary(rows: &[AgentRow]) -> String {
    let mut health: BTreeMap<String, usize> = BTreeMap::new();
    let mut revs: BTreeMap<&str, usize> = BTreeMap::new();
    for r in rows {
        *health.entry(format!("{:?}", r.health)).or_default() += 1;
        *revs.entry(r.revision.as_deref().unwrap_or("no revision")).or_default() += 1;
    }
    let join = |m: Vec<String>| m.join(", ");
    format!(
        "{} agent(s): {}; {}",
        rows.len(),
        join(health.iter().map(|(h, n)| format!("{n} {h}")).collect()),
        join(revs.iter().map(|(r, n)| format!("{r} {n}")).collect())
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(node: &str, rev: &str, health: &str, reported: Option<&str>) -> AgentStatus {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "vigil.dev/v1alpha1", "kind": "AgentStatus",
            "metadata": {"name": node}, "spec": {"nodeName": node},
            "status": {"revision": rev, "agentVersion": "1.2.0", "health": health, "lastReportTime": reported}
        }))
        .unwrap()
    }

    #[test]
    fn filters_by_revision_or_version_health_and_staleness() {
        let now: Timestamp = "2026-12-03T12:00:00Z".parse().unwrap();
        let all = vec![
            status("c", "r-bbbb", "Degraded", Some("2026-12-03T11:59:30Z")),
            status("a", "r-aaaa", "Healthy", Some("2026-12-03T11:59:50Z")),
            status("b", "r-aaaa", "Healthy", Some("2026-12-03T11:50:00Z")),
            status("d", "r-aaaa", "Unknown", None),
        ];
        let names = |f: Filter| rows(&all, &f, now).into_iter().map(|r| r.node).collect::<Vec<_>>();
        assert_eq!(names(Filter::default()), ["a", "b", "c", "d"]);
        assert_eq!(names(Filter { revision: Some("r-aaaa".into()), ..Default::default() }), ["a", "b", "d"]);
        assert_eq!(names(Filter { revision: Some("1.2.0".into()), ..Default::default() }).len(), 4);
        assert_eq!(names(Filter { health: Some(AgentHealth::Healthy), ..Default::default() }), ["a", "b"]);
        assert_eq!(
            names(Filter { stale: Some(Duration::from_secs(120)), ..Default::default() }),
            ["b", "d"],
            "ten minutes old, and never"
        );
        assert_eq!(
            summary(&rows(&all, &Filter::default(), now)),
            "4 agent(s): 1 Degraded, 2 Healthy, 1 Unknown; r-aaaa 3, r-bbbb 1"
        );
        assert_eq!(parse_health("degraded"), Ok(AgentHealth::Degraded));
        assert!(parse_health("sick").unwrap_err().contains("Healthy, Degraded"));
    }
}
