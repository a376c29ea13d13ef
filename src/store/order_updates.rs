//! An operator's changes to an order (the admin API's `PATCH /orders/{number}`): its status
//! moved forward only, its notes set, in one transaction. Written through the pool.

use sqlx::Row;

use super::sql::Val;
use super::*;
use crate::domain::{AccountId, OrderStatus};

/// What an operator's change to an order did.
#[derive(Debug, Clone, PartialEq)]
pub enum OrderUpdate {
    Updated(Box<Order>),
    NotFound,
    /// The order's status does not move to the one asked: nothing changed.
    Refused {
        current: OrderStatus,
    },
}

/// The statuses an order may move to `to` from: forward only (pending → processing →
/// completed; pending or processing → cancelled).
pub fn order_moves_from(to: OrderStatus) -> &'static [OrderStatus] {
    match to {
        OrderStatus::Pending => &[],
        OrderStatus::Processing => &[OrderStatus::Pending],
        OrderStatus::Completed => &[OrderStatus::Processing],
        OrderStatus::Cancelled => &[OrderStatus::Pending, OrderStatus::Processing],
    }
}

impl Store {
    /// Move an order forward (see [`order_moves_from`]; cancelling gives its reserved stock
    /// back) and/or set its notes (empty: cleared), in one transaction: a move its status
    /// does not allow changes nothing, notes included.
    pub async fn update_order(
        &self,
        account: &AccountId,
        number: &str,
        status: Option<OrderStatus>,
        notes: Option<&str>,
        now: i64,
    ) -> Result<OrderUpdate, StoreError> {
        let from = status.map_or(&[][..], order_moves_from);
        if status.is_some() && from.is_empty() {
            return Ok(match self.order(account, number).await? {
                Some(o) => OrderUpdate::Refused { current: o.status },
                None => OrderUpdate::NotFound,
            });
        }
        let mut vals: Vec<Val> = vec![Val::I(now), account.into(), number.into()];
        let mut text = String::from("UPDATE orders SET updated_at = $1");
        if let Some(s) = status {
            vals.push(s.as_str().into());
            text.push_str(&format!(", status = ${}", vals.len()));
        }
        if let Some(n) = notes {
            vals.push(Val::OptS((!n.is_empty()).then(|| n.to_string())));
            text.push_str(&format!(", notes = ${}", vals.len()));
        }
        text.push_str(" WHERE account = $2 AND order_number = $3");
        if !from.is_empty() {
            let mut marks = Vec::with_capacity(from.len());
            for s in from {
                vals.push(s.as_str().into());
                marks.push(format!("${}", vals.len()));
            }
            text.push_str(&format!(" AND status IN ({})", marks.join(", ")));
        }
        // The first statement is a write (see store/carts.rs).
        let mut tx = self.pool().begin().await?;
        if self.tx_run(&mut tx, &text, vals).await? == 0 {
            tx.rollback().await?;
            return Ok(match self.order(account, number).await? {
                Some(o) => OrderUpdate::Refused { current: o.status },
                None => OrderUpdate::NotFound,
            });
        }
        if status == Some(OrderStatus::Cancelled) {
            self.tx_release_stock(&mut tx, account, number, now).await?;
        }
        if let Some(s) = status {
            if self
                .hook_subs()
                .wanted(account.as_str(), crate::hooks::EventType::OrderStatus)
            {
                let rows = self
                    .tx_fetch(
                        &mut tx,
                        "SELECT id, user_key FROM orders WHERE account = $1 AND order_number = $2",
                        vec![account.into(), number.into()],
                    )
                    .await?;
                if let Some(r) = rows.first() {
                    let id: i64 = r.try_get("id")?;
                    let e = NewHookEvent {
                        account: account.to_string(),
                        user_key: Some(r.try_get("user_key")?),
                        event_type: crate::hooks::EventType::OrderStatus,
                        data: serde_json::json!({
                            "order_id": id,
                            "order_number": number,
                            "status": s.as_str(),
                        }),
                        dedup_key: format!("order:{id}:status:{}", s.as_str()),
                        at: now,
                    };
                    self.tx_hook_event(&mut tx, &e).await?;
                }
            }
        }
        tx.commit().await?;
        Ok(match self.order(account, number).await? {
            Some(o) => OrderUpdate::Updated(Box::new(o)),
            None => OrderUpdate::NotFound,
        })
    }
}
