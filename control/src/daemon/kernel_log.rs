//! Moves the answers the XDP program sent from the kernel into the query
//! log: one task per CPU waits on that CPU's perf buffer and records each
//! event as a blocked query marked `kernel`.

use std::{sync::Arc, time::SystemTime};

use aya::maps::perf::PerfEvent;
use tokio::{
    io::{unix::AsyncFd, Interest},
    task::JoinHandle,
};
use tracing::{debug, warn};

use super::gate::{rcode_name, transport_name};
use crate::{
    dataplane::{parse_event, EventBuffer, KernelAnswer},
    querylog::{epoch_millis, QueryEntry, QueryLog},
    resolver::server::Transport,
};

/// Pages of each CPU's perf buffer (a power of two): 64 KiB with 4 KiB
/// pages, room for several hundred answers between two reads.
pub const EVENT_PAGES: usize = 16;

/// Starts one reader per buffer. Abort the tasks to stop.
pub fn spawn(buffers: Vec<EventBuffer>, log: Arc<QueryLog>) -> Vec<JoinHandle<()>> {
    buffers
        .into_iter()
        .filter_map(|buffer| match watch(buffer) {
            Ok(fd) => Some(tokio::spawn(read_events(fd, log.clone()))),
            Err(error) => {
                warn!(%error, "watching a perf buffer failed; the queries answered on its CPU are not logged");
                None
            }
        })
        .collect()
}

/// Registers a buffer's perf event descriptor with the runtime.
#[expect(unsafe_code, reason = "tokio's AsyncFd::register is unsafe: it cannot check who owns the descriptor")]
fn watch(buffer: EventBuffer) -> std::io::Result<AsyncFd<EventBuffer>> {
    // SAFETY: the buffer owns its perf event descriptor, opened by aya and
    // closed only when the buffer is dropped; the `AsyncFd` takes ownership
    // of the buffer, so the descriptor stays open and the same for the
    // whole life of the registration.
    unsafe { AsyncFd::register_with_interest(buffer, Interest::READABLE) }.map_err(std::io::Error::from)
}

async fn read_events(mut fd: AsyncFd<EventBuffer>, log: Arc<QueryLog>) {
    let mut record = Vec::with_capacity(1024);
    loop {
        let mut guard = match fd.readable_mut().await {
            Ok(guard) => guard,
            Err(error) => {
                warn!(%error, "waiting on a perf buffer failed; the queries answered on its CPU are no longer logged");
                return;
            }
        };
        guard.get_inner_mut().for_each(|event| match event {
            PerfEvent::Sample { head, tail } => {
                record.clear();
                record.extend_from_slice(head);
                record.extend_from_slice(tail);
                match parse_event(&record) {
                    Some(answer) => log.record(entry(answer, SystemTime::now(), &log)),
                    None => debug!(len = record.len(), "skipped an event that is not a readable answer"),
                }
            }
            // The program counts these too (`events_lost`), as it sees
            // the output fail.
            PerfEvent::Lost { count } => debug!(count, "the kernel dropped query-log events: the perf buffer was full"),
        });
        guard.clear_ready();
    }
}

fn entry(answer: KernelAnswer, now: SystemTime, log: &QueryLog) -> QueryEntry {
    QueryEntry {
        time_ms: epoch_millis(now),
        client: log.client_text(answer.client),
        name: answer.name,
        qtype: answer.qtype,
        transport: transport_name(Transport::Udp).to_owned(),
        decision: "blocked".to_owned(),
        rcode: Some(rcode_name(answer.rcode)),
        latency_us: 0,
        kernel: true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ClientPrivacy;

    #[test]
    fn entry_is_blocked_and_marked_kernel() {
        let log = QueryLog::new(4, ClientPrivacy::Truncate);
        let answer = KernelAnswer {
            client: "192.0.2.77".parse().unwrap(),
            name: "ads.example.".to_owned(),
            qtype: "AAAA".to_owned(),
            rcode: 3,
        };
        let entry = entry(answer, SystemTime::UNIX_EPOCH, &log);
        assert_eq!(entry.client.as_deref(), Some("192.0.2.0"));
        assert_eq!(entry.decision, "blocked");
        assert_eq!(entry.transport, "udp");
        assert_eq!(entry.rcode.as_deref(), Some("NXDOMAIN"));
        assert!(entry.kernel);
    }
}
