//! Inbound media through the daemon: downloaded via the (fake) Graph API media endpoints,
//! checked against its sha256, stored and recorded; voice notes transcribed by a fake
//! OpenAI-compatible `/audio/transcriptions` and handled as the user's text, in order.

use std::sync::Arc;
use std::time::Duration;

use parley::config::{ProviderKind, ProviderSettings, TranscriptionSettings};
use parley::testing::{media_webhook, text_webhook, FakeGraph};
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
    graph.add_media("img-1", b"JPEGDATA", "image/jpeg");
    app.post_webhook(&media_webhook(
        PNID,
        user,
        "wamid.M1",
        "image",
        "img-1",
        "image/jpeg",
        &hexsha(b"JPEGDATA"),
        false,
    ))
    .await;
    // One whose bytes do not match is refused.
    graph.add_media("img-2", b"TAMPERED", "image/jpeg");
    app.post_webhook(&media_webhook(
        PNID,
        user,
        "wamid.M2",
        "image",
        "img-2",
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
    let stored = media_dir.path().join(PNID).join("img-1.jpg");
    assert_eq!(std::fs::read(&stored).unwrap(), b"JPEGDATA");
    assert_eq!(
        count(&store, "SELECT COUNT(*) FROM media_files WHERE media_id = 'img-1' AND path IS NOT NULL AND mime_type = 'image/jpeg' AND bytes = 8 AND error IS NULL").await,
        1
    );
    assert_eq!(
        count(&store, "SELECT COUNT(*) FROM media_files WHERE media_id = 'img-2' AND path IS NULL AND error LIKE '%sha256 mismatch%'").await,
        1
    );
    assert!(!media_dir.path().join(PNID).join("img-2.jpg").exists());

    // A voice note, then at once a text: the transcript is answered first.
    graph.add_media("voice-1", b"OGGDATA", "audio/ogg");
    app.post_webhook(&media_webhook(
        PNID,
        user,
        "wamid.M3",
        "audio",
        "voice-1",
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
        count(&store, "SELECT COUNT(*) FROM media_files WHERE media_id = 'voice-1' AND transcript = 'I want to order coffee' AND language = 'en' AND cost = '0.0003' AND provider = 'stt'").await,
        1
    );
    app.stop().await;
}
on_both_stores!(
    media,
    media_is_stored_checked_and_voice_notes_become_text_in_order
);
