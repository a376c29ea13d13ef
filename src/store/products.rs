//! The catalog: products (and plans), their categories, stock, and the materials they
//! consume. Written through the pool (never by a conversation's writer).
//!
//! Stock is two counters: `stock`, the units on hand that no unpaid order holds (NULL: not
//! tracked, never sold out), and `reserved`, the units held by orders awaiting payment. A
//! checkout moves units from one to the other with a conditional UPDATE
//! (`stock >= quantity`), which is what keeps 50 customers racing for 10 units to exactly 10
//! orders on both stores: PostgreSQL re-checks the condition on the row it waited for,
//! SQLite has one writer at a time.

use sqlx::Row;

use super::sql::Val;
use super::*;
use crate::domain::material::{adjust_product, BelowZero, StockChange};
use crate::domain::{AccountId, Currency, Money, ProductKind};

/// One product (or plan) of an account's catalog.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Product {
    pub sku: String,
    pub name: String,
    pub description: Option<String>,
    pub price: Money,
    /// Units on hand not held by an unpaid order; None: not tracked.
    pub stock: Option<i64>,
    /// Units held by orders awaiting payment.
    pub reserved: i64,
    pub image_url: Option<String>,
    pub category: Option<String>,
    pub active: bool,
    pub kind: ProductKind,
    /// A plan's length.
    pub period_days: Option<i64>,
    /// A plan's access link, sent when it is paid.
    pub access_link: Option<String>,
    /// Order in the catalog (lower first; then by sku).
    pub position: i64,
    pub created_at: i64,
    pub updated_at: i64,
}

impl Product {
    /// Whether `quantity` units can be sold now.
    pub fn can_sell(&self, quantity: i64) -> bool {
        self.active && self.stock.is_none_or(|s| s >= quantity)
    }
}

/// A category of an account's catalog.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Category {
    pub slug: String,
    pub name: String,
    pub position: i64,
}

const PRODUCT_COLUMNS: &str = "sku, name, description, price, currency, stock, reserved, image_url, category, active, kind, period_days, access_link, position, created_at, updated_at";

pub(super) fn product_of(r: &sqlx::any::AnyRow) -> Result<Product, StoreError> {
    let currency: Currency = r
        .try_get::<String, _>("currency")?
        .parse()
        .map_err(|e| StoreError::Corrupt(format!("products.currency: {e}")))?;
    let price = Money::parse(&r.try_get::<String, _>("price")?, currency)
        .map_err(|e| StoreError::Corrupt(format!("products.price: {e}")))?;
    Ok(Product {
        sku: r.try_get("sku")?,
        name: r.try_get("name")?,
        description: r.try_get("description")?,
        price,
        stock: r.try_get("stock")?,
        reserved: r.try_get("reserved")?,
        image_url: r.try_get("image_url")?,
        category: r.try_get("category")?,
        active: r.try_get::<i64, _>("active")? != 0,
        kind: stored(r, "kind")?,
        period_days: r.try_get("period_days")?,
        access_link: r.try_get("access_link")?,
        position: r.try_get("position")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
    })
}

/// Which products a listing shows.
#[derive(Debug, Clone, Default)]
pub struct ProductFilter<'a> {
    pub category: Option<&'a str>,
    /// Only the active ones (true: what customers see) or only the inactive ones (false);
    /// None: all.
    pub active: Option<bool>,
    /// Those after this (position, sku) in catalog order: the admin API's cursor.
    pub after: Option<(i64, &'a str)>,
    /// Skip this many (a catalog page in a conversation).
    pub offset: i64,
    pub limit: i64,
}

impl Store {
    /// Create the product, or update the one with its sku (its reserved units kept; stock
    /// set as given).
    pub async fn upsert_product(&self, account: &AccountId, p: &Product) -> Result<(), StoreError> {
        self.run(
            "INSERT INTO products (account, sku, name, description, price, currency, stock, reserved, image_url, category, active, kind, period_days, access_link, position, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, 0, $8, $9, $10, $11, $12, $13, $14, $15, $15) \
             ON CONFLICT (account, sku) DO UPDATE SET name = excluded.name, description = excluded.description, \
             price = excluded.price, currency = excluded.currency, stock = excluded.stock, image_url = excluded.image_url, \
             category = excluded.category, active = excluded.active, kind = excluded.kind, period_days = excluded.period_days, \
             access_link = excluded.access_link, position = excluded.position, updated_at = excluded.updated_at",
            vec![
                account.into(),
                p.sku.as_str().into(),
                p.name.as_str().into(),
                Val::OptS(p.description.clone()),
                p.price.plain().into(),
                p.price.currency.as_str().into(),
                Val::OptI(p.stock),
                Val::OptS(p.image_url.clone()),
                Val::OptS(p.category.clone()),
                Val::I(p.active as i64),
                p.kind.as_str().into(),
                Val::OptI(p.period_days),
                Val::OptS(p.access_link.clone()),
                Val::I(p.position),
                Val::I(p.updated_at),
            ],
        )
        .await?;
        Ok(())
    }

    pub async fn product(
        &self,
        account: &AccountId,
        sku: &str,
    ) -> Result<Option<Product>, StoreError> {
        let rows = self
            .fetch(
                &format!("SELECT {PRODUCT_COLUMNS} FROM products WHERE account = $1 AND sku = $2"),
                vec![account.into(), sku.into()],
            )
            .await?;
        rows.first().map(product_of).transpose()
    }

    /// Products in catalog order (position, then sku).
    pub async fn products(
        &self,
        account: &AccountId,
        f: &ProductFilter<'_>,
    ) -> Result<Vec<Product>, StoreError> {
        let mut text = format!("SELECT {PRODUCT_COLUMNS} FROM products WHERE account = $1");
        let mut vals: Vec<Val> = vec![account.into()];
        if let Some(c) = f.category {
            vals.push(c.into());
            text.push_str(&format!(" AND category = ${}", vals.len()));
        }
        if let Some(active) = f.active {
            vals.push(Val::I(active as i64));
            text.push_str(&format!(" AND active = ${}", vals.len()));
        }
        if let Some((position, sku)) = f.after {
            vals.push(Val::I(position));
            vals.push(sku.into());
            let (a, b) = (vals.len() - 1, vals.len());
            text.push_str(&format!(
                " AND (position > ${a} OR (position = ${a} AND sku > ${b}))"
            ));
        }
        vals.push(Val::I(f.limit.max(0)));
        vals.push(Val::I(f.offset.max(0)));
        text.push_str(&format!(
            " ORDER BY position, sku LIMIT ${} OFFSET ${}",
            vals.len() - 1,
            vals.len()
        ));
        self.fetch(&text, vals)
            .await?
            .iter()
            .map(product_of)
            .collect()
    }

    /// Remove a product from the catalog (orders keep their own copy of its name and
    /// price); false if there was none.
    pub async fn delete_product(&self, account: &AccountId, sku: &str) -> Result<bool, StoreError> {
        let mut tx = self.pool().begin().await?;
        let n = self
            .tx_run(
                &mut tx,
                "DELETE FROM products WHERE account = $1 AND sku = $2",
                vec![account.into(), sku.into()],
            )
            .await?;
        self.tx_run(
            &mut tx,
            "DELETE FROM product_materials WHERE account = $1 AND sku = $2",
            vec![account.into(), sku.into()],
        )
        .await?;
        tx.commit().await?;
        Ok(n > 0)
    }

    /// An operator's change to a tracked product's available stock (`Delta` units in or
    /// out, or `Set` to a count), in one transaction; never below zero, so the units unpaid
    /// orders hold (`reserved`, apart) are never taken.
    pub async fn adjust_product_stock(
        &self,
        account: &AccountId,
        sku: &str,
        change: StockChange<i64>,
        now: i64,
    ) -> Result<ProductStockAdjusted, StoreError> {
        let mut tx = self.pool().begin().await?;
        // The first statement is a write (see store/carts.rs): it holds the row.
        let rows = self
            .tx_fetch(
                &mut tx,
                "UPDATE products SET updated_at = $1 WHERE account = $2 AND sku = $3 RETURNING stock, reserved",
                vec![Val::I(now), account.into(), sku.into()],
            )
            .await?;
        let Some(r) = rows.first() else {
            tx.rollback().await?;
            return Ok(ProductStockAdjusted::NotFound);
        };
        let reserved: i64 = r.try_get("reserved")?;
        let Some(stock) = r.try_get::<Option<i64>, _>("stock")? else {
            tx.rollback().await?;
            return Ok(ProductStockAdjusted::Untracked);
        };
        let stock = match adjust_product(stock, change) {
            Ok(s) => s,
            Err(refused) => {
                tx.rollback().await?;
                return Ok(ProductStockAdjusted::BelowZero { refused, reserved });
            }
        };
        self.tx_run(
            &mut tx,
            "UPDATE products SET stock = $1 WHERE account = $2 AND sku = $3",
            vec![Val::I(stock), account.into(), sku.into()],
        )
        .await?;
        tx.commit().await?;
        Ok(ProductStockAdjusted::Adjusted { stock, reserved })
    }

    pub async fn upsert_category(
        &self,
        account: &AccountId,
        c: &Category,
    ) -> Result<(), StoreError> {
        self.run(
            "INSERT INTO categories (account, slug, name, position) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (account, slug) DO UPDATE SET name = excluded.name, position = excluded.position",
            vec![
                account.into(),
                c.slug.as_str().into(),
                c.name.as_str().into(),
                Val::I(c.position),
            ],
        )
        .await?;
        Ok(())
    }

    pub async fn categories(&self, account: &AccountId) -> Result<Vec<Category>, StoreError> {
        self.fetch(
            "SELECT slug, name, position FROM categories WHERE account = $1 ORDER BY position, slug",
            vec![account.into()],
        )
        .await?
        .iter()
        .map(|r| {
            Ok(Category {
                slug: r.try_get("slug")?,
                name: r.try_get("name")?,
                position: r.try_get("position")?,
            })
        })
        .collect()
    }

    pub async fn delete_category(
        &self,
        account: &AccountId,
        slug: &str,
    ) -> Result<bool, StoreError> {
        Ok(self
            .run(
                "DELETE FROM categories WHERE account = $1 AND slug = $2",
                vec![account.into(), slug.into()],
            )
            .await?
            > 0)
    }
}

/// A product to create or update, and whether its stock is set: when not, a product that
/// exists keeps the stock it has now (a checkout may have moved units since it was read), and
/// a new one is untracked.
#[derive(Debug, Clone)]
pub struct ProductWrite {
    pub product: Product,
    pub set_stock: bool,
}

/// What an operator's stock change did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProductStockAdjusted {
    Adjusted {
        stock: i64,
        reserved: i64,
    },
    NotFound,
    /// The product's stock is not tracked: nothing changed.
    Untracked,
    /// Refused: it would take the stock below zero. Nothing changed.
    BelowZero {
        refused: BelowZero<i64>,
        reserved: i64,
    },
}

/// What deleting a category did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CategoryDeleted {
    Deleted,
    /// Products still name it: it stays.
    InUse(i64),
    Absent,
}

impl Store {
    /// Create or update every product in one transaction (all of them or none):
    /// (created, updated). Reserved units are never written here.
    pub async fn upsert_products(
        &self,
        account: &AccountId,
        writes: &[ProductWrite],
        now: i64,
    ) -> Result<(u64, u64), StoreError> {
        let (mut created, mut updated) = (0, 0);
        // The first statement is a write (see store/carts.rs).
        let mut tx = self.pool().begin().await?;
        for w in writes {
            if self.tx_update_product(&mut tx, account, w, now).await? {
                updated += 1;
                continue;
            }
            let p = &w.product;
            let stock = if w.set_stock { p.stock } else { None };
            let inserted = self
                .tx_run(
                    &mut tx,
                    "INSERT INTO products (account, sku, name, description, price, currency, stock, reserved, image_url, category, active, kind, period_days, access_link, position, created_at, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, 0, $8, $9, $10, $11, $12, $13, $14, $15, $15) \
                     ON CONFLICT (account, sku) DO NOTHING",
                    vec![
                        account.into(),
                        p.sku.as_str().into(),
                        p.name.as_str().into(),
                        Val::OptS(p.description.clone()),
                        p.price.plain().into(),
                        p.price.currency.as_str().into(),
                        Val::OptI(stock),
                        Val::OptS(p.image_url.clone()),
                        Val::OptS(p.category.clone()),
                        Val::I(p.active as i64),
                        p.kind.as_str().into(),
                        Val::OptI(p.period_days),
                        Val::OptS(p.access_link.clone()),
                        Val::I(p.position),
                        Val::I(now),
                    ],
                )
                .await?;
            if inserted > 0 {
                created += 1;
            } else {
                // Created by someone else since the UPDATE found nothing.
                self.tx_update_product(&mut tx, account, w, now).await?;
                updated += 1;
            }
        }
        tx.commit().await?;
        Ok((created, updated))
    }

    /// Update the product if it exists: whether it did.
    async fn tx_update_product(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        account: &AccountId,
        w: &ProductWrite,
        now: i64,
    ) -> Result<bool, StoreError> {
        let p = &w.product;
        let mut vals: Vec<Val> = vec![
            p.name.as_str().into(),
            Val::OptS(p.description.clone()),
            p.price.plain().into(),
            p.price.currency.as_str().into(),
            Val::OptS(p.image_url.clone()),
            Val::OptS(p.category.clone()),
            Val::I(p.active as i64),
            p.kind.as_str().into(),
            Val::OptI(p.period_days),
            Val::OptS(p.access_link.clone()),
            Val::I(p.position),
            Val::I(now),
            account.into(),
            p.sku.as_str().into(),
        ];
        let stock = if w.set_stock {
            vals.push(Val::OptI(p.stock));
            ", stock = $15"
        } else {
            ""
        };
        let n = self
            .tx_run(
                tx,
                &format!(
                    "UPDATE products SET name = $1, description = $2, price = $3, currency = $4, image_url = $5, \
                     category = $6, active = $7, kind = $8, period_days = $9, access_link = $10, position = $11, \
                     updated_at = $12{stock} WHERE account = $13 AND sku = $14"
                ),
                vals,
            )
            .await?;
        Ok(n > 0)
    }

    /// The products of these skus that exist (any order).
    pub async fn products_with_skus(
        &self,
        account: &AccountId,
        skus: &[&str],
    ) -> Result<Vec<Product>, StoreError> {
        let mut out = Vec::with_capacity(skus.len());
        for chunk in skus.chunks(500) {
            let mut vals: Vec<Val> = vec![account.into()];
            let mut marks = Vec::with_capacity(chunk.len());
            for sku in chunk {
                vals.push((*sku).into());
                marks.push(format!("${}", vals.len()));
            }
            let rows = self
                .fetch(
                    &format!(
                        "SELECT {PRODUCT_COLUMNS} FROM products WHERE account = $1 AND sku IN ({})",
                        marks.join(", ")
                    ),
                    vals,
                )
                .await?;
            for r in &rows {
                out.push(product_of(r)?);
            }
        }
        Ok(out)
    }

    /// Delete a category no product names.
    pub async fn delete_unused_category(
        &self,
        account: &AccountId,
        slug: &str,
    ) -> Result<CategoryDeleted, StoreError> {
        let deleted = self
            .run(
                "DELETE FROM categories WHERE account = $1 AND slug = $2 AND NOT EXISTS \
                 (SELECT 1 FROM products WHERE account = $1 AND category = $2)",
                vec![account.into(), slug.into()],
            )
            .await?;
        if deleted > 0 {
            return Ok(CategoryDeleted::Deleted);
        }
        let exists = !self
            .fetch(
                "SELECT slug FROM categories WHERE account = $1 AND slug = $2",
                vec![account.into(), slug.into()],
            )
            .await?
            .is_empty();
        if !exists {
            return Ok(CategoryDeleted::Absent);
        }
        let rows = self
            .fetch(
                "SELECT COUNT(*) AS n FROM products WHERE account = $1 AND category = $2",
                vec![account.into(), slug.into()],
            )
            .await?;
        let n = rows
            .first()
            .map(|r| r.try_get::<i64, _>("n"))
            .transpose()?
            .unwrap_or(0);
        Ok(CategoryDeleted::InUse(n))
    }
}
