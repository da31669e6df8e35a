//! Each receiver's documented payload, built from alerts. Pure: alerts in, HTTP requests
//! (URL and JSON body) out, split where the service limits a message.
//!
//! - Prometheus Alertmanager, API v2: `POST /api/v2/alerts` with a list of postable alerts
//!   (`labels`, `annotations`, `startsAt`, `endsAt` set when resolved).
//! - Slack incoming webhook: `text` (the notification fallback) and Block Kit `blocks`
//!   (a `section` with mrkdwn text of at most 3,000 characters, a `context` line).
//! - Discord webhook: `embeds` (at most 10 per message; title ≤ 256, description ≤ 4,096,
//!   ≤ 25 fields of name ≤ 256 and value ≤ 1,024 characters), colour by severity.
//! - Telegram Bot API: `sendMessage` with `chat_id`, `text` (≤ 4,096 characters) and
//!   `parse_mode: HTML`, the text HTML-escaped.
//! - Generic webhook: `{version, status, alerts}` with the alerts as Vigil writes them.

use serde_json::{Value, json};

use super::Alert;

/// Where alerts go: a policy's receiver with its secrets read (from the files the
/// `SecretKeySelector`s point at).
#[derive(Clone, PartialEq, Eq)]
pub enum Receiver {
    /// Prometheus Alertmanager replicas (base URLs, `http://alertmanager:9093`); every alert
    /// goes to each.
    Alertmanager {
        /// Base URLs.
        urls: Vec<String>,
        /// Sent as `Authorization: Bearer …`.
        bearer_token: Option<String>,
    },
    /// A Slack incoming webhook.
    Slack {
        /// The webhook URL.
        webhook_url: String,
        /// Channel override.
        channel: Option<String>,
    },
    /// A Discord webhook.
    Discord {
        /// The webhook URL.
        webhook_url: String,
    },
    /// A Telegram bot.
    Telegram {
        /// Bot API base (`https://api.telegram.org`).
        api_url: String,
        /// The bot token.
        bot_token: String,
        /// The chat.
        chat_id: String,
    },
    /// Any HTTP endpoint taking JSON.
    Webhook {
        /// The URL.
        url: String,
        /// Sent as `Authorization: Bearer …`.
        bearer_token: Option<String>,
    },
    /// E-mail over SMTP.
    Email(super::email::EmailConfig),
}

impl std::fmt::Debug for Receiver {
    /// The kind only: URLs and tokens are secrets.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Receiver({})", self.kind())
    }
}

/// The Telegram Bot API's public base URL.
pub const TELEGRAM_API: &str = "https://api.telegram.org";

/// One HTTP request to make.
#[derive(Clone, Debug, PartialEq)]
pub struct Request {
    /// Where to POST.
    pub url: String,
    /// The JSON body.
    pub body: Value,
    /// Sent as `Authorization: Bearer …`.
    pub bearer: Option<String>,
}

impl Request {
    fn new(url: String, body: Value) -> Self {
        Self { url, body, bearer: None }
    }
}

/// Cuts `s` to at most `max` characters, marking the cut.
pub fn clip(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_owned();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

pub(crate) fn status(a: &Alert) -> &'static str {
    if a.resolved() { "RESOLVED" } else { "FIRING" }
}

pub(crate) fn headline(a: &Alert) -> String {
    let node = a.labels.get("node").map_or("?", String::as_str);
    format!("[{}] {} on {node} ({})", status(a), a.name(), a.severity())
}

pub(crate) fn time(t: jiff::Timestamp) -> String {
    t.round(jiff::Unit::Millisecond).unwrap_or(t).to_string()
}

impl Receiver {
    /// The requests that deliver `alerts` (one or more, per the service's limits).
    pub fn requests(&self, alerts: &[Alert]) -> Vec<Request> {
        match self {
            Self::Alertmanager { urls, bearer_token } => {
                let body = Value::Array(alerts.iter().map(alertmanager_alert).collect());
                urls.iter()
                    .map(|url| Request {
                        bearer: bearer_token.clone(),
                        ..Request::new(format!("{}/api/v2/alerts", url.trim_end_matches('/')), body.clone())
                    })
                    .collect()
            }
            Self::Slack { webhook_url, channel } => alerts
                .iter()
                .map(|a| {
                    let mut body = slack(a);
                    if let Some(c) = channel {
                        body["channel"] = Value::from(c.as_str());
                    }
                    Request::new(webhook_url.clone(), body)
                })
                .collect(),
            Self::Discord { webhook_url } => alerts
                .chunks(10)
                .map(|chunk| {
                    Request::new(
                        webhook_url.clone(),
                        json!({"embeds": chunk.iter().map(discord_embed).collect::<Vec<_>>()}),
                    )
                })
                .collect(),
            Self::Telegram { api_url, bot_token, chat_id } => alerts
                .iter()
                .map(|a| {
                    Request::new(
                        format!("{}/bot{bot_token}/sendMessage", api_url.trim_end_matches('/')),
                        json!({
                            "chat_id": chat_id,
                            "text": clip(&telegram_text(a), 4096),
                            "parse_mode": "HTML",
                            "disable_web_page_preview": true,
                        }),
                    )
                })
                .collect(),
            Self::Webhook { url, bearer_token } => {
                let status = if alerts.iter().all(Alert::resolved) { "resolved" } else { "firing" };
                vec![Request {
                    bearer: bearer_token.clone(),
                    ..Request::new(
                        url.clone(),
                        json!({"version": "1", "status": status, "alerts": alerts.iter().map(|a| {
                            let mut v = serde_json::to_value(a).unwrap_or(Value::Null);
                            v["fingerprint"] = Value::from(a.fingerprint());
                            v["status"] = Value::from(if a.resolved() { "resolved" } else { "firing" });
                            v
                        }).collect::<Vec<_>>()}),
                    )
                }]
            }
            // Not HTTP: `super::email` builds the message.
            Self::Email(_) => Vec::new(),
        }
    }

    /// The requests that deliver a notification: its alerts, with its note (the "N
    /// suppressed" digest, a fallback's reason) where the service shows text: Slack a first
    /// context block, Discord the message `content`, Telegram the first line, the webhook a
    /// `note` field and Alertmanager a `vigil_note` annotation.
    pub fn requests_for(&self, n: &super::route::Notification) -> Vec<Request> {
        let mut reqs = self.requests_with_note(n);
        // An Alertmanager lets a firing alert without `endsAt` lapse after its resolve
        // timeout; the notification says how long its alerts stand without a re-send.
        if let (Self::Alertmanager { .. }, Some(until)) = (self, n.active_until) {
            for r in &mut reqs {
                for a in r.body.as_array_mut().into_iter().flatten() {
                    if a.get("endsAt").is_none() {
                        a["endsAt"] = Value::from(time(until));
                    }
                }
            }
        }
        reqs
    }

    fn requests_with_note(&self, n: &super::route::Notification) -> Vec<Request> {
        let Some(note) = n.preamble() else { return self.requests(&n.alerts) };
        if let Self::Alertmanager { .. } = self {
            let mut alerts = n.alerts.clone();
            for a in &mut alerts {
                a.annotations.insert("vigil_note".into(), note.clone());
            }
            return self.requests(&alerts);
        }
        let mut reqs = self.requests(&n.alerts);
        for r in &mut reqs {
            match self {
                Self::Slack { .. } => {
                    if let Some(blocks) = r.body["blocks"].as_array_mut() {
                        blocks.insert(
                            0,
                            json!({"type": "context", "elements": [{"type": "mrkdwn", "text": clip(&note, 3000)}]}),
                        );
                    }
                }
                Self::Discord { .. } => r.body["content"] = Value::from(clip(&note, 2000)),
                Self::Telegram { .. } => {
                    let text = r.body["text"].as_str().unwrap_or_default();
                    r.body["text"] = Value::from(clip(&format!("<i>{}</i>\n{text}", html_escape(&note)), 4096));
                }
                Self::Webhook { .. } => {
                    r.body["note"] = Value::from(note.as_str());
                    r.body["suppressed"] = Value::from(n.suppressed);
                }
                Self::Alertmanager { .. } | Self::Email(_) => {}
            }
        }
        reqs
    }

    /// The receiver's kind, for metrics and logs (never the URL: it may hold a secret).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Alertmanager { .. } => "alertmanager",
            Self::Slack { .. } => "slack",
            Self::Discord { .. } => "discord",
            Self::Telegram { .. } => "telegram",
            Self::Webhook { .. } => "webhook",
            Self::Email(_) => "email",
        }
    }
}

fn alertmanager_alert(a: &Alert) -> Value {
    let mut v = json!({"labels": a.labels, "annotations": a.annotations, "startsAt": time(a.starts_at)});
    if let Some(end) = a.ends_at {
        v["endsAt"] = Value::from(time(end));
    }
    v
}

fn slack(a: &Alert) -> Value {
    let icon = match (a.resolved(), a.severity()) {
        (true, _) => ":white_check_mark:",
        (false, "critical") => ":rotating_light:",
        (false, "warning") => ":warning:",
        _ => ":information_source:",
    };
    let mut text = format!("{icon} *{}*\n{}", headline(a), a.summary());
    for (k, v) in &a.labels {
        if !matches!(k.as_str(), "alertname" | "node" | "severity") {
            text.push_str(&format!("\n• {k}: `{v}`"));
        }
    }
    let since = match a.ends_at {
        Some(end) => format!("resolved {}", time(end)),
        None => format!("since {}", time(a.starts_at)),
    };
    json!({
        "text": clip(&headline(a), 3000),
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": clip(&text, 3000)}},
            {"type": "context", "elements": [{"type": "mrkdwn", "text": clip(&format!("{since} · fingerprint {}", a.fingerprint()), 3000)}]},
        ],
    })
}

fn discord_embed(a: &Alert) -> Value {
    let color = match (a.resolved(), a.severity()) {
        (true, _) => 0x2E_CC71,
        (false, "critical") => 0xE7_4C3C,
        (false, "warning") => 0xF1_C40F,
        _ => 0x34_98DB,
    };
    let fields: Vec<Value> = a
        .labels
        .iter()
        .filter(|(k, _)| k.as_str() != "alertname")
        .take(25)
        .map(|(k, v)| json!({"name": clip(k, 256), "value": clip(v, 1024), "inline": true}))
        .collect();
    json!({
        "title": clip(&headline(a), 256),
        "description": clip(a.summary(), 4096),
        "color": color,
        "timestamp": time(a.ends_at.unwrap_or(a.starts_at)),
        "fields": fields,
        "footer": {"text": format!("fingerprint {}", a.fingerprint())},
    })
}

/// HTML-escapes for Telegram's HTML parse mode.
pub fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

fn telegram_text(a: &Alert) -> String {
    let mut text = format!("<b>{}</b>\n{}", html_escape(&headline(a)), html_escape(a.summary()));
    for (k, v) in &a.labels {
        if !matches!(k.as_str(), "alertname" | "node" | "severity") {
            text.push_str(&format!("\n{}: <code>{}</code>", html_escape(k), html_escape(v)));
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::Severity;

    fn alert(resolved: bool) -> Alert {
        let t: jiff::Timestamp = "2026-11-22T10:00:00Z".parse().unwrap();
        let mut a = Alert::new("DiskFull", "node-a", Severity::Critical, t).label("mountpoint", "/var");
        a.annotations.insert("summary".into(), "disk /var full in 3h <soon> & more".into());
        if resolved {
            a.ends_at = Some(t + jiff::SignedDuration::from_mins(30));
        }
        a
    }

    #[test]
    fn alertmanager_v2_postable_alerts() {
        let r = Receiver::Alertmanager { urls: vec!["http://am:9093/".into()], bearer_token: None }
            .requests(&[alert(false), alert(true)]);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].url, "http://am:9093/api/v2/alerts");
        let body = r[0].body.as_array().unwrap();
        assert_eq!(body[0]["labels"]["alertname"], "DiskFull");
        assert_eq!(body[0]["startsAt"], "2026-11-22T10:00:00Z");
        assert!(body[0].get("endsAt").is_none(), "firing: Alertmanager sets endsAt itself");
        assert_eq!(body[1]["endsAt"], "2026-11-22T10:30:00Z");
    }

    #[test]
    fn slack_discord_telegram_and_webhook_shapes() {
        let s = &Receiver::Slack { webhook_url: "http://hooks/x".into(), channel: Some("#ops".into()) }
            .requests(&[alert(false)])[0]
            .body;
        assert_eq!(s["text"], "[FIRING] DiskFull on node-a (critical)");
        assert_eq!(s["channel"], "#ops");
        assert_eq!(s["blocks"][0]["type"], "section");
        assert_eq!(s["blocks"][0]["text"]["type"], "mrkdwn");
        assert!(s["blocks"][0]["text"]["text"].as_str().unwrap().contains("• mountpoint: `/var`"));
        assert_eq!(s["blocks"][1]["type"], "context");

        let many: Vec<Alert> = (0..23).map(|i| alert(false).label("i", &i.to_string())).collect();
        let d = Receiver::Discord { webhook_url: "http://discord/x".into() }.requests(&many);
        assert_eq!(d.iter().map(|r| r.body["embeds"].as_array().unwrap().len()).collect::<Vec<_>>(), [10, 10, 3]);
        let e = &d[0].body["embeds"][0];
        assert_eq!(e["color"], 0xE7_4C3C);
        assert_eq!(e["timestamp"], "2026-11-22T10:00:00Z");
        assert!(e["fields"].as_array().unwrap().iter().any(|f| f["name"] == "mountpoint" && f["value"] == "/var"));

        let t =
            &Receiver::Telegram { api_url: "http://tg".into(), bot_token: "123:abc".into(), chat_id: "-100".into() }
                .requests(&[alert(true)])[0];
        assert_eq!(t.url, "http://tg/bot123:abc/sendMessage");
        assert_eq!(t.body["parse_mode"], "HTML");
        assert_eq!(t.body["chat_id"], "-100");
        let text = t.body["text"].as_str().unwrap();
        assert!(text.starts_with("<b>[RESOLVED] DiskFull on node-a (critical)</b>"), "{text}");
        assert!(text.contains("&lt;soon&gt; &amp; more"), "escaped: {text}");

        let w = &Receiver::Webhook { url: "http://hook".into(), bearer_token: Some("tok".into()) }
            .requests(&[alert(true)])[0];
        assert_eq!(w.bearer.as_deref(), Some("tok"));
        let w = &w.body;
        assert_eq!((w["version"].as_str(), w["status"].as_str()), (Some("1"), Some("resolved")));
        assert_eq!(w["alerts"][0]["fingerprint"], alert(true).fingerprint());
    }

    #[test]
    fn firing_alerts_stand_at_an_alertmanager_until_the_next_repeat_is_due() {
        let until: jiff::Timestamp = "2026-01-01T04:10:00Z".parse().unwrap();
        let n = crate::alert::route::Notification {
            receiver: "ns/p/am".into(),
            route: "all".into(),
            group: std::collections::BTreeMap::new(),
            alerts: vec![alert(false), alert(true)],
            suppressed: 0,
            created: jiff::Timestamp::UNIX_EPOCH,
            note: None,
            active_until: Some(until),
        };
        let am = Receiver::Alertmanager { urls: vec!["http://am:9093".into()], bearer_token: None };
        let body = &am.requests_for(&n)[0].body;
        assert_eq!(body[0]["endsAt"], time(until), "firing: stands until then unless sent again");
        assert_eq!(body[1]["endsAt"], time(alert(true).ends_at.unwrap()), "resolved: its own end");
        let slack = Receiver::Slack { webhook_url: "u".into(), channel: None }.requests_for(&n);
        assert!(!slack[0].body.to_string().contains("endsAt"));
    }

    #[test]
    fn a_notification_note_shows_where_each_service_shows_text() {
        let n = crate::alert::route::Notification {
            receiver: "ns/p/r".into(),
            route: "all".into(),
            group: std::collections::BTreeMap::new(),
            alerts: vec![alert(false)],
            suppressed: 2,
            created: jiff::Timestamp::UNIX_EPOCH,
            note: None,
            active_until: None,
        };
        let digest = "2 earlier notifications of this group suppressed by the rate limit; this one carries the group's current state";
        let slack = &Receiver::Slack { webhook_url: "u".into(), channel: None }.requests_for(&n)[0].body;
        assert_eq!(slack["blocks"][0]["type"], "context");
        assert_eq!(slack["blocks"][0]["elements"][0]["text"], digest);
        assert_eq!(slack["blocks"][1]["type"], "section");
        let discord = &Receiver::Discord { webhook_url: "u".into() }.requests_for(&n)[0].body;
        assert_eq!(discord["content"], digest);
        let tg = &Receiver::Telegram { api_url: "u".into(), bot_token: "t".into(), chat_id: "c".into() }
            .requests_for(&n)[0]
            .body;
        assert!(tg["text"].as_str().unwrap().starts_with(&format!("<i>{}</i>\n<b>[FIRING]", html_escape(digest))));
        let hook = &Receiver::Webhook { url: "u".into(), bearer_token: None }.requests_for(&n)[0].body;
        assert_eq!((hook["note"].as_str(), hook["suppressed"].as_u64()), (Some(digest), Some(2)));
        let am = &Receiver::Alertmanager { urls: vec!["http://a".into(), "http://b".into()], bearer_token: None }
            .requests_for(&n);
        assert_eq!(am.len(), 2, "one request per replica");
        assert_eq!(am[1].body[0]["annotations"]["vigil_note"], digest);
        let quiet = crate::alert::route::Notification { suppressed: 0, ..n };
        assert_eq!(
            Receiver::Discord { webhook_url: "u".into() }.requests_for(&quiet),
            Receiver::Discord { webhook_url: "u".into() }.requests(&quiet.alerts),
            "no note, no change"
        );
    }

    #[test]
    fn long_text_is_clipped_to_the_service_limits() {
        let mut a = alert(false);
        a.annotations.insert("summary".into(), "x".repeat(10_000));
        let d = &Receiver::Discord { webhook_url: "u".into() }.requests(&[a.clone()])[0].body;
        assert_eq!(d["embeds"][0]["description"].as_str().unwrap().chars().count(), 4096);
        let t = &Receiver::Telegram { api_url: "u".into(), bot_token: "t".into(), chat_id: "c".into() }
            .requests(&[a.clone()])[0]
            .body;
        assert_eq!(t["text"].as_str().unwrap().chars().count(), 4096);
        let s = &Receiver::Slack { webhook_url: "u".into(), channel: None }.requests(&[a])[0].body;
        assert_eq!(s["blocks"][0]["text"]["text"].as_str().unwrap().chars().count(), 3000);
    }
}
