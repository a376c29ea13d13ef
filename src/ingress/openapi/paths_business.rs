//! The operations of issue #21's modules: keys and the audit log, webhook endpoints,
//! contacts (fields, consent, import, export), the inbox and message search.

use super::op::{op, page, Op};
use crate::ingress::access::NewKeyBody;
use crate::ingress::contacts::{AssignBody, ConsentBody, ContactBody, FieldBody, TagsBody};
use crate::ingress::hooks::{CreateBody, RecoverBody, UpdateBody};

const KEY: &str = "{id: int, name: str, role: str(owner|admin|manager|agent), account: str?, \
     prefix: str, status: str(active|expired|revoked), created_by: int|str?, created_at: int, \
     expires_at: int?, last_used_at: int?, revoked_at: int?}";

const ENDPOINT: &str = "{id: str, account: str?, url: str, events: [str], active: bool, \
     description: str, failing_since: int?, disabled_reason: str?, \
     previous_secret_until: int?, created_at: int, updated_at: int}";

const CONTACT: &str = "{wa_id: str, user_id?: str?, name: str?, profile: obj, \
     custom_fields: obj, tags: [str], source: str(manual|import|api|whatsapp), \
     blocked_at: int?, opted_out_at: int?, first_seen_at: int, last_message_at?: int?, \
     updated_at: int?}";

const CONSENT: &str = "{id: int, action: str, source: str, actor: str, note: str?, at: int}";

const FIELD: &str = "{name: str, kind: str(text|number|date|list|boolean), options: [str]}";

const ACCOUNT: &str = "account?: str";

const CONTACT_FILTERS: &str = "account?: str, tag?: str, blocked?: bool, opted_out?: bool, \
     source?: str, updated_since?: int, q?: str";

pub(super) fn ops() -> Vec<Op> {
    vec![
        // Keys and the audit log.
        op("GET", "/keys", "API keys")
            .query("limit?: int(1..200), cursor?: str")
            .ok(200, "Newest first; never a key's text.", page(KEY)),
        op("POST", "/keys", "Make an API key")
            .body::<NewKeyBody>()
            .ok(
                201,
                "The key, with its text in `key` (shown this once).",
                format!("{{key: str, {}", &KEY[1..]),
            ),
        op("GET", "/keys/{id}", "One API key").ok(200, "The key.", KEY),
        op("DELETE", "/keys/{id}", "Revoke an API key").ok(200, "Revoked.", KEY),
        op("POST", "/keys/{id}/revoke", "Revoke an API key").ok(200, "Revoked.", KEY),
        op("GET", "/analytics", "Figures per day, week or month")
            .about(
                "Snapshots of one account, kept current within about 10 s: messages, \
                 contacts, statuses and their rates, first responses, handoffs, flows, bots, \
                 campaigns, orders and revenue (README \"Analytics\"). Days are the \
                 account's time zone's; weeks start on Monday; the range is inclusive, \
                 widened to whole periods, at most 1,098 days.",
            )
            .query(
                "account?: str, period?: str(day|week|month), from?: str, to?: str, \
                 format?: str(json|csv)",
            )
            .ok_or_csv(
                200,
                "One item per period, empty periods as zeros (money as decimal text per currency).",
                "{account: str, period: str, timezone: str, from: str, to: str, items: [{start: str, \
                 end: str, median_first_response_ms: int?, bot_cost: str, ordered: map(str), \
                 revenue: map(str), refunded: map(str), net_revenue: map(str)}]}",
            ),
        op("GET", "/audit", "The audit log")
            .query("key?: str, action?: str, since?: int, limit?: int(1..200), cursor?: str")
            .ok(
                200,
                "Newest first.",
                page(
                    "{id: int, at: int, key_id: int|str?, role: str, action: str, resource: str, \
                     account: str?, status: int, ip: str?, user_agent: str?, details: any}",
                ),
            ),
        // Webhook endpoints.
        op("GET", "/webhooks", "Webhook endpoints")
            .query("account?: str, limit?: int(1..200), cursor?: str")
            .ok(200, "A page of endpoints.", page(ENDPOINT)),
        op("POST", "/webhooks", "Add a webhook endpoint")
            .body::<CreateBody>()
            .ok(
                201,
                "The endpoint, with its `secret` (`whsec_…`, shown this once).",
                format!("{{secret: str, {}", &ENDPOINT[1..]),
            ),
        op("GET", "/webhooks/{id}", "One webhook endpoint").ok(200, "The endpoint.", ENDPOINT),
        op("PATCH", "/webhooks/{id}", "Change a webhook endpoint")
            .body::<UpdateBody>()
            .ok(200, "The endpoint.", ENDPOINT),
        op("DELETE", "/webhooks/{id}", "Drop a webhook endpoint").empty(204, "Dropped."),
        op("POST", "/webhooks/{id}/rotate", "A new signing secret").ok(
            200,
            "The new secret; the old one signs too until `previous_secret_until`.",
            "{id: str, secret: str, previous_secret_until: int}",
        ),
        op(
            "GET",
            "/webhooks/{id}/deliveries",
            "An endpoint's delivery log",
        )
        .query("limit?: int(1..200), cursor?: str")
        .ok(
            200,
            "Each attempt, newest first.",
            page(
                "{id: int, delivery_id: int, event_id: str, event_type: str, at: int, \
                     latency_ms: int?, status: int?, body: str?, error: str?, \
                     delivery_state: str(pending|succeeded|failed|exhausted)}",
            ),
        ),
        op(
            "POST",
            "/webhooks/{id}/deliveries/{delivery}/replay",
            "Send one delivery again",
        )
        .int_path(&["delivery"])
        .ok(202, "Queued again.", "{replayed: int}"),
        op(
            "POST",
            "/webhooks/{id}/recover",
            "Send every failed delivery since a time again",
        )
        .body::<RecoverBody>()
        .ok(202, "Queued again.", "{recovered: int}"),
        op("POST", "/webhooks/{id}/test", "Send a `webhook.test` event")
            .about("To this endpoint only, whatever its events filter.")
            .ok(202, "Queued.", "{sent: bool}"),
        // Contacts.
        op("GET", "/contacts", "Contacts")
            .query(concat_filters())
            .ok(200, "A keyset page.", page(CONTACT)),
        op("POST", "/contacts", "Create or update a contact by `wa_id`")
            .query(ACCOUNT)
            .body::<ContactBody>()
            .ok(201, "Created.", CONTACT)
            .ok(200, "Updated.", CONTACT),
        op("POST", "/contacts/import", "Import contacts from CSV")
            .query("account?: str, dry_run?: bool")
            .csv_body()
            .ok(
                202,
                "The import runs as a job.",
                "{job_id: int, state: str, dry_run: bool}",
            ),
        op("GET", "/contacts/import/{id}", "An import job")
            .query(ACCOUNT)
            .ok(
                200,
                "Where it stands, with each bad line.",
                "{id: int, dry_run: bool, state: str, total: int, valid: int, applied: int, \
             errors: [{line: int?, error: str}], created_at: int, finished_at: int?}",
            ),
        op("GET", "/contacts/export", "Contacts as CSV")
            .query(CONTACT_FILTERS)
            .csv(200, "The columns an import reads."),
        op(
            "GET",
            "/contacts/{wa_id}",
            "One contact, with its consent ledger",
        )
        .query(ACCOUNT)
        .ok(
            200,
            "The contact.",
            format!("{{consent: [{CONSENT}], {}", &CONTACT[1..]),
        ),
        op("PATCH", "/contacts/{wa_id}", "Change a contact")
            .query(ACCOUNT)
            .body::<ContactBody>()
            .ok(200, "The contact.", CONTACT),
        op(
            "DELETE",
            "/contacts/{wa_id}",
            "Erase a contact and its message bodies",
        )
        .query(ACCOUNT)
        .ok(
            200,
            "Erased (counts and statuses stay).",
            "{deleted: bool, erased: {inbound_messages: int, outbound_messages: int, media_files: int}}",
        ),
        op("POST", "/contacts/{wa_id}/tags", "Set, add or remove tags")
            .query(ACCOUNT)
            .body::<TagsBody>()
            .ok(200, "The contact.", CONTACT),
        op(
            "GET",
            "/contacts/{wa_id}/consent",
            "A contact's consent ledger",
        )
        .query(ACCOUNT)
        .ok(200, "Oldest first.", format!("{{items: [{CONSENT}]}}")),
        op(
            "POST",
            "/contacts/{wa_id}/{action}",
            "Block, unblock, opt out or opt in",
        )
        .path_shape("action", "str(block|unblock|opt-out|opt-in)")
        .query(ACCOUNT)
        .optional_body::<ConsentBody>()
        .ok(200, "The contact.", CONTACT),
        op("GET", "/contact-fields", "Custom field definitions")
            .query(ACCOUNT)
            .ok(200, "Every definition.", format!("{{items: [{FIELD}]}}")),
        op("POST", "/contact-fields", "Define a custom field")
            .query(ACCOUNT)
            .body::<FieldBody>()
            .ok(200, "The definition.", FIELD),
        op(
            "DELETE",
            "/contact-fields/{name}",
            "Drop a custom field definition",
        )
        .query(ACCOUNT)
        .ok(200, "Dropped.", "{deleted: str}"),
        // The inbox and search.
        op("GET", "/conversations", "The inbox")
            .query("account?: str, limit?: int(1..200), cursor?: str")
            .ok(
                200,
                "Newest first (by the customer's latest message).",
                page(
                    "{user: str, name: str?, last_message: {direction: str, kind: str, \
                     preview: str, at: int}?, unread: int, \
                     status: str(bot|waiting_for_agent|with_agent), assignee: str?, \
                     last_inbound_at: int?, window_expires_at: int?, flow: any, node: any, \
                     blocked: any}",
                ),
            ),
        op(
            "POST",
            "/conversations/{phone_number_id}/{user}/read",
            "Mark read",
        )
        .ok(
            200,
            "Everything so far is read.",
            "{read_seq: int?, unread: int}",
        ),
        op(
            "POST",
            "/conversations/{phone_number_id}/{user}/assign",
            "Assign to an agent",
        )
        .body::<AssignBody>()
        .ok(200, "The assignee (null: none).", "{assignee: str?}"),
        op("GET", "/messages/search", "Full-text message search")
            .query(
                "q: str, account?: str, user?: str, from?: int, to?: int, limit?: int(1..200), \
                 cursor?: str",
            )
            .ok(
                200,
                "Newest first.",
                page("{id: int, user: str, direction: str, message_id: int, at: int, text: str}"),
            ),
    ]
}

const fn concat_filters() -> &'static str {
    "account?: str, tag?: str, blocked?: bool, opted_out?: bool, source?: str, \
     updated_since?: int, q?: str, limit?: int(1..200), cursor?: str"
}
