//! `facestream` command line: parse arguments, load config, run a command.

mod cli;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// facestream: face detection, alignment, quality and recognition for camera streams.
#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// Config file layered over the embedded default (see config/default.toml).
    #[arg(long, global = true, env = "FACESTREAM_CONFIG")]
    config: Option<PathBuf>,
    /// Log filter, e.g. `info` or `facestream=debug` (default: `info` for `serve`,
    /// `warn` for the other commands).
    #[arg(long, global = true, env = "FACESTREAM_LOG")]
    log: Option<String>,
    /// Log lines as human-readable text or as JSON objects (one per line, for log
    /// shippers).
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "text",
        env = "FACESTREAM_LOG_FORMAT"
    )]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Detect, align, score and embed every face in each image; one JSON line per image.
    Embed(cli::embed::EmbedArgs),
    /// Compare the main face of two images (1:1): similarity and same/different.
    Verify(cli::verify::VerifyArgs),
    /// Evaluate on a benchmark.
    #[command(subcommand)]
    Eval(cli::eval::EvalCommand),
    /// Run the service: the configured cameras through the streaming pipeline, identity
    /// events to the configured endpoints, and the REST API (`/v1`, see /v1/openapi.json).
    Serve,
    /// Bulk enrolment from a folder with one sub-folder of photos per person.
    Enroll(cli::enroll::EnrollArgs),
    /// After a model change: re-embed kept crops, list who needs re-enrolment.
    Reembed,
    /// List inference backends: compiled in, usable here (or why not), what `auto` picks.
    Backends(cli::backends::BackendsArgs),
    /// Measure inference speed per backend and thread count on real faces.
    Bench(cli::bench::BenchArgs),
    /// Measure 1:N search latency and memory on vector files (see scripts/bench_search.py).
    BenchSearch(cli::bench_search::BenchSearchArgs),
    /// Measure appearance search at scale on vector files (see scripts/bench_history.py).
    BenchHistory(cli::bench_history::BenchHistoryArgs),
    /// Measure webhook delivery rate, latency and outbox growth (local receiver).
    BenchEvents(cli::bench_events::BenchEventsArgs),
    /// Serve face photos as looping H.264 RTSP cameras (no hardware needed).
    SimulateCamera(cli::simulate_camera::SimulateCameraArgs),
    /// Print the effective configuration (default + file + environment) as TOML.
    Config,
    /// Check a configuration file: every problem is reported at once; exit 1 if any.
    Validate,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let level = if matches!(args.command, Command::Serve) {
        "info"
    } else {
        "warn"
    };
    let filter = args
        .log
        .clone()
        .unwrap_or_else(|| format!("{level},actix_server=warn,tract_onnx=error,tract_hir=error"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr);
    match args.log_format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().flatten_event(true).init(),
    }
    let command = match args.command {
        Command::Validate => return cli::validate(args.config.as_deref()),
        Command::SimulateCamera(a) => {
            return cli::simulate_camera::run(a).unwrap_or_else(|e| {
                eprintln!("facestream: {e:#}");
                ExitCode::FAILURE
            })
        }
        other => other,
    };
    let result = cli::load_config(args.config.as_deref()).and_then(|config| match command {
        Command::Embed(a) => cli::embed::run(&config, a),
        Command::Verify(a) => cli::verify::run(&config, a),
        Command::Eval(c) => cli::eval::run(&config, c),
        Command::Serve => cli::serve::run(&config),
        Command::Enroll(a) => cli::enroll::run(&config, a),
        Command::Reembed => cli::reembed::run(&config),
        Command::Backends(a) => cli::backends::run(&config, a),
        Command::Bench(a) => cli::bench::run(&config, a),
        Command::BenchSearch(a) => cli::bench_search::run(a),
        Command::BenchHistory(a) => cli::bench_history::run(a),
        Command::BenchEvents(a) => cli::bench_events::run(a),
        Command::Validate | Command::SimulateCamera(_) => unreachable!("handled before loading"),
        Command::Config => {
            // secrets stay secret: keys, webhook secrets, passwords are printed as ***
            print!("{}", toml::to_string_pretty(&config.redacted())?);
            Ok(ExitCode::SUCCESS)
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("facestream: {e:#}");
            ExitCode::FAILURE
        }
    }
}
