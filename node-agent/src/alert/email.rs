//! E-mail over SMTP (lettre): STARTTLS required unless the policy says otherwise, optional
//! login, a private CA when given. One message per notification: the subject names the group
//! and its state, the plain-text body lists every alert with its labels, annotations and
//! fingerprint.

use std::time::Duration;

use lettre::message::{Mailbox, header::ContentType};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{Message, SmtpTransport, Transport};

use super::Alert;
use super::receivers::{headline, time};
use super::send::Outcome;

/// An SMTP receiver, secrets read.
#[derive(Clone, PartialEq, Eq)]
pub struct EmailConfig {
    /// `host:port`.
    pub smarthost: String,
    /// Sender.
    pub from: String,
    /// Recipients.
    pub to: Vec<String>,
    /// Refuse to send without STARTTLS.
    pub require_tls: bool,
    /// Login.
    pub username: Option<String>,
    /// Password.
    pub password: Option<String>,
    /// PEM certificates to trust.
    pub ca_pem: Option<String>,
}

/// The subject and plain-text body of a notification of `alerts`.
pub fn message_text(alerts: &[Alert], note: Option<&str>) -> (String, String) {
    let firing = alerts.iter().filter(|a| !a.resolved()).count();
    let resolved = alerts.len() - firing;
    let first = alerts.first().map(headline).unwrap_or_else(|| "no alerts".into());
    let subject = match (alerts.len(), firing, resolved) {
        (1, _, _) => first,
        (n, f, r) => format!("[{f} firing, {r} resolved] {n} alerts, first: {first}"),
    };
    let mut body = String::new();
    if let Some(n) = note {
        body.push_str(n);
        body.push_str("\n\n");
    }
    for a in alerts {
        body.push_str(&format!("{}\n{}\n", headline(a), a.summary()));
        for (k, v) in &a.labels {
            body.push_str(&format!("  {k}: {v}\n"));
        }
        for (k, v) in &a.annotations {
            if k != "summary" {
                body.push_str(&format!("  {k}: {v}\n"));
            }
        }
        match a.ends_at {
            Some(end) => body.push_str(&format!("  started {}, resolved {}\n", time(a.starts_at), time(end))),
            None => body.push_str(&format!("  since {}\n", time(a.starts_at))),
        }
        body.push_str(&format!("  fingerprint {}\n\n", a.fingerprint()));
    }
    (super::receivers::clip(&subject, 200), body)
}

/// Why an e-mail receiver cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum EmailError {
    /// An address does not parse.
    #[error("{what} {value:?} is not an e-mail address: {source}")]
    Address {
        /// `from` or `to`.
        what: &'static str,
        /// The address.
        value: String,
        /// Why.
        source: lettre::address::AddressError,
    },
    /// `smarthost` is not `host:port`.
    #[error("smarthost {0:?} is not host:port")]
    Smarthost(String),
    /// The CA certificates or TLS set-up failed.
    #[error("TLS: {0}")]
    Tls(String),
}

impl EmailConfig {
    /// Checks the addresses, the smarthost and the CA, as loading a policy must.
    pub fn check(&self) -> Result<(), EmailError> {
        self.mailboxes()?;
        self.transport(Duration::from_secs(1)).map(drop)
    }

    fn mailboxes(&self) -> Result<(Mailbox, Vec<Mailbox>), EmailError> {
        let from = self.from.parse().map_err(|source| EmailError::Address {
            what: "from",
            value: self.from.clone(),
            source,
        })?;
        let to = self
            .to
            .iter()
            .map(|t| t.parse().map_err(|source| EmailError::Address { what: "to", value: t.clone(), source }))
            .collect::<Result<_, _>>()?;
        Ok((from, to))
    }

    fn transport(&self, timeout: Duration) -> Result<SmtpTransport, EmailError> {
        let (host, port) = self
            .smarthost
            .rsplit_once(':')
            .and_then(|(h, p)| Some((h, p.parse::<u16>().ok()?)))
            .filter(|(h, _)| !h.is_empty())
            .ok_or_else(|| EmailError::Smarthost(self.smarthost.clone()))?;
        crate::tls::ensure_crypto_provider();
        let mut params = TlsParameters::builder(host.to_owned());
        if let Some(pem) = &self.ca_pem {
            let cert = Certificate::from_pem(pem.as_bytes()).map_err(|e| EmailError::Tls(e.to_string()))?;
            params = params.add_root_certificate(cert);
        }
        let params = params.build_rustls().map_err(|e| EmailError::Tls(e.to_string()))?;
        let tls = if self.require_tls { Tls::Required(params) } else { Tls::Opportunistic(params) };
        let mut b = SmtpTransport::builder_dangerous(host).port(port).tls(tls).timeout(Some(timeout));
        if let (Some(user), Some(pass)) = (&self.username, &self.password) {
            b = b.credentials(Credentials::new(user.clone(), pass.clone()));
        }
        Ok(b.build())
    }

    /// Sends one message; an SMTP 5xx is refused for good, anything else is worth a retry.
    pub fn send(&self, alerts: &[Alert], note: Option<&str>, timeout: Duration) -> Outcome {
        let built = self.mailboxes().and_then(|(from, to)| Ok((from, to, self.transport(timeout)?)));
        let (from, to, transport) = match built {
            Ok(b) => b,
            Err(e) => return Outcome::Rejected { why: e.to_string() },
        };
        let (subject, body) = message_text(alerts, note);
        let mut m = Message::builder().from(from).subject(subject).header(ContentType::TEXT_PLAIN);
        for t in to {
            m = m.to(t);
        }
        let msg = match m.body(body) {
            Ok(m) => m,
            Err(e) => return Outcome::Rejected { why: format!("building the message: {e}") },
        };
        match transport.send(&msg) {
            Ok(_) => Outcome::Delivered,
            Err(e) if e.is_permanent() => Outcome::Rejected { why: format!("SMTP: {e}") },
            Err(e) => Outcome::Retry { after: None, why: format!("SMTP: {e}") },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::Severity;

    #[test]
    fn subject_and_body_name_every_alert() {
        let t: jiff::Timestamp = "2026-11-22T10:00:00Z".parse().unwrap();
        let a = Alert::new("DiskFull", "node-a", Severity::Critical, t).label("mountpoint", "/var");
        let mut b = Alert::new("HighCpu", "node-a", Severity::Warning, t);
        b.ends_at = Some(t + jiff::SignedDuration::from_mins(5));
        let (s, body) = message_text(std::slice::from_ref(&a), None);
        assert_eq!(s, "[FIRING] DiskFull on node-a (critical)");
        assert!(body.contains("  mountpoint: /var\n"), "{body}");
        assert!(body.contains(&format!("fingerprint {}", a.fingerprint())));
        let (s, body) = message_text(&[a, b], Some("3 notifications suppressed by the rate limit"));
        assert_eq!(s, "[1 firing, 1 resolved] 2 alerts, first: [FIRING] DiskFull on node-a (critical)");
        assert!(body.starts_with("3 notifications suppressed"));
        assert!(body.contains("resolved 2026-11-22T10:05:00Z"));
    }

    #[test]
    fn bad_addresses_and_smarthosts_are_named() {
        let c = EmailConfig {
            smarthost: "mail.example.com:587".into(),
            from: "vigil@example.com".into(),
            to: vec!["not an address".into()],
            require_tls: true,
            username: None,
            password: None,
            ca_pem: None,
        };
        assert!(c.check().unwrap_err().to_string().starts_with("to \"not an address\" is not an e-mail address"));
        let c = EmailConfig { to: vec!["ops@example.com".into()], smarthost: "mail.example.com".into(), ..c };
        assert_eq!(c.check().unwrap_err().to_string(), "smarthost \"mail.example.com\" is not host:port");
        let c = EmailConfig { smarthost: "mail.example.com:25".into(), ..c };
        assert!(c.check().is_ok());
    }
}
