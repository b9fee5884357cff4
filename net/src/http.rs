//! HTTP/1.1 server logic with no I/O: a [`Connection`] takes the bytes a
//! socket read, answers every complete request in order (pipelining) by
//! calling the application's handler, and appends the responses for the
//! socket to write. `httparse` parses request heads; bodies
//! (`Content-Length` or chunked) are read here.
//!
//! Limits (RFC 9110 section 15.5 names the statuses): a request line over
//! [`Limits::max_uri_bytes`] gets 414, a head over
//! [`Limits::max_head_bytes`] or with more than [`Limits::max_headers`]
//! headers 431, a body over [`Limits::max_body_bytes`] 413, a malformed
//! request 400, an HTTP version other than 1.0/1.1 505, an unknown method
//! or transfer coding 501. Each error response closes the connection. A
//! connection idle past its deadline with half a request buffered gets 408
//! ([`Connection::timeout`]).

use alloc::borrow::Cow;
use alloc::boxed::Box;
use alloc::vec::Vec;
use core::fmt::Write as _;

/// What a connection accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Request line and headers, CRLFs included.
    pub max_head_bytes: usize,
    /// Header lines.
    pub max_headers: usize,
    /// The request line.
    pub max_uri_bytes: usize,
    /// Decoded body.
    pub max_body_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self { max_head_bytes: 8 * 1024, max_headers: 32, max_uri_bytes: 2 * 1024, max_body_bytes: 64 * 1024 }
    }
}

/// Header lines a connection can parse at most (the array `httparse`
/// fills lives on the stack).
pub const MAX_HEADERS: usize = 64;

/// Methods the server knows (RFC 9110 section 9); others get 501.
const KNOWN_METHODS: [&str; 9] = ["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "TRACE", "CONNECT"];

/// A parsed request, as the handler sees it.
#[derive(Debug)]
pub struct Request<'a> {
    /// `GET`, `POST`, ... (one of the known methods).
    pub method: &'a str,
    /// The request target as sent (`/stats?format=json`).
    pub target: &'a str,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor_version: u8,
    /// The decoded body.
    pub body: &'a [u8],
    /// The value of the `Accept` header, if any.
    pub accept: Option<&'a str>,
    /// The value of the `Range` header, if any.
    pub range: Option<&'a str>,
    /// The value of the `If-None-Match` header, if any.
    pub if_none_match: Option<&'a str>,
    /// The value of the `If-Modified-Since` header, if any.
    pub if_modified_since: Option<&'a str>,
    /// The value of the `If-Range` header, if any.
    pub if_range: Option<&'a str>,
    /// The value of the `Accept-Encoding` header, if the request has
    /// exactly one such line (with several, `None`: the response is sent
    /// without a content coding, which every client takes).
    pub accept_encoding: Option<&'a str>,
}

impl Request<'_> {
    /// The target without its query.
    pub fn path(&self) -> &str {
        self.target.split_once('?').map_or(self.target, |(path, _)| path)
    }

    /// The query, without `?`.
    pub fn query(&self) -> Option<&str> {
        self.target.split_once('?').map(|(_, query)| query)
    }
}

/// What the handler answers.
#[derive(Debug)]
pub struct Response<'a> {
    /// Status code.
    pub status: u16,
    /// `Content-Type`.
    pub content_type: &'a str,
    /// Body (sent for every method but HEAD).
    pub body: Cow<'a, [u8]>,
    /// An extra header line (`Allow: GET, HEAD` for 405), without CRLF.
    pub extra_header: Option<&'a str>,
    /// More header lines, each ending in CRLF (`ETag: "x"\r\n`), made at run time.
    pub headers: alloc::string::String,
    /// Send `Vary: Accept-Encoding`: the response's coding followed the
    /// request's `Accept-Encoding` (a flag, not a line in `headers`, so
    /// that an uncoded response costs no allocation for it).
    pub vary_encoding: bool,
    /// A body too large to hold, sent in pieces after the head (then
    /// `body` is empty): see [`Response::streamed`].
    pub stream: Option<Streamed>,
}

/// Where a streamed body comes from (a file, read as it is sent).
pub trait BodySource {
    /// Fills the front of `buf` with the body's next bytes and returns how
    /// many; 0 or an error before the promised length cuts the response
    /// short (the connection then closes: the client sees a short body).
    fn read_body(&mut self, buf: &mut [u8]) -> Result<usize, BodyError>;
}

/// A [`BodySource`] failed (the reason is the source's to report).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BodyError;

/// A body of `len` bytes that `source` yields in order.
pub struct Streamed {
    /// Its length (the `Content-Length`).
    pub len: u64,
    /// Its bytes.
    pub source: Box<dyn BodySource>,
}

impl core::fmt::Debug for Streamed {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Streamed").field("len", &self.len).finish_non_exhaustive()
    }
}

impl<'a> Response<'a> {
    /// A response with a body.
    pub fn new(status: u16, content_type: &'a str, body: impl Into<Cow<'a, [u8]>>) -> Self {
        Self {
            status,
            content_type,
            body: body.into(),
            extra_header: None,
            headers: alloc::string::String::new(),
            vary_encoding: false,
            stream: None,
        }
    }

    /// A response whose `len`-byte body `source` yields as it is sent, so
    /// that no buffer of the body's size is needed (a whole large file read
    /// into memory first took as much memory as the file: one request for
    /// a file larger than the free memory ended the server).
    pub fn streamed(status: u16, content_type: &'a str, len: u64, source: Box<dyn BodySource>) -> Self {
        Self { stream: Some(Streamed { len, source }), ..Self::new(status, content_type, Vec::new()) }
    }

    /// A plain-text response naming the status.
    pub fn status(status: u16) -> Self {
        let mut text = alloc::string::String::new();
        let _ = writeln!(text, "{status} {}", reason(status));
        Self::new(status, "text/plain", text.into_bytes())
    }

    /// Whether this response may be sent gzip-coded, and whether `request`
    /// takes that: see [`Coding`]. Compressible are complete (not
    /// streamed) 200 bodies of at least [`MIN_GZIP_BYTES`] of a textual
    /// type ([`compressible_type`]) with no validator or coding of their
    /// own: an `ETag` names the stored bytes, and a coded body would need
    /// a tag of its own (RFC 9110 section 8.8.3), so files served with one
    /// go as they are stored.
    pub fn coding_for(&self, request: &Request<'_>) -> Coding {
        let has = |name: &str| {
            self.headers
                .split("\r\n")
                .chain(self.extra_header)
                .any(|line| line.split_once(':').is_some_and(|(field, _)| field.trim().eq_ignore_ascii_case(name)))
        };
        let candidate = self.status == 200
            && self.stream.is_none()
            && self.body.len() >= MIN_GZIP_BYTES
            && compressible_type(self.content_type)
            && !has("etag")
            && !has("content-encoding")
            && !has("content-range");
        if !candidate {
            Coding::Unchanged
        } else if accepts_gzip(request.accept_encoding) {
            Coding::Gzip
        } else {
            Coding::Identity
        }
    }

    /// Replaces the body with its gzip coding at `level` (1-9) and says so
    /// in the headers (`Content-Encoding: gzip`, `Vary: Accept-Encoding`);
    /// a body that would not shrink stays as it is, with the `Vary` only.
    /// For a response [`coding_for`](Self::coding_for) called
    /// [`Coding::Gzip`].
    pub fn encode_gzip(&mut self, level: u8) {
        let mut coded = Vec::new();
        if crate::gzip::compress(&self.body, level, &mut coded) && coded.len() < self.body.len() {
            self.body = Cow::Owned(coded);
            self.headers.push_str("Content-Encoding: gzip\r\n");
        }
        self.vary_encoding = true;
    }

    /// Marks a response whose coding depends on `Accept-Encoding` but that
    /// goes uncoded ([`Coding::Identity`]), so that caches keep the two
    /// apart.
    pub fn vary_on_encoding(&mut self) {
        self.vary_encoding = true;
    }
}

/// Bodies smaller than this go uncoded: the gzip header and trailer (18
/// bytes) and the block headers eat what compression would save (nginx's
/// `gzip_min_length` defaults to 20; the benchmark's nginx is given this
/// value too).
pub const MIN_GZIP_BYTES: usize = 256;

/// Whether a response goes gzip-coded ([`Response::coding_for`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Coding {
    /// Not a compressible response: sent as it is, no `Vary`.
    Unchanged,
    /// Compressible, but the client does not take gzip: sent as it is,
    /// with `Vary: Accept-Encoding` ([`Response::vary_on_encoding`]).
    Identity,
    /// Compressible and the client takes gzip ([`Response::encode_gzip`]).
    Gzip,
}

/// Whether a media type (parameters allowed) is text that compresses:
/// `text/*`, JSON, JavaScript, XML and SVG. Images, archives and octet
/// streams are usually compressed already.
pub fn compressible_type(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or("").trim();
    let Some((kind, subtype)) = essence.split_once('/') else { return false };
    kind.eq_ignore_ascii_case("text")
        || (kind.eq_ignore_ascii_case("application")
            && ["json", "javascript", "xml", "xhtml+xml", "wasm"].iter().any(|s| subtype.eq_ignore_ascii_case(s)))
        || (kind.eq_ignore_ascii_case("image") && subtype.eq_ignore_ascii_case("svg+xml"))
}

/// Whether an `Accept-Encoding` value (RFC 9110 section 12.5.3) takes
/// gzip: `gzip` (or its alias `x-gzip`) listed with a weight above 0, or,
/// when neither is listed, `*` with a weight above 0. No header, an empty
/// one, `gzip;q=0` and malformed weights (an element whose `q` is not a
/// qvalue counts as not listed) all mean no.
pub fn accepts_gzip(accept_encoding: Option<&str>) -> bool {
    let Some(value) = accept_encoding else { return false };
    let (mut gzip, mut any) = (None, None);
    for element in value.split(',') {
        let mut parts = element.split(';');
        let coding = parts.next().unwrap_or("").trim();
        let mut weight = Some(1000u16);
        for parameter in parts {
            let Some((name, text)) = parameter.split_once('=') else {
                weight = None;
                continue;
            };
            if name.trim().eq_ignore_ascii_case("q") {
                weight = weight.and(qvalue(text.trim()));
            }
        }
        let Some(weight) = weight else { continue };
        if coding.eq_ignore_ascii_case("gzip") || coding.eq_ignore_ascii_case("x-gzip") {
            gzip = Some(gzip.map_or(weight, |earlier: u16| earlier.max(weight)));
        } else if coding == "*" {
            any = Some(weight);
        }
    }
    gzip.or(any).is_some_and(|weight| weight > 0)
}

/// A qvalue (RFC 9110 section 12.4.2: `0` to `1` with up to three
/// decimals) in thousandths.
fn qvalue(text: &str) -> Option<u16> {
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    if fraction.len() > 3 || !fraction.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    let thousandths =
        fraction.bytes().chain(core::iter::repeat(b'0')).take(3).fold(0u16, |n, d| n * 10 + u16::from(d - b'0'));
    match whole {
        "0" => Some(thousandths),
        "1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

/// The reason phrase of a status (RFC 9110 section 15).
pub fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        204 => "No Content",
        206 => "Partial Content",
        301 => "Moved Permanently",
        304 => "Not Modified",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Content Too Large",
        414 => "URI Too Long",
        416 => "Range Not Satisfiable",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}

/// Whether the connection stays open after the responses written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Keep reading requests.
    KeepOpen,
    /// Write what was produced, then close.
    Close,
}

/// Counts of one connection (summed into `/stats`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnectionStats {
    /// Requests answered by the handler.
    pub requests: u64,
    /// Requests refused with a 4xx/5xx by the parser.
    pub rejected: u64,
}

/// One HTTP connection's state: bytes received and not yet consumed.
pub struct Connection {
    input: Vec<u8>,
    limits: Limits,
    closed: bool,
    stats: ConnectionStats,
    /// The body being streamed: bytes still to send, and their source.
    streaming: Option<(u64, Box<dyn BodySource>)>,
}

enum Body {
    None,
    Length(usize),
    Chunked,
}

/// A request whose head and body are complete: where its parts are.
struct Parsed {
    total: usize,
    method: (usize, usize),
    target: (usize, usize),
    minor_version: u8,
    keep_alive: bool,
    accept: Option<(usize, usize)>,
    range: Option<(usize, usize)>,
    if_none_match: Option<(usize, usize)>,
    if_modified_since: Option<(usize, usize)>,
    if_range: Option<(usize, usize)>,
    accept_encoding: Option<(usize, usize)>,
    body: Vec<u8>,
    body_in_place: Option<(usize, usize)>,
}

// `Complete` is returned once per request and moved at once into the
// connection's queue; boxing it would allocate per request.
#[allow(clippy::large_enum_variant)]
enum Step {
    Partial,
    Complete(Parsed),
    Reject(u16),
}

fn span(base: &[u8], part: &[u8]) -> (usize, usize) {
    let start = part.as_ptr() as usize - base.as_ptr() as usize;
    (start, start + part.len())
}

fn header_has_token(value: &[u8], token: &str) -> bool {
    value.split(|&byte| byte == b',').any(|item| item.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

impl Connection {
    /// A fresh connection.
    pub fn new(limits: Limits) -> Self {
        Self { input: Vec::new(), limits, closed: false, stats: ConnectionStats::default(), streaming: None }
    }

    /// Whether a streamed body is still being sent: the caller moves it
    /// with [`stream_into`](Self::stream_into) until this is false, then
    /// calls [`respond`](Self::respond) again for requests that were
    /// pipelined behind it (they wait, in order).
    pub fn streaming(&self) -> bool {
        self.streaming.is_some()
    }

    /// Appends up to `max` bytes of the streamed body to `out`. An error
    /// (the source failed, or ended before its length) closes the
    /// connection: the caller sends what `out` holds and closes.
    pub fn stream_into(&mut self, out: &mut Vec<u8>, max: usize) -> Result<(), BodyError> {
        let Some((left, source)) = self.streaming.as_mut() else { return Ok(()) };
        let want = (*left).min(max.max(1) as u64) as usize;
        let start = out.len();
        out.resize(start + want, 0);
        let got = match source.read_body(&mut out[start..]) {
            Ok(got) if got > 0 => got.min(want),
            _ => {
                out.truncate(start);
                self.streaming = None;
                self.closed = true;
                return Err(BodyError);
            }
        };
        out.truncate(start + got);
        *left -= got as u64;
        if *left == 0 {
            self.streaming = None;
        }
        Ok(())
    }

    /// Bytes the connection may still buffer: the caller reads at most this
    /// much (a client that sends more than one request head and body can
    /// hold must wait for answers).
    pub fn input_room(&self) -> usize {
        (self.limits.max_head_bytes + self.limits.max_body_bytes + 64).saturating_sub(self.input.len())
    }

    /// Whether part of a request is buffered.
    pub fn has_partial_request(&self) -> bool {
        !self.input.is_empty()
    }

    /// The connection's counts.
    pub fn stats(&self) -> ConnectionStats {
        self.stats
    }

    /// Takes bytes read from the socket (at most [`input_room`](Self::input_room)
    /// are kept; the rest would be refused by the limits anyway).
    pub fn feed(&mut self, data: &[u8]) {
        let room = self.input_room();
        self.input.extend_from_slice(&data[..data.len().min(room)]);
    }

    /// Answers every complete request buffered, in order, appending the
    /// responses to `out`. `date` is the `Date` header's value, if the
    /// system knows the time. A streamed response stops the answering
    /// after its head ([`streaming`](Self::streaming)); `Close` then means
    /// close once its body is sent.
    pub fn respond(
        &mut self,
        out: &mut Vec<u8>,
        date: Option<&str>,
        mut handler: impl FnMut(&Request<'_>) -> Response<'static>,
    ) -> Outcome {
        while !self.closed && self.streaming.is_none() && !self.input.is_empty() {
            match self.step() {
                Step::Partial => break,
                Step::Reject(status) => {
                    self.stats.rejected += 1;
                    write_response(out, 1, &Response::status(status), false, false, date);
                    self.closed = true;
                }
                Step::Complete(parsed) => {
                    let body = match parsed.body_in_place {
                        Some((start, end)) => &self.input[start..end],
                        None => &parsed.body[..],
                    };
                    let method = core::str::from_utf8(&self.input[parsed.method.0..parsed.method.1]).unwrap_or("");
                    let target = core::str::from_utf8(&self.input[parsed.target.0..parsed.target.1]).unwrap_or("");
                    let text = |part: Option<(usize, usize)>| {
                        part.and_then(|(start, end)| core::str::from_utf8(&self.input[start..end]).ok())
                    };
                    let request = Request {
                        method,
                        target,
                        minor_version: parsed.minor_version,
                        body,
                        accept: text(parsed.accept),
                        range: text(parsed.range),
                        if_none_match: text(parsed.if_none_match),
                        if_modified_since: text(parsed.if_modified_since),
                        if_range: text(parsed.if_range),
                        accept_encoding: text(parsed.accept_encoding),
                    };
                    let mut response = handler(&request);
                    let head_only = method == "HEAD";
                    write_response(out, parsed.minor_version, &response, parsed.keep_alive, head_only, date);
                    if let Some(stream) = response.stream.take() {
                        if !head_only && response.status != 304 && stream.len > 0 {
                            self.streaming = Some((stream.len, stream.source));
                        }
                    }
                    self.stats.requests += 1;
                    self.input.drain(..parsed.total);
                    if !parsed.keep_alive {
                        self.closed = true;
                    }
                }
            }
        }
        if self.closed {
            Outcome::Close
        } else {
            Outcome::KeepOpen
        }
    }

    /// The connection's deadline passed: a 408 if a request was under way
    /// (then close), nothing for an idle keep-alive connection.
    pub fn timeout(&mut self, out: &mut Vec<u8>, date: Option<&str>) {
        if !self.input.is_empty() && !self.closed {
            self.stats.rejected += 1;
            write_response(out, 1, &Response::status(408), false, false, date);
        }
        self.closed = true;
    }

    fn step(&self) -> Step {
        let limits = &self.limits;
        let input = &self.input[..];
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let max_headers = limits.max_headers.min(MAX_HEADERS);
        let mut request = httparse::Request::new(&mut headers[..max_headers]);
        let head_end = match request.parse(input) {
            Ok(httparse::Status::Complete(end)) => end,
            Ok(httparse::Status::Partial) => {
                let line_end = input.windows(2).position(|pair| pair == b"\r\n");
                return match line_end {
                    None if input.len() > limits.max_uri_bytes => Step::Reject(414),
                    _ if input.len() > limits.max_head_bytes => Step::Reject(431),
                    _ => Step::Partial,
                };
            }
            Err(httparse::Error::TooManyHeaders) => return Step::Reject(431),
            Err(httparse::Error::Version) => return Step::Reject(505),
            Err(_) => return Step::Reject(400),
        };
        if head_end > limits.max_head_bytes {
            return Step::Reject(431);
        }
        let (Some(method), Some(target), Some(minor_version)) = (request.method, request.path, request.version) else {
            return Step::Reject(400);
        };
        if method.len() + target.len() + 10 > limits.max_uri_bytes {
            return Step::Reject(414);
        }
        if !KNOWN_METHODS.contains(&method) {
            return Step::Reject(501);
        }
        let mut keep_alive = minor_version >= 1;
        let mut body = Body::None;
        let mut content_length: Option<usize> = None;
        let mut host = false;
        let mut accept = None;
        // The span of the one Accept-Encoding line; Some(None) once a second appears.
        let mut accept_encoding: Option<Option<(usize, usize)>> = None;
        let (mut range, mut if_none_match, mut if_modified_since, mut if_range) = (None, None, None, None);
        for header in request.headers.iter() {
            let name = header.name;
            if name.eq_ignore_ascii_case("connection") {
                if header_has_token(header.value, "close") {
                    keep_alive = false;
                } else if header_has_token(header.value, "keep-alive") {
                    keep_alive = true;
                }
            } else if name.eq_ignore_ascii_case("host") {
                if host {
                    return Step::Reject(400);
                }
                host = true;
            } else if name.eq_ignore_ascii_case("accept") {
                accept = Some(span(input, header.value));
            } else if name.eq_ignore_ascii_case("accept-encoding") {
                accept_encoding = Some(accept_encoding.map_or(Some(span(input, header.value)), |_| None));
            } else if name.eq_ignore_ascii_case("range") {
                range = Some(span(input, header.value));
            } else if name.eq_ignore_ascii_case("if-none-match") {
                if_none_match = Some(span(input, header.value));
            } else if name.eq_ignore_ascii_case("if-modified-since") {
                if_modified_since = Some(span(input, header.value));
            } else if name.eq_ignore_ascii_case("if-range") {
                if_range = Some(span(input, header.value));
            } else if name.eq_ignore_ascii_case("content-length") {
                let Some(length) = core::str::from_utf8(header.value)
                    .ok()
                    .filter(|text| !text.is_empty() && text.bytes().all(|byte| byte.is_ascii_digit()))
                    .and_then(|text| text.parse::<usize>().ok())
                else {
                    return Step::Reject(400);
                };
                if content_length.is_some_and(|earlier| earlier != length) {
                    return Step::Reject(400);
                }
                content_length = Some(length);
                if !matches!(body, Body::Chunked) {
                    body = Body::Length(length);
                }
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                // Only `chunked` is implemented (RFC 9112 section 7), and it
                // must be the final coding.
                let last = header.value.rsplit(|&byte| byte == b',').next().unwrap_or(b"").trim_ascii();
                if !last.eq_ignore_ascii_case(b"chunked") || header.value.split(|&b| b == b',').count() > 1 {
                    return Step::Reject(501);
                }
                body = Body::Chunked;
            }
        }
        // RFC 9112 section 3.2: a 1.1 request without Host is a 400.
        if minor_version == 1 && !host {
            return Step::Reject(400);
        }
        // RFC 9112 section 6.1: both framings at once is a smuggling vector.
        if matches!(body, Body::Chunked) && content_length.is_some() {
            return Step::Reject(400);
        }
        let method = span(input, method.as_bytes());
        let target = span(input, target.as_bytes());
        let mut parsed = Parsed {
            total: head_end,
            method,
            target,
            minor_version,
            keep_alive,
            accept,
            range,
            if_none_match,
            if_modified_since,
            if_range,
            accept_encoding: accept_encoding.flatten(),
            body: Vec::new(),
            body_in_place: None,
        };
        match body {
            Body::None => Step::Complete(parsed),
            Body::Length(length) => {
                if length > limits.max_body_bytes {
                    return Step::Reject(413);
                }
                if input.len() - head_end < length {
                    return Step::Partial;
                }
                parsed.body_in_place = Some((head_end, head_end + length));
                parsed.total = head_end + length;
                Step::Complete(parsed)
            }
            Body::Chunked => match decode_chunked(&input[head_end..], limits.max_body_bytes) {
                Chunked::Partial => Step::Partial,
                Chunked::Reject(status) => Step::Reject(status),
                Chunked::Complete { body, consumed } => {
                    parsed.body = body;
                    parsed.total = head_end + consumed;
                    Step::Complete(parsed)
                }
            },
        }
    }
}

enum Chunked {
    Partial,
    Reject(u16),
    Complete { body: Vec<u8>, consumed: usize },
}

/// Decodes a chunked body (RFC 9112 section 7.1) from the start of `input`.
fn decode_chunked(input: &[u8], max_body: usize) -> Chunked {
    let mut body = Vec::new();
    let mut at = 0;
    loop {
        let (size_bytes, size) = match httparse::parse_chunk_size(&input[at..]) {
            Ok(httparse::Status::Complete(found)) => found,
            Ok(httparse::Status::Partial) => return Chunked::Partial,
            Err(_) => return Chunked::Reject(400),
        };
        at += size_bytes;
        if size == 0 {
            // Trailer fields, then an empty line; trailers are skipped.
            loop {
                let rest = &input[at..];
                let Some(line_end) = rest.windows(2).position(|pair| pair == b"\r\n") else {
                    return Chunked::Partial;
                };
                at += line_end + 2;
                if line_end == 0 {
                    return Chunked::Complete { body, consumed: at };
                }
            }
        }
        let size = match usize::try_from(size) {
            Ok(size) if body.len().saturating_add(size) <= max_body => size,
            _ => return Chunked::Reject(413),
        };
        if input.len() - at < size + 2 {
            return Chunked::Partial;
        }
        body.extend_from_slice(&input[at..at + size]);
        at += size;
        if &input[at..at + 2] != b"\r\n" {
            return Chunked::Reject(400);
        }
        at += 2;
    }
}

/// Appends one response.
fn write_response(
    out: &mut Vec<u8>,
    minor_version: u8,
    response: &Response<'_>,
    keep_alive: bool,
    head_only: bool,
    date: Option<&str>,
) {
    struct Sink<'a>(&'a mut Vec<u8>);
    impl core::fmt::Write for Sink<'_> {
        fn write_str(&mut self, text: &str) -> core::fmt::Result {
            self.0.extend_from_slice(text.as_bytes());
            Ok(())
        }
    }
    let mut sink = Sink(out);
    let _ = write!(
        sink,
        "HTTP/1.{} {} {}\r\nServer: toro\r\n",
        minor_version.min(1),
        response.status,
        reason(response.status)
    );
    if let Some(date) = date {
        let _ = write!(sink, "Date: {date}\r\n");
    }
    // A 304 has no content: no length or type of its own (RFC 9110 section 15.4.5).
    if response.status != 304 {
        let length = response.stream.as_ref().map_or(response.body.len() as u64, |stream| stream.len);
        let _ = write!(sink, "Content-Type: {}\r\nContent-Length: {length}\r\n", response.content_type);
    }
    if let Some(extra) = response.extra_header {
        let _ = write!(sink, "{extra}\r\n");
    }
    sink.0.extend_from_slice(response.headers.as_bytes());
    if response.vary_encoding {
        sink.0.extend_from_slice(b"Vary: Accept-Encoding\r\n");
    }
    match (keep_alive, minor_version) {
        (false, _) => sink.0.extend_from_slice(b"Connection: close\r\n"),
        (true, 0) => sink.0.extend_from_slice(b"Connection: keep-alive\r\n"),
        (true, _) => {}
    }
    sink.0.extend_from_slice(b"\r\n");
    if !head_only && response.status != 304 {
        sink.0.extend_from_slice(&response.body);
    }
}

/// Formats a Unix time as an IMF-fixdate (RFC 9110 section 5.6.7), e.g.
/// `Tue, 01 Dec 2026 20:13:36 GMT`.
pub fn http_date(unix_seconds: u64, out: &mut alloc::string::String) {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let days = unix_seconds / 86_400;
    let seconds = unix_seconds % 86_400;
    // Civil from days (Howard Hinnant's algorithm), epoch 1970-01-01.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let _ = write!(
        out,
        "{}, {:02} {} {} {:02}:{:02}:{:02} GMT",
        DAYS[(days % 7) as usize],
        day,
        MONTHS[(month - 1) as usize],
        year,
        seconds / 3600,
        seconds / 60 % 60,
        seconds % 60
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn site(request: &Request<'_>) -> Response<'static> {
        match (request.method, request.path()) {
            ("GET" | "HEAD", "/") => Response::new(200, "text/html", &b"<html>hi</html>"[..]),
            ("POST", "/echo") => Response::new(200, "application/octet-stream", request.body.to_vec()),
            (_, "/") => Response { extra_header: Some("Allow: GET, HEAD"), ..Response::status(405) },
            _ => Response::status(404),
        }
    }

    fn run(input: &[u8]) -> (String, Outcome) {
        let mut connection = Connection::new(Limits::default());
        connection.feed(input);
        let mut out = Vec::new();
        let outcome = connection.respond(&mut out, Some("Thu, 01 Jan 1970 00:00:00 GMT"), site);
        (String::from_utf8(out).unwrap(), outcome)
    }

    fn statuses(text: &str) -> Vec<u16> {
        text.match_indices("HTTP/1.").map(|(at, _)| text[at + 9..at + 12].parse().unwrap()).collect()
    }

    #[test]
    fn conditional_and_range_headers_reach_the_handler_and_304_has_no_content() {
        let mut connection = Connection::new(Limits::default());
        connection.feed(
            b"GET /f HTTP/1.1\r\nHost: a\r\nRange: bytes=1-2\r\nIf-None-Match: \"t\"\r\nIf-Modified-Since: Thu, 01 Jan 1970 00:00:00 GMT\r\n\r\nGET /g HTTP/1.1\r\nHost: a\r\n\r\n",
        );
        let mut seen = Vec::new();
        let mut out = Vec::new();
        connection.respond(&mut out, None, |request| {
            let owned = |value: Option<&str>| value.map(String::from);
            seen.push((owned(request.range), owned(request.if_none_match), owned(request.if_modified_since)));
            let mut response = Response::new(304, "text/plain", &b"never sent"[..]);
            response.headers.push_str("ETag: \"t\"\r\n");
            response
        });
        assert_eq!(
            seen,
            [
                (Some("bytes=1-2".into()), Some("\"t\"".into()), Some("Thu, 01 Jan 1970 00:00:00 GMT".into())),
                (None, None, None)
            ]
        );
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text.matches("HTTP/1.1 304 Not Modified\r\nServer: toro\r\nETag: \"t\"\r\n\r\n").count(),
            2,
            "{text}"
        );
        assert!(!text.contains("Content-Length") && !text.contains("never sent"));
    }

    /// A body in pieces of at most `piece` bytes; `fail_at` ends it early.
    struct Counter {
        next: u8,
        piece: usize,
        fail_at: Option<usize>,
        sent: usize,
    }

    impl BodySource for Counter {
        fn read_body(&mut self, buf: &mut [u8]) -> Result<usize, BodyError> {
            if self.fail_at.is_some_and(|at| self.sent >= at) {
                return Err(BodyError);
            }
            let n = buf.len().min(self.piece);
            for byte in &mut buf[..n] {
                *byte = self.next;
                self.next = self.next.wrapping_add(1);
            }
            self.sent += n;
            Ok(n)
        }
    }

    fn streaming_site(request: &Request<'_>) -> Response<'static> {
        match request.path() {
            "/big" => Response::streamed(
                200,
                "application/octet-stream",
                1000,
                Box::new(Counter { next: 0, piece: 64, fail_at: None, sent: 0 }),
            ),
            "/broken" => Response::streamed(
                200,
                "application/octet-stream",
                1000,
                Box::new(Counter { next: 0, piece: 64, fail_at: Some(300), sent: 0 }),
            ),
            _ => site(request),
        }
    }

    /// Streams the body and answers what is buffered behind it, as the
    /// server's loop does; the bytes sent and whether it ended in an error.
    fn drive(connection: &mut Connection, out: &mut Vec<u8>) -> (Outcome, bool) {
        loop {
            let outcome = connection.respond(out, None, streaming_site);
            if !connection.streaming() {
                return (outcome, false);
            }
            while connection.streaming() {
                if connection.stream_into(out, 100).is_err() {
                    return (Outcome::Close, true);
                }
            }
        }
    }

    #[test]
    fn streamed_bodies_go_in_pieces_and_pipelined_requests_wait_their_turn() {
        let mut connection = Connection::new(Limits::default());
        connection.feed(b"GET /big HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\nHEAD /big HTTP/1.1\r\nHost: a\r\n\r\n");
        let mut out = Vec::new();
        assert_eq!(connection.respond(&mut out, None, streaming_site), Outcome::KeepOpen);
        assert!(connection.streaming(), "the head is out, the body is to come");
        let head = String::from_utf8(out.clone()).unwrap();
        assert!(head.ends_with("Content-Length: 1000\r\n\r\n"), "{head}");
        assert_eq!(statuses(&head), [200], "nothing answered behind the streamed one yet");
        let mut pieces = 0;
        while connection.streaming() {
            let before = out.len();
            connection.stream_into(&mut out, 100).unwrap();
            assert!(out.len() - before <= 100);
            pieces += 1;
        }
        assert!(pieces >= 10, "in pieces: {pieces}");
        let body = &out[head.len()..];
        assert_eq!(body.len(), 1000);
        assert!(body.iter().enumerate().all(|(i, &b)| b == i as u8), "the source's bytes, in order");
        let (outcome, failed) = drive(&mut connection, &mut out);
        assert!(!failed && outcome == Outcome::KeepOpen);
        let text = String::from_utf8_lossy(&out[head.len() + 1000..]).into_owned();
        assert_eq!(statuses(&text), [200, 200]);
        assert!(text.contains("<html>hi</html>") && text.ends_with("Content-Length: 1000\r\n\r\n"), "HEAD: no body");
        assert!(!connection.streaming());
    }

    #[test]
    fn a_streamed_body_that_fails_closes_the_connection() {
        let mut connection = Connection::new(Limits::default());
        connection.feed(b"GET /broken HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n");
        let mut out = Vec::new();
        let (outcome, failed) = drive(&mut connection, &mut out);
        assert!(failed && outcome == Outcome::Close);
        assert_eq!(connection.respond(&mut out, None, streaming_site), Outcome::Close, "nothing more is answered");
        let text = String::from_utf8_lossy(&out).into_owned();
        assert_eq!(statuses(&text), [200]);
        let mut closing = Connection::new(Limits::default());
        closing.feed(b"GET /big HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
        assert_eq!(closing.respond(&mut out, None, streaming_site), Outcome::Close);
        assert!(closing.streaming(), "close after the body");
    }

    #[test]
    fn get_keep_alive_and_head() {
        let (out, outcome) = run(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(outcome, Outcome::KeepOpen);
        assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
        assert!(out.contains("Content-Length: 15\r\n") && out.ends_with("<html>hi</html>"));
        assert!(out.contains("Date: Thu, 01 Jan 1970 00:00:00 GMT\r\n"));
        let (out, _) = run(b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\n");
        assert!(out.contains("Content-Length: 15\r\n") && out.ends_with("\r\n\r\n"), "HEAD has no body: {out}");
    }

    #[test]
    fn connection_close_and_http_1_0() {
        let (out, outcome) = run(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
        assert_eq!(outcome, Outcome::Close);
        assert!(out.contains("Connection: close\r\n"));
        let (_, outcome) = run(b"GET / HTTP/1.0\r\n\r\n");
        assert_eq!(outcome, Outcome::Close, "1.0 closes by default");
        let (out, outcome) = run(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
        assert_eq!(outcome, Outcome::KeepOpen);
        assert!(out.starts_with("HTTP/1.0 200") && out.contains("Connection: keep-alive\r\n"));
    }

    #[test]
    fn pipelined_requests_answered_in_order() {
        let (out, outcome) = run(
            b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET /nope HTTP/1.1\r\nHost: a\r\n\r\nPOST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabcGET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
        );
        assert_eq!(statuses(&out), [200, 404, 200, 200], "nothing after Connection: close");
        assert!(out.contains("\r\n\r\nabc"));
        assert_eq!(outcome, Outcome::Close);
    }

    #[test]
    fn chunked_body() {
        let (out, _) = run(b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nWiki\r\n5;ext=1\r\npedia\r\n0\r\nTrailer: x\r\n\r\n");
        assert!(out.ends_with("\r\n\r\nWikipedia"), "{out}");
        let (out, _) = run(b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n");
        assert_eq!(statuses(&out), [501]);
        let (out, _) =
            run(b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n");
        assert_eq!(statuses(&out), [400]);
        let (out, _) = run(b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcXY");
        assert_eq!(statuses(&out), [400], "chunk not followed by CRLF");
    }

    #[test]
    fn errors_and_limits() {
        let cases: [(&[u8], u16); 10] = [
            (b"GARBAGE\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\n\r\n", 400),                       // no Host
            (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400), // two Hosts
            (b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505),
            (b"BREW / HTTP/1.1\r\nHost: a\r\n\r\n", 501),
            (b"DELETE / HTTP/1.1\r\nHost: a\r\n\r\n", 405),
            (b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999\r\n\r\n", 413),
            (b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", 400),
            (b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: a\r\nBad Header\r\n\r\n", 400),
        ];
        for (input, status) in cases {
            let (out, outcome) = run(input);
            assert_eq!(statuses(&out), [status], "{}", String::from_utf8_lossy(input));
            if status != 405 {
                assert_eq!(outcome, Outcome::Close);
            }
        }
        let long_uri = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "a".repeat(3000));
        assert_eq!(statuses(&run(long_uri.as_bytes()).0), [414]);
        let long_line_no_crlf = format!("GET /{}", "a".repeat(3000));
        assert_eq!(statuses(&run(long_line_no_crlf.as_bytes()).0), [414], "request line without CRLF");
        let many_headers: String = (0..40).map(|i| format!("X-{i}: v\r\n")).collect();
        let request = format!("GET / HTTP/1.1\r\nHost: a\r\n{many_headers}\r\n");
        assert_eq!(statuses(&run(request.as_bytes()).0), [431]);
        let big_header = format!("GET / HTTP/1.1\r\nHost: a\r\nX: {}\r\n\r\n", "v".repeat(9000));
        assert_eq!(statuses(&run(big_header.as_bytes()).0), [431]);
    }

    #[test]
    fn timeout_sends_408_only_mid_request() {
        let mut connection = Connection::new(Limits::default());
        let mut out = Vec::new();
        connection.timeout(&mut out, None);
        assert!(out.is_empty(), "an idle keep-alive connection just closes");
        let mut connection = Connection::new(Limits::default());
        connection.feed(b"GET / HT");
        assert_eq!(connection.respond(&mut out, None, site), Outcome::KeepOpen);
        connection.timeout(&mut out, None);
        assert_eq!(statuses(&String::from_utf8(out).unwrap()), [408]);
    }

    #[test]
    fn http_dates() {
        let mut text = String::new();
        http_date(0, &mut text);
        assert_eq!(text, "Thu, 01 Jan 1970 00:00:00 GMT");
        text.clear();
        http_date(1_796_154_816, &mut text);
        assert_eq!(text, "Tue, 01 Dec 2026 19:53:36 GMT");
        text.clear();
        http_date(951_782_400, &mut text);
        assert_eq!(text, "Tue, 29 Feb 2000 00:00:00 GMT");
    }

    #[test]
    fn accept_encoding_weights_decide_gzip() {
        let takes = |value: &str| accepts_gzip(Some(value));
        assert!(!accepts_gzip(None));
        for yes in [
            "gzip",
            "GZIP",
            "x-gzip",
            "deflate, gzip",
            "gzip;q=0.5",
            "br;q=1.0, gzip ; q=0.001",
            "*",
            "*;q=1",
            "identity;q=0, gzip",
            "gzip;q=0.5;level=9",
            "gzip;q=0, x-gzip;q=1",
            "deflate, *;q=0.1",
        ] {
            assert!(takes(yes), "{yes:?} takes gzip");
        }
        for no in [
            "",
            "identity",
            "br, deflate",
            "gzip;q=0",
            "gzip;q=0.000",
            "*;q=0",
            "gzip;q=0, *",
            "gzip;q=2",
            "gzip;q=1.5",
            "gzip;q=0.1234",
            "gzip;q=",
            "gzip;q=abc",
            "gzip;q=-1",
            "gzip;foo",
            "gzipx",
            ",,,;;;=",
        ] {
            assert!(!takes(no), "{no:?} does not take gzip");
        }
    }

    #[test]
    fn compressible_types_are_textual() {
        for yes in ["text/html", "text/plain; charset=utf-8", "application/json", "Application/JSON", "image/svg+xml"] {
            assert!(compressible_type(yes), "{yes}");
        }
        for no in ["application/octet-stream", "image/png", "application/zip", "text", "", "video/mp4"] {
            assert!(!compressible_type(no), "{no}");
        }
    }

    /// The site of these tests with one compressible page, coded as the
    /// web server codes it.
    fn coding_site(request: &Request<'_>) -> Response<'static> {
        let page = "<p>a page that compresses well, a page that compresses well.</p>\n".repeat(10).into_bytes();
        let mut response = match request.path() {
            "/page" => Response::new(200, "text/html", page),
            "/tagged" => {
                let mut response = Response::new(200, "text/html", page);
                response.headers.push_str("ETag: \"v1\"\r\n");
                response
            }
            "/small" => Response::new(200, "text/html", &b"<p>tiny</p>"[..]),
            "/binary" => Response::new(200, "application/octet-stream", page),
            _ => Response::status(404),
        };
        match response.coding_for(request) {
            Coding::Unchanged => {}
            Coding::Identity => response.vary_on_encoding(),
            Coding::Gzip => response.encode_gzip(1),
        }
        response
    }

    /// Splits one response into its head and body.
    fn split_response(out: &[u8]) -> (String, Vec<u8>) {
        let end = out.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        (String::from_utf8(out[..end].to_vec()).unwrap(), out[end..].to_vec())
    }

    #[test]
    fn gzip_goes_to_the_clients_that_take_it_and_only_where_it_applies() {
        let page = "<p>a page that compresses well, a page that compresses well.</p>\n".repeat(10);
        let ask = |request: &str| {
            let mut connection = Connection::new(Limits::default());
            connection.feed(request.as_bytes());
            let mut out = Vec::new();
            connection.respond(&mut out, None, coding_site);
            split_response(&out)
        };
        let (head, body) = ask("GET /page HTTP/1.1\r\nHost: a\r\nAccept-Encoding: deflate, gzip\r\n\r\n");
        assert!(head.contains("\r\nContent-Encoding: gzip\r\n") && head.contains("\r\nVary: Accept-Encoding\r\n"));
        assert!(head.contains(&format!("\r\nContent-Length: {}\r\n", body.len())), "{head}");
        assert!(body.len() < page.len() / 4, "{} bytes", body.len());
        assert_eq!(crate::gzip::decompress(&body, 1 << 20).unwrap(), page.as_bytes());
        // HEAD: the same head (length of the coded body), no body.
        let (head_only, nothing) = ask("HEAD /page HTTP/1.1\r\nHost: a\r\nAccept-Encoding: gzip\r\n\r\n");
        assert_eq!((head_only.as_str(), nothing.len()), (head.as_str(), 0));
        // Not asked, refused by weight, or asked twice: uncoded, with Vary.
        for request in [
            "GET /page HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET /page HTTP/1.1\r\nHost: a\r\nAccept-Encoding: gzip;q=0, br\r\n\r\n",
            "GET /page HTTP/1.1\r\nHost: a\r\nAccept-Encoding: gzip\r\nAccept-Encoding: gzip;q=0\r\n\r\n",
        ] {
            let (head, body) = ask(request);
            assert!(!head.contains("Content-Encoding") && head.contains("Vary: Accept-Encoding"), "{head}");
            assert_eq!(body, page.as_bytes());
        }
        // Not compressible: a tagged file, a tiny body, binary, an error: as they are, no Vary.
        for path in ["/tagged", "/small", "/binary", "/missing"] {
            let (head, _) = ask(&format!("GET {path} HTTP/1.1\r\nHost: a\r\nAccept-Encoding: gzip\r\n\r\n"));
            assert!(!head.contains("Content-Encoding") && !head.contains("Vary"), "{path}: {head}");
        }
    }

    proptest! {
        /// Any header value: no panic; a value that takes gzip still does
        /// with an element that names another coding put in front.
        #[test]
        fn accept_encoding_parsing_is_total(value in "[ -~]{0,80}", other in "[a-z]{1,8}") {
            let takes = accepts_gzip(Some(&value));
            if takes && other != "gzip" {
                let longer = format!("{other};q=0.5, {value}");
                prop_assert!(accepts_gzip(Some(&longer)), "{}", longer);
            }
        }

        /// Any bytes, fed in any pieces: no panic, only statuses the
        /// server uses, bounded buffering.
        #[test]
        fn arbitrary_input_never_panics(data in proptest::collection::vec(any::<u8>(), 0..4096), cut in 1usize..512) {
            let mut connection = Connection::new(Limits::default());
            let mut out = Vec::new();
            for piece in data.chunks(cut) {
                connection.feed(piece);
                if connection.respond(&mut out, None, site) == Outcome::Close {
                    break;
                }
                prop_assert!(connection.input_room() > 0 || connection.has_partial_request());
            }
            let text = String::from_utf8_lossy(&out);
            for status in statuses(&text) {
                prop_assert!([200, 400, 404, 405, 413, 414, 431, 501, 505].contains(&status), "{status}");
            }
        }

        /// A valid pipeline split anywhere gives the same responses as
        /// whole: a header split across many small packets still parses.
        #[test]
        fn splitting_does_not_change_answers(cuts in proptest::collection::vec(1usize..40, 1..60)) {
            let whole: &[u8] = b"GET / HTTP/1.1\r\nHost: a\r\n\r\nPOST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\nGET /x HTTP/1.1\r\nHost: a\r\n\r\n";
            let (expected, _) = run(whole);
            let mut connection = Connection::new(Limits::default());
            let mut out = Vec::new();
            let mut at = 0;
            for cut in cuts.iter().cycle() {
                if at >= whole.len() { break; }
                let end = (at + cut).min(whole.len());
                connection.feed(&whole[at..end]);
                connection.respond(&mut out, Some("Thu, 01 Jan 1970 00:00:00 GMT"), site);
                at = end;
            }
            prop_assert_eq!(String::from_utf8(out).unwrap(), expected);
        }
    }
}
