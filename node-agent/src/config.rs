//! The agent's config: the schema and host-independent checks live in
//! [`vigil_agent_config`] (shared with the operator); what turns it into running parts is here.

use std::path::Path;

pub use vigil_agent_config::*;

/// The alert pipeline's settings, when alerting is on (policies in force, see
/// [`Config::policy_paths`]).
pub fn alert_pipeline(
    config: &Config,
    node: &str,
    pod_default: Option<&Path>,
) -> Option<crate::alert::pipeline::PipelineConfig> {
    let a = &config.alerts;
    let policies = config.policy_paths(pod_default);
    (!policies.is_empty()).then(|| crate::alert::pipeline::PipelineConfig {
        policies,
        secrets_dir: a.secrets_dir.clone(),
        reload_interval: a.reload_interval,
        spool_dir: a.spool_dir(&config.events),
        limits: crate::alert::spool::Limits {
            max_bytes: a.spool_max_bytes,
            max_dead_bytes: a.dead_letter_max_bytes,
            fsync: a.fsync,
        },
        delivery: crate::alert::deliver::DeliveryConfig {
            timeout: a.timeout,
            backoff: crate::alert::send::Backoff { ladder: a.backoff.clone(), jitter: a.jitter },
            give_up_after: a.give_up_after,
            failing_after: a.failing_after,
        },
        node: node.to_owned(),
        interval: config.interval,
    })
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::time::Duration;

    use super::*;

    #[test]
    fn alerting_is_off_without_policies_and_its_spool_follows_the_state_dir() {
        let c = Config::parse("events:\n  stateDir: /var/lib/x\n", "a.yaml").unwrap();
        assert!(alert_pipeline(&c, "n", None).is_none());
        let c = Config::parse("events:\n  stateDir: /var/lib/x\nalerts:\n  policies: [/etc/vigil/policies]\n  backoff: [1s, 2m]\n  fsync: false\n", "a.yaml").unwrap();
        let p = alert_pipeline(&c, "node-a", None).unwrap();
        assert_eq!(p.spool_dir, PathBuf::from("/var/lib/x/spool"));
        assert_eq!(p.delivery.backoff.ladder, [Duration::from_secs(1), Duration::from_secs(120)]);
        assert!(!p.limits.fsync);
        assert_eq!((p.node.as_str(), p.secrets_dir.as_path()), ("node-a", Path::new("/etc/vigil/secrets")));
    }

    #[test]
    fn in_a_pod_unset_policies_are_the_published_ones_and_an_empty_list_is_off() {
        let mount = Path::new("/etc/vigil/policies");
        let unset = Config::parse("interval: 10s\n", "a.yaml").unwrap();
        assert_eq!(unset.policy_paths(Some(mount)), [mount]);
        assert_eq!(alert_pipeline(&unset, "n", Some(mount)).unwrap().policies, [mount]);
        assert!(alert_pipeline(&unset, "n", None).is_none(), "on a host: off");
        let off = Config::parse("alerts:\n  policies: []\n", "a.yaml").unwrap();
        assert!(alert_pipeline(&off, "n", Some(mount)).is_none(), "[] is off in a pod too");
        let own = Config::parse("alerts:\n  policies: [/srv/p.yaml]\n", "a.yaml").unwrap();
        assert_eq!(own.policy_paths(Some(mount)), [Path::new("/srv/p.yaml")]);
    }
}
