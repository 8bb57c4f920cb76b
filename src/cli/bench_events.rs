//! `facestream bench-events`: webhook delivery rate and enqueue→acknowledge latency to a
//! local receiver, and outbox growth while the receiver is down.

use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use facestream::events::bus;
use facestream::events::config::EventsConfig;
use facestream::events::outbox::Outbox;
use facestream::events::sinks::webhook::WebhookConfig;
use facestream::events::{Event, EventType};
use facestream::shutdown::Shutdown;

/// Arrival time of each webhook-id at the receiver.
type Arrivals = Arc<Mutex<Vec<(String, Instant)>>>;

#[derive(clap::Args)]
pub struct BenchEventsArgs {
    /// Events to deliver as one burst (throughput).
    #[arg(long, default_value_t = 5000)]
    events: usize,
    /// Events delivered at a steady rate (latency), and that rate per second.
    #[arg(long, default_value_t = 1000)]
    paced_events: usize,
    #[arg(long, default_value_t = 100)]
    rate: u64,
    /// Deliveries in flight per endpoint.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Events written during the simulated outage (outbox growth).
    #[arg(long, default_value_t = 20000)]
    outage_events: usize,
    /// A NATS server with JetStream (`nats://127.0.0.1:4222`): also deliver the burst
    /// through an `[[events.nats]]` sink (stream FACESTREAM_BENCH, created if missing),
    /// in the same run as the webhook burst.
    #[arg(long)]
    nats: Option<String>,
}

fn file_bytes(path: &std::path::Path) -> u64 {
    ["", "-wal", "-shm"]
        .iter()
        .filter_map(|s| std::fs::metadata(format!("{}{s}", path.display())).ok())
        .map(|m| m.len())
        .sum()
}

/// The CPU features that decide which machine kind a figure belongs to.
fn cpu_flags() -> String {
    #[cfg(target_arch = "x86_64")]
    {
        let mut flags = Vec::new();
        if std::arch::is_x86_feature_detected!("avx2") {
            flags.push("avx2");
        }
        if std::arch::is_x86_feature_detected!("avx512f") {
            flags.push("avx512f");
        }
        flags.join(" ")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        std::env::consts::ARCH.to_string()
    }
}

pub fn run(args: BenchEventsArgs) -> anyhow::Result<ExitCode> {
    println!(
        "machine: {} cores, flags: {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        cpu_flags()
    );
    let dir = std::env::temp_dir().join(format!("facestream-bench-events-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    // Receiver: records the arrival time of each webhook-id, answers 204.
    let arrivals: Arrivals = Arc::default();
    let sink = arrivals.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        actix_web::rt::System::new().block_on(async move {
            let data = web::Data::new(sink);
            let server = HttpServer::new(move || {
                App::new().app_data(data.clone()).route(
                    "/hook",
                    web::post().to(
                        |req: HttpRequest, _body: web::Bytes, st: web::Data<Arrivals>| async move {
                            let id = req
                                .headers()
                                .get("webhook-id")
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or("")
                                .to_string();
                            st.lock().unwrap().push((id, Instant::now()));
                            HttpResponse::NoContent().finish()
                        },
                    ),
                )
            })
            .workers(1)
            .bind(("127.0.0.1", 0))
            .expect("bind receiver");
            let port = server.addrs()[0].port();
            let server = server.run();
            tx.send(port).expect("report port");
            let _ = server.await;
        })
    });
    let port = rx.recv()?;
    let hook = |name: &str, port: u16| WebhookConfig {
        name: name.into(),
        url: format!("http://127.0.0.1:{port}/hook"),
        secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into(),
        types: vec![],
        max_concurrency: args.concurrency,
        timeout_ms: 5000,
        ca_file: String::new(),
    };
    let config = |hooks: Vec<WebhookConfig>| EventsConfig {
        outbox: dir.join("outbox.db").display().to_string(),
        dead_letter_after_s: 86400,
        retry_initial_ms: 1000,
        retry_max_ms: 300_000,
        thumbnails: false,
        retention_s: 604_800,
        webhooks: hooks,
        mqtt: vec![],
        nats: vec![],
        snapshots: Default::default(),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let outbox = Arc::new(Outbox::open(&dir.join("outbox.db"))?);
    let healthy = config(vec![hook("bench", port)]);
    let (_published, took) = runtime.block_on(async {
        let shutdown = Shutdown::new();
        let (bus, handles) = bus::start(outbox.clone(), &healthy, shutdown.clone());
        let mut published = std::collections::HashMap::with_capacity(args.events);
        let start = Instant::now();
        for k in 0..args.events {
            let mut e = Event::new(EventType::IdentityRecognized);
            e.camera_id = Some(format!("cam{}", k % 8));
            published.insert(e.id.to_string(), Instant::now());
            bus.publish(&e)?;
        }
        while arrivals.lock().unwrap().len() < args.events {
            anyhow::ensure!(
                start.elapsed() < Duration::from_secs(600),
                "deliveries stalled"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let took = start.elapsed();
        // One deliverer per endpoint: stop this phase's before the next starts.
        shutdown.request();
        futures_util::future::join_all(handles).await;
        Ok::<_, anyhow::Error>((published, took))
    })?;
    println!(
        "burst: delivered {} events in {:.2} s: {:.0} events/s (concurrency {})",
        args.events,
        took.as_secs_f64(),
        args.events as f64 / took.as_secs_f64(),
        args.concurrency
    );
    if let Some(url) = &args.nats {
        nats_burst(&runtime, &outbox, &config(vec![]), url, args.events)?;
    }
    // Healthy, steady load: enqueue→receiver latency.
    arrivals.lock().unwrap().clear();
    let paced = runtime.block_on(async {
        let shutdown = Shutdown::new();
        let (bus, handles) = bus::start(outbox.clone(), &healthy, shutdown.clone());
        let mut published = std::collections::HashMap::with_capacity(args.paced_events);
        let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / args.rate.max(1)));
        for _ in 0..args.paced_events {
            tick.tick().await;
            let e = Event::new(EventType::IdentityRecognized);
            published.insert(e.id.to_string(), Instant::now());
            bus.publish(&e)?;
        }
        let start = Instant::now();
        while arrivals.lock().unwrap().len() < args.paced_events {
            anyhow::ensure!(
                start.elapsed() < Duration::from_secs(60),
                "deliveries stalled"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        shutdown.request();
        futures_util::future::join_all(handles).await;
        Ok::<_, anyhow::Error>(published)
    })?;
    let mut latencies: Vec<f64> = arrivals
        .lock()
        .unwrap()
        .iter()
        .filter_map(|(id, at)| {
            paced
                .get(id)
                .map(|p| at.duration_since(*p).as_secs_f64() * 1e3)
        })
        .collect();
    latencies.sort_by(f64::total_cmp);
    let pct = |p: f64| latencies[((latencies.len() - 1) as f64 * p) as usize];
    println!(
        "steady {} events/s: enqueue (durable) → receiver p50 {:.2} ms, p99 {:.2} ms over {} events",
        args.rate,
        pct(0.5),
        pct(0.99),
        latencies.len()
    );
    // Outage: the endpoint is down; rows accumulate.
    let down = config(vec![hook("down", 9)]);
    let before = file_bytes(&dir.join("outbox.db"));
    let outage_start = Instant::now();
    runtime.block_on(async {
        let shutdown = Shutdown::new();
        let (bus, _handles) = bus::start(outbox.clone(), &down, shutdown.clone());
        for _ in 0..args.outage_events {
            bus.publish(&Event::new(EventType::IdentityUnknown))?;
        }
        Ok::<_, anyhow::Error>(())
    })?;
    let per_event =
        (file_bytes(&dir.join("outbox.db")) - before) as f64 / args.outage_events as f64;
    println!(
        "outage: {} events accepted in {:.1} s ({:.0} durable enqueues/s, the deliverer failing beside them)",
        args.outage_events,
        outage_start.elapsed().as_secs_f64(),
        args.outage_events as f64 / outage_start.elapsed().as_secs_f64()
    );
    println!(
        "outbox growth while the receiver is down: {per_event:.0} bytes/event = {:.1} MB per hour at 1 event/s, {:.0} MB per hour at 10 events/s",
        per_event * 3600.0 / 1e6,
        per_event * 36000.0 / 1e6
    );
    drop(outbox);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(ExitCode::SUCCESS)
}

/// The burst through a NATS JetStream sink: every row settled by its publish
/// acknowledgement (the outbox depth back at zero).
fn nats_burst(
    runtime: &tokio::runtime::Runtime,
    outbox: &Arc<Outbox>,
    base: &EventsConfig,
    url: &str,
    events: usize,
) -> anyhow::Result<()> {
    let mut config = base.clone();
    config.nats = vec![toml::from_str(&format!(
        "name = \"nats\"\nurl = \"{url}\"\nsubject_prefix = \"facestream-bench\"\nstream = \"FACESTREAM_BENCH\"\n"
    ))?];
    let took = runtime.block_on(async {
        let shutdown = Shutdown::new();
        let (bus, handles) = bus::start(outbox.clone(), &config, shutdown.clone());
        // one event first: the sink connects and creates the stream outside the timing
        bus.publish(&Event::new(EventType::Test))?;
        let ready = Instant::now();
        while outbox.depth("nats")? > 0 {
            anyhow::ensure!(
                ready.elapsed() < Duration::from_secs(30),
                "no JetStream acknowledgement from {url} within 30 s"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let start = Instant::now();
        for k in 0..events {
            let mut e = Event::new(EventType::IdentityRecognized);
            e.camera_id = Some(format!("cam{}", k % 8));
            bus.publish(&e)?;
        }
        while outbox.depth("nats")? > 0 {
            anyhow::ensure!(
                start.elapsed() < Duration::from_secs(600),
                "JetStream deliveries stalled"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let took = start.elapsed();
        shutdown.request();
        futures_util::future::join_all(handles).await;
        Ok::<_, anyhow::Error>(took)
    })?;
    println!(
        "burst through NATS JetStream: {events} events acknowledged in {:.2} s: {:.0} events/s",
        took.as_secs_f64(),
        events as f64 / took.as_secs_f64()
    );
    Ok(())
}
