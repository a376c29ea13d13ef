//! The catalog as CSV: every row checked first, then all in one transaction.

use std::collections::{HashMap, HashSet};

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use serde_json::json;

use super::products::{category_slugs, merged, ProductFields};
use super::*;
use crate::domain::ProductKind;
use crate::store::Product;
use axum::http::{header, HeaderMap};

/// A catalog of 10,000 products as CSV is a few MiB.
pub(super) const IMPORT_MAX_BODY: usize = 16 * 1024 * 1024;
const IMPORT_MAX_ROWS: usize = 10_000;
/// CSV columns, in the order a template would have them.
const COLUMNS: [&str; 12] = [
    "sku",
    "name",
    "price",
    "stock",
    "category",
    "description",
    "image_url",
    "active",
    "kind",
    "period_days",
    "access_link",
    "position",
];

/// One cell of a CSV row as a field: empty clears (or, for `active` and `kind`, leaves).
fn row_fields(header: &[&str], row: &csv::StringRecord) -> (ProductFields, Vec<String>) {
    let mut f = ProductFields::default();
    let mut errors = Vec::new();
    let text = |v: &str| (!v.is_empty()).then(|| v.to_string());
    let whole = |column: &str, v: &str, errors: &mut Vec<String>| -> Option<i64> {
        if v.is_empty() {
            return None;
        }
        v.parse::<i64>()
            .map_err(|_| errors.push(format!("{column} {v:?} is not a whole number")))
            .ok()
    };
    for (column, value) in header.iter().zip(row.iter()) {
        match *column {
            "sku" => f.sku = Some(value.to_string()),
            "name" => f.name = Some(value.to_string()),
            "price" if value.is_empty() => errors.push("price is empty".into()),
            "price" => f.price = Some(Price::Text(value.to_string())),
            "stock" => f.stock = Some(whole("stock", value, &mut errors)),
            "category" => f.category = Some(text(value)),
            "description" => f.description = Some(text(value)),
            "image_url" => f.image_url = Some(text(value)),
            "access_link" => f.access_link = Some(text(value)),
            "period_days" => f.period_days = Some(whole("period_days", value, &mut errors)),
            "position" => f.position = whole("position", value, &mut errors),
            "active" => match value.to_ascii_lowercase().as_str() {
                "" => {}
                "true" | "1" | "yes" => f.active = Some(true),
                "false" | "0" | "no" => f.active = Some(false),
                _ => errors.push(format!("active {value:?} must be true or false")),
            },
            "kind" if value.is_empty() => {}
            "kind" => match value.parse::<ProductKind>() {
                Ok(k) => f.kind = Some(k),
                Err(_) => errors.push(format!("kind {value:?} must be product or plan")),
            },
            _ => {}
        }
    }
    (f, errors)
}

/// The header's columns, checked: known ones, each once, `sku` among them.
fn csv_header(record: &csv::StringRecord) -> Result<Vec<&str>, ApiError> {
    let mut seen = HashSet::new();
    let mut columns = Vec::with_capacity(record.len());
    for name in record.iter() {
        if !COLUMNS.contains(&name) {
            return Err(ApiError::invalid(format!(
                "line 1: unknown column {name:?} (columns: {})",
                COLUMNS.join(", ")
            )));
        }
        if !seen.insert(name) {
            return Err(ApiError::invalid(format!("line 1: column {name:?} twice")));
        }
        columns.push(name);
    }
    if !seen.contains("sku") {
        return Err(ApiError::invalid("line 1: the header has no sku column"));
    }
    Ok(columns)
}

/// `POST /products/import` (`Content-Type: text/csv`): every row checked first; one bad row
/// and nothing is imported (422, each problem with its line); else all in one transaction.
pub(super) async fn import_products(
    State(app): State<AppState>,
    headers: HeaderMap,
    q: Result<Query<AccountParam>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Answer {
    let (account, currency) = account(&app, query(q)?.account.as_deref())?;
    let is_csv = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().to_ascii_lowercase().starts_with("text/csv"));
    if !is_csv {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "send the catalog as Content-Type: text/csv",
        ));
    }
    let bytes = body_bytes(body)?;
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(bytes.as_ref());
    let header_record = reader
        .headers()
        .map_err(|e| ApiError::invalid(format!("line 1: {e}")))?
        .clone();
    let header = csv_header(&header_record)?;
    let mut errors = Vec::new();
    let mut rows: Vec<(u64, ProductFields)> = Vec::new();
    for (n, record) in reader.records().enumerate() {
        if n >= IMPORT_MAX_ROWS {
            return Err(ApiError::invalid(format!(
                "more than {IMPORT_MAX_ROWS} rows: split the file"
            )));
        }
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                let line = e.position().map_or(0, |p| p.line());
                errors.push(format!("line {line}: {}", csv_problem(&e)));
                continue;
            }
        };
        let line = record.position().map_or(0, |p| p.line());
        if record.len() != header.len() {
            errors.push(format!(
                "line {line}: {} fields, the header has {}",
                record.len(),
                header.len()
            ));
            continue;
        }
        let (fields, problems) = row_fields(&header, &record);
        errors.extend(problems.into_iter().map(|p| format!("line {line}: {p}")));
        rows.push((line, fields));
    }
    if rows.is_empty() && errors.is_empty() {
        return Err(ApiError::invalid("the file has no rows"));
    }
    let store = &app.engine.store;
    let skus: Vec<&str> = rows.iter().filter_map(|(_, f)| f.sku.as_deref()).collect();
    let existing: HashMap<String, Product> = store
        .products_with_skus(&account, &skus)
        .await?
        .into_iter()
        .map(|p| (p.sku.clone(), p))
        .collect();
    let categories = category_slugs(&app, &account).await?;
    let now = now(&app);
    let mut first_line: HashMap<String, u64> = HashMap::new();
    let mut writes = Vec::with_capacity(rows.len());
    for (line, mut fields) in rows {
        let sku = fields.sku.take().unwrap_or_default();
        if let Some(first) = first_line.get(&sku) {
            errors.push(format!("line {line}: sku {sku:?} is also on line {first}"));
            continue;
        }
        first_line.insert(sku.clone(), line);
        match merged(&sku, existing.get(&sku), fields, currency, &categories, now) {
            Ok(w) => writes.push(w),
            Err(problems) => {
                errors.extend(problems.into_iter().map(|p| format!("line {line}: {p}")))
            }
        }
    }
    if !errors.is_empty() {
        errors.sort_by_key(|e| line_of(e));
        let bad_lines: HashSet<u64> = errors.iter().map(|e| line_of(e)).collect();
        return Err(ApiError::problems_titled(
            format!("{} bad rows: nothing imported", bad_lines.len()),
            errors,
        ));
    }
    let (created, updated) = store.upsert_products(&account, &writes, now).await?;
    tracing::info!(account = %account, created, updated, "Catalog imported by the admin API.");
    Ok(Json(json!({ "created": created, "updated": updated })).into_response())
}

/// The line number an import problem starts with (for sorting them).
fn line_of(problem: &str) -> u64 {
    problem
        .strip_prefix("line ")
        .and_then(|r| r.split(':').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

fn csv_problem(e: &csv::Error) -> String {
    match e.kind() {
        csv::ErrorKind::Utf8 { .. } => "not UTF-8 text".into(),
        _ => e.to_string(),
    }
}
