//! Command-line definitions (clap).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

pub const DEFAULT_PLAN: &str = "plans/taskstream.toml";

#[derive(Parser, Debug)]
#[command(
    name = "tsprov",
    version,
    about = "Provision the TaskStream AI platform on AWS: plan files in, AWS SDK calls out, no state file"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Parse and check a plan file; no AWS call.
    Validate {
        #[arg(default_value = DEFAULT_PLAN)]
        plan: PathBuf,
        #[arg(long)]
        stack: Option<String>,
    },
    /// Print the dependency graph of every region.
    Graph {
        #[arg(default_value = DEFAULT_PLAN)]
        plan: PathBuf,
        #[arg(long, value_enum, default_value = "dot")]
        format: GraphFormat,
        #[arg(long)]
        stack: Option<String>,
    },
    /// Show what apply would change.
    Plan {
        #[command(flatten)]
        common: Common,
        /// Print the plan as JSON on stdout.
        #[arg(long)]
        json: bool,
        /// Save the plan; `tsprov apply FILE` applies it if live state has not changed.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Exit 2 when there are changes, 0 when none, 1 on error.
        #[arg(long)]
        detailed_exitcode: bool,
    },
    /// Make AWS match the plan (or a saved plan).
    Apply {
        #[command(flatten)]
        common: Common,
        #[arg(long)]
        auto_approve: bool,
    },
    /// Compare live state with the plan without changing anything: exit 0 in sync,
    /// 2 drift found, 1 error.
    Drift {
        #[command(flatten)]
        common: Common,
        /// The report as JSON (schema tsprov.drift/v1) on stdout.
        #[arg(long)]
        json: bool,
        /// Run again every DURATION (e.g. 1h, 30m) until SIGTERM or Ctrl-C.
        #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
        every: Option<std::time::Duration>,
        /// Write Prometheus metrics (drifted, missing, unmanaged per region; last run) here.
        #[arg(long, value_name = "FILE")]
        metrics_file: Option<PathBuf>,
    },
    /// Delete everything tagged with the stack.
    Destroy {
        #[command(flatten)]
        common: Common,
        #[arg(long)]
        auto_approve: bool,
    },
    /// Break the stack's lock (held by apply and destroy; a crashed run's lock
    /// expires by itself 10 minutes after its last renewal).
    Unlock {
        #[command(flatten)]
        common: Common,
    },
}

#[derive(Args, Debug, Clone)]
pub struct Common {
    /// A plan file, or (apply only) a plan saved with `plan --out`.
    #[arg(default_value = DEFAULT_PLAN)]
    pub plan: PathBuf,
    /// Only these regions (repeatable); default: every region of the plan.
    #[arg(long = "region")]
    pub regions: Vec<String>,
    /// Run the plan under this stack name instead of its own.
    #[arg(long)]
    pub stack: Option<String>,
    /// Send every AWS call here (LocalStack); AWS_ENDPOINT_URL works too.
    #[arg(long)]
    pub endpoint_url: Option<String>,
    /// Allow deleting or replacing this data-holding resource (KMS key, database,
    /// bucket), e.g. `--allow-destroy kms_key.main`; repeatable.
    #[arg(long = "allow-destroy", value_name = "ADDRESS")]
    pub allow_destroy: Vec<String>,
    /// Steps in flight at once per region.
    #[arg(long, default_value_t = 8)]
    pub parallelism: usize,
    /// apply/destroy: when another run holds the stack, wait up to DURATION (e.g. 10m)
    /// for it to finish instead of failing at once.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration, default_value = "0s")]
    pub lock_timeout: std::time::Duration,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum GraphFormat {
    Dot,
    Mermaid,
}
