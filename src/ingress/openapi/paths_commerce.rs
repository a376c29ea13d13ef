//! The operations of the commerce module: products, materials, categories, orders, custom
//! orders, vouchers, subscriptions and refunds. Money and quantities are decimal strings.

use super::op::{op, page, Op};
use crate::domain::{
    CustomOrderStatus, LowAlert, OrderPayment, OrderSource, OrderStatus, ProductKind,
    SubscriptionStatus, VoucherKind,
};
use crate::ingress::commerce::{
    CategoryBody, CustomOrderChange, MaterialFields, MaterialLinesBody, OrderChange, ProductFields,
    RefundBody, VoucherFields,
};

/// `str(a|b|…)`: one of a stored enum's texts.
fn one_of(texts: &[&str]) -> String {
    format!("str({})", texts.join("|"))
}

fn product() -> String {
    format!(
        "{{sku: str, name: str, description: str?, price: str, currency: str, \
         stock: int?, reserved: int, image_url: str?, category: str?, active: bool, kind: {}, \
         period_days: int?, access_link: str?, position: int, created_at: int, updated_at: int, \
         materials?: [{{material: str, quantity: str}}]}}",
        one_of(ProductKind::TEXTS)
    )
}

fn material() -> String {
    format!(
        "{{name: str, unit: str, stock: str, min_stock: str, low: bool, \
         low_alert: {}, updated_at: int}}",
        one_of(LowAlert::TEXTS)
    )
}

const CATEGORY: &str = "{slug: str, name: str, position: int}";

fn order() -> String {
    format!(
        "{{number: str, user: str, customer_name: str?, customer_address: str?, \
         items: [{{sku: str, name: str, quantity: int, unit_price: str, subtotal: str, \
         catalog_price: str?}}], subtotal: str, discount: str, total: str, currency: str, \
         status: {}, payment_status: {}?, voucher: str?, source: {}, notes: str?, stock: any, \
         created_at: int, updated_at: int}}",
        one_of(OrderStatus::TEXTS),
        one_of(OrderPayment::TEXTS),
        one_of(OrderSource::TEXTS)
    )
}

fn custom_order() -> String {
    format!(
        "{{id: int, user: str, description: str, media_id: str?, \
         status: {}, notes: str?, owner_told: bool, created_at: int, updated_at: int}}",
        one_of(CustomOrderStatus::TEXTS)
    )
}

fn voucher() -> String {
    format!(
        "{{code: str, kind: {}, value: str, currency: str, min_total: str?, \
         valid_from: str?, valid_to: str?, usage_limit: int?, used: int, user: str?, \
         active: bool, created_at: int, updated_at: int}}",
        one_of(VoucherKind::TEXTS)
    )
}

fn subscription() -> String {
    format!(
        "{{id: int, wa_id: str, sku: str, status: {}, period_start: int, \
         period_end: int, last_order: str?, created_at: int, updated_at: int}}",
        one_of(SubscriptionStatus::TEXTS)
    )
}

const STOCK: &str = "{delta?: int|str, set?: int|str, reason?: str}";

const ACCOUNT: &str = "account?: str";

const PAGE: &str = "account?: str, cursor?: str, limit?: int(1..200)";

pub(super) fn ops() -> Vec<Op> {
    vec![
        op("GET", "/products", "The catalog")
            .query(
                "account?: str, category?: str, active?: bool, cursor?: str, limit?: int(1..200)",
            )
            .ok(200, "A page of products.", page(&product())),
        op("POST", "/products", "Create or update a product by `sku`")
            .query(ACCOUNT)
            .body::<ProductFields>()
            .ok(201, "Created.", product())
            .ok(200, "Updated.", product()),
        op("POST", "/products/import", "Import products from CSV")
            .query(ACCOUNT)
            .csv_body()
            .ok(200, "All rows imported.", "{created: int, updated: int}"),
        op("GET", "/products/{sku}", "One product")
            .query(ACCOUNT)
            .ok(200, "The product.", product()),
        op("PATCH", "/products/{sku}", "Change a product")
            .query(ACCOUNT)
            .body::<ProductFields>()
            .ok(200, "The product.", product()),
        op("DELETE", "/products/{sku}", "Delete a product")
            .query(ACCOUNT)
            .empty(204, "Deleted."),
        op("POST", "/products/{sku}/stock", "Adjust a product's stock")
            .query(ACCOUNT)
            .body_shape(STOCK)
            .ok(
                200,
                "The stock now.",
                "{sku: str, stock: int?, reserved: int}",
            ),
        op(
            "PUT",
            "/products/{sku}/materials",
            "What one unit of a product takes",
        )
        .query(ACCOUNT)
        .body::<MaterialLinesBody>()
        .ok(
            200,
            "The list now.",
            "{sku: str, materials: [{material: str, quantity: str}]}",
        ),
        op("GET", "/materials", "Materials").query(PAGE).ok(
            200,
            "A page of materials.",
            page(&material()),
        ),
        op(
            "POST",
            "/materials",
            "Create or update a material by `name`",
        )
        .query(ACCOUNT)
        .body::<MaterialFields>()
        .ok(201, "Created.", material())
        .ok(200, "Updated.", material()),
        op("GET", "/materials/{name}", "One material")
            .query(ACCOUNT)
            .ok(200, "The material.", material()),
        op("PATCH", "/materials/{name}", "Change a material")
            .query(ACCOUNT)
            .body::<MaterialFields>()
            .ok(200, "The material.", material()),
        op("DELETE", "/materials/{name}", "Delete a material")
            .query(ACCOUNT)
            .empty(204, "Deleted."),
        op(
            "POST",
            "/materials/{name}/stock",
            "Adjust a material's stock",
        )
        .query(ACCOUNT)
        .body_shape(STOCK)
        .ok(200, "The material.", material()),
        op("GET", "/subscriptions", "Subscriptions to plans")
            .query(format!(
                "account?: str, wa_id?: str, status?: {}, cursor?: str, limit?: int(1..200)",
                one_of(SubscriptionStatus::TEXTS)
            ))
            .ok(200, "Newest first.", page(&subscription())),
        op("GET", "/subscriptions/{id}", "One subscription")
            .query(ACCOUNT)
            .ok(200, "The subscription.", subscription()),
        op("GET", "/categories", "Categories").query(ACCOUNT).ok(
            200,
            "Every category.",
            format!("{{items: [{CATEGORY}]}}"),
        ),
        op(
            "POST",
            "/categories",
            "Create or update a category by `slug`",
        )
        .query(ACCOUNT)
        .body::<CategoryBody>()
        .ok(201, "Created.", CATEGORY)
        .ok(200, "Updated.", CATEGORY),
        op("DELETE", "/categories/{slug}", "Delete a category")
            .query(ACCOUNT)
            .empty(204, "Deleted."),
        op("GET", "/orders", "Orders")
            .query(format!(
                "account?: str, status?: {}, user?: str, cursor?: str, limit?: int(1..200)",
                one_of(OrderStatus::TEXTS)
            ))
            .ok(200, "Newest first.", page(&order())),
        op("GET", "/orders/{number}", "One order")
            .query(ACCOUNT)
            .ok(200, "The order.", order()),
        op("PATCH", "/orders/{number}", "Move an order forward")
            .query(ACCOUNT)
            .body::<OrderChange>()
            .ok(200, "The order.", order()),
        op("GET", "/custom-orders", "Custom orders")
            .query(format!(
                "account?: str, status?: {}, cursor?: str, limit?: int(1..200)",
                one_of(CustomOrderStatus::TEXTS)
            ))
            .ok(200, "Newest first.", page(&custom_order())),
        op("GET", "/custom-orders/{id}", "One custom order")
            .query(ACCOUNT)
            .ok(200, "The custom order.", custom_order()),
        op(
            "PATCH",
            "/custom-orders/{id}",
            "Move a custom order forward",
        )
        .query(ACCOUNT)
        .body::<CustomOrderChange>()
        .ok(200, "The custom order.", custom_order()),
        op("POST", "/payments/{id}/refund", "Refund a payment")
            .int_path(&["id"])
            .body::<RefundBody>()
            .ok(
                200,
                "The refund (`replayed`: the same request again).",
                "{id: int, payment: int, order: str?, amount: str, currency: str, \
                 reason: str?, status: str, provider_ref: str?, idempotency_key: str?, \
                 payment_status: str, refunded: str, replayed: bool}",
            ),
        op("GET", "/vouchers", "Vouchers").query(PAGE).ok(
            200,
            "A page of vouchers.",
            page(&voucher()),
        ),
        op("POST", "/vouchers", "Create or update a voucher by `code`")
            .query(ACCOUNT)
            .body::<VoucherFields>()
            .ok(201, "Created.", voucher())
            .ok(200, "Updated.", voucher()),
        op("GET", "/vouchers/{code}", "One voucher")
            .query(ACCOUNT)
            .ok(200, "The voucher.", voucher()),
        op("PATCH", "/vouchers/{code}", "Change a voucher")
            .query(ACCOUNT)
            .body::<VoucherFields>()
            .ok(200, "The voucher.", voucher()),
        op("DELETE", "/vouchers/{code}", "Delete a voucher")
            .query(ACCOUNT)
            .empty(204, "Deleted."),
    ]
}
