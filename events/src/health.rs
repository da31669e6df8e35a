//! The kubelet's own health endpoint (`GET http://127.0.0.1:10248/healthz`, which the kubelet
//! serves without authentication on the node's loopback), as node-problem-detector's health
//! checker asks it, for the `KubeletUnhealthy` condition. The agent only asks; it repairs
//! nothing (restarting the kubelet is not its job). The answer's reading is pure.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

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

/// Asks the kubelet at `addr`, waiting at most `within` for the whole answer.
pub async fn probe(addr: &str, within: Duration) -> Health {
    let ask = async {
        let mut s = match tokio::net::TcpStream::connect(addr).await {
            Ok(s) => s,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => return Health::Absent,
            Err(e) => return Health::Unhealthy(format!("connecting to {addr}: {e}")),
        };
        let req = format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        if let Err(e) = s.write_all(req.as_bytes()).await {
            return Health::Unhealthy(format!("asking {addr}: {e}"));
        }
        let mut buf = Vec::with_capacity(512);
        let mut chunk = [0u8; 512];
        while buf.len() < 4096 {
            match s.read(&mut chunk).await {
                Ok(0) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(e) => return Health::Unhealthy(format!("reading {addr}: {e}")),
            }
        }
        judge(&buf)
    };
    tokio::time::timeout(within, ask)
        .await
        .unwrap_or_else(|_| Health::Unhealthy(format!("no answer from {addr} within {within:?}")))
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

    #[tokio::test]
    async fn a_real_server_is_asked_and_nothing_listening_is_no_kubelet() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let serve = |answer: &'static [u8]| {
            let listener = &listener;
            async move {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut req = [0u8; 1024];
                let n = s.read(&mut req).await.unwrap();
                assert!(String::from_utf8_lossy(&req[..n]).starts_with("GET /healthz HTTP/1.1"));
                s.write_all(answer).await.unwrap();
            }
        };
        let (health, ()) = tokio::join!(
            probe(&addr, Duration::from_secs(5)),
            serve(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        );
        assert_eq!(health, Health::Healthy);
        let (health, ()) = tokio::join!(
            probe(&addr, Duration::from_secs(5)),
            serve(b"HTTP/1.1 503 Service Unavailable\r\n\r\nnot ready")
        );
        assert!(matches!(health, Health::Unhealthy(why) if why.contains("503")));
        // An accepted connection that never answers: unhealthy once the time is up.
        let silent = tokio::spawn(async move {
            let (s, _) = listener.accept().await.unwrap();
            tokio::time::sleep(Duration::from_secs(3)).await;
            drop(s);
        });
        let health = probe(&addr, Duration::from_millis(300)).await;
        assert!(matches!(&health, Health::Unhealthy(why) if why.contains("no answer")), "{health:?}");
        silent.abort();
        // Nothing listening.
        let free = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let gone = free.local_addr().unwrap().to_string();
        drop(free);
        assert_eq!(probe(&gone, Duration::from_secs(5)).await, Health::Absent);
    }
}
