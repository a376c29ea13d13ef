//! A customer's profile fields set by a flow: each checked and written one way (an email
//! lower-cased, a date as YYYY-MM-DD, a KTP number as its 16 digits), kept on the contact and
//! mirrored into the `contacts` row's columns; a value that is not what its field takes
//! fails the flow and keeps nothing.

use std::sync::Arc;
use std::time::Duration;

use parley_testkit::{text_webhook, FakeGraph};

use crate::helpers::*;
use crate::on_both_stores;

const FLOW: &str = r#"
id: register
triggers:
  - keyword: register
start: kind
nodes:
  kind:
    set: {contact.identity_type: "'KTP'"}
    next: ask_email
  ask_email:
    ask: {type: email, prompt: "Email?", save: email}
    next: ask_born
  ask_born:
    ask: {type: text, prompt: "Birth date?", save: born}
    next: ask_nik
  ask_nik:
    ask: {type: text, prompt: "NIK?", save: nik}
    next: keep
  keep:
    set: {contact.email: email, contact.birth_date: born, contact.identity_number: nik, contact.gender: "'Perempuan'"}
    next: done
  done:
    send: {text: "Registered {{contact.email}}, born {{contact.birth_date}}, NIK {{contact.identity_number}}"}
"#;

async fn profile_fields(db: TestDb) {
    let graph = Arc::new(FakeGraph::start().await);
    let flows = tempfile::tempdir().unwrap();
    std::fs::write(flows.path().join("register.yaml"), FLOW).unwrap();
    let mut settings = test_settings(&db, &graph);
    settings.flows.dir = flows.path().to_path_buf();
    let app = spawn_app_with_flows(settings).await;
    let store = db.store().await;
    let texts = |u: &str| {
        graph
            .delivered()
            .into_iter()
            .filter(|a| a.to() == Some(u))
            .map(|a| a.text().unwrap_or_default().to_string())
            .collect::<Vec<_>>()
    };
    let t = now_secs();
    let play = |u: &'static str, answers: [&'static str; 3]| {
        let (app, texts) = (&app, &texts);
        async move {
            let mut script = vec!["register"];
            script.extend(answers);
            for (n, said) in script.into_iter().enumerate() {
                let before = texts(u).len();
                app.post_webhook(&text_webhook(PNID, u, &format!("wamid.PF{u}{n}"), said, t))
                    .await;
                if n < 3 {
                    assert!(
                        eventually(Duration::from_secs(10), || async {
                            texts(u).len() > before
                        })
                        .await,
                        "no answer to {said:?}: {:?}",
                        texts(u)
                    );
                }
            }
        }
    };
    let (good, bad) = ("6281200000701", "6281200000702");
    play(
        good,
        [" Siti@Mail.Example ", "22/11/1990", "3174 0123 4567 0001"],
    )
    .await;
    assert!(
        eventually(Duration::from_secs(10), || async { texts(good).len() == 4 }).await,
        "{:?}",
        texts(good)
    );
    assert_eq!(
        texts(good)[3],
        "Registered siti@mail.example, born 1990-11-22, NIK 3174012345670001"
    );
    play(bad, ["budi@mail.example", "1990-01-01", "12345"]).await;
    let row = |u: &'static str| {
        let store = &store;
        async move {
            sqlx::query_as::<_, (Option<String>, Option<String>, Option<String>, Option<String>, Option<String>)>(
                &format!("SELECT email, birth_date, identity_type, identity_number, gender FROM contacts WHERE user_key = '{u}'"),
            )
            .fetch_one(store.pool())
            .await
            .unwrap()
        }
    };
    assert!(
        eventually(Duration::from_secs(10), || async {
            row(good).await.0.is_some()
        })
        .await
    );
    assert_eq!(
        row(good).await,
        (
            Some("siti@mail.example".into()),
            Some("1990-11-22".into()),
            Some("ktp".into()),
            Some("3174012345670001".into()),
            Some("female".into())
        )
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(texts(bad).len(), 3, "the flow failed: {:?}", texts(bad));
    let (email, _, kind, number, _) = row(bad).await;
    assert_eq!(
        (email, kind, number),
        (None, Some("ktp".into()), None),
        "nothing of the failed step kept"
    );
    app.stop().await;
}
on_both_stores!(profile_fields_are_checked_and_kept, profile_fields);
