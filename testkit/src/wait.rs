//! Waiting for a condition instead of sleeping a fixed time.

use std::time::Duration;

/// Waits until something accepts TCP connections on `addr` (up to 10 s).
pub async fn wait_for_listener(addr: std::net::SocketAddr) {
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("chorusd did not start on {addr}");
}

/// Waits up to `timeout` for `check` to hold, polling every 50 ms.
pub async fn wait_until<F: std::future::Future<Output = bool>>(
    timeout: Duration,
    mut check: impl FnMut() -> F,
) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
