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

/// An id kept as text, as a type: one kind of id cannot be passed where another is meant.
macro_rules! id_text {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(
            Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize,
            serde::Deserialize,
        )]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub fn new(id: impl Into<String>) -> Self {
                Self(id.into())
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }

            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<String> for $name {
            fn from(id: String) -> Self {
                Self(id)
            }
        }

        impl From<&str> for $name {
            fn from(id: &str) -> Self {
                Self(id.to_string())
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        // Read as the text it is wherever text is read (`&id` coerces to `&str`); made only
        // on purpose (`new`, `from`), so one kind of id is never put where another belongs.
        impl std::ops::Deref for $name {
            type Target = str;

            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<String> for $name {
            fn eq(&self, other: &String) -> bool {
                self.0 == *other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }
    };
}

id_text! {
    /// A business number, as Meta names it: its `phone_number_id`.
    AccountId
}

id_text! {
    /// A customer, as their conversation is keyed: the `wa_id`, or the business-scoped user
    /// id when Meta gives no number.
    UserKey
}

id_text! {
    /// A WhatsApp message id (`wamid.…`), ours or the customer's.
    Wamid
}

id_text! {
    /// A customer's WhatsApp number as Meta gives it (`wa_id`); a conversation's [`UserKey`]
    /// when there is one, else its business-scoped user id is.
    WaId
}

/// One conversation: a business number and one of its customers. (No `Display`: the
/// customer's key is a phone number, masked wherever it is logged.)
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConversationKey {
    pub account: AccountId,
    pub user: UserKey,
}

impl ConversationKey {
    pub fn new(account: impl Into<AccountId>, user: impl Into<UserKey>) -> ConversationKey {
        ConversationKey {
            account: account.into(),
            user: user.into(),
        }
    }
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

    #[test]
    fn an_id_is_its_text_in_json_and_in_lookups_but_only_made_on_purpose() {
        let user = UserKey::new("6281234567890");
        assert_eq!(serde_json::to_string(&user).unwrap(), "\"6281234567890\"");
        assert_eq!(
            serde_json::from_str::<UserKey>("\"6281234567890\"").unwrap(),
            user
        );
        let mut seen = std::collections::HashSet::new();
        seen.insert(user.clone());
        assert!(seen.contains("6281234567890"));
        assert_eq!(&*user, "6281234567890");
        let key = ConversationKey::new("106540352242922", user);
        assert_eq!(key.account, "106540352242922");
        assert_eq!(key.user.as_str(), "6281234567890");
    }
}

/// Who called the admin API, as the audit log and a key's `created_by` name it: the
/// configured `admin.token` ("admin.token") or an API key (its id, "12").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyRef {
    AdminToken,
    Key(i64),
}

impl KeyRef {
    pub const ADMIN_TOKEN: &'static str = "admin.token";
}

impl std::fmt::Display for KeyRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyRef::AdminToken => f.write_str(Self::ADMIN_TOKEN),
            KeyRef::Key(id) => write!(f, "{id}"),
        }
    }
}

impl std::str::FromStr for KeyRef {
    type Err = crate::domain::UnknownValue;

    fn from_str(s: &str) -> Result<KeyRef, Self::Err> {
        match s {
            Self::ADMIN_TOKEN => Ok(KeyRef::AdminToken),
            _ => s
                .parse()
                .map(KeyRef::Key)
                .map_err(|_| crate::domain::UnknownValue {
                    kind: "KeyRef",
                    value: s.to_string(),
                }),
        }
    }
}

impl serde::Serialize for KeyRef {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod key_ref_tests {
    use super::KeyRef;

    #[test]
    fn a_key_ref_reads_back_from_its_text() {
        for k in [KeyRef::AdminToken, KeyRef::Key(12)] {
            assert_eq!(k.to_string().parse::<KeyRef>(), Ok(k));
        }
        assert_eq!(KeyRef::AdminToken.to_string(), "admin.token");
        assert!("admin".parse::<KeyRef>().is_err());
    }
}
