//! A scratch shop: a throwaway SQLite store in the temp dir, seeded with a catalog (products,
//! vouchers), where the real [`run`](super::run) answers a flow's calls, so carts, orders,
//! stock and vouchers move as they would in the daemon. No gateway is asked: a payment is
//! opened as the daemon opens it (a PENDING row, its order's stock held) with instructions
//! made up here, and [`ScratchShop::settle`] plays the gateway's news on it. What
//! `parleyd simulate` and the transcript tests sell from.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use super::calls::{Answer, Call, Op, PaymentAnswer};
use super::run::{run, Caller, Shop};
use crate::domain::{
    AccountId, Currency, GatewayKind, Money, PaymentMethod, PaymentStatus, UserKey, Voucher,
};
use crate::payments::{GatewayStatus, Gateways, Instructions};
use crate::store::{NewPayment, Product, Store, StoreError};

/// The provider name the scratch shop's payments are recorded under.
pub const PROVIDER: &str = "scratch";

/// A scratch store for one account and one customer; its file goes with [`ScratchShop::close`].
pub struct ScratchShop {
    store: Store,
    path: PathBuf,
    account: AccountId,
    currency: Currency,
    user: UserKey,
    gateways: Gateways,
    /// Every payment's instructions are this text; None: made up for the node's method.
    payment_text: Option<String>,
    /// Calls answered so far.
    calls: AtomicU64,
}

impl ScratchShop {
    /// An empty shop of `account` selling in `currency` to the customer `user`.
    pub async fn open(
        account: AccountId,
        currency: Currency,
        user: &str,
    ) -> Result<ScratchShop, StoreError> {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let path = std::env::temp_dir().join(format!(
            "parley-scratch-{}-{}.db",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        remove(&path);
        let store = Store::connect(&format!("sqlite://{}", path.display()), 2).await?;
        store.migrate().await?;
        Ok(ScratchShop {
            store,
            path,
            account,
            currency,
            user: UserKey::from(user),
            gateways: Gateways::new(&Default::default(), reqwest::Client::new()),
            payment_text: None,
            calls: AtomicU64::new(0),
        })
    }

    /// Every payment is opened with this text as its (manual) instructions.
    pub fn with_payment_text(mut self, text: &str) -> ScratchShop {
        self.payment_text = Some(text.to_string());
        self
    }

    pub fn account(&self) -> &AccountId {
        &self.account
    }

    pub fn currency(&self) -> Currency {
        self.currency
    }

    /// Put a product in the catalog (or replace the one with its sku).
    pub async fn add_product(&self, p: &Product) -> Result<(), StoreError> {
        self.store
            .upsert_product(&self.account, p)
            .await
            .map(|_| ())
    }

    /// Put a voucher in the shop (or replace the one with its code).
    pub async fn add_voucher(&self, v: &Voucher, now: i64) -> Result<(), StoreError> {
        self.store
            .upsert_voucher(&self.account, v, now)
            .await
            .map(|_| ())
    }

    /// Answer `call` at `now` with the real logic; a payment is opened without a gateway.
    ///
    /// Each call is answered once here, so it is numbered: a call's id is made of its
    /// session's start and the time, and a sandbox's clock may stand still, so two sessions
    /// can ask calls of one id, which the store would take for the same call made again.
    pub async fn answer(&self, call: &Call, now: i64) -> Answer {
        let n = self.calls.fetch_add(1, Ordering::Relaxed);
        let call = &Call {
            id: format!("{}-{n}", call.id),
            op: call.op.clone(),
        };
        if let Op::Payment {
            order,
            method,
            bank,
            store: outlet,
            expires_ms,
            ..
        } = &call.op
        {
            let opened = self
                .open_payment(
                    &call.id,
                    order,
                    *method,
                    bank.as_deref(),
                    outlet.as_deref(),
                    now + expires_ms,
                    now,
                )
                .await;
            return match opened {
                Ok(answer) => Answer::Payment(answer),
                Err(e) => Answer::Failed {
                    error: e.to_string(),
                },
            };
        }
        let who = Caller {
            account: &self.account,
            user: &self.user,
            wa_id: Some(self.user.as_str()),
            currency: self.currency,
            provider: None,
        };
        let shop = Shop {
            store: &self.store,
            gateways: &self.gateways,
        };
        run(shop, who, call, now).await
    }

    #[allow(clippy::too_many_arguments)]
    async fn open_payment(
        &self,
        call_id: &str,
        order: &str,
        method: PaymentMethod,
        bank: Option<&str>,
        outlet: Option<&str>,
        expires_at: i64,
        now: i64,
    ) -> Result<PaymentAnswer, StoreError> {
        let Some(o) = self.store.order(&self.account, order).await? else {
            return Ok(PaymentAnswer::Refused {
                reason: format!("no order {order:?}"),
            });
        };
        let p = self
            .store
            .open_payment(&NewPayment {
                account: &self.account,
                order_id: o.id,
                user_key: self.user.as_str(),
                provider: PROVIDER,
                kind: GatewayKind::Manual,
                method,
                bank,
                amount: o.total,
                expires_at,
                idem_key: call_id,
                now,
            })
            .await?;
        if p.status != PaymentStatus::Pending {
            return Ok(PaymentAnswer::Settled {
                payment_id: p.id,
                status: p.status,
            });
        }
        let instructions = match &self.payment_text {
            Some(text) => Instructions::Manual { text: text.clone() },
            None => made_up(p.id, method, bank, outlet),
        };
        Ok(PaymentAnswer::Opened {
            payment_id: p.id,
            instructions,
            amount: p.amount,
            order: o.order_number,
        })
    }

    /// The gateway reports payment `id` as `report` (having received `paid`, if it says):
    /// the payment and its order move as a callback would move them. Where it went (None:
    /// no such payment); it stays as it was if the news moves it nowhere.
    pub async fn settle(
        &self,
        id: i64,
        report: GatewayStatus,
        paid: Option<&Money>,
        now: i64,
    ) -> Result<Option<PaymentStatus>, StoreError> {
        let Some(p) = self.store.payment(id).await? else {
            return Ok(None);
        };
        let Some(next) =
            super::payment::settle(p.status, &p.amount, p.expires_at, report, paid, now)
        else {
            return Ok(Some(p.status));
        };
        self.store
            .settle_payment(id, p.status, next, paid, now)
            .await?;
        Ok(Some(next))
    }

    /// What a paid payment's plans give, one line each as the customer reads them (none for
    /// a payment that is not paid or bought no plan).
    pub async fn access(&self, id: i64) -> Result<Vec<String>, StoreError> {
        let Some(p) = self.store.payment(id).await? else {
            return Ok(Vec::new());
        };
        if p.status != PaymentStatus::Paid {
            return Ok(Vec::new());
        }
        let plans = self.store.plan_access(p.order_id).await?;
        Ok(plans.iter().map(super::payment::access_line).collect())
    }

    /// The scratch store, to look into.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Close the store and delete its files.
    pub async fn close(self) {
        self.store.close().await;
        remove(&self.path);
    }
}

fn remove(path: &std::path::Path) {
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
}

/// Instructions as a gateway would give them for `method`, numbered after the payment.
fn made_up(
    id: i64,
    method: PaymentMethod,
    bank: Option<&str>,
    outlet: Option<&str>,
) -> Instructions {
    match method {
        PaymentMethod::Va => Instructions::VirtualAccount {
            bank: bank.unwrap_or("bca").to_string(),
            number: format!("8808{id:08}"),
        },
        PaymentMethod::Retail => Instructions::PayCode {
            store: outlet.unwrap_or("alfamart").to_string(),
            code: format!("PAY{id:06}"),
        },
        PaymentMethod::Link => Instructions::Link {
            url: format!("https://pay.example/{id}"),
        },
        // As the daemon sends a QRIS: an image of the code, the instructions its caption.
        PaymentMethod::Qris => Instructions::Qris {
            qr_string: Some(format!("00020101QRIS{id:06}")),
            image_url: Some(format!("https://pay.example/qr/{id}.png")),
        },
        other => Instructions::Manual {
            text: format!("(a scratch {other} payment)"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ProductKind;
    use crate::store::Checkout;

    fn idr(s: &str) -> Money {
        Money::parse(s, Currency::IDR).unwrap()
    }

    fn call(id: &str, op: Op) -> Call {
        Call { id: id.into(), op }
    }

    #[tokio::test]
    async fn a_payment_opened_here_moves_its_order_and_stock_as_a_callback_would() {
        let shop = ScratchShop::open("a".into(), Currency::IDR, "u")
            .await
            .unwrap();
        shop.add_product(&Product {
            sku: "KOPI".into(),
            name: "Kopi".into(),
            description: None,
            price: idr("25000"),
            stock: Some(3),
            reserved: 0,
            image_url: None,
            category: None,
            active: true,
            kind: ProductKind::Product,
            period_days: None,
            access_link: None,
            position: 0,
            created_at: 0,
            updated_at: 0,
        })
        .await
        .unwrap();
        let add = Op::CartAdd {
            sku: "KOPI".into(),
            quantity: 1,
        };
        // One id asked twice (a clock that stood still): two calls, two effects.
        for _ in 0..2 {
            shop.answer(&call("c1", add.clone()), 1).await;
        }
        let checkout = Op::Checkout {
            name: None,
            address: None,
        };
        let Answer::Checkout(Checkout::Ordered { order }) =
            shop.answer(&call("c2", checkout), 2).await
        else {
            panic!("not ordered");
        };
        assert_eq!(order.total, idr("50000"));
        let pay = Op::Payment {
            order: order.order_number.clone(),
            provider: None,
            method: PaymentMethod::Va,
            bank: Some("bni".into()),
            store: None,
            expires_ms: 3_600_000,
        };
        let Answer::Payment(PaymentAnswer::Opened {
            payment_id,
            instructions,
            amount,
            ..
        }) = shop.answer(&call("c6", pay), 6).await
        else {
            panic!("no payment");
        };
        assert_eq!(amount, idr("50000"));
        assert_eq!(
            instructions,
            Instructions::VirtualAccount {
                bank: "bni".into(),
                number: format!("8808{payment_id:08}"),
            }
        );
        let kopi = |shop: &ScratchShop| {
            let store = shop.store().clone();
            async move {
                let p = store.product(&"a".into(), "KOPI").await.unwrap().unwrap();
                (p.stock, p.reserved)
            }
        };
        assert_eq!(kopi(&shop).await, (Some(1), 2));
        // Another amount is held; the amount due then is a no-op on a held payment.
        let held = shop
            .settle(payment_id, GatewayStatus::Paid, Some(&idr("40000")), 7)
            .await
            .unwrap();
        assert_eq!(held, Some(PaymentStatus::Mismatch));
        let again = shop
            .settle(payment_id, GatewayStatus::Paid, None, 8)
            .await
            .unwrap();
        assert_eq!(again, Some(PaymentStatus::Mismatch));
        assert_eq!(kopi(&shop).await, (Some(1), 2));
        assert_eq!(
            shop.settle(999, GatewayStatus::Paid, None, 9)
                .await
                .unwrap(),
            None
        );
        shop.close().await;
    }
}
