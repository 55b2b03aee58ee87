//! tsprov: the TaskStream AI platform on AWS, from plan files, through the AWS
//! SDK for Rust, with no state file. Data flows one way:
//!
//! ```text
//! plan file --plan--> model --graph--> live (kinds::discover) --diff--> changes --apply--> report
//! ```
//!
//! - `plan/`    reads plan files (TOML) into `model`, checks everything before any AWS call
//! - `schema`   what each kind accepts; which changes replace
//! - `policy`   IAM policy documents in canonical form
//! - `graph`    per-region dependency DAG (petgraph): order, cycles, DOT/Mermaid
//! - `kinds/`   one file per resource kind: its AWS calls, nothing else knows them
//! - `aws`      clients per region, call counting, retries and waiters
//! - `diff`     desired vs live -> create / update / replace / delete
//! - `apply`    concurrent executor of one region's changes
//! - `lock`     one apply/destroy per stack at a time: a lock object in S3
//! - `drift`    the same diff read as findings: modified, missing, unmanaged
//! - `report`   plan text, progress lines, summaries
//! - `run`      the commands, wiring the above together; exit codes

pub mod apply;
pub mod aws;
pub mod cli;
pub mod diff;
pub mod drift;
pub mod graph;
pub mod kinds;
pub mod lock;
pub mod model;
pub mod plan;
pub mod policy;
pub mod report;
pub mod run;
pub mod schema;
