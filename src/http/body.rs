//! Decoding a message body of any framing (Content-Length, chunked, until close) from
//! input pieces, sans-IO. Data come out as slices of the input.

use bytes::Bytes;

use super::chunked::{ChunkedDecoder, ChunkedEvent};
use super::head::BodyFraming;
use crate::error::{DecodeError, DecodeErrorKind};
use crate::limits::Limits;

/// What the body decoder found next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BodyEvent {
    /// Body bytes.
    Data(Bytes),
    /// The body is complete; input after it belongs to the next message.
    End,
}

/// Decodes one body.
#[derive(Clone, Debug)]
pub enum BodyDecoder {
    /// `left` bytes remain of a Content-Length body.
    Length {
        /// Bytes still to come.
        left: u64,
    },
    /// A chunked body.
    Chunked(ChunkedDecoder),
    /// Everything until the connection closes.
    UntilClose,
    /// Finished.
    Done,
}

impl BodyDecoder {
    /// A decoder for a body framed as `framing`.
    pub fn new(framing: BodyFraming, limits: &Limits) -> Self {
        match framing {
            BodyFraming::Empty | BodyFraming::Length(0) => BodyDecoder::Done,
            BodyFraming::Length(n) => BodyDecoder::Length { left: n },
            BodyFraming::Chunked => BodyDecoder::Chunked(ChunkedDecoder::new(limits)),
            BodyFraming::UntilClose => BodyDecoder::UntilClose,
        }
    }

    /// The next event from `input`; `None` when `input` is used up first.
    pub fn decode(&mut self, input: &mut Bytes) -> Result<Option<BodyEvent>, DecodeError> {
        match self {
            BodyDecoder::Done => Ok(Some(BodyEvent::End)),
            BodyDecoder::Length { left } => {
                if input.is_empty() {
                    return Ok(None);
                }
                let take = (*left).min(input.len() as u64) as usize;
                *left -= take as u64;
                let data = input.split_to(take);
                if *left == 0 {
                    *self = BodyDecoder::Done;
                }
                Ok(Some(BodyEvent::Data(data)))
            }
            BodyDecoder::Chunked(dec) => match dec.decode(input)? {
                Some(ChunkedEvent::Data(d)) => Ok(Some(BodyEvent::Data(d))),
                Some(ChunkedEvent::End) => {
                    *self = BodyDecoder::Done;
                    Ok(Some(BodyEvent::End))
                }
                None => Ok(None),
            },
            BodyDecoder::UntilClose => {
                if input.is_empty() {
                    Ok(None)
                } else {
                    Ok(Some(BodyEvent::Data(std::mem::take(input))))
                }
            }
        }
    }

    /// The connection reached EOF: fine for an until-close body or a finished one; an
    /// error ("early EOF") for anything else.
    pub fn eof(&mut self) -> Result<(), DecodeError> {
        match self {
            BodyDecoder::Done => Ok(()),
            BodyDecoder::UntilClose => {
                *self = BodyDecoder::Done;
                Ok(())
            }
            BodyDecoder::Length { left } => Err(DecodeError::new(
                DecodeErrorKind::Http(format!("early EOF: {left} body byte(s) missing")),
                0,
            )),
            BodyDecoder::Chunked(dec) => Err(DecodeError::new(
                DecodeErrorKind::Chunked("early EOF in a chunked body"),
                dec.offset(),
            )),
        }
    }

    /// How many more input bytes belong to this body, when the framing says
    /// (Content-Length: what is left; finished: 0); `None` for chunked and until-close
    /// bodies, whose end only the bytes themselves tell.
    pub fn bytes_wanted(&self) -> Option<u64> {
        match self {
            BodyDecoder::Length { left } => Some(*left),
            BodyDecoder::Done => Some(0),
            BodyDecoder::Chunked(_) | BodyDecoder::UntilClose => None,
        }
    }

    /// Whether the body is complete.
    pub fn is_done(&self) -> bool {
        matches!(self, BodyDecoder::Done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(framing: BodyFraming, input: &[u8]) -> (Vec<u8>, bool, Bytes) {
        let mut dec = BodyDecoder::new(framing, &Limits::default());
        let mut input = Bytes::copy_from_slice(input);
        let mut out = Vec::new();
        while let Some(ev) = dec.decode(&mut input).unwrap() {
            match ev {
                BodyEvent::Data(d) => out.extend_from_slice(&d),
                BodyEvent::End => return (out, true, input),
            }
        }
        (out, false, input)
    }

    #[test]
    fn each_framing_ends_where_it_should() {
        assert_eq!(
            collect(BodyFraming::Length(3), b"abcNEXT"),
            (b"abc".to_vec(), true, Bytes::from_static(b"NEXT"))
        );
        assert_eq!(
            collect(BodyFraming::Chunked, b"2\r\nab\r\n0\r\n\r\nNEXT"),
            (b"ab".to_vec(), true, Bytes::from_static(b"NEXT"))
        );
        assert_eq!(
            collect(BodyFraming::UntilClose, b"abc"),
            (b"abc".to_vec(), false, Bytes::new())
        );
        assert_eq!(
            collect(BodyFraming::Empty, b"NEXT"),
            (vec![], true, Bytes::from_static(b"NEXT"))
        );
    }

    #[test]
    fn early_eof_is_an_error_for_each_framing_but_until_close() {
        for (framing, input) in [
            (BodyFraming::Length(10), &b"abc"[..]),
            (BodyFraming::Chunked, &b"5\r\nab"[..]),
            (BodyFraming::Chunked, &b""[..]),
        ] {
            let mut dec = BodyDecoder::new(framing, &Limits::default());
            let mut input = Bytes::copy_from_slice(input);
            while let Some(BodyEvent::Data(_)) = dec.decode(&mut input).unwrap() {}
            assert!(dec.eof().is_err(), "{framing:?}");
        }
        let mut dec = BodyDecoder::new(BodyFraming::UntilClose, &Limits::default());
        assert!(dec.eof().is_ok());
    }
}
