//! Asks the kubelet's own health endpoint (`vigil_events::health::KUBELET_HEALTHZ`), for the
//! `KubeletUnhealthy` condition; the answer is read by [`vigil_events::health::judge`].

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use vigil_events::health::{Health, judge};

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
