//! `rafthttp decode`: the codecs' face for people debugging a cluster. Reads a file (or
//! stdin) in pieces and runs it through the same sans-IO layers the transport uses:
//! optional HTTP head, optional chunked coding, then the stream's frame decoder.

use std::io::{BufWriter, Read, Write};
use std::path::PathBuf;

use bytes::{Bytes, BytesMut};
use clap::{Args, ValueEnum};
use rafthttp::codec::{
    FrameInfo, FrameKind, MessageStreamDecoder, MsgAppV1Decoder, MsgAppV2Decoder,
    PipelineBodyDecoder, SnapshotDecoder, SnapshotPart,
};
use rafthttp::http::chunked::{ChunkedDecoder, ChunkedEvent};
use rafthttp::http::head::{BodyFraming, Head, StartLine, DEFAULT_MAX_HEAD};
use rafthttp::json::MessageJson;
use rafthttp::limits::{Limits, DEFAULT_MAX_FRAME};
use rafthttp::raftpb::Message;
use rafthttp::DecodeError;

/// Which rafthttp body format the input holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum StreamFormat {
    /// `/raft/stream/msgapp/<id>`: tagged msgappv2 frames.
    Msgappv2,
    /// `/raft/stream/message/<id>`: u64 length + Message.
    Message,
    /// `/raft/stream/<id>` (etcd 2.x): msgapp v1 batches; needs `--term`.
    #[value(name = "msgapp-v1")]
    MsgappV1,
    /// `POST /raft`: one bare Message.
    Pipeline,
    /// `POST /raft/snapshot`: envelope + database bytes.
    Snapshot,
}

/// Arguments of `rafthttp decode`.
#[derive(Debug, Args)]
pub struct DecodeArgs {
    /// Input file, or `-` for standard input.
    pub input: PathBuf,
    /// The body format. With `--http` it may be left out for a `POST /raft` or
    /// `/raft/snapshot` request, where the path says it.
    #[arg(long, value_enum)]
    pub stream: Option<StreamFormat>,
    /// The input is an HTTP/1.1 chunked body.
    #[arg(long)]
    pub chunked: bool,
    /// The input is a raw HTTP request or response, head included; its headers say how
    /// the body is framed.
    #[arg(long)]
    pub http: bool,
    /// Local member ID (hex): the implied `to` of AppEntries and v1 frames.
    #[arg(long, value_parser = super::parse_hex_id, default_value = "0")]
    pub local: u64,
    /// Remote member ID (hex): the implied `from` of AppEntries and v1 frames.
    #[arg(long, value_parser = super::parse_hex_id, default_value = "0")]
    pub remote: u64,
    /// The stream's term, for msgapp v1 (its `X-Raft-Term`).
    #[arg(long, default_value_t = 0)]
    pub term: u64,
    /// Largest frame accepted, in bytes.
    #[arg(long, default_value_t = DEFAULT_MAX_FRAME)]
    pub max_frame: u64,
}

/// Decodes per `args`, printing JSON lines on stdout. Errors are one line, naming the
/// byte offset.
pub fn run(args: &DecodeArgs) -> Result<(), String> {
    let mut reader: Box<dyn Read> = if args.input.as_os_str() == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        Box::new(
            std::fs::File::open(&args.input)
                .map_err(|e| format!("cannot open {}: {e}", args.input.display()))?,
        )
    };
    let stdout = std::io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    let mut pipeline = Pipeline::new(args);
    let mut buf = BytesMut::with_capacity(64 * 1024);
    loop {
        buf.resize(64 * 1024, 0);
        let n = match reader.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("read error: {e}")),
        };
        if n == 0 {
            break;
        }
        buf.truncate(n);
        pipeline.feed(buf.split().freeze(), &mut out)?;
    }
    pipeline.finish(&mut out)?;
    out.flush().map_err(write_error)
}

/// The frame decoder for one body format.
enum Frames {
    V2(MsgAppV2Decoder),
    Message(MessageStreamDecoder),
    V1(MsgAppV1Decoder),
    Pipeline(Option<PipelineBodyDecoder>),
    Snapshot(SnapshotDecoder),
}

/// How the body is delimited in the input.
enum Body {
    /// Waiting for the HTTP head to complete.
    Head(BytesMut),
    /// The rest of the input is the body.
    Raw,
    /// This many body bytes remain.
    Length(u64),
    /// A chunked body.
    Chunked(ChunkedDecoder),
    /// The body has ended; anything after it is ignored.
    Ended,
}

struct Pipeline<'a> {
    args: &'a DecodeArgs,
    limits: Limits,
    body: Body,
    frames: Option<Frames>,
    /// Where the body starts in the input (after an HTTP head), to report input offsets.
    body_start: u64,
    /// Whether the body is chunked, so frame offsets are not input offsets.
    chunked: bool,
    msg: Message,
}

impl<'a> Pipeline<'a> {
    fn new(args: &'a DecodeArgs) -> Self {
        let limits = Limits::default().with_max_frame(args.max_frame);
        let body = if args.http {
            Body::Head(BytesMut::new())
        } else if args.chunked {
            Body::Chunked(ChunkedDecoder::new(&limits))
        } else {
            Body::Raw
        };
        let mut p = Pipeline {
            args,
            limits,
            body,
            frames: None,
            body_start: 0,
            chunked: args.chunked && !args.http,
            msg: Message::default(),
        };
        if !args.http {
            p.frames = args.stream.map(|s| p.frames_for(s, None));
        }
        p
    }

    fn frames_for(&self, format: StreamFormat, content_length: Option<u64>) -> Frames {
        let a = self.args;
        match format {
            StreamFormat::Msgappv2 => {
                Frames::V2(MsgAppV2Decoder::new(a.local, a.remote, &self.limits))
            }
            StreamFormat::Message => Frames::Message(MessageStreamDecoder::new(&self.limits)),
            StreamFormat::MsgappV1 => Frames::V1(MsgAppV1Decoder::new(
                a.local,
                a.remote,
                a.term,
                &self.limits,
            )),
            // A Content-Length over the cap was refused in start_body.
            StreamFormat::Pipeline => {
                Frames::Pipeline(PipelineBodyDecoder::new(content_length, &self.limits).ok())
            }
            StreamFormat::Snapshot => Frames::Snapshot(SnapshotDecoder::new(&self.limits)),
        }
    }

    /// Describes an error from the frame layer: offsets are of the input file unless the
    /// body was chunked, where they count de-chunked body bytes.
    fn frame_error(&self, mut e: DecodeError) -> String {
        if self.chunked {
            return format!("{e}, counted in the de-chunked body");
        }
        e.offset += self.body_start;
        e.to_string()
    }

    fn feed(&mut self, mut piece: Bytes, out: &mut impl Write) -> Result<(), String> {
        if let Body::Head(buf) = &mut self.body {
            buf.extend_from_slice(&piece);
            let Some(head) = parse_head(buf).map_err(|e| e.to_string())? else {
                return Ok(());
            };
            piece = buf.split_off(head.len).freeze();
            self.start_body(&head)?;
        }
        match &mut self.body {
            Body::Head(_) | Body::Ended => Ok(()),
            Body::Raw => self.feed_frames(piece, out),
            Body::Length(left) => {
                let take = (*left).min(piece.len() as u64) as usize;
                *left -= take as u64;
                if *left == 0 {
                    self.body = Body::Ended;
                }
                self.feed_frames(piece.split_to(take), out)
            }
            Body::Chunked(_) => loop {
                let Body::Chunked(dec) = &mut self.body else {
                    return Ok(());
                };
                let event = dec.decode(&mut piece).map_err(|mut e| {
                    e.offset += self.body_start;
                    e.to_string()
                })?;
                match event {
                    None => return Ok(()),
                    Some(ChunkedEvent::Data(d)) => self.feed_frames(d, out)?,
                    Some(ChunkedEvent::End) => {
                        self.body = Body::Ended;
                        return Ok(());
                    }
                }
            },
        }
    }

    fn start_body(&mut self, head: &Head) -> Result<(), String> {
        self.body_start = head.len as u64;
        let framing = head.body_framing().map_err(|e| e.to_string())?;
        let format = match (self.args.stream, &head.start) {
            (Some(f), _) => f,
            (None, StartLine::Request { method, path }) if method == "POST" && path == "/raft" => {
                StreamFormat::Pipeline
            }
            (None, StartLine::Request { method, path }) if method == "POST" && path == "/raft/snapshot" => {
                StreamFormat::Snapshot
            }
            (None, StartLine::Request { method, path }) if method == "GET" => {
                return Err(format!(
                    "GET {path} has no body: the frames are in its response (decode that with --stream)"
                ))
            }
            _ => return Err("--stream is required to decode this input".to_string()),
        };
        let content_length = match framing {
            BodyFraming::Length(n) => Some(n),
            _ => None,
        };
        if format == StreamFormat::Pipeline {
            PipelineBodyDecoder::new(content_length, &self.limits).map_err(|mut e| {
                e.offset = self.body_start;
                e.to_string()
            })?;
        }
        self.frames = Some(self.frames_for(format, content_length));
        self.body = match framing {
            BodyFraming::Empty | BodyFraming::Length(0) => Body::Ended,
            BodyFraming::Length(n) => Body::Length(n),
            BodyFraming::Chunked => {
                self.chunked = true;
                Body::Chunked(ChunkedDecoder::new(&self.limits))
            }
            BodyFraming::UntilClose => Body::Raw,
        };
        Ok(())
    }

    fn feed_frames(&mut self, mut piece: Bytes, out: &mut impl Write) -> Result<(), String> {
        let Some(frames) = &mut self.frames else {
            return Err("--stream is required to decode this input".to_string());
        };
        let result = match frames {
            Frames::V2(d) => drain(&mut piece, out, &mut self.msg, |p, m| d.decode(p, m)),
            Frames::Message(d) => drain(&mut piece, out, &mut self.msg, |p, m| d.decode(p, m)),
            Frames::V1(d) => drain(&mut piece, out, &mut self.msg, |p, m| d.decode(p, m)),
            Frames::Pipeline(d) => match d.as_mut() {
                Some(d) => d.push(piece).map_err(Err),
                None => Ok(()),
            },
            Frames::Snapshot(d) => loop {
                match d.decode(&mut piece) {
                    Ok(Some(SnapshotPart::Envelope(m))) => {
                        let info = FrameInfo {
                            kind: FrameKind::Message,
                            offset: 0,
                            len: 0,
                        };
                        if let Err(io) = print(out, &m, info, false) {
                            break Err(Ok(io));
                        }
                    }
                    Ok(Some(SnapshotPart::Data(_))) => {}
                    Ok(None) => break Ok(()),
                    Err(e) => break Err(Err(e)),
                }
            },
        };
        match result {
            Ok(()) => Ok(()),
            Err(Ok(io)) => Err(io),
            Err(Err(e)) => Err(self.frame_error(e)),
        }
    }

    fn finish(&mut self, out: &mut impl Write) -> Result<(), String> {
        match &self.body {
            Body::Head(_) => return Err("input ended inside the HTTP head".to_string()),
            Body::Length(left) => {
                return Err(format!(
                    "input ended {left} byte(s) before the end of the body"
                ))
            }
            Body::Chunked(dec) if !dec.is_done() => {
                if !dec.at_chunk_boundary() {
                    let mut e = dec.finish().unwrap_err();
                    e.offset += self.body_start;
                    return Err(e.to_string());
                }
                eprintln!("note: the chunked body has no last chunk (the stream was cut)");
            }
            _ => {}
        }
        let result = match self.frames.as_mut() {
            None => Ok(()),
            Some(Frames::V2(d)) => d.finish(),
            Some(Frames::Message(d)) => d.finish(),
            Some(Frames::V1(d)) => d.finish(),
            Some(Frames::Pipeline(d)) => match d.take().map(PipelineBodyDecoder::finish) {
                Some(Ok(m)) => {
                    let info = FrameInfo {
                        kind: FrameKind::Message,
                        offset: 0,
                        len: 0,
                    };
                    return print(out, &m, info, false);
                }
                Some(Err(e)) => Err(e),
                None => Ok(()),
            },
            Some(Frames::Snapshot(d)) => match d.finish() {
                Ok(n) => {
                    return writeln!(out, r#"{{"frame":"SnapshotData","data_len":{n}}}"#)
                        .map_err(write_error)
                }
                Err(e) => Err(e),
            },
        };
        result.map_err(|e| self.frame_error(e))
    }
}

fn parse_head(buf: &[u8]) -> Result<Option<Head>, DecodeError> {
    if buf.starts_with(b"HTTP/") {
        Head::parse_response(buf, DEFAULT_MAX_HEAD)
    } else {
        Head::parse_request(buf, DEFAULT_MAX_HEAD)
    }
}

type DrainError = Result<String, DecodeError>;

fn drain(
    piece: &mut Bytes,
    out: &mut impl Write,
    msg: &mut Message,
    mut decode: impl FnMut(&mut Bytes, &mut Message) -> Result<Option<FrameInfo>, DecodeError>,
) -> Result<(), DrainError> {
    while let Some(info) = decode(piece, msg).map_err(Err)? {
        print(out, msg, info, true).map_err(Ok)?;
    }
    Ok(())
}

/// Describes a write error; a closed pipe (`rafthttp decode … | head`) ends the
/// program quietly, as other command-line tools do.
fn write_error(e: std::io::Error) -> String {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        std::process::exit(0);
    }
    format!("write error: {e}")
}

fn print(
    out: &mut impl Write,
    m: &Message,
    info: FrameInfo,
    with_position: bool,
) -> Result<(), String> {
    let mut j = MessageJson::from_message(m);
    j.frame = Some(info.kind.name().to_string());
    if with_position {
        j.offset = Some(info.offset);
        j.len = Some(info.len);
    }
    serde_json::to_writer(&mut *out, &j).map_err(|e| write_error(e.into()))?;
    out.write_all(b"\n").map_err(write_error)
}
