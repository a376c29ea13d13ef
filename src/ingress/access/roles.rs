//! Every admin route's role, in one table: the role a caller needs, and how a key scoped to
//! one account is held to it. The guard ([`super::authorize`]) looks each request's route
//! template up here; a route found nowhere is refused to everyone (even `admin.token`), so a
//! route added without a line here fails its first test. A module's routes are declared by
//! one prefix line (`/webhooks/*`); a route's own line (exact template) wins over a prefix,
//! and a longer prefix over a shorter one.

use crate::domain::Role;

/// How a key scoped to one account is held to a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The route names its account: a `{phone_number_id}` (or `{account}`) path segment, else
    /// the `account` query parameter. A scoped key must name its own (left out, it is filled
    /// in with the key's account).
    Account,
    /// The account is this field of the JSON body (`phone_number_id`); a scoped key's body
    /// must name its own.
    Body(&'static str),
    /// Every key may call it; the handler shows a scoped key only what is its account's.
    Filtered,
    /// Not about one account (configuration, payments by id, campaigns by id): refused to
    /// scoped keys.
    Global,
}

/// One line of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteRole {
    /// `GET`, `POST`, `PUT`, `PATCH`, `DELETE`; `READ` (GET, HEAD), `WRITE` (the others) or
    /// `*`.
    pub method: &'static str,
    /// A route template under `/admin/v1` (`/keys/{id}`), or a prefix ending in `/*` that
    /// covers the path itself and everything below it.
    pub path: &'static str,
    pub role: Role,
    pub scope: Scope,
}

const fn r(method: &'static str, path: &'static str, role: Role, scope: Scope) -> RouteRole {
    RouteRole {
        method,
        path,
        role,
        scope,
    }
}

use Role::{Admin, Agent, Manager, Owner};
use Scope::{Account, Body, Filtered, Global};

/// The table (README "Roles" shows it).
pub const ROUTE_ROLES: &[RouteRole] = &[
    // Accounts.
    r("GET", "/accounts", Agent, Filtered),
    r("GET", "/accounts/{phone_number_id}/usage", Agent, Account),
    r("GET", "/accounts/{phone_number_id}/health", Agent, Account),
    r(
        "POST",
        "/accounts/{phone_number_id}/resume",
        Manager,
        Account,
    ),
    // Conversations: agents read and answer.
    r(
        "GET",
        "/conversations/{phone_number_id}/{user}",
        Agent,
        Account,
    ),
    r(
        "POST",
        "/conversations/{phone_number_id}/{user}/handoff",
        Agent,
        Account,
    ),
    r(
        "POST",
        "/conversations/{phone_number_id}/{user}/reply",
        Agent,
        Account,
    ),
    r(
        "POST",
        "/conversations/{phone_number_id}/{user}/release",
        Agent,
        Account,
    ),
    // A message to anyone (a template outside any conversation): a manager's, like campaigns.
    r("POST", "/messages", Manager, Body("phone_number_id")),
    // Campaigns and flows.
    r("POST", "/campaigns", Manager, Body("phone_number_id")),
    r("GET", "/campaigns/{id}", Manager, Global),
    r("GET", "/campaigns/{id}/recipients", Manager, Global),
    r("POST", "/campaigns/{id}/{action}", Manager, Global),
    r("GET", "/flows", Manager, Global),
    r("GET", "/bots", Manager, Global),
    r("POST", "/flows/reload", Manager, Global),
    // Commerce (the `account` query parameter): managers run the shop.
    r("*", "/products/*", Manager, Account),
    r("*", "/materials/*", Manager, Account),
    r("*", "/categories/*", Manager, Account),
    r("*", "/orders/*", Manager, Account),
    r("*", "/custom-orders/*", Manager, Account),
    r("*", "/vouchers/*", Manager, Account),
    r("*", "/subscriptions/*", Manager, Account),
    // Payments: money moves only by an admin.
    r("GET", "/payments/{id}", Manager, Global),
    r("POST", "/payments/{id}/confirm", Admin, Global),
    r("POST", "/payments/{id}/refund", Admin, Global),
    r("POST", "/payments/reconcile", Admin, Global),
    // Dead letters: managers read them; replaying or discarding one is an admin's.
    r("READ", "/dead-letters/*", Manager, Global),
    r("WRITE", "/dead-letters/*", Admin, Global),
    // Keys and the audit log.
    r("*", "/keys/*", Admin, Filtered),
    r("GET", "/audit", Admin, Filtered),
    // The whole configuration.
    r("POST", "/reload", Owner, Global),
    // The OpenAPI document: any valid key reads it.
    r("GET", "/openapi.json", Agent, Filtered),
    // What the store holds (every account's tables together).
    r("GET", "/storage", Admin, Global),
    // Modules of issue #21: one line each.
    r("*", "/webhooks/*", Admin, Global),
    r("READ", "/contacts/*", Agent, Account),
    r("WRITE", "/contacts/*", Agent, Account),
    r("DELETE", "/contacts/*", Manager, Account),
    r("*", "/contacts/import/*", Manager, Account),
    r("*", "/contacts/export/*", Manager, Account),
    // Custom field definitions: agents read them, managers define them.
    r("READ", "/contact-fields/*", Agent, Account),
    r("WRITE", "/contact-fields/*", Manager, Account),
    r("*", "/conversations/*", Agent, Account),
    r("READ", "/messages/*", Agent, Account),
    r("GET", "/analytics", Manager, Account),
];

fn method_matches(declared: &str, method: &str) -> bool {
    match declared {
        "*" => true,
        "READ" => matches!(method, "GET" | "HEAD"),
        "WRITE" => matches!(method, "POST" | "PUT" | "PATCH" | "DELETE"),
        d => d == method || (d == "GET" && method == "HEAD"),
    }
}

/// The line for `method` on the route `template` (relative to `/admin/v1`): its own line,
/// else the longest prefix that covers it (a method's own line before `READ`/`WRITE`/`*`).
pub fn route_role(method: &str, template: &str) -> Option<&'static RouteRole> {
    let specificity = |l: &RouteRole| match l.method {
        "*" => 0,
        "READ" | "WRITE" => 1,
        _ => 2,
    };
    let exact = ROUTE_ROLES
        .iter()
        .filter(|l| !l.path.ends_with("/*") && l.path == template)
        .filter(|l| method_matches(l.method, method))
        .max_by_key(|l| specificity(l));
    if exact.is_some() {
        return exact;
    }
    ROUTE_ROLES
        .iter()
        .filter_map(|l| Some((l, l.path.strip_suffix("/*")?)))
        .filter(|(_, prefix)| {
            template == *prefix
                || template
                    .strip_prefix(prefix)
                    .is_some_and(|rest| rest.starts_with('/'))
        })
        .filter(|(l, _)| method_matches(l.method, method))
        .max_by_key(|(l, prefix)| (prefix.len(), specificity(l)))
        .map(|(l, _)| l)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_route_takes_its_own_line_then_the_longest_prefix() {
        assert_eq!(route_role("GET", "/accounts").unwrap().role, Agent);
        assert_eq!(
            route_role("POST", "/accounts/{phone_number_id}/resume")
                .unwrap()
                .role,
            Manager
        );
        assert!(route_role("DELETE", "/accounts").is_none());
        assert_eq!(route_role("GET", "/keys").unwrap().role, Admin);
        assert_eq!(route_role("DELETE", "/keys/{id}").unwrap().role, Admin);
        assert_eq!(route_role("GET", "/contacts/{wa_id}").unwrap().role, Agent);
        assert_eq!(
            route_role("DELETE", "/contacts/{wa_id}").unwrap().role,
            Manager
        );
        assert_eq!(
            route_role("POST", "/contacts/import").unwrap().role,
            Manager
        );
        assert_eq!(
            route_role("GET", "/conversations/{phone_number_id}/{user}")
                .unwrap()
                .scope,
            Account
        );
        assert!(route_role("GET", "/keysmith").is_none());
        assert!(route_role("GET", "/nothing").is_none());
    }

    #[test]
    fn every_line_names_a_known_method_and_a_template() {
        for l in ROUTE_ROLES {
            assert!(
                ["GET", "POST", "PUT", "PATCH", "DELETE", "READ", "WRITE", "*"].contains(&l.method),
                "{l:?}"
            );
            assert!(l.path.starts_with('/') && !l.path.ends_with('/'), "{l:?}");
        }
    }
}
