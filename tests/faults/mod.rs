//! The fault harness: real processes (redis-server, `bigtap serve`,
//! `bigtap orders`), a TCP proxy between each node and Redis, a seeded
//! nemesis, a client log and a checker of DESIGN §2's promises.
//!
//! - [`rng`]      splitmix64, so a seed reproduces a run.
//! - [`procs`]    node and consumer processes: kill -9, SIGSTOP/SIGCONT, SIGTERM.
//! - [`proxy`]    delay, blackhole or reset the node-to-Redis connections.
//! - [`sink`]     a stand-in order backend that records deliveries.
//! - [`nemesis`]  the seeded fault schedule.
//! - [`history`]  the client log and how an answer is classified.
//! - [`checker`]  the promises, judged from the log and from Redis.
//! - [`run`]      one seeded run end to end.

pub mod checker;
pub mod history;
pub mod nemesis;
pub mod procs;
pub mod proxy;
pub mod rng;
pub mod run;
pub mod sink;
