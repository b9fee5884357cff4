//! The built-in site: the index page, the live page and `/stats`.

use core::fmt::Write as _;

use toro::alloc::string::String;
use toro::alloc::vec::Vec;
use toro_net::http::{Request, Response};

use crate::stats;

/// The index page: 612 bytes, like nginx's default page.
pub const INDEX: &[u8] = include_bytes!("index.html");

/// The live page: fetches `/stats?format=json` every second.
const LIVE: &str = r#"<!DOCTYPE html>
<html><head><title>Toro: live</title>
<style>body{font-family:sans-serif;margin:2em}td,th{padding:.2em .8em;text-align:right}</style>
</head><body><h1>Toro, per CPU</h1><table id="t"></table><pre id="n"></pre>
<script>
async function tick(){
 const s=await (await fetch('/stats?format=json')).json();
 let h='<tr><th>cpu</th><th>accepted</th><th>open</th><th>requests</th><th>bytes in</th><th>bytes out</th><th>heap in use</th></tr>';
 for(const c of s.cpus){h+=`<tr><td>${c.cpu}</td><td>${c.accepted}</td><td>${c.open}</td><td>${c.requests}</td><td>${c.bytes_in}</td><td>${c.bytes_out}</td><td>${c.heap_in_use}</td></tr>`;}
 document.getElementById('t').innerHTML=h;
 document.getElementById('n').textContent=JSON.stringify(s.interfaces,null,1);
}
tick();setInterval(tick,1000);
</script></body></html>
"#;

/// Answers one request, gzip-coded where it applies.
pub fn respond(request: &Request<'_>) -> Response<'static> {
    let mut response = handle(request);
    crate::coding::apply(request, &mut response);
    response
}

/// Answers one request.
fn handle(request: &Request<'_>) -> Response<'static> {
    // With a disk mounted, everything but the live pages is its files.
    if let Some(root) = crate::files::root() {
        if !matches!(request.path(), "/live" | "/stats" | "/echo") {
            return crate::files::handle(request, root);
        }
    }
    let get = matches!(request.method, "GET" | "HEAD");
    match (request.path(), get) {
        ("/" | "/index.html", true) => Response::new(200, "text/html", INDEX),
        ("/live", true) => Response::new(200, "text/html", LIVE.as_bytes()),
        ("/stats", true) => {
            let json = request.query().is_some_and(|query| query.split('&').any(|pair| pair == "format=json"))
                || request.accept.is_some_and(|accept| accept.contains("application/json"));
            if json {
                Response::new(200, "application/json", render_json().into_bytes())
            } else {
                Response::new(200, "text/plain", render_text().into_bytes())
            }
        }
        ("/echo", _) if request.method == "POST" => {
            Response::new(200, "application/octet-stream", request.body.to_vec())
        }
        ("/" | "/index.html" | "/live" | "/stats", false) => {
            Response { extra_header: Some("Allow: GET, HEAD"), ..Response::status(405) }
        }
        _ => Response::status(404),
    }
}

/// The CPUs to report: all that run.
fn cpus() -> usize {
    toro::cpu::count().min(stats::MAX_CPUS)
}

/// A row of `/stats`: an optional label (an interface's name) and named values.
type Row<'a, const N: usize> = (Option<&'a str>, [(&'static str, u64); N]);

/// One CPU's figures, named as `/stats` shows them.
fn cpu_fields(cpu: usize) -> [(&'static str, u64); 12] {
    let c = stats::of(cpu);
    let heap = toro::memory::usage(cpu).map_or(0, |usage| usage.in_use);
    [
        ("cpu", cpu as u64),
        ("accepted", load(&c.accepted)),
        ("open", load(&c.open)),
        ("requests", load(&c.requests)),
        ("rejected", load(&c.rejected)),
        ("timed_out", load(&c.timed_out)),
        ("refused", load(&c.refused)),
        ("bytes_in", load(&c.bytes_in)),
        ("bytes_out", load(&c.bytes_out)),
        ("gzipped", load(&c.gzipped)),
        ("heap_in_use", heap),
        // Timed waits in the CPU's deadline heap (sleeps, socket and
        // keep-alive timeouts still on).
        ("sleepers", toro::thread::sleepers(cpu).unwrap_or(0) as u64),
    ]
}

/// One interface's figures, named as `/stats` shows them.
fn interface_fields(interface: &toro::net::InterfaceInfo) -> [(&'static str, u64); 16] {
    [
        ("cpu", interface.cpu as u64),
        ("sockets", interface.stack.sockets as u64),
        ("closing", interface.stack.closing as u64),
        // Ended TCP sockets kept for the next connections, and how many
        // connections took one instead of a new allocation.
        ("spare", interface.stack.spare as u64),
        ("reused", interface.stack.reused),
        ("accepted", interface.stack.accepted),
        ("listen_drops", interface.stack.listen_drops),
        // Connections whose peer went silent with data unacknowledged.
        ("tcp_timed_out", interface.stack.connections_timed_out),
        // Hosts on the link whose MAC was taken from their frames, not ARP.
        ("neighbours_learned", interface.stack.neighbours_learned),
        ("rx_frames", interface.device.rx_frames),
        ("tx_frames", interface.device.tx_frames),
        ("tx_ring_full", interface.device.tx_ring_full),
        ("rx_dropped", interface.device.rx_dropped),
        ("rx_large", interface.device.rx_large),
        ("remote_calls", interface.counters.remote_calls),
        ("pumps", interface.counters.pumps),
    ]
}

/// Rows of `name value ...` under a header line of the names.
fn text_table<const N: usize>(text: &mut String, first: &str, rows: &[Row<'_, N>]) {
    let Some((_, names)) = rows.first() else { return };
    text.push_str(first);
    for (name, _) in names {
        let _ = write!(text, " {name}");
    }
    text.push('\n');
    for (label, fields) in rows {
        if let Some(label) = label {
            let _ = write!(text, "{label} ");
        }
        let values: Vec<String> = fields.iter().map(|(_, value)| toro::alloc::format!("{value}")).collect();
        text.push_str(&values.join(" "));
        text.push('\n');
    }
}

/// A JSON array of objects.
fn json_array<const N: usize>(json: &mut String, rows: &[Row<'_, N>]) {
    json.push('[');
    for (index, (label, fields)) in rows.iter().enumerate() {
        if index > 0 {
            json.push(',');
        }
        json.push('{');
        if let Some(label) = label {
            let _ = write!(json, "\"name\":\"{label}\",");
        }
        for (position, (name, value)) in fields.iter().enumerate() {
            let _ = write!(json, "{}\"{name}\":{value}", if position > 0 { "," } else { "" });
        }
        json.push('}');
    }
    json.push(']');
}

fn render_text() -> String {
    let mut text = String::new();
    let cpus: Vec<_> = (0..cpus()).map(|cpu| (None, cpu_fields(cpu))).collect();
    text_table(&mut text, "", &cpus);
    let interfaces = toro::net::interfaces();
    let rows: Vec<_> = interfaces.iter().map(|i| (Some(i.name), interface_fields(i))).collect();
    text_table(&mut text, "interface", &rows);
    text
}

fn render_json() -> String {
    let mut json = String::from("{\"cpus\":");
    let cpus: Vec<_> = (0..cpus()).map(|cpu| (None, cpu_fields(cpu))).collect();
    json_array(&mut json, &cpus);
    json.push_str(",\"interfaces\":");
    let interfaces = toro::net::interfaces();
    let rows: Vec<_> = interfaces.iter().map(|i| (Some(i.name), interface_fields(i))).collect();
    json_array(&mut json, &rows);
    json.push('}');
    json
}

fn load(counter: &core::sync::atomic::AtomicU64) -> u64 {
    counter.load(core::sync::atomic::Ordering::Relaxed)
}
