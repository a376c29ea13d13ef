//! Inbound media: downloaded through the Graph API (media id → URL → bytes with the token)
//! into `media.dir`, checked against the sha256 Meta sent, recorded with its path and MIME
//! type; voice notes are transcribed through an OpenAI-compatible `/audio/transcriptions`
//! endpoint when `media.transcription` is set, and the text goes to the flow or bot as the
//! user's message. Runs off the conversation; the result comes back as an event.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use rust_decimal::Decimal;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::Settings;
use crate::store::NewDeadLetter;

/// The dead-letter kind of a media message whose id is not in Meta's form: nothing was asked
/// of the Graph API for it.
pub const MEDIA_ID_INVALID: &str = "media_id_invalid";

/// Media files are readable by the daemon's user only, and so are their folders, whatever
/// the process umask.
const FILE_MODE: u32 = 0o600;
const DIR_MODE: u32 = 0o700;

/// A media id in Meta's form: a Graph object id, ASCII digits only (64-bit ids have at most
/// 20; up to [`MediaId::MAX_LEN`] are taken). Only this ever goes into a Graph URL or a file
/// name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MediaId(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MediaIdError {
    #[error("the media id is empty")]
    Empty,
    #[error("the media id is {0} bytes long; at most {max} are taken", max = MediaId::MAX_LEN)]
    TooLong(usize),
    #[error("the media id {0:?} has a character other than an ASCII digit")]
    NotDigits(String),
}

impl MediaId {
    pub const MAX_LEN: usize = 32;

    pub fn parse(s: &str) -> Result<MediaId, MediaIdError> {
        if s.is_empty() {
            Err(MediaIdError::Empty)
        } else if s.len() > Self::MAX_LEN {
            Err(MediaIdError::TooLong(s.len()))
        } else if !s.bytes().all(|b| b.is_ascii_digit()) {
            Err(MediaIdError::NotDigits(s.to_string()))
        } else {
            Ok(MediaId(s.to_string()))
        }
    }
}

impl AsRef<str> for MediaId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for MediaId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A media message to fetch (and, for a voice note, transcribe).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MediaFetch {
    /// As the webhook carried it; see [`MediaFetch::id`].
    pub media_id: String,
    /// image | video | audio | document | sticker
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mime_type: Option<String>,
    /// As Meta sent it in the webhook (hex or base64).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// A voice note to transcribe.
    #[serde(default)]
    pub transcribe: bool,
}

impl MediaFetch {
    /// The id to look up, if it is in Meta's form.
    pub fn id(&self) -> Result<MediaId, MediaIdError> {
        MediaId::parse(&self.media_id)
    }

    /// What becomes of a fetch whose id is not in Meta's form: nothing is downloaded, and the
    /// message is kept for a human (the conversation still gets the message itself).
    pub fn refused(
        &self,
        account: &str,
        user_key: &str,
        why: &MediaIdError,
    ) -> (MediaResult, NewDeadLetter) {
        let result = MediaResult {
            media_id: self.media_id.clone(),
            path: None,
            mime_type: self.mime_type.clone(),
            bytes: 0,
            transcript: None,
            error: Some(why.to_string()),
        };
        let letter = NewDeadLetter {
            kind: MEDIA_ID_INVALID,
            account: Some(account.to_string().into()),
            user_key: Some(user_key.to_string().into()),
            ref_id: None,
            reason: format!("{} media not fetched: {why}", self.kind),
            raw: serde_json::to_vec(self).ok(),
        };
        (result, letter)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Transcript {
    pub text: String,
    #[serde(default)]
    pub language: Option<String>,
    #[serde(default)]
    pub duration_secs: Option<Decimal>,
    pub provider: String,
    pub cost: Decimal,
}

/// What became of a fetch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MediaResult {
    pub media_id: String,
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub mime_type: Option<String>,
    #[serde(default)]
    pub bytes: u64,
    #[serde(default)]
    pub transcript: Option<Transcript>,
    #[serde(default)]
    pub error: Option<String>,
}

impl MediaResult {
    /// The store's row for this result.
    pub fn row<'a>(
        &'a self,
        account: &'a crate::domain::AccountId,
        user_key: &'a crate::domain::UserKey,
    ) -> crate::store::MediaRow<'a> {
        let t = self.transcript.as_ref();
        crate::store::MediaRow {
            account,
            media_id: &self.media_id,
            user_key,
            path: self.path.clone(),
            mime_type: self.mime_type.clone(),
            bytes: self.bytes,
            transcript: t.map(|t| t.text.clone()),
            language: t.and_then(|t| t.language.clone()),
            duration_secs: t.and_then(|t| t.duration_secs.map(|d| d.to_string())),
            provider: t.map(|t| t.provider.clone()),
            cost: t.map(|t| t.cost.to_string()),
            error: self.error.clone(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    #[error("Graph API: {0}")]
    Graph(String),
    #[error("the file is larger than media.max_bytes ({0} bytes)")]
    TooLarge(u64),
    #[error("sha256 mismatch: Meta said {expected}, the file is {actual}")]
    Checksum { expected: String, actual: String },
    #[error("writing the file: {0}")]
    Io(#[from] std::io::Error),
    #[error("the account {0:?} is not a phone number id")]
    Account(String),
    #[error("transcription: {0}")]
    Transcription(String),
}

/// Does `digest` match what Meta sent (lowercase/uppercase hex, or base64)?
fn same_digest(expected: &str, digest: &[u8]) -> bool {
    let e = expected.trim();
    e.eq_ignore_ascii_case(&hex::encode(digest)) || e == base64_encode(digest)
}

fn base64_encode(bytes: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A file name extension for a MIME type.
fn extension(mime: &str) -> &'static str {
    match mime.split(';').next().unwrap_or("").trim() {
        "image/jpeg" => "jpg",
        "image/png" => "png",
        "image/webp" => "webp",
        "audio/ogg" => "ogg",
        "audio/mpeg" => "mp3",
        "audio/mp4" | "audio/aac" => "m4a",
        "audio/amr" => "amr",
        "video/mp4" => "mp4",
        "video/3gpp" => "3gp",
        "application/pdf" => "pdf",
        "text/plain" => "txt",
        _ => "bin",
    }
}

/// The media lookup's answer. Meta's OpenAPI file types `file_size` as a string (its example
/// is `"303833"`) while answers have carried a number: either is taken, and a size that does
/// not parse is unknown (the download is bounded by `media.max_bytes` all the same).
#[derive(Debug, Deserialize)]
struct MediaInfo {
    url: String,
    #[serde(default)]
    mime_type: Option<String>,
    #[serde(default, deserialize_with = "size_number_or_string")]
    file_size: Option<u64>,
}

fn size_number_or_string<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Size {
        Number(u64),
        Text(String),
        Other(serde::de::IgnoredAny),
    }
    Ok(match Option::<Size>::deserialize(d)? {
        Some(Size::Number(n)) => Some(n),
        Some(Size::Text(s)) => s.trim().parse().ok(),
        Some(Size::Other(_)) | None => None,
    })
}

/// Write `data` as `<dir>/<account>/<id>.<ext>` (one name per account and media id, both
/// digits), 0600 in 0700 folders. It is written under a name of its own and renamed into
/// place, so two fetches of one media never mix their bytes.
async fn store_file(
    dir: &Path,
    account: &str,
    id: &MediaId,
    ext: &str,
    data: &[u8],
) -> Result<PathBuf, MediaError> {
    private_dir(dir, true).await?;
    let dir = dir.join(account);
    private_dir(&dir, false).await?;
    let path = dir.join(format!("{id}.{ext}"));
    let tmp = dir.join(format!(".{id}.{:016x}.part", fastrand::u64(..)));
    let written = async {
        let mut file = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(FILE_MODE)
            .open(&tmp)
            .await?;
        // The umask can only have narrowed it; make it exactly 0600.
        file.set_permissions(std::fs::Permissions::from_mode(FILE_MODE))
            .await?;
        tokio::io::AsyncWriteExt::write_all(&mut file, data).await?;
        tokio::io::AsyncWriteExt::flush(&mut file).await?;
        drop(file);
        tokio::fs::rename(&tmp, &path).await
    }
    .await;
    if let Err(e) = written {
        let _ = tokio::fs::remove_file(&tmp).await;
        return Err(e.into());
    }
    Ok(path)
}

/// Make `dir` (with its missing parents when `parents`) a folder only the daemon's user can
/// read: created 0700, and an existing one with a wider mode narrowed to 0700.
async fn private_dir(dir: &Path, parents: bool) -> Result<(), MediaError> {
    let mut builder = tokio::fs::DirBuilder::new();
    builder.recursive(parents).mode(DIR_MODE);
    match builder.create(dir).await {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e.into()),
    }
    let mode = tokio::fs::metadata(dir).await?.permissions().mode() & 0o777;
    if mode != DIR_MODE {
        if let Err(e) =
            tokio::fs::set_permissions(dir, std::fs::Permissions::from_mode(DIR_MODE)).await
        {
            // Not ours to change (another owner): the files in it are 0600 all the same.
            tracing::warn!(dir = %dir.display(), mode = format!("{mode:o}"), error = %e, "Media folder is not private and its mode cannot be changed.");
        }
    }
    Ok(())
}

/// Fetches media for every account.
#[derive(Clone)]
pub struct MediaFetcher {
    http: reqwest::Client,
    dir: PathBuf,
    max_bytes: u64,
    graph_base: String,
    api_version: String,
    transcription: Option<TranscriptionTarget>,
}

#[derive(Clone)]
struct TranscriptionTarget {
    provider: String,
    base_url: String,
    api_key: SecretString,
    model: String,
    price_per_minute: Decimal,
    /// The provider's `timeout` for one request, and its `concurrency` (transcriptions in
    /// flight at once).
    timeout: Duration,
    permits: std::sync::Arc<tokio::sync::Semaphore>,
}

impl MediaFetcher {
    pub fn new(settings: &Settings) -> Result<MediaFetcher, reqwest::Error> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .redirect(reqwest::redirect::Policy::none())
            .retry(reqwest::retry::never().max_retries_per_request(0))
            .build()?;
        let transcription = settings.media.transcription.as_ref().and_then(|t| {
            let p = settings.ai.providers.get(&t.provider)?;
            Some(TranscriptionTarget {
                provider: t.provider.clone(),
                base_url: p.base_url.trim_end_matches('/').to_string(),
                api_key: p.api_key.clone(),
                model: t.model.clone(),
                price_per_minute: Decimal::from_str(&t.price_per_minute).unwrap_or_default(),
                timeout: p.timeout,
                permits: std::sync::Arc::new(tokio::sync::Semaphore::new(p.concurrency.max(1))),
            })
        });
        Ok(MediaFetcher {
            http,
            dir: settings.media.dir.clone(),
            max_bytes: settings.media.max_bytes,
            graph_base: settings
                .whatsapp
                .graph_base_url
                .trim_end_matches('/')
                .to_string(),
            api_version: settings.whatsapp.api_version.clone(),
            transcription,
        })
    }

    pub fn transcribes(&self) -> bool {
        self.transcription.is_some()
    }

    /// Download, check, store and (for a voice note) transcribe media `id` (that of `f`).
    /// Never fails: the result carries the error.
    pub async fn fetch(
        &self,
        account: &str,
        token: &SecretString,
        id: &MediaId,
        f: &MediaFetch,
    ) -> MediaResult {
        match self.try_fetch(account, token, id, f).await {
            Ok(r) => r,
            Err(e) => MediaResult {
                media_id: f.media_id.clone(),
                path: None,
                mime_type: f.mime_type.clone(),
                bytes: 0,
                transcript: None,
                error: Some(e.to_string()),
            },
        }
    }

    async fn try_fetch(
        &self,
        account: &str,
        token: &SecretString,
        id: &MediaId,
        f: &MediaFetch,
    ) -> Result<MediaResult, MediaError> {
        // The folder is named after the account: config checks it is digits; so is this.
        if account.is_empty() || !account.bytes().all(|b| b.is_ascii_digit()) {
            return Err(MediaError::Account(account.to_string()));
        }
        let meta_url = format!("{}/{}/{id}", self.graph_base, self.api_version);
        let resp = self.get(&meta_url, token, "media lookup").await?;
        let info: MediaInfo = resp
            .json()
            .await
            .map_err(|e| MediaError::Graph(format!("media lookup: {}", e.without_url())))?;
        if info.file_size.is_some_and(|n| n > self.max_bytes) {
            return Err(MediaError::TooLarge(self.max_bytes));
        }
        if !download_url_allowed(&info.url, &self.graph_base) {
            // The token goes with the download: never in clear, whatever the lookup said.
            return Err(MediaError::Graph(
                "media lookup: the download URL is neither https nor on the Graph API's host"
                    .into(),
            ));
        }
        let mut resp = self.get(&info.url, token, "download").await?;
        let mut data = Vec::new();
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| MediaError::Graph(e.without_url().to_string()))?
        {
            if (data.len() + chunk.len()) as u64 > self.max_bytes {
                return Err(MediaError::TooLarge(self.max_bytes));
            }
            data.extend_from_slice(&chunk);
        }
        let digest = Sha256::digest(&data);
        if let Some(expected) = &f.sha256 {
            if !same_digest(expected, &digest) {
                return Err(MediaError::Checksum {
                    expected: expected.clone(),
                    actual: hex::encode(digest),
                });
            }
        }
        let mime = info
            .mime_type
            .or_else(|| f.mime_type.clone())
            .unwrap_or_else(|| "application/octet-stream".into());
        let path = store_file(&self.dir, account, id, extension(&mime), &data).await?;
        let transcript = match (&self.transcription, f.transcribe) {
            (Some(t), true) => Some(self.transcribe(t, &data, &mime).await?),
            _ => None,
        };
        Ok(MediaResult {
            media_id: f.media_id.clone(),
            path: Some(path.to_string_lossy().into_owned()),
            mime_type: Some(mime),
            bytes: data.len() as u64,
            transcript,
            error: None,
        })
    }

    /// GET `url` with the token; a non-2xx answer is an error naming `what`.
    async fn get(
        &self,
        url: &str,
        token: &SecretString,
        what: &str,
    ) -> Result<reqwest::Response, MediaError> {
        let resp = self
            .http
            .get(url)
            .bearer_auth(token.expose_secret())
            .send()
            .await
            .map_err(|e| MediaError::Graph(format!("{what}: {}", e.without_url())))?;
        if !resp.status().is_success() {
            return Err(MediaError::Graph(format!("{what}: HTTP {}", resp.status())));
        }
        Ok(resp)
    }

    async fn transcribe(
        &self,
        t: &TranscriptionTarget,
        audio: &[u8],
        mime: &str,
    ) -> Result<Transcript, MediaError> {
        #[derive(Deserialize)]
        struct Answer {
            text: String,
            language: Option<String>,
            duration: Option<f64>,
        }
        // multipart/form-data by hand: file, model, response_format.
        let boundary = format!("parley{:016x}", fastrand::u64(..));
        let mut body = Vec::with_capacity(audio.len() + 512);
        let field = |body: &mut Vec<u8>, name: &str, value: &str| {
            body.extend_from_slice(
                format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n")
                    .as_bytes(),
            );
        };
        field(&mut body, "model", &t.model);
        field(&mut body, "response_format", "verbose_json");
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"voice.{}\"\r\nContent-Type: {mime}\r\n\r\n",
                extension(mime)
            )
            .as_bytes(),
        );
        body.extend_from_slice(audio);
        body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        let mut req = self
            .http
            .post(format!("{}/audio/transcriptions", t.base_url))
            .header(
                reqwest::header::CONTENT_TYPE,
                format!("multipart/form-data; boundary={boundary}"),
            )
            .body(body);
        if !t.api_key.expose_secret().is_empty() {
            req = req.bearer_auth(t.api_key.expose_secret());
        }
        // The provider's limits, as for its chat calls: no more than `concurrency` at once,
        // each given up after `timeout` (the whole exchange, answer included).
        let _permit = t
            .permits
            .acquire()
            .await
            .map_err(|e| MediaError::Transcription(e.to_string()))?;
        let exchange = async {
            let resp = req
                .send()
                .await
                .map_err(|e| MediaError::Transcription(e.without_url().to_string()))?;
            if !resp.status().is_success() {
                return Err(MediaError::Transcription(format!("HTTP {}", resp.status())));
            }
            resp.json::<Answer>()
                .await
                .map_err(|e| MediaError::Transcription(e.without_url().to_string()))
        };
        let a: Answer = tokio::time::timeout(t.timeout, exchange)
            .await
            .map_err(|_| MediaError::Transcription(format!("timeout after {:?}", t.timeout)))??;
        // Duration as Decimal from its decimal text, never float arithmetic on money.
        let duration = a
            .duration
            .and_then(|d| Decimal::from_str(&format!("{d:.3}")).ok())
            .map(|d| d.normalize());
        let cost = duration
            .map(|d| (d / Decimal::from(60)) * t.price_per_minute)
            .unwrap_or_default()
            .round_dp(6)
            .normalize();
        Ok(Transcript {
            text: a.text.trim().to_string(),
            language: a.language,
            duration_secs: duration,
            provider: t.provider.clone(),
            cost,
        })
    }
}

/// A download URL may carry the access token if it is https, or on the configured Graph
/// API's own origin (a local stand-in in tests, a proxy the operator chose).
fn download_url_allowed(url: &str, graph_base: &str) -> bool {
    let (Ok(url), Ok(base)) = (reqwest::Url::parse(url), reqwest::Url::parse(graph_base)) else {
        return false;
    };
    url.scheme() == "https" || url.origin() == base.origin()
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_token_goes_only_to_https_or_the_graph_apis_own_origin() {
        use super::download_url_allowed as ok;
        let graph = "https://graph.facebook.com";
        assert!(ok(
            "https://lookaside.fbsbx.com/whatsapp_business/attachments/?mid=1",
            graph
        ));
        assert!(!ok("http://lookaside.fbsbx.com/x", graph));
        assert!(!ok("ftp://x/y", graph));
        assert!(!ok("not a url", graph));
        assert!(ok("http://127.0.0.1:9000/files/1", "http://127.0.0.1:9000"));
        assert!(!ok(
            "http://127.0.0.1:9001/files/1",
            "http://127.0.0.1:9000"
        ));
    }

    use super::*;

    #[test]
    fn digests_match_as_hex_or_base64() {
        let d = Sha256::digest(b"hello");
        assert!(same_digest(&hex::encode(d), &d));
        assert!(same_digest(&hex::encode(d).to_uppercase(), &d));
        assert!(same_digest(
            "LPJNul+wow4m6DsqxbninhsWHlwfp0JecwQzYpOLmCQ=",
            &d
        ));
        assert!(!same_digest("00", &d));
        assert_eq!(base64_encode(b"ab"), "YWI=");
        assert_eq!(base64_encode(b"a"), "YQ==");
    }

    #[test]
    fn only_ascii_digit_media_ids_of_bounded_length_are_taken() {
        assert_eq!(
            MediaId::parse("1003383421387256").unwrap().as_ref(),
            "1003383421387256"
        );
        assert!(MediaId::parse(&"9".repeat(MediaId::MAX_LEN)).is_ok());
        assert_eq!(MediaId::parse(""), Err(MediaIdError::Empty));
        assert_eq!(
            MediaId::parse(&"9".repeat(MediaId::MAX_LEN + 1)),
            Err(MediaIdError::TooLong(MediaId::MAX_LEN + 1))
        );
        for bad in [
            "..",
            "../../../../tmp/x",
            "12/34",
            "12%2F34",
            "1234?fields=x",
            "12 34",
            " 1234",
            "+1234",
            "-1234",
            "12.34",
            "1234\n",
            "\u{0661}\u{0662}",
            "\u{FF11}2",
            "img-1",
        ] {
            assert!(
                matches!(MediaId::parse(bad), Err(MediaIdError::NotDigits(_))),
                "{bad:?} taken"
            );
        }
    }

    #[test]
    fn the_media_lookup_answer_takes_file_size_as_a_number_or_a_string() {
        let size = |v: serde_json::Value| {
            serde_json::from_value::<MediaInfo>(serde_json::json!({"url": "u", "file_size": v}))
                .unwrap()
                .file_size
        };
        assert_eq!(size(serde_json::json!(303833)), Some(303833));
        assert_eq!(size(serde_json::json!("303833")), Some(303833));
        assert_eq!(size(serde_json::json!(" 303833 ")), Some(303833));
        // Not a size: unknown, and the download's own bound applies.
        assert_eq!(size(serde_json::json!("about 3 MB")), None);
        assert_eq!(size(serde_json::json!(-1)), None);
        assert_eq!(size(serde_json::json!(null)), None);
        let info: MediaInfo =
            serde_json::from_str(r#"{"url":"u","mime_type":"image/jpeg"}"#).unwrap();
        assert_eq!(
            (info.file_size, info.mime_type.as_deref()),
            (None, Some("image/jpeg"))
        );
    }

    /// A Graph API stand-in answering the media lookup of `id` with `file_size` as given;
    /// counts the downloads.
    async fn graph(
        id: &'static str,
        bytes: &'static [u8],
        file_size: serde_json::Value,
    ) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
        use axum::routing::get;
        let downloads = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = downloads.clone();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let url = format!("{base}/files/{id}");
        let app = axum::Router::new()
            .route(
                &format!("/v23.0/{id}"),
                get(move || async move {
                    axum::Json(serde_json::json!({
                        "messaging_product": "whatsapp", "id": id, "url": url,
                        "mime_type": "image/jpeg", "file_size": file_size,
                    }))
                }),
            )
            .route(
                &format!("/files/{id}"),
                get(move || async move {
                    counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    bytes
                }),
            );
        tokio::spawn(async move { axum::serve(listener, app).await });
        (base, downloads)
    }

    fn fetcher(graph: &str, dir: &Path, max_bytes: u64) -> MediaFetcher {
        let mut settings = Settings::load(None).unwrap();
        settings.whatsapp.graph_base_url = graph.to_string();
        settings.whatsapp.api_version = "v23.0".into();
        settings.media.dir = dir.to_path_buf();
        settings.media.max_bytes = max_bytes;
        MediaFetcher::new(&settings).unwrap()
    }

    fn image(id: &str) -> MediaFetch {
        MediaFetch {
            media_id: id.into(),
            kind: "image".into(),
            mime_type: Some("image/jpeg".into()),
            sha256: Some(hex::encode(Sha256::digest(b"JPEGDATA"))),
            transcribe: false,
        }
    }

    #[tokio::test]
    async fn media_whose_lookup_gives_file_size_as_a_string_is_downloaded_and_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let token = SecretString::from("t0ken");
        let id = MediaId::parse("2621233374848975").unwrap();
        let (base, downloads) =
            graph("2621233374848975", b"JPEGDATA", serde_json::json!("8")).await;
        let r = fetcher(&base, dir.path(), 1024)
            .fetch("106540352242922", &token, &id, &image(id.as_ref()))
            .await;
        assert_eq!(r.error, None);
        let path = dir.path().join("106540352242922/2621233374848975.jpg");
        assert_eq!(r.path.as_deref(), Some(path.to_str().unwrap()));
        assert_eq!(std::fs::read(&path).unwrap(), b"JPEGDATA");
        // The string size is read, not ignored: over the bound, nothing is downloaded.
        let r = fetcher(&base, dir.path(), 4)
            .fetch("106540352242922", &token, &id, &image(id.as_ref()))
            .await;
        assert_eq!(
            r.error.as_deref(),
            Some("the file is larger than media.max_bytes (4 bytes)")
        );
        assert_eq!(downloads.load(std::sync::atomic::Ordering::SeqCst), 1);
    }
}
