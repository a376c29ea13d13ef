//! Ids that carry meaning: a campaign message's request id, and the outbox idempotency key
//! derived from it.

/// Request ids of campaign messages start with this (the outbox row's idempotency key is
/// derived from the request id, so a campaign + recipient + step is sent once).
pub const CAMPAIGN_REQUEST_PREFIX: &str = "campaign:";

pub fn is_campaign_request(request_id: &str) -> bool {
    request_id.starts_with(CAMPAIGN_REQUEST_PREFIX)
}

/// The idempotency key of one message of a campaign (`fallback`: the template sent instead
/// of a free-form message outside the window).
pub fn request_id(campaign: i64, recipient: i64, step: i64, fallback: bool) -> String {
    let f = if fallback { ":f" } else { "" };
    format!("{CAMPAIGN_REQUEST_PREFIX}{campaign}:{recipient}:{step}{f}")
}

/// The campaign of an outbox row, from its idem key: a campaign's request id `campaign:{id}:…`
/// is the row's origin, `{account}:{user}:out{request_id}:{n}` (see the conversation actor).
pub fn campaign_of_idem_key(idem_key: &str) -> Option<i64> {
    let marker = format!(":out{CAMPAIGN_REQUEST_PREFIX}");
    let (_, rest) = idem_key.split_once(&marker)?;
    rest.split(':').next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outbox_rows_campaign_is_read_from_its_idem_key() {
        let rid = request_id(42, 7, 1, true);
        let key = format!("106540352242922:62811000:out{rid}:0");
        assert_eq!(campaign_of_idem_key(&key), Some(42));
        assert_eq!(
            campaign_of_idem_key("106540352242922:62811000:outapi-1:0"),
            None
        );
        assert_eq!(campaign_of_idem_key("in00000000000000000012:0"), None);
    }
}
