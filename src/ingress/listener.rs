//! The HTTP listener: hyper's HTTP/1 connection with the limits a public endpoint needs.
//!
//! - A request head must arrive within `header_read_timeout` of the connection opening or of
//!   the previous response (hyper's own timer; it closes connections that send nothing too).
//! - A connection with no request in flight that sends no byte for `keep_alive_timeout` is
//!   closed.
//! - A body must arrive within `body_read_timeout` plus a second per `min_body_rate` bytes
//!   ([`PacedBody`]); a trickle slower than that ends with an error the handler answers.
//! - At most `max_connections` connections are open; past that, new ones wait in the
//!   kernel's accept queue until a slot frees (the timeouts above free them).
//!
//! Every request carries the client's address as `ConnectInfo<SocketAddr>`.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::Router;
use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::time::{Instant, Sleep};
use tower_service::Service;

use crate::config::HttpSettings;

/// The listener's limits (from `[http]`).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub header_read_timeout: Duration,
    pub keep_alive_timeout: Duration,
    pub body_read_timeout: Duration,
    pub min_body_rate: u64,
    pub max_connections: usize,
}

impl Limits {
    pub fn of(http: &HttpSettings) -> Limits {
        Limits {
            header_read_timeout: http.header_read_timeout,
            keep_alive_timeout: http.keep_alive_timeout,
            body_read_timeout: http.body_read_timeout,
            min_body_rate: http.min_body_rate,
            max_connections: http.max_connections,
        }
    }
}

/// Serve `app` on `listener` until `stop` turns true; then stop accepting, let each
/// connection finish the request it is in, and return once every connection is closed.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    mut stop: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let open = Arc::new(AtomicUsize::new(0));
    let (closed_tx, mut closed_rx) = watch::channel(());
    loop {
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            () = stopped(&mut stop) => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors, or a connection reset before it was taken:
                    // wait a little rather than spin.
                    tracing::warn!(error = %e, "Accepting a connection failed.");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = stopped(&mut stop) => break,
        };
        let _ = stream.set_nodelay(true);
        let (app, stop, open, closed_tx) =
            (app.clone(), stop.clone(), open.clone(), closed_tx.clone());
        open.fetch_add(1, Ordering::SeqCst);
        tokio::spawn(async move {
            serve_connection(stream, peer, app, limits, stop).await;
            drop(permit);
            open.fetch_sub(1, Ordering::SeqCst);
            let _ = closed_tx.send(());
        });
    }
    drop(listener);
    while open.load(Ordering::SeqCst) > 0 {
        if closed_rx.changed().await.is_err() {
            break;
        }
    }
}

/// Completes once `stop` is true (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await.map(|_| ());
}

/// What the keep-alive watchdog reads: requests in flight and when a byte last came.
struct Activity {
    base: Instant,
    in_flight: AtomicUsize,
    last_ms: AtomicU64,
}

impl Activity {
    fn touch(&self) {
        self.last_ms
            .store(self.base.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.base + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }
}

async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    app: Router,
    limits: Limits,
    mut stop: watch::Receiver<bool>,
) {
    let activity = Arc::new(Activity {
        base: Instant::now(),
        in_flight: AtomicUsize::new(0),
        last_ms: AtomicU64::new(0),
    });
    let io = TokioIo::new(Watched {
        inner: stream,
        activity: activity.clone(),
    });
    let service = {
        let activity = activity.clone();
        hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
            let mut app = app.clone();
            let (mut parts, body) = req.into_parts();
            parts.extensions.insert(ConnectInfo(peer));
            let body = Body::new(PacedBody::new(body, &limits));
            let in_flight = InFlight::enter(activity.clone());
            async move {
                let response = app.call(hyper::Request::from_parts(parts, body)).await;
                drop(in_flight);
                response
            }
        })
    };
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true);
    let conn = builder.serve_connection(io, service);
    tokio::pin!(conn);
    let idle = keep_alive_watchdog(&activity, limits.keep_alive_timeout);
    tokio::pin!(idle);
    let mut stopping = false;
    loop {
        tokio::select! {
            served = conn.as_mut() => {
                if let Err(e) = served {
                    if e.is_timeout() {
                        crate::metrics::metrics()
                            .connections_closed
                            .inc("reason=\"header_timeout\"");
                    }
                    tracing::debug!(error = %e, "Connection ended with an error.");
                }
                return;
            }
            () = stopped(&mut stop), if !stopping => {
                stopping = true;
                conn.as_mut().graceful_shutdown();
            }
            () = &mut idle => {
                crate::metrics::metrics().connections_closed.inc("reason=\"idle\"");
                tracing::debug!("Idle connection closed.");
                return;
            }
        }
    }
}

/// Completes once the connection has had no request in flight and no byte from the client
/// for `timeout`.
async fn keep_alive_watchdog(activity: &Activity, timeout: Duration) {
    loop {
        let deadline = activity.last() + timeout;
        tokio::time::sleep_until(deadline).await;
        if activity.in_flight.load(Ordering::SeqCst) == 0
            && activity.last() + timeout <= Instant::now()
        {
            return;
        }
        if activity.in_flight.load(Ordering::SeqCst) > 0 {
            // A handler may take long (a reload, a commit): look again later.
            tokio::time::sleep(timeout.min(Duration::from_secs(1))).await;
        }
    }
}

/// A request in flight on a connection; when it ends, the idle clock starts again.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn enter(activity: Arc<Activity>) -> InFlight {
        activity.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight(activity)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The socket, noting when the client last sent a byte.
struct Watched {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// The body did not arrive in time.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive in time")]
pub struct BodyTimeout;

/// A request body that must arrive within `timeout` of the request's head, plus one second
/// for every `min_rate` bytes received (Apache's mod_reqtimeout `body=…,MinRate=…`): a
/// client may be slow, but not slower than `min_rate` for long.
pub struct PacedBody<B> {
    inner: B,
    start: Instant,
    timeout: Duration,
    min_rate: u64,
    received: u64,
    /// Made the first time the body has to wait (most bodies come whole with their head).
    deadline: Option<Pin<Box<Sleep>>>,
    timed_out: bool,
}

impl<B> PacedBody<B> {
    pub fn new(inner: B, limits: &Limits) -> PacedBody<B> {
        let start = Instant::now();
        PacedBody {
            inner,
            start,
            timeout: limits.body_read_timeout,
            min_rate: limits.min_body_rate,
            received: 0,
            deadline: None,
            timed_out: false,
        }
    }

    fn allowed(&self) -> Instant {
        let earned = self
            .received
            .checked_div(self.min_rate)
            .map_or(Duration::ZERO, Duration::from_secs);
        let fraction = match self.min_rate {
            0 => Duration::ZERO,
            r => Duration::from_millis((self.received % r) * 1000 / r),
        };
        self.start + self.timeout + earned + fraction
    }
}

impl<B> HttpBody for PacedBody<B>
where
    B: HttpBody<Data = Bytes> + Unpin,
    B::Error: Into<axum::BoxError>,
{
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if self.timed_out {
            return Poll::Ready(Some(Err(BodyTimeout.into())));
        }
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.received += data.len() as u64;
                    let allowed = self.allowed();
                    if let Some(deadline) = self.deadline.as_mut() {
                        deadline.as_mut().reset(allowed);
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                let allowed = self.allowed();
                let deadline = self
                    .deadline
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(allowed)));
                ready!(deadline.as_mut().poll(cx));
                self.timed_out = true;
                Poll::Ready(Some(Err(BodyTimeout.into())))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    fn limits(timeout_ms: u64, min_rate: u64) -> Limits {
        Limits {
            header_read_timeout: Duration::from_secs(1),
            keep_alive_timeout: Duration::from_secs(1),
            body_read_timeout: Duration::from_millis(timeout_ms),
            min_body_rate: min_rate,
            max_connections: 1,
        }
    }

    type Item = Result<Frame<Bytes>, std::io::Error>;
    type Fed = http_body_util::StreamBody<tokio_stream_shim::Receiver<Item>>;

    /// A body fed by hand: frames arrive when the test sends them.
    fn channel_body() -> (tokio::sync::mpsc::Sender<Item>, Fed) {
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        (
            tx,
            http_body_util::StreamBody::new(tokio_stream_shim::Receiver(rx)),
        )
    }

    mod tokio_stream_shim {
        pub struct Receiver<T>(pub tokio::sync::mpsc::Receiver<T>);
        impl<T> futures::Stream for Receiver<T> {
            type Item = T;
            fn poll_next(
                mut self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<Option<T>> {
                self.0.poll_recv(cx)
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_that_stops_arriving_ends_with_a_timeout() {
        let (tx, body) = channel_body();
        let mut body = PacedBody::new(body, &limits(1_000, 0));
        tx.send(Ok(Frame::data(Bytes::from_static(b"{\"partial"))))
            .await
            .unwrap();
        assert!(body.frame().await.unwrap().is_ok());
        let started = Instant::now();
        let next = body.frame().await.unwrap();
        assert!(next.unwrap_err().is::<BodyTimeout>());
        assert!(started.elapsed() <= Duration::from_millis(1_000));
        drop(tx);
    }

    #[tokio::test(start_paused = true)]
    async fn bytes_at_the_minimum_rate_earn_more_time() {
        let (tx, body) = channel_body();
        let mut body = PacedBody::new(body, &limits(1_000, 100));
        // 100 bytes every 900 ms: slower than the timeout alone allows, as fast as the
        // minimum rate asks.
        for _ in 0..5 {
            tokio::time::sleep(Duration::from_millis(900)).await;
            tx.send(Ok(Frame::data(Bytes::from(vec![b'x'; 100]))))
                .await
                .unwrap();
            assert!(body.frame().await.unwrap().is_ok());
        }
        drop(tx);
        assert!(body.frame().await.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn a_trickle_below_the_minimum_rate_is_cut_off() {
        let (tx, body) = channel_body();
        let mut body = PacedBody::new(body, &limits(1_000, 1_000));
        let feeder = tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(500)).await;
                if tx
                    .send(Ok(Frame::data(Bytes::from_static(b"x"))))
                    .await
                    .is_err()
                {
                    break;
                }
            }
        });
        let started = Instant::now();
        let error = loop {
            match body.frame().await {
                Some(Ok(_)) => continue,
                Some(Err(e)) => break e,
                None => panic!("the body ended"),
            }
        };
        assert!(error.is::<BodyTimeout>());
        // One byte per 500 ms earns a millisecond each: cut off just after the second.
        assert!(started.elapsed() < Duration::from_millis(1_100));
        feeder.abort();
    }
}
