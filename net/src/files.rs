//! Serving files over HTTP, the logic without a filesystem (host-tested):
//! request paths to names under a root that cannot leave it, content
//! types from the extension, validators (`ETag`, `Last-Modified`) and
//! conditional requests (304), single byte ranges (206/416), directory
//! index pages.
//!
//! The web server (examples/webserver) joins these with `toro::fs`.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::Write as _;

/// Why a request path does not name anything under the root.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PathError {
    /// Not absolute, a bad `%` escape, not UTF-8 once decoded, or a NUL.
    Malformed,
    /// A `..` component, an encoded `/` or `\`, or a symbolic link whose
    /// target leaves the root (or too many links).
    Escape,
}

impl PathError {
    /// The status it answers with.
    pub fn status(self) -> u16 {
        match self {
            PathError::Malformed => 400,
            PathError::Escape => 403,
        }
    }
}

fn hex(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

/// The components of a request path (without its query), `%`-decoded:
/// `/a/b%20c/` -> `["a", "b c"]`. Empty and `.` components are dropped;
/// `..`, or a `/` or `\` inside a decoded component, is
/// [`PathError::Escape`] (a request path never climbs, even where it would
/// stay inside).
pub fn components(path: &str) -> Result<Vec<String>, PathError> {
    if !path.starts_with('/') {
        return Err(PathError::Malformed);
    }
    let mut parts = Vec::new();
    for raw in path.split('/') {
        let bytes = raw.as_bytes();
        let mut decoded = Vec::with_capacity(bytes.len());
        let mut at = 0;
        while at < bytes.len() {
            if bytes[at] == b'%' {
                let high = bytes.get(at + 1).copied().and_then(hex);
                let low = bytes.get(at + 2).copied().and_then(hex);
                let (Some(high), Some(low)) = (high, low) else { return Err(PathError::Malformed) };
                decoded.push(high << 4 | low);
                at += 3;
            } else {
                decoded.push(bytes[at]);
                at += 1;
            }
        }
        let part = String::from_utf8(decoded).map_err(|_| PathError::Malformed)?;
        if part.contains('\0') {
            return Err(PathError::Malformed);
        }
        if part.contains('/') || part.contains('\\') || part == ".." {
            return Err(PathError::Escape);
        }
        if !part.is_empty() && part != "." {
            parts.push(part);
        }
    }
    Ok(parts)
}

/// Whether `path` (absolute, normalised) is `root` or below it.
pub fn is_within(root: &str, path: &str) -> bool {
    let root = root.trim_end_matches('/');
    root.is_empty() || path == root || (path.starts_with(root) && path.as_bytes().get(root.len()) == Some(&b'/'))
}

/// The most symbolic links followed for one request.
pub const MAX_LINKS: usize = 40;

fn absolute(components: &[String]) -> String {
    format!("/{}", components.join("/"))
}

/// Resolves `parts` under `root` (absolute: `/` or `/www`) as the
/// filesystem would, following symbolic links itself (`read_link(path)`
/// gives a link's target, `None` for anything else) so that a link whose
/// target leaves the root is refused ([`PathError::Escape`]); absolute
/// targets are relative to the filesystem's `/`. Along the way the walk
/// may only pass through the root, what is below it, or its ancestors (an
/// absolute target spelling out the root). The result holds no links.
pub fn confine(
    root: &str,
    parts: &[String],
    mut read_link: impl FnMut(&str) -> Option<String>,
) -> Result<String, PathError> {
    let mut current: Vec<String> = root.split('/').filter(|p| !p.is_empty()).map(String::from).collect();
    let mut pending: Vec<String> = parts.iter().rev().cloned().collect();
    let mut links = 0;
    while let Some(part) = pending.pop() {
        match part.as_str() {
            "" | "." => {}
            ".." => {
                current.pop();
            }
            _ => {
                current.push(part);
                if let Some(target) = read_link(&absolute(&current)) {
                    links += 1;
                    if links > MAX_LINKS {
                        return Err(PathError::Escape);
                    }
                    current.pop();
                    if target.starts_with('/') {
                        current.clear();
                    }
                    pending.extend(target.split('/').rev().map(String::from));
                }
            }
        }
        let here = absolute(&current);
        if !is_within(root, &here) && !is_within(&here, root) {
            return Err(PathError::Escape);
        }
    }
    let path = absolute(&current);
    if is_within(root, &path) {
        Ok(path)
    } else {
        Err(PathError::Escape)
    }
}

/// The `Content-Type` for a file name, from its extension.
pub fn content_type(name: &str) -> &'static str {
    let extension = match name.rsplit_once('.') {
        Some((stem, extension)) if !stem.is_empty() && !extension.contains('/') => extension,
        _ => "",
    };
    let mut lower = [0u8; 8];
    if extension.len() > lower.len() {
        return "application/octet-stream";
    }
    for (slot, byte) in lower.iter_mut().zip(extension.bytes()) {
        *slot = byte.to_ascii_lowercase();
    }
    match &lower[..extension.len()] {
        b"html" | b"htm" => "text/html; charset=utf-8",
        b"txt" | b"text" | b"log" => "text/plain; charset=utf-8",
        b"md" => "text/markdown; charset=utf-8",
        b"css" => "text/css; charset=utf-8",
        b"js" | b"mjs" => "text/javascript; charset=utf-8",
        b"json" => "application/json",
        b"xml" => "application/xml",
        b"csv" => "text/csv; charset=utf-8",
        b"png" => "image/png",
        b"jpg" | b"jpeg" => "image/jpeg",
        b"gif" => "image/gif",
        b"webp" => "image/webp",
        b"svg" => "image/svg+xml",
        b"ico" => "image/vnd.microsoft.icon",
        b"pdf" => "application/pdf",
        b"wasm" => "application/wasm",
        b"woff" => "font/woff",
        b"woff2" => "font/woff2",
        b"mp4" => "video/mp4",
        b"webm" => "video/webm",
        b"mp3" => "audio/mpeg",
        b"zip" => "application/zip",
        b"gz" => "application/gzip",
        b"tar" => "application/x-tar",
        _ => "application/octet-stream",
    }
}

/// A strong entity tag from what changes when the file does.
pub fn etag(inode: u64, size: u64, modified: u64) -> String {
    format!("\"{inode:x}-{size:x}-{modified:x}\"")
}

/// Parses an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`, RFC 9110
/// section 5.6.7) into Unix seconds; `None` for anything else (the
/// obsolete formats included: the condition is then ignored).
pub fn parse_http_date(text: &str) -> Option<u64> {
    const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let mut words = text.trim().split(' ');
    let (_weekday, day, month, year, time, zone) =
        (words.next()?, words.next()?, words.next()?, words.next()?, words.next()?, words.next()?);
    if words.next().is_some() || zone != "GMT" || day.len() != 2 || year.len() != 4 || time.len() != 8 {
        return None;
    }
    let number =
        |text: &str| -> Option<i64> { text.bytes().all(|b| b.is_ascii_digit()).then(|| text.parse().ok()).flatten() };
    let day = number(day)?;
    let month = MONTHS.iter().position(|&m| m == month)? as i64 + 1;
    let year = number(year)?;
    let mut clock = time.split(':');
    let (hour, minute, second) = (number(clock.next()?)?, number(clock.next()?)?, number(clock.next()?)?);
    if !(1..=31).contains(&day) || hour > 23 || minute > 59 || second > 60 || year < 1970 {
        return None;
    }
    // Days from civil (Howard Hinnant's algorithm), epoch 1970-01-01.
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = if month > 2 { month - 3 } else { month + 9 };
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from(days * 86_400 + hour * 3600 + minute * 60 + second).ok()
}

/// Whether a GET or HEAD gets 304 Not Modified (RFC 9110 section 13.2.2):
/// `If-None-Match` decides when present (weak comparison, `*` matches);
/// otherwise `If-Modified-Since` (a date not before the file's
/// modification time; an unparsable date is ignored).
pub fn not_modified(if_none_match: Option<&str>, if_modified_since: Option<&str>, etag: &str, modified: u64) -> bool {
    if let Some(list) = if_none_match {
        let bare = |tag: &str| -> String { String::from(tag.trim().trim_start_matches("W/")) };
        let ours = bare(etag);
        return list.split(',').any(|tag| tag.trim() == "*" || bare(tag) == ours);
    }
    if_modified_since.and_then(parse_http_date).is_some_and(|since| modified <= since)
}

/// Whether a `Range` header applies under `If-Range` (RFC 9110 section
/// 13.1.5): with no `If-Range`, yes; with an entity tag, only if it is
/// ours (a strong comparison: a weak tag never matches); with a date, only
/// if it is exactly the last modification. Otherwise the client's copy is
/// stale and gets the whole representation (200), not a piece of the new
/// one spliced into the old.
pub fn if_range_allows(if_range: Option<&str>, etag: &str, modified: u64) -> bool {
    let Some(condition) = if_range.map(str::trim) else { return true };
    if condition.starts_with('"') || condition.starts_with("W/") {
        return condition == etag && !etag.starts_with("W/");
    }
    parse_http_date(condition) == Some(modified)
}

/// What a `Range` header asks of a representation of `len` bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Range {
    /// The whole representation (no header, one the server ignores:
    /// malformed, not `bytes`, or several ranges).
    Full,
    /// Bytes `start..=end` (206 Partial Content).
    Partial {
        /// First byte.
        start: u64,
        /// Last byte (inclusive).
        end: u64,
    },
    /// Nothing of it (416, `Content-Range: bytes */len`).
    Unsatisfiable,
}

/// Parses a `Range` header (RFC 9110 section 14.2) for `len` bytes: one
/// range, `bytes=A-B`, `bytes=A-` or `bytes=-N`.
pub fn range(header: Option<&str>, len: u64) -> Range {
    let Some(header) = header else { return Range::Full };
    let Some(spec) = header.trim().strip_prefix("bytes=") else { return Range::Full };
    if spec.contains(',') {
        return Range::Full;
    }
    let Some((first, last)) = spec.trim().split_once('-') else { return Range::Full };
    let number = |text: &str| -> Option<u64> {
        (!text.is_empty() && text.bytes().all(|b| b.is_ascii_digit())).then(|| text.parse().ok()).flatten()
    };
    match (first, last) {
        ("", suffix) => match number(suffix) {
            None => Range::Full,
            Some(0) => Range::Unsatisfiable,
            Some(_) if len == 0 => Range::Unsatisfiable,
            Some(count) => Range::Partial { start: len - count.min(len), end: len - 1 },
        },
        (first, "") => match number(first) {
            None => Range::Full,
            Some(start) if start >= len => Range::Unsatisfiable,
            Some(start) => Range::Partial { start, end: len - 1 },
        },
        (first, last) => match (number(first), number(last)) {
            (Some(start), Some(end)) if start <= end => {
                if start >= len {
                    Range::Unsatisfiable
                } else {
                    Range::Partial { start, end: end.min(len - 1) }
                }
            }
            _ => Range::Full,
        },
    }
}

/// `%`-encodes a name for a URL path component (unreserved characters kept).
pub fn percent_encode(name: &str) -> String {
    let mut out = String::new();
    for byte in name.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}

/// Escapes text for HTML.
pub fn html_escape(text: &str) -> String {
    let mut out = String::new();
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// One entry of a directory index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndexEntry {
    /// Its name.
    pub name: String,
    /// A directory (listed with a trailing `/`).
    pub is_dir: bool,
    /// Its size in bytes.
    pub size: u64,
}

/// An HTML index of a directory at URL path `url_path` (ends with `/`):
/// a parent link unless at the top, then the entries sorted by name.
pub fn directory_index(url_path: &str, entries: &mut [IndexEntry]) -> String {
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    let title = html_escape(url_path);
    let mut page = format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>Index of {title}</title></head>\n<body><h1>Index of {title}</h1>\n<ul>\n"
    );
    if url_path != "/" {
        page.push_str("<li><a href=\"../\">../</a></li>\n");
    }
    for entry in entries.iter() {
        let slash = if entry.is_dir { "/" } else { "" };
        let _ = writeln!(
            page,
            "<li><a href=\"{}{slash}\">{}{slash}</a> {}</li>",
            percent_encode(&entry.name),
            html_escape(&entry.name),
            if entry.is_dir { String::new() } else { format!("{} bytes", entry.size) }
        );
    }
    page.push_str("</ul></body></html>\n");
    page
}

/// Where the web server serves files from when `webroot=` does not say:
/// the root of the tree if something is mounted there (a disk), else the
/// shared folder at `/share` (a virtio-fs share alone), else nothing
/// (the built-in site only). `webroot=` wins when it names a directory;
/// when it names anything else, no files are served (a typo must not
/// serve a different tree).
pub fn choose_root(argument: Option<&str>, is_dir: impl Fn(&str) -> bool) -> Option<&str> {
    match argument {
        Some(root) => Some(root).filter(|root| is_dir(root)),
        None => ["/", "/share"].into_iter().find(|root| is_dir(root)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;
    use alloc::vec;

    fn strings(parts: &[&str]) -> Vec<String> {
        parts.iter().map(|p| p.to_string()).collect()
    }

    #[test]
    fn request_paths_decode_and_never_climb() {
        assert_eq!(components("/").unwrap(), Vec::<String>::new());
        assert_eq!(components("/a//b/./c%20d/").unwrap(), strings(&["a", "b", "c d"]));
        assert_eq!(components("/%E2%82%AC").unwrap(), strings(&["€"]));
        for escape in ["/..", "/a/../b", "/%2e%2e/x", "/a%2Fb", "/a%2fb", "/a%5Cb", "/a\\b", "/.%2E"] {
            assert_eq!(components(escape), Err(PathError::Escape), "{escape}");
        }
        for bad in ["a", "", "/%", "/%4", "/%zz", "/%00", "/%FF", "/a%C3"] {
            assert_eq!(components(bad), Err(PathError::Malformed), "{bad}");
        }
        assert_eq!(PathError::Escape.status(), 403);
        assert_eq!(PathError::Malformed.status(), 400);
    }

    #[test]
    fn symbolic_links_may_not_leave_the_root() {
        let links = |path: &str| -> Option<String> {
            match path {
                "/www/inside" => Some("docs/a.txt".into()),
                "/www/up" => Some("../secret".into()),
                "/www/abs-in" => Some("/www/docs".into()),
                "/www/abs-out" => Some("/etc/passwd".into()),
                "/www/root" => Some("/".into()),
                "/www/sneaky" => Some("../www/docs/a.txt".into()),
                "/www/loop" => Some("loop".into()),
                "/www/docs/back" => Some("..".into()),
                _ => None,
            }
        };
        let resolve = |path: &str| confine("/www", &components(path).unwrap(), links);
        assert_eq!(resolve("/"), Ok("/www".into()));
        assert_eq!(resolve("/docs/a.txt"), Ok("/www/docs/a.txt".into()));
        assert_eq!(resolve("/inside"), Ok("/www/docs/a.txt".into()));
        assert_eq!(resolve("/abs-in/a.txt"), Ok("/www/docs/a.txt".into()));
        assert_eq!(resolve("/sneaky"), Ok("/www/docs/a.txt".into()));
        assert_eq!(resolve("/docs/back/docs"), Ok("/www/docs".into()));
        assert_eq!(resolve("/up"), Err(PathError::Escape));
        assert_eq!(resolve("/abs-out"), Err(PathError::Escape));
        assert_eq!(resolve("/root"), Err(PathError::Escape));
        assert_eq!(resolve("/loop"), Err(PathError::Escape));
        // At the filesystem's root every link target stays inside.
        let at_top = confine("/", &strings(&["www", "up"]), links);
        assert_eq!(at_top, Ok("/secret".into()));
        assert!(is_within("/", "/x") && is_within("/www", "/www") && !is_within("/www", "/wwwx"));
    }

    #[test]
    fn content_types_from_extensions() {
        assert_eq!(content_type("index.html"), "text/html; charset=utf-8");
        assert_eq!(content_type("A.JPG"), "image/jpeg");
        assert_eq!(content_type("notes.txt"), "text/plain; charset=utf-8");
        assert_eq!(content_type("archive.tar.gz"), "application/gzip");
        assert_eq!(content_type(".bashrc"), "application/octet-stream");
        assert_eq!(content_type("noextension"), "application/octet-stream");
        assert_eq!(content_type("x.verylongextension"), "application/octet-stream");
        assert_eq!(content_type("x.€"), "application/octet-stream");
    }

    #[test]
    fn dates_round_trip_and_garbage_is_ignored() {
        assert_eq!(parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"), Some(784_111_777));
        for seconds in [0u64, 784_111_777, 951_782_400, 1_764_620_016, 4_102_444_800] {
            let mut text = String::new();
            crate::http::http_date(seconds, &mut text);
            assert_eq!(parse_http_date(&text), Some(seconds), "{text}");
        }
        for bad in [
            "",
            "Sunday, 06-Nov-94 08:49:37 GMT",
            "Sun Nov  6 08:49:37 1994",
            "Sun, 06 Nov 1994 08:49:37 UTC",
            "Sun, 6 Nov 1994 08:49:37 GMT",
            "Sun, 06 Foo 1994 08:49:37 GMT",
            "Sun, 06 Nov 1994 25:49:37 GMT",
            "Sun, +6 Nov 1994 08:49:37 GMT",
            "Sun, 06 Nov 1994 08:49:37 GMT extra",
        ] {
            assert_eq!(parse_http_date(bad), None, "{bad}");
        }
    }

    #[test]
    fn conditional_requests() {
        let tag = etag(12, 3000, 784_111_777);
        assert_eq!(tag, "\"c-bb8-2ebc98a1\"");
        assert!(not_modified(Some(&tag), None, &tag, 5));
        assert!(not_modified(Some("\"x\", W/\"c-bb8-2ebc98a1\""), None, &tag, 5));
        assert!(not_modified(Some("*"), None, &tag, 5));
        // If-None-Match decides when present, even against a matching date.
        assert!(!not_modified(Some("\"other\""), Some("Sun, 06 Nov 1994 08:49:37 GMT"), &tag, 5));
        assert!(not_modified(None, Some("Sun, 06 Nov 1994 08:49:37 GMT"), &tag, 784_111_777));
        assert!(!not_modified(None, Some("Sun, 06 Nov 1994 08:49:37 GMT"), &tag, 784_111_778));
        assert!(!not_modified(None, Some("yesterday"), &tag, 0));
        assert!(!not_modified(None, None, &tag, 0));
    }

    #[test]
    fn byte_ranges() {
        use Range::*;
        assert_eq!(range(None, 100), Full);
        assert_eq!(range(Some("bytes=0-9"), 100), Partial { start: 0, end: 9 });
        assert_eq!(range(Some("bytes=90-"), 100), Partial { start: 90, end: 99 });
        assert_eq!(range(Some("bytes=-10"), 100), Partial { start: 90, end: 99 });
        assert_eq!(range(Some("bytes=-1000"), 100), Partial { start: 0, end: 99 });
        assert_eq!(range(Some("bytes=50-1000"), 100), Partial { start: 50, end: 99 });
        assert_eq!(range(Some("bytes=100-"), 100), Unsatisfiable);
        assert_eq!(range(Some("bytes=100-200"), 100), Unsatisfiable);
        assert_eq!(range(Some("bytes=-0"), 100), Unsatisfiable);
        assert_eq!(range(Some("bytes=-5"), 0), Unsatisfiable);
        for ignored in ["bytes=9-0", "bytes=a-b", "items=0-1", "bytes=0-1,5-6", "bytes=", "bytes=-", "bytes=+1-2"] {
            assert_eq!(range(Some(ignored), 100), Full, "{ignored}");
        }
        let big = 5u64 << 30;
        assert_eq!(range(Some("bytes=4294967296-"), big), Partial { start: 1 << 32, end: big - 1 });
        assert_eq!(range(Some("bytes=0-99999999999999999999999"), 100), Full);
    }

    #[test]
    fn if_range_needs_our_tag_or_our_date() {
        let tag = etag(5, 10, 784_111_777);
        assert!(if_range_allows(None, &tag, 784_111_777));
        assert!(if_range_allows(Some(&tag), &tag, 784_111_777));
        assert!(!if_range_allows(Some("\"other\""), &tag, 784_111_777));
        assert!(!if_range_allows(Some(&format!("W/{tag}")), &tag, 784_111_777), "weak tags never match");
        assert!(if_range_allows(Some("Sun, 06 Nov 1994 08:49:37 GMT"), &tag, 784_111_777));
        assert!(!if_range_allows(Some("Sun, 06 Nov 1994 08:49:38 GMT"), &tag, 784_111_777), "exactly, not later");
        assert!(!if_range_allows(Some("yesterday"), &tag, 784_111_777));
    }

    #[test]
    fn index_pages_escape_names() {
        let mut entries = vec![
            IndexEntry { name: "b <x>.txt".into(), is_dir: false, size: 5 },
            IndexEntry { name: "a dir".into(), is_dir: true, size: 4096 },
        ];
        let page = directory_index("/sub/", &mut entries);
        assert!(page.contains("<title>Index of /sub/</title>"));
        assert!(page.contains("<a href=\"../\">../</a>"));
        assert!(page.contains("<li><a href=\"a%20dir/\">a dir/</a> </li>"));
        assert!(page.contains("<a href=\"b%20%3Cx%3E.txt\">b &lt;x&gt;.txt</a> 5 bytes"));
        assert!(page.find("a dir").unwrap() < page.find("b &lt;").unwrap());
        assert!(!directory_index("/", &mut []).contains("../"));
    }

    #[test]
    fn the_root_is_the_disk_then_the_share_unless_webroot_says() {
        let only_share = |path: &str| path == "/share" || path == "/share/www";
        let disk_and_share = |path: &str| path == "/" || path == "/share";
        let nothing = |_: &str| false;
        assert_eq!(choose_root(None, disk_and_share), Some("/"));
        assert_eq!(choose_root(None, only_share), Some("/share"));
        assert_eq!(choose_root(None, nothing), None);
        assert_eq!(choose_root(Some("/share/www"), only_share), Some("/share/www"));
        // A webroot that is not a directory serves nothing, not a fallback.
        assert_eq!(choose_root(Some("/typo"), disk_and_share), None);
    }
}
