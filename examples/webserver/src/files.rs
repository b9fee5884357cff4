//! Files from the mounted disk: `webroot=` (default `/`) served when it is
//! a directory at start-up. The path, validator, range and index logic is
//! `toro_net::files` (host-tested); this joins it with `toro::fs`.
//!
//! - `GET`/`HEAD` only (405 otherwise); request paths are `%`-decoded,
//!   never climb (`..`, encoded `/` or `\` are 403), and symbolic links are
//!   followed here, refusing any whose target leaves the root (403).
//! - Files: `Content-Type` from the extension, `ETag` and `Last-Modified`
//!   (the inode's modification time), `If-None-Match`/`If-Modified-Since`
//!   (304), one byte range (206, 416) under `If-Range`, `Accept-Ranges:
//!   bytes`. A body up to [`HOLD_AT_MOST`] is read whole; a larger one is
//!   streamed from the file as it is sent (`Response::streamed`), so a
//!   file of any size costs a connection one piece of memory, not its size.
//! - Directories: `index.html` if present, else an index page; a directory
//!   named without its trailing slash is redirected (301).

use core::fmt::Write as _;
use core::time::Duration;

use toro::alloc::format;
use toro::alloc::string::String;
use toro::alloc::vec;
use toro::alloc::vec::Vec;
use toro::fs::{self, File};
use toro::io::{ErrorKind, Read, Seek, SeekFrom};
use toro_net::files::{self, IndexEntry, Range};
use toro_net::http::{BodyError, BodySource, Request, Response};

/// The largest body read into memory whole; larger ones are streamed.
pub const HOLD_AT_MOST: u64 = 256 * 1024;

/// The root being served, if a mounted directory.
static ROOT: toro::sync::OnceLock<Option<String>> = toro::sync::OnceLock::new();

/// Decides once whether files are served (`webroot=`; by default `/` when
/// a disk is mounted there, else `/share`: `files::choose_root`); returns
/// the root.
/// `main` calls it before any connection is accepted; a request that
/// came earlier would be answered from the built-in site (a 404 for a
/// file that is on the disk).
pub fn init() -> Option<&'static str> {
    ROOT.get_or_init(|| {
        let is_dir = |path: &str| fs::metadata(path).is_ok_and(|m| m.is_dir());
        files::choose_root(toro::system::argument("webroot"), is_dir)
            .map(|root| String::from(root.trim_end_matches('/')))
    })
    .as_deref()
    .map(|root| if root.is_empty() { "/" } else { root })
}

/// The served root, if any: the decision of [`init`] (waiting for it if
/// it is still being made, never answering before it).
pub fn root() -> Option<&'static str> {
    init()
}

fn with_headers(mut response: Response<'static>, headers: String) -> Response<'static> {
    response.headers = headers;
    response
}

fn error_status(error: &toro::io::Error) -> u16 {
    match error.kind() {
        ErrorKind::NotFound | ErrorKind::NotADirectory | ErrorKind::InvalidFilename => 404,
        ErrorKind::PermissionDenied => 403,
        _ => 500,
    }
}

/// Answers a request for something under `root`.
pub fn handle(request: &Request<'_>, root: &str) -> Response<'static> {
    if !matches!(request.method, "GET" | "HEAD") {
        return with_headers(Response::status(405), String::from("Allow: GET, HEAD\r\n"));
    }
    let url_path = request.path();
    let parts = match files::components(url_path) {
        Ok(parts) => parts,
        Err(error) => return Response::status(error.status()),
    };
    let path = match files::confine(root, &parts, |path| fs::read_link(path).ok()) {
        Ok(path) => path,
        Err(error) => return Response::status(error.status()),
    };
    let metadata = match fs::metadata(&path) {
        Ok(metadata) => metadata,
        Err(error) => return Response::status(error_status(&error)),
    };
    if metadata.is_dir() {
        if !url_path.ends_with('/') {
            return with_headers(Response::status(301), format!("Location: {url_path}/\r\n"));
        }
        let index = format!("{}/index.html", path.trim_end_matches('/'));
        if let Ok(index_metadata) = fs::metadata(&index) {
            if index_metadata.is_file() {
                return file(request, &index, &index_metadata);
            }
        }
        return listing(url_path, &path);
    }
    file(request, &path, &metadata)
}

fn listing(url_path: &str, path: &str) -> Response<'static> {
    let mut entries = Vec::new();
    let directory = match fs::read_dir(path) {
        Ok(directory) => directory,
        Err(error) => return Response::status(error_status(&error)),
    };
    for entry in directory {
        let Ok(entry) = entry else { return Response::status(500) };
        let Ok(metadata) = entry.metadata() else { continue };
        entries.push(IndexEntry { name: entry.file_name(), is_dir: metadata.is_dir(), size: metadata.len() });
    }
    Response::new(200, "text/html; charset=utf-8", files::directory_index(url_path, &mut entries).into_bytes())
}

fn file(request: &Request<'_>, path: &str, metadata: &fs::Metadata) -> Response<'static> {
    let len = metadata.len();
    let modified = metadata.modified().unwrap_or(Duration::ZERO).as_secs();
    let tag = files::etag(metadata.ino(), len, modified);
    let mut headers = format!("ETag: {tag}\r\nLast-Modified: ");
    toro_net::http::http_date(modified, &mut headers);
    headers.push_str("\r\nAccept-Ranges: bytes\r\n");
    let content_type = files::content_type(path.rsplit('/').next().unwrap_or(""));
    if files::not_modified(request.if_none_match, request.if_modified_since, &tag, modified) {
        return with_headers(Response::new(304, content_type, Vec::new()), headers);
    }
    let range = request.range.filter(|_| files::if_range_allows(request.if_range, &tag, modified));
    let (status, start, count) = match files::range(range, len) {
        Range::Full => (200, 0, len),
        Range::Partial { start, end } => {
            let _ = write!(headers, "Content-Range: bytes {start}-{end}/{len}\r\n");
            (206, start, end - start + 1)
        }
        Range::Unsatisfiable => {
            let _ = write!(headers, "Content-Range: bytes */{len}\r\n");
            return with_headers(Response::status(416), headers);
        }
    };
    if count > HOLD_AT_MOST || request.method == "HEAD" {
        // HEAD sends no body: the file is opened (so a HEAD fails as its GET
        // would) but not read.
        let source = match FileBody::open(path, start, count) {
            Ok(source) => source,
            Err(error) => return Response::status(error_status(&error)),
        };
        return with_headers(
            Response::streamed(status, content_type, count, toro::alloc::boxed::Box::new(source)),
            headers,
        );
    }
    let body = match read_range(path, start, count) {
        Ok(body) => body,
        Err(error) => return Response::status(error_status(&error)),
    };
    with_headers(Response::new(status, content_type, body), headers)
}

/// `left` bytes of an open file, read as they are sent.
struct FileBody {
    file: File,
    left: u64,
}

impl FileBody {
    fn open(path: &str, start: u64, count: u64) -> toro::io::Result<FileBody> {
        let mut file = File::open(path)?;
        file.seek(SeekFrom::Start(start))?;
        Ok(FileBody { file, left: count })
    }
}

impl BodySource for FileBody {
    fn read_body(&mut self, buf: &mut [u8]) -> Result<usize, BodyError> {
        let want = (buf.len() as u64).min(self.left) as usize;
        match self.file.read(&mut buf[..want]) {
            Ok(got) => {
                self.left -= got as u64;
                Ok(got)
            }
            Err(error) => {
                toro::println!("webserver: reading a file being sent: {error}");
                Err(BodyError)
            }
        }
    }
}

/// `count` bytes of the file at `start`.
fn read_range(path: &str, start: u64, count: u64) -> toro::io::Result<Vec<u8>> {
    let count =
        usize::try_from(count).map_err(|_| toro::io::Error::from_static(ErrorKind::OutOfMemory, "range too large"))?;
    let mut file = File::open(path)?;
    file.seek(SeekFrom::Start(start))?;
    let mut body = vec![0u8; count];
    file.read_exact(&mut body)?;
    Ok(body)
}
