//! Flows through the whole daemon: the shop conversation, webhook in, replies at the fake
//! Graph API.

use std::sync::Arc;
use std::time::Duration;

use parley::testing::{button_reply_webhook, text_webhook, FakeGraph};

use crate::helpers::*;
use crate::on_both_stores;

async fn the_shop_flow_answers_the_reference_conversation_exactly(db: TestDb) {
    let graph = Arc::new(FakeGraph::start().await);
    let mut settings = test_settings(&db, &graph);
    settings.flows.dir = "flows".into();
    let app = spawn_app_with_flows(settings).await;
    let user = "6281200000077";
    let steps: Vec<(String, Vec<&str>)> = vec![
        (
            text_webhook(PNID, user, "wamid.S1", "menu", now_secs()),
            vec!["Welcome! What would you like?"],
        ),
        (
            button_reply_webhook(PNID, user, "wamid.S2", "catalog", "Catalog", now_secs()),
            vec!["1. Kopi 25000\n2. Teh 15000\n3. Roti 10000\nWhich product number?"],
        ),
        (
            text_webhook(PNID, user, "wamid.S3", "2", now_secs()),
            vec!["How many?"],
        ),
        (
            text_webhook(PNID, user, "wamid.S4", "abc", now_secs()),
            vec!["Please send a number"],
        ),
        (
            text_webhook(PNID, user, "wamid.S5", "3", now_secs()),
            vec!["Total: 45000. Reply yes to confirm"],
        ),
        (
            text_webhook(PNID, user, "wamid.S6", "yes", now_secs()),
            vec!["Order confirmed"],
        ),
    ];
    let mut expected = 0;
    for (body, replies) in &steps {
        assert_eq!(app.post_webhook(body).await, 200);
        expected += replies.len();
        assert!(
            graph
                .wait_until(Duration::from_secs(10), |a| a
                    .iter()
                    .filter(|a| a.accepted() && !a.is_mark_read())
                    .count()
                    >= expected)
                .await,
            "reply to step {expected}"
        );
    }
    let sent = graph.delivered();
    let texts: Vec<String> = sent
        .iter()
        .map(|a| {
            a.text()
                .map(str::to_string)
                .or_else(|| {
                    a.body
                        .pointer("/interactive/body/text")
                        .and_then(|v| v.as_str())
                        .map(str::to_string)
                })
                .unwrap_or_default()
        })
        .collect();
    let want: Vec<String> = steps
        .iter()
        .flat_map(|(_, r)| r.iter().map(|s| s.to_string()))
        .collect();
    assert_eq!(texts, want);
    let buttons: Vec<&str> = sent[0].body["interactive"]["action"]["buttons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["reply"]["title"].as_str().unwrap())
        .collect();
    assert_eq!(buttons, vec!["Catalog", "My order", "Help"]);
    app.stop().await;
}
on_both_stores!(
    shop,
    the_shop_flow_answers_the_reference_conversation_exactly
);
