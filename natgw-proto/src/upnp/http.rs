//! HTTP/1.1 message framing for the description, control and event server, sans IO:
//! the service feeds the bytes a connection has sent so far to [`Request::parse`],
//! which says whether the request is complete, and writes the bytes of a
//! [`Response`] back. The request head is parsed by `httparse`; this module adds
//! the limits (head bytes, header count, body bytes) and the body framing, which is
//! `Content-Length` only: a UPnP control point never needs chunked requests, so
//! `Transfer-Encoding` is refused (411 for `chunked`, 501 for anything else).
//!
//! Every connection carries one request and is closed after the response
//! (`Connection: close`), as UPnP devices commonly do: no pipelining to frame.

use std::fmt::Write as _;

/// What the server accepts at most in one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Bytes of the request line and headers, CRLF CRLF included.
    pub max_head: usize,
    /// Header fields.
    pub max_headers: usize,
    /// Bytes of the body (`Content-Length`).
    pub max_body: usize,
}

impl Default for Limits {
    /// 8 KiB of head, 32 headers, 16 KiB of body: a SOAP AddPortMapping is well
    /// under 2 KiB, and a SUBSCRIBE has no body.
    fn default() -> Self {
        Self {
            max_head: 8192,
            max_headers: 32,
            max_body: 16384,
        }
    }
}

/// Why a request cannot be served; each maps to the status it is answered with.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HttpError {
    /// Not an HTTP/1.x request head (400).
    #[error("malformed request head: {0}")]
    Malformed(&'static str),
    /// The head is longer than [`Limits::max_head`] (431).
    #[error("request head longer than {0} bytes")]
    HeadTooLarge(usize),
    /// More header fields than [`Limits::max_headers`] (431).
    #[error("more than {0} header fields")]
    TooManyHeaders(usize),
    /// `Content-Length` is not a number, or given twice with different values (400).
    #[error("invalid Content-Length")]
    BadContentLength,
    /// A body longer than [`Limits::max_body`] (413).
    #[error("body of {length} bytes, more than {max}")]
    BodyTooLarge {
        /// Announced length.
        length: u64,
        /// The limit.
        max: usize,
    },
    /// `Transfer-Encoding: chunked` (411: send a `Content-Length`).
    #[error("chunked requests are not accepted; send a Content-Length")]
    Chunked,
    /// Another transfer coding (501).
    #[error("transfer coding not implemented")]
    TransferCoding,
    /// The peer closed the connection before the request was complete (400).
    #[error("connection closed before the request was complete")]
    Truncated,
}

impl HttpError {
    /// The status code the request is answered with.
    #[must_use]
    pub const fn status(&self) -> Status {
        match self {
            Self::Malformed(_) | Self::BadContentLength | Self::Truncated => Status::BAD_REQUEST,
            Self::HeadTooLarge(_) | Self::TooManyHeaders(_) => {
                Status::REQUEST_HEADER_FIELDS_TOO_LARGE
            }
            Self::BodyTooLarge { .. } => Status::PAYLOAD_TOO_LARGE,
            Self::Chunked => Status::LENGTH_REQUIRED,
            Self::TransferCoding => Status::NOT_IMPLEMENTED,
        }
    }
}

/// An HTTP status code and its reason phrase.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Status {
    /// The code.
    pub code: u16,
    /// The reason phrase.
    pub reason: &'static str,
}

impl Status {
    /// 200 OK.
    pub const OK: Self = Self::new(200, "OK");
    /// 400 Bad Request.
    pub const BAD_REQUEST: Self = Self::new(400, "Bad Request");
    /// 403 Forbidden.
    pub const FORBIDDEN: Self = Self::new(403, "Forbidden");
    /// 404 Not Found.
    pub const NOT_FOUND: Self = Self::new(404, "Not Found");
    /// 405 Method Not Allowed.
    pub const METHOD_NOT_ALLOWED: Self = Self::new(405, "Method Not Allowed");
    /// 411 Length Required.
    pub const LENGTH_REQUIRED: Self = Self::new(411, "Length Required");
    /// 412 Precondition Failed (GENA: no such subscription, or a bad NT/CALLBACK).
    pub const PRECONDITION_FAILED: Self = Self::new(412, "Precondition Failed");
    /// 413 Payload Too Large.
    pub const PAYLOAD_TOO_LARGE: Self = Self::new(413, "Payload Too Large");
    /// 415 Unsupported Media Type.
    pub const UNSUPPORTED_MEDIA_TYPE: Self = Self::new(415, "Unsupported Media Type");
    /// 429 Too Many Requests.
    pub const TOO_MANY_REQUESTS: Self = Self::new(429, "Too Many Requests");
    /// 431 Request Header Fields Too Large.
    pub const REQUEST_HEADER_FIELDS_TOO_LARGE: Self =
        Self::new(431, "Request Header Fields Too Large");
    /// 500 Internal Server Error (a SOAP fault).
    pub const INTERNAL_SERVER_ERROR: Self = Self::new(500, "Internal Server Error");
    /// 501 Not Implemented.
    pub const NOT_IMPLEMENTED: Self = Self::new(501, "Not Implemented");
    /// 503 Service Unavailable.
    pub const SERVICE_UNAVAILABLE: Self = Self::new(503, "Service Unavailable");

    const fn new(code: u16, reason: &'static str) -> Self {
        Self { code, reason }
    }
}

/// A complete request: its head as `httparse` read it, its body, and how many bytes
/// of the input it took.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// The method, e.g. `POST`, `SUBSCRIBE`.
    pub method: String,
    /// The request target, e.g. `/ctl/IPConn`.
    pub path: String,
    /// The minor version: 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub version: u8,
    /// Header fields in order, names in lower case, values as sent.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The body (`Content-Length` bytes; empty without one).
    pub body: Vec<u8>,
    /// Bytes of the input the request took.
    pub len: usize,
}

impl Request {
    /// Parses the bytes a connection has sent so far: `Ok(None)` while the request is
    /// incomplete (read more, unless the peer closed: then it is
    /// [`HttpError::Truncated`]), `Ok(Some(request))` once it is complete.
    ///
    /// # Errors
    /// When the request breaks the HTTP syntax or one of `limits` — as soon as the
    /// bytes so far show it, so a slow or endless sender is cut off early.
    pub fn parse(input: &[u8], limits: &Limits) -> Result<Option<Self>, HttpError> {
        let mut headers = vec![httparse::EMPTY_HEADER; limits.max_headers];
        let mut req = httparse::Request::new(&mut headers);
        let head_len = match req.parse(input) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => {
                if input.len() >= limits.max_head {
                    return Err(HttpError::HeadTooLarge(limits.max_head));
                }
                return Ok(None);
            }
            Err(httparse::Error::TooManyHeaders) => {
                return Err(HttpError::TooManyHeaders(limits.max_headers))
            }
            Err(e) => return Err(HttpError::Malformed(parse_error_name(e))),
        };
        if head_len > limits.max_head {
            return Err(HttpError::HeadTooLarge(limits.max_head));
        }
        let method = req.method.ok_or(HttpError::Malformed("no method"))?;
        let path = req.path.ok_or(HttpError::Malformed("no request target"))?;
        let version = req.version.ok_or(HttpError::Malformed("no version"))?;
        let headers: Vec<(String, Vec<u8>)> = req
            .headers
            .iter()
            .map(|h| (h.name.to_ascii_lowercase(), h.value.to_vec()))
            .collect();
        let body_len = body_length(&headers, limits)?;
        let Some(end) = head_len.checked_add(body_len) else {
            return Err(HttpError::BadContentLength);
        };
        if input.len() < end {
            return Ok(None);
        }
        Ok(Some(Self {
            method: method.to_owned(),
            path: path.to_owned(),
            version,
            headers,
            body: input[head_len..end].to_vec(),
            len: end,
        }))
    }

    /// The value of the first header named `name` (lower case), as text; `None` when
    /// absent or not UTF-8.
    #[must_use]
    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }
}

/// The first value of header `name` (lower case) in `headers`, as trimmed text.
pub(crate) fn header<'a>(headers: &'a [(String, Vec<u8>)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .and_then(|(_, v)| std::str::from_utf8(v).ok())
        .map(str::trim)
}

fn parse_error_name(e: httparse::Error) -> &'static str {
    match e {
        httparse::Error::HeaderName => "invalid header name",
        httparse::Error::HeaderValue => "invalid header value",
        httparse::Error::NewLine => "invalid line ending",
        httparse::Error::Status => "invalid status",
        httparse::Error::Token => "invalid token",
        httparse::Error::TooManyHeaders => "too many headers",
        httparse::Error::Version => "invalid HTTP version",
    }
}

/// The body's length from `Content-Length` (0 without one); refuses transfer codings.
fn body_length(headers: &[(String, Vec<u8>)], limits: &Limits) -> Result<usize, HttpError> {
    let mut length: Option<u64> = None;
    for (name, value) in headers {
        match name.as_str() {
            "transfer-encoding" => {
                let chunked = std::str::from_utf8(value)
                    .is_ok_and(|v| v.to_ascii_lowercase().contains("chunked"));
                return Err(if chunked {
                    HttpError::Chunked
                } else {
                    HttpError::TransferCoding
                });
            }
            "content-length" => {
                let text = std::str::from_utf8(value).map_err(|_| HttpError::BadContentLength)?;
                let text = text.trim();
                if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(HttpError::BadContentLength);
                }
                let n: u64 = text.parse().map_err(|_| HttpError::BadContentLength)?;
                if length.is_some_and(|l| l != n) {
                    return Err(HttpError::BadContentLength);
                }
                length = Some(n);
            }
            _ => {}
        }
    }
    let length = length.unwrap_or(0);
    match usize::try_from(length) {
        Ok(n) if n <= limits.max_body => Ok(n),
        _ => Err(HttpError::BodyTooLarge {
            length,
            max: limits.max_body,
        }),
    }
}

/// The `Content-Type` of XML responses (UDA 1.1 §2.11, §3.2.1).
pub const CONTENT_TYPE_XML: &str = "text/xml; charset=\"utf-8\"";

/// A response to write: status, headers, body. [`Response::to_bytes`] adds
/// `Content-Length`, `Connection: close` and `SERVER`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    /// Status.
    pub status: Status,
    /// Header fields other than the ones `to_bytes` adds.
    pub headers: Vec<(&'static str, String)>,
    /// Body.
    pub body: Vec<u8>,
}

impl Response {
    /// A response without a body.
    #[must_use]
    pub const fn empty(status: Status) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// An XML document (description, SOAP response or fault), with `EXT:` as control
    /// responses carry it (UDA 1.1 §3.2.2).
    #[must_use]
    pub fn xml(status: Status, body: Vec<u8>) -> Self {
        Self {
            status,
            headers: vec![
                ("CONTENT-TYPE", CONTENT_TYPE_XML.to_owned()),
                ("EXT", String::new()),
            ],
            body,
        }
    }

    /// The answer to a request that failed to parse.
    #[must_use]
    pub fn error(e: &HttpError) -> Self {
        Self::plain(e.status(), &e.to_string())
    }

    /// A short plain-text body saying why.
    #[must_use]
    pub fn plain(status: Status, text: &str) -> Self {
        let mut body = text.as_bytes().to_vec();
        body.extend_from_slice(b"\r\n");
        Self {
            status,
            headers: vec![("CONTENT-TYPE", "text/plain; charset=utf-8".to_owned())],
            body,
        }
    }

    /// Adds a header field.
    #[must_use]
    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    /// The bytes to write: status line, headers, `Content-Length`, `Connection:
    /// close`, `SERVER: server`, blank line, body.
    #[must_use]
    pub fn to_bytes(&self, server: &str) -> Vec<u8> {
        let mut head = String::with_capacity(256);
        let _ = write!(
            head,
            "HTTP/1.1 {} {}\r\n",
            self.status.code, self.status.reason
        );
        for (name, value) in &self.headers {
            let _ = write!(head, "{name}: {value}\r\n");
        }
        let _ = write!(
            head,
            "CONTENT-LENGTH: {}\r\nCONNECTION: close\r\nSERVER: {server}\r\n\r\n",
            self.body.len()
        );
        let mut out = head.into_bytes();
        out.extend_from_slice(&self.body);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SOAP: &[u8] = b"POST /ctl/IPConn HTTP/1.1\r\nHOST: 10.0.1.1:5000\r\n\
        CONTENT-TYPE: text/xml\r\nSOAPACTION: \"urn:x#A\"\r\nContent-Length: 5\r\n\r\nhello";

    fn parse(input: &[u8]) -> Result<Option<Request>, HttpError> {
        Request::parse(input, &Limits::default())
    }

    #[test]
    fn a_complete_request_with_its_body() {
        let r = parse(SOAP).unwrap().unwrap();
        assert_eq!(
            (r.method.as_str(), r.path.as_str(), r.version),
            ("POST", "/ctl/IPConn", 1)
        );
        assert_eq!(r.header("soapaction"), Some("\"urn:x#A\""));
        assert_eq!(r.body, b"hello");
        assert_eq!(r.len, SOAP.len());
    }

    #[test]
    fn every_prefix_of_a_request_is_incomplete() {
        for n in 0..SOAP.len() {
            assert_eq!(parse(&SOAP[..n]), Ok(None), "{n} bytes");
        }
    }

    #[test]
    fn bytes_after_the_body_are_not_taken() {
        let mut input = SOAP.to_vec();
        input.extend_from_slice(b"GET / HTTP/1.1\r\n");
        let r = parse(&input).unwrap().unwrap();
        assert_eq!(r.len, SOAP.len());
        assert_eq!(r.body, b"hello");
    }

    #[test]
    fn limits_give_their_status() {
        let limits = Limits {
            max_head: 64,
            max_headers: 2,
            max_body: 4,
        };
        let long = [b"GET / HTTP/1.1\r\nX: ".as_slice(), &[b'a'; 100]].concat();
        let e = Request::parse(&long, &limits).unwrap_err();
        assert_eq!(e, HttpError::HeadTooLarge(64));
        assert_eq!(e.status().code, 431);
        let many = b"GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n";
        let e = Request::parse(many, &limits).unwrap_err();
        assert_eq!(
            (e.clone(), e.status().code),
            (HttpError::TooManyHeaders(2), 431)
        );
        let e =
            Request::parse(b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\n", &limits).unwrap_err();
        assert_eq!(e.status().code, 413);
        let huge = b"POST / HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n";
        assert_eq!(parse(huge).unwrap_err(), HttpError::BadContentLength);
    }

    #[test]
    fn chunked_and_other_codings_are_refused() {
        let chunked =
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
        let e = parse(chunked).unwrap_err();
        assert_eq!((e.clone(), e.status().code), (HttpError::Chunked, 411));
        let gzip = b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n";
        assert_eq!(parse(gzip).unwrap_err().status().code, 501);
    }

    #[test]
    fn content_length_must_be_one_number() {
        for bad in [
            b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n".as_slice(),
            b"POST / HTTP/1.1\r\nContent-Length: 1, 2\r\n\r\nab",
            b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
            b"POST / HTTP/1.1\r\nContent-Length: \r\n\r\n",
        ] {
            assert_eq!(parse(bad), Err(HttpError::BadContentLength));
        }
        let same = b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\na";
        assert_eq!(parse(same).unwrap().unwrap().body, b"a");
    }

    #[test]
    fn garbage_is_a_bad_request() {
        for bad in [
            b"\x00\x01\x02 / HTTP/1.1\r\n\r\n".as_slice(),
            b"GET / HTTP/2.0\r\n\r\n",
            b"GET / HTTP/1.1\r\nBad Header\r\n\r\n",
        ] {
            assert_eq!(parse(bad).unwrap_err().status().code, 400, "{bad:?}");
        }
    }

    #[test]
    fn responses_carry_length_and_close() {
        let r = Response::xml(Status::OK, b"<a/>".to_vec()).to_bytes("natgw/1 UPnP/2.0");
        let text = String::from_utf8(r).unwrap();
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"));
        assert!(text.contains("CONTENT-TYPE: text/xml; charset=\"utf-8\"\r\n"));
        assert!(text.contains("CONTENT-LENGTH: 4\r\nCONNECTION: close\r\n"));
        assert!(text.contains("SERVER: natgw/1 UPnP/2.0\r\n"));
        assert!(text.ends_with("\r\n\r\n<a/>"));
        let e = Response::error(&HttpError::Chunked).to_bytes("s");
        assert!(e.starts_with(b"HTTP/1.1 411 Length Required\r\n"));
    }
}
