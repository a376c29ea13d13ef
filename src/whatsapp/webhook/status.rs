//! One status of a message we sent (sent, delivered, read, failed...).

use super::fields::non_empty;
use super::*;

#[derive(Deserialize)]
struct RawStatus {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    timestamp: Option<StrOrNum>,
    #[serde(default)]
    recipient_id: Option<StrOrNum>,
    #[serde(default)]
    biz_opaque_callback_data: Option<String>,
    #[serde(default)]
    errors: Vec<RawError>,
    #[serde(default)]
    pricing: Option<serde_json::Value>,
    #[serde(default)]
    conversation: Option<serde_json::Value>,
}

impl Decoder {
    pub(super) fn status(&mut self, path: &str, pnid: &str, raw: &RawValue) {
        let s: RawStatus = match serde_json::from_str(raw.get()) {
            Ok(s) => s,
            Err(e) => {
                self.skip(path, format!("status not decodable: {e}"));
                return;
            }
        };
        let Some(wamid) = non_empty(s.id) else {
            self.skip(path, "status without `id` (wamid)");
            return;
        };
        let Some(status) = non_empty(s.status) else {
            self.skip(path, "status without `status`");
            return;
        };
        let timestamp = self.timestamp(path, s.timestamp.as_ref());
        self.events.push(WebhookEvent::Status(StatusUpdate {
            phone_number_id: pnid.to_string(),
            wamid,
            status: DeliveryStatus::parse(&status),
            timestamp,
            recipient_id: s.recipient_id.map(StrOrNum::into_string),
            biz_opaque_callback_data: s.biz_opaque_callback_data,
            errors: s.errors.into_iter().map(error_info).collect(),
            pricing: s.pricing,
            conversation: s.conversation,
        }));
    }
}
