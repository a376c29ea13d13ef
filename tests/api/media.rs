//! Inbound media through the daemon: downloaded via the (fake) Graph API media endpoints,
//! checked against its sha256, stored and recorded; voice notes transcribed by a fake
//! OpenAI-compatible `/audio/transcriptions` and handled as the user's text, in order.

use std::sync::Arc;
use std::time::Duration;

use parley::config::{ProviderKind, ProviderSettings, TranscriptionSettings};
use parley_testkit::{media_webhook, text_webhook, FakeGraph};
use secrecy::SecretString;
use serde_json::json;
use sha2::Digest;

use crate::helpers::*;
use crate::on_both_stores;

const FLOWS: &str = r#"
id: coffee
triggers: [{keyword: order coffee, match: contains}]
start: ok
nodes:
  ok:
    send: {text: "Coming up"}
"#;

const THANKS: &str = r#"
id: thanks
triggers: [{keyword: thanks}]
start: ok
nodes:
  ok:
    send: {text: "You're welcome"}
"#;

async fn fake_transcriber(delay: Duration) -> String {
    let app = axum::Router::new().route(
        "/audio/transcriptions",
        axum::routing::post(move |body: axum::body::Bytes| async move {
            assert!(
                body.windows(7).any(|w| w == b"OGGDATA"),
                "the audio is in the multipart body"
            );
            tokio::time::sleep(delay).await;
            axum::Json(
                json!({"text": " I want to order coffee ", "language": "en", "duration": 3.0}),
            )
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

fn hexsha(b: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(b))
}

async fn media_is_stored_checked_and_voice_notes_become_text_in_order(db: TestDb) {
    let graph = Arc::new(FakeGraph::start().await);
    let flows = tempfile::tempdir().unwrap();
    std::fs::write(flows.path().join("coffee.yaml"), FLOWS).unwrap();
    std::fs::write(flows.path().join("thanks.yaml"), THANKS).unwrap();
    let media_dir = tempfile::tempdir().unwrap();
    let stt = fake_transcriber(Duration::from_millis(300)).await;
    let mut settings = test_settings(&db, &graph);
    settings.flows.dir = flows.path().to_path_buf();
    settings.media.dir = media_dir.path().to_path_buf();
    settings.ai.providers.insert(
        "stt".into(),
        ProviderSettings {
            kind: ProviderKind::Openai,
            base_url: stt,
            api_key: SecretString::from("sk-stt"),
            timeout: Duration::from_secs(5),
            max_retries: 0,
            concurrency: 2,
        },
    );
    settings.media.transcription = Some(TranscriptionSettings {
        provider: "stt".into(),
        model: "whisper-1".into(),
        price_per_minute: "0.006".into(),
    });
    let app = spawn_app_with_flows(settings).await;
    let store = db.store().await;
    let user = "6281200000501";

    // An image whose bytes match the sha256 in the webhook is stored.
    graph.add_media("1001", b"JPEGDATA", "image/jpeg");
    app.post_webhook(&media_webhook(
        PNID,
        user,
        "wamid.M1",
        "image",
        "1001",
        "image/jpeg",
        &hexsha(b"JPEGDATA"),
        false,
    ))
    .await;
    // One whose bytes do not match is refused.
    graph.add_media("1002", b"TAMPERED", "image/jpeg");
    app.post_webhook(&media_webhook(
        PNID,
        user,
        "wamid.M2",
        "image",
        "1002",
        "image/jpeg",
        &hexsha(b"ORIGINAL"),
        false,
    ))
    .await;
    assert!(
        eventually(Duration::from_secs(10), || async {
            count(&store, "SELECT COUNT(*) FROM media_files").await == 2
        })
        .await
    );
    let stored = media_dir.path().join(PNID).join("1001.jpg");
    assert_eq!(std::fs::read(&stored).unwrap(), b"JPEGDATA");
    assert_eq!(
        count(&store, "SELECT COUNT(*) FROM media_files WHERE media_id = '1001' AND path IS NOT NULL AND mime_type = 'image/jpeg' AND bytes = 8 AND error IS NULL").await,
        1
    );
    assert_eq!(
        count(&store, "SELECT COUNT(*) FROM media_files WHERE media_id = '1002' AND path IS NULL AND error LIKE '%sha256 mismatch%'").await,
        1
    );
    assert!(!media_dir.path().join(PNID).join("1002.jpg").exists());

    // A voice note, then at once a text: the transcript is answered first.
    graph.add_media("1003", b"OGGDATA", "audio/ogg");
    app.post_webhook(&media_webhook(
        PNID,
        user,
        "wamid.M3",
        "audio",
        "1003",
        "audio/ogg; codecs=opus",
        &hexsha(b"OGGDATA"),
        true,
    ))
    .await;
    app.post_webhook(&text_webhook(PNID, user, "wamid.M4", "thanks", now_secs()))
        .await;
    assert!(
        graph
            .wait_until(Duration::from_secs(10), |a| a
                .iter()
                .filter(|a| a.accepted() && a.text().is_some())
                .count()
                >= 2)
            .await
    );
    let texts: Vec<String> = graph
        .delivered()
        .iter()
        .filter_map(|a| a.text().map(str::to_string))
        .collect();
    assert_eq!(texts, vec!["Coming up", "You're welcome"]);
    assert_eq!(
        count(&store, "SELECT COUNT(*) FROM media_files WHERE media_id = '1003' AND transcript = 'I want to order coffee' AND language = 'en' AND cost = '0.0003' AND provider = 'stt'").await,
        1
    );
    app.stop().await;
}
on_both_stores!(
    media,
    media_is_stored_checked_and_voice_notes_become_text_in_order
);

/// A transcriber answering after `delay` that counts the most requests it had in flight.
async fn counting_transcriber(delay: Duration) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
    let (now, max) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let seen = max.clone();
    let app = axum::Router::new().route(
        "/audio/transcriptions",
        axum::routing::post(move || {
            let (now, max) = (now.clone(), max.clone());
            async move {
                max.fetch_max(now.fetch_add(1, SeqCst) + 1, SeqCst);
                tokio::time::sleep(delay).await;
                now.fetch_sub(1, SeqCst);
                axum::Json(json!({"text": "order coffee", "language": "en", "duration": 1.0}))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), seen)
}

/// `users` each send a voice note to a daemon transcribing through a provider with this
/// `timeout` and `concurrency`.
async fn voice_notes(
    db: &TestDb,
    graph: &FakeGraph,
    stt: String,
    timeout: Duration,
    concurrency: usize,
    users: &[&str],
) -> (TestApp, tempfile::TempDir, tempfile::TempDir) {
    let flows = tempfile::tempdir().unwrap();
    std::fs::write(flows.path().join("coffee.yaml"), FLOWS).unwrap();
    let media_dir = tempfile::tempdir().unwrap();
    let mut settings = test_settings(db, graph);
    settings.flows.dir = flows.path().to_path_buf();
    settings.media.dir = media_dir.path().to_path_buf();
    settings.ai.providers.insert(
        "stt".into(),
        ProviderSettings {
            kind: ProviderKind::Openai,
            base_url: stt,
            api_key: SecretString::from("sk-stt"),
            timeout,
            max_retries: 0,
            concurrency,
        },
    );
    settings.media.transcription = Some(TranscriptionSettings {
        provider: "stt".into(),
        model: "whisper-1".into(),
        price_per_minute: "0.006".into(),
    });
    let app = spawn_app_with_flows(settings).await;
    for (i, user) in users.iter().enumerate() {
        let id = format!("9{user}");
        graph.add_media(&id, b"OGGDATA", "audio/ogg");
        app.post_webhook(&media_webhook(
            PNID,
            user,
            &format!("wamid.V{i}"),
            "audio",
            &id,
            "audio/ogg; codecs=opus",
            &hexsha(b"OGGDATA"),
            true,
        ))
        .await;
    }
    (app, flows, media_dir)
}

/// Transcription keeps its provider's `concurrency`: never more requests in flight.
async fn transcriptions_keep_their_providers_concurrency(db: TestDb) {
    let graph = Arc::new(FakeGraph::start().await);
    let (stt, max) = counting_transcriber(Duration::from_millis(300)).await;
    let users = ["6281200000601", "6281200000602", "6281200000603"];
    let (app, _f, _m) = voice_notes(&db, &graph, stt, Duration::from_secs(5), 1, &users).await;
    assert!(
        graph
            .wait_until(Duration::from_secs(10), |a| a
                .iter()
                .filter(|a| a.text() == Some("Coming up"))
                .count()
                == 3)
            .await,
        "every voice note transcribed and answered"
    );
    assert_eq!(
        max.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "concurrency 1"
    );
    app.stop().await;
}
on_both_stores!(
    transcription_concurrency,
    transcriptions_keep_their_providers_concurrency
);

/// Transcription keeps its provider's `timeout`: a transcriber slower than it is given up
/// (recorded as the error), and the flow gets the audio instead of a late transcript.
async fn a_transcription_slower_than_its_providers_timeout_is_given_up(db: TestDb) {
    let graph = Arc::new(FakeGraph::start().await);
    let (stt, _) = counting_transcriber(Duration::from_millis(2000)).await;
    let (app, _f, _m) = voice_notes(
        &db,
        &graph,
        stt,
        Duration::from_millis(300),
        2,
        &["6281200000604"],
    )
    .await;
    let store = db.store().await;
    assert!(
        eventually(Duration::from_millis(1500), || async {
            count(&store, "SELECT COUNT(*) FROM media_files WHERE media_id = '96281200000604' AND error LIKE '%timeout%'").await == 1
        })
        .await,
        "given up after the provider's 300 ms timeout"
    );
    tokio::time::sleep(Duration::from_millis(2200)).await;
    assert!(
        !graph.delivered_texts().iter().any(|t| t == "Coming up"),
        "no late transcript reached the flow"
    );
    app.stop().await;
}
on_both_stores!(
    transcription_timeout,
    a_transcription_slower_than_its_providers_timeout_is_given_up
);

/// The daemon with the coffee and thanks flows (in the folder returned with it), media
/// stored in `media_dir`, and voice notes transcribed by a fake provider.
async fn media_app(
    db: &TestDb,
    graph: &FakeGraph,
    media_dir: &std::path::Path,
) -> (TestApp, tempfile::TempDir) {
    let flows = tempfile::tempdir().unwrap();
    std::fs::write(flows.path().join("coffee.yaml"), FLOWS).unwrap();
    std::fs::write(flows.path().join("thanks.yaml"), THANKS).unwrap();
    let stt = fake_transcriber(Duration::ZERO).await;
    let mut settings = test_settings(db, graph);
    settings.flows.dir = flows.path().to_path_buf();
    settings.media.dir = media_dir.to_path_buf();
    settings.ai.providers.insert(
        "stt".into(),
        ProviderSettings {
            kind: ProviderKind::Openai,
            base_url: stt,
            api_key: SecretString::from("sk-stt"),
            timeout: Duration::from_secs(5),
            max_retries: 0,
            concurrency: 2,
        },
    );
    settings.media.transcription = Some(TranscriptionSettings {
        provider: "stt".into(),
        model: "whisper-1".into(),
        price_per_minute: "0.006".into(),
    });
    (spawn_app_with_flows(settings).await, flows)
}

/// Every file under `dir`, folders aside.
fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// A media id that is not Meta's (digits) never reaches a Graph URL: the message is
/// dead-lettered as `media_id_invalid` and no request at all is made for it, while the
/// conversation still gets the message (a voice note does not hold the ones after it).
async fn a_malformed_media_id_is_dead_lettered_without_any_graph_call(db: TestDb) {
    let graph = Arc::new(FakeGraph::start().await);
    let media_dir = tempfile::tempdir().unwrap();
    let (app, _flows) = media_app(&db, &graph, media_dir.path()).await;
    let store = db.store().await;
    let user = "6281200000701";
    let bad: [(&str, &str, &str, bool); 6] = [
        ("image", "../../../../tmp/x", "image/jpeg", false),
        ("image", "", "image/jpeg", false),
        ("document", "..", "application/pdf", false),
        ("sticker", "1234?fields=url", "image/webp", false),
        ("video", &"1".repeat(33), "video/mp4", false),
        ("audio", "12a", "audio/ogg; codecs=opus", true),
    ];
    // Each id is served, so a request for it would be answered (and seen).
    for (_, id, mime, _) in bad {
        graph.add_media(id, b"SECRET", mime);
    }
    let mut wamids = Vec::new();
    for (i, (kind, id, mime, voice)) in bad.into_iter().enumerate() {
        let wamid = format!("wamid.BAD{i}");
        let status = app
            .post_webhook(&media_webhook(
                PNID,
                user,
                &wamid,
                kind,
                id,
                mime,
                &hexsha(b"SECRET"),
                voice,
            ))
            .await;
        assert_eq!(status, 200);
        wamids.push(wamid);
    }
    app.post_webhook(&text_webhook(PNID, user, "wamid.T1", "thanks", now_secs()))
        .await;
    wamids.push("wamid.T1".into());

    // The text after the voice note is answered: the failed fetch released it.
    assert!(
        graph
            .wait_until(Duration::from_secs(10), |a| a
                .iter()
                .any(|a| a.text() == Some("You're welcome")))
            .await,
        "{:?}",
        graph.delivered_texts()
    );
    assert!(
        eventually(Duration::from_secs(10), || async {
            count(
                &store,
                "SELECT COUNT(*) FROM dead_letters WHERE kind = 'media_id_invalid'",
            )
            .await
                == 6
        })
        .await,
        "each bad id dead-lettered"
    );
    assert_eq!(
        count(
            &store,
            &format!(
                "SELECT COUNT(*) FROM dead_letters WHERE kind = 'media_id_invalid' \
                 AND account = '{PNID}' AND user_key = '{user}' AND reason LIKE '%media id%' \
                 AND raw IS NOT NULL"
            )
        )
        .await,
        6
    );
    assert_eq!(
        count(
            &store,
            "SELECT COUNT(*) FROM media_files WHERE path IS NOT NULL"
        )
        .await,
        0
    );
    // Nothing but message sends and read receipts went to the Graph API.
    let requests = graph.requests();
    assert!(
        requests
            .iter()
            .all(|r| r.starts_with(&format!("POST /v23.0/{PNID}/messages"))),
        "{requests:?}"
    );
    assert!(
        files_under(media_dir.path()).is_empty(),
        "{:?}",
        files_under(media_dir.path())
    );
    assert_eq!(inbound_wamids(&app.conversation(user).await), wamids);

    // A good id afterwards is fetched as usual: the fake would have been asked.
    graph.add_media("1004", b"JPEGDATA", "image/jpeg");
    app.post_webhook(&media_webhook(
        PNID,
        user,
        "wamid.GOOD",
        "image",
        "1004",
        "image/jpeg",
        &hexsha(b"JPEGDATA"),
        false,
    ))
    .await;
    assert!(
        eventually(Duration::from_secs(10), || async {
            count(
                &store,
                "SELECT COUNT(*) FROM media_files WHERE media_id = '1004' AND path IS NOT NULL",
            )
            .await
                == 1
        })
        .await
    );
    let gets: Vec<String> = graph
        .requests()
        .into_iter()
        .filter(|r| r.starts_with("GET "))
        .collect();
    assert_eq!(gets, ["GET /v23.0/1004", "GET /files/1004"]);
    app.stop().await;
}
on_both_stores!(
    media_id_invalid,
    a_malformed_media_id_is_dead_lettered_without_any_graph_call
);

/// Two media never end up in one file: ids that once reduced to the same name (`7.7` and
/// `77`) are not both stored, and each stored file holds its own media's bytes.
async fn two_media_never_share_a_file(db: TestDb) {
    let graph = Arc::new(FakeGraph::start().await);
    let media_dir = tempfile::tempdir().unwrap();
    let (app, _flows) = media_app(&db, &graph, media_dir.path()).await;
    let store = db.store().await;
    let media: [(&str, &[u8]); 4] = [
        ("77", b"FIRST"),
        ("7.7", b"SECOND"),
        ("7_7", b"THIRD"),
        ("78", b"FOURTH"),
    ];
    for (i, (id, bytes)) in media.iter().enumerate() {
        graph.add_media(id, bytes, "image/jpeg");
        app.post_webhook(&media_webhook(
            PNID,
            &format!("628120000080{i}"),
            &format!("wamid.S{i}"),
            "image",
            id,
            "image/jpeg",
            &hexsha(bytes),
            false,
        ))
        .await;
    }
    assert!(
        eventually(Duration::from_secs(10), || async {
            count(&store, "SELECT COUNT(*) FROM media_files").await == 4
        })
        .await
    );
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT media_id, path FROM media_files WHERE path IS NOT NULL ORDER BY media_id",
    )
    .fetch_all(store.pool())
    .await
    .unwrap();
    let paths: std::collections::HashSet<&String> = rows.iter().map(|(_, p)| p).collect();
    assert_eq!(paths.len(), rows.len(), "a file shared: {rows:?}");
    for (id, path) in &rows {
        let bytes = media.iter().find(|(m, _)| m == id).unwrap().1;
        assert_eq!(std::fs::read(path).unwrap(), bytes, "{id} in {path}");
    }
    let stored: Vec<&str> = rows.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(stored, ["77", "78"]);
    assert_eq!(files_under(media_dir.path()).len(), 2);
    app.stop().await;
}
on_both_stores!(media_file_names, two_media_never_share_a_file);

/// Media files are 0600 and their folders 0700 under a umask of 0022 (the README's first
/// command): the folder the daemon creates, and one that was there with 0755.
#[allow(unsafe_code)]
async fn media_files_and_folders_are_private_under_umask_0022(db: TestDb) {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    // The umask is the process's: set here and left so (restoring it could undo another
    // test's setting midway), and shown to be in force before and after the daemon wrote
    // by what it gives plain files and a folder, so the modes below are the daemon's doing.
    // SAFETY: umask touches no memory; other tests only see their new files' modes change.
    unsafe { libc::umask(0o022) };
    let root = tempfile::tempdir().unwrap();
    std::fs::write(root.path().join("control"), b"x").unwrap();
    let media_dir = root.path().join("media");
    std::fs::create_dir(&media_dir).unwrap();
    assert_eq!(mode(&root.path().join("control")), 0o644);
    assert_eq!(mode(&media_dir), 0o755);

    let graph = Arc::new(FakeGraph::start().await);
    let (app, _flows) = media_app(&db, &graph, &media_dir).await;
    let store = db.store().await;
    graph.add_media("1005", b"JPEGDATA", "image/jpeg");
    app.post_webhook(&media_webhook(
        PNID,
        "6281200000901",
        "wamid.P1",
        "image",
        "1005",
        "image/jpeg",
        &hexsha(b"JPEGDATA"),
        false,
    ))
    .await;
    assert!(
        eventually(Duration::from_secs(10), || async {
            count(
                &store,
                "SELECT COUNT(*) FROM media_files WHERE media_id = '1005' AND path IS NOT NULL",
            )
            .await
                == 1
        })
        .await
    );
    let file = media_dir.join(PNID).join("1005.jpg");
    assert_eq!(std::fs::read(&file).unwrap(), b"JPEGDATA");
    let modes = [
        (mode(&file), "file"),
        (mode(&media_dir.join(PNID)), "account folder"),
        (mode(&media_dir), "media.dir"),
    ];
    std::fs::write(root.path().join("control-after"), b"x").unwrap();
    assert_eq!(mode(&root.path().join("control-after")), 0o644);
    app.stop().await;
    assert_eq!(
        modes,
        [
            (0o600, "file"),
            (0o700, "account folder"),
            (0o700, "media.dir")
        ]
    );
    assert_eq!(files_under(&media_dir), [file]);
}
on_both_stores!(
    media_modes,
    media_files_and_folders_are_private_under_umask_0022
);
