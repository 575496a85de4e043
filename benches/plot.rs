//! Draws the scaling measurements as SVG: from `benches/scaling.sh`,
//! requests/s and p99 against connections, and time per byte against
//! request size (both axes logarithmic); from `benches/idle.sh` and
//! `benches/structures.sh`, memory per idle connection to the descriptor
//! ceiling beside the loop's structures to a million, and the structures'
//! instructions per connection (each drawn only if its runs are there).
//!
//! ```text
//! benches/scaling.sh && cargo bench --bench plot      # writes docs/scaling-*.svg
//! benches/idle.sh && benches/structures.sh && cargo bench --bench plot
//! ```

use std::collections::BTreeMap;

use plotters::prelude::*;

mod common;
use common::median;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args().skip(1).find(|a| !a.starts_with("--")).unwrap_or("target/scaling/runs.jsonl".into());
    match read_jsonl(&path) {
        Some(rows) => scaling_charts(&path, &rows)?,
        None => println!("no {path}: run benches/scaling.sh for docs/scaling-connections.svg and -size.svg"),
    }
    idle_charts("target/idle/runs.jsonl", "target/structures/phases.jsonl")
}

/// Requests/s and p99 against connections, and time per byte against size.
fn scaling_charts(path: &str, rows: &[serde_json::Value]) -> Result<(), Box<dyn std::error::Error>> {
    let mut by_conns: BTreeMap<u64, (Vec<f64>, Vec<f64>)> = BTreeMap::new();
    let mut by_size: BTreeMap<u64, Vec<f64>> = BTreeMap::new();
    for r in rows {
        let rps = r["rps"].as_f64().unwrap_or(0.0);
        match r["label"].as_str() {
            Some("conns") => {
                let e = by_conns.entry(r["conns"].as_u64().unwrap_or(0)).or_default();
                e.0.push(rps);
                e.1.push(r["p99_us"].as_f64().unwrap_or(0.0));
            }
            Some("size") => by_size.entry(r["size"].as_u64().unwrap_or(0)).or_default().push(rps),
            _ => {}
        }
    }

    // Requests/s (left axis) and p99 (right axis) against connections.
    let conns: Vec<(f64, f64, f64)> =
        by_conns.into_iter().map(|(c, (r, p))| (c as f64, median(r), median(p))).collect();
    let root = SVGBackend::new("docs/scaling-connections.svg", (720, 420)).into_drawing_area();
    root.fill(&WHITE)?;
    let max_rps = conns.iter().map(|c| c.1).fold(1.0, f64::max) * 1.2;
    let max_p99 = conns.iter().map(|c| c.2).fold(1.0, f64::max) * 1.5;
    let mut chart = ChartBuilder::on(&root)
        .caption("echo ping-pong, 64 B: throughput and p99 by connections", ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .right_y_label_area_size(70)
        .build_cartesian_2d((5f64..20_000f64).log_scale(), 0f64..max_rps)?
        .set_secondary_coord((5f64..20_000f64).log_scale(), (10f64..max_p99).log_scale());
    chart.configure_mesh().x_desc("connections").y_desc("requests/s").draw()?;
    chart.configure_secondary_axes().y_desc("p99 µs").draw()?;
    chart
        .draw_series(LineSeries::new(conns.iter().map(|c| (c.0, c.1)), &BLUE))?
        .label("requests/s")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 16, y)], BLUE));
    chart.draw_series(conns.iter().map(|c| Circle::new((c.0, c.1), 3, BLUE.filled())))?;
    chart
        .draw_secondary_series(LineSeries::new(conns.iter().map(|c| (c.0, c.2)), &RED))?
        .label("p99 µs")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 16, y)], RED));
    chart.draw_secondary_series(conns.iter().map(|c| Circle::new((c.0, c.2), 3, RED.filled())))?;
    chart.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).draw()?;
    root.present()?;

    // Nanoseconds per byte against request size: 4 connections, one request
    // each in flight, so one request takes 4 / rps seconds.
    let sizes: Vec<(f64, f64)> = by_size
        .into_iter()
        .map(|(s, r)| {
            let us = 4.0 / median(r) * 1e6;
            (s as f64, us * 1000.0 / s as f64)
        })
        .collect();
    let root = SVGBackend::new("docs/scaling-size.svg", (720, 420)).into_drawing_area();
    root.fill(&WHITE)?;
    let hi = sizes.iter().map(|s| s.1).fold(1.0, f64::max) * 2.0;
    let lo = sizes.iter().map(|s| s.1).fold(f64::MAX, f64::min) / 2.0;
    let mut chart = ChartBuilder::on(&root)
        .caption("echo time per byte by request size (4 connections)", ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d((8f64..2_097_152f64).log_scale(), (lo..hi).log_scale())?;
    chart.configure_mesh().x_desc("request size, bytes").y_desc("ns per byte").draw()?;
    chart.draw_series(LineSeries::new(sizes.iter().copied(), &BLUE))?;
    chart.draw_series(sizes.iter().map(|s| Circle::new(*s, 3, BLUE.filled())))?;
    root.present()?;
    println!("wrote docs/scaling-connections.svg and docs/scaling-size.svg from {path}");
    Ok(())
}

fn read_jsonl(path: &str) -> Option<Vec<serde_json::Value>> {
    let text = std::fs::read_to_string(path).ok()?;
    Some(text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect())
}

/// Bytes per idle connection against connections (sockets to the ceiling,
/// the loop's structures past it), and the structures' instructions per
/// connection per phase.
fn idle_charts(idle: &str, phases: &str) -> Result<(), Box<dyn std::error::Error>> {
    let (Some(idle_rows), Some(phase_rows)) = (read_jsonl(idle), read_jsonl(phases)) else {
        println!("no {idle} or {phases}: run benches/idle.sh and benches/structures.sh for docs/scaling-idle.svg");
        return Ok(());
    };
    // Median bytes per idle connection, by server and size.
    let mut sockets: BTreeMap<(String, u64), Vec<f64>> = BTreeMap::new();
    for r in &idle_rows {
        let (Some(t), Some(c), Some(b)) = (r["target"].as_str(), r["conns"].as_u64(), r["rss_per_conn"].as_f64())
        else {
            continue;
        };
        sockets.entry((t.to_string(), c)).or_default().push(b);
    }
    let series = |target: &str| -> Vec<(f64, f64)> {
        sockets.iter().filter(|((t, _), _)| t == target).map(|((_, c), b)| (*c as f64, median(b.clone()))).collect()
    };
    let structs: Vec<(f64, f64)> =
        phase_rows.iter().filter_map(|r| Some((r["conns"].as_f64()?, r["bytes"].as_f64()?))).collect();
    let root = SVGBackend::new("docs/scaling-idle.svg", (720, 420)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption("user-space bytes per idle connection", ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d((500f64..2_000_000f64).log_scale(), (100f64..200_000f64).log_scale())?;
    let whole = |v: &f64| format!("{v:.0}");
    chart
        .configure_mesh()
        .x_desc("connections")
        .y_desc("bytes per connection")
        .x_label_formatter(&whole)
        .y_label_formatter(&whole)
        .draw()?;
    for (points, label, color) in [
        (series("wireloop"), "wireloop, server RSS growth (idle.sh)", BLUE),
        (series("tokio"), "tokio current-thread, the same", RED),
        (structs, "wireloop, the loop's structures allocated, no sockets (structures.rs)", GREEN),
    ] {
        if points.is_empty() {
            continue;
        }
        chart
            .draw_series(LineSeries::new(points.iter().copied(), color))?
            .label(label)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], color));
        chart.draw_series(points.iter().map(|p| Circle::new(*p, 3, color.filled())))?;
    }
    chart.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).draw()?;
    root.present()?;

    let root = SVGBackend::new("docs/scaling-structures.svg", (720, 420)).into_drawing_area();
    root.fill(&WHITE)?;
    let max = phase_rows
        .iter()
        .flat_map(|r| ["insert", "event", "rearm", "close", "expire"].map(|p| r[p].as_f64().unwrap_or(0.0)))
        .fold(1.0, f64::max)
        * 1.3;
    let mut chart = ChartBuilder::on(&root)
        .caption("the loop's structures: instructions per connection (callgrind)", ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d((5_000f64..2_000_000f64).log_scale(), 0f64..max)?;
    let whole = |v: &f64| format!("{v:.0}");
    chart
        .configure_mesh()
        .x_desc("simulated connections")
        .y_desc("instructions per connection")
        .x_label_formatter(&whole)
        .y_label_formatter(&whole)
        .draw()?;
    for (phase, color) in [("insert", BLUE), ("event", GREEN), ("rearm", RED), ("close", BLACK), ("expire", MAGENTA)] {
        let points: Vec<(f64, f64)> =
            phase_rows.iter().filter_map(|r| Some((r["conns"].as_f64()?, r[phase].as_f64()?))).collect();
        chart
            .draw_series(LineSeries::new(points.iter().copied(), color))?
            .label(if phase == "rearm" { "deadline re-arm" } else { phase })
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], color));
        chart.draw_series(points.iter().map(|p| Circle::new(*p, 3, color.filled())))?;
    }
    chart.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).draw()?;
    root.present()?;
    println!("wrote docs/scaling-idle.svg and docs/scaling-structures.svg from {idle} and {phases}");
    Ok(())
}
