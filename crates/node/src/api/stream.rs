//! Raw streams of the Engine API: the 8-byte multiplexed framing used when a container has
//! no tty, and the hijacked HTTP upgrade that attach and exec start use.
//!
//! ```text
//!  client --POST .../attach, Upgrade: tcp--> 101 UPGRADED --> raw bidirectional bytes
//!  no tty: each chunk from the server is [stream, 0, 0, 0, len(u32 BE)] + payload
//! ```

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use hyper_util::rt::TokioIo;

use super::ApiError;

/// Stream numbers of the multiplexed framing.
pub const STDOUT: u8 = 1;
pub const STDERR: u8 = 2;

/// One multiplexed frame: header + payload.
pub fn frame(stream: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + payload.len());
    out.extend_from_slice(&[stream, 0, 0, 0]);
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

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
