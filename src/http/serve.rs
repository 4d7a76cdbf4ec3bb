//! docket's accept loop: hyper's HTTP/1.1 connection driver, run directly rather than through
//! `axum::serve`, for three things the latter cannot do:
//!
//! - **A cap on open connections** (`limits.max_connections`): at the cap docket stops
//!   accepting, so further clients wait in the kernel's listen backlog (or are refused by
//!   it) instead of taking file descriptors and memory; each closed connection lets the
//!   next one in. A plain-HTTP connection holds two descriptors (see [`Conn::plain`]).
//!
//! - **A header-read timeout** (`limits.header_read_timeout_secs`): a client that has begun
//!   a request head and not finished it in time gets `408` problem+json and the connection
//!   is closed; an idle keep-alive connection is closed silently at the same deadline.
//! - **Problem bodies for the answers hyper writes itself** before any route runs: `400` (not
//!   HTTP), `414` (URI over 65,534 bytes) and `431` (head over hyper's buffer, or over 100
//!   header fields). hyper writes these with an empty body; [`Guarded`] replaces that head
//!   with the same status as `application/problem+json` (RFC 9457), like every other error.
//!   Only on a connection that has not yet passed a request to the router: before that,
//!   the only bytes hyper can write are such an answer, while afterwards a write may begin
//!   anywhere inside a response body (which a sender of mail controls). A malformed request
//!   later on a keep-alive connection therefore still gets hyper's bare answer.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::http::StatusCode;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tower::ServiceExt;

use crate::error::raw_problem_response;

/// Serves `app` on `listener` until `shutdown` resolves, then lets requests in flight finish.
/// With `tls`, every connection is a TLS one (see [`crate::http::tls`]); its handshake must
/// finish within `header_read_timeout` as well. At most `limits.max_connections` are open at
/// once; the rest wait to be accepted.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnectionLimits,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections.max(1)));
    tokio::pin!(shutdown);
    let mut capped = false;
    loop {
        let slot = match slots.clone().try_acquire_owned() {
            Ok(slot) => {
                capped = false;
                slot
            }
            Err(_) => {
                // Once per time the cap is reached, not once per waiting client.
                if !std::mem::replace(&mut capped, true) {
                    tracing::warn!(
                        max_connections = limits.max_connections,
                        "connection cap reached: new connections wait until one closes"
                    );
                }
                tokio::select! {
                    slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
                    () = &mut shutdown => break,
                }
            }
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: wait, do not spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let conn = Conn {
            peer,
            app: app.clone(),
            timeouts: limits,
            watcher: graceful.watcher(),
            _slot: slot,
        };
        match &tls {
            None => match conn.plain(stream) {
                Ok(conn) => drop(tokio::spawn(conn)),
                Err(e) => tracing::warn!(error = %e, "cannot set up a connection"),
            },
            Some(acceptor) => drop(tokio::spawn(conn.tls(acceptor.clone(), stream))),
        }
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// File descriptors kept free of connections for the databases, blobs and listeners.
const FD_RESERVE: u64 = 512;

/// Raises the soft limit on open files (`RLIMIT_NOFILE`) toward the hard limit, so that
/// `max_connections` connections (two descriptors each, see [`Conn::plain`]) and
/// [`FD_RESERVE`] more fit; warns when the hard limit is too low for that. Returns the soft
/// limit now in force (`None`: unlimited, or it could not be read).
pub fn make_room_for(max_connections: usize) -> Option<u64> {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let wanted = (max_connections as u64)
        .saturating_mul(2)
        .saturating_add(FD_RESERVE);
    let now = getrlimit(Resource::Nofile);
    let current = now.current?;
    if current >= wanted {
        return Some(current);
    }
    let raised = Rlimit {
        current: Some(now.maximum.map_or(wanted, |max| wanted.min(max))),
        maximum: now.maximum,
    };
    let current = match setrlimit(Resource::Nofile, raised) {
        Ok(()) => raised.current?,
        Err(_) => current,
    };
    if current < wanted {
        tracing::warn!(
            open_files = current,
            wanted,
            max_connections,
            "the open-file limit is below what limits.max_connections needs: raise it (ulimit -n, LimitNOFILE) or lower the cap"
        );
    }
    Some(current)
}

/// The limits on connections (`limits.header_read_timeout_secs`,
/// `limits.send_stall_timeout_secs`, `limits.max_connections`).
#[derive(Clone, Copy, Debug)]
pub struct ConnectionLimits {
    /// A request head (and a TLS handshake) must arrive within this.
    pub header_read: Duration,
    /// A client must take some of an answer within this whenever one is waiting.
    pub send_stall: Duration,
    /// Most connections open at once.
    pub max_connections: usize,
}

/// What one accepted connection is served with.
struct Conn {
    peer: SocketAddr,
    app: Router,
    timeouts: ConnectionLimits,
    watcher: hyper_util::server::graceful::Watcher,
    /// Its place under `limits.max_connections`, given back when the connection is dropped.
    _slot: tokio::sync::OwnedSemaphorePermit,
}

impl Conn {
    /// A plain-HTTP connection; a head that stalls is answered 408 before closing (through
    /// a second descriptor of the socket: hyper drops its own when it gives up).
    fn plain(self, stream: TcpStream) -> io::Result<impl Future<Output = ()> + Send + 'static> {
        // A second handle on the socket, to answer 408 after hyper has given the connection up.
        let std = stream.into_std()?;
        let late = std.try_clone()?;
        let stream = TcpStream::from_std(std)?;
        Ok(self.drive(stream, Some(late)))
    }

    /// A TLS connection: the handshake, then HTTP. A head that stalls closes the connection
    /// (the 408 would have to go through the TLS session hyper has given up).
    async fn tls(self, acceptor: tokio_rustls::TlsAcceptor, stream: TcpStream) {
        let peer = self.peer;
        match tokio::time::timeout(self.timeouts.header_read, acceptor.accept(stream)).await {
            Ok(Ok(tls)) => self.drive(tls, None).await,
            Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
            Err(_) => tracing::debug!(%peer, "TLS handshake not finished in time"),
        }
    }

    async fn drive<IO>(self, io: IO, late: Option<std::net::TcpStream>)
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Conn {
            peer,
            app,
            timeouts,
            watcher,
            _slot,
        } = self;
        let (header_read_timeout, send_stall) = (timeouts.header_read, timeouts.send_stall);
        let mid_request = Arc::new(AtomicBool::new(false));
        let dispatched = Arc::new(AtomicBool::new(false));
        let io = Guarded::new(io, mid_request.clone(), dispatched.clone(), send_stall);
        let service = hyper::service::service_fn(move |mut req: axum::http::Request<Incoming>| {
            dispatched.store(true, Ordering::SeqCst);
            req.extensions_mut().insert(ConnectInfo(peer));
            app.clone().oneshot(req.map(axum::body::Body::new))
        });
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(header_read_timeout)
            .serve_connection(TokioIo::new(io), service);
        let Err(e) = watcher.watch(conn).await else {
            return;
        };
        match late {
            Some(late) if e.is_timeout() && mid_request.load(Ordering::Relaxed) => {
                tracing::info!(%peer, "request head not received in time: 408");
                let answer = raw_problem_response(
                    StatusCode::REQUEST_TIMEOUT,
                    Some("the request head was not received in time"),
                );
                // The send buffer of a connection that is still reading its request has room;
                // a client that has gone misses nothing.
                let _ = std::io::Write::write_all(&mut &late, &answer);
            }
            _ => tracing::debug!(%peer, error = %e, "connection ended"),
        }
    }
}

/// The connection's socket, seen by hyper. It notes whether a request is partly received
/// (bytes read since the last answer), answers a header timeout in that state with 408, and
/// swaps hyper's own bodiless 400/414/431 heads for problem responses.
struct Guarded<IO> {
    inner: IO,
    mid_request: Arc<AtomicBool>,
    /// A request has reached the router on this connection: from then on, writes are
    /// responses (bodies included) and are never inspected.
    dispatched: Arc<AtomicBool>,
    /// A replacement being written: (bytes, written so far, length of hyper's head it stands for).
    replacing: Option<(Vec<u8>, usize, usize)>,
    /// A client that takes no bytes for this long while docket has some to send is cut off
    /// (`limits.send_stall_timeout_secs`): a reader that stops would otherwise hold its
    /// answer, and the memory behind it, for as long as it keeps the connection open.
    stall_after: Duration,
    /// Running since the current write or flush has been waiting.
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<IO> Guarded<IO> {
    fn new(
        inner: IO,
        mid_request: Arc<AtomicBool>,
        dispatched: Arc<AtomicBool>,
        stall_after: Duration,
    ) -> Self {
        Guarded {
            inner,
            mid_request,
            dispatched,
            replacing: None,
            stall_after,
            stalled: None,
        }
    }

    /// A write or flush that waits longer than `stall_after` without progress fails with
    /// `TimedOut`, and hyper closes the connection; any progress restarts the clock.
    fn unless_stalled<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if polled.is_ready() {
            self.stalled = None;
            return polled;
        }
        let after = self.stall_after;
        let clock = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(after)));
        match clock.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client took nothing within the send stall timeout",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// The status of a head hyper writes for a request it could not read (its `on_error`): one
/// of 400, 414, 431 with `content-length: 0`. docket's own error answers always have a body.
fn automatic_error(buf: &[u8]) -> Option<StatusCode> {
    let status = match buf.get(..13)? {
        b"HTTP/1.1 400 " => StatusCode::BAD_REQUEST,
        b"HTTP/1.1 414 " => StatusCode::URI_TOO_LONG,
        b"HTTP/1.1 431 " => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        _ => return None,
    };
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
    head.contains("\r\ncontent-length: 0").then_some(status)
}

impl<IO: AsyncWrite + Unpin> Guarded<IO> {
    fn poll_replacement(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        while let Some((bytes, done, stands_for)) = &mut self.replacing {
            if *done == bytes.len() {
                let n = *stands_for;
                self.replacing = None;
                return Poll::Ready(Ok(n));
            }
            match Pin::new(&mut self.inner).poll_write(cx, &bytes[*done..]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => *done += n,
                other => return self.unless_stalled(cx, other),
            }
        }
        Poll::Ready(Ok(0))
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Guarded<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.mid_request.store(true, Ordering::Relaxed);
        }
        polled
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Guarded<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.replacing.is_none() {
            self.mid_request.store(false, Ordering::Relaxed);
            let first_answer = !self.dispatched.load(Ordering::SeqCst);
            if let Some(status) = automatic_error(buf).filter(|_| first_answer) {
                let end = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or(0) + 4;
                self.replacing = Some((raw_problem_response(status, None), 0, end));
            }
        }
        if self.replacing.is_some() {
            return self.poll_replacement(cx);
        }
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.unless_stalled(cx, polled)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_flush(cx);
        self.unless_stalled(cx, polled)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_open_file_limit_is_raised_for_the_connection_cap() {
        use rustix::process::{getrlimit, Resource};
        let before = getrlimit(Resource::Nofile);
        let now = make_room_for(4000);
        let after = getrlimit(Resource::Nofile);
        assert_eq!(now, after.current);
        let wanted = 4000 * 2 + FD_RESERVE;
        let reachable = before.maximum.map_or(wanted, |max| wanted.min(max));
        assert!(
            after.current.is_none_or(|c| c >= reachable),
            "{before:?} -> {after:?}"
        );
    }

    #[test]
    fn only_hypers_bodiless_error_heads_are_replaced() {
        let hyper_431 =
            b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\ndate: x\r\n\r\n";
        assert_eq!(
            automatic_error(hyper_431),
            Some(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE)
        );
        let ours = b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/problem+json\r\ncontent-length: 120\r\n\r\n";
        assert_eq!(automatic_error(ours), None);
        assert_eq!(
            automatic_error(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"),
            None
        );
        let body_says_it = b"HTTP/1.1 404 Not Found\r\ncontent-length: 12\r\n\r\nHTTP/1.1 400 ";
        assert_eq!(automatic_error(body_says_it), None);
    }

    /// Once a request reached the router, writes are responses: a write that starts inside
    /// a body with bytes that look like hyper's bare 400 passes through untouched (a mail's
    /// sender controls the bytes of a downloaded message).
    #[tokio::test]
    async fn only_a_connections_first_answer_is_ever_replaced() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let lookalike = b"HTTP/1.1 400 X\r\ncontent-length: 0\r\n\r\n".repeat(3);
        for dispatched in [false, true] {
            let (ours, mut theirs) = tokio::io::duplex(1 << 16);
            let mut io = Guarded::new(
                ours,
                Arc::new(AtomicBool::new(false)),
                Arc::new(AtomicBool::new(dispatched)),
                Duration::from_secs(60),
            );
            let mut written = 0;
            while written < lookalike.len() {
                written += io.write(&lookalike[written..]).await.unwrap();
            }
            drop(io);
            let mut out = Vec::new();
            theirs.read_to_end(&mut out).await.unwrap();
            if dispatched {
                assert_eq!(out, lookalike, "a response body is never rewritten");
            } else {
                let text = String::from_utf8_lossy(&out);
                assert!(text.starts_with("HTTP/1.1 400 Bad Request"), "{text}");
                assert!(text.contains("urn:docket:problem:bad-request"), "{text}");
            }
        }
    }

    /// A client that takes nothing while an answer waits is cut off after the stall
    /// timeout; one that keeps taking bytes, however slowly, is not.
    #[tokio::test]
    async fn a_client_that_stops_reading_is_cut_off() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (ours, mut theirs) = tokio::io::duplex(1024);
        let mut io = Guarded::new(
            ours,
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicBool::new(true)),
            Duration::from_millis(200),
        );
        let answer = vec![b'x'; 64 * 1024];
        // A slow reader: 512 bytes every 50 ms keeps the connection.
        let slow = tokio::spawn(async move {
            let mut buf = [0u8; 512];
            for _ in 0..10 {
                tokio::time::sleep(Duration::from_millis(50)).await;
                theirs.read_exact(&mut buf).await.unwrap();
            }
            theirs // then it stops reading, and keeps the connection open
        });
        let started = std::time::Instant::now();
        let mut written = 0;
        let err = loop {
            match io.write(&answer[written..]).await {
                Ok(n) => written += n,
                Err(e) => break e,
            }
        };
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(
            written >= 10 * 512,
            "the slow reader got its bytes: {written}"
        );
        assert!(
            started.elapsed() >= Duration::from_millis(500),
            "not cut off while reading"
        );
        drop(slow.await.unwrap());
    }
}
