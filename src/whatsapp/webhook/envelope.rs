//! The envelope walked: entries, their changes, a `messages` change's value (metadata,
//! contacts, messages, statuses, errors), and the other fields as account events.

use super::fields::non_empty;
use super::*;

// ---------------------------------------------------------------------------------------------
// Raw (Meta-shaped) structs. Private to the decoder; every field optional / defaulted; unknown fields ignored.
// ---------------------------------------------------------------------------------------------

#[derive(Deserialize)]
pub(super) struct RawEnvelope<'a> {
    #[serde(default, borrow)]
    pub(super) object: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub(super) entry: Vec<RawEntry<'a>>,
}

#[derive(Deserialize)]
pub(super) struct RawEntry<'a> {
    #[serde(default)]
    pub(super) id: Option<StrOrNum>,
    #[serde(default, borrow)]
    pub(super) changes: Vec<RawChange<'a>>,
}

#[derive(Deserialize)]
pub(super) struct RawChange<'a> {
    #[serde(default, borrow)]
    field: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    value: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct RawMetadata {
    #[serde(default)]
    display_phone_number: Option<StrOrNum>,
    #[serde(default)]
    phone_number_id: Option<StrOrNum>,
}

/// Only the metadata of any change value (used for non-`messages` fields).
#[derive(Deserialize)]
struct RawMetaOnly {
    #[serde(default)]
    metadata: Option<RawMetadata>,
}

#[derive(Deserialize)]
struct RawMessagesValue<'a> {
    #[serde(default)]
    metadata: Option<RawMetadata>,
    #[serde(default, borrow)]
    contacts: Vec<&'a RawValue>,
    #[serde(default, borrow)]
    messages: Vec<&'a RawValue>,
    #[serde(default, borrow)]
    statuses: Vec<&'a RawValue>,
    #[serde(default, borrow)]
    errors: Vec<&'a RawValue>,
}

#[derive(Deserialize)]
struct RawContact {
    #[serde(default)]
    profile: Option<RawProfile>,
    #[serde(default)]
    wa_id: Option<StrOrNum>,
    #[serde(default)]
    user_id: Option<String>,
}

#[derive(Deserialize)]
struct RawProfile {
    #[serde(default)]
    name: Option<String>,
}

impl Decoder {
    pub(super) fn change(&mut self, path: &str, waba_id: &str, change: &RawChange<'_>) {
        let Some(field) = change.field.as_deref() else {
            self.skip(path, "change without `field`");
            return;
        };
        let Some(value) = change.value else {
            self.skip(path, "change without `value`");
            return;
        };
        if field == "messages" {
            self.messages_change(path, value);
        } else {
            self.account_event(path, waba_id, field, value);
        }
    }

    fn account_event(&mut self, path: &str, waba_id: &str, field: &str, value: &RawValue) {
        let phone_number_id = serde_json::from_str::<RawMetaOnly>(value.get())
            .ok()
            .and_then(|m| m.metadata)
            .and_then(|m| m.phone_number_id)
            .map(StrOrNum::into_string);
        match serde_json::from_str::<serde_json::Value>(value.get()) {
            Ok(value) => self.events.push(WebhookEvent::AccountEvent(AccountEvent {
                waba_id: waba_id.to_string(),
                field: field.to_string(),
                phone_number_id,
                value,
            })),
            Err(e) => self.skip(format!("{path}.value"), e.to_string()),
        }
    }

    fn messages_change(&mut self, path: &str, value: &RawValue) {
        let v: RawMessagesValue<'_> = match serde_json::from_str(value.get()) {
            Ok(v) => v,
            Err(e) => {
                self.skip(format!("{path}.value"), format!("bad messages value: {e}"));
                return;
            }
        };
        let (phone_number_id, display) = match v.metadata {
            Some(m) => (
                m.phone_number_id.map(StrOrNum::into_string),
                m.display_phone_number
                    .map(StrOrNum::into_string)
                    .unwrap_or_default(),
            ),
            None => (None, String::new()),
        };
        let phone_number_id = phone_number_id.filter(|s| !s.is_empty());

        if let Some(pnid) = phone_number_id.as_deref() {
            let contacts: Vec<ContactInfo> = v
                .contacts
                .iter()
                .filter_map(|c| serde_json::from_str::<RawContact>(c.get()).ok())
                .map(|c| ContactInfo {
                    wa_id: c.wa_id.map(StrOrNum::into_string),
                    user_id: non_empty(c.user_id),
                    name: c.profile.and_then(|p| p.name),
                })
                .collect();
            for (i, raw) in v.messages.iter().enumerate() {
                let mpath = format!("{path}.value.messages[{i}]");
                self.message(&mpath, pnid, &display, &contacts, raw);
            }
            for (i, raw) in v.statuses.iter().enumerate() {
                let spath = format!("{path}.value.statuses[{i}]");
                self.status(&spath, pnid, raw);
            }
        } else if !v.messages.is_empty() || !v.statuses.is_empty() {
            self.skip(
                format!("{path}.value"),
                format!(
                    "messages change without metadata.phone_number_id: {} message(s), {} status(es) skipped",
                    v.messages.len(),
                    v.statuses.len()
                ),
            );
        }

        if !v.errors.is_empty() {
            let mut errors = Vec::with_capacity(v.errors.len());
            for (i, raw) in v.errors.iter().enumerate() {
                match serde_json::from_str::<RawError>(raw.get()) {
                    Ok(e) => errors.push(error_info(e)),
                    Err(e) => self.skip(format!("{path}.value.errors[{i}]"), e.to_string()),
                }
            }
            if !errors.is_empty() {
                self.events.push(WebhookEvent::ChangeError(ChangeError {
                    phone_number_id: phone_number_id.clone(),
                    errors,
                }));
            }
        }
    }
}
