//! The operations of `admin.rs` (accounts, one conversation, messages, flows, bots, reload),
//! campaigns, payments, health, dead letters and the document itself.

use super::op::{op, page, Op};
use crate::ingress::admin::{ReasonBody, ReplyBody, SendRequest};
use crate::ingress::dead_letters::DiscardBody;

/// A health (`healthy`, `warning`, `critical`, …) or a value of the sending control.
const STOP: &str = "{reason?: str?, code?: any, since?: int?}?";

const DEAD_LETTER: &str = "{id: int, kind: str, account: str?, user: str?, ref_id: int?, \
     reason: str, created_at: int, status: str, resolved_at: int?, resolution_note: str?, \
     replayable: bool, raw_bytes: int?, raw_text?: str, raw_base64?: str}";

const QUEUED: &str = "{outbox_id?: int?, held?: bool, duplicate?: bool, reason?: str}";

pub(super) fn ops() -> Vec<Op> {
    vec![
        op("GET", "/openapi.json", "This document").ok(
            200,
            "The OpenAPI 3.1 document of the admin API.",
            "{openapi: str, info: obj, paths: obj, components: obj, webhooks: obj}",
        ),
        op("GET", "/accounts", "The configured numbers").ok(
            200,
            "Each number with its limits and counts (a scoped key: its own only).",
            "{accounts: [{phone_number_id: str, live_conversations: int?, \
             display_phone_number: str?, waba_id: str?, running: bool, mark_read: bool, \
             limits: {messages_per_second: num, pair_rate_interval_ms: int, \
             pair_rate_burst: int, daily_limit: int?, messaging_tier: str, timezone: str?}, \
             conversations: int, contacts: int, outbox_open: int}]}",
        ),
        op(
            "GET",
            "/accounts/{phone_number_id}/usage",
            "A number's sending usage",
        )
        .ok(
            200,
            "Today's count against the daily limit, tier, rate, health, pause and halt.",
            format!(
                "{{phone_number_id: str, waba_id: str?, timezone: str?, day: any, \
                 today: {{sent: any, daily_limit: any, remaining: int?, reserved: any}}, \
                 tier: any, rate: {{configured_mps: any, current_mps: any, \
                 measured_mps_10s: any, cool_off_until: any, pair_rate_interval_ms: int, \
                 pair_rate_burst: int, recipients_backing_off: any}}, health: any, \
                 quality: {{health: any, event: any, meta_tier: any}}, \
                 account_status: {{health: any, event: any}}, paused: {STOP}, \
                 halted: {STOP}, unreachable_contacts: any, templates_not_approved: \
                 [{{name: str, language: str, status: str, reason: str?}}]}}"
            ),
        ),
        op(
            "GET",
            "/accounts/{phone_number_id}/health",
            "Is this number working",
        )
        .ok(
            200,
            "The worst of the sending control, quality and account health, and the backlog.",
            format!(
                "{{phone_number_id: str, status: str(paused|halted|critical|degraded|ok), \
                 sending: {{health: any, paused: {STOP}, halted: {STOP}}}, \
                 quality: {{health: any, event: any}}, account_status: {{health: any, \
                 event: any}}, tier: {{meta: any, limit: any, label: any}}, \
                 today: {{day: any, sent: any, daily_limit: any}}, backlog: {{unsent: int, \
                 oldest_unsent_at: int?, oldest_unsent_age_s: int?, current_mps: any, \
                 cool_off_until: any}}, last_inbound_at: int?, last_outbound_at: int?}}"
            ),
        ),
        op(
            "POST",
            "/accounts/{phone_number_id}/resume",
            "Lift a pause or a halt",
        )
        .ok(
            200,
            "Whether anything was lifted, and the health now.",
            "{resumed: bool, health: any}",
        ),
        op(
            "GET",
            "/conversations/{phone_number_id}/{user}",
            "One conversation",
        )
        .ok(
            200,
            "Its state, window, contact and last 50 messages.",
            "{phone_number_id: str, user: str, contact: obj?, state: obj, window_open: bool, \
             handoff: {status: any, reason: any, since: any, last_activity: any}?, \
             window_expires_at: int?, last_applied_seq: int, messages: [obj]}",
        ),
        op(
            "POST",
            "/conversations/{phone_number_id}/{user}/handoff",
            "A human takes over",
        )
        .optional_body::<ReasonBody>()
        .ok(
            200,
            "The conversation waits for an agent.",
            "{handoff: str}",
        ),
        op(
            "POST",
            "/conversations/{phone_number_id}/{user}/reply",
            "An agent answers",
        )
        .body::<ReplyBody>()
        .ok(202, "Queued.", "{outbox_id: int?, handoff: str}")
        .ok(
            200,
            "An `idempotency_key` already sent: nothing new.",
            QUEUED,
        ),
        op(
            "POST",
            "/conversations/{phone_number_id}/{user}/release",
            "Back to the bot",
        )
        .optional_body::<ReasonBody>()
        .ok(200, "Released.", "{handoff: any}"),
        op("POST", "/messages", "Send a message to anyone")
            .body::<SendRequest>()
            .ok(202, "Queued (or held until the user writes).", QUEUED)
            .ok(
                200,
                "An `idempotency_key` already sent: nothing new.",
                QUEUED,
            ),
        op("POST", "/campaigns", "Create a campaign")
            .body_shape(
                "{name: str, phone_number_id: str, type?: str(broadcast|drip|ab), \
                 message?: obj, steps?: [obj], variants?: [obj], recipients: any, \
                 rate_limit_per_minute?: int, start?: bool, scheduled_for?: any, \
                 failure_threshold?: num, failure_window?: int}",
            )
            .ok(201, "Created.", "{id: int, status: str, total: int}"),
        op("GET", "/campaigns/{id}", "One campaign")
            .int_path(&["id"])
            .ok(
                200,
                "Its status, counters and variants.",
                "{id: int, name: str, type: str, phone_number_id: str, status: str, \
                 pause_reason: str?, in_flight_at_pause: int?, counters: obj, variants: [obj], \
                 rate_limit_per_minute: int, scheduled_for: int?, created_at: int, \
                 started_at: int?, finished_at: int?}",
            ),
        op(
            "GET",
            "/campaigns/{id}/recipients",
            "A campaign's recipients",
        )
        .int_path(&["id"])
        .about("`limit` (100 when left out) is held to 1..=1000.")
        .query("after?: int, limit?: int")
        .ok(
            200,
            "Per-recipient state, a page at a time (`next_after`).",
            "{recipients: [obj], next_after: int?}",
        ),
        op(
            "POST",
            "/campaigns/{id}/{action}",
            "Pause, resume or cancel a campaign",
        )
        .int_path(&["id"])
        .path_shape("action", "str(pause|resume|cancel)")
        .ok(
            200,
            "Its new status.",
            "{id: int, status: str, in_flight_at_pause?: int}",
        ),
        op("GET", "/flows", "The flows").ok(
            200,
            "Each flow's version and executions by status, and the last reload's errors.",
            "{flows: [{id: str, version: any, executions: map(int)}], last_reload_errors: any}",
        ),
        op("GET", "/bots", "The chatbots").ok(
            200,
            "Each bot's sessions by outcome, answers, mean answer time and cost.",
            "{bots: [{id: str, provider: any, model: any, sessions: map(int), answers: int, \
             avg_response_ms: int?, cost: str}]}",
        ),
        op("POST", "/flows/reload", "Reload the flows").ok(
            200,
            "The flows now running.",
            "{flows: [{id: str, version: any}]}",
        ),
        op("GET", "/storage", "What the store holds")
            .about(
                "Rows, bytes and the oldest row's age of each table Parley keeps data in, \
                 with the retention window that bounds it (`[retention]`).",
            )
            .ok(
                200,
                "Every kept table, every account's rows together.",
                "{dialect: str(sqlite|postgres), bytes_method: str, database_bytes: int, \
                 free_bytes: int?, auto_vacuum: str?, log_messages: bool, tables: [{table: str, \
                 rows: int, bytes: int, oldest_at: int?, oldest_age_seconds: int?, retention: str?}]}",
            ),
        op("POST", "/reload", "Reload flows and configuration")
            .about(
                "What `parleyd reload` calls: the flows reloaded, the configuration read again \
                 and its live keys applied.",
            )
            .ok(200, "Everything changed on disk now runs.", RELOADED)
            .ok(
                409,
                "Changed keys need a restart (the live ones are applied).",
                RELOADED,
            )
            .ok(422, "Invalid files: the running version stays.", RELOADED),
        op("GET", "/payments/{id}", "One payment")
            .int_path(&["id"])
            .ok(
                200,
                "The payment and its refunds.",
                "{id: int, order: str?, provider: str, kind: any, method: any, \
                 provider_ref: str?, amount: str, paid_amount: str?, currency: str, \
                 status: str, expires_at: int?, paid_at: int?, notified: any, \
                 refunds: [{id: int, amount: str, reason: str?, status: str, \
                 provider_ref: str?, error: str?, created_at: int}]}",
            ),
        op(
            "POST",
            "/payments/{id}/confirm",
            "Mark a manual or held payment paid",
        )
        .int_path(&["id"])
        .ok(200, "Paid.", "{id: int, status: str}"),
        op(
            "POST",
            "/payments/reconcile",
            "Run the reconciliation pass now",
        )
        .ok(200, "Done.", "{reconciled: bool}"),
        op("GET", "/dead-letters", "Dead letters")
            .query("kind?: str, account?: str, open?: bool, limit?: int(1..200), cursor?: str")
            .ok(200, "Newest first.", page(DEAD_LETTER)),
        op(
            "GET",
            "/dead-letters/{id}",
            "One dead letter, with its kept bytes",
        )
        .int_path(&["id"])
        .ok(200, "The letter.", DEAD_LETTER),
        op("POST", "/dead-letters/{id}/replay", "Do again what failed")
            .int_path(&["id"])
            .ok(
                200,
                "Replayed: the letter, and what the replay did.",
                format!("{{replay: obj, {}", &DEAD_LETTER[1..]),
            ),
        op(
            "POST",
            "/dead-letters/{id}/discard",
            "Discard a dead letter",
        )
        .int_path(&["id"])
        .optional_body::<DiscardBody>()
        .ok(200, "Discarded.", DEAD_LETTER),
    ]
}

const RELOADED: &str = "{flows: [{id: str, version: any}], flow_errors: [str], \
     config_errors: [str], applied: [str], restart_required: [str]}";
