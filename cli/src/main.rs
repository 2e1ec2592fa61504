//! The `omnishard` binary: every server role, the embedded dev cluster, the
//! CLI against a gateway, and the benchmarks. Thin by design: parse
//! arguments, then hand over to the module of the command.
//!
//! Layout:
//! * `args` — the command line (clap).
//! * `roles` — `omnishard shard` and `omnishard gateway`.
//! * `dev` — `omnishard dev`: a gateway and N shard child processes.
//! * `kv` — `omnishard kv ...`.
//! * `graph` — `omnishard graph ...`.
//! * `search` — `omnishard search ...`.
//! * `file` — `omnishard file ...`.
//! * `admin` — `omnishard admin ...`; `trace` — its `trace` and `slow` views.
//! * `bench` — `omnishard bench kv`; `bench_graph` — `omnishard bench graph`;
//!   `bench_search` — `omnishard bench search`; `bench_files` — `omnishard bench files`;
//!   `bench_otlp` — `omnishard bench otlp-sink`; `bench_ycsb` — `omnishard bench ycsb`
//!   and `bench echo-server` (the harness itself is the `omnishard-bench` crate);
//!   `bench_failover` — `omnishard bench failover` (leader kill, replica catch-up).
//! * `output` — human and `--json` printing, and the error line.
//! * `alloc` — allocator settings that keep memory bounded under large transfers.

// One FFI call (`alloc`) is the only unsafe code, allowed there alone.
#![deny(unsafe_code)]

mod admin;
mod alloc;
mod args;
mod bench;
mod bench_compare;
mod bench_failover;
mod bench_files;
mod bench_graph;
mod bench_otlp;
mod bench_search;
mod dev;
mod file;
mod graph;
mod kv;
mod output;
mod roles;
mod search;
mod trace;

use clap::Parser;

use crate::args::{Cli, Command};

fn main() {
    alloc::return_large_buffers();
    let cli = Cli::parse();
    // Child processes (the shards of `dev`) inherit the log format; set
    // before any thread starts.
    std::env::set_var("OMNISHARD_LOG_FORMAT", &cli.global.log_format);
    omnishard_client::print_trace_ids(cli.global.trace);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => output::fail(&anyhow::anyhow!("cannot start the async runtime: {e}")),
    };
    let result = runtime.block_on(run(cli));
    if let Err(err) = result {
        output::fail(&err);
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let global = cli.global;
    match cli.command {
        Command::Shard(args) => roles::shard(args).await,
        Command::Gateway(args) => roles::gateway(args).await,
        Command::Dev(args) => dev::run(args).await,
        Command::Kv(cmd) => kv::run(&global, cmd).await,
        Command::Graph(args) => graph::run(&global, args).await,
        Command::Search(cmd) => search::run(&global, cmd).await,
        Command::File(cmd) => file::run(&global, cmd).await,
        Command::Admin(cmd) => admin::run(&global, cmd).await,
        Command::Bench(cmd) => bench::run(&global, cmd).await,
    }
}
