//! The calls a flow makes to the shop and what comes back, as plain data.

use serde::{Deserialize, Serialize};

use crate::domain::{Money, PaymentMethod, PaymentStatus};
use crate::payments::Instructions;
use crate::store::{Cart, CartChanged, Checkout, Order, Product, VoucherApplied};

/// A call a flow waits on; its id names it across a crash (the same call made again).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Call {
    pub id: String,
    pub op: Op,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "op")]
pub enum Op {
    /// A page of the active products (of a category), in catalog order.
    Catalog {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        category: Option<String>,
        page: u32,
        per_page: u32,
    },
    /// One product the customer chose.
    Product {
        sku: String,
    },
    CartAdd {
        sku: String,
        quantity: u32,
    },
    CartRemove {
        sku: String,
    },
    CartClear,
    CartShow,
    /// Turn the open cart into an order, reserving its stock.
    Checkout {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        address: Option<String>,
    },
    /// The customer's open orders.
    Orders,
    /// Check a voucher code and, when it may be used, put it on the open cart.
    Voucher {
        code: String,
    },
    /// A custom order described in chat (and its reference picture), for the owner.
    CustomOrder {
        description: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        media_id: Option<String>,
    },
    /// An order from WhatsApp's catalog `order` message (once per message).
    CatalogOrder {
        wamid: String,
        items: Vec<CatalogItem>,
    },
    /// Open a payment of the order at a gateway (the PENDING row first, then the gateway).
    Payment {
        order: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        provider: Option<String>,
        method: PaymentMethod,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        bank: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        store: Option<String>,
        expires_ms: i64,
    },
}

/// A product of a catalog `order` message, as the message gave it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CatalogItem {
    /// `product_retailer_id`: our sku.
    pub sku: String,
    pub quantity: i64,
    /// `item_price`, exact decimal text.
    pub price: String,
    pub currency: String,
}

impl Op {
    /// Whether the call changes anything (and so is recorded to be made once).
    pub fn changes(&self) -> bool {
        matches!(
            self,
            Op::CartAdd { .. }
                | Op::CartRemove { .. }
                | Op::CartClear
                | Op::Checkout { .. }
                | Op::CatalogOrder { .. }
                | Op::Payment { .. }
                | Op::Voucher { .. }
                | Op::CustomOrder { .. }
        )
    }
}

/// What a call found or did.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    Page {
        products: Vec<Product>,
        page: u32,
        /// Another page follows.
        more: bool,
    },
    /// None: no such active product.
    Product(Option<Box<Product>>),
    Cart {
        changed: CartChanged,
        cart: Option<Cart>,
    },
    Checkout(Checkout),
    Orders(Vec<Order>),
    Payment(PaymentAnswer),
    Voucher(VoucherApplied),
    /// The custom order's id; None when it described nothing.
    CustomOrder(Option<i64>),
    /// The store could not be reached after retries (the flow's `on_error`).
    Failed {
        error: String,
    },
}

/// What opening a payment came to.
#[derive(Debug, Clone, PartialEq)]
pub enum PaymentAnswer {
    /// Open at its gateway: what the customer is to do.
    Opened {
        payment_id: i64,
        instructions: Instructions,
        amount: Money,
        order: String,
    },
    /// It was settled already (the call made again after a crash).
    Settled {
        payment_id: i64,
        status: PaymentStatus,
    },
    /// It cannot be opened (no such order, no provider, the gateway refused it).
    Refused { reason: String },
}

/// The answer to the call `id`, as the conversation's event.
#[derive(Debug, Clone, PartialEq)]
pub struct CommerceResult {
    pub id: String,
    pub answer: Answer,
}
