//! The QRIS image: a gateway's QR string drawn as a PNG, to send as a WhatsApp image.
//!
//! The PNG is written here (1-bit greyscale, zlib "stored" blocks): a QR code at 8 pixels a
//! module is a few tens of KB uncompressed, well under WhatsApp's 5 MB image limit, and it
//! spares the build an image and a deflate crate.

/// Where Meta fetches a payment's QRIS image from: `{base}/payments/qr/{id}-{token}.png`,
/// `token` an HMAC of the payment id under a key derived from `secret` (the app secret), so
/// a payment's QR cannot be fetched by guessing ids.
pub fn qr_link(base: &str, secret: &[u8], payment_id: i64) -> String {
    format!(
        "{}/payments/qr/{payment_id}-{}.png",
        base.trim_end_matches('/'),
        qr_token(secret, payment_id)
    )
}

/// The token of [`qr_link`]: 32 hex digits.
pub fn qr_token(secret: &[u8], payment_id: i64) -> String {
    use hmac::{Hmac, Mac};
    // An HMAC takes a key of any length.
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret).expect("any key length");
    mac.update(b"parley qris image ");
    mac.update(payment_id.to_string().as_bytes());
    hex::encode(&mac.finalize().into_bytes()[..16])
}

/// The payment id a [`qr_link`] file name (`{id}-{token}.png`) names, if its token is right
/// (compared in constant time).
pub fn qr_file_payment(secret: &[u8], file: &str) -> Option<i64> {
    let (id, token) = file.strip_suffix(".png")?.split_once('-')?;
    let id: i64 = id.parse().ok()?;
    let want = qr_token(secret, id);
    let same = want.len() == token.len()
        && want
            .bytes()
            .zip(token.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
    same.then_some(id)
}

/// Pixels per QR module, and the quiet zone around the code in modules (the standard's 4).
const SCALE: usize = 8;
const QUIET: usize = 4;

#[derive(Debug, thiserror::Error)]
pub enum QrError {
    #[error("cannot be drawn as a QR code: {0}")]
    Encode(String),
}

/// `text` (a QRIS string, ≤ ~2,900 bytes) as a PNG.
pub fn qr_png(text: &str) -> Result<Vec<u8>, QrError> {
    let code = qrcode::QrCode::new(text.as_bytes()).map_err(|e| QrError::Encode(e.to_string()))?;
    let modules = code.width();
    let colors = code.to_colors();
    let side = (modules + 2 * QUIET) * SCALE;
    let row_bytes = side.div_ceil(8);
    let mut raw = Vec::with_capacity((row_bytes + 1) * side);
    for py in 0..side {
        raw.push(0); // filter: none
        let my = (py / SCALE).checked_sub(QUIET).filter(|m| *m < modules);
        let mut row = vec![0xffu8; row_bytes]; // white
        for px in 0..side {
            let mx = (px / SCALE).checked_sub(QUIET).filter(|m| *m < modules);
            if let (Some(x), Some(y)) = (mx, my) {
                if colors[y * modules + x] == qrcode::Color::Dark {
                    row[px / 8] &= !(0x80 >> (px % 8));
                }
            }
        }
        raw.extend_from_slice(&row);
    }
    let side = u32::try_from(side).map_err(|_| QrError::Encode("too large".into()))?;
    let mut ihdr = Vec::with_capacity(13);
    ihdr.extend_from_slice(&side.to_be_bytes());
    ihdr.extend_from_slice(&side.to_be_bytes());
    ihdr.extend_from_slice(&[1, 0, 0, 0, 0]); // 1 bit, greyscale, deflate, no filter, no interlace
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    chunk(&mut png, b"IHDR", &ihdr);
    chunk(&mut png, b"IDAT", &zlib_stored(&raw));
    chunk(&mut png, b"IEND", &[]);
    Ok(png)
}

fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    let start = out.len();
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    let crc = crc32(&out[start..]);
    out.extend_from_slice(&crc.to_be_bytes());
}

/// A zlib stream of uncompressed deflate blocks.
fn zlib_stored(data: &[u8]) -> Vec<u8> {
    let mut out = vec![0x78, 0x01];
    let mut blocks = data.chunks(65_535).peekable();
    if blocks.peek().is_none() {
        out.extend_from_slice(&[1, 0, 0, 0xff, 0xff]);
    }
    while let Some(block) = blocks.next() {
        out.push(u8::from(blocks.peek().is_none()));
        let len = block.len() as u16;
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(block);
    }
    let (mut a, mut b) = (1u32, 0u32);
    for &x in data {
        a = (a + u32::from(x)) % 65_521;
        b = (b + a) % 65_521;
    }
    out.extend_from_slice(&((b << 16) | a).to_be_bytes());
    out
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qr_links_name_their_payment_and_refuse_a_guess() {
        let url = qr_link("https://shop.example/", b"app-secret", 42);
        let file = url
            .strip_prefix("https://shop.example/payments/qr/")
            .unwrap();
        assert_eq!(qr_file_payment(b"app-secret", file), Some(42));
        assert_eq!(qr_file_payment(b"another-secret", file), None);
        let other = file.replacen("42-", "43-", 1);
        assert_eq!(qr_file_payment(b"app-secret", &other), None, "{other}");
        assert_eq!(qr_file_payment(b"app-secret", "42.png"), None);
        assert_eq!(qr_file_payment(b"app-secret", "x-y.png"), None);
    }

    #[test]
    fn crc_and_adler_match_known_values() {
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
        let z = zlib_stored(b"Wikipedia");
        assert_eq!(&z[z.len() - 4..], &0x11e6_0398u32.to_be_bytes());
    }

    #[test]
    fn a_qris_string_becomes_a_png() {
        let qris = "00020101021226610014COM.XENDIT.WWW01189360000000000000000215ID10200000000000303UMI51440014ID.CO.QRIS.WWW0215ID10200000000000303UMI5204549953033605802ID5911Toko Parley6007JAKARTA6105101106304ABCD";
        let png = qr_png(qris).unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        assert_eq!(&png[12..16], b"IHDR");
        let side = u32::from_be_bytes([png[16], png[17], png[18], png[19]]);
        assert_eq!(side % SCALE as u32, 0);
        assert!(png.len() < 200_000, "{}", png.len());
        assert!(png.ends_with(&[0xae, 0x42, 0x60, 0x82]), "IEND's CRC");
    }
}
