//! Connection and message limits at the transport edge.
//!
//! Why: without them, sockets that connect and never speak hold a file descriptor each until the
//! process runs out and new clients are locked out silently. Here every accepted connection holds
//! one of `server.max_connections` permits (further clients wait in the listen backlog, not
//! refused), and a connection silent for `server.idle_timeout_secs` (no byte read or written) is
//! closed, which frees its permit; HTTP/2 keepalive pings (tonic's builder) close connections
//! whose peer vanished. A request whose message is larger than tonic's decoding limit is answered
//! RESOURCE_EXHAUSTED, the gRPC convention (tonic says OUT_OF_RANGE).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};
use tonic::transport::server::{Connected, TcpConnectInfo};

/// An accepted connection that holds a connection permit and closes itself when silent too long.
pub struct Limited {
    inner: TcpStream,
    _permit: OwnedSemaphorePermit,
    idle: Duration,
    deadline: Pin<Box<Sleep>>,
}

impl Limited {
    fn touch(&mut self) {
        self.deadline.as_mut().reset(Instant::now() + self.idle);
    }

    /// Ready(error) once the connection was silent for the idle timeout.
    fn idle_expired(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        match self.deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(io::Error::new(
                io::ErrorKind::TimedOut,
                "connection idle past server.idle_timeout_secs",
            )),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncRead for Limited {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(r) => {
                self.touch();
                Poll::Ready(r)
            }
            Poll::Pending => self.idle_expired(cx).map(Err),
        }
    }
}

impl AsyncWrite for Limited {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if r.is_ready() {
            self.touch();
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl Connected for Limited {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

/// Accepts connections from `listener`, at most `max` open at once, each closed after `idle`
/// without traffic.
pub fn incoming(
    listener: TcpListener,
    max: usize,
    idle: Duration,
) -> impl tokio_stream::Stream<Item = io::Result<Limited>> {
    let permits = Arc::new(Semaphore::new(max));
    futures_util::stream::unfold((listener, permits), move |(listener, permits)| async move {
        // Wait for a free slot before accepting, so excess clients queue in the backlog.
        let permit = Arc::clone(&permits).acquire_owned().await.ok()?;
        let item = match listener.accept().await {
            Ok((conn, _)) => conn.set_nodelay(true).map(|()| Limited {
                inner: conn,
                _permit: permit,
                idle,
                deadline: Box::pin(tokio::time::sleep(idle)),
            }),
            Err(e) => Err(e),
        };
        Some((item, (listener, permits)))
    })
}

/// Rewrites tonic's OUT_OF_RANGE for an oversized message into RESOURCE_EXHAUSTED (the gRPC
/// convention for a message over the size limit), in the headers of a trailers-only response and
/// in the trailers. The service itself never answers OUT_OF_RANGE.
pub fn oversize_is_resource_exhausted(
    mut r: http::Response<tonic::body::Body>,
) -> http::Response<tonic::body::Body> {
    use http_body_util::BodyExt;
    fix_status(r.headers_mut());
    r.map(|body| {
        tonic::body::Body::new(body.map_frame(|f| match f.into_trailers() {
            Ok(mut t) => {
                fix_status(&mut t);
                http_body::Frame::trailers(t)
            }
            Err(f) => f,
        }))
    })
}

fn fix_status(h: &mut http::HeaderMap) {
    const OUT_OF_RANGE: &str = "11";
    const RESOURCE_EXHAUSTED: &str = "8";
    if h.get("grpc-status").is_some_and(|v| v == OUT_OF_RANGE)
        && h.get("grpc-message")
            // grpc-message is percent-encoded on the wire.
            .is_some_and(|m| {
                m.to_str()
                    .is_ok_and(|m| m.replace("%20", " ").contains("length too large"))
            })
    {
        h.insert(
            "grpc-status",
            http::HeaderValue::from_static(RESOURCE_EXHAUSTED),
        );
    }
}
