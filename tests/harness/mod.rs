//! The fault harness of `tests/faults.rs`: a seeded nemesis, a client log
//! and a checker of DESIGN §2's promises, over real processes (redis-server,
//! `bigtap serve`, `bigtap orders`) and a TCP proxy between each node and
//! Redis. The process control, the proxy and the recording order backend
//! are shared test support: `support::procs`, `support::proxy` and
//! `support::consumer::TestSink`.
//!
//! - [`rng`]      splitmix64, so a seed reproduces a run.
//! - [`nemesis`]  the seeded fault schedule.
//! - [`history`]  the client log and how an answer is classified.
//! - [`checker`]  the promises, judged from the log and from Redis.
//! - [`run`]      one seeded run end to end.

pub mod checker;
pub mod history;
pub mod nemesis;
pub mod rng;
pub mod run;
