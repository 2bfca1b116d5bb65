//! Reading a configuration document: bounded in size, decoded as UTF-8 with a message that
//! says what is wrong and where (a byte order mark, an invalid byte), so that a file, stdin
//! and CNI stdin all fail the same way without reading more than the cap.

use std::io::Read;

/// The largest configuration document read, in bytes. A real task definition or network
/// config is a few KiB; 10,000 ignored networks take about 200 KiB.
pub const MAX_DOCUMENT_BYTES: u64 = 16 * 1024 * 1024;

/// The cap as people write it, for messages and the README.
pub const MAX_DOCUMENT_SIZE_TEXT: &str = "16 MiB";

/// Why a document could not be read into text.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("is larger than {MAX_DOCUMENT_SIZE_TEXT}, the most meshinit reads")]
    TooLarge,
    #[error(
        "starts with a UTF-8 byte order mark (BOM); save it as UTF-8 without a BOM (JSON has none)"
    )]
    ByteOrderMark,
    #[error("is not valid UTF-8 at line {line} column {column} (byte {offset})")]
    NotUtf8 {
        line: usize,
        column: usize,
        offset: usize,
    },
    #[error("cannot be read: {0}")]
    Io(#[from] std::io::Error),
}

/// Reads at most [`MAX_DOCUMENT_BYTES`] from `reader`; one byte more means the document is
/// too large, and nothing beyond that byte is read.
pub fn read_bounded(reader: impl Read) -> Result<Vec<u8>, InputError> {
    let mut bytes = Vec::new();
    reader
        .take(MAX_DOCUMENT_BYTES + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_DOCUMENT_BYTES {
        return Err(InputError::TooLarge);
    }
    Ok(bytes)
}

/// Reads a file, refusing one whose size alone is over the cap before reading a byte.
pub fn read_file(path: &std::path::Path) -> Result<Vec<u8>, InputError> {
    let file = std::fs::File::open(path)?;
    // Devices and pipes report no useful size; the bounded read catches those.
    if file.metadata().is_ok_and(|m| m.len() > MAX_DOCUMENT_BYTES) {
        return Err(InputError::TooLarge);
    }
    read_bounded(file)
}

/// The document as text.
pub fn decode(bytes: Vec<u8>) -> Result<String, InputError> {
    if bytes.starts_with(b"\xEF\xBB\xBF") {
        return Err(InputError::ByteOrderMark);
    }
    String::from_utf8(bytes).map_err(|e| {
        let offset = e.utf8_error().valid_up_to();
        let before = &e.as_bytes()[..offset];
        let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
        let line_start = before
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i + 1);
        // Columns count characters, as the JSON parser's messages do.
        let column = String::from_utf8_lossy(&before[line_start..])
            .chars()
            .count()
            + 1;
        InputError::NotUtf8 {
            line,
            column,
            offset,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reading_stops_one_byte_past_the_cap() {
        let endless = std::io::repeat(b' ');
        assert!(matches!(read_bounded(endless), Err(InputError::TooLarge)));
        let exact = std::io::repeat(b' ').take(MAX_DOCUMENT_BYTES);
        assert_eq!(
            read_bounded(exact).unwrap().len() as u64,
            MAX_DOCUMENT_BYTES
        );
    }

    #[test]
    fn decoding_names_a_bom_and_where_utf8_breaks() {
        assert!(matches!(
            decode(b"\xEF\xBB\xBF{}".to_vec()),
            Err(InputError::ByteOrderMark)
        ));
        let e = decode(b"{\n  \"\xC3\xA9x\": \"\xFF\"}".to_vec()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "is not valid UTF-8 at line 2 column 10 (byte 12)"
        );
        assert_eq!(decode(b"{}".to_vec()).unwrap(), "{}");
    }
}
