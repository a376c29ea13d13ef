//! A flow's nodes compiled and checked: what each reads, writes and leads to.

use super::*;

/// Variables a node reads (templates without a `default(...)`, expressions).
pub(super) fn node_reads(n: &Node) -> Vec<&str> {
    pub(super) fn json<'a>(t: &'a TemplatedJson, out: &mut Vec<&'a str>) {
        match t {
            TemplatedJson::Str(t) => out.extend(t.required_vars()),
            TemplatedJson::Other(_) => {}
            TemplatedJson::Arr(a) => a.iter().for_each(|x| json(x, out)),
            TemplatedJson::Obj(o) => o.iter().for_each(|(_, x)| json(x, out)),
        }
    }
    pub(super) fn tpl<'a>(t: Option<&'a Template>, out: &mut Vec<&'a str>) {
        if let Some(t) = t {
            out.extend(t.required_vars());
        }
    }
    let mut out = Vec::new();
    match &n.kind {
        NodeKind::Send(SendSpec::Text(t)) => tpl(Some(t), &mut out),
        NodeKind::Send(SendSpec::Message(t, _)) => json(t, &mut out),
        NodeKind::Send(SendSpec::Buttons {
            header,
            body,
            footer,
            ..
        })
        | NodeKind::Send(SendSpec::List {
            header,
            body,
            footer,
            ..
        }) => {
            tpl(header.as_ref(), &mut out);
            tpl(Some(body), &mut out);
            tpl(footer.as_ref(), &mut out);
        }
        NodeKind::Ask(a) => {
            tpl(a.prompt.as_ref(), &mut out);
            tpl(a.retry.as_ref(), &mut out);
        }
        NodeKind::Condition { cond, .. } => cond.vars(&mut out),
        NodeKind::Set(ops) => {
            for op in ops {
                match op {
                    SetOp::Var(_, e) | SetOp::Contact(_, e) | SetOp::Access(e) => e.vars(&mut out),
                    SetOp::TagAdd(_) | SetOp::TagRemove(_) => {}
                }
            }
        }
        NodeKind::Http(h) => {
            out.extend(h.url.required_vars());
            for (_, v) in &h.headers {
                tpl(Some(v), &mut out);
            }
            if let Some(b) = &h.body {
                json(b, &mut out);
            }
        }
        NodeKind::Handoff { message, .. } => tpl(message.as_ref(), &mut out),
        NodeKind::Catalog(c) => {
            tpl(Some(&c.prompt), &mut out);
            tpl(Some(&c.retry), &mut out);
        }
        NodeKind::Cart(CartSpec::Add { sku, qty }) => {
            tpl(Some(sku), &mut out);
            tpl(Some(qty), &mut out);
        }
        NodeKind::Cart(CartSpec::Remove { sku }) => tpl(Some(sku), &mut out),
        NodeKind::Checkout { name, address } => {
            tpl(name.as_ref(), &mut out);
            tpl(address.as_ref(), &mut out);
        }
        NodeKind::Voucher { code } => tpl(Some(code), &mut out),
        NodeKind::CustomOrder { description, image } => {
            tpl(Some(description), &mut out);
            tpl(image.as_ref(), &mut out);
        }
        _ => {}
    }
    out
}

/// Variables a node sets.
pub(super) fn node_writes(n: &Node) -> Vec<&str> {
    match &n.kind {
        NodeKind::Ask(a) => a.save.iter().map(String::as_str).collect(),
        NodeKind::Set(ops) => ops
            .iter()
            .filter_map(|op| match op {
                SetOp::Var(k, _) => Some(k.as_str()),
                _ => None,
            })
            .collect(),
        NodeKind::Split { save, .. } => vec![save.as_str()],
        NodeKind::Http(h) => h
            .save
            .iter()
            .map(|(k, _)| k.as_str())
            .chain(["http_status"])
            .collect(),
        NodeKind::Wait {
            on_reply: Some(_), ..
        } => vec!["reply"],
        NodeKind::Catalog(c) => std::iter::once(c.save.as_str())
            .chain(PRODUCT_VARS)
            .collect(),
        NodeKind::Cart(_) => CART_VARS.to_vec(),
        NodeKind::Checkout { .. } => ORDER_VARS
            .iter()
            .chain(&VOUCHER_VARS[..4])
            .copied()
            .collect(),
        NodeKind::Voucher { .. } => VOUCHER_VARS.to_vec(),
        NodeKind::OrderStatus { .. } => ORDERS_VARS.to_vec(),
        NodeKind::Payment(_) => PAYMENT_VARS.to_vec(),
        NodeKind::CustomOrder { .. } => CUSTOM_ORDER_VARS.to_vec(),
        _ => Vec::new(),
    }
}

pub(super) fn successors(n: &Node) -> Vec<String> {
    let mut v: Vec<String> = n.next.iter().cloned().collect();
    match &n.kind {
        NodeKind::Condition {
            then, otherwise, ..
        } => {
            v.push(then.clone());
            v.push(otherwise.clone());
        }
        NodeKind::JumpNode(t) => v.push(t.clone()),
        NodeKind::Split { variants, .. } => v.extend(variants.iter().map(|(_, _, n)| n.clone())),
        NodeKind::Ask(a) => {
            v.extend(a.on_fail.iter().cloned());
            v.extend(a.branches.values().cloned());
        }
        NodeKind::Http(h) => v.extend(h.on_error.iter().cloned()),
        NodeKind::Wait { on_reply, .. } => v.extend(on_reply.iter().cloned()),
        _ => {}
    }
    v.extend(n.results.values().cloned());
    v.extend(n.on_error.iter().cloned());
    v
}

pub(super) fn compile_node(cx: &mut Ctx, name: &str, rn: &RawNode, names: &BTreeSet<&str>) -> Node {
    let check_target = |cx: &mut Ctx, key: &str, target: &str| {
        if !names.contains(target) {
            cx.at(
                name,
                target,
                format!("`{key}` target `{target}` does not exist"),
            );
        }
    };
    let kinds = [
        rn.send.is_some(),
        rn.ask.is_some(),
        rn.condition.is_some(),
        rn.set.is_some(),
        rn.jump.is_some(),
        rn.wait.is_some(),
        rn.split.is_some(),
        rn.http.is_some(),
        rn.handoff.is_some(),
        rn.chatbot.is_some(),
        rn.catalog.is_some(),
        rn.cart.is_some(),
        rn.checkout.is_some(),
        rn.order_status.is_some(),
        rn.payment.is_some(),
        rn.voucher.is_some(),
        rn.custom_order.is_some(),
    ]
    .iter()
    .filter(|b| **b)
    .count();
    if kinds > 1 {
        cx.at(
            name,
            name,
            "a node may have only one of send/ask/condition/set/jump/wait/split/http/handoff/chatbot/catalog/cart/checkout/order_status/payment/voucher/custom_order",
        );
    }
    let shop = rn.catalog.is_some()
        || rn.cart.is_some()
        || rn.checkout.is_some()
        || rn.order_status.is_some()
        || rn.payment.is_some()
        || rn.voucher.is_some()
        || rn.custom_order.is_some();
    if rn.on_error.is_some() && rn.http.is_none() && !shop {
        cx.at(
            name,
            "on_error",
            "`on_error` is only allowed on http and shop (catalog, cart, checkout, order_status, payment, voucher, custom_order) nodes",
        );
    }
    if let (Some(e), true) = (&rn.on_error, shop) {
        check_target(cx, "on_error", e);
    }
    if let Some(n) = &rn.next {
        check_target(cx, "next", n);
    }
    let results: &[&str] = if rn.cart.is_some() {
        &["ok", "out_of_stock", "unknown"]
    } else if rn.checkout.is_some() {
        &["ok", "out_of_stock", "empty", "voucher_invalid"]
    } else if rn.payment.is_some() {
        &["paid", "expired", "failed"]
    } else if rn.voucher.is_some() {
        &["ok", "invalid"]
    } else if rn.custom_order.is_some() {
        &["ok", "empty"]
    } else {
        &[]
    };
    if rn.branches.is_some() && rn.ask.is_none() && results.is_empty() {
        cx.at(
            name,
            "branches",
            "`branches` is only allowed on ask, cart, checkout, payment, voucher and custom_order nodes",
        );
    }
    let mut shop_results = BTreeMap::new();
    if !results.is_empty() {
        for (k, t) in rn.branches.iter().flatten() {
            if results.contains(&k.as_str()) {
                check_target(cx, &format!("branches.{k}"), t);
                shop_results.insert(k.clone(), t.clone());
            } else {
                cx.at(
                    name,
                    k,
                    format!(
                        "`branches.{k}`: the results here are {}",
                        results.join(", ")
                    ),
                );
            }
        }
    }
    let end = match &rn.end {
        None | Some(serde_norway::Value::Bool(false)) => false,
        Some(serde_norway::Value::Bool(true)) | Some(serde_norway::Value::Mapping(_)) => true,
        Some(_) => {
            cx.at(name, "end", "`end` must be true or {}");
            false
        }
    };
    let kind = if let Some(s) = &rn.send {
        compile_send(cx, name, s)
    } else if let Some(a) = &rn.ask {
        for (k, t) in rn.branches.iter().flatten() {
            check_target(cx, &format!("branches.{k}"), t);
        }
        if let Some(f) = &a.on_fail {
            check_target(cx, "on_fail", f);
        }
        let pattern = match (a.kind, &a.pattern) {
            (AskType::Regex, Some(p)) => match Regex::new(p) {
                Ok(r) => Some(r),
                Err(e) => {
                    let first = e.to_string().lines().last().unwrap_or("").to_string();
                    cx.at(name, "pattern", format!("invalid regex `{p}`: {first}"));
                    None
                }
            },
            (AskType::Regex, None) => {
                cx.at(name, "ask", "ask type regex needs `pattern`");
                None
            }
            _ => None,
        };
        const MEDIA: [&str; 5] = ["image", "document", "audio", "video", "sticker"];
        for t in &a.media_types {
            if a.kind != AskType::Media {
                cx.at(
                    name,
                    "media_types",
                    "`media_types` is only for ask type media",
                );
            } else if !MEDIA.contains(&t.as_str()) {
                cx.at(
                    name,
                    t,
                    format!("media type `{t}` must be one of {}", MEDIA.join(", ")),
                );
            }
        }
        if a.kind == AskType::Options && a.options.is_empty() {
            cx.at(
                name,
                "ask",
                "ask type options needs a non-empty `options` list",
            );
        }
        let branches = rn
            .branches
            .clone()
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k.to_lowercase(), v))
            .collect();
        NodeKind::Ask(Box::new(AskSpec {
            kind: a.kind,
            prompt: a.prompt.as_ref().map(|p| cx.tpl(name, p)),
            options: a.options.clone(),
            min: cx.dec(name, "min", &a.min),
            max: cx.dec(name, "max", &a.max),
            pattern,
            save: a.save.clone(),
            retry: a.retry.as_ref().map(|p| cx.tpl(name, p)),
            max_retries: a.max_retries.unwrap_or(3),
            on_fail: a.on_fail.clone(),
            branches,
            media_types: a.media_types.clone(),
        }))
    } else if let Some(c) = &rn.condition {
        check_target(cx, "then", &c.then);
        check_target(cx, "else", &c.otherwise);
        let cond = match expr::parse(&c.cond) {
            Ok(e) => e,
            Err(e) => {
                cx.at(name, "if", format!("bad expression `{}`: {e}", c.cond));
                expr::Expr::Lit(Value::Bool(false))
            }
        };
        NodeKind::Condition {
            cond,
            then: c.then.clone(),
            otherwise: c.otherwise.clone(),
        }
    } else if let Some(set) = &rn.set {
        let mut out = Vec::new();
        for (var, v) in set {
            if var == "tag.add" || var == "tag.remove" {
                let tags: Vec<String> = match v {
                    serde_norway::Value::String(t) => vec![t.clone()],
                    serde_norway::Value::Sequence(list) => list
                        .iter()
                        .filter_map(|t| t.as_str().map(str::to_string))
                        .collect(),
                    _ => Vec::new(),
                };
                if tags.is_empty() || tags.iter().any(|t| t.trim().is_empty()) {
                    cx.at(
                        name,
                        var,
                        format!("`set.{var}` takes a tag name or a list of them"),
                    );
                }
                out.push(if var == "tag.add" {
                    SetOp::TagAdd(tags)
                } else {
                    SetOp::TagRemove(tags)
                });
                continue;
            }
            let src = match v {
                serde_norway::Value::String(s) => s.clone(),
                serde_norway::Value::Number(n) => n.to_string(),
                serde_norway::Value::Bool(b) => b.to_string(),
                _ => {
                    cx.at(
                        name,
                        var,
                        format!("`set.{var}` must be an expression string"),
                    );
                    continue;
                }
            };
            let e = match expr::parse(&src) {
                Ok(e) => e,
                Err(e) => {
                    cx.at(name, var, format!("bad expression `{src}`: {e}"));
                    continue;
                }
            };
            out.push(match var.strip_prefix("contact.") {
                Some("access") => SetOp::Access(e),
                Some(f @ ("name" | "wa_id" | "phone" | "user_id" | "tags")) => {
                    cx.at(
                        name,
                        var,
                        format!("`contact.{f}` comes from WhatsApp and cannot be set"),
                    );
                    continue;
                }
                Some(f) if !f.is_empty() && f.chars().all(|c| c.is_alphanumeric() || c == '_') => {
                    // A profile field set to a constant: checked now (a computed value is
                    // checked when it is set).
                    if let (Some(field), expr::Expr::Lit(v)) =
                        (crate::domain::profile::ProfileField::of(f), &e)
                    {
                        let far_future = chrono::NaiveDate::MAX;
                        if let Err(problem) = crate::domain::profile::normalize(
                            field,
                            &expr::display(v),
                            None,
                            far_future,
                        ) {
                            cx.at(name, var, problem.to_string());
                        }
                    }
                    SetOp::Contact(f.to_string(), e)
                }
                Some(_) => {
                    cx.at(name, var, format!("bad contact field `{var}`"));
                    continue;
                }
                None => SetOp::Var(var.clone(), e),
            });
        }
        NodeKind::Set(out)
    } else if let Some(j) = &rn.jump {
        match (&j.to, &j.flow) {
            (Some(t), None) => {
                check_target(cx, "jump.to", t);
                NodeKind::JumpNode(t.clone())
            }
            (None, Some(f)) => NodeKind::JumpFlow {
                flow: f.clone(),
                ret: j.ret,
            },
            _ => {
                cx.at(name, "jump", "jump needs exactly one of `to` or `flow`");
                NodeKind::Noop
            }
        }
    } else if let Some(sp) = &rn.split {
        let mut names = std::collections::HashSet::new();
        if sp.variants.len() < 2 {
            cx.at(name, "split", "a split needs at least two variants");
        }
        for v in &sp.variants {
            if v.weight == 0 {
                cx.at(name, &v.name, format!("variant `{}` has weight 0", v.name));
            }
            if !names.insert(v.name.clone()) {
                cx.at(
                    name,
                    &v.name,
                    format!("variant `{}` is listed twice", v.name),
                );
            }
            check_target(cx, "split.next", &v.next);
        }
        NodeKind::Split {
            variants: sp
                .variants
                .iter()
                .map(|v| (v.name.clone(), v.weight, v.next.clone()))
                .collect(),
            save: sp.save.clone().unwrap_or_else(|| "variant".into()),
        }
    } else if let Some(w) = &rn.wait {
        if let Some(r) = &w.on_reply {
            check_target(cx, "on_reply", r);
        }
        let ms = w.duration.as_ref().and_then(|d| {
            let ms = parse_duration(d);
            if ms.is_none() {
                cx.at(name, "for", format!("bad duration `{d}`"));
            }
            ms
        });
        let until_minute = w.until.as_ref().and_then(|u| {
            let m = u.split_once(':').and_then(|(h, m)| {
                let (h, m): (u32, u32) = (h.trim().parse().ok()?, m.trim().parse().ok()?);
                (h < 24 && m < 60).then_some(h * 60 + m)
            });
            if m.is_none() {
                cx.at(
                    name,
                    "until",
                    format!("`until: {u}` must be a time of day HH:MM"),
                );
            }
            m
        });
        if w.duration.is_some() == w.until.is_some() {
            cx.at(name, "wait", "wait needs exactly one of `for` or `until`");
        }
        NodeKind::Wait {
            ms,
            until_minute,
            on_reply: w.on_reply.clone(),
        }
    } else if let Some(h) = &rn.http {
        if let Some(e) = &rn.on_error {
            check_target(cx, "on_error", e);
        }
        let method = h
            .method
            .clone()
            .unwrap_or_else(|| "GET".into())
            .to_uppercase();
        if !["GET", "POST", "PUT", "PATCH", "DELETE"].contains(&method.as_str()) {
            cx.at(
                name,
                "method",
                format!("method `{method}` must be GET, POST, PUT, PATCH or DELETE"),
            );
        }
        let url = match UrlTemplate::parse(&h.url) {
            Ok(u) => u,
            Err(e) => {
                let needle = match &e {
                    UrlTemplateError::VariableInAuthority { var, .. } => var.as_str(),
                    _ => "url",
                };
                cx.at(name, needle, e.to_string());
                UrlTemplate::placeholder()
            }
        };
        let timeout_ms = match &h.timeout {
            None => 10_000,
            Some(t) => match parse_duration(t) {
                Some(ms) if ms > 0 && ms as u64 <= crate::outcall::MAX_TIMEOUT_MS => ms as u64,
                _ => {
                    cx.at(
                        name,
                        "timeout",
                        format!("timeout `{t}` must be a duration up to 30s"),
                    );
                    10_000
                }
            },
        };
        let body = h.body.as_ref().and_then(|b| match serde_json::to_value(b) {
            Ok(j) => Some(templated(cx, name, &j)),
            Err(e) => {
                cx.at(name, "body", format!("body is not plain data: {e}"));
                None
            }
        });
        NodeKind::Http(Box::new(HttpSpec {
            method,
            url,
            headers: h
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), cx.tpl(name, v)))
                .collect(),
            body,
            timeout_ms,
            save: h.save.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            on_error: rn.on_error.clone(),
        }))
    } else if let Some(c) = &rn.catalog {
        compile_catalog(cx, name, c)
    } else if let Some(c) = &rn.cart {
        compile_cart(cx, name, c)
    } else if let Some(c) = &rn.checkout {
        NodeKind::Checkout {
            name: c.name.as_ref().map(|t| cx.tpl(name, t)),
            address: c.address.as_ref().map(|t| cx.tpl(name, t)),
        }
    } else if let Some(v) = &rn.voucher {
        if v.code.trim().is_empty() {
            cx.at(
                name,
                "code",
                "`voucher` needs a `code` (a template: \"{{code}}\")",
            );
        }
        NodeKind::Voucher {
            code: cx.tpl(name, &v.code),
        }
    } else if let Some(c) = &rn.custom_order {
        if c.description.trim().is_empty() {
            cx.at(
                name,
                "description",
                "`custom_order` needs a `description` (a template: \"{{wish}}\")",
            );
        }
        NodeKind::CustomOrder {
            description: cx.tpl(name, &c.description),
            image: c.image.as_ref().map(|t| cx.tpl(name, t)),
        }
    } else if let Some(o) = &rn.order_status {
        NodeKind::OrderStatus {
            text: cx.tpl(
                name,
                o.text.as_deref().unwrap_or("Your orders:\n{{orders.text}}"),
            ),
            empty: cx.tpl(
                name,
                o.empty.as_deref().unwrap_or("You have no open orders."),
            ),
        }
    } else if let Some(p) = &rn.payment {
        compile_payment(cx, name, p)
    } else if let Some(c) = &rn.chatbot {
        NodeKind::Chatbot {
            bot: c.bot.clone(),
            until: c.until.clone(),
        }
    } else if let Some(h) = &rn.handoff {
        NodeKind::Handoff {
            reason: h
                .reason
                .clone()
                .unwrap_or_else(|| format!("flow node `{name}`")),
            message: h.message.as_ref().map(|m| cx.tpl(name, m)),
        }
    } else {
        NodeKind::Noop
    };
    let outside_window = rn
        .send
        .as_ref()
        .and_then(|s| s.outside_window.as_ref())
        .and_then(|v| window_policy(cx, name, v));
    Node {
        kind,
        next: rn.next.clone(),
        results: shop_results,
        on_error: if shop { rn.on_error.clone() } else { None },
        end,
        outside_window,
    }
}
