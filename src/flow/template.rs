//! `{{ ... }}` text templates, parsed at load time and rendered in a single pass.

use super::expr::{as_decimal, display, Env};

#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    Upper,
    Lower,
    Default(String),
    Number,
}

#[derive(Debug, Clone, PartialEq)]
enum Seg {
    Lit(String),
    Var {
        contact: bool,
        name: String,
        filters: Vec<Filter>,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    segs: Vec<Seg>,
}

fn parse_filter(f: &str) -> Result<Filter, String> {
    let f = f.trim();
    match f {
        "upper" => return Ok(Filter::Upper),
        "lower" => return Ok(Filter::Lower),
        "number" => return Ok(Filter::Number),
        _ => {}
    }
    if let Some(arg) = f.strip_prefix("default(").and_then(|r| r.strip_suffix(')')) {
        let arg = arg.trim();
        for q in ['\'', '"'] {
            if let Some(s) = arg.strip_prefix(q).and_then(|r| r.strip_suffix(q)) {
                return Ok(Filter::Default(s.to_string()));
            }
        }
        return Err(format!("default() needs a quoted string, got `{arg}`"));
    }
    Err(format!("unknown template filter `{f}`"))
}

impl Template {
    pub fn parse(src: &str) -> Result<Template, String> {
        let mut segs = Vec::new();
        let mut rest = src;
        while let Some(i) = rest.find("{{") {
            if i > 0 {
                segs.push(Seg::Lit(rest[..i].to_string()));
            }
            let after = &rest[i + 2..];
            let j = after
                .find("}}")
                .ok_or_else(|| "unclosed `{{` in template".to_string())?;
            let inner = &after[..j];
            let mut parts = inner.split('|');
            let var = parts.next().unwrap_or("").trim();
            let (contact, name) = if var == "contact.name" {
                (true, String::new())
            } else {
                let n = var.strip_prefix("vars.").unwrap_or(var);
                if n.is_empty() || !n.chars().all(|c| c.is_alphanumeric() || c == '_') {
                    return Err(format!("bad template variable `{var}`"));
                }
                (false, n.to_string())
            };
            let filters = parts.map(parse_filter).collect::<Result<Vec<_>, _>>()?;
            segs.push(Seg::Var {
                contact,
                name,
                filters,
            });
            rest = &after[j + 2..];
        }
        if !rest.is_empty() {
            segs.push(Seg::Lit(rest.to_string()));
        }
        Ok(Template { segs })
    }

    /// Source-free literal template (for text that must not be templated).
    pub fn literal(s: &str) -> Template {
        Template {
            segs: vec![Seg::Lit(s.to_string())],
        }
    }

    /// Render once; substituted values are never re-interpreted.
    pub fn render(&self, env: &Env<'_>) -> String {
        let mut out = String::new();
        for s in &self.segs {
            match s {
                Seg::Lit(l) => out.push_str(l),
                Seg::Var {
                    contact,
                    name,
                    filters,
                } => {
                    let v = if *contact {
                        super::model::Value::Str(env.contact_name.unwrap_or("").to_string())
                    } else {
                        env.lookup(name)
                    };
                    let mut text = display(&v);
                    for f in filters {
                        text = match f {
                            Filter::Upper => text.to_uppercase(),
                            Filter::Lower => text.to_lowercase(),
                            Filter::Default(d) if text.is_empty() => d.clone(),
                            Filter::Default(_) => text,
                            Filter::Number => {
                                match as_decimal(&super::model::Value::Str(text.clone())) {
                                    Some(d) => d.normalize().to_string(),
                                    None => text,
                                }
                            }
                        };
                    }
                    out.push_str(&text);
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::model::Value;
    use std::collections::BTreeMap;

    #[test]
    fn renders_filters_and_never_rerenders() {
        let mut vars = BTreeMap::new();
        vars.insert("x".into(), Value::Str("{{secret}}".into()));
        vars.insert("secret".into(), Value::Str("hunter2".into()));
        vars.insert("n".into(), Value::Str("45000.00".into()));
        let env = Env {
            vars: &vars,
            contact_name: Some("Ana"),
        };
        let t = Template::parse(
            "{{x}}|{{vars.x | upper}}|{{contact.name | lower}}|{{nope}}|{{nope | default('d')}}|{{n | number}}",
        )
        .unwrap();
        assert_eq!(t.render(&env), "{{secret}}|{{SECRET}}|ana||d|45000");
        assert!(Template::parse("{{x").is_err());
        assert!(Template::parse("{{x | shout}}").is_err());
        assert!(Template::parse("{{a b}}").is_err());
        assert!(Template::parse("{{x | default(d)}}").is_err());
    }
}
