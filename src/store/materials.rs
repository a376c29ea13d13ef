//! Materials: what an account keeps on hand to make what it sells (flour, boxes), the
//! quantity of each a product takes per unit (`product_materials`), their consumption when an
//! order is paid, and their low-stock alerts. Written through the pool.
//!
//! Quantities are exact decimal text (`domain::material`), so arithmetic is done here in
//! `Decimal`, not in SQL: each change first writes the material's row (which takes its lock on
//! PostgreSQL and the write lock on SQLite), then reads it, then writes the result, in one
//! transaction. Several materials are always taken in name order, the lock order.
//!
//! A crossing below `min_stock` is recorded in the transaction that makes it (`low_alert`
//! `pending`, `low_crossings` + 1); the owner is told after the commit and the alert marked
//! `sent` (see `ingress::commerce::owner`), so a crash in between leaves it for the
//! reconciliation pass. A change that brings the stock back to `min_stock` clears it.

use rust_decimal::Decimal;
use sqlx::Row;

use super::sql::Val;
use super::*;
use crate::domain::material::{
    adjust_material, consumption, low_alert_after, quantity_text, BelowZero, MaterialUse,
    StockChange,
};
use crate::domain::{AccountId, LowAlert};

/// A material of an account.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Material {
    pub name: String,
    pub unit: String,
    /// On hand; below zero when paid orders consumed more than was recorded.
    pub stock: Decimal,
    pub min_stock: Decimal,
    pub low_alert: LowAlert,
    /// How many times the stock fell below `min_stock`.
    pub low_crossings: i64,
    pub updated_at: i64,
}

/// A material one unit of a product takes.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct MaterialLine {
    pub material: String,
    pub quantity: Decimal,
}

/// A material to create or change: the fields given (None: kept, or the default on a
/// create: stock 0, min_stock 0).
#[derive(Debug, Clone, Default)]
pub struct MaterialWrite {
    pub unit: Option<String>,
    pub stock: Option<Decimal>,
    pub min_stock: Option<Decimal>,
}

/// What writing a material did.
#[derive(Debug, Clone, PartialEq)]
pub enum MaterialWritten {
    Created(Material),
    Updated(Material),
    /// An update of a material that does not exist.
    NotFound,
    /// A new material needs its unit.
    NoUnit,
}

/// What a stock adjustment did.
#[derive(Debug, Clone, PartialEq)]
pub enum MaterialAdjusted {
    Adjusted(Material),
    NotFound,
    /// Refused: it would take the stock below zero. Nothing changed.
    BelowZero(BelowZero<Decimal>),
}

/// What deleting a material did.
#[derive(Debug, Clone, PartialEq)]
pub enum MaterialDeleted {
    Deleted,
    /// These products use it: it stays.
    InUse(Vec<String>),
    Absent,
}

/// What setting a product's materials did.
#[derive(Debug, Clone, PartialEq)]
pub enum ProductMaterialsSet {
    Set(Vec<MaterialLine>),
    NoProduct,
    /// These materials do not exist: nothing changed.
    UnknownMaterials(Vec<String>),
}

/// A material that fell below its minimum and whose owner has not been told yet.
#[derive(Debug, Clone, PartialEq)]
pub struct LowMaterial {
    pub account: AccountId,
    pub material: Material,
}

const MATERIAL_COLUMNS: &str = "name, unit, stock, min_stock, low_alert, low_crossings, updated_at";

fn decimal(r: &sqlx::any::AnyRow, column: &str) -> Result<Decimal, StoreError> {
    let text: String = r.try_get(column)?;
    Decimal::from_str_exact(&text)
        .map_err(|e| StoreError::Corrupt(format!("{column} {text:?}: {e}")))
}

fn material_of(r: &sqlx::any::AnyRow) -> Result<Material, StoreError> {
    Ok(Material {
        name: r.try_get("name")?,
        unit: r.try_get("unit")?,
        stock: decimal(r, "stock")?,
        min_stock: decimal(r, "min_stock")?,
        low_alert: stored(r, "low_alert")?,
        low_crossings: r.try_get("low_crossings")?,
        updated_at: r.try_get("updated_at")?,
    })
}

/// `m` with its stock and minimum now `stock` and `min_stock`: its alert moved on (a fall
/// below the minimum counts a crossing).
fn with_stock(mut m: Material, stock: Decimal, min_stock: Decimal, now: i64) -> Material {
    let alert = low_alert_after(m.low_alert, stock, min_stock);
    if m.low_alert == LowAlert::None && alert == LowAlert::Pending {
        m.low_crossings += 1;
    }
    m.stock = stock.normalize();
    m.min_stock = min_stock.normalize();
    m.low_alert = alert;
    m.updated_at = now;
    m
}

impl Store {
    pub async fn material(
        &self,
        account: &AccountId,
        name: &str,
    ) -> Result<Option<Material>, StoreError> {
        let rows = self
            .fetch(
                &format!(
                    "SELECT {MATERIAL_COLUMNS} FROM materials WHERE account = $1 AND name = $2"
                ),
                vec![account.into(), name.into()],
            )
            .await?;
        rows.first().map(material_of).transpose()
    }

    /// Materials by name, those after `after` (the admin API's cursor).
    pub async fn materials(
        &self,
        account: &AccountId,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Vec<Material>, StoreError> {
        let rows = self
            .fetch(
                &format!(
                    "SELECT {MATERIAL_COLUMNS} FROM materials WHERE account = $1 AND name > $2 \
                     ORDER BY name LIMIT $3"
                ),
                vec![
                    account.into(),
                    after.unwrap_or("").into(),
                    Val::I(limit.max(0)),
                ],
            )
            .await?;
        rows.iter().map(material_of).collect()
    }

    /// The material locked for this transaction (its row written first), as it is now.
    async fn tx_lock_material(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        account: &AccountId,
        name: &str,
        now: i64,
    ) -> Result<Option<Material>, StoreError> {
        let rows = self
            .tx_fetch(
                tx,
                &format!(
                    "UPDATE materials SET updated_at = $1 WHERE account = $2 AND name = $3 \
                     RETURNING {MATERIAL_COLUMNS}"
                ),
                vec![Val::I(now), account.into(), name.into()],
            )
            .await?;
        rows.first().map(material_of).transpose()
    }

    async fn tx_save_material(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        account: &AccountId,
        m: &Material,
    ) -> Result<(), StoreError> {
        self.tx_run(
            tx,
            "UPDATE materials SET unit = $1, stock = $2, min_stock = $3, low_alert = $4, \
             low_crossings = $5, updated_at = $6 WHERE account = $7 AND name = $8",
            vec![
                m.unit.as_str().into(),
                quantity_text(m.stock).into(),
                quantity_text(m.min_stock).into(),
                m.low_alert.as_str().into(),
                Val::I(m.low_crossings),
                Val::I(m.updated_at),
                account.into(),
                m.name.as_str().into(),
            ],
        )
        .await?;
        // A fall below the minimum: `stock.low`, once per crossing (however often the
        // material is saved while its alert is owed).
        if m.low_alert == LowAlert::Pending {
            let e = NewHookEvent {
                account: account.to_string(),
                user_key: None,
                event_type: crate::hooks::EventType::StockLow,
                data: serde_json::json!({
                    "material": m.name,
                    "unit": m.unit,
                    "stock": quantity_text(m.stock),
                    "min_stock": quantity_text(m.min_stock),
                }),
                dedup_key: format!("stock.low:{account}:{}:{}", m.name, m.low_crossings),
                at: m.updated_at,
            };
            self.tx_hook_event(tx, &e).await?;
        }
        Ok(())
    }

    /// Create the material `name` (when `create`) or change the fields given, in one
    /// transaction; a new stock or minimum moves its alert.
    pub async fn write_material(
        &self,
        account: &AccountId,
        name: &str,
        w: &MaterialWrite,
        create: bool,
        now: i64,
    ) -> Result<MaterialWritten, StoreError> {
        let mut tx = self.pool().begin().await?;
        if let Some(m) = self.tx_lock_material(&mut tx, account, name, now).await? {
            let (stock, min) = (
                w.stock.unwrap_or(m.stock),
                w.min_stock.unwrap_or(m.min_stock),
            );
            let mut m = with_stock(m, stock, min, now);
            if let Some(unit) = &w.unit {
                m.unit = unit.clone();
            }
            self.tx_save_material(&mut tx, account, &m).await?;
            tx.commit().await?;
            return Ok(MaterialWritten::Updated(m));
        }
        if !create {
            tx.rollback().await?;
            return Ok(MaterialWritten::NotFound);
        }
        let Some(unit) = w.unit.clone() else {
            tx.rollback().await?;
            return Ok(MaterialWritten::NoUnit);
        };
        let m = with_stock(
            Material {
                name: name.to_string(),
                unit,
                stock: Decimal::ZERO,
                min_stock: Decimal::ZERO,
                low_alert: LowAlert::None,
                low_crossings: 0,
                updated_at: now,
            },
            w.stock.unwrap_or_default(),
            w.min_stock.unwrap_or_default(),
            now,
        );
        let inserted = self
            .tx_run(
                &mut tx,
                "INSERT INTO materials (account, name, unit, stock, min_stock, low_alert, low_crossings, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (account, name) DO NOTHING",
                vec![
                    account.into(),
                    m.name.as_str().into(),
                    m.unit.as_str().into(),
                    quantity_text(m.stock).into(),
                    quantity_text(m.min_stock).into(),
                    m.low_alert.as_str().into(),
                    Val::I(m.low_crossings),
                    Val::I(now),
                ],
            )
            .await?;
        tx.commit().await?;
        if inserted == 0 {
            // Created by someone else since the UPDATE found nothing: theirs stands.
            return Ok(match self.material(account, name).await? {
                Some(m) => MaterialWritten::Updated(m),
                None => MaterialWritten::NotFound,
            });
        }
        Ok(MaterialWritten::Created(m))
    }

    /// An operator's stock change (`Delta` or `Set`), never lowering the stock below zero; a
    /// restock to `min_stock` or above clears the alert, a fall below it owes one.
    pub async fn adjust_material_stock(
        &self,
        account: &AccountId,
        name: &str,
        change: StockChange<Decimal>,
        now: i64,
    ) -> Result<MaterialAdjusted, StoreError> {
        let mut tx = self.pool().begin().await?;
        let Some(m) = self.tx_lock_material(&mut tx, account, name, now).await? else {
            tx.rollback().await?;
            return Ok(MaterialAdjusted::NotFound);
        };
        let stock = match adjust_material(m.stock, change) {
            Ok(s) => s,
            Err(refused) => {
                tx.rollback().await?;
                return Ok(MaterialAdjusted::BelowZero(refused));
            }
        };
        let min = m.min_stock;
        let m = with_stock(m, stock, min, now);
        self.tx_save_material(&mut tx, account, &m).await?;
        tx.commit().await?;
        Ok(MaterialAdjusted::Adjusted(m))
    }

    /// Delete a material no product uses.
    pub async fn delete_material(
        &self,
        account: &AccountId,
        name: &str,
    ) -> Result<MaterialDeleted, StoreError> {
        let mut tx = self.pool().begin().await?;
        let deleted = self
            .tx_run(
                &mut tx,
                "DELETE FROM materials WHERE account = $1 AND name = $2 AND NOT EXISTS \
                 (SELECT 1 FROM product_materials WHERE account = $1 AND material = $2)",
                vec![account.into(), name.into()],
            )
            .await?;
        if deleted > 0 {
            tx.commit().await?;
            return Ok(MaterialDeleted::Deleted);
        }
        let users = self
            .tx_fetch(
                &mut tx,
                "SELECT sku FROM product_materials WHERE account = $1 AND material = $2 ORDER BY sku",
                vec![account.into(), name.into()],
            )
            .await?
            .iter()
            .map(|r| r.try_get::<String, _>("sku"))
            .collect::<Result<Vec<_>, _>>()?;
        let exists = !self
            .tx_fetch(
                &mut tx,
                "SELECT name FROM materials WHERE account = $1 AND name = $2",
                vec![account.into(), name.into()],
            )
            .await?
            .is_empty();
        tx.commit().await?;
        Ok(match (exists, users.is_empty()) {
            (false, _) => MaterialDeleted::Absent,
            (true, false) => MaterialDeleted::InUse(users),
            // Unused by now: someone removed the last product using it meanwhile.
            (true, true) => MaterialDeleted::InUse(Vec::new()),
        })
    }

    /// The materials one unit of product `sku` takes, by name.
    pub async fn product_materials(
        &self,
        account: &AccountId,
        sku: &str,
    ) -> Result<Vec<MaterialLine>, StoreError> {
        let rows = self
            .fetch(
                "SELECT material, quantity FROM product_materials WHERE account = $1 AND sku = $2 ORDER BY material",
                vec![account.into(), sku.into()],
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok(MaterialLine {
                    material: r.try_get("material")?,
                    quantity: decimal(r, "quantity")?,
                })
            })
            .collect()
    }

    /// Replace the materials product `sku` takes per unit with `lines` (all of them or
    /// none: every material must exist).
    pub async fn set_product_materials(
        &self,
        account: &AccountId,
        sku: &str,
        lines: &[MaterialLine],
        now: i64,
    ) -> Result<ProductMaterialsSet, StoreError> {
        let mut tx = self.pool().begin().await?;
        // The first statement is a write (see store/carts.rs): it also holds the product.
        let product = self
            .tx_run(
                &mut tx,
                "UPDATE products SET updated_at = $1 WHERE account = $2 AND sku = $3",
                vec![Val::I(now), account.into(), sku.into()],
            )
            .await?;
        if product == 0 {
            tx.rollback().await?;
            return Ok(ProductMaterialsSet::NoProduct);
        }
        let mut unknown = Vec::new();
        for l in lines {
            let found = self
                .tx_fetch(
                    &mut tx,
                    "SELECT name FROM materials WHERE account = $1 AND name = $2",
                    vec![account.into(), l.material.as_str().into()],
                )
                .await?;
            if found.is_empty() {
                unknown.push(l.material.clone());
            }
        }
        if !unknown.is_empty() {
            tx.rollback().await?;
            return Ok(ProductMaterialsSet::UnknownMaterials(unknown));
        }
        self.tx_run(
            &mut tx,
            "DELETE FROM product_materials WHERE account = $1 AND sku = $2",
            vec![account.into(), sku.into()],
        )
        .await?;
        for l in lines {
            self.tx_run(
                &mut tx,
                "INSERT INTO product_materials (account, sku, material, quantity) VALUES ($1, $2, $3, $4)",
                vec![
                    account.into(),
                    sku.into(),
                    l.material.as_str().into(),
                    quantity_text(l.quantity).into(),
                ],
            )
            .await?;
        }
        tx.commit().await?;
        let mut set = lines.to_vec();
        set.sort_by(|a, b| a.material.cmp(&b.material));
        Ok(ProductMaterialsSet::Set(set))
    }

    /// A paid order's materials leave stock, once per order (the order's `materials_used`
    /// is the compare-and-set; a cancelled order consumes nothing): for each material,
    /// Σ quantity per unit × units over its lines. A stock may go below zero (the sale
    /// happened); a fall below `min_stock` owes the owner an alert. The materials that
    /// crossed now.
    pub(super) async fn tx_consume_materials(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        account: &AccountId,
        order: i64,
        now: i64,
    ) -> Result<Vec<String>, StoreError> {
        let claimed = self
            .tx_run(
                tx,
                "UPDATE orders SET materials_used = $1 WHERE id = $2 AND materials_used IS NULL AND status <> 'cancelled'",
                vec![Val::I(now), Val::I(order)],
            )
            .await?;
        if claimed == 0 {
            return Ok(Vec::new());
        }
        let rows = self
            .tx_fetch(
                tx,
                "SELECT pm.material, pm.quantity, i.quantity AS units FROM order_items i \
                 JOIN product_materials pm ON pm.account = $1 AND pm.sku = i.sku \
                 WHERE i.order_id = $2",
                vec![account.into(), Val::I(order)],
            )
            .await?;
        let uses = rows
            .iter()
            .map(|r| {
                Ok(MaterialUse {
                    material: r.try_get("material")?,
                    per_unit: decimal(r, "quantity")?,
                    units: r.try_get("units")?,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        let used = consumption(&uses).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let mut crossed = Vec::new();
        // By name: the lock order.
        for (name, quantity) in used {
            let Some(m) = self.tx_lock_material(tx, account, &name, now).await? else {
                continue; // product_materials names only materials that exist
            };
            let (stock, min) = (m.stock - quantity, m.min_stock);
            let before = m.low_alert;
            let m = with_stock(m, stock, min, now);
            if before == LowAlert::None && m.low_alert == LowAlert::Pending {
                crossed.push(name);
            }
            self.tx_save_material(tx, account, &m).await?;
        }
        Ok(crossed)
    }

    /// Materials whose fall below the minimum the owner has not been told of yet.
    pub async fn low_materials_to_tell(&self, limit: i64) -> Result<Vec<LowMaterial>, StoreError> {
        let rows = self
            .fetch(
                &format!(
                    "SELECT account, {MATERIAL_COLUMNS} FROM materials WHERE low_alert = 'pending' \
                     ORDER BY account, name LIMIT $1"
                ),
                vec![Val::I(limit)],
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok(LowMaterial {
                    account: AccountId::from(r.try_get::<String, _>("account")?),
                    material: material_of(r)?,
                })
            })
            .collect()
    }

    /// The owner was told of crossing `crossing` of material `name`: `sent`, if it is still
    /// that crossing's alert that is owed. Whether it moved.
    pub async fn low_material_told(
        &self,
        account: &AccountId,
        name: &str,
        crossing: i64,
    ) -> Result<bool, StoreError> {
        Ok(self
            .run(
                "UPDATE materials SET low_alert = 'sent' WHERE account = $1 AND name = $2 \
                 AND low_alert = 'pending' AND low_crossings = $3",
                vec![account.into(), name.into(), Val::I(crossing)],
            )
            .await?
            > 0)
    }
}
