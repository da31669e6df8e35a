//! Loading alert policies: `AlertPolicy` manifests (or bare specs) from files or directories,
//! checked the way the API server checks them (schema and CEL rules, from `vigil-crds`) plus
//! what only the agent can check (regular expressions, event types, secrets it must read).
//! The operator publishes the policies of a node as files in a ConfigMap; a person running
//! the agent on a plain host writes them by hand. Secrets (`SecretKeySelector`) are read from
//! `<secretsDir>/<secret name>/<key>`, the layout of a Secret mounted as a volume.
//!
//! A load is all or nothing: any error refuses the whole set, and the caller keeps running
//! the last good one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::SecretKeySelector;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use vigil_crds::AlertPolicy;
use vigil_crds::policy::{AlertRoute, AlertRule, MatchOp, Matcher};

use super::email::EmailConfig;
use super::receivers::{Receiver, TELEGRAM_API};
use crate::events::EventType;

/// Why a set of policies was refused; names the file, the document and the field.
#[derive(Debug, thiserror::Error)]
#[error("{origin}: {message}")]
pub struct PolicyError {
    /// File and document (`/etc/vigil/policies/base.yaml, document 2`).
    pub origin: String,
    /// What is wrong and where.
    pub message: String,
}

/// A policy's duration as a std one (a negative one, which loading refuses, as zero).
pub fn std_duration(d: kube::core::Duration) -> std::time::Duration {
    if d.is_negative() { std::time::Duration::ZERO } else { d.into() }
}

/// A label matcher, compiled.
#[derive(Clone, Debug)]
pub struct LabelMatcher {
    /// Label name.
    pub label: String,
    op: MatchOp,
    value: String,
    re: Option<regex::Regex>,
}

impl LabelMatcher {
    /// Compiles `m` (regular expressions anchored at both ends, as in Alertmanager).
    pub fn new(m: &Matcher) -> Result<Self, regex::Error> {
        let re = match m.op {
            MatchOp::Re | MatchOp::NotRe => Some(regex::Regex::new(&format!("^(?:{})$", m.value))?),
            MatchOp::Eq | MatchOp::Ne => None,
        };
        Ok(Self { label: m.label.clone(), op: m.op, value: m.value.clone(), re })
    }

    /// Whether `labels` satisfy it (a missing label is the empty string).
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let v = labels.get(&self.label).map_or("", String::as_str);
        match (&self.op, &self.re) {
            (MatchOp::Eq, _) => v == self.value,
            (MatchOp::Ne, _) => v != self.value,
            (MatchOp::Re, Some(re)) => re.is_match(v),
            (MatchOp::NotRe, Some(re)) => !re.is_match(v),
            _ => false,
        }
    }
}

/// All of `matchers` match `labels`.
pub fn all_match(matchers: &[LabelMatcher], labels: &BTreeMap<String, String>) -> bool {
    matchers.iter().all(|m| m.matches(labels))
}

/// A route, compiled.
#[derive(Clone, Debug)]
pub struct Route {
    /// The route as written.
    pub spec: AlertRoute,
    /// Its matchers.
    pub matchers: Vec<LabelMatcher>,
}

/// A silence, compiled.
#[derive(Clone, Debug)]
pub struct Silence {
    /// Its matchers.
    pub matchers: Vec<LabelMatcher>,
    /// From.
    pub starts_at: Option<jiff::Timestamp>,
    /// Until.
    pub ends_at: jiff::Timestamp,
    /// Why.
    pub comment: String,
}

impl Silence {
    /// Whether it holds back an alert with `labels` at `now`.
    pub fn silences(&self, labels: &BTreeMap<String, String>, now: jiff::Timestamp) -> bool {
        self.starts_at.is_none_or(|s| s <= now) && now < self.ends_at && all_match(&self.matchers, labels)
    }
}

/// One policy, compiled.
#[derive(Clone, Debug)]
pub struct Policy {
    /// `namespace/name` of the AlertPolicy (or `file#document` of a bare spec).
    pub id: String,
    /// The rules that apply to this node.
    pub rules: Vec<AlertRule>,
    /// The routes.
    pub routes: Vec<Route>,
    /// The receivers by name, secrets read.
    pub receivers: BTreeMap<String, Receiver>,
    /// The fallback receiver's name.
    pub fallback: Option<String>,
    /// The silences.
    pub silences: Vec<Silence>,
}

impl Policy {
    /// The spool's name of one of its receivers: `<policy id>/<receiver>`.
    pub fn receiver_key(&self, name: &str) -> String {
        format!("{}/{name}", self.id)
    }
}

/// A loaded set of policies.
#[derive(Clone, Debug, Default)]
pub struct PolicySet {
    /// The policies, in file order.
    pub policies: Vec<Policy>,
    /// [`InputsHash`] of what the set was made of: the policy files, the secret files its
    /// receivers read, the secrets directory's names and the node labels.
    pub sha256: String,
    /// The secret files the receivers were read from.
    pub secret_files: Vec<PathBuf>,
}

/// SHA-256 over what a policy set is made of, in one order both when it is loaded and when a
/// reload asks whether anything changed ([`unchanged`]): every policy file (path and bytes),
/// every secret file read (path and bytes), the names in the secrets directory (a mirrored
/// key appearing changes which file a secret comes from), and the node labels.
struct InputsHash(Sha256);

impl InputsHash {
    fn new() -> Self {
        Self(Sha256::new())
    }

    fn file(&mut self, path: &Path, bytes: &[u8]) {
        self.0.update(path.as_os_str().as_encoded_bytes());
        self.0.update([0]);
        self.0.update((bytes.len() as u64).to_le_bytes());
        self.0.update(bytes);
    }

    fn rest(mut self, secrets_dir: Option<&Path>, node_labels: Option<&BTreeMap<String, String>>) -> String {
        let mut names: Vec<String> = secrets_dir
            .and_then(|d| std::fs::read_dir(d).ok())
            .into_iter()
            .flatten()
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        for n in names {
            self.0.update(n.as_bytes());
            self.0.update([1]);
        }
        for (k, v) in node_labels.into_iter().flatten() {
            self.0.update(k.as_bytes());
            self.0.update([2]);
            self.0.update(v.as_bytes());
            self.0.update([2]);
        }
        self.0.finalize().iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// Whether the inputs of `set` are byte for byte what they were when it was loaded: a reload
/// that finds nothing changed need not parse and validate again (which costs milliseconds of
/// schema and CEL work every reload interval).
pub fn unchanged(
    set: &PolicySet,
    paths: &[PathBuf],
    secrets_dir: &Path,
    node_labels: Option<&BTreeMap<String, String>>,
) -> bool {
    let Ok(files) = policy_files(paths) else { return false };
    let mut h = InputsHash::new();
    for f in files.iter().chain(&set.secret_files) {
        h.file(f, &std::fs::read(f).unwrap_or_default());
    }
    !set.sha256.is_empty() && h.rest(Some(secrets_dir), node_labels) == set.sha256
}

impl PolicySet {
    /// A receiver by its spool key (`<policy id>/<receiver>`).
    pub fn receiver(&self, key: &str) -> Option<&Receiver> {
        let (id, name) = key.rsplit_once('/')?;
        self.policies.iter().find(|p| p.id == id)?.receivers.get(name)
    }

    /// The fallback receiver's key for the policy that owns receiver `key`.
    pub fn fallback_for(&self, key: &str) -> Option<String> {
        let (id, _) = key.rsplit_once('/')?;
        let p = self.policies.iter().find(|p| p.id == id)?;
        p.fallback.as_ref().map(|f| p.receiver_key(f))
    }

    /// Rules in all policies.
    pub fn rule_count(&self) -> usize {
        self.policies.iter().map(|p| p.rules.len()).sum()
    }
}

/// The policy files under `paths` (a file, or every `.yaml`, `.yml` and `.json` file of a
/// directory, sorted, skipping names that start with a dot: a mounted ConfigMap's `..data`).
pub fn policy_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, PolicyError> {
    let mut out = Vec::new();
    for p in paths {
        let err = |e: std::io::Error| PolicyError { origin: p.display().to_string(), message: e.to_string() };
        if std::fs::metadata(p).map_err(err)?.is_dir() {
            let mut files: Vec<PathBuf> = std::fs::read_dir(p)
                .map_err(err)?
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|f| {
                    let name = f.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                    !name.starts_with('.')
                        && [".yaml", ".yml", ".json"].iter().any(|ext| name.ends_with(ext))
                        && f.is_file()
                })
                .collect();
            files.sort();
            out.extend(files);
        } else {
            out.push(p.clone());
        }
    }
    Ok(out)
}

/// Loads and compiles every policy under `paths`. `node_labels`, when known, decides which
/// `nodeSelector`s apply; unknown, every policy and rule applies.
pub fn load(
    paths: &[PathBuf],
    secrets_dir: &Path,
    node_labels: Option<&BTreeMap<String, String>>,
) -> Result<PolicySet, PolicyError> {
    load_with(paths, Some(secrets_dir), node_labels)
}

/// The rules of the policies under `paths`, checked as [`load`] checks them but without
/// their receivers (no secrets read): for trying policies on a host (`watch --policy`).
pub fn load_rules(paths: &[PathBuf]) -> Result<PolicySet, PolicyError> {
    load_with(paths, None, None)
}

fn load_with(
    paths: &[PathBuf],
    secrets_dir: Option<&Path>,
    node_labels: Option<&BTreeMap<String, String>>,
) -> Result<PolicySet, PolicyError> {
    let mut hash = InputsHash::new();
    let mut set = PolicySet::default();
    let mut secrets = Vec::new();
    for file in policy_files(paths)? {
        let origin = file.display().to_string();
        let text = std::fs::read_to_string(&file)
            .map_err(|e| PolicyError { origin: origin.clone(), message: e.to_string() })?;
        hash.file(&file, text.as_bytes());
        for policy in parse(&text, &origin)? {
            let (compiled, read) = compile(policy, secrets_dir, node_labels)?;
            secrets.extend(read);
            if let Some(c) = compiled {
                if set.policies.iter().any(|p| p.id == c.id) {
                    return Err(PolicyError { origin, message: format!("policy {} is defined twice", c.id) });
                }
                set.policies.push(c);
            }
        }
    }
    // The secrets after every policy file, as `unchanged` reads them.
    for (path, bytes) in &secrets {
        hash.file(path, bytes);
    }
    set.secret_files = secrets.into_iter().map(|(p, _)| p).collect();
    set.sha256 = hash.rest(secrets_dir, node_labels);
    Ok(set)
}

/// Parses the YAML documents of one file into validated AlertPolicies.
pub fn parse(text: &str, origin: &str) -> Result<Vec<AlertPolicy>, PolicyError> {
    let mut out = Vec::new();
    for (i, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let at = format!("{origin}, document {}", i + 1);
        let err = |message: String| PolicyError { origin: at.clone(), message };
        let v = Value::deserialize(doc).map_err(|e| err(e.to_string()))?;
        if v.is_null() {
            continue;
        }
        let manifest = if v.get("kind").is_some() {
            if v["kind"] != "AlertPolicy" {
                return Err(err(format!("{} is not an AlertPolicy", v["kind"])));
            }
            v
        } else {
            // A bare spec: named after the file and document.
            let stem = Path::new(origin).file_stem().map_or("policy".into(), |s| s.to_string_lossy().into_owned());
            serde_json::json!({
                "apiVersion": vigil_crds::API_VERSION,
                "kind": "AlertPolicy",
                "metadata": {"name": format!("{stem}-{}", i + 1)},
                "spec": v,
            })
        };
        vigil_crds::validate::validate_manifest(&manifest).map_err(|e| err(e.to_string()))?;
        let p: AlertPolicy = serde_json::from_value(manifest).map_err(|e| err(e.to_string()))?;
        out.push(p);
    }
    Ok(out)
}

fn selector_matches(sel: Option<&LabelSelector>, labels: Option<&BTreeMap<String, String>>) -> bool {
    let (Some(sel), Some(labels)) = (sel, labels) else { return true };
    vigil_crds::selector::matches(sel, labels)
}

/// A secret file read: its path and bytes.
type SecretFile = (PathBuf, Vec<u8>);

/// Reads a secret key (the file and its bytes): for a policy in a namespace first
/// `<dir>/<namespace>_<name>_<key>` (the operator's mirror of the policy's own namespace's
/// Secret, mounted flat), then `<dir>/<name>/<key>` (a Secret mounted as a volume, or files
/// written by hand). The name must be a Secret's name (a DNS subdomain) and the key a Secret
/// key (letters, digits, `-`, `_`, `.`), so a policy cannot make the agent read any other file.
fn read_secret(dir: &Path, namespace: Option<&str>, s: &SecretKeySelector) -> Result<SecretFile, String> {
    let name_ok = !s.name.is_empty()
        && s.name.len() <= 253
        && s.name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && !s.name.starts_with('.');
    let key_ok = !s.key.is_empty()
        && s.key.len() <= 253
        && s.key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        && s.key != "."
        && s.key != "..";
    if !name_ok || !key_ok {
        return Err(format!("secret {:?} key {:?}: not a Secret name and key", s.name, s.key));
    }
    let mirrored = namespace
        .map(|ns| dir.join(vigil_crds::policy::mirrored_secret_key(ns, &s.name, &s.key)))
        .filter(|p| p.is_file());
    let path = mirrored.unwrap_or_else(|| dir.join(&s.name).join(&s.key));
    let raw =
        std::fs::read(&path).map_err(|e| format!("secret {}/{}: reading {}: {e}", s.name, s.key, path.display()))?;
    Ok((path, raw))
}

fn compile(
    p: AlertPolicy,
    secrets_dir: Option<&Path>,
    node_labels: Option<&BTreeMap<String, String>>,
) -> Result<(Option<Policy>, Vec<SecretFile>), PolicyError> {
    let id = match &p.metadata.namespace {
        Some(ns) => format!("{ns}/{}", p.metadata.name.clone().unwrap_or_default()),
        None => p.metadata.name.clone().unwrap_or_default(),
    };
    let err = |message: String| PolicyError { origin: format!("AlertPolicy {id}"), message };
    let namespace = p.metadata.namespace.clone();
    // Before the node selector: a rule no agent can evaluate is refused on every node alike.
    if let Some((at, e)) = vigil_crds::policy::unknown_metrics(&p.spec).into_iter().next() {
        return Err(err(format!("{at}: {e}")));
    }
    if !selector_matches(p.spec.node_selector.as_ref(), node_labels) {
        return Ok((None, Vec::new()));
    }
    for (i, r) in p.spec.rules.iter().enumerate() {
        let at = format!("spec.rules[{i}] ({})", r.name);
        if let Some(e) = &r.event
            && !EventType::ALL.iter().any(|t| t.as_str() == e.type_)
        {
            return Err(err(format!("{at}: event.type {:?} is not an event type the agent emits", e.type_)));
        }
        let d = &r.detector;
        let metric_only = d.threshold.is_some()
            || d.z_score.is_some()
            || d.ewma.is_some()
            || d.mad.is_some()
            || d.trend.is_some()
            || d.leak.is_some()
            || d.rate_of_change.is_some();
        if r.event.is_some() && metric_only {
            return Err(err(format!("{at}: an event rule takes the eventRate detector only")));
        }
        if r.metric.is_some() && d.event_rate.is_some() {
            return Err(err(format!("{at}: eventRate judges events; a metric rule needs another detector")));
        }
        let positive = |what: &str, v: kube::core::Duration| {
            if v.is_negative() || std_duration(v).is_zero() {
                Err(err(format!("{at}: {what} must be longer than zero")))
            } else {
                Ok(())
            }
        };
        if r.for_.is_some_and(|f| f.is_negative()) {
            return Err(err(format!("{at}: for must not be negative")));
        }
        if let Some(t) = &d.trend {
            positive("detector.trend.window", t.window)?;
            positive("detector.trend.horizon", t.horizon)?;
        }
        if let Some(l) = &d.leak {
            positive("detector.leak.window", l.window)?;
        }
        if let Some(e) = &d.event_rate {
            positive("detector.eventRate.window", e.window)?;
        }
    }
    let matchers = |ms: &[Matcher], at: &str| -> Result<Vec<LabelMatcher>, PolicyError> {
        ms.iter()
            .enumerate()
            .map(|(j, m)| LabelMatcher::new(m).map_err(|e| err(format!("{at}.matchers[{j}]: {e}"))))
            .collect()
    };
    let routes = p
        .spec
        .routes
        .iter()
        .enumerate()
        .map(|(i, r)| Ok(Route { spec: r.clone(), matchers: matchers(&r.matchers, &format!("spec.routes[{i}]"))? }))
        .collect::<Result<Vec<_>, PolicyError>>()?;
    let silences = p
        .spec
        .silences
        .iter()
        .enumerate()
        .map(|(i, s)| {
            Ok(Silence {
                matchers: matchers(&s.matchers, &format!("spec.silences[{i}]"))?,
                starts_at: s.starts_at.as_ref().map(|t| t.0),
                ends_at: s.ends_at.0,
                comment: s.comment.clone(),
            })
        })
        .collect::<Result<Vec<_>, PolicyError>>()?;
    let mut secrets = Vec::new();
    let mut receivers = BTreeMap::new();
    for (i, r) in p.spec.receivers.iter().enumerate() {
        // Without a secrets directory (a dry run of the rules), receivers are not built.
        let Some(dir) = secrets_dir else { break };
        let at = format!("spec.receivers[{i}] ({})", r.name);
        let mut secret = |s: &SecretKeySelector| -> Result<String, PolicyError> {
            let (path, raw) = read_secret(dir, namespace.as_deref(), s).map_err(|e| err(format!("{at}: {e}")))?;
            let text = String::from_utf8(raw.clone())
                .map_err(|_| err(format!("{at}: secret {}/{}: not UTF-8 text", s.name, s.key)))?;
            secrets.push((path, raw));
            Ok(text.trim_end_matches(['\n', '\r']).to_owned())
        };
        let receiver = if let Some(s) = &r.slack {
            Receiver::Slack { webhook_url: secret(&s.webhook_url)?, channel: s.channel.clone() }
        } else if let Some(d) = &r.discord {
            Receiver::Discord { webhook_url: secret(&d.webhook_url)? }
        } else if let Some(t) = &r.telegram {
            Receiver::Telegram {
                api_url: t.api_url.clone().unwrap_or_else(|| TELEGRAM_API.into()),
                bot_token: secret(&t.bot_token)?,
                chat_id: t.chat_id.clone(),
            }
        } else if let Some(w) = &r.webhook {
            Receiver::Webhook {
                url: secret(&w.url)?,
                bearer_token: w.bearer_token.as_ref().map(&mut secret).transpose()?,
            }
        } else if let Some(a) = &r.alertmanager {
            Receiver::Alertmanager {
                urls: a.urls.clone(),
                bearer_token: a.bearer_token.as_ref().map(&mut secret).transpose()?,
            }
        } else if let Some(e) = &r.email {
            let c = EmailConfig {
                smarthost: e.smarthost.clone(),
                from: e.from.clone(),
                to: e.to.clone(),
                require_tls: e.require_tls,
                username: e.username.clone(),
                password: e.password.as_ref().map(&mut secret).transpose()?,
                ca_pem: e.ca_certificate.as_ref().map(&mut secret).transpose()?,
            };
            c.check().map_err(|e| err(format!("{at}: email: {e}")))?;
            Receiver::Email(c)
        } else {
            return Err(err(format!("{at}: no receiver kind set")));
        };
        if let Receiver::Webhook { url, .. }
        | Receiver::Slack { webhook_url: url, .. }
        | Receiver::Discord { webhook_url: url } = &receiver
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(err(format!("{at}: the URL in the secret is not an http:// or https:// URL")));
        }
        receivers.insert(r.name.clone(), receiver);
    }
    let rules =
        p.spec.rules.iter().filter(|r| selector_matches(r.node_selector.as_ref(), node_labels)).cloned().collect();
    let policy = Policy { id, rules, routes, receivers, fallback: p.spec.fallback_receiver.clone(), silences };
    Ok((Some(policy), secrets))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) {
        std::fs::create_dir_all(dir.join(name).parent().unwrap()).unwrap();
        std::fs::write(dir.join(name), text).unwrap();
    }

    const POLICY: &str = r#"
apiVersion: vigil.dev/v1alpha1
kind: AlertPolicy
metadata: {name: base, namespace: ops}
spec:
  rules:
    - name: HighCpu
      metric: {name: vigil_node_cpu_utilization_ratio}
      detector: {threshold: {above: 0.9}}
  routes:
    - name: all
      matchers: [{label: severity, op: "=~", value: "warn.*|critical"}]
      receivers: [hook]
  receivers:
    - name: hook
      webhook: {url: {name: alerting, key: url}}
"#;

    #[test]
    fn loads_manifests_and_reads_secrets_from_the_mounted_layout() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "policies/base.yaml", POLICY);
        write(dir.path(), "policies/..data/ignored.yaml", "not: [valid");
        write(dir.path(), "secrets/alerting/url", "http://127.0.0.1:9/hook\n");
        let set = load(&[dir.path().join("policies")], &dir.path().join("secrets"), None).unwrap();
        assert_eq!(set.policies.len(), 1);
        let p = &set.policies[0];
        assert_eq!(p.id, "ops/base");
        assert_eq!(
            set.receiver("ops/base/hook"),
            Some(&Receiver::Webhook { url: "http://127.0.0.1:9/hook".into(), bearer_token: None })
        );
        let labels = BTreeMap::from([("severity".to_owned(), "warning".to_owned())]);
        assert!(all_match(&p.routes[0].matchers, &labels));
        assert!(!all_match(&p.routes[0].matchers, &BTreeMap::from([("severity".to_owned(), "info".to_owned())])));
        let again = load(&[dir.path().join("policies")], &dir.path().join("secrets"), None).unwrap();
        assert_eq!(set.sha256, again.sha256);
        write(dir.path(), "secrets/alerting/url", "http://127.0.0.1:10/hook\n");
        let rotated = load(&[dir.path().join("policies")], &dir.path().join("secrets"), None).unwrap();
        assert_ne!(set.sha256, rotated.sha256, "a rotated secret is a change");
        // The operator's mirror of the policy's namespace wins over the by-name layout.
        write(dir.path(), "secrets/ops_alerting_url", "http://127.0.0.1:11/hook");
        let mirrored = load(&[dir.path().join("policies")], &dir.path().join("secrets"), None).unwrap();
        assert_eq!(
            mirrored.receiver("ops/base/hook"),
            Some(&Receiver::Webhook { url: "http://127.0.0.1:11/hook".into(), bearer_token: None })
        );
    }

    #[test]
    fn errors_name_the_file_the_document_and_the_field() {
        let dir = tempfile::tempdir().unwrap();
        let secrets = dir.path().join("secrets");
        let e = |text: &str| {
            write(dir.path(), "p.yaml", text);
            load(&[dir.path().join("p.yaml")], &secrets, None).unwrap_err().to_string()
        };
        let missing = e(POLICY);
        assert!(
            missing.contains("AlertPolicy ops/base: spec.receivers[0] (hook): secret alerting/url: reading"),
            "{missing}"
        );
        let bad_type =
            e("rules:\n  - name: X\n    event: {type: auth.nope}\n    detector: {eventRate: {count: 1, window: 1m}}\n");
        assert!(bad_type.contains("spec.rules[0] (X): event.type \"auth.nope\" is not an event type"), "{bad_type}");
        let cel = e("---\nrules: []\n---\nrules:\n  - name: X\n    metric: {name: m}\n    detector: {}\n");
        assert!(cel.contains("p.yaml, document 2"), "{cel}");
        assert!(cel.contains("set exactly one detector"), "{cel}");
        let re = e(
            "routes:\n  - {name: r, receivers: [x], matchers: [{label: a, op: '=~', value: '('}]}\nreceivers:\n  - {name: x, alertmanager: {urls: ['http://am:9093']}}\n",
        );
        assert!(re.contains("spec.routes[0].matchers[0]: regex parse error"), "{re}");
        let mixed =
            e("rules:\n  - name: X\n    event: {type: kernel.oom_kill}\n    detector: {threshold: {above: 1}}\n");
        assert!(mixed.contains("an event rule takes the eventRate detector only"), "{mixed}");
        let escape = e("receivers:\n  - {name: x, webhook: {url: {name: '..', key: etc/shadow}}}\n");
        assert!(escape.contains("secret \"..\" key \"etc/shadow\": not a Secret name and key"), "{escape}");
        let kind = e("kind: ConfigMap\n");
        assert!(kind.contains("\"ConfigMap\" is not an AlertPolicy"), "{kind}");
    }

    #[test]
    fn a_reload_knows_when_nothing_changed() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "policies/base.yaml", POLICY);
        write(dir.path(), "secrets/alerting/url", "http://127.0.0.1:9/hook\n");
        let (paths, secrets) = ([dir.path().join("policies")], dir.path().join("secrets"));
        let set = load(&paths, &secrets, None).unwrap();
        assert_eq!(set.secret_files, [secrets.join("alerting/url")]);
        assert!(unchanged(&set, &paths, &secrets, None));
        let labels = BTreeMap::from([("pool".to_owned(), "gpu".to_owned())]);
        assert!(!unchanged(&set, &paths, &secrets, Some(&labels)), "new node labels");
        write(dir.path(), "secrets/alerting/url", "http://127.0.0.1:10/hook\n");
        assert!(!unchanged(&set, &paths, &secrets, None), "a rotated secret");
        let set = load(&paths, &secrets, None).unwrap();
        write(dir.path(), "secrets/ops_alerting_url", "http://127.0.0.1:11/hook");
        assert!(!unchanged(&set, &paths, &secrets, None), "a mirrored key appeared");
        let set = load(&paths, &secrets, None).unwrap();
        write(dir.path(), "policies/more.yaml", "rules: []\n");
        assert!(!unchanged(&set, &paths, &secrets, None), "a new policy file");
        let set = load(&paths, &secrets, None).unwrap();
        write(dir.path(), "policies/base.yaml", &POLICY.replace("0.9", "0.8"));
        assert!(!unchanged(&set, &paths, &secrets, None), "an edited policy");
        assert!(!unchanged(&PolicySet::default(), &paths, &secrets, None), "nothing loaded yet");
    }

    #[test]
    fn rules_load_without_their_receivers_secrets() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "p.yaml", POLICY);
        let set = load_rules(&[dir.path().join("p.yaml")]).unwrap();
        assert_eq!(set.rule_count(), 1);
        assert!(set.policies[0].receivers.is_empty());
        assert!(load(&[dir.path().join("p.yaml")], &dir.path().join("none"), None).is_err(), "load reads them");
    }

    #[test]
    fn a_rule_on_a_metric_the_agent_does_not_export_is_refused_on_every_node() {
        let text = "nodeSelector: {matchLabels: {pool: gpu}}\nrules:\n  - name: Disk\n    metric: {name: vigil_node_filesystem_utilization_ratios, labels: {mountpoint: /}}\n    detector: {threshold: {above: 0.9}}\n";
        let p = parse(text, "x.yaml").unwrap().remove(0);
        let cpu = BTreeMap::from([("pool".to_owned(), "cpu".to_owned())]);
        let e = compile(p, Some(Path::new("/nonexistent")), Some(&cpu)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "AlertPolicy x-1: spec.rules[0] (Disk).metric: metric \"vigil_node_filesystem_utilization_ratios\" is not a series the agent exports; did you mean vigil_node_filesystem_utilization_ratio?"
        );
    }

    #[test]
    fn a_level_detector_on_a_counter_is_refused_with_what_to_use() {
        let text = "rules:\n  - name: Forks\n    metric: {name: vigil_node_forks_total}\n    detector: {anomaly: {}}\n  - name: ForkRate\n    metric: {name: vigil_node_forks_total}\n    detector: {rateOfChange: {perSecond: 50}}\n";
        let p = parse(text, "x.yaml").unwrap().remove(0);
        let e = compile(p, Some(Path::new("/nonexistent")), None).unwrap_err();
        assert_eq!(
            e.to_string(),
            "AlertPolicy x-1: spec.rules[0] (Forks).detector: metric vigil_node_forks_total is a counter (it only grows): the anomaly detector would judge its total, which is never anomalous; use rateOfChange (its change per second) or a gauge"
        );
        let gauge = "rules:\n  - name: Load\n    metric: {name: vigil_node_load1}\n    detector: {anomaly: {}}\n";
        assert!(compile(parse(gauge, "y.yaml").unwrap().remove(0), Some(Path::new("/nonexistent")), None).is_ok());
    }

    #[test]
    fn node_selectors_pick_policies_and_rules() {
        let text = "nodeSelector: {matchLabels: {pool: gpu}}\nrules:\n  - name: X\n    metric: {name: vigil_node_load1}\n    detector: {threshold: {above: 1}}\n";
        let p = parse(text, "x.yaml").unwrap().remove(0);
        let gpu = BTreeMap::from([("pool".to_owned(), "gpu".to_owned())]);
        let cpu = BTreeMap::from([("pool".to_owned(), "cpu".to_owned())]);
        let none = Some(Path::new("/nonexistent"));
        assert!(compile(p.clone(), none, Some(&gpu)).unwrap().0.is_some());
        assert!(compile(p.clone(), none, Some(&cpu)).unwrap().0.is_none());
        assert!(compile(p, none, None).unwrap().0.is_some(), "labels unknown: applies");
    }
}
