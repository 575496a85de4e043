//! The Prometheus text exposition format (version 0.0.4) of a
//! [`Snapshot`]: a `# HELP` and a `# TYPE` line per family, metric names
//! `wireloop_*`, a `service` label per socket. Counters end in `_total`;
//! the pass-time histogram has cumulative `_bucket{le=..}` lines, `_sum` and
//! `_count`. Pure: the text is appended to a `String`.

use std::fmt::Write;

use super::{Snapshot, WorkerFigures};
use crate::{ListenerStats, UdpStats, PASS_BUCKETS_US};

type TcpField = fn(&ListenerStats) -> u64;
type UdpField = fn(&UdpStats) -> u64;
type WorkerField = fn(&WorkerFigures) -> u64;

/// Per TCP service: (name, type, help, value).
const TCP: &[(&str, &str, &str, TcpField)] = &[
    ("wireloop_tcp_connections_open", "gauge", "Accepted connections open now.", |s| s.open),
    ("wireloop_tcp_connections_accepted_total", "counter", "Connections accepted.", |s| s.accepted),
    (
        "wireloop_tcp_connections_refused_total",
        "counter",
        "Connections refused at the connection or descriptor limit.",
        |s| s.refused,
    ),
    ("wireloop_tcp_received_bytes_total", "counter", "Bytes read from connections.", |s| s.bytes_in),
    ("wireloop_tcp_sent_bytes_total", "counter", "Bytes written to connections.", |s| s.bytes_out),
];

/// Per loop: (name, type, help, value), each sample labelled `worker`.
const PER_WORKER: &[(&str, &str, &str, WorkerField)] = &[
    (
        "wireloop_worker_connections_open",
        "gauge",
        "Accepted connections open now, per loop (how SO_REUSEPORT split them).",
        |w| w.open,
    ),
    ("wireloop_worker_connections_accepted_total", "counter", "Connections accepted, per loop.", |w| w.accepted),
    (
        "wireloop_worker_slab_slots",
        "gauge",
        "Slots of the loop's slab, held and free (a few hundred bytes each); shrinks after a mass close.",
        |w| w.slots,
    ),
];

/// Kinds of `wireloop_tcp_connection_errors_total`.
const TCP_ERRORS: &[(&str, TcpField)] =
    &[("socket", |s| s.errors), ("timeout", |s| s.timeouts), ("overflow", |s| s.overflows), ("tls", |s| s.tls_errors)];

/// Per UDP service: (name, help, value); all counters.
const UDP: &[(&str, &str, UdpField)] = &[
    ("wireloop_udp_received_datagrams_total", "Datagrams received.", |s| s.received),
    ("wireloop_udp_sent_datagrams_total", "Replies handed to the kernel.", |s| s.sent),
];

/// Reasons of `wireloop_udp_dropped_datagrams_total`.
const UDP_DROPS: &[(&str, UdpField)] =
    &[("queue_full", |s| s.dropped), ("send_error", |s| s.send_errors), ("looped", |s| s.looped)];

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// Appends the exposition of `snap` to `out`.
pub fn render(snap: &Snapshot, out: &mut String) {
    for &(name, kind, help, get) in TCP {
        family(out, name, kind, help);
        for (svc, s) in &snap.tcp {
            let _ = writeln!(out, "{name}{{service=\"{svc}\"}} {}", get(s));
        }
    }
    let name = "wireloop_tcp_connection_errors_total";
    family(out, name, "counter", "Connections closed by an error, by kind (socket, timeout, overflow, tls).");
    for (svc, s) in &snap.tcp {
        for &(kind, get) in TCP_ERRORS {
            let _ = writeln!(out, "{name}{{service=\"{svc}\",kind=\"{kind}\"}} {}", get(s));
        }
    }
    for &(name, help, get) in UDP {
        family(out, name, "counter", help);
        for (svc, s) in &snap.udp {
            let _ = writeln!(out, "{name}{{service=\"{svc}\"}} {}", get(&s.stats));
        }
    }
    let name = "wireloop_udp_dropped_datagrams_total";
    family(out, name, "counter", "Replies dropped, by reason (queue_full, send_error, looped).");
    for (svc, s) in &snap.udp {
        for &(reason, get) in UDP_DROPS {
            let _ = writeln!(out, "{name}{{service=\"{svc}\",reason=\"{reason}\"}} {}", get(&s.stats));
        }
    }
    let name = "wireloop_udp_rate_limited_datagrams_total";
    family(out, name, "counter", "Datagrams left unanswered over their source's rate or byte limit.");
    for (svc, s) in &snap.udp {
        if let Some(n) = s.rate_limited {
            let _ = writeln!(out, "{name}{{service=\"{svc}\"}} {n}");
        }
    }
    for block in &snap.services {
        block.render(out);
    }
    let name = "wireloop_loop_passes_total";
    family(out, name, "counter", "Passes the event loops ran (all workers).");
    let _ = writeln!(out, "{name} {}", snap.passes.passes);
    let name = "wireloop_loop_pass_duration_seconds";
    family(out, name, "histogram", "Time a pass spent on its events, pending work and timers (not the wait).");
    let mut cumulative = 0u64;
    for (i, bound) in PASS_BUCKETS_US.iter().enumerate() {
        cumulative = cumulative.saturating_add(snap.passes.buckets[i]);
        let _ = writeln!(out, "{name}_bucket{{le=\"{}\"}} {cumulative}", seconds_us(*bound));
    }
    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", snap.passes.passes);
    let _ = writeln!(out, "{name}_sum {}", snap.passes.total_ns as f64 / 1e9);
    let _ = writeln!(out, "{name}_count {}", snap.passes.passes);
    let name = "wireloop_loop_closes_deferred_total";
    family(
        out,
        name,
        "counter",
        "Connections whose peer closed while the loop was behind, closed after the live connections' events.",
    );
    let _ = writeln!(out, "{name} {}", snap.passes.deferred_closes);
    for &(name, kind, help, get) in PER_WORKER {
        family(out, name, kind, help);
        for w in &snap.per_worker {
            let _ = writeln!(out, "{name}{{worker=\"{}\"}} {}", w.worker, get(w));
        }
    }
    let name = "wireloop_workers";
    family(out, name, "gauge", "Event loops (threads) serving.");
    let _ = writeln!(out, "{name} {}", snap.workers);
}

/// Microseconds as seconds, exactly (no float rounding): `50` → `0.00005`.
fn seconds_us(us: u64) -> String {
    let (s, frac) = (us / 1_000_000, us % 1_000_000);
    if frac == 0 {
        return s.to_string();
    }
    let digits = format!("{frac:06}");
    format!("{s}.{}", digits.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::super::UdpEntry;
    use super::*;
    use crate::PassStats;

    #[test]
    fn bounds_in_seconds() {
        assert_eq!(seconds_us(50), "0.00005");
        assert_eq!(seconds_us(2_500), "0.0025");
        assert_eq!(seconds_us(1_000_000), "1");
    }

    #[test]
    fn renders_families_and_labels() {
        let mut passes = PassStats::default();
        passes.record(std::time::Duration::from_micros(40));
        passes.record(std::time::Duration::from_millis(3));
        passes.deferred_closes = 7;
        let snap = Snapshot {
            tcp: vec![(
                "echo",
                ListenerStats { accepted: 3, open: 1, bytes_in: 10, timeouts: 2, ..Default::default() },
            )],
            udp: vec![(
                "udp-echo",
                UdpEntry { stats: UdpStats { received: 4, sent: 3, ..Default::default() }, rate_limited: Some(1) },
            )],
            services: Vec::new(),
            passes,
            workers: 1,
            per_worker: vec![WorkerFigures { worker: 0, open: 1, accepted: 3, slots: 16 }],
        };
        let mut out = String::new();
        render(&snap, &mut out);
        for line in [
            "# TYPE wireloop_tcp_connections_open gauge",
            "wireloop_tcp_connections_open{service=\"echo\"} 1",
            "wireloop_tcp_connections_accepted_total{service=\"echo\"} 3",
            "wireloop_tcp_received_bytes_total{service=\"echo\"} 10",
            "wireloop_tcp_connection_errors_total{service=\"echo\",kind=\"timeout\"} 2",
            "wireloop_udp_received_datagrams_total{service=\"udp-echo\"} 4",
            "wireloop_udp_sent_datagrams_total{service=\"udp-echo\"} 3",
            "wireloop_udp_dropped_datagrams_total{service=\"udp-echo\",reason=\"queue_full\"} 0",
            "wireloop_udp_rate_limited_datagrams_total{service=\"udp-echo\"} 1",
            "wireloop_loop_passes_total 2",
            "wireloop_loop_pass_duration_seconds_bucket{le=\"0.00005\"} 1",
            "wireloop_loop_pass_duration_seconds_bucket{le=\"0.0025\"} 1",
            "wireloop_loop_pass_duration_seconds_bucket{le=\"0.01\"} 2",
            "wireloop_loop_pass_duration_seconds_bucket{le=\"+Inf\"} 2",
            "wireloop_loop_pass_duration_seconds_sum 0.00304",
            "wireloop_loop_pass_duration_seconds_count 2",
            "wireloop_loop_closes_deferred_total 7",
            "wireloop_worker_connections_open{worker=\"0\"} 1",
            "wireloop_worker_connections_accepted_total{worker=\"0\"} 3",
            "wireloop_worker_slab_slots{worker=\"0\"} 16",
            "wireloop_workers 1",
        ] {
            assert!(out.lines().any(|l| l == line), "missing {line:?} in\n{out}");
        }
        // Every sample's family was declared before it.
        let mut declared = Vec::new();
        for l in out.lines() {
            if let Some(rest) = l.strip_prefix("# TYPE ") {
                declared.push(rest.split(' ').next().unwrap().to_string());
            } else if !l.starts_with('#') {
                let name = l.split(['{', ' ']).next().unwrap();
                assert!(declared.iter().any(|d| name.starts_with(d.as_str())), "{name} undeclared");
            }
        }
    }
}
