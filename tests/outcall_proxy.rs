//! Flows' HTTP calls ignore proxy variables. A test binary of its own: the variables are
//! process-wide, and no other test may see them.

use std::sync::{Arc, Mutex};

use parley::outcall::{HttpCall, OutCaller};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Answers every request with `status` and records its request line.
async fn server(status: &'static str) -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let record = record.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&head);
                record
                    .lock()
                    .unwrap()
                    .push(head.lines().next().unwrap_or_default().to_string());
                let answer =
                    format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
                let _ = conn.write_all(answer.as_bytes()).await;
                let _ = conn.shutdown().await;
            });
        }
    });
    (addr, seen)
}

#[test]
fn flow_calls_go_straight_to_the_host_whatever_the_proxy_variables_say() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let (proxy, via_proxy) = server("502 Bad Gateway").await;
        let (backend, direct) = server("200 OK").await;
        for var in [
            "HTTP_PROXY",
            "http_proxy",
            "HTTPS_PROXY",
            "https_proxy",
            "ALL_PROXY",
            "all_proxy",
        ] {
            std::env::set_var(var, format!("http://{proxy}"));
        }
        std::env::remove_var("NO_PROXY");
        std::env::remove_var("no_proxy");

        let caller = OutCaller::new(vec!["127.0.0.1/32".parse().unwrap()]).unwrap();
        let out = caller
            .call(&HttpCall {
                id: "p1".into(),
                method: "GET".into(),
                url: format!("http://{backend}/orders/1"),
                headers: vec![("Authorization".into(), "Bearer backend-key".into())],
                body: None,
                timeout_ms: 5000,
            })
            .await;

        assert!(
            via_proxy.lock().unwrap().is_empty(),
            "the proxy saw {:?}",
            via_proxy.lock().unwrap()
        );
        assert_eq!(out.status, 200, "{out:?}");
        assert_eq!(*direct.lock().unwrap(), vec!["GET /orders/1 HTTP/1.1"]);
    });
}
