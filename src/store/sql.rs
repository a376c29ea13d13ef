//! Small helpers to build dialect-neutral SQL: placeholders and multi-row VALUES lists.

use std::borrow::Cow;

use sqlx::any::AnyArguments;
use sqlx::query::Query;
use sqlx::Any;

use super::Dialect;

/// A bind value. Only the types both drivers map the same way.
#[derive(Debug, Clone)]
pub enum Val {
    I(i64),
    OptI(Option<i64>),
    S(String),
    OptS(Option<String>),
    Bytes(Option<Vec<u8>>),
}

impl From<i64> for Val {
    fn from(v: i64) -> Self {
        Val::I(v)
    }
}
impl From<Option<i64>> for Val {
    fn from(v: Option<i64>) -> Self {
        Val::OptI(v)
    }
}
impl From<String> for Val {
    fn from(v: String) -> Self {
        Val::S(v)
    }
}
impl From<&crate::domain::AccountId> for Val {
    fn from(id: &crate::domain::AccountId) -> Val {
        Val::S(id.as_str().to_string())
    }
}

impl From<&crate::domain::UserKey> for Val {
    fn from(id: &crate::domain::UserKey) -> Val {
        Val::S(id.as_str().to_string())
    }
}

impl From<&crate::domain::Wamid> for Val {
    fn from(id: &crate::domain::Wamid) -> Val {
        Val::S(id.as_str().to_string())
    }
}

impl From<&str> for Val {
    fn from(v: &str) -> Self {
        Val::S(v.to_string())
    }
}
impl From<Option<String>> for Val {
    fn from(v: Option<String>) -> Self {
        Val::OptS(v)
    }
}

pub(crate) fn bind_all<'q>(
    mut q: Query<'q, Any, AnyArguments<'q>>,
    vals: Vec<Val>,
) -> Query<'q, Any, AnyArguments<'q>> {
    for v in vals {
        q = match v {
            Val::I(i) => q.bind(i),
            Val::OptI(i) => q.bind(i),
            Val::S(s) => q.bind(storable(s)),
            Val::OptS(s) => q.bind(s.map(storable)),
            Val::Bytes(b) => q.bind(b),
        };
    }
    q
}

/// PostgreSQL's text type cannot hold NUL, and a value that has one fails its whole
/// transaction (a step that could never commit would stall its conversation for good). A
/// user can send one; it is kept as U+FFFD.
fn storable(s: String) -> String {
    if s.contains('\0') {
        s.replace('\0', "\u{FFFD}")
    } else {
        s
    }
}

/// Split `items` into runs of a few fixed sizes (128, 32, 8, 1), so that a multi-row
/// statement has one of a handful of shapes and its prepared form is reused from the cache
/// instead of being compiled again for every batch size.
pub(crate) fn std_chunks<T>(items: &[T]) -> impl Iterator<Item = &[T]> {
    const SIZES: [usize; 4] = [128, 32, 8, 1];
    let mut rest = items;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let size = SIZES
            .iter()
            .copied()
            .find(|s| *s <= rest.len())
            .unwrap_or(1);
        let (head, tail) = rest.split_at(size);
        rest = tail;
        Some(head)
    })
}

/// `($1,$2,$3),($4,$5,$6)` for `rows` rows of `cols` columns, numbering from `first`.
pub(crate) fn values_list(rows: usize, cols: usize, first: usize) -> String {
    let mut s = String::with_capacity(rows * cols * 5);
    let mut n = first;
    for r in 0..rows {
        if r > 0 {
            s.push(',');
        }
        s.push('(');
        for c in 0..cols {
            if c > 0 {
                s.push(',');
            }
            s.push('$');
            s.push_str(&n.to_string());
            n += 1;
        }
        s.push(')');
    }
    s
}

/// `(CAST($1 AS BIGINT),CAST($2 AS TEXT)),...` for `rows` rows with one column per type, a
/// table of values to update from (`FROM (VALUES ...) AS v`, its columns `v.column1`, … in
/// both stores): PostgreSQL has no table column to infer the parameters' types from.
pub(crate) fn typed_values_list(rows: usize, types: &[&str]) -> String {
    let mut s = String::with_capacity(rows * types.len() * 20);
    let mut n = 1;
    for r in 0..rows {
        if r > 0 {
            s.push(',');
        }
        s.push('(');
        for (c, ty) in types.iter().enumerate() {
            if c > 0 {
                s.push(',');
            }
            s.push_str(&format!("CAST(${n} AS {ty})"));
            n += 1;
        }
        s.push(')');
    }
    s
}

/// `$1,$2,...` for an IN list.
pub(crate) fn in_list(n: usize, first: usize) -> String {
    (first..first + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(",")
}

pub(crate) fn placeholders(dialect: Dialect, text: &str) -> Cow<'_, str> {
    match dialect {
        Dialect::Postgres => Cow::Borrowed(text),
        Dialect::Sqlite => {
            // SQLite looks up numbered parameters by scanning a list, so a statement with
            // thousands of `?NNN` costs O(n²) to bind. When every `$N` appears once, in order,
            // plain `?` binds the same values without the lookup.
            let bytes = text.as_bytes();
            let mut numbers = Vec::new();
            let mut i = 0;
            while i < bytes.len() {
                if bytes[i] == b'$' && bytes.get(i + 1).is_some_and(|b| b.is_ascii_digit()) {
                    let start = i + 1;
                    i = start;
                    while i < bytes.len() && bytes[i].is_ascii_digit() {
                        i += 1;
                    }
                    numbers.push(text[start..i].parse::<usize>().unwrap_or(0));
                } else {
                    i += 1;
                }
            }
            let sequential = numbers.iter().enumerate().all(|(k, n)| *n == k + 1);
            let mut out = String::with_capacity(text.len());
            let mut i = 0;
            while i < bytes.len() {
                if bytes[i] == b'$' && bytes.get(i + 1).is_some_and(|b| b.is_ascii_digit()) {
                    out.push('?');
                    i += 1;
                    let start = i;
                    while i < bytes.len() && bytes[i].is_ascii_digit() {
                        i += 1;
                    }
                    if !sequential {
                        out.push_str(&text[start..i]);
                    }
                } else {
                    let ch_len = text[i..].chars().next().map_or(1, char::len_utf8);
                    out.push_str(&text[i..i + ch_len]);
                    i += ch_len;
                }
            }
            Cow::Owned(out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_come_in_a_few_fixed_sizes() {
        let items: Vec<u32> = (0..173).collect();
        let sizes: Vec<usize> = std_chunks(&items).map(<[u32]>::len).collect();
        assert_eq!(sizes, vec![128, 32, 8, 1, 1, 1, 1, 1]);
        assert_eq!(sizes.iter().sum::<usize>(), 173);
        assert_eq!(std_chunks::<u32>(&[]).count(), 0);
    }

    #[test]
    fn values_lists_number_their_placeholders() {
        assert_eq!(values_list(2, 2, 1), "($1,$2),($3,$4)");
        assert_eq!(in_list(3, 2), "$2,$3,$4");
        assert_eq!(
            typed_values_list(2, &["BIGINT", "TEXT"]),
            "(CAST($1 AS BIGINT),CAST($2 AS TEXT)),(CAST($3 AS BIGINT),CAST($4 AS TEXT))"
        );
    }

    #[test]
    fn sqlite_placeholders_are_numbered_question_marks() {
        assert_eq!(
            placeholders(Dialect::Sqlite, "a = $1 AND b = $12 AND c = '$x'"),
            "a = ?1 AND b = ?12 AND c = '$x'"
        );
        assert_eq!(
            placeholders(Dialect::Sqlite, "VALUES ($1,$2),($3,$4) -- é"),
            "VALUES (?,?),(?,?) -- é"
        );
        assert_eq!(
            placeholders(Dialect::Sqlite, "a = $1 OR b = $1"),
            "a = ?1 OR b = ?1"
        );
        assert_eq!(placeholders(Dialect::Postgres, "a = $1"), "a = $1");
    }
}
