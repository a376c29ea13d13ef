//! Where settings come from: credential files, the fingerprint a reload compares, and the
//! redaction of secrets in syntax errors.

use super::*;

/// Per config key (`http.listen`, `accounts[0].daily_limit`), a SHA-256 of its value. Kept
/// in memory only and never printed, so secrets can be compared without being held in clear.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Fingerprint(std::collections::BTreeMap<String, [u8; 32]>);

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({} keys)", self.0.len())
    }
}

impl Fingerprint {
    pub(super) fn of(tree: &config::Value) -> Fingerprint {
        use sha2::Digest;
        let mut out = std::collections::BTreeMap::new();
        for_each_leaf(tree, &mut |key, leaf| {
            out.insert(
                key.to_string(),
                sha2::Sha256::digest(leaf_text(leaf)).into(),
            );
        });
        Fingerprint(out)
    }

    /// The keys whose value differs between the two (added, removed or changed), sorted.
    pub fn changed_keys(&self, other: &Fingerprint) -> Vec<String> {
        let mut keys: Vec<String> = self
            .0
            .iter()
            .filter(|(k, v)| other.0.get(*k) != Some(v))
            .map(|(k, _)| k.clone())
            .chain(other.0.keys().filter(|k| !self.0.contains_key(*k)).cloned())
            .collect();
        keys.sort();
        keys.dedup();
        keys
    }

    /// This fingerprint with `keys` taken from `other` (a key `other` lacks is dropped): the
    /// running configuration after a reload applied those keys.
    pub fn adopt(&self, other: &Fingerprint, keys: &[String]) -> Fingerprint {
        let mut out = self.0.clone();
        for k in keys {
            match other.0.get(k) {
                Some(v) => out.insert(k.clone(), *v),
                None => out.remove(k),
            };
        }
        Fingerprint(out)
    }
}

/// Secrets from systemd's `LoadCredential=`: each file in `$CREDENTIALS_DIRECTORY` named after
/// a config key (`whatsapp.app_secret`, `admin.token`, `accounts[0].access_token`) sets that
/// key, one trailing newline removed. Layered above the config files, below `PARLEY__*`.
#[derive(Clone)]
pub(super) struct Credentials(pub(super) Vec<(String, String)>);

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.0.iter().map(|(k, _)| k.as_str()).collect();
        write!(f, "Credentials({names:?})")
    }
}

impl Credentials {
    pub(super) fn read(dir: &Path) -> Result<Credentials, ConfigError> {
        let entries = std::fs::read_dir(dir).map_err(|e| {
            ConfigError::Load(format!("$CREDENTIALS_DIRECTORY {}: {e}", dir.display()))
        })?;
        let mut found = Vec::new();
        for entry in entries.filter_map(Result::ok) {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !is_config_key(&name) {
                continue;
            }
            let mut value = std::fs::read_to_string(entry.path()).map_err(|e| {
                ConfigError::Load(format!("credential {name}: {e} (it must be UTF-8 text)"))
            })?;
            if value.ends_with('\n') {
                value.pop();
                if value.ends_with('\r') {
                    value.pop();
                }
            }
            found.push((name, value));
        }
        found.sort();
        Ok(Credentials(found))
    }
}

/// `section.key`, `section.sub.key` or `accounts[0].key`: lowercase words, dots, indexes.
pub(super) fn is_config_key(name: &str) -> bool {
    let mut parts = 0;
    for part in name.split('.') {
        let word = part.split('[').next().unwrap_or("");
        let indexes = &part[word.len()..];
        let word_ok = !word.is_empty()
            && word
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
        let indexes_ok = indexes.is_empty()
            || indexes
                .strip_prefix('[')
                .and_then(|r| r.strip_suffix(']'))
                .is_some_and(|n| {
                    n.split("][")
                        .all(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()))
                });
        if !word_ok || !indexes_ok {
            return false;
        }
        parts += 1;
    }
    parts >= 2
}

impl config::Source for Credentials {
    fn clone_into_box(&self) -> Box<dyn config::Source + Send + Sync> {
        Box::new(self.clone())
    }

    fn collect(&self) -> Result<config::Map<String, config::Value>, config::ConfigError> {
        let origin = "$CREDENTIALS_DIRECTORY".to_string();
        Ok(self
            .0
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    config::Value::new(Some(&origin), config::ValueKind::String(v.clone())),
                )
            })
            .collect())
    }
}

/// The config keys whose values are secrets: `*` stands for any one name or index. Every
/// `SecretString` field of the settings is here (a test counts them), and a configuration
/// error never shows the value of one of these keys, or of a section that holds one.
pub const SECRET_KEYS: &[&str] = &[
    "whatsapp.app_secret",
    "whatsapp.verify_token",
    "whatsapp.access_token",
    "admin.token",
    "accounts[*].access_token",
    "accounts[*].webhook_secret",
    "ai.providers.*.api_key",
    "payments.providers.*.merchant_id",
    "payments.providers.*.merchant_key",
    "payments.providers.*.secret_key",
    "payments.providers.*.callback_token",
    "payments.providers.*.server_key",
    "payments.providers.*.webhook_secret",
];

/// `accounts[0].access_token` (or `accounts.0.access_token`, as the environment spells it) →
/// `accounts`, `0`, `access_token`.
pub(super) fn key_segments(key: &str) -> impl Iterator<Item = &str> {
    key.split(['.', '[', ']']).filter(|s| !s.is_empty())
}

/// True for a secret key, a section that holds one (`whatsapp`, `accounts[0]`: a value there
/// may be a secret in the wrong shape), and anything under one.
pub fn holds_secret(key: &str) -> bool {
    SECRET_KEYS.iter().any(|pattern| {
        key_segments(key)
            .zip(key_segments(pattern))
            .all(|(k, p)| p == "*" || k.eq_ignore_ascii_case(p))
    })
}

/// Calls `f` with every leaf of a config tree and its key (`http.listen`,
/// `accounts[0].daily_limit`); an empty table or list is a leaf.
pub(super) fn for_each_leaf(tree: &config::Value, f: &mut impl FnMut(&str, &config::ValueKind)) {
    pub(super) fn walk(
        prefix: &str,
        v: &config::Value,
        f: &mut impl FnMut(&str, &config::ValueKind),
    ) {
        match &v.kind {
            config::ValueKind::Table(t) if !t.is_empty() => {
                for (k, v) in t {
                    let key = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    walk(&key, v, f);
                }
            }
            config::ValueKind::Array(a) if !a.is_empty() => {
                for (i, v) in a.iter().enumerate() {
                    walk(&format!("{prefix}[{i}]"), v, f);
                }
            }
            leaf => f(prefix, leaf),
        }
    }
    walk("", tree, f);
}

/// The text of a leaf (what `{}` shows of it, and what a parse error would quote).
pub(super) fn leaf_text(leaf: &config::ValueKind) -> String {
    match leaf {
        config::ValueKind::Table(_) => "{}".to_string(),
        config::ValueKind::Array(_) => "[]".to_string(),
        other => other.to_string(),
    }
}

/// Values that must not appear in a configuration error: each is replaced by `***`.
/// (No `Debug`: it holds secrets in clear.)
#[derive(Default)]
pub(super) struct Redactor(pub(super) Vec<String>);

impl Redactor {
    /// Shorter values are left alone: replacing a one-letter value would garble every message
    /// and protect nothing.
    const MIN_CHARS: usize = 4;

    pub(super) fn add(&mut self, value: &str) {
        if value.chars().count() < Self::MIN_CHARS {
            return;
        }
        // `invalid type: string "…"` quotes a value with Rust's escapes.
        let quoted = format!("{value:?}");
        let escaped = &quoted[1..quoted.len() - 1];
        if escaped != value {
            self.0.push(escaped.to_string());
        }
        self.0.push(value.to_string());
    }

    /// Every value under a key that [`holds_secret`].
    pub(super) fn add_secrets_of(&mut self, tree: &config::Value) {
        for_each_leaf(tree, &mut |key, leaf| {
            if holds_secret(key) {
                self.add(&leaf_text(leaf));
            }
        });
    }

    pub(super) fn scrub(&self, text: &str) -> String {
        let mut values: Vec<&str> = self.0.iter().map(String::as_str).collect();
        // The longest first, so that a value containing another is replaced whole.
        values.sort_by_key(|v| std::cmp::Reverse(v.len()));
        values
            .into_iter()
            .fold(text.to_string(), |text, value| text.replace(value, "***"))
    }

    pub(super) fn scrub_error(&self, e: ConfigError) -> ConfigError {
        match e {
            ConfigError::Load(message) => ConfigError::Load(self.scrub(&message)),
            ConfigError::Invalid { sources, errors } => ConfigError::Invalid {
                sources,
                errors: errors.iter().map(|e| self.scrub(e)).collect(),
            },
        }
    }
}

/// `file:line:col: what is wrong` for a config file that does not parse. The parser's own
/// message shows the offending line, and that may be a secret's (`access_token = "EAAG…`
/// without its closing quote, or without quotes, or with a typo in the key): only the
/// position is kept, never the text.
pub(super) fn syntax_error(
    uri: Option<&str>,
    cause: &(dyn std::error::Error + Send + Sync + 'static),
) -> String {
    let file = uri.unwrap_or("configuration");
    let Some(e) = cause.downcast_ref::<toml::de::Error>() else {
        // The conversions after parsing (a number out of range) name no value.
        return format!("{file}: {cause}");
    };
    // With a position, its text starts `TOML parse error at line L, column C`.
    let text = e.to_string();
    let at = text
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("TOML parse error at line "))
        .and_then(|rest| rest.split_once(", column "));
    match at {
        Some((line, col)) => format!("{file}:{line}:{col}: {}", e.message()),
        None => format!("{file}: {}", e.message()),
    }
}
