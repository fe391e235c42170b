//! Raw streams of the Engine API: the 8-byte multiplexed framing used when a container has
//! no tty, and the hijacked HTTP upgrade that attach and exec start use.
//!
//! ```text
//!  client --POST .../attach, Upgrade: tcp--> 101 UPGRADED --> raw bidirectional bytes
//!  no tty: each chunk from the server is [stream, 0, 0, 0, len(u32 BE)] + payload
//! ```

use std::convert::Infallible;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use berth_runtime::protocol::{encode_frame, encode_frames, kind, FrameDecoder};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::ApiError;

/// Stream numbers of the multiplexed framing.
pub const STDOUT: u8 = 1;
pub const STDERR: u8 = 2;

/// One multiplexed frame: header + payload. The shim protocol uses the same header, so
/// this is its encoder.
pub use berth_runtime::protocol::encode_frame as frame;

/// The upgraded connection of a hijacked request.
pub type Hijacked = TokioIo<hyper::upgrade::Upgraded>;

/// Answers a hijack request with `101 UPGRADED` and hands the raw connection to `serve`
/// once the client has it. `tty` picks the content type the CLI expects.
pub fn hijack<F, Fut>(mut req: Request, tty: bool, serve: F) -> Result<Response, ApiError>
where
    F: FnOnce(Hijacked) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let wants_upgrade = req
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("tcp"));
    if !wants_upgrade {
        return Err(ApiError::BadRequest(
            "this endpoint needs a hijacked connection: send Connection: Upgrade, Upgrade: tcp"
                .into(),
        ));
    }
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(up) => serve(TokioIo::new(up)).await,
            Err(e) => tracing::debug!(error = %e, "hijack upgrade failed"),
        }
    });
    let content_type = if tty {
        "application/vnd.docker.raw-stream"
    } else {
        "application/vnd.docker.multiplexed-stream"
    };
    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("tcp"));
    Ok(resp)
}

/// A response body fed by a channel (streams: progress, logs, events, stats, wait).
pub fn channel_body(mut rx: tokio::sync::mpsc::Receiver<Result<Vec<u8>, Infallible>>) -> Body {
    Body::from_stream(futures::stream::poll_fn(move |cx| rx.poll_recv(cx)))
}

/// The same, from an unbounded channel.
pub fn unbounded_body(
    mut rx: tokio::sync::mpsc::UnboundedReceiver<Result<Vec<u8>, Infallible>>,
) -> Body {
    Body::from_stream(futures::stream::poll_fn(move |cx| rx.poll_recv(cx)))
}

/// Copies a shim's output frames to a hijacked client until either side closes: as they are
/// without a tty (they already carry Docker's multiplexed header), payloads only with one.
pub async fn pump_output(
    mut shim: impl AsyncRead + Unpin,
    client: &mut (impl AsyncWrite + Unpin),
    tty: bool,
) {
    let mut buf = vec![0u8; 32 * 1024];
    let mut dec = FrameDecoder::default();
    loop {
        let n = match shim.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if !tty {
            if client.write_all(&buf[..n]).await.is_err() {
                return;
            }
            continue;
        }
        dec.push(&buf[..n]);
        while let Ok(Some((_, payload))) = dec.next_frame() {
            if client.write_all(&payload).await.is_err() {
                return;
            }
        }
    }
}

/// Copies a hijacked client's input to a shim as STDIN frames (after `early`, input that
/// came before the shim was reachable), then STDIN_CLOSE if `close`. A client half-close is
/// not a detach: the write half stays open (the future never returns) until the caller
/// aborts it when the output side ends.
pub async fn pump_stdin(
    mut client: impl AsyncRead + Unpin,
    mut shim: impl AsyncWrite + Unpin,
    early: Vec<u8>,
    client_done: bool,
    close: bool,
) {
    // Early input may exceed one frame's limit: split it.
    if !early.is_empty()
        && shim
            .write_all(&encode_frames(kind::STDIN, &early))
            .await
            .is_err()
    {
        return;
    }
    if !client_done {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match client.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if shim
                        .write_all(&encode_frame(kind::STDIN, &buf[..n]))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            }
        }
    }
    if close {
        let _ = shim.write_all(&encode_frame(kind::STDIN_CLOSE, &[])).await;
    }
    std::future::pending::<()>().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_match_the_transcript() {
        // "\x01\0\0\0\0\0\0\x03hi\n" from docker-run-transcript.txt.
        assert_eq!(
            frame(STDOUT, b"hi\n"),
            b"\x01\x00\x00\x00\x00\x00\x00\x03hi\n"
        );
        let big = vec![7u8; 300];
        let f = frame(STDERR, &big);
        assert_eq!(&f[..8], &[2, 0, 0, 0, 0, 0, 1, 44]);
        assert_eq!(f.len(), 308);
    }
}
