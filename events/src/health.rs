//! The kubelet's own health endpoint (`GET http://127.0.0.1:10248/healthz`, which the kubelet
//! serves without authentication on the node's loopback), as node-problem-detector's health
//! checker reads it, for the `KubeletUnhealthy` condition: what one look found, and the
//! reading of an answer (pure). The agent's shell does the asking (`vigil_agent::kubelet`);
//! it repairs nothing (restarting the kubelet is not its job).

/// Where the kubelet serves `/healthz` (its `healthzBindAddress` and `healthzPort` defaults).
pub const KUBELET_HEALTHZ: &str = "127.0.0.1:10248";

/// What one look found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Health {
    /// `200 ok`.
    Healthy,
    /// It answered otherwise, or not in time: why.
    Unhealthy(String),
    /// Nothing listens there: no kubelet on this host (a laptop, a VM with `scan`), or one
    /// configured to serve its health elsewhere.
    Absent,
}

/// Reads an HTTP response's status line and body: healthy only for `200` with body `ok`.
pub fn judge(response: &[u8]) -> Health {
    let text = String::from_utf8_lossy(&response[..response.len().min(4096)]);
    let status = text.lines().next().unwrap_or("").trim();
    let code = status.split_whitespace().nth(1).unwrap_or("");
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b.trim());
    if code == "200" && body == "ok" {
        Health::Healthy
    } else if status.is_empty() {
        Health::Unhealthy("no answer".into())
    } else {
        let body: String = body.chars().take(200).collect();
        Health::Unhealthy(format!("{status}: {body}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_200_ok_is_healthy() {
        assert_eq!(judge(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"), Health::Healthy);
        assert_eq!(
            judge(b"HTTP/1.1 500 Internal Server Error\r\n\r\n[-]syncloop failed: reason withheld"),
            Health::Unhealthy("HTTP/1.1 500 Internal Server Error: [-]syncloop failed: reason withheld".into())
        );
        assert!(matches!(judge(b"HTTP/1.1 200 OK\r\n\r\nnot ok"), Health::Unhealthy(_)));
        assert_eq!(judge(b""), Health::Unhealthy("no answer".into()));
        assert!(matches!(judge(&[0xff; 10_000]), Health::Unhealthy(_)), "hostile bytes, bounded");
    }
}
