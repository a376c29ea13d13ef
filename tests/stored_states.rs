//! The states the SQL spells as literals (`state = 'pending'`, `status IN ('running', …)`) are
//! the texts of the stored-state enums in `parley::domain` (a webhook delivery's, in
//! `parley::hooks`; or, for an outbox row's `status`,
//! Meta's delivery statuses): a statement naming a state no enum has (a typo, a state renamed
//! in one place) fails here, so the enums and the SQL cannot drift apart.

use std::path::Path;
use std::str::FromStr;

use parley::domain::{
    CampaignStatus, CartStatus, FlowRunStatus, ImportState, InboxState, OrderStatus, OutboxState,
    PaymentStatus, RecipientState, RefundStatus, SubscriptionStatus, TimerState,
};
use parley::hooks::DeliveryState;
use parley::whatsapp::event::DeliveryStatus;

fn is_state(s: &str) -> bool {
    InboxState::from_str(s).is_ok()
        || OutboxState::from_str(s).is_ok()
        || TimerState::from_str(s).is_ok()
        || RecipientState::from_str(s).is_ok()
        || DeliveryState::from_str(s).is_ok()
        || ImportState::from_str(s).is_ok()
}

fn is_status(s: &str) -> bool {
    CampaignStatus::from_str(s).is_ok()
        || FlowRunStatus::from_str(s).is_ok()
        || CartStatus::from_str(s).is_ok()
        || OrderStatus::from_str(s).is_ok()
        || PaymentStatus::from_str(s).is_ok()
        || RefundStatus::from_str(s).is_ok()
        || SubscriptionStatus::from_str(s).is_ok()
        || !matches!(DeliveryStatus::parse(s), DeliveryStatus::Other(_))
}

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The quoted words right after `column = ` or inside `column IN (…)`, where `column` is a
/// whole word (not `send_state`).
fn literals_after<'a>(text: &'a str, column: &str) -> Vec<&'a str> {
    let mut found = Vec::new();
    let mut from = 0;
    while let Some(at) = text[from..].find(column) {
        let start = from + at;
        from = start + column.len();
        let before = text[..start].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let rest = &text[from..];
        let list = if let Some(r) = rest.strip_prefix(" = '") {
            &r[..r.find('\'').unwrap_or(0)]
        } else if let Some(r) = rest.strip_prefix(" IN (") {
            &r[..r.find(')').unwrap_or(0)]
        } else {
            continue;
        };
        for item in list.split(',') {
            let word = item.trim().trim_matches('\'');
            if !word.is_empty() && word.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
                found.push(word);
            }
        }
    }
    found
}

#[test]
fn every_state_the_sql_names_is_a_stored_state() {
    let mut files = Vec::new();
    rust_files(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("src").as_path(),
        &mut files,
    );
    let mut seen = 0;
    let mut unknown = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        // Qualified (`o.state`) or not.
        for (column, known) in [
            ("state", is_state as fn(&str) -> bool),
            ("status", is_status),
        ] {
            for word in literals_after(&text, column) {
                seen += 1;
                if !known(word) {
                    unknown.push(format!("{}: {column} '{word}'", file.display()));
                }
            }
        }
    }
    assert!(
        seen >= 30,
        "the check read only {seen} state literals: is it still reading the SQL?"
    );
    assert!(unknown.is_empty(), "states no enum knows: {unknown:#?}");
}

#[test]
fn the_check_reads_qualified_columns_and_lists_and_refuses_unknown_states() {
    let sql = "UPDATE outbox SET state = 'fried' WHERE o.state IN ('pending', 'sending') \
               AND send_state = 'nope' AND c.status = 'paused'";
    assert_eq!(
        literals_after(sql, "state"),
        vec!["fried", "pending", "sending"]
    );
    assert_eq!(literals_after(sql, "status"), vec!["paused"]);
    assert!(!is_state("fried"));
    assert!(is_state("pending") && is_status("paused") && is_status("delivered"));
}
