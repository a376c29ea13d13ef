//! Test harness: a real store per test (a SQLite file in a temp dir, or a fresh PostgreSQL
//! database), the app on port 0, and a local fake Graph API.

use std::sync::Arc;
use std::time::Duration;

use parley::app::{Application, Plugins};
use parley::config::Settings;
use parley::conversation::{
    ConversationEvent, ConversationLogic, ConversationState, CoreLogic, Effect, StepContext,
};
use parley::ingress::signature::sign;
use parley::store::Store;
use parley::whatsapp::send::OutboundMessage;
use parley_testkit::FakeGraph;
use secrecy::SecretString;
use serde_json::Value;

pub const PNID: &str = "106540352242922";
pub const SECRET: &str = "test-app-secret";
pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789abcdef";
pub const ACCESS_TOKEN: &str = "test-access-token";

/// Runs `$scenario(TestDb)` once on SQLite and once on PostgreSQL.
#[macro_export]
macro_rules! on_both_stores {
    ($name:ident, $scenario:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$scenario($crate::helpers::TestDb::sqlite()).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                if let Some(db) = $crate::helpers::TestDb::postgres().await {
                    super::$scenario(db).await;
                }
            }
        }
    };
}

pub struct TestDb {
    pub url: String,
    _dir: Option<tempfile::TempDir>,
    pg: Option<(String, String)>,
}

fn pg_admin_url() -> String {
    std::env::var("PARLEY_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

impl TestDb {
    pub fn sqlite() -> TestDb {
        let dir = tempfile::tempdir().expect("temp dir");
        TestDb {
            url: format!("sqlite://{}/parley.db", dir.path().display()),
            _dir: Some(dir),
            pg: None,
        }
    }

    /// A fresh database. Without a server: fails under CI, and skips loudly elsewhere.
    pub async fn postgres() -> Option<TestDb> {
        let admin = pg_admin_url();
        let store = match Store::connect(&admin, 1).await {
            Ok(s) => s,
            Err(e) => {
                if std::env::var("CI").is_ok() {
                    panic!("PostgreSQL is required in CI but {admin} does not answer: {e}");
                }
                eprintln!("\n!!!!! SKIPPED: PostgreSQL test, {admin} does not answer ({e}). Start PostgreSQL to run it. !!!!!\n");
                return None;
            }
        };
        let name = format!("parley_test_{:016x}", fastrand::u64(..));
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(store.pool())
            .await
            .expect("create test database");
        store.close().await;
        let base = admin
            .rsplit_once('/')
            .map(|(b, _)| b.to_string())
            .unwrap_or(admin.clone());
        Some(TestDb {
            url: format!("{base}/{name}"),
            _dir: None,
            pg: Some((admin, name)),
        })
    }

    /// (admin URL, database name) of a PostgreSQL test database.
    pub fn pg_database(&self) -> Option<(&str, &str)> {
        self.pg.as_ref().map(|(a, n)| (a.as_str(), n.as_str()))
    }

    pub fn is_postgres(&self) -> bool {
        self.pg.is_some()
    }

    /// A separate connection for assertions.
    pub async fn store(&self) -> Store {
        Store::connect(&self.url, 2)
            .await
            .expect("connect test store")
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some((admin, name)) = self.pg.take() {
            // Best effort: drop the database from a thread with its own runtime.
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async {
                    if let Ok(store) = Store::connect(&admin, 1).await {
                        let _ =
                            sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                                .execute(store.pool())
                                .await;
                    }
                });
            })
            .join();
        }
    }
}

/// Core behaviour plus an echo of every text, so tests can see replies. "boom" panics;
/// "tick" starts a timer whose step panics.
pub struct Echo;

impl ConversationLogic for Echo {
    fn step(
        &self,
        state: ConversationState,
        event: &ConversationEvent,
        ctx: &StepContext,
    ) -> (ConversationState, Vec<Effect>) {
        if matches!(event, ConversationEvent::TimerFired { name, .. } if name == "poison") {
            panic!("poison timer");
        }
        let (state, mut effects) = CoreLogic.step(state, event, ctx);
        if let ConversationEvent::Inbound { message, .. } = event {
            if let Some(text) = message.content.user_text() {
                if text == "boom" {
                    panic!("poison message");
                }
                if text == "tick" {
                    // A timer whose step will panic.
                    effects.push(Effect::StartTimer {
                        name: "poison".into(),
                        due_at: ctx.now_ms + 100,
                        payload: serde_json::Value::Null,
                    });
                }
                effects.push(Effect::Send {
                    message: OutboundMessage::Text {
                        body: format!("echo: {text}"),
                        preview_url: false,
                    },
                    reply_to: None,
                    policy: None,
                });
            }
        }
        (state, effects)
    }
}

pub fn test_settings(db: &TestDb, graph: &FakeGraph) -> Settings {
    let mut s = Settings::load(None).expect("default settings");
    s.http.listen = "127.0.0.1:0".into();
    s.store.url = db.url.clone();
    s.whatsapp.app_secret = SecretString::from(SECRET);
    s.whatsapp.verify_token = SecretString::from("test-verify-token");
    s.whatsapp.access_token = SecretString::from(ACCESS_TOKEN);
    s.whatsapp.graph_base_url = graph.base_url.clone();
    s.whatsapp.request_timeout = Duration::from_millis(800);
    s.admin.token = Some(SecretString::from(ADMIN_TOKEN));
    s.outbox.backoff_base = Duration::from_millis(20);
    s.outbox.backoff_max = Duration::from_millis(500);
    s.outbox.ambiguous_resend_after = Duration::from_millis(300);
    let mut account: parley::config::AccountSettings = serde_json::from_value(serde_json::json!({
        "phone_number_id": PNID,
        "display_phone_number": "15550783881",
        "waba_id": "102290129340398"
    }))
    .expect("account");
    account.mark_read = true;
    s.accounts = vec![account];
    s
}

pub struct TestApp {
    pub base: String,
    /// `http://127.0.0.1:PORT` of `http.admin_listen`, when the settings set it.
    pub admin_base: Option<String>,
    pub http: reqwest::Client,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    handle: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

pub async fn spawn_app(settings: Settings, logic: Arc<dyn ConversationLogic>) -> TestApp {
    start_app(settings, Some(logic), Arc::new(parley::actors::SystemClock)).await
}

/// The app with its real behaviour: the flows of `settings.flows.dir`.
pub async fn spawn_app_with_flows(settings: Settings) -> TestApp {
    start_app(settings, None, Arc::new(parley::actors::SystemClock)).await
}

/// The same with an injected clock.
pub async fn spawn_app_with_clock(
    settings: Settings,
    clock: Arc<dyn parley::actors::Clock>,
) -> TestApp {
    start_app(settings, None, clock).await
}

/// The app with the given behaviour and clock.
pub async fn spawn_app_with_logic_and_clock(
    settings: Settings,
    logic: Arc<dyn ConversationLogic>,
    clock: Arc<dyn parley::actors::Clock>,
) -> TestApp {
    start_app(settings, Some(logic), clock).await
}

/// A clock the test moves by hand.
#[derive(Clone)]
pub struct ManualClock(pub Arc<std::sync::atomic::AtomicI64>);

impl ManualClock {
    pub fn at_now() -> Self {
        ManualClock(Arc::new(std::sync::atomic::AtomicI64::new(
            parley::store::now_ms(),
        )))
    }
    pub fn advance(&self, by: Duration) {
        self.0
            .fetch_add(by.as_millis() as i64, std::sync::atomic::Ordering::SeqCst);
    }
}

impl parley::actors::Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
}

async fn start_app(
    settings: Settings,
    logic: Option<Arc<dyn ConversationLogic>>,
    clock: Arc<dyn parley::actors::Clock>,
) -> TestApp {
    if std::env::var("TEST_LOG").is_ok() {
        parley::telemetry::init(&settings.log);
    }
    let app = Application::build_with(settings, Plugins { logic, clock })
        .await
        .expect("build app");
    let base = format!("http://127.0.0.1:{}", app.port());
    let admin_base = app.admin_port().map(|p| format!("http://127.0.0.1:{p}"));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let handle = tokio::spawn(app.run_until_stopped(async move {
        let _ = stopped.await;
    }));
    TestApp {
        base,
        admin_base,
        http: reqwest::Client::new(),
        stop: Some(stop),
        handle: Some(handle),
    }
}

impl TestApp {
    /// The first account's resident conversation actors, as `GET /admin/v1/accounts` shows.
    pub async fn live_conversations(&self) -> i64 {
        let (_, body) = self
            .admin(reqwest::Method::GET, "/accounts", Some(ADMIN_TOKEN), None)
            .await;
        body["accounts"][0]["live_conversations"]
            .as_i64()
            .unwrap_or(-1)
    }

    pub async fn post_webhook(&self, body: &str) -> u16 {
        let sig = sign(SECRET.as_bytes(), body.as_bytes());
        self.post_raw(body.as_bytes().to_vec(), Some(&sig)).await
    }

    pub async fn post_raw(&self, body: Vec<u8>, signature: Option<&str>) -> u16 {
        let mut req = self
            .http
            .post(format!("{}/webhook", self.base))
            .header("content-type", "application/json")
            .body(body);
        if let Some(sig) = signature {
            req = req.header("x-hub-signature-256", sig);
        }
        req.send().await.expect("post webhook").status().as_u16()
    }

    pub async fn admin(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self
            .http
            .request(method, format!("{}/admin/v1{}", self.base, path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("admin request");
        let status = resp.status().as_u16();
        let value = resp.json().await.unwrap_or(Value::Null);
        (status, value)
    }

    /// The admin API's view of one conversation (asserting 200).
    pub async fn conversation(&self, user: &str) -> Value {
        let (status, view) = self
            .admin(
                reqwest::Method::GET,
                &format!("/conversations/{PNID}/{user}"),
                Some(ADMIN_TOKEN),
                None,
            )
            .await;
        assert_eq!(status, 200, "{view}");
        view
    }

    pub async fn get(&self, path: &str) -> (u16, String) {
        let resp = self
            .http
            .get(format!("{}{}", self.base, path))
            .send()
            .await
            .expect("get");
        (
            resp.status().as_u16(),
            resp.text().await.unwrap_or_default(),
        )
    }

    /// Graceful stop (SIGTERM path); returns once the app has shut down.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(handle) = self.handle.take() {
            tokio::time::timeout(Duration::from_secs(15), handle)
                .await
                .expect("app stops within 15 s")
                .expect("app task")
                .expect("app exits cleanly");
        }
    }
}

pub async fn count(store: &Store, sql: &str) -> i64 {
    let sql = sql.to_string();
    sqlx::query_scalar::<_, i64>(&sql)
        .fetch_one(store.pool())
        .await
        .expect(&sql)
}

pub fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Poll `f` until it returns true or `timeout` passes.
pub async fn eventually<F, Fut>(timeout: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if f().await {
            return true;
        }
        if std::time::Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Assert that a message with `text` reaches the fake Graph API (within 10 s), and that
/// `settle` later it has been taken once: nothing that could send it again (a replay, a
/// timer, a scan) did. `what` names it in the failure.
pub async fn assert_sent_once(
    graph: &parley_testkit::FakeGraph,
    text: &str,
    what: &str,
    settle: Duration,
) {
    let sent = || {
        graph
            .delivered_texts()
            .iter()
            .filter(|t| t.as_str() == text)
            .count()
    };
    assert!(
        eventually(Duration::from_secs(10), || async { sent() >= 1 }).await,
        "{what} was sent: {:?}",
        graph.delivered_texts()
    );
    tokio::time::sleep(settle).await;
    assert_eq!(
        sent(),
        1,
        "{what}: sent once: {:?}",
        graph.delivered_texts()
    );
}

/// Make the store refuse (until [`drop_outbox_trap`]) any outbox row whose message contains
/// `text`: the step that writes it fails, as on a store that stops taking writes.
pub async fn install_outbox_trap(db: &TestDb, store: &Store, name: &str, text: &str) {
    let install = if db.is_postgres() {
        vec![
            format!(
                "CREATE FUNCTION {name}() RETURNS trigger AS $$ BEGIN \
                 IF NEW.message LIKE '%{text}%' THEN RAISE EXCEPTION 'injected failure'; END IF; \
                 RETURN NEW; END $$ LANGUAGE plpgsql"
            ),
            format!(
                "CREATE TRIGGER {name} BEFORE INSERT ON outbox FOR EACH ROW EXECUTE FUNCTION {name}()"
            ),
        ]
    } else {
        vec![format!(
            "CREATE TRIGGER {name} BEFORE INSERT ON outbox WHEN NEW.message LIKE '%{text}%' \
             BEGIN SELECT RAISE(ABORT, 'injected failure'); END"
        )]
    };
    for sql in install {
        sqlx::query(&sql).execute(store.pool()).await.unwrap();
    }
}

pub async fn drop_outbox_trap(db: &TestDb, store: &Store, name: &str) {
    let drop = if db.is_postgres() {
        format!("DROP TRIGGER {name} ON outbox")
    } else {
        format!("DROP TRIGGER {name}")
    };
    sqlx::query(&drop).execute(store.pool()).await.unwrap();
}

/// The wamids of a conversation view's inbound messages, in the order shown.
pub fn inbound_wamids(view: &Value) -> Vec<String> {
    view["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .filter(|m| m["direction"] == "in")
        .map(|m| m["wamid"].as_str().expect("wamid").to_string())
        .collect()
}

/// An order of `quantity` × `sku` by `user` (key `key`) with a PENDING manual payment:
/// (order number, payment id).
pub async fn order_with_payment(
    store: &Store,
    user: &str,
    key: &str,
    sku: &str,
    quantity: i64,
) -> (String, i64) {
    use parley::domain::{AccountId, Currency, GatewayKind, PaymentMethod, UserKey};
    use parley::store::{CatalogLine, Checkout, Customer, NewPayment};
    let account = AccountId::from(PNID);
    let now = parley::store::now_ms();
    let checkout = store
        .catalog_order(
            &account,
            &UserKey::from(user),
            key,
            &Customer {
                wa_id: Some(user.into()),
                ..Customer::default()
            },
            &[CatalogLine {
                sku: sku.into(),
                quantity,
                claimed: None,
            }],
            Currency::IDR,
            now,
        )
        .await
        .expect("an order");
    let Checkout::Ordered { order } = checkout else {
        panic!("ordered: {checkout:?}")
    };
    let payment = store
        .open_payment(&NewPayment {
            account: &account,
            order_id: order.id,
            user_key: user,
            provider: "bank",
            kind: GatewayKind::Manual,
            method: PaymentMethod::Manual,
            bank: None,
            amount: order.total,
            expires_at: now + 3_600_000,
            idem_key: &format!("pay-{key}"),
            now,
        })
        .await
        .expect("a payment")
        .id;
    (order.order_number.to_string(), payment)
}
