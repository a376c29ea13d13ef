//! Contacts as CSV. Import (`POST /contacts/import[?dry_run=true]`, `Content-Type:
//! text/csv`) is a job: the answer (202) names it, `GET /contacts/import/{id}` shows it
//! (running | done | failed, lines read, valid, applied, and each bad line's problem with its
//! line number). Good lines are applied (source `import`), bad ones reported; a dry run checks
//! every line and writes nothing. Export (`GET /contacts/export`, the list's filters) streams
//! the contacts a page at a time, in the columns an import reads.
//!
//! Columns: `wa_id` (required), `name`, `tags` (separated by `;`), the profile fields
//! (`email`, `full_name`, ...), and the account's custom fields by name. The export's
//! read-only columns (`source`, `blocked_at`, `opted_out_at`, `first_seen_at`,
//! `last_message_at`, `updated_at`) are ignored on import; any other column is refused.

use axum::body::Body;
use axum::http::{header, HeaderMap};

use super::*;
use crate::domain::ImportState;

pub(super) const IMPORT_MAX_BODY: usize = 16 * 1024 * 1024;
const IMPORT_MAX_ROWS: usize = 200_000;
/// Bad lines reported at most (the count says how many there were).
const MAX_ERRORS: usize = 1_000;
const EXPORT_PAGE: i64 = 500;
const READ_ONLY: [&str; 6] = [
    "source",
    "blocked_at",
    "opted_out_at",
    "first_seen_at",
    "last_message_at",
    "updated_at",
];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ImportQuery {
    account: Option<String>,
    #[serde(default)]
    dry_run: bool,
}

/// What a column of the file is.
#[derive(Debug, Clone)]
enum Column {
    WaId,
    Name,
    Tags,
    Profile(ProfileField),
    Custom(String),
    Ignored,
}

pub(super) async fn import(
    State(app): State<AppState>,
    headers: HeaderMap,
    q: Result<Query<ImportQuery>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Answer {
    let q = query(q)?;
    let account = account(&app, q.account.as_deref())?;
    let is_csv = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().to_ascii_lowercase().starts_with("text/csv"));
    if !is_csv {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "send the contacts as Content-Type: text/csv",
        ));
    }
    let bytes = body.map_err(|e| ApiError::new(e.status(), e.body_text()))?;
    let defs = app.engine.store.field_defs(&account).await?;
    // The header is checked now: a file that cannot be read makes no job.
    let columns = {
        let mut reader = ::csv::ReaderBuilder::new()
            .trim(::csv::Trim::All)
            .from_reader(bytes.as_ref());
        let header = reader
            .headers()
            .map_err(|e| ApiError::invalid(format!("line 1: {e}")))?;
        columns_of(header, &defs)?
    };
    let id = app
        .engine
        .store
        .create_import_job(&account, q.dry_run, now(&app))
        .await?;
    let dry_run = q.dry_run;
    tokio::spawn(async move {
        run_import(app, account, id, bytes, columns, defs, dry_run).await;
    });
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "job_id": id, "state": ImportState::Running, "dry_run": dry_run })),
    )
        .into_response())
}

fn columns_of(header: &::csv::StringRecord, defs: &[FieldDef]) -> Result<Vec<Column>, ApiError> {
    let mut problems = Vec::new();
    let mut columns = Vec::new();
    for name in header.iter() {
        let name = name.trim().to_ascii_lowercase();
        let column = match name.as_str() {
            "wa_id" | "phone" => Column::WaId,
            "name" | "profile_name" => Column::Name,
            "tags" => Column::Tags,
            n if READ_ONLY.contains(&n) => Column::Ignored,
            n => match ProfileField::of(n) {
                Some(f) => Column::Profile(f),
                None if defs.iter().any(|d| d.name == n) => Column::Custom(n.to_string()),
                None => {
                    problems.push(format!(
                        "line 1: column `{n}` is neither a contact field nor a defined custom field"
                    ));
                    continue;
                }
            },
        };
        columns.push(column);
    }
    if !columns.iter().any(|c| matches!(c, Column::WaId)) {
        problems.push("line 1: a wa_id column is required".into());
    }
    if problems.is_empty() {
        Ok(columns)
    } else {
        Err(ApiError::problems(problems))
    }
}

/// One line as a contact write, or its problems.
fn line_write(
    columns: &[Column],
    record: &::csv::StringRecord,
    defs: &[FieldDef],
    today: chrono::NaiveDate,
) -> Result<(UserKey, ContactWrite), Vec<String>> {
    if record.len() != columns.len() {
        return Err(vec![format!(
            "{} fields, the header has {}",
            record.len(),
            columns.len()
        )]);
    }
    let mut body = ContactBody::default();
    let mut profile = Map::new();
    let mut custom = Map::new();
    for (column, value) in columns.iter().zip(record.iter()) {
        match column {
            Column::WaId => body.wa_id = Some(value.to_string()),
            Column::Name if !value.is_empty() => body.name = Some(value.to_string()),
            Column::Tags if !value.is_empty() => {
                body.tags = Some(
                    value
                        .split(';')
                        .map(str::to_string)
                        .filter(|t| !t.trim().is_empty())
                        .collect(),
                )
            }
            Column::Profile(f) if !value.is_empty() => {
                profile.insert(f.name().to_string(), Value::String(value.to_string()));
            }
            Column::Custom(n) if !value.is_empty() => {
                custom.insert(n.clone(), Value::String(value.to_string()));
            }
            _ => {}
        }
    }
    let wa_id = body.wa_id.take().unwrap_or_default();
    let wa_id = normalize_wa_id(&wa_id).map_err(|e| vec![e.to_string()])?;
    if !profile.is_empty() {
        body.profile = Some(profile);
    }
    if !custom.is_empty() {
        body.custom_fields = Some(custom);
    }
    let mut w = write_of(body, defs, today)?;
    w.source = Some(ContactSource::Import);
    Ok((UserKey::from(wa_id.as_str()), w))
}

async fn run_import(
    app: AppState,
    account: AccountId,
    id: i64,
    bytes: Bytes,
    columns: Vec<Column>,
    defs: Vec<FieldDef>,
    dry_run: bool,
) {
    let today = today(&app);
    let mut reader = ::csv::ReaderBuilder::new()
        .trim(::csv::Trim::All)
        .flexible(true)
        .from_reader(bytes.as_ref());
    let (mut total, mut valid, mut applied) = (0i64, 0i64, 0i64);
    let mut errors: Vec<Value> = Vec::new();
    let mut failed = None;
    let mut seen = std::collections::HashMap::new();
    for record in reader.records() {
        total += 1;
        if total as usize > IMPORT_MAX_ROWS {
            failed = Some(format!("more than {IMPORT_MAX_ROWS} rows: split the file"));
            break;
        }
        let (line, result) = match record {
            Ok(r) => (
                r.position().map_or(0, |p| p.line()),
                line_write(&columns, &r, &defs, today),
            ),
            Err(e) => (
                e.position().map_or(0, |p| p.line()),
                Err(vec![match e.kind() {
                    ::csv::ErrorKind::Utf8 { .. } => "not UTF-8 text".to_string(),
                    _ => e.to_string(),
                }]),
            ),
        };
        let result =
            result.and_then(
                |(user, w)| match seen.insert(user.as_str().to_string(), line) {
                    Some(first) => Err(vec![format!(
                        "wa_id {} is also on line {first}",
                        user.as_str()
                    )]),
                    None => Ok((user, w)),
                },
            );
        match result {
            Err(problems) => {
                if errors.len() < MAX_ERRORS {
                    errors.push(json!({ "line": line, "error": problems.join("; ") }));
                }
            }
            Ok((user, w)) => {
                valid += 1;
                if !dry_run {
                    match write_contact(&app, &account, &user, &w).await {
                        Ok(_) => applied += 1,
                        Err(e) => {
                            failed = Some(e.message);
                            break;
                        }
                    }
                }
            }
        }
    }
    let state = if failed.is_some() {
        ImportState::Failed
    } else {
        ImportState::Done
    };
    if let Some(reason) = failed {
        errors.push(json!({ "line": Value::Null, "error": reason }));
    }
    let store = &app.engine.store;
    if let Err(e) = store
        .finish_import_job(
            id,
            state,
            total,
            valid,
            applied,
            &Value::Array(errors),
            now(&app),
        )
        .await
    {
        tracing::warn!(job = id, error = %e, "A contact import's result could not be recorded.");
    }
    tracing::info!(account = %account, job = id, total, valid, applied, dry_run, "Contact import finished.");
}

#[derive(Debug, Deserialize)]
pub(super) struct JobQuery {
    account: Option<String>,
}

/// `GET /contacts/import/{id}`.
pub(super) async fn import_job(
    State(app): State<AppState>,
    Path(id): Path<String>,
    q: Result<Query<JobQuery>, QueryRejection>,
) -> Answer {
    let account = account(&app, query(q)?.account.as_deref())?;
    let id: i64 = id
        .parse()
        .map_err(|_| ApiError::not_found("no such import"))?;
    match app.engine.store.import_job(&account, id).await? {
        Some(job) => Ok(Json(json!(job)).into_response()),
        None => Err(ApiError::not_found("no such import")),
    }
}

fn csv_line(fields: &[String]) -> Bytes {
    let mut w = ::csv::Writer::from_writer(Vec::new());
    // Writing to a Vec fails only on a bad record, which these are not.
    let _ = w.write_record(fields);
    Bytes::from(w.into_inner().unwrap_or_default())
}

/// `GET /contacts/export`: every contact the filters select, as CSV, a page at a time.
pub(super) async fn export(
    State(app): State<AppState>,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> Answer {
    let q = query(q)?;
    let account = account(&app, q.account.as_deref())?;
    let filter = filter_of(&q)?;
    let defs = app.engine.store.field_defs(&account).await?;
    let mut header: Vec<String> = ["wa_id", "name", "tags"].map(String::from).to_vec();
    header.extend(ProfileField::ALL.iter().map(|f| f.name().to_string()));
    header.extend(defs.iter().map(|d| d.name.clone()));
    header.extend(READ_ONLY.iter().map(|s| s.to_string()));
    let first = csv_line(&header);
    struct Walk {
        app: AppState,
        account: AccountId,
        filter: ContactFilter,
        defs: Vec<FieldDef>,
        after: Option<ContactAfter>,
        done: bool,
    }
    let walk = Walk {
        app,
        account,
        filter,
        defs,
        after: None,
        done: false,
    };
    let rows = futures::stream::unfold(walk, move |mut w| async move {
        if w.done {
            return None;
        }
        let page = w
            .app
            .engine
            .store
            .contacts_page(&w.account, &w.filter, w.after.as_ref(), EXPORT_PAGE)
            .await;
        let page = match page {
            Ok(p) => p,
            Err(e) => {
                w.done = true;
                return Some((Err(std::io::Error::other(format!("store: {e}"))), w));
            }
        };
        if (page.len() as i64) < EXPORT_PAGE {
            w.done = true;
        }
        w.after = page.last().map(|c| ContactAfter {
            updated_at: c.updated_at.unwrap_or(0),
            name: c.sort_name.clone(),
            user_key: c.user_key.clone(),
        });
        let mut out = Vec::new();
        for c in &page {
            out.extend_from_slice(&csv_line(&export_row(c, &w.defs)));
        }
        Some((Ok(Bytes::from(out)), w))
    });
    let stream = futures::StreamExt::chain(
        futures::stream::once(async move { Ok::<_, std::io::Error>(first) }),
        rows,
    );
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"contacts.csv\"",
            ),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}

fn export_row(c: &ContactRecord, defs: &[FieldDef]) -> Vec<String> {
    let text = |v: Option<&Value>| match v {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    };
    let opt = |v: Option<i64>| v.map(|t| t.to_string()).unwrap_or_default();
    let mut row = vec![
        c.wa_id.clone(),
        c.profile_name.clone().unwrap_or_default(),
        c.tags.join(";"),
    ];
    row.extend(
        ProfileField::ALL
            .iter()
            .map(|f| text(c.profile.get(f.name()))),
    );
    row.extend(defs.iter().map(|d| text(c.custom_fields.get(&d.name))));
    row.extend([
        c.source.as_str().to_string(),
        opt(c.blocked_at),
        opt(c.opted_out_at),
        c.first_seen_at.to_string(),
        opt(c.last_message_at),
        opt(c.updated_at),
    ]);
    row
}
