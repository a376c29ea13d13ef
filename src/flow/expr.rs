//! A tiny hand-written expression language for `set` and `condition.if`.

use std::collections::BTreeMap;
use std::str::FromStr;

use regex::Regex;
use rust_decimal::Decimal;

use super::model::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Contains,
    And,
    Or,
}

#[derive(Debug, Clone)]
pub enum Expr {
    Lit(Value),
    /// `vars.x` / `x`.
    Var(String),
    /// `contact.<field>`: name, wa_id, access, tags or a business field.
    Contact(String),
    Not(Box<Expr>),
    Neg(Box<Expr>),
    Bin(BinOp, Box<Expr>, Box<Expr>),
    Matches(Box<Expr>, Regex),
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Num(Decimal),
    Str(String),
    Ident(String),
    Op(&'static str),
    LParen,
    RParen,
}

fn lex(src: &str) -> Result<Vec<Tok>, String> {
    let chars: Vec<char> = src.chars().collect();
    let mut i = 0;
    let mut out = Vec::new();
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c.is_ascii_digit() {
            let st = i;
            while i < chars.len() && (chars[i].is_ascii_digit() || chars[i] == '.') {
                i += 1;
            }
            let s: String = chars[st..i].iter().collect();
            out.push(Tok::Num(
                Decimal::from_str(&s).map_err(|_| format!("bad number `{s}`"))?,
            ));
        } else if c == '\'' || c == '"' {
            let st = i + 1;
            i += 1;
            while i < chars.len() && chars[i] != c {
                i += 1;
            }
            if i >= chars.len() {
                return Err("unterminated string".into());
            }
            out.push(Tok::Str(chars[st..i].iter().collect()));
            i += 1;
        } else if c.is_alphabetic() || c == '_' {
            let st = i;
            while i < chars.len()
                && (chars[i].is_alphanumeric() || chars[i] == '_' || chars[i] == '.')
            {
                i += 1;
            }
            out.push(Tok::Ident(chars[st..i].iter().collect()));
        } else if c == '(' {
            out.push(Tok::LParen);
            i += 1;
        } else if c == ')' {
            out.push(Tok::RParen);
            i += 1;
        } else {
            let two: String = chars[i..(i + 2).min(chars.len())].iter().collect();
            let op = match two.as_str() {
                "==" => "==",
                "!=" => "!=",
                "<=" => "<=",
                ">=" => ">=",
                _ => match c {
                    '<' => "<",
                    '>' => ">",
                    '+' => "+",
                    '-' => "-",
                    '*' => "*",
                    '/' => "/",
                    _ => return Err(format!("unexpected character `{c}`")),
                },
            };
            i += op.len();
            out.push(Tok::Op(op));
        }
    }
    Ok(out)
}

struct P {
    toks: Vec<Tok>,
    pos: usize,
}

impl P {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }
    fn is_word(&self, w: &str) -> bool {
        matches!(self.peek(), Some(Tok::Ident(s)) if s == w)
    }
    fn is_op(&self, o: &str) -> bool {
        matches!(self.peek(), Some(Tok::Op(s)) if *s == o)
    }
    fn or(&mut self) -> Result<Expr, String> {
        let mut l = self.and()?;
        while self.is_word("or") {
            self.pos += 1;
            l = Expr::Bin(BinOp::Or, Box::new(l), Box::new(self.and()?));
        }
        Ok(l)
    }
    fn and(&mut self) -> Result<Expr, String> {
        let mut l = self.not()?;
        while self.is_word("and") {
            self.pos += 1;
            l = Expr::Bin(BinOp::And, Box::new(l), Box::new(self.not()?));
        }
        Ok(l)
    }
    fn not(&mut self) -> Result<Expr, String> {
        if self.is_word("not") {
            self.pos += 1;
            return Ok(Expr::Not(Box::new(self.not()?)));
        }
        self.cmp()
    }
    fn cmp(&mut self) -> Result<Expr, String> {
        let l = self.add()?;
        let op = match self.peek() {
            Some(Tok::Op("==")) => BinOp::Eq,
            Some(Tok::Op("!=")) => BinOp::Ne,
            Some(Tok::Op("<")) => BinOp::Lt,
            Some(Tok::Op("<=")) => BinOp::Le,
            Some(Tok::Op(">")) => BinOp::Gt,
            Some(Tok::Op(">=")) => BinOp::Ge,
            Some(Tok::Ident(w)) if w == "contains" => BinOp::Contains,
            Some(Tok::Ident(w)) if w == "matches" => {
                self.pos += 1;
                return match self.peek().cloned() {
                    Some(Tok::Str(p)) => {
                        self.pos += 1;
                        let re = Regex::new(&p).map_err(|e| format!("invalid regex: {e}"))?;
                        Ok(Expr::Matches(Box::new(l), re))
                    }
                    _ => Err("`matches` needs a quoted regex literal".into()),
                };
            }
            _ => return Ok(l),
        };
        self.pos += 1;
        let r = self.add()?;
        Ok(Expr::Bin(op, Box::new(l), Box::new(r)))
    }
    fn add(&mut self) -> Result<Expr, String> {
        let mut l = self.mul()?;
        loop {
            let op = if self.is_op("+") {
                BinOp::Add
            } else if self.is_op("-") {
                BinOp::Sub
            } else {
                return Ok(l);
            };
            self.pos += 1;
            l = Expr::Bin(op, Box::new(l), Box::new(self.mul()?));
        }
    }
    fn mul(&mut self) -> Result<Expr, String> {
        let mut l = self.unary()?;
        loop {
            let op = if self.is_op("*") {
                BinOp::Mul
            } else if self.is_op("/") {
                BinOp::Div
            } else {
                return Ok(l);
            };
            self.pos += 1;
            l = Expr::Bin(op, Box::new(l), Box::new(self.unary()?));
        }
    }
    fn unary(&mut self) -> Result<Expr, String> {
        if self.is_op("-") {
            self.pos += 1;
            return Ok(Expr::Neg(Box::new(self.unary()?)));
        }
        self.primary()
    }
    fn primary(&mut self) -> Result<Expr, String> {
        let t = self.peek().cloned().ok_or("unexpected end of expression")?;
        self.pos += 1;
        Ok(match t {
            Tok::Num(n) => Expr::Lit(Value::Num(n)),
            Tok::Str(s) => Expr::Lit(Value::Str(s)),
            Tok::LParen => {
                let e = self.or()?;
                if self.peek() != Some(&Tok::RParen) {
                    return Err("expected `)`".into());
                }
                self.pos += 1;
                e
            }
            Tok::Ident(w) => match w.as_str() {
                "true" => Expr::Lit(Value::Bool(true)),
                "false" => Expr::Lit(Value::Bool(false)),
                w if w.starts_with("contact.") && w.len() > "contact.".len() => {
                    Expr::Contact(w["contact.".len()..].to_string())
                }
                "and" | "or" | "not" | "contains" | "matches" => {
                    return Err(format!("unexpected keyword `{w}`"))
                }
                _ => {
                    let name = w.strip_prefix("vars.").unwrap_or(&w);
                    if !is_var_name(name) {
                        return Err(format!("unknown variable reference `{w}`"));
                    }
                    Expr::Var(name.to_string())
                }
            },
            other => return Err(format!("unexpected token {other:?}")),
        })
    }
}

/// A variable's name: letters, digits and `_`, in dot-separated parts (`qty`,
/// `cart.total`, as the shop nodes set them).
pub fn is_var_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .split('.')
            .all(|p| !p.is_empty() && p.chars().all(|c| c.is_alphanumeric() || c == '_'))
}

impl Expr {
    /// The variables it reads.
    pub fn vars<'e>(&'e self, out: &mut Vec<&'e str>) {
        match self {
            Expr::Var(v) => out.push(v),
            Expr::Lit(_) | Expr::Contact(_) => {}
            Expr::Not(x) | Expr::Neg(x) | Expr::Matches(x, _) => x.vars(out),
            Expr::Bin(_, a, b) => {
                a.vars(out);
                b.vars(out);
            }
        }
    }
}

/// Parse an expression; errors are human-readable.
pub fn parse(src: &str) -> Result<Expr, String> {
    let toks = lex(src)?;
    if toks.is_empty() {
        return Err("empty expression".into());
    }
    let mut p = P { toks, pos: 0 };
    let e = p.or()?;
    if p.pos != p.toks.len() {
        return Err(format!("unexpected trailing input in `{src}`"));
    }
    Ok(e)
}

/// Display form of a value (Decimals normalised: `45000`, not `45000.00`).
pub fn display(v: &Value) -> String {
    match v {
        Value::Str(s) => s.clone(),
        Value::Num(n) => n.normalize().to_string(),
        Value::Bool(b) => b.to_string(),
    }
}

pub fn as_decimal(v: &Value) -> Option<Decimal> {
    match v {
        Value::Num(n) => Some(*n),
        Value::Str(s) => Decimal::from_str(s.trim()).ok(),
        Value::Bool(_) => None,
    }
}

pub fn truthy(v: &Value) -> bool {
    match v {
        Value::Bool(b) => *b,
        Value::Num(n) => !n.is_zero(),
        Value::Str(s) => !s.is_empty(),
    }
}

pub struct Env<'a> {
    pub vars: &'a BTreeMap<String, Value>,
    pub contact: &'a crate::conversation::ContactInfo,
}

impl Env<'_> {
    pub fn lookup(&self, name: &str) -> Value {
        self.vars
            .get(name)
            .cloned()
            .unwrap_or(Value::Str(String::new()))
    }
}

pub fn eval(e: &Expr, env: &Env<'_>) -> Result<Value, String> {
    Ok(match e {
        Expr::Lit(v) => v.clone(),
        Expr::Var(n) => env.lookup(n),
        Expr::Contact(field) => Value::Str(env.contact.get(field)),
        Expr::Not(x) => Value::Bool(!truthy(&eval(x, env)?)),
        Expr::Neg(x) => {
            let v = eval(x, env)?;
            Value::Num(-as_decimal(&v).ok_or_else(|| format!("cannot negate {v:?}"))?)
        }
        Expr::Matches(x, re) => Value::Bool(re.is_match(&display(&eval(x, env)?))),
        Expr::Bin(BinOp::And, a, b) => {
            Value::Bool(truthy(&eval(a, env)?) && truthy(&eval(b, env)?))
        }
        Expr::Bin(BinOp::Or, a, b) => Value::Bool(truthy(&eval(a, env)?) || truthy(&eval(b, env)?)),
        Expr::Bin(op, a, b) => {
            let (a, b) = (eval(a, env)?, eval(b, env)?);
            let nums = as_decimal(&a).zip(as_decimal(&b));
            match op {
                BinOp::Add | BinOp::Sub | BinOp::Mul | BinOp::Div => {
                    let Some((x, y)) = nums else {
                        if *op == BinOp::Add {
                            return Ok(Value::Str(display(&a) + &display(&b)));
                        }
                        return Err(format!("arithmetic on non-numbers {a:?}, {b:?}"));
                    };
                    let r = match op {
                        BinOp::Add => x.checked_add(y),
                        BinOp::Sub => x.checked_sub(y),
                        BinOp::Mul => x.checked_mul(y),
                        _ => x.checked_div(y),
                    };
                    Value::Num(
                        r.ok_or("arithmetic overflow or division by zero")?
                            .normalize(),
                    )
                }
                BinOp::Eq | BinOp::Ne => {
                    let eq = match nums {
                        Some((x, y)) => x == y,
                        None => display(&a).to_lowercase() == display(&b).to_lowercase(),
                    };
                    Value::Bool(eq == (*op == BinOp::Eq))
                }
                BinOp::Contains => Value::Bool(
                    display(&a)
                        .to_lowercase()
                        .contains(&display(&b).to_lowercase()),
                ),
                _ => {
                    let ord = match nums {
                        Some((x, y)) => x.cmp(&y),
                        None => display(&a).cmp(&display(&b)),
                    };
                    Value::Bool(match op {
                        BinOp::Lt => ord.is_lt(),
                        BinOp::Le => ord.is_le(),
                        BinOp::Gt => ord.is_gt(),
                        _ => ord.is_ge(),
                    })
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(src: &str, vars: &[(&str, Value)]) -> Result<Value, String> {
        let vars: BTreeMap<String, Value> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        let contact = crate::conversation::ContactInfo {
            profile_name: Some("Budi".into()),
            ..Default::default()
        };
        let env = Env {
            vars: &vars,
            contact: &contact,
        };
        eval(&parse(src)?, &env)
    }

    fn num(s: &str) -> Value {
        Value::Num(Decimal::from_str(s).unwrap())
    }

    #[test]
    fn arithmetic_and_precedence() {
        assert_eq!(ev("1 + 2 * 3", &[]).unwrap(), num("7"));
        assert_eq!(ev("(1 + 2) * 3", &[]).unwrap(), num("9"));
        assert_eq!(ev("0.1 + 0.2", &[]).unwrap(), num("0.3"));
        assert_eq!(ev("-2 * vars.x", &[("x", num("4"))]).unwrap(), num("-8"));
        assert_eq!(ev("10 / 4", &[]).unwrap(), num("2.5"));
        assert!(ev("1 / 0", &[]).is_err());
        assert_eq!(ev("'a' + 'b'", &[]).unwrap(), Value::Str("ab".into()));
    }

    #[test]
    fn comparisons_and_logic() {
        let t = Value::Bool(true);
        assert_eq!(ev("2 >= 2 and 1 < 2 and 3 != 4", &[]).unwrap(), t);
        assert_eq!(ev("not false or false", &[]).unwrap(), t);
        assert_eq!(ev("contact.name == \"budi\"", &[]).unwrap(), t);
        assert_eq!(ev("'Hello World' contains 'world'", &[]).unwrap(), t);
        assert_eq!(
            ev("x matches '^[0-9]+$'", &[("x", Value::Str("42".into()))]).unwrap(),
            t
        );
        assert_eq!(ev("x == 3", &[("x", Value::Str("3.0".into()))]).unwrap(), t);
        assert_eq!(ev("unknown == ''", &[]).unwrap(), t);
    }

    #[test]
    fn parse_errors() {
        for bad in [
            "",
            "1 +",
            "(1",
            "a ==",
            "x matches y",
            "'open",
            "1 # 2",
            "a..b",
            "1 2",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
