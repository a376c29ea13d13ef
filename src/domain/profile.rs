//! A customer's profile fields (`contact.email`, `contact.full_name`, `contact.address`,
//! `contact.birth_date`, `contact.identity_type`, `contact.identity_number`,
//! `contact.gender`): typed, each value checked and written one way before it is kept
//! (and mirrored into the `contacts` row's columns of the same names). Pure.

use chrono::{Datelike, NaiveDate};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ProfileField {
    Email,
    FullName,
    Address,
    BirthDate,
    IdentityType,
    IdentityNumber,
    Gender,
}

impl ProfileField {
    pub const ALL: [ProfileField; 7] = [
        ProfileField::Email,
        ProfileField::FullName,
        ProfileField::Address,
        ProfileField::BirthDate,
        ProfileField::IdentityType,
        ProfileField::IdentityNumber,
        ProfileField::Gender,
    ];

    /// The field a `contact.<name>` names, if it is a profile field.
    pub fn of(name: &str) -> Option<ProfileField> {
        Self::ALL.into_iter().find(|f| f.name() == name)
    }

    /// Its name in flows, and its column in `contacts`.
    pub const fn name(self) -> &'static str {
        match self {
            ProfileField::Email => "email",
            ProfileField::FullName => "full_name",
            ProfileField::Address => "address",
            ProfileField::BirthDate => "birth_date",
            ProfileField::IdentityType => "identity_type",
            ProfileField::IdentityNumber => "identity_number",
            ProfileField::Gender => "gender",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("contact.{field}: {problem}")]
pub struct ProfileError {
    pub field: &'static str,
    pub problem: String,
}

/// `value` for `field` as it is kept, or why it cannot be: an email (lower-cased), a name
/// (≤ 100 characters), an address (≤ 500), a birth date (YYYY-MM-DD, DD/MM/YYYY or
/// DD-MM-YYYY; kept as YYYY-MM-DD, after 1900 and not after `today`), an identity type
/// (ktp | kitas | sim), an identity number (a KTP's NIK is 16 digits, a SIM 12 to 14
/// digits, a KITAS 6 to 20 letters and digits; checked against `identity_type` when it is
/// known), a gender (male | female; m, f, laki-laki, perempuan taken). Empty clears it.
pub fn normalize(
    field: ProfileField,
    value: &str,
    identity_type: Option<&str>,
    today: NaiveDate,
) -> Result<String, ProfileError> {
    let v = value.trim();
    let bad = |problem: String| ProfileError {
        field: field.name(),
        problem,
    };
    if v.is_empty() {
        return Ok(String::new());
    }
    match field {
        ProfileField::Email => {
            let ok = v.len() <= 254
                && v.split_once('@').is_some_and(|(local, domain)| {
                    !local.is_empty()
                        && !domain.starts_with('.')
                        && !domain.ends_with('.')
                        && domain.contains('.')
                        && !domain.contains("..")
                })
                && v.matches('@').count() == 1
                && !v.chars().any(|c| c.is_whitespace() || c.is_control());
            ok.then(|| v.to_lowercase())
                .ok_or_else(|| bad(format!("`{v}` is not an email address")))
        }
        ProfileField::FullName | ProfileField::Address => {
            let max = if field == ProfileField::FullName {
                100
            } else {
                500
            };
            if v.chars().any(|c| c.is_control() && c != '\n') {
                return Err(bad("control characters are not allowed".into()));
            }
            if v.chars().count() > max {
                return Err(bad(format!("at most {max} characters")));
            }
            Ok(v.to_string())
        }
        ProfileField::BirthDate => {
            let date = ["%Y-%m-%d", "%d/%m/%Y", "%d-%m-%Y"]
                .iter()
                .find_map(|f| NaiveDate::parse_from_str(v, f).ok())
                .ok_or_else(|| bad(format!("`{v}` is not a date (YYYY-MM-DD)")))?;
            if date.year() < 1900 || date > today {
                return Err(bad(format!("{date} is not a plausible birth date")));
            }
            Ok(format!(
                "{:04}-{:02}-{:02}",
                date.year(),
                date.month(),
                date.day()
            ))
        }
        ProfileField::IdentityType => {
            let t = v.to_ascii_lowercase();
            matches!(t.as_str(), "ktp" | "kitas" | "sim")
                .then_some(t)
                .ok_or_else(|| bad(format!("`{v}` is not ktp, kitas or sim")))
        }
        ProfileField::IdentityNumber => {
            let n: String = v
                .chars()
                .filter(|c| !matches!(c, ' ' | '-' | '.'))
                .collect();
            let digits = n.chars().all(|c| c.is_ascii_digit());
            let ok = match identity_type.map(str::to_ascii_lowercase).as_deref() {
                Some("ktp") => digits && n.len() == 16,
                Some("sim") => digits && (12..=14).contains(&n.len()),
                _ => n.chars().all(|c| c.is_ascii_alphanumeric()) && (6..=20).contains(&n.len()),
            };
            ok.then(|| n.to_ascii_uppercase()).ok_or_else(|| {
                bad(match identity_type {
                    Some(t) => format!("`{v}` is not a {} number", t.to_ascii_uppercase()),
                    None => format!("`{v}` is not an identity number"),
                })
            })
        }
        ProfileField::Gender => match v.to_lowercase().as_str() {
            "male" | "m" | "l" | "laki-laki" | "pria" => Ok("male".into()),
            "female" | "f" | "p" | "perempuan" | "wanita" => Ok("female".into()),
            _ => Err(bad(format!("`{v}` is not male or female"))),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn today() -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 12, 7).unwrap()
    }

    fn n(f: ProfileField, v: &str, t: Option<&str>) -> Result<String, String> {
        normalize(f, v, t, today()).map_err(|e| e.to_string())
    }

    #[test]
    fn each_field_is_checked_and_written_one_way() {
        use ProfileField as F;
        assert_eq!(
            n(F::Email, " Budi@Mail.Example ", None),
            Ok("budi@mail.example".into())
        );
        for bad in [
            "budi", "a@b", "a@@b.c", "a b@c.d", "@b.c", "a@.b.c", "a@b..c",
        ] {
            assert!(n(F::Email, bad, None).is_err(), "{bad}");
        }
        assert_eq!(n(F::BirthDate, "22/11/1990", None), Ok("1990-11-22".into()));
        assert_eq!(n(F::BirthDate, "1990-11-22", None), Ok("1990-11-22".into()));
        assert!(
            n(F::BirthDate, "2027-01-01", None).is_err(),
            "in the future"
        );
        assert!(n(F::BirthDate, "1850-01-01", None).is_err());
        assert!(n(F::BirthDate, "31/02/1990", None).is_err());
        assert_eq!(n(F::IdentityType, "KTP", None), Ok("ktp".into()));
        assert!(n(F::IdentityType, "passport", None).is_err());
        assert_eq!(
            n(F::IdentityNumber, "3174 0123 4567 0001", Some("ktp")),
            Ok("3174012345670001".into())
        );
        assert_eq!(
            n(F::IdentityNumber, "317401234567", Some("ktp")),
            Err("contact.identity_number: `317401234567` is not a KTP number".into())
        );
        assert!(n(F::IdentityNumber, "123456789012", Some("sim")).is_ok());
        assert!(n(F::IdentityNumber, "2C21AB0012345", Some("kitas")).is_ok());
        assert!(n(F::IdentityNumber, "12<script>", None).is_err());
        assert_eq!(n(F::Gender, "Perempuan", None), Ok("female".into()));
        assert!(n(F::Gender, "x", None).is_err());
        assert!(n(F::FullName, &"a".repeat(101), None).is_err());
        assert_eq!(n(F::FullName, "", None), Ok(String::new()), "cleared");
        assert_eq!(ProfileField::of("email"), Some(F::Email));
        assert_eq!(ProfileField::of("nickname"), None);
    }
}
