//! Splitting a device's byte stream into the messages its driver asked for.
//!
//! TCP delivers bytes, not messages: one read may hold half a reply or three of them. The
//! driver chooses how its device frames messages (a [`Tokenizer`]) and the host does the
//! splitting, so a driver is only ever handed whole messages and never has to buffer.
//!
//! Splitting runs on bytes a device controls, so every path is bounded: no message and no
//! partial message may grow past `max_message` bytes. A device that sends more without
//! completing a message gets [`TokenizerError::MessageTooLarge`] and its buffered bytes are
//! dropped, so it cannot make the host hold more than `max_message` bytes per connection.

/// How a device frames its messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tokenizer {
    /// No framing: whatever one read returns is one message (split into `max_message`
    /// pieces if larger). For devices whose replies always fit one segment, or for drivers
    /// that frame by themselves.
    Raw,
    /// Messages end with this byte sequence (1 to 64 bytes), for example `\r\n`. The
    /// delimiter is not part of the message, and empty messages (two delimiters in a row)
    /// are skipped, because line-oriented devices pad with blank lines and a driver never
    /// wants them.
    Delimiter(Vec<u8>),
    /// Each message starts with a header of `offset + width` bytes whose last `width`
    /// bytes hold the body length; the body has `value + adjust` bytes (so `adjust` covers
    /// protocols whose length field counts more or fewer bytes than the body, such as
    /// Modbus TCP whose length counts the unit id: offset 4, width 2, adjust 0). The
    /// message handed to the driver is header plus body.
    LengthPrefixed {
        /// Bytes before the length field (at most 1024).
        offset: u32,
        /// Width of the length field in bytes: 1, 2 or 4.
        width: u8,
        /// Whether the length field is big-endian (network order) rather than
        /// little-endian.
        big_endian: bool,
        /// Added to the field value to give the body length.
        adjust: i32,
    },
    /// Every message has exactly this many bytes.
    Fixed(u32),
}

/// The largest delimiter accepted. Longer ones are never real framing and would make
/// every search slower.
pub const MAX_DELIMITER: usize = 64;

/// The largest header offset accepted for [`Tokenizer::LengthPrefixed`].
pub const MAX_OFFSET: u32 = 1024;

/// Why a tokenizer was refused or a device's bytes could not be split.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum TokenizerError {
    /// The delimiter is empty or longer than [`MAX_DELIMITER`].
    #[error("a delimiter must be 1 to {MAX_DELIMITER} bytes long, not {0}")]
    InvalidDelimiter(usize),
    /// The length field is not 1, 2 or 4 bytes wide.
    #[error("a length field must be 1, 2 or 4 bytes wide, not {0}")]
    InvalidWidth(u8),
    /// The length field starts further in than [`MAX_OFFSET`].
    #[error("a length field offset must be at most {MAX_OFFSET}, not {0}")]
    InvalidOffset(u32),
    /// The length header alone is larger than the largest message allowed.
    #[error("a {header}-byte length header cannot fit in a {max}-byte message")]
    HeaderTooLarge {
        /// `offset + width`.
        header: u64,
        /// The message size limit.
        max: usize,
    },
    /// A fixed message size of zero or above the largest message allowed.
    #[error("a fixed message size must be 1 to {max} bytes, not {size}")]
    InvalidFixedSize {
        /// The size asked for.
        size: u32,
        /// The message size limit.
        max: usize,
    },
    /// A message (or the part of one received so far) is larger than the limit; the
    /// buffered bytes were dropped.
    #[error("the device sent a message larger than the {max}-byte limit")]
    MessageTooLarge {
        /// The message size limit.
        max: usize,
    },
    /// A length field plus `adjust` gave a negative body length; the buffered bytes were
    /// dropped because the stream can no longer be framed.
    #[error("the device sent a length field giving a negative body length ({0})")]
    NegativeLength(i64),
}

impl Tokenizer {
    /// Check that this tokenizer can frame messages of at most `max_message` bytes.
    /// Done before a driver's choice is used, so the splitter never meets a tokenizer
    /// that could not make progress (an empty delimiter or a zero fixed size would).
    pub fn validate(&self, max_message: usize) -> Result<(), TokenizerError> {
        match self {
            Tokenizer::Raw => Ok(()),
            Tokenizer::Delimiter(delimiter) => {
                if delimiter.is_empty() || delimiter.len() > MAX_DELIMITER {
                    Err(TokenizerError::InvalidDelimiter(delimiter.len()))
                } else {
                    Ok(())
                }
            }
            Tokenizer::LengthPrefixed { offset, width, .. } => {
                if !matches!(width, 1 | 2 | 4) {
                    return Err(TokenizerError::InvalidWidth(*width));
                }
                if *offset > MAX_OFFSET {
                    return Err(TokenizerError::InvalidOffset(*offset));
                }
                let header = u64::from(*offset) + u64::from(*width);
                if usize::try_from(header).map_or(true, |header| header > max_message) {
                    return Err(TokenizerError::HeaderTooLarge {
                        header,
                        max: max_message,
                    });
                }
                Ok(())
            }
            Tokenizer::Fixed(size) => {
                if *size == 0 || usize::try_from(*size).map_or(true, |size| size > max_message) {
                    Err(TokenizerError::InvalidFixedSize {
                        size: *size,
                        max: max_message,
                    })
                } else {
                    Ok(())
                }
            }
        }
    }
}

/// Bytes received from one connection that do not yet form a whole message, and the
/// tokenizer that splits them.
pub struct Splitter {
    tokenizer: Tokenizer,
    max_message: usize,
    buffer: Vec<u8>,
    /// Delimiter mode: where in `buffer` the next search for a delimiter starts, so a
    /// message trickling in byte by byte is scanned once, not once per byte.
    scan_from: usize,
}

impl std::fmt::Debug for Splitter {
    // Buffered bytes are device payload; show only how many there are.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Splitter")
            .field("tokenizer", &self.tokenizer)
            .field("max_message", &self.max_message)
            .field("buffered", &self.buffer.len())
            .finish()
    }
}

impl Splitter {
    /// A splitter with nothing buffered. A `max_message` of 0 is treated as 1, since no
    /// tokenizer can make progress with a zero limit. The tokenizer is checked on every
    /// [`push`](Self::push), so an invalid one yields errors, never a hang.
    pub fn new(tokenizer: Tokenizer, max_message: usize) -> Self {
        Splitter {
            tokenizer,
            max_message: max_message.max(1),
            buffer: Vec::new(),
            scan_from: 0,
        }
    }

    /// The tokenizer in use.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// How many bytes are buffered waiting for the rest of their message.
    pub fn buffered(&self) -> usize {
        self.buffer.len()
    }

    /// Add received bytes and return every message they complete, in order.
    ///
    /// - `Raw`: everything buffered is returned as one message (if non-empty), in pieces
    ///   of at most `max_message` bytes.
    /// - `Delimiter`: the messages before each delimiter, without it; empty ones skipped.
    ///   Up to `max_message` plus the delimiter length minus one bytes may be held, as the
    ///   last few buffered bytes may be the start of a delimiter.
    /// - `LengthPrefixed`: header plus body, once the whole body has arrived.
    /// - `Fixed(n)`: `n`-byte messages.
    ///
    /// On an error the buffer is emptied (the stream cannot be trusted to be in step any
    /// more, and the bytes must not accumulate), and messages completed earlier in the
    /// same push are dropped with it; the connection is closed on such an error anyway.
    pub fn push(&mut self, bytes: &[u8]) -> Result<Vec<Vec<u8>>, TokenizerError> {
        self.buffer.extend_from_slice(bytes);
        self.split()
    }

    /// Switch to `tokenizer` and re-split the bytes already buffered with it, returning
    /// the messages that completes. An invalid tokenizer is refused and the old one kept,
    /// with the buffer untouched.
    pub fn set_tokenizer(&mut self, tokenizer: Tokenizer) -> Result<Vec<Vec<u8>>, TokenizerError> {
        tokenizer.validate(self.max_message)?;
        self.tokenizer = tokenizer;
        self.scan_from = 0;
        self.split()
    }

    /// Drop everything buffered, as when the connection closes: bytes of a message cut
    /// off by a disconnect must not be glued to the next connection's first message.
    pub fn clear(&mut self) {
        self.buffer.clear();
        self.scan_from = 0;
    }

    fn split(&mut self) -> Result<Vec<Vec<u8>>, TokenizerError> {
        let max = self.max_message;
        let result = self
            .tokenizer
            .validate(max)
            .and_then(|()| match &self.tokenizer {
                Tokenizer::Raw => Ok(split_raw(&mut self.buffer, max)),
                Tokenizer::Delimiter(delimiter) => {
                    split_delimited(&mut self.buffer, &mut self.scan_from, delimiter, max)
                }
                Tokenizer::LengthPrefixed {
                    offset,
                    width,
                    big_endian,
                    adjust,
                } => split_length_prefixed(
                    &mut self.buffer,
                    LengthField {
                        offset: usize::try_from(*offset).unwrap_or(usize::MAX),
                        width: usize::from(*width),
                        big_endian: *big_endian,
                        adjust: i64::from(*adjust),
                    },
                    max,
                ),
                Tokenizer::Fixed(size) => Ok(split_fixed(
                    &mut self.buffer,
                    usize::try_from(*size).unwrap_or(usize::MAX),
                )),
            });
        if result.is_err() {
            self.clear();
        }
        result
    }
}

fn split_raw(buffer: &mut Vec<u8>, max: usize) -> Vec<Vec<u8>> {
    let messages = buffer.chunks(max).map(<[u8]>::to_vec).collect();
    buffer.clear();
    messages
}

fn split_fixed(buffer: &mut Vec<u8>, size: usize) -> Vec<Vec<u8>> {
    let messages: Vec<Vec<u8>> = buffer.chunks_exact(size).map(<[u8]>::to_vec).collect();
    buffer.drain(..messages.len() * size);
    messages
}

/// Where `needle` first occurs in `haystack`; never matches an empty needle.
fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    let first = needle.first()?;
    let mut from = 0;
    while let Some(rest) = haystack.get(from..) {
        let at = from + rest.iter().position(|byte| byte == first)?;
        if haystack.get(at..at + needle.len())? == needle {
            return Some(at);
        }
        from = at + 1;
    }
    None
}

fn split_delimited(
    buffer: &mut Vec<u8>,
    scan_from: &mut usize,
    delimiter: &[u8],
    max: usize,
) -> Result<Vec<Vec<u8>>, TokenizerError> {
    let mut messages = Vec::new();
    let mut start = 0;
    let mut search = *scan_from;
    while let Some(found) = buffer.get(search..).and_then(|rest| find(rest, delimiter)) {
        let end = search + found;
        if end - start > max {
            return Err(TokenizerError::MessageTooLarge { max });
        }
        if let Some(message) = buffer.get(start..end).filter(|message| !message.is_empty()) {
            messages.push(message.to_vec());
        }
        start = end + delimiter.len();
        search = start;
    }
    // No delimiter starts at or after `search` except possibly in the last
    // `delimiter.len() - 1` bytes, which may be its beginning.
    let undecided = delimiter.len().saturating_sub(1);
    let body_so_far = buffer.len().saturating_sub(start).saturating_sub(undecided);
    if body_so_far > max {
        return Err(TokenizerError::MessageTooLarge { max });
    }
    let next_search = search.max(buffer.len().saturating_sub(undecided));
    buffer.drain(..start);
    *scan_from = next_search - start;
    Ok(messages)
}

#[derive(Clone, Copy)]
struct LengthField {
    offset: usize,
    width: usize,
    big_endian: bool,
    adjust: i64,
}

fn split_length_prefixed(
    buffer: &mut Vec<u8>,
    field: LengthField,
    max: usize,
) -> Result<Vec<Vec<u8>>, TokenizerError> {
    let header = field.offset.saturating_add(field.width);
    let mut messages = Vec::new();
    let mut start = 0;
    while let Some(bytes) = buffer.get(start + field.offset..start + header) {
        let value = if field.big_endian {
            bytes
                .iter()
                .fold(0_i64, |acc, byte| acc << 8 | i64::from(*byte))
        } else {
            bytes
                .iter()
                .rev()
                .fold(0_i64, |acc, byte| acc << 8 | i64::from(*byte))
        };
        // A field is at most 4 bytes wide, so neither the value nor the sums overflow.
        let body = value + field.adjust;
        if body < 0 {
            return Err(TokenizerError::NegativeLength(body));
        }
        let total = usize::try_from(body)
            .ok()
            .and_then(|body| body.checked_add(header))
            .filter(|total| *total <= max)
            .ok_or(TokenizerError::MessageTooLarge { max })?;
        let Some(message) = buffer.get(start..start + total) else {
            break;
        };
        messages.push(message.to_vec());
        start += total;
    }
    buffer.drain(..start);
    Ok(messages)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = 1024;

    fn delimiter(bytes: &[u8]) -> Tokenizer {
        Tokenizer::Delimiter(bytes.to_vec())
    }

    fn length_prefixed(offset: u32, width: u8, big_endian: bool, adjust: i32) -> Tokenizer {
        Tokenizer::LengthPrefixed {
            offset,
            width,
            big_endian,
            adjust,
        }
    }

    fn strings(messages: Vec<Vec<u8>>) -> Vec<String> {
        messages
            .into_iter()
            .map(|m| String::from_utf8(m).unwrap())
            .collect()
    }

    #[test]
    fn raw_returns_each_push_and_skips_empty_ones() {
        let mut s = Splitter::new(Tokenizer::Raw, MAX);
        assert_eq!(s.push(b"abc").unwrap(), vec![b"abc".to_vec()]);
        assert!(s.push(b"").unwrap().is_empty());
        assert_eq!(s.push(b"d").unwrap(), vec![b"d".to_vec()]);
        assert_eq!(s.buffered(), 0);
    }

    #[test]
    fn raw_cuts_reads_larger_than_the_limit() {
        let mut s = Splitter::new(Tokenizer::Raw, 4);
        assert_eq!(
            s.push(b"0123456789").unwrap(),
            vec![b"0123".to_vec(), b"4567".to_vec(), b"89".to_vec()]
        );
    }

    #[test]
    fn delimiter_splits_across_and_within_pushes() {
        let mut s = Splitter::new(delimiter(b"\r\n"), MAX);
        assert!(s.push(b"PO").unwrap().is_empty());
        assert!(s.push(b"WR=1\r").unwrap().is_empty());
        assert_eq!(
            strings(s.push(b"\nINPT=3\r\nERR").unwrap()),
            ["POWR=1", "INPT=3"]
        );
        assert_eq!(s.buffered(), 3);
        assert_eq!(
            strings(s.push(b"1\r\n\r\n\r\nOK\r\n").unwrap()),
            ["ERR1", "OK"]
        );
        assert_eq!(s.buffered(), 0);
    }

    #[test]
    fn delimiter_split_inside_the_delimiter_is_found() {
        let mut s = Splitter::new(delimiter(b"<END>"), MAX);
        for byte in b"first<EN" {
            assert!(s.push(&[*byte]).unwrap().is_empty());
        }
        assert_eq!(strings(s.push(b"D>sec").unwrap()), ["first"]);
        // A partial delimiter that turns out not to be one stays part of the message.
        assert_eq!(strings(s.push(b"<EN<END>").unwrap()), ["sec<EN"]);
    }

    #[test]
    fn delimiter_allows_a_message_of_exactly_the_limit() {
        let mut s = Splitter::new(delimiter(b"\r\n"), 4);
        assert!(s.push(b"abcd\r").unwrap().is_empty());
        assert_eq!(strings(s.push(b"\n").unwrap()), ["abcd"]);
        // The last byte might still begin a delimiter, so five bytes are held …
        assert!(s.push(b"abcde").unwrap().is_empty());
        // … but six cannot be a message of at most four.
        assert!(matches!(
            s.push(b"f"),
            Err(TokenizerError::MessageTooLarge { max: 4 })
        ));
        assert_eq!(s.buffered(), 0);
        // Usable again after the error.
        assert_eq!(strings(s.push(b"ok\r\n").unwrap()), ["ok"]);
    }

    #[test]
    fn delimiter_refuses_a_complete_but_too_large_message() {
        let mut s = Splitter::new(delimiter(b"\n"), 4);
        assert_eq!(
            s.push(b"ok\ntoo long\n"),
            Err(TokenizerError::MessageTooLarge { max: 4 })
        );
        assert_eq!(s.buffered(), 0);
    }

    #[test]
    fn delimiter_trickle_keeps_memory_bounded() {
        let mut s = Splitter::new(delimiter(b"\n"), 100);
        let mut error = None;
        for _ in 0..1000 {
            if let Err(e) = s.push(b"x") {
                error = Some(e);
                break;
            }
            assert!(s.buffered() <= 100);
        }
        assert_eq!(error, Some(TokenizerError::MessageTooLarge { max: 100 }));
        assert_eq!(s.buffered(), 0);
    }

    #[test]
    fn length_prefixed_big_endian_modbus_style() {
        // Modbus TCP: transaction(2) protocol(2) length(2) then `length` bytes.
        let mut s = Splitter::new(length_prefixed(4, 2, true, 0), MAX);
        let frame = [0, 1, 0, 0, 0, 3, 0x11, 0x03, 0x00];
        assert!(s.push(frame.get(..5).unwrap()).unwrap().is_empty());
        assert!(s.push(frame.get(5..8).unwrap()).unwrap().is_empty());
        assert_eq!(
            s.push(frame.get(8..).unwrap()).unwrap(),
            vec![frame.to_vec()]
        );
        // Two frames in one push, the second one split.
        let mut two = frame.to_vec();
        two.extend_from_slice(&frame);
        two.extend_from_slice(frame.get(..3).unwrap());
        assert_eq!(s.push(&two).unwrap(), vec![frame.to_vec(), frame.to_vec()]);
        assert_eq!(s.buffered(), 3);
    }

    #[test]
    fn length_prefixed_little_endian_and_adjust() {
        // Length counts itself (2) and a 1-byte checksum that follows the body, so
        // body = value - 2 + 1.
        let mut s = Splitter::new(length_prefixed(0, 2, false, -1), MAX);
        let message = [5, 0, b'a', b'b', b'c', b'd'];
        assert_eq!(s.push(&message).unwrap(), vec![message.to_vec()]);
        // A four-byte little-endian field.
        let mut s = Splitter::new(length_prefixed(1, 4, false, 0), MAX);
        let message = [0xAA, 2, 0, 0, 0, b'h', b'i'];
        assert_eq!(s.push(&message).unwrap(), vec![message.to_vec()]);
        // A zero-length body is a header-only message.
        let mut s = Splitter::new(length_prefixed(0, 1, true, 0), MAX);
        assert_eq!(
            s.push(&[0, 0, 1, b'z']).unwrap(),
            vec![vec![0], vec![0], vec![1, b'z']]
        );
    }

    #[test]
    fn length_prefixed_refuses_oversized_and_negative_lengths_early() {
        let mut s = Splitter::new(length_prefixed(0, 4, true, 0), 1000);
        // Refused as soon as the header says so, without waiting for 4 GiB.
        assert_eq!(
            s.push(&[0xFF, 0xFF, 0xFF, 0xFF, 1, 2]),
            Err(TokenizerError::MessageTooLarge { max: 1000 })
        );
        assert_eq!(s.buffered(), 0);
        // Header 4 + body 996 = 1000 is allowed; 997 is not.
        assert!(s.push(&[0, 0, 0x03, 0xE4]).unwrap().is_empty());
        s.clear();
        assert!(s.push(&[0, 0, 0x03, 0xE5]).is_err());
        let mut s = Splitter::new(length_prefixed(0, 1, true, -5), MAX);
        assert_eq!(s.push(&[2, 0, 0]), Err(TokenizerError::NegativeLength(-3)));
        assert_eq!(s.buffered(), 0);
    }

    #[test]
    fn fixed_size_messages() {
        let mut s = Splitter::new(Tokenizer::Fixed(3), MAX);
        assert!(s.push(b"ab").unwrap().is_empty());
        assert_eq!(strings(s.push(b"cdefgh").unwrap()), ["abc", "def"]);
        assert_eq!(s.buffered(), 2);
        assert_eq!(strings(s.push(b"i").unwrap()), ["ghi"]);
    }

    #[test]
    fn changing_tokenizer_resplits_buffered_bytes() {
        let mut s = Splitter::new(delimiter(b"\n"), MAX);
        assert!(s.push(b"abcdefg").unwrap().is_empty());
        assert_eq!(
            strings(s.set_tokenizer(Tokenizer::Fixed(3)).unwrap()),
            ["abc", "def"]
        );
        assert_eq!(
            strings(s.set_tokenizer(delimiter(b";")).unwrap()),
            Vec::<String>::new()
        );
        assert_eq!(strings(s.push(b"h;i").unwrap()), ["gh"]);
        assert_eq!(strings(s.set_tokenizer(Tokenizer::Raw).unwrap()), ["i"]);
        assert_eq!(s.buffered(), 0);
        // The scan position of the old delimiter must not hide a delimiter from the new one.
        let mut s = Splitter::new(delimiter(b"\n"), MAX);
        assert!(s.push(b"a;b;c").unwrap().is_empty());
        assert_eq!(
            strings(s.set_tokenizer(delimiter(b";")).unwrap()),
            ["a", "b"]
        );
    }

    #[test]
    fn invalid_tokenizers_are_refused_and_the_old_one_kept() {
        for (tokenizer, max) in [
            (delimiter(b""), MAX),
            (delimiter(&[b'x'; 65]), MAX),
            (length_prefixed(0, 3, true, 0), MAX),
            (length_prefixed(0, 0, true, 0), MAX),
            (length_prefixed(1025, 2, true, 0), 4096),
            (length_prefixed(10, 4, true, 0), 8),
            (Tokenizer::Fixed(0), MAX),
            (Tokenizer::Fixed(1025), MAX),
        ] {
            assert!(tokenizer.validate(max).is_err(), "{tokenizer:?} accepted");
            let mut s = Splitter::new(delimiter(b"\n"), max);
            s.push(b"kept").unwrap();
            assert!(s.set_tokenizer(tokenizer).is_err());
            assert_eq!(s.tokenizer(), &delimiter(b"\n"));
            assert_eq!(s.buffered(), 4);
        }
        for tokenizer in [
            Tokenizer::Raw,
            delimiter(&[b'x'; 64]),
            length_prefixed(1024, 4, false, -100),
            Tokenizer::Fixed(1024),
        ] {
            assert_eq!(tokenizer.validate(2048), Ok(()), "{tokenizer:?} refused");
        }
    }

    #[test]
    fn an_invalid_tokenizer_given_to_new_errors_instead_of_hanging() {
        let mut s = Splitter::new(Tokenizer::Fixed(0), MAX);
        assert!(matches!(
            s.push(b"abc"),
            Err(TokenizerError::InvalidFixedSize { .. })
        ));
        let mut s = Splitter::new(delimiter(b""), MAX);
        assert!(s.push(b"abc").is_err());
        assert_eq!(s.buffered(), 0);
        let mut s = Splitter::new(Tokenizer::Raw, 0);
        assert_eq!(s.push(b"ab").unwrap(), vec![b"a".to_vec(), b"b".to_vec()]);
    }

    #[test]
    fn clear_drops_partial_messages() {
        let mut s = Splitter::new(delimiter(b"\n"), MAX);
        s.push(b"half").unwrap();
        s.clear();
        assert_eq!(strings(s.push(b"new\n").unwrap()), ["new"]);
    }

    #[test]
    fn debug_does_not_show_payload() {
        let mut s = Splitter::new(Tokenizer::Raw, MAX);
        s.buffer.extend_from_slice(b"secret");
        assert!(!format!("{s:?}").contains("115"));
        assert!(format!("{s:?}").contains("buffered: 6"));
    }
}
