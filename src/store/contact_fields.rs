//! A contact's custom field definitions (per account: a name, a kind, a list's options), which
//! the admin API checks custom values against. Written through the pool.

use serde_json::Value;
use sqlx::Row;

use super::*;
use crate::domain::contact::FieldDef;
use crate::domain::{AccountId, CustomFieldKind};

impl Store {
    /// An account's custom field definitions, by name.
    pub async fn field_defs(&self, account: &AccountId) -> Result<Vec<FieldDef>, StoreError> {
        let rows = self
            .fetch(
                "SELECT name, kind, options FROM contact_field_defs WHERE account = $1 ORDER BY name",
                vec![account.into()],
            )
            .await?;
        rows.iter()
            .map(|r| {
                let kind: CustomFieldKind = stored(r, "kind")?;
                let options: Option<String> = r.try_get("options")?;
                Ok(FieldDef {
                    name: r.try_get("name")?,
                    kind,
                    options: options
                        .and_then(|o| serde_json::from_str(&o).ok())
                        .unwrap_or_default(),
                })
            })
            .collect()
    }

    /// Create or change a definition. Values already kept are not re-checked.
    pub async fn put_field_def(
        &self,
        account: &AccountId,
        def: &FieldDef,
        now: i64,
    ) -> Result<(), StoreError> {
        let options =
            (!def.options.is_empty()).then(|| Value::from(def.options.clone()).to_string());
        self.run(
            "INSERT INTO contact_field_defs (account, name, kind, options, created_at) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (account, name) DO UPDATE SET kind = excluded.kind, options = excluded.options",
            vec![
                account.into(),
                def.name.as_str().into(),
                def.kind.as_str().into(),
                Val::OptS(options),
                Val::I(now),
            ],
        )
        .await?;
        Ok(())
    }

    pub async fn delete_field_def(
        &self,
        account: &AccountId,
        name: &str,
    ) -> Result<bool, StoreError> {
        Ok(self
            .run(
                "DELETE FROM contact_field_defs WHERE account = $1 AND name = $2",
                vec![account.into(), name.into()],
            )
            .await?
            > 0)
    }
}
