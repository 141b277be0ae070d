//! PEM armour exactly as Go's `encoding/pem` writes it: `-----BEGIN T-----`, standard base64 in
//! 64-character lines, `-----END T-----`, LF line endings.
//!
//! Reading is strict: every non-blank line of the input must belong to a block, so a file with
//! trailing garbage or a truncated block is an error rather than silently partial.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use thiserror::Error;

/// Banners used by Nebula (`cert/cert.go` of 1.6.1).
pub const CERTIFICATE: &str = "NEBULA CERTIFICATE";
pub const CERTIFICATE_V2: &str = "NEBULA CERTIFICATE V2";
pub const X25519_PRIVATE_KEY: &str = "NEBULA X25519 PRIVATE KEY";
pub const X25519_PUBLIC_KEY: &str = "NEBULA X25519 PUBLIC KEY";
pub const ED25519_PRIVATE_KEY: &str = "NEBULA ED25519 PRIVATE KEY";
pub const ED25519_PUBLIC_KEY: &str = "NEBULA ED25519 PUBLIC KEY";

/// Largest input we accept in one PEM file; a CA bundle of hundreds of certificates fits.
pub const MAX_INPUT: usize = 1 << 20;

/// One decoded PEM block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    pub label: String,
    pub data: Vec<u8>,
    /// 1-based line of the BEGIN marker, for error messages.
    pub line: usize,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ArmorError {
    #[error("input is {0} bytes, larger than the {MAX_INPUT}-byte limit")]
    TooLarge(usize),
    #[error("input is not text (not UTF-8)")]
    NotText,
    #[error("input did not contain a valid PEM encoded block")]
    Empty,
    #[error("line {line}: unexpected text outside a PEM block")]
    Garbage { line: usize },
    #[error("line {line}: PEM block {label:?} has no END line (truncated?)")]
    Unterminated { line: usize, label: String },
    #[error("line {line}: END line {found:?} does not match BEGIN {label:?}")]
    MismatchedEnd { line: usize, label: String, found: String },
    #[error("line {line}: PEM block {label:?} has invalid base64: {reason}")]
    Base64 { line: usize, label: String, reason: String },
    #[error("line {line}: PEM headers are not supported in {label:?}")]
    Headers { line: usize, label: String },
}

/// Encodes one block the way Go's `pem.EncodeToMemory` does.
pub fn encode(label: &str, data: &[u8]) -> String {
    let b64 = STANDARD.encode(data);
    let mut out = String::with_capacity(b64.len() + b64.len() / 64 + 2 * label.len() + 40);
    out.push_str("-----BEGIN ");
    out.push_str(label);
    out.push_str("-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        // base64 output is ASCII, so every chunk is valid UTF-8.
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str("-----END ");
    out.push_str(label);
    out.push_str("-----\n");
    out
}

/// Decodes every PEM block of `input`. Blank lines between blocks are allowed, anything else is not.
pub fn decode_all(input: &[u8]) -> Result<Vec<Block>, ArmorError> {
    if input.len() > MAX_INPUT {
        return Err(ArmorError::TooLarge(input.len()));
    }
    let text = std::str::from_utf8(input).map_err(|_| ArmorError::NotText)?;
    let mut blocks = Vec::new();
    let mut current: Option<(String, usize, String)> = None; // label, begin line, base64 body
    for (i, raw) in text.lines().enumerate() {
        let line_no = i + 1;
        let line = raw.trim();
        match current.as_mut() {
            None => {
                if line.is_empty() {
                    continue;
                }
                let label = marker(line, "-----BEGIN ").ok_or(ArmorError::Garbage { line: line_no })?;
                current = Some((label.to_string(), line_no, String::new()));
            }
            Some((label, begin, body)) => {
                if let Some(end) = marker(line, "-----END ") {
                    if end != label {
                        return Err(ArmorError::MismatchedEnd {
                            line: line_no,
                            label: label.clone(),
                            found: end.to_string(),
                        });
                    }
                    let data = STANDARD.decode(body.as_bytes()).map_err(|e| ArmorError::Base64 {
                        line: *begin,
                        label: label.clone(),
                        reason: e.to_string(),
                    })?;
                    blocks.push(Block { label: label.clone(), data, line: *begin });
                    current = None;
                } else if line.contains(':') {
                    return Err(ArmorError::Headers { line: line_no, label: label.clone() });
                } else {
                    body.push_str(line);
                }
            }
        }
    }
    if let Some((label, line, _)) = current {
        return Err(ArmorError::Unterminated { line, label });
    }
    if blocks.is_empty() {
        return Err(ArmorError::Empty);
    }
    Ok(blocks)
}

fn marker<'a>(line: &'a str, prefix: &str) -> Option<&'a str> {
    line.strip_prefix(prefix)?.strip_suffix("-----")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_wraps_at_64() {
        let data: Vec<u8> = (0..=255u8).collect();
        let text = encode(CERTIFICATE, &data);
        assert!(text.lines().all(|l| l.len() <= 64 || l.starts_with("-----")));
        assert!(text.ends_with("-----END NEBULA CERTIFICATE-----\n"));
        let blocks = decode_all(text.as_bytes()).unwrap();
        assert_eq!(blocks, vec![Block { label: CERTIFICATE.into(), data, line: 1 }]);
    }

    #[test]
    fn rejects_bad_input() {
        let good = encode(CERTIFICATE, b"abc");
        let cases: Vec<(String, ArmorError)> = vec![
            (String::new(), ArmorError::Empty),
            ("\n\n".into(), ArmorError::Empty),
            ("hello\n".into(), ArmorError::Garbage { line: 1 }),
            (format!("{good}trailing\n"), ArmorError::Garbage { line: 4 }),
            (
                good.lines().take(2).collect::<Vec<_>>().join("\n"),
                ArmorError::Unterminated { line: 1, label: CERTIFICATE.into() },
            ),
            (
                good.replace("END NEBULA CERTIFICATE", "END NEBULA X"),
                ArmorError::MismatchedEnd { line: 3, label: CERTIFICATE.into(), found: "NEBULA X".into() },
            ),
        ];
        for (input, want) in cases {
            assert_eq!(decode_all(input.as_bytes()).unwrap_err(), want, "input {input:?}");
        }
        let bad64 = good.replace("YWJj", "Y*Jj");
        assert!(matches!(decode_all(bad64.as_bytes()), Err(ArmorError::Base64 { .. })));
        assert!(matches!(decode_all(&vec![b'a'; MAX_INPUT + 1]), Err(ArmorError::TooLarge(_))));
        assert_eq!(decode_all(&[0xff, 0xfe]), Err(ArmorError::NotText));
    }

    #[test]
    fn several_blocks_with_blank_lines() {
        let text = format!("\n{}\n\n{}", encode(CERTIFICATE, b"1"), encode(X25519_PUBLIC_KEY, b"2"));
        let blocks = decode_all(text.as_bytes()).unwrap();
        assert_eq!(blocks.len(), 2);
        assert_eq!(blocks[1].label, X25519_PUBLIC_KEY);
        assert_eq!(blocks[1].data, b"2");
    }
}
