//! `GET /admin/v1/analytics?account=&period=day|week|month&from=YYYY-MM-DD&to=YYYY-MM-DD`:
//! one item per period (every period of the range, empty ones as zeros), each with every
//! figure (src/analytics/mod.rs says what each means), the rates (`delivered_rate`,
//! `read_rate`, `failed_rate` of `sent`; `campaign_delivered_rate`, `campaign_read_rate`,
//! `campaign_replied_rate` of `campaign_sent`; null when nothing was sent), the median
//! first response, the chatbots' cost and, per currency, the orders' total, the revenue, what
//! refunds gave back and the net (decimal text).
//!
//! Days are the account's (`timezone`); weeks start on Monday; `from` and `to` are
//! inclusive and widened to whole weeks or months; at most
//! [`crate::analytics::MAX_RANGE_DAYS`] days. Defaults: `period=day`, `to` today, `from` 29
//! days before `to`. `format=csv` (or `Accept: text/csv`) answers CSV with a header line (the
//! money columns as `CUR amount` pairs separated by `;`). A key scoped to one account sees
//! only its own (the `account` query, filled in when left out).

use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::{Days, NaiveDate};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::api::{query, Answer, ApiError};
use super::AppState;
use crate::analytics::{parse_date, roll_up, widen, Metric, Period, PeriodRow, Snapshot};
use crate::domain::Zone;

pub fn routes() -> Router<AppState> {
    Router::new().route("/analytics", get(analytics))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AnalyticsQuery {
    account: Option<String>,
    period: Option<String>,
    from: Option<String>,
    to: Option<String>,
    format: Option<String>,
}

/// The rates: (name, numerator, denominator).
const RATES: [(&str, Metric, Metric); 6] = [
    ("delivered_rate", Metric::Delivered, Metric::Sent),
    ("read_rate", Metric::Read, Metric::Sent),
    ("failed_rate", Metric::Failed, Metric::Sent),
    (
        "campaign_delivered_rate",
        Metric::CampaignDelivered,
        Metric::CampaignSent,
    ),
    (
        "campaign_read_rate",
        Metric::CampaignRead,
        Metric::CampaignSent,
    ),
    (
        "campaign_replied_rate",
        Metric::CampaignReplied,
        Metric::CampaignSent,
    ),
];

fn date(name: &str, given: Option<&str>) -> Result<Option<NaiveDate>, ApiError> {
    given
        .map(|s| {
            parse_date(s)
                .filter(|_| s.len() == 10)
                .ok_or_else(|| ApiError::invalid(format!("`{name}` must be a date, YYYY-MM-DD")))
        })
        .transpose()
}

async fn analytics(
    State(app): State<AppState>,
    headers: HeaderMap,
    q: Result<Query<AnalyticsQuery>, QueryRejection>,
) -> Answer {
    let q = query(q)?;
    let settings = app.engine.settings_arc();
    let account = match q.account.as_deref() {
        Some(id) => settings.account(id),
        None if settings.accounts.len() == 1 => settings.accounts.first(),
        None => {
            return Err(ApiError::bad(
                "several accounts are configured: give ?account=PHONE_NUMBER_ID",
            ))
        }
    }
    .ok_or_else(|| ApiError::not_found("unknown account"))?;
    let period = match q.period.as_deref() {
        None => Period::Day,
        Some(p) => Period::parse(p)
            .ok_or_else(|| ApiError::invalid("`period` must be day, week or month"))?,
    };
    let csv = match q.format.as_deref() {
        Some("csv") => true,
        Some("json") => false,
        Some(_) => return Err(ApiError::invalid("`format` must be json or csv")),
        None => headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.to_ascii_lowercase().contains("text/csv")),
    };
    let zone = Zone::parse(&account.timezone).map_err(ApiError::invalid)?;
    let to = match date("to", q.to.as_deref())? {
        Some(d) => d,
        None => zone.day(app.engine.clock.now_ms()),
    };
    let from = match date("from", q.from.as_deref())? {
        Some(d) => d,
        None => to - Days::new(29),
    };
    let (first, last) = widen(period, from, to).map_err(ApiError::invalid)?;
    let id = &account.phone_number_id;
    let days = app.engine.store.analytics_days(id, first, last).await?;
    let uniques = match period {
        Period::Day => Default::default(),
        p => {
            app.engine
                .store
                .analytics_uniques(id, p, first, last)
                .await?
        }
    };
    let rows = roll_up(period, first, last, &days, &uniques);
    if csv {
        return Ok(csv_answer(id.as_str(), period, &rows));
    }
    let items: Vec<Value> = rows.iter().map(item).collect();
    Ok(Json(json!({
        "account": id.as_str(),
        "period": period.as_str(),
        "timezone": account.timezone,
        "from": first.to_string(),
        "to": last.to_string(),
        "items": items,
    }))
    .into_response())
}

fn money(s: &Snapshot, pick: fn(&crate::analytics::Money) -> rust_decimal::Decimal) -> Value {
    Value::Object(
        s.money
            .iter()
            .map(|(c, m)| (c.clone(), json!(pick(m).normalize().to_string())))
            .collect::<Map<_, _>>(),
    )
}

fn item(row: &PeriodRow) -> Value {
    let s = &row.totals;
    let mut v = Map::new();
    v.insert("start".into(), json!(row.start.to_string()));
    v.insert("end".into(), json!(row.end.to_string()));
    for m in Metric::ALL {
        v.insert(m.column().into(), json!(s.counters.get(*m)));
    }
    for (name, of, base) in RATES {
        v.insert(name.into(), json!(s.rate(of, base)));
    }
    v.insert(
        "median_first_response_ms".into(),
        json!(s.first_response.median_ms()),
    );
    v.insert("bot_cost".into(), json!(s.bot_cost().to_string()));
    v.insert("ordered".into(), money(s, |m| m.ordered));
    v.insert("revenue".into(), money(s, |m| m.revenue));
    v.insert("refunded".into(), money(s, |m| m.refunded));
    v.insert("net_revenue".into(), money(s, |m| m.revenue - m.refunded));
    Value::Object(v)
}

fn csv_answer(account: &str, period: Period, rows: &[PeriodRow]) -> Response {
    let mut w = ::csv::Writer::from_writer(Vec::new());
    let mut header: Vec<String> = vec!["start".into(), "end".into()];
    header.extend(Metric::ALL.iter().map(|m| m.column().to_string()));
    header.extend(RATES.iter().map(|(n, _, _)| n.to_string()));
    header.extend(
        [
            "median_first_response_ms",
            "bot_cost",
            "ordered",
            "revenue",
            "refunded",
            "net_revenue",
        ]
        .map(String::from),
    );
    let _ = w.write_record(&header);
    let pairs = |s: &Snapshot, pick: fn(&crate::analytics::Money) -> rust_decimal::Decimal| {
        s.money
            .iter()
            .map(|(c, m)| format!("{c} {}", pick(m).normalize()))
            .collect::<Vec<_>>()
            .join(";")
    };
    for row in rows {
        let s = &row.totals;
        let mut rec = vec![row.start.to_string(), row.end.to_string()];
        rec.extend(Metric::ALL.iter().map(|m| s.counters.get(*m).to_string()));
        rec.extend(RATES.iter().map(|(_, of, base)| {
            s.rate(*of, *base)
                .map(|r| r.to_string())
                .unwrap_or_default()
        }));
        rec.push(
            s.first_response
                .median_ms()
                .map(|m| m.to_string())
                .unwrap_or_default(),
        );
        rec.push(s.bot_cost().to_string());
        rec.push(pairs(s, |m| m.ordered));
        rec.push(pairs(s, |m| m.revenue));
        rec.push(pairs(s, |m| m.refunded));
        rec.push(pairs(s, |m| m.revenue - m.refunded));
        let _ = w.write_record(&rec);
    }
    let body = w.into_inner().unwrap_or_default();
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!(
                    "attachment; filename=\"analytics-{account}-{}.csv\"",
                    period.as_str()
                ),
            ),
        ],
        Body::from(body),
    )
        .into_response()
}
