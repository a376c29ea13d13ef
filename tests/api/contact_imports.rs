//! A contact import a restart cut short: the job does not stay `running` for ever.

use std::sync::Arc;

use parley::domain::AccountId;
use parley_testkit::FakeGraph;
use reqwest::Method;

use crate::helpers::*;
use crate::on_both_stores;

async fn an_import_cut_by_a_restart_ends_failed_with_the_reason(db: TestDb) {
    let graph = FakeGraph::start().await;
    // The process that started this import died before it finished.
    let store = db.store().await;
    store.migrate().await.unwrap();
    let id = store
        .create_import_job(&AccountId::from(PNID), false, parley::store::now_ms())
        .await
        .unwrap();
    let app = spawn_app(test_settings(&db, &graph), Arc::new(Echo)).await;
    let (status, job) = app
        .admin(
            Method::GET,
            &format!("/contacts/import/{id}"),
            Some(ADMIN_TOKEN),
            None,
        )
        .await;
    assert_eq!(status, 200, "{job}");
    assert_eq!(job["state"], "failed", "{job}");
    assert!(job["finished_at"].is_i64(), "{job}");
    assert!(
        job["errors"][0]["error"]
            .as_str()
            .is_some_and(|e| e.contains("restart")),
        "{job}"
    );
    app.stop().await;
}
on_both_stores!(
    import_cut_by_restart,
    an_import_cut_by_a_restart_ends_failed_with_the_reason
);
