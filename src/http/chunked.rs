//! HTTP/1.1 chunked transfer coding (RFC 9112 §7.1), both directions.
//!
//! The decoder accepts what Go's `net/http/internal` chunked reader accepts (hex sizes
//! with leading zeros, extensions, a bare LF line end, trailers) and refuses what it
//! refuses (a size over 16 hex digits, a missing CRLF after data), with a typed error at
//! the offending byte. Chunk data come out as slices of the input, never copied.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::error::{DecodeError, DecodeErrorKind};
use crate::limits::Limits;

/// The last chunk with no trailers: ends a chunked body.
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// Room [`begin_chunk`] reserves for a chunk header: 16 hex digits and CRLF.
pub const CHUNK_HEADER_ROOM: usize = 18;

/// Writes `len` as lowercase hex without leading zeros, as Go does, into `out`; returns
/// how many digits it used (at the end of `out`).
fn hex_digits(mut len: u64, out: &mut [u8; 16]) -> usize {
    let mut i = out.len();
    loop {
        i -= 1;
        out[i] = b"0123456789abcdef"[(len & 0xf) as usize];
        len >>= 4;
        if len == 0 {
            return out.len() - i;
        }
    }
}

/// Appends one whole chunk (`{len:x}\r\n data \r\n`) to `dst`. Empty `data` writes
/// nothing, because an empty chunk would end the body.
pub fn write_chunk(data: &[u8], dst: &mut impl BufMut) {
    if data.is_empty() {
        return;
    }
    let mut digits = [0u8; 16];
    let n = hex_digits(data.len() as u64, &mut digits);
    dst.put_slice(&digits[16 - n..]);
    dst.put_slice(b"\r\n");
    dst.put_slice(data);
    dst.put_slice(b"\r\n");
}

/// The header of a chunk of `len` bytes (`{len:x}\r\n`), for a chunk whose data are
/// written from their own buffer.
pub fn chunk_header(len: usize) -> Bytes {
    let mut digits = [0u8; 16];
    let n = hex_digits(len as u64, &mut digits);
    let mut out = BytesMut::with_capacity(n + 2);
    out.put_slice(&digits[16 - n..]);
    out.put_slice(b"\r\n");
    out.freeze()
}

/// A chunk whose payload is being written straight into the output buffer.
#[derive(Debug)]
#[must_use = "finish the chunk with end_chunk"]
pub struct ChunkSlot {
    start: usize,
}

impl ChunkSlot {
    /// The slot of a chunk whose header room was reserved at `start` of its buffer
    /// (a stream queue's frames begin with it).
    pub fn at(start: usize) -> ChunkSlot {
        ChunkSlot { start }
    }
}

/// Starts a chunk at the end of `dst` by reserving [`CHUNK_HEADER_ROOM`] bytes for its
/// header; append the payload (frames) after it, then call [`end_chunk`]. This lets a
/// writer encode a batch of frames once, into one buffer, and send it as one write.
pub fn begin_chunk(dst: &mut BytesMut) -> ChunkSlot {
    let start = dst.len();
    dst.put_bytes(0, CHUNK_HEADER_ROOM);
    ChunkSlot { start }
}

/// Finishes the chunk: writes its header right-aligned in the reserved room and appends
/// the closing CRLF. `referenced` counts payload bytes that belong to the chunk but are
/// written from their own buffers (see `http::batch`). Returns the offset in `dst` where
/// the chunk's bytes begin (the unused room before it must not be sent), or `None` if
/// the chunk was empty, in which case the room is removed again.
pub fn end_chunk(slot: ChunkSlot, dst: &mut BytesMut, referenced: usize) -> Option<usize> {
    let payload_start = slot.start + CHUNK_HEADER_ROOM;
    let len = dst.len() - payload_start + referenced;
    if len == 0 {
        dst.truncate(slot.start);
        return None;
    }
    let mut digits = [0u8; 16];
    let n = hex_digits(len as u64, &mut digits);
    let begin = payload_start - 2 - n;
    dst[begin..payload_start - 2].copy_from_slice(&digits[16 - n..]);
    dst[payload_start - 2..payload_start].copy_from_slice(b"\r\n");
    dst.put_slice(b"\r\n");
    Some(begin)
}

/// What the chunked decoder found next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChunkedEvent {
    /// Body bytes: a slice of the input.
    Data(Bytes),
    /// The last chunk and trailers were read: the body is complete. Input after this
    /// belongs to whatever follows on the connection and is left untouched.
    End,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SizePhase {
    Digits,
    Space,
    Extension,
    Cr,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Reading a chunk-size line.
    Size {
        value: u64,
        digits: u8,
        phase: SizePhase,
        line_len: usize,
    },
    /// Reading chunk data; `left` bytes remain.
    Data { left: u64 },
    /// Expecting the CR after chunk data.
    DataCr,
    /// Expecting the LF after chunk data.
    DataLf,
    /// Reading trailer lines after the last chunk.
    Trailers {
        line_len: usize,
        saw_cr: bool,
        total: usize,
    },
    /// The body is complete.
    Done,
}

const NEW_SIZE_LINE: State = State::Size {
    value: 0,
    digits: 0,
    phase: SizePhase::Digits,
    line_len: 0,
};

/// Decodes a chunked body fed in pieces of any size.
#[derive(Clone, Debug)]
pub struct ChunkedDecoder {
    state: State,
    offset: u64,
    max_line: usize,
    max_trailers: usize,
}

impl ChunkedDecoder {
    /// A decoder for one chunked body.
    pub fn new(limits: &Limits) -> Self {
        ChunkedDecoder {
            state: NEW_SIZE_LINE,
            offset: 0,
            max_line: limits.max_chunk_line,
            max_trailers: limits.max_trailers,
        }
    }

    fn err(&self, what: &'static str) -> DecodeError {
        DecodeError::new(DecodeErrorKind::Chunked(what), self.offset)
    }

    /// Consumes from `input` up to the next event. `None` means `input` is used up.
    pub fn decode(&mut self, input: &mut Bytes) -> Result<Option<ChunkedEvent>, DecodeError> {
        loop {
            if let State::Data { left } = self.state {
                if input.is_empty() {
                    return Ok(None);
                }
                let take = left.min(input.len() as u64) as usize;
                let data = input.split_to(take);
                self.offset += take as u64;
                self.state = if left == take as u64 {
                    State::DataCr
                } else {
                    State::Data {
                        left: left - take as u64,
                    }
                };
                return Ok(Some(ChunkedEvent::Data(data)));
            }
            if self.state == State::Done {
                return Ok(None);
            }
            let Some(&b) = input.first() else {
                return Ok(None);
            };
            self.step(b)?;
            input.advance(1);
            self.offset += 1;
            if self.state == State::Done {
                return Ok(Some(ChunkedEvent::End));
            }
        }
    }

    /// Advances the line-level state machine by one byte (not chunk data).
    fn step(&mut self, b: u8) -> Result<(), DecodeError> {
        self.state = match self.state {
            State::Size {
                value,
                digits,
                phase,
                line_len,
            } => {
                if line_len + 1 > self.max_line {
                    return Err(self.err("chunk-size line too long"));
                }
                let line_len = line_len + 1;
                let end_of_line = |value: u64, digits: u8| -> Result<State, DecodeError> {
                    if digits == 0 {
                        return Err(self.err("empty chunk size"));
                    }
                    Ok(if value == 0 {
                        State::Trailers {
                            line_len: 0,
                            saw_cr: false,
                            total: 0,
                        }
                    } else {
                        State::Data { left: value }
                    })
                };
                match (phase, b) {
                    (SizePhase::Digits, b) if b.is_ascii_hexdigit() => {
                        if digits == 16 {
                            return Err(self.err("chunk size too large"));
                        }
                        let d = (b as char).to_digit(16).unwrap_or(0) as u64;
                        State::Size {
                            value: value << 4 | d,
                            digits: digits + 1,
                            phase,
                            line_len,
                        }
                    }
                    (SizePhase::Digits | SizePhase::Space, b' ' | b'\t') if digits > 0 => {
                        State::Size {
                            value,
                            digits,
                            phase: SizePhase::Space,
                            line_len,
                        }
                    }
                    (SizePhase::Digits | SizePhase::Space, b';') if digits > 0 => State::Size {
                        value,
                        digits,
                        phase: SizePhase::Extension,
                        line_len,
                    },
                    (SizePhase::Extension, b) if b != b'\r' && b != b'\n' => State::Size {
                        value,
                        digits,
                        phase,
                        line_len,
                    },
                    (SizePhase::Digits | SizePhase::Space | SizePhase::Extension, b'\r') => {
                        State::Size {
                            value,
                            digits,
                            phase: SizePhase::Cr,
                            line_len,
                        }
                    }
                    (_, b'\n') => end_of_line(value, digits)?,
                    (SizePhase::Cr, _) => return Err(self.err("CR not followed by LF")),
                    _ => return Err(self.err("invalid byte in chunk size")),
                }
            }
            State::DataCr if b == b'\r' => State::DataLf,
            State::DataLf if b == b'\n' => NEW_SIZE_LINE,
            State::DataCr | State::DataLf => {
                return Err(self.err("chunk data not followed by CRLF"))
            }
            State::Trailers {
                line_len,
                saw_cr,
                total,
            } => {
                if total + 1 > self.max_trailers {
                    return Err(self.err("trailers too large"));
                }
                match b {
                    b'\n' if line_len == 0 || (line_len == 1 && saw_cr) => State::Done,
                    b'\n' => State::Trailers {
                        line_len: 0,
                        saw_cr: false,
                        total: total + 1,
                    },
                    b'\r' => State::Trailers {
                        line_len: line_len + 1,
                        saw_cr: true,
                        total: total + 1,
                    },
                    _ => State::Trailers {
                        line_len: line_len + 1,
                        saw_cr: false,
                        total: total + 1,
                    },
                }
            }
            State::Data { .. } | State::Done => self.state,
        };
        Ok(())
    }

    /// Whether the whole body, last chunk and trailers included, has been read.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Whether the input so far ends exactly between two chunks. A stream that was cut
    /// (never terminated) ends like this; one cut inside a chunk does not.
    pub fn at_chunk_boundary(&self) -> bool {
        self.state == NEW_SIZE_LINE
    }

    /// Bytes consumed so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Call at the end of the input: fails unless the body was complete.
    pub fn finish(&self) -> Result<(), DecodeError> {
        if self.is_done() {
            Ok(())
        } else {
            Err(self.err("body ended before the last chunk"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(raw: &[u8], piece: usize) -> Result<(Vec<u8>, bool), DecodeError> {
        let mut dec = ChunkedDecoder::new(&Limits::default());
        let mut body = Vec::new();
        for part in raw.chunks(piece.max(1)) {
            let mut input = Bytes::copy_from_slice(part);
            while let Some(ev) = dec.decode(&mut input)? {
                match ev {
                    ChunkedEvent::Data(d) => body.extend_from_slice(&d),
                    ChunkedEvent::End => return Ok((body, true)),
                }
            }
        }
        Ok((body, false))
    }

    #[test]
    fn decodes_in_any_piece_size() {
        let raw = b"5\r\nhello\r\n0000a;name=v\r\n0123456789\r\n1 \n!\r\n0\r\nX-T: 1\r\n\r\n";
        for piece in 1..raw.len() {
            assert_eq!(
                decode_all(raw, piece).unwrap(),
                (b"hello0123456789!".to_vec(), true)
            );
        }
    }

    #[test]
    fn bad_input_names_the_offending_byte() {
        let cases: &[(&[u8], &str, u64)] = &[
            (b"g\r\n", "invalid byte in chunk size", 0),
            (b"\r\n", "empty chunk size", 1),
            (b"11111111111111111\r\n", "chunk size too large", 16),
            (b"1\r\nab", "chunk data not followed by CRLF", 4),
            (b"1\rx", "CR not followed by LF", 2),
            (b" 1\r\n", "invalid byte in chunk size", 0),
        ];
        for (raw, what, offset) in cases {
            let e = decode_all(raw, raw.len()).unwrap_err();
            assert_eq!(
                (e.kind.clone(), e.offset),
                (DecodeErrorKind::Chunked(what), *offset),
                "{raw:?}"
            );
        }
    }

    #[test]
    fn long_lines_and_trailers_are_capped() {
        let limits = Limits {
            max_chunk_line: 8,
            max_trailers: 8,
            ..Limits::default()
        };
        let mut dec = ChunkedDecoder::new(&limits);
        let e = dec
            .decode(&mut Bytes::from_static(b"1;aaaaaaaaaaaa\r\n"))
            .unwrap_err();
        assert_eq!(e.kind, DecodeErrorKind::Chunked("chunk-size line too long"));
        let mut dec = ChunkedDecoder::new(&limits);
        let e = dec
            .decode(&mut Bytes::from_static(b"0\r\nX-Long-Trailer: 1\r\n\r\n"))
            .unwrap_err();
        assert_eq!(e.kind, DecodeErrorKind::Chunked("trailers too large"));
    }

    #[test]
    fn data_is_sliced_not_copied_and_input_after_the_end_is_left() {
        let mut input = Bytes::from_static(b"3\r\nabc\r\n0\r\n\r\nNEXT");
        let base = input.as_ptr() as usize;
        let mut dec = ChunkedDecoder::new(&Limits::default());
        let Some(ChunkedEvent::Data(d)) = dec.decode(&mut input).unwrap() else {
            panic!()
        };
        assert_eq!(d.as_ptr() as usize, base + 3);
        assert_eq!(dec.decode(&mut input).unwrap(), Some(ChunkedEvent::End));
        assert_eq!(&input[..], b"NEXT");
        dec.finish().unwrap();
    }

    #[test]
    fn encoder_output_decodes_back() {
        let mut buf = BytesMut::new();
        let slot = begin_chunk(&mut buf);
        buf.extend_from_slice(&[7u8; 300]);
        let start = end_chunk(slot, &mut buf, 0).unwrap();
        assert_eq!(&buf[start..start + 5], b"12c\r\n");
        assert_eq!(&chunk_header(300)[..], b"12c\r\n");
        let mut wire = buf.split_off(start);
        write_chunk(b"tail", &mut wire);
        write_chunk(b"", &mut wire);
        wire.extend_from_slice(LAST_CHUNK);
        let (body, done) = decode_all(&wire, 7).unwrap();
        assert!(done);
        assert_eq!(body.len(), 304);
        let mut empty = BytesMut::new();
        let slot = begin_chunk(&mut empty);
        assert_eq!(end_chunk(slot, &mut empty, 0), None);
        assert!(empty.is_empty());
    }
}
