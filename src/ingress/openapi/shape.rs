//! A compact notation for the JSON the handlers build with `json!(…)`, read into utoipa's
//! schema objects. Most answers of the admin API are assembled by hand, not serialized from
//! one Rust type; writing each as a builder chain would be five times longer and no more
//! exact. The notation:
//!
//! - `str`, `int`, `num`, `bool`, `any` (any JSON value), `obj` (any object);
//! - `str(a|b|c)`: one of these strings; `int(1..200)`: an integer in this range;
//! - `[T]`: an array of T; `map(T)`: an object whose every member is a T;
//! - `{name: T, other?: T}`: an object with these members (`?` after a name: it may be
//!   absent); members not named are allowed;
//! - `#Name`: the component schema `Name`;
//! - `T|U`: a T or a U;
//! - `T?` after a type: it may also be `null`.

use utoipa::openapi::schema::{
    AdditionalProperties, ArrayBuilder, ObjectBuilder, OneOfBuilder, Ref, Schema, SchemaType, Type,
};
use utoipa::openapi::RefOr;

/// The schema `text` writes; panics on a malformed text (the tests build the whole document).
pub fn shape(text: &str) -> RefOr<Schema> {
    let mut p = Parser {
        s: text.as_bytes(),
        i: 0,
    };
    let out = p.ty();
    p.ws();
    assert!(
        p.i == p.s.len(),
        "shape `{text}`: unexpected text at {}",
        p.i
    );
    out
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn ws(&mut self) {
        while self.i < self.s.len() && self.s[self.i].is_ascii_whitespace() {
            self.i += 1;
        }
    }

    fn eat(&mut self, c: u8) -> bool {
        self.ws();
        if self.s.get(self.i) == Some(&c) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, c: u8) {
        assert!(
            self.eat(c),
            "shape `{}`: `{}` expected at {}",
            String::from_utf8_lossy(self.s),
            c as char,
            self.i
        );
    }

    fn word(&mut self) -> String {
        self.ws();
        let start = self.i;
        while self.i < self.s.len()
            && (self.s[self.i].is_ascii_alphanumeric() || b"_-.$".contains(&self.s[self.i]))
        {
            self.i += 1;
        }
        String::from_utf8_lossy(&self.s[start..self.i]).into_owned()
    }

    fn ty(&mut self) -> RefOr<Schema> {
        let mut base = self.base();
        while self.eat(b'|') {
            base = union(base, self.base());
        }
        if self.eat(b'?') {
            nullable(base)
        } else {
            base
        }
    }

    fn base(&mut self) -> RefOr<Schema> {
        if self.eat(b'[') {
            let item = self.ty();
            self.expect(b']');
            return RefOr::T(Schema::Array(ArrayBuilder::new().items(item).build()));
        }
        if self.eat(b'{') {
            let mut o = ObjectBuilder::new().schema_type(Type::Object);
            if !self.eat(b'}') {
                loop {
                    let name = self.word();
                    let optional = self.eat(b'?');
                    self.expect(b':');
                    let t = self.ty();
                    o = o.property(&name, t);
                    if !optional {
                        o = o.required(&name);
                    }
                    if self.eat(b'}') {
                        break;
                    }
                    self.expect(b',');
                }
            }
            return RefOr::T(Schema::Object(o.build()));
        }
        if self.eat(b'#') {
            return RefOr::Ref(Ref::from_schema_name(self.word()));
        }
        let w = self.word();
        let t = match w.as_str() {
            "str" => Type::String,
            "int" => Type::Integer,
            "num" => Type::Number,
            "bool" => Type::Boolean,
            "obj" => Type::Object,
            "any" => {
                return RefOr::T(Schema::Object(
                    ObjectBuilder::new()
                        .schema_type(SchemaType::AnyValue)
                        .build(),
                ))
            }
            "map" => {
                self.expect(b'(');
                let t = self.ty();
                self.expect(b')');
                let o = ObjectBuilder::new()
                    .schema_type(Type::Object)
                    .additional_properties(Some(AdditionalProperties::RefOr(t)));
                return RefOr::T(Schema::Object(o.build()));
            }
            other => panic!(
                "shape `{}`: unknown type `{other}`",
                String::from_utf8_lossy(self.s)
            ),
        };
        let mut o = ObjectBuilder::new().schema_type(t.clone());
        if t == Type::Integer && self.eat(b'(') {
            let range = self.word();
            let (low, high) = range.split_once("..").expect("int(LOW..HIGH)");
            o = o
                .minimum(low.parse::<i64>().ok())
                .maximum(high.parse::<i64>().ok());
            self.expect(b')');
        }
        if t == Type::String && self.eat(b'(') {
            let mut values = Vec::new();
            loop {
                values.push(self.word());
                if self.eat(b')') {
                    break;
                }
                self.expect(b'|');
            }
            o = o.enum_values(Some(values));
        }
        RefOr::T(Schema::Object(o.build()))
    }
}

/// A value of `a` or of `b`: one `type` list when both are plain types, else `oneOf`.
fn union(a: RefOr<Schema>, b: RefOr<Schema>) -> RefOr<Schema> {
    let plain = |s: &RefOr<Schema>| match s {
        RefOr::T(Schema::Object(o)) if o.enum_values.is_none() && o.properties.is_empty() => {
            match &o.schema_type {
                SchemaType::Type(t) => Some(vec![t.clone()]),
                SchemaType::Array(ts) => Some(ts.clone()),
                SchemaType::AnyValue => None,
            }
        }
        _ => None,
    };
    match (plain(&a), plain(&b)) {
        (Some(mut x), Some(y)) => {
            x.extend(y);
            RefOr::T(Schema::Object(
                ObjectBuilder::new()
                    .schema_type(SchemaType::Array(x))
                    .build(),
            ))
        }
        _ => RefOr::T(Schema::OneOf(OneOfBuilder::new().item(a).item(b).build())),
    }
}

/// `s`, or null.
pub fn nullable(s: RefOr<Schema>) -> RefOr<Schema> {
    match s {
        RefOr::T(Schema::Object(mut o)) => {
            match &o.schema_type {
                SchemaType::AnyValue => {}
                SchemaType::Type(t) => {
                    o.schema_type = [t.clone(), Type::Null].into_iter().collect()
                }
                SchemaType::Array(ts) => {
                    let mut ts = ts.clone();
                    ts.push(Type::Null);
                    o.schema_type = SchemaType::Array(ts);
                }
            }
            if let Some(values) = &mut o.enum_values {
                values.push(serde_json::Value::Null);
            }
            RefOr::T(Schema::Object(o))
        }
        RefOr::T(Schema::Array(mut a)) => {
            a.schema_type = [Type::Array, Type::Null].into_iter().collect();
            RefOr::T(Schema::Array(a))
        }
        other => RefOr::T(Schema::OneOf(
            OneOfBuilder::new()
                .item(other)
                .item(ObjectBuilder::new().schema_type(Type::Null))
                .build(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_notation_reads_as_json_schema() {
        let s = serde_json::to_value(shape(
            "{id: int, name?: str?, tags: [str], kind: str(a|b), m: map(int), r: #Problem?, x: any, \
             by: int|str?, n: int(1..200)}",
        ))
        .unwrap();
        assert_eq!(s["type"], "object");
        assert_eq!(s["properties"]["id"]["type"], "integer");
        assert_eq!(
            s["properties"]["name"]["type"],
            serde_json::json!(["string", "null"])
        );
        assert_eq!(s["properties"]["tags"]["items"]["type"], "string");
        assert_eq!(
            s["properties"]["kind"]["enum"],
            serde_json::json!(["a", "b"])
        );
        assert_eq!(
            s["properties"]["m"]["additionalProperties"]["type"],
            "integer"
        );
        assert_eq!(
            s["properties"]["r"]["oneOf"][0]["$ref"],
            "#/components/schemas/Problem"
        );
        assert!(s["properties"]["x"].get("type").is_none());
        let required: Vec<&str> = s["required"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert_eq!(
            s["properties"]["by"]["type"],
            serde_json::json!(["integer", "string", "null"])
        );
        assert_eq!(s["properties"]["n"]["maximum"], 200);
        assert_eq!(required, ["id", "tags", "kind", "m", "r", "x", "by", "n"]);
    }
}
