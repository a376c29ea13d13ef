//! `parley-bench soak --minutes N`: the shop conversation at a steady rate for a long time,
//! with short retention windows, sampling every few seconds the database's size, the WAL's,
//! the daemon's RSS and the reply p99 into a CSV, then drawn as a PNG chart. Once the
//! windows are full, disk and memory should be flat.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use parley_testkit::text_webhook;

use crate::daemon::{now_secs, proc_stats, start_daemon};
use crate::load::{closed_loop, replying_graph, Turn};
use crate::report::pct;
use crate::{Cli, ADMIN, PNID};

/// One sample.
struct Sample {
    seconds: f64,
    db_bytes: u64,
    wal_bytes: u64,
    rss_kib: u64,
    /// From the daemon's `/metrics`: what SQLite holds, and what the allocator holds in all.
    sqlite_kib: u64,
    heap_kib: u64,
    p99_ms: f64,
    replies_per_s: f64,
}

pub(crate) struct Soak {
    pub(crate) minutes: f64,
    pub(crate) users: usize,
    pub(crate) think_ms: u64,
    pub(crate) sample_secs: u64,
    pub(crate) window: String,
    pub(crate) out: PathBuf,
}

pub(crate) async fn soak(cli: &Cli, s: Soak) -> anyhow::Result<()> {
    let (graph, waiters, _) = replying_graph().await;
    let w = &s.window;
    let extra = format!(
        "[retention]\ninbox = \"{w}\"\ndedup = \"{w}\"\noutbox = \"{w}\"\nmessages = \"{w}\"\n\
         flow_steps = \"{w}\"\nevery = \"{}s\"\n",
        s.sample_secs.max(1)
    );
    let daemon = start_daemon(cli, &graph, "10m", &extra).await?;
    let pid = daemon.child.id();
    let db = cli
        .store
        .is_none()
        .then(|| daemon._dir.path().join("parley.db"));
    // Each user's place in the shop script, across the sampling windows.
    let turns: Arc<Mutex<HashMap<String, u64>>> = Arc::default();
    let script = Arc::new(move |user: &str, _: u64| -> Turn {
        let n = {
            let mut t = turns.lock().unwrap();
            let n = t.entry(user.to_string()).or_insert(0);
            *n += 1;
            *n
        };
        let (input, button, expected) = parley_testkit::SHOP_SCRIPT[((n - 1) % 6) as usize];
        let wamid = format!("wamid.K{user}-{n}");
        let body = if button {
            parley_testkit::button_reply_webhook(PNID, user, &wamid, input, "Catalog", now_secs())
        } else {
            text_webhook(PNID, user, &wamid, input, now_secs())
        };
        (body, Some(expected.to_string()))
    });
    std::fs::create_dir_all(&s.out)?;
    let csv_path = s.out.join("soak.csv");
    let mut csv = std::fs::File::create(&csv_path)?;
    writeln!(
        csv,
        "seconds,db_bytes,wal_bytes,rss_kib,sqlite_kib,heap_kib,reply_p99_ms,replies_per_s"
    )?;
    println!(
        "soak: {} users, {} ms think, windows {w}, a sample every {} s for {} min",
        s.users, s.think_ms, s.sample_secs, s.minutes
    );
    let client = reqwest::Client::new();
    let started = Instant::now();
    let mut samples = Vec::new();
    let mut wrong_total = 0;
    while started.elapsed().as_secs_f64() < s.minutes * 60.0 {
        let (lat, _, wrong) = closed_loop(
            &daemon.base,
            &waiters,
            s.users,
            s.sample_secs,
            script.clone(),
            Duration::from_millis(s.think_ms),
        )
        .await;
        wrong_total += wrong;
        let (db_bytes, wal_bytes) = match &db {
            Some(db) => (file_size(db), file_size(&wal_of(db))),
            None => (database_bytes(&client, &daemon.base).await, 0),
        };
        let (sqlite_kib, heap_kib) = memory_kib(&client, &daemon.base).await;
        let sample = Sample {
            seconds: started.elapsed().as_secs_f64(),
            db_bytes,
            wal_bytes,
            rss_kib: proc_stats(pid).1,
            sqlite_kib,
            heap_kib,
            p99_ms: pct(&lat, 0.99),
            replies_per_s: lat.len() as f64 / s.sample_secs as f64,
        };
        writeln!(
            csv,
            "{:.1},{},{},{},{},{},{:.2},{:.1}",
            sample.seconds,
            sample.db_bytes,
            sample.wal_bytes,
            sample.rss_kib,
            sample.sqlite_kib,
            sample.heap_kib,
            sample.p99_ms,
            sample.replies_per_s
        )?;
        csv.flush()?;
        println!(
            "{:>7.0} s  db {:>7.1} MB  wal {:>7.1} MB  rss {:>6.1} MiB (heap {:>6.1}, sqlite {:>5.1})  p99 {:>7.1} ms  {:>6.0} replies/s",
            sample.seconds,
            sample.db_bytes as f64 / 1e6,
            sample.wal_bytes as f64 / 1e6,
            sample.rss_kib as f64 / 1024.0,
            sample.heap_kib as f64 / 1024.0,
            sample.sqlite_kib as f64 / 1024.0,
            sample.p99_ms,
            sample.replies_per_s
        );
        samples.push(sample);
    }
    println!("wrong or missing replies: {wrong_total}");
    let png = s.out.join("soak.png");
    chart(&samples, &png, &s.window)?;
    println!("wrote {} and {}", csv_path.display(), png.display());
    Ok(())
}

fn file_size(p: &Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

fn wal_of(db: &Path) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push("-wal");
    name.into()
}

/// PostgreSQL: the database's size as `GET /admin/v1/storage` reports it.
async fn database_bytes(client: &reqwest::Client, base: &str) -> u64 {
    let answer = client
        .get(format!("{base}/admin/v1/storage"))
        .bearer_auth(ADMIN)
        .send()
        .await;
    match answer {
        Ok(r) => r
            .json::<serde_json::Value>()
            .await
            .ok()
            .and_then(|v| v["database_bytes"].as_u64())
            .unwrap_or(0),
        Err(_) => 0,
    }
}

/// (SQLite's memory, the allocator's committed memory) in KiB, read from `GET /metrics`.
async fn memory_kib(client: &reqwest::Client, base: &str) -> (u64, u64) {
    let text = match client.get(format!("{base}/metrics")).send().await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    };
    let read = |name: &str| {
        text.lines()
            .find_map(|l| {
                l.strip_prefix(name)?
                    .strip_prefix(' ')?
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
            .unwrap_or(0)
            / 1024
    };
    (
        read("parley_sqlite_memory_bytes"),
        read("parley_heap_committed_bytes"),
    )
}

/// A system font for the labels, if one is found (the chart is drawn without text if not).
fn font() -> bool {
    const CANDIDATES: [&str; 3] = [
        "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
        "/usr/share/fonts/dejavu/DejaVuSans.ttf",
        "/usr/share/fonts/TTF/DejaVuSans.ttf",
    ];
    CANDIDATES.iter().any(|p| match std::fs::read(p) {
        Ok(bytes) => plotters::style::register_font(
            "sans-serif",
            plotters::style::FontStyle::Normal,
            Box::leak(bytes.into_boxed_slice()),
        )
        .is_ok(),
        Err(_) => false,
    })
}

/// Three panels over time: disk (database and WAL, MB), RSS (MiB), reply p99 (ms).
fn chart(samples: &[Sample], png: &Path, window: &str) -> anyhow::Result<()> {
    use plotters::prelude::*;
    let labels = font();
    let root = BitMapBackend::new(png, (1000, 900)).into_drawing_area();
    root.fill(&WHITE)?;
    let panels = root.split_evenly((3, 1));
    let end = samples.last().map_or(1.0, |s| s.seconds).max(1.0);
    type Line<'a> = (&'a str, RGBColor, Box<dyn Fn(&Sample) -> f64>);
    let series: [(String, Vec<Line>); 3] = [
        (
            format!("disk, MB (retention windows {window})"),
            vec![
                ("database", BLUE, Box::new(|s| s.db_bytes as f64 / 1e6)),
                ("WAL", RED, Box::new(|s| s.wal_bytes as f64 / 1e6)),
            ],
        ),
        (
            "daemon memory, MiB".into(),
            vec![
                ("RSS", GREEN, Box::new(|s| s.rss_kib as f64 / 1024.0)),
                (
                    "heap committed",
                    BLUE,
                    Box::new(|s| s.heap_kib as f64 / 1024.0),
                ),
                ("SQLite", RED, Box::new(|s| s.sqlite_kib as f64 / 1024.0)),
            ],
        ),
        (
            "webhook to reply p99, ms".into(),
            vec![("p99", MAGENTA, Box::new(|s| s.p99_ms))],
        ),
    ];
    for (area, (title, lines)) in panels.iter().zip(series.iter()) {
        let top = samples
            .iter()
            .flat_map(|s| lines.iter().map(move |(_, _, f)| f(s)))
            .filter(|v| v.is_finite())
            .fold(0.0f64, f64::max)
            .max(1.0)
            * 1.15;
        let mut builder = ChartBuilder::on(area);
        builder.margin(12);
        if labels {
            builder
                .caption(title, ("sans-serif", 18))
                .x_label_area_size(28)
                .y_label_area_size(60);
        }
        let mut chart = builder.build_cartesian_2d(0f64..end, 0f64..top)?;
        let mut mesh = chart.configure_mesh();
        if labels {
            mesh.x_desc("seconds");
        } else {
            mesh.disable_x_mesh().x_labels(0).y_labels(0);
        }
        mesh.draw()?;
        for (name, color, f) in lines {
            let drawn = chart.draw_series(LineSeries::new(
                samples
                    .iter()
                    .map(|s| (s.seconds, f(s)))
                    .filter(|(_, v)| v.is_finite()),
                color,
            ))?;
            if labels {
                drawn
                    .label(*name)
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color));
            }
        }
        if labels {
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .draw()?;
        }
    }
    root.present()?;
    Ok(())
}
