//! The accept loop: every connection bounded (a connection limit, header- and body-read
//! timeouts, a drop at shutdown for connections that never sent a whole request), and every
//! refusal explained in the API's JSON error shape, including the ones hyper makes itself for
//! requests it cannot parse ([`ProtocolErrors`]).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use axum::http::StatusCode;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;

use super::{app, ApiError, AppState};

/// Serves `state` on `listener` until `shutdown` resolves, then stops accepting, lets
/// in-flight requests and streams finish for at most `server.shutdown_grace_secs`, and
/// returns. Idle and half-sent connections are closed at once on shutdown.
///
/// Every connection is bounded: at most `server.max_connections` at once (a connection past
/// the limit gets a `503` JSON answer and is closed, so the process never runs out of file
/// descriptors for its own health checks), `server.header_read_timeout_secs` to send a
/// request's headers (and to start the next request on a kept-alive connection), and
/// `server.body_read_timeout_secs` to send its body (`408`).
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioIo, TokioTimer};
    use hyper_util::service::TowerToHyperService;

    let settings = state.settings().clone();
    let grace = Duration::from_secs(settings.shutdown_grace_secs);
    let header_timeout = Duration::from_secs(settings.header_read_timeout_secs);
    let max_header_bytes = settings.max_header_bytes;
    let app = app(state.clone());
    let slots = Arc::new(tokio::sync::Semaphore::new(settings.max_connections));
    let (closing_tx, closing_rx) = tokio::sync::watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        let (stream, _peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors, or a connection reset before it was taken:
                    // back off a moment instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            state.metrics().connections_refused.inc();
            tokio::spawn(refuse(stream, settings.max_connections));
            continue;
        };
        // Requests this connection has handed to the app: a connection still reading its
        // first request's head has none, and shutdown drops it at once.
        let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let service = {
            let (app, calls) = (app.clone(), calls.clone());
            TowerToHyperService::new(tower::service_fn(
                move |req: axum::http::Request<hyper::body::Incoming>| {
                    calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    tower::ServiceExt::oneshot(app.clone(), req)
                },
            ))
        };
        let mut closing = closing_rx.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .max_buf_size(max_header_bytes)
                .keep_alive(true);
            let conn = builder
                .serve_connection(TokioIo::new(ProtocolErrors::new(stream)), service)
                .with_upgrades();
            tokio::pin!(conn);
            tokio::select! {
                result = conn.as_mut() => {
                    if let Err(e) = result {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                }
                _ = async { closing.wait_for(|c| *c).await.map(|_| ()) } => {
                    if calls.load(std::sync::atomic::Ordering::Relaxed) == 0 {
                        // Never got a whole request: dropped now, not waited on.
                        return;
                    }
                    // Idle connections and half-sent follow-up requests close now; a request
                    // in flight (or a stream) finishes, then its connection closes.
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        });
    }
    drop(listener);
    tracing::info!("shutting down: finishing in-flight requests");
    let _ = closing_tx.send(true);
    let all = u32::try_from(settings.max_connections).unwrap_or(u32::MAX);
    if tokio::time::timeout(grace, slots.acquire_many(all))
        .await
        .is_err()
    {
        tracing::warn!(
            grace_secs = grace.as_secs(),
            "grace period over: dropping the connections still open"
        );
    }
    Ok(())
}

/// Answers a connection past `server.max_connections` with a `503` and closes it: reads the
/// request head first (at most 8 KiB, for at most a second), so that the client reads an
/// answer to its request rather than a connection reset.
async fn refuse(mut stream: tokio::net::TcpStream, limit: usize) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let mut head = Vec::with_capacity(1024);
        let mut buf = [0u8; 1024];
        while head.len() < 8192 && !head.windows(4).any(|w| w == b"\r\n\r\n") {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    // Written by hand (the connection never reaches hyper), in the shape of every other error.
    let body = ApiError::unavailable(
        "too_many_connections",
        format!(
            "the server is at its connection limit ({limit}, server.max_connections): retry \
             after the Retry-After delay"
        ),
    )
    .body()
    .to_string();
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\n\
         connection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let _ = stream.write_all(response.as_bytes()).await;
        let _ = stream.shutdown().await;
    })
    .await;
}

/// A connection's stream, with hyper's automatic answers to unparseable requests given the
/// API's JSON error body.
///
/// When hyper cannot parse a request head (a forbidden byte in a header, conflicting
/// `Content-Length` headers, a head over its size limits) it answers by itself, before the
/// app ever sees a request, with an empty body and `connection: close`, and then closes. Such
/// an answer is recognisable: every response the app makes carries `x-request-id`, hyper's own
/// never does. This wrapper replaces exactly those heads with the same status and headers plus
/// a JSON body; everything else passes through untouched.
struct ProtocolErrors<S> {
    inner: S,
    /// A replacement answer and how much of it is written.
    pending: Option<(Vec<u8>, usize)>,
}

impl<S> ProtocolErrors<S> {
    fn new(inner: S) -> Self {
        ProtocolErrors {
            inner,
            pending: None,
        }
    }
}

impl<S: AsyncWrite + Unpin> ProtocolErrors<S> {
    /// Writes what is left of a replacement answer.
    fn poll_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some((bytes, written)) = &mut self.pending {
            if *written == bytes.len() {
                self.pending = None;
                break;
            }
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &bytes[*written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            *written += n;
        }
        Poll::Ready(Ok(()))
    }

    /// Takes `buf` as written when it is one of hyper's automatic error answers, queueing the
    /// JSON version instead.
    fn replace(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Option<io::Result<usize>> {
        let answer = automatic_error_with_body(buf)?;
        self.pending = Some((answer, 0));
        // Whatever does not go out now goes out on the flush hyper does next.
        Some(match self.poll_pending(cx) {
            Poll::Ready(Err(e)) => Err(e),
            _ => Ok(buf.len()),
        })
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ProtocolErrors<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ProtocolErrors<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        ready!(this.poll_pending(cx))?;
        if let Some(result) = this.replace(cx, buf) {
            return Poll::Ready(result);
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        ready!(this.poll_pending(cx))?;
        // An automatic answer is a head alone, in one slice.
        let mut filled = bufs.iter().filter(|b| !b.is_empty());
        if let (Some(only), None) = (filled.next(), filled.next()) {
            if let Some(result) = this.replace(cx, only) {
                return Poll::Ready(result);
            }
        }
        Pin::new(&mut this.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_pending(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_pending(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A head that may be one of hyper's automatic answers, as text without its blank line, and
/// the error it stands for. Every write of every response passes here: anything that is not a
/// short 4xx head is turned away on its first bytes, before any parsing.
fn automatic_head(head: &[u8]) -> Option<(&str, Option<ApiError>)> {
    if head.len() > 1024 || !head.starts_with(b"HTTP/1.1 4") || !head.ends_with(b"\r\n\r\n") {
        return None;
    }
    let text = std::str::from_utf8(head).ok()?.strip_suffix("\r\n\r\n")?;
    Some((text, automatic_error_of(text)))
}

/// The JSON error for one of hyper's automatic answers (status, no body, no `x-request-id`),
/// or `None` for anything else.
fn automatic_error_of(head: &str) -> Option<ApiError> {
    let mut lines = head.split("\r\n");
    let status = lines.next()?.strip_prefix("HTTP/1.1 ")?.get(..3)?;
    let mut empty = false;
    for line in lines {
        let (name, value) = line.split_once(':')?;
        if name.eq_ignore_ascii_case("x-request-id") {
            return None;
        }
        if name.eq_ignore_ascii_case("content-length") {
            empty = value.trim() == "0";
        }
    }
    if !empty {
        return None;
    }
    let (status, code, message) = match status {
        "400" => (
            StatusCode::BAD_REQUEST,
            "malformed_request",
            "the request is not valid HTTP/1.1: a malformed request line, a header name or \
             value with a forbidden byte, or conflicting Content-Length / Transfer-Encoding \
             headers",
        ),
        "414" => (
            StatusCode::URI_TOO_LONG,
            "uri_too_long",
            "the request target (path and query) is longer than the server reads",
        ),
        "431" => (
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "headers_too_large",
            "the request head is larger than the server reads (server.max_header_bytes) or has \
             over 100 headers",
        ),
        _ => return None,
    };
    Some(ApiError::bad_request(code, message).with_status(status))
}

/// [`automatic_error`]'s answer as bytes: hyper's status line and headers (`connection:
/// close`, `date`) with a JSON content type, its length and the body.
fn automatic_error_with_body(head: &[u8]) -> Option<Vec<u8>> {
    let (text, error) = automatic_head(head)?;
    let body = error?.body().to_string();
    let mut out = String::with_capacity(text.len() + body.len() + 64);
    for line in text.split("\r\n") {
        let name = line.split_once(':').map(|(n, _)| n);
        if name.is_some_and(|n| n.eq_ignore_ascii_case("content-length")) {
            continue;
        }
        out.push_str(line);
        out.push_str("\r\n");
    }
    out.push_str("content-type: application/json\r\n");
    out.push_str(&format!("content-length: {}\r\n\r\n", body.len()));
    out.push_str(&body);
    Some(out.into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn automatic_error(head: &[u8]) -> Option<ApiError> {
        automatic_head(head).and_then(|(_, error)| error)
    }

    const HYPER_400: &[u8] = b"HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\ndate: Fri, 04 Dec 2026 05:10:26 GMT\r\n\r\n";

    #[test]
    fn hyper_answers_get_json_bodies() {
        let out = String::from_utf8(automatic_error_with_body(HYPER_400).unwrap()).unwrap();
        let (head, body) = out.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 400 Bad Request\r\nconnection: close\r\n"));
        assert!(head.contains("date: Fri"), "{head}");
        assert!(head.contains(&format!("content-length: {}", body.len())));
        assert!(!head.contains("content-length: 0"));
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(json["error"]["code"], "malformed_request");
        let big = b"HTTP/1.1 431 Request Header Fields Too Large\r\nconnection: close\r\ncontent-length: 0\r\n\r\n";
        assert_eq!(automatic_error(big).unwrap().code, "headers_too_large");
        assert_eq!(
            automatic_error(big).unwrap().status,
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
        );
    }

    #[test]
    fn app_answers_pass_through() {
        // The app's own 400s carry a request id and a body.
        let app = b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\nx-request-id: a\r\ncontent-length: 0\r\n\r\n";
        assert!(automatic_error(app).is_none());
        let with_body =
            b"HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 12\r\n\r\n";
        assert!(automatic_error(with_body).is_none());
        assert!(automatic_error(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").is_none());
        assert!(automatic_error(b"{\"HTTP/1.1 400 \": 1}").is_none());
        // A head with more after it (a body chunk) is not an automatic answer.
        let mut more = HYPER_400.to_vec();
        more.extend_from_slice(b"x");
        assert!(automatic_error(&more).is_none());
    }
}
