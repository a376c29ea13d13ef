//! The operations of the commerce module: products, materials, categories, orders, custom
//! orders, vouchers, subscriptions and refunds. Money and quantities are decimal strings.

use super::op::{op, page, Op};
use crate::ingress::commerce::{
    CategoryBody, CustomOrderChange, MaterialFields, MaterialLinesBody, OrderChange, ProductFields,
    RefundBody, VoucherFields,
};

const PRODUCT: &str = "{sku: str, name: str, description: str?, price: str, currency: str, \
     stock: int?, reserved: int, image_url: str?, category: str?, active: bool, kind: str, \
     period_days: int?, access_link: str?, position: int, created_at: int, updated_at: int, \
     materials?: [{material: str, quantity: str}]}";

const MATERIAL: &str = "{name: str, unit: str, stock: str, min_stock: str, low: bool, \
     low_alert: str, updated_at: int}";

const CATEGORY: &str = "{slug: str, name: str, position: int}";

const ORDER: &str = "{number: str, user: str, customer_name: str?, customer_address: str?, \
     items: [{sku: str, name: str, quantity: int, unit_price: str, subtotal: str, \
     catalog_price: str?}], subtotal: str, discount: str, total: str, currency: str, \
     status: str, payment_status: str?, voucher: str?, source: str, notes: str?, stock: any, \
     created_at: int, updated_at: int}";

const CUSTOM_ORDER: &str = "{id: int, user: str, description: str, media_id: str?, \
     status: str, notes: str?, owner_told: bool, created_at: int, updated_at: int}";

const VOUCHER: &str = "{code: str, kind: str, value: str, currency: str, min_total: str?, \
     valid_from: str?, valid_to: str?, usage_limit: int?, used: int, user: str?, \
     active: bool, created_at: int, updated_at: int}";

const SUBSCRIPTION: &str = "{id: int, wa_id: str, sku: str, status: str, period_start: int, \
     period_end: int, last_order: str?, created_at: int, updated_at: int}";

const STOCK: &str = "{delta?: int|str, set?: int|str, reason?: str}";

const ACCOUNT: &str = "account?: str";

const PAGE: &str = "account?: str, cursor?: str, limit?: int(1..200)";

pub(super) fn ops() -> Vec<Op> {
    vec![
        op("GET", "/products", "The catalog")
            .query(
                "account?: str, category?: str, active?: bool, cursor?: str, limit?: int(1..200)",
            )
            .ok(200, "A page of products.", page(PRODUCT)),
        op("POST", "/products", "Create or update a product by `sku`")
            .query(ACCOUNT)
            .body::<ProductFields>()
            .ok(201, "Created.", PRODUCT)
            .ok(200, "Updated.", PRODUCT),
        op("POST", "/products/import", "Import products from CSV")
            .query(ACCOUNT)
            .csv_body()
            .ok(200, "All rows imported.", "{created: int, updated: int}"),
        op("GET", "/products/{sku}", "One product")
            .query(ACCOUNT)
            .ok(200, "The product.", PRODUCT),
        op("PATCH", "/products/{sku}", "Change a product")
            .query(ACCOUNT)
            .body::<ProductFields>()
            .ok(200, "The product.", PRODUCT),
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
            page(MATERIAL),
        ),
        op(
            "POST",
            "/materials",
            "Create or update a material by `name`",
        )
        .query(ACCOUNT)
        .body::<MaterialFields>()
        .ok(201, "Created.", MATERIAL)
        .ok(200, "Updated.", MATERIAL),
        op("GET", "/materials/{name}", "One material")
            .query(ACCOUNT)
            .ok(200, "The material.", MATERIAL),
        op("PATCH", "/materials/{name}", "Change a material")
            .query(ACCOUNT)
            .body::<MaterialFields>()
            .ok(200, "The material.", MATERIAL),
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
        .ok(200, "The material.", MATERIAL),
        op("GET", "/subscriptions", "Subscriptions to plans")
            .query("account?: str, wa_id?: str, status?: str, cursor?: str, limit?: int(1..200)")
            .ok(200, "Newest first.", page(SUBSCRIPTION)),
        op("GET", "/subscriptions/{id}", "One subscription")
            .query(ACCOUNT)
            .ok(200, "The subscription.", SUBSCRIPTION),
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
            .query("account?: str, status?: str, user?: str, cursor?: str, limit?: int(1..200)")
            .ok(200, "Newest first.", page(ORDER)),
        op("GET", "/orders/{number}", "One order")
            .query(ACCOUNT)
            .ok(200, "The order.", ORDER),
        op("PATCH", "/orders/{number}", "Move an order forward")
            .query(ACCOUNT)
            .body::<OrderChange>()
            .ok(200, "The order.", ORDER),
        op("GET", "/custom-orders", "Custom orders")
            .query("account?: str, status?: str, cursor?: str, limit?: int(1..200)")
            .ok(200, "Newest first.", page(CUSTOM_ORDER)),
        op("GET", "/custom-orders/{id}", "One custom order")
            .query(ACCOUNT)
            .ok(200, "The custom order.", CUSTOM_ORDER),
        op(
            "PATCH",
            "/custom-orders/{id}",
            "Move a custom order forward",
        )
        .query(ACCOUNT)
        .body::<CustomOrderChange>()
        .ok(200, "The custom order.", CUSTOM_ORDER),
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
            page(VOUCHER),
        ),
        op("POST", "/vouchers", "Create or update a voucher by `code`")
            .query(ACCOUNT)
            .body::<VoucherFields>()
            .ok(201, "Created.", VOUCHER)
            .ok(200, "Updated.", VOUCHER),
        op("GET", "/vouchers/{code}", "One voucher")
            .query(ACCOUNT)
            .ok(200, "The voucher.", VOUCHER),
        op("PATCH", "/vouchers/{code}", "Change a voucher")
            .query(ACCOUNT)
            .body::<VoucherFields>()
            .ok(200, "The voucher.", VOUCHER),
        op("DELETE", "/vouchers/{code}", "Delete a voucher")
            .query(ACCOUNT)
            .empty(204, "Deleted."),
    ]
}
