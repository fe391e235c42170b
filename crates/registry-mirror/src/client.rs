//! The registry client: the OCI distribution HTTP API (manifests, blobs, uploads) with
//! authentication and the plain-HTTP policy.
//!
//! Why not `oci-client`: this client drives the distribution API with `reqwest` directly
//! because the pull and push pipelines need (1) blob bodies as byte streams we hash, store
//! and decompress chunk by chunk while counting progress — `oci-client`'s streaming pull
//! hands back a stream but leaves verification, progress and retries-from-store to us
//! anyway, and its push takes whole blobs in memory, which does not fit a 50 MiB layer
//! uploaded from the blob store; (2) a per-host scheme decision (loopback and configured
//! insecure registries over plain HTTP, every other host HTTPS) made by our policy, while
//! `oci-client` fixes the protocol per client; (3) the same request path for the
//! pull-through mirror, which forwards raw manifests and blobs. The amount of protocol is
//! small (GET/HEAD manifest and blob, POST+PUT upload, PUT manifest, token fetch).
//!
//! TLS uses rustls with the `ring` provider (installed as the process default if none is)
//! and the system's root certificates.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::header::{
    HeaderMap, HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE, LOCATION, WWW_AUTHENTICATE,
};
use reqwest::{Method, RequestBuilder, Response, StatusCode};

use crate::auth::{parse_challenge, repository_scope, Challenge, Credentials};
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::manifest::MANIFEST_ACCEPT;

/// The read timeout berthd gives its registry clients, the engine's (pulls, pushes) and its
/// mirror's ([`ClientConfig::read_timeout`]): 30 s without a byte from a registry ends the
/// request (a blob download then resumes from the next source, or fails with nothing
/// stored), so a registry that stops answering fails a `docker pull` instead of hanging
/// it.
pub const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Settings of a [`RegistryClient`].
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Registries (`host` or `host:port`) that may be reached over plain HTTP, in addition
    /// to loopback ones (`localhost`, 127.0.0.0/8, `::1`), which always may.
    pub insecure_registries: Vec<String>,
    /// The `User-Agent` sent.
    pub user_agent: String,
    /// Connect timeout per request.
    pub connect_timeout: Duration,
    /// Read timeout (reqwest's `read_timeout`) of every request that sends no body: the
    /// longest wait for a response's headers, counted from the start of the request, then
    /// for each next chunk of its body. A registry that accepts the connection and then
    /// says nothing fails the request with a transport error (a 503 from a mirror) instead
    /// of holding it forever. Uploads (`PUT`, `PATCH`) go through a client without it: the
    /// clock would run while their body is still being sent. Default `None` (no timeout);
    /// berthd uses [`READ_TIMEOUT`].
    pub read_timeout: Option<Duration>,
    /// Extra trusted CA certificates (PEM), beside the system roots (Docker's
    /// `certs.d/<host>/ca.crt`).
    pub extra_root_certs_pem: Vec<Vec<u8>>,
    /// Pull-through mirrors tried in order before the registry itself (dockerd's
    /// `--registry-mirror`, but for every registry): manifests and blobs of anonymous pulls
    /// are asked of `<url>/v2/<repo>/...?ns=<registry>`; any failure of a mirror (down,
    /// 5xx, 404) falls through to the next one and finally to the registry. Pulls with
    /// credentials always go to the registry directly (a shared cache must not serve
    /// what those credentials unlock to others).
    pub mirrors: Vec<MirrorEndpoint>,
}

/// A pull-through mirror a [`RegistryClient`] pulls through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MirrorEndpoint {
    /// Base URL, e.g. `http://127.0.0.1:5001` (no trailing `/v2`).
    pub url: String,
    /// Whether the mirror writes into the same blob store as the puller using this client
    /// (berthd's own in-process mirror). The puller then lets the mirror store the blob
    /// and only unpacks the stream, instead of storing it a second time; and it never asks
    /// such a mirror for a blob while holding that blob's ingest lock (the mirror needs it).
    pub shares_blob_store: bool,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            insecure_registries: Vec::new(),
            user_agent: concat!("berth/", env!("CARGO_PKG_VERSION")).to_string(),
            connect_timeout: Duration::from_secs(15),
            read_timeout: None,
            extra_root_certs_pem: Vec::new(),
            mirrors: Vec::new(),
        }
    }
}

/// Whether `host` (`name[:port]`) may be reached over plain HTTP: loopback always, plus
/// the configured insecure list (matched with or without the port). As Docker does, such a
/// host is still tried over HTTPS first; plain HTTP is used when no TLS handshake succeeds.
pub fn plain_http_allowed(host: &str, insecure: &[String]) -> bool {
    let bare = strip_port(host);
    if bare.eq_ignore_ascii_case("localhost") {
        return true;
    }
    if let Ok(ip) = bare
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
    {
        if ip.is_loopback() {
            return true;
        }
    }
    insecure.iter().any(|i| i == host || i == bare)
}

fn strip_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest
            .split(']')
            .next()
            .map_or(host, |h| &host[..h.len() + 2]);
    }
    match host.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    }
}

/// One repository on one registry, with the credentials to use for it.
#[derive(Debug, Clone)]
pub struct Repository {
    /// `host[:port]` of the registry API.
    pub host: String,
    /// Repository path (`library/busybox`).
    pub path: String,
    pub credentials: Credentials,
}

/// (registry host, token scope, [`Credentials::identity`]): what a cached
/// `Authorization` value was earned for.
type AuthKey = (String, String, String);

/// Talks the distribution API to any number of registries. Cheap to clone; caches auth
/// tokens per (registry, scope).
#[derive(Debug, Clone)]
pub struct RegistryClient {
    /// Requests without a body, with the configured read timeout.
    http: reqwest::Client,
    /// Uploads (`PUT`, `PATCH`): the same settings without the read timeout.
    uploads: reqwest::Client,
    config: Arc<ClientConfig>,
    /// (registry, scope, credentials identity) -> the `Authorization` value that worked.
    auth_cache: Arc<Mutex<HashMap<AuthKey, String>>>,
    /// Scheme found for hosts allowed plain HTTP (probed once: HTTPS, else HTTP).
    schemes: Arc<Mutex<HashMap<String, &'static str>>>,
}

/// A fetched manifest.
#[derive(Debug, Clone)]
pub struct FetchedManifest {
    pub body: Vec<u8>,
    pub content_type: Option<String>,
    /// The digest of `body` (computed, and checked against the registry's header).
    pub digest: Digest,
}

fn install_crypto_provider() {
    // Both reqwest (here) and quinn use rustls with ring. If another provider was
    // installed first, keep it: any provider works for these connections.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

impl RegistryClient {
    pub fn new(config: ClientConfig) -> Result<Self> {
        install_crypto_provider();
        let build = |read_timeout: Option<Duration>| -> Result<reqwest::Client> {
            let mut builder = reqwest::Client::builder()
                .user_agent(config.user_agent.clone())
                .connect_timeout(config.connect_timeout)
                .pool_idle_timeout(Duration::from_secs(30));
            if let Some(t) = read_timeout {
                builder = builder.read_timeout(t);
            }
            for pem in &config.extra_root_certs_pem {
                let cert =
                    reqwest::Certificate::from_pem(pem).map_err(|source| Error::Transport {
                        url: "<extra root certificate>".into(),
                        source,
                    })?;
                builder = builder.add_root_certificate(cert);
            }
            builder.build().map_err(|source| Error::Transport {
                url: String::new(),
                source,
            })
        };
        let http = build(config.read_timeout)?;
        let uploads = build(None)?;
        Ok(RegistryClient {
            http,
            uploads,
            config: Arc::new(config),
            auth_cache: Arc::default(),
            schemes: Arc::default(),
        })
    }

    /// `https://host`, or for a host allowed plain HTTP, whatever the probe found
    /// (`http://host` before any probe).
    pub fn base_url(&self, host: &str) -> String {
        if !plain_http_allowed(host, &self.config.insecure_registries) {
            return format!("https://{host}");
        }
        let scheme = self
            .schemes
            .lock()
            .expect("scheme cache")
            .get(host)
            .copied()
            .unwrap_or("http");
        format!("{scheme}://{host}")
    }

    /// The base URL for `host`, probing HTTPS once for hosts allowed plain HTTP.
    pub async fn resolve_base_url(&self, host: &str) -> String {
        if !plain_http_allowed(host, &self.config.insecure_registries) {
            return format!("https://{host}");
        }
        if let Some(s) = self.schemes.lock().expect("scheme cache").get(host) {
            return format!("{s}://{host}");
        }
        let probe = self
            .http
            .get(format!("https://{host}/v2/"))
            .timeout(Duration::from_secs(3))
            .send()
            .await;
        let scheme = if probe.is_ok() { "https" } else { "http" };
        self.schemes
            .lock()
            .expect("scheme cache")
            .insert(host.to_string(), scheme);
        format!("{scheme}://{host}")
    }

    /// Sends a request built by `build` (called again for the retry after an auth
    /// challenge), authenticating for `actions` on `repo`.
    async fn send(
        &self,
        repo: &Repository,
        actions: &str,
        method: Method,
        url: &str,
        build: &(dyn Fn(RequestBuilder) -> RequestBuilder + Sync),
    ) -> Result<Response> {
        let scope = repository_scope(&repo.path, actions);
        // Keyed by who asks too: a token or header earned with one client's credentials
        // must never authorise another client's (or an anonymous) request.
        let key = (
            repo.host.clone(),
            scope.clone(),
            repo.credentials.identity(),
        );
        let cached = self
            .auth_cache
            .lock()
            .expect("auth cache")
            .get(&key)
            .cloned();
        let mut attempt_auth = cached.or_else(|| repo.credentials.preemptive_header());
        let mut refused_body = None;
        for attempt in 0..2 {
            let client = if method == Method::PUT || method == Method::PATCH {
                &self.uploads
            } else {
                &self.http
            };
            let mut req = build(client.request(method.clone(), url));
            if let Some(h) = &attempt_auth {
                req = req.header(AUTHORIZATION, h);
            }
            let resp = req.send().await.map_err(|source| Error::Transport {
                url: url.to_string(),
                source,
            })?;
            if resp.status() != StatusCode::UNAUTHORIZED {
                return Ok(resp);
            }
            if attempt == 1 {
                refused_body = Some(errcode_message(&resp.bytes().await.unwrap_or_default()));
                break;
            }
            let challenge = resp
                .headers()
                .get(WWW_AUTHENTICATE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            let header = self
                .answer_challenge(repo, &scope, &challenge, method.as_str(), url)
                .await?;
            self.auth_cache
                .lock()
                .expect("auth cache")
                .insert(key.clone(), header.clone());
            attempt_auth = Some(header);
        }
        // Refused with the credentials sent: the registry's own words, as dockerd reports
        // them ("unauthorized: authentication required").
        Err(Error::Unauthorized {
            registry: repo.host.clone(),
            scope,
            status: 401,
            message: refused_body.unwrap_or_else(|| "unauthorized: authentication required".into()),
        })
    }

    async fn answer_challenge(
        &self,
        repo: &Repository,
        scope: &str,
        challenge: &str,
        method: &str,
        url: &str,
    ) -> Result<String> {
        let refused = |status: u16, message: String| Error::Unauthorized {
            registry: repo.host.clone(),
            scope: scope.to_string(),
            status,
            message,
        };
        match parse_challenge(challenge) {
            Some(Challenge::Basic { .. }) => repo.credentials.basic_header().ok_or_else(|| {
                refused(
                    401,
                    format!("{} {url:?}: no basic auth credentials", go_method(method)),
                )
            }),
            Some(Challenge::Bearer { realm, service, .. }) => {
                match self
                    .request_token(
                        &repo.host,
                        &realm,
                        service.as_deref(),
                        Some(scope),
                        &repo.credentials,
                        challenge,
                    )
                    .await?
                {
                    Ok(token) => Ok(format!("Bearer {token}")),
                    Err((status, message)) => Err(refused(
                        status,
                        format!("{} {url:?}: {message}", go_method(method)),
                    )),
                }
            }
            None => Err(Error::UnsupportedChallenge {
                registry: repo.host.clone(),
                challenge: challenge.to_string(),
            }),
        }
    }

    /// The token flow of the distribution spec ("Token Authentication Specification"):
    /// `GET <realm>?service=..&scope=..` with the credentials as Basic auth. `Ok(Err((status,
    /// message)))` when the token server refuses them (401/403), `message` worded as
    /// dockerd words it ("unauthorized: incorrect username or password": the server's
    /// `details`, else its error message, else "authentication required").
    async fn request_token(
        &self,
        registry: &str,
        realm: &str,
        service: Option<&str>,
        scope: Option<&str>,
        credentials: &Credentials,
        challenge: &str,
    ) -> Result<std::result::Result<String, (u16, String)>> {
        let mut url = url::Url::parse(realm).map_err(|_| Error::UnsupportedChallenge {
            registry: registry.to_string(),
            challenge: challenge.to_string(),
        })?;
        {
            let mut q = url.query_pairs_mut();
            if let Some(s) = service {
                q.append_pair("service", s);
            }
            if let Some(s) = scope {
                q.append_pair("scope", s);
            }
            q.append_pair("client_id", "berth");
        }
        let mut req = self.http.get(url.as_str());
        if let Some(b) = credentials.basic_header() {
            req = req.header(AUTHORIZATION, b);
        }
        let resp = req.send().await.map_err(|source| Error::Transport {
            url: realm.to_string(),
            source,
        })?;
        let status = resp.status();
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            let body = resp.bytes().await.unwrap_or_default();
            return Ok(Err((status.as_u16(), token_refusal(&body))));
        }
        let resp = check_status(resp, "GET", realm).await?;
        let body = resp.bytes().await.map_err(|source| Error::Transport {
            url: realm.to_string(),
            source,
        })?;
        #[derive(serde::Deserialize)]
        struct Token {
            token: Option<String>,
            access_token: Option<String>,
        }
        let missing = || Error::TokenMissing {
            registry: registry.to_string(),
            realm: realm.to_string(),
        };
        let t: Token = serde_json::from_slice(&body).map_err(|_| missing())?;
        t.token
            .or(t.access_token)
            .filter(|t| !t.is_empty())
            .map(Ok)
            .ok_or_else(missing)
    }

    /// `docker login`'s check of `credentials` against the registry at `host` (dockerd
    /// 20.10, registry/auth.go `loginV2`): `GET /v2/`; on a 401 the challenge is answered
    /// (Basic: the credentials; Bearer: a token from the realm, no scope) and `/v2/` asked
    /// again, which must answer 200. A registry that answers 200 without credentials
    /// accepts any login, as with dockerd. Errors carry dockerd's messages:
    /// `login attempt to http://h/v2/ failed with status: 401 Unauthorized` (Basic, wrong
    /// credentials), `Get "http://h/v2/": no basic auth credentials`, `Get
    /// "https://h/v2/": unauthorized: <token server's words>` (Bearer; the only
    /// [`Error::LoginFailed`] with `unauthorized`), `Get "http://h/v2/": <connection
    /// error>`. Hosts allowed plain HTTP are tried over HTTPS first, as everywhere.
    pub async fn login(&self, host: &str, credentials: &Credentials) -> Result<()> {
        let url = format!("{}/v2/", self.resolve_base_url(host).await);
        let failed = |message: String, unauthorized: bool| Error::LoginFailed {
            message,
            unauthorized,
        };
        let get = |auth: Option<String>| {
            let mut req = self.http.get(&url);
            if let Some(a) = auth {
                req = req.header(AUTHORIZATION, a);
            }
            async {
                req.send()
                    .await
                    .map_err(|e| failed(format!("Get {url:?}: {}", innermost(&e)), false))
            }
        };
        let resp = get(credentials.preemptive_header()).await?;
        let status_failure = |s: StatusCode| {
            failed(
                format!(
                    "login attempt to {url} failed with status: {} {}",
                    s.as_u16(),
                    s.canonical_reason().unwrap_or("")
                ),
                false,
            )
        };
        let auth = match resp.status() {
            StatusCode::OK => return Ok(()),
            StatusCode::UNAUTHORIZED => {
                let challenge =
                    header_str(resp.headers(), WWW_AUTHENTICATE.as_str()).unwrap_or_default();
                match parse_challenge(&challenge) {
                    Some(Challenge::Basic { .. }) => {
                        credentials.basic_header().ok_or_else(|| {
                            failed(format!("Get {url:?}: no basic auth credentials"), false)
                        })?
                    }
                    Some(Challenge::Bearer { realm, service, .. }) => {
                        match self
                            .request_token(
                                host,
                                &realm,
                                service.as_deref(),
                                None,
                                credentials,
                                &challenge,
                            )
                            .await
                        {
                            Ok(Ok(token)) => format!("Bearer {token}"),
                            Ok(Err((_, message))) => {
                                return Err(failed(format!("Get {url:?}: {message}"), true))
                            }
                            Err(e) => return Err(failed(format!("Get {url:?}: {e}"), false)),
                        }
                    }
                    None => return Err(status_failure(resp.status())),
                }
            }
            other => return Err(status_failure(other)),
        };
        let resp = get(Some(auth)).await?;
        match resp.status() {
            StatusCode::OK => Ok(()),
            other => Err(status_failure(other)),
        }
    }

    /// `docker search` against a registry's V1 search API (`GET /v1/search?q=&n=`, the
    /// only search API Docker speaks; the Distribution registry has none): the JSON body
    /// of a 200 (`{"num_results", "query", "results": [...]}`). Any other status is
    /// [`Error::SearchUnavailable`] ("Unexpected status code 404", dockerd's words).
    pub async fn search(&self, host: &str, term: &str, limit: u32) -> Result<bytes::Bytes> {
        let mut url = url::Url::parse(&format!("{}/v1/search", self.resolve_base_url(host).await))
            .map_err(|_| Error::InvalidReference {
                input: host.to_string(),
                kind: crate::error::ReferenceErrorKind::Format,
            })?;
        url.query_pairs_mut()
            .append_pair("q", term)
            .append_pair("n", &limit.to_string());
        let url = url.to_string();
        let resp = self
            .http
            .get(&url)
            .send()
            .await
            .map_err(|source| Error::Transport {
                url: url.clone(),
                source,
            })?;
        if resp.status() != StatusCode::OK {
            return Err(Error::SearchUnavailable {
                status: resp.status().as_u16(),
            });
        }
        resp.bytes()
            .await
            .map_err(|source| Error::Transport { url, source })
    }

    async fn url(&self, repo: &Repository, rest: &str) -> String {
        format!(
            "{}/v2/{}/{rest}",
            self.resolve_base_url(&repo.host).await,
            repo.path
        )
    }

    /// The mirrors an anonymous request for `repo` may go through (`shared`: include those
    /// sharing our blob store).
    fn mirrors_for(&self, repo: &Repository, shared: bool) -> Vec<&MirrorEndpoint> {
        if repo.credentials != Credentials::Anonymous {
            return Vec::new();
        }
        self.config
            .mirrors
            .iter()
            .filter(|m| shared || !m.shares_blob_store)
            .collect()
    }

    fn mirror_url(m: &MirrorEndpoint, repo: &Repository, rest: &str) -> String {
        let mut url = format!("{}/v2/{}/{rest}", m.url.trim_end_matches('/'), repo.path);
        url.push_str("?ns=");
        url.push_str(
            &url::form_urlencoded::byte_serialize(repo.host.as_bytes()).collect::<String>(),
        );
        url
    }

    /// GETs `rest` of `repo` from the first mirror that answers 200.
    async fn get_from_mirrors(
        &self,
        mirrors: &[&MirrorEndpoint],
        repo: &Repository,
        rest: &str,
        accept: Option<&str>,
    ) -> Option<(Response, String)> {
        for m in mirrors {
            let url = Self::mirror_url(m, repo, rest);
            let mut req = self.http.get(&url);
            if let Some(a) = accept {
                req = req.header(ACCEPT, a);
            }
            match req.send().await {
                Ok(resp) if resp.status() == StatusCode::OK => return Some((resp, url)),
                Ok(resp) => {
                    tracing::debug!(%url, status = %resp.status(), "mirror did not serve; trying the next source")
                }
                Err(e) => {
                    tracing::debug!(%url, error = %e, "mirror unreachable; trying the next source")
                }
            }
        }
        None
    }

    /// GETs a manifest by tag or digest, through the configured mirrors first. The body's
    /// digest is computed and checked against `reference` when it is a digest, and against
    /// `Docker-Content-Digest` when sent.
    pub async fn get_manifest(
        &self,
        repo: &Repository,
        reference: &str,
    ) -> Result<FetchedManifest> {
        let rest = format!("manifests/{reference}");
        let mirrors = self.mirrors_for(repo, true);
        if let Some((resp, url)) = self
            .get_from_mirrors(&mirrors, repo, &rest, Some(MANIFEST_ACCEPT))
            .await
        {
            match Self::read_manifest(resp, &url, reference).await {
                Ok(m) => return Ok(m),
                Err(e) => {
                    tracing::warn!(%url, error = %e, "bad manifest from mirror; asking the registry")
                }
            }
        }
        match self.get_manifest_direct(repo, reference).await {
            // No mirror had it and the registry cannot be reached: say both.
            Err(e) if e.is_retryable() && !mirrors.is_empty() => Err(Error::TagNotCached {
                reference: format!("{}/{}:{reference}", repo.host, repo.path),
                source: Box::new(e),
            }),
            other => other,
        }
    }

    /// GETs a manifest from the registry itself (never through a mirror).
    pub async fn get_manifest_direct(
        &self,
        repo: &Repository,
        reference: &str,
    ) -> Result<FetchedManifest> {
        let url = self.url(repo, &format!("manifests/{reference}")).await;
        let resp = self
            .send(repo, "pull", Method::GET, &url, &|r| {
                r.header(ACCEPT, MANIFEST_ACCEPT)
            })
            .await?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Err(Error::ManifestNotFound {
                reference: format!("{}/{}:{reference}", repo.host, repo.path),
            });
        }
        let resp = check_status(resp, "GET", &url).await?;
        Self::read_manifest(resp, &url, reference).await
    }

    async fn read_manifest(resp: Response, url: &str, reference: &str) -> Result<FetchedManifest> {
        let content_type = header_str(resp.headers(), CONTENT_TYPE.as_str());
        let header_digest = header_str(resp.headers(), "docker-content-digest");
        let body = resp.bytes().await.map_err(|source| Error::Transport {
            url: url.to_string(),
            source,
        })?;
        let digest = Digest::of(&body);
        let expected = match Digest::parse(reference) {
            Ok(d) => Some(d),
            Err(_) => header_digest.as_deref().and_then(|h| Digest::parse(h).ok()),
        };
        if let Some(expected) = expected {
            if expected != digest {
                return Err(Error::DigestMismatch {
                    what: "manifest",
                    expected,
                    actual: digest,
                });
            }
        }
        Ok(FetchedManifest {
            body: body.to_vec(),
            content_type,
            digest,
        })
    }

    /// GETs `/v2/<repo>/tags/list` from the registry itself; returns the JSON body.
    pub async fn list_tags(&self, repo: &Repository) -> Result<bytes::Bytes> {
        let url = self.url(repo, "tags/list").await;
        let resp = self.send(repo, "pull", Method::GET, &url, &|r| r).await?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Err(Error::ManifestNotFound {
                reference: format!("{}/{}", repo.host, repo.path),
            });
        }
        let resp = check_status(resp, "GET", &url).await?;
        resp.bytes()
            .await
            .map_err(|source| Error::Transport { url, source })
    }

    /// Whether the first mirror an anonymous pull of `repo` asks shares the caller's blob
    /// store (see [`MirrorEndpoint::shares_blob_store`]). Mirrors are asked in the order
    /// configured: berthd lists `--registry-mirror`s (other nodes) before its own, so a
    /// node set up to use another node's mirror fetches through that one.
    pub fn shared_store_mirror_first(&self, repo: &Repository) -> bool {
        self.mirrors_for(repo, true)
            .first()
            .is_some_and(|m| m.shares_blob_store)
    }

    /// Starts a blob download from a mirror that shares our blob store, if one answers.
    /// When the body has been read to its end, that mirror has verified and stored the
    /// blob. Do not call while holding the blob's ingest lock.
    pub async fn get_blob_from_shared_store_mirror(
        &self,
        repo: &Repository,
        digest: &Digest,
    ) -> Option<Response> {
        let shared: Vec<&MirrorEndpoint> = self
            .mirrors_for(repo, true)
            .into_iter()
            .filter(|m| m.shares_blob_store)
            .collect();
        self.get_from_mirrors(&shared, repo, &format!("blobs/{digest}"), None)
            .await
            .map(|(r, _)| r)
    }

    /// Starts a blob download through the mirrors (all of them), then the registry; the
    /// caller streams and verifies the body. Do not hold the blob's ingest lock: a mirror
    /// sharing the store would wait for it (use [`RegistryClient::get_blob_locked`]).
    pub async fn get_blob(&self, repo: &Repository, digest: &Digest) -> Result<Response> {
        self.get_blob_via(repo, digest, true).await
    }

    /// Like [`RegistryClient::get_blob`], skipping mirrors that share our blob store: for
    /// callers holding the blob's ingest lock.
    pub async fn get_blob_locked(&self, repo: &Repository, digest: &Digest) -> Result<Response> {
        self.get_blob_via(repo, digest, false).await
    }

    async fn get_blob_via(
        &self,
        repo: &Repository,
        digest: &Digest,
        shared_store_mirrors: bool,
    ) -> Result<Response> {
        let mirrors = self.mirrors_for(repo, shared_store_mirrors);
        if let Some((resp, _)) = self
            .get_from_mirrors(&mirrors, repo, &format!("blobs/{digest}"), None)
            .await
        {
            return Ok(resp);
        }
        self.get_blob_direct(repo, digest).await
    }

    /// Starts a blob download from the registry itself (never a mirror); the caller
    /// streams and verifies the body.
    pub async fn get_blob_direct(&self, repo: &Repository, digest: &Digest) -> Result<Response> {
        let url = self.url(repo, &format!("blobs/{digest}")).await;
        let resp = self.send(repo, "pull", Method::GET, &url, &|r| r).await?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Err(Error::BlobNotFound {
                repository: format!("{}/{}", repo.host, repo.path),
                digest: digest.clone(),
            });
        }
        check_status(resp, "GET", &url).await
    }

    /// Starts a blob download from the registry itself from byte `offset` (`Range:
    /// bytes=<offset>-`, OCI distribution spec, "Pulling blobs"): a resumed transfer. The
    /// response is a 206 with the rest, or a 200 with the whole blob from a registry
    /// that ignores ranges (the caller skips `offset` bytes then).
    pub async fn get_blob_from(
        &self,
        repo: &Repository,
        digest: &Digest,
        offset: u64,
    ) -> Result<Response> {
        if offset == 0 {
            return self.get_blob_direct(repo, digest).await;
        }
        let url = self.url(repo, &format!("blobs/{digest}")).await;
        let range = format!("bytes={offset}-");
        let resp = self
            .send(repo, "pull", Method::GET, &url, &|r| {
                r.header(reqwest::header::RANGE, range.clone())
            })
            .await?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Err(Error::BlobNotFound {
                repository: format!("{}/{}", repo.host, repo.path),
                digest: digest.clone(),
            });
        }
        check_status(resp, "GET", &url).await
    }

    /// HEADs a blob: its size if the registry has it.
    pub async fn blob_exists(
        &self,
        repo: &Repository,
        digest: &Digest,
        actions: &str,
    ) -> Result<Option<u64>> {
        let url = self.url(repo, &format!("blobs/{digest}")).await;
        let resp = self.send(repo, actions, Method::HEAD, &url, &|r| r).await?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let resp = check_status(resp, "HEAD", &url).await?;
        Ok(resp.content_length().or(Some(0)))
    }

    /// Uploads a blob (monolithic POST-then-PUT) whose bytes `body` produces; `body` is
    /// called again if the upload must be retried after an auth challenge.
    pub async fn upload_blob(
        &self,
        repo: &Repository,
        digest: &Digest,
        size: u64,
        body: &(dyn Fn() -> reqwest::Body + Sync),
    ) -> Result<()> {
        let start = self.url(repo, "blobs/uploads/").await;
        let resp = self
            .send(repo, "pull,push", Method::POST, &start, &|r| {
                r.header("content-length", "0")
            })
            .await?;
        let resp = check_status(resp, "POST", &start).await?;
        let location =
            header_str(resp.headers(), LOCATION.as_str()).ok_or_else(|| Error::RegistryStatus {
                method: "POST",
                url: start.clone(),
                status: resp.status().as_u16(),
                body: "upload started without a Location header".into(),
            })?;
        let mut put = if location.starts_with('/') {
            url::Url::parse(&format!("{}{location}", self.base_url(&repo.host)))
        } else {
            url::Url::parse(&location)
        }
        .map_err(|_| Error::RegistryStatus {
            method: "POST",
            url: start.clone(),
            status: 202,
            body: format!("bad upload Location {location:?}"),
        })?;
        put.query_pairs_mut()
            .append_pair("digest", &digest.to_string());
        let put = put.to_string();
        let resp = self
            .send(repo, "pull,push", Method::PUT, &put, &|r| {
                r.header(CONTENT_TYPE, "application/octet-stream")
                    .header("content-length", size)
                    .body(body())
            })
            .await?;
        check_status(resp, "PUT", &put).await?;
        Ok(())
    }

    /// PUTs a manifest under a tag or digest; returns the digest the registry reports.
    pub async fn put_manifest(
        &self,
        repo: &Repository,
        reference: &str,
        media_type: &str,
        body: &[u8],
    ) -> Result<Option<String>> {
        let url = self.url(repo, &format!("manifests/{reference}")).await;
        let body = bytes::Bytes::copy_from_slice(body);
        let resp = self
            .send(repo, "pull,push", Method::PUT, &url, &|r| {
                r.header(CONTENT_TYPE, media_type).body(body.clone())
            })
            .await?;
        let resp = check_status(resp, "PUT", &url).await?;
        Ok(header_str(resp.headers(), "docker-content-digest"))
    }
}

fn header_str(h: &HeaderMap<HeaderValue>, name: &str) -> Option<String> {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// Go's spelling of an HTTP method in `net/url` errors (`Get "url": ...`).
fn go_method(m: &str) -> String {
    let lower = m.to_ascii_lowercase();
    let mut c = lower.chars();
    match c.next() {
        Some(f) => f.to_ascii_uppercase().to_string() + c.as_str(),
        None => String::new(),
    }
}

/// The innermost cause of a transport error ("Connection refused (os error 111)").
fn innermost(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

/// A registry's error body (distribution spec, "Errors") as Docker prints it:
/// `<code in lower case, _ as space>: <message>`, e.g. "unauthorized: authentication
/// required". Without such a body: "unauthorized: authentication required".
pub fn errcode_message(body: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct Errors {
        errors: Vec<ErrCode>,
    }
    #[derive(serde::Deserialize)]
    struct ErrCode {
        code: String,
        #[serde(default)]
        message: String,
    }
    match serde_json::from_slice::<Errors>(body) {
        Ok(e) if !e.errors.is_empty() => e
            .errors
            .iter()
            .map(|e| {
                let code = e.code.to_ascii_lowercase().replace('_', " ");
                if e.message.is_empty() {
                    code
                } else {
                    format!("{code}: {}", e.message)
                }
            })
            .collect::<Vec<_>>()
            .join("; "),
        _ => "unauthorized: authentication required".to_string(),
    }
}

/// A token server's refusal as Docker's token handler words it (docker/distribution
/// registry/client `HandleErrorResponse` for 401): `{"details": ...}` (Docker Hub's form)
/// becomes "unauthorized: <details>", an error body its own text, anything else
/// "unauthorized: authentication required".
fn token_refusal(body: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct Details {
        details: String,
    }
    if let Ok(d) = serde_json::from_slice::<Details>(body) {
        if !d.details.is_empty() {
            return format!("unauthorized: {}", d.details);
        }
    }
    errcode_message(body)
}

async fn check_status(resp: Response, method: &'static str, url: &str) -> Result<Response> {
    if resp.status().is_success() {
        return Ok(resp);
    }
    let status = resp.status().as_u16();
    let mut body = resp.text().await.unwrap_or_default();
    body.truncate(512);
    Err(Error::RegistryStatus {
        method,
        url: url.to_string(),
        status,
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_only_for_loopback_and_configured_hosts() {
        let insecure = vec!["reg.lan:5000".to_string(), "other.lan".to_string()];
        for h in [
            "localhost",
            "localhost:5000",
            "127.0.0.1:5000",
            "127.9.9.9",
            "[::1]:5000",
        ] {
            assert!(plain_http_allowed(h, &[]), "{h}");
        }
        assert!(plain_http_allowed("reg.lan:5000", &insecure));
        assert!(!plain_http_allowed("reg.lan:5001", &insecure));
        assert!(plain_http_allowed("other.lan:443", &insecure));
        for h in [
            "registry-1.docker.io",
            "10.0.0.1:5000",
            "localhost.evil.com",
            "[::2]:5000",
        ] {
            assert!(!plain_http_allowed(h, &insecure), "{h}");
        }
    }

    #[test]
    fn base_url_uses_https_unless_plain_http_is_allowed() {
        let c = RegistryClient::new(ClientConfig {
            insecure_registries: vec!["reg.lan:5000".into()],
            ..ClientConfig::default()
        })
        .unwrap();
        assert_eq!(
            c.base_url("registry-1.docker.io"),
            "https://registry-1.docker.io"
        );
        assert_eq!(c.base_url("ghcr.io:443"), "https://ghcr.io:443");
        assert_eq!(c.base_url("127.0.0.1:5000"), "http://127.0.0.1:5000");
        assert_eq!(c.base_url("reg.lan:5000"), "http://reg.lan:5000");
    }
}
